"""Self-tests of the fault-injecting POP3 server, using raw sockets, poplib and ssl only.

The project's engine is deliberately not used: these tests pin down what each scenario puts
on the wire, so engine tests can rely on it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import poplib
import socket
import ssl
import struct
import threading
import time
import warnings
from collections.abc import Iterator

import pytest

from pop3mon_lab.certs import self_signed_cert, write_cert_pair
from pop3mon_lab.faultserver import (
    DEFAULT_USERS,
    POLL_INTERVAL,
    SCENARIOS,
    FaultServer,
    scenario_names,
)

USER = "alice"
PASSWORD = DEFAULT_USERS[USER]
TIMEOUT = 3.0


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed EC certificate for localhost / 127.0.0.1 (cert path, key path)."""
    # CA:TRUE because client_context() trusts the certificate itself as the only anchor.
    certificate, key = self_signed_cert("localhost", ["localhost", "127.0.0.1"], days=2, ca=True)
    pair = write_cert_pair(tmp_path_factory.mktemp("faultserver-cert"), "cert", certificate, key)
    return str(pair.cert), str(pair.key)


def client_context(cert: tuple[str, str]) -> ssl.SSLContext:
    """A verifying client context trusting the test certificate."""
    return ssl.create_default_context(cafile=cert[0])


class Client:
    """Minimal line-oriented POP3 client over a raw socket, for byte-exact assertions."""

    def __init__(self, server: FaultServer, *, tls: ssl.SSLContext | None = None) -> None:
        self.sock: socket.socket = socket.create_connection(server.address, timeout=TIMEOUT)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""

    def recv(self) -> bytes:
        data = self.sock.recv(65536)
        self.buf += data
        return data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self.recv():
                raise EOFError(self.buf)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def multi(self) -> list[bytes]:
        lines = []
        while (line := self.line()) != b".":
            lines.append(line[1:] if line.startswith(b"..") else line)
        return lines

    def cmd(self, text: str) -> bytes:
        self.send(text)
        return self.line()

    def send(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.sock.sendall(data + b"\r\n")

    def read_until_eof(self, limit: int = 1 << 20) -> bytes:
        while len(self.buf) < limit and self.recv():
            pass
        return self.buf

    def starttls(self, ctx: ssl.SSLContext) -> None:
        assert self.cmd("STLS").startswith(b"+OK")
        assert self.buf == b"", self.buf
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail if a fault-server thread outlives the test."""
    yield
    leaked = [t.name for t in threading.enumerate() if t.name.startswith("faultserver-")]
    assert leaked == []


pytestmark = pytest.mark.usefixtures("no_leaks")


# --------------------------------------------------------------------------- healthy


def test_healthy_full_dialogue_with_poplib_stls(cert: tuple[str, str]) -> None:
    with FaultServer("healthy", certfile=cert[0], keyfile=cert[1]) as srv:
        pop = poplib.POP3(srv.host, srv.port, timeout=TIMEOUT)
        welcome = pop.getwelcome()
        assert welcome.startswith(b"+OK ") and b"<" in welcome and b"@" in welcome
        caps = pop.capa()
        assert "STLS" in caps and "USER" in caps and "SCRAM-SHA-256" in caps["SASL"]
        pop.stls(client_context(cert))
        assert "STLS" not in pop.capa()
        pop.user(USER)
        assert pop.pass_(PASSWORD).startswith(b"+OK")
        count, size = pop.stat()
        assert count == 2 and size > 0
        _, uidls, _ = pop.uidl()
        assert uidls == [b"1 uid-000001", b"2 uid-000002"]
        _, lines, _ = pop.retr(1)
        assert b".this line starts with a dot" in lines  # poplib un-stuffed it
        pop.quit()
        assert srv.wait_idle()
        assert srv.logins == 1 and srv.connections == 1
        # poplib.stls() asks CAPA itself before sending STLS.
        expected = ["CAPA", "CAPA", "STLS", "CAPA", "USER", "PASS", "STAT", "UIDL", "RETR"]
        assert srv.commands() == [*expected, "QUIT"]
        plain = srv.plaintext_bytes()
        assert plain == b"CAPA\r\nCAPA\r\nSTLS\r\n"  # everything later went inside TLS
        tls_flags = [(e.verb, e.tls) for e in srv.log.entries()]
        assert tls_flags[1:4] == [("CAPA", False), ("STLS", False), ("CAPA", True)]
        # poplib connected by IP address, and SNI never carries an IP (RFC 6066).
        assert srv.log.events("sni")[0].detail == ""
        assert srv.log.events("tls")[0].detail.startswith("TLSv1.3")


def test_healthy_apop_and_wrong_password() -> None:
    with FaultServer("healthy") as srv:
        pop = poplib.POP3(srv.host, srv.port, timeout=TIMEOUT)
        pop.apop(USER, PASSWORD)
        pop.quit()
        pop = poplib.POP3(srv.host, srv.port, timeout=TIMEOUT)
        pop.user(USER)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            pop.pass_("wrong")
        pop.quit()
        assert srv.wait_idle()
        assert srv.logins == 1
        assert [e.kind for e in srv.log.events() if e.kind.startswith("login")] == [
            "login",
            "login-failed",
        ]


def test_healthy_no_apop() -> None:
    with FaultServer("healthy-no-apop") as srv, Client(srv) as c:
        assert c.line() == b"+OK pop3mon fault server ready"
        assert c.cmd("APOP alice 0123456789abcdef0123456789abcdef").startswith(b"-ERR")


def test_implicit_tls_with_poplib(cert: tuple[str, str]) -> None:
    with FaultServer("healthy", certfile=cert[0], keyfile=cert[1], implicit_tls=True) as srv:
        pop = poplib.POP3_SSL(srv.host, srv.port, context=client_context(cert), timeout=TIMEOUT)
        assert "STLS" not in pop.capa()
        pop.user(USER)
        pop.pass_(PASSWORD)
        pop.quit()
        assert srv.wait_idle()
        assert srv.plaintext_bytes() == b""
        assert all(e.tls for e in srv.log.entries())
        assert srv.logins == 1


def test_slow_tls_client_survives_the_servers_poll_timeouts(cert: tuple[str, str]) -> None:
    # The server's socket calls time out every POLL_INTERVAL to check for stop; a handshake
    # interrupted that way must resume, both before the ClientHello and mid-handshake.
    pause = POLL_INTERVAL * 1.5
    with FaultServer("healthy", certfile=cert[0], keyfile=cert[1], implicit_tls=True) as srv:
        sock = socket.create_connection(srv.address, timeout=TIMEOUT)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_context(cert).wrap_bio(incoming, outgoing, server_hostname="localhost")
        time.sleep(pause)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        time.sleep(pause)  # TLS 1.3: the server is still waiting for our Finished
        sock.sendall(outgoing.read())
        greeting = b""
        while b"\r\n" not in greeting:
            try:
                greeting += tls.read(1000)
            except ssl.SSLWantReadError:
                incoming.write(sock.recv(65536))
        assert greeting.startswith(b"+OK ")
        sock.close()


def _scram_login(c: Client, mech: str, algo: str) -> bytes:
    c.send(f"AUTH {mech} " + b64(f"n,,n={USER},r=clientnonce123"))
    challenge = c.line()
    assert challenge.startswith(b"+ ")
    server_first = base64.b64decode(challenge[2:]).decode()
    attrs = dict(p.split("=", 1) for p in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        algo, PASSWORD.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", algo)
    stored = hashlib.new(algo, client_key).digest()
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"n={USER},r=clientnonce123,{server_first},{without_proof}".encode()
    signature = hmac.digest(stored, auth_message, algo)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    c.send(b64(f"{without_proof},p={b64(proof)}"))
    final = c.line()
    assert final.startswith(b"+ "), final
    server_key = hmac.digest(salted, b"Server Key", algo)
    expected = "v=" + b64(hmac.digest(server_key, auth_message, algo))
    assert base64.b64decode(final[2:]).decode() == expected
    c.send("")
    return c.line()


@pytest.mark.parametrize("mech", ["PLAIN", "PLAIN-IR", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1"])
def test_healthy_sasl_mechanisms(mech: str) -> None:
    with FaultServer("healthy") as srv, Client(srv) as c:
        c.line()
        if mech == "PLAIN-IR":
            reply = c.cmd("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}"))
        elif mech == "PLAIN":
            assert c.cmd("AUTH PLAIN") == b"+ "
            reply = c.cmd(b64(f"\0{USER}\0{PASSWORD}"))
        elif mech == "LOGIN":
            assert base64.b64decode(c.cmd("AUTH LOGIN")[2:]) == b"Username:"
            assert base64.b64decode(c.cmd(b64(USER))[2:]) == b"Password:"
            reply = c.cmd(b64(PASSWORD))
        elif mech == "CRAM-MD5":
            challenge = base64.b64decode(c.cmd("AUTH CRAM-MD5")[2:])
            digest = hmac.new(PASSWORD.encode(), challenge, "md5").hexdigest()
            reply = c.cmd(b64(f"{USER} {digest}"))
        else:
            reply = _scram_login(c, "SCRAM-SHA-1", "sha1")
        assert reply.startswith(b"+OK"), reply
        assert c.cmd("STAT").startswith(b"+OK 2 ")
        assert srv.logins == 1
        assert srv.commands() == ["AUTH", "STAT"]  # SASL lines are not commands


def test_healthy_scram_sha256_and_sasl_edge_cases() -> None:
    with FaultServer("healthy") as srv, Client(srv) as c:
        c.line()
        assert c.cmd("AUTH PLAIN !!!").startswith(b"-ERR")  # strict base64
        assert c.cmd("AUTH PLAIN") == b"+ "
        assert c.cmd("*").startswith(b"-ERR")  # cancel
        assert c.cmd("AUTH GSSAPI").startswith(b"-ERR")
        assert c.cmd("AUTH PLAIN " + b64(f"\0{USER}\0nope")).startswith(b"-ERR [AUTH]")
        assert c.cmd("NOOP").startswith(b"-ERR")  # not allowed before login
        c.send("AUTH")
        assert c.multi()[1:] == [b"PLAIN", b"LOGIN", b"CRAM-MD5", b"SCRAM-SHA-1", b"SCRAM-SHA-256"]
        assert _scram_login(c, "SCRAM-SHA-256", "sha256").startswith(b"+OK")


def test_plaintext_auth_can_be_disallowed(cert: tuple[str, str]) -> None:
    with (
        FaultServer(
            "healthy", certfile=cert[0], keyfile=cert[1], allow_plaintext_auth=False
        ) as srv,
        Client(srv) as c,
    ):
        c.line()
        c.send("CAPA")
        caps = c.multi()
        assert b"USER" not in caps and b"SASL CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256" in caps
        assert c.cmd(f"USER {USER}").startswith(b"-ERR [AUTH]")
        assert c.cmd("AUTH PLAIN =").startswith(b"-ERR [AUTH]")
        c.starttls(client_context(cert))
        assert c.cmd(f"USER {USER}") == b"+OK"
        assert c.cmd(f"PASS {PASSWORD}").startswith(b"+OK")
        assert PASSWORD.encode() not in srv.plaintext_bytes()


def test_transaction_commands() -> None:
    with FaultServer("healthy", messages=3) as srv, Client(srv) as c:
        c.line()
        c.cmd(f"USER {USER}")
        c.cmd(f"PASS {PASSWORD}")
        c.send("LIST")
        assert len(c.multi()) == 4
        assert c.cmd("UIDL 2") == b"+OK 2 uid-000002"
        c.send("TOP 1 0")
        top = c.multi()
        assert top[-1] == b"" and top[0] == b"+OK"
        assert c.cmd("DELE 1").startswith(b"+OK")
        assert c.cmd("RETR 1").startswith(b"-ERR")
        assert c.cmd("STAT").startswith(b"+OK 2 ")
        assert c.cmd("RSET") == b"+OK"
        assert c.cmd("NOOP") == b"+OK"
        assert c.cmd("QUIT").startswith(b"+OK")
        assert c.read_until_eof() == b""


# --------------------------------------------------------------------------- greetings


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("err-greeting", b"-ERR go away"),
        ("garbage-greeting", b"\x00\xff\xfe\x16\x03\x01GARBAGE\x00\x1b[2J\x80 greeting"),
        ("lowercase-ok", b"+ok hello"),
        ("apop-no-timestamp", b"+OK pop3mon fault server ready"),
        ("apop-bad-timestamp", b"+OK pop3mon fault server ready <no-at-sign>"),
        ("apop-ctrl-timestamp", b"+OK pop3mon fault server ready <1.2\x07\x1b[0m@pop3mon.test>"),
    ],
)
def test_greeting_bytes(scenario: str, expected: bytes) -> None:
    with FaultServer(scenario) as srv, Client(srv) as c:
        assert c.line() == expected


def test_err_greeting_closes() -> None:
    with FaultServer("err-greeting") as srv, Client(srv) as c:
        assert c.read_until_eof() == b"-ERR go away\r\n"


def test_apop_bad_timestamp_still_accepts_apop() -> None:
    # A client that ignores the invalid msg-id would succeed: the server does not protect it.
    with FaultServer("apop-bad-timestamp") as srv, Client(srv) as c:
        c.line()
        digest = hashlib.md5(f"<no-at-sign>{PASSWORD}".encode()).hexdigest()
        assert c.cmd(f"APOP {USER} {digest}").startswith(b"+OK")


def test_apop_no_timestamp_refuses_apop() -> None:
    with FaultServer("apop-no-timestamp") as srv, Client(srv) as c:
        c.line()
        assert c.cmd(f"APOP {USER} {'0' * 32}").startswith(b"-ERR")


def test_rst_on_connect() -> None:
    with FaultServer("rst-on-connect") as srv:
        # With a timeout, connect() is non-blocking plus poll(); under load the RST can land
        # before connect() reports success, so the reset may surface there or in recv().
        with pytest.raises(ConnectionResetError), Client(srv) as c:
            c.recv()
        assert srv.wait_idle()
        assert srv.log.events("reset")


def test_no_greeting_records_client_bytes() -> None:
    with FaultServer("no-greeting") as srv, Client(srv) as c:
        c.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            c.recv()
        c.send("CAPA")
        c.close()
        assert srv.wait_idle()
        assert srv.plaintext_bytes() == b"CAPA\r\n"
        assert [e.kind for e in srv.log.entries()] == ["data"]


def test_drip_greeting() -> None:
    with FaultServer("drip-greeting", drip_interval=0.05) as srv, Client(srv) as c:
        received = b""
        deadline = time.monotonic() + 0.6
        reads = 0
        while time.monotonic() < deadline:
            received += c.sock.recv(100)
            reads += 1
        assert received.startswith(b"+OK dripping")
        assert received.endswith(b".") and b"\n" not in received
        assert reads > 5  # arrived in many small pieces


def test_huge_line() -> None:
    with FaultServer("huge-line") as srv, Client(srv) as c:
        data = c.read_until_eof(limit=10 * 1024 * 1024)
        assert len(data) == 10 * 1024 * 1024
        assert data.startswith(b"+OK AAAA") and b"\n" not in data


# --------------------------------------------------------------------------- CAPA / STAT


def test_endless_capa() -> None:
    with FaultServer("endless-capa") as srv, Client(srv) as c:
        c.line()
        assert c.cmd("CAPA") == b"+OK Capability list follows"
        lines = [c.line() for _ in range(5000)]
        assert lines[0] == b"X-ENDLESS-000000000" and lines[-1] == b"X-ENDLESS-000004999"
        assert b"." not in lines


def test_capa_eof() -> None:
    with FaultServer("capa-eof") as srv, Client(srv) as c:
        c.line()
        c.send("CAPA")
        assert c.read_until_eof() == b"+OK Capability list follows\r\nTOP\r\nUIDL\r\n"


def test_malformed_stat() -> None:
    with FaultServer("malformed-stat") as srv, Client(srv) as c:
        c.line()
        c.cmd(f"USER {USER}")
        c.cmd(f"PASS {PASSWORD}")
        assert c.cmd("STAT") == b"+OK banana"


# --------------------------------------------------------------------------- STLS


@pytest.mark.parametrize("scenario", ["no-stls", "stls-required-refuse"])
def test_no_stls_accepts_plaintext_login(scenario: str, cert: tuple[str, str]) -> None:
    with (
        FaultServer(scenario, certfile=cert[0], keyfile=cert[1], allow_plaintext_auth=False) as srv,
        Client(srv) as c,
    ):
        c.line()
        c.send("CAPA")
        caps = c.multi()
        assert b"STLS" not in caps and b"USER" in caps
        assert c.cmd("STLS").startswith(b"-ERR")
        c.cmd(f"USER {USER}")
        assert c.cmd(f"PASS {PASSWORD}").startswith(b"+OK")
        # This is what the engine's "TLS required" tests will grep for.
        assert f"PASS {PASSWORD}".encode() in srv.plaintext_bytes()


def test_stls_err() -> None:
    with FaultServer("stls-err") as srv, Client(srv) as c:
        c.line()
        c.send("CAPA")
        assert b"STLS" in c.multi()
        assert c.cmd("STLS").startswith(b"-ERR")


def test_stls_plaintext(cert: tuple[str, str]) -> None:
    with FaultServer("stls-plaintext") as srv, Client(srv) as c:
        c.line()
        assert c.cmd("STLS") == b"+OK Begin TLS negotiation now."
        with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"):
            # The ClientHello gets a plaintext "-ERR", which is no TLS record.
            client_context(cert).wrap_socket(c.sock, server_hostname="localhost")
        # The ClientHello arrived on the plaintext channel and was recorded.
        assert srv.plaintext_bytes().startswith(b"STLS\r\n\x16\x03")


def test_stls_close() -> None:
    with FaultServer("stls-close") as srv, Client(srv) as c:
        c.line()
        c.send("STLS")
        assert c.read_until_eof() == b"+OK Begin TLS negotiation now.\r\n"


def test_stls_injection(cert: tuple[str, str]) -> None:
    with FaultServer("stls-injection", certfile=cert[0], keyfile=cert[1]) as srv, Client(srv) as c:
        c.line()
        c.send("STLS")
        deadline = time.monotonic() + TIMEOUT
        while c.buf.count(b"\r\n") < 2 and time.monotonic() < deadline:
            c.recv()
        # Both lines arrive together, before any handshake.
        assert c.buf == b"+OK Begin TLS negotiation now.\r\n+OK injected\r\n"
        # A vulnerable client would now do the handshake; the server goes along with it.
        c.buf = b""
        c.sock = client_context(cert).wrap_socket(c.sock, server_hostname="localhost")
        assert c.cmd("NOOP").startswith(b"-ERR")  # a real TLS session follows


def test_capa_differs(cert: tuple[str, str]) -> None:
    with FaultServer("capa-differs", certfile=cert[0], keyfile=cert[1]) as srv, Client(srv) as c:
        c.line()
        c.send("CAPA")
        before = c.multi()
        assert b"SASL PLAIN" in before and b"STLS" in before
        c.starttls(client_context(cert))
        c.send("CAPA")
        after = c.multi()
        assert b"SASL SCRAM-SHA-256 PLAIN LOGIN" in after and b"STLS" not in after
        assert srv.log.events("sni")[0].detail == "localhost"


def test_tls10_only(cert: tuple[str, str]) -> None:
    # Verified with this OpenSSL 3.0: the server needs SECLEVEL=0; a default client refuses
    # TLS 1.0 outright, a client that lowers its own floor negotiates TLSv1.
    with FaultServer("tls10-only", certfile=cert[0], keyfile=cert[1]) as srv:
        with Client(srv) as c:
            c.line()
            with pytest.raises(ssl.SSLError):
                c.starttls(client_context(cert))
        legacy = client_context(cert)
        legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            legacy.minimum_version = ssl.TLSVersion.TLSv1
        with Client(srv) as c:
            c.line()
            c.starttls(legacy)
            assert c.sock.version() == "TLSv1"  # type: ignore[attr-defined]
            assert c.cmd("NOOP").startswith(b"-ERR")


def test_tls_max_version_option(cert: tuple[str, str]) -> None:
    with (
        FaultServer(
            "healthy", certfile=cert[0], keyfile=cert[1], tls_max_version=ssl.TLSVersion.TLSv1_2
        ) as srv,
        Client(srv) as c,
    ):
        c.line()
        c.starttls(client_context(cert))
        assert c.sock.version() == "TLSv1.2"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- login faults


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("in-use", b"-ERR [IN-USE] mailbox locked"),
        ("login-delay", b"-ERR [LOGIN-DELAY] wait"),
        ("sys-temp", b"-ERR [SYS/TEMP] try later"),
        ("sys-perm", b"-ERR [SYS/PERM] mailbox unavailable"),
        ("auth-code", b"-ERR [AUTH] bad password"),
        ("html-ansi-err", b"-ERR <script>alert(1)</script> \x1b[31mred\x1b[0m"),
        ("echo-credentials", f"-ERR bad password '{PASSWORD}'".encode()),
    ],
)
def test_login_replies(scenario: str, expected: bytes) -> None:
    with FaultServer(scenario) as srv, Client(srv) as c:
        c.line()
        assert c.cmd(f"USER {USER}") == b"+OK"
        assert c.cmd(f"PASS {PASSWORD}") == expected
        # Same answer at the end of a SASL login.
        assert c.cmd("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}")) == expected
        assert srv.logins == 0


def test_rst_after_pass() -> None:
    with FaultServer("rst-after-pass") as srv, Client(srv) as c:
        c.line()
        c.cmd(f"USER {USER}")
        c.send(f"PASS {PASSWORD}")
        with pytest.raises(ConnectionResetError):
            c.recv()


def test_endless_sasl() -> None:
    with FaultServer("endless-sasl") as srv, Client(srv) as c:
        c.line()
        reply = c.cmd("AUTH PLAIN")
        for _ in range(50):
            assert reply.startswith(b"+ ")
            base64.b64decode(reply[2:], validate=True)
            reply = c.cmd(b64("anything"))
        assert c.cmd("*").startswith(b"-ERR")


def test_bad_base64_sasl() -> None:
    with FaultServer("bad-base64-sasl") as srv, Client(srv) as c:
        c.line()
        assert c.cmd("AUTH PLAIN") == b"+ !!!notbase64"
        assert c.cmd("*").startswith(b"-ERR")


def test_xoauth2_error() -> None:
    with FaultServer("xoauth2-error") as srv, Client(srv) as c:
        c.line()
        c.send("CAPA")
        assert any(line.startswith(b"SASL ") and b"XOAUTH2" in line for line in c.multi())
        token = b64(f"user={USER}\x01auth=Bearer tok\x01\x01")
        challenge = c.cmd(f"AUTH XOAUTH2 {token}")
        assert challenge.startswith(b"+ ")
        assert json.loads(base64.b64decode(challenge[2:]))["status"] == "401"
        assert c.cmd("") == b"-ERR [AUTH] invalid token"


def test_quit_silent() -> None:
    with FaultServer("quit-silent") as srv, Client(srv) as c:
        c.line()
        c.send("QUIT")
        c.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            c.recv()


def test_response_delay() -> None:
    with FaultServer("healthy", response_delay=0.1) as srv, Client(srv) as c:
        start = time.monotonic()
        c.line()
        c.cmd("CAPA")
        assert time.monotonic() - start >= 0.2


# --------------------------------------------------------------------------- robustness


def test_every_scenario_is_registered_and_documented() -> None:
    assert set(scenario_names()) >= {
        "healthy",
        "healthy-no-apop",
        "rst-on-connect",
        "no-greeting",
        "drip-greeting",
        "slow-greeting",
        "err-greeting",
        "garbage-greeting",
        "lowercase-ok",
        "huge-line",
        "endless-capa",
        "capa-eof",
        "malformed-stat",
        "apop-no-timestamp",
        "apop-bad-timestamp",
        "no-stls",
        "stls-err",
        "stls-plaintext",
        "stls-injection",
        "tls10-only",
        "capa-differs",
        "in-use",
        "login-delay",
        "sys-temp",
        "sys-perm",
        "auth-code",
        "rst-after-pass",
        "endless-sasl",
        "bad-base64-sasl",
        "xoauth2-error",
        "quit-silent",
        "html-ansi-err",
        "echo-credentials",
        "stls-required-refuse",
    }
    assert all(s.summary for s in SCENARIOS.values())


def test_unknown_scenario_and_missing_cert() -> None:
    with pytest.raises(ValueError, match="did you mean 'healthy'"):
        FaultServer("helthy")
    with pytest.raises(ValueError, match="needs certfile"):
        FaultServer("tls10-only")


def test_hostile_client_input_never_crashes_server() -> None:
    junk = [
        os.urandom(3000),
        b"\x00" * 9000,
        b"A" * 10000 + b"\r\n",
        b"USER \xff\xfe\r\nPASS \x00\r\nAPOP\r\nAPOP x\r\nAUTH\r\nAUTH PLAIN =\r\n\r\n",
        b"AUTH SCRAM-SHA-256 " + b64("p=tls-unique,,n=x,r=y").encode() + b"\r\n",
        b"AUTH SCRAM-SHA-1 " + b64("n,,n=alice,r=abc").encode() + b"\r\n" + b64("junk").encode(),
        b"TOP\r\nRETR 99\r\nLIST x\r\n\r\n \r\n\x16\x03\x01\x00\x05hello",
    ]
    with FaultServer("healthy") as srv:
        for data in junk:
            with Client(srv) as c:
                c.line()
                c.sock.sendall(data + b"\r\nQUIT\r\n")
                c.sock.settimeout(1.0)
                try:
                    c.read_until_eof()
                except (TimeoutError, ConnectionResetError):
                    pass
        assert srv.wait_idle()
        assert srv.log.events("error") == []
        pop = poplib.POP3(srv.host, srv.port, timeout=TIMEOUT)  # still serving
        pop.user(USER)
        pop.pass_(PASSWORD)
        pop.quit()


def test_many_concurrent_connections() -> None:
    errors: list[BaseException] = []

    def login() -> None:
        try:
            pop = poplib.POP3(srv.host, srv.port, timeout=TIMEOUT)
            pop.user(USER)
            pop.pass_(PASSWORD)
            pop.stat()
            pop.quit()
        except BaseException as exc:
            errors.append(exc)

    with FaultServer("healthy") as srv:
        threads = [threading.Thread(target=login) for _ in range(60)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert srv.wait_idle()
        assert srv.logins == 60 and srv.connections == 60


@pytest.mark.parametrize(
    "scenario",
    ["no-greeting", "drip-greeting", "huge-line", "endless-capa", "quit-silent", "healthy"],
)
def test_stop_is_fast_frees_port_and_joins_threads(scenario: str, cert: tuple[str, str]) -> None:
    srv = FaultServer(scenario, certfile=cert[0], keyfile=cert[1]).start()
    clients = [Client(srv) for _ in range(3)]
    if scenario in ("endless-capa", "quit-silent"):
        for c in clients:
            c.line()
            c.send("CAPA" if scenario == "endless-capa" else "QUIT")
    if scenario == "healthy":
        # A client that asked for STLS but never starts the handshake leaves the server
        # blocked in do_handshake(); stop() must still be immediate.
        stuck = Client(srv)
        stuck.line()
        stuck.send("STLS")
        clients.append(stuck)
    time.sleep(0.1)
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 1.0
    for c in clients:
        c.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("faultserver-")]
    probe = socket.create_server((srv.host, srv.port))  # port is free again
    probe.close()
    srv.stop()  # idempotent


def test_start_is_fast_and_abrupt_clients_are_fine() -> None:
    start = time.monotonic()
    srv = FaultServer("healthy").start()
    assert time.monotonic() - start < 0.05
    try:
        for _ in range(5):
            s = socket.create_connection(srv.address)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST at the server
        assert srv.wait_idle()
        assert srv.log.events("error") == []
    finally:
        srv.stop()
