"""``address_family: auto | ipv4 | ipv6``: config, resolution, RFC 8305 racing, on ``::1``.

Real sockets only: the fault server and a Dovecot listen on ``::1`` and/or 127.0.0.1. A
"silent" address (SYNs go unanswered, as from a blackholed route) is a loopback listener
whose accept queue is full. Names come from the machine's own resolver: which loopback
names resolve to which family differs between machines (this one may map ``localhost`` to
127.0.0.1 only, Debian also to ``::1``), so those tests pick a fitting name or skip saying
why. Tests needing ``::1`` skip when this machine has no IPv6 loopback.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pop3mon.checks import connectivity
from pop3mon.config import load_targets
from pop3mon.engine import ProbeSpec, probe
from pop3mon.engine.dial import dial, interleave
from pop3mon.engine.dns import family_of
from pop3mon.engine.errors import ConnectError
from pop3mon.engine.result import ProbeResult, StageOutcome
from pop3mon.engine.stages import AddressFamily
from pop3mon.engine.wire import Deadline
from pop3mon.secrets import Secret

from conftest import another_lab
from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dovecot import DovecotLab
from pop3mon_lab.faultserver import LOOPBACK_HOSTS, FaultServer

pytest_plugins = ["pytester"]

MARGIN = 0.5  # seconds a probe may overrun its deadline (scheduling, close)
NAMES = ("localhost", "ip6-localhost", "ip6-loopback")


def _no_ipv6_loopback() -> str:
    """Why ``::1`` cannot be used here ("" when it can)."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        return f"IPv6 loopback ::1 is unavailable on this machine ({exc.strerror or exc})"
    return ""


NO_IPV6 = _no_ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(bool(NO_IPV6), reason=NO_IPV6)


@functools.cache
def families(name: str) -> tuple[str, ...]:
    """The families a lookup of ``name`` restricted to that family answers here.

    Asked one family at a time, as the probe asks: glibc answers an IPv4 lookup of a name
    that /etc/hosts gives only ``::1`` with 127.0.0.1, so an unrestricted lookup does not
    tell which restricted one fails.
    """
    found: list[str] = []
    for family, number in (("ipv4", socket.AF_INET), ("ipv6", socket.AF_INET6)):
        try:
            socket.getaddrinfo(name, 110, family=number, type=socket.SOCK_STREAM)
        except OSError:
            continue
        found.append(family)
    return tuple(found)


def candidate_names() -> tuple[str, ...]:
    """The Debian loopback names, then every name /etc/hosts gives: the file answers
    them (only a lookup of the family a name lacks may go on to DNS)."""
    names = list(NAMES)
    try:
        lines = Path("/etc/hosts").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        for name in line.split("#", 1)[0].split()[1:]:
            if name not in names:
                names.append(name)
    return tuple(names)


def name_with(*wanted: str, loopback: bool = False) -> str:
    """A name whose restricted lookups answer for exactly the families ``wanted`` (and,
    with ``loopback``, only with the addresses a fault server can listen on), or skip
    saying what there is."""
    names = candidate_names()
    for name in names:
        if set(families(name)) != set(wanted):
            continue
        if loopback and not set(addresses(name)) <= set(LOOPBACK_HOSTS):
            continue
        return name
    seen = ", ".join(f"{n} -> {'/'.join(families(n)) or 'nothing'}" for n in names)
    where = " loopback" if loopback else ""
    pytest.skip(f"no{where} name resolves to exactly {'+'.join(wanted)} here ({seen})")


def addresses(name: str) -> list[str]:
    """Every address ``name`` resolves to here."""
    try:
        return [str(i[4][0]) for i in socket.getaddrinfo(name, 110, type=socket.SOCK_STREAM)]
    except OSError:
        return []


def closed_port(host: str) -> tuple[socket.socket, int]:
    """A port on ``host`` that refuses connections for as long as the socket is held:
    bound, never listening, so nothing else can take it meanwhile."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock, int(sock.getsockname()[1])


def silent_listener(host: str, port: int = 0) -> tuple[list[socket.socket], int]:
    """A listener whose accept queue is full: further SYNs are dropped, so a connect to it
    hangs like one to a blackholed address. Returns the sockets to close and the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, port))
    listener.listen(0)
    held = [listener]
    port = int(listener.getsockname()[1])
    for _ in range(4):
        filler = socket.socket(family, socket.SOCK_STREAM)
        filler.setblocking(False)
        filler.connect_ex((host, port))
        held.append(filler)
    time.sleep(0.1)
    probe_sock = socket.socket(family, socket.SOCK_STREAM)
    probe_sock.settimeout(0.3)
    try:
        probe_sock.connect((host, port))
    except TimeoutError:
        pass  # silent, as wanted
    else:
        for sock in held:
            sock.close()
        pytest.skip(f"this kernel answers connects to a full accept queue on {host}")
    finally:
        probe_sock.close()
    return held, port


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def spec(host: str, port: int, family: AddressFamily, **extra: object) -> ProbeSpec:
    return ProbeSpec(
        id=f"family-{family}",
        host=host,
        port=port,
        security="none",
        auth="none",
        address_family=family,
        timeout=3.0,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture()
def server_v6() -> Iterator[FaultServer]:
    with FaultServer("healthy", host="::1") as srv:
        yield srv


# --------------------------------------------------------------------------- config


CASCADE = """\
defaults:
  auth: none
  address_family: ipv6
servers:
  - name: dual
    host: mail.example
    connections:
      - security: tls
      - security: none
        address_family: ipv4
  - name: v4
    host: mail4.example
    address_family: ipv4
    connections:
      - security: tls
        address_family: auto
      - security: none
  - name: pinned
    host: mail6.example
    address: "2001:db8::6"
    connections:
      - security: tls
"""


def test_address_family_cascades_into_the_probe_spec(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(CASCADE, encoding="utf-8")
    targets = load_targets(path)
    got = {c.id: c.address_family for c in targets.connections}
    assert got == {
        "dual:995-tls": "ipv6",  # defaults
        "dual:110-none": "ipv4",  # connection over defaults
        "v4:995-tls": "auto",  # connection over server
        "v4:110-none": "ipv4",  # server over defaults
        "pinned:995-tls": "ipv6",  # an IPv6 pin fits the inherited ipv6
    }
    for conn in targets.connections:
        assert conn.to_probe_spec().address_family == conn.address_family
        assert conn.to_dict()["address_family"] == conn.address_family


def test_address_family_default_is_auto(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(
        "servers:\n  - name: m\n    host: m.example\n    connections:\n"
        "      - {security: tls, auth: none}\n",
        encoding="utf-8",
    )
    (conn,) = load_targets(path).connections
    assert conn.address_family == "auto"
    assert ProbeSpec(id="x", host="m.example", port=995).address_family == "auto"


# --------------------------------------------------------------------------- literals


@needs_ipv6
@pytest.mark.parametrize("family", ["auto", "ipv6"])
def test_ipv6_literal_host_probes_over_ipv6(server_v6: FaultServer, family: AddressFamily) -> None:
    result = probe(spec("::1", server_v6.port, family))

    assert result.ok, result.error_reason
    assert (result.addresses, result.peer) == (("::1",), "::1")
    assert server_v6.connections == 1
    tcp = connectivity.tcp(result, None)  # type: ignore[arg-type]
    assert tcp.verdict == "OK" and tcp.reason == f"connected to ::1 port {server_v6.port}"


@needs_ipv6
def test_ipv6_only_with_nothing_on_ipv6_names_the_address() -> None:
    held, port = closed_port("::1")
    with held:
        start = time.monotonic()
        result = probe(spec("::1", port, "ipv6"))
        elapsed = time.monotonic() - start

    assert (result.error_kind, result.error_stage) == ("connection-refused", "connect")
    assert result.error_reason == f"TCP connect to ::1 port {port} failed (::1: connection refused)"
    assert elapsed < 3.0 + MARGIN


@needs_ipv6
@pytest.mark.parametrize(
    ("host", "address", "family", "reason"),
    [
        ("::1", "", "ipv4", "::1 is an IPv6 address, but address_family is ipv4 (only IPv4)"),
        (
            "localhost",
            "::1",
            "ipv4",
            "::1 is an IPv6 address, but address_family is ipv4 (only IPv4)",
        ),
        (
            "localhost",
            "127.0.0.1",
            "ipv6",
            "127.0.0.1 is an IPv4 address, but address_family is ipv6 (only IPv6)",
        ),
    ],
)
def test_literal_of_the_other_family_fails_dns_without_connecting(
    server_v6: FaultServer, host: str, address: str, family: AddressFamily, reason: str
) -> None:
    """A spec built in code may contradict itself (the config loader refuses such files):
    the DNS stage says so and no packet is sent."""
    result = probe(spec(host, server_v6.port, family, address=address))

    assert (result.error_kind, result.error_stage) == ("dns-wrong-family", "dns")
    assert result.error_reason == reason
    assert result.stage("connect") is None and result.peer == ""
    assert server_v6.connections == 0


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("has", ["ipv4", "ipv6"])
def test_name_without_an_address_of_the_family_is_a_dns_reason(has: str) -> None:
    name = name_with(has)
    other: AddressFamily = "ipv6" if has == "ipv4" else "ipv4"
    label = {"ipv4": "IPv4", "ipv6": "IPv6"}[other]
    result = probe(spec(name, 110, other))

    assert (result.error_kind, result.error_stage) == ("dns-wrong-family", "dns")
    assert result.error_reason.startswith(
        f"{name} has no {label} address (address_family: {other}; it resolves to "
    ), result.error_reason
    assert result.stage("connect") is None


@pytest.mark.parametrize("has", ["ipv4", "ipv6"])
def test_name_restricted_to_its_own_family_connects(has: AddressFamily) -> None:
    name = name_with(has, loopback=True)
    if has == "ipv6" and NO_IPV6:
        pytest.skip(NO_IPV6)
    loopback = "::1" if has == "ipv6" else "127.0.0.1"
    with FaultServer("healthy", host=loopback) as srv:
        result = probe(spec(name, srv.port, has))

    assert result.ok, result.error_reason
    assert result.addresses and all(family_of(a) == has for a in result.addresses)
    assert result.peer == loopback


@needs_ipv6
@pytest.mark.parametrize("family", ["auto", "ipv4", "ipv6"])
def test_dual_stack_name_with_ipv6_down(family: AddressFamily) -> None:
    """A name with both families, a server only on 127.0.0.1: auto falls back within the
    deadline and says so, ipv4 connects, ipv6 fails naming ::1."""
    name = name_with("ipv4", "ipv6", loopback=True)
    held, port = closed_port("::1")
    with held, FaultServer("healthy", port=port) as srv:
        result = probe(spec(name, port, family))

    if family == "ipv6":
        assert result.error_kind == "connection-refused"
        assert result.error_reason == (
            f"TCP connect to {name} port {port} failed (::1: connection refused)"
        )
        assert srv.connections == 0
        return
    assert result.ok, result.error_reason
    assert result.peer == "127.0.0.1"
    tcp = connectivity.tcp(result, None)  # type: ignore[arg-type]
    if family == "auto" and result.addresses[0] == "::1":
        assert tcp.reason == f"connected to 127.0.0.1 port {port} (after ::1: connection refused)"
    else:
        assert tcp.reason == f"connected to 127.0.0.1 port {port}"


# --------------------------------------------------------------------------- racing


def test_interleave_alternates_families_from_the_first() -> None:
    order = ("2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2", "192.0.2.3")
    assert interleave(order) == (
        "2001:db8::1",
        "192.0.2.1",
        "2001:db8::2",
        "192.0.2.2",
        "192.0.2.3",
    )
    assert interleave(("192.0.2.1", "2001:db8::1")) == ("192.0.2.1", "2001:db8::1")
    assert interleave(()) == ()


@needs_ipv6
def test_refused_first_family_falls_back_at_once() -> None:
    held, port = closed_port("::1")
    with held, FaultServer("healthy", port=port) as srv:
        dialed = dial(("::1", "127.0.0.1"), port, Deadline(3.0), "dual.example")
        try:
            assert dialed.address == "127.0.0.1"
            assert dialed.failures == (("::1", "connection refused"),)
            assert dialed.sock.getpeername()[:2] == ("127.0.0.1", port)
        finally:
            dialed.sock.close()
        assert srv.wait_idle()


@needs_ipv6
def test_silent_first_address_does_not_hold_up_the_second() -> None:
    """::1 never answers: 127.0.0.1 is tried while ::1 is still pending and wins; the
    pending attempt is abandoned (closed), not waited for, so it is no failure."""
    held, port = silent_listener("::1")
    try:
        with FaultServer("healthy", port=port) as srv:
            before = open_fds()
            dialed = dial(("::1", "127.0.0.1"), port, Deadline(5.0), "dual.example")
            assert (dialed.address, dialed.failures) == ("127.0.0.1", ())
            assert wait_for(lambda: srv.connections == 1)
            # The winner and the server's end of it; the pending ::1 attempt is closed.
            assert open_fds() == before + 2
            dialed.sock.close()
    finally:
        for sock in held:
            sock.close()


@needs_ipv6
def test_both_families_up_the_first_in_order_wins() -> None:
    with FaultServer("healthy", host="::1") as v6:
        try:
            v4 = FaultServer("healthy", port=v6.port).start()
        except OSError as exc:
            pytest.skip(f"127.0.0.1 port {v6.port} is taken by something else: {exc}")
        try:
            dialed = dial(("::1", "127.0.0.1"), v6.port, Deadline(3.0), "dual.example")
            assert (dialed.address, dialed.failures) == ("::1", ())
            # Had the IPv4 attempt started (::1 slower than the attempt delay), it was
            # closed as a loser: nothing stays open on 127.0.0.1.
            assert v4.wait_idle()
            assert wait_for(lambda: v6.connections == 1)
            dialed.sock.close()
        finally:
            v4.stop()


@needs_ipv6
def test_all_addresses_silent_ends_at_the_deadline_naming_each() -> None:
    held6, port = silent_listener("::1")
    try:
        held4, _ = silent_listener("127.0.0.1", port)
    except OSError as exc:
        for sock in held6:
            sock.close()
        pytest.skip(f"127.0.0.1 port {port} is taken by something else: {exc}")
    try:
        before = open_fds()
        start = time.monotonic()
        with pytest.raises(ConnectError) as caught:
            dial(("::1", "127.0.0.1"), port, Deadline(1.0), "dual.example")
        elapsed = time.monotonic() - start
        assert open_fds() == before
    finally:
        for sock in (*held6, *held4):
            sock.close()
    err = caught.value
    assert (err.kind, err.stage) == ("connect-timeout", "connect")
    assert err.reason == (
        f"TCP connect to dual.example port {port} timed out (::1: no answer within the "
        "deadline of 1s; 127.0.0.1: no answer within the deadline of 1s)"
    )
    assert elapsed < 1.0 + MARGIN


@needs_ipv6
def test_probe_of_a_silent_ipv6_address_ends_within_its_deadline() -> None:
    held, port = silent_listener("::1")
    try:
        start = time.monotonic()
        result = probe(
            ProbeSpec(
                id="silent",
                host="::1",
                port=port,
                security="tls",
                address_family="ipv6",
                timeout=1.0,
            )
        )
        elapsed = time.monotonic() - start
    finally:
        for sock in held:
            sock.close()
    assert (result.error_kind, result.error_stage) == ("connect-timeout", "connect")
    assert "::1: no answer within the deadline of 1s" in result.error_reason
    assert elapsed < 1.0 + MARGIN


def test_tcp_check_names_the_addresses_tried_first() -> None:
    result = ProbeResult(
        id="dual",
        host="mail.example",
        port=110,
        security="none",
        mechanism="none",
        started_at=0.0,
        phases=(("connect", 0.002),),
        stages=(StageOutcome("connect", "ok", "", "2001:db8::1: connection refused"),),
        addresses=("2001:db8::1", "192.0.2.1"),
        peer="192.0.2.1",
    )
    check = connectivity.tcp(result, None)  # type: ignore[arg-type]
    assert check.verdict == "OK"
    assert check.reason == "connected to 192.0.2.1 port 110 (after 2001:db8::1: connection refused)"
    assert ProbeResult.from_json(result.to_json()) == result


# --------------------------------------------------------------------------- Dovecot


@pytest.fixture(scope="module")
def dual_dovecot(
    dovecot: DovecotLab, lab_certs: LabCerts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DovecotLab]:
    """A Dovecot listening on 127.0.0.1 and ::1 (a later ``listen`` overrides the lab's).

    Depends on ``dovecot`` only so that a missing Dovecot skips these tests the same way.
    """
    if NO_IPV6:
        pytest.skip(NO_IPV6)
    yield from another_lab(
        lab_certs, tmp_path_factory, "dovecot-dual", extra_config="listen = 127.0.0.1, ::1\n"
    )


@pytest.mark.parametrize(("family", "peer"), [("ipv6", "::1"), ("ipv4", "127.0.0.1")])
def test_dovecot_login_over_the_chosen_family(
    dual_dovecot: DovecotLab, family: AddressFamily, peer: str
) -> None:
    """Real Dovecot, verified TLS for the name ``localhost``, a real login: the address
    pinned in the chosen family is the one Dovecot logs as the client's and its own."""
    lab = dual_dovecot
    port = lab.port("pop3s")
    before = lab.login_count(lab.demo_user, port)
    result = probe(
        ProbeSpec(
            id=f"dovecot-{family}",
            host=lab.hostname,
            address=peer,
            address_family=family,
            port=port,
            security="tls",
            auth="scram-sha-256",
            username=lab.demo_user,
            secret=Secret(lab.demo_password, source="test"),
            ca_file=str(lab.ca_file),
            timeout=5.0,
        )
    )

    assert result.ok, result.error_reason
    assert result.peer == peer and result.tls is not None and result.tls.verified
    assert result.mailbox is not None
    lab.wait_for_logins(before + 1, user=lab.demo_user, port=port)
    last = lab.logins(lab.demo_user, port)[-1]
    assert f"rip={peer}," in last.line and f"lip={peer}," in last.line, last.line


# --------------------------------------------------------------------------- the suite


@needs_ipv6
def test_suite_reports_the_ipv6_address_used(
    pytester: pytest.Pytester, server_v6: FaultServer
) -> None:
    """Through the plugin: the setting reaches the probe, results.json says which address
    was used and with which setting, and a dead IPv6 port is a tcp CRIT naming ::1."""
    root = Path(__file__).resolve().parents[1]
    pytester.makeconftest('pytest_plugins = ["pop3mon.plugin", "pop3mon.report.plugin"]\n')
    pytester.makeini(
        f"[pytest]\ntestpaths = tests_targets\npythonpath = {root / 'plugins'}\n"
        "addopts = -p no:hypothesispytest -p no:benchmark -p no:cacheprovider\n"
    )
    tiers = pytester.mkdir("tests_targets")
    for module in sorted((root / "tests_targets").glob("test_*.py")):
        (tiers / module.name).write_text(module.read_text(encoding="utf-8"), encoding="utf-8")
    held, dead = closed_port("::1")
    with held:
        pytester.path.joinpath("targets.yaml").write_text(
            "servers:\n"
            "  - name: v6\n"
            '    host: "::1"\n'
            "    address_family: ipv6\n"
            "    auth: none\n"
            "    connections:\n"
            f"      - {{id: up, port: {server_v6.port}, security: none}}\n"
            f"      - {{id: down, port: {dead}, security: none}}\n",
            encoding="utf-8",
        )
        result = pytester.runpytest_subprocess("-m", "connectivity", "--reports-dir=out")
    result.stdout.fnmatch_lines(
        [f"*CRIT down tcp: TCP connect to ::1 port {dead} failed (::1: connection refused)*"]
    )
    doc = json.loads((pytester.path / "out" / "results.json").read_text("utf-8"))
    by = {c["id"]: c for c in doc["connections"]}
    assert by["up"]["config"]["address_family"] == "ipv6"
    assert by["up"]["probe"]["peer"] == "::1"
    tcp = {c["check"]: c for c in by["up"]["checks"]}["tcp"]
    assert (tcp["verdict"], tcp["reason"]) == ("OK", f"connected to ::1 port {server_v6.port}")


def test_suite_refuses_a_family_that_contradicts_the_host(pytester: pytest.Pytester) -> None:
    root = Path(__file__).resolve().parents[1]
    pytester.makeconftest('pytest_plugins = ["pop3mon.plugin"]\n')
    pytester.makeini(f"[pytest]\npythonpath = {root / 'plugins'}\n")
    pytester.path.joinpath("targets.yaml").write_text(
        "servers:\n"
        "  - name: v6\n"
        '    host: "::1"\n'
        "    auth: none\n"
        "    connections:\n"
        "      - {security: none, address_family: ipv4}\n",
        encoding="utf-8",
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*targets.yaml:6: servers[[]0[]].connections[[]0[]].address_family: ipv4 cannot "
            "reach the IPv6 address ::1 given as servers[[]0[]].host (line 3)*"
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
