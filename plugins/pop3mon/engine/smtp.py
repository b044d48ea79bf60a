"""The SMTP companion probe: DNS → (PING) → TCP → (TLS) → greeting 220 → EHLO →
(STARTTLS → TLS → EHLO) → (relay refusal) → (AUTH) → QUIT, one deadline, never raising.

It is the POP3 probe (:mod:`.session`) with the SMTP dialogue in place of the POP3 one:
resolving, dialing, TLS verification and certificate facts, the login policy and SASL
exchanges (:mod:`.auth`), pacing, the redacting transcript and the error tree are the same
code. Only the wire's framing (three-digit, possibly multi-line replies) and its command
allowlist differ (:class:`SmtpWire`).

It never sends mail: the allowlist is EHLO, STARTTLS, AUTH and QUIT, plus MAIL, RCPT and
RSET only when the connection type configures a relay-refusal check (``relay_check``),
whose recipient must be in a ``.invalid`` domain (RFC 2606: it can never exist). DATA is
not in any allowlist.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Final

from . import auth as auth_mod
from .errors import PolicyError, ProbeError, ProtocolError
from .pacing import LoginPacer
from .result import ProbeSpec
from .session import QUIT_WAIT, _Probe
from .wire import Deadline, Status, Wire, sanitize

__all__ = [
    "RELAY_COMMANDS",
    "ROUND_TRIP_COMMANDS",
    "SMTP_COMMANDS",
    "Reply",
    "SmtpProbe",
    "SmtpWire",
    "relay_recipient_problem",
    "smtp_offer",
]

#: What an SMTP probe may send; DATA never (pop3mon sends no mail).
SMTP_COMMANDS: Final = frozenset({"EHLO", "STARTTLS", "AUTH", "QUIT"})
#: Added to :data:`SMTP_COMMANDS` only for a connection type with ``relay_check``: an
#: envelope that is reset before any DATA could follow it.
RELAY_COMMANDS: Final = frozenset({"MAIL", "RCPT", "RSET"})
#: Added only for the opt-in mail round trip's own submission session
#: (engine/roundtrip.py): the one place pop3mon sends DATA, one message per run.
ROUND_TRIP_COMMANDS: Final = frozenset({"MAIL", "RCPT", "DATA", "RSET"})

REPLY_LINE_MAX = 512  # RFC 5321 §4.5.3.1.5: a reply line, CRLF included
REPLY_MAX_LINES = 100  # an EHLO answer has a dozen; more is a broken or hostile server

_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -]|$)(.*)$", re.S)

#: SMTP reply codes of a refused AUTH, in the response-code vocabulary the POP3 login
#: already maps to error kinds (``auth._CODE_KINDS`` / ``TLS_REQUIRED_CODES``): one
#: mapping, so a refusal reads and counts the same whichever protocol made the login.
_AUTH_CODES: Final = {
    535: "AUTH",  # RFC 4954: authentication credentials invalid
    454: "SYS/TEMP",  # RFC 4954: temporary authentication failure
    530: "PRIVACYREQUIRED",  # RFC 3207: must issue a STARTTLS command first
    538: "PRIVACYREQUIRED",  # RFC 4954: encryption required for requested mechanism
}


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: its code and the text of each line (sanitised)."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The first line's text: what reasons quote."""
        return self.lines[0] if self.lines else ""

    def shown(self) -> str:
        """``"<code> <text>"`` for a reason."""
        return f"{self.code} {self.text}".rstrip()


def relay_recipient_problem(recipient: str) -> str:
    """Why ``recipient`` cannot be the relay check's recipient ("" when it can): a plain
    ``local@domain`` whose domain ends in ``.invalid``, so a relay that accepted it could
    never deliver anything to anyone."""
    local, at, domain = recipient.rpartition("@")
    if not at or not local or not domain or any(c in recipient for c in "<> \r\n\t,"):
        return "is not a plain address local@domain"
    if not domain.lower().rstrip(".").endswith(".invalid"):
        return "must be in a .invalid domain (RFC 2606), e.g. relay-test@example.invalid"
    return ""


class SmtpWire(Wire):
    """The SMTP side of the wire: three-digit replies and the SMTP allowlist."""

    protocol_name = "SMTP"

    def __init__(
        self,
        sock: socket.socket,
        deadline: Deadline,
        *,
        started: float,
        cleartext_allowed: bool = False,
        relay: bool = False,
        send: bool = False,
    ) -> None:
        super().__init__(sock, deadline, started=started, cleartext_allowed=cleartext_allowed)
        # Per connection type: MAIL/RCPT/RSET exist only where a relay check asks for them.
        self.allowed = SMTP_COMMANDS | RELAY_COMMANDS if relay else SMTP_COMMANDS
        if send:
            # Only the round trip's own session (engine/roundtrip.py) is built with send.
            self.allowed = self.allowed | ROUND_TRIP_COMMANDS

    def message(self, data: bytes, stage: str) -> None:
        """The message after ``354``: dot-stuffed, CRLF lines, ended by ``.``. Refused
        unless this wire may send DATA and DATA was the last command sent."""
        if "DATA" not in self.allowed or self.sent_verbs[-1:] != ["DATA"]:
            raise PolicyError(
                "pop3mon sends a message only in the round trip's session, right after DATA",
                kind="command-refused",
                stage=stage,
            )
        lines = data.replace(b"\r\n", b"\n").split(b"\n")
        body = b"".join(
            (b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines
        )
        self.note("C", f"(message, {len(body)} octets)")
        self._write(body + b".\r\n", stage)

    def reply(self, stage: str) -> Reply:
        """Read one (possibly multi-line) reply within the deadline; a line that is not
        ``NNN text`` / ``NNN-text`` or a code that changes mid-reply is a protocol error."""
        code = 0
        lines: list[str] = []
        while True:
            raw = self.read_line(stage, REPLY_LINE_MAX)
            self.note("S", sanitize(raw))
            match = _LINE.match(raw)
            if match is None or (code and int(match.group(1)) != code):
                shown = sanitize(raw, 60) or "(empty line)"
                raise ProtocolError(
                    f"server sent an invalid SMTP reply line during {stage}: {shown!r}",
                    kind="bad-status-line",
                    stage=stage,
                )
            code = int(match.group(1))
            lines.append(sanitize(match.group(3).strip()))
            if match.group(2) != b"-":
                return Reply(code, tuple(lines))
            if len(lines) >= REPLY_MAX_LINES:
                raise ProtocolError(
                    f"reply during {stage} exceeded {REPLY_MAX_LINES} lines",
                    kind="response-too-long",
                    stage=stage,
                )

    def sasl_reply(self, stage: str) -> Status | bytes:
        """RFC 4954: ``334 <base64>`` is a challenge (its payload returned still encoded);
        any other reply ends the exchange, ``235`` being success."""
        reply = self.reply(stage)
        if reply.code == 334:
            return reply.text.encode("ascii", "replace")
        return Status(reply.code == 235, reply.shown(), _AUTH_CODES.get(reply.code, ""))


def _ehlo_keywords(reply: Reply) -> tuple[str, ...]:
    """The extension lines of a 250 EHLO reply (the first line is the server's name)."""
    return tuple(line for line in reply.lines[1:] if line)


def _has(caps: tuple[str, ...] | None, keyword: str) -> bool:
    return any(c.upper().split()[:1] == [keyword] for c in caps or ())


def smtp_offer(caps: tuple[str, ...] | None) -> auth_mod.Offer:
    """What an EHLO answer (its extension lines) offers to log in with."""
    sasl: set[str] = set()
    for line in caps or ():
        # "AUTH=PLAIN LOGIN" is the pre-RFC 4954 spelling some servers still add.
        words = line.upper().replace("AUTH=", "AUTH ", 1).split()
        if words[:1] == ["AUTH"]:
            sasl.update(words[1:])
    return auth_mod.Offer(
        sasl=frozenset(sasl),
        user=False,
        capa_known=caps is not None,
        timestamp=None,
        timestamp_seen=False,
        stls=_has(caps, "STARTTLS"),
    )


class SmtpProbe(_Probe):
    """One SMTP probe. Use :func:`.dispatch.probe` with ``protocol="smtp"``."""

    def __init__(self, spec: ProbeSpec, pacer: LoginPacer | None = None) -> None:
        super().__init__(spec, pacer)
        self.ehlo_name = spec.ehlo_name

    def make_wire(self, sock: socket.socket) -> Wire:
        if not self.ehlo_name:
            self.ehlo_name = _address_literal(sock)
        return SmtpWire(
            sock,
            self.deadline,
            started=self.t0,
            cleartext_allowed=self.spec.allow_cleartext,
            relay=bool(self.spec.relay_check),
        )

    def plaintext_to_tls(self, sock: socket.socket) -> bool:
        wire = SmtpWire(sock, self.deadline, started=self.t0)
        if wire.reply("tls").code != 220:
            return False
        wire.command("EHLO", self.ehlo_name or _address_literal(sock), stage="tls")
        if wire.reply("tls").code != 250:
            return False
        wire.command("STARTTLS", stage="tls")
        return wire.reply("tls").code == 220

    def login_offer(self, caps: tuple[str, ...] | None) -> auth_mod.Offer:
        return smtp_offer(caps)

    # -- the SMTP dialogue -----------------------------------------------------------------
    def dialogue(self, wire: Wire, sock: socket.socket) -> None:
        assert isinstance(wire, SmtpWire)
        self.stage = "greeting"
        self.smtp_greeting(wire)
        self.stage = "ehlo"
        self.caps_before = self.ehlo(wire, "ehlo")
        if self.spec.security in ("starttls", "starttls-optional"):
            self.stage = "starttls"
            self.smtp_starttls(wire, sock)
        if self.spec.relay_check:
            self.stage = "relay"
            self.relay(wire)
        self.stage = "auth"
        if self.authenticate(wire):
            self.after_login(wire)
        self.stage = "quit"
        self.quit(wire)

    def after_login(self, wire: SmtpWire) -> None:
        """What the session does once logged in, before QUIT: nothing here (the round
        trip's sender sends its one message)."""

    def smtp_greeting(self, wire: SmtpWire) -> None:
        with self.phase("greeting"):
            reply = wire.reply("greeting")
        self.greeting = " ".join(reply.lines)[:300]
        if reply.code != 220:
            # 554 (RFC 5321 §3.1: no service here) or 421 (service not available now).
            raise ProtocolError(
                f"server greeting is {reply.shown() or reply.code} (not accepting sessions)",
                kind="greeting-refused",
                stage="greeting",
            )
        self.ok("greeting")

    def ehlo(self, wire: SmtpWire, stage: str) -> tuple[str, ...]:
        with self.phase(stage):
            wire.command("EHLO", self.ehlo_name, stage=stage)
            reply = wire.reply(stage)
        if reply.code != 250:
            raise ProtocolError(
                f"server refused EHLO {self.ehlo_name}: {reply.shown()}",
                kind="ehlo-refused",
                stage=stage,
            )
        self.ok(stage)
        return _ehlo_keywords(reply)

    def smtp_starttls(self, wire: SmtpWire, sock: socket.socket) -> None:
        """RFC 3207, with the STARTTLS command-injection check the POP3 probe makes
        (:meth:`~.session._Probe.upgrade_to_tls`)."""

        def answer() -> tuple[bool, str]:
            reply = wire.reply("starttls")
            return reply.code == 220, reply.shown()

        if self.upgrade_to_tls(
            wire,
            sock,
            stage="starttls",
            command="STARTTLS",
            offered=_has(self.caps_before, "STARTTLS"),
            listed_in="EHLO",
            answer=answer,
            ok_word="220",
        ):
            # RFC 3207 §4.2: forget everything learnt before TLS and ask again.
            self.stage = "ehlo_tls"
            self.caps_after = self.ehlo(wire, "ehlo_tls")

    def relay(self, wire: SmtpWire) -> None:
        """MAIL FROM:<> / RCPT TO:<relay_check> / RSET, before any login: a 2xx to the RCPT
        is an open relay. The envelope is reset at once; DATA is never sent."""
        recipient = self.spec.relay_check
        problem = relay_recipient_problem(recipient)
        if problem:
            # A spec built in code; the config loader refuses such a recipient.
            self.mark(
                "relay", "warn", f"relay check not made: recipient {problem}", "relay-inconclusive"
            )
            return
        with self.phase("relay"):
            wire.command("MAIL", "FROM:<>", stage="relay")
            mail = wire.reply("relay")
            if mail.code // 100 != 2:
                self.relay_reply = mail.shown()
                self.mark(
                    "relay",
                    "warn",
                    f"relay check inconclusive: MAIL FROM:<> refused ({mail.shown()})",
                    "relay-inconclusive",
                )
                return
            wire.command("RCPT", f"TO:<{recipient}>", stage="relay")
            rcpt = wire.reply("relay")
            wire.command("RSET", stage="relay")
            rset = wire.reply("relay")
        self.relay_reply = rcpt.shown()
        if rcpt.code // 100 == 2:
            self.relay_open = True
            self.mark(
                "relay",
                "ok",
                f"RCPT TO:<{recipient}> accepted without a login ({rcpt.shown()})",
            )
        else:
            self.relay_open = False
            self.mark("relay", "ok", f"relaying refused: RCPT TO:<{recipient}> got {rcpt.shown()}")
        if rset.code != 250:
            outcome = self.stages["relay"]
            self.mark("relay", outcome.status, f"{outcome.reason}; RSET got {rset.shown()}")

    def quit(self, wire: Wire) -> None:
        assert isinstance(wire, SmtpWire)
        saved = wire.deadline
        wire.deadline = Deadline(max(0.0, min(QUIT_WAIT, saved.remaining())))
        try:
            with self.phase("quit"):
                wire.command("QUIT", stage="quit")
                reply = wire.reply("quit")
            if reply.code == 221:
                self.ok("quit")
            else:
                self.mark("quit", "warn", f"server answered QUIT with {reply.shown()}")
        except ProbeError as exc:
            self.mark("quit", "warn", f"QUIT not answered cleanly: {exc.reason}", exc.kind)
        finally:
            wire.deadline = saved


def _address_literal(sock: socket.socket) -> str:
    """RFC 5321 §4.1.3 address literal of our end: a valid EHLO name without DNS."""
    try:
        address = str(sock.getsockname()[0])
    except OSError:
        return "[127.0.0.1]"
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"
