"""States over runs, and the changes worth telling: pure functions, no I/O.

Given the state every check was in after the previous run (:class:`~.model.CheckState`)
and this run's verdicts, :func:`evaluate` computes the new states and the
:class:`~.model.Change` list, the way Nagios-style monitors do:

* a streak: ``since`` (start of the first run with this verdict), ``runs`` in a row, the
  verdict ``previous`` to the streak, ``new`` when it differs from the last finding;
* findings only: SKIP (the check did not run: a dependency failed, or it was
  deselected) and ERROR (the test broke: no finding about the server) leave the last
  OK/WARN/CRIT state as it was — verdict, ``since``, hardness and ``runs`` (a run without
  a finding neither counts towards ``confirm`` nor breaks the streak) — so the next
  finding is compared with the last one: ``OK, CRIT, SKIP, OK`` is a recovery and
  ``CRIT, SKIP, CRIT`` or ``CRIT, ERROR, CRIT`` one CRIT since the first run. Only a
  check that never had a finding is in state SKIP or ERROR;
* soft/hard: a CRIT is *soft* until it held for ``confirm`` runs in a row (the
  connection type's cascading ``confirm:`` setting, default 1: hard at once), then a
  ``hard`` change is told once. A drift check is hard at once (it compares with a
  baseline, nothing transient to confirm), so it is told once, as ``drift``. A change
  leaving a soft CRIT says so (``was_hard``): its recovery is not told;
* flapping: a connection type with more than ``changes`` runs that changed some check's
  verdict in its last ``runs`` runs (this one included) is flapping: its check changes
  are held (not told), a ``flapping`` change is told once when it starts and a
  ``settled`` change when it stops (those two carry the check name ``""``). Only checks
  that judge the server count: a latency check hovering at its threshold, or a drift
  check (fired once, accepted once), never makes the connection type flap (their
  changes are still held while it flaps for another reason). Every change is held while
  it flaps, a hard CRIT of connectivity, TLS or auth included (that is what flapping
  means: the server alternates); none is lost, because in the run it settles in each
  check is compared with the state told before the flap (``told``), and what differs is
  told then (``new``, ``recovered``, …, detail "after flapping settled").

Which transitions are changes: OK/SKIP/none → WARN/CRIT/ERROR is ``new`` (``drift`` for a
check of the ``drift`` tier), WARN → CRIT/ERROR ``worse``, CRIT/ERROR → WARN ``better``,
WARN/CRIT/ERROR → OK ``recovered``. A check with no verdict this run (not recorded) keeps
its state untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from ..verdict import Verdict, worst
from .model import Change, ChangeKind, CheckState

__all__ = ["BAD", "Evaluation", "FlapPolicy", "Observation", "evaluate", "next_state"]

#: Verdicts a mail admin must act on.
BAD: Final = frozenset({Verdict.WARN, Verdict.CRIT, Verdict.ERROR})
_SEVERE: Final = frozenset({Verdict.CRIT, Verdict.ERROR})
#: Verdicts that are a finding about the server; SKIP and ERROR carry the last one forward.
FINDINGS: Final = frozenset({Verdict.OK, Verdict.WARN, Verdict.CRIT})
#: The tier whose failures are told as ``drift`` (checks/drift.py).
DRIFT_TIER: Final = "drift"
#: Tiers whose verdict changes do not count towards flapping (see the module docstring).
NOT_FLAPPING_TIERS: Final = frozenset({"latency", DRIFT_TIER})


@dataclass(frozen=True)
class Observation:
    """One check's verdict in this run."""

    ct: str
    check: str
    tier: str
    verdict: Verdict
    reason: str = ""


@dataclass(frozen=True)
class FlapPolicy:
    """More than ``changes`` changing runs among the last ``runs`` runs is flapping."""

    changes: int
    runs: int


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one run: new states, the changes to tell, and per connection type
    whether any check changed and whether it is flapping now."""

    states: tuple[CheckState, ...]
    changes: tuple[Change, ...]
    changed: Mapping[str, bool]
    flapping: Mapping[str, bool]


def next_state(prev: CheckState | None, obs: Observation, now: float, confirm: int) -> CheckState:
    """The state of one check after this run (``flapping`` and ``told`` are set by
    :func:`evaluate`)."""
    if prev is not None and prev.verdict in FINDINGS and obs.verdict not in FINDINGS:
        return replace(prev, new=False)  # no finding: the last one stands
    if obs.tier == DRIFT_TIER:
        confirm = 1
    if prev is not None and prev.verdict == obs.verdict:
        since, runs, previous, new = prev.since, prev.runs + 1, prev.previous, False
    else:
        since, runs, new = now, 1, True
        previous = prev.verdict if prev is not None else None
    hard = obs.verdict != Verdict.CRIT or runs >= max(1, confirm)
    return CheckState(
        ct=obs.ct,
        check=obs.check,
        verdict=obs.verdict,
        hardness="hard" if hard else "soft",
        since=since,
        runs=runs,
        previous=previous,
        new=new,
    )


def _kind(before: Verdict | None, after: Verdict, tier: str) -> ChangeKind | None:
    """The change from ``before`` (last run's verdict) to ``after``, or None."""
    if after in BAD and (before is None or before not in BAD):
        return "drift" if tier == DRIFT_TIER else "new"
    if before == Verdict.WARN and after in _SEVERE:
        return "worse"
    if before in _SEVERE and after == Verdict.WARN:
        return "better"
    if before in BAD and after == Verdict.OK:
        return "recovered"
    return None


def _check_changes(
    prev: CheckState | None, state: CheckState, obs: Observation, now: float, confirm: int
) -> list[Change]:
    before = prev.verdict if prev is not None else None
    was_hard = prev is None or prev.hardness == "hard"
    out: list[Change] = []
    kind = _kind(before, state.verdict, obs.tier)
    since = prev.since if prev is not None else now
    if kind is not None:
        detail = ""
        if state.hardness == "soft":
            detail = f"soft: {state.runs} of {confirm} runs"
        out.append(
            Change(
                kind,
                obs.ct,
                obs.check,
                before,
                state.verdict,
                obs.reason,
                since,
                detail,
                was_hard=was_hard,
            )
        )
    elif (
        state.verdict == Verdict.CRIT
        and state.hardness == "hard"
        and prev is not None
        and prev.verdict == Verdict.CRIT
        and prev.hardness == "soft"
    ):
        out.append(
            Change(
                "hard",
                obs.ct,
                obs.check,
                prev.verdict,
                state.verdict,
                obs.reason,
                state.since,
                f"confirmed after {state.runs} runs",
                was_hard=False,
            )
        )
    return out


def _settled_changes(
    prev: CheckState | None, state: CheckState, obs: Observation, confirm: int
) -> list[Change]:
    """In the run a flap settles in: the change from the state told before the flap (or
    none ever) to this one, if any."""
    told = prev.told if prev is not None else None
    kind = _kind(told, state.verdict, obs.tier)
    if kind is None:
        return []
    detail = "after flapping settled"
    if state.hardness == "soft":
        detail += f"; soft: {state.runs} of {confirm} runs"
    # Since when the told state held is not known: the flap came in between.
    return [Change(kind, obs.ct, obs.check, told, state.verdict, obs.reason, 0.0, detail)]


def _told(prev: CheckState | None, state: CheckState, flapping: bool) -> Verdict | None:
    """The verdict as told after this run (see :attr:`CheckState.told`), ``flapping``
    being the connection type's after this run."""
    if flapping or (state.verdict == Verdict.CRIT and state.hardness == "soft"):
        return prev.told if prev is not None else None
    return state.verdict


def _settled(state: CheckState, flapping: bool, told: Verdict | None) -> CheckState:
    """``replace(state, flapping=…, told=…)`` by its constructor: at 1,000 connection types
    evaluate() settles 16,000 states per run, and replace() inspects the fields each time."""
    return CheckState(
        ct=state.ct,
        check=state.check,
        verdict=state.verdict,
        hardness=state.hardness,
        since=state.since,
        runs=state.runs,
        previous=state.previous,
        flapping=flapping,
        new=state.new,
        told=told,
        vantage=state.vantage,
    )


def evaluate(
    previous: Mapping[tuple[str, str], CheckState],
    observations: Sequence[Observation],
    now: float,
    *,
    confirm: Mapping[str, int],
    recent: Mapping[str, Sequence[bool]],
    was_flapping: Mapping[str, bool],
    policy: FlapPolicy,
) -> Evaluation:
    """The states after this run and the changes to tell.

    ``previous``: the states the last run left; ``observations``: this run's verdicts;
    ``now``: this run's start (epoch seconds); ``confirm``: per connection type;
    ``recent``: per connection type, whether each of its earlier runs changed a verdict
    that counts towards flapping (oldest first); ``was_flapping``: per connection type,
    after its last run.
    """
    by_ct: dict[str, list[tuple[CheckState | None, CheckState, Observation]]] = {}
    for obs in observations:
        prev = previous.get((obs.ct, obs.check))
        state = next_state(prev, obs, now, confirm.get(obs.ct, 1))
        by_ct.setdefault(obs.ct, []).append((prev, state, obs))
    states: list[CheckState] = []
    changes: list[Change] = []
    changed: dict[str, bool] = {}
    flapping: dict[str, bool] = {}
    for ct, rows in by_ct.items():
        # A check seen for the first time is no change of the connection type's state;
        # nor is a latency or drift check's (see the module docstring).
        changed[ct] = any(
            p is not None and p.verdict != s.verdict and o.tier not in NOT_FLAPPING_TIERS
            for p, s, o in rows
        )
        window = [*list(recent.get(ct, ()))[-(policy.runs - 1) :], changed[ct]]
        flips = sum(window)
        flapping[ct] = flips > policy.changes
        was = was_flapping.get(ct, False)
        ct_changes: list[Change] = []
        for prev, state, obs in rows:
            state = _settled(state, flapping[ct], _told(prev, state, flapping[ct]))
            states.append(state)
            if was and not flapping[ct]:
                ct_changes.extend(_settled_changes(prev, state, obs, confirm.get(ct, 1)))
            else:
                ct_changes.extend(_check_changes(prev, state, obs, now, confirm.get(ct, 1)))
        before = worst(p.verdict for p, _, _ in rows if p is not None) if rows else None
        after = worst(s.verdict for _, s, _ in rows)
        summary = f"{flips} state changes in the last {len(window)} runs"
        if flapping[ct]:
            if not was:
                changes.append(
                    Change(
                        "flapping",
                        ct,
                        "",
                        before,
                        after,
                        f"flapping: {summary} (more than {policy.changes}); "
                        "changes are held until it settles",
                        now,
                    )
                )
            continue  # held
        if was:
            changes.append(Change("settled", ct, "", before, after, f"settled: {summary}", now))
        changes.extend(ct_changes)
    return Evaluation(tuple(states), tuple(changes), changed, flapping)
