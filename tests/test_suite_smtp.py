"""SMTP connection types through the whole suite: targets.yaml ``smtp:`` entries become
parametrized tier tests next to the POP3 ones and show up in all four reports; one login
per connection type per run, never mail, and an open relay is CRIT.

One run against real Postfix (port-25 style with a relay check, implicit TLS), Dovecot's
submission service (STARTTLS + AUTH) and the fault server's open relay (a recording
server: it proves the one login and the command allowlist from the server's side).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_reports import Run, junit_cases, run_suite

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dovecot import DovecotLab
from pop3mon_lab.faultserver import FaultServer
from pop3mon_lab.postfix import PostfixLab

PW_ENV = "POP3MON_SMTP_SUITE_PASSWORD"
FAULT_PW_ENV = "POP3MON_SMTP_SUITE_FAULT_PASSWORD"
FAULT_PASSWORD = "fault-SENTINEL-5b0c1d"


@pytest.fixture(scope="module")
def smtp_run(
    postfix: PostfixLab,
    submission: tuple[DovecotLab, int],
    lab_certs: LabCerts,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Run, FaultServer]]:
    """One suite run over the three SMTP servers (and the submission lab's POP3)."""
    lab, sub_port = submission
    tmp = tmp_path_factory.mktemp("smtp-suite")
    with FaultServer(
        "smtp-open-relay",
        users={"alice": FAULT_PASSWORD},
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
    ) as relay:
        targets = {
            "version": 1,
            "defaults": {
                "ca_file": str(lab_certs.ca_file),
                "timeout": 10.0,
                "latency": {"total": {"warn": 20.0, "crit": 30.0}},
            },
            "servers": [
                {
                    "name": "mx",
                    "host": "localhost",
                    "address": "127.0.0.1",
                    "smtp": [
                        {
                            "port": postfix.port("smtp"),
                            "security": "starttls",
                            "relay_check": "relay-test@pop3mon.invalid",
                        },
                        {"port": postfix.port("smtps"), "security": "tls"},
                    ],
                },
                {
                    "name": "mail",
                    "host": "localhost",
                    "address": "127.0.0.1",
                    "account": {"username": lab.demo_user, "password_env": PW_ENV},
                    "connections": [{"port": lab.port("pop3s"), "security": "tls"}],
                    "smtp": [{"port": sub_port, "security": "starttls", "auth": "auto"}],
                },
                {
                    "name": "relay",
                    "host": "localhost",
                    "address": "127.0.0.1",
                    "account": {"username": "alice", "password_env": FAULT_PW_ENV},
                    "smtp": [
                        {
                            "port": relay.port,
                            "security": "starttls",
                            "auth": "plain",
                            "relay_check": "relay-test@pop3mon.invalid",
                        }
                    ],
                },
            ],
        }
        path = tmp / "targets.yaml"
        path.write_text(yaml.safe_dump(targets, sort_keys=False), "utf-8")
        run = run_suite(
            path,
            tmp / "reports",
            "-n",
            "0",
            env={PW_ENV: lab.demo_password, FAULT_PW_ENV: FAULT_PASSWORD},
        )
        relay.wait_idle()
        yield run, relay


def _ids(run: Run) -> dict[str, str]:
    """Connection id -> its worst verdict, from results.json."""
    return {c["id"]: c["verdict"] for c in run.json()["connections"]}


def test_smtp_connection_types_in_results_json(smtp_run: tuple[Run, FaultServer]) -> None:
    """Each smtp: entry is a connection type with the derived id and its probe."""
    run, _relay = smtp_run
    conns = {c["id"]: c for c in run.json()["connections"]}
    smtp_ids = [i for i in conns if ":smtp-" in i]
    assert len(smtp_ids) == 4, sorted(conns)
    for cid in smtp_ids:
        probe = conns[cid]["probe"]
        assert probe is not None and probe["protocol"] == "smtp"
        assert "DATA" not in {t["text"].split(" ")[0] for t in probe["transcript"]}
    verdicts = _ids(run)
    mx = next(i for i in smtp_ids if i.startswith("mx:") and i.endswith("-starttls"))
    assert verdicts[mx] == "OK", conns[mx]["checks"]
    sub = next(i for i in smtp_ids if i.startswith("mail:"))
    assert verdicts[sub] == "OK", conns[sub]["checks"]
    relay = next(i for i in smtp_ids if i.startswith("relay:"))
    relay_checks = {c["check"]: c for c in conns[relay]["checks"]}
    assert relay_checks["relay"]["verdict"] == "CRIT"
    assert "open relay" in relay_checks["relay"]["reason"]
    assert relay_checks["login"]["verdict"] == "OK"


def test_smtp_checks_in_the_tiers(smtp_run: tuple[Run, FaultServer]) -> None:
    """The tier tests are parametrized with the SMTP ids: EHLO in the capa check, STARTTLS
    in the stls check, no mailbox, latency per SMTP phase."""
    run, _relay = smtp_run
    conns = {c["id"]: c for c in run.json()["connections"]}
    mx = next(i for i in conns if i.startswith("mx:smtp-") and i.endswith("-starttls"))
    checks = {c["check"]: c for c in conns[mx]["checks"]}
    assert checks["greeting"]["reason"].startswith("220 ")
    assert "EHLO extensions" in checks["capa"]["reason"]
    assert checks["stls"]["reason"].startswith("STARTTLS offered")
    # SMTP has no mailbox: no STAT or thresholds check at all (QUIT is still judged).
    assert "stat" not in checks and "thresholds" not in checks and "logout" in checks
    assert checks["relay"]["verdict"] == "OK" and "Relay access denied" in checks["relay"]["reason"]
    assert checks["certificate"]["verdict"] == "OK"
    assert "latency-total" in checks


def test_smtp_in_junit_metrics_and_html(smtp_run: tuple[Run, FaultServer]) -> None:
    """The other three reports carry the SMTP connection types too."""
    run, _relay = smtp_run
    _props, cases = junit_cases(run.path("junit.xml"))
    names = " ".join(c.get("__name__", "") for c in cases)
    assert re.search(r"test_relay\[relay:smtp-\d+-starttls\]", names), names[:2000]
    metrics = run.path("metrics.prom").read_text("utf-8")
    assert re.search(r'connection="mx:smtp-\d+-tls"', metrics)
    # blackbox-style series name SMTP modules as SMTP, never as a POP3 mode.
    assert re.search(r'probe_success\{module="smtp_tls",target="mx:smtp-\d+-tls"\} 1\.0', metrics)
    assert not re.search(r'module="pop3_[a-z_]+",target="(mx|relay|sub)', metrics)
    html = run.path("report.html").read_text("utf-8")
    assert "relay:smtp-" in html and "mx:smtp-" in html


def test_one_login_and_allowlist_on_the_recording_server(
    smtp_run: tuple[Run, FaultServer],
) -> None:
    """The fault server saw one login for its one SMTP connection type in the whole run,
    and only EHLO/STARTTLS/AUTH/QUIT plus the relay check's MAIL/RCPT/RSET; no DATA."""
    run, relay = smtp_run
    assert relay.logins == 1, run.output[-3000:]
    verbs = set(relay.log.commands())
    assert verbs <= {"EHLO", "STARTTLS", "AUTH", "QUIT", "MAIL", "RCPT", "RSET"}, verbs
    assert not relay.log.events("data-refused")
    assert FAULT_PASSWORD not in run.output


def test_smtp_targets_validation(tmp_path: Path) -> None:
    """smtp: entries are validated with file:line messages: POP3-only mechanisms, a relay
    recipient outside .invalid."""
    path = tmp_path / "t.yaml"
    path.write_text(
        "servers:\n"
        "  - name: s\n"
        "    host: localhost\n"
        "    account: {username: alice, password_env: X}\n"
        "    smtp:\n"
        "      - {port: 587, security: starttls, auth: apop}\n"
        "      - port: 25\n"
        "        security: starttls-optional\n"
        "        relay_check: postmaster@example.com\n",
        encoding="utf-8",
    )
    from pop3mon.config import ConfigError, load_targets

    with pytest.raises(ConfigError) as info:
        load_targets(path)
    text = str(info.value)
    assert "t.yaml:6:" in text and "POP3 command, not a SASL mechanism" in text, text
    assert "t.yaml:9:" in text and ".invalid domain" in text, text
