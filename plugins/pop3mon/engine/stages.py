"""The shared vocabulary of a probe, defined once: stages, phases, security modes, tiers,
check names and which check owns a failing stage.

Every other module (engine, config schema, checks, reports) imports these names instead of
spelling its own list, so a new stage or check is one edit here plus its rule. No pytest,
no imports from the rest of pop3mon.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

__all__ = [
    "ADDRESS_FAMILIES",
    "CHECKS",
    "CLEANUP_MODES",
    "COVERAGE_CHECKS",
    "COVERAGE_ID_PREFIX",
    "COVERAGE_LEVELS",
    "COVERAGE_TIER",
    "DELIVERY_PHASE",
    "DRIFT_CHECKS",
    "DRIFT_LEVELS",
    "FAMILY_LABELS",
    "HOST_CHECKS",
    "HOST_ID_PREFIX",
    "HOST_TIER",
    "LATENCY_PHASES",
    "PACING_MODES",
    "PHASE_LABELS",
    "PROTOCOLS",
    "SECURITY_MODES",
    "STAGES",
    "TIERS",
    "TLS_SECURITY",
    "TLS_VERSIONS",
    "AddressFamily",
    "CheckName",
    "CheckSpec",
    "Cleanup",
    "CoverageCheck",
    "CoverageLevel",
    "CoverageTier",
    "DriftCheck",
    "DriftLevel",
    "HostCheck",
    "HostTier",
    "Pacing",
    "Phase",
    "Protocol",
    "Security",
    "Stage",
    "StageSpec",
    "Tier",
    "checks_of",
    "stage_index",
    "stages_of",
]

#: The mail protocol a connection type speaks: POP3 (the mailbox) or SMTP (the companion
#: checks of the same server: MX inbound on 25, submission on 465/587; see engine/smtp.py).
Protocol = Literal["pop3", "smtp"]
PROTOCOLS: Final[tuple[Protocol, ...]] = get_args(Protocol)

#: How a connection type protects its session (the ``security:`` key of targets.yaml).
Security = Literal["none", "starttls-optional", "starttls", "tls"]
SECURITY_MODES: Final[tuple[Security, ...]] = get_args(Security)
#: How the logins of one server take turns within a run (see engine/pacing.py).
Pacing = Literal["serial", "parallel"]
PACING_MODES: Final[tuple[Pacing, ...]] = get_args(Pacing)
#: The modes that negotiate TLS at some point (implicit, or after STLS).
TLS_SECURITY: Final[frozenset[Security]] = frozenset({"starttls", "starttls-optional", "tls"})

TLS_VERSIONS: Final[tuple[str, ...]] = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")

#: What the opt-in mail round trip may delete (``round_trip: {cleanup}``): nothing, or only
#: messages carrying this monitor's tag with a valid HMAC of it (engine/roundtrip.py).
Cleanup = Literal["off", "own-probe-messages"]
CLEANUP_MODES: Final[tuple[Cleanup, ...]] = get_args(Cleanup)

#: Which IP version a connection type may use (the ``address_family:`` key): ``auto``
#: races every resolved address (RFC 8305), the others resolve and connect in one family.
AddressFamily = Literal["auto", "ipv4", "ipv6"]
ADDRESS_FAMILIES: Final[tuple[AddressFamily, ...]] = get_args(AddressFamily)
#: How reasons name a restricted family.
FAMILY_LABELS: Final[Mapping[AddressFamily, str]] = {
    "auto": "IPv4 or IPv6",
    "ipv4": "IPv4",
    "ipv6": "IPv6",
}

#: The report tiers, in the order a run shows them.
Tier = Literal["connectivity", "tls", "auth", "mailbox", "latency", "drift"]
TIERS: Final[tuple[Tier, ...]] = get_args(Tier)

#: The host checks (engine/hosts.py): one PING and one TCP check per server entry, probed
#: once per run and shared by its connection types. They are their own tier, apart from
#: ``TIERS`` (whose checks are per connection type); a connection type whose host is down
#: SKIPs every check with ``blocked_by`` = ``HOST_TIER``.
HostTier = Literal["host"]
HOST_TIER: Final[HostTier] = "host"
HostCheck = Literal["ping", "tcp"]
HOST_CHECKS: Final[tuple[HostCheck, ...]] = get_args(HostCheck)
#: How a host test's parameter (and its records' ``ct``) names its server: ``host:mail1``.
HOST_ID_PREFIX: Final = "host:"

#: The coverage checks (checks/coverage.py): one set per server with ``coverage:`` on, run
#: once per run on what the discovery engine (engine/discovery.py) finds for it, compared
#: with the whole targets file. Their own tier, apart from ``TIERS`` like the host checks
#: (a server's, not a connection type's; reports list it after the other tiers).
CoverageTier = Literal["coverage"]
COVERAGE_TIER: Final[CoverageTier] = "coverage"
CoverageCheck = Literal["coverage-unmonitored", "coverage-published", "coverage-autoconfig"]
COVERAGE_CHECKS: Final[tuple[CoverageCheck, ...]] = get_args(CoverageCheck)
#: How a coverage test's parameter (and its records' ``ct``) names its server.
COVERAGE_ID_PREFIX: Final = "server:"
#: What a coverage finding gives (``coverage: {unmonitored, cleartext_unmonitored}``).
CoverageLevel = Literal["warn", "crit"]
COVERAGE_LEVELS: Final[tuple[CoverageLevel, ...]] = get_args(CoverageLevel)

#: Every check of the tiers except latency (whose checks are ``latency-<phase>``).
CheckName = Literal[
    "dns",
    "ping",
    "tcp",
    "greeting",
    "capa",
    "stls",
    "handshake",
    "certificate",
    "expiry",
    "protocol",
    "login",
    "policy",
    "relay",
    "stat",
    "thresholds",
    "logout",
    "certificate_changed",
    "capabilities_changed",
    "credentials_changed",
    "mailbox_changed",
]

#: The drift checks (compared with the baseline the history keeps, see checks/drift.py);
#: each one's level is the ``drift:`` key of targets.yaml with the same name.
DriftCheck = Literal[
    "certificate_changed", "capabilities_changed", "credentials_changed", "mailbox_changed"
]
DRIFT_CHECKS: Final[tuple[DriftCheck, ...]] = get_args(DriftCheck)
#: What a drift check that fires gives: WARN, CRIT, or ``off`` (the check SKIPs).
DriftLevel = Literal["warn", "crit", "off"]
DRIFT_LEVELS: Final[tuple[DriftLevel, ...]] = get_args(DriftLevel)

#: The stages of a session, in the order it runs them. Phase timings use the same names.
Stage = Literal[
    "dns",
    "ping",
    "connect",
    "tls",  # implicit TLS handshake (security: tls)
    "greeting",
    "capa",
    "ehlo",  # SMTP
    "stls",
    "starttls",  # SMTP
    "tls_handshake",  # handshake after STLS (POP3) or STARTTLS (SMTP)
    "capa_tls",
    "ehlo_tls",  # SMTP: EHLO again over TLS
    "relay",  # SMTP: MAIL FROM/RCPT TO/RSET relay refusal, only when configured
    "auth",
    "stat",
    "quit",
]
#: A latency phase: a stage, or the whole session.
Phase = Stage | Literal["total"]


@dataclass(frozen=True)
class CheckSpec:
    """One non-latency check: its tier and name, in report order, and the protocols it
    applies to (a connection type of another protocol has no such check at all: no test,
    no row in any report)."""

    tier: Tier
    name: CheckName
    protocols: tuple[Protocol, ...] = PROTOCOLS


CHECKS: Final[tuple[CheckSpec, ...]] = (
    CheckSpec("connectivity", "dns"),
    CheckSpec("connectivity", "ping"),
    CheckSpec("connectivity", "tcp"),
    CheckSpec("connectivity", "greeting"),
    CheckSpec("connectivity", "capa"),
    CheckSpec("tls", "stls"),
    CheckSpec("tls", "handshake"),
    CheckSpec("tls", "certificate"),
    CheckSpec("tls", "expiry"),
    CheckSpec("tls", "protocol"),
    CheckSpec("auth", "login"),
    CheckSpec("auth", "policy"),
    CheckSpec("auth", "relay", ("smtp",)),
    CheckSpec("mailbox", "stat", ("pop3",)),
    CheckSpec("mailbox", "thresholds", ("pop3",)),
    CheckSpec("mailbox", "logout"),
    CheckSpec("drift", "certificate_changed"),
    CheckSpec("drift", "capabilities_changed"),
    CheckSpec("drift", "credentials_changed"),
    CheckSpec("drift", "mailbox_changed", ("pop3",)),
)
assert tuple(c.name for c in CHECKS) == get_args(CheckName), "CHECKS must list every CheckName"
assert tuple(c.name for c in CHECKS if c.tier == "drift") == DRIFT_CHECKS, "drift rows"


@dataclass(frozen=True)
class StageSpec:
    """One stage: its name, how reports label it, the check whose verdict is CRIT when
    it fails (a TLS stage's owner also depends on the failure kind, see ``checks.owner``),
    and the protocols whose sessions run it."""

    name: Stage
    label: str
    owner: CheckName
    protocols: tuple[Protocol, ...] = PROTOCOLS


STAGES: Final[tuple[StageSpec, ...]] = (
    StageSpec("dns", "DNS", "dns"),
    StageSpec("ping", "PING", "ping"),
    StageSpec("connect", "TCP connect", "tcp"),
    StageSpec("tls", "TLS handshake", "handshake"),
    StageSpec("greeting", "greeting", "greeting"),
    StageSpec("capa", "CAPA", "capa", ("pop3",)),
    StageSpec("ehlo", "EHLO", "capa", ("smtp",)),
    StageSpec("stls", "STLS", "stls", ("pop3",)),
    StageSpec("starttls", "STARTTLS", "stls", ("smtp",)),
    StageSpec("tls_handshake", "TLS handshake (after STLS)", "handshake"),
    StageSpec("capa_tls", "CAPA after TLS", "capa", ("pop3",)),
    StageSpec("ehlo_tls", "EHLO after TLS", "capa", ("smtp",)),
    StageSpec("relay", "relay refusal (MAIL FROM/RCPT TO/RSET)", "relay", ("smtp",)),
    StageSpec("auth", "authentication", "login"),
    StageSpec("stat", "STAT", "stat", ("pop3",)),
    StageSpec("quit", "QUIT", "logout"),
)
assert tuple(s.name for s in STAGES) == get_args(Stage), "STAGES must list every Stage in order"

#: Every latency phase a targets file may set thresholds for: the stages, then ``total``.
LATENCY_PHASES: Final[tuple[Phase, ...]] = (*get_args(Stage), "total")
#: The round trip's delivery time (send to seen in the mailbox): a latency check
#: (``latency-delivery``) of a POP3 connection type with ``round_trip:``, judged against the
#: round trip's own warn/crit; not a stage of the session, so not in LATENCY_PHASES.
DELIVERY_PHASE: Final = "delivery"
PHASE_LABELS: Final[Mapping[str, str]] = {
    **{s.name: s.label for s in STAGES},
    "total": "total",
    DELIVERY_PHASE: "mail round trip delivery",
}
_INDEX: Final[Mapping[str, int]] = {s.name: i for i, s in enumerate(STAGES)}


def checks_of(protocol: str) -> tuple[CheckName, ...]:
    """The (non-latency) checks a connection type of ``protocol`` has, in report order."""
    return tuple(c.name for c in CHECKS if protocol in c.protocols)


def stages_of(protocol: str) -> tuple[Stage, ...]:
    """The stages a session of ``protocol`` can run, in order."""
    return tuple(s.name for s in STAGES if protocol in s.protocols)


def stage_index(stage: str) -> int:
    """Position of ``stage`` in session order (unknown names sort last)."""
    return _INDEX.get(stage, len(_INDEX))
