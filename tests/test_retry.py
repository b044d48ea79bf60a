"""In-run retry of a transient failure (``retries:``, ``retry_backoff:``; engine/retry.py).

Against the fault server on loopback: a server that resets its first connection recovers
with ``retries: 1`` and stays CRIT with ``retries: 0``; a port that refuses and then
listens recovers; a refused login, a login cut off after PASS and a session reset after a
successful login are never probed again (the server sees exactly one login); permanent
faults (NXDOMAIN, an expired certificate, STLS missing) are reported at once. One real
suite run checks the same through pytest, the JUnit reasons and results.json.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pop3mon import checks
from pop3mon.config import load_targets
from pop3mon.engine import dns
from pop3mon.engine.errors import ERROR_KINDS
from pop3mon.engine.pacing import LoginPacer, Turn
from pop3mon.engine.result import AuthInfo, ProbeResult, ProbeSpec, StageOutcome
from pop3mon.engine.retry import (
    RETRY_STAGES,
    TRANSIENT_KINDS,
    probe_with_retries,
    retry_decision,
)
from pop3mon.engine.runner import run_probes
from pop3mon.engine.stages import Pacing
from pop3mon.engine.wire import Deadline
from pop3mon.secrets import Secret
from pop3mon.verdict import Verdict
from test_reports import Run as ReportsRun
from test_reports import run_suite as run_reports
from test_suite import write_targets

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.faultserver import FaultServer

USER = "alice"
PASSWORD = "retry-SENTINEL-5b20f1"
BACKOFF = 0.05


def spec_for(srv: FaultServer, retries: int, **kw: Any) -> ProbeSpec:
    """A plaintext USER/PASS probe of ``srv`` (the fault server speaks no TLS here)."""
    fields: dict[str, Any] = {
        "id": f"{srv.scenario.name}-r{retries}",
        "host": "127.0.0.1",
        "port": srv.port,
        "security": "none",
        "auth": "user",
        "username": USER,
        "secret": Secret(PASSWORD, "test"),
        "allow_cleartext": True,
        "timeout": 5.0,
        "retries": retries,
        "retry_backoff": BACKOFF,
    }
    fields.update(kw)
    return ProbeSpec(**fields)


@pytest.fixture(scope="module")
def thresholds(tmp_path_factory: pytest.TempPathFactory) -> checks.Thresholds:
    """A real ConnectionType (plaintext, USER) with default thresholds."""
    path = Path(tmp_path_factory.mktemp("retry")) / "t.yaml"
    path.write_text(
        "servers:\n"
        "  - name: s\n"
        "    host: 127.0.0.1\n"
        "    allow_cleartext: true\n"
        "    account: {username: alice, password_env: X}\n"
        "    connections:\n"
        "      - {security: none, auth: user, port: 1110}\n",
        encoding="utf-8",
    )
    return load_targets(path).connections[0]


def verdict(result: ProbeResult, t: checks.Thresholds, check: str) -> checks.CheckResult:
    return checks.evaluate(result, t, check)


def login_attempts(srv: FaultServer) -> int:
    """Logins the server answered, successful or not, plus PASS lines it never answered."""
    return srv.commands().count("PASS")


# --------------------------------------------------------------------------- recovering


def test_flaky_first_recovers_with_one_retry(thresholds: checks.Thresholds) -> None:
    with FaultServer("flaky-first", users={USER: PASSWORD}) as srv:
        result = run_probes([spec_for(srv, 1)])["flaky-first-r1"]
        srv.wait_idle()
    assert result.ok, result.error_reason
    assert result.attempts == 2
    (first,) = result.retried
    assert first.kind == "connection-reset" and first.status == "fail"
    assert srv.connections == 2 and srv.logins == 1
    tcp = verdict(result, thresholds, "tcp")
    assert tcp.verdict == Verdict.OK
    # The RST lands on the connect or on the greeting's read, depending on timing.
    assert "(OK after 1 retry: attempt 1: " in tcp.reason
    assert "connection reset by the server during" in tcp.reason
    # The owner of attempt 1's failure says so too, and a check unrelated to it does not.
    owner = checks.owner_of(first)
    assert owner is not None and "after 1 retry" in verdict(result, thresholds, owner).reason
    assert "retry" not in verdict(result, thresholds, "stat").reason


def test_flaky_first_without_retries_is_crit(thresholds: checks.Thresholds) -> None:
    with FaultServer("flaky-first", users={USER: PASSWORD}) as srv:
        result = run_probes([spec_for(srv, 0)])["flaky-first-r0"]
        srv.wait_idle()
    assert result.error_kind == "connection-reset"
    assert (result.attempts, result.retried, result.not_retried) == (1, (), "")
    assert srv.connections == 1 and srv.logins == 0
    owner = checks.owner(result)
    assert owner is not None
    crit = verdict(result, thresholds, owner)
    assert crit.verdict == Verdict.CRIT and "attempt" not in crit.reason


def test_flaky_first_counts_per_server_and_exhausts_the_retries(
    thresholds: checks.Thresholds,
) -> None:
    """Three resets and ``retries: 2``: three attempts, all failed, the CRIT names them."""
    with FaultServer("flaky-first", users={USER: PASSWORD}, flaky_first=3) as srv:
        result = probe_with_retries(spec_for(srv, 2))
        srv.wait_idle()
    assert result.error_kind == "connection-reset"
    assert result.attempts == 3 and len(result.retried) == 2
    assert srv.connections == 3 and srv.logins == 0
    owner = checks.owner(result)
    assert owner is not None
    crit = verdict(result, thresholds, owner)
    assert crit.verdict == Verdict.CRIT
    assert "(attempt 3 of 3; attempt 1: " in crit.reason and "; attempt 2: " in crit.reason


def test_refused_port_that_starts_listening_recovers(thresholds: checks.Thresholds) -> None:
    """A real refusal (nothing listening), then a real server on the same port during the
    backoff: the TCP check is OK and says attempt 1 was refused."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = int(holder.getsockname()[1])
    servers: list[FaultServer] = []

    def start_server(seconds: float) -> None:
        holder.close()
        servers.append(FaultServer("healthy", users={USER: PASSWORD}, port=port).start())
        time.sleep(seconds)

    try:
        spec = ProbeSpec(
            id="refused-then-up",
            host="127.0.0.1",
            port=port,
            security="none",
            auth="none",
            timeout=5.0,
            retries=1,
            retry_backoff=BACKOFF,
        )
        result = probe_with_retries(spec, sleep=start_server)
    finally:
        holder.close()
        for srv in servers:
            srv.stop()
    assert result.ok, result.error_reason
    assert [o.kind for o in result.retried] == ["connection-refused"]
    tcp = verdict(result, thresholds, "tcp")
    assert tcp.verdict == Verdict.OK
    assert tcp.reason.startswith(f"connected to 127.0.0.1 port {port} (OK after 1 retry: ")
    assert "attempt 1: TCP connect to 127.0.0.1 port" in tcp.reason and "refused" in tcp.reason


# --------------------------------------------------------------------------- never twice


def test_wrong_password_is_never_retried(thresholds: checks.Thresholds) -> None:
    with FaultServer("healthy", users={USER: "the-right-one"}) as srv:
        result = run_probes([spec_for(srv, 2)])["healthy-r2"]
        srv.wait_idle()
    assert result.error_kind == "auth-rejected" and result.error_stage == "auth"
    assert (result.attempts, result.retried, result.not_retried) == (1, (), "")
    assert srv.connections == 1
    assert login_attempts(srv) == 1 and len(srv.log.events("login-failed")) == 1


def test_reset_after_a_successful_login_is_not_retried(thresholds: checks.Thresholds) -> None:
    """Login accepted, then RST instead of STAT: the mailbox failure stands, with why."""
    with FaultServer("rst-on-stat", users={USER: PASSWORD}) as srv:
        result = run_probes([spec_for(srv, 2)])["rst-on-stat-r2"]
        srv.wait_idle()
    assert result.error_stage == "stat"
    assert result.error_kind in TRANSIENT_KINDS  # transient by kind; the login decides
    assert result.auth is not None and result.auth.success
    assert result.attempts == 1 and result.retried == ()
    assert "a login was made in this attempt" in result.not_retried
    assert srv.connections == 1 and srv.logins == 1 and login_attempts(srv) == 1
    stat = verdict(result, thresholds, "stat")
    assert stat.verdict == Verdict.CRIT
    assert "(not retried: a login was made in this attempt" in stat.reason
    assert verdict(result, thresholds, "login").verdict == Verdict.OK


def test_reset_after_pass_is_not_retried(thresholds: checks.Thresholds) -> None:
    """PASS went out and the answer never came: the credential is not sent again."""
    with FaultServer("rst-after-pass", users={USER: PASSWORD}) as srv:
        result = probe_with_retries(spec_for(srv, 3))
        srv.wait_idle()
    assert result.error_stage == "auth" and result.error_kind in TRANSIENT_KINDS
    assert result.attempts == 1
    assert "the login had started" in result.not_retried
    assert srv.connections == 1 and login_attempts(srv) == 1
    login = verdict(result, thresholds, "login")
    assert login.verdict == Verdict.CRIT and "not retried: the login had started" in login.reason


class _CountingPacer(LoginPacer):
    """The run's real pacer, counting the turns it gives."""

    def __init__(self) -> None:
        super().__init__()
        self.turns = 0

    def turn(
        self,
        key: str,
        ct_id: str,
        account: str,
        *,
        pacing: Pacing,
        login_delay: int | None = None,
    ) -> Turn:
        self.turns += 1
        return super().turn(key, ct_id, account, pacing=pacing, login_delay=login_delay)


def test_only_the_attempt_that_logs_in_takes_a_login_turn() -> None:
    pacer = _CountingPacer()
    with FaultServer("flaky-first", users={USER: PASSWORD}, flaky_first=2) as srv:
        result = run_probes([spec_for(srv, 3)], pacer=pacer)["flaky-first-r3"]
        srv.wait_idle()
    assert result.ok and result.attempts == 3
    assert pacer.turns == 1 and srv.logins == 1


# --------------------------------------------------------------------------- permanent


def test_nxdomain_is_not_retried() -> None:
    spec = ProbeSpec(id="nx", host="nothing.invalid", port=110, retries=3, retry_backoff=5.0)
    started = time.monotonic()
    result = probe_with_retries(spec)
    assert result.error_kind == "dns-nxdomain"
    assert (result.attempts, result.not_retried) == (1, "")
    assert time.monotonic() - started < 2.0  # no backoff was slept


def test_expired_certificate_is_not_retried(lab_certs: LabCerts) -> None:
    pair = lab_certs.expired
    with FaultServer(
        "healthy", certfile=pair.cert, keyfile=pair.key, implicit_tls=True, users={}
    ) as srv:
        spec = ProbeSpec(
            id="expired",
            host="localhost",
            port=srv.port,
            security="tls",
            auth="none",
            ca_file=str(lab_certs.ca_file),
            retries=3,
            retry_backoff=5.0,
        )
        result = probe_with_retries(spec)
        srv.wait_idle()
    assert result.error_kind == "cert-expired" and result.attempts == 1
    # The probe itself opens a second connection to read the failing certificate.
    assert srv.connections <= 2


def test_stls_missing_is_not_retried(lab_certs: LabCerts) -> None:
    with FaultServer("no-stls", users={USER: PASSWORD}) as srv:
        result = probe_with_retries(spec_for(srv, 3, security="starttls"))
        srv.wait_idle()
    assert result.error_kind == "stls-not-offered" and result.attempts == 1
    assert srv.connections == 1 and login_attempts(srv) == 0


def test_wall_time_is_bounded_by_attempts_times_timeout() -> None:
    """A greeting that never comes, ``retries: 2``: three deadlines and two backoffs."""
    timeout, retries = 0.4, 2
    with FaultServer("no-greeting") as srv:
        spec = spec_for(srv, retries, timeout=timeout, auth="none")
        started = time.monotonic()
        result = probe_with_retries(spec)
        elapsed = time.monotonic() - started
    assert result.error_kind == "timeout" and result.error_stage == "greeting"
    assert result.attempts == retries + 1 and srv.connections == retries + 1
    assert elapsed <= (retries + 1) * timeout + retries * BACKOFF + 1.0


# --------------------------------------------------------------------------- the rules


def test_transient_kinds_are_engine_kinds_and_stages_precede_the_login() -> None:
    assert TRANSIENT_KINDS <= ERROR_KINDS
    assert "auth" not in RETRY_STAGES and "stat" not in RETRY_STAGES
    assert {"dns", "connect", "tls", "greeting", "capa", "stls", "tls_handshake"} <= RETRY_STAGES
    for permanent in (
        "dns-nxdomain",
        "cert-expired",
        "cert-invalid",
        "tls-protocol-too-old",
        "tls-handshake-failed",
        "stls-not-offered",
        "stls-refused",
        "stls-injection",
        "policy",
        "auth-failed",
        "auth-rejected",
        "sys-temp",
        "greeting-refused",
        "protocol-error",
    ):
        assert permanent not in TRANSIENT_KINDS, permanent


def _failed(kind: str, stage: str, auth: AuthInfo | None = None) -> ProbeResult:
    return ProbeResult(
        id="x",
        host="h",
        port=110,
        security="none",
        mechanism="user",
        started_at=0.0,
        stages=(StageOutcome(stage, "fail", kind, "broke"),),
        auth=auth,
        error_kind=kind,
        error_stage=stage,
        error_reason="broke",
    )


@pytest.mark.parametrize(
    ("kind", "stage", "auth", "again"),
    [
        ("connection-refused", "connect", None, True),
        ("connect-timeout", "connect", None, True),
        ("dns-temporary", "dns", None, True),
        ("dns-timeout", "dns", None, True),
        ("tls-eof", "tls", None, True),
        ("timeout", "greeting", None, True),
        ("connection-closed", "capa", None, True),
        ("connection-reset", "tls_handshake", None, True),
        ("dns-nxdomain", "dns", None, False),
        ("cert-expired", "tls", None, False),
        # A login answered with [SYS/TEMP] was refused by the server: never again.
        ("sys-temp", "auth", AuthInfo("user", success=False, secret_sent=True), False),
        ("connection-reset", "auth", AuthInfo("user", secret_sent=True), False),
        # CRAM-style: no secret crossed the wire, but the login went out all the same.
        ("timeout", "auth", AuthInfo("cram-md5", secret_sent=False), False),
        ("connection-reset", "stat", AuthInfo("user", success=True, secret_sent=True), False),
    ],
)
def test_retry_decision(kind: str, stage: str, auth: AuthInfo | None, again: bool) -> None:
    decided, why_not = retry_decision(_failed(kind, stage, auth))
    assert decided is again
    assert bool(why_not) is (not again and kind in TRANSIENT_KINDS)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (socket.EAI_AGAIN, "dns-temporary"),
        (socket.EAI_NONAME, "dns-nxdomain"),
        (socket.EAI_FAIL, "dns-failed"),
    ],
)
def test_resolver_answers_have_their_own_kinds(
    monkeypatch: pytest.MonkeyPatch, code: int, kind: str
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(code, "resolver says no")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    with pytest.raises(Exception) as info:
        dns.resolve("mail.example.org", 110, Deadline(2.0))
    assert getattr(info.value, "kind", None) == kind


def test_result_round_trips_with_its_attempts() -> None:
    result = dataclasses.replace(
        _failed("connection-reset", "stat"),
        attempts=3,
        retried=(StageOutcome("connect", "fail", "connection-refused", "refused"),) * 2,
        not_retried="because",
    )
    again = ProbeResult.from_json(result.to_json())
    assert again == result
    data = json.loads(result.to_json())
    assert data["attempts"] == 3 and data["retried"][0]["kind"] == "connection-refused"


def test_retries_cascade_and_default_to_none(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "defaults: {retry_backoff: 2.5}\n"
        "servers:\n"
        "  - name: s\n"
        "    host: 127.0.0.1\n"
        "    retries: 2\n"
        "    connections:\n"
        "      - {security: none, auth: none}\n"
        "      - {security: tls, auth: none, retries: 0}\n"
        "  - name: t\n"
        "    host: 127.0.0.2\n"
        "    connections:\n"
        "      - {security: none, auth: none}\n",
        encoding="utf-8",
    )
    got = {c.id: (c.retries, c.retry_backoff) for c in load_targets(path).connections}
    assert got == {"s:110-none": (2, 2.5), "s:995-tls": (0, 2.5), "t:110-none": (0, 2.5)}
    spec = load_targets(path).by_id("s:110-none").to_probe_spec()
    assert (spec.retries, spec.retry_backoff) == (2, 2.5)
    assert (
        ProbeSpec(id="x", host="h", port=1).retries,
        ProbeSpec(id="x", host="h", port=1).retry_backoff,
    ) == (0, 1.0)


# --------------------------------------------------------------------------- a real run


@dataclass
class SuiteRun:
    """The suite run of this module: its results.json and the servers it probed."""

    run: ReportsRun
    servers: dict[str, FaultServer]

    def checks(self, ct: str) -> dict[str, dict[str, Any]]:
        """Check name -> its record in results.json, for connection type ``ct``."""
        conn = self.connection(ct)
        return {c["check"]: c for c in conn["checks"]}

    def connection(self, ct: str) -> dict[str, Any]:
        """The results.json record of ``ct``."""
        found = [c for c in self.run.json()["connections"] if c["id"] == ct]
        assert len(found) == 1, self.run.output[-4000:]
        return dict(found[0])


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuiteRun]:
    """One real suite run (``python -m pytest`` in the repository): flaky servers with and
    without retries, a wrong password and a reset after login with retries, each on its own
    fault server (flaky-first counts connections per server)."""
    workdir = tmp_path_factory.mktemp("retry-suite")
    users = {USER: PASSWORD}
    retries = {"flaky-retried": 1, "flaky-once": 0, "wrong-password": 2, "reset-after-login": 2}
    with ExitStack() as stack:
        servers = {
            "flaky-retried": FaultServer("flaky-first", users=users),
            "flaky-once": FaultServer("flaky-first", users=users),
            "wrong-password": FaultServer("healthy", users={USER: "the-right-one"}),
            "reset-after-login": FaultServer("rst-on-stat", users=users),
        }
        for srv in servers.values():
            stack.enter_context(srv)
        connections = [
            {
                "id": name,
                "port": srv.port,
                "security": "none",
                "auth": "user",
                "retries": retries[name],
            }
            for name, srv in servers.items()
        ]
        targets = write_targets(
            workdir / "retry.yaml",
            {
                "version": 1,
                "defaults": {
                    "allow_cleartext": True,
                    # Loopback fault servers: no penalty to wait out after the refusal.
                    "login_pacing": "parallel",
                    "retry_backoff": BACKOFF,
                    "account": {"username": USER, "password_env": "POP3MON_RETRY_PW"},
                },
                # One server entry per fault server: a server with several connection
                # types gets a host check, whose TCP connect would be the first connection
                # flaky-first refuses, and the probe would never need its retry.
                "servers": [
                    {"name": c["id"], "host": "127.0.0.1", "connections": [c]} for c in connections
                ],
            },
        )
        run = run_reports(targets, workdir / "reports", env={"POP3MON_RETRY_PW": PASSWORD})
        for srv in servers.values():
            srv.wait_idle()
        yield SuiteRun(run, servers)


def test_suite_run_retries_only_what_it_may(suite_run: SuiteRun) -> None:
    run, servers = suite_run.run, suite_run.servers
    assert run.proc.returncode == 1, run.output[-4000:]
    tcp = suite_run.checks("flaky-retried")["tcp"]
    assert tcp["verdict"] == "OK", run.output[-4000:]
    assert "(OK after 1 retry: attempt 1: " in tcp["reason"]
    assert "connection reset by the server" in tcp["reason"]
    assert suite_run.checks("flaky-retried")["stat"]["verdict"] == "OK"
    once = [c for c in suite_run.checks("flaky-once").values() if c["verdict"] == "CRIT"]
    assert len(once) == 1 and "attempt" not in once[0]["reason"], once
    login = suite_run.checks("wrong-password")["login"]
    assert login["verdict"] == "CRIT" and "retr" not in login["reason"]
    stat = suite_run.checks("reset-after-login")["stat"]
    assert stat["verdict"] == "CRIT"
    assert "not retried: a login was made in this attempt" in stat["reason"]
    # What the servers saw: one more connection where a retry was made, one login each.
    assert servers["flaky-retried"].connections == 2
    assert servers["flaky-once"].connections == 1
    for name in ("wrong-password", "reset-after-login"):
        assert servers[name].connections == 1, name
        assert servers[name].commands().count("PASS") == 1, name
    assert servers["flaky-retried"].logins == 1 and servers["reset-after-login"].logins == 1
    assert PASSWORD not in run.output


def test_results_json_carries_the_attempts(suite_run: SuiteRun) -> None:
    probe = {ct: suite_run.connection(ct)["probe"] for ct in suite_run.servers}
    assert probe["flaky-retried"]["attempts"] == 2
    assert probe["flaky-retried"]["retried"][0]["kind"] == "connection-reset"
    assert probe["flaky-once"]["attempts"] == 1 and probe["flaky-once"]["retried"] == []
    assert "login was made" in probe["reset-after-login"]["not_retried"]
    assert probe["wrong-password"]["not_retried"] == ""
    assert suite_run.connection("flaky-retried")["config"]["retries"] == 1
    text = suite_run.run.path("results.json").read_text(encoding="utf-8")
    assert PASSWORD not in text
