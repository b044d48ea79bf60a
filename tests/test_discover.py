"""Discovery (issue 15): SRV records from a real DNS server (dnsmasq), the client autoconfig
document from a real HTTP server, and a port probe of real Dovecot listeners and the fault
server, all on loopback.

The test zone ``example.test``:

* ``_pop3._tcp`` → mail1 : Dovecot ``valid`` plaintext/STLS port; ``_pop3s._tcp`` → mail1 :
  Dovecot ``valid`` implicit-TLS port; ``_submission._tcp`` is "." (not offered);
  ``_submissions._tcp`` → mail2 : 465 (published, probed with EHLO/STARTTLS/QUIT: nothing
  listens there on loopback);
* autoconfig (``autoconfig.example.test``): POP3 on mail2 at Dovecot's ``wrong_host``
  implicit-TLS port (certificate for another name), SMTP on mail2 : 587 STARTTLS;
* an unpublished Dovecot listener (the ``hidden`` instance's plaintext port), found only by
  the port probe (``ports=``).
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pop3mon.config import load_targets
from pop3mon.config.draft import draft_yaml
from pop3mon.engine import autoconfig as ac
from pop3mon.engine.discovery import (
    GREETING_WAIT_FLOOR,
    Discovery,
    DiscoverySpec,
    discover,
    probe_port,
)
from pop3mon.engine.wire import Deadline

from pop3mon_lab.autoconfig_http import (
    AUTOCONFIG_PATH,
    WELLKNOWN_PATH,
    AutoconfigServer,
    config_xml,
)
from pop3mon_lab.certs import LabCerts, generate_lab_certs
from pop3mon_lab.dnsmasq import DnsLab, Srv
from pop3mon_lab.dovecot import DovecotLab, LabUnavailable
from pop3mon_lab.faultserver import FaultServer
from pop3mon_lab.postfix import PostfixLab

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ZONE = "example.test"
MAIL1 = f"mail1.{ZONE}"
MAIL2 = f"mail2.{ZONE}"


def _strict() -> bool:
    return os.environ.get("POP3MON_REQUIRE_DOVECOT", "") not in ("", "0")


def _unavailable(why: object) -> None:
    if _strict():
        pytest.fail(f"POP3MON_REQUIRE_DOVECOT is set but {why}", pytrace=False)
    pytest.skip(str(why))


@dataclass
class Zone:
    """The started lab: Dovecot, dnsmasq and the autoconfig HTTP server."""

    lab: DovecotLab
    dns: DnsLab
    http: AutoconfigServer
    certs: LabCerts

    @property
    def plain(self) -> int:
        return self.lab.port("pop3")

    @property
    def tls(self) -> int:
        return self.lab.port("pop3s")

    @property
    def wrong(self) -> int:
        return self.lab.port("pop3s", "wrong_host")

    @property
    def hidden(self) -> int:
        return self.lab.port("pop3", "hidden")

    def spec(self, **kw: object) -> DiscoverySpec:
        base: dict[str, object] = {
            "domain": ZONE,
            "ports": (self.hidden,),
            "tls_ports": (),
            "nameserver": self.dns.nameserver,
            "autoconfig_port": self.http.port,
            "autoconfig_schemes": ("http",),
            "timeout": 15.0,
            "ca_file": str(self.certs.ca_file),
        }
        base.update(kw)
        return DiscoverySpec(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zone]:
    certs = generate_lab_certs(
        tmp_path_factory.mktemp("zone-certs"), hostname=MAIL1, extra_names=[MAIL2]
    )
    try:
        lab = DovecotLab(
            certs,
            variants=("wrong_host",),
            extra_instances={"hidden": "valid"},
            workdir=tmp_path_factory.mktemp("zone-dovecot"),
        )
    except LabUnavailable as exc:
        _unavailable(exc)
    with lab:
        records = [
            Srv(f"_pop3._tcp.{ZONE}", MAIL1, lab.port("pop3")),
            Srv(f"_pop3s._tcp.{ZONE}", MAIL1, lab.port("pop3s")),
            Srv(f"_submission._tcp.{ZONE}"),
            Srv(f"_submissions._tcp.{ZONE}", MAIL2, 465),
            Srv(f"_pop3._tcp.dot.{ZONE}"),
            Srv(f"_pop3s._tcp.dot.{ZONE}"),
        ]
        hosts = {
            MAIL1: "127.0.0.1",
            MAIL2: "127.0.0.1",
            f"autoconfig.{ZONE}": "127.0.0.1",
            ZONE: "127.0.0.1",
        }
        document = config_xml(
            ZONE,
            incoming=[("mail2.%EMAILDOMAIN%", lab.port("pop3s", "wrong_host"), "SSL")],
            outgoing=[(MAIL2, 587, "STARTTLS")],
        )
        try:
            dns = DnsLab(zones=[ZONE], srv=records, hosts=hosts)
        except LabUnavailable as exc:
            _unavailable(exc)
        with dns, AutoconfigServer({AUTOCONFIG_PATH: document}) as http:
            yield Zone(lab, dns, http, certs)


def _offered(found: Discovery, host: str, port: int) -> object:
    matches = [o for o in found.offered if o.host == host and o.port == port]
    assert len(matches) == 1, found.offered
    return matches[0]


def test_discovery_finds_published_and_offered_connection_types(zone: Zone) -> None:
    found = discover(zone.spec())
    published = {(p.source, p.protocol, p.host, p.port, p.security) for p in found.published}
    assert published == {
        ("srv", "pop3", MAIL1, zone.plain, "starttls"),
        ("srv", "pop3", MAIL1, zone.tls, "tls"),
        ("srv", "smtp", MAIL2, 465, "tls"),
        ("autoconfig", "pop3", MAIL2, zone.wrong, "tls"),
        ("autoconfig", "smtp", MAIL2, 587, "starttls"),
    }
    auto = next(p for p in found.published if p.source == "autoconfig" and p.protocol == "pop3")
    assert auto.authentication == "password-cleartext"
    assert auto.where == f"http://autoconfig.{ZONE}:{zone.http.port}{AUTOCONFIG_PATH}"
    assert found.hosts == (MAIL1, MAIL2)

    # STLS offered on the plaintext port, with USER / SASL PLAIN offered before TLS
    # (Dovecot counts loopback as secured), and the certificate verified for mail1.
    plain = _offered(found, MAIL1, zone.plain)
    assert plain.answered and plain.stls_offered and plain.security == "starttls"
    assert "USER" in plain.cleartext_login_before_tls
    assert "SASL PLAIN" in plain.cleartext_login_before_tls
    assert plain.tls_ok is True and plain.error is None

    tls = _offered(found, MAIL1, zone.tls)
    assert tls.answered and tls.security == "tls" and tls.tls_ok is True
    assert tls.cleartext_login_before_tls == ()

    # The autoconfig's POP3 port answers, but its certificate is for another name.
    wrong = _offered(found, MAIL2, zone.wrong)
    assert wrong.answered and wrong.tls_ok is False
    assert wrong.error is not None and "certificate does not match" in wrong.error

    # The unpublished listener is found by the port probe on both hosts.
    for host in (MAIL1, MAIL2):
        assert _offered(found, host, zone.hidden).answered
    assert found.found


def test_a_dot_target_means_not_offered(zone: Zone) -> None:
    found = discover(zone.spec(domain=f"dot.{ZONE}", autoconfig_port=None, timeout=3.0))
    assert found.published == ()
    assert found.hosts == ()
    assert any("no host to probe" in p for p in found.problems)
    assert not found.found


def test_autoconfig_missing_404_and_hostile(zone: Zone, tmp_path: Path) -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><clientConfig>&b;</clientConfig>'
    )
    huge = b"<clientConfig>" + b" " * (ac.MAX_DOCUMENT + 10) + b"</clientConfig>"
    docs: dict[str, bytes | int] = {AUTOCONFIG_PATH: bomb, WELLKNOWN_PATH: 404}
    with AutoconfigServer(docs) as http:
        found = discover(zone.spec(autoconfig_port=http.port, hosts=(), ports=(), timeout=5.0))
        problems = " | ".join(found.problems)
        assert "DOCTYPE" in problems
        assert "HTTP 404" in problems
        assert not any(p.source.startswith("autoconfig") for p in found.published)
    with AutoconfigServer({AUTOCONFIG_PATH: huge, WELLKNOWN_PATH: 301}) as http:
        found = discover(zone.spec(autoconfig_port=http.port, ports=(), timeout=5.0))
        problems = " | ".join(found.problems)
        assert "larger than" in problems
        assert "redirect" in problems and "not followed" in problems
    # Nothing listens: the fetch fails, SRV still answers.
    found = discover(zone.spec(autoconfig_port=1, ports=(), timeout=5.0))
    assert any(p.startswith("autoconfig:") for p in found.problems)
    assert any(p.source == "srv" for p in found.published)


def test_autoconfig_parse_placeholders_and_bad_entries() -> None:
    doc = config_xml(
        "ex.test",
        incoming=[("pop.%EMAILDOMAIN%", 995, "SSL"), ("%BOGUS%.ex.test", 110, "plain")],
        outgoing=[("smtp.ex.test", 99999, "SSL")],
    )
    servers, problems = ac.parse(doc, "ex.test", "a@ex.test")
    assert [(s.host, s.port, s.security, s.username) for s in servers] == [
        ("pop.ex.test", 995, "tls", "a@ex.test")
    ]
    assert len(problems) == 2
    assert ac.parse(b"<clientConfig>", "ex.test", None)[1][0].startswith("not well-formed")


def test_only_capa_stls_quit_are_sent(lab_certs: LabCerts) -> None:
    for scenario in ("healthy", "no-stls"):
        with FaultServer(
            scenario, certfile=lab_certs.valid.cert, keyfile=lab_certs.valid.key
        ) as srv:
            found = discover(
                DiscoverySpec(
                    domain=None,
                    hosts=("127.0.0.1",),
                    ports=(srv.port,),
                    tls_ports=(),
                    timeout=5.0,
                    ca_file=str(lab_certs.ca_file),
                )
            )
            srv.wait_idle()
            assert set(srv.commands()) <= {"CAPA", "STLS", "QUIT"}, srv.commands()
            assert srv.logins == 0
            (offered,) = found.offered
            assert offered.answered
            if scenario == "no-stls":
                # Cleartext login before TLS on a plaintext port that offers USER.
                assert not offered.stls_offered and offered.security == "none"
                assert "USER" in offered.cleartext_login_before_tls
            else:
                assert offered.stls_offered and "STLS" in srv.commands()


def test_one_deadline_bounds_a_dripping_server(lab_certs: LabCerts) -> None:
    with FaultServer("drip-greeting", drip_interval=0.2) as srv:
        start = time.monotonic()
        found = discover(
            DiscoverySpec(domain=None, hosts=("127.0.0.1",), ports=(srv.port, 995), timeout=2.0)
        )
        assert time.monotonic() - start < 2.0 + 1.0
    drip = next(o for o in found.offered if o.port == srv.port)
    assert not drip.answered and drip.error


def test_dripping_autoconfig_is_bounded_by_the_deadline(zone: Zone) -> None:
    with AutoconfigServer({AUTOCONFIG_PATH: b"x" * 200}, drip=0.05) as http:
        start = time.monotonic()
        found = discover(zone.spec(autoconfig_port=http.port, ports=(), timeout=2.0))
        assert time.monotonic() - start < 2.0 + 1.0
    assert any("autoconfig" in p for p in found.problems)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``pop3mon`` of this checkout (not an installed copy), as a subprocess."""
    code = "import sys; from pop3mon.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
    )


def test_the_draft_loads_and_says_where_each_connection_was_found(
    zone: Zone, tmp_path: Path
) -> None:
    found = discover(zone.spec())
    text = draft_yaml(found, ca_file=str(zone.certs.ca_file))
    path = tmp_path / "draft.yaml"
    path.write_text(text, encoding="utf-8")
    targets = load_targets(path)
    by_port = {(ct.host, ct.port): ct for ct in targets.connections}
    assert by_port[(MAIL1, zone.plain)].security == "starttls"
    assert by_port[(MAIL1, zone.tls)].security == "tls"
    assert by_port[(MAIL2, zone.wrong)].security == "tls"
    assert (MAIL1, zone.hidden) in by_port
    assert f"# found: SRV _pop3s._tcp.{ZONE} SRV 0 1 {zone.tls} {MAIL1}." in text
    assert f"# found: autoconfig http://autoconfig.{ZONE}:{zone.http.port}" in text
    assert f"port probe {zone.hidden} (CAPA:" in text
    assert "# WARNING: CLEARTEXT LOGIN BEFORE TLS: offers SASL PLAIN, SASL LOGIN, USER" in text
    assert "# WARNING: TLS not verified: certificate does not match" in text
    assert "password_env: POP3MON_PASSWORD" in text
    assert "smtp:" in text and "port: 587" in text


def test_readme_discover_commands(zone: Zone, tmp_path: Path) -> None:
    """The README's `pop3mon discover` commands, run against the lab zone: example.com
    becomes the test zone, the standard ports the lab's, and the lab's DNS server,
    autoconfig port and CA are added."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Discovering connection types", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("pop3mon discover ")]
    assert len(lines) == 3, lines
    for line in lines:
        argv = shlex.split(line)[1:]
        argv = [
            a.replace("example.com", ZONE)
            .replace("--port=110", f"--port={zone.plain}")
            .replace("--port=995", f"--tls-port={zone.tls}")
            for a in argv
        ]
        argv += [
            f"--nameserver={zone.dns.nameserver}",
            f"--autoconfig-port={zone.http.port}",
            f"--ca-file={zone.certs.ca_file}",
            "--timeout=15",
        ]
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; from pop3mon.cli import main; sys.exit(main())",
             *argv],
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        )  # fmt: skip
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
        assert "PROTO  HOST" in proc.stdout or "--output" in line, proc.stdout
        assert "the draft does not load" not in proc.stdout
        if "--output=" in line:
            load_targets(tmp_path / "discovered-targets.yaml")
    assert "CLEARTEXT LOGIN BEFORE TLS" in proc.stdout


def test_discover_usage_and_nothing_found(zone: Zone) -> None:
    assert _cli("discover").returncode == 2
    assert _cli("discover", "--host=x", "--timeout=0").returncode == 2
    assert _cli("discover", "--host=x", "--nameserver=nonsense").returncode == 2
    nothing = _cli(
        "discover", f"dot.{ZONE}", f"--nameserver={zone.dns.nameserver}", "--timeout=3",
        "--autoconfig-port=1",
    )  # fmt: skip
    assert nothing.returncode == 1, nothing.stdout
    assert "Traceback" not in nothing.stderr
    # Nothing found is said as such: no empty draft, no "the draft does not load".
    assert "nothing found, so no targets.yaml draft" in nothing.stderr, nothing.stderr
    assert "does not load" not in nothing.stdout + nothing.stderr
    assert "version: 1" not in nothing.stdout


def test_a_silent_port_of_unknown_security_is_tried_with_implicit_tls(
    lab_certs: LabCerts,
) -> None:
    with FaultServer(
        "healthy", certfile=lab_certs.valid.cert, keyfile=lab_certs.valid.key, implicit_tls=True
    ) as srv:
        found = discover(
            DiscoverySpec(
                domain=None,
                hosts=("localhost",),
                ports=(srv.port,),
                tls_ports=(),
                timeout=8.0,
                ca_file=str(lab_certs.ca_file),
            )
        )
        srv.wait_idle()
        assert set(srv.commands()) <= {"CAPA", "STLS", "QUIT"}, srv.commands()
    (offered,) = found.offered
    assert offered.answered and offered.security == "tls" and offered.tls_ok, offered


# -- what could not be looked at (issue 15 fix: failures are not "nothing published") --------
def _parts(found: Discovery) -> set[str]:
    return {f.part for f in found.failures}


def test_a_dns_server_that_drops_queries_is_a_failure(zone: Zone) -> None:
    """A DNS server that never answers (a real UDP socket that reads nothing) is "could not
    look", and the SRV/autoconfig look-ups leave the port probes of the named host time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as drop:
        drop.bind(("127.0.0.1", 0))
        start = time.monotonic()
        found = discover(
            zone.spec(hosts=("127.0.0.1",), ports=(zone.plain,), nameserver=_ns(drop), timeout=4.0)
        )
        assert time.monotonic() - start < 4.0 + 1.0
    assert _parts(found) == {"srv", "autoconfig"}, found.failures
    assert any("_pop3._tcp" in f.reason for f in found.failures)
    # Every failure is also a problem (the table and the draft show it).
    assert {f.reason for f in found.failures} <= set(found.problems)
    assert _offered(found, "127.0.0.1", zone.plain).answered


def test_a_stopped_dns_server_is_a_failure_nxdomain_is_not(zone: Zone) -> None:
    dns = DnsLab(zones=[ZONE])
    with dns:
        nameserver = dns.nameserver
    # dnsmasq stopped: nothing listens on its port any more.
    found = discover(zone.spec(ports=(), nameserver=nameserver, timeout=3.0))
    assert "srv" in _parts(found), found.problems
    # A domain under the zone that publishes nothing: NXDOMAIN for every SRV name and for
    # both autoconfig hosts means "nothing published", not "could not look".
    found = discover(zone.spec(domain=f"empty.{ZONE}", ports=(), timeout=5.0))
    assert found.failures == (), found.failures
    assert found.published == ()


def test_autoconfig_not_there_versus_failing(zone: Zone) -> None:
    """Thunderbird's reading: 404 (and 3xx, and a refused connection) says no document is
    published there; a 5xx or a server that does not answer is a failure to look."""
    with AutoconfigServer({AUTOCONFIG_PATH: 404, WELLKNOWN_PATH: 301}) as http:
        found = discover(zone.spec(autoconfig_port=http.port, ports=(), timeout=5.0))
    assert "autoconfig" not in _parts(found), found.failures
    found = discover(zone.spec(autoconfig_port=1, ports=(), timeout=5.0))  # refused
    assert "autoconfig" not in _parts(found), found.failures
    with AutoconfigServer({AUTOCONFIG_PATH: 503, WELLKNOWN_PATH: 404}) as http:
        found = discover(zone.spec(autoconfig_port=http.port, ports=(), timeout=5.0))
    assert "autoconfig" in _parts(found), found.problems
    assert any("HTTP 503" in f.reason for f in found.failures)
    # One location serving the document: a client gets it, the other's failure hides nothing.
    document = config_xml(ZONE, incoming=[(MAIL1, zone.tls, "SSL")])
    with AutoconfigServer({AUTOCONFIG_PATH: document, WELLKNOWN_PATH: 503}) as http:
        found = discover(zone.spec(autoconfig_port=http.port, ports=(), timeout=5.0))
    assert "autoconfig" not in _parts(found), found.failures


def _ns(sock: socket.socket) -> str:
    return f"127.0.0.1:{sock.getsockname()[1]}"


# -- published SMTP entries are probed, EHLO/STARTTLS/QUIT only ------------------------------
def test_smtp_probe_sends_only_ehlo_starttls_quit(lab_certs: LabCerts) -> None:
    for scenario in ("smtp-healthy", "smtp-no-starttls"):
        with FaultServer(
            scenario, certfile=lab_certs.valid.cert, keyfile=lab_certs.valid.key
        ) as srv:
            offered = probe_port(
                "localhost",
                srv.port,
                "starttls",
                protocol="smtp",
                deadline=Deadline(5.0),
                ca_file=str(lab_certs.ca_file),
            )
            srv.wait_idle()
            verbs = {v for v in srv.commands() if v.isalpha()}
        assert verbs <= {"EHLO", "STARTTLS", "QUIT"}, verbs
        assert srv.logins == 0
        assert offered.protocol == "smtp" and offered.answered, offered
        if scenario == "smtp-healthy":
            assert "STARTTLS" in verbs
            assert offered.stls_offered and offered.security == "starttls" and offered.tls_ok
        else:
            assert not offered.stls_offered and offered.security == "none"


def test_smtp_probe_of_postfix(postfix: PostfixLab) -> None:
    ca = str(postfix.ca_file)
    starttls = probe_port(
        "localhost", postfix.port("smtp"), "starttls", protocol="smtp",
        deadline=Deadline(8.0), ca_file=ca,
    )  # fmt: skip
    assert starttls.answered and starttls.security == "starttls" and starttls.tls_ok, starttls
    implicit = probe_port(
        "localhost", postfix.port("smtps"), "tls", protocol="smtp",
        deadline=Deadline(8.0), ca_file=ca,
    )  # fmt: skip
    assert implicit.answered and implicit.security == "tls" and implicit.tls_ok, implicit


# -- the greeting wait of a port of unknown security -----------------------------------------
def test_an_implicit_tls_port_of_unknown_security_fits_a_short_deadline(
    lab_certs: LabCerts,
) -> None:
    """On loopback the wait for a plaintext greeting is the floor (0.5 s), not 2 s: an
    implicit-TLS port of unknown security is found within a 1.8 s deadline."""
    with FaultServer(
        "healthy", certfile=lab_certs.valid.cert, keyfile=lab_certs.valid.key, implicit_tls=True
    ) as srv:
        found = discover(
            DiscoverySpec(
                domain=None,
                hosts=("localhost",),
                ports=(srv.port,),
                tls_ports=(),
                timeout=1.8,
                ca_file=str(lab_certs.ca_file),
            )
        )
    (offered,) = found.offered
    assert offered.answered and offered.security == "tls" and offered.tls_ok, offered


def test_a_plaintext_greeting_slower_than_the_wait_is_still_plaintext(
    lab_certs: LabCerts,
) -> None:
    """A plaintext server greeting after the short wait answers the ClientHello in
    plaintext: the port is probed in plaintext again and found to be POP3 with STLS."""
    with FaultServer(
        "slow-greeting",
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
        drip_interval=GREETING_WAIT_FLOOR + 0.4,
    ) as srv:
        found = discover(
            DiscoverySpec(
                domain=None,
                hosts=("localhost",),
                ports=(srv.port,),
                tls_ports=(),
                timeout=8.0,
                ca_file=str(lab_certs.ca_file),
            )
        )
        srv.wait_idle()
        assert {v for v in srv.commands() if v.isalpha()} <= {"CAPA", "STLS", "QUIT"}
    (offered,) = found.offered
    assert offered.answered and offered.security == "starttls" and offered.tls_ok, offered


# -- review of issue 15: named hosts are probed from the start; hostile documents are capped --
def _big_drip() -> AutoconfigServer:
    """An autoconfig server that drips its document one byte a second (a slow or
    blackholed web server as the user meets it)."""
    return AutoconfigServer({AUTOCONFIG_PATH: b"x" * 200, WELLKNOWN_PATH: b"x" * 200}, drip=1.0)


def test_named_hosts_are_probed_while_autoconfig_drips(zone: Zone) -> None:
    """The host the user named is probed from the start, beside the SRV and autoconfig
    look-ups: a server that greets only after 2.8 s of a 4 s deadline still answers while
    the autoconfig server drips for the whole look-up share of the deadline."""
    with (
        FaultServer(
            "slow-greeting",
            certfile=zone.certs.valid.cert,
            keyfile=zone.certs.valid.key,
            implicit_tls=True,
            drip_interval=2.8,
        ) as slow,
        _big_drip() as http,
    ):
        start = time.monotonic()
        found = discover(
            zone.spec(
                autoconfig_port=http.port,
                hosts=(MAIL1, "127.0.0.1"),
                ports=(slow.port, 1),
                tls_ports=(slow.port,),
                timeout=4.0,
            )
        )
        assert time.monotonic() - start < 4.0 + 1.0
    assert any("autoconfig" in p for p in found.problems)
    slow_one = _offered(found, MAIL1, slow.port)
    assert slow_one.answered, slow_one  # type: ignore[attr-defined]
    refused = _offered(found, "127.0.0.1", 1)
    assert refused.error_kind == "connection-refused", refused  # type: ignore[attr-defined]


def test_discover_command_lists_the_named_port_beside_a_dripping_autoconfig(zone: Zone) -> None:
    """The reviewer's reproduction: `discover DOMAIN --host=127.0.0.1 --port=1` with an
    autoconfig server dripping a byte a second lists 127.0.0.1:1 (refused) within the
    deadline; a refused port's TLS column is "-", not FAIL."""
    with _big_drip() as http:
        run = _cli(
            "discover",
            ZONE,
            "--host=127.0.0.1",
            "--port=1",
            "--timeout=4",
            f"--nameserver={zone.dns.nameserver}",
            f"--autoconfig-port={http.port}",
            "--format=table",
        )
    rows = [line.split() for line in run.stdout.splitlines()]
    mine = [r for r in rows if r[:3] == ["pop3", "127.0.0.1", "1"]]
    assert len(mine) == 1, run.stdout
    assert mine[0][3:8] == ["-", "port", "no", "-", "-"], run.stdout
    assert "refused" in " ".join(mine[0][8:]), run.stdout
    # The published SMTP submissions port on mail2 (465, nothing listens): refused before
    # any TLS, so its TLS column is "-" and its note the connect error, not "TLS not verified".
    smtp = next(r for r in rows if r[:3] == ["smtp", MAIL2, "465"])
    assert smtp[7] == "-" and "TLS not verified" not in " ".join(smtp), run.stdout
    assert "refused" in " ".join(smtp[8:]), run.stdout


def test_a_port_that_never_answers_is_a_failure_not_nothing_there(lab_certs: LabCerts) -> None:
    """A named port that neither answers nor refuses by the deadline (a server that
    accepts and stays silent) is "could not look", not "nothing listens there"."""
    with FaultServer("no-greeting") as srv:
        found = discover(
            DiscoverySpec(domain=None, hosts=("127.0.0.1",), ports=(srv.port,), timeout=2.0)
        )
    (failure,) = found.failures
    assert failure.part == "probe"
    assert f"127.0.0.1:{srv.port}" in failure.reason and "deadline" in failure.reason
    assert failure.reason in found.problems or found.failed("probe")


def _providers(count: int) -> bytes:
    providers = "".join(
        f'<emailProvider id="p{i}"><incomingServer type="pop3">'
        f"<hostname>h{i}.{ZONE}</hostname><port>995</port><socketType>SSL</socketType>"
        "</incomingServer></emailProvider>"
        for i in range(count)
    )
    return f'<?xml version="1.0"?><clientConfig version="1.1">{providers}</clientConfig>'.encode()


def test_autoconfig_server_cap_holds_across_providers() -> None:
    servers, problems = ac.parse(_providers(1000), ZONE, None)
    assert len(servers) == 32
    assert len(problems) == 1 and "1000" in problems[0] and "968 ignored" in problems[0]
    bad = _providers(1000).replace(b"<port>995</port>", b"<port>x</port>")
    servers, problems = ac.parse(bad, ZONE, None)
    assert servers == () and len(problems) <= 8, problems
    assert "more" in problems[-2] or "more" in problems[-1], problems


def test_a_thousand_providers_keep_the_output_small(zone: Zone, tmp_path: Path) -> None:
    """A hostile document of 1,000 <emailProvider> elements, served over real HTTP: at most
    32 published entries, 8 hosts probed, short problem lines, and the entries over the
    host limit say so."""
    with AutoconfigServer({AUTOCONFIG_PATH: _providers(1000)}) as http:
        found = discover(zone.spec(autoconfig_port=http.port, ports=(), timeout=6.0))
        draft = tmp_path / "draft.yaml"
        run = _cli(
            "discover",
            ZONE,
            "--timeout=6",
            f"--nameserver={zone.dns.nameserver}",
            f"--autoconfig-port={http.port}",
            f"--output={draft}",
        )
    autoconfig = [p for p in found.published if p.source == "autoconfig"]
    # SRV's entries first, then the document's, 32 in all.
    assert len(autoconfig) > 20 and len(found.published) == 32
    assert len(found.hosts) == 8
    assert all(len(p) < 400 for p in found.problems), found.problems
    assert any("… and" in p and "more" in p for p in found.problems), found.problems
    assert run.stdout.count("\n") < 80, run.stdout
    assert "over the 8-host limit" in run.stdout, run.stdout
    assert "(SMTP)" not in run.stdout
    assert draft.read_text().count("- name:") <= 32
    load_targets(str(draft))
