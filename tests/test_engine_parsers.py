"""Property tests: the engine's parsers take arbitrary server bytes and either return a
result or raise one of the engine's own :class:`ProbeError` subclasses, nothing else.

Real sockets only (a socketpair for :class:`Wire`, a loopback listener for the whole
probe). Example counts are moderate so the file runs in a few seconds.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import warnings
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pop3mon.engine import ProbeResult, ProbeSpec, probe
from pop3mon.engine.auth import (
    CLEARTEXT,
    choose_mechanism,
    offer_from,
    valid_apop_timestamp,
)
from pop3mon.engine.errors import PolicyError, ProbeError, TLSError
from pop3mon.engine.mechanisms import AUTH_SETTINGS as MECHANISMS
from pop3mon.engine.result import CertInfo
from pop3mon.engine.tls import cert_info
from pop3mon.engine.wire import (
    DISPLAY_MAX,
    STATUS_LINE_MAX,
    Deadline,
    Status,
    Wire,
    parse_status,
    sanitize,
)
from pop3mon.secrets import Secret

from pop3mon_lab.certs import self_signed_cert

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\x1b]")

# Bytes that look like POP3 often enough to get past the first check.
_POP3_TOKENS = [
    b"+OK",
    b"-ERR",
    b"+OK ",
    b"-ERR [IN-USE] ",
    b"[SYS/TEMP]",
    b"\r\n",
    b"\n",
    b".",
    b"..",
    b".\r\n",
    b"+ ",
    b"<1.2@host>",
    b"\x00",
    b"\x1b[31m",
    b"\xff\xfe",
    b"SASL PLAIN SCRAM-SHA-256",
    b"USER",
    b"STLS",
    b"2 320",
]
pop3ish = st.lists(
    st.one_of(st.sampled_from(_POP3_TOKENS), st.binary(max_size=40)), max_size=40
).map(b"".join)
server_bytes = st.one_of(st.binary(max_size=2048), pop3ish)


# --------------------------------------------------------------------------- status lines
@FAST
@given(line=server_bytes)
def test_parse_status_returns_status_or_probe_error(line: bytes) -> None:
    try:
        status = parse_status(line, "greeting")
    except ProbeError as exc:
        assert exc.kind == "bad-status-line" and exc.stage == "greeting"
        assert not _CONTROL.search(exc.reason)
        return
    assert isinstance(status, Status)
    assert line.startswith(b"+OK" if status.ok else b"-ERR")
    assert not _CONTROL.search(status.text)
    if status.code:
        assert status.text.startswith("[") and status.code == status.code.upper()


@FAST
@given(text=st.one_of(st.text(max_size=600), server_bytes), limit=st.integers(1, 400))
def test_sanitize_strips_control_bytes_and_caps_length(text: str | bytes, limit: int) -> None:
    clean = sanitize(text, limit)
    assert not _CONTROL.search(clean)
    assert len(clean) <= limit + 1


# --------------------------------------------------------------------------- Wire
def _wire_over(data: bytes, timeout: float = 2.0) -> tuple[Wire, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.sendall(data)
    theirs.close()  # EOF after the data: a read never waits for more
    return Wire(ours, Deadline(timeout), started=time.perf_counter()), ours


_READERS: dict[str, Callable[[Wire], object]] = {
    "read_line": lambda w: w.read_line("capa"),
    "status": lambda w: w.status("capa"),
    "multiline": lambda w: w.multiline("capa"),
}


@FAST
@given(data=server_bytes, calls=st.lists(st.sampled_from(sorted(_READERS)), min_size=1))
def test_wire_reads_return_or_raise_probe_errors(data: bytes, calls: list[str]) -> None:
    wire, sock = _wire_over(data)
    try:
        for name in calls:
            try:
                value = _READERS[name](wire)
            except ProbeError as exc:
                assert exc.stage == "capa"
                assert exc.kind in {
                    "bad-status-line",
                    "line-too-long",
                    "response-too-long",
                    "connection-closed",
                }, exc.kind
                break
            if name == "read_line":
                assert isinstance(value, bytes) and len(value) < STATUS_LINE_MAX
                assert b"\n" not in value
            elif name == "status":
                assert isinstance(value, Status)
            else:
                assert isinstance(value, list)
                assert all(isinstance(x, str) and not _CONTROL.search(x) for x in value)
        for line in wire.transcript:
            assert not _CONTROL.search(line.text)
            assert len(line.text) <= DISPLAY_MAX + 1
    finally:
        sock.close()


def test_wire_multiline_is_dot_unstuffed() -> None:
    wire, sock = _wire_over(b"one\r\n..two\r\n.three\r\n\r\n.\r\n")
    try:
        assert wire.multiline("capa") == ["one", ".two", "three", ""]
    finally:
        sock.close()


# --------------------------------------------------------------------------- APOP, CAPA
_MSGID = re.compile(rb"^<[!-;=?-~]+@[!-;=?-~]+>$")


@FAST
@given(greeting=server_bytes)
def test_valid_apop_timestamp(greeting: bytes) -> None:
    stamp = valid_apop_timestamp(greeting)
    if stamp is not None:
        assert stamp in greeting
        assert _MSGID.match(stamp), stamp


@pytest.mark.parametrize(
    ("greeting", "expected"),
    [
        (b"+OK ready <1896.697170952@dbc.mtview.ca.us>", b"<1896.697170952@dbc.mtview.ca.us>"),
        (b"+OK ready <no-at-sign>", None),
        (b"+OK ready <1.2\x07\x1b[0m@host>", None),
        (b"+OK ready <a b@host>", None),
        (b"+OK ready", None),
    ],
)
def test_valid_apop_timestamp_examples(greeting: bytes, expected: bytes | None) -> None:
    assert valid_apop_timestamp(greeting) == expected


capa_lines = st.lists(
    st.one_of(
        st.text(max_size=60),
        st.sampled_from(
            ["USER", "STLS", "SASL PLAIN LOGIN", "SASL SCRAM-SHA-256", "sasl cram-md5", "SASL"]
        ),
    ),
    max_size=12,
)


@FAST
@given(
    caps=st.one_of(st.none(), capa_lines),
    greeting=server_bytes,
    wanted=st.sampled_from([m for m in MECHANISMS if m != "none"]),
    encrypted=st.booleans(),
    allow_cleartext=st.booleans(),
)
def test_offer_and_choice(
    caps: list[str] | None,
    greeting: bytes,
    wanted: str,
    encrypted: bool,
    allow_cleartext: bool,
) -> None:
    offer = offer_from(caps, greeting)
    names = offer.names()
    assert set(names) <= set(MECHANISMS)
    assert ("apop" in names) == (offer.timestamp is not None)
    try:
        mech = choose_mechanism(wanted, offer, encrypted=encrypted, allow_cleartext=allow_cleartext)
    except PolicyError as exc:
        assert exc.stage == "auth" and exc.reason
        return
    assert mech in MECHANISMS
    if not (encrypted or allow_cleartext):
        assert mech not in CLEARTEXT  # the policy never lets a secret out unprotected
    if wanted == "auto":
        assert mech in names
    if mech == "apop":
        assert offer.timestamp is not None


# --------------------------------------------------------------------------- certificates
def _valid_der() -> bytes:
    cert, _ = self_signed_cert("localhost", ["localhost"], days=30)
    return cert.public_bytes(serialization.Encoding.DER)


VALID_DER = _valid_der()


def _mutate(der: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    data = bytearray(der)
    for pos, value in edits:
        data[pos % len(data)] = value
    return bytes(data[: len(data) - cut])


def _check_cert_info(der: bytes) -> None:
    with warnings.catch_warnings():
        # cryptography warns about negative serial numbers in mutated certificates.
        warnings.simplefilter("ignore")
        try:
            info = cert_info(der)
        except TLSError as exc:
            assert exc.kind == "cert-unparseable"
            assert exc.reason.startswith("server certificate cannot be parsed")
            return
    assert isinstance(info, CertInfo)
    assert info.sha256.count(":") == 31


def test_cert_info_of_a_valid_certificate() -> None:
    info = cert_info(VALID_DER)
    assert info.subject == "CN=localhost" and info.self_signed
    assert info.sans == ("DNS:localhost",)
    assert 29 < info.days_left <= 30


@FAST
@given(der=st.binary(max_size=1500))
def test_cert_info_random_bytes(der: bytes) -> None:
    _check_cert_info(der)


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 3),
)
def test_cert_info_mutated_certificate(edits: list[tuple[int, int]], cut: int) -> None:
    # Mutations of a real certificate reach the lazily parsed fields (names, extensions)
    # that raise ValueError, KeyError or TypeError inside cryptography.
    _check_cert_info(_mutate(VALID_DER, edits, cut))


# --------------------------------------------------------------------------- whole probe
class _ScriptedServer:
    """Accepts one connection and sends one chunk per client line (or after 50 ms of
    client silence, so nobody waits for a deadline), then closes."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.received = bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(5.0)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        finally:
            self.listener.close()  # a second connection (certificate fetch) is refused
        with conn:
            conn.settimeout(0.05)
            try:
                for chunk in self.chunks:
                    conn.sendall(chunk)
                    while b"\n" not in self.received:
                        try:
                            data = conn.recv(4096)
                        except TimeoutError:
                            break
                        if not data:
                            return
                        self.received += data
                    if b"\n" in self.received:
                        del self.received[: self.received.index(b"\n") + 1]
            except OSError:
                return


line_or_bytes = st.one_of(
    pop3ish.map(lambda b: b + b"\r\n"),
    st.sampled_from(
        [
            b"+OK\r\n",
            b"+OK ready <1.2@x>\r\n",
            b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n",
            b"+OK 2 320\r\n",
            b"-ERR [AUTH] no\r\n",
            b"+ \r\n",
            b"+ dj1hYmM=\r\n",
        ]
    ),
    st.binary(max_size=600),
)


@SLOW
@given(
    chunks=st.lists(line_or_bytes, min_size=1, max_size=8),
    mode=st.sampled_from(["none", "starttls-optional"]),
    mechanism=st.sampled_from(["auto", "user", "plain", "scram-sha-256", "apop"]),
)
def test_probe_never_raises_whatever_the_server_sends(
    chunks: list[bytes], mode: str, mechanism: str
) -> None:
    server = _ScriptedServer(chunks)
    spec = ProbeSpec(
        id="scripted",
        host="127.0.0.1",
        port=server.port,
        security=mode,
        auth=mechanism,
        username="alice",
        secret=Secret("Scripted-pw-93Xq", "test"),
        allow_cleartext=True,
        timeout=2.0,
    )
    start = time.monotonic()
    result = probe(spec)
    assert time.monotonic() - start < 2.0 + 0.5
    server.thread.join(6.0)
    assert isinstance(result, ProbeResult)
    assert result.error_kind != "internal", result.error_reason
    assert bool(result.error_kind) == (not result.ok)
    assert "Scripted-pw-93Xq" not in result.to_json()
    for line in result.transcript:
        assert not _CONTROL.search(line.text)
    assert ProbeResult.from_json(result.to_json()) == result
