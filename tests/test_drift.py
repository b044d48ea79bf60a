"""The drift tier (``pop3mon.checks.drift``): this run's facts against the baseline.

The rules are pure functions of ``(Facts, Baseline, DriftPolicy)``: every case is checked
on hand-made facts first. Then on facts real servers produced: Dovecot serving another
certificate variant, the fault server's ``capa-differs`` against ``healthy``, and Dovecot
refusing a wrong password after accepting the right one. The levels (warn, crit, off) and
the cascade of the ``drift:`` settings come from real targets files.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pop3mon import checks
from pop3mon.checks import drift
from pop3mon.checks.facts import Baseline, Facts
from pop3mon.config import ConfigError, ConnectionType, load_targets
from pop3mon.engine import ProbeResult, ProbeSpec, probe
from pop3mon.engine.defaults import DEFAULTS, DriftPolicy
from pop3mon.engine.stages import CHECKS, DRIFT_CHECKS, TIERS
from pop3mon.secrets import Secret
from pop3mon.verdict import Verdict

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dovecot import DovecotLab
from pop3mon_lab.faultserver import FaultServer

pytest_plugins = ["pytester"]

OK, WARN, CRIT, SKIP = Verdict.OK, Verdict.WARN, Verdict.CRIT, Verdict.SKIP
POLICY = DEFAULTS.drift
AT = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
PASSWORD = "drift-SENTINEL-31c7"

CERT = Facts(
    cert_sha256="aa" * 32,
    cert_subject="CN=localhost",
    cert_issuer="CN=pop3mon lab CA",
    cert_sans=("localhost",),
    cert_not_after="2026-06-01T00:00:00+00:00",
)
CAPS = Facts(
    caps_before=("CAPA", "TOP", "UIDL", "STLS", "SASL"),
    caps_after=("CAPA", "TOP", "UIDL", "USER", "SASL PLAIN LOGIN", "IMPLEMENTATION Dovecot"),
    apop_timestamp=True,
    greeting="Dovecot ready. <…@mail>",
)
LOGGED_IN = Facts(login_ok=True, mailbox_count=10, mailbox_size=10_000)
REFUSED = Facts(login_ok=False, login_code="AUTH", login_kind="auth-rejected")


def base(facts: Facts, runs_ago: int = 3, accepted: bool = False) -> Baseline:
    return Baseline(facts, at=AT, runs_ago=runs_ago, run_id="r1", accepted=accepted)


# --------------------------------------------------------------------------- certificate


def test_same_certificate_is_ok() -> None:
    res = drift.certificate_changed(CERT, base(CERT), POLICY)
    assert res.verdict == OK and res.tier == "drift", res
    assert "same certificate as at 2026-01-01 00:00:00 UTC (3 runs ago)" in res.reason


def test_a_renewal_is_ok_saying_renewed() -> None:
    now = dataclasses.replace(
        CERT, cert_sha256="bb" * 32, cert_not_after="2026-09-01T00:00:00+00:00"
    )
    res = drift.certificate_changed(now, base(CERT), POLICY)
    assert res.verdict == OK, res
    assert res.reason == (
        "renewed: not after 2026-06-01T00:00:00+00:00 \u2192 2026-09-01T00:00:00+00:00"
    )


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            {"cert_issuer": "CN=Other CA"},
            "issuer 'CN=pop3mon lab CA' \u2192 'CN=Other CA'",
        ),
        ({"cert_subject": "CN=mail.example"}, "subject 'CN=localhost' \u2192 'CN=mail.example'"),
        ({"cert_sans": ("mail.example",)}, "names +mail.example \u2212localhost"),
        # A new key with the same names and no later not-after is no renewal.
        ({}, "same names and issuer but not after"),
    ],
)
def test_another_certificate_is_drift_with_before_and_after(
    change: dict[str, object], said: str
) -> None:
    now = dataclasses.replace(CERT, cert_sha256="cc" * 32, **change)  # type: ignore[arg-type]
    res = drift.certificate_changed(now, base(CERT, runs_ago=1), POLICY)
    assert res.verdict == WARN, res
    assert res.reason.startswith("certificate changed since 2026-01-01 00:00:00 UTC (1 run ago)")
    assert said in res.reason
    assert "sha256 'aaaaaaaaaaaaaaaa…' \u2192 'cccccccccccccccc…'" in res.reason


def test_an_issuer_change_is_drift_even_with_a_later_not_after() -> None:
    now = dataclasses.replace(
        CERT,
        cert_sha256="cc" * 32,
        cert_issuer="CN=Other CA",
        cert_not_after="2027-01-01T00:00:00+00:00",
    )
    assert drift.certificate_changed(now, base(CERT), POLICY).verdict == WARN


def test_certificate_without_a_certificate_skips() -> None:
    assert drift.certificate_changed(Facts(), base(CERT), POLICY).verdict == SKIP
    assert drift.certificate_changed(CERT, base(Facts()), POLICY).verdict == SKIP


# --------------------------------------------------------------------------- capabilities


def _caps(**change: object) -> Facts:
    return dataclasses.replace(CAPS, **change)  # type: ignore[arg-type]


def test_same_capabilities_in_another_order_are_ok() -> None:
    now = _caps(caps_before=tuple(reversed(CAPS.caps_before or ())))
    res = drift.capabilities_changed(now, base(CAPS), POLICY)
    assert res.verdict == OK, res


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"caps_before": ("CAPA", "TOP", "UIDL", "SASL")}, "CAPA: \u2212STLS (STLS withdrawn)"),
        (
            {"caps_after": ("CAPA", "TOP", "UIDL", "USER", "SASL PLAIN", "IMPLEMENTATION Dovecot")},
            "CAPA after STLS: \u2212SASL(LOGIN) (SASL mechanism gone)",
        ),
        (
            {
                "caps_after": (
                    "CAPA",
                    "TOP",
                    "UIDL",
                    "USER",
                    "SASL PLAIN LOGIN SCRAM-SHA-256",
                    "IMPLEMENTATION Dovecot",
                )
            },
            "CAPA after STLS: +SASL(SCRAM-SHA-256) (SASL mechanism added)",
        ),
        (
            {"caps_before": ("CAPA", "TOP", "UIDL", "STLS", "SASL", "USER")},
            "CAPA: +USER (a cleartext login now offered before TLS)",
        ),
        (
            {"caps_before": ("CAPA", "TOP", "UIDL", "STLS", "SASL PLAIN")},
            "+SASL(PLAIN) (a cleartext login now offered before TLS)",
        ),
        (
            {"caps_after": ("CAPA", "TOP", "UIDL", "USER", "SASL PLAIN LOGIN", "IMPLEMENTATION x")},
            "CAPA after STLS: IMPLEMENTATION(Dovecot\u2192x)",
        ),
        ({"apop_timestamp": False}, "APOP timestamp gone from the greeting"),
        (
            {"greeting": "Courier ready."},
            "greeting 'Dovecot ready. <…@mail>' \u2192 'Courier ready.'",
        ),
    ],
)
def test_capability_changes_are_drift_naming_each(change: dict[str, object], said: str) -> None:
    res = drift.capabilities_changed(_caps(**change), base(CAPS), POLICY)
    assert res.verdict == WARN, res
    assert res.reason.startswith("capabilities changed since 2026-01-01 00:00:00 UTC")
    assert said in res.reason, res.reason


def test_lists_before_and_after_stls_are_compared_each_with_its_own() -> None:
    """A capability that moves from the list after STLS to the one before is two changes,
    not none (the union of both lists would not change)."""
    now = _caps(
        caps_before=("CAPA", "TOP", "UIDL", "STLS", "SASL", "USER"),
        caps_after=("CAPA", "TOP", "UIDL", "SASL PLAIN LOGIN", "IMPLEMENTATION Dovecot"),
    )
    res = drift.capabilities_changed(now, base(CAPS), POLICY)
    assert "CAPA: +USER" in res.reason and "CAPA after STLS: \u2212USER" in res.reason, res


def test_a_list_this_run_did_not_reach_is_not_compared() -> None:
    """STLS failed this run: no list after it; its absence is the stls check's CRIT."""
    res = drift.capabilities_changed(_caps(caps_after=None), base(CAPS), POLICY)
    assert res.verdict == OK, res


# --------------------------------------------------------------------------- credentials


def test_credentials_refused_after_being_accepted_is_drift() -> None:
    res = drift.credentials_changed(REFUSED, base(LOGGED_IN, runs_ago=4), POLICY)
    assert res.verdict == WARN, res
    assert res.reason == (
        "credentials rejected [AUTH]; they were accepted at 2026-01-01 00:00:00 UTC "
        "(4 runs ago): the password was changed or the account locked"
    )


def test_a_mechanism_failure_without_code_counts_as_refused_credentials() -> None:
    now = Facts(login_ok=False, login_kind="auth-failed")
    res = drift.credentials_changed(now, base(LOGGED_IN, accepted=True), POLICY)
    assert res.verdict == WARN and "credentials rejected; they were accepted" in res.reason
    assert "(3 runs ago, accepted)" in res.reason


def test_a_refusal_never_preceded_by_a_success_is_no_drift() -> None:
    res = drift.credentials_changed(REFUSED, base(REFUSED), POLICY)
    assert res.verdict == SKIP and "never accepted yet" in res.reason, res
    assert res.blocked_by is None


def test_accepted_credentials_are_ok() -> None:
    assert drift.credentials_changed(LOGGED_IN, base(LOGGED_IN), POLICY).verdict == OK
    assert drift.credentials_changed(LOGGED_IN, base(REFUSED), POLICY).verdict == OK


@pytest.mark.parametrize("kind", ["mailbox-in-use", "tls-required", "connection-reset", "sys-perm"])
def test_a_refusal_that_is_not_about_the_password_is_no_credential_drift(kind: str) -> None:
    now = Facts(login_ok=False, login_kind=kind)
    assert drift.credentials_changed(now, base(LOGGED_IN), POLICY).verdict == SKIP


# --------------------------------------------------------------------------- mailbox


def test_mailbox_within_the_ratio_is_ok() -> None:
    now = dataclasses.replace(LOGGED_IN, mailbox_count=14, mailbox_size=6_000)
    res = drift.mailbox_changed(now, base(LOGGED_IN), POLICY)
    assert res.verdict == OK, res


def test_mailbox_beyond_the_ratio_is_drift() -> None:
    now = dataclasses.replace(LOGGED_IN, mailbox_count=16)
    res = drift.mailbox_changed(now, base(LOGGED_IN), POLICY)
    assert res.verdict == WARN, res
    assert "count 10 \u2192 16 (+60%)" in res.reason and "\u00b150%" in res.reason
    assert "size" not in res.reason.split("beyond")[0]


def test_mailbox_ratio_is_configurable() -> None:
    now = dataclasses.replace(LOGGED_IN, mailbox_count=16)
    loose = dataclasses.replace(POLICY, mailbox_ratio=1.0)
    assert drift.mailbox_changed(now, base(LOGGED_IN), loose).verdict == OK
    tight = dataclasses.replace(POLICY, mailbox_ratio=0.1)
    small = dataclasses.replace(LOGGED_IN, mailbox_size=11_500)
    assert drift.mailbox_changed(small, base(LOGGED_IN), tight).verdict == WARN


def test_an_empty_mailbox_that_fills_is_drift() -> None:
    empty = Facts(login_ok=True, mailbox_count=0, mailbox_size=0)
    now = Facts(login_ok=True, mailbox_count=1, mailbox_size=500)
    res = drift.mailbox_changed(now, base(empty), POLICY)
    assert res.verdict == WARN and "from empty" in res.reason, res


def test_a_login_now_deferred_is_mailbox_drift() -> None:
    now = Facts(login_ok=False, login_code="IN-USE", login_kind="mailbox-in-use")
    res = drift.mailbox_changed(now, base(LOGGED_IN), POLICY)
    assert res.verdict == WARN, res
    assert res.reason.startswith("login now deferred ([IN-USE]); it was not at 2026-01-01")
    assert drift.mailbox_changed(now, base(now), POLICY).verdict == SKIP


# --------------------------------------------------------------------------- levels, gating


def _targets(tmp_path: Path, settings: str = "", security: str = "starttls") -> ConnectionType:
    path = tmp_path / "t.yaml"
    path.write_text(
        "defaults:\n"
        f"{settings}"
        "servers:\n"
        "  - name: s\n"
        "    host: localhost\n"
        "    account: {username: alice, password_env: X}\n"
        "    connections:\n"
        f"      - {{security: {security}, port: 1110}}\n",
        encoding="utf-8",
    )
    return load_targets(path).connections[0]


def _result(facts_from: ProbeResult | None = None) -> ProbeResult:
    """A healthy STLS probe result (login and STAT) of the shape the engine returns."""
    from pop3mon.engine.result import AuthInfo, CertInfo, MailboxInfo, StageOutcome, TLSInfo
    from pop3mon.engine.stages import STAGES

    stages = [s.name for s in STAGES if s.name not in ("ping", "tls")]
    cert = CertInfo(
        "CN=localhost", "CN=pop3mon lab CA", ("localhost",), "01", "aa" * 32,
        "2026-01-01T00:00:00+00:00", "2026-06-01T00:00:00+00:00", 1_780_272_000.0, 150.0, False,
    )  # fmt: skip
    return ProbeResult(
        id="t",
        host="localhost",
        port=1110,
        security="starttls",
        mechanism="auto",
        started_at=AT,
        phases=(*((s, 0.001) for s in stages), ("total", 0.01)),
        stages=tuple(StageOutcome(s, "ok") for s in stages),
        greeting="ready",
        capabilities_before=("STLS",),
        capabilities_after=("USER",),
        tls=TLSInfo("TLSv1.3", "x", True, "", "", "localhost", cert),
        auth=AuthInfo("plain", "cleartext", encrypted=True, success=True),
        mailbox=MailboxInfo(10, 10_000),
    )


def _refused(result: ProbeResult, kind: str = "auth-rejected", code: str = "AUTH") -> ProbeResult:
    from pop3mon.engine.result import AuthInfo, StageOutcome

    kept = tuple(o for o in result.stages if o.stage not in ("auth", "stat", "quit"))
    return dataclasses.replace(
        result,
        stages=(*kept, StageOutcome("auth", "fail", kind, "server rejected the credentials")),
        error_kind=kind,
        error_stage="auth",
        auth=AuthInfo("plain", "cleartext", encrypted=True, success=False, response_code=code),
        mailbox=None,
    )


def test_drift_is_a_tier_of_its_own_with_four_checks() -> None:
    assert TIERS[-1] == "drift"
    assert tuple(c.name for c in CHECKS if c.tier == "drift") == DRIFT_CHECKS
    assert len(DRIFT_CHECKS) == 4


@pytest.mark.parametrize("check", DRIFT_CHECKS)
def test_without_a_baseline_every_drift_check_skips_blocking_nothing(
    tmp_path: Path, check: str
) -> None:
    res = checks.evaluate(_result(), _targets(tmp_path), check)
    assert (res.verdict, res.reason, res.blocked_by) == (SKIP, drift.NO_BASELINE, None)


def test_levels_warn_by_default_crit_or_off_and_cascade(tmp_path: Path) -> None:
    """``drift:`` under defaults, a server and a connection merge key by key; a bare YAML
    ``off`` (false to YAML 1.1) means off."""
    path = tmp_path / "t.yaml"
    path.write_text(
        "defaults:\n"
        "  drift: {credentials_changed: crit, mailbox_ratio: 2}\n"
        "servers:\n"
        "  - name: s\n"
        "    host: localhost\n"
        "    drift: {certificate_changed: off}\n"
        "    account: {username: alice, password_env: X}\n"
        "    connections:\n"
        "      - {security: starttls, port: 1110}\n"
        "      - {security: tls, port: 1995, drift: {certificate_changed: crit}}\n",
        encoding="utf-8",
    )
    stls, tls = load_targets(path).connections
    assert stls.drift == DriftPolicy("off", "warn", "crit", "warn", 2.0)
    assert tls.drift == DriftPolicy("crit", "warn", "crit", "warn", 2.0)
    assert _targets(tmp_path).drift == DEFAULTS.drift
    assert DEFAULTS.drift == DriftPolicy("warn", "warn", "warn", "warn", 0.5)
    now = _refused(_result())
    then = base(Facts.from_result(_result()))
    got = checks.evaluate(now, stls, "credentials_changed", then)
    assert got.verdict == CRIT and "credentials rejected" in got.reason, got
    assert checks.evaluate(now, _targets(tmp_path), "credentials_changed", then).verdict == WARN
    off = checks.evaluate(_result(), stls, "certificate_changed", then)
    assert (off.verdict, off.reason) == (SKIP, "drift check off (drift: certificate_changed: off)")
    assert stls.to_dict()["drift"]["certificate_changed"] == "off"


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ("  drift: {certificate_changed: warning}\n", "'warning' is not one of warn, crit, off"),
        ("  drift: {mailbox_ratio: 0}\n", "mailbox_ratio"),
        ("  drift: {certificate: warn}\n", "certificate"),
    ],
)
def test_bad_drift_settings_are_one_line_each(tmp_path: Path, settings: str, said: str) -> None:
    with pytest.raises(ConfigError) as err:
        _targets(tmp_path, settings)
    assert len(err.value.problems) == 1 and said in str(err.value), err.value


def test_a_dead_server_blocks_drift_checks_naming_the_owner(tmp_path: Path) -> None:
    from pop3mon.engine.result import StageOutcome

    dead = dataclasses.replace(
        _result(),
        stages=(StageOutcome("dns", "ok"), StageOutcome("connect", "fail", "refused", "no")),
        error_stage="connect",
        error_kind="connection-refused",
    )
    then = base(Facts.from_result(_result()))
    for check in DRIFT_CHECKS:
        res = checks.evaluate(dead, _targets(tmp_path), check, then)
        assert res.verdict == SKIP and res.blocked_by == "tcp", res


def test_a_login_refused_for_tls_is_blocked_by_login_not_drift(tmp_path: Path) -> None:
    now = _refused(_result(), kind="tls-required", code="")
    then = base(Facts.from_result(_result()))
    res = checks.evaluate(now, _targets(tmp_path), "credentials_changed", then)
    assert res.verdict == SKIP and res.blocked_by == "login", res


def test_evaluate_selected_passes_the_baseline_on(tmp_path: Path) -> None:
    t = _targets(tmp_path)
    then = base(Facts.from_result(_result()))
    now = _refused(_result())
    res = checks.evaluate_selected(now, t, "credentials_changed", set(DRIFT_CHECKS), then)
    assert res.verdict == WARN, res
    # The other checks take no baseline and are unchanged by one.
    assert checks.evaluate_selected(now, t, "login", {"login"}) == checks.evaluate(now, t, "login")


@pytest.mark.parametrize(
    ("spec", "ids", "expected"),
    [
        ("s:1110-starttls", ("s:1110-starttls",), ("s:1110-starttls", None)),
        (
            "s:1110-starttls:credentials_changed",
            ("s:1110-starttls",),
            ("s:1110-starttls", "credentials_changed"),
        ),
        ("anything:mailbox_changed", None, ("anything", "mailbox_changed")),
        ("anything", None, ("anything", None)),
    ],
)
def test_accept_ids(spec: str, ids: tuple[str, ...] | None, expected: tuple[str, str]) -> None:
    assert drift.parse_accept(spec, ids) == expected


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("nope", "no connection type 'nope' in the targets file"),
        ("s:1110-starttls:credentials", "'credentials' is not a drift check"),
        ("nope:mailbox_changed", "no connection type 'nope'"),
        ("", "give a connection type id"),
    ],
)
def test_bad_accept_ids_say_why(spec: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        drift.parse_accept(spec, ("s:1110-starttls",))


# --------------------------------------------------------------------------- real servers


def _dovecot_spec(
    lab: DovecotLab, variant: str = "valid", password: str | None = None
) -> ProbeSpec:
    return ProbeSpec(
        id=f"drift-{variant}",
        host=lab.hostname,
        port=lab.port("pop3s", variant),
        security="tls",
        auth="plain",
        username=lab.demo_user,
        secret=Secret(password or lab.demo_password, "drift-test"),
        ca_file=str(lab.ca_file),
        timeout=10.0,
    )


@pytest.mark.parametrize(
    ("variant", "said"), [("self_signed", "issuer"), ("wrong_host", "subject")]
)
def test_dovecot_serving_another_certificate_is_certificate_drift(
    dovecot: DovecotLab, tmp_path: Path, variant: str, said: str
) -> None:
    t = _targets(tmp_path, security="tls")
    before = probe(_dovecot_spec(dovecot))
    assert before.ok, before.error_reason
    then = base(Facts.from_result(before), runs_ago=1)
    same = checks.evaluate(probe(_dovecot_spec(dovecot)), t, "certificate_changed", then)
    assert same.verdict == OK and same.reason.startswith("same certificate"), same
    after = probe(_dovecot_spec(dovecot, variant))
    assert after.error_stage == "tls", after.error_reason  # the tls tier's CRIT
    res = checks.evaluate(after, t, "certificate_changed", then)
    assert res.verdict == WARN, res
    assert res.reason.startswith("certificate changed since") and f"{said} '" in res.reason


def test_fault_server_capa_differs_against_healthy_is_capability_drift(
    lab_certs: LabCerts, tmp_path: Path
) -> None:
    t = _targets(tmp_path)
    facts = {}
    for scenario in ("healthy", "capa-differs"):
        with FaultServer(
            scenario,
            users={"alice": PASSWORD},
            certfile=lab_certs.valid.cert,
            keyfile=lab_certs.valid.key,
        ) as srv:
            result = probe(
                ProbeSpec(
                    id=scenario,
                    host="localhost",
                    port=srv.port,
                    security="starttls",
                    auth="none",
                    ca_file=str(lab_certs.ca_file),
                    timeout=5.0,
                )
            )
        assert result.ok, result.error_reason
        facts[scenario] = result
    then = base(Facts.from_result(facts["healthy"]), runs_ago=2)
    res = checks.evaluate(facts["capa-differs"], t, "capabilities_changed", then)
    assert res.verdict == WARN, res
    assert "CAPA after STLS:" in res.reason and "SASL(SCRAM-SHA-256)" in res.reason, res
    # And the baseline against itself (the greeting's APOP timestamp masked) is no drift.
    again = checks.evaluate(facts["healthy"], t, "capabilities_changed", then)
    assert again.verdict == OK, again


def test_dovecot_refusing_a_password_it_accepted_is_credentials_drift(
    dovecot: DovecotLab, tmp_path: Path
) -> None:
    t = _targets(tmp_path, security="tls")
    good = probe(_dovecot_spec(dovecot))
    assert good.ok, good.error_reason
    then = Baseline(Facts.from_result(good), at=time.time() - 900, runs_ago=3, run_id="r")
    bad = probe(_dovecot_spec(dovecot, password="not-the-" + dovecot.demo_password))
    assert bad.error_stage == "auth" and bad.error_kind == "auth-rejected", bad.error_reason
    login = checks.evaluate(bad, t, "login")
    assert login.verdict == CRIT  # the login check stays as it is
    res = checks.evaluate(bad, t, "credentials_changed", then)
    assert res.verdict == WARN, res
    assert res.reason.startswith("credentials rejected [AUTH]; they were accepted at ")
    assert res.reason.endswith("(3 runs ago): the password was changed or the account locked")
    # Never accepted: the same refusal is no drift.
    never = checks.evaluate(bad, t, "credentials_changed", base(Facts.from_result(bad)))
    assert never.verdict == SKIP and "never accepted yet" in never.reason
    assert "not-the-" not in res.reason + never.reason


# --------------------------------------------------------------------------- the glue

HISTORY_CONFTEST = """
import json
import os

import pytest
from pop3mon.checks.facts import Baseline, Facts
from pop3mon.report.keys import HISTORY_KEY

pytest_plugins = ["pop3mon.plugin"]


class History:
    '''A BaselineSource as the history store is one: the baseline of an earlier run in
    which another certificate served and the login succeeded.'''

    def __init__(self):
        self.accepted = []

    def baseline(self, ct_id, check):
        facts = Facts(
            cert_sha256="00" * 32,
            cert_subject="CN=old.example",
            cert_issuer="CN=Old CA",
            cert_sans=("old.example",),
            cert_not_after="2025-01-01T00:00:00+00:00",
            login_ok=True,
        )
        return Baseline(facts, at=1767225600.0, runs_ago=2, run_id="r1")

    def accept(self, ct_id, check, note=""):
        self.accepted.append([ct_id, check, note])
        return 4


def pytest_configure(config):
    config.stash[HISTORY_KEY] = History()


def pytest_unconfigure(config):
    history = config.stash.get(HISTORY_KEY, None)
    if history is not None:
        with open(os.environ["ACCEPTED_TO"], "w") as out:
            json.dump(history.accepted, out)
"""


@pytest.fixture
def glued(
    pytester: pytest.Pytester, lab_certs: LabCerts, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.Pytester]:
    """A project whose history hands every drift check a baseline (the fault server's
    password is not the one configured)."""
    root = Path(__file__).resolve().parents[1]
    pytester.makeconftest(HISTORY_CONFTEST)
    pytester.makeini(
        f"[pytest]\ntestpaths = tests_targets\npythonpath = {root / 'plugins'}\n"
        "addopts = -p no:hypothesispytest -p no:benchmark -p no:cacheprovider\n"
    )
    tiers = pytester.mkdir("tests_targets")
    for module in sorted((root / "tests_targets").glob("test_*.py")):
        (tiers / module.name).write_text(module.read_text(encoding="utf-8"), encoding="utf-8")
    with FaultServer(
        "healthy",
        users={"alice": PASSWORD},
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
        implicit_tls=True,
    ) as srv:
        pytester.path.joinpath("targets.yaml").write_text(
            "servers:\n"
            "  - name: lab\n"
            "    host: localhost\n"
            f"    ca_file: {lab_certs.ca_file}\n"
            "    account: {username: alice, password_env: GLUE_PW}\n"
            "    drift: {certificate_changed: crit}\n"
            "    connections:\n"
            f"      - {{id: good, port: {srv.port}, security: tls}}\n",
            encoding="utf-8",
        )
        monkeypatch.setenv("GLUE_PW", "not-" + PASSWORD)
        monkeypatch.setenv("ACCEPTED_TO", str(pytester.path / "accepted.json"))
        yield pytester


def test_drift_through_real_runs_with_a_history(tmp_path: Path) -> None:
    """Real runs sharing one history: the first has no baseline (drift SKIP); after the
    password changed, credentials_changed says when the credentials were last accepted;
    --accept-drift makes the refused state the baseline, so the next run has no drift."""
    from test_reports import run_suite as run_reported

    good = "drift-real-good-5c2e"
    with FaultServer("healthy", users={"alice": good}) as srv:
        targets = tmp_path / "targets.yaml"
        targets.write_text(
            "version: 1\n"
            "defaults:\n"
            "  allow_cleartext: true\n"
            "  account: {username: alice, password_env: DRIFT_REAL_PW}\n"
            "servers:\n"
            f"  - {{name: lab, host: 127.0.0.1, connections: [{{id: pop, port: {srv.port}, "
            "security: none, auth: user}]}\n",
            encoding="utf-8",
        )
        reports = tmp_path / "reports"

        def run(password: str, *args: str) -> tuple[str, dict[str, Any]]:
            done = run_reported(targets, reports, *args, env={"DRIFT_REAL_PW": password})
            data = json.loads((reports / "results.json").read_text(encoding="utf-8"))
            checks = {c["check"]: c for c in data["connections"][0]["checks"]}
            return done.proc.stdout, checks

        _, first = run(good)
        assert first["credentials_changed"]["verdict"] == "SKIP"
        assert "no baseline yet" in first["credentials_changed"]["reason"]
        _, second = run(good)
        assert second["credentials_changed"]["verdict"] == "OK", second["credentials_changed"]
        out, third = run("changed-password-91e4")
        cred = third["credentials_changed"]
        assert cred["verdict"] == "WARN", cred
        assert (
            "credentials rejected" in cred["reason"] and "they were accepted at" in cred["reason"]
        )
        assert "(1 runs ago)" in cred["reason"] or "(1 run ago)" in cred["reason"], cred
        out, _ = run("changed-password-91e4", "--accept-drift=pop:credentials_changed")
        assert "accepted pop:credentials_changed's current facts as the drift baseline" in out
        _, fifth = run("changed-password-91e4")
        assert fifth["credentials_changed"]["verdict"] != "WARN", fifth["credentials_changed"]
    db = (reports / "history.sqlite").read_bytes()
    assert good.encode() not in db and b"changed-password-91e4" not in db


def test_accept_drift_naming_nothing_known_is_a_usage_error(glued: pytest.Pytester) -> None:
    result = glued.runpytest_subprocess("--accept-drift=good:credentials")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: pop3mon: --accept-drift=good:credentials: 'credentials' is not a drift check*"]
    )
    assert "Traceback" not in result.stderr.str()
    assert not (glued.path / "accepted.json").exists()


# --------------------------------------------------------------------------- baseline fields


#: Per drift check, a baseline with what it compares and a run that drifted from it.
_DRIFTED: dict[str, tuple[Facts, Facts]] = {
    "certificate_changed": (
        CERT,
        dataclasses.replace(CERT, cert_sha256="bb" * 32, cert_issuer="CN=x"),
    ),
    "capabilities_changed": (
        CAPS,
        dataclasses.replace(CAPS, caps_before=("CAPA",), greeting="other"),
    ),
    "credentials_changed": (LOGGED_IN, REFUSED),
    "mailbox_changed": (LOGGED_IN, dataclasses.replace(LOGGED_IN, mailbox_count=1000)),
}


@pytest.mark.parametrize("check", DRIFT_CHECKS)
def test_a_baseline_without_the_compared_facts_skips_never_ok(check: str) -> None:
    """A baseline from a run that failed before the stage a check compares (none of its
    BASELINE_FIELDS set) must SKIP a run that drifted from a real baseline: an OK would
    claim a comparison never made (and move the check's last OK run to one with nothing
    in it). The history picks and accepts baselines by the same fields."""
    real, drifted = _DRIFTED[check]
    rule = drift.RULES[check]  # type: ignore[index]
    assert rule(drifted, base(real), POLICY).verdict == WARN
    res = rule(drifted, base(Facts()), POLICY)
    assert res.verdict == SKIP, res
    assert drift.has_baseline_fields(check, real) and not drift.has_baseline_fields(check, Facts())
