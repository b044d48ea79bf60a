"""Self-tests of the terminal: the pop3mon summary and pop3mon's lines of pytest's short
test summary, read from real runs of the suite at 80 columns.

The lab run mixes healthy connection types on Dovecot (implicit TLS, STLS), a WARN (APOP
over plaintext), a CRIT with a long id and a long reason (Dovecot's expired certificate)
and eight connection types of one host whose port is closed. The scale run has 1,000
connection types on ten closed ports (only ``test_tcp`` selected, so it stays quick).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_suite import _SCRUBBED_ENV, ROOT, RUN_TIMEOUT, write_targets

from pop3mon_lab.dovecot import DovecotLab

PW_ENV = "POP3MON_TERMINAL_PASSWORD"
WIDTH = 80
SEP = "pop3mon summary"
CLOSED_IDS = tuple(f"closed-{n}" for n in range(1, 9))
#: Long enough that pytest's FAILED line has room for the verdict but not for the reason
#: at 80 columns ("FAILED tests_targets/test_tls.py::test_certificate[<id>] - CRIT").
LONG_ID = "expired-cert-lab-995"
SECURITY_AUTH = (
    ("tls", "auto"),
    ("tls", "user"),
    ("tls", "plain"),
    ("tls", "login"),
    ("starttls", "auto"),
    ("starttls", "user"),
    ("starttls", "plain"),
    ("none", "apop"),
)


@dataclass(frozen=True)
class TermRun:
    """One run: its output and the pop3mon properties of every check (from JUnit)."""

    proc: subprocess.CompletedProcess[str]
    props: Mapping[str, Mapping[str, str]]

    @property
    def lines(self) -> list[str]:
        """stdout, line by line."""
        return self.proc.stdout.splitlines()

    def summary(self) -> list[str]:
        """The lines from the ``pop3mon summary`` separator to the end."""
        starts = [i for i, line in enumerate(self.lines) if SEP in line and line.startswith("=")]
        assert len(starts) == 1, self.describe()
        return self.lines[starts[0] :]

    def describe(self) -> str:
        """Output tail, for assertion messages."""
        return (
            f"exit {self.proc.returncode}\n{self.proc.stdout[-8000:]}\n{self.proc.stderr[-2000:]}"
        )


def run(targets: Path, workdir: Path, *args: str, env: Mapping[str, str] | None = None) -> TermRun:
    """The suite as a user runs it, at 80 columns, outside CI (where pytest never cuts)."""
    junit = workdir / f"junit-{len(list(workdir.glob('junit-*')))}.xml"
    environ = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    for var in ("CI", "BUILD_NUMBER"):
        environ.pop(var, None)
    environ.update(env or {})
    environ["COLUMNS"] = str(WIDTH)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"--targets={targets}",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:hypothesispytest",
            "--no-reports",
            f"--junitxml={junit}",
            *args,
        ],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    props: dict[str, dict[str, str]] = {}
    if junit.exists():
        for tc in ET.parse(junit).iter("testcase"):
            mine = {p.get("name", ""): p.get("value", "") for p in tc.iter("property")}
            props[f"{tc.get('classname')}::{tc.get('name')}"] = mine
    return TermRun(proc, props)


def _entry(summary: list[str], head: str) -> str:
    """One entry of the summary: ``head`` and its more indented lines after it."""
    at = summary.index(head)
    depth = len(head) - len(head.lstrip())
    lines = [head]
    for line in summary[at + 1 :]:
        if len(line) - len(line.lstrip()) <= depth:
            break
        lines.append(line)
    return "\n".join(lines)


def _flat(text: str) -> str:
    """``text`` without any whitespace: a reason wrapped over lines still matches."""
    return re.sub(r"\s+", "", text)


# --------------------------------------------------------------------------- the lab run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Targets and JUnit files of this module."""
    return tmp_path_factory.mktemp("terminal")


@pytest.fixture(scope="module")
def closed_ports() -> Iterator[list[int]]:
    """Ten ports that refuse connections: bound (nobody else takes them), never listening."""
    with ExitStack() as stack:
        ports = []
        for _ in range(10):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        yield ports


@pytest.fixture(scope="module")
def lab_targets(dovecot: DovecotLab, closed_ports: list[int], workdir: Path) -> Path:
    """Two healthy types, one WARN, one CRIT with a long id, eight on one closed port."""
    account = {"username": dovecot.demo_user, "password_env": PW_ENV}
    closed = [
        {"id": ct, "port": closed_ports[0], "security": sec, "auth": auth}
        for ct, (sec, auth) in zip(CLOSED_IDS, SECURITY_AUTH, strict=True)
    ]
    data = {
        "version": 1,
        "defaults": {
            "ca_file": str(dovecot.ca_file),
            "account": account,
            "login_pacing": "parallel",
            "latency": {"total": {"warn": 20.0, "crit": 30.0}},
        },
        "servers": [
            {
                "name": "lab",
                "host": dovecot.hostname,
                "connections": [
                    {"id": "ok-tls", "port": dovecot.port("pop3s"), "security": "tls"},
                    {"id": "ok-stls", "port": dovecot.port("pop3"), "security": "starttls"},
                    {
                        "id": "warn-apop",
                        "port": dovecot.port("pop3", "chain"),
                        "security": "none",
                        "auth": "apop",
                    },
                    {
                        "id": LONG_ID,
                        "port": dovecot.port("pop3s", "expired"),
                        "security": "tls",
                    },
                ],
            },
            {"name": "mail1", "host": "127.0.0.1", "connections": closed},
        ],
    }
    return write_targets(workdir / "lab.yaml", data)


@pytest.fixture(scope="module")
def lab_run(lab_targets: Path, dovecot: DovecotLab, workdir: Path) -> TermRun:
    """The lab targets at 80 columns with ``-rfs``."""
    result = run(lab_targets, workdir, "-rfs", env={PW_ENV: dovecot.demo_password})
    assert result.proc.returncode == pytest.ExitCode.TESTS_FAILED, result.describe()
    return result


@pytest.fixture(scope="module")
def lab_run_verbose(lab_targets: Path, dovecot: DovecotLab, workdir: Path) -> TermRun:
    """The lab targets with ``-v``."""
    result = run(lab_targets, workdir, "-v", env={PW_ENV: dovecot.demo_password})
    assert result.proc.returncode == pytest.ExitCode.TESTS_FAILED, result.describe()
    return result


def test_output_ends_with_the_pop3mon_summary(lab_run: TermRun) -> None:
    """The pop3mon summary comes after pytest's short test summary and its final
    "N failed, M passed" line, and nothing follows it."""
    lines = lab_run.lines
    summary = lab_run.summary()
    start = len(lines) - len(summary)
    final = [i for i, line in enumerate(lines) if re.search(r"=+ .*\d+ failed.* in ", line)]
    short = [i for i, line in enumerate(lines) if "short test summary info" in line]
    assert final and short, lab_run.describe()
    assert short[-1] < final[-1] < start, lab_run.describe()
    assert [line for line in summary if line.strip()][-1].startswith("verdicts: "), summary


def test_summary_lines_fit_80_columns(lab_run: TermRun, lab_run_verbose: TermRun) -> None:
    """Every summary line, default and -v, fits 80 columns."""
    for result in (lab_run, lab_run_verbose):
        too_wide = [line for line in result.summary() if len(line) > WIDTH]
        assert not too_wide, too_wide


def test_no_reason_is_cut(lab_run: TermRun) -> None:
    """Every CRIT and WARN reason, and every SKIP reason no failure explains, appears in
    the summary whole (wrapped over lines, maybe), and no line ends in an ellipsis."""
    summary = lab_run.summary()
    flat = _flat("\n".join(summary))
    reasons = set()
    for props in lab_run.props.values():
        verdict = props.get("pop3mon_verdict")
        if verdict in ("CRIT", "WARN") or (verdict == "SKIP" and "pop3mon_blocked_by" not in props):
            reasons.add(props["pop3mon_reason"])
    assert len(reasons) >= 5, lab_run.props
    for reason in reasons:
        assert _flat(reason) in flat, (reason, summary)
    assert not [line for line in summary if line.rstrip().endswith(("...", "…"))], summary


def test_closed_port_types_fold_into_one_entry(lab_run: TermRun) -> None:
    """The eight connection types on the closed port are one CRIT entry: their host's
    (mail1's only port accepts nothing), with the reason once and every check it blocked;
    the hosts line names the eight ids."""
    summary = lab_run.summary()
    text = "\n".join(summary)
    heads = [line for line in summary if "host:mail1 host/tcp: 127.0.0.1 does not" in line]
    assert len(heads) == 1, text
    assert text.count("does not accept TCP connections") == 1, text
    assert "CRIT (1 host, 1 connection type, 2 root causes):" in text, text
    entry = _entry(summary, heads[0])
    # Every check of the eight connection types: none of them was probed.
    assert "160 dependent checks skipped" in " ".join(entry.split()), entry
    hosts = _entry(summary, next(line for line in summary if line.startswith("hosts: ")))
    for ct in CLOSED_IDS[:6]:
        assert ct in hosts, (ct, hosts)
    assert "and 2 more; 1 up" in " ".join(hosts.split()), hosts
    # Severity first: CRIT, then WARN, then SKIP, then the OK count.
    order = [text.index(h) for h in ("\nCRIT (", "\nWARN (", "\nSKIP (", "\nOK: ")]
    assert order == sorted(order), text


def test_ok_types_are_a_count_unless_verbose(lab_run: TermRun, lab_run_verbose: TermRun) -> None:
    """Healthy connection types: a count by default, named with -v."""
    text = "\n".join(lab_run.summary())
    assert "OK: 2 connection types (-v lists them)" in text, text
    assert "ok-tls" not in text and "ok-stls" not in text, text
    verbose = "\n".join(lab_run_verbose.summary())
    assert re.search(
        r"OK: 2 connection types: (ok-tls, ok-stls|ok-stls, ok-tls)$", verbose, re.M
    ), verbose
    # -v names every id of a group too.
    assert "closed-8" in verbose and "and 2 more" not in verbose, verbose


def test_skip_lines_carry_the_connection_id(lab_run: TermRun) -> None:
    """Every -rs line names its test with the connection id, never only file and line."""
    skipped = [line for line in lab_run.lines if line.startswith("SKIPPED")]
    assert skipped, lab_run.describe()
    ids = ("ok-tls", "ok-stls", "warn-apop", LONG_ID, *CLOSED_IDS, "host:lab", "host:mail1")
    for line in skipped:
        assert re.search(r"\[(" + "|".join(map(re.escape, ids)) + r")[\]-]", line), line
        assert "Skipped: " not in line, line


def test_failed_lines_are_never_cut(lab_run: TermRun) -> None:
    """A FAILED line carries the verdict and reason when they fit, else less, never a cut
    message: the long id leaves no room for the expired certificate's reason."""
    failed = [line for line in lab_run.lines if line.startswith("FAILED")]
    # The expired certificate fails two checks (certificate, expiry); the closed port is
    # its host's one CRIT (host:mail1 tcp).
    assert len(failed) == 2 + 1, lab_run.describe()
    for line in failed:
        assert not line.rstrip().endswith(("...", "…")), line
        assert len(line) <= WIDTH, line
        assert "Failed: " not in line, line
    for line in failed:
        if LONG_ID in line:
            assert line.endswith(f"[{LONG_ID}] - CRIT"), line
        else:
            tcp = r"127\.0\.0\.1 does not accept TCP connections on its port \(.*\)"
            assert re.search(r" - CRIT(: " + tcp + ")?$", line), line


# --------------------------------------------------------------------------- at scale


@pytest.fixture(scope="module")
def scale_run(closed_ports: list[int], workdir: Path) -> TermRun:
    """1,000 connection types, 100 on each of ten closed ports, ``test_tcp`` only. The host
    check tries a port that listens (``tcp_ports``), so the host is up and each connection
    type's own TCP check fails, 1,000 CRITs to fold (a host none of whose ports answers
    would be one CRIT: tests/test_hosts.py)."""
    connections = [
        {"id": f"p{p}-c{n:03d}", "port": port, "security": "tls"}
        for p, port in enumerate(closed_ports)
        for n in range(100)
    ]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = {"name": "big", "host": "127.0.0.1", "connections": connections}
        server["tcp_ports"] = [listener.getsockname()[1]]
        data = {
            "version": 1,
            "defaults": {"account": {"username": "u", "password_env": PW_ENV}},
            "servers": [server],
        }
        targets = write_targets(workdir / "scale.yaml", data)
        result = run(targets, workdir, "-k", "test_tcp", "-q", "--tb=no", env={PW_ENV: "unused"})
    assert result.proc.returncode == pytest.ExitCode.TESTS_FAILED, result.describe()
    return result


def test_summary_stays_short_at_1000_connection_types(
    scale_run: TermRun, closed_ports: list[int]
) -> None:
    """Ten root causes of 100 connection types each: ten CRIT entries, each with a few ids
    and "and N more"; the whole summary within 50 lines of 80 columns."""
    summary = scale_run.summary()
    text = "\n".join(summary)
    assert len(summary) <= 50, text
    assert all(len(line) <= WIDTH for line in summary), text
    assert "CRIT (1000 connection types, 10 root causes):" in text, text
    for port in closed_ports:
        assert _flat(f"port {port} failed") in _flat(text), (port, text)
    assert text.count("100 connection types on 127.0.0.1: connectivity/tcp:") == 10, text
    assert _flat("and 94 more (-v lists them)") in _flat(text), text
    assert "OK: none" in text, text
    assert summary[-1].startswith("verdicts: 1000 CRIT"), text
