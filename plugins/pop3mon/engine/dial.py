"""TCP connect to the first of several addresses that answers, within the probe's deadline.

Happy Eyeballs v2 (RFC 8305) for the connect stage: the addresses are interleaved by
family (§4), starting with the resolver's first (``getaddrinfo`` has already sorted them by
RFC 6724, which prefers IPv6 where it works); a new attempt starts every
:data:`ATTEMPT_DELAY` seconds, or at once when the previous one failed (§5), while earlier
ones keep running. The first to connect wins and every other socket is closed. Nothing
waits past the deadline: attempts still running then fail as timed out.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from .dns import family_of
from .errors import ConnectError, ProbeError, map_exception
from .wire import Deadline

__all__ = ["ATTEMPT_DELAY", "Dialed", "dial", "interleave"]

#: RFC 8305 §5 "Connection Attempt Delay": its recommended default.
ATTEMPT_DELAY: Final = 0.25


@dataclass(frozen=True)
class Dialed:
    """The connected socket, the address it reached, and the attempts that failed before
    or alongside it as ``(address, reason)`` in the order they were started."""

    sock: socket.socket
    address: str
    failures: tuple[tuple[str, str], ...]


def interleave(addresses: Sequence[str]) -> tuple[str, ...]:
    """RFC 8305 §4: alternate the families, keeping each family's resolver order and
    starting with the family of the first address."""
    first = family_of(addresses[0]) if addresses else None
    same = [a for a in addresses if family_of(a) == first]
    other = [a for a in addresses if family_of(a) != first]
    out: list[str] = []
    for index in range(max(len(same), len(other))):
        out += same[index : index + 1] + other[index : index + 1]
    return tuple(out)


def _start(address: str, port: int) -> socket.socket:
    """A non-blocking connect already under way (or already failed: raises OSError)."""
    family = socket.AF_INET6 if family_of(address) == "ipv6" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        err = sock.connect_ex((address, port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


def dial(
    addresses: Sequence[str], port: int, deadline: Deadline, host: str, stage: str = "connect"
) -> Dialed:
    """Connect to the first of ``addresses`` that accepts, racing them as RFC 8305 says.

    Raises :class:`~.errors.ConnectError` (or the mapped error of the first address) naming
    every address and what happened to it when none connects before the deadline.
    """
    queue = list(interleave(addresses))
    order = {address: index for index, address in enumerate(queue)}
    running: dict[socket.socket, str] = {}
    failures: list[tuple[str, ProbeError]] = []
    selector = selectors.DefaultSelector()
    next_start = time.monotonic()
    try:
        while (queue or running) and deadline.remaining() > 0:
            now = time.monotonic()
            if queue and (not running or now >= next_start):
                address = queue.pop(0)
                try:
                    sock = _start(address, port)
                except OSError as exc:
                    failures.append((address, map_exception(exc, stage)))
                    continue  # failed at once: the next attempt need not wait
                running[sock] = address
                selector.register(sock, selectors.EVENT_WRITE, sock)
                next_start = now + ATTEMPT_DELAY
                continue
            left = deadline.remaining()
            wait = min(left, max(0.0, next_start - now)) if queue else left
            ready = [key.data for key, _events in selector.select(max(0.0, wait))]
            # Several done at once: the earlier-ordered address wins, as it would have alone.
            for sock in sorted(ready, key=lambda ready_sock: order[running[ready_sock]]):
                address = running.pop(sock)
                selector.unregister(sock)
                try:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))  # the subclass errno says
                    # Blocking again; every read of the Wire re-arms the timeout from the
                    # deadline, so this value only covers the moment until then.
                    sock.settimeout(max(0.001, deadline.remaining()))
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError as exc:
                    sock.close()
                    failures.append((address, map_exception(exc, stage)))
                    next_start = time.monotonic()  # RFC 8305 §5: a failure starts the next
                    continue
                return Dialed(sock, address, _words(order, failures))
    finally:
        selector.close()
        for sock in running:  # the losers, or everything still trying at the deadline
            sock.close()
    late = f"no answer within the deadline of {deadline.seconds:g}s"
    for address in running.values():
        failures.append((address, ConnectError(late, kind="connect-timeout", stage=stage)))
    for address in queue:
        failures.append(
            (
                address,
                ConnectError(
                    "not tried: the deadline had passed", kind="connect-timeout", stage=stage
                ),
            )
        )
    if not failures:
        raise ConnectError(f"no address to connect to for {host}", stage=stage)
    where = "; ".join(f"{address}: {reason}" for address, reason in _words(order, failures))
    first = min(failures, key=lambda failure: order.get(failure[0], 0))[1]
    verb = "timed out" if all(e.kind == "connect-timeout" for _a, e in failures) else "failed"
    raise type(first)(
        f"TCP connect to {host} port {port} {verb} ({where})", kind=first.kind, stage=stage
    )


def _words(
    order: Mapping[str, int], failures: Sequence[tuple[str, ProbeError]]
) -> tuple[tuple[str, str], ...]:
    """``(address, reason)`` in the order the attempts were started."""
    ranked = sorted(failures, key=lambda failure: order.get(failure[0], 0))
    return tuple((address, err.reason) for address, err in ranked)
