"""The verdict vocabulary: one type, one severity ranking, one way to count and rank.

Checks produce OK / WARN / CRIT / SKIP; ERROR marks a test that broke before it reached a
verdict (a bug or a fixture error), never a server finding. The terminal summary, every
report and the metrics rank and count with the functions here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Final

__all__ = ["FAILING", "VERDICT_CODES", "Verdict", "count", "fails", "rank", "worst"]


class Verdict(StrEnum):
    """How a check ended. A ``str``: it serialises and compares as its name."""

    OK = "OK"
    WARN = "WARN"
    CRIT = "CRIT"
    SKIP = "SKIP"
    ERROR = "ERROR"

    @classmethod
    def parse(cls, value: object) -> Verdict:
        """The verdict named ``value``; anything unknown is ERROR (a broken record)."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.ERROR


#: Severity for "worst of": SKIP lowest (a tier whose checks were all skipped is grey, and
#: OK + SKIP is OK), ERROR highest.
_RANK: Final[Mapping[Verdict, int]] = {
    Verdict.SKIP: 0,
    Verdict.OK: 1,
    Verdict.WARN: 2,
    Verdict.CRIT: 3,
    Verdict.ERROR: 4,
}
#: Numeric encoding of the metrics (documented in their HELP text); display order.
VERDICT_CODES: Final[Mapping[Verdict, int]] = {
    Verdict.OK: 0,
    Verdict.WARN: 1,
    Verdict.CRIT: 2,
    Verdict.SKIP: 3,
    Verdict.ERROR: 4,
}


def rank(verdict: Verdict) -> int:
    """Severity of ``verdict`` (higher is worse)."""
    return _RANK[verdict]


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """The most severe verdict (ERROR > CRIT > WARN > OK > SKIP); SKIP when empty."""
    return max(verdicts, key=rank, default=Verdict.SKIP)


def count(verdicts: Iterable[Verdict]) -> dict[Verdict, int]:
    """How many of each verdict, every verdict present (zero or not), in display order."""
    out = dict.fromkeys(VERDICT_CODES, 0)
    for verdict in verdicts:
        out[verdict] += 1
    return out


#: The verdicts that fail a run whatever ``--strict-warn`` says.
FAILING: Final = frozenset({Verdict.CRIT, Verdict.ERROR})


def fails(verdict: Verdict, strict_warn: bool = False) -> bool:
    """Whether ``verdict`` fails the run: CRIT and ERROR, and WARN under ``--strict-warn``.

    The one rule of a run's exit status: a check's test outcome (the ``check`` fixture, so
    pytest's and ``ci/run-monitor``'s exit status 1) and ``pop3mon merge --exit-status``
    of a merged report."""
    return verdict in FAILING or (strict_warn and verdict == Verdict.WARN)
