"""Secrets never leak: the :class:`Secret` type, the :class:`Redactor`, and every probe
outcome (result JSON, reprs, transcript, reasons, exception text) for every mechanism,
on success and on failure, against the real fault server.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import pickle
import socket
import threading
import time
import traceback
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pop3mon.engine import ProbeResult, ProbeSpec, probe
from pop3mon.engine.auth import refused
from pop3mon.engine.errors import (
    AuthError,
    PolicyError,
    ProbeError,
    map_exception,
)
from pop3mon.engine.mechanisms import MECHANISMS as MECHANISM_REGISTRY
from pop3mon.engine.wire import Deadline, Status, Wire, sanitize
from pop3mon.secrets import REDACTED, REDACTOR, Redactor, Secret

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.faultserver import ALL_SASL, FaultServer

USER = "alice"
# 17 characters: not a multiple of 3, so each base64 alignment has a distinct form.
SENTINEL = "Secr3t-Sentinel#Q"
WRONG = "Wr0ng-Sentinel#Zx"
# Every mechanism the registry knows: a new one is covered here without editing this list.
MECHANISMS = tuple(MECHANISM_REGISTRY)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def forms(value: str) -> list[str]:
    """Text forms that would reveal ``value``: itself, its base64, SASL payloads carrying
    it, and the alignment-stable base64 of it inside any longer payload."""
    raw = value.encode()
    out = [
        value,
        _b64(raw),
        _b64(f"\0{USER}\0{value}".encode()),
        _b64(f"user={USER}\x01auth=Bearer {value}\x01\x01".encode()),
    ]
    for pad in range(3):
        enc = _b64(b"\0" * pad + raw)
        out.append(enc[4 if pad else 0 : -4])
    return out


def assert_clean(text: str, *values: str) -> None:
    """No form of any of ``values`` appears in ``text``."""
    for value in values or (SENTINEL,):
        for form in forms(value):
            assert form not in text, f"{form!r} leaked into {text[:200]!r}"


# --------------------------------------------------------------------------- Secret
def test_secret_renders_only_its_source() -> None:
    s = Secret(SENTINEL, "env:POP3_PASSWORD")
    expected = f"Secret(source='env:POP3_PASSWORD', value={REDACTED})"
    rendered = [
        repr(s),
        str(s),
        f"{s}",
        f"{s!r}",
        f"{s!s}",
        f"{s:>80}",
        "{}".format(s),  # noqa: UP032 - str.format is a separate code path
        "%s" % s,  # noqa: UP031 - the old formatting path must be covered too
        "%r" % s,  # noqa: UP031
        repr([s]),
        repr({"pw": s}),
        str((s,)),
    ]
    for text in rendered:
        assert SENTINEL not in text
        assert expected in text
    assert s.reveal() == SENTINEL
    assert s.source == "env:POP3_PASSWORD"


def test_secret_refuses_pickle_and_copy() -> None:
    s = Secret(SENTINEL)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="cannot be pickled") as info:
            pickle.dumps(s, protocol=protocol)
        assert SENTINEL not in str(info.value)
    with pytest.raises(TypeError):
        copy.copy(s)
    with pytest.raises(TypeError):
        copy.deepcopy(s)
    with pytest.raises(TypeError) as info:
        json.dumps({"pw": s})
    assert SENTINEL not in str(info.value)


def test_secret_is_immutable_and_compares_by_identity() -> None:
    s = Secret(SENTINEL)
    with pytest.raises(AttributeError):
        s.source = "other"
    with pytest.raises(AttributeError):
        s._value = "other"
    assert s.reveal() == SENTINEL
    twin = Secret(SENTINEL)
    assert s == s and s != twin  # equality would be an oracle for the value
    assert hash(s) != hash(twin)
    assert bool(s) and not bool(Secret(""))
    with pytest.raises(TypeError):
        vars(s)


def test_secret_registers_with_the_global_redactor() -> None:
    value = "Fresh-Registered-Value-81"
    assert REDACTOR.scrub(value) == value
    Secret(value, "test")
    assert REDACTOR.scrub(f"x {value} y") == f"x {REDACTED} y"
    assert REDACTOR.scrub(_b64(value.encode())) == REDACTED


def test_spec_repr_and_pickle_never_show_the_secret() -> None:
    spec = ProbeSpec(id="x", host="h", port=110, username=USER, secret=Secret(SENTINEL, "t"))
    assert_clean(repr(spec))
    assert_clean(str(spec))
    with pytest.raises(TypeError):
        pickle.dumps(spec)  # fails closed rather than writing the value anywhere
    with pytest.raises(TypeError):
        dataclasses.asdict(spec)


# --------------------------------------------------------------------------- Redactor
def test_redactor_scrubs_value_and_base64() -> None:
    r = Redactor()
    r.register(SENTINEL)
    assert r.scrub(f"-ERR bad password '{SENTINEL}'") == f"-ERR bad password '{REDACTED}'"
    assert r.scrub(_b64(SENTINEL.encode())) == REDACTED
    for payload in forms(SENTINEL)[2:4]:  # PLAIN and XOAUTH2 payloads
        assert REDACTED in r.scrub(payload)
        assert_clean(r.scrub(payload))


def test_redactor_memo_never_outlives_a_registration() -> None:
    """The scrub memo (issue 14, scale) is tied to one set of registered values: a text
    scrubbed before a secret was registered is scrubbed again after, from any thread."""
    r = Redactor()
    r.register("first-secret-value")
    text = f"-ERR {SENTINEL} and first-secret-value"
    assert r.scrub(text) == f"-ERR {SENTINEL} and {REDACTED}"
    assert r.scrub(text) == f"-ERR {SENTINEL} and {REDACTED}"  # from the memo
    done = threading.Event()
    threading.Thread(target=lambda: (r.register(SENTINEL), done.set())).start()
    assert done.wait(5)
    assert r.scrub(text) == f"-ERR {REDACTED} and {REDACTED}"
    long_text = "x" * 1000 + SENTINEL  # past the memo's length bound: scrubbed each time
    assert r.scrub(long_text) == r.scrub(long_text) == "x" * 1000 + REDACTED


@settings(max_examples=200, deadline=None)
@given(
    secret=st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=12, max_size=40),
    prefix=st.binary(max_size=40),
    suffix=st.binary(max_size=40),
)
def test_redactor_scrubs_base64_embedded_at_any_alignment(
    secret: str, prefix: bytes, suffix: bytes
) -> None:
    r = Redactor()
    r.register(secret)
    raw = secret.encode()
    text = _b64(prefix + raw + suffix)
    scrubbed = r.scrub(text)
    assert REDACTED in scrubbed
    # Every run of whole base64 groups made only of secret bytes is gone.
    start = len(prefix)
    first_group = -(-start // 3)  # first group starting inside the secret
    last_group = (start + len(raw)) // 3  # groups ending before the secret does
    if last_group - first_group >= 2:
        pure = text[first_group * 4 : last_group * 4]
        assert pure not in scrubbed


@pytest.mark.parametrize("value", ["", "a", "ab", "abc"])
def test_redactor_ignores_tiny_values(value: str) -> None:
    r = Redactor()
    r.register(value)
    text = "a normal sentence about abc and ab"
    assert r.scrub(text) == text


def test_redactor_longest_first_and_clear() -> None:
    r = Redactor()
    r.register("Shorter-Value", "Shorter-Value-And-More")
    assert r.scrub("x Shorter-Value-And-More y") == f"x {REDACTED} y"
    r.clear()
    assert r.scrub("x Shorter-Value y") == "x Shorter-Value y"


def test_redactor_register_is_thread_safe() -> None:
    r = Redactor()
    values = [f"value-{t}-{i:04d}-pad" for t in range(8) for i in range(50)]

    def register(chunk: list[str]) -> None:
        for v in chunk:
            r.register(v)

    threads = [threading.Thread(target=register, args=(values[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.scrub(v) == REDACTED for v in values)


def test_sanitize_scrubs_a_secret_cut_by_the_length_cap() -> None:
    Secret(SENTINEL)
    text = "x" * 290 + SENTINEL + " tail"
    clean = sanitize(text)
    assert SENTINEL[:5] not in clean
    assert clean.startswith("x" * 290 + "[REDACTED]"[:10])


# --------------------------------------------------------------------------- exceptions
def test_exception_text_is_scrubbed() -> None:
    Secret(SENTINEL)
    errors: list[BaseException] = [
        ProbeError(f"server said {SENTINEL}"),
        AuthError(f"nope {_b64(SENTINEL.encode())}", code="AUTH"),
        map_exception(ValueError(f"bad {SENTINEL}"), "auth"),
        map_exception(OSError(5, f"io {SENTINEL}"), "auth"),
        map_exception(RuntimeError(f"bug {SENTINEL}"), "auth"),
        refused(Status(False, f"[AUTH] echo {SENTINEL}", "AUTH"), "user"),
    ]
    for exc in errors:
        text = "".join(traceback.format_exception(exc))
        for rendered in (str(exc), repr(exc), text, repr(exc.args)):
            assert_clean(rendered)


def _pair_wire(encrypted_ok: bool = False) -> tuple[Wire, socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    wire = Wire(ours, Deadline(2.0), started=time.perf_counter(), cleartext_allowed=encrypted_ok)
    return wire, ours, theirs


def _received(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""


def test_wire_refuses_secret_on_plaintext_and_sends_nothing() -> None:
    wire, ours, theirs = _pair_wire()
    try:
        with pytest.raises(PolicyError) as info:
            wire.command("PASS", Secret(SENTINEL), stage="auth")
        assert info.value.kind == "cleartext-refused"
        assert_clean(str(info.value))
        with pytest.raises(PolicyError, match="never sends DELE"):
            wire.command("DELE", "1", stage="stat")
        with pytest.raises(PolicyError, match="line break"):
            wire.command("USER", "alice\r\nDELE 1", stage="auth")
        assert _received(theirs) == b""
        assert wire.transcript == []
    finally:
        ours.close()
        theirs.close()


def test_wire_transcript_redacts_secrets_when_cleartext_allowed() -> None:
    wire, ours, theirs = _pair_wire(encrypted_ok=True)
    try:
        wire.command("PASS", Secret(SENTINEL), stage="auth")
        assert _received(theirs) == f"PASS {SENTINEL}\r\n".encode()  # the wire gets it
        assert [line.text for line in wire.transcript] == [f"PASS {REDACTED}"]
    finally:
        ours.close()
        theirs.close()


# --------------------------------------------------------------------------- probes
def _probe(
    lab_certs: LabCerts,
    scenario: str,
    mechanism: str,
    *,
    mode: str = "starttls",
    password: str = SENTINEL,
    allow_cleartext: bool = False,
    **server_kw: Any,
) -> tuple[ProbeResult, ProbeSpec]:
    with FaultServer(
        scenario,
        users={USER: SENTINEL},
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
        implicit_tls=mode == "tls",
        sasl_mechanisms=ALL_SASL,
        **server_kw,
    ) as srv:
        spec = ProbeSpec(
            id=f"{scenario}-{mechanism}",
            host="localhost",
            port=srv.port,
            security=mode,
            auth=mechanism,
            username=USER,
            secret=Secret(password, "test"),
            allow_cleartext=allow_cleartext,
            ca_file=str(lab_certs.ca_file),
            timeout=3.0,
        )
        result = probe(spec)
        srv.wait_idle(2.0)
    return result, spec


def assert_result_clean(result: ProbeResult, spec: ProbeSpec, *values: str) -> None:
    """No form of the secrets anywhere a result or spec can be rendered."""
    texts = [
        result.to_json(),
        repr(result),
        str(result),
        repr(spec),
        str(spec),
        result.error_reason,
        "\n".join(t.text for t in result.transcript),
        "\n".join(s.reason for s in result.stages),
        repr(result.auth),
    ]
    for text in texts:
        assert_clean(text, *values)
    assert ProbeResult.from_json(result.to_json()) == result


@pytest.mark.parametrize(
    ("scenario", "password"),
    [
        ("healthy", SENTINEL),
        ("healthy", WRONG),
        ("echo-credentials", SENTINEL),
        ("endless-sasl", SENTINEL),
        ("rst-after-pass", SENTINEL),
        ("auth-code", SENTINEL),
    ],
)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_no_secret_in_any_result(
    lab_certs: LabCerts, mechanism: str, scenario: str, password: str
) -> None:
    result, spec = _probe(lab_certs, scenario, mechanism, password=password)
    assert result.auth is not None and result.auth.mechanism == mechanism
    expect_ok = (scenario == "healthy" and password == SENTINEL) or (
        scenario == "endless-sasl" and mechanism in ("user", "apop")  # not SASL: unaffected
    )
    assert result.ok is expect_ok, result.error_reason
    assert_result_clean(result, spec, SENTINEL, WRONG)


@pytest.mark.parametrize("mechanism", ["user", "plain", "login", "xoauth2", "oauthbearer"])
@pytest.mark.parametrize("scenario", ["healthy", "echo-credentials"])
def test_no_secret_in_results_of_allowed_cleartext(
    lab_certs: LabCerts, mechanism: str, scenario: str
) -> None:
    # The wire carried the secret (explicitly allowed); the result still must not.
    result, spec = _probe(lab_certs, scenario, mechanism, mode="none", allow_cleartext=True)
    assert result.auth is not None and not result.auth.encrypted
    assert result.ok is (scenario == "healthy")
    assert_result_clean(result, spec)


@pytest.mark.parametrize("mechanism", ["plain", "scram-sha-256", "xoauth2"])
def test_no_secret_in_results_over_implicit_tls(lab_certs: LabCerts, mechanism: str) -> None:
    result, spec = _probe(lab_certs, "echo-credentials", mechanism, mode="tls")
    assert result.error_kind == "auth-failed"
    assert_result_clean(result, spec)
