"""Inputs and outputs of one probe: the frozen :class:`ProbeSpec` and :class:`ProbeResult`.

Results hold only plain data (str, int, float, bool, tuples, nested frozen dataclasses) so
they serialise to JSON losslessly: xdist workers share them through a run directory and the
reports write them out. Server-controlled text in a result is already sanitised.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ..secrets import Secret
from .defaults import DEFAULTS
from .mechanisms import MECHANISMS
from .stages import AddressFamily, Cleanup, Pacing, Protocol, Security

__all__ = [
    "AuthInfo",
    "CertInfo",
    "MailboxInfo",
    "PingInfo",
    "ProbeResult",
    "ProbeSpec",
    "RoundTripInfo",
    "RoundTripSpec",
    "StageOutcome",
    "TLSInfo",
    "TranscriptLine",
]


@dataclass(frozen=True)
class RoundTripSpec:
    """The opt-in mail round trip of a POP3 connection type (engine/roundtrip.py).

    ``via`` is the SMTP submission connection type's spec (its own login); the message goes
    from ``sender`` to ``recipient`` and must appear in the POP3 mailbox within
    ``timeout`` seconds; ``warn``/``crit`` judge the delivery time. ``hmac_key`` signs the
    tag (``None``: no key, or it could not be read: ``key_problem`` says why); cleanup
    deletes only messages whose tag carries a valid HMAC made with it.
    """

    via: ProbeSpec
    recipient: str
    sender: str
    warn: float = DEFAULTS.round_trip_warn
    crit: float = DEFAULTS.round_trip_crit
    timeout: float = DEFAULTS.round_trip_timeout
    cleanup: Cleanup = "off"
    hmac_key: Secret | None = field(default=None, repr=False, compare=False)
    key_problem: str = ""


@dataclass(frozen=True)
class ProbeSpec:
    """Everything the engine needs to probe one connection type.

    ``address`` pins the IP to connect to while ``host`` stays the name used for SNI and
    certificate checks. ``address_family`` restricts resolution and connection to IPv4 or
    IPv6; ``auto`` races all resolved addresses (RFC 8305). ``secret`` is ``None`` when no
    login is wanted or when the secret could not be loaded; then ``secret_problem`` says
    why and auth is reported as failed without any byte of a credential being sent.
    ``retries`` is how many more times a transient failure before the login is probed
    again, ``retry_backoff`` seconds apart (:mod:`.retry`; :func:`~.dispatch.probe` itself
    always probes once).

    Defaults come from :data:`~pop3mon.engine.defaults.DEFAULTS`, as config's do; the
    empty strings mean "none" (no login name, system CA store, resolve ``host``).
    """

    id: str
    host: str
    port: int
    security: Security = DEFAULTS.security
    auth: str = DEFAULTS.auth
    username: str = ""
    secret: Secret | None = field(default=None, repr=False, compare=False)
    secret_problem: str = ""
    allow_cleartext: bool = DEFAULTS.allow_cleartext
    ca_file: str = ""
    min_tls_version: str = DEFAULTS.min_tls_version
    verify_tls: bool = DEFAULTS.verify_tls
    timeout: float = DEFAULTS.timeout
    ping: bool = DEFAULTS.ping
    ping_timeout: float = DEFAULTS.ping_timeout
    address: str = ""
    collect_uidl: bool = DEFAULTS.collect_uidl
    login_pacing: Pacing = DEFAULTS.login_pacing
    address_family: AddressFamily = DEFAULTS.address_family
    retries: int = DEFAULTS.retries
    retry_backoff: float = DEFAULTS.retry_backoff
    # The host check's PING (engine/hosts.py), made once for every connection type of the
    # host: the probe reuses it instead of sending its own echo.
    ping_result: PingInfo | None = field(default=None, compare=False)
    # SMTP (engine/smtp.py): the protocol spoken; the recipient of the relay-refusal check
    # ("" = no MAIL FROM/RCPT TO at all); the EHLO name ("" = the address literal of the
    # probe's own end of the connection, which needs no DNS and is always RFC-valid).
    protocol: Protocol = "pop3"
    relay_check: str = ""
    ehlo_name: str = ""
    # The opt-in mail round trip (POP3 only; engine/roundtrip.py), None: not configured.
    round_trip: RoundTripSpec | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # The one secret rule holds for every spec, not only those built from a targets
        # file: a secret it refuses is dropped here, so no mechanism can send it.
        if self.secret is None:
            return
        kind = next((m.secret for m in MECHANISMS.values() if m.name == self.auth), "password")
        problem = self.secret.problem(kind)
        if problem:
            object.__setattr__(self, "secret", None)
            object.__setattr__(self, "secret_problem", f"the {kind} is refused: it {problem}")


#: How a stage ended.
StageStatus = Literal["ok", "fail", "skip", "warn"]


@dataclass(frozen=True)
class StageOutcome:
    """What happened in one stage. ``kind`` is an :data:`~.errors.ErrorKind` on a failure,
    a warning's own identifier on ``warn``, else empty."""

    stage: str
    status: StageStatus
    kind: str = ""
    reason: str = ""


@dataclass(frozen=True)
class PingInfo:
    """ICMP echo result. ``status``: ok, fail, no-permission, disabled."""

    status: str
    rtt_seconds: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class CertInfo:
    """Facts about the leaf certificate, recorded whether or not it verified."""

    subject: str
    issuer: str
    sans: tuple[str, ...]
    serial: str
    sha256: str
    not_before: str  # ISO 8601 UTC
    not_after: str  # ISO 8601 UTC
    not_after_epoch: float
    days_left: float
    self_signed: bool


@dataclass(frozen=True)
class TLSInfo:
    """Negotiated TLS parameters and the verification outcome."""

    protocol: str = ""
    cipher: str = ""
    verified: bool = False
    verify_kind: str = ""
    verify_reason: str = ""
    sni: str = ""
    cert: CertInfo | None = None
    #: Unix times, set only after a completed handshake (see ``tls.chain_expiries``):
    #: earliest expiry among the presented certificates, and in the verified chain.
    chain_earliest_expiry: float | None = None
    verified_chain_earliest_expiry: float | None = None


@dataclass(frozen=True)
class AuthInfo:
    """The login attempt. ``strength``: cleartext, weak, strong, token. ``secret_sent``:
    the secret itself (PASS, PLAIN, LOGIN, a token) went out, encrypted or not; a login
    refused before that point sent none."""

    mechanism: str = ""
    strength: str = ""
    encrypted: bool = False
    success: bool = False
    response_code: str = ""
    reason: str = ""
    offered: tuple[str, ...] = ()
    secret_sent: bool = False


@dataclass(frozen=True)
class MailboxInfo:
    """STAT answer."""

    count: int
    size: int
    uidl_count: int | None = None


#: How a round trip ended: delivered (seen in the mailbox), timeout (not seen within its
#: deadline), send-failed (the SMTP session did not hand the message over), poll-failed
#: (a POP3 poll session failed), not-run (the POP3 login of the run failed first).
RoundTripStatus = Literal["delivered", "timeout", "send-failed", "poll-failed", "not-run"]


@dataclass(frozen=True)
class RoundTripInfo:
    """What the round trip found. ``delivery`` is seconds from the server's 250 to the
    message's end of DATA until the poll that saw it in the mailbox (an upper bound: polls
    are spaced); ``logins`` counts its own logins (1 SMTP + the POP3 polls); ``deleted`` the
    messages cleanup removed (own, HMAC verified); ``kept`` the tagged look-alikes whose
    HMAC did not verify (never deleted)."""

    status: RoundTripStatus
    via: str
    reason: str = ""
    tag: str = ""
    delivery: float | None = None
    polls: int = 0
    logins: int = 0
    deleted: int = 0
    kept: int = 0
    cleanup: str = "off"
    transcript: tuple[TranscriptLine, ...] = ()


@dataclass(frozen=True)
class TranscriptLine:
    """One redacted line of the dialogue. ``direction`` is C (client) or S (server)."""

    t: float
    direction: str
    text: str


@dataclass(frozen=True)
class ProbeResult:
    """The frozen outcome of probing one connection type once."""

    id: str
    host: str
    port: int
    security: str
    mechanism: str
    started_at: float  # epoch seconds
    phases: tuple[tuple[str, float], ...] = ()  # (phase, seconds) in run order; absent = not run
    stages: tuple[StageOutcome, ...] = ()
    addresses: tuple[str, ...] = ()
    peer: str = ""
    ping: PingInfo | None = None
    greeting: str = ""
    apop_timestamp: bool = False
    capabilities_before: tuple[str, ...] | None = None
    capabilities_after: tuple[str, ...] | None = None
    stls_offered: bool | None = None
    downgradable: bool = False
    injection: bool = False
    tls: TLSInfo | None = None
    auth: AuthInfo | None = None
    mailbox: MailboxInfo | None = None
    transcript: tuple[TranscriptLine, ...] = ()
    error_kind: str = ""
    error_stage: str = ""
    error_reason: str = ""
    cpu_seconds: float = 0.0
    # Seconds the login waited for its turn (login pacing; not in the deadline, the auth
    # phase or the total) and why, naming the connection type that caused it.
    login_wait: float = 0.0
    login_wait_reason: str = ""
    # Why the login went while the server could still be delaying it (latency not judged).
    login_exposed: str = ""
    # In-run retries (engine/retry.py): how many times this connection type was probed in
    # the run (1: once), the failing stage of each earlier attempt in order (attempt 1
    # first; everything else in the result is the last attempt's), and why a failure that
    # is transient by its kind was not probed again (a login had been made or sent).
    attempts: int = 1
    retried: tuple[StageOutcome, ...] = ()
    not_retried: str = ""
    # The host that is down when this connection type was not probed at all (its host, or
    # the first failing host it depends on: engine/hosts.py); "" when it was probed.
    blocked_host: str = ""
    # SMTP: the protocol, and the relay-refusal check's finding (None: not configured or
    # not reached; True: the server accepted a foreign recipient without a login).
    protocol: str = "pop3"
    relay_open: bool | None = None
    relay_reply: str = ""
    # The opt-in mail round trip (engine/roundtrip.py); None: not configured for this one.
    round_trip: RoundTripInfo | None = None

    # -- convenience -------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        """True when no stage failed."""
        return not self.error_kind

    def phase(self, name: str) -> float | None:
        """Seconds spent in ``name`` or ``None`` when the phase did not run."""
        for key, value in self.phases:
            if key == name:
                return value
        return None

    def stage(self, name: str) -> StageOutcome | None:
        """The outcome of stage ``name`` or ``None`` when it never ran."""
        for outcome in self.stages:
            if outcome.stage == name:
                return outcome
        return None

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with stable keys."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Serialise to JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        """Inverse of :meth:`to_dict`."""
        d = dict(data)
        d["phases"] = tuple((str(k), float(v)) for k, v in d.get("phases", ()))
        d["stages"] = tuple(StageOutcome(**s) for s in d.get("stages", ()))
        d["retried"] = tuple(StageOutcome(**s) for s in d.get("retried", ()))
        d["addresses"] = tuple(d.get("addresses", ()))
        d["transcript"] = tuple(TranscriptLine(**t) for t in d.get("transcript", ()))
        for key in ("capabilities_before", "capabilities_after"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        if d.get("ping") is not None:
            d["ping"] = PingInfo(**d["ping"])
        if d.get("tls") is not None:
            tls = dict(d["tls"])
            if tls.get("cert") is not None:
                cert = dict(tls["cert"])
                cert["sans"] = tuple(cert["sans"])
                tls["cert"] = CertInfo(**cert)
            d["tls"] = TLSInfo(**tls)
        if d.get("auth") is not None:
            auth = dict(d["auth"])
            auth["offered"] = tuple(auth.get("offered", ()))
            d["auth"] = AuthInfo(**auth)
        if d.get("mailbox") is not None:
            d["mailbox"] = MailboxInfo(**d["mailbox"])
        if d.get("round_trip") is not None:
            rt = dict(d["round_trip"])
            rt["transcript"] = tuple(TranscriptLine(**t) for t in rt.get("transcript", ()))
            d["round_trip"] = RoundTripInfo(**rt)
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> ProbeResult:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))
