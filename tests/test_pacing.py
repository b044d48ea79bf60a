"""Login pacing: the run's own logins never cost the other connection types their verdicts.

Against a real Dovecot with its stock failure timing (``fast_auth_failures=False``: the
per-IP authentication penalty is on) and ``pop3_lock_session = yes`` (a second session of
one account gets ``[IN-USE]``), and the fault server for RFC 2449 ``LOGIN-DELAY``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pop3mon.engine.pacing import (
    Ledger,
    LedgerEntry,
    LoginPacer,
    login_delay_of,
    penalty_window,
)
from pop3mon.engine.result import ProbeSpec
from pop3mon.engine.runner import run_probes
from pop3mon.engine.stages import Security
from pop3mon.secrets import Secret
from test_suite import SuiteRun, run_suite, write_targets

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dovecot import DovecotLab, LabUnavailable
from pop3mon_lab.faultserver import FaultServer

PW_ENV = "POP3MON_PACING_PASSWORD"
WRONG_ENV = "POP3MON_PACING_WRONG"
WRONG_PASSWORD = "wrong-pacing-7f3a21"
HEALTHY_MECHS = {
    "tls": ("plain", "scram-sha-256", "scram-sha-1", "cram-md5", "login"),
    "starttls": ("plain", "scram-sha-256", "cram-md5", "login", "auto"),
}


@pytest.fixture(scope="module")
def stock_dovecot(lab_certs: LabCerts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Dovecot as shipped: failed logins are answered after 2 s and feed the per-IP
    penalty; POP3 sessions lock the mailbox."""
    try:
        lab = DovecotLab(
            lab_certs,
            workdir=tmp_path_factory.mktemp("stock-dovecot"),
            fast_auth_failures=False,
            extra_config="pop3_lock_session = yes\n",
        )
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    with lab:
        yield lab


def _targets(lab: DovecotLab, path: Path) -> tuple[Path, list[str]]:
    """Ten healthy connection types of one account and one with a wrong password."""
    connections: list[dict[str, Any]] = []
    healthy: list[str] = []
    for security, mechs in HEALTHY_MECHS.items():
        port = lab.port("pop3s" if security == "tls" else "pop3")
        for mech in mechs:
            ct_id = f"{security}-{mech}"
            healthy.append(ct_id)
            connections.append({"id": ct_id, "port": port, "security": security, "auth": mech})
    connections.insert(
        3,
        {
            "id": "wrong-password",
            "port": lab.port("pop3s"),
            "security": "tls",
            "auth": "plain",
            "account": {"username": lab.demo_user, "password_env": WRONG_ENV},
        },
    )
    data = {
        "version": 1,
        "defaults": {
            "ca_file": str(lab.ca_file),
            "account": {"username": lab.demo_user, "password_env": PW_ENV},
            # The default latency thresholds (2 s / 5 s): a 4 s penalty would break them.
        },
        "servers": [{"name": "lab", "host": lab.hostname, "connections": connections}],
    }
    return write_targets(path, data), healthy


def _problems(run: SuiteRun, ct: str) -> list[str]:
    cases = run.for_ct(ct)
    assert cases, f"no cases for {ct}\n{run.describe()}"
    return [
        f"{c.nodeid}: {c.verdict} {c.reason}"
        for c in cases
        if c.outcome in ("failed", "error") or c.verdict not in ("OK", "SKIP")
    ]


def test_a_refused_login_costs_the_others_nothing_run_after_run(
    stock_dovecot: DovecotLab, tmp_path: Path
) -> None:
    """Item 1: three runs back to back, one wrong password among ten healthy types of the
    same account: every healthy type is OK every time (latency included), the wrong one
    fails its login, and nothing is [IN-USE] although the server locks mailboxes."""
    targets, healthy = _targets(stock_dovecot, tmp_path / "targets.yaml")
    env = {PW_ENV: stock_dovecot.demo_password, WRONG_ENV: WRONG_PASSWORD}
    waits: list[str] = []
    for attempt in range(3):
        run = run_suite(
            targets, "-rA", workdir=tmp_path / f"run{attempt}", env=env, cache_dir=tmp_path / "c"
        )
        assert run.cases, run.describe()
        problems = [p for ct in healthy for p in _problems(run, ct)]
        assert not problems, f"run {attempt + 1}:\n" + "\n".join(problems) + run.describe()
        wrong = run.case("login", "wrong-password")
        assert wrong.verdict == "CRIT" and "[AUTH]" in wrong.reason, run.describe()
        waits += [c.reason for ct in healthy for c in run.for_ct(ct) if "waited" in c.reason]
    # Whenever a healthy login had to wait, it says for what and whose refusal caused it.
    for reason in waits:
        assert "wrong-password" in reason or "another" in reason, reason
    ledger = next((tmp_path / "c").rglob("login-ledger-*.json"))
    entry = Ledger.from_json(ledger.read_text(encoding="utf-8")).servers
    assert [e.refused for e in entry.values()] == [("wrong-password",)]


def test_same_account_sessions_never_overlap(stock_dovecot: DovecotLab) -> None:
    """Item 1 (mailbox lock): twelve sessions of one account on a server that locks the
    mailbox per session all log in and STAT, none gets [IN-USE]; engine level, no pytest."""
    specs = [
        ProbeSpec(
            id=f"lock-{i}",
            host=stock_dovecot.hostname,
            port=stock_dovecot.port("pop3s"),
            security="tls",
            auth="plain",
            username=stock_dovecot.demo_user,
            secret=Secret(stock_dovecot.demo_password),
            ca_file=str(stock_dovecot.ca_file),
            address="127.0.0.1",
            collect_uidl=True,
        )
        for i in range(12)
    ]
    results = run_probes(specs, concurrency=12)
    for result in results.values():
        assert result.ok, (result.id, result.error_kind, result.error_reason)
        assert result.mailbox is not None


@pytest.fixture
def delay_server(lab_certs: LabCerts) -> Iterator[FaultServer]:
    pair = lab_certs.valid
    with FaultServer(
        "login-delay-2", users={"alice": "alice-pacing-pw"}, certfile=pair.cert, keyfile=pair.key
    ) as srv:
        yield srv


def _spec(ct_id: str, srv: FaultServer, certs: LabCerts) -> ProbeSpec:
    return ProbeSpec(
        id=ct_id,
        host=certs.hostname,
        port=srv.port,
        security="starttls",
        auth="plain",
        username="alice",
        secret=Secret("alice-pacing-pw"),
        ca_file=str(certs.ca_file),
        address="127.0.0.1",
    )


def test_login_delay_spaces_logins_of_one_account(
    delay_server: FaultServer, lab_certs: LabCerts
) -> None:
    """Item 2: the server announces LOGIN-DELAY 2 and enforces it; two connection types of
    the same account both log in, the second after waiting (outside its latency)."""
    specs = [_spec(f"delay-{i}", delay_server, lab_certs) for i in (1, 2)]
    results = run_probes(specs, concurrency=2)
    for result in results.values():
        assert result.ok, (result.id, result.error_kind, result.error_reason)
    waited = [r for r in results.values() if r.login_wait > 0]
    assert len(waited) == 1, results
    assert waited[0].login_wait >= 1.5
    assert "LOGIN-DELAY 2" in waited[0].login_wait_reason
    other = next(r.id for r in results.values() if r is not waited[0])
    assert other in waited[0].login_wait_reason
    auth = waited[0].phase("auth")
    assert auth is not None and auth < 1.0, "the wait must not count as auth latency"
    assert delay_server.logins == 2


def test_login_delay_beyond_the_run_is_deferred_plainly(lab_certs: LabCerts) -> None:
    """Item 2: LOGIN-DELAY 900 cannot be respected within a run: the second login is not
    made, with a WARN-class kind and a reason naming the connection type and the fix."""
    pair = lab_certs.valid
    with FaultServer(
        "login-delay-900", users={"alice": "alice-pacing-pw"}, certfile=pair.cert, keyfile=pair.key
    ) as srv:
        specs = [_spec(f"long-{i}", srv, lab_certs) for i in (1, 2)]
        results = run_probes(specs, concurrency=2)
        assert srv.logins == 1
    deferred = [r for r in results.values() if not r.ok]
    assert len(deferred) == 1
    bad = deferred[0]
    other = next(r.id for r in results.values() if r is not bad)
    assert bad.error_kind == "login-delay"
    assert "deferred by pop3mon" in bad.error_reason
    assert other in bad.error_reason and "LOGIN-DELAY" in bad.error_reason


def test_login_delay_deferral_is_a_warning_in_the_suite(
    lab_certs: LabCerts, tmp_path: Path
) -> None:
    """Item 2 through the suite: the deferred login is WARN (the run passes), its mailbox
    check is skipped naming the login."""
    pair = lab_certs.valid
    with FaultServer(
        "login-delay-900", users={"alice": "alice-pacing-pw"}, certfile=pair.cert, keyfile=pair.key
    ) as srv:
        conns = [{"id": f"long-{i}", "port": srv.port, "security": "starttls"} for i in (1, 2)]
        targets = write_targets(
            tmp_path / "t.yaml",
            {
                "version": 1,
                "defaults": {
                    "ca_file": str(lab_certs.ca_file),
                    "account": {"username": "alice", "password_env": PW_ENV},
                    "auth": "plain",
                },
                "servers": [
                    {
                        "name": "f",
                        "host": lab_certs.hostname,
                        "address": "127.0.0.1",
                        "connections": conns,
                    }
                ],
            },
        )
        run = run_suite(targets, workdir=tmp_path, env={PW_ENV: "alice-pacing-pw"})
    assert run.returncode == 0, run.describe()
    logins = [run.case("login", f"long-{i}") for i in (1, 2)]
    assert sorted(c.verdict for c in logins) == ["OK", "WARN"], run.describe()
    warned = next(c for c in logins if c.verdict == "WARN")
    assert "LOGIN-DELAY" in warned.reason and "deferred by pop3mon" in warned.reason


# --------------------------------------------------------------------------- the pacer alone


def test_penalty_window_follows_dovecots_schedule() -> None:
    assert [penalty_window(n) for n in range(4)] == [0.0, 15.0, 15.0, 15.0]


def test_login_delay_is_read_from_capa() -> None:
    assert login_delay_of(["TOP", "LOGIN-DELAY 900 USER", "USER"]) == 900
    assert login_delay_of(["TOP", "USER"]) is None
    assert login_delay_of(None) is None


def test_ledger_survives_a_round_trip_and_ignores_junk() -> None:
    ledger = Ledger({"mail.example": LedgerEntry(2, 1700000000.5, ("a", "b"))})
    assert Ledger.from_json(ledger.to_json()) == ledger
    for junk in ("", "{", "[]", '{"version": 99, "servers": {}}', '{"version": 1, "servers": 3}'):
        assert Ledger.from_json(junk) == Ledger()


def test_a_fresh_refusal_in_the_ledger_holds_the_first_login() -> None:
    """The previous run's refusal answered just now: this run's first login waits its
    window out, and says whose refusal it was."""
    ledger = Ledger({"mail.example": LedgerEntry(1, time.time() - 14.5, ("bad-ct",))})
    pacer = LoginPacer(ledger)
    turn = pacer.turn("mail.example", "good-ct", "u", pacing="serial")
    assert 0.3 <= turn.waited <= 1.5
    assert "bad-ct" in turn.reason


def test_previous_refusals_log_in_last() -> None:
    ledger = Ledger({"mail.example": LedgerEntry(1, time.time() - 3600, ("bad-ct",))})
    pacer = LoginPacer(ledger, max_wait=4.0)
    pacer.expect([("mail.example", "good-ct"), ("mail.example", "bad-ct")])
    order: list[str] = []

    def login(ct: str) -> None:
        pacer.turn("mail.example", ct, "u", pacing="serial")
        order.append(ct)
        pacer.answered("mail.example", ct, "u", refused=False)
        pacer.done("mail.example", ct, "u", held=True)

    bad = threading.Thread(target=login, args=("bad-ct",))
    bad.start()
    time.sleep(0.2)
    login("good-ct")
    bad.join(5)
    assert order == ["good-ct", "bad-ct"]


def test_ledger_is_json_without_secrets(tmp_path: Path) -> None:
    pacer = LoginPacer()
    pacer.turn("h", "ct", "user", pacing="serial")
    pacer.answered("h", "ct", "user", refused=True)
    pacer.done("h", "ct", "user", held=True)
    data = json.loads(pacer.ledger().to_json())
    assert data["servers"]["h"]["refused"] == ["ct"]


def test_a_penalty_that_never_fades_is_not_waited_for_without_end() -> None:
    """Refusals in a row keep the penalty alive; a login waits at most ``max_wait``, then
    goes and says its latency is not the server's alone (and whose refusal it was)."""
    pacer = LoginPacer(max_wait=0.3)
    pacer.turn("h", "bad", "u", pacing="serial")
    pacer.answered("h", "bad", "u", refused=True)
    pacer.done("h", "bad", "u", held=True)
    turn = pacer.turn("h", "good", "u", pacing="serial")
    assert 0.3 <= turn.waited < 1.0
    assert "bad's refused login" in turn.exposed and "0.3 s" in turn.exposed


@dataclass(frozen=True)
class _Limits:
    """The thresholds a check reads (``checks.Thresholds``), for a result built here."""

    latency: Mapping[str, tuple[float, float]]
    security: Security = "tls"
    auth: str = "plain"
    min_tls_version: str = "TLSv1.2"
    cert_warn_days: float = 21
    cert_crit_days: float = 7
    mailbox_count: tuple[int, int] | None = None
    mailbox_size: tuple[int, int] | None = None
    stat_min: int | None = None
    stat_max: int | None = None


def test_an_exposed_login_leaves_its_latency_unjudged() -> None:
    from pop3mon.checks.latency import latency
    from pop3mon.engine.result import AuthInfo, ProbeResult, StageOutcome

    result = ProbeResult(
        id="good",
        host="h",
        port=110,
        security="tls",
        mechanism="plain",
        started_at=0.0,
        phases=(("auth", 4.0), ("stat", 0.01), ("total", 4.1)),
        stages=(StageOutcome("auth", "ok"), StageOutcome("stat", "ok")),
        auth=AuthInfo(mechanism="plain", strength="cleartext", encrypted=True, success=True),
        login_exposed="the login went during the server's login penalty after bad's refused login",
    )
    t = _Limits(latency={"total": (2.0, 5.0), "auth": (1.0, 4.0)})
    for phase in ("auth", "total"):
        check = latency(result, t, phase)
        assert check.verdict == "SKIP" and "bad's refused login" in check.reason
