"""The history's vocabulary: a check's state over runs, and a change between two runs.

These are the contract between the history (which computes them), the reports (which show
them) and the notifications (which send the changes): plain, frozen, JSON-ready data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

from ..verdict import Verdict

__all__ = ["CHANGE_KINDS", "Change", "ChangeKind", "CheckState", "Hardness"]

#: A CRIT is soft until it has held for ``confirm`` runs in a row, then hard (Nagios).
Hardness = Literal["soft", "hard"]

#: What a change is, for reports and notification rules:
#: new (first failure: OK/SKIP → WARN/CRIT), worse (WARN → CRIT), better (CRIT → WARN),
#: recovered (WARN/CRIT → OK), hard (a soft CRIT confirmed), drift (a drift check fired),
#: flapping / settled (the connection type started or stopped flapping).
ChangeKind = Literal["new", "worse", "better", "recovered", "hard", "drift", "flapping", "settled"]
CHANGE_KINDS: Final[tuple[ChangeKind, ...]] = get_args(ChangeKind)


@dataclass(frozen=True)
class CheckState:
    """One check of one connection type over runs, after the current run."""

    ct: str
    check: str  # CheckName, or latency-<phase>
    verdict: Verdict  # this run's verdict
    hardness: Hardness  # "soft" only for a CRIT not yet confirmed
    since: float  # epoch seconds: start of the first run of the current streak
    runs: int  # consecutive runs with this verdict, this one included
    previous: Verdict | None  # the verdict before the streak; None: no earlier run
    flapping: bool = False
    new: bool = False  # the verdict differs from the previous run's


@dataclass(frozen=True)
class Change:
    """A state change worth telling: what changed, from what to what, and why."""

    kind: ChangeKind
    ct: str
    check: str
    before: Verdict | None
    after: Verdict
    reason: str  # the current check's reason (already scrubbed of secrets)
    since: float  # when the previous state started (for "was OK since ...")
    detail: str = ""  # drift: "before → after"; still failing: "N runs, since <time>"
