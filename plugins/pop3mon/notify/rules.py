"""Which changes a notification target hears of: the rules of ``on:`` and the selection.

A change maps to at most one rule (:func:`rule_of`); a target hears of the changes whose
rule is in its ``on:`` and whose connection type it selects (``tags:``/``connections:``; a
host check's change, ``host:<server>``, reaches a target that selects one of that host's
connection types).
While a connection type flaps its changes are held: only the ``flapping``/``settled``
change itself may be told (Nagios' flap detection), so a flapping server does not notify
on every run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType

from ..config.model import NotifyRule, NotifyTarget, Targets
from ..history.model import Change, CheckState
from ..verdict import Verdict

__all__ = ["RunSummary", "rule_of", "select"]


@dataclass(frozen=True)
class RunSummary:
    """The facts of the run a message needs beyond its changes."""

    #: Shown in the title: "pop3mon: 2 problems on <targets_name>".
    targets_name: str
    #: The local path of report.html ("" when the run wrote none); ``notify.report_url``
    #: replaces it in messages.
    report: str = ""
    #: ``(connection id, check)`` whose CRIT is still soft (not yet confirmed).
    soft: frozenset[tuple[str, str]] = frozenset()
    #: Connection ids that are flapping after this run: their changes are held.
    flapping: frozenset[str] = frozenset()
    #: Connection id -> its tags, for a target's ``tags:`` selection.
    tags: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    #: Host check id (``host:<server>``) -> its connection ids: a target hears of a host
    #: whose connection types it selects (it is their root cause).
    members: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def build(
        cls,
        targets: Targets,
        states: Iterable[CheckState] = (),
        report: str | Path = "",
    ) -> RunSummary:
        """The summary of a run of ``targets`` whose history ended in ``states``."""
        states = tuple(states)
        return cls(
            targets_name=targets.path.name,
            report=str(report),
            soft=frozenset(
                (s.ct, s.check)
                for s in states
                if s.verdict == Verdict.CRIT and s.hardness == "soft"
            ),
            flapping=frozenset(s.ct for s in states if s.flapping),
            tags=MappingProxyType(
                {
                    **{c.id: c.tags for c in targets.connections},
                    **{h.id: h.tags for h in targets.hosts},
                    **{c.id: c.tags for c in targets.coverage},
                }
            ),
            members=MappingProxyType(
                {
                    **{h.id: h.connections for h in targets.hosts},
                    # A server's coverage findings: told to whoever hears of its servers.
                    **{
                        c.id: tuple(x.id for x in targets.connections if x.server == c.name)
                        for c in targets.coverage
                    },
                }
            ),
        )


def rule_of(change: Change, soft: frozenset[tuple[str, str]] = frozenset()) -> NotifyRule | None:
    """The ``on:`` rule that covers ``change``, or ``None`` (never told).

    ``hard``: to a CRIT that is confirmed (a soft CRIT that held, or a new/worse CRIT not in
    ``soft``); ``soft``: to a CRIT still soft; ``warn``: to WARN, CRIT → WARN, and WARN →
    OK (a recovery from a WARN is only news to whoever heard of the WARN); ``recovered``:
    a hard CRIT → OK (a soft CRIT that recovers was never a problem told: not told, as in
    Nagios); ``drift`` and ``flapping`` (started or settled) by kind. A change to SKIP or
    ERROR (a test that broke, not a server finding) is never told.
    """
    kind = change.kind
    if kind == "drift":
        return "drift"
    if kind in ("flapping", "settled"):
        return "flapping"
    if kind == "hard":
        return "hard"
    if kind == "recovered":
        if change.before == Verdict.WARN:
            return "warn"
        return "recovered" if change.was_hard else None
    if kind == "better":
        return "warn"
    # new, worse
    if change.after == Verdict.CRIT:
        return "soft" if (change.ct, change.check) in soft else "hard"
    if change.after == Verdict.WARN:
        return "warn"
    return None


def _selects(
    target: NotifyTarget,
    ct: str,
    tags: Mapping[str, tuple[str, ...]],
    members: Mapping[str, tuple[str, ...]] = MappingProxyType({}),
) -> bool:
    if any(_selects(target, m, tags) for m in members.get(ct, ())):
        return True  # a host check: selected with any of its connection types
    if target.tags and not set(target.tags) & set(tags.get(ct, ())):
        return False
    return not target.connections or any(fnmatchcase(ct, p) for p in target.connections)


def select(target: NotifyTarget, changes: Sequence[Change], run: RunSummary) -> list[Change]:
    """The changes ``target`` is told of, in their order."""
    # A connection type that starts flapping in this run is held from now on too.
    flapping = run.flapping | {c.ct for c in changes if c.kind == "flapping"}
    out = []
    for change in changes:
        if change.ct in flapping and change.kind not in ("flapping", "settled"):
            continue
        rule = rule_of(change, run.soft)
        if rule is None or rule not in target.on:
            continue
        if _selects(target, change.ct, run.tags, run.members):
            out.append(change)
    return out
