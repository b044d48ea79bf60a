"""The one message of a run for one target: a short title and a plain-text body.

Changes are grouped, problems first, then recoveries, drift and flapping; each line names
the connection type, the check, before → after, the reason and since when the previous
state held. The body ends with the report's link or local path. Title and body pass
through the secret redactor last, after the target's URL has been registered with it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from ..config.model import NotifySettings
from ..history.model import Change, ChangeKind
from ..secrets import REDACTOR
from ..verdict import Verdict
from .rules import RunSummary

__all__ = ["GROUPS", "Message", "compose"]

Group = Literal["problems", "recovered", "drift", "flapping"]

#: Message order and title words of the groups, and the change kinds in each.
GROUPS: Final[tuple[tuple[Group, str, frozenset[ChangeKind]], ...]] = (
    ("problems", "Problems", frozenset({"new", "worse", "hard"})),
    ("recovered", "Recovered", frozenset({"recovered", "better"})),
    ("drift", "Drift", frozenset({"drift"})),
    ("flapping", "Flapping", frozenset({"flapping", "settled"})),
)
# A message is read on a phone: past this many lines the rest is counted, not listed.
MAX_LINES: Final = 50
# One reason, cut: the report holds the whole text.
_REASON_MAX: Final = 300


@dataclass(frozen=True)
class Message:
    """What one target receives."""

    title: str
    body: str


def when(epoch: float) -> str:
    """An instant as messages show it (UTC, to the minute)."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def _one_line(text: str, limit: int = _REASON_MAX) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _line(change: Change) -> str:
    before = change.before.value if change.before is not None else "none"
    after = change.after.value
    check = f" {change.check}" if change.check else ""
    text = f"- {change.ct}{check}: {before} → {after}"
    if change.kind == "hard":
        text += " (confirmed)"
    if change.reason:
        text += f" — {_one_line(change.reason)}"
    if change.detail:
        text += f" ({_one_line(change.detail)})"
    # A failure after none or SKIP has no previous state worth a "since".
    if change.since > 0 and change.before not in (None, Verdict.SKIP):
        was = "was " if change.kind in ("recovered", "better") else ""
        text += f" — {was}{before} since {when(change.since)}"
    return text


def _counts(groups: Sequence[tuple[Group, list[Change]]]) -> str:
    words = []
    for group, items in groups:
        n = len(items)
        if group == "problems":
            words.append(f"{n} problem{'s' if n != 1 else ''}")
        else:
            words.append(f"{n} {group}")
    return ", ".join(words)


def compose(changes: Sequence[Change], settings: NotifySettings, run: RunSummary) -> Message | None:
    """The message telling ``changes``, or ``None`` when there is nothing to tell."""
    grouped: list[tuple[Group, list[Change]]] = []
    sections: list[str] = []
    shown = 0
    for group, heading, kinds in GROUPS:
        items = [c for c in changes if c.kind in kinds]
        if not items:
            continue
        grouped.append((group, items))
        lines = [f"{heading} ({len(items)}):"]
        for change in items:
            if shown < MAX_LINES:
                lines.append(_line(change))
                shown += 1
        if len(lines) - 1 < len(items):
            lines.append(f"- … and {len(items) - (len(lines) - 1)} more (see the report)")
        sections.append("\n".join(lines))
    if not grouped:
        return None
    title = f"{settings.title}: {_counts(grouped)} on {run.targets_name}"
    link = settings.report_url or run.report
    footer = f"Report: {link}" if link else "Report: none was written by this run"
    body = "\n\n".join([*sections, footer]) + "\n"
    return Message(title=REDACTOR.scrub(title), body=REDACTOR.scrub(body))
