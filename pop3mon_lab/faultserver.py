"""A fault-injecting POP3 server for the self-tests and the demo.

Real Dovecot covers the success path; this server covers what real servers will not do on
demand: hostile and broken behaviour (silent or dripping greetings, endless multi-line
answers, STARTTLS injection, credential echo, resets mid-login ...). With the ``healthy``
scenario it is also a complete, RFC-conforming reference server (APOP, CAPA, STLS,
USER/PASS, SASL PLAIN/LOGIN/CRAM-MD5/SCRAM-SHA-1/SCRAM-SHA-256, STAT/LIST/UIDL/RETR/TOP,
implicit TLS) that the demo falls back to when Dovecot cannot be installed.

Design:

* One accept thread plus one thread per connection. Threads are cheap at the scale of a
  test suite and keep every scenario a plain, readable sequence of blocking calls.
* Every blocking socket call has a short timeout (:data:`POLL_INTERVAL`) and every loop
  re-checks the server's stop event, so scenarios that "never end" still end on
  :meth:`FaultServer.stop`. ``stop`` additionally shuts the sockets down, which wakes
  blocked calls at once instead of after the next poll.
* Everything a client sends is recorded in :class:`ServerLog`: each command line with
  whether the channel was TLS at that moment, plus every byte received while unencrypted,
  so tests can assert "the secret never crossed the wire in plaintext".
* The server binds to 127.0.0.1 only; port 0 picks a free port.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import hmac
import json
import os
import socket
import ssl
import struct
import threading
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import ClassVar, Literal

__all__ = [
    "DEFAULT_USERS",
    "SCENARIOS",
    "Event",
    "FaultServer",
    "LogEntry",
    "Scenario",
    "ServerLog",
    "Session",
    "scenario_names",
]

HOST = "127.0.0.1"

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

# Mechanisms that send the password itself (or a bearer token) and so are refused before
# TLS when plaintext authentication is disallowed.
_PLAINTEXT_MECHS = frozenset({"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"})

# Commands each RFC 1939 state accepts; anything else gets "-ERR Unknown command."
_AUTH_STATE_COMMANDS = ("CAPA", "QUIT", "STLS", "USER", "PASS", "APOP", "AUTH")
_TRANSACTION_COMMANDS = (
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


# --------------------------------------------------------------------------- the log


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


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """A named server behaviour: the :class:`Session` subclass that implements it.

    ``reply`` is the canned status line for scenarios that differ from ``healthy`` in one
    answer only; ``tls_profile`` selects a special TLS context (``tls10`` = TLS 1.0 only).
    """

    name: str
    summary: str
    session: type[Session]
    needs_tls: bool = False
    reply: str = ""
    tls_profile: Literal["default", "tls10"] = "default"


@dataclass(frozen=True)
class SaslOutcome:
    """End of a SASL exchange: who, whether the credentials were right, what secret the
    client sent (for the credential-echo scenario) and an optional final line overriding
    the standard answer."""

    user: str
    ok: bool
    secret: str = ""
    reply: str = ""


SaslExchange = Generator[str, bytes, SaslOutcome]
"""A SASL mechanism: yields base64 challenge text, receives decoded client responses."""


@dataclass(frozen=True)
class _Options:
    users: Mapping[str, str]
    hostname: str
    implicit_tls: bool
    response_delay: float
    drip_interval: float
    huge_size: int
    messages: int
    allow_plaintext_auth: bool
    sasl_mechanisms: tuple[str, ...]


class _Conn:
    """One accepted connection; ``sock`` is replaced by an SSLSocket after a handshake."""

    def __init__(self, conn_id: int, sock: socket.socket, peer: str) -> None:
        self.id = conn_id
        self.sock = sock
        self.peer = peer
        self.tls = False


def _b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _text(raw: bytes) -> str:
    # surrogateescape keeps arbitrary client bytes round-trippable: a secret echoed back
    # by echo-credentials is byte-for-byte what the client sent.
    return raw.decode("utf-8", "surrogateescape")


def _scram_attrs(text: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and len(key) == 1:
            attrs.setdefault(key, value)
    return attrs


def _oauth_fields(text: str) -> dict[str, str]:
    # key=value pairs separated by ^A (XOAUTH2 and RFC 7628 share the layout).
    fields: dict[str, str] = {}
    for part in text.split("\x01"):
        key, sep, value = part.partition("=")
        if sep:
            fields.setdefault(key, value)
    return fields


class Session:
    """The healthy POP3 dialogue for one connection; scenarios subclass and override.

    The methods are small on purpose so a scenario overrides exactly the step it breaks:
    :meth:`greet`, :meth:`capabilities`, a ``cmd_*`` handler, :meth:`sasl_exchange` or
    :meth:`finish_login`.
    """

    apop: ClassVar[bool] = True
    # Cap on SASL challenge rounds; a real server stops a client that never finishes.
    max_sasl_rounds: ClassVar[int | None] = 16

    def __init__(self, server: FaultServer, conn: _Conn, scenario: Scenario) -> None:
        self.server = server
        self.conn = conn
        self.scenario = scenario
        self.opts = server.options
        self.log = server.log
        self.buf = bytearray()
        self.state: Literal["authorization", "transaction"] = "authorization"
        self.closing = False
        self.pending_user: str | None = None
        self.user: str | None = None
        self.deleted: set[int] = set()
        self.timestamp: str | None = (
            f"<{os.getpid()}.{conn.id}.{time.time_ns()}@{self.opts.hostname}>"
        )
        self.handlers: dict[str, Callable[[str], None]] = {
            "CAPA": self.cmd_capa,
            "STLS": self.cmd_stls,
            "USER": self.cmd_user,
            "PASS": self.cmd_pass,
            "APOP": self.cmd_apop,
            "AUTH": self.cmd_auth,
            "QUIT": self.cmd_quit,
            "STAT": self.cmd_stat,
            "LIST": self.cmd_list,
            "UIDL": self.cmd_uidl,
            "RETR": self.cmd_retr,
            "TOP": self.cmd_top,
            "DELE": self.cmd_dele,
            "RSET": self.cmd_rset,
            "NOOP": self.cmd_noop,
        }

    # ------------------------------------------------------------------ low-level I/O

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
        data = _text_bytes(line)
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

    # ------------------------------------------------------------------ dialogue

    def run(self) -> None:
        """Whole life of the connection: TLS (implicit mode), greeting, commands."""
        if self.opts.implicit_tls and not self.start_tls():
            return
        if not self.greet():
            return
        self.serve_commands()

    def greeting(self) -> str:
        """The greeting line; carries the APOP timestamp when APOP is on."""
        if self.apop and self.timestamp is not None:
            return f"+OK pop3mon fault server ready {self.timestamp}"
        return "+OK pop3mon fault server ready"

    def greet(self) -> bool:
        """Send the greeting; False ends the session."""
        return self.reply(self.greeting())

    def serve_commands(self) -> None:
        """Read command lines and dispatch them until QUIT, EOF or stop."""
        while not self.closing:
            raw = self.readline()
            if raw is None:
                return
            self.log.add_line(self.conn.id, "command", raw, self.conn.tls)
            line = _text(raw.rstrip(b"\r\n"))
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            allowed = (
                _AUTH_STATE_COMMANDS if self.state == "authorization" else _TRANSACTION_COMMANDS
            )
            handler = self.handlers.get(verb) if verb in allowed else None
            if handler is None:
                self.reply("-ERR Unknown command.")
                continue
            handler(arg)

    def plaintext_auth_allowed(self) -> bool:
        """Whether credentials may be sent on the current channel."""
        return self.conn.tls or self.opts.allow_plaintext_auth

    def stls_available(self) -> bool:
        """Whether STLS is offered (and would work) right now."""
        return (
            self.server.tls_context is not None
            and not self.conn.tls
            and self.state == "authorization"
        )

    def sasl_mechanisms(self) -> list[str]:
        """SASL mechanisms offered (and accepted) right now."""
        allowed = self.plaintext_auth_allowed()
        return [m for m in self.opts.sasl_mechanisms if allowed or m not in _PLAINTEXT_MECHS]

    def capabilities(self) -> list[str]:
        """CAPA lines (without the status line and terminator)."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state == "authorization":
            if self.plaintext_auth_allowed():
                caps.append("USER")
            mechs = self.sasl_mechanisms()
            if mechs:
                caps.append("SASL " + " ".join(mechs))
            if self.stls_available():
                caps.append("STLS")
        caps.append("IMPLEMENTATION pop3mon-faultserver")
        return caps

    def cmd_capa(self, arg: str) -> None:
        """CAPA (RFC 2449)."""
        self.reply_multi("+OK Capability list follows", self.capabilities())

    def cmd_stls(self, arg: str) -> None:
        """STLS (RFC 2595): +OK then the handshake; a failed handshake ends the session."""
        if not self.stls_available():
            self.reply("-ERR STLS not available.")
            return
        if not self.reply("+OK Begin TLS negotiation now."):
            return
        if not self.start_tls():
            self.closing = True

    def cmd_user(self, arg: str) -> None:
        """USER name."""
        if not self.plaintext_auth_allowed():
            self.reply("-ERR [AUTH] Plaintext authentication disallowed on non-secure connections.")
            return
        if not arg:
            self.reply("-ERR No username given.")
            return
        self.pending_user = arg
        # Same answer for every name: no user enumeration.
        self.reply("+OK")

    def cmd_pass(self, arg: str) -> None:
        """PASS secret (after USER)."""
        if self.pending_user is None:
            self.reply("-ERR No username given.")
            return
        user, self.pending_user = self.pending_user, None
        self.finish_login(SaslOutcome(user, self.check_password(user, arg), arg))

    def cmd_apop(self, arg: str) -> None:
        """APOP name digest (RFC 1939 §7): exact lowercase hex MD5(timestamp + secret)."""
        if not self.apop or self.timestamp is None:
            self.reply("-ERR APOP not available.")
            return
        user, _, digest = arg.rpartition(" ")
        password = self.opts.users.get(user)
        ok = False
        if user and password is not None:
            data = (self.timestamp + password).encode("utf-8", "surrogateescape")
            ok = hmac.compare_digest(hashlib.md5(data).hexdigest(), digest)
        self.finish_login(SaslOutcome(user, ok, digest))

    def cmd_auth(self, arg: str) -> None:
        """AUTH mech [initial-response] (RFC 5034); bare AUTH lists mechanisms."""
        if not arg.strip():
            self.reply_multi("+OK Mechanisms follow", self.sasl_mechanisms())
            return
        mech, _, initial = arg.strip().partition(" ")
        mech = mech.upper()
        if mech in _PLAINTEXT_MECHS and not self.plaintext_auth_allowed():
            self.reply("-ERR [AUTH] Plaintext authentication disallowed on non-secure connections.")
            return
        if mech not in self.sasl_mechanisms():
            self.reply("-ERR Unsupported authentication mechanism.")
            return
        first: bytes | None = None
        if initial:
            if initial == "=":
                first = b""
            else:
                try:
                    first = base64.b64decode(initial, validate=True)
                except binascii.Error:
                    self.reply("-ERR Invalid base64 data in initial response.")
                    return
        exchange = self.sasl_exchange(mech, first)
        rounds = 0
        try:
            challenge = next(exchange)
            while True:
                rounds += 1
                if self.max_sasl_rounds is not None and rounds > self.max_sasl_rounds:
                    self.reply("-ERR Too many SASL rounds.")
                    return
                if not self.reply("+ " + challenge):
                    return
                raw = self.readline()
                if raw is None:
                    return
                self.log.add_line(self.conn.id, "sasl", raw, self.conn.tls)
                text = _text(raw.rstrip(b"\r\n"))
                if text == "*":
                    self.reply("-ERR Authentication aborted.")
                    return
                try:
                    response = base64.b64decode(text, validate=True)
                except binascii.Error:
                    self.reply("-ERR Invalid base64 data in continued response.")
                    return
                challenge = exchange.send(response)
        except StopIteration as done:
            outcome: SaslOutcome = done.value
        self.finish_login(outcome)

    def check_password(self, user: str, password: str) -> bool:
        """Whether the pair matches the configured users."""
        expected = self.opts.users.get(user)
        return expected is not None and hmac.compare_digest(
            expected.encode("utf-8", "surrogateescape"),
            password.encode("utf-8", "surrogateescape"),
        )

    def finish_login(self, outcome: SaslOutcome) -> None:
        """Answer the last step of any login (PASS, APOP, final AUTH step)."""
        if outcome.reply:
            self.log.add_event(self.conn.id, "login-failed", outcome.user)
            self.reply(outcome.reply)
            return
        if not outcome.ok:
            self.log.add_event(self.conn.id, "login-failed", outcome.user)
            self.reply("-ERR [AUTH] Authentication failed.")
            return
        self.state = "transaction"
        self.user = outcome.user
        self.server.count_login()
        self.log.add_event(self.conn.id, "login", outcome.user)
        self.reply("+OK Logged in.")

    # ------------------------------------------------------------------ SASL

    def sasl_exchange(self, mech: str, first: bytes | None) -> SaslExchange:
        """The generator implementing ``mech``; ``first`` is the initial response."""
        if mech == "PLAIN":
            return self.sasl_plain(first)
        if mech == "LOGIN":
            return self.sasl_login(first)
        if mech == "CRAM-MD5":
            return self.sasl_cram_md5(first)
        if mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
            return self.sasl_scram("sha1" if mech == "SCRAM-SHA-1" else "sha256", first)
        if mech == "XOAUTH2":
            return self.sasl_xoauth2(first)
        return self.sasl_oauthbearer(first)

    def sasl_plain(self, first: bytes | None) -> SaslExchange:
        """PLAIN (RFC 4616): authzid NUL authcid NUL passwd."""
        data = first if first is not None else (yield "")
        parts = _text(data).split("\0")
        if len(parts) != 3:
            return SaslOutcome("", False, _text(data))
        authzid, user, password = parts
        ok = authzid in ("", user) and self.check_password(user, password)
        return SaslOutcome(user, ok, password)

    def sasl_login(self, first: bytes | None) -> SaslExchange:
        """LOGIN (draft-murchison-sasl-login): username and password prompts."""
        user = first if first is not None else (yield _b64("Username:"))
        password = yield _b64("Password:")
        name, secret = _text(user), _text(password)
        return SaslOutcome(name, self.check_password(name, secret), secret)

    def sasl_cram_md5(self, first: bytes | None) -> SaslExchange:
        """CRAM-MD5 (RFC 2195)."""
        challenge = f"<{os.getpid()}.{time.time_ns()}@{self.opts.hostname}>"
        response = _text((yield _b64(challenge)))
        user, _, digest = response.rpartition(" ")
        password = self.opts.users.get(user)
        ok = False
        if password is not None:
            expected = hmac.new(
                password.encode("utf-8", "surrogateescape"), challenge.encode(), "md5"
            ).hexdigest()
            ok = hmac.compare_digest(expected, digest)
        return SaslOutcome(user, ok, digest)

    def sasl_scram(self, hash_name: str, first: bytes | None) -> SaslExchange:
        """SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802, 7677) without channel binding."""
        client_first = _text(first if first is not None else (yield ""))
        gs2_flag, _, rest = client_first.partition(",")
        authzid, _, bare = rest.partition(",")
        if gs2_flag not in ("n", "y") or not bare:
            return SaslOutcome("", False)
        gs2_header = f"{gs2_flag},{authzid},"
        attrs = _scram_attrs(bare)
        user = attrs.get("n", "").replace("=2C", ",").replace("=3D", "=")
        client_nonce = attrs.get("r", "")
        if not user or not client_nonce:
            return SaslOutcome(user, False)
        # Deterministic salt per user keeps runs reproducible; iterations are the RFC
        # minimum so a SCRAM login stays in the millisecond range.
        salt = hashlib.sha256(b"pop3mon-salt:" + user.encode("utf-8", "surrogateescape"))
        salt_bytes = salt.digest()[:16]
        iterations = 4096
        nonce = client_nonce + base64.b64encode(os.urandom(18)).decode("ascii")
        server_first = f"r={nonce},s={_b64(salt_bytes)},i={iterations}"
        client_final = _text((yield _b64(server_first)))
        without_proof, sep, proof_b64 = client_final.rpartition(",p=")
        final_attrs = _scram_attrs(without_proof)
        if not sep or final_attrs.get("c") != _b64(gs2_header) or final_attrs.get("r") != nonce:
            return SaslOutcome(user, False, proof_b64)
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except binascii.Error:
            return SaslOutcome(user, False, proof_b64)
        password = self.opts.users.get(user)
        if password is None:
            return SaslOutcome(user, False, proof_b64)
        salted = hashlib.pbkdf2_hmac(
            hash_name, password.encode("utf-8", "surrogateescape"), salt_bytes, iterations
        )
        client_key = hmac.digest(salted, b"Client Key", hash_name)
        stored_key = hashlib.new(hash_name, client_key).digest()
        auth_message = f"{bare},{server_first},{without_proof}".encode("utf-8", "surrogateescape")
        client_signature = hmac.digest(stored_key, auth_message, hash_name)
        if len(proof) != len(client_signature):
            return SaslOutcome(user, False, proof_b64)
        recovered = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(hashlib.new(hash_name, recovered).digest(), stored_key):
            return SaslOutcome(user, False, proof_b64)
        server_key = hmac.digest(salted, b"Server Key", hash_name)
        server_signature = hmac.digest(server_key, auth_message, hash_name)
        # POP3 has no "success with data": the server-final message goes out as one more
        # challenge and the client answers with an empty line (RFC 5034 §4).
        yield _b64("v=" + _b64(server_signature))
        return SaslOutcome(user, True, proof_b64)

    def sasl_xoauth2(self, first: bytes | None) -> SaslExchange:
        """XOAUTH2 (Google): ``user=U^Aauth=Bearer T^A^A``; token = the user's password."""
        data = _text(first if first is not None else (yield ""))
        fields = _oauth_fields(data)
        user = fields.get("user", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        if self.check_password(user, token):
            return SaslOutcome(user, True, token)
        error = {"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"}
        yield _b64(json.dumps(error))
        return SaslOutcome(user, False, token)

    def sasl_oauthbearer(self, first: bytes | None) -> SaslExchange:
        """OAUTHBEARER (RFC 7628); token = the user's password."""
        data = _text(first if first is not None else (yield ""))
        header, _, kvpairs = data.partition("\x01")
        gs2 = _scram_attrs(header.partition(",")[2].rstrip(","))
        fields = _oauth_fields(kvpairs)
        user = gs2.get("a", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        if self.check_password(user, token):
            return SaslOutcome(user, True, token)
        yield _b64(json.dumps({"status": "invalid_token", "scope": "mail"}))
        return SaslOutcome(user, False, token)

    # ------------------------------------------------------------------ transaction

    def message(self, number: int) -> list[str]:
        """Lines of message ``number`` (1-based); one line starts with a dot on purpose so
        clients' dot-unstuffing is exercised."""
        return [
            "From: lab@pop3mon.test",
            f"To: {self.user or 'nobody'}@pop3mon.test",
            f"Subject: test message {number}",
            f"Message-ID: <{number}.pop3mon@pop3mon.test>",
            "",
            f"Body of test message {number}.",
            ".this line starts with a dot",
        ]

    def message_size(self, number: int) -> int:
        """Octet size of a message as RFC 1939 counts it (CRLF line endings)."""
        return sum(len(line) + 2 for line in self.message(number))

    def live_messages(self) -> list[int]:
        """Message numbers not marked deleted."""
        return [n for n in range(1, self.opts.messages + 1) if n not in self.deleted]

    def parse_msg(self, arg: str) -> int | None:
        """Validate a message-number argument; answers -ERR itself when invalid."""
        token = arg.split(" ", 1)[0]
        if token.isdigit() and int(token) in self.live_messages():
            return int(token)
        self.reply("-ERR No such message.")
        return None

    def cmd_stat(self, arg: str) -> None:
        """STAT: count and total octets."""
        live = self.live_messages()
        self.reply(f"+OK {len(live)} {sum(self.message_size(n) for n in live)}")

    def cmd_list(self, arg: str) -> None:
        """LIST [msg]."""
        if arg.strip():
            number = self.parse_msg(arg)
            if number is not None:
                self.reply(f"+OK {number} {self.message_size(number)}")
            return
        lines = [f"{n} {self.message_size(n)}" for n in self.live_messages()]
        self.reply_multi(f"+OK {len(lines)} messages", lines)

    def cmd_uidl(self, arg: str) -> None:
        """UIDL [msg]."""
        if arg.strip():
            number = self.parse_msg(arg)
            if number is not None:
                self.reply(f"+OK {number} uid-{number:06d}")
            return
        self.reply_multi("+OK", [f"{n} uid-{n:06d}" for n in self.live_messages()])

    def cmd_retr(self, arg: str) -> None:
        """RETR msg."""
        number = self.parse_msg(arg)
        if number is not None:
            self.reply_multi(f"+OK {self.message_size(number)} octets", self.message(number))

    def cmd_top(self, arg: str) -> None:
        """TOP msg n."""
        parts = arg.split()
        if len(parts) != 2 or not parts[1].isdigit():
            self.reply("-ERR Usage: TOP msg lines")
            return
        number = self.parse_msg(parts[0])
        if number is None:
            return
        lines = self.message(number)
        blank = lines.index("")
        self.reply_multi("+OK", lines[: blank + 1 + int(parts[1])])

    def cmd_dele(self, arg: str) -> None:
        """DELE msg: only marks; nothing is ever really deleted here."""
        number = self.parse_msg(arg)
        if number is not None:
            self.deleted.add(number)
            self.reply("+OK Marked to be deleted.")

    def cmd_rset(self, arg: str) -> None:
        """RSET: unmark deletions."""
        self.deleted.clear()
        self.reply("+OK")

    def cmd_noop(self, arg: str) -> None:
        """NOOP."""
        self.reply("+OK")

    def cmd_quit(self, arg: str) -> None:
        """QUIT: answer and close."""
        if self.state == "transaction" and self.deleted:
            self.reply(f"+OK Logging out, {len(self.deleted)} messages deleted.")
        else:
            self.reply("+OK Logging out.")
        self.closing = True


def _text_bytes(line: str | bytes) -> bytes:
    return line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- faults


class _HealthyNoApop(Session):
    apop = False


class _RstOnConnect(Session):
    def run(self) -> None:
        self.reset()


class _NoGreeting(Session):
    def greet(self) -> bool:
        self.drain()
        return False


class _DripGreeting(Session):
    def greet(self) -> bool:
        # "+OK " then dots, one byte per interval, never a line ending: only a deadline
        # over the whole read (not a per-recv timeout) stops a client here.
        prefix = b"+OK dripping"
        count = 0
        while not self.closing:
            byte = prefix[count : count + 1] or b"."
            if not self.send(byte) or not self.pause(self.opts.drip_interval):
                break
            count += 1
        return False


class _ErrGreeting(Session):
    def greet(self) -> bool:
        if self.reply("-ERR go away"):
            self.half_close()
        return False


class _GarbageGreeting(Session):
    def greeting(self) -> str:
        return _text(b"\x00\xff\xfe\x16\x03\x01GARBAGE\x00\x1b[2J\x80 greeting")


class _LowercaseOk(Session):
    def greeting(self) -> str:
        return "+ok hello"


class _HugeLine(Session):
    def greet(self) -> bool:
        if not self.pause(self.opts.response_delay):
            return False
        # One buffer, sent in chunks by send(): never a newline.
        if self.send(b"+OK " + b"A" * max(0, self.opts.huge_size - 4)):
            self.drain()
        return False


class _EndlessCapa(Session):
    def cmd_capa(self, arg: str) -> None:
        if not self.reply("+OK Capability list follows"):
            return
        number = 0
        # Stream batches as fast as the client reads; stop or a dead peer ends it.
        while not self.stopped:
            batch = "".join(f"X-ENDLESS-{number + i:09d}\r\n" for i in range(256))
            number += 256
            if not self.send(batch.encode("ascii")):
                break
        self.closing = True


class _CapaEof(Session):
    def cmd_capa(self, arg: str) -> None:
        data = b"+OK Capability list follows\r\nTOP\r\nUIDL\r\n"
        if self.pause(self.opts.response_delay) and self.send(data):
            self.half_close()
        self.closing = True


class _MalformedStat(Session):
    def cmd_stat(self, arg: str) -> None:
        self.reply("+OK banana")


class _ApopNoTimestamp(Session):
    def __init__(self, server: FaultServer, conn: _Conn, scenario: Scenario) -> None:
        super().__init__(server, conn, scenario)
        self.timestamp = None


class _ApopBadTimestamp(Session):
    """APOP stays usable (a careless client succeeds); the greeting's msg-id is invalid."""

    bad_timestamp: ClassVar[str] = "<no-at-sign>"

    def __init__(self, server: FaultServer, conn: _Conn, scenario: Scenario) -> None:
        super().__init__(server, conn, scenario)
        self.timestamp = self.bad_timestamp


class _ApopCtrlTimestamp(_ApopBadTimestamp):
    bad_timestamp = "<1.2\x07\x1b[0m@pop3mon.test>"


class _NoStls(Session):
    """No STLS anywhere; credentials are accepted in plaintext regardless of options."""

    def stls_available(self) -> bool:
        return False

    def plaintext_auth_allowed(self) -> bool:
        return True


class _StlsAdvertised(Session):
    """Lists STLS even without a certificate; subclasses break the STLS answer."""

    def stls_available(self) -> bool:
        return not self.conn.tls and self.state == "authorization"


class _StlsErr(_StlsAdvertised):
    def cmd_stls(self, arg: str) -> None:
        self.reply("-ERR [SYS/TEMP] TLS not available right now.")


class _StlsPlaintext(_StlsAdvertised):
    def cmd_stls(self, arg: str) -> None:
        # Claims TLS, then keeps answering in plaintext (a ClientHello gets a plaintext
        # -ERR, see readline), so the client's handshake fails on a non-TLS record.
        self.reply("+OK Begin TLS negotiation now.")


class _StlsClose(_StlsAdvertised):
    def cmd_stls(self, arg: str) -> None:
        self.reply("+OK Begin TLS negotiation now.")
        self.closing = True


class _StlsInjection(Session):
    def cmd_stls(self, arg: str) -> None:
        if not self.stls_available():
            self.reply("-ERR STLS not available.")
            return
        # The attack: extra plaintext in the same segment as the +OK. A client that keeps
        # its read buffer across the handshake reads "+OK injected" as the answer to its
        # first command over TLS.
        if not self.pause(self.opts.response_delay):
            return
        if not self.send(b"+OK Begin TLS negotiation now.\r\n+OK injected\r\n"):
            return
        if not self.start_tls():
            self.closing = True


class _CapaDiffers(Session):
    def capabilities(self) -> list[str]:
        if self.state != "authorization":
            return super().capabilities()
        if not self.conn.tls:
            return ["TOP", "UIDL", "USER", "SASL PLAIN", "STLS", "IMPLEMENTATION plain"]
        return ["TOP", "UIDL", "USER", "SASL SCRAM-SHA-256 PLAIN LOGIN", "IMPLEMENTATION tls"]


class _LoginReply(Session):
    """Every login attempt (PASS, APOP, final AUTH step) gets the scenario's line."""

    def finish_login(self, outcome: SaslOutcome) -> None:
        self.log.add_event(self.conn.id, "login-failed", outcome.user)
        self.reply(self.scenario.reply)


class _RstAfterPass(Session):
    def finish_login(self, outcome: SaslOutcome) -> None:
        self.reset()


class _EchoCredentials(Session):
    def finish_login(self, outcome: SaslOutcome) -> None:
        # The secret as received: PASS argument, decoded PLAIN/LOGIN password, APOP or
        # CRAM digest. Clients must scrub it from anything they report.
        self.log.add_event(self.conn.id, "login-failed", outcome.user)
        self.reply(f"-ERR bad password '{outcome.secret}'")


class _EndlessSasl(Session):
    max_sasl_rounds = None

    def sasl_exchange(self, mech: str, first: bytes | None) -> SaslExchange:
        return self._endless()

    def _endless(self) -> SaslExchange:
        # Honours "*" (the driver answers -ERR), otherwise challenges forever.
        while True:
            yield _b64(os.urandom(12))


class _BadBase64Sasl(Session):
    def sasl_exchange(self, mech: str, first: bytes | None) -> SaslExchange:
        return self._bad()

    def _bad(self) -> SaslExchange:
        yield "!!!notbase64"
        return SaslOutcome("", False)


class _Xoauth2Error(Session):
    def sasl_mechanisms(self) -> list[str]:
        return [*super().sasl_mechanisms(), "XOAUTH2"]

    def sasl_exchange(self, mech: str, first: bytes | None) -> SaslExchange:
        if mech == "XOAUTH2":
            return self._xoauth2_error(first)
        return super().sasl_exchange(mech, first)

    def _xoauth2_error(self, first: bytes | None) -> SaslExchange:
        if first is None:
            yield ""
        error = {"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"}
        yield _b64(json.dumps(error))
        return SaslOutcome("", False, reply="-ERR [AUTH] invalid token")


class _QuitSilent(Session):
    def cmd_quit(self, arg: str) -> None:
        pass  # never answers, never closes: the client's deadline must end it


_REGISTRY: dict[str, Scenario] = {}


def _register(
    name: str,
    summary: str,
    session: type[Session],
    *,
    needs_tls: bool = False,
    reply: str = "",
    tls_profile: Literal["default", "tls10"] = "default",
) -> None:
    _REGISTRY[name] = Scenario(name, summary, session, needs_tls, reply, tls_profile)


_register("healthy", "full RFC server: APOP timestamp, CAPA, STLS (with a cert), SASL", Session)
_register("healthy-no-apop", "healthy, greeting without timestamp, APOP -ERR", _HealthyNoApop)
_register("rst-on-connect", "accept, then RST (SO_LINGER 0) without a byte", _RstOnConnect)
_register("no-greeting", "accept, never send; logs what the client sends", _NoGreeting)
_register("drip-greeting", "'+OK dripping...' one byte per drip_interval, no CRLF", _DripGreeting)
_register("err-greeting", "'-ERR go away' then FIN", _ErrGreeting)
_register("garbage-greeting", "binary greeting with NUL/0xFF/ESC bytes", _GarbageGreeting)
_register("lowercase-ok", "'+ok hello' greeting, healthy afterwards", _LowercaseOk)
_register("huge-line", "'+OK ' + 'A' up to huge_size (10 MB) bytes, no newline", _HugeLine)
_register("endless-capa", "CAPA '+OK' then X-ENDLESS-n lines forever", _EndlessCapa)
_register("capa-eof", "CAPA '+OK', TOP, UIDL then FIN without '.'", _CapaEof)
_register("malformed-stat", "STAT answers '+OK banana'", _MalformedStat)
_register("apop-no-timestamp", "greeting without <...>; APOP -ERR", _ApopNoTimestamp)
_register("apop-bad-timestamp", "greeting timestamp <no-at-sign>; APOP accepted", _ApopBadTimestamp)
_register(
    "apop-ctrl-timestamp",
    "greeting timestamp with BEL/ESC bytes; APOP accepted",
    _ApopCtrlTimestamp,
)
_register("no-stls", "CAPA without STLS, STLS -ERR, plaintext login allowed", _NoStls)
_register("stls-err", "CAPA lists STLS, STLS answers -ERR [SYS/TEMP]", _StlsErr)
_register("stls-plaintext", "STLS '+OK' then stays plaintext", _StlsPlaintext)
_register("stls-close", "STLS '+OK' then closes the connection", _StlsClose)
_register(
    "stls-injection",
    "STLS '+OK ...\\r\\n+OK injected\\r\\n' in one write, then TLS",
    _StlsInjection,
    needs_tls=True,
)
_register(
    "tls10-only",
    "healthy but TLS 1.0 only (SECLEVEL=0)",
    Session,
    needs_tls=True,
    tls_profile="tls10",
)
_register(
    "capa-differs",
    "CAPA before TLS: SASL PLAIN + STLS; after TLS: SASL SCRAM-SHA-256 PLAIN LOGIN",
    _CapaDiffers,
    needs_tls=True,
)
_register(
    "in-use",
    "logins answer '-ERR [IN-USE] mailbox locked'",
    _LoginReply,
    reply="-ERR [IN-USE] mailbox locked",
)
_register(
    "login-delay",
    "logins answer '-ERR [LOGIN-DELAY] wait'",
    _LoginReply,
    reply="-ERR [LOGIN-DELAY] wait",
)
_register(
    "sys-temp",
    "logins answer '-ERR [SYS/TEMP] try later'",
    _LoginReply,
    reply="-ERR [SYS/TEMP] try later",
)
_register(
    "sys-perm",
    "logins answer '-ERR [SYS/PERM] mailbox unavailable'",
    _LoginReply,
    reply="-ERR [SYS/PERM] mailbox unavailable",
)
_register(
    "auth-code",
    "logins answer '-ERR [AUTH] bad password'",
    _LoginReply,
    reply="-ERR [AUTH] bad password",
)
_register("rst-after-pass", "RST instead of answering PASS/APOP/final AUTH", _RstAfterPass)
_register("endless-sasl", "every AUTH response gets another '+ <b64>' ('*' ends)", _EndlessSasl)
_register("bad-base64-sasl", "AUTH challenge '+ !!!notbase64'", _BadBase64Sasl)
_register(
    "xoauth2-error",
    "AUTH XOAUTH2: '+ <b64 json 401>', then '-ERR [AUTH] invalid token'",
    _Xoauth2Error,
)
_register("quit-silent", "never answers QUIT, keeps the connection open", _QuitSilent)
_register(
    "html-ansi-err",
    "logins answer '-ERR <script>alert(1)</script> ESC[31mred ESC[0m'",
    _LoginReply,
    reply="-ERR <script>alert(1)</script> \x1b[31mred\x1b[0m",
)
_register("echo-credentials", "logins answer -ERR bad password '<secret>'", _EchoCredentials)
_register(
    "stls-required-refuse",
    "CAPA without STLS, STLS -ERR, USER/PASS accepted in plaintext",
    _NoStls,
)

SCENARIOS: Mapping[str, Scenario] = MappingProxyType(_REGISTRY)
"""Every scenario by name."""


def scenario_names() -> list[str]:
    """Registered scenario names, sorted."""
    return sorted(_REGISTRY)


# --------------------------------------------------------------------------- the server


class FaultServer:
    """A POP3 server on 127.0.0.1 that behaves according to a named scenario.

    Use as a context manager (``with FaultServer("healthy") as srv: ...``) or call
    :meth:`start` and :meth:`stop`. ``users`` maps names to passwords (used for PASS,
    APOP, all SASL mechanisms, and as the bearer token for XOAUTH2/OAUTHBEARER).
    ``certfile``/``keyfile`` (or a ready ``tls_context``) enable STLS and implicit TLS.
    ``response_delay`` is slept before every response line (latency tests);
    ``drip_interval`` paces drip-greeting; ``huge_size`` sizes huge-line's line;
    ``messages`` is the mailbox size; ``allow_plaintext_auth=False`` refuses USER and
    PLAIN/LOGIN before TLS (like Dovecot's ``disable_plaintext_auth``);
    ``sasl_mechanisms`` overrides the offered SASL list.
    """

    def __init__(
        self,
        scenario: str = "healthy",
        *,
        users: Mapping[str, str] | None = None,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        tls_min_version: ssl.TLSVersion | None = None,
        tls_max_version: ssl.TLSVersion | None = None,
        response_delay: float = 0.0,
        drip_interval: float = 1.0,
        huge_size: int = 10 * 1024 * 1024,
        messages: int = 2,
        allow_plaintext_auth: bool = True,
        sasl_mechanisms: Iterable[str] = DEFAULT_SASL,
        hostname: str = "pop3mon.test",
        port: int = 0,
    ) -> None:
        if scenario not in _REGISTRY:
            close = difflib.get_close_matches(scenario, list(_REGISTRY), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown fault-server scenario {scenario!r}{hint}")
        self.scenario = _REGISTRY[scenario]
        if certfile is not None and tls_context is not None:
            raise ValueError("pass certfile/keyfile or tls_context, not both")
        if tls_context is None and certfile is not None:
            tls_context = self._make_context(
                certfile, keyfile, self.scenario.tls_profile, tls_min_version, tls_max_version
            )
        if (self.scenario.needs_tls or implicit_tls) and tls_context is None:
            raise ValueError(f"scenario {scenario!r} needs certfile/keyfile or tls_context")
        self.tls_context = tls_context
        self.options = _Options(
            users=MappingProxyType(dict(DEFAULT_USERS if users is None else users)),
            hostname=hostname,
            implicit_tls=implicit_tls,
            response_delay=response_delay,
            drip_interval=drip_interval,
            huge_size=huge_size,
            messages=messages,
            allow_plaintext_auth=allow_plaintext_auth,
            sasl_mechanisms=tuple(m.upper() for m in sasl_mechanisms),
        )
        self.log = ServerLog()
        self.stop_event = threading.Event()
        self._requested_port = port
        self._lock = threading.Condition()
        self._conns: dict[int, _Conn] = {}
        self._threads: list[threading.Thread] = []
        self._sni: dict[int, str] = {}
        self._next_id = 0
        self._connections = 0
        self._logins = 0
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._port = 0

    # ------------------------------------------------------------------ TLS setup

    def _make_context(
        self,
        certfile: str | os.PathLike[str],
        keyfile: str | os.PathLike[str] | None,
        profile: str,
        min_version: ssl.TLSVersion | None,
        max_version: ssl.TLSVersion | None,
    ) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        if profile == "tls10":
            min_version = max_version = ssl.TLSVersion.TLSv1
        legacy = {ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1}
        with warnings.catch_warnings():
            # Python deprecates TLSv1/TLSv1_1 constants; offering them is the point here.
            warnings.simplefilter("ignore", DeprecationWarning)
            if min_version in legacy or max_version in legacy:
                # OpenSSL 3 refuses TLS < 1.2 at the default security level 1; level 0
                # re-enables the SHA-1 based handshakes those versions need.
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            if min_version is not None:
                ctx.minimum_version = min_version
            if max_version is not None:
                ctx.maximum_version = max_version
        ctx.sni_callback = self._on_sni
        return ctx

    def _on_sni(
        self, tls: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext
    ) -> None:
        # Record the requested name so tests can check the client sends the right SNI.
        with self._lock:
            self._sni[id(tls)] = server_name or ""

    def pop_sni(self, tls_sock: ssl.SSLSocket) -> str:
        """SNI name the client sent on this socket's handshake (``""`` if none)."""
        with self._lock:
            return self._sni.pop(id(tls_sock), "")

    def wrap_conn(self, conn: _Conn, ctx: ssl.SSLContext) -> ssl.SSLSocket:
        """Replace the connection's socket by a server-side SSLSocket (handshake not run)."""
        # Under the lock so stop() never shuts down a detached socket object.
        with self._lock:
            tls_sock = ctx.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
            conn.sock = tls_sock
        return tls_sock

    # ------------------------------------------------------------------ life cycle

    def start(self) -> FaultServer:
        """Bind 127.0.0.1:port and start accepting; returns self."""
        if self._listener is not None:
            raise RuntimeError("FaultServer already started")
        listener = socket.create_server((HOST, self._requested_port), backlog=256)
        listener.settimeout(POLL_INTERVAL)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"faultserver-{self._port}-accept", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, shut every connection down and join every thread.

        Raises RuntimeError if a thread is still alive after ``timeout`` seconds.
        Idempotent.
        """
        if self._listener is None or self.stop_event.is_set():
            self.stop_event.set()
            return
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        try:
            # Wakes a blocked accept() at once on Linux; the accept thread closes it.
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            conns = list(self._conns.values())
            threads = list(self._threads)
            for conn in conns:
                try:
                    # Base-class shutdown on the fd: wakes a thread blocked in recv/send or
                    # in a TLS handshake without touching the SSL object it is using.
                    socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
                except OSError:
                    pass
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in [*threads, self._accept_thread] if t and t.is_alive()]
        if alive:
            raise RuntimeError(f"fault server threads did not stop: {alive}")

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        except RuntimeError:
            if exc is None:
                raise  # a leaked thread is a bug; never mask the test's own error with it

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        try:
            while not self.stop_event.is_set():
                try:
                    sock, addr = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self.stop_event.is_set():
                        break
                    # EMFILE and friends: back off instead of spinning.
                    self.stop_event.wait(0.05)
                    continue
                self._start_connection(sock, f"{addr[0]}:{addr[1]}")
        finally:
            listener.close()

    def _start_connection(self, sock: socket.socket, peer: str) -> None:
        with self._lock:
            if self.stop_event.is_set():
                sock.close()
                return
            self._next_id += 1
            self._connections += 1
            conn = _Conn(self._next_id, sock, peer)
            self._conns[conn.id] = conn
            thread = threading.Thread(
                target=self._handle,
                args=(conn,),
                name=f"faultserver-{self._port}-conn-{conn.id}",
                daemon=True,
            )
            # Forget finished threads so long load tests do not grow the list.
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _handle(self, conn: _Conn) -> None:
        self.log.add_event(conn.id, "connect", conn.peer)
        try:
            conn.sock.settimeout(POLL_INTERVAL)
            # Every write leaves at once: drip bytes one per segment, and the STLS +OK
            # with its injected line in one segment.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.scenario.session(self, conn, self.scenario).run()
        except Exception as exc:  # noqa: BLE001 - bad input must never kill the server
            self.log.add_event(conn.id, "error", repr(exc))
        finally:
            self.close_conn_socket(conn)
            self.log.add_event(conn.id, "close")
            with self._lock:
                self._conns.pop(conn.id, None)
                self._lock.notify_all()

    def close_conn_socket(self, conn: _Conn) -> None:
        """Close a connection's socket (no TLS close_notify, no exceptions)."""
        with self._lock:
            try:
                conn.sock.close()
            except OSError:
                pass

    def count_login(self) -> None:
        """Count one successful login."""
        with self._lock:
            self._logins += 1

    # ------------------------------------------------------------------ inspection

    @property
    def host(self) -> str:
        """Always ``127.0.0.1``."""
        return HOST

    @property
    def port(self) -> int:
        """The bound port (valid after start)."""
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return (HOST, self._port)

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return self._connections

    @property
    def active_connections(self) -> int:
        """Connections currently open."""
        with self._lock:
            return len(self._conns)

    @property
    def logins(self) -> int:
        """Successful logins so far."""
        with self._lock:
            return self._logins

    def commands(self, conn: int | None = None) -> list[str]:
        """Command verbs received, in order (see :meth:`ServerLog.commands`)."""
        return self.log.commands(conn)

    def plaintext_bytes(self, conn: int | None = None) -> bytes:
        """Everything received while unencrypted (grep it for secrets)."""
        return self.log.plaintext_bytes(conn)

    def wait_idle(self, timeout: float = 2.0) -> bool:
        """Wait until no connection is open, so the log holds a client's last line.

        Returns False on timeout.
        """
        with self._lock:
            return self._lock.wait_for(lambda: not self._conns, timeout)

    def __repr__(self) -> str:
        return f"FaultServer({self.scenario.name!r}, port={self._port})"
