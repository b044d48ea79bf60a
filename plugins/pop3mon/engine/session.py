"""One POP3 probe: DNS → (PING) → TCP → (TLS) → greeting → CAPA → (STLS → TLS → CAPA) →
auth → STAT → QUIT, every phase timed, one absolute deadline, never raising.

:func:`probe` is the engine's single entry point. Whatever the server does, it returns a
:class:`ProbeResult`; failures are recorded as the engine's own error kinds with a reason.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from . import auth as auth_mod
from .dial import dial
from .dns import is_ip, literal_family_problem, resolve
from .errors import (
    AuthError,
    MailboxError,
    PolicyError,
    ProbeError,
    ProtocolError,
    ResolveError,
    StartTLSError,
    TLSError,
    TLSVerifyError,
    map_exception,
)
from .pacing import LoginPacer, Turn, login_delay_of, server_key
from .ping import ping as icmp_ping
from .result import (
    AuthInfo,
    CertInfo,
    MailboxInfo,
    PingInfo,
    ProbeResult,
    ProbeSpec,
    StageOutcome,
    StageStatus,
    TLSInfo,
)
from .tls import cert_info, chain_expiries, client_context, handshake, unverified_context
from .wire import Deadline, Wire, parse_status, sanitize

__all__ = ["QUIT_WAIT"]

QUIT_WAIT = 2.0  # a server that never answers QUIT should not eat the whole deadline


class _Probe:
    """State of one probe run. Private: use :func:`probe`."""

    def __init__(self, spec: ProbeSpec, pacer: LoginPacer | None = None) -> None:
        self.spec = spec
        # A probe on its own still paces against itself (nothing to wait for).
        self.pacer = pacer if pacer is not None else LoginPacer()
        self.pace_key = server_key(spec.host, spec.address)
        self.turn: Turn | None = None
        self.deadline = Deadline(spec.timeout)
        self.t0 = time.perf_counter()
        self.started_at = time.time()
        self.phases: list[tuple[str, float]] = []
        self.stages: dict[str, StageOutcome] = {}
        self.addresses: tuple[str, ...] = ()
        self.peer = ""
        self.ping: PingInfo | None = None
        self.wire: Wire | None = None
        self.raw_greeting = b""
        self.greeting = ""
        self.caps_before: tuple[str, ...] | None = None
        self.caps_after: tuple[str, ...] | None = None
        self.stls_offered: bool | None = None
        self.downgradable = False
        self.injection = False
        self.tls: TLSInfo | None = None
        self.auth: AuthInfo | None = None
        self.mailbox: MailboxInfo | None = None
        self.error: ProbeError | None = None
        self.mech = ""
        self.offered: tuple[str, ...] = ()
        self.login_sent = False  # a login went out and its answer is not in yet
        self.stage = "dns"  # the stage running now (a failure is attributed to it)
        self.relay_open: bool | None = None
        self.relay_reply = ""

    # -- bookkeeping -------------------------------------------------------------------
    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases.append((name, time.perf_counter() - start))

    def ok(self, stage: str) -> None:
        self.stages[stage] = StageOutcome(stage, "ok")

    def mark(self, stage: str, status: StageStatus, reason: str, kind: str = "") -> None:
        self.stages[stage] = StageOutcome(stage, status, kind, sanitize(reason, 500))

    # -- stages ------------------------------------------------------------------------
    def do_resolve(self) -> None:
        spec = self.spec
        literal = spec.address or (spec.host if is_ip(spec.host) else "")
        # A spec built in code can contradict itself; the config loader refuses such files.
        problem = literal_family_problem(literal, spec.address_family) if literal else ""
        if problem:
            raise ResolveError(problem, kind="dns-wrong-family", stage="dns")
        if spec.address:
            self.addresses = (spec.address,)
            self.mark("dns", "skip", f"address pinned to {spec.address}; {spec.host} not resolved")
            return
        if literal:
            self.addresses = (spec.host,)
            self.mark("dns", "skip", f"{spec.host} is an IP address; nothing to resolve")
            return
        with self.phase("dns"):
            self.addresses = resolve(spec.host, spec.port, self.deadline, spec.address_family)
        self.ok("dns")

    def do_ping(self) -> None:
        shared = self.spec.ping_result
        if shared is not None:
            # The host check pinged once for every connection type of the host.
            self.ping = shared
            if shared.status == "ok" and shared.rtt_seconds is not None:
                self.phases.append(("ping", shared.rtt_seconds))
                self.mark("ping", "ok", "the host check's echo (one per host and run)")
            else:
                self.mark("ping", "skip", shared.reason, "ping-no-permission")
            return
        target = self.addresses[0]
        with self.phase("ping"):
            info = icmp_ping(target, min(self.spec.ping_timeout, self.deadline.budget("ping")))
        self.ping = info
        if info.status == "ok":
            self.ok("ping")
        elif info.status == "no-permission":
            self.phases.pop()  # the echo never ran; no time to report
            self.mark("ping", "skip", info.reason, "ping-no-permission")
        else:
            raise ProbeError(info.reason, kind="ping-failed", stage="ping")

    def connect(self, address: str, stage: str) -> socket.socket:
        """One more connection to the address the probe already reached."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.deadline.budget(stage))
            sock.connect((address, self.spec.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        return sock

    def do_connect(self) -> socket.socket:
        with self.phase("connect"):
            dialed = dial(self.addresses, self.spec.port, self.deadline, self.spec.host)
        self.peer = dialed.address
        if dialed.failures:
            # Connected, but a client that tried only the first address would not have:
            # the tcp check says which address answered and what the others did.
            tried = "; ".join(f"{address}: {reason}" for address, reason in dialed.failures)
            self.mark("connect", "ok", tried)
        else:
            self.ok("connect")
        return dialed.sock

    def tls_handshake(self, sock: socket.socket, stage: str) -> ssl.SSLSocket:
        spec = self.spec
        ctx = client_context(spec.ca_file, spec.min_tls_version, spec.verify_tls)
        try:
            with self.phase(stage):
                tls = handshake(sock, ctx, spec.host, self.deadline, stage)
        except TLSError as exc:
            cert, proto = None, ""
            if isinstance(exc, TLSVerifyError) or exc.kind == "tls-protocol-too-old":
                cert, proto = self.fetch_certificate()
            reason = exc.reason
            if exc.kind == "tls-protocol-too-old" and proto:
                reason = f"server only offers {proto}; minimum allowed is {spec.min_tls_version}"
            elif cert is not None and exc.kind == "cert-expired":
                reason = (
                    f"certificate expired {cert.not_after[:10]} ({-cert.days_left:.0f} days ago)"
                )
            elif cert is not None and exc.kind == "cert-hostname-mismatch":
                names = ", ".join(cert.sans) or cert.subject
                target = "IP address" if is_ip(spec.host) else "host name"
                reason = f"certificate does not match {target} {spec.host} (it is for {names})"
            elif cert is not None and exc.kind == "cert-not-yet-valid":
                reason = f"certificate is not valid before {cert.not_before[:10]}"
            # A better reason makes a new error, redacted like every other one.
            err = exc if reason == exc.reason else exc.replaced(reason=reason)
            self.tls = TLSInfo(
                protocol=proto,
                verified=False,
                verify_kind=err.kind,
                verify_reason=err.reason,
                sni=spec.host,
                cert=cert,
            )
            raise err from None
        der = tls.getpeercert(binary_form=True)
        try:
            cert = cert_info(der) if der else None
        except TLSError:
            cert = None  # OpenSSL accepted it; a fact we cannot parse must not fail the probe
        cipher = tls.cipher()
        presented, verified_chain = chain_expiries(tls, spec.verify_tls)
        self.tls = TLSInfo(
            protocol=tls.version() or "",
            cipher=cipher[0] if cipher else "",
            verified=spec.verify_tls,
            verify_kind="" if spec.verify_tls else "verification-disabled",
            verify_reason="" if spec.verify_tls else "certificate verification disabled",
            sni=spec.host,
            cert=cert,
            chain_earliest_expiry=presented,
            verified_chain_earliest_expiry=verified_chain,
        )
        self.ok(stage)
        return tls

    def fetch_certificate(self) -> tuple[CertInfo | None, str]:
        """Read the certificate a failing server presents, on a second connection that
        logs in to nothing, so the report can say what was wrong with it."""
        if self.deadline.remaining() <= 0.05 or not self.peer:
            return None, ""
        sock: socket.socket | None = None
        try:
            sock = self.connect(self.peer, "tls")
            if self.spec.security != "tls" and not self.plaintext_to_tls(sock):
                return None, ""
            tls = handshake(sock, unverified_context(), self.spec.host, self.deadline, "tls")
            sock = tls
            der = tls.getpeercert(binary_form=True)
            return (cert_info(der) if der else None), (tls.version() or "")
        except Exception:  # noqa: BLE001 - best effort; the real failure is already known
            return None, ""
        finally:
            if sock is not None:
                sock.close()

    def plaintext_to_tls(self, sock: socket.socket) -> bool:
        """On a second, plaintext connection: the protocol's way to the TLS handshake
        (POP3: greeting, STLS, +OK). True when the server agreed."""
        wire = Wire(sock, self.deadline, started=self.t0)
        wire.read_line("tls")
        wire.command("STLS", stage="tls")
        return wire.status("tls").ok

    def make_wire(self, sock: socket.socket) -> Wire:
        """The protocol's wire on a connected socket."""
        return Wire(
            sock, self.deadline, started=self.t0, cleartext_allowed=self.spec.allow_cleartext
        )

    def login_offer(self, caps: tuple[str, ...] | None) -> auth_mod.Offer:
        """What the server offers to log in with, from the capabilities in use."""
        return auth_mod.offer_from(caps, self.raw_greeting)

    def read_greeting(self, wire: Wire) -> None:
        with self.phase("greeting"):
            line = wire.read_line("greeting")
            wire.note("S", sanitize(line))
            self.raw_greeting = line
            status = parse_status(line, "greeting")
        self.greeting = status.text
        if not status.ok:
            raise ProtocolError(
                f"server greeting is -ERR (not accepting sessions): {status.text or '(no text)'}",
                kind="greeting-refused",
                stage="greeting",
            )
        self.ok("greeting")

    def capa(self, wire: Wire, stage: str) -> tuple[str, ...] | None:
        with self.phase(stage):
            wire.command("CAPA", stage=stage)
            status = wire.status(stage)
            caps = tuple(wire.multiline(stage)) if status.ok else None
        if caps is None:
            self.mark(stage, "warn", f"server does not support CAPA: {status.text}", "no-capa")
        else:
            self.ok(stage)
        return caps

    def starttls(self, wire: Wire, sock: socket.socket) -> None:
        caps = self.caps_before
        offered = None if caps is None else any(c.upper().split()[:1] == ["STLS"] for c in caps)

        def answer() -> tuple[bool, str]:
            status = wire.status("stls")
            return status.ok, status.text or "(no text)"

        if self.upgrade_to_tls(
            wire,
            sock,
            stage="stls",
            command="STLS",
            offered=offered,
            listed_in="CAPA",
            answer=answer,
            ok_word="+OK",
        ):
            # Capabilities learnt in plaintext may have been forged: ask again (RFC 2595 §4).
            self.caps_after = self.capa(wire, "capa_tls")

    def upgrade_to_tls(
        self,
        wire: Wire,
        sock: socket.socket,
        *,
        stage: str,
        command: str,
        offered: bool | None,
        listed_in: str,
        answer: Callable[[], tuple[bool, str]],
        ok_word: str,
    ) -> bool:
        """The plaintext-to-TLS step both protocols share (POP3 STLS, SMTP STARTTLS):
        ``offered`` is whether the capabilities (``listed_in``) listed ``command`` (None:
        unknown, try it); ``answer`` reads the server's reply as (accepted, text shown).
        Not offered or refused: an error with ``security: starttls``, else a downgradable
        WARN. Any byte the server sent after accepting and before the handshake is an
        answer to something injected into the plaintext stream (CVE-2011-0411 class).
        Returns whether the session now runs over TLS."""
        self.stls_offered = offered
        required = self.spec.security == "starttls"
        if offered is False:
            if required:
                raise StartTLSError(
                    f"server did not offer {command} (not in {listed_in}); refusing to "
                    "continue without TLS",
                    kind="stls-not-offered",
                    stage=stage,
                )
            self.downgradable = True
            self.mark(
                stage,
                "warn",
                f"server does not offer {command}; session continued in plaintext (downgradable)",
                "stls-not-offered",
            )
            return False
        extra = 0
        with self.phase(stage):
            wire.command(command, stage=stage)
            accepted, shown = answer()
            if accepted:
                extra = wire.pending() + _peek(sock)
        if not accepted:
            if required:
                raise StartTLSError(
                    f"server refused {command}: {shown}", kind="stls-refused", stage=stage
                )
            self.downgradable = True
            self.mark(
                stage,
                "warn",
                f"server refused {command} ({shown}); session continued in plaintext "
                "(downgradable)",
                "stls-refused",
            )
            return False
        if extra:
            self.injection = True
            raise StartTLSError(
                f"STARTTLS injection: server sent {extra} byte(s) after '{ok_word}' to "
                f"{command} before the TLS handshake (CVE-2011-0411 class); session aborted",
                kind="stls-injection",
                stage=stage,
            )
        self.ok(stage)
        wire.upgrade(self.tls_handshake(sock, "tls_handshake"))
        return True

    def authenticate(self, wire: Wire) -> bool:
        spec = self.spec
        if spec.auth == "none":
            self.mark("auth", "skip", "no login configured (auth: none)")
            return False
        # After STLS only the capabilities asked over TLS count: the plaintext list may
        # have been forged (RFC 2595 §4), even when CAPA over TLS failed (then: unknown).
        upgraded = self.spec.security in ("starttls", "starttls-optional") and wire.encrypted
        caps = self.caps_after if upgraded else self.caps_before
        offer = self.login_offer(caps)
        self.offered = offer.names()
        if spec.secret is None:
            raise PolicyError(
                spec.secret_problem or "no secret configured for this account",
                kind="secret-missing",
                stage="auth",
            )
        self.turn = self.pacer.turn(
            self.pace_key,
            spec.id,
            spec.username,
            pacing=spec.login_pacing,
            login_delay=login_delay_of(caps),
        )
        # Waiting for the turn is the run's doing: neither the deadline nor latency.
        self.deadline.extend(self.turn.waited)
        with self.phase("auth"):
            self.mech = auth_mod.choose_mechanism(
                spec.auth,
                offer,
                encrypted=wire.encrypted,
                allow_cleartext=spec.allow_cleartext,
            )
            self.login_sent = True
            status = auth_mod.authenticate(
                wire,
                self.mech,
                spec.username,
                spec.secret,
                timestamp=offer.timestamp,
                host=spec.host,
                port=spec.port,
                stls_offered=offer.stls,
            )
        self.login_sent = False
        self.pacer.answered(self.pace_key, spec.id, spec.username, refused=not status.ok)
        if not status.ok:
            raise auth_mod.refused(status, self.mech)
        self.auth = AuthInfo(
            mechanism=self.mech,
            strength=auth_mod.STRENGTH.get(self.mech, ""),
            encrypted=wire.encrypted,
            success=True,
            offered=self.offered,
            secret_sent=wire.secret_sent,
        )
        self.ok("auth")
        return True

    def stat(self, wire: Wire) -> None:
        with self.phase("stat"):
            wire.command("STAT", stage="stat")
            status = wire.status("stat")
        if not status.ok:
            raise MailboxError(f"STAT refused: {status.text or '(no text)'}", stage="stat")
        parts = status.text.split()
        if len(parts) < 2 or not all(p.isdigit() and len(p) <= 18 for p in parts[:2]):
            raise MailboxError(
                f"malformed STAT answer (expected '+OK count size'): {status.text!r}",
                kind="stat-malformed",
                stage="stat",
            )
        uidl: int | None = None
        if self.spec.collect_uidl:
            wire.command("UIDL", stage="stat")
            if wire.status("stat").ok:
                uidl = len(wire.multiline("stat"))
        self.mailbox = MailboxInfo(int(parts[0]), int(parts[1]), uidl)
        self.ok("stat")

    def quit(self, wire: Wire) -> None:
        saved = wire.deadline
        wire.deadline = Deadline(max(0.0, min(QUIT_WAIT, saved.remaining())))
        try:
            with self.phase("quit"):
                wire.command("QUIT", stage="quit")
                status = wire.status("quit")
            if status.ok:
                self.ok("quit")
            else:
                self.mark("quit", "warn", f"server answered QUIT with -ERR: {status.text}")
        except ProbeError as exc:
            self.mark("quit", "warn", f"QUIT not answered cleanly: {exc.reason}", exc.kind)
        finally:
            wire.deadline = saved

    # -- the whole dialogue ------------------------------------------------------------
    def run(self) -> ProbeResult:
        cpu0 = time.thread_time()
        self.stage = "dns"
        wire: Wire | None = None
        try:
            self.do_resolve()
            if self.spec.ping:
                self.stage = "ping"
                self.do_ping()
            self.stage = "connect"
            sock = self.do_connect()
            wire = self.make_wire(sock)
            self.wire = wire
            if self.spec.security == "tls":
                self.stage = "tls"
                tls = self.tls_handshake(sock, "tls")
                wire.upgrade(tls)
                sock = tls
            self.dialogue(wire, sock)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            stage = self.stage
            err = map_exception(exc, stage)
            self.error = err
            self.mark(err.stage or stage, "fail", err.reason, err.kind)
            if err.stage == "auth" or stage == "auth":
                code = err.code if isinstance(err, AuthError) else ""
                self.auth = AuthInfo(
                    mechanism=self.mech,
                    strength=auth_mod.STRENGTH.get(self.mech, ""),
                    encrypted=bool(wire and wire.encrypted),
                    success=False,
                    response_code=code,
                    reason=err.reason,
                    offered=self.offered,
                    secret_sent=bool(wire and wire.secret_sent),
                )
            if self.login_sent:
                # No clean answer (timeout, reset): the server may count it as refused.
                self.pacer.answered(self.pace_key, self.spec.id, self.spec.username, refused=True)
            if wire is not None and _session_usable(err):
                self.quit(wire)
        finally:
            if wire is not None:
                wire.close()
            self.pacer.done(
                self.pace_key, self.spec.id, self.spec.username, held=self.turn is not None
            )
        waited = self.turn.waited if self.turn else 0.0
        self.phases.append(("total", time.perf_counter() - self.t0 - waited))
        return self.result(time.thread_time() - cpu0)

    def dialogue(self, wire: Wire, sock: socket.socket) -> None:
        """The protocol's part of the session, from the greeting to QUIT; sets
        :attr:`stage` as it goes so a failure is attributed to the stage it happened in."""
        self.stage = "greeting"
        self.read_greeting(wire)
        self.stage = "capa"
        self.caps_before = self.capa(wire, "capa")
        if self.spec.security in ("starttls", "starttls-optional"):
            self.stage = "stls"
            self.starttls(wire, sock)
        self.stage = "auth"
        if self.authenticate(wire):
            self.stage = "stat"
            self.stat(wire)
        self.stage = "quit"
        self.quit(wire)

    def result(self, cpu: float) -> ProbeResult:
        spec = self.spec
        err = self.error
        return ProbeResult(
            id=spec.id,
            host=spec.host,
            port=spec.port,
            security=spec.security,
            mechanism=spec.auth,
            started_at=self.started_at,
            phases=tuple((k, round(v, 6)) for k, v in self.phases),
            stages=tuple(self.stages.values()),
            addresses=self.addresses,
            peer=self.peer,
            ping=self.ping,
            greeting=self.greeting,
            apop_timestamp=auth_mod.valid_apop_timestamp(self.raw_greeting) is not None,
            capabilities_before=self.caps_before,
            capabilities_after=self.caps_after,
            stls_offered=self.stls_offered,
            downgradable=self.downgradable,
            injection=self.injection,
            tls=self.tls,
            auth=self.auth,
            mailbox=self.mailbox,
            transcript=tuple(self.wire.transcript) if self.wire else (),
            error_kind=err.kind if err else "",
            error_stage=err.stage if err else "",
            error_reason=err.reason if err else "",
            cpu_seconds=round(cpu, 6),
            login_wait=round(self.turn.waited, 3) if self.turn else 0.0,
            login_wait_reason=self.turn.reason if self.turn else "",
            login_exposed=self.turn.exposed if self.turn else "",
            protocol=spec.protocol,
            relay_open=self.relay_open,
            relay_reply=self.relay_reply,
        )


def _peek(sock: socket.socket) -> int:
    """Bytes already waiting on the socket, without consuming or blocking."""
    # A Python socket with a timeout polls before recv even with MSG_DONTWAIT, so switch
    # it to non-blocking for the peek itself.
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        data = sock.recv(4096, socket.MSG_PEEK)
    except OSError:  # BlockingIOError (nothing waiting) or a dead socket: nothing injected
        return 0
    finally:
        sock.settimeout(timeout)
    return len(data)


def _session_usable(err: ProbeError) -> bool:
    """After these failures the POP3 session is still in a sane state: say QUIT."""
    if isinstance(err, (AuthError, MailboxError)):
        return err.kind not in ("connection-closed", "connection-reset")
    if isinstance(err, PolicyError):
        return True
    if isinstance(err, StartTLSError):
        return err.kind in ("stls-not-offered", "stls-refused")
    return False
