"""Redaction by meaning: a server that echoes a secret back in another form (JSON-escaped,
mojibake, percent/quoted-printable/HTML-encoded, another letter case, lossily re-encoded,
hex, inside a longer base64 blob at any offset, or inside an RFC 7628 error JSON) never gets
it into a result, a report or the terminal.

Property tests: many random secrets and encodings through the redactor and the engine's
``sanitize``; a few whole runs of the suite against the fault server's ``echo-encoded``
scenario, grepping all four report files and the terminal output, each also decoded the
way its reader would (HTML entities, XML, JSON strings, Prometheus label escapes).
"""

from __future__ import annotations

import base64
import html
import json
import os
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pop3mon.engine import wire
from pop3mon.secrets import MIN_SECRET_CHARS, REDACTED, Redactor, secret_problem

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.faultserver import FaultServer
from pop3mon_lab.faultserver.echo import ECHO_ENCODINGS, as_client_sees, encode_echo

ROOT = Path(__file__).resolve().parents[1]
PW_ENV = "POP3MON_REDACTION_SECRET"
BASE64_PREFIX = 9  # bytes before the secret in the echo's base64 blobs ("password=")

# Secrets the rule accepts: no control characters, line or paragraph separators or lone
# surrogates; no surrounding white space (a server that trims its echo is a partial echo).
_CHARS = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))
SECRETS = (
    st.text(_CHARS, min_size=MIN_SECRET_CHARS, max_size=24)
    .filter(lambda s: s == s.strip() and not secret_problem(s))
    .filter(lambda s: len(s.encode("utf-8")) <= 96)  # echoes stay within a status line
)


def pure_base64(blob: str, start: int, length: int) -> str:
    """The characters of ``blob`` that encode only bytes [start, start+length)."""
    return blob[-(-8 * start // 6) : 8 * (start + length) // 6]


def leak_forms(secret: str) -> dict[str, str]:
    """What would reveal ``secret``, per encoding, as a client decoding UTF-8 reads it."""
    forms: dict[str, str] = {}
    raw = secret.encode("utf-8")
    for name in ECHO_ENCODINGS:
        seen = as_client_sees(encode_echo(name, secret))
        if name.startswith("base64-"):
            start = BASE64_PREFIX + int(name[-1])
            seen = pure_base64(seen, start, len(raw))
        forms[name] = seen
    # The RFC 7628 error challenge, as the transcript shows it: base64 of the JSON.
    escaped = encode_echo("json-ascii", secret)
    challenge = '{"status":"invalid_token","token":"'
    blob = base64.b64encode((challenge + escaped + '"}').encode()).decode()
    forms["rfc7628-challenge"] = pure_base64(blob, len(challenge), len(escaped))
    return {k: v for k, v in forms.items() if len(v) >= 6}


# --------------------------------------------------------------------------- unit level
@settings(max_examples=250, deadline=None)
@given(
    secret=SECRETS,
    encoding=st.sampled_from(sorted(ECHO_ENCODINGS)),
    prefix=st.text(max_size=30),
    suffix=st.text(max_size=30),
)
@example(secret='pä/ss"wö\\rd😀x', encoding="json-ascii", prefix="{", suffix="}")
@example(secret="ıiİI-ςσΣ-ﬁß", encoding="upper", prefix="", suffix="")
def test_redactor_removes_every_encoding(
    secret: str, encoding: str, prefix: str, suffix: str
) -> None:
    redactor = Redactor()
    redactor.register(secret)
    echoed = as_client_sees(encode_echo(encoding, secret))
    scrubbed = redactor.scrub(prefix + echoed + suffix)
    form = leak_forms(secret).get(encoding, echoed)
    assert form not in scrubbed, (encoding, scrubbed)
    assert secret not in scrubbed
    assert REDACTED in scrubbed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=SECRETS, encoding=st.sampled_from(sorted(ECHO_ENCODINGS)))
def test_sanitize_removes_every_encoding_of_a_status_line(secret: str, encoding: str) -> None:
    """The engine's path: raw server bytes -> ``sanitize`` (decode, strip controls, cap)."""
    redactor = Redactor()
    redactor.register(secret)
    line = b"-ERR [AUTH] bad password " + encode_echo(encoding, secret).encode(
        "utf-8", "surrogateescape"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wire, "REDACTOR", redactor)
        shown = wire.sanitize(line)
    form = leak_forms(secret).get(encoding, as_client_sees(encode_echo(encoding, secret)))
    # sanitize strips control characters (C1 ones appear in mojibake): compare stripped.
    stripped = "".join(c for c in form if unicodedata.category(c) != "Cc")
    assert stripped not in shown and secret not in shown, (encoding, shown)


@settings(max_examples=150, deadline=None)
@given(secret=SECRETS, head=st.binary(max_size=20), tail=st.binary(max_size=20))
def test_json_escaped_secret_inside_base64_is_redacted(
    secret: str, head: bytes, tail: bytes
) -> None:
    """An RFC 7628 error challenge carrying the token, at any alignment."""
    redactor = Redactor()
    redactor.register(secret)
    for escaped in (json.dumps(secret)[1:-1].replace("/", "\\/"), json.dumps(secret)[1:-1]):
        body = escaped.encode()
        blob = base64.b64encode(head + body + tail).decode()
        scrubbed = redactor.scrub(blob)
        assert pure_base64(blob, len(head), len(body)) not in scrubbed


# --------------------------------------------------------------------------- whole runs
@dataclass(frozen=True)
class EchoLab:
    """The echo server and a targets file with one connection type per encoding."""

    targets: Path
    ids: tuple[str, ...]


@pytest.fixture(scope="module")
def echo_lab(tmp_path_factory: pytest.TempPathFactory, lab_certs: LabCerts) -> Iterator[EchoLab]:
    directory = tmp_path_factory.mktemp("echo-lab")
    with FaultServer("echo-encoded", users={"nobody": "never-matches-1"}) as plain:
        rows: list[tuple[str, str, str]] = [(f"user-{n}", "user", n) for n in ECHO_ENCODINGS]
        # SASL carries the secret differently; the OAuth ones get the RFC 7628 JSON first.
        rows += [
            ("plain-json", "plain", "json-ascii"),
            ("login-base64", "login", "base64-1"),
            ("xoauth2-percent", "xoauth2", "percent"),
            ("oauthbearer-mojibake", "oauthbearer", "mojibake-latin1"),
        ]
        lines = [
            "version: 1",
            "defaults: {timeout: 5, allow_cleartext: true}",
            "servers:",
            "  - name: echo",
            "    host: localhost",
            "    connections:",
        ]
        for ct_id, auth, encoding in rows:
            kind = "token_env" if auth in ("xoauth2", "oauthbearer") else "password_env"
            lines.append(
                f"      - {{id: {ct_id}, port: {plain.port}, security: none, auth: {auth},"
                f" account: {{username: {encoding}, {kind}: {PW_ENV}}}}}"
            )
        targets = directory / "targets.yaml"
        targets.write_text("\n".join(lines) + "\n", encoding="utf-8")
        yield EchoLab(targets, tuple(r[0] for r in rows))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _views(name: str, text: str) -> list[str]:
    """``text`` as stored and as its reader decodes it."""
    views = [text]
    if name.endswith(".html"):
        views.append(html.unescape(text))
    elif name.endswith(".xml"):
        root = ET.fromstring(text)
        views.append(
            "\n".join([*root.itertext(), *(v for e in root.iter() for v in e.attrib.values())])
        )
    elif name.endswith(".json"):
        views.append("\n".join(_strings(json.loads(text))))
    elif name.endswith(".prom"):
        views.append(text.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\"))
    return views


@settings(
    max_examples=2,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example is a whole run
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(secret=SECRETS)
@example(secret='Pä/ss"wö\\rd 😀&<x>%+=')
@example(secret="plain-ASCII-secret-42")
def test_no_encoding_of_an_echoed_secret_reaches_any_output(
    echo_lab: EchoLab, tmp_path_factory: pytest.TempPathFactory, secret: str
) -> None:
    reports = tmp_path_factory.mktemp("echo-reports")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "POP3MON_TARGETS")}
    env[PW_ENV] = secret
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"--targets={echo_lab.targets}",
            f"--reports-dir={reports}",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:hypothesispytest",
            "-rA",
            "-v",
            "--tb=long",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=180,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-4000:]
    doc = json.loads((reports / "results.json").read_text(encoding="utf-8"))
    login = {
        c["id"]: next(k for k in c["checks"] if k["check"] == "login") for c in doc["connections"]
    }
    assert set(login) == set(echo_lab.ids)
    for ct_id, check in login.items():
        # Every server answer did carry the secret, and the reports show it redacted.
        assert check["verdict"] == "CRIT" and REDACTED in check["reason"], (ct_id, check)
    texts = {"terminal": output}
    for name in ("report.html", "junit.xml", "results.json", "metrics.prom"):
        texts[name] = (reports / name).read_text(encoding="utf-8")
    forms = {"secret": secret, **leak_forms(secret)}
    leaks = [
        f"{form_name} in {where}"
        for where, text in texts.items()
        for view in _views(where, text)
        for form_name, form in forms.items()
        if form in view
    ]
    assert leaks == []
