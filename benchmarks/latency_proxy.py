"""A latency-injecting TCP proxy for 127.0.0.1: every byte arrives a fixed one-way delay later.

Model
-----
Each direction of each connection has a reader and a writer thread. The reader stamps every
chunk it receives with ``arrival + delay`` and queues it; the writer sleeps until that moment
and sends the chunk. Chunks never wait for each other's delay, so the proxy *delays* data
without *throttling* it: a stream sent in ten pieces 1 ms apart leaves the proxy in ten pieces
1 ms apart, ``delay`` later. An end of stream (FIN) is delayed the same way and forwarded as a
half-close, so a server's close reaches the client ``delay`` after the server closed.

The upstream connection is opened ``delay`` after the proxy accepted the client: on a real
path the server learns about a connection half a round trip after the client's ``connect()``
returns, so everything the server sends first (a POP3 greeting) reaches the client one full
round trip after ``connect()`` returned, as it would over a real link. The TCP handshake with
the proxy itself is done by the kernel and cannot be delayed from user space: **the connect
phase gets no added delay** (0 round trips); every later exchange gets ``2 x delay`` per round
trip.

Timing uses ``time.monotonic()``, the kernel's receive timestamp of each chunk
(``SO_TIMESTAMPNS``, so the reader's own wake-up time is not added) and ``time.sleep()``
(nanosleep: ~0.1 ms late on this VM; ``spin`` trades CPU for microsecond precision).
TCP_NODELAY is set on both legs, and chunks are forwarded as received.

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
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

__all__ = ["LatencyProxy", "main", "spawn_proxies"]

HOST = "127.0.0.1"
CHUNK = 65536


# Kernel receive timestamps: Linux's SO_TIMESTAMPNS (35) is not exported by the socket module.
_SO_TIMESTAMPNS: int | None = getattr(
    socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None
)
_ANC_SIZE = socket.CMSG_SPACE(16)


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


class _Pipe:
    """One direction of one connection: read, stamp, queue; sleep until due, send."""

    def __init__(self, src: socket.socket, delay: float, spin: float, name: str) -> None:
        self.src = src
        self.delay = delay
        self.spin = spin
        self.name = name
        self.queue: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def read_loop(self) -> None:
        """Stamp every chunk with its due time; an empty chunk marks the end of stream.

        The due time counts from when the kernel received the data (``SO_TIMESTAMPNS``)
        where available, not from when this thread woke up to read it: waking a thread
        takes 0.05-0.15 ms on a VM, which would otherwise be added to every hop.
        """
        stamped = _enable_timestamps(self.src)
        try:
            while True:
                if stamped:
                    data, ancdata, _flags, _addr = self.src.recvmsg(CHUNK, _ANC_SIZE)
                    arrival = _arrival(ancdata)
                else:
                    data = self.src.recv(CHUNK)
                    arrival = time.monotonic()
                self.queue.put((arrival + self.delay, data))
                if not data:
                    return
        except OSError:
            self.queue.put((time.monotonic() + self.delay, b""))

    def write_loop(self, dst: socket.socket, closing: threading.Event) -> None:
        """Send each chunk at its due time; forward the end of stream as a half-close."""
        while True:
            due, data = self.queue.get()
            wait = due - time.monotonic() - self.spin
            if wait > 0:
                time.sleep(wait)  # wakes ~0.1 ms late on a VM: spin through the rest
            while time.monotonic() < due:
                os.sched_yield()  # releases the GIL
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                closing.set()
                return


class _Link:
    """Both directions of one proxied connection (four threads, all daemons)."""

    def __init__(
        self, client: socket.socket, upstream: tuple[str, int], delay: float, spin: float
    ) -> None:
        self.client = client
        self.upstream_addr = upstream
        self.delay = delay
        self.spin = spin
        self.accepted = time.monotonic()
        self.server: socket.socket | None = None
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._done = 0
        self.up = _Pipe(client, delay, spin, "c2s")
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the client reader and the thread that connects upstream, then forwards."""
        self._spawn(self.up.read_loop, "c2s-read")
        self._spawn(self._connect_and_forward, "c2s-write")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"proxy-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _connect_and_forward(self) -> None:
        # The server hears of the connection half a round trip after the client's connect().
        wait = self.accepted + self.delay - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            server = socket.create_connection(self.upstream_addr, timeout=10)
            server.settimeout(None)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            self.close()
            return
        self.server = server
        down = _Pipe(server, self.delay, self.spin, "s2c")
        self._spawn(down.read_loop, "s2c-read")
        self._spawn(lambda: self._finish(down), "s2c-write")
        self.up.write_loop(server, self.closing)
        self._maybe_close()

    def _finish(self, down: _Pipe) -> None:
        down.write_loop(self.client, self.closing)
        self._maybe_close()

    def _maybe_close(self) -> None:
        # Each writer calls this once when its direction is done; the second one closes.
        with self._lock:
            self._done += 1
            last = self._done >= 2 or self.closing.is_set()
        if last:
            self.close()

    def close(self) -> None:
        """Close both legs (idempotent); blocked readers wake up with an error or EOF."""
        self.closing.set()
        for sock in (self.client, self.server):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class LatencyProxy:
    """Forward ``listen_host:port`` to ``upstream`` with ``delay`` seconds each way.

    A context manager: listening after ``__enter__`` (``port`` is then known), closed with
    every connection on ``__exit__``. Port 0 (the default) picks a free port.

    ``spin``: the last ``spin`` seconds before a chunk is due are spent yielding the CPU in a
    loop instead of sleeping, which cuts the lateness from ~0.1 ms (timer wake-up on a VM)
    to a few microseconds at the price of up to ``spin`` CPU seconds per chunk. Zero (the
    default) is right for load tests; accuracy measurements use ~0.0003.
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
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.accepted = 0

    @property
    def port(self) -> int:
        """The port the proxy listens on (after :meth:`start`)."""
        if self._listener is None:
            raise RuntimeError("proxy not started")
        return int(self._listener.getsockname()[1])

    def start(self) -> Self:
        """Bind, listen and start accepting in a daemon thread."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        listener.listen(1024)
        listener.settimeout(0.2)  # the accept loop checks for stop() this often
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, self.upstream, self.delay, self.spin)
            with self._lock:
                self._links = [lk for lk in self._links if not lk.closing.is_set()]
                self._links.append(link)
                self.accepted += 1
            link.start()

    def stop(self) -> None:
        """Stop accepting and close every open connection."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

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
        help="seconds of busy-yielding before each chunk is due (precision vs CPU; default 0)",
    )
    parser.add_argument("--listen", default=HOST, help=f"address to listen on (default {HOST})")
    parser.add_argument(
        "--duration", type=float, default=600.0, help="stop after this many seconds (default 600)"
    )
    args = parser.parse_args(argv)
    # Wake-ups must not wait for another thread's 5 ms GIL slice: keep the slice short.
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
