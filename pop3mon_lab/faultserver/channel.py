"""Blocking, stop-aware socket I/O and the server side of TLS for one connection.

Every blocking socket call has a short timeout (:data:`~.common.POLL_INTERVAL`, set by the
server on accept) and every loop re-checks the server's stop event, so scenarios that
"never end" still end on ``FaultServer.stop``. :class:`Channel` is the base of
:class:`~.session.Session`; of POP3 it knows only the framing (CRLF lines, dot-stuffed
multi-line responses), not the dialogue.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Iterable

from .common import HANDSHAKE_TIMEOUT, MAX_LINE, Conn, ServerHandle, as_bytes

__all__ = ["Channel"]


class Channel:
    """Line-oriented I/O on one accepted connection, aware of the server stopping."""

    def __init__(self, server: ServerHandle, conn: Conn) -> None:
        self.server = server
        self.conn = conn
        self.opts = server.options
        self.log = server.log
        self.buf = bytearray()
        self.closing = False

    @property
    def stopped(self) -> bool:
        """True once the server is stopping."""
        return self.server.stop_event.is_set()

    def pause(self, seconds: float) -> bool:
        """Sleep, waking early on stop; returns False if the server is stopping."""
        if seconds > 0:
            return not self.server.stop_event.wait(seconds)
        return not self.stopped

    def recv_some(self) -> bytes:
        """Receive whatever is available; ``b""`` on EOF, error or stop."""
        while not self.stopped:
            try:
                data = self.conn.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # includes ssl.SSLError: a broken peer is an EOF to us
                return b""
            if data and not self.conn.tls:
                self.log.add_plaintext(self.conn.id, data)
            return data
        return b""

    def readline(self) -> bytes | None:
        """Next line including its ending; None on EOF, stop or an over-long line."""
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return line
            if not self.conn.tls and self.buf[:1] == b"\x16":
                # A TLS record (ClientHello) on a plaintext channel never contains a line
                # ending we could wait for: treat what arrived as one line so the client
                # gets an immediate plaintext -ERR instead of a hang.
                line = bytes(self.buf)
                self.buf.clear()
                return line
            if len(self.buf) > MAX_LINE:
                self.reply("-ERR Line too long.")
                self.closing = True
                return None
            data = self.recv_some()
            if not data:
                if self.buf:
                    self.log.add_line(self.conn.id, "data", bytes(self.buf), self.conn.tls)
                    self.buf.clear()
                return None
            self.buf.extend(data)

    def send(self, data: bytes) -> bool:
        """Write all of ``data`` unless the peer goes away or the server stops."""
        view = memoryview(data)
        offset = 0
        # Chunks keep each blocking call short (stop stays responsive) and fit one TLS
        # record; a retried TLS write passes the same bytes again, as OpenSSL requires.
        while offset < len(view):
            if self.stopped:
                return False
            try:
                offset += self.conn.sock.send(view[offset : offset + 16384])
            except TimeoutError:
                continue
            except OSError:
                self.closing = True
                return False
        return True

    def reply(self, line: str | bytes) -> bool:
        """Send one response line (CRLF added) after the configured response delay."""
        data = as_bytes(line)
        if not self.pause(self.opts.response_delay):
            return False
        ok = self.send(data + b"\r\n")
        if not ok:
            self.closing = True
        return ok

    def reply_multi(self, first: str, lines: Iterable[str]) -> bool:
        """Send a multi-line response (dot-stuffed, ``.``-terminated) in one write."""
        parts = [first]
        parts.extend("." + line if line.startswith(".") else line for line in lines)
        parts.append(".")
        return self.reply("\r\n".join(parts))

    def drain(self) -> None:
        """Read and log whatever the client sends until it closes or the server stops."""
        while not self.closing:
            raw = self.readline()
            if raw is None:
                return
            self.log.add_line(self.conn.id, "data", raw, self.conn.tls)

    def half_close(self) -> None:
        """Send FIN (no TLS close_notify: an abrupt EOF) and drain until the client goes."""
        try:
            # socket.socket.shutdown on purpose: SSLSocket.shutdown would drop the TLS
            # object and make the draining reads fail.
            socket.socket.shutdown(self.conn.sock, socket.SHUT_WR)
        except OSError:
            self.closing = True
            return
        self.drain()
        self.closing = True

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0, then close)."""
        try:
            self.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.log.add_event(self.conn.id, "reset")
        self.server.close_conn_socket(self.conn)
        self.closing = True

    def start_tls(self) -> bool:
        """Run the server side of a TLS handshake on this connection."""
        ctx = self.server.tls_context
        if ctx is None:
            return False
        if self.buf:
            # RFC 2595: the client must wait for the handshake. What it pipelined is
            # discarded (never interpreted as post-TLS input) and noted.
            self.log.add_event(self.conn.id, "stls-pipelined", repr(bytes(self.buf)))
            self.buf.clear()
        try:
            tls_sock = self.server.wrap_conn(self.conn, ctx)
        except (OSError, ValueError) as exc:
            self.log.add_event(self.conn.id, "tls-failed", str(exc))
            return False
        ok = self._handshake(tls_sock)
        # Popped on every path so a failed handshake leaves no stale entry behind.
        sni = self.server.pop_sni(tls_sock)
        if not ok:
            return False
        self.conn.tls = True
        cipher = tls_sock.cipher()
        self.log.add_event(self.conn.id, "sni", sni)
        self.log.add_event(
            self.conn.id, "tls", f"{tls_sock.version()} {cipher[0] if cipher else ''}"
        )
        return True

    def _handshake(self, tls_sock: ssl.SSLSocket) -> bool:
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        while not self.stopped:
            try:
                tls_sock.do_handshake()
                return True
            except TimeoutError:
                # The socket timeout is only the stop-check interval; the handshake as a
                # whole gets HANDSHAKE_TIMEOUT.
                if time.monotonic() > deadline:
                    self.log.add_event(self.conn.id, "tls-failed", "handshake timed out")
                    return False
            except OSError as exc:
                self.log.add_event(self.conn.id, "tls-failed", str(exc))
                return False
        return False
