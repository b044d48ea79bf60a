"""Behaviour of the benchmarks' latency proxy: it really delays, and only delays.

These are behaviour tests of a tool, not benchmarks: lower bounds are exact (the proxy sleeps
until a chunk is due, so an echo can never come back early), upper bounds are generous so a
loaded two-core CI machine does not make them flaky.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import latency_proxy
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


@pytest.mark.parametrize("spin", [0.0, 0.002], ids=["sleep", "spin"])
def test_every_round_trip_is_delayed(echo: EchoServer, spin: float) -> None:
    """The second exchange on a connection is delayed as much as the first; ``spin`` wakes
    early but never sends early."""
    with (
        LatencyProxy(("127.0.0.1", echo.port), DELAY, spin=spin) as proxy,
        _connect(proxy.port) as sock,
    ):
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


@contextlib.contextmanager
def _serving_one(handle: Callable[[socket.socket], None]) -> Iterator[tuple[str, int]]:
    """An upstream on 127.0.0.1 that accepts one connection and hands it to ``handle`` in a
    thread; yields its address, then waits for the thread and closes the listener."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def run() -> None:
        conn, _ = server.accept()
        handle(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", server.getsockname()[1])
    finally:
        thread.join(timeout=5)
        server.close()


def test_server_speaking_first_takes_one_round_trip_after_connect() -> None:
    """A greeting reaches the client a full round trip after connect() returned: the
    upstream connection is opened half a round trip late, as on a real link."""

    def greet(conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"+OK hello\r\n")
            conn.recv(10)

    with _serving_one(greet) as upstream, LatencyProxy(upstream, DELAY) as proxy:
        sock = _connect(proxy.port)
        start = time.monotonic()
        with sock:
            assert _read_exactly(sock, 11) == b"+OK hello\r\n"
            elapsed = time.monotonic() - start
    assert 2 * DELAY - 0.01 <= elapsed < 2 * DELAY + MARGIN


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
    with _serving_one(_linger_reset) as upstream, LatencyProxy(upstream, DELAY) as proxy:
        sock = _connect(proxy.port)
        start = time.monotonic()
        with sock, pytest.raises(ConnectionResetError):
            sock.recv(10)
        elapsed = time.monotonic() - start
    assert 2 * DELAY - 0.01 <= elapsed < 2 * DELAY + MARGIN


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


def _linger_reset(sock: socket.socket) -> None:
    """Close ``sock`` with a reset (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("ending", ["reset", "fin"])
def test_failed_send_upstream_keeps_what_the_server_said(ending: str) -> None:
    """The server answers and goes away (a reset, or a close whose reset comes when the proxy
    sends it more): the proxy's send to it fails, and the answer queued for the client (due
    later) still reaches the client, at its due time, before the end of the connection; a
    failed send does not close both legs at once."""
    delay = 0.2

    def answer_and_go(conn: socket.socket) -> None:  # one delay after the client's connect()
        conn.sendall(b"-ERR bye\r\n")
        if ending == "reset":
            _linger_reset(conn)
        else:
            conn.close()

    with _serving_one(answer_and_go) as upstream, LatencyProxy(upstream, delay) as proxy:
        sock = _connect(proxy.port)
        start = time.monotonic()
        with sock:
            time.sleep(0.1)
            sock.sendall(b"A\r\n")  # due upstream at ~0.3 s: after the server went away
            time.sleep(0.05)
            sock.sendall(b"B\r\n")  # ~0.35 s: the send that fails after a FIN
            received = b""
            ended = ""
            try:
                while chunk := sock.recv(100):
                    received += chunk
                ended = "eof"
            except ConnectionResetError:
                ended = "reset"
            elapsed = time.monotonic() - start
    assert received == b"-ERR bye\r\n"
    assert ended == ("reset" if ending == "reset" else "eof")
    assert 2 * delay - 0.01 <= elapsed < 2 * delay + MARGIN


def test_failed_send_downstream_keeps_what_the_client_said() -> None:
    """The mirror case: the server streams, the client sends a last line and resets. The
    proxy's sends to the client fail from then on; the line still reaches the server one
    delay after the client sent it, followed by a reset (not an early FIN without it)."""
    delay = 0.1
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    received: list[bytes] = []
    ended: list[str] = []

    def stream() -> None:
        conn, _ = server.accept()
        conn.setblocking(False)
        got = b""
        outcome = "timeout"
        deadline = time.monotonic() + 3
        with conn:
            while time.monotonic() < deadline:
                try:  # read first: a reset that came with the last data fails a send
                    chunk = conn.recv(100)
                except BlockingIOError:
                    chunk = None
                except OSError:
                    outcome = "reset"
                    break
                if chunk == b"":
                    outcome = "eof"
                    break
                if chunk:
                    got += chunk
                try:
                    conn.send(b"." * 100)
                except BlockingIOError:
                    pass
                except OSError:
                    outcome = "reset"
                    break
                time.sleep(0.01)
        received.append(got)
        ended.append(outcome)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        with LatencyProxy(("127.0.0.1", server.getsockname()[1]), delay) as proxy:
            sock = _connect(proxy.port)
            time.sleep(3 * delay)  # the stream reaches the client
            sock.sendall(b"QUIT\r\n")
            _linger_reset(sock)
            thread.join(timeout=5)
    finally:
        server.close()
    assert received == [b"QUIT\r\n"]
    assert ended == ["reset"]


_EMFILE_CHILD = """
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
from latency_proxy import LatencyProxy
proxy = LatencyProxy(("127.0.0.1", 9), 0.02).start()
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
hog = []
try:
    while True:
        hog.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
print(proxy.port, flush=True)
sys.stdin.readline()  # the parent has connected: the connection waits in the backlog
cpu = time.process_time()
time.sleep(1.0)
cpu = time.process_time() - cpu
accepted_while_out = proxy.accepted
for fd in hog:
    os.close(fd)
deadline = time.monotonic() + 5
while proxy.accepted == accepted_while_out and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({"cpu": cpu, "out": accepted_while_out, "after": proxy.accepted}), flush=True)
proxy.stop()
"""


def test_out_of_descriptors_does_not_spin() -> None:
    """With no descriptor left, accept() fails while the connection stays in the backlog (the
    listener stays readable): the loop stops watching the listener for a while instead of
    spinning at 100% CPU, and accepts the connection once descriptors are free again."""
    benchmarks = str(Path(latency_proxy.__file__).resolve().parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", _EMFILE_CHILD, benchmarks],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            result = json.loads(proc.stdout.readline())
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert result["out"] == 0
    assert result["after"] == 1
    assert result["cpu"] < 0.2  # spinning: ~1 s (as much of a core as it gets)


def test_stale_connect_deadlines_neither_spin_nor_pin_closed_links(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each connection's connect deadline is a heap entry; once the connect succeeded and the
    connection closed, it must neither hold the closed connection nor, with ``spin``, make
    the idle loop busy-poll before its (now meaningless) due time."""
    monkeypatch.setattr(latency_proxy, "CONNECT_TIMEOUT", 0.5)  # come up during the test
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    server.settimeout(10)

    def close_each() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                conn.close()

    thread = threading.Thread(target=close_each, daemon=True)
    thread.start()
    try:
        with LatencyProxy(("127.0.0.1", server.getsockname()[1]), 0.02, spin=0.2) as proxy:
            loop = proxy._loop
            assert loop is not None
            for _ in range(5):
                with _connect(proxy.port) as sock:
                    assert sock.recv(1) == b""  # the server's close, a round trip later
            limit = time.monotonic() + 5
            while loop.links and time.monotonic() < limit:
                time.sleep(0.01)
            time.sleep(0.05)
            assert not loop.links
            pinned = [
                target
                for _, _, target in list(loop.heap)
                if isinstance(target, latency_proxy._Link) and target.closed
            ]
            assert not pinned
            cpu = time.process_time()
            time.sleep(0.8)  # every deadline (connect + 0.5 s) comes up
            cpu = time.process_time() - cpu
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux)
        server.close()
        thread.join(timeout=5)
    assert cpu < 0.1  # spinning before each dead entry: ~0.4 s


def test_start_twice_is_refused_and_start_after_stop_works(echo: EchoServer) -> None:
    proxy = LatencyProxy(("127.0.0.1", echo.port), 0.01).start()
    try:
        with pytest.raises(RuntimeError):
            proxy.start()  # would orphan the running loop
    finally:
        proxy.stop()
    with proxy, _connect(proxy.port) as sock:  # __enter__ starts it again
        sock.sendall(b"again\r\n")
        assert _read_exactly(sock, 7) == b"again\r\n"


def test_a_failed_start_leaks_no_descriptor(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise OSError("no timer")

    monkeypatch.setattr(latency_proxy._TimerFD, "create", staticmethod(refuse))
    before = len(list(Path("/proc/self/fd").iterdir()))
    with pytest.raises(OSError, match="no timer"):
        LatencyProxy(("127.0.0.1", 9), 0.01).start()
    assert len(list(Path("/proc/self/fd").iterdir())) <= before
