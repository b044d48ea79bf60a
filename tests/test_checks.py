"""Verdict rules of plugins/pop3mon/checks.py.

The invariants are checked on results the real engine produced against the fault server
(so the stage/kind vocabulary is the engine's own), plus a table over every stage: whatever
stage fails, some check owns it and is CRIT (or WARN for a deferred login), so a broken
session can never leave a run green.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from pop3mon import checks
from pop3mon.config import load_targets
from pop3mon.engine import ProbeSpec, probe
from pop3mon.engine.result import ProbeResult, StageOutcome
from pop3mon.secrets import Secret

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.faultserver import FaultServer

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


def _probe(certs: LabCerts, scenario: str, mode: str = "starttls") -> ProbeResult:
    with FaultServer(
        scenario,
        users={"alice": PASSWORD},
        certfile=certs.valid.cert,
        keyfile=certs.valid.key,
        implicit_tls=mode == "tls",
    ) as srv:
        spec = ProbeSpec(
            id="t",
            host="localhost",
            port=srv.port,
            mode=mode,
            username="alice",
            secret=Secret(PASSWORD, "test"),
            ca_file=str(certs.ca_file),
            timeout=3.0,
        )
        return probe(spec)


def _verdicts(result: ProbeResult, t: checks.Thresholds) -> dict[str, checks.CheckResult]:
    return {r.check: r for r in checks.evaluate_all(result, t)}


def test_healthy_probe_has_no_crit(lab_certs: LabCerts, thresholds: checks.Thresholds) -> None:
    result = _probe(lab_certs, "healthy")
    got = _verdicts(result, thresholds)
    assert result.ok
    assert {r.verdict for r in got.values()} <= {checks.OK, checks.SKIP}
    assert got["login"].verdict == checks.OK and got["stat"].verdict == checks.OK
    assert checks.owner(result) is None


STLS_ONLY = {"stls", "tls_handshake", "capa_tls"}
STAGE_CASES = [("starttls", s) for s in checks.ORDER if s not in ("tls", "quit")] + [
    ("tls", s) for s in checks.ORDER if s not in STLS_ONLY | {"quit"}
]


@pytest.mark.parametrize(("mode", "stage"), STAGE_CASES)
def test_a_failure_at_any_stage_fails_exactly_where_it_belongs(
    lab_certs: LabCerts, thresholds: checks.Thresholds, mode: str, stage: str
) -> None:
    """Rewrite a real healthy result as if ``stage`` had failed: the owning check is CRIT
    with the failure's reason and every check it blocked is a dependency SKIP."""
    base = _probe(lab_certs, "healthy", mode=mode)
    t = dataclasses.replace(thresholds, security=mode)  # type: ignore[type-var]
    order = list(checks.ORDER)
    kept = [o for o in base.stages if order.index(o.stage) < order.index(stage)]
    failed = StageOutcome(stage, "fail", "some-failure", f"{stage} broke")
    result = dataclasses.replace(
        base, stages=(*kept, failed), error_kind="some-failure", error_stage=stage
    )
    got = _verdicts(result, t)
    owner = checks.owner(result)
    assert owner is not None, f"no check owns a failure in {stage}"
    assert got[owner].verdict == checks.CRIT, got[owner]
    assert f"{stage} broke" in got[owner].reason
    blocked = [r for r in got.values() if r.reason.startswith("skipped:")]
    assert all(r.verdict == checks.SKIP for r in blocked)


def test_session_dying_after_stls_handshake_is_crit(
    lab_certs: LabCerts, thresholds: checks.Thresholds
) -> None:
    """A server that answers CAPA over TLS with a broken line: the CAPA check owns it."""
    result = _probe(lab_certs, "healthy")
    after = [o for o in result.stages if o.stage not in ("capa_tls", "auth", "stat", "quit")]
    broken = StageOutcome("capa_tls", "fail", "connection-closed", "server closed during capa")
    result = dataclasses.replace(
        result, stages=(*after, broken), error_kind="connection-closed", error_stage="capa_tls"
    )
    got = _verdicts(result, thresholds)
    assert got["capa"].verdict == checks.CRIT
    assert got["login"].verdict == checks.SKIP


@pytest.mark.parametrize(
    ("scenario", "verdict"),
    [
        ("in-use", checks.WARN),
        ("login-delay", checks.WARN),
        ("sys-temp", checks.WARN),
        ("sys-perm", checks.CRIT),
        ("auth-code", checks.CRIT),
    ],
)
def test_deferred_logins_are_warn_bad_ones_crit(
    lab_certs: LabCerts, thresholds: checks.Thresholds, scenario: str, verdict: str
) -> None:
    """[IN-USE], [LOGIN-DELAY] and [SYS/TEMP] are a degraded service, not a bad password."""
    result = _probe(lab_certs, scenario)
    got = _verdicts(result, thresholds)
    assert got["login"].verdict == verdict, got["login"]
    assert got["stat"].verdict == checks.SKIP


def test_tls_too_old_is_one_crit(lab_certs: LabCerts, thresholds: checks.Thresholds) -> None:
    """A TLS 1.0-only server: the protocol check says so; handshake and certificate do not
    repeat it as two more CRITs."""
    result = _probe(lab_certs, "tls10-only", mode="tls")
    t = dataclasses.replace(thresholds, security="tls")  # type: ignore[type-var]
    got = _verdicts(result, t)
    crit = [r.check for r in got.values() if r.verdict == checks.CRIT]
    assert crit == ["protocol"], got
    assert "TLSv1" in got["protocol"].reason


def test_expiry_warns_strictly_below_the_threshold(
    lab_certs: LabCerts, thresholds: checks.Thresholds
) -> None:
    result = _probe(lab_certs, "healthy")
    assert result.tls is not None and result.tls.cert is not None
    days = result.tls.cert.days_left
    at = dataclasses.replace(thresholds, cert_warn_days=days, cert_crit_days=0)  # type: ignore[type-var]
    assert checks.evaluate(result, at, "expiry").verdict == checks.OK
    above = dataclasses.replace(thresholds, cert_warn_days=days + 1, cert_crit_days=0)  # type: ignore[type-var]
    assert checks.evaluate(result, above, "expiry").verdict == checks.WARN
