"""Connectivity tier: DNS, PING, TCP connect, greeting, CAPA."""

from __future__ import annotations

from ..engine.result import ProbeResult
from ..engine.stages import stage_index
from .base import CRIT, OK, SKIP, WARN, CheckResult, Thresholds, blocked, failed_stage, gate, ms

__all__ = ["capa", "dns", "greeting", "ping", "tcp"]


def dns(result: ProbeResult, t: Thresholds) -> CheckResult:
    """The host name resolves (SKIP when the target is an address)."""
    outcome = result.stage("dns")
    if outcome is not None and outcome.status == "skip":
        return CheckResult("connectivity", "dns", SKIP, outcome.reason)
    failed = gate(result, "connectivity", "dns", "dns")
    if failed:
        return failed
    addrs = ", ".join(result.addresses)
    return CheckResult(
        "connectivity", "dns", OK, f"resolves to {addrs}", ms(result.phase("dns")), "ms"
    )


def ping(result: ProbeResult, t: Thresholds) -> CheckResult:
    """ICMP echo answered (when enabled for the target)."""
    info = result.ping
    failed_ping = result.stage("ping")
    if failed_ping is not None and failed_ping.status == "fail":
        return CheckResult("connectivity", "ping", CRIT, failed_ping.reason)
    if info is None:
        failed = failed_stage(result)
        if failed is not None and stage_index(failed.stage) < stage_index("ping"):
            return blocked("connectivity", "ping", failed)
        return CheckResult(
            "connectivity", "ping", SKIP, "PING disabled for this target (ping: false)"
        )
    if info.status == "no-permission":
        return CheckResult("connectivity", "ping", SKIP, info.reason)
    if info.status != "ok":
        return CheckResult("connectivity", "ping", CRIT, info.reason)
    rtt = ms(info.rtt_seconds)
    return CheckResult("connectivity", "ping", OK, f"echo reply in {rtt} ms", rtt, "ms")


def tcp(result: ProbeResult, t: Thresholds) -> CheckResult:
    """The TCP port accepts connections."""
    failed = gate(result, "connectivity", "tcp", "connect")
    if failed:
        return failed
    # Addresses tried before the one that answered (RFC 8305 racing): a family that is
    # down for every client without Happy Eyeballs is worth reading even when OK.
    outcome = result.stage("connect")
    after = f" (after {outcome.reason})" if outcome is not None and outcome.reason else ""
    return CheckResult(
        "connectivity",
        "tcp",
        OK,
        f"connected to {result.peer} port {result.port}{after}",
        ms(result.phase("connect")),
        "ms",
    )


def greeting(result: ProbeResult, t: Thresholds) -> CheckResult:
    """The server greets with +OK."""
    failed = gate(result, "connectivity", "greeting", "greeting")
    if failed:
        return failed
    text = result.greeting or "(empty)"
    return CheckResult(
        "connectivity", "greeting", OK, f"+OK {text}", ms(result.phase("greeting")), "ms"
    )


def capa(result: ProbeResult, t: Thresholds) -> CheckResult:
    """CAPA answered, before and (after STLS) after TLS."""
    # Both CAPA exchanges are this check's: a session that dies right after the STLS
    # handshake must fail somewhere, not only skip everything after it.
    failed = gate(result, "connectivity", "capa", "capa", "capa_tls")
    if failed:
        return failed
    for stage in ("capa", "capa_tls"):
        outcome = result.stage(stage)
        if outcome is not None and outcome.status == "warn":
            return CheckResult("connectivity", "capa", WARN, outcome.reason)
    caps = result.capabilities_before or ()
    return CheckResult(
        "connectivity",
        "capa",
        OK,
        f"{len(caps)} capabilities: " + ", ".join(caps)[:200],
        ms(result.phase("capa")),
        "ms",
    )
