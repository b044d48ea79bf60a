"""The SMTP side of the fault server: a healthy ESMTP dialogue and its fault scenarios.

Real Postfix and Dovecot's submission service cover the success path; these cover what
real servers will not do on demand (a 554 greeting, STARTTLS missing or injected, AUTH
refused, a silent or garbage greeting, an open relay). :class:`SmtpSession` reuses the
POP3 session's channel, TLS and SASL mechanisms (:mod:`.sasl`) and replaces the dialogue:
EHLO/HELO, STARTTLS (RFC 3207), AUTH (RFC 4954, ``334`` challenges), MAIL/RCPT/RSET,
NOOP, QUIT. DATA is answered ``554``: it is never expected, and the log shows it if sent.
Every line a client sends is logged as for POP3 (``FaultServer.commands()``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from .common import PLAINTEXT_MECHS, Conn, ServerHandle, as_text
from .sasl import SaslOutcome
from .session import Scenario, Session

__all__ = ["SMTP_SCENARIOS", "SmtpSession"]

#: The domain the healthy server is the final destination for; any other is relaying.
LOCAL_DOMAIN = "pop3mon.test"


class SmtpSession(Session):
    """The healthy ESMTP dialogue for one connection; scenarios subclass and override."""

    relay_open = False

    def __init__(self, server: ServerHandle, conn: Conn, scenario: Scenario) -> None:
        super().__init__(server, conn, scenario)
        self.ehlo_seen = False
        self.handlers: dict[str, Callable[[str], None]] = {
            "EHLO": self.cmd_ehlo,
            "HELO": self.cmd_helo,
            "STARTTLS": self.cmd_starttls,
            "AUTH": self.cmd_auth,
            "MAIL": self.cmd_mail,
            "RCPT": self.cmd_rcpt,
            "RSET": self.cmd_rset,
            "DATA": self.cmd_data,
            "NOOP": self.cmd_noop,
            "QUIT": self.cmd_quit,
        }

    # ------------------------------------------------------------------ dialogue
    def greeting(self) -> str:
        return f"220 {self.opts.hostname} ESMTP pop3mon fault server"

    def serve_commands(self) -> None:
        while not self.closing:
            raw = self.readline()
            if raw is None:
                return
            self.log.add_line(self.conn.id, "command", raw, self.conn.tls)
            verb, _, arg = as_text(raw.rstrip(b"\r\n")).partition(" ")
            handler = self.handlers.get(verb.upper())
            if handler is None:
                self.reply("500 5.5.2 Error: command not recognized")
                continue
            handler(arg)

    def extensions(self) -> list[str]:
        """EHLO keywords (after the first line)."""
        ext = ["PIPELINING", "SIZE 10240000"]
        if self.stls_available():
            ext.append("STARTTLS")
        mechs = self.sasl_mechanisms()
        if mechs and self.state == "authorization":
            ext.append("AUTH " + " ".join(mechs))
        ext += ["ENHANCEDSTATUSCODES", "8BITMIME"]
        return ext

    def cmd_ehlo(self, arg: str) -> None:
        self.ehlo_seen = True
        lines = [self.opts.hostname, *self.extensions()]
        text = "\r\n".join(
            f"250{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines)
        )
        self.reply(text)

    def cmd_helo(self, arg: str) -> None:
        self.reply(f"250 {self.opts.hostname}")

    def cmd_starttls(self, arg: str) -> None:
        if not self.stls_available():
            self.reply("454 4.7.0 TLS not available")
            return
        if self.reply("220 2.0.0 Ready to start TLS") and not self.start_tls():
            self.closing = True

    def cmd_auth(self, arg: str) -> None:
        mech, _, initial = arg.strip().partition(" ")
        mech = mech.upper()
        if self.state != "authorization":
            self.reply("503 5.5.1 Error: already authenticated")
            return
        if mech in PLAINTEXT_MECHS and not self.plaintext_auth_allowed():
            self.reply("530 5.7.0 Must issue a STARTTLS command first")
            return
        if mech not in self.sasl_mechanisms():
            self.reply("504 5.5.4 Unsupported authentication mechanism")
            return
        first: bytes | None = None
        if initial:
            try:
                first = b"" if initial == "=" else base64.b64decode(initial, validate=True)
            except binascii.Error:
                self.reply("501 5.5.2 Invalid base64 data in initial response")
                return
        outcome = self.sasl_rounds(
            mech,
            first,
            challenge="334 ",
            aborted="501 5.7.0 Authentication aborted",
            bad_base64="501 5.5.2 Invalid base64 data in continued response",
            too_many="535 5.7.8 Too many SASL rounds",
        )
        if outcome is None:
            return
        self.finish_login(outcome)

    def finish_login(self, outcome: SaslOutcome) -> None:
        if not outcome.ok or outcome.reply:
            self.log.add_event(self.conn.id, "login-failed", outcome.user)
            self.reply("535 5.7.8 Error: authentication failed")
            return
        self.state = "transaction"
        self.user = outcome.user
        self.server.count_login()
        self.log.add_event(self.conn.id, "login", outcome.user)
        self.reply("235 2.7.0 Authentication successful")

    def cmd_mail(self, arg: str) -> None:
        self.reply("250 2.1.0 Ok")

    def cmd_rcpt(self, arg: str) -> None:
        address = arg.partition(":")[2].strip().strip("<>")
        domain = address.rpartition("@")[2].lower()
        if domain == LOCAL_DOMAIN or self.relay_open or self.state == "transaction":
            self.reply("250 2.1.5 Ok")
        else:
            self.reply(f"554 5.7.1 <{address}>: Relay access denied")

    def cmd_rset(self, arg: str) -> None:
        self.reply("250 2.0.0 Ok")

    def cmd_data(self, arg: str) -> None:
        self.log.add_event(self.conn.id, "data-refused")
        self.reply("554 5.5.1 Error: the pop3mon fault server takes no mail")

    def cmd_noop(self, arg: str) -> None:
        self.reply("250 2.0.0 Ok")

    def cmd_quit(self, arg: str) -> None:
        self.reply("221 2.0.0 Bye")
        self.closing = True


class _Smtp554Greeting(SmtpSession):
    def greet(self) -> bool:
        if self.reply("554 5.3.2 pop3mon fault server: no SMTP service here"):
            self.serve_commands()  # RFC 5321 §3.1: wait for QUIT, refuse the rest
        return False

    def cmd_ehlo(self, arg: str) -> None:
        self.reply("503 5.5.1 Error: no SMTP service here")


class _SmtpNoStarttls(SmtpSession):
    def stls_available(self) -> bool:
        return False


class _SmtpStarttlsInjection(SmtpSession):
    def cmd_starttls(self, arg: str) -> None:
        # The attack as the server side shows it: a reply to a pipelined command arrives
        # in the same segment as the 220; a client that keeps it reads it over TLS.
        sent = self.send(b"220 2.0.0 Ready to start TLS\r\n250 2.0.0 injected\r\n")
        if sent and not self.start_tls():
            self.closing = True


class _SmtpAuthRefused(SmtpSession):
    def finish_login(self, outcome: SaslOutcome) -> None:
        self.log.add_event(self.conn.id, "login-failed", outcome.user)
        self.reply("535 5.7.8 Error: authentication failed")


class _SmtpSlowGreeting(SmtpSession):
    def greet(self) -> bool:
        # drip_interval doubles as the delay: a greeting that comes, but late.
        return self.pause(self.opts.drip_interval) and self.reply(self.greeting())


class _SmtpHang(SmtpSession):
    def greet(self) -> bool:
        self.drain()
        return False


class _SmtpGarbage(SmtpSession):
    def greeting(self) -> str:
        return as_text(b"\x00\xff\xfe\x16\x03\x01GARBAGE\x00\x1b[2J\x80 greeting")


class _SmtpOpenRelay(SmtpSession):
    relay_open = True


#: name -> (summary, session class, needs TLS); registered by :mod:`.scenarios`.
SMTP_SCENARIOS: dict[str, tuple[str, type[Session], bool]] = {
    "smtp-healthy": (
        "ESMTP: 220, EHLO, STARTTLS (with a cert), AUTH, relay refused",
        SmtpSession,
        False,
    ),
    "smtp-554-greeting": (
        "'554 5.3.2 no SMTP service here', then only QUIT",
        _Smtp554Greeting,
        False,
    ),
    "smtp-no-starttls": ("healthy ESMTP without STARTTLS in EHLO", _SmtpNoStarttls, False),
    "smtp-starttls-injection": (
        "STARTTLS '220 ...\\r\\n250 2.0.0 injected\\r\\n' in one write, then TLS",
        _SmtpStarttlsInjection,
        True,
    ),
    "smtp-auth-refused": ("every AUTH ends '535 5.7.8'", _SmtpAuthRefused, False),
    "smtp-slow-greeting": ("220 only after drip_interval seconds", _SmtpSlowGreeting, False),
    "smtp-hang": ("accept, never send a byte; logs what the client sends", _SmtpHang, False),
    "smtp-garbage": ("binary greeting with NUL/0xFF/ESC bytes", _SmtpGarbage, False),
    "smtp-open-relay": ("RCPT TO any domain answered 250 without a login", _SmtpOpenRelay, False),
}
