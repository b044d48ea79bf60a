"""A latency-injecting TCP proxy for 127.0.0.1: every byte arrives a fixed one-way delay later.

Model
-----
One thread per :class:`LatencyProxy` runs a single-threaded event loop: :mod:`selectors`
(epoll on Linux) over non-blocking sockets, plus a heap of timed events (each direction's next
due chunk, each connection's upstream connect). There is no thread per connection because the
benchmarks run this proxy on the same two cores as the program they measure: the engine it
replaces, a reader and a writer thread per direction (four per connection), spent 2-3.5 s of
CPU on the 1,000-connection-type scale run's probe batch (64 probes in flight), which the
measured program then had to share; the loop does the same work in about half of that (see
benchmarks/README.md, section 2).

Every chunk a leg receives is stamped with ``arrival + delay`` and queued for the other leg;
it is sent when that moment comes. Chunks never wait for each other's delay, so the proxy
*delays* data without *throttling* it: a stream sent in ten pieces 1 ms apart leaves the proxy
in ten pieces 1 ms apart, ``delay`` later, in order. An end of stream (FIN) is delayed the
same way and forwarded as a half-close (``shutdown(SHUT_WR)``), so a server's close reaches the
client ``delay`` after the server closed; a connection is closed once both directions have
forwarded their FIN. A reset read from one leg is forwarded the same way (at its due time both
legs are closed, the other one with a reset), and nothing more is sent to that leg. A failed
send (or half-close) to a leg means its peer reset the connection: it is handled as a reset
read from that leg (what the leg still had to read goes first, the reset follows one delay
later), so data due earlier in the other direction still arrives before it. A send
the kernel takes only in part (``EAGAIN``) keeps the unsent rest at the head of its
direction's queue until the socket is writable again; a leg is not read while the direction
it feeds holds more than 1 MiB unsent (back-pressure).

The upstream connection is opened (a non-blocking connect) ``delay`` after the proxy accepted
the client: on a real path the server learns about a connection half a round trip after the
client's ``connect()`` returns, so everything the server sends first (a POP3 greeting) reaches
the client one full round trip after ``connect()`` returned, as it would over a real link.
Data the client sends before that is held, each chunk due ``delay`` after its own arrival,
and is not sent before the upstream connection is established. An upstream that refuses the
connection (or has not answered within 10 s) resets the client's connection ``delay`` later.
The TCP handshake with the proxy itself is done by the kernel and cannot be delayed from user
space: **the connect phase gets no added delay** (0 round trips); every later exchange gets
``2 x delay`` per round trip.

Timing uses ``time.monotonic()``, the kernel's receive timestamp of each chunk
(``SO_TIMESTAMPNS``, so the loop's own wake-up time is not added) and, on Linux, a
``timerfd`` (``CLOCK_MONOTONIC``, absolute, nanoseconds) in the epoll set, since epoll's own
timeout has a 1 ms resolution. A wake-up is ~0.05-0.2 ms late on this VM (the more idle its
CPUs, the later); ``spin`` trades CPU for microsecond precision: the loop wakes ``spin`` early
and polls (busy, still serving every socket) until the chunk is due, the last 50 µs reading
only the clock. Without a timerfd the loop waits in epoll to the last whole
millisecond and sleeps the rest. Heap entries that no longer have anything to do (a closed
connection's, a connect deadline after the connect) are dropped when they come to the head,
without a wake-up or a spin. TCP_NODELAY is set on both legs, and chunks are forwarded as
received. The upstream address is resolved once, in :meth:`LatencyProxy.start`.
When ``accept()`` fails for lack of descriptors or memory, the listener is not watched for
50 ms (the connection waits in the backlog), so the loop does not spin.

Use
---
In-process (tests, small tools)::

    with LatencyProxy(("127.0.0.1", 110), delay=0.02) as proxy:
        connect_to(proxy.host, proxy.port)

In a separate process, so the proxy never competes for the measuring process's GIL
(benchmarks)::

    with spawn_proxies([("127.0.0.1", 110), ("127.0.0.1", 995)], delay=0.02) as ports:
        ...  # ports[0] forwards to 110, ports[1] to 995

Command line (prints one JSON line ``{"ports": [...], "delay": ...}`` once listening, then runs
until SIGINT/SIGTERM or ``--duration`` seconds)::

    python benchmarks/latency_proxy.py --upstream 127.0.0.1:110 --upstream 127.0.0.1:995 \\
        --delay 0.02 --duration 600
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import heapq
import json
import math
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

__all__ = ["LatencyProxy", "main", "spawn_proxies"]

HOST = "127.0.0.1"
CHUNK = 65536
#: A leg is not read while the direction it feeds holds more than this many unsent bytes.
QUEUE_LIMIT = 1 << 20
CONNECT_TIMEOUT = 10.0  # seconds for the upstream connect, as socket.create_connection had
_ACCEPTS_PER_WAKEUP = 64
#: accept() errors that leave the connection in the backlog (no descriptor, no memory): the
#: listener is not watched for this long, else its readiness would make the loop spin.
_ACCEPT_STARVED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_RELISTEN_AFTER = 0.05
#: With ``spin``, the last moments before a due chunk are spent reading the clock only: one turn
#: of the loop (poll every socket, fire what is due) takes ~10-30 µs.
_SPIN_TIGHT = 50e-6

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE

# Kernel receive timestamps: Linux's SO_TIMESTAMPNS (35) is not exported by the socket module.
_SO_TIMESTAMPNS: int | None = getattr(
    socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None
)
_ANC_SIZE = socket.CMSG_SPACE(16)
_RESET_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


def _enable_timestamps(sock: socket.socket) -> bool:
    if _SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _realtime_offset() -> float:
    """``CLOCK_REALTIME - CLOCK_MONOTONIC``, rounded down: a converted time is never early."""
    for _ in range(5):
        before = time.monotonic()
        real = time.time()
        after = time.monotonic()
        if after - before < 20e-6:
            break
    return real - after


def _arrival(ancdata: list[tuple[int, int, bytes]]) -> float:
    """Monotonic time at which the kernel received the data just read (never later than now,
    never earlier than the truth)."""
    now = time.monotonic()
    for level, kind, raw in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(raw) >= 16:
            sec, nsec = struct.unpack("qq", raw[:16])  # struct timespec, CLOCK_REALTIME
            return min(now, float(sec) + float(nsec) / 1e9 - _realtime_offset())
    return now


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _TimerFD:
    """A Linux ``timerfd`` on ``CLOCK_MONOTONIC`` (``time.monotonic()``'s clock), armed at
    absolute times with nanosecond resolution; readable once it expired."""

    _CLOCK_MONOTONIC = 1
    _TFD_TIMER_ABSTIME = 1
    _TFD_NONBLOCK = os.O_NONBLOCK
    _TFD_CLOEXEC = 0o2000000

    def __init__(self, libc: Any) -> None:
        self._settime = libc.timerfd_settime
        fd = int(libc.timerfd_create(self._CLOCK_MONOTONIC, self._TFD_NONBLOCK | self._TFD_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self.armed: float | None = None
        self.pending = False  # expired, still readable
        self._spec = _Itimerspec()

    @classmethod
    def create(cls) -> _TimerFD | None:
        """A timer, or None where there is no timerfd (not Linux, no libc symbol, refused)."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.timerfd_create.restype = ctypes.c_int
            libc.timerfd_settime.argtypes = [
                ctypes.c_int,
                ctypes.c_int,
                ctypes.POINTER(_Itimerspec),
                ctypes.c_void_p,
            ]
            libc.timerfd_settime.restype = ctypes.c_int
            return cls(libc)
        except (OSError, AttributeError):
            return None

    def arm(self, when: float) -> None:
        """Expire at monotonic time ``when`` (at once if that has passed)."""
        if when == self.armed:
            return
        sec, nsec = divmod(max(1, math.ceil(when * 1e9)), 1_000_000_000)  # 0 would disarm
        self._spec.it_value.tv_sec = sec
        self._spec.it_value.tv_nsec = nsec
        if self._settime(self.fd, self._TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self.armed = when
        self.pending = False

    def expired(self) -> None:
        """The descriptor is readable: it stays so until re-armed (which clears it, so the
        usual next :meth:`arm` saves a read) or :meth:`clear`-ed."""
        self.armed = None
        self.pending = True

    def clear(self) -> None:
        """Consume an expiry that no :meth:`arm` will clear."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)
        self.pending = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class _Timed:
    """Something the loop's heap calls back at a given monotonic time."""

    __slots__ = ()

    def fire(self, when: float) -> None:
        raise NotImplementedError

    def live(self, when: float) -> bool:
        """Whether the entry due ``when`` still has something to do (cheap): the loop drops
        dead entries at the head of its heap instead of waking (or spinning) for them."""
        raise NotImplementedError

    def fail(self) -> None:
        """Give up on what :meth:`fire` was for after an unexpected error."""
        raise NotImplementedError


class _Relisten(_Timed):
    """Watch the listener again (after accept() ran out of descriptors or memory)."""

    __slots__ = ("loop",)

    def __init__(self, loop: _Loop) -> None:
        self.loop = loop

    def fire(self, when: float) -> None:
        self.loop.listen()

    def live(self, when: float) -> bool:
        return True

    def fail(self) -> None:
        pass


class _Deadline(_Timed):
    """A connection's connect deadline, due long after most connections connected or closed:
    cancelled (``link`` None) then, so that the heap does not hold the closed connection."""

    __slots__ = ("link",)

    def __init__(self, link: _Link) -> None:
        self.link: _Link | None = link

    def fire(self, when: float) -> None:
        if self.link is not None:
            self.link.fire(when)

    def live(self, when: float) -> bool:
        return self.link is not None

    def fail(self) -> None:
        if self.link is not None:
            self.link.fail()


class _Leg:
    """One socket of a connection, with the direction read from it and the one written to it."""

    __slots__ = ("inbound", "mask", "outbound", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.mask = 0  # events registered with the selector (0: not registered)
        self.inbound: _Direction  # reads from this socket
        self.outbound: _Direction  # writes to this socket


class _Direction(_Timed):
    """One direction of one connection: a FIFO of ``(due, chunk)``; ``b""`` is the end of
    stream, ``None`` a reset. At most one heap entry at a time: ``timer`` is its due time.
    ``dead``: dst's peer is gone (a send or shutdown to it failed, or it sent a reset), so
    nothing is sent to it or read for it any more."""

    __slots__ = (
        "blocked",
        "dead",
        "done",
        "dst",
        "link",
        "queue",
        "queued",
        "reading",
        "src",
        "timer",
    )

    def __init__(self, link: _Link, src: _Leg, dst: _Leg) -> None:
        self.link = link
        self.src = src
        self.dst = dst
        self.queue: deque[tuple[float, bytes | memoryview | None]] = deque()
        self.queued = 0  # unsent bytes in the queue
        self.reading = True  # src has not ended (EOF, reset)
        self.blocked = False  # a send was cut short: wait until dst is writable
        self.done = False  # the end of stream has been forwarded
        self.dead = False
        self.timer: float | None = None
        src.inbound = self
        dst.outbound = self

    def wants_read(self) -> bool:
        return self.reading and not self.dead and self.queued <= QUEUE_LIMIT

    def push(self, due: float, data: bytes | None) -> None:
        """Queue a chunk (or the end of stream / a reset) for sending at ``due``."""
        if self.dead:
            return
        self.queue.append((due, data))
        if data:
            self.queued += len(data)
        if self.timer is None and not self.blocked and self.link.connected:
            self.arm(self.queue[0][0])

    def arm(self, due: float) -> None:
        self.timer = due
        self.link.loop.schedule(due, self)

    def fail(self) -> None:
        self.link.close()

    def live(self, when: float) -> bool:
        return self.timer == when and not self.dead and not self.link.closed

    def fire(self, when: float) -> None:
        if not self.live(when):
            return  # superseded, dead or closed
        self.timer = None
        self.flush()

    def die(self) -> None:
        """dst's peer is gone: drop what is queued for it, send it nothing more, and stop
        reading src for it. The link closes when the other direction, which then ends with a
        reset, has forwarded it (or at once if that direction is dead too)."""
        if self.dead:
            return
        self.dead = True
        self.queue.clear()
        self.queued = 0
        self.blocked = False
        self.timer = None
        link = self.link
        if self.dst.inbound.dead:
            link.close()
            return
        link.loop.update(self.dst)
        link.loop.update(self.src)

    def lost(self) -> None:
        """A send (or the half-close) to dst failed: dst's peer reset the connection. As if
        the reset had been read from dst: this direction dies, and the other one forwards a
        reset to its peer, after whatever it holds that is due earlier. What dst's peer sent
        before its reset and the loop has not read yet is read now (the connection is over:
        its end is there at once) so that it goes first; the reset follows it, due one delay
        after the end was read (one delay from now)."""
        back = self.dst.inbound
        was_reading = back.reading
        self.die()
        if self.link.closed:
            return
        if was_reading:
            while back.reading:  # read() queues a reset for the end, as src's peer is gone
                if not back.read():  # no end to read (not a reset after all): end it here
                    back.reading = False
                    back.push(time.monotonic() + self.link.loop.delay, None)
                    self.link.loop.update(self.dst)
                elif back.queued > QUEUE_LIMIT:
                    break  # the rest is read as the queue drains, down to the end
        else:  # dst's peer had ended (its FIN is queued or forwarded): the reset follows it
            back.push(time.monotonic() + self.link.loop.delay, None)

    def flush(self) -> None:
        """Send every chunk that is due, in order; then wait for the next one or for dst."""
        if self.dead:
            return
        link = self.link
        queue = self.queue
        sock = self.dst.sock
        now = time.monotonic()
        sent_any = False
        while queue:
            due, data = queue[0]
            if due > now:
                now = time.monotonic()
                if due > now:
                    break
            if data is None:  # a reset, forwarded as one
                link.close(abort=self.dst)
                return
            if not data:  # the end of stream: a half-close, the last item of the queue
                queue.popleft()
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    self.lost()
                    return
                self.done = True
                break
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.lost()
                return
            self.queued -= sent
            sent_any = True
            if sent < len(data):  # the kernel's buffer is full: keep the rest at the head
                queue[0] = (due, memoryview(data)[sent:])
                self.blocked = True
                link.loop.update(self.dst)
                link.loop.update(self.src)
                return
            queue.popleft()
        if self.blocked:
            self.blocked = False
            link.loop.update(self.dst)
        if sent_any:
            link.loop.update(self.src)  # back under the limit: read again
        if queue:
            self.arm(queue[0][0])
        elif self.done:
            link.direction_done()

    def read(self) -> bool:
        """Read one chunk from src (the socket is readable) and queue it; False if there was
        nothing to read. The end of stream of a leg found gone (``src.outbound.dead``) is
        queued as a reset."""
        sock = self.src.sock
        delay = self.link.loop.delay
        try:
            if self.link.loop.stamped:
                data, ancdata, _flags, _addr = sock.recvmsg(CHUNK, _ANC_SIZE)
                arrival = _arrival(ancdata)
            else:
                data = sock.recv(CHUNK)
                arrival = time.monotonic()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # reset: forwarded (as a reset) delay later; src's peer is gone
            self.reading = False
            self.push(time.monotonic() + delay, None)
            self.src.outbound.die()
            self.link.loop.update(self.src)
            return True
        if not data:
            self.reading = False
            self.push(arrival + delay, None if self.src.outbound.dead else data)
            self.link.loop.update(self.src)
            return True
        self.push(arrival + delay, data)
        if self.queued > QUEUE_LIMIT:
            self.link.loop.update(self.src)
        return True


class _Link(_Timed):
    """Both legs of one proxied connection; the upstream leg connects ``delay`` after accept."""

    __slots__ = (
        "addr_index",
        "client",
        "closed",
        "connected",
        "connecting",
        "deadline",
        "down",
        "expiry",
        "loop",
        "refused",
        "server",
        "up",
    )

    def __init__(self, loop: _Loop, client: socket.socket) -> None:
        self.loop = loop
        self.client = _Leg(client)
        family, kind, proto, _, _ = loop.addresses[0]
        self.server = _Leg(socket.socket(family, kind, proto))
        self.up = _Direction(self, self.client, self.server)
        self.down = _Direction(self, self.server, self.client)
        self.closed = False
        self.connecting = False
        self.connected = False
        self.refused = False  # no upstream connection: the client gets a reset at ``deadline``
        self.deadline = 0.0
        self.expiry: _Deadline | None = None  # the pending connect deadline's heap entry
        self.addr_index = 0

    def fail(self) -> None:
        self.close()

    def live(self, when: float) -> bool:
        if self.closed or self.connected:
            return False
        return when == self.deadline if self.refused or self.connecting else True

    def _cancel_expiry(self) -> None:
        if self.expiry is not None:
            self.expiry.link = None
            self.expiry = None

    def fire(self, when: float) -> None:
        """The connect time has come, the connect's deadline, or the refusal's due time."""
        if not self.live(when):
            return
        if self.refused:
            self.close(abort=self.client)
        elif not self.connecting:
            self._connect()
        else:
            self._connect_failed()

    def _connect(self) -> None:
        sock = self.server.sock
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(self.loop.addresses[self.addr_index][4])
        if err == 0:
            self._connected()
        elif err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
            self.connecting = True
            self.deadline = time.monotonic() + CONNECT_TIMEOUT
            self.expiry = _Deadline(self)
            self.loop.schedule(self.deadline, self.expiry)
            self.loop.update(self.server)
        else:
            self._connect_failed()

    def writable(self) -> None:
        """The upstream socket became writable while connecting: connected, or failed."""
        err = self.server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._connect_failed()
        else:
            self._connected()

    def _connected(self) -> None:
        self._cancel_expiry()
        self.connecting = False
        self.connected = True
        _enable_timestamps(self.server.sock)
        self.loop.update(self.server)
        self.up.flush()  # whatever the client sent meanwhile, as far as it is due

    def _connect_failed(self) -> None:
        """Try the next resolved address (as ``socket.create_connection``), else give up."""
        self._cancel_expiry()
        self.connecting = False
        self.loop.unregister(self.server)
        with contextlib.suppress(OSError):
            self.server.sock.close()
        self.addr_index += 1
        if self.addr_index >= len(self.loop.addresses):
            # As on a real link, the client learns of it one delay later: a reset.
            self.refused = True
            self.deadline = time.monotonic() + self.loop.delay
            self.loop.schedule(self.deadline, self)
            return
        family, kind, proto, _, _ = self.loop.addresses[self.addr_index]
        self.server.sock = socket.socket(family, kind, proto)
        self._connect()

    def direction_done(self) -> None:
        if self.up.done and self.down.done:
            self.close()

    def close(self, abort: _Leg | None = None) -> None:
        """Close both legs (idempotent); ``abort``'s peer gets a reset instead of a FIN."""
        if self.closed:
            return
        self.closed = True
        self._cancel_expiry()
        self.loop.links.discard(self)
        for direction in (self.up, self.down):  # free what was queued now, not when collected
            direction.queue.clear()
            direction.queued = 0
        for leg in (self.client, self.server):
            self.loop.unregister(leg)
            sock = leg.sock
            if leg is abort:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_LINGER)
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class _Loop:
    """The event loop of one :class:`LatencyProxy`: its listener, its connections, its heap."""

    def __init__(
        self,
        listener: socket.socket,
        addresses: list[tuple[Any, ...]],
        delay: float,
        spin: float,
        proxy: LatencyProxy,
    ) -> None:
        self.listener = listener
        self.addresses = addresses
        self.delay = delay
        self.spin = spin
        self.proxy = proxy
        self.stamped = _SO_TIMESTAMPNS is not None
        self.links: set[_Link] = set()
        self.heap: list[tuple[float, int, _Timed]] = []
        self._seq = 0
        self.stopping = False
        self.listening = False
        self._relisten = _Relisten(self)
        self.timer: _TimerFD | None = None
        self.selector = selectors.DefaultSelector()
        try:
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            self.selector.close()
            raise
        try:
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self.timer = _TimerFD.create()
            listener.setblocking(False)
            self.listen()
            self.selector.register(self._wake_r, _READ, None)
            if self.timer is not None:
                self.selector.register(self.timer.fd, _READ, None)
        except BaseException:  # close what was made; the caller closes the listener
            self._close_own()
            raise

    # -- registrations -------------------------------------------------------------------

    def listen(self) -> None:
        """Watch the listener (again)."""
        if not self.listening and not self.stopping:
            self.selector.register(self.listener, _READ, None)
            self.listening = True

    def schedule(self, when: float, target: _Timed) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (when, self._seq, target))

    def update(self, leg: _Leg) -> None:
        """Register ``leg`` for what its two directions need now (nothing: unregistered)."""
        link = leg.inbound.link
        if link.closed:
            return
        mask = 0
        if leg is link.server and link.connecting:
            mask = _WRITE
        elif leg is link.client or link.connected:
            if leg.inbound.wants_read():
                mask |= _READ
            if leg.outbound.blocked:
                mask |= _WRITE
        if mask == leg.mask:
            return
        if leg.mask == 0:
            self.selector.register(leg.sock, mask, leg)
        elif mask == 0:
            self.selector.unregister(leg.sock)
        else:
            self.selector.modify(leg.sock, mask, leg)
        leg.mask = mask

    def unregister(self, leg: _Leg) -> None:
        if leg.mask:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(leg.sock)
            leg.mask = 0

    def wake(self) -> None:
        """Interrupt the loop's wait (from another thread)."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self.stopping:
                for key, events in self.selector.select(self._timeout()):
                    leg = key.data
                    if isinstance(leg, _Leg):
                        self._ready(leg, events)
                    elif key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    elif self.timer is not None:
                        self.timer.expired()
                self._fire_due()
        finally:
            self._close_all()

    def _timeout(self) -> float | None:
        """How long the selector may wait: until the earliest timed event, ``spin`` early."""
        heap = self.heap
        while heap and not heap[0][2].live(heap[0][0]):  # superseded, closed: no wake-up
            heapq.heappop(heap)
        if not heap:
            if self.timer is not None and self.timer.pending:
                self.timer.clear()  # else it would wake the loop again and again
            return None
        due = heap[0][0]
        wake = due - self.spin
        now = time.monotonic()
        if wake <= now:  # spinning (or already due): poll
            if self.timer is not None and self.timer.pending:
                self.timer.clear()  # no use reporting it at every turn
            if now < due < now + _SPIN_TIGHT:  # the last few µs: a turn of the loop is longer
                target = heapq.heappop(heap)[2]
                while time.monotonic() < due:
                    pass
                self._fire(target, due)  # now, not after one more poll
            return 0.0
        if self.timer is not None:
            self.timer.arm(wake)
            return None
        left = wake - now
        if left >= 0.001:
            return left - 0.001  # epoll rounds up to whole ms: never wake late
        time.sleep(left)  # the last fraction of a ms (nanosleep)
        return 0.0

    def _fire_due(self) -> None:
        heap = self.heap
        now = time.monotonic()
        while heap:
            when = heap[0][0]
            if when > now:
                now = time.monotonic()
                if when > now:
                    return
            self._fire(heapq.heappop(heap)[2], when)

    @staticmethod
    def _fire(target: _Timed, when: float) -> None:
        try:
            target.fire(when)
        except Exception:  # a bug or an unforeseen error: lose one connection, not all
            traceback.print_exc()
            target.fail()

    def _ready(self, leg: _Leg, events: int) -> None:
        link = leg.inbound.link
        if link.closed:  # by an earlier event of the same batch
            return
        try:
            if events & _READ:
                leg.inbound.read()
            if events & _WRITE and not link.closed:
                if link.connecting and leg is link.server:
                    link.writable()
                elif leg.outbound.blocked:
                    leg.outbound.flush()
        except Exception:  # a bug or an unforeseen error: lose one connection, not all
            traceback.print_exc()
            link.close()

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                client, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_STARVED:
                    # The connection stays in the backlog and the (level-triggered) listener
                    # readable: stop watching it for a while rather than spin.
                    self.selector.unregister(self.listener)
                    self.listening = False
                    self.schedule(time.monotonic() + _RELISTEN_AFTER, self._relisten)
                return  # an aborted handshake: the next connection wakes the loop again
            accepted = time.monotonic()
            client.setblocking(False)
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.stamped:
                _enable_timestamps(client)
            try:
                link = _Link(self, client)  # creates the upstream socket
            except OSError:  # out of descriptors: refuse this one, keep serving the others
                client.close()
                continue
            self.links.add(link)
            self.proxy.accepted += 1
            self.update(link.client)
            # The server hears of the connection half a round trip after the client's connect().
            self.schedule(accepted + self.delay, link)

    def _close_all(self) -> None:
        for link in list(self.links):
            link.close()
        with contextlib.suppress(OSError):
            self.listener.close()
        self._close_own()
        self.heap.clear()

    def _close_own(self) -> None:
        """Close what the loop itself created (not the listener)."""
        for sock in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()
        if self.timer is not None:
            self.timer.close()
        self.selector.close()


class LatencyProxy:
    """Forward ``listen_host:port`` to ``upstream`` with ``delay`` seconds each way.

    A context manager: listening after ``__enter__`` (``port`` is then known), closed with
    every connection on ``__exit__``. Port 0 (the default) picks a free port. One thread (the
    event loop) serves every connection.

    ``spin``: the loop wakes ``spin`` seconds before a chunk is due and polls (busy) until it
    is, which cuts the lateness from ~0.1 ms (timer wake-up on a VM) to a few microseconds at
    the price of up to ``spin`` CPU seconds per chunk. Zero (the default) is right for load
    tests; accuracy measurements use ~0.0003.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        delay: float,
        host: str = HOST,
        port: int = 0,
        spin: float = 0.0,
    ) -> None:
        if delay < 0 or spin < 0:
            raise ValueError("delay and spin must be >= 0")
        self.upstream = upstream
        self.delay = delay
        self.spin = spin
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._loop: _Loop | None = None
        self._thread: threading.Thread | None = None
        self.accepted = 0

    @property
    def port(self) -> int:
        """The port the proxy listens on (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("proxy not started")
        return self._port

    def start(self) -> Self:
        """Resolve the upstream, bind, listen and start the event loop in a daemon thread.

        Raises RuntimeError if the proxy is running already (stop it first)."""
        if self._loop is not None:
            raise RuntimeError("proxy already started")
        host, port = self.upstream
        addresses = [tuple(a) for a in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self._requested_port))
            listener.listen(1024)
            self._port = int(listener.getsockname()[1])
            loop = _Loop(listener, addresses, self.delay, self.spin, self)
        except BaseException:
            listener.close()
            self._port = None
            raise
        thread = threading.Thread(target=loop.run, name="proxy-loop", daemon=True)
        try:
            thread.start()
        except BaseException:
            loop._close_all()
            self._port = None
            raise
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Stop accepting, close every open connection and join the loop's thread."""
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        loop.stopping = True
        loop.wake()
        if thread is not None:
            thread.join(timeout=5)
            if thread.is_alive():
                return  # still closing: a second stop() waits again; start() refuses
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


@contextlib.contextmanager
def spawn_proxies(
    upstreams: Sequence[tuple[str, int]],
    delay: float,
    duration: float = 3600.0,
    startup_timeout: float = 10.0,
    spin: float = 0.0,
) -> Iterator[list[int]]:
    """Run the proxy CLI in a child process, one listening port per upstream.

    Yields the ports (same order as ``upstreams``); the child is terminated on exit and
    stops by itself after ``duration`` seconds in any case.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--delay", repr(delay)]
    cmd += ["--duration", repr(duration), "--spin", repr(spin)]
    for host, port in upstreams:
        cmd += ["--upstream", f"{host}:{port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        stdout = proc.stdout
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(startup_timeout)
        if not ready or not ready[0].strip():
            raise RuntimeError(f"latency proxy did not start (exit code {proc.poll()})")
        ports = [int(p) for p in json.loads(ready[0])["ports"]]
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: start one proxy per ``--upstream``; print the ports as JSON; run until told."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--upstream",
        action="append",
        type=_parse_hostport,
        required=True,
        metavar="HOST:PORT",
        help="where to forward (repeat for several; each gets its own listening port)",
    )
    parser.add_argument("--delay", type=float, default=0.02, help="one-way delay, seconds")
    parser.add_argument(
        "--spin",
        type=float,
        default=0.0,
        help="seconds of busy polling before each chunk is due (precision vs CPU; default 0)",
    )
    parser.add_argument("--listen", default=HOST, help=f"address to listen on (default {HOST})")
    parser.add_argument(
        "--duration", type=float, default=600.0, help="stop after this many seconds (default 600)"
    )
    args = parser.parse_args(argv)
    # One event-loop thread per upstream: a loop woken by its timer must not wait for another
    # loop's 5 ms GIL slice, so keep the slice short.
    sys.setswitchinterval(0.0005)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    proxies = [
        LatencyProxy(up, args.delay, host=args.listen, spin=args.spin).start()
        for up in args.upstream
    ]
    try:
        print(json.dumps({"ports": [p.port for p in proxies], "delay": args.delay}), flush=True)
        stop.wait(args.duration)
    finally:
        for proxy in proxies:
            proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
