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

import time
from dataclasses import dataclass, field
from typing import Final, Literal

from .stages import Protocol, Security

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
    # Which autoconfig schemes to try, in order (https first, like Thunderbird).
    autoconfig_schemes: tuple[Literal["https", "http"], ...] = field(default=("https", "http"))


def discover(spec: DiscoverySpec) -> Discovery:
    """Discover ``spec.domain``'s published connection types and probe its hosts' ports.

    Never raises for anything the network or a server does: problems go into
    :attr:`Discovery.problems`.
    """
    t0 = time.perf_counter()
    return Discovery(
        domain=spec.domain,
        hosts=spec.hosts,
        published=(),
        offered=(),
        problems=("discovery not implemented yet",),
        elapsed=time.perf_counter() - t0,
    )
