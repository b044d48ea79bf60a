"""The ``pop3mon`` command: what a monitoring run is not (pytest runs the checks).

Subcommands, one :mod:`argparse` sub-parser each, so later ones (``check``, ``merge``,
``discover``) are one function and one ``add_parser`` more:

* ``pop3mon history --history PATH [--targets FILE] states``: each connection type's
  checks with their current verdict, since when and for how many runs;
* ``pop3mon history --history PATH [--targets FILE] accept ID[:CHECK] [--note TEXT]``:
  the latest run's facts become the drift baseline of connection type ``ID`` (of one
  drift check with ``ID:CHECK``), recorded with the note.

A usage error is one line on stderr and exit status 2; a history that cannot be read is
one line and exit status 1; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from .checks.drift import parse_accept
from .config import ConfigError, load_targets
from .history.model import CheckState
from .history.store import HistoryError, HistoryStore, open_history_readonly

__all__ = ["main"]

PROG: Final = "pop3mon"
_MAX_NOTE: Final = 500


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
    actions.add_parser(
        "states",
        help="current state of every check: verdict, since when, runs in a row",
        description="The current state of every check of every connection type.",
    )
    accept = actions.add_parser(
        "accept",
        help="accept the latest facts of ID (or of one drift check, ID:CHECK) as baseline",
        description="The latest run's facts become the drift baseline of connection type "
        "ID, or of one drift check with ID:CHECK; the acceptance is recorded.",
    )
    accept.add_argument("id", metavar="ID[:CHECK]", help="connection type id, or id:check")
    accept.add_argument("--note", default="", metavar="TEXT", help="why (recorded with it)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "history":
            return _history(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except HistoryUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pop3mon history states | head`
        return 0
    parser.error(f"unknown command {args.command!r}")


# ----------------------------------------------------------------------------- history


class HistoryUnavailable(Exception):
    """The history database cannot be opened or read (exit status 1)."""


def _history(args: argparse.Namespace) -> int:
    path = Path(args.history).expanduser()
    ids = _target_ids(args.targets)
    if args.action == "accept":
        try:
            ct_id, check = parse_accept(args.id, ids)
        except ValueError as exc:
            raise UsageError(f"{args.id}: {exc}") from None
        note = _note(args.note)
        count = _using(path, lambda store: store.accept(ct_id, check, note=note), write=True)
        what = f"{ct_id}:{check}" if check else ct_id
        print(f"accepted {what}'s latest facts as the drift baseline ({count} check(s))")
        return 0
    states: Iterable[CheckState] = _using(path, lambda store: list(store.states().values()))
    rows = [s for s in states if ids is None or s.ct in ids]
    print(_table(rows))
    return 0


def _target_ids(targets: str | None) -> frozenset[str] | None:
    if targets is None:
        return None
    try:
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


def _table(rows: Sequence[CheckState]) -> str:
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
        out.append("(no runs recorded)")
    return "\n".join(line.rstrip() for line in out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
