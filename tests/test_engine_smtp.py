"""The SMTP companion probe (engine/smtp.py) against real Postfix, Dovecot's submission
service and the fault server's SMTP scenarios.

What is proven here: the dialogue and its facts (greeting, EHLO extensions before and after
STARTTLS, TLS verification, relay refusal, every SASL mechanism the servers offer), the
policies carried over from POP3 (no secret before TLS, STARTTLS injection, one login per
probe), the failure kinds of hostile servers within the one deadline, and the command
allowlist: only EHLO, STARTTLS, AUTH and QUIT reach a server, MAIL/RCPT/RSET only with a
relay check, DATA never.
"""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest
from pop3mon.checks.base import Thresholds
from pop3mon.checks.login import relay as relay_check
from pop3mon.engine import ProbeResult, ProbeSpec, probe
from pop3mon.engine.errors import PolicyError
from pop3mon.engine.smtp import (
    RELAY_COMMANDS,
    SMTP_COMMANDS,
    SmtpWire,
    relay_recipient_problem,
)
from pop3mon.engine.wire import Deadline
from pop3mon.secrets import Secret
from pop3mon.verdict import Verdict

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dovecot import DovecotLab
from pop3mon_lab.faultserver import FaultServer
from pop3mon_lab.postfix import PostfixLab

RELAY_TO = "relay-test@pop3mon.invalid"
# The relay rule reads no threshold; a stand-in is enough.
_NO_THRESHOLDS: Thresholds = SimpleNamespace()  # type: ignore[assignment]


def smtp_spec(port: int, **kw: object) -> ProbeSpec:
    """A spec for the lab on 127.0.0.1 (verified as ``localhost``)."""
    base: dict[str, object] = {
        "id": "smtp",
        "host": "localhost",
        "address": "127.0.0.1",
        "port": port,
        "protocol": "smtp",
        "auth": "none",
        "timeout": 5.0,
    }
    base.update(kw)
    return ProbeSpec(**base)  # type: ignore[arg-type]


def sent_verbs(result: ProbeResult) -> list[str]:
    """The verbs of the client lines of the transcript (SASL lines are not verbs)."""
    verbs = [line.text.split(" ", 1)[0] for line in result.transcript if line.direction == "C"]
    return [v for v in verbs if v.isalpha() and v.isupper()]


def _keywords(caps: tuple[str, ...] | None) -> set[str]:
    return {c.split()[0].upper() for c in caps or () if c.split()}


# -- Postfix ---------------------------------------------------------------------------------
def test_postfix_starttls_relay_refused(postfix: PostfixLab) -> None:
    """Port-25 style: 220, EHLO (SIZE, PIPELINING, STARTTLS), STARTTLS with a verified
    certificate, EHLO again without STARTTLS, relay to a .invalid domain refused."""
    spec = smtp_spec(
        postfix.port("smtp"),
        security="starttls",
        ca_file=str(postfix.ca_file),
        relay_check=RELAY_TO,
    )
    result = probe(spec)
    assert result.ok, result.error_reason
    assert result.protocol == "smtp"
    assert "ESMTP" in result.greeting
    assert {"SIZE", "PIPELINING", "STARTTLS"} <= _keywords(result.capabilities_before)
    assert "STARTTLS" not in _keywords(result.capabilities_after)
    assert result.stls_offered is True and not result.injection
    assert result.tls is not None and result.tls.verified
    assert result.relay_open is False
    assert "Relay access denied" in result.relay_reply
    assert [p for p, _ in result.phases] == [
        "connect",
        "greeting",
        "ehlo",
        "starttls",
        "tls_handshake",
        "ehlo_tls",
        "relay",
        "quit",
        "total",
    ]
    assert sent_verbs(result) == ["EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "RSET", "QUIT"]
    verdict = relay_check(result, _NO_THRESHOLDS)
    assert verdict.verdict == Verdict.OK, verdict.reason


def test_postfix_implicit_tls(postfix: PostfixLab) -> None:
    """Port-465 style: TLS first, then 220 and EHLO; no MAIL/RCPT without a relay check."""
    result = probe(smtp_spec(postfix.port("smtps"), security="tls", ca_file=str(postfix.ca_file)))
    assert result.ok, result.error_reason
    assert result.tls is not None and result.tls.verified and result.tls.cert is not None
    assert result.capabilities_after is None and result.relay_open is None
    assert sent_verbs(result) == ["EHLO", "QUIT"]


def test_postfix_starttls_certificate_names_the_fault(
    lab_certs: LabCerts, postfix: PostfixLab
) -> None:
    """A host name the certificate is not for fails the handshake, and the certificate is
    still read (over a second SMTP connection's STARTTLS) for the report."""
    spec = smtp_spec(
        postfix.port("smtp"),
        host="mail.wrong.test",
        security="starttls",
        ca_file=str(postfix.ca_file),
    )
    result = probe(spec)
    assert result.error_kind == "cert-hostname-mismatch"
    assert result.error_stage == "tls_handshake"
    assert result.tls is not None and result.tls.cert is not None
    assert "localhost" in " ".join(result.tls.cert.sans)


# -- Dovecot submission ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "mech", ["auto", "plain", "login", "cram-md5", "scram-sha-1", "scram-sha-256"]
)
def test_submission_login(
    submission: tuple[DovecotLab, int], lab_certs: LabCerts, mech: str
) -> None:
    """Port-587 style: STARTTLS then AUTH with each mechanism; the secret is never shown."""
    lab, port = submission
    spec = smtp_spec(
        port,
        security="starttls",
        auth=mech,
        username=lab.demo_user,
        secret=Secret(lab.demo_password, "test"),
        ca_file=str(lab_certs.ca_file),
    )
    result = probe(spec)
    assert result.ok, result.error_reason
    assert result.auth is not None and result.auth.success and result.auth.encrypted
    assert result.auth.mechanism == ("scram-sha-256" if mech == "auto" else mech)
    assert "AUTH" in _keywords(result.capabilities_after)
    assert lab.demo_password not in result.to_json()
    assert "MAIL" not in sent_verbs(result) and "DATA" not in sent_verbs(result)


def test_submission_wrong_password(submission: tuple[DovecotLab, int], lab_certs: LabCerts) -> None:
    """535 is a credential refusal (auth-rejected), with the server's words."""
    lab, port = submission
    spec = smtp_spec(
        port,
        security="starttls",
        auth="plain",
        username=lab.demo_user,
        secret=Secret("not-the-password-1", "test"),
        ca_file=str(lab_certs.ca_file),
    )
    result = probe(spec)
    assert result.error_kind == "auth-rejected", result.error_reason
    assert "535" in result.error_reason
    assert result.stage("quit") is not None  # the session was still usable: QUIT said


def test_submission_no_secret_before_tls(submission: tuple[DovecotLab, int]) -> None:
    """Without TLS and without allow_cleartext, PLAIN is refused before any AUTH goes out,
    though the server offers it in plaintext."""
    lab, port = submission
    spec = smtp_spec(
        port,
        security="none",
        auth="plain",
        username=lab.demo_user,
        secret=Secret(lab.demo_password, "test"),
    )
    result = probe(spec)
    assert result.error_kind == "cleartext-refused"
    assert "AUTH" not in sent_verbs(result)
    assert result.auth is not None and not result.auth.secret_sent


# -- fault server ----------------------------------------------------------------------------
def _fault(scenario: str, lab_certs: LabCerts, **kw: object) -> FaultServer:
    return FaultServer(
        scenario,
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
        **kw,  # type: ignore[arg-type]
    )


def _assert_allowlisted(srv: FaultServer, *, relay: bool) -> None:
    """The recording server saw only allowlisted verbs; MAIL/RCPT/RSET only with a relay
    check; DATA never."""
    allowed = SMTP_COMMANDS | RELAY_COMMANDS if relay else SMTP_COMMANDS
    for entry in srv.log.entries():
        if entry.kind == "command" and not entry.raw.startswith(b"\x16"):
            assert entry.verb in allowed, f"server saw {entry.line!r}"
    assert not srv.log.events("data-refused")


def test_fault_healthy_login_once_and_allowlist(lab_certs: LabCerts) -> None:
    """One probe makes exactly one login; the server saw only allowlisted commands."""
    with _fault("smtp-healthy", lab_certs, allow_plaintext_auth=False) as srv:
        spec = smtp_spec(
            srv.port,
            security="starttls",
            auth="auto",
            username="alice",
            secret=Secret("alice-secret-1", "test"),
            ca_file=str(lab_certs.ca_file),
            relay_check=RELAY_TO,
        )
        result = probe(spec)
        assert srv.wait_idle()
        assert result.ok, result.error_reason
        assert srv.logins == 1
        assert result.relay_open is False
        _assert_allowlisted(srv, relay=True)
        assert b"alice-secret-1" not in srv.plaintext_bytes()


def test_fault_open_relay_is_crit(lab_certs: LabCerts) -> None:
    """A server that takes a .invalid recipient from a stranger is an open relay: CRIT."""
    with _fault("smtp-open-relay", lab_certs) as srv:
        result = probe(
            smtp_spec(
                srv.port, security="starttls", ca_file=str(lab_certs.ca_file), relay_check=RELAY_TO
            )
        )
        assert srv.wait_idle()
    assert result.ok and result.relay_open is True
    verdict = relay_check(result, _NO_THRESHOLDS)
    assert verdict.verdict == Verdict.CRIT and "open relay" in verdict.reason
    _assert_allowlisted(srv, relay=True)


def test_fault_starttls_injection(lab_certs: LabCerts) -> None:
    """Bytes after the 220 to STARTTLS, before the handshake: aborted, no EHLO over TLS."""
    with _fault("smtp-starttls-injection", lab_certs) as srv:
        result = probe(smtp_spec(srv.port, security="starttls", ca_file=str(lab_certs.ca_file)))
    assert result.error_kind == "stls-injection" and result.injection
    assert result.error_stage == "starttls"
    assert result.capabilities_after is None


@pytest.mark.parametrize(
    ("security", "kind", "downgradable"),
    [("starttls", "stls-not-offered", False), ("starttls-optional", "", True)],
)
def test_fault_no_starttls(
    lab_certs: LabCerts, security: str, kind: str, downgradable: bool
) -> None:
    """STARTTLS required and missing fails; optional and missing is a downgradable WARN."""
    with _fault("smtp-no-starttls", lab_certs) as srv:
        result = probe(smtp_spec(srv.port, security=security))
    assert result.error_kind == kind
    assert result.downgradable is downgradable
    assert result.stls_offered is False


def test_fault_auth_refused(lab_certs: LabCerts) -> None:
    """535 to every AUTH: auth-rejected after one attempt, QUIT still said."""
    with _fault("smtp-auth-refused", lab_certs) as srv:
        spec = smtp_spec(
            srv.port,
            security="starttls",
            auth="scram-sha-256",
            username="alice",
            secret=Secret("alice-secret-1", "test"),
            ca_file=str(lab_certs.ca_file),
        )
        result = probe(spec)
        assert srv.wait_idle()
    assert result.error_kind == "auth-rejected", result.error_reason
    assert len(srv.log.events("login-failed")) == 1
    assert srv.log.commands()[-1] == "QUIT"


@pytest.mark.parametrize(
    ("scenario", "kind"),
    [
        ("smtp-554-greeting", "greeting-refused"),
        ("smtp-garbage", "bad-status-line"),
        ("smtp-hang", "timeout"),
    ],
)
def test_fault_greeting_failures(lab_certs: LabCerts, scenario: str, kind: str) -> None:
    """A refusing, garbage or silent greeting is its kind at the greeting stage, within the
    deadline; nothing is sent after a refused greeting but (at most) QUIT."""
    with _fault(scenario, lab_certs) as srv:
        start = time.monotonic()
        result = probe(smtp_spec(srv.port, security="starttls", timeout=1.0))
        elapsed = time.monotonic() - start
        srv.wait_idle()
    assert result.error_kind == kind, result.error_reason
    assert result.error_stage == "greeting"
    assert elapsed < 1.0 + 1.0
    assert set(srv.log.commands()) <= {"QUIT"}


def test_fault_slow_greeting_is_timed(lab_certs: LabCerts) -> None:
    """A late 220 is still a session, and the wait is the greeting phase's."""
    with _fault("smtp-slow-greeting", lab_certs, drip_interval=0.3) as srv:
        result = probe(smtp_spec(srv.port, security="starttls", ca_file=str(lab_certs.ca_file)))
    assert result.ok, result.error_reason
    greeting = result.phase("greeting")
    assert greeting is not None and greeting >= 0.3


# -- the allowlist itself --------------------------------------------------------------------
def test_smtp_wire_refuses_data_and_relay_verbs() -> None:
    """DATA is in no allowlist; MAIL/RCPT/RSET only on a wire made for a relay check. The
    refusal happens before a byte reaches the socket."""
    ours, theirs = socket.socketpair()
    try:
        plain = SmtpWire(ours, Deadline(2.0), started=time.perf_counter())
        relay = SmtpWire(ours, Deadline(2.0), started=time.perf_counter(), relay=True)
        for wire, verb in ((plain, "DATA"), (relay, "DATA"), (plain, "MAIL"), (plain, "RCPT")):
            with pytest.raises(PolicyError) as info:
                wire.command(verb, stage="relay")
            assert info.value.kind == "command-refused"
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(100)
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize(
    ("recipient", "ok"),
    [
        ("relay-test@pop3mon.invalid", True),
        ("x@sub.example.INVALID", True),
        ("postmaster@example.com", False),
        ("no-at-sign.invalid", False),
        ("a@b.invalid>\r\nDATA", False),
    ],
)
def test_relay_recipient_must_be_invalid_domain(recipient: str, ok: bool) -> None:
    """The relay check's recipient can never be a mailbox anyone reads."""
    assert (relay_recipient_problem(recipient) == "") is ok
