"""Self-tests of the lab: real Dovecot servers and the certificates they serve.

Only the standard library talks to the servers (poplib, ssl, socket): the project's engine is
tested *against* this lab, so the lab must not depend on it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import poplib
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pop3mon_lab.certs import (
    EXPECTED_VERIFY_CODES,
    VARIANTS,
    LabCerts,
    generate_ca,
    generate_lab_certs,
)
from pop3mon_lab.dovecot import (
    DovecotLab,
    LabStartError,
    LabUnavailable,
    find_dovecot,
)

HOST = "127.0.0.1"
SNI = "localhost"
TIMEOUT = 5.0


# --------------------------------------------------------------------------- helpers


class _ImplicitTLS(poplib.POP3):
    """POP3 over implicit TLS to 127.0.0.1 that verifies against an arbitrary host name.

    ``poplib.POP3_SSL`` uses the connect address as server_hostname; we connect to 127.0.0.1
    (the only address we may use) but must verify the name ``localhost``.
    """

    def __init__(self, port: int, context: ssl.SSLContext, server_hostname: str) -> None:
        self._context = context
        self._server_hostname = server_hostname
        super().__init__(HOST, port, timeout=TIMEOUT)

    # poplib's own extension point (POP3_SSL overrides it too), missing from typeshed.
    def _create_socket(self, timeout: float) -> socket.socket:
        sock = super()._create_socket(timeout)  # type: ignore[misc]
        return self._context.wrap_socket(sock, server_hostname=self._server_hostname)


def verifying_context(lab: DovecotLab) -> ssl.SSLContext:
    """Chain and host name checked against the lab CA only (never poplib's defaults)."""
    return ssl.create_default_context(cafile=str(lab.ca_file))


def unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def plain(lab: DovecotLab, variant: str = "valid") -> poplib.POP3:
    return poplib.POP3(HOST, lab.port("pop3", variant), timeout=TIMEOUT)


def starttls(lab: DovecotLab, context: ssl.SSLContext, variant: str = "valid") -> poplib.POP3:
    client = plain(lab, variant)
    # poplib.stls() passes self.host as server_hostname; verify "localhost", not the address.
    client.host = SNI
    client.stls(context)
    return client


def implicit_tls(lab: DovecotLab, context: ssl.SSLContext, variant: str = "valid") -> poplib.POP3:
    return _ImplicitTLS(lab.port("pop3s", variant), context, SNI)


def leaf_der(path: Path) -> bytes:
    """DER of the first certificate in a PEM file (the leaf the server presents)."""
    return x509.load_pem_x509_certificates(path.read_bytes())[0].public_bytes(
        serialization.Encoding.DER
    )


def sasl(client: poplib.POP3, line: str) -> bytes:
    """Send one SASL line and return the reply (``+ ...`` challenge or status)."""
    client.sock.sendall(line.encode("ascii") + b"\r\n")
    reply = client.file.readline(512).rstrip(b"\r\n")
    if reply.startswith(b"-ERR"):
        raise poplib.error_proto(reply)
    return reply


def cram_md5(client: poplib.POP3, user: str, password: str) -> bytes:
    challenge = base64.b64decode(sasl(client, "AUTH CRAM-MD5")[2:])
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    return sasl(client, base64.b64encode(f"{user} {digest}".encode()).decode())


def scram(client: poplib.POP3, mechanism: str, user: str, password: str) -> bytes:
    """Minimal RFC 5802 client (no channel binding); verifies the server signature too."""
    algorithm = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mechanism]
    nonce = base64.b64encode(os.urandom(18)).decode()
    client_first_bare = f"n={user},r={nonce}"
    first = "n,," + client_first_bare
    reply = sasl(client, f"AUTH {mechanism} {base64.b64encode(first.encode()).decode()}")
    server_first = base64.b64decode(reply[2:]).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    assert fields["r"].startswith(nonce)
    salted = hashlib.pbkdf2_hmac(
        algorithm, password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    client_key = hmac.new(salted, b"Client Key", algorithm).digest()
    stored_key = hashlib.new(algorithm, client_key).digest()
    final_without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{client_first_bare},{server_first},{final_without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, algorithm).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = f"{final_without_proof},p={base64.b64encode(proof).decode()}"
    reply = sasl(client, base64.b64encode(final.encode()).decode())
    if reply.startswith(b"+ "):
        server_final = base64.b64decode(reply[2:]).decode()
        server_key = hmac.new(salted, b"Server Key", algorithm).digest()
        expected = hmac.new(server_key, auth_message, algorithm).digest()
        assert server_final == "v=" + base64.b64encode(expected).decode()
        reply = sasl(client, "")
    return reply


# --------------------------------------------------------------------------- greeting, logins


def test_startup_time_is_recorded(
    dovecot: DovecotLab, record_property: Callable[[str, object], None]
) -> None:
    assert dovecot.startup_seconds is not None
    record_property("dovecot_startup_seconds", round(dovecot.startup_seconds, 3))
    assert set(dovecot.variants) == set(VARIANTS)
    ports = [p for v in dovecot.variants for p in (dovecot.ports(v).pop3, dovecot.ports(v).pop3s)]
    assert len(set(ports)) == len(ports), "every listener has its own port"


def test_greeting_carries_apop_timestamp(dovecot: DovecotLab) -> None:
    client = plain(dovecot)
    try:
        welcome = client.getwelcome()
    finally:
        client.quit()
    assert welcome.startswith(b"+OK ")
    # RFC 1939 msg-id: <...@...>, printable, what APOP clients must insist on.
    assert re.search(rb"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>$", welcome)


def test_capabilities_and_mechanisms(dovecot: DovecotLab) -> None:
    client = plain(dovecot)
    try:
        capa = client.capa()
    finally:
        client.quit()
    assert "STLS" in capa
    assert "USER" in capa
    assert set(capa["SASL"]) >= {"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"}


def test_user_pass_on_plain_listener(dovecot: DovecotLab) -> None:
    client = plain(dovecot)
    try:
        client.user(dovecot.demo_user)
        assert client.pass_(dovecot.demo_password).startswith(b"+OK")
        info = dovecot.mailbox()
        assert client.stat() == (info.count, info.size)
    finally:
        client.quit()


def test_apop_login(dovecot: DovecotLab) -> None:
    client = plain(dovecot)
    try:
        assert client.apop(dovecot.demo_user, dovecot.demo_password).startswith(b"+OK")
    finally:
        client.quit()


@pytest.mark.parametrize("mechanism", ["CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_challenge_response_mechanisms(dovecot: DovecotLab, mechanism: str) -> None:
    client = starttls(dovecot, verifying_context(dovecot))
    try:
        user, password = dovecot.demo_user, dovecot.demo_password
        if mechanism == "CRAM-MD5":
            reply = cram_md5(client, user, password)
        else:
            reply = scram(client, mechanism, user, password)
        assert reply.startswith(b"+OK")
    finally:
        client.quit()


def test_stls_verifies_chain_and_hostname(dovecot: DovecotLab) -> None:
    client = starttls(dovecot, verifying_context(dovecot))
    try:
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert "STLS" not in client.capa(), "STLS must not be offered again inside TLS"
        client.user(dovecot.demo_user)
        assert client.pass_(dovecot.demo_password).startswith(b"+OK")
    finally:
        client.quit()


@pytest.mark.parametrize("variant", ["valid", "chain"])
def test_implicit_tls_login(dovecot: DovecotLab, variant: str) -> None:
    client = implicit_tls(dovecot, verifying_context(dovecot), variant)
    try:
        assert isinstance(client.sock, ssl.SSLSocket)
        client.user(dovecot.second_user)
        assert client.pass_(dovecot.users[dovecot.second_user]).startswith(b"+OK")
        info = dovecot.mailbox(dovecot.second_user)
        assert client.stat() == (info.count, info.size)
    finally:
        client.quit()


def test_stat_matches_seeded_mailboxes(dovecot: DovecotLab) -> None:
    assert dovecot.mailbox().count == 3
    for user, password in dovecot.users.items():
        client = implicit_tls(dovecot, verifying_context(dovecot))
        try:
            client.user(user)
            client.pass_(password)
            info = dovecot.mailbox(user)
            assert info.count > 0
            assert client.stat() == (info.count, info.size)
        finally:
            client.quit()


def test_wrong_password_fails_fast_without_penalty(dovecot: DovecotLab) -> None:
    for _ in range(2):
        client = plain(dovecot)
        try:
            client.user(dovecot.demo_user)
            started = time.monotonic()
            with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
                client.pass_("definitely-wrong")
            assert time.monotonic() - started < 0.4, "no 500 ms failure queue"
        finally:
            client.quit()
    # Dovecot's per-IP penalty would delay this login by 2-4 s after the failures above.
    started = time.monotonic()
    client = plain(dovecot)
    try:
        client.user(dovecot.demo_user)
        assert client.pass_(dovecot.demo_password).startswith(b"+OK")
    finally:
        client.quit()
    assert time.monotonic() - started < 1.0


# --------------------------------------------------------------------------- broken certificates


@pytest.mark.parametrize("variant", sorted(EXPECTED_VERIFY_CODES))
@pytest.mark.parametrize("listener", ["pop3s", "stls"])
def test_broken_certificate_fails_verification(
    dovecot: DovecotLab, variant: str, listener: str
) -> None:
    context = verifying_context(dovecot)
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        client = (
            implicit_tls(dovecot, context, variant)
            if listener == "pop3s"
            else starttls(dovecot, context, variant)
        )
        client.close()
    assert caught.value.verify_code == EXPECTED_VERIFY_CODES[variant], caught.value.verify_message


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_instance_presents_its_own_certificate(dovecot: DovecotLab, variant: str) -> None:
    """Without verification every variant still speaks POP3 and presents the intended leaf."""
    client = implicit_tls(dovecot, unverified_context(), variant)
    try:
        assert client.getwelcome().startswith(b"+OK")
        assert isinstance(client.sock, ssl.SSLSocket)
        presented = client.sock.getpeercert(binary_form=True)
    finally:
        client.quit()
    assert presented == leaf_der(dovecot.certs.variant(variant).cert)


# --------------------------------------------------------------------------- log-based counting


def test_logins_are_counted_per_user_and_port(dovecot: DovecotLab) -> None:
    user = dovecot.second_user
    password = dovecot.users[user]
    plain_port = dovecot.port("pop3", "chain")
    tls_port = dovecot.port("pop3s", "chain")
    before_plain = dovecot.login_count(user, plain_port)
    before_tls = dovecot.login_count(user, tls_port)
    before_demo = dovecot.login_count(dovecot.demo_user, tls_port)

    for _ in range(2):
        client = plain(dovecot, "chain")
        client.user(user)
        client.pass_(password)
        client.quit()
    client = implicit_tls(dovecot, verifying_context(dovecot), "chain")
    client.user(user)
    client.pass_(password)
    client.quit()
    # A failed login must not be counted.
    client = plain(dovecot, "chain")
    client.user(user)
    with pytest.raises(poplib.error_proto):
        client.pass_("wrong")
    client.quit()

    assert dovecot.wait_for_logins(before_plain + 2, user=user, port=plain_port) == (
        before_plain + 2
    )
    assert dovecot.wait_for_logins(before_tls + 1, user=user, port=tls_port) == before_tls + 1
    time.sleep(0.2)  # give a wrongly counted failure time to show up
    assert dovecot.login_count(user, plain_port) == before_plain + 2
    assert dovecot.login_count(dovecot.demo_user, tls_port) == before_demo
    records = dovecot.logins(user, tls_port)
    assert records[-1].tls and records[-1].variant == "chain" and records[-1].method == "PLAIN"
    assert dovecot.login_counts()[(user, plain_port)] == before_plain + 2


# --------------------------------------------------------------------------- lifecycle


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _refused(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


def test_stop_leaves_nothing_behind(lab_certs: LabCerts) -> None:
    lab = DovecotLab(lab_certs, variants=("expired",))
    with lab:
        pids = lab.pids()
        ports = [p for v in lab.variants for p in (lab.ports(v).pop3, lab.ports(v).pop3s)]
        workdir = lab.workdir
        assert len(pids) >= 4, pids  # master, log, config, anvil, auth, pop3-login ...
        client = plain(lab)
        client.user(lab.demo_user)
        client.pass_(lab.demo_password)  # an open mail session must not survive stop()
        assert len(lab.pids()) > len(pids)
        pids = lab.pids()
    assert lab.pids() == []
    assert not [pid for pid in pids if _alive(pid)]
    assert all(_refused(port) for port in ports)
    assert not workdir.exists(), "a lab-created work directory is removed"
    lab.stop()  # idempotent
    client.close()


def test_missing_binary_is_reported_as_unavailable(tmp_path: Path) -> None:
    with pytest.raises(LabUnavailable, match="Dovecot is not installed"):
        DovecotLab(dovecot=tmp_path / "no-such-dovecot")
    with pytest.raises(LabUnavailable):
        find_dovecot(tmp_path / "no-such-dovecot")


def test_start_failure_reports_log_tail(lab_certs: LabCerts, tmp_path: Path) -> None:
    find_dovecot()  # this test needs a real Dovecot that then refuses the config
    lab = DovecotLab(
        lab_certs, workdir=tmp_path, extra_config="no_such_setting = 1", startup_timeout=10
    )
    with pytest.raises(LabStartError, match="no_such_setting") as caught:
        lab.start()
    assert "exited with status" in str(caught.value)
    assert lab.pids() == []


# --------------------------------------------------------------------------- incidents


@pytest.fixture
def incident_lab(lab_certs: LabCerts, tmp_path: Path) -> Iterator[DovecotLab]:
    """A lab of its own (these tests change it): two extra instances with the valid certificate."""
    try:
        lab = DovecotLab(
            lab_certs,
            workdir=tmp_path / "lab",
            extra_instances={"inc-a": "valid", "inc-b": "valid"},
        )
    except LabUnavailable as exc:
        if os.environ.get("POP3MON_REQUIRE_DOVECOT", "") not in ("", "0"):
            pytest.fail(f"POP3MON_REQUIRE_DOVECOT is set but {exc}", pytrace=False)
        pytest.skip(str(exc))
    with lab:
        yield lab


def _login(lab: DovecotLab, user: str, password: str) -> bytes:
    client = plain(lab)
    try:
        client.user(user)
        return client.pass_(password)
    except poplib.error_proto as exc:
        return bytes(exc.args[0])
    finally:
        client.close()


def test_set_password_is_seen_without_restart(incident_lab: DovecotLab) -> None:
    """A changed password counts at the next login: the old one is refused with [AUTH]."""
    lab = incident_lab
    user = lab.second_user
    old = lab.users[user]
    new = old[:-1] + ("x" if old[-1] != "x" else "y")  # same length: only the mtime tells
    assert _login(lab, user, old).startswith(b"+OK")  # Dovecot has read the file this second
    master = lab.instance().pid
    lab.set_password(user, new)
    assert lab.users[user] == new
    assert _login(lab, user, old).startswith(b"-ERR [AUTH]")
    assert _login(lab, user, new).startswith(b"+OK")
    assert _login(lab, lab.demo_user, lab.demo_password).startswith(b"+OK"), "others unchanged"
    assert lab.instance().pid == master and lab.instance().running(), "no restart"
    with pytest.raises(ValueError):
        lab.set_password("nobody-here", "pw")
    with pytest.raises(ValueError):
        lab.set_password(user, "with:colon")


def _issuer_cn(lab: DovecotLab, name: str, cafile: Path) -> str:
    client = implicit_tls(lab, ssl.create_default_context(cafile=str(cafile)), name)
    try:
        sock = client.sock
        assert isinstance(sock, ssl.SSLSocket)
        der = sock.getpeercert(binary_form=True)
    finally:
        client.close()
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return str(cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def test_reissue_certificate_changes_only_the_issuer(
    incident_lab: DovecotLab, tmp_path: Path
) -> None:
    """Re-issued from a second CA: still verifies (both CAs trusted), only the issuer moved."""
    lab = incident_lab
    second = generate_ca(tmp_path / "ca2", "second")
    both = tmp_path / "both.crt"
    both.write_bytes(lab.ca_file.read_bytes() + second.cert.read_bytes())
    assert _issuer_cn(lab, "inc-a", both) == "pop3mon lab root CA"
    pair = lab.reissue_certificate("inc-a", second)
    assert _issuer_cn(lab, "inc-a", both) == second.common_name == "pop3mon lab second CA"
    assert leaf_der(pair.cert) != leaf_der(lab.certs.valid.cert)
    with pytest.raises(ssl.SSLCertVerificationError):
        _issuer_cn(lab, "inc-a", lab.ca_file)  # the old trust anchor alone no longer does
    assert _issuer_cn(lab, "valid", both) == "pop3mon lab root CA", "other instances keep theirs"


def test_restart_without_tls_withdraws_stls(incident_lab: DovecotLab) -> None:
    """``restart(tls=False)``: no STLS in CAPA, the implicit-TLS port refuses; others keep TLS."""
    lab = incident_lab
    client = plain(lab, "inc-b")
    assert "STLS" in client.capa()
    client.quit()
    pop3s = lab.port("pop3s", "inc-b")
    lab.restart("inc-b", tls=False)
    client = plain(lab, "inc-b")
    try:
        capa = client.capa()
        assert "STLS" not in capa and "USER" in capa
        client.user(lab.demo_user)
        assert client.pass_(lab.demo_password).startswith(b"+OK")  # still serves, in plaintext
    finally:
        client.quit()
    assert _refused(pop3s)
    client = plain(lab)
    assert "STLS" in client.capa()
    client.quit()
    lab.restart("inc-b", tls=True)
    client = plain(lab, "inc-b")
    assert "STLS" in client.capa()
    client.quit()


def test_stop_and_start_one_instance(incident_lab: DovecotLab) -> None:
    """An instance goes down (its ports refuse) and comes back; the rest keep serving."""
    lab = incident_lab
    ports = lab.ports("inc-b")
    lab.stop_instance("inc-b")
    lab.stop_instance("inc-b")  # idempotent
    assert _refused(ports.pop3) and _refused(ports.pop3s)
    assert _login(lab, lab.demo_user, lab.demo_password).startswith(b"+OK")
    lab.start_instance("inc-b")
    client = plain(lab, "inc-b")
    assert client.getwelcome().startswith(b"+OK")
    client.quit()
    assert lab.instance_names == ("valid", "inc-a", "inc-b")
    with pytest.raises(ValueError, match="must not be a certificate variant"):
        DovecotLab(lab.certs, extra_instances={"expired": "valid"})


# --------------------------------------------------------------------------- certificates


def test_certificate_cache_is_reused(tmp_path: Path) -> None:
    first = generate_lab_certs(tmp_path)
    stamp = first.valid.cert.stat().st_mtime_ns
    first_leaf = first.valid.cert.read_bytes()
    again = generate_lab_certs(tmp_path)
    assert again == first
    assert again.valid.cert.stat().st_mtime_ns == stamp
    other = generate_lab_certs(tmp_path, extra_names=["pop.example"])
    assert other.valid.cert.read_bytes() != first_leaf, "new parameters regenerate"
    sans = x509.load_pem_x509_certificate(other.valid.cert.read_bytes()).extensions
    names = sans.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "pop.example" in names.get_values_for_type(x509.DNSName)
    assert x509.load_pem_x509_certificates(other.chain.cert.read_bytes())[1:], "chain attached"
