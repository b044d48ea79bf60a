"""The probe engine against real Dovecot 2.3: every mode × every mechanism, every TLS defect.

The session-scoped ``dovecot`` fixture runs one Dovecot per certificate variant on 127.0.0.1
(see ``pop3mon_lab/dovecot.py``). Every test makes at most one login, and each check
is made twice where it can: once on what the engine reports (:class:`ProbeResult`) and once on
what Dovecot itself logged (one ``Login:`` line with the expected method and TLS flag; for a
refused session, ``no auth attempts`` and no login at all). That second view is what proves
"no credential byte was sent" rather than merely "the engine says so".

Failed logins are answered at once by the lab (``nodelay``), so the wrong-password cases do
not slow the rest of the file down.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pop3mon.engine import ProbeResult, ProbeSpec, probe
from pop3mon.engine import auth as engine_auth
from pop3mon.engine.auth import STRENGTH, apop_digest, valid_apop_timestamp
from pop3mon.engine.runner import run_probes
from pop3mon.engine.wire import ALLOWED_COMMANDS
from pop3mon.secrets import REDACTED, Secret

from conftest import another_lab
from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dovecot import DovecotLab, ListenerName, free_port

MODES = ("starttls", "starttls-optional", "tls", "none")
MECHANISMS = ("apop", "user", "plain", "login", "cram-md5", "scram-sha-1", "scram-sha-256", "auto")
CLEARTEXT_MECHANISMS = ("user", "plain", "login")
TLS_MODES = ("starttls", "starttls-optional", "tls")
BROKEN_VARIANTS = ("expired", "not_yet_valid", "wrong_host", "self_signed", "incomplete_chain")

#: How Dovecot names each mechanism in its ``Login: ... method=`` line (USER/PASS is PLAIN).
DOVECOT_METHOD = {
    "apop": "APOP",
    "user": "PLAIN",
    "plain": "PLAIN",
    "login": "LOGIN",
    "cram-md5": "CRAM-MD5",
    "scram-sha-1": "SCRAM-SHA-1",
    "scram-sha-256": "SCRAM-SHA-256",
}
CREDENTIAL_VERBS = ("USER", "PASS", "APOP", "AUTH")
ALL_OFFERED = ("scram-sha-256", "scram-sha-1", "cram-md5", "apop", "plain", "login", "user")
FINGERPRINT = re.compile(r"^(?:[0-9A-F]{2}:){31}[0-9A-F]{2}$")
TIMEOUT = 5.0
FAST = 1.0  # seconds: refusals, rejections and TLS failures on loopback must not wait
EXPIRED_NOT_AFTER = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)  # see lab/certs.py


# --------------------------------------------------------------------------- helpers


def listener(mode: str) -> ListenerName:
    """The Dovecot listener a mode connects to: implicit TLS on pop3s, the rest on pop3."""
    return "pop3s" if mode == "tls" else "pop3"


def expected_phases(mode: str, *, login: bool = True) -> list[str]:
    """Phase names, in run order, of a successful probe of ``host="localhost"``."""
    phases = ["dns", "connect"]
    if mode == "tls":
        phases.append("tls")
    phases += ["greeting", "capa"]
    if mode in ("starttls", "starttls-optional"):
        phases += ["stls", "tls_handshake", "capa_tls"]
    if login:
        phases += ["auth", "stat"]
    return [*phases, "quit", "total"]


def secret_forms(user: str, password: str) -> list[str]:
    """Ways a password could leak into text: raw, base64, SASL PLAIN and LOGIN payloads."""
    raw = password.encode()
    return [
        password,
        base64.b64encode(raw).decode(),
        base64.b64encode(b"\0" + user.encode() + b"\0" + raw).decode(),
        # The inner base64 groups of the PLAIN payload survive whatever alignment it has.
        base64.b64encode(b"\0" + raw).decode()[4:-4],
    ]


def assert_redacted(result: ProbeResult, user: str, password: str) -> None:
    """Neither the transcript nor the serialised result carries the password in any form."""
    text = "\n".join(line.text for line in result.transcript)
    dumped = result.to_json()
    for form in secret_forms(user, password):
        assert form not in text, f"transcript leaks {form!r}"
        assert form not in dumped, f"result JSON leaks {form!r}"
    # SASL continuations carry the secret or values derived from it (CRAM-MD5 digest, SCRAM
    # proof, LOGIN password): only the LOGIN user name may be shown.
    shown_user = base64.b64encode(user.encode()).decode()
    for line in result.transcript:
        if line.direction != "C":
            continue
        if is_command(line.text):
            if line.text.split()[0] in ("PASS", "APOP"):
                assert line.text.split()[-1] == REDACTED, line
        else:
            assert line.text in (REDACTED, "(empty response)", "*", shown_user), line


def is_command(text: str) -> bool:
    """True for a client transcript line holding a command, not a SASL continuation."""
    words = text.split()
    return bool(words) and words[0] in ALLOWED_COMMANDS


def client_verbs(result: ProbeResult) -> list[str]:
    """The verbs the engine sent, from its own transcript (SASL continuations excluded)."""
    return [
        line.text.split()[0]
        for line in result.transcript
        if line.direction == "C" and is_command(line.text)
    ]


def status_of(result: ProbeResult, stage: str) -> str:
    """The status of ``stage`` (ok/fail/skip/warn), or ``absent`` when it never ran."""
    outcome = result.stage(stage)
    return outcome.status if outcome is not None else "absent"


def cert_fingerprint(certs: LabCerts, variant: str) -> str:
    """SHA-256 fingerprint (colon-separated upper hex) of the leaf a variant serves."""
    leaf = x509.load_pem_x509_certificates(certs.variant(variant).cert.read_bytes())[0]
    return leaf.fingerprint(hashes.SHA256()).hex(":").upper()


@dataclass
class LogMark:
    """A point in one Dovecot instance's log, to read what a single probe caused."""

    lab: DovecotLab
    variant: str
    port: int
    offset: int
    logins_before: int

    @classmethod
    def take(cls, lab: DovecotLab, variant: str, port: int) -> LogMark:
        """Remember the current end of the log and the login count on ``port``."""
        return cls(lab, variant, port, len(lab.log_text(variant)), lab.login_count(port=port))

    def new_text(self) -> str:
        """Log lines written since :meth:`take`."""
        return self.lab.log_text(self.variant)[self.offset :]

    def disconnects(self, expected: int = 1, timeout: float = 3.0) -> list[str]:
        """``pop3-login`` disconnect lines since :meth:`take`, waiting (bounded) for
        ``expected`` of them: Dovecot's log process writes a moment after the client left."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [
                line
                for line in self.new_text().splitlines()
                if "pop3-login:" in line and "Disconnected" in line
            ]
            if len(lines) >= expected or time.monotonic() >= deadline:
                return lines
            time.sleep(0.02)

    def new_logins(self) -> int:
        """Successful logins on ``port`` since :meth:`take` (waits for the first one)."""
        count = self.lab.wait_for_logins(self.logins_before + 1, port=self.port, timeout=3.0)
        return count - self.logins_before

    def assert_no_credentials(self, connections: int = 1) -> None:
        """Dovecot saw no login attempt at all: no login, no auth failure, and every
        connection it logged closed with ``no auth attempts``."""
        lines = self.disconnects(connections)
        text = self.new_text()
        assert lines, f"Dovecot logged no disconnect:\n{text}"
        for line in lines:
            assert "no auth attempts" in line, line
        assert "Login:" not in text, text
        assert "auth failed" not in text, text
        assert self.lab.login_count(port=self.port) == self.logins_before


@pytest.fixture(scope="module")
def password(dovecot: DovecotLab) -> Secret:
    """The demo user's password as a :class:`Secret` (registered with the redactor)."""
    return Secret(dovecot.demo_password, "test:dovecot-lab")


def spec_for(
    lab: DovecotLab,
    secret: Secret | None,
    *,
    mode: str,
    mechanism: str,
    variant: str = "valid",
    **overrides: Any,
) -> ProbeSpec:
    """A spec for the lab instance serving ``variant``, verifying against the lab CA;
    ``overrides`` replace any other :class:`ProbeSpec` field."""
    spec = ProbeSpec(
        id=f"{variant}-{mode}-{mechanism}",
        host=lab.hostname,
        port=lab.port(listener(mode), variant),
        security=mode,
        auth=mechanism,
        username=lab.demo_user,
        secret=secret,
        ca_file=str(lab.ca_file),
        timeout=TIMEOUT,
    )
    return dataclasses.replace(spec, **overrides)


def timed_probe(spec: ProbeSpec) -> tuple[ProbeResult, float]:
    """Run one probe and return it with its wall time."""
    started = time.monotonic()
    result = probe(spec)
    return result, time.monotonic() - started


# --------------------------------------------------------------------------- success matrix


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("mode", MODES)
def test_login_succeeds(
    dovecot: DovecotLab, lab_certs: LabCerts, password: Secret, mode: str, mechanism: str
) -> None:
    """Every mode × mechanism Dovecot offers logs in once and reads the seeded mailbox."""
    allow_cleartext = mode == "none" and mechanism in CLEARTEXT_MECHANISMS
    spec = spec_for(
        dovecot, password, mode=mode, mechanism=mechanism, allow_cleartext=allow_cleartext
    )
    mark = LogMark.take(dovecot, "valid", spec.port)
    result = probe(spec)

    assert result.ok, (result.error_kind, result.error_reason, dovecot.log_tail(10))
    assert result.error_kind == result.error_stage == result.error_reason == ""
    encrypted = mode != "none"
    chosen = "scram-sha-256" if mechanism == "auto" else mechanism

    # Authentication outcome.
    assert result.auth is not None
    assert result.auth.success
    assert result.auth.mechanism == chosen
    assert result.auth.strength == STRENGTH[chosen]
    assert result.auth.encrypted is encrypted
    assert result.auth.offered == ALL_OFFERED
    assert result.auth.response_code == ""

    # Mailbox: exactly what the lab seeded.
    seeded = dovecot.mailbox()
    assert result.mailbox is not None
    assert (result.mailbox.count, result.mailbox.size) == (seeded.count, seeded.size)

    # Phases and stages: each that ran is present once, in order; the others are absent.
    assert [name for name, _ in result.phases] == expected_phases(mode)
    assert all(seconds >= 0 for _, seconds in result.phases)
    total = result.phase("total")
    assert total is not None and total < TIMEOUT
    assert all(s.status == "ok" for s in result.stages), result.stages
    assert [s.stage for s in result.stages] == [p for p, _ in result.phases if p != "total"]
    assert result.phase("ping") is None and result.stage("ping") is None
    assert result.addresses and result.peer == "127.0.0.1"

    # Greeting and capabilities before/after TLS.
    assert result.greeting.startswith("Dovecot")
    assert result.apop_timestamp
    before, after = result.capabilities_before, result.capabilities_after
    assert before is not None
    assert any(c.startswith("SASL ") and "SCRAM-SHA-256" in c for c in before)
    if mode in ("starttls", "starttls-optional"):
        assert "STLS" in before
        assert after is not None
        assert "STLS" not in after, "Dovecot stops offering STLS once TLS is on"
        assert "USER" in after
        assert any(c.startswith("SASL ") and "SCRAM-SHA-256" in c for c in after)
        assert result.stls_offered is True
    else:
        assert after is None
        assert result.stls_offered is None
        assert ("STLS" in before) is (mode == "none")
    assert not result.downgradable and not result.injection

    # TLS facts.
    if encrypted:
        tls = result.tls
        assert tls is not None
        assert tls.protocol in ("TLSv1.3", "TLSv1.2")
        assert tls.cipher
        assert tls.verified is True
        assert tls.verify_kind == tls.verify_reason == ""
        assert tls.sni == "localhost"
        cert = tls.cert
        assert cert is not None
        assert "CN=localhost" in cert.subject
        assert "pop3mon lab root CA" in cert.issuer
        assert "DNS:localhost" in cert.sans
        assert not cert.self_signed
        assert FINGERPRINT.match(cert.sha256), cert.sha256
        assert cert.sha256 == cert_fingerprint(lab_certs, "valid")
        assert re.fullmatch(r"[0-9A-F]+", cert.serial)
        assert 350 < cert.days_left <= 366  # the lab issues it for 365 days
        assert cert.not_after_epoch > time.time()
    else:
        assert result.tls is None

    # Redaction, and only allow-listed read-only commands were sent.
    assert_redacted(result, dovecot.demo_user, dovecot.demo_password)
    verbs = client_verbs(result)
    assert verbs[-2:] == ["STAT", "QUIT"]
    assert [v for v in verbs if v in CREDENTIAL_VERBS] == (
        ["USER", "PASS"] if chosen == "user" else ["AUTH" if chosen != "apop" else "APOP"]
    ), "exactly one login attempt"
    sent = [line.text for line in result.transcript if line.direction == "C"]
    assert not any(t.split()[0] in ("DELE", "RETR", "TOP", "RSET", "LIST") for t in sent)
    if chosen == "apop":
        timestamp = valid_apop_timestamp(result.greeting.encode())
        assert timestamp is not None
        digest = apop_digest(timestamp, dovecot.demo_password)
        assert digest not in "\n".join(line.text for line in result.transcript)

    # Dovecot's own view: exactly one login, with this mechanism, over TLS when expected.
    assert mark.new_logins() == 1
    record = dovecot.logins(port=spec.port)[-1]
    assert record.user == dovecot.demo_user
    assert record.method == DOVECOT_METHOD[chosen]
    assert record.tls is encrypted, record.line


@pytest.mark.parametrize("mechanism", CLEARTEXT_MECHANISMS)
def test_plaintext_refuses_cleartext_mechanism(
    dovecot: DovecotLab, password: Secret, mechanism: str
) -> None:
    """Mode none without allow_cleartext: refused by policy before any credential byte."""
    spec = spec_for(dovecot, password, mode="none", mechanism=mechanism)
    mark = LogMark.take(dovecot, "valid", spec.port)
    result, elapsed = timed_probe(spec)

    assert not result.ok
    assert result.error_kind == "cleartext-refused"
    assert result.error_stage == "auth"
    assert mechanism.upper() in result.error_reason
    assert "allow_cleartext" in result.error_reason
    assert elapsed < FAST
    assert result.auth is not None and not result.auth.success
    assert result.auth.encrypted is False
    assert result.mailbox is None
    assert result.phase("stat") is None and result.stage("stat") is None
    assert status_of(result, "quit") == "ok"
    assert not set(CREDENTIAL_VERBS) & set(client_verbs(result))
    assert client_verbs(result) == ["CAPA", "QUIT"]
    mark.assert_no_credentials()


# --------------------------------------------------------------------------- login failures


@pytest.mark.parametrize(
    "mechanism", ("user", "apop", "plain", "login", "cram-md5", "scram-sha-1", "scram-sha-256")
)
def test_wrong_password_is_rejected_fast(dovecot: DovecotLab, mechanism: str) -> None:
    """Dovecot's ``-ERR [AUTH]`` becomes auth-rejected with the code, quickly."""
    wrong = Secret(f"wrong-{mechanism}-Pw9!", "test:wrong")
    spec = spec_for(dovecot, wrong, mode="tls", mechanism=mechanism)
    mark = LogMark.take(dovecot, "valid", spec.port)
    result, elapsed = timed_probe(spec)

    assert not result.ok
    assert result.error_kind == "auth-rejected", result.error_reason
    assert result.error_stage == "auth"
    assert "rejected" in result.error_reason
    assert "[AUTH]" in result.error_reason
    assert mechanism.upper() in result.error_reason
    assert elapsed < FAST, f"took {elapsed:.2f}s"
    auth = result.auth
    assert auth is not None
    assert not auth.success
    assert auth.mechanism == mechanism
    assert auth.response_code == "AUTH"
    assert auth.encrypted
    assert auth.reason == result.error_reason
    assert result.mailbox is None
    assert result.phase("stat") is None
    assert status_of(result, "auth") == "fail"
    assert status_of(result, "quit") == "ok"  # the session stayed usable: QUIT was said
    assert_redacted(result, dovecot.demo_user, f"wrong-{mechanism}-Pw9!")
    # Dovecot saw exactly one failed attempt and no login.
    lines = mark.disconnects(1)
    assert lines and "auth failed, 1 attempts" in lines[0], lines
    assert dovecot.login_count(port=spec.port) == mark.logins_before


def test_unknown_user_is_rejected(dovecot: DovecotLab, password: Secret) -> None:
    """An unknown user is the same ``[AUTH]`` refusal as a wrong password."""
    spec = spec_for(dovecot, password, mode="starttls", mechanism="auto", username="nobody-here")
    result, elapsed = timed_probe(spec)

    assert result.error_kind == "auth-rejected", result.error_reason
    assert result.auth is not None and result.auth.response_code == "AUTH"
    assert result.auth.mechanism == "scram-sha-256"
    assert "[AUTH]" in result.error_reason
    assert result.mailbox is None
    assert elapsed < FAST


def test_closed_port_is_connection_refused(dovecot: DovecotLab, password: Secret) -> None:
    """Nothing listening: connection-refused at the connect stage, at once."""
    port = free_port()
    spec = spec_for(dovecot, password, mode="tls", mechanism="auto", port=port)
    result, elapsed = timed_probe(spec)

    assert result.error_kind == "connection-refused"
    assert result.error_stage == "connect"
    assert str(port) in result.error_reason and "refused" in result.error_reason
    assert elapsed < FAST
    assert [name for name, _ in result.phases] == ["dns", "connect", "total"]
    assert status_of(result, "connect") == "fail"
    assert result.transcript == ()
    assert result.tls is None and result.auth is None and result.mailbox is None


# --------------------------------------------------------------------------- certificates


@pytest.mark.parametrize("mode", TLS_MODES)
@pytest.mark.parametrize("variant", BROKEN_VARIANTS)
def test_broken_certificate_stops_before_login(
    dovecot: DovecotLab, password: Secret, variant: str, mode: str
) -> None:
    """A certificate that does not verify ends the probe at the handshake: the facts are
    recorded, the reason says what is wrong, and no credential reaches Dovecot."""
    spec = spec_for(dovecot, password, mode=mode, mechanism="user", variant=variant)
    mark = LogMark.take(dovecot, variant, spec.port)
    result, elapsed = timed_probe(spec)

    stage = "tls" if mode == "tls" else "tls_handshake"
    assert not result.ok
    assert result.error_stage == stage
    assert elapsed < FAST
    tls = result.tls
    assert tls is not None
    assert tls.verified is False
    assert tls.verify_kind == result.error_kind
    assert tls.verify_reason == result.error_reason
    assert tls.sni == "localhost"
    cert = tls.cert
    assert cert is not None, "certificate facts must be recorded even when it fails"
    assert FINGERPRINT.match(cert.sha256)
    assert tls.protocol in ("TLSv1.3", "TLSv1.2")

    now = time.time()
    if variant == "expired":
        assert result.error_kind == "cert-expired"
        ago = (dt.datetime.now(dt.UTC) - EXPIRED_NOT_AFTER).total_seconds() / 86400
        match = re.fullmatch(
            r"certificate expired 2021-01-01 \((\d+) days ago\)", result.error_reason
        )
        assert match, result.error_reason
        assert abs(int(match.group(1)) - ago) <= 1
        assert cert.not_after.startswith("2021-01-01")
        assert cert.not_after_epoch < now and cert.days_left < 0
    elif variant == "not_yet_valid":
        assert result.error_kind == "cert-not-yet-valid"
        assert result.error_reason == f"certificate is not valid before {cert.not_before[:10]}"
        assert dt.datetime.fromisoformat(cert.not_before).timestamp() > now
    elif variant == "wrong_host":
        assert result.error_kind == "cert-hostname-mismatch"
        assert cert.sans == ("DNS:wrong.example",)
        assert "localhost" in result.error_reason
        assert "DNS:wrong.example" in result.error_reason
    elif variant == "self_signed":
        assert result.error_kind == "cert-self-signed"
        assert "self-signed" in result.error_reason
        assert cert.self_signed and cert.subject == cert.issuer
    else:  # incomplete_chain: the leaf comes without its intermediate
        assert result.error_kind in ("cert-unknown-ca", "cert-incomplete-chain")
        assert "incomplete chain" in result.error_reason
        assert "intermediate CA" in cert.issuer

    # Nothing after the failed handshake: no login, no mailbox, never a plaintext fallback.
    assert result.auth is None and result.stage("auth") is None and result.phase("auth") is None
    assert result.mailbox is None and result.phase("stat") is None
    assert result.capabilities_after is None and result.phase("capa_tls") is None
    assert result.phase(stage) is not None and result.phase("total") is not None
    if mode == "tls":
        assert result.phase("greeting") is None and result.transcript == ()
    else:
        assert client_verbs(result) == ["CAPA", "STLS"]
    assert not set(CREDENTIAL_VERBS) & set(client_verbs(result))
    # The engine opens a second connection to read the rejected certificate.
    mark.assert_no_credentials(connections=2)


@pytest.mark.parametrize("mode", TLS_MODES)
def test_certificate_chain_with_intermediate_verifies(
    dovecot: DovecotLab, lab_certs: LabCerts, password: Secret, mode: str
) -> None:
    """Leaf + intermediate served, root trusted: verifies and logs in."""
    spec = spec_for(dovecot, password, mode=mode, mechanism="scram-sha-256", variant="chain")
    mark = LogMark.take(dovecot, "chain", spec.port)
    result = probe(spec)

    assert result.ok, result.error_reason
    assert result.tls is not None and result.tls.verified
    assert result.tls.cert is not None
    assert "pop3mon lab intermediate CA" in result.tls.cert.issuer
    assert result.tls.cert.sha256 == cert_fingerprint(lab_certs, "chain")
    assert result.mailbox is not None and result.mailbox.count == dovecot.mailbox().count
    assert mark.new_logins() == 1


@pytest.mark.parametrize("mode", ("tls", "starttls"))
def test_verification_disabled_accepts_self_signed(
    dovecot: DovecotLab, password: Secret, mode: str
) -> None:
    """verify_tls=False: the self-signed server is accepted, and the result says so."""
    spec = spec_for(
        dovecot, password, mode=mode, mechanism="auto", variant="self_signed", verify_tls=False
    )
    result = probe(spec)

    assert result.ok, result.error_reason
    tls = result.tls
    assert tls is not None
    assert tls.verified is False
    assert tls.verify_kind == "verification-disabled"
    assert "disabled" in tls.verify_reason
    assert tls.cert is not None and tls.cert.self_signed
    assert result.auth is not None and result.auth.encrypted
    assert result.mailbox is not None


# --------------------------------------------------------------------------- host name and SNI


def test_pinned_address_verifies_configured_host(dovecot: DovecotLab, password: Secret) -> None:
    """address=127.0.0.1, host=localhost: no DNS, connect to the address, verify localhost."""
    spec = spec_for(dovecot, password, mode="tls", mechanism="auto", address="127.0.0.1")
    result = probe(spec)

    assert result.ok, result.error_reason
    assert result.addresses == ("127.0.0.1",) and result.peer == "127.0.0.1"
    dns = result.stage("dns")
    assert dns is not None and dns.status == "skip" and "pinned" in dns.reason
    assert result.phase("dns") is None
    assert result.tls is not None and result.tls.verified and result.tls.sni == "localhost"


def test_pinned_address_checks_the_host_name_not_the_address(
    dovecot: DovecotLab, password: Secret
) -> None:
    """The certificate is checked against the configured name even though the address
    (127.0.0.1) is in its SANs: a name the certificate lacks fails before login."""
    spec = spec_for(
        dovecot,
        password,
        mode="tls",
        mechanism="auto",
        host="pop3.example.net",
        address="127.0.0.1",
    )
    mark = LogMark.take(dovecot, "valid", spec.port)
    result = probe(spec)

    assert result.error_kind == "cert-hostname-mismatch"
    assert "pop3.example.net" in result.error_reason
    assert "DNS:localhost" in result.error_reason
    assert result.tls is not None and result.tls.sni == "pop3.example.net"
    assert result.auth is None
    mark.assert_no_credentials(connections=2)


@pytest.mark.parametrize("mode", ("tls", "starttls"))
def test_ip_address_target_mismatch_is_a_host_name_mismatch(
    dovecot: DovecotLab, password: Secret, mode: str
) -> None:
    """Probing by IP (host 127.0.0.1) a Dovecot whose certificate names only wrong.example:
    OpenSSL checks the IP SANs (verify code 64, "IP address mismatch"); the result has the
    kind and wording of a name mismatch, saying what the certificate is for."""
    spec = spec_for(
        dovecot, password, mode=mode, mechanism="user", variant="wrong_host", host="127.0.0.1"
    )
    mark = LogMark.take(dovecot, "wrong_host", spec.port)
    result = probe(spec)

    assert result.error_kind == "cert-hostname-mismatch"
    assert result.error_reason == (
        "certificate does not match IP address 127.0.0.1 (it is for DNS:wrong.example)"
    )
    tls = result.tls
    assert tls is not None and not tls.verified
    # The certificate check reports exactly these (checks/tls.py reads verify_*).
    assert (tls.verify_kind, tls.verify_reason) == (result.error_kind, result.error_reason)
    assert tls.cert is not None and tls.cert.sans == ("DNS:wrong.example",)
    assert result.auth is None
    mark.assert_no_credentials(connections=2)


@pytest.mark.parametrize("mode", ("tls", "starttls"))
def test_unloadable_ca_file_blames_the_configuration_not_the_server(
    dovecot: DovecotLab, password: Secret, mode: str, tmp_path: Path
) -> None:
    """A ca_file that is not PEM (here DER) reaching the engine (changed after the targets
    file was loaded, or a spec built in code) names the file and is not a handshake
    failure of a healthy server."""
    der = x509.load_pem_x509_certificate(dovecot.ca_file.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    ca = tmp_path / "ca.der"
    ca.write_bytes(der)
    spec = spec_for(dovecot, password, mode=mode, mechanism="user", ca_file=str(ca))
    mark = LogMark.take(dovecot, "valid", spec.port)
    result = probe(spec)

    assert result.error_kind == "ca-file-unusable"
    # The context is built as the TLS step begins: within STLS for STARTTLS.
    assert result.error_stage == ("tls" if mode == "tls" else "stls")
    assert result.error_reason.startswith(f"ca_file {ca} cannot be loaded as PEM CA certificates")
    assert "configuration" in result.error_reason
    assert result.auth is None and result.tls is None
    mark.assert_no_credentials()


@pytest.fixture(scope="module")
def sni_lab(
    dovecot: DovecotLab, lab_certs: LabCerts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DovecotLab]:
    """A Dovecot whose default certificate is self-signed but which presents the valid one
    to clients sending SNI ``localhost`` (``local_name``): what it serves shows the SNI sent.

    Depends on ``dovecot`` only so that a missing Dovecot skips these tests the same way.
    """
    valid = lab_certs.variant("valid")
    extra = f"local_name localhost {{\n  ssl_cert = <{valid.cert}\n  ssl_key = <{valid.key}\n}}\n"
    yield from another_lab(
        lab_certs, tmp_path_factory, "dovecot-sni", variants=("self_signed",), extra_config=extra
    )


@pytest.mark.parametrize("mode", ("tls", "starttls"))
def test_sni_is_the_configured_host_name(sni_lab: DovecotLab, password: Secret, mode: str) -> None:
    """Connecting to the pinned address 127.0.0.1 still sends SNI ``localhost``: Dovecot
    answers with the certificate it keeps for that name, which verifies."""
    spec = spec_for(
        sni_lab,
        password,
        mode=mode,
        mechanism="auto",
        variant="self_signed",
        address="127.0.0.1",
    )
    result = probe(spec)

    assert result.ok, result.error_reason
    assert result.tls is not None and result.tls.sni == "localhost" and result.tls.verified
    assert result.tls.cert is not None and not result.tls.cert.self_signed
    assert "pop3mon lab root CA" in result.tls.cert.issuer


def test_without_sni_the_default_certificate_is_served(sni_lab: DovecotLab) -> None:
    """Control for the SNI test: an IP literal as host sends no SNI, so the same listener
    presents its default (self-signed) certificate and verification fails."""
    spec = spec_for(
        sni_lab, None, mode="tls", mechanism="none", variant="self_signed", host="127.0.0.1"
    )
    result = probe(spec)

    assert result.error_kind == "cert-self-signed"
    assert result.tls is not None and result.tls.cert is not None
    assert result.tls.cert.self_signed


# --------------------------------------------------------------- SCRAM credentials stored
@pytest.fixture(scope="module")
def scram_lab(
    dovecot: DovecotLab, lab_certs: LabCerts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DovecotLab]:
    """A Dovecot storing SCRAM-SHA-256 credentials (salt, iterations, StoredKey, ServerKey)
    instead of the password, as a production server offering SCRAM does.

    Depends on ``dovecot`` only so that a missing Dovecot skips these tests the same way.
    """
    yield from another_lab(
        lab_certs, tmp_path_factory, "dovecot-scram", password_scheme="SCRAM-SHA-256"
    )


def test_stored_scram_credentials_derive_the_key_once(
    scram_lab: DovecotLab, password: Secret
) -> None:
    """Against stored SCRAM credentials (one salt per account) pop3mon derives the
    SaltedPassword once, however many logins run and however many are in flight at once
    (RFC 5802 section 5.1); every login still proves the password and checks the server's
    signature, and a wrong password is still refused."""
    stored = scram_lab.passwd_file.read_text("utf-8")
    assert "{SCRAM-SHA-256}4096," in stored and scram_lab.demo_password not in stored

    engine_auth.forget_salted_passwords()
    before = engine_auth.derivations_started
    spec = spec_for(scram_lab, password, mode="tls", mechanism="scram-sha-256")
    results = run_probes([dataclasses.replace(spec, id=f"scram-{i}") for i in range(8)])
    assert all(r.ok for r in results.values()), [r.error_reason for r in results.values()]
    assert all(r.auth is not None and r.auth.mechanism == "scram-sha-256" for r in results.values())
    again = probe(spec)
    assert again.ok, again.error_reason
    assert engine_auth.derivations_started - before == 1
    assert scram_lab.login_count() >= 9
    # The cache is keyed by an HMAC of the password, not by the password itself.
    secret = scram_lab.demo_password.encode()
    keys = list(engine_auth._DERIVED)
    assert keys and not any(secret in part for key in keys for part in key[1:3]), keys

    wrong = probe(dataclasses.replace(spec, secret=Secret("not-the-password", "test:wrong")))
    assert not wrong.ok and wrong.error_kind == "auth-rejected", wrong.error_reason
    assert engine_auth.derivations_started - before == 2  # another password, another key

    # PLAIN (verified by the server against the stored credentials) works as well.
    plain = probe(spec_for(scram_lab, password, mode="tls", mechanism="plain"))
    assert plain.ok, plain.error_reason
