"""Mailbox tier: STAT, message count/size thresholds, QUIT."""

from __future__ import annotations

from ..engine.result import ProbeResult
from ..engine.stages import stage_index
from ..verdict import Verdict
from .base import CRIT, OK, SKIP, WARN, CheckResult, Thresholds, blocked, failed_stage, ms, smtp

__all__ = ["logout", "stat", "thresholds"]


def _mailbox_gate(result: ProbeResult, t: Thresholds, check: str) -> CheckResult | None:
    if smtp(result):
        return CheckResult(
            "mailbox", check, SKIP, "not applicable: SMTP has no mailbox (POP3 checks it)"
        )
    if t.auth == "none":
        return CheckResult("mailbox", check, SKIP, "no login configured (auth: none)")
    failed = failed_stage(result)
    if failed is not None and stage_index(failed.stage) < stage_index("stat"):
        return blocked("mailbox", check, failed)
    if failed is not None and failed.stage == "stat":
        if check == "stat":
            return CheckResult("mailbox", check, CRIT, failed.reason)
        return blocked("mailbox", check, failed)
    return None


def stat(result: ProbeResult, t: Thresholds) -> CheckResult:
    """STAT answers, with a message count within ``stat_min``/``stat_max``."""
    gated = _mailbox_gate(result, t, "stat")
    if gated:
        return gated
    box = result.mailbox
    if box is None:
        return CheckResult("mailbox", "stat", SKIP, "STAT did not run")
    text = f"{box.count} messages, {box.size} octets"
    if t.stat_min is not None and box.count < t.stat_min:
        text += f"; expected at least {t.stat_min}"
        return CheckResult("mailbox", "stat", CRIT, text, box.count, "msgs")
    if t.stat_max is not None and box.count > t.stat_max:
        text += f"; expected at most {t.stat_max}"
        return CheckResult("mailbox", "stat", CRIT, text, box.count, "msgs")
    return CheckResult("mailbox", "stat", OK, text, box.count, "msgs")


def _stat_bounds(t: Thresholds) -> str:
    """``stat_min``/``stat_max`` in words ("at least 1", "1 to 5"), or "" when unset."""
    if t.stat_min is not None and t.stat_max is not None:
        return f"{t.stat_min} to {t.stat_max}"
    if t.stat_min is not None:
        return f"at least {t.stat_min}"
    if t.stat_max is not None:
        return f"at most {t.stat_max}"
    return ""


def thresholds(result: ProbeResult, t: Thresholds) -> CheckResult:
    """Message count and size against their warn/crit thresholds."""
    gated = _mailbox_gate(result, t, "thresholds")
    if gated:
        return gated
    box = result.mailbox
    if box is None:
        return CheckResult("mailbox", "thresholds", SKIP, "STAT did not run")
    if t.mailbox_count is None and t.mailbox_size is None:
        reason = "no mailbox_count/mailbox_size warn/crit thresholds configured"
        bounds = _stat_bounds(t)
        if bounds:
            # stat_min/stat_max are thresholds too, but the stat check owns them: saying
            # "none configured" here read as if they had been ignored.
            reason += f" (the message count bound {bounds} is checked by stat)"
        return CheckResult("mailbox", "thresholds", SKIP, reason)
    verdict: Verdict = OK
    notes: list[str] = []
    for label, value, limits in (
        ("messages", box.count, t.mailbox_count),
        ("octets", box.size, t.mailbox_size),
    ):
        if limits is None:
            continue
        warn, crit = limits
        if value >= crit:
            verdict = CRIT
            notes.append(f"{value} {label} ≥ critical {crit}")
        elif value >= warn:
            verdict = WARN if verdict == OK else verdict
            notes.append(f"{value} {label} ≥ warning {warn}")
    reason = "; ".join(notes) or f"{box.count} messages, {box.size} octets within thresholds"
    return CheckResult("mailbox", "thresholds", verdict, reason, box.count, "msgs")


def logout(result: ProbeResult, t: Thresholds) -> CheckResult:
    """QUIT answered +OK after a session that succeeded."""
    failed = failed_stage(result)
    if failed is not None:
        # QUIT after a failed session says nothing about the mailbox; keep the tier's
        # verdict about the failure instead of a misleading OK.
        return blocked("mailbox", "logout", failed)
    outcome = result.stage("quit")
    if outcome is None:
        return CheckResult("mailbox", "logout", SKIP, "QUIT was not sent")
    if outcome.status == "warn":
        return CheckResult("mailbox", "logout", WARN, outcome.reason)
    said = "221" if smtp(result) else "+OK"
    return CheckResult(
        "mailbox", "logout", OK, f"QUIT answered {said}", ms(result.phase("quit")), "ms"
    )
