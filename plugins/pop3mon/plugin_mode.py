"""``pop3mon check``: pop3mon as a monitoring plugin (Nagios, Icinga, Naemon, Checkmk, the
Zabbix agent), following the Monitoring Plugins development guidelines.

One run probes the selected connection types once with the engine, judges them with the
same rules as a pytest run (:func:`pop3mon.checks.evaluate_all`) and prints::

    POP3 CRITICAL - mail1:995-tls certificate: certificate expired ... | 'total'=0.031s;;;0 ...
    [CRITICAL] tls/certificate: certificate expired 2021-01-01 (2160 days ago)

and exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Decisions (README, "Nagios / Icinga /
Checkmk plugin mode"):

* the status is the worst verdict of every check of every selected connection type; SKIP
  counts as nothing (OK + SKIP is OK), and a run where *no* check reached a verdict is
  UNKNOWN (the plugin could not tell the state, which is what UNKNOWN means);
* the first line names the worst check (the first in report order) and how many more
  problems there are; the long output has one line per WARN/CRIT check, with ``-v`` one
  per check;
* a usage error, a targets file that does not load, an unknown id or tag, and anything
  that breaks inside pop3mon are exit 3 with one ``POP3 UNKNOWN - ...`` line, never a
  traceback; so is a run that outlives ``--timeout`` (by one second);
* the drift checks read their baseline from the run history, read-only, when there is one
  (``--history PATH`` or the targets file's ``history: path``); a plugin run is never
  recorded: the monitoring system keeps the state over time, and recording every
  scheduled plugin run would move the streaks and notifications of the pytest runs;
* every text passes the redactor (:data:`pop3mon.secrets.REDACTOR`) before it is printed.

Fast path: nothing here imports pytest, the report package or the notifications; the
engine, the checks and the config loader are imported when the run needs them, the
history only when there is one.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, NoReturn

from .verdict import Verdict, rank, worst

if TYPE_CHECKING:  # the run imports these itself, when it needs them
    from .checks import CheckResult
    from .checks.facts import Baseline
    from .config import ConnectionType, Targets
    from .engine.result import ProbeResult
    from .history.store import HistoryStore

__all__ = [
    "EXIT_CODES",
    "PROG",
    "Status",
    "add_arguments",
    "main",
    "render",
    "service_of",
    "status_of",
]

PROG: Final = "pop3mon check"
#: The service name that starts the first line (``POP3 OK - ...``).
SERVICE: Final = "POP3"
#: A plugin's state, as the guidelines name it.
Status = Literal["OK", "WARNING", "CRITICAL", "UNKNOWN"]
EXIT_CODES: Final[Mapping[Status, int]] = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
#: A verdict's plugin state. SKIP is no state of its own (see the module docstring) and
#: ERROR never comes from a check rule; it would mean pop3mon broke: UNKNOWN.
_STATUS: Final[Mapping[Verdict, Status]] = {
    Verdict.OK: "OK",
    Verdict.WARN: "WARNING",
    Verdict.CRIT: "CRITICAL",
    Verdict.SKIP: "UNKNOWN",
    Verdict.ERROR: "UNKNOWN",
}
#: The verdicts the default long output lists (``-v``: every check).
_PROBLEMS: Final = frozenset({Verdict.WARN, Verdict.CRIT, Verdict.ERROR})
#: Longest reason on the first line: Nagios shows the first line in lists and
#: notifications; the whole reason is in the long output.
_FIRST_LINE_REASON: Final = 160
#: How much longer than ``--timeout`` the run may take before it gives up as UNKNOWN.
_GRACE: Final = 1.0


class PluginUnknown(Exception):
    """A run that cannot give a state: a usage error, a bad targets file, an unknown id."""


class _Overran(PluginUnknown):
    """The run outlived ``--timeout`` and its grace; its probe threads may still be busy."""


class _Parser(argparse.ArgumentParser):
    """A usage error is ``POP3 UNKNOWN - ...`` and exit 3, as the guidelines ask."""

    def error(self, message: str) -> NoReturn:
        raise PluginUnknown(f"{message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # --help exits 0 here; no other path of argparse exits in this parser.
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pop3mon check`` (also ``pop3mon --help`` lists them)."""
    parser.add_argument(
        "--targets",
        metavar="FILE",
        help="targets file (default: $POP3MON_TARGETS, else ./targets.yaml)",
    )
    parser.add_argument(
        "--id",
        dest="ids",
        action="append",
        default=[],
        metavar="ID",
        help="connection type to check; repeatable or a comma-separated list",
    )
    parser.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="TAG",
        help="every connection type with this tag (repeatable; with --id: those too)",
    )
    history = parser.add_mutually_exclusive_group()
    history.add_argument(
        "--history",
        metavar="PATH",
        help="run history to read the drift baselines from (read-only; default: the "
        "targets file's history: path)",
    )
    history.add_argument(
        "--no-history", action="store_true", help="no drift baselines (drift checks SKIP)"
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="validate the targets file even when this pop3mon validated the same file "
        "before (default: reuse that, see $POP3MON_CACHE_DIR)",
    )
    parser.add_argument(
        "-t",
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="end within this many seconds: each probe's deadline is cut to fit, and a run "
        "still going one second later is UNKNOWN (default: the targets file's timeouts)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="long output: one line per check, OK and SKIP too (default: problems only)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.5 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is not between 0.5 and 3600 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``pop3mon check`` / ``pop3mon-check``."""
    parser = _Parser(
        prog=PROG,
        description="Check connection types once as a monitoring plugin: one status line "
        "with perfdata, long output, exit 0 OK / 1 WARNING / 2 CRITICAL / 3 UNKNOWN.",
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pop3mon check ARGV``; prints the plugin output and returns its exit code."""
    try:
        args = build_parser().parse_args(argv)
        state, text = _run(args)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except _Overran as exc:
        _emit(f"{SERVICE} UNKNOWN - {exc}")
        # The interpreter's exit would join the engine's probe threads (ThreadPoolExecutor
        # workers are not daemons) and so wait for the stuck probe: the scheduler would
        # kill the check at its own timeout instead of reading this answer.
        sys.stderr.flush()
        os._exit(EXIT_CODES["UNKNOWN"])
    except PluginUnknown as exc:
        state, text = "UNKNOWN", f"{SERVICE} UNKNOWN - {exc}"
    except KeyboardInterrupt:
        state, text = "UNKNOWN", f"{SERVICE} UNKNOWN - interrupted"
    except BaseException as exc:  # noqa: BLE001  # a plugin never answers with a traceback
        state, text = "UNKNOWN", f"{SERVICE} UNKNOWN - internal error: {_error(exc)}"
    _emit(text)
    return EXIT_CODES[state]


def _error(exc: BaseException) -> str:
    """``TypeName: message`` on one line (the redactor and the line rules apply later)."""
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _emit(text: str) -> None:
    from .secrets import REDACTOR

    try:
        sys.stdout.write(REDACTOR.scrub(text) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        pass  # nobody reads the answer; the exit code still tells


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Judged:
    """One connection type's probe result and the verdicts of its checks."""

    ct: ConnectionType
    result: ProbeResult
    checks: tuple[CheckResult, ...]


def _run(args: argparse.Namespace) -> tuple[Status, str]:
    targets = _load(args.targets, cached=not args.no_cache)
    selected = _select(targets, args.ids, args.tags)
    timeout: float | None = args.timeout
    if timeout is None:
        return _judge_and_render(targets, selected, args)
    # The engine's deadlines end every probe in time; the watchdog covers what they do not
    # (a login waiting for its turn, a stuck name lookup), so a scheduler never kills us.
    box: list[tuple[Status, str] | BaseException] = []

    def work() -> None:
        try:
            box.append(_judge_and_render(targets, selected, args))
        except BaseException as exc:  # noqa: BLE001  # handed to the main thread
            box.append(exc)

    worker = threading.Thread(target=work, name="pop3mon-check", daemon=True)
    worker.start()
    worker.join(timeout + _GRACE)
    if not box:
        raise _Overran(f"no result within {timeout:g} s (--timeout)")
    outcome = box[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _load(option: str | None, cached: bool = True) -> Targets:
    from .config import ConfigError, targets_path
    from .config.cache import load_targets_cached

    path = targets_path(option, Path.cwd())
    try:
        if cached:
            return load_targets_cached(path)
        from .config import load_targets

        return load_targets(path)
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else "invalid"
        more = len(exc.problems) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
        raise PluginUnknown(f"invalid targets file: {first}{extra}") from None


def _select(targets: Targets, ids: Sequence[str], tags: Sequence[str]) -> list[ConnectionType]:
    """The connection types named by ``--id`` and ``--tag``, in the file's order; every one
    of the file when neither is given."""
    wanted = [i.strip() for raw in ids for i in raw.split(",") if i.strip()]
    if ids and not wanted:
        # A macro that expanded to nothing (--id=$ARG2$): checking the whole file instead
        # would report another service's state under this one's name.
        raise PluginUnknown("--id names no connection type (empty)")
    known = set(targets.ids)
    for ct_id in wanted:
        if ct_id not in known:
            raise PluginUnknown(
                f"no connection type {ct_id!r} in {targets.path}{_hint(ct_id, known)}"
            )
    have_tags = {t for c in targets.connections for t in c.tags}
    for tag in tags:
        if tag not in have_tags:
            raise PluginUnknown(f"no connection type has the tag {tag!r} in {targets.path}")
    if not wanted and not tags:
        return list(targets.connections)
    return [c for c in targets.connections if c.id in wanted or set(tags) & set(c.tags)]


def _hint(ct_id: str, known: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(ct_id, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _judge_and_render(
    targets: Targets, selected: Sequence[ConnectionType], args: argparse.Namespace
) -> tuple[Status, str]:
    judged = judge(targets, selected, args.history, args.no_history, args.timeout)
    return render(judged, verbose=args.verbose)


def judge(
    targets: Targets,
    selected: Sequence[ConnectionType],
    history: str | None,
    no_history: bool,
    timeout: float | None,
) -> list[Judged]:
    """Probe ``selected`` once (the engine, with one login pacer) and evaluate every check
    of each with the pytest run's rules; drift checks get their baseline from the history
    (read-only) when there is one."""
    import dataclasses

    from .checks import check_names, evaluate
    from .checks.drift import NO_BASELINE, is_drift_check
    from .engine.defaults import DEFAULTS
    from .engine.pacing import LoginPacer
    from .engine.runner import run_probes

    by_id = {c.id: _fit(c, timeout) for c in selected}
    results, host_crits = _gate_by_host(targets, by_id, timeout)
    specs = [c.to_probe_spec() for i, c in by_id.items() if i not in results]
    pacer = LoginPacer(max_wait=DEFAULTS.login_wait_max)
    results.update(run_probes(specs, DEFAULTS.concurrency, pacer=pacer))
    store, why_none = _open_history(targets, history, no_history)
    out: list[Judged] = []
    try:
        for ct in selected:
            result = results[ct.id]
            # A host that is down is one CRIT, on the first connection type it blocked;
            # its other checks (and the other connection types') SKIP naming it.
            verdicts: list[CheckResult] = host_crits.pop(result.blocked_host, [])
            for name in check_names(ct):
                baseline = None
                if store is not None and is_drift_check(name):
                    baseline = _baseline(store, ct.id, name)
                res = evaluate(result, ct, name, baseline)
                if res.reason == NO_BASELINE and why_none:
                    res = dataclasses.replace(res, reason=why_none)
                verdicts.append(res)
            out.append(Judged(ct, result, tuple(verdicts)))
    finally:
        if store is not None:
            store.close()
    return out


def _gate_by_host(
    targets: Targets, by_id: Mapping[str, ConnectionType], timeout: float | None
) -> tuple[dict[str, ProbeResult], dict[str, list[CheckResult]]]:
    """The host checks of the selected connection types, as a pytest run makes them (each
    host and the hosts it depends on once): the results of the connection types whose
    host is down (never probed) and the one CRIT of each host that is down."""
    import dataclasses

    from .checks import CheckResult
    from .checks.base import CRIT
    from .checks.hosts import host_down_reason, not_probed
    from .engine.defaults import DEFAULTS
    from .engine.hosts import probe_hosts
    from .engine.stages import HOST_TIER

    host_of = {c: h.name for h in targets.hosts for c in h.connections if c in by_id}
    if not host_of:
        return {}, {}
    specs = {h.name: h.to_spec() for h in targets.hosts}
    if timeout is not None:
        specs = {
            n: dataclasses.replace(s, timeout=min(s.timeout, timeout)) for n, s in specs.items()
        }
    found = probe_hosts(specs, sorted(set(host_of.values())), DEFAULTS.concurrency)
    results: dict[str, ProbeResult] = {}
    crits: dict[str, list[CheckResult]] = {}
    for ct_id, name in host_of.items():
        host = found[name]
        if host.up:
            continue
        ct = by_id[ct_id]
        results[ct_id] = not_probed(ct_id, ct.host, ct.port, ct.security, host)
        root = host.root or name
        if root not in crits:
            # Owned by the root host's check that failed (ping or tcp), named as every
            # report names a host that is down.
            why = host_down_reason(root, found[root])
            crits[root] = [CheckResult(HOST_TIER, found[root].failed or "tcp", CRIT, why)]
    return results, crits


def _fit(ct: ConnectionType, timeout: float | None) -> ConnectionType:
    """``ct`` with its probe deadline cut so that every attempt (``retries``) and the
    pauses between them fit in ``timeout``."""
    if timeout is None:
        return ct
    import dataclasses

    budget = timeout - ct.retries * ct.retry_backoff
    per_attempt = max(0.5, budget / (ct.retries + 1))
    if per_attempt >= ct.timeout:
        return ct
    return dataclasses.replace(ct, timeout=per_attempt)


def _baseline(store: HistoryStore, ct_id: str, check: str) -> Baseline | None:
    try:
        return store.baseline(ct_id, check)
    except Exception:  # noqa: BLE001  # the history never costs a verdict: no baseline then
        return None


def _open_history(
    targets: Targets, option: str | None, off: bool
) -> tuple[HistoryStore | None, str]:
    """The history for the drift baselines, read-only, and why there is none ("" when
    there is one, or when a missing file just means no run was recorded yet)."""
    if off:
        return None, "no baseline: the history is off (--no-history)"
    path = Path(option).expanduser() if option else targets.history.path
    if path is None:
        return None, "no baseline: no history (--history PATH, or history: path in the file)"
    if not path.exists():
        return None, ""
    from .history.store import open_history_readonly

    store = open_history_readonly(path)
    if store is None:
        return None, f"no baseline: the history {path} could not be read (locked, corrupt or newer)"
    return store, ""


# ----------------------------------------------------------------------------- output


def status_of(verdicts: Sequence[Verdict]) -> Status:
    """The plugin state of a run's verdicts: the worst one's; only SKIPs (or none) is
    UNKNOWN, since no check could tell the state."""
    return _STATUS[worst(verdicts)]


def service_of(judged: Sequence[Judged]) -> str:
    """The status line's service name: ``SMTP`` when every checked connection type is an
    SMTP one, else ``POP3`` (also for UNKNOWN lines, which name no connection type)."""
    if judged and all(j.ct.protocol == "smtp" for j in judged):
        return "SMTP"
    return SERVICE


def render(judged: Sequence[Judged], *, verbose: int = 0) -> tuple[Status, str]:
    """The plugin state and output: the status line with the perfdata after ``|``, then
    the long output (problems; every check with ``verbose``)."""
    many = len(judged) > 1
    every = [(j.ct.id, c) for j in judged for c in j.checks]
    state = status_of([c.verdict for _, c in every])
    line = f"{service_of(judged)} {state} - {_summary(judged, every)}"
    perf = " ".join(m for j in judged for m in perfdata(j, prefix=f"{j.ct.id}:" if many else ""))
    out = [f"{line} | {perf}" if perf else line]
    for ct_id, c in every:
        if verbose or c.verdict in _PROBLEMS:
            where = f"{ct_id} " if many else ""
            out.append(f"[{_label(c.verdict)}] {where}{c.tier}/{c.check}: {_clean(c.reason)}")
    return state, "\n".join(out)


def _label(verdict: Verdict) -> str:
    return "SKIP" if verdict == Verdict.SKIP else _STATUS[verdict]


def _summary(judged: Sequence[Judged], every: Sequence[tuple[str, CheckResult]]) -> str:
    """The text of the status line: the worst check and how many more problems, or what
    was checked when all is well."""
    if not every:
        return "no check to run"
    worst_verdict = worst(c.verdict for _, c in every)
    if worst_verdict == Verdict.SKIP:
        ct_id, first = every[0]
        return f"no check reached a verdict: {ct_id} {first.check}: {_clip(first.reason)}"
    if worst_verdict == Verdict.OK:
        counts = {v: sum(1 for _, c in every if c.verdict == v) for v in (Verdict.OK, Verdict.SKIP)}
        what = judged[0].ct.id if len(judged) == 1 else f"{len(judged)} connection types"
        text = f"{what}: {counts[Verdict.OK]} checks OK"
        if counts[Verdict.SKIP]:
            text += f", {counts[Verdict.SKIP]} skipped"
        totals = [j.result.phase("total") for j in judged]
        slowest = max((t for t in totals if t is not None), default=None)
        if slowest is not None:
            text += f", {'slowest ' if len(judged) > 1 else ''}session {slowest:.3f} s"
        return text
    bad = [(i, c) for i, c in every if c.verdict == worst_verdict]
    ct_id, first = bad[0]
    text = f"{ct_id} {first.check}: {_clip(first.reason)}"
    others = sorted(
        (c.verdict for i, c in every if c.verdict in _PROBLEMS and c is not first),
        key=rank,
        reverse=True,
    )
    if others:
        kinds = ", ".join(f"{others.count(v)} {_STATUS[v]}" for v in dict.fromkeys(others))
        text += f" (+{len(others)} more: {kinds})"
    return text


def perfdata(j: Judged, *, prefix: str = "") -> list[str]:
    """The perfdata of one connection type: every measured phase and the total in seconds
    with the configured warn;crit, days to certificate expiry with warn/crit days (lower
    bounds, ``30:``), and the mailbox's message count and size.

    The ranges are the guidelines' (alert outside ``[0, n]``, or below ``n`` for ``n:``).
    Latency and count rules are "≥ threshold"; for a whole count that is "> n - 1", so
    counts carry ``n - 1`` and a parser that re-evaluates them agrees with the verdict."""
    ct, result = j.ct, j.result
    out: list[str] = []
    for phase, seconds in result.phases:
        warn, crit = ct.latency.get(phase, ("", ""))
        out.append(_metric(prefix + phase, seconds, "s", _n(warn), _n(crit), "0"))
    cert = result.tls.cert if result.tls is not None else None
    if cert is not None:
        out.append(
            _metric(
                prefix + "cert_days_left",
                round(cert.days_left, 3),
                "",
                f"{_n(ct.cert_warn_days)}:",
                f"{_n(ct.cert_crit_days)}:",
            )
        )
    box = result.mailbox
    if box is not None:
        count_warn, count_crit = _count_range(ct.mailbox_count)
        if not count_crit and (ct.stat_min is not None or ct.stat_max is not None):
            # The STAT check's bounds: CRIT outside [stat_min, stat_max].
            low = "" if ct.stat_min is None else f"{_n(ct.stat_min)}:"
            count_crit = low + ("" if ct.stat_max is None else _n(ct.stat_max))
        out.append(_metric(prefix + "messages", box.count, "", count_warn, count_crit, "0"))
        size_warn, size_crit = _count_range(ct.mailbox_size)
        out.append(_metric(prefix + "mailbox_size", box.size, "B", size_warn, size_crit, "0"))
    return out


def _count_range(limits: tuple[int, int] | None) -> tuple[str, str]:
    if limits is None:
        return "", ""
    return _n(limits[0] - 1), _n(limits[1] - 1)


def _metric(label: str, value: float, uom: str, warn: str, crit: str, low: str = "") -> str:
    fields = [f"{_n(value)}{uom}", warn, crit, low]
    while len(fields) > 1 and not fields[-1]:
        fields.pop()  # no trailing empty fields: some parsers reject them
    # Labels never hold ' or = (ids are [A-Za-z0-9._:@+-], phases are names).
    return f"'{label}'=" + ";".join(fields)


def _n(value: float | str) -> str:
    """A number in the C locale without exponent or trailing zeros (0.012, 5, -2160.5)."""
    if isinstance(value, str):
        return value
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _clean(text: str) -> str:
    """One line that cannot start the perfdata: ``|`` becomes ``¦``, controls ``?``."""
    text = text.replace("|", "\u00a6")
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _clip(text: str) -> str:
    text = _clean(text)
    if len(text) <= _FIRST_LINE_REASON:
        return text
    return text[: _FIRST_LINE_REASON - 1].rstrip() + "\u2026"
