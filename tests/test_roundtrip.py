"""The opt-in mail round trip (engine/roundtrip.py) against a real mail path: Dovecot's
submission service (STARTTLS + AUTH) relays to a Postfix lab, whose ``virtual`` agent
delivers into the Dovecot lab's maildir, which Dovecot's POP3 serves. Plus the wire's
fences (TOP n 0 only, DELE only for HMAC-verified own messages) proven on a recording
fault server, and the config's file:line errors.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pop3mon.checks import check_names, evaluate
from pop3mon.config import ConfigError, ConnectionType, load_targets
from pop3mon.engine.errors import PolicyError
from pop3mon.engine.pacing import LoginPacer
from pop3mon.engine.result import ProbeSpec
from pop3mon.engine.roundtrip import (
    MAC_HEADER,
    TAG_HEADER,
    PollWire,
    _Poller,
    _PollState,
    message_mac,
)
from pop3mon.engine.runner import run_probes
from pop3mon.engine.wire import Deadline
from pop3mon.secrets import Secret
from pop3mon.verdict import Verdict
from test_reports import run_suite

from conftest import SUBMISSION_BINARY, _unavailable
from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dovecot import DovecotLab, LabUnavailable, free_port
from pop3mon_lab.faultserver import FaultServer
from pop3mon_lab.postfix import PostfixLab, submission_config

ADDRESS = "demo@pop3mon.test"
OTHER = "second@pop3mon.test"
PW_ENV = "POP3MON_RT_PASSWORD"
KEY_ENV = "POP3MON_RT_HMAC_KEY"
HMAC_KEY = "rt-hmac-SENTINEL-7f3e9a21c4"


class MailLab:
    """Dovecot (POP3 + submission) and Postfix delivering into Dovecot's maildirs."""

    def __init__(self, dovecot: DovecotLab, postfix: PostfixLab, submission_port: int):
        self.dovecot = dovecot
        self.postfix = postfix
        self.submission_port = submission_port

    def messages(self, user: str | None = None) -> list[bytes]:
        """Every message file in ``user``'s maildir (new and cur)."""
        maildir = self.dovecot.maildir(user)
        return [p.read_bytes() for sub in ("new", "cur") for p in sorted((maildir / sub).iterdir())]


@pytest.fixture(scope="module")
def mail_lab(lab_certs: LabCerts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailLab]:
    if not os.path.exists(SUBMISSION_BINARY):
        _unavailable("Dovecot's submission service is not installed (dovecot-submissiond)")
    relay_port, sub_port = free_port(), free_port()
    try:
        dovecot = DovecotLab(
            lab_certs,
            workdir=tmp_path_factory.mktemp("roundtrip"),
            mailboxes={},
            extra_config=submission_config(sub_port, relay_port),
        )
    except LabUnavailable as exc:
        _unavailable(exc)
    with dovecot:
        try:
            postfix = PostfixLab(
                lab_certs,
                deliver={
                    ADDRESS: dovecot.maildir("demo"),
                    OTHER: dovecot.maildir("second"),
                },
                mail_owner=dovecot.mail_owner,
                smtp_port=relay_port,
            )
        except LabUnavailable as exc:
            _unavailable(exc)
        with postfix:
            yield MailLab(dovecot, postfix, sub_port)


def _targets(lab: MailLab, round_trip: dict[str, Any], ca: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": {"ca_file": str(ca), "timeout": 10.0},
        "servers": [
            {
                "name": "mail",
                "host": "localhost",
                "address": "127.0.0.1",
                "account": {"username": "demo", "password_env": PW_ENV},
                "connections": [
                    {
                        "id": "mailbox",
                        "port": lab.dovecot.port("pop3s"),
                        "security": "tls",
                        "round_trip": round_trip,
                    }
                ],
                "smtp": [
                    {
                        "id": "submission",
                        "port": lab.submission_port,
                        "security": "starttls",
                        "auth": "auto",
                    }
                ],
            }
        ],
    }


def _load(tmp_path: Path, data: dict[str, Any]) -> tuple[Path, dict[str, ConnectionType]]:
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    targets = load_targets(path)
    return path, {c.id: c for c in targets.connections}


def _spec(lab: MailLab, cts: dict[str, ConnectionType]) -> ProbeSpec:
    env = {PW_ENV: lab.dovecot.demo_password, KEY_ENV: HMAC_KEY}
    pop3 = cts["mailbox"]
    return pop3.with_round_trip(pop3.to_probe_spec(env), cts["submission"], env)


def _foreign(subject: str, extra: str = "") -> bytes:
    return (
        f"From: someone@example.org\r\nTo: {ADDRESS}\r\nSubject: {subject}\r\n{extra}"
        "\r\nNot from pop3mon.\r\n"
    ).encode()


def test_round_trip_delivers_through_real_submission_and_postfix(
    mail_lab: MailLab, lab_certs: LabCerts, tmp_path: Path
) -> None:
    """Submission → Postfix → maildir → POP3: delivered, its time measured and judged in
    the latency tier; cleanup off leaves the message where it is (read-only polls)."""
    before = len(mail_lab.messages())
    _path, cts = _load(
        tmp_path, _targets(mail_lab, {"via": "submission", "recipient": ADDRESS}, lab_certs.ca_file)
    )
    ct = cts["mailbox"]
    assert "latency-delivery" in check_names(ct)
    assert "latency-delivery" not in check_names(cts["submission"])
    result = run_probes([_spec(mail_lab, cts)])["mailbox"]
    rt = result.round_trip
    assert rt is not None and rt.status == "delivered", rt
    assert rt.delivery is not None and 0 < rt.delivery < 30
    assert rt.logins == 1 + rt.polls and rt.deleted == 0
    check = evaluate(result, ct, "latency-delivery")
    assert check.verdict == Verdict.OK, check
    assert check.reason.startswith("delivered through submission in ") and check.unit == "ms"
    assert len(mail_lab.messages()) == before + 1  # nothing deleted, nothing more sent
    verbs = {line.text.split(" ")[0] for line in rt.transcript if line.direction == "C"}
    assert verbs <= {"CAPA", "AUTH", "UIDL", "TOP", "QUIT", "[REDACTED]", "(empty"}, verbs


def test_cleanup_deletes_only_own_signed_messages(
    mail_lab: MailLab, lab_certs: LabCerts, tmp_path: Path
) -> None:
    """cleanup: own-probe-messages deletes this run's message and an earlier run's
    (right tag, right HMAC) and nothing else: the look-alikes with the same subject, a
    forged tag without an HMAC, a right-looking tag with a wrong HMAC and an unrelated
    message all survive."""
    key = Secret(HMAC_KEY, source="test")
    other_key = Secret("another-monitors-key-123", source="test")
    old_tag = "pop3mon/1 ct=mailbox run=0123456789abcdef sent=1700000000"
    looks = {
        "same-subject": _foreign("pop3mon mail round trip"),
        "forged-no-mac": _foreign(
            "pop3mon mail round trip", f"{TAG_HEADER}: pop3mon/1 ct=mailbox run=ff sent=1\r\n"
        ),
        "wrong-mac": _foreign(
            "pop3mon mail round trip",
            f"{TAG_HEADER}: {old_tag}x\r\n{MAC_HEADER}: {message_mac(key, old_tag)}\r\n",
        ),
        "other-key": _foreign(
            "pop3mon mail round trip",
            f"{TAG_HEADER}: {old_tag}\r\n{MAC_HEADER}: {message_mac(other_key, old_tag)}\r\n",
        ),
        "unrelated": _foreign("lunch"),
    }
    for body in looks.values():
        mail_lab.dovecot.add_message(body)
    earlier = _foreign(
        "pop3mon mail round trip",
        f"{TAG_HEADER}: {old_tag}\r\n{MAC_HEADER}: {message_mac(key, old_tag)}\r\n",
    )
    mail_lab.dovecot.add_message(earlier)
    round_trip = {
        "via": "submission",
        "recipient": ADDRESS,
        "cleanup": "own-probe-messages",
        "hmac_key_env": KEY_ENV,
    }
    _path, cts = _load(tmp_path, _targets(mail_lab, round_trip, lab_certs.ca_file))
    result = run_probes([_spec(mail_lab, cts)])["mailbox"]
    rt = result.round_trip
    assert rt is not None and rt.status == "delivered", rt
    assert rt.deleted == 2, rt
    assert rt.kept >= 3, rt  # the three tagged look-alikes at least
    left = mail_lab.messages()
    for name, body in looks.items():
        assert any(m.replace(b"\r\n", b"\n") == body.replace(b"\r\n", b"\n") for m in left), name
    assert not any(m.replace(b"\r\n", b"\n") == earlier.replace(b"\r\n", b"\n") for m in left)
    assert not any(rt.tag.encode() in m for m in left)  # this run's own message is gone
    assert all(HMAC_KEY.encode() not in m for m in left)
    check = evaluate(result, cts["mailbox"], "latency-delivery")
    assert "cleanup deleted 2 own message(s)" in check.reason
    assert "left alone" in check.reason


def test_round_trip_timeout_is_crit_with_its_reason(
    mail_lab: MailLab, lab_certs: LabCerts, tmp_path: Path
) -> None:
    """A message that never reaches this mailbox (Postfix delivers it to another one) is
    CRIT naming the deadline and the polls, and the round trip ends within its deadline
    plus one poll session."""
    round_trip = {"via": "submission", "recipient": OTHER, "warn": 0.5, "crit": 1, "timeout": 2}
    _path, cts = _load(tmp_path, _targets(mail_lab, round_trip, lab_certs.ca_file))
    start = time.monotonic()
    result = run_probes([_spec(mail_lab, cts)])["mailbox"]
    took = time.monotonic() - start
    rt = result.round_trip
    assert rt is not None and rt.status == "timeout", rt
    assert took < 2 + 10 + 1  # deadline + one probe timeout bound
    check = evaluate(result, cts["mailbox"], "latency-delivery")
    assert check.verdict == Verdict.CRIT
    assert "not in the mailbox after 2 s" in check.reason and "poll" in check.reason


def test_failed_pop3_login_sends_nothing(
    mail_lab: MailLab, lab_certs: LabCerts, tmp_path: Path
) -> None:
    """No working POP3 login: no message is sent (nothing could find it), and the check
    is SKIP blocked by the login, not a second CRIT."""
    before = len(mail_lab.messages())
    _path, cts = _load(
        tmp_path, _targets(mail_lab, {"via": "submission", "recipient": ADDRESS}, lab_certs.ca_file)
    )
    env = {PW_ENV: "wrong-password-for-demo"}
    pop3 = cts["mailbox"]
    spec = pop3.with_round_trip(pop3.to_probe_spec(env), cts["submission"], env)
    result = run_probes([spec])["mailbox"]
    assert result.round_trip is not None and result.round_trip.status == "not-run"
    check = evaluate(result, pop3, "latency-delivery")
    assert check.verdict == Verdict.SKIP and check.blocked_by == "login"
    assert len(mail_lab.messages()) == before


def test_suite_reports_the_round_trip_and_keeps_secrets_out(
    mail_lab: MailLab, lab_certs: LabCerts, tmp_path: Path
) -> None:
    """Through the whole suite: latency-delivery is a test of the POP3 connection type
    and a row in results.json, junit.xml, report.html, metrics.prom and the terminal; the
    password and the HMAC key are in none of them."""
    round_trip = {
        "via": "submission",
        "recipient": ADDRESS,
        "cleanup": "own-probe-messages",
        "hmac_key_env": KEY_ENV,
    }
    path, _cts = _load(tmp_path, _targets(mail_lab, round_trip, lab_certs.ca_file))
    run = run_suite(
        path,
        tmp_path / "reports",
        "-n",
        "0",
        "-rA",
        env={PW_ENV: mail_lab.dovecot.demo_password, KEY_ENV: HMAC_KEY},
    )
    conns = {c["id"]: c for c in run.json()["connections"]}
    checks = {c["check"]: c for c in conns["mailbox"]["checks"]}
    assert checks["latency-delivery"]["verdict"] == "OK", checks["latency-delivery"]
    assert "latency-delivery" not in {c["check"] for c in conns["submission"]["checks"]}
    assert conns["mailbox"]["probe"]["round_trip"]["status"] == "delivered"
    for name in ("results.json", "junit.xml", "report.html", "metrics.prom"):
        text = run.path(name).read_text("utf-8")
        assert "latency-delivery" in text or "delivery" in text, name
        assert HMAC_KEY not in text and mail_lab.dovecot.demo_password not in text, name
    assert "mailbox-delivery" in run.output, run.output[-3000:]
    assert HMAC_KEY not in run.output and mail_lab.dovecot.demo_password not in run.output


# -- the wire's fences, on a recording server -------------------------------------------


def test_poll_wire_refuses_body_reads_and_foreign_deletes() -> None:
    """TOP with body lines, RETR, and DELE never leave the poll wire unless DELE names a
    message this session verified (and cleanup is on)."""
    a, b = socket.socketpair()
    with a, b:
        for cleanup in (False, True):
            wire = PollWire(a, Deadline(2.0), started=time.perf_counter(), cleanup=cleanup)
            for verb, args in (("TOP", ("1", "5")), ("TOP", ("1",)), ("RETR", ("1",))):
                with pytest.raises(PolicyError):
                    wire.command(verb, *args, stage="stat")
            with pytest.raises(PolicyError):
                wire.command("DELE", "1", stage="stat")
            wire.deletable.add("1")
            if not cleanup:
                with pytest.raises(PolicyError):
                    wire.command("DELE", "1", stage="stat")
            else:
                wire.command("DELE", "1", stage="stat")
            wire.command("TOP", "2", "0", stage="stat")
            assert wire.sent_verbs[-1] == "TOP"


def _lines(body: bytes) -> list[str]:
    return body.decode().rstrip("\r\n").split("\r\n")


@pytest.mark.parametrize("cleanup", [False, True])
def test_recording_server_sees_dele_only_for_verified_own(cleanup: bool) -> None:
    """A recording POP3 server holding look-alikes and one own message: the polls send
    only UIDL, TOP n 0 and (cleanup on) DELE of exactly the own message's number; with
    cleanup off no DELE at all."""
    key = Secret(HMAC_KEY, source="test")
    tag = "pop3mon/1 ct=x run=abc sent=1"
    mailbox = [
        _lines(_foreign("pop3mon mail round trip")),
        _lines(_foreign("pop3mon mail round trip", f"{TAG_HEADER}: {tag}\r\n")),
        _lines(
            _foreign("x", f"{TAG_HEADER}: {tag}\r\n{MAC_HEADER}: {'0' * 64}\r\n"),
        ),
        _lines(_foreign("x", f"{TAG_HEADER}: {tag}\r\n{MAC_HEADER}: {message_mac(key, tag)}\r\n")),
    ]
    with FaultServer("healthy", users={"alice": "alice-password-1"}, mailbox=mailbox) as srv:
        spec = ProbeSpec(
            id="rt",
            host="127.0.0.1",
            port=srv.port,
            security="none",
            auth="user",
            username="alice",
            secret=Secret("alice-password-1", source="test"),
            allow_cleartext=True,
        )
        state = _PollState(tag, key, cleanup)
        result = _Poller(spec, LoginPacer(), state).run()
        srv.wait_idle()
        assert not result.error_kind, result.error_reason
        assert state.found_at is not None
        lines = [e.line for e in srv.log.entries() if e.kind == "command"]
    tops = [line for line in lines if line.upper().startswith("TOP")]
    assert tops and all(line.split()[2] == "0" for line in tops), tops
    deles = [line for line in lines if line.upper().startswith("DELE")]
    assert deles == (["DELE 4"] if cleanup else []), lines
    assert not any(line.upper().startswith("RETR") for line in lines)
    assert state.kept == 2


# -- configuration ---------------------------------------------------------------------


def _config_error(tmp_path: Path, round_trip: dict[str, Any], **server: Any) -> str:
    data: dict[str, Any] = {
        "version": 1,
        "servers": [
            {
                "name": "mail",
                "host": "localhost",
                "account": {"username": "demo", "password_env": PW_ENV},
                "connections": [
                    {"id": "mailbox", "security": "tls", "round_trip": round_trip},
                    {"id": "other-pop3", "security": "tls"},
                ],
                "smtp": [
                    {"id": "submission", "security": "starttls", "auth": "auto"},
                    {"id": "mx", "port": 25, "security": "starttls"},
                ],
                **server,
            }
        ],
    }
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("round_trip", "wanted"),
    [
        ({"via": "nope", "recipient": ADDRESS}, "no connection type has id 'nope' — SMTP ids"),
        ({"via": "other-pop3", "recipient": ADDRESS}, "is a POP3 connection type"),
        ({"via": "mx", "recipient": ADDRESS}, "does not log in"),
        ({"via": "submission"}, "add recipient:"),
        ({"via": "submission", "recipient": ADDRESS, "cleanup": "own-probe-messages"}, "needs"),
        ({"via": "submission", "recipient": ADDRESS, "warn": 50, "crit": 40}, "must be less"),
        ({"via": "submission", "recipient": ADDRESS, "crit": 200, "timeout": 100}, "timeout"),
        ({"via": "submission", "recipient": ADDRESS, "cleanup": "all"}, "is not one of"),
        ({"via": "submission", "recipient": "not an address"}, "not a plain mail address"),
    ],
)
def test_round_trip_config_errors_name_file_and_line(
    tmp_path: Path, round_trip: dict[str, Any], wanted: str
) -> None:
    message = _config_error(tmp_path, round_trip)
    assert wanted in message, message
    assert "targets.yaml:" in message and "round_trip" in message, message
    line = int(message.split("targets.yaml:", 1)[1].split(":", 1)[0])
    text = (tmp_path / "targets.yaml").read_text().splitlines()
    assert "round_trip" in text[line - 1] or any(
        k in text[line - 1] for k in ("via", "cleanup", "warn", "crit", "recipient", "timeout")
    ), (line, text[line - 1])
