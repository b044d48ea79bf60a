"""Discovery of a mail domain's connection types: what it publishes and what its hosts offer.

Three sources, all within one deadline:

* RFC 6186 SRV records (``_pop3._tcp``, ``_pop3s._tcp``, ``_submission._tcp``,
  ``_submissions._tcp``) through :mod:`.discovery_dns` (dnspython, optional nameserver);
* the Mozilla client autoconfig document (:mod:`.autoconfig`);
* a probe of the POP3 ports (110, 995 and every published one) on every host the user
  named or the domain's own records name: greeting, CAPA, STLS, certificate. The probe is
  the engine's own :class:`~.session._Probe` with ``auth: none`` and a wire whose
  allowlist is CAPA, STLS and QUIT only, so discovery cannot log in or read mail;
* a probe of every published SMTP submission entry (``_submission(s)._tcp``, autoconfig
  ``outgoingServer``): the engine's :class:`~.smtp.SmtpProbe` with ``auth: none`` on a
  wire whose allowlist is EHLO, STARTTLS and QUIT only (never AUTH, MAIL, RCPT, DATA).

The hosts the user named are probed from the start, beside the look-ups (which get at
most :data:`LOOKUP_SHARE` of the deadline); a host a look-up names is probed as soon as
that look-up answers.

What discovery could not look at (a DNS server that timed out or failed, an autoconfig
host that failed other than by saying "no document here", a probe that neither
answered nor was refused in time) is in :attr:`Discovery.failures` as well as in the
problems, so a coverage check can say "could not check" instead of OK.

Safety rules (issue 15 item 3): only the hosts named by the user or by the domain's own
SRV/autoconfig records are contacted, at most :data:`MAX_HOSTS` of them and
:data:`MAX_PORTS` ports each; no address range is ever enumerated; only CAPA, STLS and
QUIT (POP3) and EHLO, STARTTLS and QUIT (SMTP) are sent; everything ends by one
deadline. A published host is contacted whatever address it resolves to (a private 10.x
address included): the domain's own DNS named it, and the user asked to discover that
domain.
"""

from __future__ import annotations

import select
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
from .errors import DeadlineExceeded, ProbeError
from .mechanisms import MECHANISMS
from .result import ProbeResult, ProbeSpec
from .session import _Probe
from .smtp import SmtpProbe, SmtpWire, smtp_offer
from .stages import Protocol, Security
from .wire import Deadline, Wire

__all__ = [
    "LISTED_MAX",
    "MAX_HOSTS",
    "MAX_PORTS",
    "MAX_PUBLISHED",
    "STANDARD_PORTS",
    "Discovery",
    "DiscoveryPart",
    "DiscoverySpec",
    "Failure",
    "Offered",
    "Published",
    "Source",
    "discover",
    "listed",
]

#: Where a connection type was found.
Source = Literal["srv", "autoconfig", "autoconfig-wellknown", "port"]
#: The part of discovery that could not look (:class:`Failure`).
DiscoveryPart = Literal["srv", "autoconfig", "probe"]

#: The standard POP3 ports: 110 (plaintext, STLS) and 995 (implicit TLS).
STANDARD_PORTS: Final[tuple[int, ...]] = (110, 995)
#: At most this many hosts are probed (user-named first, then published ones): a hostile
#: zone publishing a hundred SRV targets must not turn discovery into a scan.
MAX_HOSTS: Final = 8
#: At most this many ports per host.
MAX_PORTS: Final = 8
#: At most this many published connection types (SRV and autoconfig together) are kept:
#: a hostile zone or document must not make the table, the draft and the report its size.
MAX_PUBLISHED: Final = 32


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
    error_kind: str = ""  # the engine's error kind (errors.ErrorKind), "" when none


@dataclass(frozen=True)
class Failure:
    """Something discovery could not look at, as opposed to found absent: an SRV query
    that timed out or failed (not NXDOMAIN or an empty answer), an autoconfig location
    whose fetch failed other than by saying "no document here" (not HTTP 404 or a refused
    connection), a port probe that could not resolve its host or did not end in time."""

    part: DiscoveryPart
    reason: str


@dataclass(frozen=True)
class Discovery:
    """The outcome of :func:`discover`."""

    domain: str | None
    hosts: tuple[str, ...]  # hosts probed (named by the user or the domain's own records)
    published: tuple[Published, ...]
    offered: tuple[Offered, ...]
    problems: tuple[str, ...]  # e.g. "autoconfig: HTTP 404 at http://autoconfig.example/..."
    elapsed: float
    # What could not be looked at (each also in problems): a check must not call it OK.
    failures: tuple[Failure, ...] = ()

    def failed(self, *parts: DiscoveryPart) -> tuple[str, ...]:
        """The reasons of the failures of ``parts``."""
        return tuple(f.reason for f in self.failures if f.part in parts)

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
#: The same for a published SMTP entry: no AUTH, no envelope (MAIL, RCPT), no DATA.
DISCOVERY_SMTP_COMMANDS: Final = frozenset({"EHLO", "STARTTLS", "QUIT"})
#: The longest a port of unknown security gets to send its first byte before discovery
#: tries implicit TLS on it instead (a TLS server waits for our ClientHello in silence).
PLAIN_GREETING_WAIT: Final = 2.0
#: Within that, the wait is this many TCP connect times (one round trip each), and at
#: least :data:`GREETING_WAIT_FLOOR`: a POP3 server greets as soon as it accepts, so its
#: first byte is one round trip away plus its own scheduling. A slower plaintext greeting
#: is not misjudged, only slower to find: it answers our ClientHello in plaintext
#: (``tls-not-spoken``) and the port is probed in plaintext again without the short wait.
GREETING_WAIT_RTTS: Final = 10
#: The shortest greeting wait, for loopback and LAN round trips of a fraction of a ms.
GREETING_WAIT_FLOOR: Final = 0.5
#: The SRV and autoconfig look-ups get at most this share of the deadline, so a DNS or
#: web server that never answers leaves the port probes time to run.
LOOKUP_SHARE: Final = 0.5
#: Time kept back from the deadline for joining the workers and building the answer.
_MARGIN: Final = 0.2

_T = TypeVar("_T")

#: A probe's error kinds that say its host's name could not be looked up (the DNS server
#: timed out or failed), as opposed to NXDOMAIN: a :class:`Failure`.
_LOOKUP_FAILED: Final = frozenset({"dns-timeout", "dns-failed", "dns-temporary"})
#: Stages that end before any TLS: a probe failing there says nothing about its TLS.
_BEFORE_TLS: Final = frozenset({"dns", "ping", "connect"})


class _Resolving(_Probe):
    """A discovery probe: names through discovery's nameserver when one is given."""

    nameserver: str | None = None

    def do_resolve(self) -> None:
        if self.nameserver is None or is_ip(self.spec.host):
            super().do_resolve()
            return
        with self.phase("dns"):
            self.addresses = resolve_host(
                self.spec.host, self.spec.port, self.nameserver, self.deadline
            )
        self.ok("dns")


class _DiscoveryWire(Wire):
    """The POP3 wire with discovery's allowlist: CAPA, STLS and QUIT only."""

    allowed = DISCOVERY_COMMANDS


class _DiscoveryProbe(_Resolving):
    """The engine's POP3 probe (``auth: none``) on discovery's wire and nameserver. With
    ``greeting_wait`` (a port of unknown security) it waits for the first byte of the
    greeting only :func:`_greeting_wait` long and then says the port is ``silent``."""

    greeting_wait = False
    silent = False

    def make_wire(self, sock: socket.socket) -> Wire:
        return _DiscoveryWire(sock, self.deadline, started=self.t0)

    def plaintext_to_tls(self, sock: socket.socket) -> bool:
        wire = _DiscoveryWire(sock, self.deadline, started=self.t0)
        wire.read_line("tls")
        wire.command("STLS", stage="tls")
        return wire.status("tls").ok

    def read_greeting(self, wire: Wire) -> None:
        if self.greeting_wait and not wire.pending():
            connect = next((s for name, s in self.phases if name == "connect"), 0.0)
            wait = min(_greeting_wait(connect), max(0.0, self.deadline.remaining()))
            # Only the first byte is awaited this briefly: a server that has begun to
            # greet is plaintext, and the rest of its greeting gets the whole deadline.
            readable, _, _ = select.select([wire.sock], [], [], wait)
            if not readable:
                self.silent = True
                raise DeadlineExceeded(
                    f"no plaintext greeting within {wait:.2f}s", stage="greeting"
                )
        super().read_greeting(wire)


def _greeting_wait(connect: float) -> float:
    """How long a port of unknown security gets to start its plaintext greeting, after a
    TCP connect that took ``connect`` seconds."""
    return min(PLAIN_GREETING_WAIT, max(GREETING_WAIT_FLOOR, GREETING_WAIT_RTTS * connect))


class _DiscoverySmtpProbe(_Resolving, SmtpProbe):
    """The engine's SMTP probe (``auth: none``) on a wire whose allowlist is EHLO,
    STARTTLS and QUIT: it learns what a published submission port does, sends no mail."""

    def make_wire(self, sock: socket.socket) -> Wire:
        wire = super().make_wire(sock)
        wire.allowed = DISCOVERY_SMTP_COMMANDS
        return wire

    def plaintext_to_tls(self, sock: socket.socket) -> bool:
        wire = SmtpWire(sock, self.deadline, started=self.t0)
        wire.allowed = DISCOVERY_SMTP_COMMANDS
        if wire.reply("tls").code != 220:
            return False
        wire.command("EHLO", self.ehlo_name, stage="tls")
        if wire.reply("tls").code != 250:
            return False
        wire.command("STARTTLS", stage="tls")
        return wire.reply("tls").code == 220


def _stage_ok(result: ProbeResult, stage: str) -> bool:
    return any(s.stage == stage and s.status in ("ok", "warn") for s in result.stages)


def _cleartext_offers(result: ProbeResult) -> tuple[str, ...]:
    """The mechanisms offered before TLS that put the password itself on the wire."""
    caps = result.capabilities_before
    if result.protocol == "smtp":
        offer = smtp_offer(caps)
    else:
        offer = offer_from(caps, result.greeting.encode())
    out = []
    for mech in MECHANISMS.values():
        if mech.sends_secret and offer.offers(mech.name):
            out.append(f"SASL {mech.sasl}" if mech.sasl else mech.name.upper())
    return tuple(out)


def probe_port(
    host: str,
    port: int,
    security: Security | None,
    *,
    deadline: Deadline,
    nameserver: str | None = None,
    ca_file: str | None = None,
    protocol: Protocol = "pop3",
) -> Offered:
    """Probe one port of ``host``: POP3 (CAPA/STLS/QUIT only) or SMTP (EHLO/STARTTLS/QUIT
    only). ``security`` is ``tls`` for implicit TLS, ``none``/``starttls`` for a plaintext
    port, ``None``: unknown (POP3: plaintext first, implicit TLS when no greeting began
    within :func:`_greeting_wait`)."""
    t0 = time.perf_counter()

    def run(mode: Security, verify: bool = True, wait: bool = False) -> tuple[ProbeResult, bool]:
        """One probe; and whether it found the port silent (no greeting began)."""
        spec = ProbeSpec(
            id=f"discover:{host}:{port}",
            host=host,
            port=port,
            security=mode,
            auth="none",
            ca_file=ca_file or "",
            verify_tls=verify,
            timeout=max(0.05, deadline.remaining() - _MARGIN),
            protocol=protocol,
        )
        if protocol == "smtp":
            smtp = _DiscoverySmtpProbe(spec)
            smtp.nameserver = nameserver
            return smtp.run(), False
        pop3 = _DiscoveryProbe(spec)
        pop3.nameserver = nameserver
        pop3.greeting_wait = wait
        return pop3.run(), pop3.silent

    def time_left() -> bool:
        return deadline.remaining() - _MARGIN > 0.05

    if security is None and protocol == "pop3":
        first, silent = run("starttls-optional", wait=True)
        if not silent or not time_left():
            return _offered(first, None, time.perf_counter() - t0)
        result, _ = run("tls")
        if result.error_kind == "tls-not-spoken" and time_left():
            # It answered our ClientHello in plaintext: a greeting slower than the wait.
            result, _ = run("starttls-optional")
    else:
        result, _ = run("tls" if security == "tls" else "starttls-optional")
    unverified = None
    if result.tls is not None and not result.tls.verified and result.error_kind.startswith("cert-"):
        # The certificate failed: learn what the port speaks anyway, without verifying,
        # so the table can say "POP3, but the certificate is for another name".
        unverified, _ = run(
            "tls" if result.security == "tls" else "starttls-optional", verify=False
        )
    return _offered(result, unverified, time.perf_counter() - t0)


def _offered(result: ProbeResult, unverified: ProbeResult | None, elapsed: float) -> Offered:
    seen = unverified if unverified is not None else result
    plain_port = result.security != "tls"
    stls = bool(seen.stls_offered) if plain_port else False
    caps = seen.capabilities_after or seen.capabilities_before or ()
    tls_tried = result.security == "tls" or stls
    if result.tls is not None:
        tls_ok: bool | None = result.tls.verified and not result.error_kind.startswith("cert-")
    elif result.error_stage in _BEFORE_TLS:
        # Refused, unreachable, no such name: TLS was never tried, so it did not fail.
        tls_ok = None
    else:
        tls_ok = False if tls_tried else None
    answered = _stage_ok(seen, "greeting")
    return Offered(
        host=result.host,
        port=result.port,
        security="tls" if not plain_port else ("starttls" if stls else "none"),
        protocol="smtp" if result.protocol == "smtp" else "pop3",
        answered=answered,
        greeting=seen.greeting or None,
        capabilities=tuple(caps),
        stls_offered=stls,
        cleartext_login_before_tls=(_cleartext_offers(seen) if plain_port and answered else ()),
        tls_ok=tls_ok,
        error=result.error_reason or None,
        elapsed=round(elapsed, 3),
        address=result.peer,
        error_kind=(
            "dns-timeout"
            if result.error_stage == "dns" and result.error_kind == "timeout"
            else result.error_kind
        ),
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


_Found = tuple[list[Published], list[str], list[Failure]]


def _srv_published(domain: str, nameserver: str | None, deadline: Deadline) -> _Found:
    def ask(service: SrvService) -> tuple[tuple[SrvRecord, ...], str]:
        try:
            return srv(domain, service, nameserver, deadline), ""
        except ProbeError as exc:
            # NXDOMAIN and an empty answer return (): only a failure to answer gets here.
            return (), f"SRV {service.label}.{domain}: {exc.reason}"

    answers = _parallel([partial(ask, s) for s in SRV_SERVICES], deadline)
    published: list[Published] = []
    failures: list[Failure] = []
    for service, answer in zip(SRV_SERVICES, answers, strict=True):
        if answer is None:
            answer = (), f"SRV {service.label}.{domain}: no answer within the deadline"
        records, problem = answer
        if problem:
            failures.append(Failure("srv", problem))
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
    return published, [f.reason for f in failures], failures


def _autoconfig_published(
    spec: DiscoverySpec,
    domain: str,
    deadline: Deadline,
    on_found: Callable[[list[Published]], None] = lambda found: None,
) -> _Found:
    """What the autoconfig locations publish; ``on_found`` gets each location's entries as
    soon as its document is read (to probe them at once)."""
    tries = ac.locations(domain, spec.autoconfig_port, spec.email, spec.autoconfig_schemes)
    by_location: dict[ac.Location, list[tuple[ac.Scheme, str, str, str]]] = {}
    for location, scheme, host, path, url in tries:
        by_location.setdefault(location, []).append((scheme, host, path, url))

    def one(location: ac.Location) -> tuple[list[Published], list[str], bool]:
        """What ``location`` publishes, its problems, and whether its fetch failed (as
        opposed to every scheme saying there is no document)."""
        failures: list[str] = []
        failed = False
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
                failed = failed or not got.absent
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
            on_found(found)
            notes = [f"autoconfig {url}: {p}" for p in problems]
            if not servers and not problems:
                notes.append(f"autoconfig {url}: no POP3 or SMTP server in the document")
            return found, notes, False
        return [], [f"autoconfig: {'; '.join(failures)}"], failed

    locations = list(by_location)
    answers = _parallel([partial(one, loc) for loc in locations], deadline)
    published: list[Published] = []
    problems: list[str] = []
    failed: list[Failure] = []
    for location, answer in zip(locations, answers, strict=True):
        if answer is None:
            answer = [], [f"autoconfig ({location}): no answer within the deadline"], True
        published += answer[0]
        problems += answer[1]
        if answer[2]:
            failed += [Failure("autoconfig", p) for p in answer[1]]
    if published:
        # A mail client takes the document of the location that answered: a failure of
        # the other one hides nothing from it.
        failed = []
    return published, problems, failed


_Job = tuple[str, int, Protocol, Security | None]

#: At most this many names are listed in a "not contacted" problem line; the rest are
#: counted ("… and 985 more"): a hostile document must not make the output its own size.
LISTED_MAX: Final = 5


def listed(items: list[str], limit: int = LISTED_MAX) -> str:
    """``items`` comma-separated, the first ``limit`` of them and a count of the rest."""
    shown = ", ".join(items[:limit])
    return f"{shown} … and {len(items) - limit} more" if len(items) > limit else shown


class _Probes:
    """The port probes of one discovery, each started in its own daemon thread as soon as
    its host and port are known: the hosts the user named at once, the ones the domain's
    SRV and autoconfig name as each look-up answers, so a slow look-up never eats the time
    of the probes. At most :data:`MAX_HOSTS` hosts (first come, user-named first) and
    :data:`MAX_PORTS` ports each; what is over is counted for the problems."""

    def __init__(self, spec: DiscoverySpec, deadline: Deadline) -> None:
        self.spec = spec
        self.deadline = deadline
        self.lock = threading.Lock()
        self.hosts: list[str] = []
        self.keys: dict[str, list[tuple[Protocol, int]]] = {}
        self.jobs: list[_Job] = []
        self.box: list[Offered | None] = []
        self.threads: list[threading.Thread] = []
        self.hosts_over: list[str] = []
        self.ports_over: dict[str, list[str]] = {}
        self.closed = False

    def named(self, host: str) -> None:
        """Probe the ports asked for on ``host`` (named by the user)."""
        entries: list[tuple[Protocol, int, Security | None]] = []
        for port in self.spec.ports:
            hint: Security | None = (
                "tls" if port in self.spec.tls_ports else (None if port != 110 else "none")
            )
            entries.append(("pop3", port, hint))
        self.add(host, entries)

    def published(self, found: list[Published]) -> None:
        """Probe what a look-up found: the asked-for ports of every host it names first,
        then each published entry."""
        for p in found:
            self.named(p.host)
            self.add(p.host, [(p.protocol, p.port, p.security)])

    def add(self, host: str, entries: list[tuple[Protocol, int, Security | None]]) -> None:
        host = host.lower().rstrip(".")
        with self.lock:
            if self.closed:
                return
            if host not in self.keys:
                if len(self.hosts) >= MAX_HOSTS:
                    if host not in self.hosts_over:
                        self.hosts_over.append(host)
                    return
                self.hosts.append(host)
                self.keys[host] = []
            keys = self.keys[host]
            for protocol, port, hint in entries:
                if (protocol, port) in keys:
                    continue
                if len(keys) >= MAX_PORTS:
                    over = self.ports_over.setdefault(host, [])
                    if str(port) not in over:
                        over.append(str(port))
                    continue
                keys.append((protocol, port))
                self._start((host, port, protocol, hint))

    def _start(self, job: _Job) -> None:
        host, port, protocol, hint = job
        index = len(self.jobs)
        self.jobs.append(job)
        self.box.append(None)

        def run() -> None:
            self.box[index] = probe_port(
                host,
                port,
                hint,
                deadline=self.deadline,
                nameserver=self.spec.nameserver,
                ca_file=self.spec.ca_file,
                protocol=protocol,
            )

        thread = threading.Thread(target=run, name=f"discover-probe-{index}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def finish(self) -> tuple[tuple[str, ...], list[_Job], list[Offered | None], list[str]]:
        """Wait for the probes until the deadline; no probe starts after this. The hosts,
        the jobs, their answers (None: still running) and the problems of the caps."""
        with self.lock:
            self.closed = True
            threads = list(self.threads)
        for thread in threads:
            thread.join(max(0.0, self.deadline.remaining()))
        problems: list[str] = []
        if self.hosts_over:
            total = len(self.hosts) + len(self.hosts_over)
            problems.append(
                f"{total} hosts named; only the first {MAX_HOSTS} probed "
                f"({listed(self.hosts_over)} not contacted)"
            )
        for host, over in self.ports_over.items():
            total = len(self.keys[host]) + len(over)
            problems.append(
                f"{host}: {total} ports named; only {MAX_PORTS} probed "
                f"({listed(over)} not contacted)"
            )
        return tuple(self.hosts), list(self.jobs), list(self.box), problems


#: The error kinds of a probe that ran out of time: the port neither answered nor refused
#: within the deadline, so whether something listens there is unknown (a :class:`Failure`).
_TIMED_OUT: Final = frozenset({"timeout", "connect-timeout"})


def discover(spec: DiscoverySpec) -> Discovery:
    """Discover ``spec.domain``'s published connection types and probe its hosts' ports.

    Only CAPA, STLS and QUIT (POP3) and EHLO, STARTTLS and QUIT (published SMTP) are
    sent, only to the hosts the user named or the domain's own SRV/autoconfig records
    name, all within ``spec.timeout`` seconds. Never raises for anything the network or a
    server does: problems go into :attr:`Discovery.problems`, and what could not be
    looked at into :attr:`Discovery.failures` too.
    """
    t0 = time.perf_counter()
    deadline = Deadline(spec.timeout)
    domain = spec.domain.lower().rstrip(".") if spec.domain else None
    published: list[Published] = []
    problems: list[str] = []
    failures: list[Failure] = []
    probes = _Probes(spec, deadline)
    # The hosts the user named are probed from the start, beside the look-ups: a DNS or
    # web server that is slow or silent must not leave them no time.
    for host in spec.hosts:
        probes.named(host)
    if domain:
        lookups = Deadline(max(0.0, min(deadline.remaining(), spec.timeout * LOOKUP_SHARE)))

        def srv_part() -> _Found:
            found = _srv_published(domain, spec.nameserver, lookups)
            probes.published(found[0])
            return found

        def autoconfig_part() -> _Found:
            return _autoconfig_published(spec, domain, lookups, probes.published)

        both = _parallel([srv_part, autoconfig_part], deadline)
        parts: tuple[DiscoveryPart, DiscoveryPart] = ("srv", "autoconfig")
        for part, label in zip(both, parts, strict=True):
            if part is None:
                part = [], [], [Failure(label, f"{label}: no answer within the deadline")]
                problems.append(part[2][0].reason)
            published += part[0]
            problems += part[1]
            failures += part[2]
    if len(published) > MAX_PUBLISHED:
        problems.append(
            f"{len(published)} connection types published; only the first {MAX_PUBLISHED} "
            f"kept ({len(published) - MAX_PUBLISHED} ignored)"
        )
        published = published[:MAX_PUBLISHED]
    hosts, jobs, offered, more = probes.finish()
    problems += more
    # Probes start as their hosts become known (SRV and autoconfig race), so report them in
    # a stable order instead: the hosts the user named, then the published ones in the
    # order published, each host's ports ascending.
    order = {
        h.lower().rstrip("."): i
        for i, h in enumerate(dict.fromkeys([*spec.hosts, *(p.host for p in published)]))
    }

    def rank(host: str) -> int:
        return order.get(host.lower().rstrip("."), len(order))

    hosts = tuple(sorted(hosts, key=rank))
    paired = sorted(zip(jobs, offered, strict=True), key=lambda jo: (rank(jo[0][0]), jo[0][1]))
    jobs, offered = [j for j, _ in paired], [o for _, o in paired]
    if not hosts:
        problems.append("no host to probe: name one with --host (the domain publishes none)")
    results: list[Offered] = []
    for (host, port, protocol, hint), got in zip(jobs, offered, strict=True):
        if got is None:
            why = f"no answer within the deadline of {spec.timeout:g}s"
            failures.append(Failure("probe", f"{protocol.upper()} {host}:{port}: {why}"))
            got = Offered(
                host=host,
                port=port,
                security=hint or "none",
                protocol=protocol,
                answered=False,
                greeting=None,
                capabilities=(),
                stls_offered=False,
                cleartext_login_before_tls=(),
                tls_ok=None,
                error=why,
                elapsed=round(time.perf_counter() - t0, 3),
            )
        elif got.error_kind in _LOOKUP_FAILED:
            # Its host's name did not resolve for a reason other than "no such name":
            # whether something listens there is unknown, not "nothing answers".
            failures.append(Failure("probe", f"{protocol.upper()} {host}:{port}: {got.error}"))
        elif got.error_kind in _TIMED_OUT and not got.answered:
            # Neither an answer nor a refusal by the deadline (a blackholed port, a host
            # that is down, a server too slow): unknown, not "nothing listens there".
            why = f"no answer within the deadline of {spec.timeout:g}s ({got.error})"
            failures.append(Failure("probe", f"{protocol.upper()} {host}:{port}: {why}"))
        results.append(got)
    return Discovery(
        domain=domain,
        hosts=hosts,
        published=tuple(published),
        offered=tuple(results),
        problems=tuple(problems),
        elapsed=round(time.perf_counter() - t0, 3),
        failures=tuple(failures),
    )
