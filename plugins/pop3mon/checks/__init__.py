"""From one :class:`ProbeResult` to the verdict of every tier check (no pytest here).

Each check has a tier, a name and the probe stage it depends on. The verdict rules:

* the check's own stage failed → CRIT with the engine's reason;
* an earlier stage failed → SKIP naming the dependency that failed and why, with
  ``blocked_by`` set to the check that owns that failure, so a report states the root cause
  once (PING/DNS/TCP failure skips everything after it; a TLS failure skips auth and
  mailbox — pop3mon never falls back to plaintext);
* otherwise the check's own thresholds decide OK / WARN / CRIT;
* when the probe was made more than once in the run (in-run retries), the check that owns
  an earlier attempt's failure says so, and the check that owns the last failure says it
  failed every attempt or why it was not retried (:func:`~.base.with_retries`).

One module per tier holds the rules; this module is the registry and the gating that
depends on which checks a run selected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping

from ..engine.result import ProbeResult
from ..engine.stages import CHECKS, DRIFT_CHECKS, CheckName, HostTier, checks_of
from ..verdict import Verdict, worst
from . import connectivity, drift, hosts, login, mailbox, tls
from .base import CheckResult, Thresholds, blocked_reason, failed_stage, owner_of, with_retries
from .facts import Baseline
from .latency import PREFIX, latency, latency_phases

__all__ = [
    "CheckResult",
    "Thresholds",
    "check_names",
    "evaluate",
    "evaluate_all",
    "evaluate_selected",
    "latency_phases",
    "owner",
]

Rule = Callable[[ProbeResult, Thresholds], CheckResult]
_RULES: Mapping[CheckName, Rule] = {
    "dns": connectivity.dns,
    "ping": connectivity.ping,
    "tcp": connectivity.tcp,
    "greeting": connectivity.greeting,
    "capa": connectivity.capa,
    "stls": tls.stls,
    "handshake": tls.handshake,
    "certificate": tls.certificate,
    "expiry": tls.expiry,
    "protocol": tls.protocol,
    "login": login.login,
    "policy": login.policy,
    "relay": login.relay,
    "stat": mailbox.stat,
    "thresholds": mailbox.thresholds,
    "logout": mailbox.logout,
}
# The drift checks compare with a baseline too: drift.evaluate is their rule.
assert set(_RULES) | set(DRIFT_CHECKS) == {c.name for c in CHECKS}, "every check needs a rule"


def evaluate(
    result: ProbeResult, t: Thresholds, check: str, baseline: Baseline | None = None
) -> CheckResult:
    """The verdict of one named check (``latency-<phase>`` for latency). ``baseline`` is
    what a drift check compares with (None: none yet); the other checks ignore it."""
    if result.blocked_host:
        return hosts.blocked_connection(result, check)
    if check.startswith(PREFIX):
        return latency(result, t, check.removeprefix(PREFIX))
    for name in DRIFT_CHECKS:
        if check == name:
            return drift.evaluate(result, t, name, baseline)
    rule = _RULES[check]  # type: ignore[index]  # unknown names are a KeyError
    return with_retries(result, check, rule(result, t))


def check_names(t: Thresholds) -> list[str]:
    """Every check name for ``t`` in report order (latency phases last): those of its
    protocol only (see :attr:`~pop3mon.engine.stages.CheckSpec.protocols`)."""
    return [*checks_of(t.protocol)] + [PREFIX + p for p in latency_phases(t)]


def evaluate_all(result: ProbeResult, t: Thresholds) -> list[CheckResult]:
    """Every check for one connection type, latency phases last."""
    return [evaluate(result, t, name) for name in check_names(t)]


def owner(result: ProbeResult) -> CheckName | HostTier | None:
    """The check whose verdict is CRIT for the probe's failure (``None`` if none failed)."""
    failed = failed_stage(result)
    return owner_of(failed) if failed is not None else None


def evaluate_selected(
    result: ProbeResult,
    t: Thresholds,
    check: str,
    selected: Collection[str],
    baseline: Baseline | None = None,
) -> CheckResult:
    """:func:`evaluate`, for a run that selected only the checks in ``selected``.

    With ``-m "auth or mailbox"`` (or ``-m tls`` on a plain-text connection type, ``-k
    expiry`` ...) against a dead server the root-cause check (``tcp``) is deselected; the
    run must still fail, and name the cause once. One selected check reports it (see
    :func:`_reporter`) with the verdict its owner would have given, naming the owner;
    every other check keeps its own verdict. ``baseline``: as for :func:`evaluate`.
    """
    res = evaluate(result, t, check, baseline)
    failed = failed_stage(result)
    root = owner_of(failed) if failed is not None else None
    if failed is None or root is None or root in selected:
        return res
    if _reporter(result, t, root, {*selected, check}) != check:
        return res
    own = evaluate(result, t, root)
    verdict = own.verdict if own.verdict in (Verdict.WARN, Verdict.CRIT) else Verdict.CRIT
    # The owner's WARN (a deferred login) says more than "failed"; a CRIT reads as the
    # dependency SKIPs do, with the stage named.
    cause = own.reason if verdict == Verdict.WARN else blocked_reason(failed)
    cause += f" (reported here: the '{root}' check is not selected)"
    if res.verdict == Verdict.SKIP:
        return dataclasses.replace(res, verdict=verdict, reason=cause, blocked_by=None)
    return dataclasses.replace(
        res, verdict=worst((res.verdict, verdict)), reason=f"{res.reason}; {cause}"
    )


def _reporter(
    result: ProbeResult, t: Thresholds, root: CheckName | HostTier, selected: Collection[str]
) -> str | None:
    """The selected check that reports a deselected root cause: the first one the failure
    blocked; else the first one after the root in report order (a check "not applicable"
    to the mode, such as every TLS check of a plain-text connection type, must not hide
    that the connection type is dead); else the last one before it (``-m connectivity``
    when STLS failed: the CAPA check, nearest to the failure)."""
    order = check_names(t)
    names = [n for n in order if n in selected]
    for name in names:
        if evaluate(result, t, name).blocked_by is not None:
            return name
    if root not in order:  # the host: every check was blocked by it, so none is left
        return names[0] if names else None
    at = order.index(root)
    after = [n for n in names if order.index(n) > at]
    before = [n for n in names if order.index(n) < at]
    return after[0] if after else (before[-1] if before else None)
