"""Name resolution within the probe's deadline, restricted to one address family if asked."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Mapping
from typing import Final

from .errors import ErrorKind, ProbeError, ResolveError, map_exception
from .stages import FAMILY_LABELS, AddressFamily
from .wire import Deadline

__all__ = ["family_of", "is_ip", "literal_family_problem", "resolve"]

_SOCKET_FAMILY: Final[Mapping[AddressFamily, socket.AddressFamily]] = {
    "auto": socket.AF_UNSPEC,
    "ipv4": socket.AF_INET,
    "ipv6": socket.AF_INET6,
}

# What the resolver's answer means: the name does not exist (or has no address), or the
# resolver could not get an answer this time (SERVFAIL, no DNS server reachable) — the
# one a retry may fix (engine/retry.py). Other codes stay dns-failed.
_GAI_KINDS: Final[Mapping[int, ErrorKind]] = {
    socket.EAI_NONAME: "dns-nxdomain",
    **({socket.EAI_NODATA: "dns-nxdomain"} if hasattr(socket, "EAI_NODATA") else {}),
    socket.EAI_AGAIN: "dns-temporary",
}


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IP address literal (no DNS lookup needed)."""
    return family_of(host) is not None


def family_of(address: str) -> AddressFamily | None:
    """``ipv4``/``ipv6`` for an IP address literal, ``None`` for anything else."""
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        return None
    return "ipv4" if version == 4 else "ipv6"


def literal_family_problem(address: str, family: AddressFamily) -> str:
    """Why the IP literal ``address`` cannot be used with ``family`` ("" when it can).

    The config loader refuses such a file; a :class:`~.result.ProbeSpec` built in code
    gets the same sentence as its DNS-stage failure.
    """
    own = family_of(address)
    if own is None or family == "auto" or own == family:
        return ""
    return (
        f"{address} is an {FAMILY_LABELS[own]} address, but address_family is {family} "
        f"(only {FAMILY_LABELS[family]})"
    )


def _lookup(host: str, port: int, family: AddressFamily, deadline: Deadline) -> list[str]:
    """One ``getaddrinfo`` in a daemon thread the deadline can abandon (it ignores
    timeouts). Returns the distinct addresses in resolver order; raises what it raised."""
    box: list[object] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            box.append(
                socket.getaddrinfo(
                    host, port, family=_SOCKET_FAMILY[family], type=socket.SOCK_STREAM
                )
            )
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
        raise outcome
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in outcome:  # type: ignore[attr-defined]
        addr = str(sockaddr[0])
        if addr not in addresses and (family == "auto" or family_of(addr) == family):
            addresses.append(addr)
    return addresses


def resolve(
    host: str, port: int, deadline: Deadline, family: AddressFamily = "auto"
) -> tuple[str, ...]:
    """Resolve ``host`` within the deadline, to addresses of ``family`` only unless ``auto``.

    Names under ``.invalid`` never resolve (RFC 6761) and are not even asked for. When a
    restricted lookup finds nothing, a second, unrestricted one (within the same deadline)
    tells "has no IPv6 address" apart from "does not exist".
    """
    if host.rstrip(".").lower().endswith(".invalid") or host.lower() == "invalid":
        raise ResolveError(
            f"{host} is a reserved name that never resolves (RFC 6761 .invalid)",
            kind="dns-nxdomain",
            stage="dns",
        )
    try:
        addresses = _lookup(host, port, family, deadline)
    except ProbeError:
        raise
    except socket.gaierror as exc:
        if family != "auto":
            _raise_if_other_family(host, port, family, deadline)
        raise ResolveError(
            f"DNS lookup of {host} failed: {exc.strerror or exc}",
            kind=_GAI_KINDS.get(exc.errno or 0, "dns-failed"),
            stage="dns",
        ) from None
    except Exception as exc:  # noqa: BLE001 - mapped, never raised raw
        raise map_exception(exc, "dns") from None
    if not addresses:
        if family != "auto":
            _raise_if_other_family(host, port, family, deadline)
        raise ResolveError(f"DNS lookup of {host} returned no address", stage="dns")
    return tuple(addresses)


def _raise_if_other_family(host: str, port: int, family: AddressFamily, deadline: Deadline) -> None:
    """Raise the "no address of this family" reason when ``host`` has only other ones."""
    try:
        others = _lookup(host, port, "auto", deadline)
    except Exception:  # noqa: BLE001 - best effort; the restricted lookup's failure stands
        return
    if others:
        raise ResolveError(
            f"{host} has no {FAMILY_LABELS[family]} address (address_family: {family}; "
            f"it resolves to {', '.join(others)})",
            kind="dns-wrong-family",
            stage="dns",
        )
