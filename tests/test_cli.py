"""The ``pop3mon`` command (``pop3mon.cli``), run as a process the way a user runs it.

``--help`` and every usage error are checked for real: help exits 0, a usage error is one
line on stderr with exit status 2 and no traceback. What needs the history store
(``pop3mon.history.store``) records two real monitoring runs against the fault server and
reads them back; it skips where the store is not part of this tree yet.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.faultserver import FaultServer

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "cli-SENTINEL-77d0"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``pop3mon ARGS`` as a process (the console script runs ``pop3mon.cli:main``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    return subprocess.run(
        [sys.executable, "-m", "pop3mon.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=60,
        check=False,
    )


def assert_usage_error(proc: subprocess.CompletedProcess[str], said: str) -> None:
    assert proc.returncode == 2, proc
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert said in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ((), "history"),
        (("history",), "states"),
        (("history", "accept"), "ID[:CHECK]"),
    ],
)
def test_help(args: tuple[str, ...], said: str) -> None:
    proc = cli(*args, "--help")
    assert proc.returncode == 0 and proc.stderr == "", proc
    assert proc.stdout.startswith("usage: pop3mon") and said in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ((), "pop3mon: error: the following arguments are required: COMMAND"),
        (("nope",), "invalid choice: 'nope'"),
        (("history", "states"), "the following arguments are required: --history"),
        (("history", "--history", "h.db"), "pop3mon history: error: the following arguments"),
        (("history", "--history", "h.db", "purge"), "invalid choice: 'purge'"),
        (("history", "--history", "h.db", "accept"), "required: ID[:CHECK]"),
        (("history", "--history", "h.db", "states", "--bogus"), "unrecognized arguments: --bogus"),
        (
            ("history", "--history", "h.db", "accept", "x", "--note", "two\nlines"),
            "--note must be one line",
        ),
        (("history", "--history", "h.db", "accept", "x", "--note", "n" * 501), "at most 500"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: tuple[str, ...], said: str) -> None:
    assert_usage_error(cli(*args), said)


@pytest.fixture
def targets(tmp_path: Path) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(
        "servers:\n"
        "  - name: lab\n"
        "    host: localhost\n"
        "    connections:\n"
        "      - {id: one, port: 1110, security: starttls, auth: none}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("two", "two: no connection type 'two' in the targets file"),
        ("one:credentials", "'credentials' is not a drift check"),
    ],
)
def test_accept_refuses_what_the_targets_file_does_not_define(
    targets: Path, tmp_path: Path, spec: str, said: str
) -> None:
    db = tmp_path / "h.db"
    proc = cli("history", "--history", str(db), "--targets", str(targets), "accept", spec)
    assert_usage_error(proc, said)
    assert not db.exists()


def test_a_bad_targets_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers: []\n", encoding="utf-8")
    proc = cli("history", "--history", str(tmp_path / "h.db"), "--targets", str(bad), "states")
    assert_usage_error(proc, "invalid targets file:")


@pytest.mark.parametrize("action", [("states",), ("accept", "one")])
def test_a_missing_history_is_one_line_exit_1(tmp_path: Path, action: tuple[str, ...]) -> None:
    db = tmp_path / "none.db"
    proc = cli("history", "--history", str(db), *action)
    assert proc.returncode == 1, proc
    assert proc.stderr == f"pop3mon: no history database at {db}\n", proc.stderr
    assert not db.exists(), "reading must not create a database"


# --------------------------------------------------------------------------- with the store


@pytest.fixture
def monitored(lab_certs: LabCerts, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A targets file for a healthy fault server and where its history goes."""
    with FaultServer(
        "healthy",
        users={"alice": PASSWORD},
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
    ) as srv:
        path = tmp_path / "targets.yaml"
        path.write_text(
            "servers:\n"
            "  - name: lab\n"
            "    host: localhost\n"
            f"    ca_file: {lab_certs.ca_file}\n"
            "    login_pacing: parallel\n"
            "    account: {username: alice, password_env: CLI_PW}\n"
            "    connections:\n"
            f"      - {{id: one, port: {srv.port}, security: starttls}}\n",
            encoding="utf-8",
        )
        yield path, tmp_path / "history.db"


def _run(targets: Path, history: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLI_PW": PASSWORD}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pytest.ini"),
            "--rootdir",
            str(ROOT),
            f"--targets={targets}",
            f"--history={history}",
            "--no-reports",
            "-q",
            "-p",
            "no:cacheprovider",
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def test_states_lists_every_check_after_runs(monitored: tuple[Path, Path]) -> None:
    targets, history = monitored
    for _ in range(2):
        run = _run(targets, history)
        assert run.returncode == 0, run.stdout + run.stderr
    proc = cli("history", "--history", str(history), "--targets", str(targets), "states")
    assert proc.returncode == 0, proc
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["connection", "type", "check", "verdict", "since", "runs"]
    rows = {(line.split()[0], line.split()[1]): line for line in lines[1:]}
    assert ("one", "login") in rows and ("one", "credentials_changed") in rows, proc.stdout
    assert rows[("one", "login")].split()[-1] == "2"  # two runs in a row
    assert PASSWORD not in proc.stdout + proc.stderr


def test_accept_records_and_is_told(monitored: tuple[Path, Path]) -> None:
    targets, history = monitored
    run = _run(targets, history, "--accept-drift=one")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "pop3mon: accepted one's current facts as the drift baseline" in run.stdout
    proc = cli("history", "--history", str(history), "accept", "one:mailbox_changed", "--note", "x")
    assert proc.returncode == 0, proc
    assert proc.stdout.startswith("accepted one:mailbox_changed's latest facts"), proc.stdout


def test_the_command_imports_no_pytest() -> None:
    """The console command starts without pytest (it is not a test run)."""
    code = (
        "import sys, pop3mon.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest'))\n"
        "sys.exit(str(bad) if bad else 0)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_states_filters_accept_refuses_nothing_and_accepted_lists(
    lab_certs: LabCerts, tmp_path: Path
) -> None:
    """After a real run with one healthy and one unreachable connection type: ``states
    --bad`` and ``states ID`` filter; ``accept`` of a typo or of a connection type whose
    runs never got a certificate accepts nothing and says so with exit 2; ``accepted``
    lists what was recorded."""
    with FaultServer(
        "healthy",
        users={"alice": PASSWORD},
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
    ) as srv:
        targets = tmp_path / "targets.yaml"
        targets.write_text(
            "servers:\n"
            "  - name: lab\n"
            "    host: 127.0.0.1\n"
            f"    ca_file: {lab_certs.ca_file}\n"
            "    login_pacing: parallel\n"
            "    account: {username: alice, password_env: CLI_PW}\n"
            "    connections:\n"
            f"      - {{id: one, port: {srv.port}, security: starttls}}\n"
            f"      - {{id: down, port: {_closed_port()}, security: starttls}}\n",
            encoding="utf-8",
        )
        history = tmp_path / "history.db"
        run = _run(targets, history, "--accept-drift=down")
        assert history.is_file(), run.stdout + run.stderr
    # The run's own --accept-drift says it accepted nothing, and why.
    assert "pop3mon: --accept-drift=down: not accepted capabilities_changed, " in run.stdout, (
        run.stdout
    )
    h = ("history", "--history", str(history))

    bad = cli(*h, "states", "--bad")
    assert bad.returncode == 0, bad
    rows = [line.split() for line in bad.stdout.splitlines()[1:]]
    assert rows and {r[0] for r in rows} == {"down"}, bad.stdout
    assert all(r[2] in ("WARN", "CRIT", "ERROR") for r in rows), bad.stdout
    one = cli(*h, "states", "one")
    assert {line.split()[0] for line in one.stdout.splitlines()[1:]} == {"one"}, one.stdout

    # A typo: no run of it in the history (no --targets to check it against).
    assert_usage_error(
        cli(*h, "accept", "incident-crt"),
        "incident-crt: no connection type 'incident-crt' in the history",
    )
    # Runs of it exist, but none got as far as a certificate: nothing to accept.
    nothing = cli(*h, "accept", "down:certificate_changed")
    assert_usage_error(nothing, "not accepted certificate_changed")
    assert cli(*h, "accepted").stdout.splitlines()[-1] == "(no acceptance recorded)"

    done = cli(*h, "accept", "one:certificate_changed", "--note", "new CA, ticket 42")
    assert done.returncode == 0, done
    assert "(1 check(s): certificate_changed)" in done.stdout, done.stdout
    listed = cli(*h, "accepted", "one")
    assert listed.returncode == 0, listed
    assert listed.stdout.splitlines()[0].split()[:3] == ["accepted", "at", "who"]
    (row,) = listed.stdout.splitlines()[1:]
    assert "one" in row and "certificate_changed" in row and row.endswith("new CA, ticket 42")
    assert PASSWORD not in "".join(p.stdout + p.stderr for p in (bad, one, nothing, listed))
