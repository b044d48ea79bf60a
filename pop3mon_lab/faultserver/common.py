"""Constants, per-connection state and small helpers every fault-server module shares.

This module sits at the bottom of the package's import graph (it imports only
:mod:`.log`), so :mod:`.channel`, :mod:`.session`, :mod:`.scenarios` and :mod:`.server` can
all use it without import cycles. :class:`ServerHandle` is the part of
:class:`~pop3mon_lab.faultserver.FaultServer` a session uses, spelled as a protocol so the
session modules need not import the server module that imports them.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from .log import ServerLog

HOST = "127.0.0.1"
#: The addresses a fault server may listen on: loopback only, IPv4 or IPv6.
LOOPBACK_HOSTS = (HOST, "::1")

DEFAULT_USERS: Mapping[str, str] = MappingProxyType({"alice": "alice-secret-1"})

# Seconds a blocking socket call may wait before the loop re-checks the stop event. Short
# enough that stop() never waits long even if a shutdown() wake-up is missed.
POLL_INTERVAL = 0.2

# Longest command line the server buffers. RFC 2449 limits commands to 255 octets, but SASL
# responses (SCRAM, XOAUTH2 tokens) are longer; 8 KiB is generous without being a DoS.
MAX_LINE = 8192

# A TLS handshake may legitimately take a while under load; it is still bounded.
HANDSHAKE_TIMEOUT = 10.0

# SASL mechanisms the healthy server offers. XOAUTH2/OAUTHBEARER are implemented but not
# offered by default: a client picking "the strongest offered" must not be lured into a
# token mechanism it has no token for.
DEFAULT_SASL = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256")
# Implemented, offered only when a test asks (``sasl_mechanisms=``): Courier's CRAM-SHA*
# and the token mechanisms.
OPTIONAL_SASL = ("CRAM-SHA1", "CRAM-SHA256", "XOAUTH2", "OAUTHBEARER")
# Every mechanism the server implements (tests covering every client mechanism offer these).
ALL_SASL = (*DEFAULT_SASL, *OPTIONAL_SASL)

# Mechanisms that send the password itself (or a bearer token) and so are refused before
# TLS when plaintext authentication is disallowed.
PLAINTEXT_MECHS = frozenset({"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"})

# Commands each RFC 1939 state accepts; anything else gets "-ERR Unknown command."
AUTH_STATE_COMMANDS = ("CAPA", "QUIT", "STLS", "USER", "PASS", "APOP", "AUTH")
TRANSACTION_COMMANDS = (
    "CAPA",
    "QUIT",
    "STAT",
    "LIST",
    "UIDL",
    "RETR",
    "TOP",
    "DELE",
    "RSET",
    "NOOP",
)


@dataclass(frozen=True)
class Options:
    """The server's settings, as every session of it reads them."""

    users: Mapping[str, str]
    hostname: str
    implicit_tls: bool
    response_delay: float
    drip_interval: float
    huge_size: int
    challenge_delay: float
    messages: int
    allow_plaintext_auth: bool
    sasl_mechanisms: tuple[str, ...]
    flaky_first: int = 1
    #: The mailbox's messages as lines (replaces the generated ``messages``; round trip).
    mailbox: tuple[tuple[str, ...], ...] = ()


class Conn:
    """One accepted connection; ``sock`` is replaced by an SSLSocket after a handshake."""

    def __init__(self, conn_id: int, sock: socket.socket, peer: str) -> None:
        self.id = conn_id
        self.sock = sock
        self.peer = peer
        self.tls = False


class ServerHandle(Protocol):
    """What a session needs from the server that runs it (implemented by FaultServer)."""

    @property
    def options(self) -> Options:
        """The server's settings."""
        ...

    @property
    def log(self) -> ServerLog:
        """Where every received line and event is recorded."""
        ...

    @property
    def stop_event(self) -> threading.Event:
        """Set once the server is stopping."""
        ...

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        """Server-side TLS context; None when the server has no certificate."""
        ...

    def wrap_conn(self, conn: Conn, ctx: ssl.SSLContext) -> ssl.SSLSocket:
        """Replace the connection's socket by a server-side SSLSocket."""
        ...

    def pop_sni(self, tls_sock: ssl.SSLSocket) -> str:
        """SNI name the client sent on this socket's handshake."""
        ...

    def close_conn_socket(self, conn: Conn) -> None:
        """Close a connection's socket."""
        ...

    def count_login(self) -> None:
        """Count one successful login."""
        ...


def b64(data: str | bytes) -> str:
    """Base64 of ``data`` (str is UTF-8 encoded first) as ASCII text."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def as_text(raw: bytes) -> str:
    """Decode client bytes to text, losslessly."""
    # surrogateescape keeps arbitrary client bytes round-trippable: a secret echoed back
    # by echo-credentials is byte-for-byte what the client sent.
    return raw.decode("utf-8", "surrogateescape")


def as_bytes(line: str | bytes) -> bytes:
    """Encode a response line; the inverse of :func:`as_text`."""
    return line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape")
