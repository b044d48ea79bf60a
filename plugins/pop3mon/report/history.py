"""pytest glue of the run history: where it is, opening it for reading, recording a run.

Where (first that applies): ``--no-history`` (none); ``--history PATH`` (relative to where
pytest was started); the targets file's ``history: {path}`` (relative to that file); ini
``pop3mon_history`` (relative to the rootdir); else ``history.sqlite`` in the reports
directory, unless this run writes no reports (``--no-reports``, ``--collect-only``):
without a reports directory there is no default place, and the self-tests' throwaway
runs leave no file behind.

Readers: :func:`history_for` opens the file read-only once per process (controller and
xdist workers alike) and keeps it in ``config.stash[HISTORY_KEY]`` (``None``: no history,
none usable yet, or one whose last run came from another ``--vantage``); the drift checks
and the failure messages read it. Only the controller writes, once, at session end
(:func:`record`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from ..checks.facts import Facts
from ..engine.defaults import DEFAULTS
from ..engine.result import ProbeResult
from ..history.record import OFF, HistoryOutcome, foreign_note, foreign_vantage, record_run
from ..history.store import CheckRow, CtRow, HistoryStore, RunRow, open_history_readonly
from .keys import HISTORY_KEY, HISTORY_REFUSED_KEY, IDENTITY_KEY, STORE_KEY
from .model import RunInfo, RunReport, new_run_id, scrub
from .recorder import NOT_RUN, one_per_check

__all__ = ["HISTORY_NAME", "add_options", "history_for", "history_path", "record"]

HISTORY_NAME = "history.sqlite"


def add_options(group: pytest.OptionGroup, parser: pytest.Parser) -> None:
    """``--history PATH``, ``--no-history`` and ini ``pop3mon_history``."""
    group.addoption(
        "--history",
        metavar="PATH",
        default=None,
        help="keep the run history (states, since when, changes) in this SQLite file "
        f"(default: the targets file's history: path, ini pop3mon_history, else "
        f"{HISTORY_NAME} in the reports directory)",
    )
    group.addoption(
        "--no-history",
        action="store_true",
        default=False,
        help="neither read nor record the run history",
    )
    parser.addini("pop3mon_history", "the run history's SQLite file (relative to the rootdir)")


def history_path(config: pytest.Config, reports_dir: Path, reports: bool) -> Path | None:
    """The history file of this run, or ``None`` for none (see the module docstring)."""
    if config.getoption("no_history", False):
        return None
    raw = config.getoption("history", None)
    if raw:
        path = Path(os.path.expanduser(str(raw)))
        return path if path.is_absolute() else config.invocation_params.dir / path
    store = config.stash.get(STORE_KEY, None)
    if store is not None and store.targets.history.path is not None:
        return store.targets.history.path
    ini = str(config.getini("pop3mon_history") or "")
    if ini:
        path = Path(os.path.expanduser(ini))
        return path if path.is_absolute() else config.rootpath / path
    return reports_dir / HISTORY_NAME if reports else None


def history_for(config: pytest.Config) -> HistoryStore | None:
    """The history opened read-only for this process (cached in the stash), or ``None``."""
    if HISTORY_KEY in config.stash:
        return config.stash[HISTORY_KEY]
    from .paths import reports_dir, reports_enabled

    path = history_path(config, reports_dir(config), reports_enabled(config))
    store = open_history_readonly(path)
    identity = config.stash.get(IDENTITY_KEY, None)
    vantage = identity.vantage if identity is not None else None
    theirs = foreign_vantage(store, vantage) if store is not None else None
    if store is not None and theirs is not None and path is not None:
        # Another vantage's states and drift baselines say nothing about this one's path
        # (record() refuses to record into it, with the WARN naming both).
        store.close()
        store = None
        config.stash[HISTORY_REFUSED_KEY] = foreign_note(path, theirs, vantage)
    config.stash[HISTORY_KEY] = store
    if store is not None:
        config.add_cleanup(store.close)
    return store


def record(config: pytest.Config, report: RunReport, path: Path | None) -> HistoryOutcome:
    """Append ``report`` to the history at ``path`` (the controller, at session end)."""
    store = config.stash.get(STORE_KEY, None)
    if path is None or store is None:
        return OFF
    # Every check has run: close this process's reader, so that the writer, the last
    # connection, checkpoints the WAL and leaves one file behind.
    reader = config.stash.get(HISTORY_KEY, None)
    if reader is not None:
        reader.close()
        config.stash[HISTORY_KEY] = None
    info = report.info
    identity = config.stash.get(IDENTITY_KEY, None)
    run = RunRow(
        run_id=history_run_id(info, given=identity is not None and identity.run_id is not None),
        started=info.started,
        finished=info.finished,
        targets_name=info.targets_name,
        targets_sha256=info.targets_sha256,
        version=info.version,
        stopped=info.stopped,
        host=socket.gethostname(),
    )
    cts: list[CtRow] = []
    rows: list[CheckRow] = []
    for conn in report.connections:
        result = conn.result
        ran = one_per_check(r for r in conn.records if r.outcome != NOT_RUN)
        if result is None and not ran:
            continue
        cts.append(
            CtRow(
                ct=conn.ct.id,
                worst=conn.worst,
                phases=dict(result.phases) if result is not None else {},
                facts=_scrubbed_facts(result) if result is not None else None,
                peer=scrub(result.peer) if result is not None else "",
            )
        )
        rows.extend(
            CheckRow(conn.ct.id, r.check, r.tier, r.verdict, scrub(r.reason), r.figure, r.unit)
            for r in ran
        )
    # The host checks are tracked like a connection type (id host:<server>): a host going
    # down is one change (and one notification); its connection types' checks SKIP, which
    # carries their last finding forward and is no change of theirs.
    confirm = {c.ct.id: c.ct.confirm for c in report.connections}
    for hrep in report.hosts:
        ran = one_per_check(r for r in hrep.records if r.outcome != NOT_RUN)
        if not ran:
            continue
        cts.append(CtRow(ct=hrep.host.id, worst=hrep.worst, phases={}, facts=None, peer=""))
        rows.extend(
            CheckRow(hrep.host.id, r.check, r.tier, r.verdict, scrub(r.reason), r.figure, r.unit)
            for r in ran
        )
        # As soon as the most eager of its connection types would call a CRIT hard.
        mine = [c.ct.confirm for c in report.connections if c.ct.id in hrep.host.connections]
        confirm[hrep.host.id] = min(mine, default=DEFAULTS.confirm)
    # The coverage checks likewise (id server:<name>): an unmonitored listener appearing is
    # one change and one notification.
    for crep in report.coverage:
        ran = one_per_check(r for r in crep.records if r.outcome != NOT_RUN)
        if not ran:
            continue
        cid = crep.coverage.id
        cts.append(CtRow(ct=cid, worst=crep.worst, phases={}, facts=None, peer=""))
        rows.extend(
            CheckRow(cid, r.check, r.tier, r.verdict, scrub(r.reason), r.figure, r.unit)
            for r in ran
        )
        mine = [c.ct.confirm for c in report.connections if c.ct.server == crep.coverage.name]
        confirm[cid] = min(mine, default=DEFAULTS.confirm)
    if not rows:
        return OFF
    return record_run(path, store.targets.history, run, cts, rows, confirm, info.vantage)


def history_run_id(info: RunInfo, given: bool) -> str:
    """The run's row id in the history, unique as the history's ``runs`` table wants it.

    The shards of one run share its id, and on one machine they may share one history
    file (each records its own connection types: states are per check, so they never
    overlap); the shard and vantage tell their rows apart (``123-1 shard 3/10 @eu-west``).
    An id that was given (``--run-id``, the CI's) may come again (a fixed
    ``POP3MON_RUN_ID``); the process's own generated id keeps such a row unique too.
    """
    key = info.run_id
    if info.shard is not None:
        key += f" shard {info.shard[0]}/{info.shard[1]}"
    if info.vantage is not None:
        key += f" @{info.vantage}"
    return f"{key} {new_run_id(info.started)}" if given else key


def _scrubbed_facts(result: ProbeResult) -> Facts | None:
    """The probe's facts with every text passed through the redactor once more."""
    facts = Facts.from_result(result)
    data = {k: _scrub_value(v) for k, v in facts.to_dict().items()}
    return Facts.from_dict(data)


def _scrub_value(value: object) -> object:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, tuple | list):
        return [scrub(x) if isinstance(x, str) else x for x in value]
    return value
