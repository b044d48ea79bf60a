"""The terminal summary: a verdict matrix, each root cause once, then the WARNs; then what
the run history makes of it (new, recovered, still failing, flapping, the history's WARN)."""

from __future__ import annotations

import pytest

from ..engine.stages import HOST_ID_PREFIX, TIERS
from ..history.record import iso
from ..history.states import BAD
from ..verdict import Verdict, count, worst
from .model import RunReport
from .recorder import NOT_RUN, CheckRecord, verdicts

__all__ = ["history_lines", "write_history", "write_hosts", "write_summary"]

_BAD = (Verdict.CRIT, Verdict.ERROR)


def write_summary(tr: pytest.TerminalReporter, grouped: dict[str, list[CheckRecord]]) -> None:
    """Write the pop3mon summary for records grouped by connection type."""
    if not grouped:
        return
    tr.section("pop3mon summary")
    width = max(len("connection type"), *(len(c) for c in grouped)) + 2
    tr.write_line("connection type".ljust(width) + "".join(t.ljust(14) for t in TIERS))
    for ct, recs in grouped.items():
        if ct.startswith(HOST_ID_PREFIX):
            continue  # the host checks have their own lines (write_hosts)
        cells = []
        for tier in TIERS:
            mine = [r for r in recs if r.tier == tier]
            cells.append(worst(verdicts(mine)).ljust(14) if mine else "-".ljust(14))
        bad = worst(verdicts(recs))
        markup = (
            {"red": True}
            if bad in _BAD
            else ({"yellow": True} if bad == Verdict.WARN else {"green": True})
        )
        tr.write_line(ct.ljust(width) + "".join(cells), **markup)
    _root_causes(tr, grouped)
    warns = [r for recs in grouped.values() for r in recs if r.verdict == Verdict.WARN]
    if warns:
        tr.write_line("")
        tr.write_line(f"WARN ({len(warns)}):", yellow=True, bold=True)
        for rec in warns:
            tr.write_line(f"  {rec.ct} {rec.tier}/{rec.check}: {rec.reason}", yellow=True)
    counts = count(r.verdict for recs in grouped.values() for r in recs)
    line = "verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    not_run = sum(1 for recs in grouped.values() for r in recs if r.outcome == NOT_RUN)
    if not_run:
        line += f" (of the SKIPs {not_run} not run: the run ended first)"
    tr.write_line(line, bold=True)


def _root_causes(tr: pytest.TerminalReporter, grouped: dict[str, list[CheckRecord]]) -> None:
    """One block per failing connection type: what failed, and how many checks that
    failure made impossible, so 12 dependency skips read as one root cause."""
    failing = {
        ct: recs
        for ct, recs in grouped.items()
        if any(r.verdict in _BAD for r in recs) and not ct.startswith(HOST_ID_PREFIX)
    }
    if not failing:
        return
    tr.write_line("")
    tr.write_line(f"CRIT ({len(failing)} connection types):", red=True, bold=True)
    for ct, recs in failing.items():
        for rec in recs:
            if rec.verdict in _BAD:
                tr.write_line(f"  {ct} {rec.tier}/{rec.check}: {rec.reason}", red=True)
        blocked = sum(1 for r in recs if r.blocked_by)
        if blocked:
            tr.write_line(f"    ({blocked} dependent checks skipped because of it)")


def write_hosts(tr: pytest.TerminalReporter, report: RunReport) -> None:
    """The host checks: each host that is down once, with what it took down (connection
    types and hosts behind it), then one line for the hosts that are up."""
    if not report.hosts:
        return
    tr.write_line("")
    down = [h for h in report.hosts if any(r.verdict in _BAD for r in h.records)]
    if down:
        tr.write_line(f"CRIT ({len(down)} hosts):", red=True, bold=True)
    for hrep in down:
        for rec in hrep.records:
            if rec.verdict in _BAD:
                tr.write_line(f"  {hrep.host.id} {rec.check}: {rec.reason}", red=True)
        if hrep.blocked:
            tr.write_line(f"    (skipped because of it: {', '.join(hrep.blocked)})")
    up = [h.host.id for h in report.hosts if h.status == "up"]
    if up:
        tr.write_line(f"hosts up: {', '.join(up)}", green=True)


def history_lines(report: RunReport) -> list[tuple[str, str]]:
    """The history's lines as ``(colour, text)``: the WARN or new-baseline note, then new,
    recovered, still failing (N runs, since when) and flapping connection types."""
    hist = report.history
    out: list[tuple[str, str]] = [("yellow", f"notify: WARN {w}") for w in report.notify_warnings]
    if hist.status == "warn":
        return [*out, ("yellow", f"history: WARN {hist.note}")]
    if hist.status == "off":
        return out
    if hist.status == "new":
        return [*out, ("", f"history: {hist.note}")]
    states = hist.states
    order = [(c.ct.id, r.check) for c in report.connections for r in c.records]
    shown = [states[k] for k in order if k in states]
    new = [s for s in shown if s.new and s.verdict in BAD]
    if new:
        out.append(
            (
                "red",
                "new since last run: " + ", ".join(f"{s.ct} {s.check} ({s.verdict})" for s in new),
            )
        )
    recovered = [s for s in shown if s.new and s.verdict == Verdict.OK and s.previous in BAD]
    if recovered:
        out.append(("green", "recovered: " + ", ".join(f"{s.ct} {s.check}" for s in recovered)))
    for s in shown:
        if not s.new and s.verdict in BAD:
            soft = " soft" if s.hardness == "soft" else ""
            out.append(
                (
                    "red" if s.verdict != Verdict.WARN else "yellow",
                    f"still failing: {s.ct} {s.check} ({s.verdict}{soft}, {s.runs} runs, "
                    f"since {iso(s.since)})",
                )
            )
    flapping = sorted(ct for ct, on in hist.flapping.items() if on)
    if flapping:
        out.append(("yellow", "flapping (changes held): " + ", ".join(flapping)))
    return out


def write_history(tr: pytest.TerminalReporter, report: RunReport) -> None:
    """Write the history's lines under the pop3mon summary."""
    lines = history_lines(report)
    if not lines:
        return
    tr.write_line("")
    for colour, text in lines:
        tr.write_line(text, **({colour: True} if colour else {}))
