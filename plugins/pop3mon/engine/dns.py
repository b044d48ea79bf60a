"""Name resolution within the probe's deadline."""

from __future__ import annotations

import ipaddress
import socket
import threading

from .errors import ProbeError, ResolveError, map_exception
from .wire import Deadline

__all__ = ["is_ip", "resolve"]


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IP address literal (no DNS lookup needed)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(host: str, port: int, deadline: Deadline) -> tuple[str, ...]:
    """Resolve ``host`` within the deadline.

    ``getaddrinfo`` ignores timeouts, so it runs in a daemon thread that the deadline can
    abandon. Names under ``.invalid`` never resolve (RFC 6761) and are not even asked for.
    """
    if host.rstrip(".").lower().endswith(".invalid") or host.lower() == "invalid":
        raise ResolveError(
            f"{host} is a reserved name that never resolves (RFC 6761 .invalid)",
            kind="dns-nxdomain",
            stage="dns",
        )
    box: list[object] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # noqa: BLE001 - handed to the probe thread below
            box.append(exc)
        done.set()

    threading.Thread(target=lookup, name=f"dns-{host}", daemon=True).start()
    if not done.wait(deadline.budget("dns")):
        raise ProbeError(
            f"DNS lookup of {host} did not answer within the deadline",
            kind="dns-timeout",
            stage="dns",
        )
    outcome = box[0]
    if isinstance(outcome, BaseException):
        if isinstance(outcome, socket.gaierror):
            raise ResolveError(
                f"DNS lookup of {host} failed: {outcome.strerror or outcome}", stage="dns"
            )
        raise map_exception(outcome, "dns")
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in outcome:  # type: ignore[attr-defined]
        addr = str(sockaddr[0])
        if addr not in addresses:
            addresses.append(addr)
    if not addresses:
        raise ResolveError(f"DNS lookup of {host} returned no address", stage="dns")
    return tuple(addresses)
