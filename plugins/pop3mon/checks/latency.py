"""Latency tier: each phase's duration, and the total, against warn/crit seconds."""

from __future__ import annotations

import math

from ..engine.result import ProbeResult
from ..engine.stages import DELIVERY_PHASE, LATENCY_PHASES, PHASE_LABELS, stage_index, stages_of
from ..verdict import Verdict
from .base import CRIT, OK, SKIP, WARN, CheckResult, Thresholds, blocked, failed_stage, ms

__all__ = ["PREFIX", "latency", "latency_phases", "ms_text", "slow_phases"]

#: Latency checks are named ``latency-<phase>``.
PREFIX = "latency-"
#: What a server's login penalty lengthens: the login, and so the whole session.
_EXPOSED_PHASES = frozenset({"auth", "total"})


def latency(result: ProbeResult, t: Thresholds, phase: str) -> CheckResult:
    """Verdict for one phase's duration against its (warn, crit) seconds."""
    check = PREFIX + phase
    if phase == DELIVERY_PHASE:
        return delivery(result, t)
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
    if result.login_exposed and phase in _EXPOSED_PHASES:
        return CheckResult("latency", check, SKIP, f"not judged: {result.login_exposed}")
    took = ms(value)
    if limits is None:
        text = f"{label} {ms_text(value)} ms (no threshold)"
        return CheckResult("latency", check, OK, text, took, "ms")
    warn, crit = limits
    verdict: Verdict
    if value >= crit:
        verdict, note = CRIT, f"≥ critical {crit * 1000:g} ms"
    elif value >= warn:
        verdict, note = WARN, f"≥ warning {warn * 1000:g} ms"
    else:
        verdict, note = OK, f"< warning {warn * 1000:g} ms"
    text = f"{label} {ms_text(value)} ms {note}"
    slow = slow_phases(result, t) if phase == "total" and verdict != OK else []
    if slow:
        text += f" ({', '.join(slow)})"
    return CheckResult("latency", check, verdict, text, took, "ms")


def slow_phases(result: ProbeResult, t: Thresholds) -> list[str]:
    """Where a slow session's time went, slowest first: its largest phase, and every
    other phase at or above its own warning threshold (``authentication 4045 ms``)."""
    phases = [(name, seconds) for name, seconds in result.phases if name != "total"]
    if not phases:
        return []
    largest = max(phases, key=lambda p: p[1])

    def over_own_warning(name: str, seconds: float) -> bool:
        limits = t.latency.get(name)
        return limits is not None and seconds >= limits[0]

    named = [p for p in phases if p == largest or over_own_warning(*p)]
    named.sort(key=lambda p: -p[1])
    return [f"{PHASE_LABELS.get(name, name)} {ms_text(seconds)} ms" for name, seconds in named]


def ms_text(seconds: float) -> str:
    """Milliseconds for a reason: whole ms from 100 ms, finer below (0.412, 3.07, 45.6).

    Cut, not rounded: a value below its threshold never reads as equal to it."""
    value = seconds * 1000.0
    places = 0 if value >= 100 else 1 if value >= 10 else 2 if value >= 1 else 3
    scale = 10**places
    # round() first: 0.29 * 100 is 28.999999999999996 in binary floating point.
    return f"{math.floor(round(value * scale, 6)) / scale:.{places}f}"


def latency_phases(t: Thresholds) -> list[str]:
    """Latency phases checked for ``t``: total first, then the configured phases that this
    connection type's security mode and auth setting can run at all."""
    # A phase the protocol never runs (STAT for SMTP, EHLO for POP3) is not checked.
    never: set[str] = {str(p) for p in LATENCY_PHASES} - set(stages_of(t.protocol)) - {"total"}
    if t.security != "tls":
        never.add("tls")
    if t.security not in ("starttls", "starttls-optional"):
        never |= {"stls", "starttls", "tls_handshake", "capa_tls", "ehlo_tls"}
    if t.auth == "none":
        never |= {"auth", "stat"}
    keys = (set(t.latency) | {"total"}) - never
    if getattr(t, "round_trip", None) is not None and t.auth != "none":
        keys.add(DELIVERY_PHASE)  # sorts after every stage: the round trip runs last
    return sorted(keys, key=lambda p: (p != "total", stage_index(p)))


def delivery(result: ProbeResult, t: Thresholds) -> CheckResult:
    """The mail round trip (``latency-delivery``): CRIT when the message could not be
    sent, a poll failed or it did not arrive within the deadline; else its delivery time
    against the round trip's own warn/crit seconds. The reason says what cleanup did."""
    check = PREFIX + DELIVERY_PHASE
    rt = result.round_trip
    settings = getattr(t, "round_trip", None)
    failed = failed_stage(result)
    if failed is not None:
        return blocked("latency", check, failed)
    if rt is None:
        return CheckResult("latency", check, SKIP, "no mail round trip in this run")
    if rt.status == "not-run":
        return CheckResult("latency", check, SKIP, f"mail round trip {rt.reason}")
    tidy = ""
    if rt.cleanup != "off":
        tidy = f"; cleanup deleted {rt.deleted} own message(s)"
    if rt.kept:
        tidy += f"; {rt.kept} tagged look-alike(s) without a valid HMAC left alone"
    logins = f"{rt.logins} login{'s' if rt.logins != 1 else ''}"
    if rt.status != "delivered" or rt.delivery is None:
        return CheckResult("latency", check, CRIT, f"mail round trip: {rt.reason} ({logins}{tidy})")
    value = rt.delivery
    took = ms(value)
    warn = float(getattr(settings, "warn", 0.0) or 0.0)
    crit = float(getattr(settings, "crit", 0.0) or 0.0)
    seen = f"delivered through {rt.via} in {value:.2f} s (seen by poll {rt.polls}, {logins}{tidy})"
    if not crit:
        return CheckResult("latency", check, OK, f"{seen} (no threshold)", took, "ms")
    verdict: Verdict
    if value >= crit:
        verdict, note = CRIT, f"≥ critical {crit:g} s"
    elif value >= warn:
        verdict, note = WARN, f"≥ warning {warn:g} s"
    else:
        verdict, note = OK, f"< warning {warn:g} s"
    return CheckResult("latency", check, verdict, f"{seen} {note}", took, "ms")
