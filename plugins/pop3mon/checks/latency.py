"""Latency tier: each phase's duration, and the total, against warn/crit seconds."""

from __future__ import annotations

from ..engine.result import ProbeResult
from ..engine.stages import PHASE_LABELS, stage_index
from ..verdict import Verdict
from .base import CRIT, OK, SKIP, WARN, CheckResult, Thresholds, blocked, failed_stage, ms

__all__ = ["PREFIX", "latency", "latency_phases"]

#: Latency checks are named ``latency-<phase>``.
PREFIX = "latency-"


def latency(result: ProbeResult, t: Thresholds, phase: str) -> CheckResult:
    """Verdict for one phase's duration against its (warn, crit) seconds."""
    check = PREFIX + phase
    limits = t.latency.get(phase)
    label = PHASE_LABELS.get(phase, phase)
    value = result.phase(phase)
    failed = failed_stage(result)
    if value is None or (failed is not None and phase == "total"):
        if failed is not None:
            return blocked("latency", check, failed)
        return CheckResult("latency", check, SKIP, f"{label} phase did not run")
    if failed is not None and failed.stage == phase:
        return blocked("latency", check, failed)
    took = ms(value)
    if limits is None:
        return CheckResult("latency", check, OK, f"{label} {took} ms (no threshold)", took, "ms")
    warn, crit = limits
    verdict: Verdict
    if value >= crit:
        verdict, note = CRIT, f"≥ critical {crit * 1000:g} ms"
    elif value >= warn:
        verdict, note = WARN, f"≥ warning {warn * 1000:g} ms"
    else:
        verdict, note = OK, f"< warning {warn * 1000:g} ms"
    return CheckResult("latency", check, verdict, f"{label} {took} ms {note}", took, "ms")


def latency_phases(t: Thresholds) -> list[str]:
    """Latency phases checked for ``t``: total first, then the configured phases that this
    connection type's security mode and auth setting can run at all."""
    never: set[str] = set()
    if t.security != "tls":
        never.add("tls")
    if t.security not in ("starttls", "starttls-optional"):
        never |= {"stls", "tls_handshake", "capa_tls"}
    if t.auth == "none":
        never |= {"auth", "stat"}
    keys = (set(t.latency) | {"total"}) - never
    return sorted(keys, key=lambda p: (p != "total", stage_index(p)))
