"""Regression tests for defects found in the independent review.

Each test fails without the fix it names and passes with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pop3mon.config import ConfigError, load_targets
from pop3mon.engine import ProbeSpec, probe
from pop3mon.engine.result import AuthInfo, ProbeResult
from pop3mon.engine.tls import cert_info
from pop3mon.engine.wire import sanitize
from pop3mon.report.metrics import metrics_text
from pop3mon.report.model import ConnectionReport, RunInfo, RunReport
from pop3mon.secrets import Secret

from pop3mon_lab.certs import LabCerts, self_signed_cert
from pop3mon_lab.faultserver import FaultServer

TARGETS = """\
version: 1
servers:
  - name: mail1
    host: mail1.example
    tags: [{tag}]
    account: {{username: monitor, password_env: REVIEW_PW}}
    connections:
      - security: tls
"""


# -- config: tags that are pytest's own markers change test outcomes ---------------------
@pytest.mark.parametrize("tag", ["xfail", "skip", "skipif", "tls", "auth", "not", "xdist_group"])
def test_reserved_marker_names_are_not_tags(tag: str, tmp_path: Path) -> None:
    """A tag "xfail" turned every CRIT of its connection type into XFAIL (exit status 0);
    "skip" skipped the connection type without probing it; "tls" made `-m tls` select all
    its tiers. Such tags must be refused at load time, with file and line."""
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS.format(tag=tag), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    text = str(info.value)
    assert "targets.yaml:5:" in text and "cannot be a tag" in text


def test_ordinary_tags_still_load(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS.format(tag="production"), encoding="utf-8")
    assert load_targets(path).connections[0].tags == ("production",)


# -- metrics: no auth_success 0 for a run that never tried to log in -----------------------
def test_no_auth_success_sample_when_login_was_not_selected(tmp_path: Path) -> None:
    """`pytest -m tls` probes without a login (mechanism "none"); metrics.prom wrote
    pop3mon_auth_success 0 for it, which an alert on a failed login would fire on."""
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS.format(tag="production"), encoding="utf-8")
    ct = load_targets(path).connections[0]
    assert ct.auth == "auto"
    result = ProbeResult(
        id=ct.id, host=ct.host, port=ct.port, security="tls", mechanism="none", started_at=1.0
    )
    info = RunInfo(
        run_id="r", started=1.0, finished=2.0, targets_name="t", targets_sha256="0", version="x"
    )
    report = RunReport(info=info, connections=(ConnectionReport(ct, result, ()),))
    assert "pop3mon_auth_success{" not in metrics_text(report)
    # A probe that reached the login still gets its sample (0: refused).
    tried = ProbeResult(
        id=ct.id,
        host=ct.host,
        port=ct.port,
        security="tls",
        mechanism="auto",
        started_at=1.0,
        auth=AuthInfo(mechanism="plain", success=False),
    )
    report = RunReport(info=info, connections=(ConnectionReport(ct, tried, ()),))
    assert "pop3mon_auth_success{" in metrics_text(report)


# -- sanitize: server text stays on one line and displays as what it is --------------------
@pytest.mark.parametrize("char", ["\n", "\u2028", "\u202e", "\u2066", "\u200f"])
def test_sanitize_strips_line_breaks_and_bidi_controls(char: str) -> None:
    """A decoded SASL error challenge (XOAUTH2) may contain a line feed: it forged extra
    lines in the terminal summary. Bidi overrides make a reason read differently."""
    out = sanitize(f"invalid{char}token")
    assert char not in out
    assert out.replace(" ", "") == "invalidtoken"


# -- certificate facts are server-controlled text ---------------------------------------------
def _hostile_cert() -> bytes:
    cert, _ = self_signed_cert("evil\x1b[2J\x1b]0;pwned\x07\r", ["a\x1b[31m.example\r\nX"])
    return cert.public_bytes(serialization.Encoding.DER)


def test_certificate_names_are_sanitized() -> None:
    """Subject, issuer and SANs went raw into the hostname-mismatch reason and so into the
    CRIT message on the terminal: a certificate could clear the screen or retitle it."""
    info = cert_info(_hostile_cert())
    for text in (info.subject, info.issuer, *info.sans):
        assert "\x1b" not in text and "\r" not in text and "\n" not in text and "\x07" not in text
    assert info.subject.startswith("CN=evil")
    assert info.sans and info.sans[0].startswith("DNS:a")


# -- SASL: an initial response too long for the AUTH line must not shift the rounds --------
@pytest.mark.parametrize("mechanism", ["scram-sha-1", "scram-sha-256"])
def test_scram_with_an_initial_response_too_long_for_the_auth_line(
    mechanism: str, lab_certs: LabCerts
) -> None:
    """RFC 5034: an initial response that does not fit in 255 octets is sent after the
    server's empty '+ ' challenge. That round was counted as the responder's first, so the
    SCRAM server-first message got an empty answer and a valid login (username over ~140
    characters) was reported as 'server rejected the credentials'."""
    user = "monitor-" + "x" * 190
    password = "review-scram-secret"
    with FaultServer(
        "healthy",
        users={user: password},
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
    ) as srv:
        result = probe(
            ProbeSpec(
                id="long-user",
                host="localhost",
                port=srv.port,
                security="starttls",
                auth=mechanism,
                username=user,
                secret=Secret(password, "test"),
                ca_file=str(lab_certs.ca_file),
                timeout=5.0,
            )
        )
    assert result.error_kind == "", result.error_reason
    assert result.auth is not None and result.auth.success
    # The long initial response really was deferred (not inline on the AUTH line).
    sent = [line.text for line in result.transcript if line.direction == "C"]
    assert f"AUTH {mechanism.upper()}" in sent


# -- plugin mode: an empty --id (an unset macro) checked every connection type ------------
@pytest.mark.parametrize("option", ["--id=", "--id=,", "--id= "])
def test_plugin_empty_id_is_unknown(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--id=$ARG2$` with the argument missing probed the whole file and reported its
    worst state under this service's name; it is a usage error (UNKNOWN) before any probe."""
    from pop3mon.plugin_mode import main

    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS.format(tag="eu"), encoding="utf-8")
    code = main([f"--targets={path}", option, "--no-cache"])
    out = capsys.readouterr().out
    assert code == 3, out
    assert out == "POP3 UNKNOWN - --id names no connection type (empty)\n"


# -- report.html: an SMTP session's transcript ended with POP3's "+OK" -------------------
def test_html_smtp_session_end_says_221() -> None:
    """The transcript's last line of a healthy SMTP session said "QUIT answered +OK" and
    its capabilities "After STLS": SMTP answers QUIT with 221 and its verb is STARTTLS."""
    from pop3mon.report.html import _caps, end_reason

    with FaultServer("smtp-healthy") as srv:
        spec = ProbeSpec(
            id="mx",
            host="localhost",
            address="127.0.0.1",
            port=srv.port,
            protocol="smtp",
            security="starttls-optional",
            auth="none",
            timeout=5.0,
        )
        result = probe(spec)
    assert result.protocol == "smtp" and result.stage("quit") is not None
    assert end_reason(result) == "QUIT answered 221, connection closed"
    assert "After STLS" not in _caps(result)


# -- plugin mode: a run past --timeout answered UNKNOWN but the process lived on ----------
def test_plugin_overrun_exits_with_its_answer(tmp_path: Path) -> None:
    """The watchdog printed "no result within 1 s" at once, but the process then waited for
    the stuck probe thread (the pool's workers are joined at exit), so a scheduler killed
    it at its own timeout instead of reading UNKNOWN. The process ends with the answer."""
    import os
    import subprocess
    import sys
    import time

    path = tmp_path / "targets.yaml"
    path.write_text(
        "servers:\n  - name: fs\n    host: 127.0.0.1\n    connections:\n"
        "      - {id: stuck, port: 1, security: none, auth: none}\n",
        encoding="utf-8",
    )
    # A probe stuck beyond its deadlines (what the watchdog is for), injected.
    code = (
        "import sys, time\n"
        "import pop3mon.engine.runner as r\n"
        "r.probe_with_retries = lambda *a, **k: time.sleep(60)\n"
        "import pop3mon.plugin_mode as m\n"
        "sys.exit(m.main(sys.argv[1:]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root / 'plugins'}", "POP3MON_CACHE_DIR": ""}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, f"--targets={path}", "--timeout=1"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env=env,
    )
    took = time.monotonic() - start
    assert proc.stdout == "POP3 UNKNOWN - no result within 1 s (--timeout)\n", proc
    assert proc.returncode == 3
    assert took < 1 + 1 + 10, took  # the deadline, the grace, the interpreter's start
