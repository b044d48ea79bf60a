"""Connectivity tier: DNS, PING, TCP connect, greeting, CAPA."""

from __future__ import annotations

from collections.abc import Sequence

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

__all__ = ["capa", "capability_changes", "dns", "greeting", "ping", "tcp"]


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
    # A shared echo (the host check's) says so: one echo per host, not per connection type.
    outcome = result.stage("ping")
    note = f" ({outcome.reason})" if outcome is not None and outcome.reason else ""
    return CheckResult("connectivity", "ping", OK, f"echo reply in {rtt} ms{note}", rtt, "ms")


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
    """The server greets with +OK (POP3) or 220 (SMTP)."""
    failed = gate(result, "connectivity", "greeting", "greeting")
    if failed:
        return failed
    text = result.greeting or "(empty)"
    said = "220" if smtp(result) else "+OK"
    return CheckResult(
        "connectivity", "greeting", OK, f"{said} {text}", ms(result.phase("greeting")), "ms"
    )


def capa(result: ProbeResult, t: Thresholds) -> CheckResult:
    """CAPA (SMTP: EHLO) answered, before and (after STLS/STARTTLS) after TLS; the reason
    lists the capabilities the session went on with and, after the upgrade, what changed
    from the plaintext list."""
    # Both exchanges are this check's: a session that dies right after the STLS
    # handshake must fail somewhere, not only skip everything after it.
    own = ("ehlo", "ehlo_tls") if smtp(result) else ("capa", "capa_tls")
    failed = gate(result, "connectivity", "capa", *own)
    if failed:
        return failed
    upgrade = PHASE_LABELS[stls_stage(result)]
    what = "EHLO extensions" if smtp(result) else "capabilities"
    for stage in own:
        outcome = result.stage(stage)
        if outcome is not None and outcome.status == "warn":
            return CheckResult("connectivity", "capa", WARN, outcome.reason)
    before = result.capabilities_before or ()
    after = result.capabilities_after
    if after is not None:
        # After STLS only the list asked over TLS counts (RFC 2595 §4): the one shown.
        changes = " ".join(capability_changes(before, after)) or "unchanged"
        where, caps = f"over TLS (after {upgrade}: {changes})", after
    else:
        where, caps = ("over TLS" if result.security == "tls" else "in plaintext"), before
    return CheckResult(
        "connectivity",
        "capa",
        OK,
        f"{len(caps)} {what} {where}: {_listing(caps)}",
        ms(result.phase(own[0])),
        "ms",
    )


def capability_changes(before: Sequence[str], after: Sequence[str]) -> list[str]:
    """What STLS changed: ``+X`` for each capability only after it, ``−X`` for each only
    before it, ``X(old→new)`` for one whose arguments changed. Each SASL mechanism is one
    capability (``SASL(PLAIN)``)."""
    old, new = _capability_args(before), _capability_args(after)
    added = [f"+{_shown(c, new[c])}" for c in new if c not in old]
    changed = [f"{c}({old[c]}\u2192{new[c]})" for c in new if c in old and old[c] != new[c]]
    removed = [f"\u2212{_shown(c, old[c])}" for c in old if c not in new]
    return added + changed + removed


def _capability_args(lines: Sequence[str]) -> dict[str, str]:
    """Capability (upper case; ``SASL(<mech>)`` per mechanism) -> its arguments."""
    out: dict[str, str] = {}
    for line in lines:
        keyword, *args = line.split() or [""]
        keyword = keyword.upper()
        if keyword == "SASL":
            out.update((f"SASL({mech.upper()})", "") for mech in args)
        elif keyword:
            out.setdefault(keyword, " ".join(args))
    return out


def _shown(capability: str, args: str) -> str:
    return f"{capability}({args})" if args else capability


def _listing(caps: Sequence[str], limit: int = 200) -> str:
    """The capabilities, comma-separated, cut after whole entries near ``limit`` characters."""
    shown: list[str] = []
    for cap in caps:
        if shown and len(", ".join([*shown, cap])) > limit:
            return ", ".join(shown) + f", … ({len(caps) - len(shown)} more)"
        shown.append(cap)
    return ", ".join(shown)
