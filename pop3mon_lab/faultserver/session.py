"""The healthy POP3 dialogue (:class:`Session`) and what names a behaviour (:class:`Scenario`).

With the ``healthy`` scenario :class:`Session` is a complete, RFC-conforming reference
server: APOP, CAPA, STLS, USER/PASS, SASL (see :mod:`.sasl`), STAT/LIST/UIDL/RETR/TOP/DELE.
Fault scenarios (:mod:`.scenarios`) subclass it and override the one step they break.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

from .channel import Channel
from .common import (
    AUTH_STATE_COMMANDS,
    PLAINTEXT_MECHS,
    TRANSACTION_COMMANDS,
    Conn,
    ServerHandle,
    as_text,
)
from .sasl import SaslMechanisms, SaslOutcome

__all__ = ["Scenario", "Session"]


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


class Session(Channel, SaslMechanisms):
    """The healthy POP3 dialogue for one connection; scenarios subclass and override.

    The methods are small on purpose so a scenario overrides exactly the step it breaks:
    :meth:`greet`, :meth:`capabilities`, a ``cmd_*`` handler, :meth:`sasl_exchange` or
    :meth:`finish_login`.
    """

    apop: ClassVar[bool] = True
    # Cap on SASL challenge rounds; a real server stops a client that never finishes.
    max_sasl_rounds: ClassVar[int | None] = 16

    def __init__(self, server: ServerHandle, conn: Conn, scenario: Scenario) -> None:
        super().__init__(server, conn)
        self.scenario = scenario
        self.state: Literal["authorization", "transaction"] = "authorization"
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
            line = as_text(raw.rstrip(b"\r\n"))
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            allowed = AUTH_STATE_COMMANDS if self.state == "authorization" else TRANSACTION_COMMANDS
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
        return [m for m in self.opts.sasl_mechanisms if allowed or m not in PLAINTEXT_MECHS]

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

    def sasl_rounds(
        self,
        mech: str,
        first: bytes | None,
        *,
        challenge: str,
        aborted: str,
        bad_base64: str,
        too_many: str,
    ) -> SaslOutcome | None:
        """The SASL exchange of ``mech`` on the wire, both protocols' way: each challenge
        after ``challenge`` (POP3 "+ ", SMTP "334 "), base64 responses; the outcome, or None
        once it answered one of the error lines (or the client went away)."""
        exchange = self.sasl_exchange(mech, first)
        rounds = 0
        try:
            text = next(exchange)
            while True:
                rounds += 1
                if self.max_sasl_rounds is not None and rounds > self.max_sasl_rounds:
                    self.reply(too_many)
                    return None
                if not self.reply(challenge + text):
                    return None
                raw = self.readline()
                if raw is None:
                    return None
                self.log.add_line(self.conn.id, "sasl", raw, self.conn.tls)
                line = as_text(raw.rstrip(b"\r\n"))
                if line == "*":
                    self.reply(aborted)
                    return None
                try:
                    response = base64.b64decode(line, validate=True)
                except binascii.Error:
                    self.reply(bad_base64)
                    return None
                text = exchange.send(response)
        except StopIteration as done:
            outcome: SaslOutcome = done.value
            return outcome

    def cmd_auth(self, arg: str) -> None:
        """AUTH mech [initial-response] (RFC 5034); bare AUTH lists mechanisms."""
        if not arg.strip():
            self.reply_multi("+OK Mechanisms follow", self.sasl_mechanisms())
            return
        mech, _, initial = arg.strip().partition(" ")
        mech = mech.upper()
        if mech in PLAINTEXT_MECHS and not self.plaintext_auth_allowed():
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
        outcome = self.sasl_rounds(
            mech,
            first,
            challenge="+ ",
            aborted="-ERR Authentication aborted.",
            bad_base64="-ERR Invalid base64 data in continued response.",
            too_many="-ERR Too many SASL rounds.",
        )
        if outcome is None:
            return
        self.finish_login(outcome)

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

    # ------------------------------------------------------------------ transaction

    def message(self, number: int) -> list[str]:
        """Lines of message ``number`` (1-based); one line starts with a dot on purpose so
        clients' dot-unstuffing is exercised."""
        if self.opts.mailbox:
            return list(self.opts.mailbox[number - 1])
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
        count = len(self.opts.mailbox) if self.opts.mailbox else self.opts.messages
        return [n for n in range(1, count + 1) if n not in self.deleted]

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
