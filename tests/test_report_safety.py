"""Reports are never lost or half-replaced (issue 10, item 14).

The real suite runs as a subprocess against two fault servers: ``healthy`` answers at once,
``slow`` accepts and never greets (its probe would wait for its 60 s deadline), so a run is
reliably mid-flight once the slow server has a connection. Signals are sent only after
such a marker (never after a fixed sleep), so the tests hold on a loaded machine. Each
subprocess gets its own ``TMPDIR`` so "no temporary directory left behind" is checked on
that directory alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import foreground_signals
from pop3mon_lab.faultserver import FaultServer

REPO = Path(__file__).resolve().parent.parent
PASSWORD_ENV = "POP3MON_SAFETY_PW"
PASSWORD = "safety-test-pw-1"
NAMES = ("report.html", "junit.xml", "results.json", "metrics.prom")
HISTORY = "history.sqlite"
#: The slow probe's deadline: a run that waited for it would take this long.
SLOW_TIMEOUT = 60
#: Bound on how long a stopped run may take to end ("within a second or two", with room
#: for a loaded 2-core machine; far below SLOW_TIMEOUT, which waiting would cost).
STOP_BOUND = 10.0


@dataclass
class SafetyLab:
    """The fault servers and two targets files (both connection types / healthy only)."""

    targets: Path
    healthy_only: Path
    slow: FaultServer
    tmp: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SafetyLab]:
    """Start ``healthy`` and ``slow`` once for this module."""
    users = {"alice": PASSWORD}
    directory = tmp_path_factory.mktemp("safety-lab")
    with ExitStack() as stack:
        healthy = stack.enter_context(FaultServer("healthy", users=users))
        slow = stack.enter_context(FaultServer("no-greeting", users=users))
        head = f"""version: 1
defaults:
  timeout: {SLOW_TIMEOUT}
  account: {{username: alice, password_env: {PASSWORD_ENV}}}
servers:
  - name: lab
    host: 127.0.0.1
    connections:
      - {{id: healthy, port: {healthy.port}, security: none, auth: user, allow_cleartext: true}}
"""
        targets = directory / "targets.yaml"
        targets.write_text(
            head + f"      - {{id: slow, port: {slow.port}, security: none, auth: user, "
            "allow_cleartext: true}\n",
            encoding="utf-8",
        )
        healthy_only = directory / "healthy.yaml"
        healthy_only.write_text(head, encoding="utf-8")
        yield SafetyLab(targets, healthy_only, slow, directory)


def _command(targets: Path, reports: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        f"--targets={targets}",
        f"--reports-dir={reports}",
        "-p",
        "no:cacheprovider",
        *args,
    ]


def _env(tmpdir: Path) -> dict[str, str]:
    tmpdir.mkdir(exist_ok=True)
    env = {**os.environ, PASSWORD_ENV: PASSWORD, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmpdir)}
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("POP3MON_TARGETS", None)
    return env


def run_to_end(
    targets: Path, reports: Path, tmpdir: Path, *args: str, **kw: object
) -> subprocess.CompletedProcess[str]:
    """One whole run of the suite."""
    return subprocess.run(
        _command(targets, reports, *args),
        cwd=REPO,
        env=_env(tmpdir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kw,  # type: ignore[call-overload]
    )


def stop_mid_flight(
    lab: SafetyLab,
    reports: Path,
    tmpdir: Path,
    marker: re.Pattern[str],
    signals: Sequence[signal.Signals],
    *args: str,
    group: bool,
) -> tuple[int, float, str]:
    """Start a run, wait until ``marker`` is printed and the slow probe is connected, send
    ``signals`` (to the process group when ``group``: a terminal's Ctrl-C, systemd's stop
    of a whole unit) and return (exit status, seconds from the first signal to the end,
    output)."""
    seen_before = lab.slow.connections
    proc = subprocess.Popen(
        _command(lab.targets, reports, "-v", *args),
        cwd=REPO,
        env=_env(tmpdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=foreground_signals,  # SIGINT must be heard, as in a terminal
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker.search(line):
                break
        deadline = time.monotonic() + 60
        while lab.slow.connections <= seen_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lab.slow.connections > seen_before, "".join(lines)
        send = os.killpg if group else os.kill
        started = time.monotonic()
        for sig in signals:
            send(proc.pid, sig)
            time.sleep(0.2)
        rest, _ = proc.communicate(timeout=SLOW_TIMEOUT + 30)
        elapsed = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode, elapsed, "".join(lines) + rest


# ------------------------------------------------------------------------ reading a set
def run_ids(reports: Path) -> dict[str, str]:
    """The run each of the four files belongs to (metrics by its start timestamp)."""
    doc = json.loads((reports / "results.json").read_text("utf-8"))
    run = doc["run"]
    root = ET.parse(reports / "junit.xml").getroot()
    suite = root if root.tag == "testsuite" else root[0]
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    html = (reports / "report.html").read_text("utf-8")
    metrics = (reports / "metrics.prom").read_text("utf-8")
    start = re.search(r"^pop3mon_run_start_timestamp_seconds (\S+)$", metrics, re.M)
    assert start is not None, metrics
    return {
        "results.json": run["id"],
        "junit.xml": str(props.get("pop3mon_run_id")),
        "report.html": run["id"] if run["id"] in html else "(other)",
        "metrics.prom": run["id"] if float(start[1]) == run["started_epoch"] else "(other)",
    }


def snapshot(reports: Path) -> dict[str, bytes]:
    """Every report file in the reports directory, by name (the run history beside them
    records every run, written or not: tests/test_history.py)."""
    return {
        p.name: p.read_bytes() for p in sorted(reports.iterdir()) if not p.name.startswith(HISTORY)
    }


def fake_previous(reports: Path) -> dict[str, bytes]:
    """A previous set (recognisable bytes) and its snapshot."""
    reports.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        (reports / name).write_text(f"previous {name}\n", encoding="utf-8")
    return snapshot(reports)


def leftovers(tmpdir: Path) -> list[str]:
    """What the run left in its TMPDIR (pytest-xdist's ``pytest-of-<user>`` base temp is
    pytest's own, which pytest prunes itself)."""
    return sorted(p.name for p in tmpdir.iterdir() if not p.name.startswith("pytest-of-"))


def assert_no_leftovers(reports: Path, tmpdir: Path) -> None:
    """No temporary report file, no run directory left behind."""
    # The history (there when a check ran) is one file once the run ended: no -wal/-shm.
    names = sorted(p.name for p in reports.iterdir())
    assert [n for n in names if n != HISTORY] == sorted(NAMES)
    assert leftovers(tmpdir) == []


def doc_not_run(doc: dict[str, object]) -> list[object]:
    """The checks of results.json whose outcome is "not run"."""
    conns = doc["connections"]
    assert isinstance(conns, list)
    return [c for conn in conns for c in conn["checks"] if c["outcome"] == "not run"]


# ------------------------------------------------------------------------ the tests
def test_sigterm_writes_what_finished(lab: SafetyLab, tmp_path: Path) -> None:
    """SIGTERM mid-run (the slow probe still in flight) ends the run within the bound with a
    complete set of one run: the finished checks with their verdicts, the rest not run."""
    reports, tmpdir = tmp_path / "reports", tmp_path / "tmp"
    finished = re.compile(r"\[healthy\] (PASSED|SKIPPED|FAILED)")
    rc, elapsed, out = stop_mid_flight(
        lab, reports, tmpdir, finished, [signal.SIGTERM], group=False
    )
    assert rc == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert elapsed < STOP_BOUND, out[-3000:]
    assert "Traceback" not in out
    ids = run_ids(reports)
    assert len(set(ids.values())) == 1, ids
    doc = json.loads((reports / "results.json").read_text("utf-8"))
    assert doc["run"]["stopped"] == "stopped by SIGTERM"
    checks = {c["id"]: c["checks"] for c in doc["connections"]}
    assert any(c["outcome"] != "not run" for c in checks["healthy"]), checks["healthy"]
    slow = checks["slow"]
    assert slow and all(c["outcome"] == "not run" for c in slow)
    assert all("stopped by SIGTERM" in c["reason"] for c in slow)
    assert "pop3mon_run_complete 0.0" in (reports / "metrics.prom").read_text("utf-8")
    assert "the run was stopped by SIGTERM" in out
    assert f"of the SKIPs {len(doc_not_run(doc))} not run" in out
    assert_no_leftovers(reports, tmpdir)


@pytest.mark.parametrize(
    ("signals", "group"),
    [
        pytest.param([signal.SIGINT, signal.SIGINT], True, id="double-ctrl-c"),
        pytest.param([signal.SIGTERM], False, id="sigterm-controller-only"),
    ],
)
def test_stop_under_xdist_previous_or_complete_new(
    lab: SafetyLab, tmp_path: Path, signals: list[signal.Signals], group: bool
) -> None:
    """Under ``-n 2`` a double Ctrl-C (or a SIGTERM to the controller alone) mid-probe ends
    the run within the bound, without a traceback, leaving either the previous set untouched
    or a complete new set of one run."""
    reports, tmpdir = tmp_path / "reports", tmp_path / "tmp"
    previous = fake_previous(reports)
    started = re.compile(r"\d+ workers \[\d+ items?\]")
    rc, elapsed, out = stop_mid_flight(
        lab, reports, tmpdir, started, signals, "-n", "2", group=group
    )
    assert rc == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert elapsed < STOP_BOUND, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    now = snapshot(reports)
    if now != previous:
        ids = run_ids(reports)
        assert len(set(ids.values())) == 1, ids
        assert not any(v.startswith(b"previous") for v in now.values())
    assert_no_leftovers(reports, tmpdir)


def test_nothing_selected_keeps_previous(lab: SafetyLab, tmp_path: Path) -> None:
    """``-k`` matching no connection type replaces no report with an empty one, and says so."""
    reports, tmpdir = tmp_path / "reports", tmp_path / "tmp"
    previous = fake_previous(reports)
    proc = run_to_end(lab.targets, reports, tmpdir, "-k", "no-such-connection-type")
    assert proc.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, proc.stdout + proc.stderr
    assert snapshot(reports) == previous
    assert "no check was selected" in proc.stdout
    assert "previous reports were left as they were" in proc.stdout
    assert "generated xml file" not in proc.stdout
    assert "Generated html report" not in proc.stdout
    assert_no_leftovers(reports, tmpdir)


@pytest.mark.parametrize("kind", ["file", "under-a-file"])
def test_unusable_reports_dir_is_one_error(lab: SafetyLab, tmp_path: Path, kind: str) -> None:
    """A ``--reports-dir`` that is a file, or cannot be created, is one line, no traceback."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory\n", encoding="utf-8")
    reports = blocker if kind == "file" else blocker / "reports"
    proc = run_to_end(lab.healthy_only, reports, tmp_path / "tmp")
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert "Traceback" not in out
    assert f"cannot use {reports} as the reports directory" in out
    assert ("it is a file" if kind == "file" else "Not a directory") in out
    assert blocker.read_text(encoding="utf-8") == "a file, not a directory\n"


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _limit_file_size(limit: int) -> Callable[[], None]:
    def limited() -> None:  # pragma: no cover - runs in the child
        # Beyond the limit write() fails with EFBIG instead of the process dying of SIGXFSZ.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limited


@pytest.mark.parametrize("how", ["tmpfs-enospc", "rlimit-fsize"])
def test_full_disk_keeps_previous_set(lab: SafetyLab, tmp_path: Path, how: str) -> None:
    """A write that fails (a full disk: ENOSPC on a small tmpfs; or a file size limit,
    EFBIG) leaves the previous good set in place, says so in one line, exits non-zero."""
    reports, tmpdir = tmp_path / "reports", tmp_path / "tmp"
    kw: dict[str, object] = {}
    if how == "tmpfs-enospc" and not _mount_tmpfs(reports, "2m"):
        pytest.skip("mounting a tmpfs needs root (the rlimit-fsize case covers this)")
    try:
        good = run_to_end(lab.healthy_only, reports, tmpdir, "-m", "connectivity")
        assert good.returncode == 0, good.stdout[-3000:] + good.stderr
        previous = snapshot(reports)
        assert len(set(run_ids(reports).values())) == 1
        if how == "tmpfs-enospc":
            # Leave less room than one more set needs.
            stat = os.statvfs(reports)
            filler = reports / "filler"
            with filler.open("wb") as handle:
                handle.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - 16 * 1024))
            previous = snapshot(reports)
        else:
            # Half the largest report of the good set: that one cannot be written again.
            names = ("report.html", "junit.xml", "results.json", "metrics.prom")
            largest = max((reports / name).stat().st_size for name in names)
            kw["preexec_fn"] = _limit_file_size(largest // 2)
        proc = run_to_end(lab.healthy_only, reports, tmpdir, "-m", "connectivity", **kw)
        out = proc.stdout + proc.stderr
        assert proc.returncode == pytest.ExitCode.INTERNAL_ERROR, out[-3000:]
        assert "Traceback" not in out
        why = "No space left on device" if how == "tmpfs-enospc" else "File too large"
        assert "the reports of this run were not written to" in out
        assert why in out and "the previous reports there are unchanged" in out
        assert snapshot(reports) == previous
        assert leftovers(tmpdir) == []
    finally:
        if how == "tmpfs-enospc":
            subprocess.run(["umount", str(reports)], check=False)
