"""Collects every check's verdict on the controller and prints the terminal summary.

Verdicts arrive in test reports' ``user_properties`` (from this process or from xdist
workers), so the recorder is the one place that knows the whole run; the report writers
read from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from . import checks

if TYPE_CHECKING:
    from .plugin import RunState

__all__ = ["CheckRecord", "Recorder", "record_from_report"]


@dataclass
class CheckRecord:
    """One tier check of one connection type, as it ended."""

    nodeid: str
    ct: str
    server: str
    tier: str
    check: str
    verdict: str  # OK WARN CRIT SKIP, or ERROR when the test broke without a verdict
    reason: str
    outcome: str  # pytest outcome: passed failed skipped
    figure: float | None = None
    unit: str = ""
    duration: float = 0.0


def _props(report: pytest.TestReport) -> dict[str, object]:
    return {str(k): v for k, v in report.user_properties}


def record_from_report(report: pytest.TestReport) -> CheckRecord | None:
    """The verdict a test report carries in its user_properties (``None`` without one)."""
    props = _props(report)
    if "pop3mon_ct" not in props:
        return None
    figure = props.get("pop3mon_figure")
    return CheckRecord(
        nodeid=report.nodeid,
        ct=str(props["pop3mon_ct"]),
        server=str(props.get("pop3mon_server", "")),
        tier=str(props.get("pop3mon_tier", "")),
        check=str(props.get("pop3mon_check", "")),
        verdict=str(props.get("pop3mon_verdict", "ERROR")),
        reason=str(props.get("pop3mon_reason", "")),
        outcome=report.outcome,
        figure=float(figure) if isinstance(figure, int | float) else None,
        unit=str(props.get("pop3mon_unit", "")),
        duration=report.duration,
    )


class Recorder:
    """Registered on the controller only; gathers :class:`CheckRecord` per test."""

    def __init__(self, config: pytest.Config, state: RunState) -> None:
        self.config = config
        self.state = state
        self.records: dict[str, CheckRecord] = {}
        self.started = time.time()
        self.finished = 0.0

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = _props(report)
        if "pop3mon_ct" not in props:
            if report.failed and report.nodeid in self.records:
                # A teardown error after a verdict: keep the verdict, mark the outcome.
                self.records[report.nodeid].outcome = "failed"
            elif report.failed and report.when in ("setup", "call"):
                self.records[report.nodeid] = self._broken(report)
            return
        if report.when == "teardown" and report.nodeid in self.records:
            return
        record = record_from_report(report)
        assert record is not None  # pop3mon_ct is present
        self.records[report.nodeid] = record

    def _broken(self, report: pytest.TestReport) -> CheckRecord:
        """A test that errored before reaching a verdict (a bug or a fixture error)."""
        ct = ""
        check = report.nodeid.rsplit("::", 1)[-1]
        if "[" in check:
            check, ct = check.split("[", 1)
            ct = ct.rstrip("]")
        tier = report.nodeid.split("/")[-1].split("::")[0].removeprefix("test_")
        tier = tier.removesuffix(".py")
        connection = self.state.by_id.get(ct)
        text = report.longreprtext.strip().splitlines()
        return CheckRecord(
            nodeid=report.nodeid,
            ct=ct,
            server=connection.server if connection else "",
            tier=tier,
            check=check.removeprefix("test_"),
            verdict="ERROR",
            reason=text[-1] if text else "test error",
            outcome="failed",
            duration=report.duration,
        )

    def pytest_sessionfinish(self) -> None:
        self.finished = time.time()

    # -- views --------------------------------------------------------------------------
    def by_connection(self) -> dict[str, list[CheckRecord]]:
        """Records grouped by connection type id, each group in test order."""
        out: dict[str, list[CheckRecord]] = {}
        for rec in self.records.values():
            out.setdefault(rec.ct, []).append(rec)
        return dict(sorted(out.items()))

    def counts(self) -> dict[str, int]:
        """How many checks ended with each verdict."""
        out = {v: 0 for v in (checks.OK, checks.WARN, checks.CRIT, checks.SKIP, "ERROR")}
        for rec in self.records.values():
            out[rec.verdict] = out.get(rec.verdict, 0) + 1
        return out

    @staticmethod
    def worst(records: list[CheckRecord]) -> str:
        """The worst verdict among ``records`` (ERROR > CRIT > WARN > OK > SKIP)."""
        rank = {"SKIP": 0, "OK": 1, "WARN": 2, "CRIT": 3, "ERROR": 4}
        if not records:
            return "SKIP"
        return max((r.verdict for r in records), key=lambda v: rank.get(v, 4))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.records:
            return
        tr = terminalreporter
        tr.section("pop3mon summary")
        tiers = checks.TIERS
        width = max(len("connection type"), *(len(c) for c in self.by_connection())) + 2
        tr.write_line("connection type".ljust(width) + "".join(t.ljust(14) for t in tiers))
        for ct, recs in self.by_connection().items():
            cells = []
            for tier in tiers:
                mine = [r for r in recs if r.tier == tier]
                cells.append(self.worst(mine).ljust(14) if mine else "-".ljust(14))
            worst = self.worst(recs)
            markup = (
                {"red": True}
                if worst in ("CRIT", "ERROR")
                else ({"yellow": True} if worst == "WARN" else {"green": True})
            )
            tr.write_line(ct.ljust(width) + "".join(cells), **markup)
        self._root_causes(tr)
        warns = [r for r in self.records.values() if r.verdict == checks.WARN]
        if warns:
            tr.write_line("")
            tr.write_line(f"WARN ({len(warns)}):", yellow=True, bold=True)
            for rec in warns:
                tr.write_line(f"  {rec.ct} {rec.tier}/{rec.check}: {rec.reason}", yellow=True)
        counts = self.counts()
        tr.write_line(
            "verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n), bold=True
        )

    def _root_causes(self, tr: pytest.TerminalReporter) -> None:
        """One block per failing connection type: what failed, and how many checks that
        failure made impossible, so 12 dependency skips read as one root cause."""
        failing = {
            ct: recs
            for ct, recs in self.by_connection().items()
            if any(r.verdict in ("CRIT", "ERROR") for r in recs)
        }
        if not failing:
            return
        tr.write_line("")
        tr.write_line(f"CRIT ({len(failing)} connection types):", red=True, bold=True)
        for ct, recs in failing.items():
            for rec in recs:
                if rec.verdict in ("CRIT", "ERROR"):
                    tr.write_line(f"  {ct} {rec.tier}/{rec.check}: {rec.reason}", red=True)
            blocked = sum(
                1 for r in recs if r.verdict == checks.SKIP and r.reason.startswith("skipped:")
            )
            if blocked:
                tr.write_line(f"    ({blocked} dependent checks skipped because of it)")
