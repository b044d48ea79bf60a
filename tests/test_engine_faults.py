"""The probe engine against the fault-injecting POP3 server: real sockets, no mocks.

Every case asserts (a) the verdict (error kind, stage, stage outcome), (b) the human reason,
(c) that the probe ended within its deadline plus a small margin, (d) that the server saw
only allow-listed commands (never DELE/RETR/TOP) and (e) that no secret crossed an
unencrypted channel unless the case explicitly allowed cleartext. (c)-(e) and "the client
closed its connections" are checked by :func:`run` for every probe, so each test only
states what is specific to its case.

Hang cases use deadlines of 2 s so the whole file stays fast.
"""

from __future__ import annotations

import base64
import re
import socket
import sys
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from pop3mon.checks.login import login as login_check
from pop3mon.checks.login import policy as policy_check
from pop3mon.engine import ProbeResult, ProbeSpec, probe
from pop3mon.engine.auth import (
    CLEARTEXT,
    MAX_SASL_ROUNDS,
    SCRAM_MAX_ITERATIONS,
    forget_salted_passwords,
)
from pop3mon.engine.mechanisms import MECHANISMS as MECHANISM_REGISTRY
from pop3mon.engine.session import QUIT_WAIT
from pop3mon.engine.wire import ALLOWED_COMMANDS
from pop3mon.secrets import Secret

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.faultserver import (
    ALL_SASL,
    DEFAULT_SASL,
    SCENARIOS,
    FaultServer,
    LogEntry,
    SaslOutcome,
    Scenario,
    Session,
)

# OpenSSL/Python warn when a context allows TLS 1.0; the TLS 1.0 cases do that on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")

USER = "alice"
# Length 16 (not a multiple of 3) so base64 forms at every alignment differ from the plain one.
SENTINEL = "Sentinel-7Qx!zK9"
WRONG = "Wrong-pw-4Zr!mN2"
MARGIN = 0.5  # seconds a probe may overrun its deadline (thread scheduling, QUIT, close)
QUICK = 1.5  # seconds within which a case that must not wait has to end
HANG_DEADLINE = 2.0

# Every mechanism the registry knows: a new one is covered here without editing this list.
MECHANISMS = tuple(MECHANISM_REGISTRY)
CREDENTIAL_VERBS = frozenset({"USER", "PASS", "APOP", "AUTH"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def secret_forms(value: str) -> list[bytes]:
    """Byte strings that would reveal ``value`` on the wire: raw, base64, the SASL PLAIN
    payload, and the alignment-stable part of its base64 inside any longer payload."""
    raw = value.encode()
    forms = [raw, _b64(raw), _b64(f"\0{USER}\0{value}".encode())]
    for pad in range(3):
        enc = _b64(b"\0" * pad + raw)
        # Groups that hold only secret bytes: skip the first group when it mixes in the
        # prefix, and the last one, which mixes in whatever follows.
        forms.append(enc[4 if pad else 0 : -4])
    return forms


# --------------------------------------------------------------------------- DNS audit
_DNS_LOOKUPS: list[str] = []
_HOOK_LOCK = threading.Lock()
_HOOK_INSTALLED = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.getaddrinfo" and args:
        _DNS_LOOKUPS.append(str(args[0]))


def _install_dns_audit() -> None:
    """Record every getaddrinfo host (audit hooks cannot be removed; this one is cheap)."""
    global _HOOK_INSTALLED
    with _HOOK_LOCK:
        if not _HOOK_INSTALLED:
            sys.addaudithook(_audit)
            _HOOK_INSTALLED = True


# --------------------------------------------------------------------------- fixtures
# --------------------------------------------------------------------------- running
@dataclass
class Outcome:
    """A finished probe and what the (stopped) fault server saw."""

    result: ProbeResult
    elapsed: float
    spec: ProbeSpec
    srv: FaultServer

    def commands(self) -> list[str]:
        """Verbs of the command lines the server received, in order."""
        return [_verb(e) for e in client_commands(self.srv)]

    def sasl(self) -> list[str]:
        """SASL continuation lines the server received."""
        return [e.line for e in self.srv.log.entries() if e.kind == "sasl"]

    def stage(self, name: str) -> tuple[str, str, str]:
        """(status, kind, reason) of a stage; fails when the stage never ran."""
        outcome = self.result.stage(name)
        assert outcome is not None, f"stage {name} did not run: {self.result.stages}"
        return outcome.status, outcome.kind, outcome.reason

    def transcript(self) -> str:
        """The whole redacted transcript as one text."""
        return "\n".join(f"{t.direction} {t.text}" for t in self.result.transcript)


def _text(raw: bytes) -> bool:
    """True for a printable ASCII line (a POP3 command), False for binary data."""
    body = raw.rstrip(b"\r\n")
    return all(0x20 <= b < 0x7F for b in body)


def _verb(entry: LogEntry) -> str:
    return entry.line.split(" ", 1)[0].upper()


def client_commands(srv: FaultServer) -> list[LogEntry]:
    """The lines the client sent as commands, in order.

    Left out: SASL continuation lines, and the TLS handshake a client sends after STLS to a
    server that stays in plaintext (the server logs those bytes as lines). Any other binary
    data fails the test.
    """
    lines: list[LogEntry] = []
    after_stls: set[int] = set()
    handshake: set[int] = set()
    for entry in srv.log.entries():
        if entry.kind == "sasl" or (entry.conn in handshake and not entry.tls):
            continue
        if entry.conn in after_stls and not entry.tls and entry.raw.startswith(b"\x16"):
            handshake.add(entry.conn)
            continue
        assert _text(entry.raw), f"client sent binary data: {entry.raw[:40]!r}"
        lines.append(entry)
        if _verb(entry) == "STLS":
            after_stls.add(entry.conn)
    return lines


def assert_allowlisted(srv: FaultServer) -> None:
    """(d): only allow-listed verbs reached the server; never DELE, RETR or TOP."""
    for entry in client_commands(srv):
        verb = _verb(entry)
        assert verb in ALLOWED_COMMANDS, f"server saw a non-allowlisted command {entry.line!r}"
        assert verb not in {"DELE", "RETR", "TOP", "RSET", "LIST"}


def assert_no_plaintext_secret(srv: FaultServer, *values: str) -> None:
    """(e): none of the secrets' forms arrived while the channel was unencrypted."""
    plain = srv.plaintext_bytes()
    for value in values:
        for form in secret_forms(value):
            assert form not in plain, f"secret form {form!r} crossed the wire unencrypted"


def run(
    lab_certs: LabCerts,
    scenario: str = "healthy",
    *,
    mode: str = "starttls",
    mechanism: str = "auto",
    timeout: float = 5.0,
    allow_cleartext: bool = False,
    min_tls_version: str = "TLSv1.2",
    password: str = SENTINEL,
    session: type[Session] | None = None,
    **server_kw: Any,
) -> Outcome:
    """Probe a fault server once and check (c), (d), (e) and a clean close."""
    server_kw.setdefault("users", {USER: SENTINEL})
    srv = FaultServer(
        scenario,
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
        implicit_tls=mode == "tls",
        **server_kw,
    )
    if session is not None:
        srv.scenario = Scenario(f"custom-{session.__name__}", session.__doc__ or "", session)
    secret = Secret(password, "test")
    with srv:
        spec = ProbeSpec(
            id=f"{scenario}-{mode}-{mechanism}",
            host="localhost",
            port=srv.port,
            security=mode,
            auth=mechanism,
            username=USER,
            secret=secret,
            allow_cleartext=allow_cleartext,
            ca_file=str(lab_certs.ca_file),
            min_tls_version=min_tls_version,
            timeout=timeout,
        )
        start = time.monotonic()
        result = probe(spec)
        elapsed = time.monotonic() - start
        # The client must have closed every connection it opened (no leaked sockets).
        idle = srv.wait_idle(3.0)
    out = Outcome(result, elapsed, spec, srv)
    assert elapsed <= timeout + MARGIN, f"probe took {elapsed:.2f}s, deadline {timeout}s"
    assert idle, "the probe left a connection open"
    assert_allowlisted(srv)
    if not allow_cleartext:
        assert_no_plaintext_secret(srv, password, SENTINEL)
    for value in {password, SENTINEL}:
        assert value not in result.to_json()
        assert value not in repr(result)
    return out


def assert_failed(out: Outcome, kind: str, stage: str, *reason: str) -> None:
    """(a)+(b): the probe failed with ``kind`` in ``stage``, and the reason says ``reason``."""
    r = out.result
    assert not r.ok
    assert (r.error_kind, r.error_stage) == (kind, stage), r.error_reason
    status, stage_kind, stage_reason = out.stage(stage)
    assert (status, stage_kind) == ("fail", kind)
    for text in reason:
        assert text in r.error_reason, f"{text!r} not in {r.error_reason!r}"
        assert text in stage_reason
    assert not _CONTROL.search(r.error_reason)


def assert_no_credentials(out: Outcome) -> None:
    """Not a single credential byte left the client: no login verb, not even the name."""
    assert not CREDENTIAL_VERBS & set(out.commands()), out.commands()
    assert out.sasl() == []
    plain = out.srv.plaintext_bytes()
    assert USER.encode() not in plain
    assert out.srv.logins == 0


# --------------------------------------------------------------------------- connect
def test_rst_on_connect(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "rst-on-connect")
    r = out.result
    # The RST may land before connect() has seen the handshake complete (then the kernel
    # reports it to connect) or after (then to the first read of the greeting).
    assert r.error_kind == "connection-reset"
    assert r.error_stage in ("connect", "greeting")
    assert f"connection reset by the server during {r.error_stage}" in r.error_reason
    assert out.stage(r.error_stage)[0] == "fail"
    assert out.elapsed < QUICK
    assert out.commands() == []


def test_closed_port_is_refused_quickly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the probe: nobody listens
    spec = ProbeSpec(id="closed", host="127.0.0.1", port=port, security="none", auth="none")
    start = time.monotonic()
    r = probe(spec)
    assert time.monotonic() - start < QUICK
    assert (r.error_kind, r.error_stage) == ("connection-refused", "connect")
    assert f"TCP connect to 127.0.0.1 port {port} failed" in r.error_reason
    assert "connection refused" in r.error_reason
    stage = r.stage("connect")
    assert stage is not None and stage.status == "fail"


def test_invalid_host_never_queries_dns() -> None:
    _install_dns_audit()
    host = "mail.pop3mon-engine-test.invalid"
    spec = ProbeSpec(id="invalid", host=host, port=110, security="tls", timeout=5.0)
    start = time.monotonic()
    r = probe(spec)
    assert time.monotonic() - start < 0.5
    assert (r.error_kind, r.error_stage) == ("dns-nxdomain", "dns")
    assert "reserved name that never resolves (RFC 6761 .invalid)" in r.error_reason
    assert host not in _DNS_LOOKUPS
    assert r.stage("connect") is None


def test_dns_audit_hook_sees_real_lookups(lab_certs: LabCerts) -> None:
    """The audit hook used above does see lookups, so its silence means something."""
    _install_dns_audit()
    out = run(lab_certs, "healthy", mechanism="none")
    assert out.result.ok
    assert "localhost" in _DNS_LOOKUPS


# --------------------------------------------------------------------------- greeting
def test_no_greeting_ends_at_the_deadline(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "no-greeting", timeout=HANG_DEADLINE)
    assert_failed(out, "timeout", "greeting", "deadline of 2s exceeded", "during greeting")
    assert out.elapsed >= HANG_DEADLINE - 0.1
    assert out.commands() == []


def test_drip_fed_greeting_ends_at_the_deadline_not_later(lab_certs: LabCerts) -> None:
    # One byte every 0.2 s: a per-recv timeout would never fire; the absolute deadline does.
    out = run(lab_certs, "drip-greeting", timeout=HANG_DEADLINE, drip_interval=0.2)
    assert_failed(out, "timeout", "greeting", "deadline of 2s exceeded", "during greeting")
    assert HANG_DEADLINE - 0.1 <= out.elapsed <= HANG_DEADLINE + 0.3
    assert out.commands() == []


def test_err_greeting(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "err-greeting")
    assert_failed(
        out, "greeting-refused", "greeting", "greeting is -ERR (not accepting sessions): go away"
    )
    assert out.commands() == []
    assert out.elapsed < QUICK


def test_garbage_greeting(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "garbage-greeting")
    assert_failed(out, "bad-status-line", "greeting", "invalid status line", "GARBAGE")
    assert "\x00" not in out.result.error_reason and "\x1b" not in out.result.error_reason
    assert "\x1b" not in out.transcript() and "\x00" not in out.transcript()
    assert out.commands() == []


def test_lowercase_ok_greeting_is_not_ok(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "lowercase-ok")
    assert_failed(
        out,
        "bad-status-line",
        "greeting",
        "expected '+OK' or '-ERR'",
        "'+ok hello'",
    )
    assert out.commands() == []


def test_10mb_line_is_cut_at_512_octets(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "huge-line")
    assert_failed(out, "line-too-long", "greeting", "line longer than 512 octets")
    assert out.elapsed < QUICK


# --------------------------------------------------------------------------- CAPA, STAT
def test_endless_capa_is_capped(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "endless-capa")
    assert_failed(
        out, "response-too-long", "capa", "exceeded 2000 lines", "without its terminating '.'"
    )
    assert out.result.capabilities_before is None
    assert out.elapsed < QUICK
    assert out.commands() == ["CAPA"]


def test_eof_before_the_dot_line(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "capa-eof")
    assert_failed(out, "connection-closed", "capa", "server closed the connection during capa")
    assert out.result.capabilities_before is None
    assert out.commands() == ["CAPA"]


def test_malformed_stat(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "malformed-stat")
    assert_failed(
        out, "stat-malformed", "stat", "malformed STAT answer (expected '+OK count size')", "banana"
    )
    assert out.result.auth is not None and out.result.auth.success
    assert out.result.mailbox is None
    assert out.commands()[-2:] == ["STAT", "QUIT"]  # the session was sane: logged out


# --------------------------------------------------------------------------- APOP
def test_apop_without_timestamp_is_refused(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "apop-no-timestamp", mechanism="apop")
    assert_failed(out, "apop-no-timestamp", "auth", "APOP not possible: greeting has no timestamp")
    assert not out.result.apop_timestamp
    assert "APOP" not in out.commands()
    assert out.srv.logins == 0


@pytest.mark.parametrize("scenario", ["apop-bad-timestamp", "apop-ctrl-timestamp"])
def test_apop_with_invalid_timestamp_is_refused(lab_certs: LabCerts, scenario: str) -> None:
    out = run(lab_certs, scenario, mechanism="apop")
    assert_failed(
        out,
        "apop-no-timestamp",
        "auth",
        "greeting timestamp is not a valid msg-id",
        "MD5 collision risk",
    )
    assert not out.result.apop_timestamp
    assert not _CONTROL.search(out.result.greeting)
    assert "APOP" not in out.commands()
    assert out.srv.logins == 0


# --------------------------------------------------------------------------- STLS
def test_stls_missing_in_required_mode_sends_no_credential_byte(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "no-stls")
    assert_failed(
        out, "stls-not-offered", "stls", "server did not offer STLS", "refusing to continue"
    )
    assert out.result.stls_offered is False
    assert out.commands() == ["CAPA", "QUIT"]
    assert_no_credentials(out)


def test_stls_refused_in_required_mode(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "stls-err")
    assert_failed(out, "stls-refused", "stls", "server refused STLS: [SYS/TEMP] TLS not available")
    assert out.result.stls_offered is True
    assert out.result.tls is None
    assert out.commands() == ["CAPA", "STLS", "QUIT"]
    assert_no_credentials(out)


@pytest.mark.parametrize(
    ("scenario", "kind", "reason"),
    [
        ("stls-err", "stls-refused", "server refused STLS ([SYS/TEMP] TLS not available"),
        ("no-stls", "stls-not-offered", "server does not offer STLS"),
    ],
)
def test_starttls_optional_continues_downgradable(
    lab_certs: LabCerts, scenario: str, kind: str, reason: str
) -> None:
    out = run(lab_certs, scenario, mode="starttls-optional")
    r = out.result
    assert r.ok, r.error_reason
    status, stage_kind, stage_reason = out.stage("stls")
    assert (status, stage_kind) == ("warn", kind)
    assert reason in stage_reason
    assert "session continued in plaintext (downgradable)" in stage_reason
    assert r.downgradable
    assert r.tls is None
    # Without allow_cleartext only a mechanism that keeps the secret off the wire is used.
    assert r.auth is not None and r.auth.success and not r.auth.encrypted
    assert r.auth.mechanism == "scram-sha-256"


def test_plaintext_after_stls_ok(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "stls-plaintext")
    assert_failed(
        out, "tls-not-spoken", "tls_handshake", "server did not speak TLS (sent non-TLS data)"
    )
    assert out.result.tls is not None and not out.result.tls.verified
    assert out.commands() == ["CAPA", "STLS"]
    assert_no_credentials(out)


def test_stls_ok_then_close(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "stls-close")
    r = out.result
    # The ClientHello races the server's close: an EOF, or an RST if it arrived after it.
    assert (r.error_kind, r.error_reason) in {
        ("tls-eof", "server closed the connection during the TLS handshake"),
        ("connection-reset", "connection reset by the server during tls_handshake"),
    }
    assert r.error_stage == "tls_handshake"
    assert out.stage("tls_handshake")[0] == "fail"
    assert_no_credentials(out)


def test_starttls_injection_is_reported_and_nothing_sent_after(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "stls-injection")
    assert_failed(
        out,
        "stls-injection",
        "stls",
        "STARTTLS injection: server sent 14 byte(s) after '+OK' to STLS",
        "session aborted",
    )
    assert out.result.injection
    assert out.commands() == ["CAPA", "STLS"]
    # Not a byte after STLS: no ClientHello, no QUIT, nothing the injected "+OK" could answer.
    assert out.srv.plaintext_bytes().endswith(b"STLS\r\n")
    assert out.srv.log.events("tls") == []
    assert_no_credentials(out)


# --------------------------------------------------------------------------- TLS version
@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_tls10_only_server_fails_the_tls12_minimum(lab_certs: LabCerts, mode: str) -> None:
    out = run(lab_certs, "tls10-only", mode=mode)
    stage = "tls" if mode == "tls" else "tls_handshake"
    assert_failed(
        out,
        "tls-protocol-too-old",
        stage,
        "server only offers TLSv1;",
        "minimum allowed is TLSv1.2",
    )
    tls = out.result.tls
    assert tls is not None and tls.protocol == "TLSv1" and not tls.verified
    assert tls.cert is not None and "DNS:localhost" in tls.cert.sans  # facts still recorded
    assert_no_credentials(out)


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_tls10_only_server_with_tls1_minimum(lab_certs: LabCerts, mode: str) -> None:
    out = run(lab_certs, "tls10-only", mode=mode, min_tls_version="TLSv1")
    r = out.result
    if r.error_kind.startswith("tls-"):
        pytest.skip(f"this OpenSSL refuses TLS 1.0 even at SECLEVEL=0: {r.error_reason}")
    assert r.ok, r.error_reason
    assert r.tls is not None and r.tls.protocol == "TLSv1" and r.tls.verified
    assert r.auth is not None and r.auth.encrypted


# --------------------------------------------------------------------------- capabilities
@pytest.mark.parametrize(("mechanism", "expected"), [("auto", "scram-sha-256"), ("login", "login")])
def test_capabilities_after_tls_drive_mechanism_choice(
    lab_certs: LabCerts, mechanism: str, expected: str
) -> None:
    out = run(lab_certs, "capa-differs", mechanism=mechanism)
    r = out.result
    assert r.ok, r.error_reason
    assert r.capabilities_before is not None and r.capabilities_after is not None
    assert "SASL PLAIN" in r.capabilities_before and "STLS" in r.capabilities_before
    assert "SASL SCRAM-SHA-256 PLAIN LOGIN" in r.capabilities_after
    assert "STLS" not in r.capabilities_after
    assert r.auth is not None and r.auth.mechanism == expected
    assert {"scram-sha-256", "login"} <= set(r.auth.offered)  # learnt over TLS only
    assert out.commands()[:4] == ["CAPA", "STLS", "CAPA", "AUTH"]


class _CapaFailsAfterTls(Session):
    """Pre-TLS CAPA lists SASL PLAIN; CAPA over TLS answers -ERR."""

    apop = False

    def capabilities(self) -> list[str]:
        if self.state == "authorization" and not self.conn.tls:
            return ["USER", "SASL PLAIN", "STLS"]
        return super().capabilities()

    def cmd_capa(self, arg: str) -> None:
        if self.conn.tls:
            self.reply("-ERR CAPA not available")
            return
        super().cmd_capa(arg)


def test_pre_tls_capabilities_are_discarded_even_when_capa_fails_over_tls(
    lab_certs: LabCerts,
) -> None:
    out = run(lab_certs, "healthy", session=_CapaFailsAfterTls)
    r = out.result
    assert r.ok, r.error_reason
    status, kind, reason = out.stage("capa_tls")
    assert (status, kind) == ("warn", "no-capa")
    assert "server does not support CAPA" in reason
    assert r.capabilities_after is None
    # Capabilities unknown: the RFC 1939 baseline, not the SASL PLAIN learnt in plaintext.
    assert r.auth is not None and r.auth.mechanism == "user" and r.auth.encrypted


# --------------------------------------------------------------------------- response codes
@pytest.mark.parametrize(
    ("scenario", "kind", "code", "reason"),
    [
        ("in-use", "mailbox-in-use", "IN-USE", "mailbox is locked by another session [IN-USE]"),
        (
            "login-delay",
            "login-delay",
            "LOGIN-DELAY",
            "server asks to wait before logging in again [LOGIN-DELAY]",
        ),
        ("sys-temp", "sys-temp", "SYS/TEMP", "temporary server-side failure [SYS/TEMP]"),
        ("sys-perm", "sys-perm", "SYS/PERM", "permanent server-side failure [SYS/PERM]"),
        ("auth-code", "auth-rejected", "AUTH", "server rejected the credentials [AUTH]"),
    ],
)
def test_response_codes(
    lab_certs: LabCerts, scenario: str, kind: str, code: str, reason: str
) -> None:
    out = run(lab_certs, scenario, mechanism="user")
    assert_failed(out, kind, "auth", reason, "mechanism USER")
    auth = out.result.auth
    assert auth is not None and not auth.success
    assert auth.response_code == code
    assert auth.reason == out.result.error_reason
    assert out.commands()[-1] == "QUIT"


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_wrong_password(lab_certs: LabCerts, mechanism: str) -> None:
    out = run(lab_certs, mechanism=mechanism, password=WRONG, sasl_mechanisms=ALL_SASL)
    assert_failed(
        out,
        "auth-rejected",
        "auth",
        "server rejected the credentials [AUTH]",
        f"mechanism {mechanism.upper()}",
    )
    assert out.result.auth is not None and out.result.auth.response_code == "AUTH"
    assert out.srv.logins == 0
    assert out.commands()[-1] == "QUIT"


def test_rst_after_pass(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "rst-after-pass", mechanism="user")
    r = out.result
    assert r.error_kind in ("connection-reset", "connection-closed")
    assert r.error_stage == "auth"
    # Over TLS the RST surfaces as an abrupt EOF; either wording names stage and cause.
    assert r.error_reason in (
        "connection reset by the server during auth",
        "server closed the connection during auth",
    )
    assert out.stage("auth")[0] == "fail"
    assert r.auth is not None and not r.auth.success
    assert out.commands()[-1] == "PASS"  # nothing after the reset


# --------------------------------------------------------------------------- SASL faults
@pytest.mark.parametrize("mechanism", ["plain", "login", "cram-md5"])
def test_endless_sasl_is_capped_and_cancelled(lab_certs: LabCerts, mechanism: str) -> None:
    out = run(lab_certs, "endless-sasl", mechanism=mechanism)
    assert_failed(
        out,
        "sasl-too-many-rounds",
        "auth",
        f"SASL {mechanism.upper()} exchange exceeded {MAX_SASL_ROUNDS} challenges; cancelled",
    )
    lines = out.sasl()
    assert lines[-1] == "*"
    assert len(lines) == MAX_SASL_ROUNDS + 1
    if mechanism == "login":  # the password goes out once, not once per prompt
        assert lines.count(_b64(SENTINEL.encode()).decode()) == 1


@pytest.mark.parametrize("mechanism", ["scram-sha-1", "scram-sha-256"])
def test_endless_sasl_scram_is_cancelled(lab_certs: LabCerts, mechanism: str) -> None:
    out = run(lab_certs, "endless-sasl", mechanism=mechanism)
    assert_failed(out, "sasl-malformed", "auth", "malformed SCRAM server-first message")
    assert out.sasl() == ["*"]


def test_bad_base64_in_challenge(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "bad-base64-sasl", mechanism="cram-md5")
    assert_failed(out, "sasl-bad-base64", "auth", "server sent invalid base64 in a SASL challenge")
    assert out.sasl() == ["*"]


def test_xoauth2_error_challenge(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "xoauth2-error", mechanism="xoauth2")
    assert_failed(
        out,
        "auth-rejected",
        "auth",
        "server rejected the credentials [AUTH] (server said: invalid token",
        'error challenge: {"status": "401"',
        "mechanism XOAUTH2",
    )
    assert out.sasl() == [""]  # the error challenge is answered with an empty response
    assert out.result.auth is not None and out.result.auth.response_code == "AUTH"
    assert out.commands()[-1] == "QUIT"


SaslExchange = Generator[str, bytes, SaslOutcome]


class _ScramTamper(Session):
    """SCRAM with a forged (or missing) server signature: a server not knowing the password."""

    drop_signature: ClassVar[bool] = False

    def sasl_exchange(self, mech: str, first: bytes | None) -> SaslExchange:
        return self._tamper(super().sasl_exchange(mech, first))

    def _tamper(self, inner: SaslExchange) -> SaslExchange:
        try:
            challenge = next(inner)
            while True:
                if base64.b64decode(challenge).startswith(b"v="):
                    if self.drop_signature:
                        inner.send(b"")  # finishes the exchange: +OK without v=
                    challenge = _b64(b"v=" + _b64(bytes(32))).decode()
                challenge = inner.send((yield challenge))
        except StopIteration as done:
            outcome: SaslOutcome = done.value
            return outcome


class _ScramNoSignature(_ScramTamper):
    drop_signature = True


def test_scram_bad_server_signature_is_cancelled(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "healthy", mechanism="scram-sha-256", session=_ScramTamper)
    assert_failed(out, "scram-server-signature", "auth", "SCRAM server signature is invalid")
    assert out.sasl()[-1] == "*"
    # After "*" the server left the AUTH exchange, so QUIT arrived as a command.
    assert out.commands()[-1] == "QUIT"
    assert out.stage("quit")[0] == "ok"


def test_scram_without_server_signature_fails(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "healthy", mechanism="scram-sha-1", session=_ScramNoSignature)
    assert_failed(
        out, "scram-server-signature", "auth", "without sending its signature", "never proved"
    )
    assert out.commands()[-1] == "QUIT"


@pytest.mark.parametrize("mechanism", ["scram-sha-1", "scram-sha-256"])
def test_scram_huge_iteration_count_is_refused_naming_count_and_cap(
    lab_certs: LabCerts, mechanism: str
) -> None:
    out = run(lab_certs, "scram-huge-iterations", mechanism=mechanism)
    assert_failed(
        out,
        "scram-iterations",
        "auth",
        "server asks for 100000000 SCRAM iterations",
        f"cap {SCRAM_MAX_ITERATIONS}",
    )
    assert out.elapsed < QUICK  # refused before any key derivation
    assert out.sasl() == ["*"]  # cancelled: no proof, and QUIT reads as a command
    assert out.commands()[-1] == "QUIT"


@pytest.mark.parametrize("mechanism", ["scram-sha-1", "scram-sha-256"])
def test_scram_key_derivation_is_bounded_by_the_deadline(
    lab_certs: LabCerts, mechanism: str
) -> None:
    # The server-first message (at the cap: about half a second of PBKDF2) arrives 0.1 s
    # before the deadline; the probe still ends at the deadline, not after the derivation.
    assert SCENARIOS["scram-slow-key"].session.scram_iterations == SCRAM_MAX_ITERATIONS
    forget_salted_passwords()  # an earlier run's key (same salt) would skip the derivation
    out = run(
        lab_certs,
        "scram-slow-key",
        mechanism=mechanism,
        timeout=HANG_DEADLINE,
        challenge_delay=HANG_DEADLINE - 0.1,
    )
    assert_failed(
        out,
        "timeout",
        "auth",
        f"deadline of {HANG_DEADLINE:g}s exceeded while computing the SCRAM key",
        f"({SCRAM_MAX_ITERATIONS} iterations)",
    )
    assert out.elapsed <= HANG_DEADLINE + 0.25, out.elapsed
    assert not any(line.startswith("Yz1") for line in out.sasl())  # no proof ("c=...") sent


def test_a_scram_key_thread_that_cannot_start_fails_one_login_only(
    lab_certs: LabCerts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread for the PBKDF2 (a pid limit): that login fails at once with the reason,
    and the next login of the account derives its key afresh instead of waiting out its
    deadline for a derivation nobody runs."""
    forget_salted_passwords()
    real_start = threading.Thread.start
    refused: list[str] = []

    def start_once(self: threading.Thread) -> None:
        if self.name == "pop3mon-scram-key" and not refused:
            refused.append(self.name)
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start_once)
    first = run(lab_certs, "healthy", mechanism="scram-sha-256", timeout=HANG_DEADLINE)
    assert not first.result.ok and refused
    assert first.elapsed < HANG_DEADLINE / 2, first.elapsed
    second = run(lab_certs, "healthy", mechanism="scram-sha-256", timeout=HANG_DEADLINE)
    assert second.result.ok, second.result.error_reason
    assert second.elapsed < HANG_DEADLINE / 2, second.elapsed


# --------------------------------------------------------------------------- QUIT, text
def test_quit_never_answered(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "quit-silent", timeout=5.0)
    r = out.result
    assert r.ok, r.error_reason
    status, _kind, reason = out.stage("quit")
    assert status == "warn"
    assert "QUIT not answered cleanly" in reason and f"{QUIT_WAIT:g}s exceeded" in reason
    assert r.mailbox is not None
    assert QUIT_WAIT - 0.1 <= out.elapsed <= QUIT_WAIT + MARGIN  # bounded, not the deadline


def test_html_and_ansi_in_err_text(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "html-ansi-err", mechanism="user")
    assert_failed(out, "auth-failed", "auth", "login failed (server said: <script>")
    reason = out.result.error_reason
    assert "<script>alert(1)</script> red" in reason  # HTML stays text; escaping is the report's
    assert "\x1b" not in reason and "[31m" not in reason
    assert "\x1b" not in out.transcript()
    assert out.result.auth is not None and "\x1b" not in out.result.auth.reason


@pytest.mark.parametrize("mechanism", ["user", "plain", "login", "xoauth2"])
def test_echoed_credentials_are_redacted(lab_certs: LabCerts, mechanism: str) -> None:
    out = run(lab_certs, "echo-credentials", mechanism=mechanism, sasl_mechanisms=ALL_SASL)
    assert_failed(out, "auth-failed", "auth", "bad password '[REDACTED]'")
    transcript = out.transcript()
    assert "bad password '[REDACTED]'" in transcript
    assert SENTINEL not in transcript and SENTINEL not in out.result.error_reason


# --------------------------------------------------------------------------- healthy matrix
@pytest.mark.parametrize("mode", ["starttls", "tls", "none", "starttls-optional"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_healthy_every_mechanism_and_mode(lab_certs: LabCerts, mechanism: str, mode: str) -> None:
    cleartext = mode == "none" and mechanism in CLEARTEXT
    out = run(
        lab_certs,
        mode=mode,
        mechanism=mechanism,
        allow_cleartext=cleartext,
        sasl_mechanisms=ALL_SASL,
    )
    r = out.result
    assert r.ok, f"{r.error_kind}: {r.error_reason}"
    assert [s.status for s in r.stages if s.status != "ok"] == [], r.stages
    assert r.auth is not None and r.auth.success and r.auth.mechanism == mechanism
    assert r.auth.encrypted is (mode != "none")
    assert r.mailbox is not None and (r.mailbox.count, r.mailbox.size) == (2, 336)
    assert out.srv.logins == 1
    assert out.commands()[-2:] == ["STAT", "QUIT"]
    assert "[REDACTED]" in out.transcript()  # the secret or the value derived from it
    if mode == "none":
        assert r.tls is None and "STLS" not in out.commands()
    else:
        assert r.tls is not None and r.tls.verified and r.tls.cert is not None
        assert r.tls.sni == "localhost"
        assert [e.detail for e in out.srv.log.events("sni")] == ["localhost"]
        assert_no_plaintext_secret(out.srv, SENTINEL)  # even when cleartext was allowed
    if cleartext:
        # The explicit opt-in is the only way a secret form crosses a plaintext channel.
        assert any(f in out.srv.plaintext_bytes() for f in secret_forms(SENTINEL))


# --------------------------------------------------------------------------- policy
@pytest.mark.parametrize("mechanism", ["user", "plain", "login", "xoauth2", "oauthbearer"])
def test_cleartext_mechanisms_refused_on_plaintext(lab_certs: LabCerts, mechanism: str) -> None:
    out = run(lab_certs, mode="none", mechanism=mechanism, sasl_mechanisms=ALL_SASL)
    assert_failed(
        out,
        "cleartext-refused",
        "auth",
        f"refusing {mechanism.upper()} over an unencrypted connection",
        "allow_cleartext: true",
    )
    assert out.commands() == ["CAPA", "QUIT"]
    assert_no_credentials(out)


def test_cleartext_refused_after_downgrade(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "no-stls", mode="starttls-optional", mechanism="user")
    assert_failed(out, "cleartext-refused", "auth", "refusing USER over an unencrypted connection")
    assert out.result.downgradable
    assert_no_credentials(out)


@pytest.mark.parametrize(
    ("scenario", "mode", "sasl", "allow_cleartext", "expected"),
    [
        ("healthy", "none", DEFAULT_SASL, False, "scram-sha-256"),
        ("healthy", "none", ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1"), False, "scram-sha-1"),
        ("healthy", "none", ("PLAIN", "LOGIN", "CRAM-MD5"), False, "cram-md5"),
        ("healthy", "none", ("PLAIN", "LOGIN"), False, "apop"),
        ("healthy-no-apop", "none", ("PLAIN", "LOGIN"), True, "plain"),
        ("healthy-no-apop", "tls", ("PLAIN", "LOGIN"), False, "plain"),
        ("healthy-no-apop", "starttls", ("XOAUTH2",), False, "user"),
    ],
)
def test_auto_picks_the_strongest_allowed(
    lab_certs: LabCerts,
    scenario: str,
    mode: str,
    sasl: tuple[str, ...],
    allow_cleartext: bool,
    expected: str,
) -> None:
    out = run(
        lab_certs,
        scenario,
        mode=mode,
        allow_cleartext=allow_cleartext,
        sasl_mechanisms=sasl,
    )
    r = out.result
    assert r.ok, r.error_reason
    assert r.auth is not None and r.auth.mechanism == expected


def test_auto_with_nothing_safe_on_plaintext_sends_no_credential(lab_certs: LabCerts) -> None:
    out = run(lab_certs, "healthy-no-apop", mode="none", sasl_mechanisms=("PLAIN", "LOGIN"))
    assert_failed(
        out,
        "cleartext-refused",
        "auth",
        "no mechanism that is safe on an unencrypted connection is offered",
        "PLAIN, LOGIN, USER",
    )
    assert_no_credentials(out)


# --------------------------------------------------------------------------- TLS first
class _Thresholds:
    """The one threshold the login checks read."""

    def __init__(self, auth: str) -> None:
        self.auth = auth


TLS_FIRST = "server requires TLS before login: use security: starttls"


@pytest.mark.parametrize(
    ("scenario", "mechanism", "said"),
    [
        # Courier's wording, no response code: the text decides (last resort).
        ("tls-required-text", "user", "server said: TLS required to log in.; mechanism USER"),
        ("tls-required-text", "plain", "server said: TLS required to log in.; mechanism PLAIN"),
        ("tls-required-text", "cram-sha256", "TLS required to log in.; mechanism CRAM-SHA256"),
        # A code that says it, whatever the words.
        ("tls-required-code", "user", "server said: [PRIVACYREQUIRED] Login refused."),
        ("tls-required-code", "login", "[PRIVACYREQUIRED] Login refused.; mechanism LOGIN"),
        # [AUTH] to USER / AUTH before any credential, STLS offered: not about a password.
        ("tls-required-auth", "user", "[AUTH] before any credential was sent"),
        ("tls-required-auth", "scram-sha-256", "[AUTH] Not permitted.; mechanism SCRAM-SHA-256"),
    ],
)
def test_login_refused_until_tls_is_its_own_kind(
    lab_certs: LabCerts, scenario: str, mechanism: str, said: str
) -> None:
    out = run(
        lab_certs,
        scenario,
        mode="none",
        mechanism=mechanism,
        allow_cleartext=True,
        sasl_mechanisms=ALL_SASL,
    )
    assert_failed(out, "tls-required", "auth", TLS_FIRST, said)
    auth = out.result.auth
    # PLAIN carries the secret in the AUTH line itself (allowed here); the others were
    # refused before it, so it never crossed the wire and the result says so.
    inline = mechanism == "plain"
    assert auth is not None and not auth.success and auth.secret_sent is inline
    if not inline:
        assert_no_plaintext_secret(out.srv, SENTINEL)
    assert "PASS" not in out.commands() and out.commands()[-1] == "QUIT"
    t = _Thresholds(mechanism)
    verdict = login_check(out.result, t)
    assert (verdict.verdict, verdict.reason) == ("CRIT", out.result.error_reason)
    pol = policy_check(out.result, t)
    assert pol.verdict == "CRIT" and pol.reason.startswith(TLS_FIRST)
    assert "sent the secret" not in pol.reason


@pytest.mark.parametrize("mechanism", ["user", "plain", "auto"])
def test_mechanism_withheld_until_stls_is_tls_required(lab_certs: LabCerts, mechanism: str) -> None:
    # Before TLS the server lists STLS but neither USER nor any SASL mechanism.
    out = run(
        lab_certs,
        "healthy-no-apop",
        mode="none",
        mechanism=mechanism,
        allow_cleartext=True,
        allow_plaintext_auth=False,
        sasl_mechanisms=("PLAIN", "LOGIN"),
    )
    what = {"user": "not USER", "plain": "not SASL PLAIN", "auto": "no login mechanism"}
    assert_failed(out, "tls-required", "auth", TLS_FIRST, f"CAPA lists STLS but {what[mechanism]}")
    assert "server does not offer" not in out.result.error_reason
    assert_no_credentials(out)


@pytest.mark.parametrize("mechanism", ["user", "cram-md5"])
def test_wrong_password_on_plaintext_with_stls_offered_is_not_tls_required(
    lab_certs: LabCerts, mechanism: str
) -> None:
    # The credential (PASS, a CRAM digest) went out: [AUTH] is about it.
    out = run(lab_certs, mode="none", mechanism=mechanism, allow_cleartext=True, password=WRONG)
    assert_failed(out, "auth-rejected", "auth", "server rejected the credentials [AUTH]")
    auth = out.result.auth
    assert auth is not None and auth.secret_sent is (mechanism == "user")
    pol = policy_check(out.result, _Thresholds(mechanism))
    if mechanism == "user":  # PASS really went out in the clear: that is what policy says
        assert (pol.verdict, pol.reason) == (
            "WARN",
            "USER sent the secret unencrypted (allowed by allow_cleartext)",
        )


def test_user_refused_before_pass_sends_no_secret_and_policy_says_so(lab_certs: LabCerts) -> None:
    class _NoSuchUser(Session):
        def cmd_user(self, arg: str) -> None:
            self.reply("-ERR No such user.")

    out = run(lab_certs, mode="none", mechanism="user", allow_cleartext=True, session=_NoSuchUser)
    assert_failed(out, "auth-failed", "auth", "login failed (server said: No such user.")
    assert out.result.auth is not None and not out.result.auth.secret_sent
    assert "PASS" not in out.commands()
    pol = policy_check(out.result, _Thresholds("user"))
    assert pol.verdict == "SKIP" and pol.blocked_by == "login"
    assert "USER sent no secret" in pol.reason and "unencrypted" not in pol.reason
