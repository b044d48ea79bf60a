"""Behaviour of the benchmarks' latency proxy: it really delays, and only delays.

These are behaviour tests of a tool, not benchmarks: lower bounds are exact (the proxy sleeps
until a chunk is due, so an echo can never come back early), upper bounds are generous so a
loaded two-core CI machine does not make them flaky.
"""

from __future__ import annotations

import socket
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
        self.sock = socket.create_server(("127.0.0.1", 0))
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
