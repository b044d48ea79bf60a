"""The fault scenarios: how each one breaks the healthy dialogue, and the registry of names.

Real Dovecot covers the success path; these cover what real servers will not do on demand:
hostile and broken behaviour (silent or dripping greetings, endless multi-line answers,
STARTTLS injection, credential echo, resets mid-login ...). Each is a small
:class:`~.session.Session` subclass overriding the one step it breaks, registered under a
name with a one-line summary (``FaultServer(name)`` looks it up in :data:`SCENARIOS`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Literal

from .common import Conn, ServerHandle, as_text, b64
from .echo import encode_echo
from .sasl import SaslExchange, SaslOutcome
from .session import Scenario, Session
from .smtp import SMTP_SCENARIOS

__all__ = ["SCENARIOS", "scenario_names"]


class _HealthyNoApop(Session):
    apop = False


class _RstOnConnect(Session):
    def run(self) -> None:
        self.reset()


class _FlakyFirst(Session):
    """A server restarting or failing over: the first ``flaky_first`` connections it
    accepts (counted per server) are reset at once, every later one is healthy."""

    def run(self) -> None:
        if self.conn.id <= self.opts.flaky_first:
            self.reset()
            return
        super().run()


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


class _SlowGreeting(Session):
    def greet(self) -> bool:
        # drip_interval doubles as the delay: a healthy server whose greeting comes late
        # (what discovery's short wait for a plaintext greeting must not misjudge).
        return self.pause(self.opts.drip_interval) and super().greet()


class _ErrGreeting(Session):
    def greet(self) -> bool:
        if self.reply("-ERR go away"):
            self.half_close()
        return False


class _GarbageGreeting(Session):
    def greeting(self) -> str:
        return as_text(b"\x00\xff\xfe\x16\x03\x01GARBAGE\x00\x1b[2J\x80 greeting")


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
    def __init__(self, server: ServerHandle, conn: Conn, scenario: Scenario) -> None:
        super().__init__(server, conn, scenario)
        self.timestamp = None


class _ApopBadTimestamp(Session):
    """APOP stays usable (a careless client succeeds); the greeting's msg-id is invalid."""

    bad_timestamp: ClassVar[str] = "<no-at-sign>"

    def __init__(self, server: ServerHandle, conn: Conn, scenario: Scenario) -> None:
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


class _TlsFirst(Session):
    """Lists every mechanism before TLS (USER, SASL PLAIN ...) and STLS, but answers every
    login command before STLS with the scenario's line (Courier's ``POP3_TLS_REQUIRED``);
    after STLS a healthy server."""

    def plaintext_auth_allowed(self) -> bool:
        return True

    def _refused_before_tls(self) -> bool:
        if self.conn.tls:
            return False
        self.log.add_event(self.conn.id, "login-failed", "")
        self.reply(self.scenario.reply)
        return True

    def cmd_user(self, arg: str) -> None:
        if not self._refused_before_tls():
            super().cmd_user(arg)

    def cmd_apop(self, arg: str) -> None:
        if not self._refused_before_tls():
            super().cmd_apop(arg)

    def cmd_auth(self, arg: str) -> None:
        if not arg.strip() or not self._refused_before_tls():
            super().cmd_auth(arg)


class _ScramHugeIterations(Session):
    """SCRAM server-first with i=100000000: minutes of PBKDF2 for a client that obliges."""

    scram_iterations = 100_000_000


class _ScramSlowKey(Session):
    """SCRAM server-first sent after ``challenge_delay`` with i=1000000 (pop3mon's cap):
    the client's key derivation takes about half a second and starts just before its
    deadline."""

    scram_iterations = 1_000_000

    def before_server_first(self) -> bool:
        return self.pause(self.opts.challenge_delay)


class _RstAfterPass(Session):
    def finish_login(self, outcome: SaslOutcome) -> None:
        self.reset()


class _RstOnStat(Session):
    def cmd_stat(self, arg: str) -> None:
        self.reset()


class _EchoCredentials(Session):
    def finish_login(self, outcome: SaslOutcome) -> None:
        # The secret as received: PASS argument, decoded PLAIN/LOGIN password, APOP or
        # CRAM digest. Clients must scrub it from anything they report.
        self.log.add_event(self.conn.id, "login-failed", outcome.user)
        self.reply(f"-ERR bad password '{outcome.secret}'")


class _EchoEncoded(Session):
    """Every login fails and the answer carries the secret in the encoding its login name
    asks for (:data:`~.echo.ECHO_ENCODINGS`); OAuth logins first get an RFC 7628 error
    challenge whose JSON carries the token escaped (``\\/``, ``\\uXXXX``)."""

    def sasl_mechanisms(self) -> list[str]:
        return [*super().sasl_mechanisms(), "XOAUTH2", "OAUTHBEARER"]

    def sasl_exchange(self, mech: str, first: bytes | None) -> SaslExchange:
        if mech in ("XOAUTH2", "OAUTHBEARER"):
            return self._oauth_echo(mech, first)
        return super().sasl_exchange(mech, first)

    def _oauth_echo(self, mech: str, first: bytes | None) -> SaslExchange:
        data = as_text(first if first is not None else (yield ""))
        # key=value pairs separated by ^A; OAUTHBEARER names the user in its GS2 header
        # ("n,a=alice,") before the first ^A, XOAUTH2 in a user= pair.
        header, _, rest = data.partition("\x01")
        parts = (
            [*header.split(","), *rest.split("\x01")]
            if mech == "OAUTHBEARER"
            else data.split("\x01")
        )
        pairs = [part.partition("=") for part in parts]
        fields = {key: value for key, sep, value in pairs if sep}
        user = fields.get("user" if mech == "XOAUTH2" else "a", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        escaped = encode_echo("json-ascii", token)
        yield b64('{"status":"invalid_token","token":"' + escaped + '"}')
        return SaslOutcome(user, False, token)

    def finish_login(self, outcome: SaslOutcome) -> None:
        self.log.add_event(self.conn.id, "login-failed", outcome.user)
        self.reply(f"-ERR [AUTH] bad password {encode_echo(outcome.user, outcome.secret)}")


class _EndlessSasl(Session):
    max_sasl_rounds = None

    def sasl_exchange(self, mech: str, first: bytes | None) -> SaslExchange:
        return self._endless()

    def _endless(self) -> SaslExchange:
        # Honours "*" (the driver answers -ERR), otherwise challenges forever.
        while True:
            yield b64(os.urandom(12))


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
        yield b64(json.dumps(error))
        return SaslOutcome("", False, reply="-ERR [AUTH] invalid token")


class _EnforcedLoginDelay(Session):
    """Announces ``LOGIN-DELAY n`` (RFC 2449 §6.8) and refuses, with ``[LOGIN-DELAY]``, a
    login of a user who logged in to this server less than ``n`` seconds ago."""

    login_delay: ClassVar[int] = 2
    _last: ClassVar[dict[tuple[int, str], float]] = {}
    _lock: ClassVar = threading.Lock()

    def capabilities(self) -> list[str]:
        caps = super().capabilities()
        if self.state == "authorization":
            caps.insert(-1, f"LOGIN-DELAY {self.login_delay}")
        return caps

    def finish_login(self, outcome: SaslOutcome) -> None:
        if outcome.ok and not outcome.reply:
            key = (id(self.server), outcome.user)
            with self._lock:
                now = time.monotonic()
                last = self._last.get(key)
                too_soon = last is not None and now - last < self.login_delay
                if not too_soon:
                    self._last[key] = now
            if too_soon:
                self.log.add_event(self.conn.id, "login-failed", outcome.user)
                self.reply("-ERR [LOGIN-DELAY] logged in too recently")
                return
        super().finish_login(outcome)


class _LongLoginDelay(_EnforcedLoginDelay):
    login_delay = 900


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
_register(
    "flaky-first",
    "RST the first flaky_first (1) connections of this server at once, healthy after",
    _FlakyFirst,
)
_register("no-greeting", "accept, never send; logs what the client sends", _NoGreeting)
_register("drip-greeting", "'+OK dripping...' one byte per drip_interval, no CRLF", _DripGreeting)
_register("slow-greeting", "healthy, but greets only after drip_interval seconds", _SlowGreeting)
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
_register(
    "tls-required-text",
    "CAPA lists all + STLS; logins before STLS: '-ERR TLS required to log in.' (Courier)",
    _TlsFirst,
    needs_tls=True,
    reply="-ERR TLS required to log in.",
)
_register(
    "tls-required-code",
    "CAPA lists all + STLS; logins before STLS: '-ERR [PRIVACYREQUIRED] Login refused.'",
    _TlsFirst,
    needs_tls=True,
    reply="-ERR [PRIVACYREQUIRED] Login refused.",
)
_register(
    "tls-required-auth",
    "CAPA lists all + STLS; logins before STLS: '-ERR [AUTH] Not permitted.' (no secret seen)",
    _TlsFirst,
    needs_tls=True,
    reply="-ERR [AUTH] Not permitted.",
)
_register(
    "scram-huge-iterations",
    "SCRAM server-first message with i=100000000",
    _ScramHugeIterations,
)
_register(
    "scram-slow-key",
    "SCRAM server-first after challenge_delay, with i=1000000",
    _ScramSlowKey,
)
_register("rst-after-pass", "RST instead of answering PASS/APOP/final AUTH", _RstAfterPass)
_register("rst-on-stat", "healthy login, then RST instead of answering STAT", _RstOnStat)
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
    "echo-encoded",
    "logins fail echoing the secret in the encoding named by the login name (faultserver.echo)",
    _EchoEncoded,
)
_register(
    "stls-required-refuse",
    "CAPA without STLS, STLS -ERR, USER/PASS accepted in plaintext",
    _NoStls,
)

SCENARIOS: Mapping[str, Scenario] = MappingProxyType(_REGISTRY)
"""Every scenario by name."""


_register(
    "login-delay-2",
    "CAPA announces LOGIN-DELAY 2; a user's login within 2 s of the last is -ERR [LOGIN-DELAY]",
    _EnforcedLoginDelay,
)
_register(
    "login-delay-900",
    "CAPA announces LOGIN-DELAY 900 and enforces it like login-delay-2",
    _LongLoginDelay,
)


# The SMTP scenarios (faultserver/smtp.py): same server, same registry, "smtp-" names.
for _name, (_summary, _session, _needs_tls) in SMTP_SCENARIOS.items():
    _register(_name, _summary, _session, needs_tls=_needs_tls)


def scenario_names() -> list[str]:
    """Registered scenario names, sorted."""
    return sorted(_REGISTRY)
