"""The ``pop3mon`` command: what a monitoring run is not (pytest runs the checks).

Subcommands, one :mod:`argparse` sub-parser each, so later ones (``check``, ``merge``,
``discover``) are one function and one ``add_parser`` more:

* ``pop3mon history --history PATH [--targets FILE] states [ID ...] [--bad]``: each
  connection type's checks with their current verdict, since when and for how many runs
  (``--bad``: only WARN, CRIT and ERROR);
* ``pop3mon history --history PATH [--targets FILE] accept ID[:CHECK] [--note TEXT]``:
  the latest facts become the drift baseline of connection type ``ID`` (of one drift
  check with ``ID:CHECK``), recorded with the note;
* ``pop3mon history --history PATH [--targets FILE] accepted [ID ...]``: the recorded
  acceptances (when, who, note, connection type, check);
* ``pop3mon merge --out=DIR [--if-complete] [--expect-shards=N] INPUT...``: N shards'
  (and several vantage points') ``results.json`` into one ``report.html``, ``junit.xml``,
  ``results.json`` and ``metrics.prom`` in DIR (:mod:`pop3mon.report.merge`); a refusal is
  one line per problem and exit 2 with nothing written; ``--if-complete`` makes missing
  shards exit 0 (not yet: another shard's job merges);
* ``pop3mon check --targets FILE [--id ID] [--tag TAG] ...`` (also ``pop3mon-check``):
  the monitoring-plugin mode, :mod:`pop3mon.plugin_mode` (its own exit codes: 0 OK,
  1 WARNING, 2 CRITICAL, 3 UNKNOWN, also for its usage errors).

A usage error is one line on stderr and exit status 2 (so is an ``accept`` that accepts
nothing: an id the history has no run of, a check no run has facts for); a history that
cannot be read is one line and exit status 1; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from . import plugin_mode
from .checks.drift import parse_accept
from .config import ConfigError
from .history.model import CheckState
from .history.store import Acceptance, HistoryError, HistoryStore, open_history_readonly
from .verdict import Verdict

__all__ = ["main"]

PROG: Final = "pop3mon"
_MAX_NOTE: Final = 500
#: What ``states --bad`` shows.
_BAD: Final = frozenset({Verdict.WARN, Verdict.CRIT, Verdict.ERROR})


class UsageError(Exception):
    """A command line that cannot be carried out as given (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (what is wrong, and where --help is)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: ``pop3mon <command> ...``."""
    parser = _Parser(
        prog=PROG,
        description="POP3 monitoring: run the checks with pytest; this command works with "
        "what the runs recorded.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    history = commands.add_parser(
        "history",
        help="the run history: current states, accepting drift",
        description="Read the run history (states) or accept the current facts of a "
        "connection type as the drift baseline (accept).",
    )
    history.add_argument(
        "--history", metavar="PATH", required=True, help="the history database file"
    )
    history.add_argument(
        "--targets",
        metavar="FILE",
        help="targets file: only its connection types are shown, and accept refuses an id "
        "it does not define",
    )
    actions = history.add_subparsers(dest="action", required=True, metavar="ACTION")
    states = actions.add_parser(
        "states",
        help="current state of every check: verdict, since when, runs in a row",
        description="The current state of every check of every connection type (or of "
        "the IDs given).",
    )
    states.add_argument("ids", nargs="*", metavar="ID", help="only these connection types")
    states.add_argument("--bad", action="store_true", help="only WARN, CRIT and ERROR")
    accept = actions.add_parser(
        "accept",
        help="accept the latest facts of ID (or of one drift check, ID:CHECK) as baseline",
        description="The latest run's facts become the drift baseline of connection type "
        "ID, or of one drift check with ID:CHECK; the acceptance is recorded.",
    )
    accept.add_argument("id", metavar="ID[:CHECK]", help="connection type id, or id:check")
    accept.add_argument("--note", default="", metavar="TEXT", help="why (recorded with it)")
    accepted = actions.add_parser(
        "accepted",
        help="the recorded acceptances: when, who, note, connection type, check",
        description="Every recorded acceptance of a drift baseline (of the IDs given).",
    )
    accepted.add_argument("ids", nargs="*", metavar="ID", help="only these connection types")
    merge = commands.add_parser(
        "merge",
        help="merge the results.json of shards (--shard) and vantage points (--vantage) "
        "into one set of reports",
        description="Merge the results.json of the shards of one run (and of runs from "
        "several vantage points) into one report.html, junit.xml, results.json and "
        "metrics.prom, written into DIR as one set. Refuses (exit 2, nothing written) "
        "inputs from different targets files or runs and names every missing or "
        "duplicated shard.",
    )
    merge.add_argument("--out", metavar="DIR", required=True, help="the reports directory")
    merge.add_argument(
        "--if-complete",
        action="store_true",
        help="when shards are missing, say which and exit 0 writing nothing (every shard's "
        "job may try; the last one to finish merges)",
    )
    merge.add_argument(
        "--expect-shards",
        metavar="N",
        type=_positive,
        help="the number of shards the run must have (a check against a wrong total)",
    )
    merge.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="a results.json, or a directory with one in it or in its subdirectories",
    )
    check = commands.add_parser(
        "check",
        help="monitoring-plugin mode (Nagios, Icinga, Checkmk): one status line, perfdata, "
        "exit 0/1/2/3",
        description=plugin_mode.build_parser().description,
    )
    plugin_mode.add_arguments(check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["check"]:
        # A monitoring plugin answers even a usage error with exit 3 and one status line,
        # which this parser's errors (exit 2) would not.
        return plugin_mode.main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "history":
            return _history(args)
        if args.command == "merge":
            return _merge(args)
    except UsageError as exc:
        for line in str(exc).splitlines():
            print(f"{PROG}: error: {line}", file=sys.stderr)
        return 2
    except HistoryUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pop3mon history states | head`
        return 0
    parser.error(f"unknown command {args.command!r}")


# ----------------------------------------------------------------------------- merge


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _merge(args: argparse.Namespace) -> int:
    """``merge``: load every input, check them, write the merged set (see the module
    docstring of :mod:`pop3mon.report.merge`)."""
    # The report writers only where this command needs them (``history`` stays light).
    from .report.load import LoadedRun, LoadError, find_results, load_results
    from .report.merge import MergeProblems, merge_runs
    from .report.reportset import ReportSetError
    from .report.standalone import write_report_set

    problems: list[str] = []
    runs: list[LoadedRun] = []
    for arg in args.inputs:
        try:
            paths = find_results(Path(arg).expanduser())
        except LoadError as exc:
            problems.append(str(exc))
            continue
        for path in paths:
            if any(path.resolve() == r.path.resolve() for r in runs):
                continue  # named twice (a directory and a file in it): one input
            try:
                runs.append(load_results(path))
            except LoadError as exc:
                problems.append(str(exc))
    if problems:
        raise UsageError("\n".join(problems))
    try:
        merged = merge_runs(runs, args.expect_shards)
    except MergeProblems as exc:
        if args.if_complete and exc.only_missing:
            for line in exc.missing:
                print(f"{PROG} merge: not yet: {line}")
            print(f"{PROG} merge: nothing written (--if-complete); {args.out} is unchanged")
            return 0
        raise UsageError("\n".join(exc.lines())) from None
    out = Path(args.out).expanduser()
    try:
        written = write_report_set(
            merged.report, out, vantages=merged.vantages, merged_from=merged.summary
        )
    except ReportSetError as exc:
        print(f"{PROG}: the merged reports were not written to {out}: {exc}", file=sys.stderr)
        return 1
    report = merged.report
    counts = " · ".join(f"{n} {v}" for v, n in report.counts().items() if n)
    print(
        f"merged {merged.summary}: {len(report.connections)} connection types, "
        f"{counts or 'no checks'}"
    )
    for conn in report.by_severity():
        finding = conn.vantage_finding()
        if finding:
            print(f"  {conn.ct.id}: {conn.seen_from()} — {finding}")
    print("wrote " + ", ".join(str(path) for _, path in written))
    return 0


# ----------------------------------------------------------------------------- history


class HistoryUnavailable(Exception):
    """The history database cannot be opened or read (exit status 1)."""


def _history(args: argparse.Namespace) -> int:
    path = Path(args.history).expanduser()
    ids = _target_ids(args.targets)
    if args.action == "accept":
        return _accept(path, args.id, ids, _note(args.note))
    wanted = _wanted(args.ids, ids)
    if args.action == "accepted":
        rows = _using(path, lambda store: store.acceptances(wanted))
        print(_accepted_table(rows))
        return 0
    states: Iterable[CheckState] = _using(path, lambda store: list(store.states().values()))
    shown = [
        s
        for s in states
        if (wanted is None or s.ct in wanted) and (not args.bad or s.verdict in _BAD)
    ]
    filtered = args.bad or bool(args.ids)
    print(_table(shown, "(no check matches)" if filtered else "(no runs recorded)"))
    return 0


def _accept(path: Path, spec: str, ids: frozenset[str] | None, note: str) -> int:
    """``accept``: with no targets file, the ids are the history's own, so a typo is
    refused rather than "accepted" with nothing recorded."""
    where = "in the targets file"
    if ids is None:
        ids = _using(path, lambda store: store.known_cts())
        where = "in the history (no run of it recorded)"
    try:
        ct_id, check = parse_accept(spec, ids, where)
    except ValueError as exc:
        raise UsageError(f"{spec}: {exc}") from None
    done: Acceptance = _using(path, lambda store: store.accept(ct_id, check, note=note), write=True)
    if not done.accepted:
        raise UsageError(f"{spec}: {done.describe()}")
    what = f"{ct_id}:{check}" if check else ct_id
    print(
        f"accepted {what}'s latest facts as the drift baseline ({len(done.accepted)} "
        f"check(s): {', '.join(done.accepted)})"
    )
    if done.missing:
        print(done.describe())
    return 0


def _wanted(given: Sequence[str], ids: frozenset[str] | None) -> frozenset[str] | None:
    """The connection types to show: those given (each must be in the targets file, when
    there is one), else the targets file's, else all."""
    if not given:
        return ids
    unknown = [i for i in given if ids is not None and i not in ids]
    if unknown:
        raise UsageError(f"no connection type {unknown[0]!r} in the targets file")
    return frozenset(given)


def _target_ids(targets: str | None) -> frozenset[str] | None:
    if targets is None:
        return None
    try:
        from .config import load_targets  # the validator only where a command needs it

        return frozenset(load_targets(Path(targets).expanduser()).ids)
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else "invalid"
        more = f" (and {len(exc.problems) - 1} more problems)" if len(exc.problems) > 1 else ""
        raise UsageError(f"invalid targets file: {first}{more}") from None


def _note(text: str) -> str:
    if len(text) > _MAX_NOTE:
        raise UsageError(f"--note is {len(text)} characters; at most {_MAX_NOTE}")
    if not text.isprintable():
        raise UsageError("--note must be one line of printable text")
    return text


def _using(path: Path, action: Callable[[HistoryStore], Any], *, write: bool = False) -> Any:
    """``action(store)`` on the history at ``path``, opened for writing only when
    ``write``; a missing, locked or corrupt file is :class:`HistoryUnavailable`."""
    if not path.is_file():
        raise HistoryUnavailable(f"no history database at {path}")
    if write:
        try:
            store = HistoryStore.open(path)
        except HistoryError as exc:
            raise HistoryUnavailable(f"cannot use the history: {exc}") from None
    else:
        opened = open_history_readonly(path)
        if opened is None:
            raise HistoryUnavailable(f"cannot read the history {path} (locked, corrupt or newer)")
        store = opened
    try:
        return action(store)
    except HistoryError as exc:
        raise HistoryUnavailable(f"cannot use the history: {exc}") from None
    finally:
        store.close()


def _table(rows: Sequence[CheckState], empty: str = "(no runs recorded)") -> str:
    """States as aligned columns: connection type, check, verdict, since (UTC), runs."""
    head = ("connection type", "check", "verdict", "since", "runs")
    lines = [head]
    for s in sorted(rows, key=lambda s: (s.ct, s.check)):
        verdict = str(s.verdict) + (" (soft)" if s.hardness == "soft" else "")
        verdict += " FLAPPING" if s.flapping else ""
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s.since))
        lines.append((s.ct, s.check, verdict, since, str(s.runs)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
    if len(lines) == 1:
        out.append(empty)
    return "\n".join(line.rstrip() for line in out)


def _accepted_table(rows: Sequence[Any]) -> str:
    """Acceptances as aligned columns: when (UTC), who, connection type, check, note."""
    head = ("accepted at", "who", "connection type", "check", "note")
    lines = [head]
    for a in rows:
        at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(a.at))
        lines.append((at, a.who or "-", a.ct, a.check, a.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
    if len(lines) == 1:
        out.append("(no acceptance recorded)")
    return "\n".join(line.rstrip() for line in out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
