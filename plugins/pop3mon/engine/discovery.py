"""Discovery of a mail domain's connection types: what it publishes and what its hosts offer.

Three sources, all within one deadline:

* RFC 6186 SRV records (``_pop3._tcp``, ``_pop3s._tcp``, ``_submission._tcp``,
  ``_submissions._tcp``) through :mod:`.discovery_dns` (dnspython, optional nameserver);
* the Mozilla client autoconfig document (:mod:`.autoconfig`);
* a probe of the POP3 ports (110, 995 and every published one) on every host the user
  named or the domain's own records name: greeting, CAPA, STLS, certificate. The probe is
  the engine's own :class:`~.session._Probe` with ``auth: none`` and a wire whose
  allowlist is CAPA, STLS and QUIT only, so discovery cannot log in or read mail.

Safety rules (issue 15 item 3): only the hosts named by the user or by the domain's own
SRV/autoconfig records are contacted, at most :data:`MAX_HOSTS` of them and
:data:`MAX_PORTS` ports each; no address range is ever enumerated; only CAPA, STLS and
QUIT are sent; everything ends by one deadline. A published host is contacted whatever
address it resolves to (a private 10.x address included): the domain's own DNS named it,
and the user asked to discover that domain.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Literal, TypeVar

from . import autoconfig as ac
from .auth import offer_from
from .discovery_dns import SRV_SERVICES, SrvRecord, SrvService, resolve_host, srv
from .dns import is_ip
from .errors import ProbeError
from .mechanisms import MECHANISMS
from .result import ProbeResult, ProbeSpec
from .session import _Probe
from .stages import Protocol, Security
from .wire import Deadline, Wire

__all__ = [
    "MAX_HOSTS",
    "MAX_PORTS",
    "STANDARD_PORTS",
    "Discovery",
    "DiscoverySpec",
    "Offered",
    "Published",
    "Source",
    "discover",
]

#: Where a connection type was found.
Source = Literal["srv", "autoconfig", "autoconfig-wellknown", "port"]

#: The standard POP3 ports: 110 (plaintext, STLS) and 995 (implicit TLS).
STANDARD_PORTS: Final[tuple[int, ...]] = (110, 995)
#: At most this many hosts are probed (user-named first, then published ones): a hostile
#: zone publishing a hundred SRV targets must not turn discovery into a scan.
MAX_HOSTS: Final = 8
#: At most this many ports per host.
MAX_PORTS: Final = 8


@dataclass(frozen=True)
class Published:
    """One connection type the domain publishes (RFC 6186 SRV or client autoconfig).

    ``security`` uses the engine's vocabulary (:data:`~.stages.Security`): ``none`` for
    plaintext, ``starttls``, ``tls`` (implicit TLS).
    """

    source: Source
    where: str  # "_pop3s._tcp.example.com SRV 0 1 995 mail1.example." or the URL
    protocol: Protocol
    host: str
    port: int
    security: Security
    authentication: str | None = None  # autoconfig <authentication>, e.g. password-cleartext
    username: str | None = None  # autoconfig <username>, placeholders resolved where known


@dataclass(frozen=True)
class Offered:
    """What a probe of one host and port found (CAPA/STLS/QUIT only, never a login).

    ``security`` is as probed: ``tls`` for implicit TLS, ``starttls`` on a plaintext port
    that offers STLS, ``none`` on one that does not.
    """

    host: str
    port: int
    security: Security
    protocol: Protocol
    answered: bool  # spoke POP3 (+OK greeting)
    greeting: str | None
    capabilities: tuple[str, ...]
    stls_offered: bool
    cleartext_login_before_tls: tuple[str, ...]  # e.g. ("USER", "SASL PLAIN")
    tls_ok: bool | None  # certificate verified for this host name (None: no TLS tried)
    error: str | None  # why not (refused, timeout, not POP3, certificate for other name)
    elapsed: float
    address: str = ""  # the address that answered


@dataclass(frozen=True)
class Discovery:
    """The outcome of :func:`discover`."""

    domain: str | None
    hosts: tuple[str, ...]  # hosts probed (named by the user or the domain's own records)
    published: tuple[Published, ...]
    offered: tuple[Offered, ...]
    problems: tuple[str, ...]  # e.g. "autoconfig: HTTP 404 at http://autoconfig.example/..."
    elapsed: float

    @property
    def found(self) -> bool:
        """Whether discovery found any connection type (published, or answering POP3)."""
        return bool(self.published) or any(o.answered for o in self.offered)


@dataclass(frozen=True)
class DiscoverySpec:
    """What to discover. ``timeout`` is the one deadline of the whole discovery."""

    domain: str | None
    hosts: tuple[str, ...] = ()
    ports: tuple[int, ...] = STANDARD_PORTS  # probed on every host, plus published ones
    nameserver: str | None = None  # "127.0.0.1:5353"; None: the system resolver
    autoconfig_port: int | None = None  # test hook / non-standard HTTP(S) port
    timeout: float = 20.0
    ca_file: str | None = None
    email: str | None = None  # sent as ?emailaddress= and fills %EMAILADDRESS% placeholders
    # Ports probed with implicit TLS (no published security says otherwise); any other
    # port is tried in plaintext first and with TLS only when no greeting came.
    tls_ports: tuple[int, ...] = (995,)
    # Which autoconfig schemes to try, in order (https first, like Thunderbird).
    autoconfig_schemes: tuple[Literal["https", "http"], ...] = field(default=("https", "http"))


#: Commands discovery may send: capabilities, the way to TLS, goodbye. No login, no mail.
DISCOVERY_COMMANDS: Final = frozenset({"CAPA", "STLS", "QUIT"})
#: How long a port of unknown security gets to send a plaintext greeting before discovery
#: tries implicit TLS on it instead (a TLS server waits for our ClientHello in silence).
PLAIN_GREETING_WAIT: Final = 2.0
#: Time kept back from the deadline for joining the workers and building the answer.
_MARGIN: Final = 0.2

_T = TypeVar("_T")


class _DiscoveryWire(Wire):
    """The POP3 wire with discovery's allowlist: CAPA, STLS and QUIT only."""

    allowed = DISCOVERY_COMMANDS


class _DiscoveryProbe(_Probe):
    """The engine's POP3 probe (``auth: none``) on discovery's wire and nameserver."""

    def __init__(self, spec: ProbeSpec, nameserver: str | None) -> None:
        super().__init__(spec)
        self.nameserver = nameserver

    def do_resolve(self) -> None:
        if self.nameserver is None or is_ip(self.spec.host):
            super().do_resolve()
            return
        with self.phase("dns"):
            self.addresses = resolve_host(
                self.spec.host, self.spec.port, self.nameserver, self.deadline
            )
        self.ok("dns")

    def make_wire(self, sock: socket.socket) -> Wire:
        return _DiscoveryWire(sock, self.deadline, started=self.t0)

    def plaintext_to_tls(self, sock: socket.socket) -> bool:
        wire = _DiscoveryWire(sock, self.deadline, started=self.t0)
        wire.read_line("tls")
        wire.command("STLS", stage="tls")
        return wire.status("tls").ok


def _run(spec: ProbeSpec, nameserver: str | None) -> ProbeResult:
    return _DiscoveryProbe(spec, nameserver).run()


def _stage_ok(result: ProbeResult, stage: str) -> bool:
    return any(s.stage == stage and s.status in ("ok", "warn") for s in result.stages)


def _cleartext_offers(caps: tuple[str, ...] | None, greeting: str) -> tuple[str, ...]:
    """The mechanisms offered before TLS that put the password itself on the wire."""
    offer = offer_from(caps, greeting.encode())
    out = []
    for mech in MECHANISMS.values():
        if mech.sends_secret and offer.offers(mech.name):
            out.append(f"SASL {mech.sasl}" if mech.sasl else mech.name.upper())
    return tuple(sorted(out, key=lambda w: (w.startswith("SASL"), w)))


def probe_port(
    host: str,
    port: int,
    security: Security | None,
    *,
    deadline: Deadline,
    nameserver: str | None = None,
    ca_file: str | None = None,
) -> Offered:
    """Probe one POP3 port of ``host`` (CAPA/STLS/QUIT only). ``security`` is ``tls`` for
    implicit TLS, ``none``/``starttls`` for a plaintext port, ``None``: unknown (plaintext
    first, implicit TLS when no greeting came within :data:`PLAIN_GREETING_WAIT`)."""
    t0 = time.perf_counter()

    def spec(mode: Security, seconds: float, verify: bool = True) -> ProbeSpec:
        return ProbeSpec(
            id=f"discover:{host}:{port}",
            host=host,
            port=port,
            security=mode,
            auth="none",
            ca_file=ca_file or "",
            verify_tls=verify,
            timeout=max(0.05, seconds),
        )

    left = deadline.remaining() - _MARGIN
    if security is None:
        first = _run(spec("starttls-optional", min(left, PLAIN_GREETING_WAIT)), nameserver)
        silent = not _stage_ok(first, "greeting") and first.error_stage == "greeting"
        if not silent or deadline.remaining() - _MARGIN <= 0.05:
            return _offered(first, None, time.perf_counter() - t0)
        security = "tls"
    mode: Security = "tls" if security == "tls" else "starttls-optional"
    result = _run(spec(mode, deadline.remaining() - _MARGIN), nameserver)
    unverified = None
    if result.tls is not None and not result.tls.verified and result.error_kind.startswith("cert-"):
        # The certificate failed: learn what the port speaks anyway, without verifying,
        # so the table can say "POP3, but the certificate is for another name".
        unverified = _run(spec(mode, deadline.remaining() - _MARGIN, verify=False), nameserver)
    return _offered(result, unverified, time.perf_counter() - t0)


def _offered(result: ProbeResult, unverified: ProbeResult | None, elapsed: float) -> Offered:
    seen = unverified if unverified is not None else result
    plain_port = result.security != "tls"
    stls = bool(seen.stls_offered) if plain_port else False
    caps = seen.capabilities_after or seen.capabilities_before or ()
    tls_tried = result.security == "tls" or stls
    if result.tls is not None:
        tls_ok: bool | None = result.tls.verified and not result.error_kind.startswith("cert-")
    else:
        tls_ok = False if tls_tried else None
    answered = _stage_ok(seen, "greeting")
    return Offered(
        host=result.host,
        port=result.port,
        security="tls" if not plain_port else ("starttls" if stls else "none"),
        protocol="pop3",
        answered=answered,
        greeting=seen.greeting or None,
        capabilities=tuple(caps),
        stls_offered=stls,
        cleartext_login_before_tls=(
            _cleartext_offers(seen.capabilities_before, seen.greeting)
            if plain_port and answered
            else ()
        ),
        tls_ok=tls_ok,
        error=result.error_reason or None,
        elapsed=round(elapsed, 3),
        address=result.peer,
    )


def _parallel(jobs: list[Callable[[], _T]], deadline: Deadline) -> list[_T | None]:
    """Run ``jobs`` each in a daemon thread; None for one still running at the deadline."""
    box: list[_T | None] = [None] * len(jobs)

    def runner(i: int, job: Callable[[], _T]) -> None:
        box[i] = job()

    threads = [
        threading.Thread(target=runner, args=(i, job), name=f"discover-{i}", daemon=True)
        for i, job in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline.remaining()))
    return list(box)


def _srv_published(
    domain: str, nameserver: str | None, deadline: Deadline
) -> tuple[list[Published], list[str]]:
    def ask(service: SrvService) -> tuple[tuple[SrvRecord, ...], str]:
        try:
            return srv(domain, service, nameserver, deadline), ""
        except ProbeError as exc:
            return (), f"SRV {service.label}.{domain}: {exc.reason}"

    answers = _parallel([partial(ask, s) for s in SRV_SERVICES], deadline)
    published: list[Published] = []
    problems: list[str] = []
    for service, answer in zip(SRV_SERVICES, answers, strict=True):
        if answer is None:
            problems.append(f"SRV {service.label}.{domain}: no answer within the deadline")
            continue
        records, problem = answer
        if problem:
            problems.append(problem)
        for record in records:
            if not record.target:
                continue  # RFC 6186 §3.4: "." says the service is not offered
            published.append(
                Published(
                    source="srv",
                    where=record.text,
                    protocol=service.protocol,
                    host=record.target,
                    port=record.port,
                    security=service.security,
                )
            )
    return published, problems


def _autoconfig_published(
    spec: DiscoverySpec, domain: str, deadline: Deadline
) -> tuple[list[Published], list[str]]:
    tries = ac.locations(domain, spec.autoconfig_port, spec.email, spec.autoconfig_schemes)
    by_location: dict[ac.Location, list[tuple[ac.Scheme, str, str, str]]] = {}
    for location, scheme, host, path, url in tries:
        by_location.setdefault(location, []).append((scheme, host, path, url))

    def one(location: ac.Location) -> tuple[list[Published], list[str]]:
        failures: list[str] = []
        for scheme, host, path, url in by_location[location]:
            got = ac.fetch(
                scheme,
                host,
                path,
                url,
                port=spec.autoconfig_port,
                nameserver=spec.nameserver,
                ca_file=spec.ca_file,
                deadline=deadline,
            )
            if got.body is None:
                failures.append(f"{url}: {got.problem}")
                continue
            servers, problems = ac.parse(got.body, domain, spec.email)
            found = [
                Published(
                    source=location,
                    where=url,
                    protocol=s.protocol,
                    host=s.host,
                    port=s.port,
                    security=s.security,
                    authentication=s.authentication,
                    username=s.username,
                )
                for s in servers
            ]
            notes = [f"autoconfig {url}: {p}" for p in problems]
            if not servers and not problems:
                notes.append(f"autoconfig {url}: no POP3 or SMTP server in the document")
            return found, notes
        return [], [f"autoconfig: {'; '.join(failures)}"]

    locations = list(by_location)
    answers = _parallel([partial(one, loc) for loc in locations], deadline)
    published: list[Published] = []
    problems: list[str] = []
    for location, answer in zip(locations, answers, strict=True):
        if answer is None:
            problems.append(f"autoconfig ({location}): no answer within the deadline")
            continue
        published += answer[0]
        problems += answer[1]
    return published, problems


def _targets(
    spec: DiscoverySpec, published: list[Published]
) -> tuple[tuple[str, ...], list[tuple[str, int, Security | None]], list[str]]:
    """The hosts to probe (user-named first), and (host, port, security hint) per probe."""
    problems: list[str] = []
    hosts: list[str] = []
    for host in (*spec.hosts, *(p.host for p in published)):
        host = host.lower().rstrip(".")
        if host not in hosts:
            hosts.append(host)
    if len(hosts) > MAX_HOSTS:
        problems.append(
            f"{len(hosts)} hosts named; only the first {MAX_HOSTS} probed "
            f"({', '.join(hosts[MAX_HOSTS:])} not contacted)"
        )
        hosts = hosts[:MAX_HOSTS]
    jobs: list[tuple[str, int, Security | None]] = []
    for host in hosts:
        hints: dict[int, Security | None] = {}
        for port in spec.ports:
            hints[port] = "tls" if port in spec.tls_ports else (None if port != 110 else "none")
        for p in published:
            if p.protocol == "pop3" and p.host == host:
                hints[p.port] = p.security
        ports = list(hints)
        if len(ports) > MAX_PORTS:
            problems.append(
                f"{host}: {len(ports)} ports named; only {MAX_PORTS} probed "
                f"({', '.join(map(str, ports[MAX_PORTS:]))} not contacted)"
            )
            ports = ports[:MAX_PORTS]
        jobs += [(host, port, hints[port]) for port in ports]
    return tuple(hosts), jobs, problems


def discover(spec: DiscoverySpec) -> Discovery:
    """Discover ``spec.domain``'s published connection types and probe its hosts' ports.

    Only CAPA, STLS and QUIT are sent, only to the hosts the user named or the domain's
    own SRV/autoconfig records name, all within ``spec.timeout`` seconds. Never raises for
    anything the network or a server does: problems go into :attr:`Discovery.problems`.
    """
    t0 = time.perf_counter()
    deadline = Deadline(spec.timeout)
    domain = spec.domain.lower().rstrip(".") if spec.domain else None
    published: list[Published] = []
    problems: list[str] = []
    if domain:
        both = _parallel(
            [
                lambda: _srv_published(domain, spec.nameserver, deadline),
                lambda: _autoconfig_published(spec, domain, deadline),
            ],
            deadline,
        )
        for part, label in zip(both, ("SRV", "autoconfig"), strict=True):
            if part is None:
                problems.append(f"{label}: no answer within the deadline")
            else:
                published += part[0]
                problems += part[1]
    hosts, jobs, more = _targets(spec, published)
    problems += more
    if not hosts:
        problems.append("no host to probe: name one with --host (the domain publishes none)")
    offered = _parallel(
        [
            partial(
                probe_port,
                host,
                port,
                hint,
                deadline=deadline,
                nameserver=spec.nameserver,
                ca_file=spec.ca_file,
            )
            for host, port, hint in jobs
        ],
        deadline,
    )
    results: list[Offered] = []
    for (host, port, hint), got in zip(jobs, offered, strict=True):
        if got is None:
            got = Offered(
                host=host,
                port=port,
                security=hint or "none",
                protocol="pop3",
                answered=False,
                greeting=None,
                capabilities=(),
                stls_offered=False,
                cleartext_login_before_tls=(),
                tls_ok=None,
                error=f"no answer within the deadline of {spec.timeout:g}s",
                elapsed=round(time.perf_counter() - t0, 3),
            )
        results.append(got)
    return Discovery(
        domain=domain,
        hosts=hosts,
        published=tuple(published),
        offered=tuple(results),
        problems=tuple(problems),
        elapsed=round(time.perf_counter() - t0, 3),
    )
