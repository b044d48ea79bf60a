"""The fault server's record of what clients sent and what happened on each connection.

Everything a client sends is recorded: each command line with whether the channel was TLS
at that moment, plus every byte received while unencrypted, so tests can assert "the secret
never crossed the wire in plaintext".
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

__all__ = ["Event", "LogEntry", "ServerLog"]


@dataclass(frozen=True)
class LogEntry:
    """One line the server received.

    ``kind`` is ``command`` for POP3 command lines, ``sasl`` for lines sent inside an AUTH
    exchange, and ``data`` for lines received while the scenario was not listening for
    commands (e.g. before a greeting that never comes). ``line`` is the text without the
    line ending (undecodable bytes replaced); ``raw`` is exactly what arrived.
    """

    conn: int
    kind: Literal["command", "sasl", "data"]
    line: str
    raw: bytes
    tls: bool
    time: float

    @property
    def verb(self) -> str:
        """The upper-cased command verb (``""`` for non-command lines)."""
        if self.kind != "command":
            return ""
        return self.line.split(" ", 1)[0].upper()


@dataclass(frozen=True)
class Event:
    """Something that happened on a connection.

    Kinds: ``connect``, ``tls`` (detail: version and cipher), ``sni`` (the server name the
    client asked for, ``""`` if none), ``tls-failed``, ``stls-pipelined`` (client bytes
    arrived after STLS before the handshake), ``login``, ``login-failed``, ``reset``
    (RST sent), ``error`` (server-side bug caught), ``close``.
    """

    conn: int
    kind: str
    detail: str
    time: float


class ServerLog:
    """Thread-safe record of everything the server received and did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LogEntry] = []
        self._events: list[Event] = []
        self._plaintext: dict[int, bytearray] = {}
        self._plaintext_all = bytearray()

    def add_line(
        self, conn: int, kind: Literal["command", "sasl", "data"], raw: bytes, tls: bool
    ) -> None:
        """Record one received line."""
        text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        entry = LogEntry(conn, kind, text, raw, tls, time.monotonic())
        with self._lock:
            self._entries.append(entry)

    def add_event(self, conn: int, kind: str, detail: str = "") -> None:
        """Record an event."""
        with self._lock:
            self._events.append(Event(conn, kind, detail, time.monotonic()))

    def add_plaintext(self, conn: int, data: bytes) -> None:
        """Record bytes received on an unencrypted channel."""
        with self._lock:
            self._plaintext.setdefault(conn, bytearray()).extend(data)
            self._plaintext_all.extend(data)

    def entries(self, conn: int | None = None) -> list[LogEntry]:
        """All received lines in arrival order, optionally for one connection."""
        with self._lock:
            return [e for e in self._entries if conn is None or e.conn == conn]

    def events(self, kind: str | None = None, conn: int | None = None) -> list[Event]:
        """Events in order, optionally filtered by kind and/or connection."""
        with self._lock:
            return [
                e
                for e in self._events
                if (kind is None or e.kind == kind) and (conn is None or e.conn == conn)
            ]

    def commands(self, conn: int | None = None) -> list[str]:
        """Upper-cased verbs of every command line received (SASL lines excluded)."""
        return [e.verb for e in self.entries(conn) if e.kind == "command"]

    def plaintext_bytes(self, conn: int | None = None) -> bytes:
        """Every byte received while the channel was unencrypted."""
        with self._lock:
            if conn is None:
                return bytes(self._plaintext_all)
            return bytes(self._plaintext.get(conn, b""))
