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
    #: The last finding: this run's verdict, except that a run whose verdict was SKIP or
    #: ERROR (no finding about the server) carries the last OK/WARN/CRIT forward unchanged.
    verdict: Verdict
    hardness: Hardness  # "soft" only for a CRIT not yet confirmed
    since: float  # epoch seconds: start of the first run of the current streak
    runs: int  # consecutive runs that found this verdict (carried runs not counted)
    previous: Verdict | None  # the verdict before the streak; None: no earlier run
    flapping: bool = False
    new: bool = False  # the verdict differs from the previous run's
    #: The verdict as last told: the verdict after the last run in which the connection
    #: type was not flapping and the CRIT (if one) was hard; frozen while it flaps, so
    #: the run it settles in tells what differs from it. None: never told.
    told: Verdict | None = None
    #: In a report merged from several vantage points (``pop3mon merge``): the vantage
    #: whose history this state is (the one whose record of the check is shown); None in
    #: a run's own report.
    vantage: str | None = None


@dataclass(frozen=True)
class Change:
    """A state change worth telling: what changed, from what to what, and why."""

    kind: ChangeKind
    ct: str
    check: str
    before: Verdict | None
    after: Verdict
    reason: str  # the current check's reason (already scrubbed of secrets)
    #: When the previous state started (for "was CRIT since ..."); 0: not known (a change
    #: told when flapping settled compares with the state told before the flap).
    since: float
    detail: str = ""  # drift: "before → after"; still failing: "N runs, since <time>"
    #: Whether the state it leaves was hard: a recovery from a soft CRIT (never told to
    #: whoever hears only hard CRITs) is not told as a recovery (Nagios).
    was_hard: bool = True
    #: In a report merged from several vantage points: the vantage whose history made
    #: this change (each vantage keeps its own); None in a run's own report.
    vantage: str | None = None
