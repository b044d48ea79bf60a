"""The one table of default values: what a probe does when nothing says otherwise.

A setting given nowhere in ``targets.yaml`` (not on the connection, its server or under
``defaults:``) takes its value from :data:`DEFAULTS` through config's built-in cascade
layer, and a :class:`~pop3mon.engine.result.ProbeSpec` built in code (benchmarks, tests)
takes the same values as its field defaults. Both read this table, so what the docs call
"the built-in default" cannot differ between the two ways in.

This module imports nothing from pytest or from config (only the engine's own vocabulary
in :mod:`.stages`): the engine must stay usable on its own, and config depends on the
engine, not the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

from .stages import (
    DRIFT_CHECKS,
    AddressFamily,
    CoverageLevel,
    DriftCheck,
    DriftLevel,
    Pacing,
    Security,
)

__all__ = ["DEFAULTS", "Defaults", "DriftPolicy"]


@dataclass(frozen=True)
class DriftPolicy:
    """The ``drift:`` settings of a connection type: each drift check's level (a field per
    :data:`~pop3mon.engine.stages.DRIFT_CHECKS`, named like it) and how far the mailbox may
    move from its baseline before ``mailbox_changed`` fires (0.5: by half either way)."""

    certificate_changed: DriftLevel
    capabilities_changed: DriftLevel
    credentials_changed: DriftLevel
    mailbox_changed: DriftLevel
    mailbox_ratio: float

    def level(self, check: DriftCheck) -> DriftLevel:
        """The level of one drift check."""
        level: DriftLevel = getattr(self, check)
        return level


assert {f.name for f in fields(DriftPolicy)} == {*DRIFT_CHECKS, "mailbox_ratio"}, "drift keys"


@dataclass(frozen=True)
class Defaults:
    """Default values; field names are the ``targets.yaml`` keys (``security``, ``auth``).

    The engine's :class:`~pop3mon.engine.result.ProbeSpec` uses the same names; where a
    key is nested or spelled differently, the comment gives its ``targets.yaml`` form.
    Thresholds are ``(warn, crit)`` pairs as in :class:`~pop3mon.config.ConnectionType`.
    """

    security: Security  # targets.yaml `security:` has no default; only ProbeSpec uses this
    auth: str  # targets.yaml `auth:`
    pop3_port: int  # `port:` when security is none, starttls-optional or starttls
    pop3s_port: int  # `port:` when security is tls
    smtp_port: int  # an `smtp:` entry's `port:` when security is not tls (MX inbound)
    smtps_port: int  # an `smtp:` entry's `port:` when security is tls (RFC 8314)
    timeout: float
    ping: bool
    ping_timeout: float
    min_tls_version: str
    verify_tls: bool
    allow_cleartext: bool
    collect_uidl: bool
    address_family: AddressFamily
    cert_warn_days: int  # `cert: {warn_days}`
    cert_crit_days: int  # `cert: {crit_days}`
    latency_total: tuple[float, float]  # `latency: {total: {warn, crit}}`
    concurrency: int  # probes in flight at once (--probe-concurrency)
    login_pacing: Pacing  # `login_pacing:` serial | parallel (see engine/pacing.py)
    login_wait_max: float  # most seconds one login waits for its turn (not configurable)
    retries: int  # `retries:` extra probes after a transient failure before the login
    retry_backoff: float  # `retry_backoff:` seconds between one attempt and the next
    retries_max: int  # the largest `retries:` a targets file may ask for
    retry_backoff_max: float  # the largest `retry_backoff:` a targets file may ask for
    confirm: int  # `confirm:` runs a CRIT must hold before it is hard (history/states.py)
    history_retention_days: int  # `history: {retention_days}`
    history_lock_timeout: float  # `history: {lock_timeout}` seconds to wait for the writer lock
    flapping_changes: int  # `history: {flapping: {changes}}`: more changes than this ...
    flapping_runs: int  # `history: {flapping: {runs}}`: ... in this many runs is flapping
    drift: DriftPolicy  # `drift: {certificate_changed: warn, ..., mailbox_ratio}`
    round_trip_warn: float  # `round_trip: {warn}` seconds of delivery time
    round_trip_crit: float  # `round_trip: {crit}`
    round_trip_timeout: float  # `round_trip: {timeout}` seconds to wait for the message
    round_trip_polls: int  # most POP3 poll logins one round trip makes (not configurable)
    coverage_unmonitored: CoverageLevel  # `coverage: {unmonitored}`
    coverage_cleartext_unmonitored: CoverageLevel  # `coverage: {cleartext_unmonitored}`
    coverage_ports: tuple[int, ...]  # the POP3 ports coverage always probes (+ `ports:`)


DEFAULTS: Final = Defaults(
    security="tls",
    # "auto" picks the strongest mechanism the server offers that policy allows.
    auth="auto",
    pop3_port=110,
    pop3s_port=995,
    smtp_port=25,
    smtps_port=465,
    # Seconds for the WHOLE probe (DNS to QUIT), not per read.
    timeout=10.0,
    # Many hosts drop ICMP, so a ping failure by default would be noise.
    ping=False,
    ping_timeout=1.0,
    min_tls_version="TLSv1.2",
    verify_tls=True,
    # Never send a password over an unencrypted connection unless asked to.
    allow_cleartext=False,
    collect_uidl=False,
    # Both families, raced: a dual-stack server with one broken family still answers.
    address_family="auto",
    cert_warn_days=21,
    cert_crit_days=7,
    latency_total=(2.0, 5.0),
    concurrency=32,
    # One login at a time per server: the run's own refused login must not cost the others.
    login_pacing="serial",
    # Dovecot's longest penalty (15 s) twice over: a login never waits longer than this.
    login_wait_max=30.0,
    # A run reports what it saw; retrying is opt-in, and never repeats a login
    # (engine/retry.py). The bounds keep a run's wall time within (retries + 1) x timeout
    # plus the backoffs: a scheduled run must end before the next one starts.
    retries=0,
    retry_backoff=1.0,
    retries_max=3,
    retry_backoff_max=30.0,
    # Nagios' max_check_attempts 1: a CRIT is hard (and notified) at once unless asked.
    confirm=1,
    history_retention_days=90,
    # Long enough for an overlapping run's write (a second at 1000 connection types).
    history_lock_timeout=10.0,
    # Nagios flags flapping near 20-50% state changes over 21 checks; 4 of 10 runs is
    # a changing state every other run or so.
    flapping_changes=4,
    flapping_runs=10,
    # The "named WARN": drift is news, not an outage (the login check is already
    # CRIT when the password is refused; credentials_changed says why).
    drift=DriftPolicy(
        certificate_changed="warn",
        capabilities_changed="warn",
        credentials_changed="warn",
        mailbox_changed="warn",
        mailbox_ratio=0.5,
    ),
    # A submission server hands a message to the mailbox within seconds; minutes is a queue.
    round_trip_warn=30.0,
    round_trip_crit=120.0,
    round_trip_timeout=180.0,
    # Each poll is a login (a POP3 session never sees mail that arrives after its login):
    # backing off 0.25 s -> 15 s, a 180 s deadline needs 17; the cap bounds any deadline.
    round_trip_polls=20,
    # A forgotten listener is news; one that takes a password in clear is the hazard the
    # brief warns about ("one monitor per every POP3 connection type").
    coverage_unmonitored="warn",
    coverage_cleartext_unmonitored="crit",
    coverage_ports=(110, 995),
)
