"""The terminal summary and pop3mon's lines of pytest's short test summary.

The pop3mon summary is the last thing a monitoring run prints (after pytest's own
"8 failed, 152 skipped" line): most severe first, each root cause once with the connection
types it hit folded into one entry (:mod:`.fold`), OK connection types as a count (listed
with ``-v``), then what the run history makes of it. Every line fits the terminal width
(80 columns when it is not a terminal); a long reason wraps with indentation and is never
cut. With 1,000 connection types it stays short: every CRIT/ERROR root cause is named, but
the ids of a group, the WARN and SKIP groups and the history's lists are capped with
"and N more" unless ``-v``.
"""

from __future__ import annotations

import copy
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # `pop3mon merge` prints this summary without pytest
    import pytest

from ..engine.stages import HOST_ID_PREFIX
from ..history.record import iso
from ..history.states import BAD as HISTORY_BAD
from ..verdict import Verdict, count
from .fold import BAD, CauseGroup, Folded, fold_causes
from .model import RunReport, listed
from .recorder import CheckRecord

__all__ = [
    "adapt_short_summary",
    "history_lines",
    "host_lines",
    "summary_lines",
    "summary_text",
    "wrap",
    "write_summary",
]

#: Without ``-v``: how many ids one group names, how many WARN/SKIP groups and how many
#: entries of each history list are shown before "and N more".
MAX_IDS: Final = 6
MAX_GROUPS: Final = 10
MAX_HISTORY: Final = 10

#: (colour, text) of one summary entry before wrapping; colour "" is the default.
Line = tuple[str, str]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _group_text(group: CauseGroup) -> str:
    label = "ERROR " if group.verdict == Verdict.ERROR else ""
    if len(group.ids) == 1:
        return f"{label}{group.ids[0]} {group.where}: {group.reason}"
    on = f" on {group.host}" if group.host else ""
    n = len(group.ids) or 1
    return f"{label}{_plural(n, 'connection type')}{on}: {group.where}: {group.reason}"


def _group_detail(group: CauseGroup, limit: int | None, list_ids: bool) -> str:
    """The second line of a group: its ids (several) and the checks it blocked."""
    parts = []
    if len(group.ids) > 1 and list_ids:
        cut = limit is not None and len(group.ids) > limit
        parts.append(listed(group.ids, limit) + (" (-v lists them)" if cut else ""))
    if group.blocked:
        checks = _plural(group.blocked, "dependent check")
        parts.append(f"{checks} skipped because of {'it' if len(group.ids) <= 1 else 'them'}")
    return "; ".join(parts)


def _section(
    out: list[tuple[str, str, bool]],
    colour: str,
    title: str,
    groups: Sequence[CauseGroup],
    verbose: bool,
    kind: Verdict,
) -> None:
    """A section's title and groups. Without -v: every CRIT/ERROR group but at most
    MAX_GROUPS WARN or SKIP groups, and MAX_IDS ids per group (a SKIP group names only
    its host and count)."""
    out.append((colour, title, True))
    capped = not verbose and kind != Verdict.CRIT
    shown = groups[:MAX_GROUPS] if capped else groups
    for group in shown:
        out.append((colour, "  " + _group_text(group), False))
        ids = verbose or kind != Verdict.SKIP
        detail = _group_detail(group, None if verbose else MAX_IDS, list_ids=ids)
        if detail:
            out.append(("", "    " + detail, False))
    if len(shown) < len(groups):
        rest = len(groups) - len(shown)
        also = ", -rs every skip" if kind == Verdict.SKIP else ""
        out.append(("", f"  and {rest} more (-v lists them{also})", False))


def summary_lines(report: RunReport, verbose: bool = False) -> list[tuple[str, str, bool]]:
    """The pop3mon summary as ``(colour, text, bold)`` entries, not yet wrapped: CRIT (and
    ERROR) root causes, WARN, SKIP root causes, the OK count, the verdict counts."""
    folded: Folded = fold_causes(report)
    out: list[tuple[str, str, bool]] = []
    bad = folded.of(*BAD)
    if bad:
        failing = {i for g in bad for i in g.ids}
        # A host check's id is host:<name>: a host, not a connection type.
        hosts = {i for i in failing if i.startswith(HOST_ID_PREFIX)}
        what = [_plural(len(hosts), "host")] if hosts else []
        if len(failing) > len(hosts) or not hosts:
            what.append(_plural(len(failing) - len(hosts), "connection type"))
        title = f"CRIT ({', '.join(what)}, {_plural(len(bad), 'root cause')}):"
        _section(out, "red", title, bad, verbose, Verdict.CRIT)
    warns = folded.of(Verdict.WARN)
    if warns:
        n = sum(1 for r in report.records if r.verdict == Verdict.WARN)
        _section(out, "yellow", f"WARN ({n}):", warns, verbose, Verdict.WARN)
    skips = folded.of(Verdict.SKIP)
    if skips:
        title = f"SKIP ({_plural(len(skips), 'root cause')}):"
        _section(out, "", title, skips, verbose, Verdict.SKIP)
    out += host_lines(report, verbose)
    ok = f"OK: {_plural(len(folded.ok), 'connection type') if folded.ok else 'none'}"
    if folded.ok and verbose:
        ok += ": " + ", ".join(folded.ok)
    elif folded.ok:
        ok += " (-v lists them)"
    if folded.only_skipped:
        skipped = ", ".join(folded.only_skipped) if verbose else ""
        ok += f"; every check skipped: {_plural(len(folded.only_skipped), 'connection type')}"
        ok += f" ({skipped})" if skipped else ""
    out.append(("green" if folded.ok else "", ok, True))
    counts = count(r.verdict for r in report.records)
    line = "verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    not_run = report.not_run()
    if not_run:
        line += f" (of the SKIPs {not_run} not run: the run ended first)"
    out.append(("", line, True))
    return out


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` columns, continuation lines indented two more
    than the first; nothing dropped. A word longer than a line (a path, a URL) gets a line
    of its own and stays whole, so it can still be copied."""
    stripped = text.lstrip(" ")
    indent = " " * (len(text) - len(stripped))
    return textwrap.wrap(
        stripped,
        width=max(width, 20),
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_on_hyphens=False,
        break_long_words=False,
        replace_whitespace=False,
    ) or [text]


def wrap(text: str, width: int) -> list[str]:
    """``text`` as the summary wraps it (:func:`_wrap`): for lines printed beside it
    (``pop3mon merge``'s per-connection vantage lines)."""
    return _wrap(text, width)


def terminal_width(tr: pytest.TerminalReporter) -> int:
    """The width pytest draws its separators at (COLUMNS, else the terminal, else 80)."""
    # TerminalReporter has no public accessor for its writer's width.
    return int(tr._tw.fullwidth)


def summary_text(report: RunReport, verbose: bool, width: int) -> list[tuple[str, dict[str, bool]]]:
    """The pop3mon summary (and the history's lines) of ``report`` as the terminal shows
    it: lines of at most ``width`` columns with their markup (``bold``, a colour); empty
    when the run has no checks. What a run prints after pytest's summary and what
    ``pop3mon merge`` prints of the merged report."""
    label = report.info.label()
    if not report.records:
        if label and not report.connection_ids:
            return [(f"{label}: no connection type falls in this shard (nothing to probe)", {})]
        return []
    out: list[tuple[str, dict[str, bool]]] = [(label, {"bold": True})] if label else []
    for colour, text, bold in summary_lines(report, verbose):
        markup = {"bold": bold, **({colour: True} if colour else {})}
        out += [(line, markup) for line in _wrap(text, width)]
    lines = history_lines(report, None if verbose else MAX_HISTORY)
    if lines:
        out.append(("", {}))
    for colour, text in lines:
        out += [(line, {colour: True} if colour else {}) for line in _wrap(text, width)]
    return out


def write_summary(tr: pytest.TerminalReporter, report: RunReport, verbose: bool) -> None:
    """Write the pop3mon summary (and the history's lines) of ``report``."""
    lines = summary_text(report, verbose, terminal_width(tr))
    if lines:
        tr.write_sep("=", "pop3mon summary", bold=True)
    for line, markup in lines:
        tr.write_line(line, **markup)


def host_lines(report: RunReport, verbose: bool) -> list[tuple[str, str, bool]]:
    """The host checks in one entry (their CRITs are root causes above): each host that is
    down with what it blocked, then how many hosts are up; none without host checks."""
    if not report.hosts:
        return []
    limit = None if verbose else MAX_IDS
    parts = []
    for hrep in report.hosts:
        if hrep.status == "down":
            blocked = listed(list(hrep.blocked), limit) or "nothing"
            parts.append(f"{hrep.host.name} down, blocking {blocked}")
    up = [h.host.name for h in report.hosts if h.status == "up"]
    if up:
        parts.append(f"{len(up)} up" + (": " + ", ".join(up) if verbose else ""))
    colour = "red" if any(h.status == "down" for h in report.hosts) else "green"
    return [(colour, f"hosts: {'; '.join(parts) or 'none checked'}", False)]


def shows_summary(config: pytest.Config, exitstatus: int) -> bool:
    """True when pytest printed its terminal summary, so the pop3mon summary follows it."""
    import pytest

    # pytest's exit statuses after which it prints its terminal summary (and so do we).
    exits = (
        pytest.ExitCode.OK,
        pytest.ExitCode.TESTS_FAILED,
        pytest.ExitCode.INTERRUPTED,
        pytest.ExitCode.USAGE_ERROR,
        pytest.ExitCode.NO_TESTS_COLLECTED,
    )
    return exitstatus in exits and not config.option.no_summary


def adapt_short_summary(tr: pytest.TerminalReporter, records: Mapping[str, CheckRecord]) -> None:
    """Make pytest's short test summary (``-r``) carry the connection id and never cut.

    * Skips are listed unfolded (as ``--no-fold-skipped`` does): a folded line names the
      test file and line only, which is the same for every connection type.
    * A FAILED/ERROR line of a pop3mon check carries ``VERDICT: reason`` (the node id names
      the connection type and check already) when that fits the terminal width, else the
      node id alone: pytest would cut the message to the width ("- Failed: CR..."), and
      the pop3mon summary below has every reason in full. Where pytest never cuts (``-vv``,
      CI) the message is always there.

    The reports in ``tr.stats`` are replaced by copies; the originals, which the JUnit and
    HTML writers have already used, are left alone.
    """
    tr.foldskipped = False
    if tr.stats.get("skipped"):
        tr.stats["skipped"] = [_skip_reason(rep, records) for rep in tr.stats["skipped"]]
    config = tr.config
    never_cut = config.option.verbose >= 2 or _running_on_ci()
    never_cut = never_cut and not getattr(config.option, "force_short_summary", False)
    width = terminal_width(tr)
    for stat in ("failed", "error"):
        reports = tr.stats.get(stat)
        if not reports:
            continue
        tr.stats[stat] = [
            _short_message(rep, records.get(getattr(rep, "nodeid", "")), width, never_cut, tr)
            for rep in reports
        ]


def _skip_reason(rep: Any, records: Mapping[str, CheckRecord]) -> Any:
    """A check's skip without pytest's "Skipped: " (its folded lines drop it too)."""
    longrepr = getattr(rep, "longrepr", None)
    if getattr(rep, "nodeid", "") not in records or not isinstance(longrepr, tuple):
        return rep
    if len(longrepr) != 3 or not str(longrepr[2]).startswith("Skipped: "):
        return rep
    new = copy.copy(rep)
    new.longrepr = (longrepr[0], longrepr[1], str(longrepr[2]).removeprefix("Skipped: "))
    return new


def _running_on_ci() -> bool:
    # pytest's own test (_pytest.compat.running_on_ci): there it prints messages whole.
    return any(os.environ.get(var) for var in ("CI", "BUILD_NUMBER"))


def _short_message(
    rep: Any, rec: CheckRecord | None, width: int, never_cut: bool, tr: pytest.TerminalReporter
) -> Any:
    crash = getattr(getattr(rep, "longrepr", None), "reprcrash", None)
    if rec is None or crash is None or not isinstance(getattr(crash, "message", None), str):
        return rep
    message = crash.message.removeprefix("Failed: ").split("\n", 1)[0]
    prefix = f"{rec.verdict} {rec.ct} {rec.check}: "
    if message.startswith(prefix):
        message = f"{rec.verdict}: {message.removeprefix(prefix)}"
    word = "ERROR" if rep.when != "call" else "FAILED"
    head = f"{word} {tr.config.cwd_relative_nodeid(rep.nodeid)}"
    if not never_cut and len(head) + len(" - ") + len(message) > width:
        # The verdict alone, or nothing, rather than pytest's cut "CRIT: TCP conn...".
        message = str(rec.verdict)
        fits = len(head) + len(" - ") + len(message) <= width
    else:
        fits = True
    new_crash = copy.copy(crash)
    new_crash.message = message
    longrepr = copy.copy(rep.longrepr)
    longrepr.reprcrash = new_crash if fits else None
    new = copy.copy(rep)
    new.longrepr = longrepr
    return new


def history_lines(report: RunReport, limit: int | None = None) -> list[tuple[str, str]]:
    """The history's lines as ``(colour, text)``: the WARN or new-baseline note, then new,
    recovered, still failing (N runs, since when) and flapping connection types; each
    list capped at ``limit`` entries with "and N more" (``None``: all).

    A merge of several vantage points has a history per vantage: its note names each
    vantage's ("aaa: new baseline ..."), and the WARN or new baseline of one vantage
    does not hide what the others' histories say. Its new and recovered checks come from
    the changes (each vantage's, naming it: bbb's recovery is told next to aaa's new
    CRIT of the same check), its still-failing ones from the states shown (naming their
    vantage)."""
    hist = report.history
    out: list[tuple[str, str]] = [("yellow", f"notify: WARN {w}") for w in report.notify_warnings]
    if hist.status == "off":
        return out
    if hist.status == "warn":
        out.append(("yellow", f"history: WARN {hist.note}"))
    elif hist.status == "new":
        out.append(("", f"history: {hist.note}"))
    # A first run (a new baseline) has no last run to compare with: its states are all
    # new and tell nothing yet; in a run that was not recorded there are none.
    baseline = hist.status != "ok"
    states = hist.states
    ids = {c.ct.id for c in report.connections}
    order = [(c.ct.id, r.check) for c in report.connections for r in c.records]
    shown = [states[k] for k in order if k in states]
    if report.vantage_names:  # a merge of several vantage points
        # A change from nothing tells nothing in the history of a vantage whose first run
        # this was, and is news in the others' (whatever the merged status).
        told = [
            c
            for c in hist.changes
            if c.ct in ids and not (c.before is None and c.vantage in hist.baselines)
        ]
        new = [
            f"{c.ct} {c.check} ({c.after} from {c.vantage})"
            for c in told
            if c.kind in ("new", "worse", "better", "drift")
        ]
        back = [f"{c.ct} {c.check} (from {c.vantage})" for c in told if c.kind == "recovered"]
    else:
        new = [
            f"{s.ct} {s.check} ({s.verdict})"
            for s in shown
            if s.new and s.verdict in HISTORY_BAD and not (baseline and s.previous is None)
        ]
        back = [
            f"{s.ct} {s.check}"
            for s in shown
            if s.new and s.verdict == Verdict.OK and s.previous in HISTORY_BAD
        ]
    if new:
        out.append(("red", "new since last run: " + listed(new, limit)))
    if back:
        out.append(("green", "recovered: " + listed(back, limit)))
    still = [s for s in shown if not s.new and s.verdict in HISTORY_BAD]
    for s in still if limit is None else still[:limit]:
        soft = " soft" if s.hardness == "soft" else ""
        where = f", from {s.vantage}" if s.vantage is not None else ""
        out.append(
            (
                "red" if s.verdict != Verdict.WARN else "yellow",
                f"still failing: {s.ct} {s.check} ({s.verdict}{soft}, {s.runs} runs, "
                f"since {iso(s.since)}{where})",
            )
        )
    if limit is not None and len(still) > limit:
        out.append(("red", f"still failing: and {len(still) - limit} more checks (-v lists them)"))
    flapping = sorted(ct for ct, on in hist.flapping.items() if on)
    if flapping:
        out.append(("yellow", "flapping (changes held): " + listed(flapping, limit)))
    return out
