"""Root causes folded across connection types: one pure function over the run model.

Eight connection types on a host whose port is closed fail the same way; a reader wants
"8 connection types on mail1.example: TCP connect refused" once, not eight times, and at
1,000 connection types nothing else stays readable. :func:`fold_causes` groups every root
cause of a :class:`~pop3mon.report.model.RunReport` by (verdict, host, check, reason with
the connection id taken out); the terminal summary prints the groups and any other writer
(the HTML page) may too, so the reports cannot fold differently.

A root cause is every CRIT, ERROR and WARN check, and every SKIP that no failure of its own
connection type explains (not applicable, PING disabled, no baseline, not run). A SKIP
``blocked_by`` a failing check of its connection type is no root cause: it is counted in
that failure's group as a dependent check. The host checks (``host:<server>``) fold the
same way; a host that is down is one root cause, and every check of the connection types
and hosts it blocked counts as its dependent check.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from ..engine.stages import HOST_ID_PREFIX, HOST_TIER
from ..verdict import Verdict, rank
from .model import RunReport
from .recorder import CheckRecord

__all__ = ["BAD", "CauseGroup", "Folded", "fold_causes"]

#: Verdicts that fail a connection type (their groups are never capped in a summary).
BAD: Final = (Verdict.ERROR, Verdict.CRIT)
#: The characters of a connection id (config/schema.py's ``_ID_RE``): an id is only taken
#: out of a reason where it stands alone, never out of the middle of a longer word.
_ID_CHARS: Final = r"A-Za-z0-9._:@+\-"
#: What stands for the connection id in a folded reason.
ID_MARK: Final = "<id>"


@dataclass(frozen=True)
class CauseGroup:
    """One root cause shared by one or more connection types of one host (and by one or
    more checks of theirs, when every one of those checks ended the same way)."""

    verdict: Verdict
    #: The host the connection types probe ("" for a check of no known connection type).
    host: str
    #: ``tier/check`` of every check it is the verdict of, in report order.
    checks: tuple[str, ...]
    #: The reason, whole; with :data:`ID_MARK` for the connection id when it named it.
    reason: str
    #: The connection type ids, in the targets file's order.
    ids: tuple[str, ...]
    #: Dependent checks SKIPped because of these failures (0 for WARN and SKIP groups).
    blocked: int = 0

    @property
    def where(self) -> str:
        """``tier/check`` (several joined by ", ")."""
        return ", ".join(self.checks)


@dataclass(frozen=True)
class Folded:
    """A run's root causes and its healthy connection types."""

    #: ERROR, CRIT, WARN then SKIP groups; within a verdict the largest first.
    causes: tuple[CauseGroup, ...]
    #: Connection types whose worst verdict is OK (nothing to act on).
    ok: tuple[str, ...]
    #: Connection types whose every check was skipped (worst verdict SKIP).
    only_skipped: tuple[str, ...]

    def of(self, *verdicts: Verdict) -> tuple[CauseGroup, ...]:
        """The groups with one of ``verdicts``."""
        return tuple(g for g in self.causes if g.verdict in verdicts)


def _without_id(reason: str, ct_id: str) -> str:
    # Most reasons do not name their connection type at all: no pattern needed.
    if not ct_id or ct_id not in reason:
        return reason
    return _id_pattern(ct_id).sub(ID_MARK, reason)


@functools.lru_cache(maxsize=4096)
def _id_pattern(ct_id: str) -> re.Pattern[str]:
    # One per connection type: re's own cache (512 patterns) would recompile every one of
    # a large fleet's ids on every reason.
    return re.compile(rf"(?<![{_ID_CHARS}]){re.escape(ct_id)}(?![{_ID_CHARS}])")


def _root_causes(records: Iterable[CheckRecord]) -> list[tuple[CheckRecord, int]]:
    """(record, dependent checks it blocked) for every root cause of one connection type."""
    recs = list(records)
    failing = {r.check for r in recs if r.verdict in BAD}
    out: list[tuple[CheckRecord, int]] = []
    for rec in recs:
        if rec.verdict in BAD:
            out.append((rec, sum(1 for r in recs if r.blocked_by == rec.check)))
        elif rec.verdict == Verdict.WARN or (
            rec.verdict == Verdict.SKIP and rec.blocked_by not in failing
        ):
            out.append((rec, 0))
    return out


def fold_causes(report: RunReport) -> Folded:
    """Group the run's root causes by (verdict, host, check, reason without the id).

    Checks of the same connection types that ended with the same verdict and reason fold
    into one group too ("not applicable: security is 'none'" of five TLS checks). Groups
    come most severe first (ERROR, CRIT, WARN, SKIP); within one verdict the group of the
    most connection types first, then in the order of the targets file. Nothing of a reason
    is dropped: reasons that differ in anything but the connection id are different
    groups, and a group of one connection type keeps its reason as it was.
    """
    groups: dict[tuple[Verdict, str, str, str], _Group] = {}
    ok: list[str] = []
    only_skipped: list[str] = []
    # A host check that failed is one root cause (a group of its own, its id host:<name>);
    # every check its being down blocked, on its connection types and on the hosts behind
    # it, is counted in that group instead of being a SKIP root cause of its own.
    down = {h.host.name: h.host.id for h in report.hosts if h.status == "down"}
    by_host_blocked: dict[str, int] = {}
    for hrep in report.hosts:
        if hrep.result is not None and hrep.result.root in down:
            by_host_blocked[hrep.result.root] = by_host_blocked.get(hrep.result.root, 0) + len(
                hrep.records
            )
    behind_host: set[str] = set()
    for conn in report.connections:
        blocked_host = conn.result.blocked_host if conn.result is not None else ""
        if blocked_host in down:
            behind_host.add(conn.ct.id)
            n = sum(1 for r in conn.records if r.blocked_by == HOST_TIER)
            by_host_blocked[blocked_host] = by_host_blocked.get(blocked_host, 0) + n
    per_ct: list[tuple[str, str, Sequence[CheckRecord], bool]] = [
        (h.host.id, h.host.host, h.records, False) for h in report.hosts
    ]
    per_ct += [(c.ct.id, c.ct.host, c.records, True) for c in report.connections]
    # A server's coverage findings are root causes of their own (id server:<name>).
    per_ct += [(c.coverage.id, c.coverage.host, c.records, False) for c in report.coverage]
    if report.unattributed:
        per_ct.append(("", "", report.unattributed, False))
    for ct_id, host, records, is_ct in per_ct:
        if is_ct:
            worst = max((r.verdict for r in records), key=rank, default=Verdict.SKIP)
            if worst == Verdict.OK:
                ok.append(ct_id)
            elif worst == Verdict.SKIP and ct_id not in behind_host:
                only_skipped.append(ct_id)
        for rec, blocked in _root_causes(records):
            if rec.blocked_by == HOST_TIER:
                continue  # counted in its host's group
            if rec.tier == HOST_TIER and rec.verdict in BAD and ct_id.startswith(HOST_ID_PREFIX):
                name = ct_id.removeprefix(HOST_ID_PREFIX)
                blocked += by_host_blocked.pop(name, 0)
            where = f"{rec.tier}/{rec.check}"
            key = (rec.verdict, host, where, _without_id(rec.reason, ct_id))
            group = groups.setdefault(key, _Group(first_reason=rec.reason))
            if ct_id and ct_id not in group.ids:
                group.ids.append(ct_id)
            group.blocked += blocked
    # Then the checks: one group per (verdict, host, reason, connection types).
    merged: dict[tuple[Verdict, str, str, tuple[str, ...]], _Merged] = {}
    for (verdict, host, where, reason), group in groups.items():
        ids = tuple(group.ids)
        shown = group.first_reason if len(ids) <= 1 else reason
        into = merged.setdefault((verdict, host, shown, ids), _Merged())
        into.checks.append(where)
        into.blocked += group.blocked
    order = {key: i for i, key in enumerate(merged)}
    # SKIP ranks lowest of all verdicts, so severity alone puts its groups last.
    ranked = sorted(merged, key=lambda k: (-rank(k[0]), -len(k[3]), order[k]))
    causes = tuple(
        CauseGroup(
            verdict=key[0],
            host=key[1],
            checks=tuple(merged[key].checks),
            reason=key[2],
            ids=key[3],
            blocked=merged[key].blocked,
        )
        for key in ranked
    )
    return Folded(causes=causes, ok=tuple(ok), only_skipped=tuple(only_skipped))


@dataclass
class _Group:
    first_reason: str
    ids: list[str] = field(default_factory=list)
    blocked: int = 0


@dataclass
class _Merged:
    checks: list[str] = field(default_factory=list)
    blocked: int = 0
