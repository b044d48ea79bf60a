"""DNS look-ups of discovery: RFC 6186 SRV records and the addresses of discovered hosts,
through dnspython, optionally at one given nameserver (``IP[:PORT]``), within a deadline.

Without a nameserver the SRV query uses the system's resolv.conf and addresses come from
the engine's own :func:`~.dns.resolve` (getaddrinfo, so /etc/hosts counts as it does for a
probe); with one, both go to that server only, so a test zone (or a split-horizon view)
is asked consistently.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .dns import resolve
from .errors import ResolveError
from .stages import Protocol, Security
from .wire import Deadline

if TYPE_CHECKING:
    import dns.resolver

# dnspython is imported where a look-up happens: only discovery and the coverage tier use
# it, and importing it cost every monitoring run's start-up about 40 ms.

__all__ = ["SRV_SERVICES", "SrvRecord", "SrvService", "parse_nameserver", "resolve_host", "srv"]


@dataclass(frozen=True)
class SrvService:
    """One RFC 6186 service label and what it means."""

    label: str  # "_pop3s._tcp"
    protocol: Protocol
    security: Security  # as RFC 6186 §3.1/RFC 8314 define it: "_pop3" is STLS-capable


#: The RFC 6186 (and RFC 8314 for ``_submissions``) services discovery asks for.
SRV_SERVICES: Final[tuple[SrvService, ...]] = (
    SrvService("_pop3._tcp", "pop3", "starttls"),
    SrvService("_pop3s._tcp", "pop3", "tls"),
    SrvService("_submission._tcp", "smtp", "starttls"),
    SrvService("_submissions._tcp", "smtp", "tls"),
)

#: Records per SRV answer kept: more is a hostile or broken zone, not a mail service.
MAX_SRV_RECORDS: Final = 16


@dataclass(frozen=True)
class SrvRecord:
    """One SRV answer. ``target`` is "" for RFC 6186's "." (service not offered)."""

    service: SrvService
    owner: str  # "_pop3s._tcp.example.com"
    priority: int
    weight: int
    port: int
    target: str

    @property
    def text(self) -> str:
        """The record as a zone file would show it."""
        return (
            f"{self.owner} SRV {self.priority} {self.weight} {self.port} "
            f"{self.target + '.' if self.target else '.'}"
        )


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"IP"``, ``"IP:PORT"`` or ``"[IPv6]:PORT"`` → (ip, port). Raises ValueError."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"nameserver {text!r}: expected [IPv6]:PORT")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, raw = text.partition(":")
        port = _port(raw, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {text!r}: not an IP address (IP or IP:PORT)") from None
    return host, port


def _port(raw: str, text: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"nameserver {text!r}: port must be 1-65535")
    return int(raw)


def _resolver(nameserver: str | None) -> dns.resolver.Resolver:
    import dns.resolver

    if nameserver is None:
        return dns.resolver.Resolver()
    ip, port = parse_nameserver(nameserver)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [ip]
    resolver.port = port
    return resolver


def _query(
    name: str, rdtype: str, nameserver: str | None, deadline: Deadline
) -> dns.resolver.Answer | None:
    """One query within the deadline; None when the name or the type has no answer."""
    import dns.exception
    import dns.resolver

    resolver = _resolver(nameserver)
    lifetime = deadline.remaining()
    if lifetime <= 0:
        raise ResolveError(f"no time left to ask for {name} {rdtype}", kind="dns-timeout")
    resolver.lifetime = lifetime
    resolver.timeout = lifetime
    try:
        return resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return None
    except dns.resolver.LifetimeTimeout:
        raise ResolveError(
            f"DNS query {name} {rdtype} did not answer within the deadline",
            kind="dns-timeout",
            stage="dns",
        ) from None
    except dns.exception.DNSException as exc:
        raise ResolveError(f"DNS query {name} {rdtype} failed: {exc}", stage="dns") from None


def srv(
    domain: str, service: SrvService, nameserver: str | None, deadline: Deadline
) -> tuple[SrvRecord, ...]:
    """The SRV records of ``service`` under ``domain`` (empty: none published), in
    RFC 2782 order (priority, then heavier weight first). Raises :class:`ResolveError`."""
    import dns.name

    owner = f"{service.label}.{domain.rstrip('.')}"
    answer = _query(owner, "SRV", nameserver, deadline)
    if answer is None or answer.rrset is None:
        return ()
    records = []
    for rdata in list(answer.rrset)[:MAX_SRV_RECORDS]:
        target = rdata.target.to_text(omit_final_dot=True)
        records.append(
            SrvRecord(
                service=service,
                owner=owner,
                priority=int(rdata.priority),
                weight=int(rdata.weight),
                port=int(rdata.port),
                target="" if rdata.target == dns.name.root else target.lower(),
            )
        )
    return tuple(sorted(records, key=lambda r: (r.priority, -r.weight, r.target, r.port)))


def resolve_host(
    host: str, port: int, nameserver: str | None, deadline: Deadline
) -> tuple[str, ...]:
    """The addresses of a discovered host: through ``nameserver`` (A then AAAA) when given,
    else the engine's own resolver. Raises a :class:`ProbeError` (stage ``dns``)."""
    import dns.inet

    if nameserver is None or dns.inet.is_address(host):
        return resolve(host, port, deadline)
    addresses: list[str] = []
    for rdtype in ("A", "AAAA"):
        answer = _query(host, rdtype, nameserver, deadline)
        if answer is not None and answer.rrset is not None:
            addresses += [r.to_text() for r in answer.rrset if r.to_text() not in addresses]
    if not addresses:
        raise ResolveError(
            f"DNS lookup of {host} at {nameserver} returned no address",
            kind="dns-nxdomain",
            stage="dns",
        )
    return tuple(addresses)
