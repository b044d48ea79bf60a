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
* ``pop3mon discover [DOMAIN] [--host H ...] [--port P ...] [--nameserver IP[:PORT]]
  [--timeout S] [--format table|yaml|both] [--output FILE]``: what a mail domain publishes
  (RFC 6186 SRV, client autoconfig) and what its hosts' POP3 ports offer (CAPA/STLS/QUIT
  only, never a login), as a table and a ``targets.yaml`` draft (exit 0: something found,
  1: nothing found, 2: usage);
* ``pop3mon merge --out=DIR [--if-complete] [--expect-shards=N] [--exit-status
  [--strict-warn]] INPUT...``: N shards' (and several vantage points') ``results.json``
  into one ``report.html``, ``junit.xml``, ``results.json`` and ``metrics.prom`` in DIR
  (:mod:`pop3mon.report.merge`); a refusal is one line per problem and exit 2 with nothing
  written; ``--if-complete`` makes missing shards exit 0 (not yet: another shard's job
  merges); ``--exit-status`` exits 1 when the merged report fails as a run would
  (:func:`pop3mon.verdict.fails`: CRIT or ERROR, WARN with ``--strict-warn``);
* ``pop3mon check --targets FILE [--id ID] [--tag TAG] ...`` (also ``pop3mon-check``):
  the monitoring-plugin mode, :mod:`pop3mon.plugin_mode` (its own exit codes: 0 OK,
  1 WARNING, 2 CRITICAL, 3 UNKNOWN, also for its usage errors).

A usage error is one line on stderr and exit status 2 (so is an ``accept`` that accepts
nothing: an id the history has no run of, a check no run has facts for); a history that
cannot be read is one line and exit status 1; never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from . import plugin_mode
from .checks.drift import parse_accept
from .config import ConfigError
from .config.wording import printable
from .history.model import CheckState
from .history.store import Acceptance, HistoryError, HistoryStore, open_history_readonly
from .verdict import Verdict, fails, rank

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
        "--exit-status",
        action="store_true",
        help="exit 1 when a check of the merged report is CRIT or ERROR (or WARN with "
        "--strict-warn), as a run's exit status says (ci/run-monitor); the reports are "
        "written either way",
    )
    merge.add_argument(
        "--strict-warn",
        action="store_true",
        default=None,
        help="with --exit-status, a WARN fails too (also POP3MON_STRICT_WARN=1)",
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
    _add_discover(commands)
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
    # A merge prints what its input files hold (ids, reasons, notes): never a raw control
    # character of theirs on the terminal. Any command's output may go to a pipe that is
    # closed early (`| head`): the command still ends with its own exit status.
    out, err = sys.stdout, sys.stderr
    sys.stdout = _Terminal(out, escape=args.command == "merge")
    sys.stderr = _Terminal(err, escape=args.command == "merge")
    try:
        return _run(parser, args)
    finally:
        sys.stdout.flush()  # a closed pipe shows here, not as an error at exit
        sys.stderr.flush()
        sys.stdout, sys.stderr = out, err


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the parsed command; returns its exit status (see the module docstring)."""
    try:
        if args.command == "history":
            return _history(args)
        if args.command == "discover":
            return _discover(args)
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
    parser.error(f"unknown command {args.command!r}")


class _Terminal:
    """``sys.stdout`` or ``sys.stderr`` while a command runs.

    A reader that goes away (``pop3mon merge --exit-status ... | head -1``) makes the next
    write fail with EPIPE: the rest of the output is dropped and the command goes on to
    its own exit status (a merge with CRIT still exits 1), with no traceback and no error
    at exit. With ``escape`` every text written but a line end is passed through
    :func:`printable` (``print`` writes a line's text and its end separately), so a
    newline inside a value cannot forge a line either."""

    def __init__(self, stream: Any, *, escape: bool) -> None:
        self._stream = stream
        self._escape = escape
        self._gone = False

    def write(self, text: str) -> int:
        """Write ``text`` (escaped), or drop it once the reader has gone."""
        if self._gone:
            return len(text)
        shown = printable(text) if self._escape and text != "\n" else text
        try:
            self._stream.write(shown)
        except BrokenPipeError:
            self._reader_gone()
        return len(text)

    def flush(self) -> None:
        """Flush the stream, unless the reader has gone."""
        if self._gone:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        self._gone = True
        # What is still buffered is flushed at exit: to /dev/null, not into EPIPE again
        # (Python would print an error and exit 120).
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


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
    from .report.terminal import summary_text, wrap

    problems: list[str] = []
    runs: list[LoadedRun] = []
    out_dir = Path(args.out).expanduser().resolve()
    for arg in args.inputs:
        given = Path(arg).expanduser()
        try:
            paths = find_results(given)
        except LoadError as exc:
            problems.append(str(exc))
            continue
        for path in paths:
            if any(path.resolve() == r.path.resolve() for r in runs):
                continue  # named twice (a directory and a file in it): one input
            try:
                run = load_results(path)
            except LoadError as exc:
                problems.append(str(exc))
                continue
            if path.resolve().parent == out_dir:
                named = given.resolve() in (out_dir, path.resolve())
                if run.report.info.merged_from and not named:
                    continue  # --out's own earlier merge, found in a folder of inputs
                problems.append(
                    f"--out={args.out} holds the input {path}: the merge would overwrite it; "
                    "choose a directory of its own for --out"
                )
                continue
            runs.append(run)
    if problems:
        # One line each: a value quoted from a file must not split its line.
        raise UsageError("\n".join(map(printable, problems)))
    try:
        merged = merge_runs(runs, args.expect_shards)
        # Marked as a merge, so that given to another merge it is refused by name.
        sources = tuple(str(r.path) for r in runs)
        info = dataclasses.replace(merged.report.info, merged_from=sources)
        merged = dataclasses.replace(merged, report=dataclasses.replace(merged.report, info=info))
    except MergeProblems as exc:
        if args.if_complete and exc.only_missing:
            for line in exc.missing:
                print(f"{PROG} merge: not yet: {line}")
            print(f"{PROG} merge: nothing written (--if-complete); {args.out} is unchanged")
            return 0
        raise UsageError("\n".join(map(printable, exc.lines()))) from None
    strict = _strict_warn(args.strict_warn, os.environ) if args.exit_status else False
    out = Path(args.out).expanduser()
    try:
        written = write_report_set(
            merged.report, out, vantages=merged.vantages, merged_from=merged.summary
        )
    except ReportSetError as exc:
        print(f"{PROG}: the merged reports were not written to {out}: {exc}", file=sys.stderr)
        return 1
    report = merged.report
    counts = report.counts()
    shown = " · ".join(f"{n} {v}" for v, n in counts.items() if n)
    # Every line fits the terminal, as a run's summary does: with many vantages (names
    # of up to 63 characters) the first line and a connection type's line wrap, indented.
    width = shutil.get_terminal_size().columns
    head = f"merged {merged.summary}: {len(report.connections)} connection types, "
    for line in wrap(head + (shown or "no checks"), width):
        print(line)
    names = report.vantage_names
    for conn in report.by_severity():
        finding = conn.vantage_finding(names)
        if finding:
            for line in wrap(f"  {conn.ct.id}: {conn.seen_from()} — {finding}", width):
                print(line)
    # The root causes (host, coverage and connection type checks) as a run prints them.
    for line, _ in summary_text(report, verbose=False, width=width):
        print(line)
    print("wrote " + ", ".join(str(path) for _, path in written))
    if not any(counts.values()) and not report.others:
        # Every shard's -k/-m matched nothing in its part (each a successful run that
        # could not know): unsharded, that run selects nothing and ci/run-monitor exits 2.
        print(
            f"{PROG} merge: no input selected any check (-k/-m matched nothing in every "
            f"shard){': exit 2' if args.exit_status else ''}",
            file=sys.stderr,
        )
        return 2 if args.exit_status else 0
    if not args.exit_status:
        return 0
    failing = sorted({v for v, n in counts.items() if n and fails(v, strict)}, key=rank)
    # A project's own tests run beside the tier tests failed its shards' runs, and so did a
    # check test that a fixture of the project's broke after its verdict: so here.
    broken = sum(1 for test in report.others if test.failed)
    after = sum(1 for rec in report.records if rec.broke_after_verdict)
    if failing or broken or after:
        own = [f"{broken} failed test{'s' if broken != 1 else ''} of yours"] if broken else []
        if after:
            own.append(
                f"{after} check test{'s' if after != 1 else ''} a fixture of yours broke "
                "after the verdict"
            )
        what = " and ".join([*failing, *own])
        print(f"{PROG} merge: exit 1: the merged report has {what}", file=sys.stderr)
        return 1
    return 0


def _strict_warn(option: bool | None, environ: Mapping[str, str]) -> bool:
    """``--strict-warn``, else ``POP3MON_STRICT_WARN`` (1/true/yes/on or 0/false/no/off,
    as ci/run-monitor reads it)."""
    if option is not None:
        return option
    value = environ.get("POP3MON_STRICT_WARN", "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise UsageError(f"POP3MON_STRICT_WARN must be 1 or 0, not {value!r}")


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


# ----------------------------------------------------------------------------- discover

#: Default deadline of the whole discovery, seconds.
DISCOVER_TIMEOUT: Final = 20.0
_MAX_TIMEOUT: Final = 300.0


def _add_discover(commands: Any) -> None:
    discover = commands.add_parser(
        "discover",
        help="what a mail domain publishes (SRV, autoconfig) and its hosts offer: a table "
        "and a targets.yaml draft",
        description="Discover a mail domain's POP3 connection types: RFC 6186 SRV records, "
        "the client autoconfig document, and a probe of the POP3 ports (110, 995 and every "
        "published one) on the hosts named with --host or by the domain's own records. Only "
        "CAPA, STLS and QUIT are sent: never a login; no address range is scanned. Exit "
        "0: something found; 1: nothing found; 2: usage error.",
    )
    discover.add_argument("domain", nargs="?", metavar="DOMAIN", help="the mail domain")
    discover.add_argument(
        "--host", action="append", default=[], metavar="HOST", help="a host to probe (repeat)"
    )
    discover.add_argument(
        "--port",
        action="append",
        type=int,
        default=[],
        metavar="PORT",
        help="POP3 ports to probe on every host instead of 110 and 995 (repeat); "
        "published ports are probed as well",
    )
    discover.add_argument(
        "--tls-port",
        action="append",
        type=int,
        default=[],
        metavar="PORT",
        help="a --port that speaks implicit TLS (995 always does)",
    )
    discover.add_argument(
        "--nameserver", metavar="IP[:PORT]", help="ask this DNS server (default: the system's)"
    )
    discover.add_argument(
        "--autoconfig-port", type=int, metavar="PORT", help="HTTP(S) port of the autoconfig"
    )
    discover.add_argument(
        "--email", metavar="ADDRESS", help="an address of the domain (?emailaddress=)"
    )
    discover.add_argument("--ca-file", metavar="PEM", help="CAs to trust instead of the system's")
    discover.add_argument(
        "--timeout",
        type=float,
        default=DISCOVER_TIMEOUT,
        metavar="S",
        help=f"one deadline for the whole discovery (default {DISCOVER_TIMEOUT:g} s)",
    )
    discover.add_argument(
        "--format",
        choices=("table", "yaml", "both"),
        default="both",
        help="table, the targets.yaml draft, or both (default)",
    )
    discover.add_argument(
        "--output", metavar="FILE", help="write the targets.yaml draft to FILE (not stdout)"
    )


def _discover(args: argparse.Namespace) -> int:
    from .config import draft as draft_mod
    from .config.load import load_targets
    from .engine.discovery import DiscoverySpec, discover
    from .engine.discovery_dns import parse_nameserver

    if not args.domain and not args.host:
        raise UsageError("discover needs a DOMAIN or at least one --host")
    if not 0 < args.timeout <= _MAX_TIMEOUT:
        raise UsageError(f"--timeout must be between 0 and {_MAX_TIMEOUT:g} seconds")
    for port in (
        *args.port,
        *args.tls_port,
        *([args.autoconfig_port] if args.autoconfig_port else []),
    ):
        if not 0 < port < 65536:
            raise UsageError(f"port {port} is not 1-65535")
    for name in (args.domain, *args.host):
        if name and (len(name) > 253 or not all(c.isalnum() or c in ".-_:" for c in name)):
            raise UsageError(f"{name[:80]!r} is not a host or domain name")
    if args.nameserver:
        try:
            parse_nameserver(args.nameserver)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    ports = tuple(dict.fromkeys([*args.port, *args.tls_port])) or (110, 995)
    spec = DiscoverySpec(
        domain=args.domain,
        hosts=tuple(args.host),
        ports=ports,
        tls_ports=(995, *args.tls_port),
        nameserver=args.nameserver,
        autoconfig_port=args.autoconfig_port,
        timeout=args.timeout,
        ca_file=args.ca_file,
        email=args.email,
    )
    found = discover(spec)
    text = draft_mod.draft_yaml(found, ca_file=args.ca_file)
    problems = list(found.problems)
    if found.found:
        try:
            load_targets("discovered-targets.yaml", raw=text.encode())
        except ConfigError as exc:  # a bug of the draft writer: say so, never hide it
            problems.append(f"the draft does not load: {exc}")
    else:
        # An empty draft (no servers) is no targets file: say why instead of writing it.
        print(f"{PROG}: nothing found, so no targets.yaml draft", file=sys.stderr)
        if args.format in ("table", "both"):
            print(_discovery_table(found, problems))
        return 1
    if args.format in ("table", "both"):
        print(_discovery_table(found, problems))
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        print(f"targets.yaml draft written to {args.output}")
    elif args.format in ("yaml", "both"):
        if args.format == "both":
            print()
        print(text, end="")
    return 0 if found.found else 1


def _discovery_table(found: Any, problems: Sequence[str]) -> str:
    from .config.draft import findings

    # ANSWERS: it spoke its protocol; STARTTLS: POP3 STLS in CAPA, SMTP STARTTLS in EHLO.
    rows = [("PROTO", "HOST", "PORT", "SECURITY", "FOUND BY", "ANSWERS", "STARTTLS", "TLS", "NOTE")]
    listed = findings(found)
    for f in listed:
        o = f.offered
        by = ",".join(dict.fromkeys(p.source for p in f.published))
        if o is not None and o.answered:
            by = f"{by},port" if by else "port"
        answered = "-" if o is None else ("yes" if o.answered else "no")
        # Whether STLS is offered is known only from a port that answered.
        if o is None or not o.answered or f.security == "tls":
            stls = "-"
        else:
            stls = "yes" if o.stls_offered else "no"
        tls = "-" if o is None or o.tls_ok is None else ("ok" if o.tls_ok else "FAIL")
        rows.append(
            (
                f.protocol,
                f.host,
                str(f.port),
                f.security,
                by,
                answered,
                stls,
                tls,
                "; ".join(f.warnings),
            )
        )
    # The ports probed that did not answer and nothing publishes (not in the draft): the
    # table still says each was looked at and why it gave nothing.
    shown = {(f.protocol, f.host, f.port) for f in listed}
    for o in found.offered:
        if (o.protocol, o.host, o.port) not in shown:
            tls = "-" if o.tls_ok is None else ("ok" if o.tls_ok else "FAIL")
            note = o.error or "no answer"
            rows.append((o.protocol, o.host, str(o.port), "-", "port", "no", "-", tls, note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    head = f"discovery of {found.domain or ', '.join(found.hosts)}: {found.elapsed:.2f} s"
    lines = [head, *(line.rstrip() for line in lines)]
    lines += [f"problem: {p}" for p in problems]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
