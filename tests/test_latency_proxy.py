"""Behaviour of the benchmarks' latency proxy: it really delays, and only delays.

These are behaviour tests of a tool, not benchmarks: lower bounds are exact (the proxy sleeps
until a chunk is due, so an echo can never come back early), upper bounds are generous so a
loaded two-core CI machine does not make them flaky.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from latency_proxy import LatencyProxy, spawn_proxies

DELAY = 0.15  # one way; large against scheduler noise, small enough to keep the tests quick
MARGIN = 0.5  # allowed lateness on a loaded machine (the proxy is usually < 1 ms late)


class EchoServer:
    """Echoes whatever it receives; half-closes when the client does."""

    def __init__(self) -> None:
        # A backlog for many connections made at once (the default 128 would drop SYNs).
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=2)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_echo_takes_one_round_trip(echo: EchoServer) -> None:
    with LatencyProxy(("127.0.0.1", echo.port), DELAY) as proxy, _connect(proxy.port) as sock:
        start = time.monotonic()
        sock.sendall(b"ping\r\n")
        assert _read_exactly(sock, 6) == b"ping\r\n"
        elapsed = time.monotonic() - start
    assert elapsed >= 2 * DELAY
    assert elapsed < 2 * DELAY + MARGIN


def test_every_round_trip_is_delayed(echo: EchoServer) -> None:
    """The second exchange on a connection is delayed as much as the first."""
    with LatencyProxy(("127.0.0.1", echo.port), DELAY) as proxy, _connect(proxy.port) as sock:
        for word in (b"one\r\n", b"two\r\n"):
            start = time.monotonic()
            sock.sendall(word)
            assert _read_exactly(sock, len(word)) == word
            elapsed = time.monotonic() - start
            assert 2 * DELAY <= elapsed < 2 * DELAY + MARGIN


def test_chunks_are_delayed_not_throttled(echo: EchoServer) -> None:
    """Four chunks sent 20 ms apart come back about 2 x delay after each was sent, not one
    round trip after another (which would take 4 x 2 x delay)."""
    gap = 0.02
    with LatencyProxy(("127.0.0.1", echo.port), DELAY) as proxy, _connect(proxy.port) as sock:
        start = time.monotonic()
        for i in range(4):
            sock.sendall(b"chunk%d\r\n" % i)
            time.sleep(gap)
        assert _read_exactly(sock, 4 * 8) == b"".join(b"chunk%d\r\n" % i for i in range(4))
        elapsed = time.monotonic() - start
    assert elapsed >= 2 * DELAY + 3 * gap
    assert elapsed < 4 * 2 * DELAY  # throttled forwarding would need at least this


def test_end_of_stream_is_delayed_and_forwarded(echo: EchoServer) -> None:
    with LatencyProxy(("127.0.0.1", echo.port), DELAY) as proxy, _connect(proxy.port) as sock:
        start = time.monotonic()
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(10) == b""  # the echo server half-closed in turn
        elapsed = time.monotonic() - start
    assert 2 * DELAY <= elapsed < 2 * DELAY + MARGIN


def test_server_speaking_first_takes_one_round_trip_after_connect() -> None:
    """A greeting reaches the client a full round trip after connect() returned: the
    upstream connection is opened half a round trip late, as on a real link."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def greet() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"+OK hello\r\n")
            conn.recv(10)

    thread = threading.Thread(target=greet, daemon=True)
    thread.start()
    try:
        upstream = ("127.0.0.1", server.getsockname()[1])
        with LatencyProxy(upstream, DELAY) as proxy:
            sock = _connect(proxy.port)
            start = time.monotonic()
            with sock:
                assert _read_exactly(sock, 11) == b"+OK hello\r\n"
                elapsed = time.monotonic() - start
        assert 2 * DELAY - 0.01 <= elapsed < 2 * DELAY + MARGIN
    finally:
        thread.join(timeout=5)
        server.close()


def test_cli_in_a_child_process(echo: EchoServer) -> None:
    with (
        spawn_proxies([("127.0.0.1", echo.port)], DELAY, duration=60) as ports,
        _connect(ports[0]) as sock,
    ):
        start = time.monotonic()
        sock.sendall(b"child\r\n")
        assert _read_exactly(sock, 7) == b"child\r\n"
        elapsed = time.monotonic() - start
    assert 2 * DELAY <= elapsed < 2 * DELAY + MARGIN


def test_zero_delay_passes_data_through(echo: EchoServer) -> None:
    with LatencyProxy(("127.0.0.1", echo.port), 0.0) as proxy, _connect(proxy.port) as sock:
        payload = bytes(range(256)) * 1024
        sock.sendall(payload)
        assert _read_exactly(sock, len(payload)) == payload


def test_spin_wakes_early_but_never_sends_early(echo: EchoServer) -> None:
    with (
        LatencyProxy(("127.0.0.1", echo.port), DELAY, spin=0.002) as proxy,
        _connect(proxy.port) as sock,
    ):
        for word in (b"one\r\n", b"two\r\n"):
            start = time.monotonic()
            sock.sendall(word)
            assert _read_exactly(sock, len(word)) == word
            elapsed = time.monotonic() - start
            assert 2 * DELAY <= elapsed < 2 * DELAY + MARGIN


def test_data_sent_before_the_upstream_connect_counts_from_its_own_arrival(
    echo: EchoServer,
) -> None:
    """Sent right after connect(), a line is held until the upstream connection exists (one
    delay later) and then forwarded at once: due one delay after *it* arrived, not one delay
    after the upstream connection was made (that would be three delays for the echo)."""
    with LatencyProxy(("127.0.0.1", echo.port), DELAY) as proxy, _connect(proxy.port) as sock:
        start = time.monotonic()
        sock.sendall(b"early\r\n")
        assert _read_exactly(sock, 7) == b"early\r\n"
        elapsed = time.monotonic() - start
    assert 2 * DELAY <= elapsed < 3 * DELAY


class SlowSink:
    """Accepts one connection, reads nothing for ``pause`` seconds (so the proxy's sends stop
    short and wait for the socket to drain), then reads to the end and answers with the
    SHA-256 of everything it read."""

    def __init__(self, pause: float) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.pause = pause
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            time.sleep(self.pause)
            digest = hashlib.sha256()
            while data := conn.recv(1 << 20):
                digest.update(data)
            conn.sendall(digest.hexdigest().encode())

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=10)


def test_large_transfer_to_a_slow_reader_arrives_whole_and_in_order() -> None:
    """16 MiB to a server that does not read for a while: more than the kernel buffers and
    the proxy's 1 MiB queue limit hold, so sends are cut short (EAGAIN) and reading the
    client stops (back-pressure); every byte still arrives, once and in order."""
    payload = random.Random(1).randbytes(16 << 20)
    sink = SlowSink(pause=1.0)
    try:
        with (
            LatencyProxy(("127.0.0.1", sink.port), 0.02) as proxy,
            _connect(proxy.port) as sock,
        ):
            sock.settimeout(30)
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            answer = _read_exactly(sock, 64)
    finally:
        sink.close()
    assert answer == hashlib.sha256(payload).hexdigest().encode()


def test_large_echo_both_ways_at_once(echo: EchoServer) -> None:
    """Both directions full at the same time (the client writes 8 MiB while reading the echo
    in another thread): partial sends on both legs, nothing lost or reordered."""
    payload = random.Random(2).randbytes(8 << 20)
    received: list[bytes] = []
    with LatencyProxy(("127.0.0.1", echo.port), 0.02) as proxy, _connect(proxy.port) as sock:
        sock.settimeout(30)
        reader = threading.Thread(
            target=lambda: received.append(_read_exactly(sock, len(payload))), daemon=True
        )
        reader.start()
        sock.sendall(payload)
        reader.join(timeout=30)
    assert received and received[0] == payload


def test_many_concurrent_connections_on_one_thread(echo: EchoServer) -> None:
    """200 connections at once are all delayed (not queued behind each other) and served by
    the proxy's one event-loop thread."""
    count = 200
    with LatencyProxy(("127.0.0.1", echo.port), DELAY) as proxy:
        socks = [_connect(proxy.port) for _ in range(count)]
        try:
            start = time.monotonic()
            for i, sock in enumerate(socks):
                sock.sendall(b"%05d\r\n" % i)
            proxy_threads = [t for t in threading.enumerate() if t.name.startswith("proxy")]
            for i, sock in enumerate(socks):
                assert _read_exactly(sock, 7) == b"%05d\r\n" % i
            elapsed = time.monotonic() - start
        finally:
            for sock in socks:
                sock.close()
    assert len(proxy_threads) == 1
    assert 2 * DELAY <= elapsed < 2 * DELAY + MARGIN


def test_upstream_reset_reaches_the_client_a_delay_later() -> None:
    """The server resets the connection as soon as it is made (one delay after the client's
    connect()); the client sees the reset one more delay later."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def reset() -> None:
        conn, _ = server.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    thread = threading.Thread(target=reset, daemon=True)
    thread.start()
    try:
        with LatencyProxy(("127.0.0.1", server.getsockname()[1]), DELAY) as proxy:
            sock = _connect(proxy.port)
            start = time.monotonic()
            with sock, pytest.raises(ConnectionResetError):
                sock.recv(10)
            elapsed = time.monotonic() - start
        assert 2 * DELAY - 0.01 <= elapsed < 2 * DELAY + MARGIN
    finally:
        thread.join(timeout=5)
        server.close()


def test_refused_upstream_resets_the_client_a_delay_later() -> None:
    """Nothing listens upstream: the proxy's own connect (one delay after accept) is refused,
    and the client's connection is reset one more delay later, a round trip after connect()
    as a refusal would reach it over a real link."""
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with LatencyProxy(("127.0.0.1", port), DELAY) as proxy, _connect(proxy.port) as sock:
        start = time.monotonic()
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        elapsed = time.monotonic() - start
    assert 2 * DELAY - 0.01 <= elapsed < 2 * DELAY + MARGIN


def test_stop_closes_open_connections_and_joins_the_thread(echo: EchoServer) -> None:
    proxy = LatencyProxy(("127.0.0.1", echo.port), DELAY).start()
    with _connect(proxy.port) as sock:
        sock.sendall(b"hello\r\n")
        assert _read_exactly(sock, 7) == b"hello\r\n"
        start = time.monotonic()
        proxy.stop()
        stopped = time.monotonic() - start
        try:
            assert sock.recv(10) == b""
        except ConnectionResetError:
            pass
    assert stopped < 1.0
    assert not [t for t in threading.enumerate() if t.name.startswith("proxy")]
    proxy.stop()  # idempotent
