"""TLS tier: STLS, handshake, certificate, expiry, protocol version."""

from __future__ import annotations

from ..engine.result import ProbeResult
from ..engine.stages import PHASE_LABELS, TLS_SECURITY, stage_index
from .base import (
    CRIT,
    OK,
    SKIP,
    WARN,
    CheckResult,
    Thresholds,
    blocked,
    failed_stage,
    ms,
    owner_of,
    stls_stage,
)

__all__ = ["certificate", "expiry", "handshake", "protocol", "stls"]


def _tls_gate(result: ProbeResult, t: Thresholds, check: str) -> CheckResult | None:
    if t.security not in TLS_SECURITY:
        return CheckResult("tls", check, SKIP, "not applicable: security is 'none' (no TLS)")
    failed = failed_stage(result)
    tls_stage = "tls" if t.security == "tls" else stls_stage(result)
    if failed is not None and stage_index(failed.stage) < stage_index(tls_stage):
        return blocked("tls", check, failed)
    if t.security == "starttls-optional" and result.downgradable and check != "stls":
        return CheckResult(
            "tls",
            check,
            SKIP,
            f"not applicable: server offers no {PHASE_LABELS[stls_stage(result)]}, session "
            "stayed plaintext",
        )
    return None


def _not_run(result: ProbeResult, check: str, why: str) -> CheckResult:
    """SKIP for a TLS fact that was never established: blocked by the failure if there
    was one, else ``why``."""
    failed = failed_stage(result)
    return blocked("tls", check, failed) if failed else CheckResult("tls", check, SKIP, why)


def stls(result: ProbeResult, t: Thresholds) -> CheckResult:
    """STLS (SMTP: STARTTLS) offered, accepted, and no bytes injected before the
    handshake."""
    stage = stls_stage(result)
    name = PHASE_LABELS[stage]
    if t.security == "tls":
        return CheckResult("tls", "stls", SKIP, f"not applicable: implicit TLS (no {name})")
    gated = _tls_gate(result, t, "stls")
    if gated:
        return gated
    outcome = result.stage(stage)
    if outcome is None:
        return CheckResult("tls", "stls", SKIP, f"{name} stage did not run")
    if outcome.status == "fail":
        return CheckResult("tls", "stls", CRIT, outcome.reason)
    if outcome.status == "warn":
        return CheckResult("tls", "stls", WARN, outcome.reason)
    return CheckResult(
        "tls",
        "stls",
        OK,
        f"{name} offered and accepted; no injected bytes",
        ms(result.phase(stage)),
        "ms",
    )


def handshake(result: ProbeResult, t: Thresholds) -> CheckResult:
    """The TLS handshake completes (certificate problems are the certificate check's)."""
    gated = _tls_gate(result, t, "handshake")
    if gated:
        return gated
    stage = "tls" if t.security == "tls" else "tls_handshake"
    outcome = result.stage(stage)
    if outcome is None:
        return _not_run(result, "handshake", "TLS handshake did not run")
    tls = result.tls
    took = ms(result.phase(stage))
    if outcome.status == "fail" and outcome.kind == "tls-protocol-too-old":
        return CheckResult(
            "tls", "handshake", SKIP, "skipped: see the protocol check", blocked_by="protocol"
        )
    if outcome.status == "fail" and not outcome.kind.startswith("cert-"):
        return CheckResult("tls", "handshake", CRIT, outcome.reason, took, "ms")
    proto = tls.protocol if tls else ""
    cipher = tls.cipher if tls else ""
    detail = f"{proto} {cipher}".strip() or "negotiated"
    if outcome.status == "fail":
        # OpenSSL aborts the handshake on a bad certificate; TLS itself was negotiated.
        text = (
            f"TLS negotiated up to certificate verification ({detail}); see the certificate check"
        )
        return CheckResult("tls", "handshake", OK, text, took, "ms")
    return CheckResult("tls", "handshake", OK, f"handshake completed: {detail}", took, "ms")


def certificate(result: ProbeResult, t: Thresholds) -> CheckResult:
    """The chain verifies against the trust store and names the host."""
    gated = _tls_gate(result, t, "certificate")
    if gated:
        return gated
    tls = result.tls
    if tls is None:
        return _not_run(result, "certificate", "no TLS session")
    if tls.verify_kind.startswith("cert-"):
        return CheckResult("tls", "certificate", CRIT, tls.verify_reason)
    if not tls.verified:
        if tls.verify_kind == "verification-disabled":
            return CheckResult("tls", "certificate", WARN, tls.verify_reason)
        failed = failed_stage(result)
        return CheckResult(
            "tls",
            "certificate",
            SKIP,
            f"skipped: not verified: {tls.verify_reason}",
            blocked_by=owner_of(failed) if failed else None,
        )
    cert = tls.cert
    who = cert.subject if cert else ""
    return CheckResult(
        "tls", "certificate", OK, f"chain and host name {tls.sni} valid ({who})".strip()
    )


def expiry(result: ProbeResult, t: Thresholds) -> CheckResult:
    """Days until the certificate expires, against the warn/crit days."""
    gated = _tls_gate(result, t, "expiry")
    if gated:
        return gated
    cert = result.tls.cert if result.tls else None
    if cert is None:
        return _not_run(result, "expiry", "no certificate was presented")
    days = cert.days_left
    date = cert.not_after[:10]
    if days < 0:
        text = f"certificate expired {date} ({-days:.0f} days ago)"
        return CheckResult("tls", "expiry", CRIT, text, days, "days")
    text = f"certificate expires {date} (in {days:.0f} days)"
    if days < t.cert_crit_days:
        text += f"; critical below {t.cert_crit_days:g} days"
        return CheckResult("tls", "expiry", CRIT, text, days, "days")
    if days < t.cert_warn_days:
        text += f"; warning below {t.cert_warn_days:g} days"
        return CheckResult("tls", "expiry", WARN, text, days, "days")
    return CheckResult("tls", "expiry", OK, text, days, "days")


def protocol(result: ProbeResult, t: Thresholds) -> CheckResult:
    """The negotiated TLS version is at least the configured minimum."""
    gated = _tls_gate(result, t, "protocol")
    if gated:
        return gated
    failed = failed_stage(result)
    if failed is not None and failed.kind == "tls-protocol-too-old":
        return CheckResult("tls", "protocol", CRIT, failed.reason)
    proto = result.tls.protocol if result.tls else ""
    if not proto:
        return _not_run(result, "protocol", "protocol unknown")
    return CheckResult("tls", "protocol", OK, f"{proto} (minimum {t.min_tls_version})")
