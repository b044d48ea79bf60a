"""Coverage tier (checks/coverage.py, tests_targets/test_coverage.py): each run
re-discovers a server's connection types and reports what the targets file does not
monitor, what its domain publishes (SRV, autoconfig) and whether the autoconfig is true.

Real components only: the Dovecot lab (one instance more, ``spare``, whose listeners are
the deliberately unmonitored ones), dnsmasq serving the test zone's SRV and A records, an
HTTP server (the standard library's) serving the autoconfig document, and the fault
server's ``no-stls`` and ``smtp-no-starttls`` scenarios, the Postfix lab for published
submission entries, and a UDP socket that never answers as a DNS server that drops queries.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pop3mon.checks.coverage import coverage_check
from pop3mon.config import load_targets
from test_suite import SuiteRun, run_suite, write_targets

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dnsmasq import DnsLab, Srv
from pop3mon_lab.dovecot import DovecotLab, LabUnavailable
from pop3mon_lab.faultserver import FaultServer
from pop3mon_lab.postfix import PostfixLab

ZONE = "example.test"
MAIL = f"mail.{ZONE}"


@pytest.fixture(scope="module")
def lab(lab_certs: LabCerts) -> Iterator[DovecotLab]:
    """Dovecot with a second instance, ``spare``, that no targets file here monitors."""
    try:
        dovecot = DovecotLab(lab_certs, extra_instances={"spare": "valid"})
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    with dovecot:
        yield dovecot


def _server(lab: DovecotLab, coverage: Any, host: str = "") -> dict[str, Any]:
    """A server monitoring the ``valid`` instance's two listeners (no login)."""
    entry: dict[str, Any] = {
        "name": "mail",
        "host": host or lab.hostname,
        "address": "127.0.0.1",
        "ca_file": str(lab.ca_file),
        "auth": "none",
        "timeout": 5,
        "connections": [
            {"port": lab.port("pop3s"), "security": "tls"},
            {"port": lab.port("pop3"), "security": "starttls"},
        ],
    }
    if coverage is not None:
        entry["coverage"] = coverage
    return entry


def _run(tmp_path: Path, *servers: dict[str, Any]) -> SuiteRun:
    targets = write_targets(tmp_path / "targets.yaml", {"servers": list(servers)})
    return run_suite(targets, "-m", "coverage", workdir=tmp_path)


def _spare(lab: DovecotLab, listener: str) -> int:
    return lab.port("pop3s" if listener == "pop3s" else "pop3", "spare")


def test_unmonitored_listener_is_a_warn_naming_it(lab: DovecotLab, tmp_path: Path) -> None:
    spare = _spare(lab, "pop3s")
    ports = [lab.port("pop3s"), lab.port("pop3"), spare]
    run = _run(tmp_path, _server(lab, {"ports": ports}))
    case = run.case("coverage_unmonitored", "server:mail")
    assert case.verdict == "WARN", run.describe()
    assert f"localhost:{spare}" in case.reason and "implicit TLS" in case.reason
    assert f":{lab.port('pop3s')} " not in case.reason  # the monitored ones are not findings
    # Without a domain there is nothing published to compare: SKIP, saying how to set one.
    assert run.case("coverage_published", "server:mail").verdict == "SKIP"
    assert "domain" in run.case("coverage_autoconfig", "server:mail").reason


def test_unmonitored_cleartext_listener_is_crit(lab: DovecotLab, tmp_path: Path) -> None:
    # Dovecot offers USER and SASL PLAIN before TLS to loopback clients.
    spare = _spare(lab, "pop3")
    run = _run(tmp_path, _server(lab, {"ports": [spare]}))
    case = run.case("coverage_unmonitored", "server:mail")
    assert case.verdict == "CRIT", run.describe()
    assert case.outcome == "failed"
    assert f"localhost:{spare}" in case.reason and "cleartext login before TLS" in case.reason
    assert "USER" in case.reason


def test_unmonitored_crit_setting(lab: DovecotLab, tmp_path: Path) -> None:
    spare = _spare(lab, "pop3s")
    run = _run(tmp_path, _server(lab, {"ports": [spare], "unmonitored": "crit"}))
    assert run.case("coverage_unmonitored", "server:mail").verdict == "CRIT", run.describe()


def test_everything_monitored_is_ok(lab: DovecotLab, tmp_path: Path) -> None:
    ports = [lab.port("pop3s"), lab.port("pop3")]
    run = _run(tmp_path, _server(lab, {"ports": ports}))
    case = run.case("coverage_unmonitored", "server:mail")
    assert case.verdict == "OK", run.describe()
    assert "every POP3 connection type that answers is monitored" in case.reason


def test_coverage_off_has_no_coverage_tests(lab: DovecotLab, tmp_path: Path) -> None:
    targets = write_targets(tmp_path / "targets.yaml", {"servers": [_server(lab, None)]})
    run = run_suite(targets, "--collect-only", "-q", workdir=tmp_path)
    assert run.collected_ids(), run.describe()
    assert not [i for i in run.collected_ids() if "coverage" in i], run.describe()


def test_published_but_unmonitored_via_srv(lab: DovecotLab, tmp_path: Path) -> None:
    spare = _spare(lab, "pop3s")
    srv = [
        Srv(f"_pop3s._tcp.{ZONE}", MAIL, spare),
        Srv(f"_pop3._tcp.{ZONE}"),  # "." : not offered
    ]
    try:
        dns = DnsLab(zones=[ZONE], srv=srv, hosts={MAIL: "127.0.0.1"})
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    with dns.start():
        coverage = {"domain": ZONE, "nameserver": dns.nameserver, "ports": []}
        run = _run(tmp_path, _server(lab, coverage, host=MAIL))
    case = run.case("coverage_published", "server:mail")
    assert case.verdict == "WARN", run.describe()
    assert f"{MAIL}:{spare}" in case.reason and f"_pop3s._tcp.{ZONE}" in case.reason
    assert "published but unmonitored" in case.reason


class _Autoconfig(http.server.ThreadingHTTPServer):
    """A real HTTP server answering every GET with one autoconfig document."""

    def __init__(self, document: str) -> None:
        body = document.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = int(self.server_address[1])
        threading.Thread(target=self.serve_forever, daemon=True).start()


def _incoming(port: int, socket_type: str) -> str:
    return (
        f'<incomingServer type="pop3"><hostname>{MAIL}</hostname><port>{port}</port>'
        f"<socketType>{socket_type}</socketType>"
        "<authentication>password-cleartext</authentication>"
        "<username>%EMAILADDRESS%</username></incomingServer>"
    )


def test_autoconfig_against_reality(lab: DovecotLab, tmp_path: Path) -> None:
    with FaultServer("no-stls") as fault:
        document = (
            '<?xml version="1.0"?><clientConfig version="1.1">'
            f'<emailProvider id="{ZONE}"><domain>{ZONE}</domain>'
            # SSL on Dovecot, whose certificate is for localhost, not mail.example.test.
            + _incoming(lab.port("pop3s"), "SSL")
            # STARTTLS on a server whose CAPA has no STLS.
            + _incoming(fault.port, "STARTTLS")
            + "</emailProvider></clientConfig>"
        )
        web = _Autoconfig(document)
        try:
            dns = DnsLab(zones=[ZONE], hosts={MAIL: "127.0.0.1", f"autoconfig.{ZONE}": "127.0.0.1"})
        except LabUnavailable as exc:
            pytest.skip(str(exc))
        try:
            with dns.start():
                server = _server(lab, None, host=MAIL)
                server["connections"].append({"port": fault.port, "security": "none"})
                server["coverage"] = {
                    "domain": ZONE,
                    "nameserver": dns.nameserver,
                    "autoconfig_port": web.port,
                    "ports": [],
                }
                run = _run(tmp_path, server)
        finally:
            web.shutdown()
            web.server_close()
    case = run.case("coverage_autoconfig", "server:mail")
    assert case.verdict == "CRIT", run.describe()
    assert f"STARTTLS on {MAIL}:{fault.port}, but STLS is not offered" in case.reason
    assert f"implicit TLS on {MAIL}:{lab.port('pop3s')}, but its certificate fails" in case.reason
    # Both advertised connection types are monitored: nothing unmonitored is published.
    assert run.case("coverage_published", "server:mail").verdict == "OK", run.describe()


def test_config_bad_coverage_value_is_one_line(tmp_path: Path) -> None:
    from pop3mon.config import ConfigError

    path = tmp_path / "targets.yaml"
    path.write_text(
        "servers:\n  - name: m\n    host: m.example\n    coverage:\n      unmonitored: loud\n"
        "    connections:\n      - {port: 995, security: tls, auth: none}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    assert len(info.value.problems) == 1
    line = info.value.problems[0]
    assert f"{path}:5: servers[0].coverage.unmonitored: 'loud' is not one of warn, crit" in line


def test_rules_json_round_trip_of_a_discovery(lab: DovecotLab, tmp_path: Path) -> None:
    # What xdist workers share through the run directory judges the same as the original.
    from pop3mon.engine.discovery import discover
    from pop3mon.probestore import discovery_from_json, discovery_to_json

    targets = write_targets(
        tmp_path / "t.yaml", {"servers": [_server(lab, {"ports": [_spare(lab, "pop3")]})]}
    )
    cov = load_targets(targets).coverage[0]
    found = discover(cov.to_spec())
    again = discovery_from_json(discovery_to_json(found))
    assert again == found
    assert coverage_check(cov, again, "coverage-unmonitored").verdict == "CRIT"
    assert json.loads(discovery_to_json(found))["offered"]


# -- a coverage check that could not look is never OK -----------------------------------------
def test_a_dns_server_that_drops_queries_is_could_not_check(
    lab: DovecotLab, tmp_path: Path
) -> None:
    """The domain's DNS server never answers (a real UDP socket that reads nothing): SRV,
    autoconfig and the server's own host name are unknown, so every coverage check WARNs
    "could not check" instead of calling an empty result OK."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as drop:
        drop.bind(("127.0.0.1", 0))
        nameserver = f"127.0.0.1:{drop.getsockname()[1]}"
        coverage = {"domain": ZONE, "nameserver": nameserver, "ports": []}
        run = _run(tmp_path, _server(lab, coverage, host=MAIL))
    for test, said in (
        ("coverage_published", f"SRV _pop3._tcp.{ZONE}"),
        ("coverage_autoconfig", "autoconfig"),
        ("coverage_unmonitored", f"POP3 {MAIL}:110"),
    ):
        case = run.case(test, "server:mail")
        assert case.verdict == "WARN", (test, run.describe())
        assert case.reason.startswith("could not check: "), case.reason
        assert said in case.reason, case.reason


def test_published_smtp_is_probed_and_judged(
    lab: DovecotLab, postfix: PostfixLab, lab_certs: LabCerts, tmp_path: Path
) -> None:
    """Published submission entries (SRV, autoconfig outgoingServer) are probed with EHLO,
    STARTTLS and QUIT only and judged against the targets' ``smtp:`` connection types:
    unmonitored, published but failing, advertised STARTTLS that EHLO does not offer."""
    closed = _closed_port()
    with FaultServer(
        "smtp-no-starttls", certfile=lab_certs.valid.cert, keyfile=lab_certs.valid.key
    ) as fault:
        srv = [
            Srv(f"_submission._tcp.{ZONE}", MAIL, postfix.port("smtp")),
            Srv(f"_submission._tcp.{ZONE}", MAIL, closed, 1),
            Srv(f"_submissions._tcp.{ZONE}", MAIL, postfix.port("smtps")),
        ]
        document = (
            '<?xml version="1.0"?><clientConfig version="1.1">'
            f'<emailProvider id="{ZONE}"><domain>{ZONE}</domain>'
            f'<outgoingServer type="smtp"><hostname>{MAIL}</hostname><port>{fault.port}</port>'
            "<socketType>STARTTLS</socketType></outgoingServer>"
            "</emailProvider></clientConfig>"
        )
        web = _Autoconfig(document)
        try:
            dns = DnsLab(
                zones=[ZONE], srv=srv, hosts={MAIL: "127.0.0.1", f"autoconfig.{ZONE}": "127.0.0.1"}
            )
        except LabUnavailable as exc:
            pytest.skip(str(exc))
        try:
            with dns.start():
                server = _server(lab, None, host=MAIL)
                server["smtp"] = [
                    {"port": postfix.port("smtp"), "security": "starttls"},
                    {"port": closed, "security": "starttls"},
                    {"port": fault.port, "security": "none"},
                ]
                server["coverage"] = {
                    "domain": ZONE,
                    "nameserver": dns.nameserver,
                    "autoconfig_port": web.port,
                    "ports": [],
                }
                run = _run(tmp_path, server)
        finally:
            web.shutdown()
            web.server_close()
        fault.wait_idle()
        verbs = {v for v in fault.commands() if v.isalpha()}
    assert verbs and verbs <= {"EHLO", "STARTTLS", "QUIT"}, verbs
    assert fault.logins == 0
    published = run.case("coverage_published", "server:mail")
    assert published.verdict == "WARN", run.describe()
    assert f"published but unmonitored: SMTP {MAIL}:{postfix.port('smtps')}" in published.reason
    assert f"published but failing: SMTP {MAIL}:{closed}" in published.reason
    assert f"{MAIL}:{postfix.port('smtp')} " not in published.reason  # monitored, answers
    auto = run.case("coverage_autoconfig", "server:mail")
    assert auto.verdict == "CRIT", run.describe()
    assert f"SMTP STARTTLS on {MAIL}:{fault.port}, but STARTTLS is not offered (EHLO:" in (
        auto.reason
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- xdist: one discovery per server and run, shared through the run directory ---------------
def test_xdist_discovers_each_server_once_with_the_same_findings(
    lab: DovecotLab, tmp_path: Path
) -> None:
    zones = ("a.test", "b.test")
    srv = [Srv(f"_pop3s._tcp.{z}", f"mail.{z}", _spare(lab, "pop3s")) for z in zones]
    try:
        dns = DnsLab(zones=list(zones), srv=srv, hosts={f"mail.{z}": "127.0.0.1" for z in zones})
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    findings: dict[str, dict[str, tuple[str, str]]] = {}
    with dns.start():
        servers = []
        for z in zones:
            coverage = {
                "domain": z,
                "nameserver": dns.nameserver,
                "ports": [],
                "autoconfig_port": 1,
            }
            server = _server(lab, coverage, host=f"mail.{z}")
            server["name"] = f"mail-{z[0]}"
            servers.append(server)
        targets = write_targets(tmp_path / "targets.yaml", {"servers": servers})
        for workers in ("0", "2"):
            before = dns.queries()
            run = run_suite(targets, "-m", "coverage", "-n", workers, workdir=tmp_path / workers)
            log = dns.queries()[len(before) :]
            for z in zones:
                asked = log.count(f"query[SRV] _pop3s._tcp.{z} ")
                assert asked == 1, (workers, z, log)
            findings[workers] = {
                c.nodeid: (c.verdict, c.reason)
                for c in run.cases.values()
                if "coverage" in c.nodeid
            }
            assert len(findings[workers]) == 6, run.describe()
    assert findings["2"] == findings["0"]
    published = [v for k, v in findings["2"].items() if "coverage_published" in k]
    assert all(v[0] == "WARN" and "published but unmonitored" in v[1] for v in published)


def test_a_named_port_that_never_answers_is_could_not_check(
    lab: DovecotLab, tmp_path: Path
) -> None:
    """A port of the server's own host that accepts and stays silent until the deadline
    (the fault server's ``no-greeting``) is unknown, not "nothing there": WARN "could not
    check", never an OK "no POP3 connection type answers"."""
    with FaultServer("no-greeting") as silent:
        run = _run(tmp_path, _server(lab, {"ports": [silent.port]}, host="127.0.0.1"))
    case = run.case("coverage_unmonitored", "server:mail")
    assert case.verdict == "WARN", run.describe()
    assert "could not check" in case.reason and f"127.0.0.1:{silent.port}" in case.reason
