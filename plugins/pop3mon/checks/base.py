"""What every check rule shares: the result type, the thresholds it reads, and the gating
that turns a failed stage into CRIT for its owner and SKIP (``blocked_by`` it) for the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from ..engine.defaults import DriftPolicy
from ..engine.result import ProbeResult, StageOutcome
from ..engine.stages import (
    HOST_TIER,
    PHASE_LABELS,
    STAGES,
    CheckName,
    CoverageTier,
    HostTier,
    Security,
    Tier,
    stage_index,
)
from ..verdict import Verdict

__all__ = [
    "CheckResult",
    "Thresholds",
    "blocked",
    "blocked_reason",
    "failed_stage",
    "gate",
    "ms",
    "own_phases",
    "owner_of",
    "smtp",
    "stls_stage",
    "with_retries",
]

OK, WARN, CRIT, SKIP = Verdict.OK, Verdict.WARN, Verdict.CRIT, Verdict.SKIP
_OWNER: Mapping[str, CheckName] = {s.name: s.owner for s in STAGES}


class Thresholds(Protocol):
    """What a connection type contributes to verdicts (``config.ConnectionType`` fits)."""

    @property
    def protocol(self) -> str: ...
    @property
    def security(self) -> Security: ...
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
    @property
    def drift(self) -> DriftPolicy: ...


def smtp(result: ProbeResult) -> bool:
    """The result is an SMTP companion probe's (engine/smtp.py), not a POP3 session's."""
    return result.protocol == "smtp"


def stls_stage(result: ProbeResult) -> str:
    """The stage that upgrades to TLS: POP3 STLS, SMTP STARTTLS (its name in reasons is
    the stage's label)."""
    return "starttls" if smtp(result) else "stls"


@dataclass(frozen=True)
class CheckResult:
    """A verdict with its reason and, where there is one, the key figure.

    ``blocked_by`` names the check whose failure made this one impossible (a dependency
    SKIP); reports count and group root causes by it, never by the reason's wording.
    """

    tier: Tier | HostTier | CoverageTier
    check: str
    verdict: Verdict
    reason: str
    figure: float | None = None
    unit: str = ""
    blocked_by: CheckName | HostTier | None = None


def failed_stage(result: ProbeResult) -> StageOutcome | None:
    """The stage that failed the probe, if one did (a probe stops at its first failure)."""
    for outcome in result.stages:
        if outcome.status == "fail":
            return outcome
    return None


def owner_of(failed: StageOutcome) -> CheckName | HostTier | None:
    """The check whose verdict is CRIT for ``failed``: a TLS stage's owner depends on
    whether the certificate, the protocol version or the handshake itself failed; a
    connection type whose host is down was not probed, and its host check owns that."""
    if failed.stage == HOST_TIER:
        return HOST_TIER
    if failed.stage in ("tls", "tls_handshake"):
        if failed.kind.startswith("cert-"):
            return "certificate"
        if failed.kind == "tls-protocol-too-old":
            return "protocol"
        return "handshake"
    return _OWNER.get(failed.stage)


def own_phases(result: ProbeResult, check: str) -> tuple[tuple[str, float], ...]:
    """The timed phases that are ``check``'s own work: the stages it owns (``STAGES``; a
    failed TLS stage belongs to the check :func:`owner_of` names), in run order.

    Every stage belongs to exactly one check, so the own times of a connection type's
    checks add up to at most its total. Checks that judge a phase another check owns
    (certificate, expiry, protocol, policy, thresholds, ``latency-*``) and the drift checks
    own none.
    """
    out = []
    # Most probes fail no stage: then no phase needs its outcome looked up.
    failing = any(stage.status == "fail" for stage in result.stages)
    for phase, seconds in result.phases:
        outcome = result.stage(phase) if failing else None
        if outcome is not None and outcome.status == "fail":
            owner = owner_of(outcome)
        else:
            owner = _OWNER.get(phase)
        if owner == check:
            out.append((phase, seconds))
    return tuple(out)


def blocked(tier: Tier, check: str, failed: StageOutcome) -> CheckResult:
    """SKIP because an earlier stage failed, naming that stage and its reason once."""
    return CheckResult(
        tier, check, SKIP, f"skipped: {blocked_reason(failed)}", blocked_by=owner_of(failed)
    )


def blocked_reason(failed: StageOutcome) -> str:
    """``<stage label> failed: <reason>``: how a check that is not the owner names a
    failure (a dependency SKIP, or the check that reports a deselected owner's CRIT)."""
    if failed.stage == HOST_TIER:
        return failed.reason  # "host mail1 is down: ..." names itself
    label = PHASE_LABELS.get(failed.stage, failed.stage)
    return f"{label} failed: {failed.reason}"


def gate(result: ProbeResult, tier: Tier, check: str, *needs: str) -> CheckResult | None:
    """CRIT when a stage this check needs failed, SKIP when one before them failed."""
    failed = failed_stage(result)
    if failed is None:
        return None
    if failed.stage in needs:
        return CheckResult(tier, check, CRIT, failed.reason)
    if stage_index(failed.stage) < min(stage_index(s) for s in needs):
        return blocked(tier, check, failed)
    return None


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds with three decimals (the reports' latency unit)."""
    return None if seconds is None else round(seconds * 1000.0, 3)


def with_retries(result: ProbeResult, check: str, res: CheckResult) -> CheckResult:
    """``res`` with what the in-run retries (``engine/retry.py``) mean for ``check``.

    The check that owns an earlier attempt's failure, and the TCP check (where a reader
    looks for "could it connect"), say it recovered ("OK after 1 retry: attempt 1:
    connection refused"); the check that owns the last failure says it failed every
    attempt, or why a transient failure was not probed again (a login was made). Every
    other check reads the last attempt only, as without retries.
    """
    if res.verdict in (OK, WARN):
        owners = {owner_of(outcome) for outcome in result.retried}
        if result.retried and (check == "tcp" or check in owners):
            note = f"{res.verdict} after {_retries(result)}: {_attempts(result)}"
            return replace(res, reason=f"{res.reason} ({note})")
        return res
    failed = failed_stage(result)
    if res.verdict != CRIT or failed is None or owner_of(failed) != check:
        return res
    if result.retried:
        note = f"attempt {result.attempts} of {result.attempts}; {_attempts(result)}"
    elif result.not_retried:
        note = f"not retried: {result.not_retried}"
    else:
        return res
    return replace(res, reason=f"{res.reason} ({note})")


def _retries(result: ProbeResult) -> str:
    count = len(result.retried)
    return f"{count} retry" if count == 1 else f"{count} retries"


def _attempts(result: ProbeResult) -> str:
    return "; ".join(f"attempt {n}: {o.reason}" for n, o in enumerate(result.retried, 1))
