"""ICMP echo through icmplib, with "no permission" as its own outcome.

Raw ICMP sockets need root (or CAP_NET_RAW); unprivileged ICMP sockets need the runner's
group inside ``net.ipv4.ping_group_range``. Many CI runners have neither, and that is a fact
about the runner, not about the mail server, so it must never look like a failed check.
"""

from __future__ import annotations

import os

from .result import PingInfo

__all__ = ["no_permission_reason", "ping"]

_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"


def _privileged_default() -> bool:
    if os.environ.get("POP3MON_PING_UNPRIVILEGED", "") not in ("", "0"):
        return False
    return hasattr(os, "geteuid") and os.geteuid() == 0


def no_permission_reason(privileged: bool) -> str:
    """Why this process may not PING, naming what would allow it: for an unprivileged ICMP
    socket the sysctl ``net.ipv4.ping_group_range`` and its current value."""
    if privileged:
        return (
            "this runner may not send ICMP echo: a raw ICMP socket needs root or "
            "CAP_NET_RAW; PING not checked"
        )
    try:
        with open(_GROUP_RANGE, encoding="ascii") as handle:
            now = " ".join(handle.read().split())
    except OSError:
        now = "unknown"
    gid = os.getegid() if hasattr(os, "getegid") else "?"
    return (
        f"this runner may not send ICMP echo: unprivileged ICMP needs the runner's group "
        f"(gid {gid}) inside sysctl net.ipv4.ping_group_range (now '{now}'), else root or "
        "CAP_NET_RAW; PING not checked"
    )


def ping(address: str, timeout: float, privileged: bool | None = None) -> PingInfo:
    """Send one ICMP echo to ``address`` and wait at most ``timeout`` seconds."""
    # icmplib (and the asyncio it imports) only when a probe pings: `ping: false` is the
    # default, and a one-shot `pop3mon check` should not pay for the import.
    from icmplib import exceptions as icmp_errors
    from icmplib import ping as icmp_ping

    if privileged is None:
        privileged = _privileged_default()
    try:
        host = icmp_ping(
            address, count=1, interval=0, timeout=max(timeout, 0.05), privileged=privileged
        )
    except icmp_errors.SocketPermissionError:
        return PingInfo("no-permission", reason=no_permission_reason(privileged))
    except icmp_errors.ICMPLibError as exc:
        return PingInfo("fail", reason=f"ICMP error: {exc}")
    except OSError as exc:
        return PingInfo("fail", reason=f"ICMP error: {exc.strerror or exc}")
    if not host.is_alive:
        return PingInfo("fail", reason=f"no ICMP echo reply from {address} within {timeout:g}s")
    return PingInfo("ok", rtt_seconds=host.avg_rtt / 1000.0)
