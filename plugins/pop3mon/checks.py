"""From one :class:`ProbeResult` to the verdict of every tier check (no pytest here).

Each check has a tier, a name and the probe stage it depends on. The verdict rules:

* the check's own stage failed → CRIT with the engine's reason;
* an earlier stage failed → SKIP naming the dependency that failed and why, so a report
  states the root cause once (PING/DNS/TCP failure skips everything after it; a TLS
  failure skips auth and mailbox — pop3mon never falls back to plaintext);
* otherwise the check's own thresholds decide OK / WARN / CRIT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .engine.result import ProbeResult, StageOutcome

__all__ = [
    "CHECKS",
    "CRIT",
    "OK",
    "SKIP",
    "WARN",
    "Check",
    "CheckResult",
    "Thresholds",
    "evaluate",
    "evaluate_all",
]

OK, WARN, CRIT, SKIP = "OK", "WARN", "CRIT", "SKIP"
TLS_MODES = ("starttls", "starttls-optional", "tls")
# The stage order of a session; implicit TLS ("tls") comes before the greeting.
ORDER = (
    "dns",
    "ping",
    "connect",
    "tls",
    "greeting",
    "capa",
    "stls",
    "tls_handshake",
    "capa_tls",
    "auth",
    "stat",
    "quit",
)
PHASE_LABELS = {
    "dns": "DNS",
    "ping": "PING",
    "connect": "TCP connect",
    "tls": "TLS handshake",
    "greeting": "greeting",
    "capa": "CAPA",
    "stls": "STLS",
    "tls_handshake": "TLS handshake (after STLS)",
    "capa_tls": "CAPA after TLS",
    "auth": "authentication",
    "stat": "STAT",
    "quit": "QUIT",
    "total": "total",
}


class Thresholds(Protocol):
    """What a connection type contributes to verdicts (``config.ConnectionType`` fits)."""

    @property
    def security(self) -> str: ...
    @property
    def auth(self) -> str: ...
    @property
    def min_tls_version(self) -> str: ...
    @property
    def cert_warn_days(self) -> float: ...
    @property
    def cert_crit_days(self) -> float: ...
    @property
    def latency(self) -> Mapping[str, tuple[float, float]]: ...
    @property
    def mailbox_count(self) -> tuple[int, int] | None: ...
    @property
    def mailbox_size(self) -> tuple[int, int] | None: ...
    @property
    def stat_min(self) -> int | None: ...
    @property
    def stat_max(self) -> int | None: ...


@dataclass(frozen=True)
class Check:
    """One tier check: ``tier``/``name`` and the probe stage(s) it needs."""

    tier: str
    name: str
    title: str


@dataclass(frozen=True)
class CheckResult:
    """A verdict with its reason and, where there is one, the key figure."""

    tier: str
    check: str
    verdict: str
    reason: str
    figure: float | None = None
    unit: str = ""


CHECKS: tuple[Check, ...] = (
    Check("connectivity", "dns", "host name resolves"),
    Check("connectivity", "ping", "ICMP echo answered"),
    Check("connectivity", "tcp", "TCP port accepts connections"),
    Check("connectivity", "greeting", "server greets with +OK"),
    Check("connectivity", "capa", "CAPA answered"),
    Check("tls", "stls", "STLS offered and clean"),
    Check("tls", "handshake", "TLS handshake"),
    Check("tls", "certificate", "certificate chain and host name valid"),
    Check("tls", "expiry", "certificate not close to expiry"),
    Check("tls", "protocol", "TLS protocol version at least the minimum"),
    Check("auth", "login", "login succeeds"),
    Check("auth", "policy", "login is safe"),
    Check("mailbox", "stat", "STAT answers within expected bounds"),
    Check("mailbox", "thresholds", "message count and size below thresholds"),
    Check("mailbox", "logout", "QUIT answered"),
)
TIERS: tuple[str, ...] = ("connectivity", "tls", "auth", "mailbox", "latency")


def _failed(result: ProbeResult) -> StageOutcome | None:
    for outcome in result.stages:
        if outcome.status == "fail":
            return outcome
    return None


def _index(stage: str) -> int:
    return ORDER.index(stage) if stage in ORDER else len(ORDER)


def _dep_skip(failed: StageOutcome) -> str:
    label = PHASE_LABELS.get(failed.stage, failed.stage)
    return f"skipped: {label} failed: {failed.reason}"


def _gate(result: ProbeResult, needs: Sequence[str]) -> tuple[str, str] | None:
    """CRIT/SKIP when the stage this check needs, or one before it, failed."""
    failed = _failed(result)
    if failed is None:
        return None
    first_need = min(_index(s) for s in needs)
    if failed.stage in needs:
        return CRIT, failed.reason
    if _index(failed.stage) < first_need:
        return SKIP, _dep_skip(failed)
    return None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _stage_reason(result: ProbeResult, stage: str) -> str:
    outcome = result.stage(stage)
    return outcome.reason if outcome else ""


# -- connectivity ---------------------------------------------------------------------
def _dns(result: ProbeResult, t: Thresholds) -> CheckResult:
    c = CheckResult
    outcome = result.stage("dns")
    if outcome is not None and outcome.status == "skip":
        return c("connectivity", "dns", SKIP, outcome.reason)
    gate = _gate(result, ["dns"])
    if gate:
        return c("connectivity", "dns", *gate)
    addrs = ", ".join(result.addresses)
    return c("connectivity", "dns", OK, f"resolves to {addrs}", _ms(result.phase("dns")), "ms")


def _ping(result: ProbeResult, t: Thresholds) -> CheckResult:
    c = CheckResult
    info = result.ping
    failed_ping = result.stage("ping")
    if failed_ping is not None and failed_ping.status == "fail":
        return CheckResult("connectivity", "ping", CRIT, failed_ping.reason)
    if info is None:
        failed = _failed(result)
        if failed is not None and _index(failed.stage) < _index("ping"):
            return c("connectivity", "ping", SKIP, _dep_skip(failed))
        return c("connectivity", "ping", SKIP, "PING disabled for this target (ping: false)")
    if info.status == "no-permission":
        return c("connectivity", "ping", SKIP, info.reason)
    if info.status != "ok":
        return c("connectivity", "ping", CRIT, info.reason)
    rtt = _ms(info.rtt_seconds)
    return c("connectivity", "ping", OK, f"echo reply in {rtt} ms", rtt, "ms")


def _tcp(result: ProbeResult, t: Thresholds) -> CheckResult:
    gate = _gate(result, ["connect"])
    if gate:
        return CheckResult("connectivity", "tcp", *gate)
    ms = _ms(result.phase("connect"))
    return CheckResult(
        "connectivity", "tcp", OK, f"connected to {result.peer} port {result.port}", ms, "ms"
    )


def _greeting(result: ProbeResult, t: Thresholds) -> CheckResult:
    gate = _gate(result, ["greeting"])
    if gate:
        return CheckResult("connectivity", "greeting", *gate)
    ms = _ms(result.phase("greeting"))
    text = result.greeting or "(empty)"
    return CheckResult("connectivity", "greeting", OK, f"+OK {text}", ms, "ms")


def _capa(result: ProbeResult, t: Thresholds) -> CheckResult:
    # Both CAPA exchanges are this check's: a session that dies right after the STLS
    # handshake must fail somewhere, not only skip everything after it.
    gate = _gate(result, ["capa", "capa_tls"])
    if gate:
        return CheckResult("connectivity", "capa", *gate)
    for stage in ("capa", "capa_tls"):
        outcome = result.stage(stage)
        if outcome is not None and outcome.status == "warn":
            return CheckResult("connectivity", "capa", WARN, outcome.reason)
    caps = result.capabilities_before or ()
    return CheckResult(
        "connectivity",
        "capa",
        OK,
        f"{len(caps)} capabilities: " + ", ".join(caps)[:200],
        _ms(result.phase("capa")),
        "ms",
    )


# -- TLS --------------------------------------------------------------------------------
def _tls_gate(result: ProbeResult, t: Thresholds, check: str) -> CheckResult | None:
    if t.security not in TLS_MODES:
        return CheckResult("tls", check, SKIP, "not applicable: security is 'none' (no TLS)")
    failed = _failed(result)
    tls_stage = "tls" if t.security == "tls" else "stls"
    if failed is not None and _index(failed.stage) < _index(tls_stage):
        return CheckResult("tls", check, SKIP, _dep_skip(failed))
    if t.security == "starttls-optional" and result.downgradable and check != "stls":
        return CheckResult(
            "tls", check, SKIP, "not applicable: server offers no STLS, session stayed plaintext"
        )
    return None


def _stls(result: ProbeResult, t: Thresholds) -> CheckResult:
    if t.security == "tls":
        return CheckResult("tls", "stls", SKIP, "not applicable: implicit TLS (no STLS)")
    gate = _tls_gate(result, t, "stls")
    if gate:
        return gate
    outcome = result.stage("stls")
    if outcome is None:
        return CheckResult("tls", "stls", SKIP, "STLS stage did not run")
    if outcome.status == "fail":
        return CheckResult("tls", "stls", CRIT, outcome.reason)
    if outcome.status == "warn":
        return CheckResult("tls", "stls", WARN, outcome.reason)
    return CheckResult(
        "tls",
        "stls",
        OK,
        "STLS offered and accepted; no injected bytes",
        _ms(result.phase("stls")),
        "ms",
    )


def _handshake(result: ProbeResult, t: Thresholds) -> CheckResult:
    gate = _tls_gate(result, t, "handshake")
    if gate:
        return gate
    stage = "tls" if t.security == "tls" else "tls_handshake"
    outcome = result.stage(stage)
    if outcome is None:
        failed = _failed(result)
        reason = _dep_skip(failed) if failed else "TLS handshake did not run"
        return CheckResult("tls", "handshake", SKIP, reason)
    tls = result.tls
    ms = _ms(result.phase(stage))
    if outcome.status == "fail" and outcome.kind == "tls-protocol-too-old":
        return CheckResult("tls", "handshake", SKIP, "skipped: see the protocol check")
    if outcome.status == "fail" and not outcome.kind.startswith("cert-"):
        return CheckResult("tls", "handshake", CRIT, outcome.reason, ms, "ms")
    proto = tls.protocol if tls else ""
    cipher = tls.cipher if tls else ""
    detail = f"{proto} {cipher}".strip() or "negotiated"
    if outcome.status == "fail":
        # OpenSSL aborts the handshake on a bad certificate; TLS itself was negotiated.
        text = (
            f"TLS negotiated up to certificate verification ({detail}); see the certificate check"
        )
        return CheckResult("tls", "handshake", OK, text, ms, "ms")
    return CheckResult("tls", "handshake", OK, f"handshake completed: {detail}", ms, "ms")


def _certificate(result: ProbeResult, t: Thresholds) -> CheckResult:
    gate = _tls_gate(result, t, "certificate")
    if gate:
        return gate
    tls = result.tls
    if tls is None:
        failed = _failed(result)
        return CheckResult(
            "tls", "certificate", SKIP, _dep_skip(failed) if failed else "no TLS session"
        )
    if tls.verify_kind.startswith("cert-"):
        return CheckResult("tls", "certificate", CRIT, tls.verify_reason)
    if not tls.verified:
        if tls.verify_kind == "verification-disabled":
            return CheckResult("tls", "certificate", WARN, tls.verify_reason)
        return CheckResult(
            "tls", "certificate", SKIP, f"skipped: not verified: {tls.verify_reason}"
        )
    cert = tls.cert
    who = cert.subject if cert else ""
    return CheckResult(
        "tls", "certificate", OK, f"chain and host name {tls.sni} valid ({who})".strip()
    )


def _expiry(result: ProbeResult, t: Thresholds) -> CheckResult:
    gate = _tls_gate(result, t, "expiry")
    if gate:
        return gate
    cert = result.tls.cert if result.tls else None
    if cert is None:
        failed = _failed(result)
        reason = _dep_skip(failed) if failed else "no certificate was presented"
        return CheckResult("tls", "expiry", SKIP, reason)
    days = cert.days_left
    date = cert.not_after[:10]
    if days < 0:
        return CheckResult(
            "tls",
            "expiry",
            CRIT,
            f"certificate expired {date} ({-days:.0f} days ago)",
            days,
            "days",
        )
    text = f"certificate expires {date} (in {days:.0f} days)"
    if days < t.cert_crit_days:
        return CheckResult(
            "tls",
            "expiry",
            CRIT,
            f"{text}; critical below {t.cert_crit_days:g} days",
            days,
            "days",
        )
    if days < t.cert_warn_days:
        return CheckResult(
            "tls",
            "expiry",
            WARN,
            f"{text}; warning below {t.cert_warn_days:g} days",
            days,
            "days",
        )
    return CheckResult("tls", "expiry", OK, text, days, "days")


def _protocol(result: ProbeResult, t: Thresholds) -> CheckResult:
    gate = _tls_gate(result, t, "protocol")
    if gate:
        return gate
    failed = _failed(result)
    if failed is not None and failed.kind == "tls-protocol-too-old":
        return CheckResult("tls", "protocol", CRIT, failed.reason)
    proto = result.tls.protocol if result.tls else ""
    if not proto:
        reason = _dep_skip(failed) if failed else "protocol unknown"
        return CheckResult("tls", "protocol", SKIP, reason)
    return CheckResult("tls", "protocol", OK, f"{proto} (minimum {t.min_tls_version})")


# -- auth -------------------------------------------------------------------------------
AUTH_STAGE = ("auth",)
DEGRADED_LOGIN = frozenset({"mailbox-in-use", "login-delay", "sys-temp"})


def _login(result: ProbeResult, t: Thresholds) -> CheckResult:
    if t.auth == "none":
        return CheckResult("auth", "login", SKIP, "no login configured (auth: none)")
    gate = _gate(result, AUTH_STAGE)
    failed = _failed(result)
    if gate and failed is not None and failed.kind in DEGRADED_LOGIN:
        # [IN-USE], [LOGIN-DELAY] and [SYS/TEMP] say the credentials may well be right
        # and the service is degraded or busy (RFC 2449/3206): not a bad password.
        return CheckResult("auth", "login", WARN, f"login deferred: {failed.reason}")
    if gate:
        return CheckResult("auth", "login", *gate)
    info = result.auth
    if info is None or not info.success:
        return CheckResult("auth", "login", SKIP, "login did not run")
    channel = "over TLS" if info.encrypted else "over an unencrypted connection"
    return CheckResult(
        "auth",
        "login",
        OK,
        f"{info.mechanism.upper()} login succeeded {channel}",
        _ms(result.phase("auth")),
        "ms",
    )


def _policy(result: ProbeResult, t: Thresholds) -> CheckResult:
    if t.auth == "none":
        return CheckResult("auth", "policy", SKIP, "no login configured (auth: none)")
    failed = _failed(result)
    if failed is not None and failed.stage == "auth":
        if failed.kind in ("cleartext-refused", "apop-no-timestamp", "mechanism-not-offered"):
            return CheckResult("auth", "policy", CRIT, failed.reason)
        if failed.kind == "secret-missing":
            return CheckResult("auth", "policy", SKIP, f"skipped: {failed.reason}")
    elif failed is not None and _index(failed.stage) < _index("auth"):
        return CheckResult("auth", "policy", SKIP, _dep_skip(failed))
    info = result.auth
    if info is None or not info.mechanism:
        return CheckResult("auth", "policy", SKIP, "no mechanism was chosen")
    mech = info.mechanism.upper()
    if result.downgradable:
        return CheckResult(
            "auth",
            "policy",
            WARN,
            f"{mech} ran in plaintext because the server offers no STLS: an attacker can "
            "strip TLS (downgradable)",
        )
    if info.strength in ("cleartext", "token") and not info.encrypted:
        return CheckResult(
            "auth",
            "policy",
            WARN,
            f"{mech} sent the secret unencrypted (allowed by allow_cleartext)",
        )
    if info.strength == "weak" and not info.encrypted:
        return CheckResult(
            "auth",
            "policy",
            WARN,
            f"{mech} is a weak mechanism and the connection is unencrypted",
        )
    channel = "TLS" if info.encrypted else "no TLS"
    return CheckResult("auth", "policy", OK, f"{mech} ({info.strength}) with {channel}")


# -- mailbox ----------------------------------------------------------------------------
def _mailbox_gate(result: ProbeResult, t: Thresholds, check: str) -> CheckResult | None:
    if t.auth == "none":
        return CheckResult("mailbox", check, SKIP, "no login configured (auth: none)")
    failed = _failed(result)
    if failed is not None and _index(failed.stage) < _index("stat"):
        return CheckResult("mailbox", check, SKIP, _dep_skip(failed))
    if failed is not None and failed.stage == "stat":
        if check == "stat":
            return CheckResult("mailbox", check, CRIT, failed.reason)
        return CheckResult("mailbox", check, SKIP, _dep_skip(failed))
    return None


def _stat(result: ProbeResult, t: Thresholds) -> CheckResult:
    gate = _mailbox_gate(result, t, "stat")
    if gate:
        return gate
    box = result.mailbox
    if box is None:
        return CheckResult("mailbox", "stat", SKIP, "STAT did not run")
    text = f"{box.count} messages, {box.size} octets"
    if t.stat_min is not None and box.count < t.stat_min:
        return CheckResult(
            "mailbox", "stat", CRIT, f"{text}; expected at least {t.stat_min}", box.count, "msgs"
        )
    if t.stat_max is not None and box.count > t.stat_max:
        return CheckResult(
            "mailbox", "stat", CRIT, f"{text}; expected at most {t.stat_max}", box.count, "msgs"
        )
    return CheckResult("mailbox", "stat", OK, text, box.count, "msgs")


def _thresholds(result: ProbeResult, t: Thresholds) -> CheckResult:
    gate = _mailbox_gate(result, t, "thresholds")
    if gate:
        return gate
    box = result.mailbox
    if box is None:
        return CheckResult("mailbox", "thresholds", SKIP, "STAT did not run")
    worst, notes = OK, []
    for label, value, limits in (
        ("messages", box.count, t.mailbox_count),
        ("octets", box.size, t.mailbox_size),
    ):
        if limits is None:
            continue
        warn, crit = limits
        if value >= crit:
            worst = CRIT
            notes.append(f"{value} {label} ≥ critical {crit}")
        elif value >= warn:
            worst = WARN if worst == OK else worst
            notes.append(f"{value} {label} ≥ warning {warn}")
    if t.mailbox_count is None and t.mailbox_size is None:
        return CheckResult("mailbox", "thresholds", SKIP, "no mailbox thresholds configured")
    reason = "; ".join(notes) or f"{box.count} messages, {box.size} octets within thresholds"
    return CheckResult("mailbox", "thresholds", worst, reason, box.count, "msgs")


def _logout(result: ProbeResult, t: Thresholds) -> CheckResult:
    failed = _failed(result)
    outcome = result.stage("quit")
    if failed is not None:
        # QUIT after a failed session says nothing about the mailbox; keep the tier's
        # verdict about the failure instead of a misleading OK.
        return CheckResult("mailbox", "logout", SKIP, _dep_skip(failed))
    if outcome is None:
        reason = _dep_skip(failed) if failed else "QUIT was not sent"
        return CheckResult("mailbox", "logout", SKIP, reason)
    if outcome.status == "warn":
        return CheckResult("mailbox", "logout", WARN, outcome.reason)
    return CheckResult(
        "mailbox", "logout", OK, "QUIT answered +OK", _ms(result.phase("quit")), "ms"
    )


_RULES = {
    "dns": _dns,
    "ping": _ping,
    "tcp": _tcp,
    "greeting": _greeting,
    "capa": _capa,
    "stls": _stls,
    "handshake": _handshake,
    "certificate": _certificate,
    "expiry": _expiry,
    "protocol": _protocol,
    "login": _login,
    "policy": _policy,
    "stat": _stat,
    "thresholds": _thresholds,
    "logout": _logout,
}


# -- latency ----------------------------------------------------------------------------
def latency(result: ProbeResult, t: Thresholds, phase: str) -> CheckResult:
    """Verdict for one phase's duration against its (warn, crit) seconds."""
    check = f"latency-{phase}"
    limits = t.latency.get(phase)
    label = PHASE_LABELS.get(phase, phase)
    value = result.phase(phase)
    failed = _failed(result)
    if value is None or (failed is not None and phase == "total"):
        if failed is not None:
            return CheckResult("latency", check, SKIP, _dep_skip(failed))
        return CheckResult("latency", check, SKIP, f"{label} phase did not run")
    if failed is not None and failed.stage == phase:
        return CheckResult("latency", check, SKIP, _dep_skip(failed))
    ms = _ms(value)
    if limits is None:
        return CheckResult("latency", check, OK, f"{label} {ms} ms (no threshold)", ms, "ms")
    warn, crit = limits
    if value >= crit:
        verdict, note = CRIT, f"≥ critical {crit * 1000:g} ms"
    elif value >= warn:
        verdict, note = WARN, f"≥ warning {warn * 1000:g} ms"
    else:
        verdict, note = OK, f"< warning {warn * 1000:g} ms"
    return CheckResult("latency", check, verdict, f"{label} {ms} ms {note}", ms, "ms")


def evaluate(result: ProbeResult, t: Thresholds, check: str) -> CheckResult:
    """The verdict of one named check (``latency-<phase>`` for latency)."""
    if check.startswith("latency-"):
        return latency(result, t, check.removeprefix("latency-"))
    return _RULES[check](result, t)


def evaluate_all(result: ProbeResult, t: Thresholds) -> list[CheckResult]:
    """Every check for one connection type, latency phases last."""
    return [evaluate(result, t, name) for name in check_names(t)]


def latency_phases(t: Thresholds) -> list[str]:
    """Latency phases checked for ``t``: total first, then the configured phases that this
    connection type's security mode and auth setting can run at all."""
    never: set[str] = set()
    if t.security != "tls":
        never.add("tls")
    if t.security not in ("starttls", "starttls-optional"):
        never |= {"stls", "tls_handshake", "capa_tls"}
    if t.auth == "none":
        never |= {"auth", "stat"}
    keys = (set(t.latency) | {"total"}) - never
    return sorted(keys, key=lambda p: (p != "total", _index(p)))


# -- who reports a failure ----------------------------------------------------------------
STAGE_OWNER = {
    "dns": "dns",
    "ping": "ping",
    "connect": "tcp",
    "greeting": "greeting",
    "capa": "capa",
    "capa_tls": "capa",
    "stls": "stls",
    "auth": "login",
    "stat": "stat",
    "quit": "logout",
}


def owner(result: ProbeResult) -> str | None:
    """The check whose verdict is CRIT for the probe's failure (``None`` if none failed)."""
    failed = _failed(result)
    if failed is None:
        return None
    if failed.stage in ("tls", "tls_handshake"):
        if failed.kind.startswith("cert-"):
            return "certificate"
        if failed.kind == "tls-protocol-too-old":
            return "protocol"
        return "handshake"
    return STAGE_OWNER.get(failed.stage)


def check_names(t: Thresholds) -> list[str]:
    """Every check name for ``t`` in report order (latency phases last)."""
    return [c.name for c in CHECKS] + [f"latency-{p}" for p in latency_phases(t)]
