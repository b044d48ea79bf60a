"""Verdict rules of pop3mon.checks.

Most rules are checked on results built directly (the checks module only reads a
:class:`ProbeResult`), including a table over every stage: whatever stage fails, some check
owns it and is CRIT, and every check that needed a later stage is a SKIP ``blocked_by``
that owner, so a broken session can never leave a run green nor report one cause N times.
Deferred logins and old TLS are checked on results the real engine produced against the
fault server, since they depend on the engine's own reading of the server's answers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from pop3mon import checks
from pop3mon.checks.latency import ms_text
from pop3mon.config import load_targets
from pop3mon.engine import ProbeSpec, probe
from pop3mon.engine.result import (
    AuthInfo,
    CertInfo,
    MailboxInfo,
    ProbeResult,
    StageOutcome,
    TLSInfo,
)
from pop3mon.engine.stages import CHECKS, SECURITY_MODES, STAGES, TIERS, stage_index
from pop3mon.secrets import Secret
from pop3mon.verdict import Verdict

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.faultserver import FaultServer
from pop3mon_lab.faultserver.sasl import SaslOutcome
from pop3mon_lab.faultserver.session import Scenario, Session

PASSWORD = "checks-SENTINEL-5b1f"


@pytest.fixture(scope="module")
def thresholds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[checks.Thresholds]:
    """A real ConnectionType (STLS, auto) with default thresholds."""
    path = Path(tmp_path_factory.mktemp("checks")) / "t.yaml"
    path.write_text(
        "servers:\n"
        "  - name: s\n"
        "    host: localhost\n"
        "    account: {username: alice, password_env: X}\n"
        "    connections:\n"
        "      - {security: starttls, port: 1110}\n",
        encoding="utf-8",
    )
    yield load_targets(path).connections[0]


def healthy(mode: str = "starttls") -> ProbeResult:
    """What a healthy STLS (or implicit TLS) session with a login and STAT records."""
    stages = [s.name for s in STAGES if s.name != "ping" and "pop3" in s.protocols]
    if mode == "tls":
        stages = [s for s in stages if s not in ("stls", "tls_handshake", "capa_tls")]
    else:
        stages.remove("tls")
    cert = CertInfo(
        subject="CN=localhost",
        issuer="CN=lab CA",
        sans=("localhost",),
        serial="01",
        sha256="00" * 32,
        not_before="2026-01-01T00:00:00+00:00",
        not_after="2027-06-01T00:00:00+00:00",
        not_after_epoch=1_811_808_000.0,
        days_left=183.0,
        self_signed=False,
    )
    return ProbeResult(
        id="t",
        host="localhost",
        port=1110,
        security=mode,
        mechanism="auto",
        started_at=1_790_000_000.0,
        phases=(*((s, 0.001) for s in stages), ("total", 0.01)),
        stages=tuple(StageOutcome(s, "ok") for s in stages),
        addresses=("127.0.0.1",),
        peer="127.0.0.1",
        greeting="ready",
        capabilities_before=("USER", "STLS") if mode != "tls" else ("USER",),
        capabilities_after=("USER", "SASL PLAIN"),
        stls_offered=mode != "tls",
        tls=TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", True, "", "", "localhost", cert),
        auth=AuthInfo("plain", "cleartext", encrypted=True, success=True),
        mailbox=MailboxInfo(3, 4096),
    )


def _verdicts(result: ProbeResult, t: checks.Thresholds) -> dict[str, checks.CheckResult]:
    return {r.check: r for r in checks.evaluate_all(result, t)}


def _failing_at(base: ProbeResult, stage: str, kind: str = "some-failure") -> ProbeResult:
    """``base`` as if the probe had stopped with a failure in ``stage``."""
    kept = [o for o in base.stages if stage_index(o.stage) < stage_index(stage)]
    failed = StageOutcome(stage, "fail", kind, f"{stage} broke")
    return dataclasses.replace(
        base, stages=(*kept, failed), error_kind=kind, error_stage=stage, mailbox=None
    )


def test_healthy_result_has_no_crit_and_nothing_blocked(thresholds: checks.Thresholds) -> None:
    result = healthy()
    got = _verdicts(result, thresholds)
    assert {r.verdict for r in got.values()} <= {Verdict.OK, Verdict.SKIP}
    assert got["login"].verdict == Verdict.OK and got["stat"].verdict == Verdict.OK
    assert all(r.blocked_by is None for r in got.values()), got
    assert checks.owner(result) is None


@pytest.mark.parametrize(
    ("mailbox", "stat", "reason"),
    [
        ("{stat_min: 1}", Verdict.OK, "(the message count bound at least 1 is checked by stat)"),
        ("{stat_min: 5}", Verdict.CRIT, "(the message count bound at least 5 is checked by stat)"),
        ("{stat_min: 1, stat_max: 2}", Verdict.CRIT, "bound 1 to 2 is checked by stat"),
        ("{}", Verdict.OK, "no mailbox_count/mailbox_size warn/crit thresholds configured"),
    ],
)
def test_thresholds_name_the_stat_bounds_instead_of_saying_none_are_configured(
    tmp_path: Path, mailbox: str, stat: Verdict, reason: str
) -> None:
    """With only ``stat_min``/``stat_max`` set, the thresholds check does not claim that no
    mailbox thresholds are configured: it names the bound and the check that owns it."""
    path = tmp_path / "t.yaml"
    path.write_text(
        "servers:\n"
        "  - name: s\n"
        "    host: localhost\n"
        "    account: {username: alice, password_env: X}\n"
        f"    mailbox: {mailbox}\n"
        "    connections:\n"
        "      - {security: starttls, port: 1110}\n",
        encoding="utf-8",
    )
    got = _verdicts(healthy(), load_targets(path).connections[0])  # 3 messages
    assert got["stat"].verdict == stat, got["stat"]
    assert got["thresholds"].verdict == Verdict.SKIP
    assert reason in got["thresholds"].reason, got["thresholds"].reason
    assert "no mailbox thresholds configured" not in got["thresholds"].reason


STLS_ONLY = {"stls", "tls_handshake", "capa_tls"}
# POP3 results (healthy() is one): the SMTP stages are tests/test_checks_smtp.py's.
STAGE_CASES = [
    ("starttls", s.name) for s in STAGES if s.name not in ("tls", "quit") and "pop3" in s.protocols
] + [
    ("tls", s.name) for s in STAGES if s.name not in STLS_ONLY | {"quit"} and "pop3" in s.protocols
]


@pytest.mark.parametrize(("mode", "stage"), STAGE_CASES)
def test_a_failure_at_any_stage_fails_exactly_where_it_belongs(
    thresholds: checks.Thresholds, mode: str, stage: str
) -> None:
    """The owning check is CRIT with the failure's reason; every check that needs only
    later stages is a SKIP blocked by that owner; nothing else is CRIT or blocked by
    anything else."""
    t = dataclasses.replace(thresholds, security=mode)  # type: ignore[type-var]
    result = _failing_at(healthy(mode), stage)
    got = _verdicts(result, t)
    owner = checks.owner(result)
    assert owner is not None, f"no check owns a failure in {stage}"
    assert got[owner].verdict == Verdict.CRIT, got[owner]
    assert f"{stage} broke" in got[owner].reason
    assert [r.check for r in got.values() if r.verdict == Verdict.CRIT] == [owner]
    assert {r.blocked_by for r in got.values()} <= {None, owner}
    # Checks whose own stages all come after the failure cannot have run.
    owned: dict[str, list[int]] = {}
    for spec in STAGES:
        if result.protocol in spec.protocols:
            owned.setdefault(spec.owner, []).append(stage_index(spec.name))
    later = {c for c, idx in owned.items() if min(idx) > stage_index(stage)} - {owner}
    for name in later:
        res = got[name]
        assert res.verdict == Verdict.SKIP, res
        assert res.blocked_by == owner or res.reason.startswith("not applicable"), res
    assert got["latency-total"].blocked_by == owner
    assert any(got[name].blocked_by == owner for name in later | {"latency-total"})


def test_deselected_owner_is_reported_once_by_the_first_blocked_check(
    thresholds: checks.Thresholds,
) -> None:
    """With ``-m "auth or mailbox"`` and a refused TCP connect, ``tcp`` is not selected:
    the first selected check it blocks turns CRIT naming it, the others stay SKIP."""
    result = _failing_at(healthy(), "connect")
    selected = {"login", "policy", "stat", "thresholds", "logout"}
    got = {n: checks.evaluate_selected(result, thresholds, n, selected) for n in selected}
    assert got["login"].verdict == Verdict.CRIT, got["login"]
    assert "connect broke" in got["login"].reason
    assert "the 'tcp' check is not selected" in got["login"].reason
    assert got["login"].blocked_by is None
    for name in selected - {"login"}:
        assert got[name].verdict == Verdict.SKIP and got[name].blocked_by == "tcp", got[name]
    # With the owner selected, nothing is rewritten.
    assert checks.evaluate_selected(result, thresholds, "login", {*selected, "tcp"}) == (
        checks.evaluate(result, thresholds, "login")
    )


def test_session_dying_after_stls_handshake_is_crit(thresholds: checks.Thresholds) -> None:
    """A server that answers CAPA over TLS with a broken line: the CAPA check owns it."""
    result = _failing_at(healthy(), "capa_tls", kind="connection-closed")
    got = _verdicts(result, thresholds)
    assert got["capa"].verdict == Verdict.CRIT
    assert got["login"].verdict == Verdict.SKIP and got["login"].blocked_by == "capa"


def test_expiry_warns_strictly_below_the_threshold(thresholds: checks.Thresholds) -> None:
    result = healthy()
    assert result.tls is not None and result.tls.cert is not None
    days = result.tls.cert.days_left
    at = dataclasses.replace(thresholds, cert_warn_days=days, cert_crit_days=0)  # type: ignore[type-var]
    assert checks.evaluate(result, at, "expiry").verdict == Verdict.OK
    above = dataclasses.replace(thresholds, cert_warn_days=days + 1, cert_crit_days=0)  # type: ignore[type-var]
    assert checks.evaluate(result, above, "expiry").verdict == Verdict.WARN


def _probe(
    certs: LabCerts, scenario: str, mode: str = "starttls", session: type[Session] | None = None
) -> ProbeResult:
    srv = FaultServer(
        scenario,
        users={"alice": PASSWORD},
        certfile=certs.valid.cert,
        keyfile=certs.valid.key,
        implicit_tls=mode == "tls",
    )
    if session is not None:
        srv.scenario = Scenario(f"custom-{session.__name__}", session.__doc__ or "", session)
    with srv:
        spec = ProbeSpec(
            id="t",
            host="localhost",
            port=srv.port,
            security=mode,
            username="alice",
            secret=Secret(PASSWORD, "test"),
            ca_file=str(certs.ca_file),
            timeout=3.0,
        )
        return probe(spec)


@pytest.mark.parametrize(
    ("scenario", "verdict"),
    [
        ("in-use", Verdict.WARN),
        ("login-delay", Verdict.WARN),
        ("sys-temp", Verdict.WARN),
        ("sys-perm", Verdict.CRIT),
        ("auth-code", Verdict.CRIT),
    ],
)
def test_deferred_logins_are_warn_bad_ones_crit(
    lab_certs: LabCerts, thresholds: checks.Thresholds, scenario: str, verdict: str
) -> None:
    """[IN-USE], [LOGIN-DELAY] and [SYS/TEMP] are a degraded service, not a bad password."""
    result = _probe(lab_certs, scenario)
    got = _verdicts(result, thresholds)
    assert got["login"].verdict == verdict, got["login"]
    assert got["stat"].verdict == Verdict.SKIP


def test_tls_too_old_is_one_crit(lab_certs: LabCerts, thresholds: checks.Thresholds) -> None:
    """A TLS 1.0-only server: the protocol check says so; handshake and certificate do not
    repeat it as two more CRITs."""
    result = _probe(lab_certs, "tls10-only", mode="tls")
    t = dataclasses.replace(thresholds, security="tls")  # type: ignore[type-var]
    got = _verdicts(result, t)
    crit = [r.check for r in got.values() if r.verdict == Verdict.CRIT]
    assert crit == ["protocol"], got
    assert "TLSv1" in got["protocol"].reason


# --------------------------------------------------------------------------- deselected roots


def _session_of(mode: str) -> ProbeResult:
    """A healthy result of ``mode``: ``healthy()`` without the STLS stages for plain text."""
    if mode in ("tls", "starttls", "starttls-optional"):
        return dataclasses.replace(healthy("tls" if mode == "tls" else "starttls"), security=mode)
    base = healthy()
    kept = tuple(o for o in base.stages if o.stage not in STLS_ONLY)
    return dataclasses.replace(
        base, security=mode, stages=kept, capabilities_after=None, tls=None, stls_offered=None
    )


def _selections(t: checks.Thresholds) -> dict[str, set[str]]:
    """What ``-m <tier>``, ``-m "not <tier>"`` and ``-k <check>`` select, by name."""
    names = checks.check_names(t)
    tier_of = {c.name: c.tier for c in CHECKS} | {n: "latency" for n in names if "-" in n}
    out: dict[str, set[str]] = {}
    for tier in TIERS:
        out[f"-m {tier}"] = {n for n in names if tier_of[n] == tier}
        out[f"-m 'not {tier}'"] = {n for n in names if tier_of[n] != tier}
    out |= {f"-k {n}": {n} for n in names}
    out["-m 'tls or mailbox'"] = {n for n in names if tier_of[n] in ("tls", "mailbox")}
    return out


@pytest.mark.parametrize("auth", ["auto", "none"])
@pytest.mark.parametrize("mode", SECURITY_MODES)
def test_a_deselected_root_cause_fails_every_selection_once(
    thresholds: checks.Thresholds, mode: str, auth: str
) -> None:
    """Whatever stage fails and whatever subset of checks a run selects, the selection
    shows the failure: its owner is selected and gives its verdict, or exactly one
    selected check reports it with the owner's verdict and name, while every other
    selected check keeps its own verdict. Checks that are "not applicable" to the mode
    (TLS on plain text, mailbox without a login) cannot make a dead server look fine."""
    t = dataclasses.replace(thresholds, security=mode, auth=auth)  # type: ignore[type-var]
    base = _session_of(mode)
    stages = [o.stage for o in base.stages if o.stage != "quit"]
    if auth == "none":
        stages = [s for s in stages if s not in ("auth", "stat")]
    for stage in stages:
        result = _failing_at(base, stage)
        root = checks.owner(result)
        assert root is not None
        expected = checks.evaluate(result, t, root).verdict
        assert expected in (Verdict.WARN, Verdict.CRIT)
        for label, selected in _selections(t).items():
            got = {n: checks.evaluate_selected(result, t, n, selected) for n in selected}
            plain = {n: checks.evaluate(result, t, n) for n in selected}
            where = f"{mode}/{auth}, {stage} fails, {label}: {got}"
            if root in selected:
                assert got == plain, where
                continue
            reporters = [n for n, r in got.items() if "reported here" in r.reason]
            assert len(reporters) == 1, where
            (reporter,) = reporters
            assert got[reporter].verdict == expected, where
            assert f"{stage} broke" in got[reporter].reason, where
            assert f"the '{root}' check is not selected" in got[reporter].reason, where
            assert {n: r for n, r in got.items() if n != reporter} == {
                n: r for n, r in plain.items() if n != reporter
            }, where


def test_tls_checks_of_a_dead_plain_text_type_report_the_dead_port(
    thresholds: checks.Thresholds,
) -> None:
    """``-m tls`` on ``security: none`` with nothing listening: every TLS check is "not
    applicable", and the first of them still reports the refused connect as CRIT."""
    t = dataclasses.replace(thresholds, security="none")  # type: ignore[type-var]
    result = _failing_at(_session_of("none"), "connect", kind="connection-refused")
    selected = {c.name for c in CHECKS if c.tier == "tls"}
    got = {n: checks.evaluate_selected(result, t, n, selected) for n in selected}
    assert got["stls"].verdict == Verdict.CRIT
    assert got["stls"].reason == (
        "TCP connect failed: connect broke (reported here: the 'tcp' check is not selected)"
    )
    for name in selected - {"stls"}:
        assert got[name].verdict == Verdict.SKIP, got[name]
        assert got[name].reason.startswith("not applicable"), got[name]


def test_a_deselected_deferred_login_stays_warn(thresholds: checks.Thresholds) -> None:
    """``-m mailbox`` and a login answered ``[IN-USE]``: the mailbox tier reports the
    login's own WARN (a deferred login is a degraded service, not a dead one)."""
    result = _failing_at(healthy(), "auth", kind="mailbox-in-use")
    selected = {"stat", "thresholds", "logout"}
    got = {n: checks.evaluate_selected(result, thresholds, n, selected) for n in selected}
    assert got["stat"].verdict == Verdict.WARN, got["stat"]
    assert got["stat"].reason.startswith("login deferred: auth broke"), got["stat"]
    assert got["thresholds"].verdict == got["logout"].verdict == Verdict.SKIP


# --------------------------------------------------------------------------- latency reasons


def _timed(**phases: float) -> ProbeResult:
    """``healthy()`` with these phase durations (seconds); ``total`` as given."""
    return dataclasses.replace(healthy(), phases=tuple(phases.items()))


def test_a_slow_total_names_the_phase_it_went_to(thresholds: checks.Thresholds) -> None:
    """``total 4233 ms ≥ warning 2000 ms (authentication 4045 ms)``: the largest phase, in
    the same format as that phase's own check gives it."""
    result = _timed(connect=0.0004, greeting=0.0031, auth=4.0452, stat=0.0456, total=4.2339)
    t = dataclasses.replace(  # type: ignore[type-var]
        thresholds, latency={"total": (2.0, 5.0), "auth": (1.0, 5.0)}
    )
    total = checks.evaluate(result, t, "latency-total")
    assert total.verdict == Verdict.WARN
    assert total.reason == "total 4233 ms ≥ warning 2000 ms (authentication 4045 ms)"
    assert total.figure == 4233.9
    auth = checks.evaluate(result, t, "latency-auth")
    assert auth.reason == "authentication 4045 ms ≥ warning 1000 ms"
    crit = dataclasses.replace(t, latency={"total": (1.0, 4.0)})  # type: ignore[type-var]
    assert checks.evaluate(result, crit, "latency-total").reason == (
        "total 4233 ms ≥ critical 4000 ms (authentication 4045 ms)"
    )


def test_a_slow_total_also_names_every_phase_over_its_own_warning(
    thresholds: checks.Thresholds,
) -> None:
    result = _timed(connect=0.0004, greeting=1.5, auth=2.0, stat=0.0456, total=3.6)
    t = dataclasses.replace(  # type: ignore[type-var]
        thresholds, latency={"total": (2.0, 5.0), "greeting": (1.0, 2.0), "connect": (1.0, 2.0)}
    )
    assert checks.evaluate(result, t, "latency-total").reason == (
        "total 3600 ms ≥ warning 2000 ms (authentication 2000 ms, greeting 1500 ms)"
    )
    assert checks.evaluate(result, t, "latency-greeting").reason == (
        "greeting 1500 ms ≥ warning 1000 ms"
    )
    # Fast phases read in the same format, finer below 100 ms.
    assert checks.evaluate(result, t, "latency-connect").reason == (
        "TCP connect 0.400 ms < warning 1000 ms"
    )


def test_a_fast_total_names_no_phase_and_figures_never_round_up_to_the_threshold(
    thresholds: checks.Thresholds,
) -> None:
    t = dataclasses.replace(thresholds, latency={"total": (2.0, 5.0)})  # type: ignore[type-var]
    result = _timed(connect=0.0004, auth=1.9, total=1.99999)
    assert checks.evaluate(result, t, "latency-total").reason == "total 1999 ms < warning 2000 ms"
    assert [ms_text(s) for s in (0.0456789, 0.00307, 0.00029, 0.0002999)] == [
        "45.6",
        "3.07",
        "0.290",
        "0.299",
    ]


class _SlowLogin(Session):
    """Healthy, but every login is answered after LOGIN_PAUSE seconds."""

    def finish_login(self, outcome: SaslOutcome) -> None:
        if self.pause(LOGIN_PAUSE):
            super().finish_login(outcome)


LOGIN_PAUSE = 0.3


def test_a_slow_login_is_named_in_the_total_latency(
    lab_certs: LabCerts, thresholds: checks.Thresholds
) -> None:
    """A real server that takes its time over the login: the total is WARN, and its reason
    says the time went into authentication."""
    result = _probe(lab_certs, "healthy", session=_SlowLogin)
    assert result.ok, result.error_reason
    t = dataclasses.replace(thresholds, latency={"total": (0.2, 30.0)})  # type: ignore[type-var]
    total = checks.evaluate(result, t, "latency-total")
    assert total.verdict == Verdict.WARN, total
    named = total.reason.split(" (", 1)[1]
    assert named.startswith("authentication "), total
    took = float(named.removeprefix("authentication ").split(" ms", 1)[0])
    assert took >= LOGIN_PAUSE * 1000, total


# --------------------------------------------------------------------------- capabilities


def test_capa_after_stls_shows_the_list_used_and_what_changed(
    thresholds: checks.Thresholds,
) -> None:
    result = dataclasses.replace(
        healthy(),
        capabilities_before=("TOP", "STLS", "SASL PLAIN", "LOGIN-DELAY 900", "UIDL"),
        capabilities_after=("TOP", "USER", "SASL plain SCRAM-SHA-256", "LOGIN-DELAY 300", "UIDL"),
    )
    got = checks.evaluate(result, thresholds, "capa")
    assert got.verdict == Verdict.OK
    assert got.reason == (
        "5 capabilities over TLS (after STLS: +USER +SASL(SCRAM-SHA-256) "
        "LOGIN-DELAY(900\u2192300) \u2212STLS): TOP, USER, SASL plain SCRAM-SHA-256, "
        "LOGIN-DELAY 300, UIDL"
    )
    same = dataclasses.replace(result, capabilities_after=result.capabilities_before)
    assert "(after STLS: unchanged)" in checks.evaluate(same, thresholds, "capa").reason


@pytest.mark.parametrize(
    ("mode", "where"), [("none", "in plaintext"), ("tls", "over TLS"), ("starttls", "over TLS")]
)
def test_capa_says_where_the_list_was_asked_and_cuts_whole_entries(
    thresholds: checks.Thresholds, mode: str, where: str
) -> None:
    caps = tuple(f"X-LONG-CAPABILITY-{n:02d}" for n in range(20))
    result = dataclasses.replace(
        _session_of(mode), capabilities_before=caps, capabilities_after=None
    )
    if mode == "starttls":
        result = dataclasses.replace(result, capabilities_after=caps)
    t = dataclasses.replace(thresholds, security=mode)  # type: ignore[type-var]
    got = checks.evaluate(result, t, "capa")
    assert got.reason.startswith(f"20 capabilities {where}"), got
    assert got.reason.endswith("X-LONG-CAPABILITY-08, … (11 more)"), got


def test_capa_of_a_real_stls_session_names_what_tls_added(
    lab_certs: LabCerts, thresholds: checks.Thresholds
) -> None:
    """The fault server's ``capa-differs`` offers SASL PLAIN in plaintext and SCRAM-SHA-256
    and LOGIN only over TLS: the capa check shows the TLS list, which the login used."""
    result = _probe(lab_certs, "capa-differs")
    assert result.ok, result.error_reason
    got = checks.evaluate(result, thresholds, "capa")
    assert got.verdict == Verdict.OK, got
    assert "(after STLS: +SASL(SCRAM-SHA-256) +SASL(LOGIN) " in got.reason, got
    assert "IMPLEMENTATION(plain\u2192tls) \u2212STLS)" in got.reason, got
    assert "SASL SCRAM-SHA-256 PLAIN LOGIN" in got.reason, got
    assert result.auth is not None and result.auth.mechanism == "scram-sha-256"


def test_every_phase_is_charged_to_exactly_one_check() -> None:
    """own_phases (a check's own time in JUnit): every stage of a session belongs to one
    check (its STAGES owner), a failed TLS handshake to the check that failed it, and the
    checks that judge another's phase own none."""
    for mode in ("starttls", "tls"):
        result = healthy(mode)
        names = [c.name for c in CHECKS] + ["latency-auth", "latency-total"]
        charged = [p for name in names for p, _ in checks.base.own_phases(result, name)]
        timed = [p for p, _ in result.phases if p != "total"]
        assert sorted(charged) == sorted(timed), mode
        for judge in ("certificate", "expiry", "policy", "thresholds", "latency-auth"):
            assert checks.base.own_phases(result, judge) == (), judge
    assert checks.base.own_phases(healthy("tls"), "login") == (("auth", 0.001),)
    expired = _failing_at(healthy("tls"), "tls", "cert-expired")
    assert [p for p, _ in checks.base.own_phases(expired, "certificate")] == ["tls"]
    assert checks.base.own_phases(expired, "handshake") == ()
