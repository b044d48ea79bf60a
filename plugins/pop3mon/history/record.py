"""Record one run in the history and compute its states and changes (no pytest).

:func:`record_run` is what the report glue calls on the controller at session end. It never
raises: any problem with the file becomes a :class:`HistoryOutcome` with status ``warn``
and a sentence naming the file and why, so the run's reports are written regardless.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from ..config import HistorySettings
from ..verdict import Verdict
from .model import Change, CheckState
from .states import BAD, FlapPolicy, Observation, evaluate
from .store import CheckRow, CtRow, HistoryError, HistoryStore, RunRow

__all__ = [
    "HistoryOutcome",
    "HistoryStatus",
    "foreign_note",
    "foreign_vantage",
    "iso",
    "record_run",
    "streak_note",
    "vantage_of",
]

#: ``ok``: recorded on top of earlier runs; ``new``: recorded as the first run (a new
#: baseline: nothing earlier in the file); ``warn``: not recorded, ``note`` says why;
#: ``off``: no history this run (``--no-history``, or no place for it).
HistoryStatus = Literal["ok", "new", "warn", "off"]


def iso(epoch: float) -> str:
    """UTC ISO 8601 to the second, as every report writes times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(frozen=True)
class HistoryOutcome:
    """What the history said about this run, for the writers."""

    status: HistoryStatus
    path: Path | None = None
    note: str = ""  # the WARN, or the new-baseline sentence
    states: Mapping[tuple[str, str], CheckState] = field(default_factory=dict)
    changes: tuple[Change, ...] = ()
    #: per connection type: window label ("24h", "7d", "30d") → ratio, None: no run
    availability: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    flapping: Mapping[str, bool] = field(default_factory=dict)
    #: per connection type its last runs, oldest first: (start, total seconds, worst)
    series: Mapping[str, tuple[tuple[float, float | None, str], ...]] = field(default_factory=dict)
    #: In a merge of several vantage points: the vantages whose history this run was a new
    #: baseline of. Their changes from nothing (``before`` None) tell nothing; the other
    #: vantages' do (a check new in a history that has earlier runs).
    baselines: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        """True when this run was recorded."""
        return self.status in ("ok", "new")


OFF: Final = HistoryOutcome("off")
#: How many runs the reports draw per connection type (the latency sparkline).
SERIES_RUNS: Final = 48


def vantage_of(run_id: str) -> str | None:
    """The vantage a history row's run id names, or None: the row id is ``<run id>[
    shard K/N][ @NAME][ <own id>]`` (report/history.history_run_id), and neither a run
    id nor a generated one has a space or an ``@``."""
    for word in run_id.split(" ")[1:]:
        if word.startswith("@"):
            return word[1:]
    return None


def foreign_vantage(store: HistoryStore, vantage: str | None) -> str | None:
    """The vantage of the history's last run when it is not ``vantage`` (this run's), or
    None when the history is this vantage's to use.

    States, streaks and drift baselines are kept per connection type and check, not per
    vantage: two vantages recording into one file would overwrite each other's states
    every run (a CRIT from one, "recovered" from the other, then "flapping"). A history
    whose last run named no vantage may be taken on by a named one (adding ``--vantage``
    to a running setup); the shards of one vantage all name the same."""
    last = store.last_run_id()
    theirs = vantage_of(last) if last is not None else None
    return theirs if theirs is not None and theirs != vantage else None


def foreign_note(path: Path, theirs: str, vantage: str | None) -> str:
    """The one-line WARN for a history that holds another vantage's runs."""
    mine = f"vantage {vantage}" if vantage is not None else "without --vantage"
    return (
        f"{path} holds the runs of vantage {theirs}, this run is {mine}: not recorded "
        "(give each vantage point its own --history)"
    )


def record_run(
    path: Path,
    settings: HistorySettings,
    run: RunRow,
    cts: Sequence[CtRow],
    checks: Sequence[CheckRow],
    confirm: Mapping[str, int],
    vantage: str | None = None,
) -> HistoryOutcome:
    """Append this run (made from ``vantage``) to the history at ``path`` and compute
    states and changes; a history of another vantage's runs is left alone, a WARN
    (:func:`foreign_vantage`)."""
    policy = FlapPolicy(settings.flapping_changes, settings.flapping_runs)
    observations = [Observation(k.ct, k.check, k.tier, k.verdict, k.reason) for k in checks]
    ct_ids = sorted({c.ct for c in cts} | {k.ct for k in checks})
    first = False

    def compute(store: HistoryStore) -> tuple[Sequence[CheckState], Mapping[str, bool]]:
        nonlocal first
        # Checked in the writer's transaction: no other vantage's run slips in between.
        theirs = foreign_vantage(store, vantage)
        if theirs is not None:
            raise HistoryError(foreign_note(path, theirs, vantage))
        first = store.run_count() == 0
        result = evaluate(
            store.states(),
            observations,
            run.started,
            confirm=confirm,
            recent=store.recent_changes(ct_ids, policy.runs - 1),
            was_flapping=store.was_flapping(ct_ids),
            policy=policy,
        )
        computed.append(result.changes)
        return result.states, result.changed

    computed: list[tuple[Change, ...]] = []
    try:
        with HistoryStore.open(path, timeout=settings.lock_timeout) as store:
            states, avail = store.record(
                run, cts, checks, compute, retention_days=settings.retention_days
            )
            series = store.latency_series(ct_ids, SERIES_RUNS)
    except HistoryError as exc:
        return HistoryOutcome("warn", path, str(exc))
    except (sqlite3.Error, OSError) as exc:  # anything the store did not word
        return HistoryOutcome("warn", path, f"{path}: {exc}")
    flapping = {s.ct: s.flapping for s in states}
    note = f"new baseline (no earlier runs in {path})" if first else ""
    return HistoryOutcome(
        "new" if first else "ok",
        path,
        note,
        {(s.ct, s.check): s for s in states},
        computed[-1] if computed else (),
        avail,
        flapping,
        series,
    )


def streak_note(prev: CheckState | None, verdict: Verdict, has_history: bool) -> str:
    """How a failing check's failure stands against the history, for its failure
    message: "new since the last run", "failing for N runs since <time>", or "" (no
    history to tell, or not a failure)."""
    if not has_history or verdict not in BAD:
        return ""
    if prev is None:
        return "new: no earlier run in the history"
    if prev.verdict == verdict:
        return f"failing for {prev.runs + 1} runs since {iso(prev.since)}"
    return f"new since the last run (was {prev.verdict})"
