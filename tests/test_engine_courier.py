"""The probe engine against real Courier POP3 (``pop3mon_lab/courier.py``).

Courier is the real server that offers CRAM-SHA1 and CRAM-SHA256 and that refuses a login
before STLS with ``-ERR TLS required to log in.`` (no response code, and a CAPA that lists
USER and every SASL mechanism all the same): both are checked here against the real thing.
"""

from __future__ import annotations

import pytest
from pop3mon.checks.login import policy
from pop3mon.engine import ProbeResult, ProbeSpec, probe
from pop3mon.engine.runner import run_probes
from pop3mon.secrets import Secret

from pop3mon_lab.courier import CourierLab

TIMEOUT = 10.0


class _Thresholds:
    def __init__(self, auth: str) -> None:
        self.auth = auth


def _probe(
    lab: CourierLab,
    mechanism: str,
    mode: str,
    *,
    listener: str = "pop3",
    allow_cleartext: bool = False,
) -> ProbeResult:
    spec = ProbeSpec(
        id=f"courier-{listener}-{mode}-{mechanism}",
        host="localhost",
        address=lab.host,
        port=lab.port("pop3_tls_required" if listener == "strict" else "pop3"),
        security=mode,  # type: ignore[arg-type]
        auth=mechanism,
        username=lab.demo_user,
        secret=Secret(lab.demo_password, "courier-test"),
        allow_cleartext=allow_cleartext,
        ca_file=str(lab.ca_file),
        timeout=TIMEOUT,
    )
    return probe(spec)


@pytest.mark.parametrize("mode", ["none", "starttls"])
@pytest.mark.parametrize("mechanism", ["cram-sha1", "cram-sha256", "cram-md5"])
def test_cram_family_logs_in_to_courier(courier: CourierLab, mechanism: str, mode: str) -> None:
    r = _probe(courier, mechanism, mode)
    assert r.ok, f"{r.error_kind}: {r.error_reason}"
    assert r.auth is not None and r.auth.success and r.auth.mechanism == mechanism
    assert r.auth.strength == "weak" and r.auth.encrypted is (mode == "starttls")
    assert not r.auth.secret_sent  # only the HMAC digest crossed the wire
    assert r.mailbox is not None and r.mailbox.count == 0
    caps = (r.capabilities_after if mode == "starttls" else r.capabilities_before) or ()
    sasl = next(c.split()[1:] for c in caps if c.startswith("SASL "))
    assert {"CRAM-SHA1", "CRAM-SHA256"} <= set(sasl)
    sent = [t.text for t in r.transcript if t.direction == "C"]
    assert f"AUTH {mechanism.upper()}" in sent
    assert courier.demo_password not in r.to_json()


def test_auto_prefers_cram_sha256_on_courier(courier: CourierLab) -> None:
    # Courier offers no SCRAM: the strongest it offers is CRAM-SHA256, safe on plaintext.
    r = _probe(courier, "auto", "none")
    assert r.ok, r.error_reason
    assert r.auth is not None and r.auth.mechanism == "cram-sha256"
    assert r.auth.offered[:3] == ("cram-sha256", "cram-sha1", "cram-md5")


@pytest.mark.parametrize("mechanism", ["user", "cram-sha256", "login"])
def test_courier_tls_required_port_is_tls_required(courier: CourierLab, mechanism: str) -> None:
    r = _probe(courier, mechanism, "none", listener="strict", allow_cleartext=True)
    assert (r.error_kind, r.error_stage) == ("tls-required", "auth"), r.error_reason
    assert r.error_reason.startswith(
        "server requires TLS before login: use security: starttls (server said: TLS required "
        f"to log in.; mechanism {mechanism.upper()})"
    )
    assert r.auth is not None and not r.auth.secret_sent
    sent = [t.text.split()[0] for t in r.transcript if t.direction == "C"]
    assert "PASS" not in sent and sent[-1] == "QUIT"
    verdict = policy(r, _Thresholds(mechanism))
    assert verdict.verdict == "CRIT" and "sent the secret" not in verdict.reason


def test_courier_tls_required_port_logs_in_with_starttls(courier: CourierLab) -> None:
    r = _probe(courier, "user", "starttls", listener="strict")
    assert r.ok, r.error_reason
    assert r.auth is not None and r.auth.encrypted and r.auth.secret_sent


def test_courier_login_delay_spaces_two_logins_of_one_account(courier: CourierLab) -> None:
    """Issue 10 item 2 on a real server: Courier announces LOGIN-DELAY 10; two connection
    types of one account in one run both log in, the second at least 10 s after the first,
    and the wait is neither in its latency nor against its deadline (timeout 10 s)."""
    specs = [
        ProbeSpec(
            id=f"courier-delay-{mode}",
            host="localhost",
            address=courier.host,
            port=courier.port("pop3"),
            security=mode,  # type: ignore[arg-type]
            auth="cram-sha256",
            username=courier.demo_user,
            secret=Secret(courier.demo_password, "courier-test"),
            ca_file=str(courier.ca_file),
            timeout=TIMEOUT,
        )
        for mode in ("none", "starttls")
    ]
    first_caps = probe(specs[0]).capabilities_before or ()
    assert any(c.upper().startswith("LOGIN-DELAY ") for c in first_caps), first_caps
    results = run_probes(specs, concurrency=2)
    assert all(r.ok for r in results.values()), [(r.id, r.error_reason) for r in results.values()]
    later = max(results.values(), key=lambda r: r.login_wait)
    assert later.login_wait >= 9.0 and "LOGIN-DELAY 10" in later.login_wait_reason
    auth = later.phase("auth")
    assert auth is not None and auth < 2.0
