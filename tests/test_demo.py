"""Self-tests of the demo (`./ci/demo`, :mod:`pop3mon_lab.demo`).

The end-to-end tests run the real command in a temporary copy of the repository (the files
git knows, as a fresh clone would have them) with the interpreter running these tests
(``POP3MON_PYTHON``, ``POP3MON_NO_INSTALL=1``: no venv, no apt), then check the reports of
both runs (before and after the incident), the verdicts, that no secret leaked into them, and
that nothing the demo started is still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conftest import foreground_signals
from pop3mon_lab.certs import LabCerts
from pop3mon_lab.demo import (
    DEMO_CONNECTIONS,
    HMAC_KEY_ENV,
    INCIDENT_PASSWORD_ENV,
    MAIL_CONNECTIONS,
    ORIGINAL_CONNECTIONS,
    PASSWORD_ENV,
    CheckExpect,
    ConnFacts,
    DemoLab,
    Expect,
    _Say,
    changed_facts,
    demo_connections,
    evaluate,
    start_lab,
    targets_yaml,
)
from pop3mon_lab.dovecot import DEFAULT_MAILBOXES, LabUnavailable, find_dovecot
from pop3mon_lab.postfix import find_postfix, find_submission

ROOT = Path(__file__).resolve().parents[1]
DEMO_TIMEOUT = 240


def _dovecot_available() -> bool:
    try:
        find_dovecot()
    except LabUnavailable:
        return False
    return True


def _require_dovecot() -> bool:
    return os.environ.get("POP3MON_REQUIRE_DOVECOT", "") not in ("", "0")


def _mail_lab_available() -> bool:
    """Postfix (and root) and Dovecot's submission service: the demo's SMTP part."""
    try:
        find_dovecot()
        find_postfix()
        find_submission()
    except LabUnavailable:
        return False
    return True


#: Known secrets for the end-to-end run, to look for in every artifact it leaves.
SECRETS = {
    PASSWORD_ENV: "demo-pw-SENTINEL-3c9e1f0a",
    INCIDENT_PASSWORD_ENV: "incident-pw-SENTINEL-77ab02",
    HMAC_KEY_ENV: "demo-hmac-SENTINEL-5d1e8b4427c0",
}


# --------------------------------------------------------------------------- helpers


def copy_repo(dest: Path) -> Path:
    """Copy the repository's files (tracked + untracked, minus ignored) to ``dest``."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        files = [f for f in listing.split("\0") if f]
    except (OSError, subprocess.SubprocessError):
        files = []
    if not files:  # not a git checkout: copy the tree without generated directories
        skip = shutil.ignore_patterns(
            ".git", ".venv", "reports", "__pycache__", ".*_cache", ".hypothesis", "node_modules"
        )
        shutil.copytree(ROOT, dest, ignore=skip, symlinks=True)
        return dest
    for name in files:
        src = ROOT / name
        if not src.is_file():
            continue  # deleted in the work tree but still in the index
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def demo_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        POP3MON_PYTHON=sys.executable,
        POP3MON_NO_INSTALL="1",
        NO_COLOR="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    for key in ("POP3MON_TARGETS", "POP3MON_REPORTS", "POP3MON_STRICT_WARN", "POP3MON_WORKERS"):
        env.pop(key, None)
    env.update(extra)
    return env


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes (not zombies) whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            )
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if text in cmdline and state not in ("Z", "X"):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def wait_no_processes(text: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = processes_mentioning(text)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def junit_cases(path: Path) -> dict[str, ET.Element]:
    """testcase name (``test_login[healthy-tls]``) -> element."""
    root = ET.parse(path).getroot()
    # A WARN testcase's name ends in " [WARN]" (pop3mon.report.junit.WARN_SUFFIX).
    return {case.get("name", "").removesuffix(" [WARN]"): case for case in root.iter("testcase")}


def outcome(case: ET.Element) -> str:
    for tag in ("failure", "error", "skipped"):
        if case.find(tag) is not None:
            return tag
    return "passed"


def run_demo(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(repo / "ci" / "demo"), *args],
        cwd=repo,
        env=demo_env(**env),
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        check=False,
    )


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"))


def _check_original_seven(reports: Path) -> dict[str, ET.Element]:
    """The seven original connection types' verdicts in one run's reports; its testcases."""
    assert (reports / "report.html").stat().st_size > 0
    cases = junit_cases(reports / "junit.xml")
    for conn in ORIGINAL_CONNECTIONS:
        mine = {n: c for n, c in cases.items() if n.endswith(f"[{conn.id}]")}
        assert mine, f"no testcase for {conn.id}"
        failed = {n for n, c in mine.items() if outcome(c) in ("failure", "error")}
        if conn.healthy:
            assert not failed, (conn.id, failed)
            assert outcome(mine[f"test_login[{conn.id}]"]) == "passed"
        else:
            assert conn.expect_crit is not None
            _tier, check = conn.expect_crit
            assert f"test_{check}[{conn.id}]" in failed, (conn.id, failed)
    failure = cases["test_certificate[broken-expired-cert]"].find("failure")
    assert failure is not None and "expired" in (failure.get("message") or "")
    failure = cases["test_certificate[broken-wrong-host]"].find("failure")
    assert failure is not None and "wrong.example" in (failure.get("message") or "")
    failure = cases["test_tcp[broken-closed-port]"].find("failure")
    assert failure is not None and "refused" in (failure.get("message") or "")
    # A broken login skips the mailbox: the dependency is named, not repeated as failures.
    stat = cases["test_stat[broken-wrong-password]"]
    assert outcome(stat) == "skipped"

    html = (reports / "report.html").read_text(encoding="utf-8")
    for conn in ORIGINAL_CONNECTIONS:
        assert conn.id in html

    # pop3mon's own JSON and metrics.
    verdicts = {c["id"]: c["verdict"] for c in results(reports)["connections"]}
    for conn in ORIGINAL_CONNECTIONS:
        expected = ("OK", "WARN") if conn.healthy else ("CRIT",)
        assert verdicts[conn.id] in expected, (conn.id, verdicts[conn.id])
    metrics = (reports / "metrics.prom").read_text(encoding="utf-8")
    for conn in ORIGINAL_CONNECTIONS:
        assert f'connection="{conn.id}"' in metrics
    return cases


def _check_mail_part(reports: Path) -> None:
    """The SMTP rows and the round trip in one run's reports: the healthy MX refuses to
    relay, submission logs in, the implicit-TLS listener's expired certificate is CRIT, and
    the round trip's message was delivered into the demo mailbox and cleaned up again."""
    cases = junit_cases(reports / "junit.xml")
    conns = {c["id"]: c for c in results(reports)["connections"]}
    checks = {
        cid: {k["check"]: k for k in conns[cid]["checks"]}
        for cid in (c.id for c in MAIL_CONNECTIONS)
    }
    for conn in MAIL_CONNECTIONS:
        assert conns[conn.id]["verdict"] == ("CRIT" if not conn.healthy else "OK"), (
            conn.id,
            conns[conn.id]["checks"],
        )
        if conn.protocol == "smtp":
            probe = conns[conn.id]["probe"]
            assert probe["protocol"] == "smtp"
            # A probe sends no mail: never DATA on an SMTP connection type.
            assert "DATA" not in {t["text"].split(" ")[0] for t in probe["transcript"]}
    mx = checks["healthy-smtp-mx"]
    assert mx["relay"]["verdict"] == "OK" and "Relay access denied" in mx["relay"]["reason"]
    assert mx["stls"]["reason"].startswith("STARTTLS offered")
    assert checks["healthy-submission"]["login"]["verdict"] == "OK"
    assert not _failures(cases, "healthy-submission")
    failure = cases["test_certificate[broken-smtps-expired]"].find("failure")
    assert failure is not None and "expired" in (failure.get("message") or "")
    delivery = checks["healthy-round-trip"]["latency-delivery"]
    assert delivery["verdict"] == "OK", delivery
    assert delivery["reason"].startswith("delivered through healthy-submission in "), delivery
    assert "cleanup deleted 1 own message(s)" in delivery["reason"], delivery
    trip = conns["healthy-round-trip"]["probe"]["round_trip"]
    assert trip["status"] == "delivered" and trip["deleted"] == 1, trip
    # Cleanup deleted its own message and nothing else: the seeded messages are all there.
    seeded = len(DEFAULT_MAILBOXES["demo"])
    for cid in ("healthy-tls", "healthy-starttls", "healthy-round-trip"):
        assert conns[cid]["probe"]["mailbox"]["count"] >= seeded, conns[cid]["probe"]["mailbox"]
    metrics = (reports / "metrics.prom").read_text(encoding="utf-8")
    assert re.search(r'probe_success\{module="smtp_tls",target="broken-smtps-expired"\} 0', metrics)


def results(reports: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((reports / "results.json").read_text(encoding="utf-8"))
    return data


def _issuer(reports: Path, ct: str) -> str:
    conn = next(c for c in results(reports)["connections"] if c["id"] == ct)
    return str(conn["probe"]["tls"]["cert"]["issuer"])


def _failures(cases: dict[str, ET.Element], ct: str) -> set[str]:
    return {
        n for n, c in cases.items() if n.endswith(f"[{ct}]") and outcome(c) in ("failure", "error")
    }


def test_demo_end_to_end(repo_copy: Path, tmp_path: Path) -> None:
    """`./ci/demo` in a clean copy: two runs with the incident between them, exit 0, both
    runs' reports with the right verdicts (the incident's in run 2), nothing left running."""
    if _require_dovecot() and not _dovecot_available():
        pytest.fail("POP3MON_REQUIRE_DOVECOT is set but Dovecot is not installed")
    if _require_dovecot() and not _mail_lab_available():
        pytest.fail("POP3MON_REQUIRE_DOVECOT is set but Postfix or dovecot-submissiond is not")
    reports = tmp_path / "reports"
    workdir = tmp_path / "lab"
    proc = run_demo(repo_copy, "--reports", str(reports), "--workdir", str(workdir), **SECRETS)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "demo result: as designed" in out
    dovecot = _dovecot_available()
    if dovecot:
        assert "lab: Dovecot 2." in out, out
    else:
        assert "Falling back to pop3mon's own reference POP3 server" in out, out
        assert "the incident needs Dovecot" in out, out
    mail = dovecot and _mail_lab_available()
    shown = demo_connections(incident=dovecot, mail=mail)
    if dovecot and not mail:
        assert "the SMTP part of the demo is left out" in out, out
    for conn in shown:
        assert re.search(rf"^{re.escape(conn.id)} .* as expected$", out, re.M), out
    assert "run 1 of 2" in out and "run 2 of 2" in out

    # The coverage finding: the lab's one unmonitored listener, offering USER before TLS.
    assert re.search(r"^coverage of server broken \(server:broken\): as expected$", out, re.M), out
    found = re.search(
        r"coverage: \{ports: \[(\d+)\]\}", (reports / "demo-targets.yaml").read_text()
    )
    assert found is not None
    doc = json.loads((reports / "results.json").read_text(encoding="utf-8"))
    cov = {c["coverage"]["id"]: c for c in doc["coverage"]}["server:broken"]
    unmonitored = {c["check"]: c for c in cov["checks"]}["coverage-unmonitored"]
    assert unmonitored["verdict"] == "CRIT", unmonitored
    assert f":{found.group(1)} " in unmonitored["reason"], unmonitored
    assert "cleartext login before TLS" in unmonitored["reason"], unmonitored

    # Run 1's reports are kept aside, run 2's are the ones to open: both right for the seven.
    run1 = _check_original_seven(reports / "run1")
    run2 = _check_original_seven(reports)
    if mail:
        for run_reports in (reports / "run1", reports):
            _check_mail_part(run_reports)
    else:
        assert "smtp:" not in (reports / "demo-targets.yaml").read_text(encoding="utf-8")

    if dovecot:
        # Before the incident: three incident types healthy, the fourth's server is down.
        for ct in ("incident-cert", "incident-password", "incident-stls"):
            assert not _failures(run1, ct), (ct, _failures(run1, ct))
        assert _failures(run1, "incident-recovers") == {"test_tcp[incident-recovers]"}
        # After: the password changed on the server -> login CRIT with [AUTH] ...
        login = run2["test_login[incident-password]"].find("failure")
        assert login is not None and "[AUTH]" in (login.get("message") or ""), out
        assert _failures(run2, "incident-password") == {"test_login[incident-password]"}
        # ... STLS withdrawn -> STLS CRIT ...
        stls = run2["test_stls[incident-stls]"].find("failure")
        assert stls is not None and "STLS" in (stls.get("message") or "")
        # ... re-issued by the second CA: still OK, but another issuer ...
        assert not _failures(run2, "incident-cert")
        before, after = (
            _issuer(reports / "run1", "incident-cert"),
            _issuer(reports, "incident-cert"),
        )
        assert "root CA" in before and "second CA" in after, (before, after)
        assert f"certificate issuer: {before} -> {after}" in out
        # ... and the server that was down recovered.
        assert not _failures(run2, "incident-recovers")
        verdicts = {c["id"]: c["verdict"] for c in results(reports)["connections"]}
        assert verdicts["incident-recovers"] in ("OK", "WARN")
        assert re.search(r"^incident-recovers +CRIT +OK +\* ", out, re.M), out
        assert re.search(r"^incident-password +OK +CRIT +\* ", out, re.M), out
        # Run 2 compared with run 1 through the shared history: drift, changed credentials
        # and a recovery, in the report and in pop3mon's own summary.
        assert (reports / "history.sqlite").is_file()
        drift = {
            (c["id"], k["check"]): k
            for c in results(reports)["connections"]
            for k in c["checks"]
            if k["tier"] == "drift"
        }
        assert drift[("incident-cert", "certificate_changed")]["verdict"] == "WARN"
        assert "second CA" in drift[("incident-cert", "certificate_changed")]["reason"]
        cred = drift[("incident-password", "credentials_changed")]
        assert cred["verdict"] == "WARN" and "they were accepted at" in cred["reason"], cred
        assert drift[("incident-stls", "capabilities_changed")]["verdict"] == "WARN"
        assert "recovered: incident-recovers tcp" in out, out

    # The demo's secrets are references only, and no value reached any artifact: reports,
    # targets file, pytest logs, the kept server logs, the history, the demo's terminal.
    targets = (reports / "demo-targets.yaml").read_text(encoding="utf-8")
    assert "password_env: POP3MON_DEMO_PASSWORD" in targets
    assert "password_file: demo/wrong-password" in targets
    assert not re.search(r"^\s*(password|hmac_key)\s*:", targets, re.M)
    assert "password_env: POP3MON_DEMO_INCIDENT_PASSWORD" in targets or not dovecot
    assert f"hmac_key_env: {HMAC_KEY_ENV}" in targets or not mail
    wrong_file = reports / "demo" / "wrong-password"
    wrong = wrong_file.read_text(encoding="utf-8").strip()
    secrets = [wrong, *SECRETS.values()]
    artifacts = [p for p in reports.rglob("*") if p.is_file() and p != wrong_file]
    assert any(p.name == "postfix.log" for p in artifacts) or not mail
    for path in artifacts:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, (path, secret[:8])
    for secret in secrets:
        assert secret not in out

    # Everything stopped: no Dovecot (or anything else) running from the lab directory.
    assert wait_no_processes(str(workdir)) == []
    assert wait_no_processes(str(repo_copy)) == []


def test_demo_rerun_falls_back_without_dovecot(repo_copy: Path, tmp_path: Path) -> None:
    """`--once` makes one run; a second demo in the same place works; without Dovecot the
    demo says so, falls back, and leaves the incident out."""
    reports = tmp_path / "reports"
    for mode in ("--once", "--backend=auto"):
        proc = run_demo(
            repo_copy,
            mode,
            "--reports",
            str(reports),
            POP3MON_DOVECOT=str(tmp_path / "no-dovecot"),
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert "Dovecot is not available" in out
        assert "Falling back to pop3mon's own reference POP3 server" in out
        assert "demo result: as designed" in out
        targets = (reports / "demo-targets.yaml").read_text(encoding="utf-8")
        assert "incident-" not in targets
        assert "smtp:" not in targets and "round_trip" not in targets  # needs Dovecot too
        if mode == "--once":
            assert "run 1 of 2" not in out and "running: ci/run-monitor" in out, out
            assert not (reports / "run1").exists()
            assert (reports / "junit.xml").exists()
        else:
            assert "the incident needs Dovecot" in out, out
            assert "run 2 of 2" in out
            assert (reports / "run1" / "junit.xml").exists()
    assert not list((reports / "demo").glob("dovecot-*.log"))
    assert wait_no_processes(str(repo_copy)) == []


def test_demo_reports_path_is_the_callers(repo_copy: Path, tmp_path: Path) -> None:
    """``ci/demo --reports DIR`` started outside the checkout: a relative DIR is a path
    from where it was started, as in any command, though the demo runs in the checkout."""
    here = tmp_path / "elsewhere"
    here.mkdir()
    proc = subprocess.run(
        ["bash", str(repo_copy / "ci" / "demo"), "--once", "--reports", "mine"],
        cwd=here,
        env=demo_env(POP3MON_DOVECOT=str(tmp_path / "no-dovecot")),
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (here / "mine" / "junit.xml").is_file() and (here / "mine" / "results.json").is_file()
    assert not (repo_copy / "mine").exists()
    assert wait_no_processes(str(repo_copy)) == []


def _listening_ports() -> dict[int, set[str]]:
    """port -> local addresses of TCP sockets in LISTEN state (IPv4 and IPv6)."""
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].rsplit(":", 1)
            found.setdefault(int(port, 16), set()).add(address)
    return found


def test_demo_serves_on_loopback_only_and_stops_on_ctrl_c(repo_copy: Path, tmp_path: Path) -> None:
    """`--serve`: every lab port listens on 127.0.0.1 only; SIGINT stops everything."""
    workdir = tmp_path / "lab"
    proc = subprocess.Popen(
        [
            "bash",
            str(repo_copy / "ci" / "demo"),
            "--serve",
            "--reports",
            str(tmp_path / "r"),
            "--workdir",
            str(workdir),
        ],
        cwd=repo_copy,
        env=demo_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=foreground_signals,  # SIGINT must be heard, as in a terminal
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    raw = b""
    out = ""
    try:
        deadline = time.monotonic() + 60
        while b"runs until Ctrl-C" not in raw:
            assert time.monotonic() < deadline, raw.decode(errors="replace")
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, raw.decode(errors="replace")  # EOF: the demo ended early
                raw += chunk
        out = raw.decode(errors="replace")
        match = re.search(r"ports: (.*?)  \(CA", out)
        assert match, out
        ports = {name: int(port) for name, port in re.findall(r"(\w+) (\d+)", match.group(1))}
        assert set(ports) >= {"tls", "stls", "expired", "wrong_host", "closed"}
        listening = _listening_ports()
        for name, port in ports.items():
            if name == "closed":
                assert port not in listening, out
            else:
                assert listening.get(port) == {"0100007F"}, (name, port, listening.get(port))
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        rest, _ = proc.communicate(timeout=60)
        out = (raw + rest).decode(errors="replace")
    assert proc.returncode == 130, out
    assert "interrupted; everything the demo started has been stopped" in out
    assert wait_no_processes(str(workdir)) == []
    assert not (tmp_path / "r" / "demo" / "password").exists()
    assert not (tmp_path / "r" / "demo" / "hmac-key").exists()


# --------------------------------------------------------------------------- verdict logic


def _checks(**verdicts: str) -> dict[tuple[str, str], tuple[str, str]]:
    """``tier__check=VERDICT`` keyword arguments -> the mapping evaluate() reads."""
    return {tuple(k.split("__")): (v, f"reason of {k}") for k, v in verdicts.items()}  # type: ignore[misc]


HEALTHY = next(c for c in DEMO_CONNECTIONS if c.id == "healthy-tls")
EXPIRED = next(c for c in DEMO_CONNECTIONS if c.id == "broken-expired-cert")


def test_evaluate_healthy() -> None:
    good = evaluate(
        HEALTHY, _checks(connectivity__tcp="OK", tls__certificate="OK", auth__login="OK")
    )
    assert good.expected and good.tiers["auth"] == "OK" and good.tiers["mailbox"] == "-"
    warn = evaluate(HEALTHY, _checks(connectivity__tcp="OK", auth__login="OK", auth__policy="WARN"))
    assert warn.expected and "WARN auth/policy" in warn.why
    crit = evaluate(HEALTHY, _checks(connectivity__tcp="OK", auth__login="CRIT"))
    assert not crit.expected and "expected no CRIT" in crit.why
    no_login = evaluate(HEALTHY, _checks(connectivity__tcp="OK", auth__login="SKIP"))
    assert not no_login.expected and "successful login" in no_login.why
    assert not evaluate(HEALTHY, None).expected


def test_evaluate_broken() -> None:
    right = evaluate(
        EXPIRED, _checks(connectivity__tcp="OK", tls__certificate="CRIT", auth__login="SKIP")
    )
    assert right.expected and right.why.startswith("CRIT tls/certificate")
    passed = evaluate(EXPIRED, _checks(connectivity__tcp="OK", tls__certificate="OK"))
    assert not passed.expected and "expected CRIT in tls/certificate" in passed.why
    too_early = evaluate(EXPIRED, _checks(connectivity__tcp="CRIT", tls__certificate="CRIT"))
    assert not too_early.expected and "too early" in too_early.why
    error = evaluate(EXPIRED, _checks(connectivity__tcp="ERROR", tls__certificate="CRIT"))
    assert not error.expected


def test_run_two_expectations_come_from_the_table() -> None:
    """Run 2 uses ``after`` where there is one, else run 1's without the first-run rules."""
    password = next(c for c in DEMO_CONNECTIONS if c.id == "incident-password")
    assert password.expected(1).healthy and password.expected(2).crit == ("auth", "login")
    assert any(c.tier == "drift" for c in HEALTHY.expected(1).checks)
    assert not any(c.tier == "drift" for c in HEALTHY.expected(2).checks)
    others = {c.id for c in DEMO_CONNECTIONS} - {c.id for c in ORIGINAL_CONNECTIONS}
    assert others - {c.id for c in MAIL_CONNECTIONS} == {
        "incident-cert",
        "incident-password",
        "incident-stls",
        "incident-recovers",
    }


def test_optional_tier_is_checked_only_when_the_run_has_it() -> None:
    """The drift hook: a build without the drift tier leaves its expectations unchecked
    (and says so); a build with it must meet them."""
    want = Expect(
        crit=("auth", "login"),
        reason="[AUTH]",
        checks=(CheckExpect("drift", "credentials", ("WARN", "CRIT"), reason="accepted at"),),
    )
    base = {
        ("connectivity", "tcp"): ("OK", ""),
        ("auth", "login"): ("CRIT", "rejected [AUTH] (server said ...)"),
    }
    without = evaluate(HEALTHY, base, want)
    assert without.expected and without.unchecked == [
        "drift/credentials (no drift tier in this build)"
    ]
    good = dict(base)
    good[("drift", "credentials")] = ("WARN", "credentials rejected; they were accepted at 12:00")
    assert evaluate(HEALTHY, good, want).expected
    silent = dict(base)
    silent[("drift", "credentials")] = ("OK", "")
    wrong = evaluate(HEALTHY, silent, want)
    assert not wrong.expected and "drift/credentials" in wrong.why
    other = dict(base)
    other[("drift", "certificate")] = ("SKIP", "no baseline yet")  # tier present, check missing
    missing = evaluate(HEALTHY, other, want)
    assert not missing.expected and "not in the report" in missing.why
    no_auth = dict(base)
    no_auth[("auth", "login")] = ("CRIT", "connection reset")
    assert "[AUTH]" in evaluate(HEALTHY, no_auth, want).why


def test_results_fields_are_checked_when_present() -> None:
    """``CheckExpect.fields`` (e.g. the history's ``new``) count as unchecked until they exist."""
    want = Expect(checks=(CheckExpect("auth", "login", ("OK",), fields=(("new", False),)),))
    checks = {("auth", "login"): ("OK", "")}
    absent = evaluate(HEALTHY, checks, want, {("auth", "login"): {"verdict": "OK"}})
    assert absent.expected and absent.unchecked == ["auth/login new (not in results.json)"]
    assert evaluate(HEALTHY, checks, want, {("auth", "login"): {"new": False}}).expected
    bad = evaluate(HEALTHY, checks, want, {("auth", "login"): {"new": True}})
    assert not bad.expected and "new=False" in bad.why


def test_changed_facts() -> None:
    cert = next(c for c in DEMO_CONNECTIONS if c.id == "incident-cert")
    one, two = (ConnFacts({}, {"certificate issuer": f"CN={n}"}) for n in ("a", "b"))
    assert changed_facts(cert, one, two) == (["certificate issuer: CN=a -> CN=b"], "")
    assert "in both runs" in changed_facts(cert, one, one)[1]
    assert "run 2" in changed_facts(cert, one, ConnFacts({}, {}))[1]
    assert changed_facts(HEALTHY, one, one) == ([], "")


# --------------------------------------------------------------------------- the mail lab


MX = next(c for c in DEMO_CONNECTIONS if c.id == "healthy-smtp-mx")
SUBMISSION = next(c for c in DEMO_CONNECTIONS if c.id == "healthy-submission")


def test_mail_connections_need_the_mail_lab() -> None:
    """The SMTP rows and the round trip are their own part: without the mail lab the demo
    runs the seven original connection types (and the incident's) unchanged."""
    assert {c.id for c in MAIL_CONNECTIONS} == {
        "healthy-smtp-mx",
        "healthy-submission",
        "broken-smtps-expired",
        "healthy-round-trip",
    }
    assert len(ORIGINAL_CONNECTIONS) == 7 and not any(c.mail for c in ORIGINAL_CONNECTIONS)
    assert demo_connections(incident=False, mail=True) == ORIGINAL_CONNECTIONS + MAIL_CONNECTIONS
    assert set(demo_connections(incident=True, mail=True)) == set(DEMO_CONNECTIONS)
    # One healthy and one broken SMTP listener at least, and a round trip through the
    # healthy submission listener.
    smtp = [c for c in MAIL_CONNECTIONS if c.protocol == "smtp"]
    assert any(c.healthy for c in smtp) and any(not c.healthy for c in smtp)
    trip = next(c for c in MAIL_CONNECTIONS if c.round_trip)
    assert trip.round_trip == SUBMISSION.id and SUBMISSION.healthy


def test_evaluate_smtp_without_login() -> None:
    """An MX takes no login (auth: none): its SKIP login is healthy; a submission
    listener's is not."""
    checks = _checks(
        connectivity__greeting="OK", tls__certificate="OK", auth__login="SKIP", auth__relay="OK"
    )
    checks[("auth", "relay")] = ("OK", "relaying refused: ... 554 5.7.1 Relay access denied")
    assert evaluate(MX, checks).expected
    refused = dict(checks)
    refused[("auth", "relay")] = ("CRIT", "open relay")
    assert not evaluate(MX, refused).expected
    assert "successful login" in evaluate(SUBMISSION, checks).why


def test_demo_targets_with_the_mail_lab_load(tmp_path: Path, lab_certs: LabCerts) -> None:
    """The targets file with the SMTP part loads: smtp: entries with the demo's ids, the
    round trip through the healthy submission listener with cleanup keyed by an
    environment variable; no secret value in it."""
    from pop3mon.config import load_targets

    names = ("tls", "stls", "expired", "wrong_host", "closed", "smtp", "submission")
    ports = {name: 20000 + i for i, name in enumerate((*names, "smtps_expired"))}
    lab = DemoLab("dovecot", "test", lab_certs, ports, mail=True)
    (tmp_path / "demo").mkdir()
    shutil.copyfile(lab_certs.ca_file, tmp_path / "demo" / "ca.crt")
    (tmp_path / "demo" / "wrong-password").write_text("x\n", encoding="utf-8")
    text = targets_yaml(
        lab, "demo/ca.crt", "demo/wrong-password", demo_connections(incident=False, mail=True)
    )
    path = tmp_path / "demo-targets.yaml"
    path.write_text(text, encoding="utf-8")
    targets = load_targets(path)
    by_id = {c.id: c for c in targets.connections}
    assert set(by_id) == {c.id for c in demo_connections(incident=False, mail=True)}
    assert by_id["healthy-smtp-mx"].relay_check == "relay-test@demo.invalid"
    trip = by_id["healthy-round-trip"].round_trip
    assert trip is not None and trip.via == "healthy-submission"
    assert trip.cleanup == "own-probe-messages"
    assert f"hmac_key_env: {HMAC_KEY_ENV}" in text
    assert not re.search(r"^\s*(password|hmac_key)\s*:", text, re.M)


def test_demo_without_postfix_leaves_the_smtp_part_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dovecot without Postfix: the demo says the SMTP part is left out and why, and its
    lab offers the POP3 ports only (the real Dovecot lab; only Postfix is hidden)."""
    if not _dovecot_available():
        if _require_dovecot():
            pytest.fail("POP3MON_REQUIRE_DOVECOT is set but Dovecot is not installed")
        pytest.skip("Dovecot is not installed")

    def missing() -> Path:
        raise LabUnavailable("Postfix is not installed (Debian package: postfix)")

    monkeypatch.setattr("pop3mon_lab.demo.find_postfix", missing)
    monkeypatch.setenv("NO_COLOR", "1")
    with contextlib.ExitStack() as stack:
        lab = start_lab(
            stack,
            "auto",
            tmp_path,
            {"demo": "pw-1234567", "incident": "pw-7654321"},
            _Say(),
            incident=False,
        )
        assert lab.backend == "dovecot" and not lab.mail
        assert not {"smtp", "submission", "smtps_expired"} & set(lab.ports)
    out = capsys.readouterr().out
    assert "the SMTP part of the demo is left out: Postfix is not installed" in out, out
    assert "postfix and dovecot-submissiond" in out
