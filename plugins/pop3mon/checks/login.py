"""Auth tier: the login succeeds, and it was safe."""

from __future__ import annotations

from ..engine.result import ProbeResult
from ..engine.stages import PHASE_LABELS, stage_index
from .base import (
    CRIT,
    OK,
    SKIP,
    WARN,
    CheckResult,
    Thresholds,
    blocked,
    failed_stage,
    gate,
    ms,
    smtp,
    stls_stage,
)

__all__ = ["login", "policy", "relay"]

#: [IN-USE], [LOGIN-DELAY] and [SYS/TEMP] say the credentials may well be right and the
#: service is degraded or busy (RFC 2449/3206): not a bad password.
DEGRADED_LOGIN = frozenset({"mailbox-in-use", "login-delay", "sys-temp"})
#: Auth failures that are about how the login would have been made, not the credentials
#: (``tls-required``: the server wants TLS first; the fix is the security setting).
POLICY_FAILURES = frozenset(
    {"cleartext-refused", "apop-no-timestamp", "mechanism-not-offered", "tls-required"}
)
_NO_LOGIN = "no login configured (auth: none)"


def login(result: ProbeResult, t: Thresholds) -> CheckResult:
    """The technical account logs in."""
    if t.auth == "none":
        return CheckResult("auth", "login", SKIP, _NO_LOGIN)
    gated = gate(result, "auth", "login", "auth")
    if gated is not None and gated.verdict == CRIT:
        failed = failed_stage(result)
        if failed is not None and failed.kind in DEGRADED_LOGIN:
            return CheckResult("auth", "login", WARN, f"login deferred: {failed.reason}")
    if gated:
        return gated
    info = result.auth
    if info is None or not info.success:
        return CheckResult("auth", "login", SKIP, "login did not run")
    channel = "over TLS" if info.encrypted else "over an unencrypted connection"
    waited = ""
    if result.login_wait_reason:
        waited = (
            f" (waited {result.login_wait:.1f} s for its turn: {result.login_wait_reason}; "
            "not counted in latency)"
        )
    return CheckResult(
        "auth",
        "login",
        OK,
        f"{info.mechanism.upper()} login succeeded {channel}{waited}",
        ms(result.phase("auth")),
        "ms",
    )


def policy(result: ProbeResult, t: Thresholds) -> CheckResult:
    """No cleartext secret without consent, no downgradable session, no weak mechanism
    in the clear."""
    if t.auth == "none":
        return CheckResult("auth", "policy", SKIP, _NO_LOGIN)
    failed = failed_stage(result)
    if failed is not None and failed.stage == "auth":
        if failed.kind in POLICY_FAILURES:
            return CheckResult("auth", "policy", CRIT, failed.reason)
        if failed.kind == "secret-missing":
            return CheckResult(
                "auth", "policy", SKIP, f"skipped: {failed.reason}", blocked_by="login"
            )
    elif failed is not None and stage_index(failed.stage) < stage_index("auth"):
        return blocked("auth", "policy", failed)
    info = result.auth
    if info is None or not info.mechanism:
        return CheckResult("auth", "policy", SKIP, "no mechanism was chosen")
    mech = info.mechanism.upper()
    if result.downgradable:
        return CheckResult(
            "auth",
            "policy",
            WARN,
            f"{mech} ran in plaintext because the server offers no "
            f"{PHASE_LABELS[stls_stage(result)]}: an attacker can "
            "strip TLS (downgradable)",
        )
    leaked = info.success or info.secret_sent  # a cleartext login cannot succeed without it
    if info.strength in ("cleartext", "token") and not info.encrypted and not leaked:
        # Refused before PASS (or before the SASL response carrying it): nothing leaked,
        # and whether the secret would have gone out unencrypted is not known.
        return CheckResult(
            "auth",
            "policy",
            SKIP,
            f"{mech} sent no secret: the login stopped before it ({info.reason or 'refused'})",
            blocked_by="login",
        )
    if info.strength in ("cleartext", "token") and not info.encrypted:
        return CheckResult(
            "auth",
            "policy",
            WARN,
            f"{mech} sent the secret unencrypted (allowed by allow_cleartext)",
        )
    if info.strength == "weak" and not info.encrypted:
        return CheckResult(
            "auth", "policy", WARN, f"{mech} is a weak mechanism and the connection is unencrypted"
        )
    channel = "TLS" if info.encrypted else "no TLS"
    return CheckResult("auth", "policy", OK, f"{mech} ({info.strength}) with {channel}")


def relay(result: ProbeResult, t: Thresholds) -> CheckResult:
    """SMTP: the server refuses to relay for a stranger (``relay_check:`` configured): a
    recipient in a foreign ``.invalid`` domain accepted without a login is an open relay."""
    own = result.stage("relay")
    if not smtp(result) and (own is None or own.status != "fail"):
        return CheckResult("auth", "relay", SKIP, "not applicable: not an SMTP connection type")
    gated = gate(result, "auth", "relay", "relay")
    if gated:
        return gated
    outcome = result.stage("relay")
    if outcome is None:
        return CheckResult(
            "auth", "relay", SKIP, "not applicable: no relay check configured (relay_check)"
        )
    if result.relay_open:
        return CheckResult("auth", "relay", CRIT, f"open relay: {outcome.reason}")
    verdict = WARN if outcome.status == "warn" else OK
    return CheckResult("auth", "relay", verdict, outcome.reason, ms(result.phase("relay")), "ms")
