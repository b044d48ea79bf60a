"""The run history: one SQLite file (standard library ``sqlite3``) that every run appends to.

What it keeps, per run: the run's identity (id, start, end, host, targets file name and
sha256, pop3mon version); per connection type: the worst verdict, whether any check
changed, the phase timings, the peer address and the comparable :class:`~pop3mon.checks.
facts.Facts` (stored once per distinct value: they rarely change); per check: tier, verdict,
reason, key figure and unit (texts stored once in ``texts``; the view ``check_rows``
reads them back), and the state after the run. Besides: the current state of
every check (what the next run compares against) and the baselines operators accepted.

Concurrency: only the controller of a run writes, once, at session end, in one
``BEGIN IMMEDIATE`` transaction (SQLite's writer lock) with a busy timeout, so two
overlapping runs take turns and the second one computes its states from the first one's.
Readers (xdist workers, drift checks) use :func:`open_history_readonly`. WAL mode lets
them read while a writer writes.

Failure: every problem is a :class:`HistoryError` whose message names the file and why
(locked, not a database, read-only ...); the report glue turns it into a run-level WARN,
and the run's reports are written anyway.

The schema is versioned (table ``schema_version``): :data:`MIGRATIONS` are applied in
order to bring an older file up to date; a file from a newer pop3mon is refused, never
rewritten.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..checks.drift import BASELINE_FIELDS
from ..checks.facts import Baseline, Facts
from ..engine.defaults import DEFAULTS
from ..verdict import Verdict
from .model import CheckState

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "WINDOWS",
    "Acceptance",
    "AcceptedRow",
    "CheckRow",
    "CtRow",
    "HistoryError",
    "HistoryStore",
    "RunRow",
    "open_history_readonly",
]

#: Availability windows (label, seconds), shortest first.
WINDOWS: Final[tuple[tuple[str, float], ...]] = (
    ("24h", 86400.0),
    ("7d", 7 * 86400.0),
    ("30d", 30 * 86400.0),
)

_V1: Final = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: last_ok/state compare ids
    run_id TEXT NOT NULL UNIQUE,
    started REAL NOT NULL,
    finished REAL NOT NULL,
    host TEXT NOT NULL,
    targets_name TEXT NOT NULL,
    targets_sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    stopped TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_started ON runs (started);
CREATE TABLE facts (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    json TEXT NOT NULL
);
CREATE TABLE cts (
    run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    ct TEXT NOT NULL,
    worst TEXT NOT NULL,
    changed INTEGER NOT NULL,
    flapping INTEGER NOT NULL,
    peer TEXT NOT NULL,
    phases TEXT NOT NULL,  -- JSON {phase: milliseconds}
    facts INTEGER REFERENCES facts (id),
    PRIMARY KEY (run, ct)
) WITHOUT ROWID;
CREATE INDEX cts_ct ON cts (ct, run);
CREATE TABLE texts (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE
);
CREATE TABLE checks (
    run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    ct INTEGER NOT NULL,
    check_name INTEGER NOT NULL,
    tier INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    hardness TEXT NOT NULL,
    reason INTEGER NOT NULL,
    figure REAL,
    unit INTEGER NOT NULL,
    PRIMARY KEY (run, ct, check_name)
) WITHOUT ROWID;
CREATE VIEW check_rows AS
    SELECT k.run AS run, c.text AS ct, n.text AS check_name, t.text AS tier,
           k.verdict AS verdict, k.hardness AS hardness, r.text AS reason,
           k.figure AS figure, u.text AS unit
    FROM checks k JOIN texts c ON c.id = k.ct JOIN texts n ON n.id = k.check_name
    JOIN texts t ON t.id = k.tier JOIN texts r ON r.id = k.reason JOIN texts u ON u.id = k.unit;
CREATE TABLE last_ok (
    ct TEXT NOT NULL,
    check_name TEXT NOT NULL,
    tier TEXT NOT NULL,
    run INTEGER NOT NULL,
    PRIMARY KEY (ct, check_name)
) WITHOUT ROWID;
CREATE TABLE state (
    ct TEXT NOT NULL,
    check_name TEXT NOT NULL,
    verdict TEXT NOT NULL,
    hardness TEXT NOT NULL,
    since REAL NOT NULL,
    runs INTEGER NOT NULL,
    previous TEXT,
    flapping INTEGER NOT NULL,
    last_run INTEGER NOT NULL,
    PRIMARY KEY (ct, check_name)
) WITHOUT ROWID;
CREATE TABLE accepted (
    id INTEGER PRIMARY KEY,
    ct TEXT NOT NULL,
    check_name TEXT NOT NULL,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    note TEXT NOT NULL,
    run_id TEXT NOT NULL,
    run_started REAL NOT NULL,
    facts TEXT NOT NULL
);
CREATE INDEX accepted_ct ON accepted (ct, check_name, at);
"""


#: Per connection type and hour (epoch seconds // 3600 of the run's start): how many runs
#: and how many without CRIT or ERROR. Availability reads these few rows instead of every
#: run's row in its window (30 days at 100 connection types: 864 000 rows, 4 s per run).
_V2_HOURLY: Final = """
CREATE TABLE hourly (
    hour INTEGER NOT NULL,
    ct TEXT NOT NULL,
    runs INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    PRIMARY KEY (hour, ct)
) WITHOUT ROWID
"""
#: Rebuilds ``hourly`` from the per-run rows (the v2 migration of an existing file).
_AGGREGATE_HOURLY: Final = """
INSERT INTO hourly (hour, ct, runs, ok)
    SELECT CAST(r.started / 3600 AS INTEGER), c.ct, count(*),
           sum(c.worst NOT IN ('CRIT', 'ERROR'))
    FROM cts c JOIN runs r ON r.id = c.run
    GROUP BY 1, 2
"""


def _v2(db: sqlite3.Connection) -> None:
    """v1 → v2: hourly availability counters, filled from the runs the file holds."""
    db.execute(_V2_HOURLY)
    db.execute(_AGGREGATE_HOURLY)


def _script(text: str) -> Callable[[sqlite3.Connection], None]:
    """A migration step of plain statements, run one by one inside the caller's
    transaction (``executescript`` would commit it)."""

    def step(db: sqlite3.Connection) -> None:
        for statement in text.split(";"):
            if statement.strip():
                db.execute(statement)

    return step


#: Version 3: each check's verdict as last told (CheckState.told), so the run a flap settles
#: in tells what differs from before the flap. NULL in a migrated file: its verdict.
_V3: Final = "ALTER TABLE state ADD COLUMN told TEXT"

#: Ordered migrations: ``MIGRATIONS[n]`` brings a file at version ``n`` to ``n + 1``.
#: Append only; a released step is never edited. All steps run in one transaction.
MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (
    _script(_V1),
    _v2,
    _script(_V3),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)
#: The schema versions a reader (:func:`open_history_readonly`) can read: v2 only added
#: the hourly counters, which only the writer reads, and v3 the told column, which a
#: reader does without; so the first run after an upgrade still has its baselines and
#: states before its writer migrates the file.
READABLE_VERSIONS: Final = frozenset(range(1, SCHEMA_VERSION + 1))
#: Orphaned facts and texts are swept every this many runs (a day of 5-minute runs).
_SWEEP_EVERY: Final = 288


class HistoryError(Exception):
    """The history file cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class RunRow:
    """A run's identity as the history records it."""

    run_id: str
    started: float
    finished: float
    targets_name: str
    targets_sha256: str
    version: str
    stopped: str = ""
    host: str = ""


@dataclass(frozen=True)
class CheckRow:
    """One check of one connection type in this run (reason already scrubbed)."""

    ct: str
    check: str
    tier: str
    verdict: Verdict
    reason: str
    figure: float | None
    unit: str


@dataclass(frozen=True)
class CtRow:
    """One connection type in this run."""

    ct: str
    worst: Verdict
    phases: Mapping[str, float]
    facts: Facts | None
    peer: str = ""


@dataclass(frozen=True)
class Acceptance:
    """What :meth:`HistoryStore.accept` recorded."""

    ct: str
    #: The drift checks whose baseline is now accepted.
    accepted: tuple[str, ...] = ()
    #: The drift checks asked for that no recorded run has facts for (the probe never got
    #: that far, e.g. TCP failed): nothing to accept, their baseline is unchanged.
    missing: tuple[str, ...] = ()
    #: Whether the history holds any run of ``ct`` at all.
    known: bool = False

    def describe(self) -> str:
        """One line for the terminal: what was accepted and what not, and why."""
        if not self.known:
            return f"no run of connection type {self.ct!r} in the history"
        parts = []
        if self.accepted:
            parts.append(f"accepted {', '.join(self.accepted)}")
        if self.missing:
            parts.append(
                f"not accepted {', '.join(self.missing)}: no run of {self.ct} has the facts "
                "they compare (the probe never got that far)"
            )
        return "; ".join(parts) or f"no drift check recorded for {self.ct}"


@dataclass(frozen=True)
class AcceptedRow:
    """One recorded acceptance of a baseline."""

    at: float
    who: str
    note: str
    ct: str
    check: str
    run_id: str


def _with_fields(check: str, column: str) -> str:
    """SQL condition: the facts JSON in ``column`` can be the baseline of ``check`` (one
    of its :data:`~pop3mon.checks.drift.BASELINE_FIELDS` is set)."""
    names = BASELINE_FIELDS.get(check)  # type: ignore[call-overload]
    if names is None:
        return "1"
    # Names come from the fixed mapping, never from input.
    return "(" + " OR ".join(f"json_extract({column}, '$.{n}') IS NOT NULL" for n in names) + ")"


def _why(exc: BaseException) -> str:
    """A short reason for a sqlite3 or OS error, without the file's content."""
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return "locked by another process beyond the timeout (another pop3mon run?)"
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return f"not a usable SQLite database ({text}); move it away to start a new history"
    if "readonly" in lowered or "read-only" in lowered:
        return "read-only (attempt to write a readonly database)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return text


def _state_row(row: sqlite3.Row | tuple[Any, ...]) -> CheckState:
    ct, check, verdict, hardness, since, runs, previous, flapping, told = row
    return CheckState(
        ct=ct,
        check=check,
        verdict=Verdict(verdict),
        hardness=hardness,
        since=float(since),
        runs=int(runs),
        previous=Verdict(previous) if previous else None,
        flapping=bool(flapping),
        told=Verdict(told if told is not None else verdict) if told != "" else None,
    )


class HistoryStore:
    """One open history file. Build with :meth:`open` (writer) or
    :func:`open_history_readonly` (reader); use as a context manager or :meth:`close`."""

    def __init__(self, path: Path, db: sqlite3.Connection, *, readonly: bool) -> None:
        self.path = path
        self.db = db
        self.readonly = readonly
        #: True when the file had no run before this process opened it.
        self.empty = self.run_count() == 0
        self._states: dict[tuple[str, str], CheckState] | None = None

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: Path,
        *,
        timeout: float = DEFAULTS.history_lock_timeout,
        migrations: Sequence[Callable[[sqlite3.Connection], None]] = MIGRATIONS,
    ) -> HistoryStore:
        """Open (creating the file and its directory if needed) for writing, migrated to
        the current schema. Raises :class:`HistoryError`. (``migrations``: for the
        migration self-tests.)"""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"{path}: {_why(exc)}") from None
        try:
            db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            db.execute("PRAGMA foreign_keys = ON")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise sqlite3.OperationalError("cannot switch to WAL mode")
            db.execute("PRAGMA synchronous = NORMAL")
            _migrate(db, path, migrations)
            return cls(path, db, readonly=False)
        except HistoryError:
            db.close()
            raise
        except sqlite3.Error as exc:
            db.close()
            raise HistoryError(f"{path}: {_why(exc)}") from None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------
    def run_count(self) -> int:
        """How many runs the history holds."""
        row = self.db.execute("SELECT count(*) FROM runs").fetchone()
        return int(row[0])

    def states(self) -> dict[tuple[str, str], CheckState]:
        """Every check's state after the last run that had it (read once, then cached)."""
        if self._states is None:
            # A reader may meet a file its writer has not migrated yet (no told column).
            columns = {str(r[1]) for r in self.db.execute("PRAGMA table_info(state)")}
            told = "told" if "told" in columns else "NULL"
            rows = self.db.execute(
                "SELECT ct, check_name, verdict, hardness, since, runs, previous, flapping, "
                f"{told} FROM state"
            ).fetchall()
            self._states = {(r[0], r[1]): _state_row(r) for r in rows}
        return self._states

    def last_run_id(self) -> str | None:
        """The row id (``runs.run_id``) of the run recorded last, or ``None`` (no run)."""
        row = self.db.execute("SELECT run_id FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        return str(row[0]) if row is not None else None

    def state(self, ct_id: str, check: str) -> CheckState | None:
        """The state of one check after the last run that had it, or ``None``."""
        return self.states().get((ct_id, check))

    def recent_changes(self, ct_ids: Iterable[str], runs: int) -> dict[str, list[bool]]:
        """Per connection type, whether each of its last ``runs`` recorded runs changed
        any check's verdict (oldest first)."""
        out: dict[str, list[bool]] = {}
        for ct in ct_ids:
            rows = self.db.execute(
                "SELECT changed FROM cts WHERE ct = ? ORDER BY run DESC LIMIT ?", (ct, runs)
            ).fetchall()
            out[ct] = [bool(r[0]) for r in reversed(rows)]
        return out

    def was_flapping(self, ct_ids: Iterable[str]) -> dict[str, bool]:
        """Whether each connection type was flapping after its last recorded run."""
        out: dict[str, bool] = {}
        for ct in ct_ids:
            row = self.db.execute(
                "SELECT flapping FROM cts WHERE ct = ? ORDER BY run DESC LIMIT 1", (ct,)
            ).fetchone()
            out[ct] = bool(row[0]) if row else False
        return out

    def latency_series(
        self, ct_ids: Iterable[str], runs: int
    ) -> dict[str, tuple[tuple[float, float | None, str], ...]]:
        """Per connection type its last ``runs`` runs, oldest first: (run start, total
        seconds or None when the probe had no total, worst verdict)."""
        out: dict[str, tuple[tuple[float, float | None, str], ...]] = {}
        for ct in ct_ids:
            rows = self.db.execute(
                "SELECT r.started, c.phases, c.worst FROM cts c JOIN runs r ON r.id = c.run "
                "WHERE c.ct = ? ORDER BY c.run DESC LIMIT ?",
                (ct, runs),
            ).fetchall()
            points: list[tuple[float, float | None, str]] = []
            for started, phases, worst in reversed(rows):
                try:
                    total = json.loads(phases).get("total")
                except (ValueError, AttributeError):
                    total = None
                seconds = float(total) / 1000.0 if isinstance(total, (int, float)) else None
                points.append((float(started), seconds, str(worst)))
            out[ct] = tuple(points)
        return out

    def availability(self, ct_ids: Iterable[str], now: float) -> dict[str, dict[str, float | None]]:
        """Per connection type and window (:data:`WINDOWS`), the share of its runs in the
        window with no CRIT or ERROR (``None``: no run in the window).

        Counted by hour (table ``hourly``): a window starts at the top of the hour that
        holds ``now`` minus its length, so it spans up to one hour more (24h: 24 to 25
        hours); one pass over ``hourly``'s rows of the longest window."""
        wanted = set(ct_ids)
        out: dict[str, dict[str, float | None]] = {ct: {} for ct in wanted}
        starts = [int((now - seconds) // 3600) for _, seconds in WINDOWS]
        sums = ", ".join(
            f"sum(CASE WHEN hour >= {h} THEN runs ELSE 0 END), "
            f"sum(CASE WHEN hour >= {h} THEN ok ELSE 0 END)"
            for h in starts
        )
        rows = self.db.execute(
            f"SELECT ct, {sums} FROM hourly WHERE hour >= ? GROUP BY ct", (min(starts),)
        ).fetchall()
        seen = {row[0]: row[1:] for row in rows if row[0] in wanted}
        for ct in wanted:
            counts = seen.get(ct)
            for i, (label, _) in enumerate(WINDOWS):
                n, ok = (int(counts[2 * i]), int(counts[2 * i + 1])) if counts else (0, 0)
                out[ct][label] = round(ok / n, 6) if n else None
        return out

    def rebuild_hourly(self) -> None:
        """Recount ``hourly`` from the per-run rows (inside the caller's transaction; the
        v2 migration does it once, the cost benchmark after pre-filling a file)."""
        self.db.execute("DELETE FROM hourly")
        self.db.execute(_AGGREGATE_HOURLY)

    def known_cts(self) -> frozenset[str]:
        """Every connection type the history holds a run of."""
        return frozenset(r[0] for r in self.db.execute("SELECT DISTINCT ct FROM state"))

    def acceptances(self, ct_ids: Iterable[str] | None = None) -> list[AcceptedRow]:
        """The recorded acceptances (of ``ct_ids`` only, when given), oldest first."""
        wanted = None if ct_ids is None else set(ct_ids)
        rows = self.db.execute(
            "SELECT at, who, note, ct, check_name, run_id FROM accepted ORDER BY at, id"
        ).fetchall()
        return [
            AcceptedRow(float(at), str(who), str(note), str(ct), str(check), str(run_id))
            for at, who, note, ct, check, run_id in rows
            if wanted is None or ct in wanted
        ]

    def baseline(self, ct_id: str, check: str) -> Baseline | None:
        """The facts the drift check ``check`` of ``ct_id`` compares against: from the most
        recent run in which that check was OK, or the most recent accepted baseline,
        whichever is later, else the first recorded run of ``ct_id`` whose facts have what
        ``check`` compares (:data:`~pop3mon.checks.drift.BASELINE_FIELDS`: a first run
        that failed at TCP has no certificate, and would leave the check SKIPping for
        good); ``None`` when there is no such run yet (or only facts of another format
        version). Never raises."""
        try:
            ok = self.db.execute(
                "SELECT r.run_id, r.started, f.json FROM last_ok o "
                "JOIN runs r ON r.id = o.run "
                "JOIN cts c ON c.run = o.run AND c.ct = o.ct "
                "JOIN facts f ON f.id = c.facts "
                "WHERE o.ct = ? AND o.check_name = ?",
                (ct_id, check),
            ).fetchone()
            acc = self.db.execute(
                "SELECT run_id, run_started, facts FROM accepted "
                f"WHERE ct = ? AND check_name = ? AND {_with_fields(check, 'facts')} "
                "ORDER BY at DESC, id DESC LIMIT 1",
                (ct_id, check),
            ).fetchone()
            chosen, accepted = ok, False
            if acc is not None and (ok is None or float(acc[1]) >= float(ok[1])):
                chosen, accepted = acc, True
            if chosen is None:
                # Never OK and nothing accepted: the first recorded run with what the check
                # compares is the baseline, so a drift found on the next run stays one until
                # it is accepted (the first such run's check had nothing to compare with, so
                # it was not OK).
                chosen = self.db.execute(
                    "SELECT r.run_id, r.started, f.json FROM cts c "
                    "JOIN runs r ON r.id = c.run JOIN facts f ON f.id = c.facts "
                    f"WHERE c.ct = ? AND {_with_fields(check, 'f.json')} "
                    "ORDER BY r.started, r.id LIMIT 1",
                    (ct_id,),
                ).fetchone()
            if chosen is None:
                return None
            run_id, started, text = chosen
            facts = Facts.from_dict(json.loads(text))
            if facts is None:
                return None
            ago = self.db.execute(
                "SELECT count(*) FROM cts c JOIN runs r ON r.id = c.run "
                "WHERE c.ct = ? AND r.started >= ?",
                (ct_id, float(started)),
            ).fetchone()
            return Baseline(
                facts=facts,
                at=float(started),
                runs_ago=max(1, int(ago[0])),
                run_id=str(run_id),
                accepted=accepted,
            )
        except (sqlite3.Error, ValueError, TypeError):
            return None

    # -- writing -------------------------------------------------------------------------
    def accept(self, ct_id: str, check: str | None, note: str = "") -> Acceptance:
        """Record the accepted baseline of drift check ``check`` of ``ct_id`` (``None``:
        of every drift check its latest run had): per check, the facts of the latest run
        that has what the check compares (:data:`~pop3mon.checks.drift.BASELINE_FIELDS`),
        so accepting after a run that failed at TCP takes the last run that got as far,
        never an empty baseline; a check no run has such facts for is not accepted
        (:attr:`Acceptance.missing`). Raises :class:`HistoryError`."""
        if self.readonly:
            raise HistoryError(f"{self.path}: opened read-only")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                latest = self.db.execute(
                    "SELECT run FROM cts WHERE ct = ? ORDER BY run DESC LIMIT 1", (ct_id,)
                ).fetchone()
                if latest is None:
                    self.db.execute("ROLLBACK")
                    return Acceptance(ct_id)
                if check is None:
                    names = [
                        r[0]
                        for r in self.db.execute(
                            "SELECT check_name FROM check_rows WHERE run = ? AND ct = ? "
                            "AND tier = 'drift' ORDER BY check_name",
                            (latest[0], ct_id),
                        )
                    ]
                else:
                    names = [check]
                who = _who()
                now = time.time()
                accepted: list[str] = []
                missing: list[str] = []
                for name in names:
                    row = self.db.execute(
                        "SELECT r.run_id, r.started, f.json FROM cts c "
                        "JOIN runs r ON r.id = c.run JOIN facts f ON f.id = c.facts "
                        f"WHERE c.ct = ? AND {_with_fields(name, 'f.json')} "
                        "ORDER BY c.run DESC LIMIT 1",
                        (ct_id,),
                    ).fetchone()
                    if row is None:
                        missing.append(name)
                        continue
                    run_id, started, facts = row
                    self.db.execute(
                        "INSERT INTO accepted (ct, check_name, at, who, note, run_id, "
                        "run_started, facts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (ct_id, name, now, who, note, run_id, started, facts),
                    )
                    accepted.append(name)
                self.db.execute("COMMIT")
                return Acceptance(ct_id, tuple(accepted), tuple(missing), known=True)
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: {_why(exc)}") from None

    def record(
        self,
        run: RunRow,
        cts: Sequence[CtRow],
        checks: Sequence[CheckRow],
        compute: Callable[[HistoryStore], tuple[Sequence[CheckState], Mapping[str, bool]]],
        *,
        retention_days: int = DEFAULTS.history_retention_days,
    ) -> tuple[Sequence[CheckState], dict[str, dict[str, float | None]]]:
        """Append one run in one exclusive transaction.

        ``compute(store)`` is called inside the transaction, with this store reading the
        state the previous run (of whichever process) left, and returns the new states and
        per connection type whether any check changed; they are written with the run.
        Then runs older than ``retention_days`` are pruned. Returns the states and the
        availability ratios (including this run; read after the commit, so the writer lock
        is not held for them). Raises :class:`HistoryError`.
        """
        if self.readonly:
            raise HistoryError(f"{self.path}: opened read-only")
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._states = None  # another run may have written since we read
                states, changed = compute(self)
                flapping = {s.ct: s.flapping for s in states}
                cur = db.execute(
                    "INSERT INTO runs (run_id, started, finished, host, targets_name, "
                    "targets_sha256, version, stopped) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run.run_id,
                        run.started,
                        run.finished,
                        run.host or socket.gethostname(),
                        run.targets_name,
                        run.targets_sha256,
                        run.version,
                        run.stopped,
                    ),
                )
                run_key = cur.lastrowid
                hardness = {(s.ct, s.check): s.hardness for s in states}
                facts_id = self._facts_ids()
                db.executemany(
                    "INSERT INTO cts (run, ct, worst, changed, flapping, peer, phases, facts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            run_key,
                            c.ct,
                            str(c.worst),
                            int(changed.get(c.ct, False)),
                            int(flapping.get(c.ct, False)),
                            c.peer,
                            _phases_ms(c.phases),
                            facts_id(c.facts),
                        )
                        for c in cts
                    ],
                )
                text = self._interner()
                db.executemany(
                    "INSERT INTO checks (run, ct, check_name, tier, verdict, hardness, reason, "
                    "figure, unit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            run_key,
                            text(k.ct),
                            text(k.check),
                            text(k.tier),
                            str(k.verdict),
                            hardness.get((k.ct, k.check), "hard"),
                            text(k.reason),
                            k.figure,
                            text(k.unit),
                        )
                        for k in checks
                    ],
                )
                hour = int(run.started // 3600)
                db.executemany(
                    "INSERT INTO hourly (hour, ct, runs, ok) VALUES (?, ?, 1, ?) "
                    "ON CONFLICT (hour, ct) DO UPDATE SET runs = runs + 1, ok = ok + excluded.ok",
                    [(hour, c.ct, int(c.worst not in (Verdict.CRIT, Verdict.ERROR))) for c in cts],
                )
                db.executemany(
                    "INSERT OR REPLACE INTO last_ok (ct, check_name, tier, run) "
                    "VALUES (?, ?, ?, ?)",
                    [(k.ct, k.check, k.tier, run_key) for k in checks if k.verdict == Verdict.OK],
                )
                db.executemany(
                    "INSERT OR REPLACE INTO state (ct, check_name, verdict, hardness, since, "
                    "runs, previous, flapping, last_run, told) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            s.ct,
                            s.check,
                            str(s.verdict),
                            s.hardness,
                            s.since,
                            s.runs,
                            str(s.previous) if s.previous is not None else None,
                            int(s.flapping),
                            run_key,
                            str(s.told) if s.told is not None else "",
                        )
                        for s in states
                    ],
                )
                self._prune(time.time() - retention_days * 86400.0, int(run_key or 0))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            avail = self.availability({c.ct for c in cts}, run.started)
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: {_why(exc)}") from None
        self._states = {(s.ct, s.check): s for s in states}
        return states, avail

    def sweep(self) -> None:
        """Delete the facts and texts no kept row refers to (inside the caller's
        transaction)."""
        self.db.execute(
            "DELETE FROM facts WHERE id NOT IN (SELECT facts FROM cts WHERE facts IS NOT NULL)"
        )
        self.db.execute(
            "DELETE FROM texts WHERE id NOT IN (SELECT ct FROM checks UNION "
            "SELECT check_name FROM checks UNION SELECT tier FROM checks UNION "
            "SELECT reason FROM checks UNION SELECT unit FROM checks)"
        )

    def _row_ids(
        self, insert: str, select: str, values: Callable[[str], tuple[str, ...]]
    ) -> Callable[[str], int]:
        """A function giving a text the id of its row, stored once: ``insert`` (OR IGNORE)
        takes ``values(text)``, ``select`` finds the row by the first of them. Each text is
        looked up once per function (a run repeats most of them many times)."""
        cache: dict[str, int] = {}

        def row_id(text: str) -> int:
            found = cache.get(text)
            if found is None:
                columns = values(text)
                self.db.execute(insert, columns)
                row = self.db.execute(select, columns[:1]).fetchone()
                found = cache[text] = int(row[0])
            return found

        return row_id

    def _interner(self) -> Callable[[str], int]:
        """A function giving each text its row id in ``texts`` (stored once: reasons,
        names and units repeat from run to run)."""
        return self._row_ids(
            "INSERT OR IGNORE INTO texts (text) VALUES (?)",
            "SELECT id FROM texts WHERE text = ?",
            lambda text: (text,),
        )

    def _facts_ids(self) -> Callable[[Facts | None], int | None]:
        """A function giving facts their row id in ``facts``, stored once per distinct
        value (by its digest; within a run many connection types have the same)."""
        row_id = self._row_ids(
            "INSERT OR IGNORE INTO facts (sha256, json) VALUES (?, ?)",
            "SELECT id FROM facts WHERE sha256 = ?",
            lambda text: (hashlib.sha256(text.encode()).hexdigest(), text),
        )

        def facts_id(facts: Facts | None) -> int | None:
            if facts is None:
                return None
            return row_id(json.dumps(facts.to_dict(), sort_keys=True, separators=(",", ":")))

        return facts_id

    def _prune(self, cutoff: float, run_key: int) -> int:
        """Delete runs that started before ``cutoff`` (their rows go with them), the hourly
        counters before it, and the states of checks no run since had (a removed
        connection type). A run a ``last_ok`` row points at is kept, however old: it is a
        drift check's baseline, and losing it would make the next baseline the drifted
        facts, accepting an open drift in silence (accepted baselines carry their own
        facts). Texts and facts no row refers to any more are swept once every
        :data:`_SWEEP_EVERY` runs: the sweep reads every row, while what it frees grows
        slowly. Returns the runs deleted."""
        db = self.db
        db.execute("DELETE FROM hourly WHERE hour < ?", (int(cutoff // 3600),))
        gone = db.execute(
            "DELETE FROM state WHERE last_run IN (SELECT id FROM runs WHERE started < ?)",
            (cutoff,),
        )
        if gone.rowcount:
            db.execute(
                "DELETE FROM last_ok WHERE NOT EXISTS (SELECT 1 FROM state s "
                "WHERE s.ct = last_ok.ct AND s.check_name = last_ok.check_name)"
            )
        cur = db.execute(
            "DELETE FROM runs WHERE started < ? AND id NOT IN (SELECT run FROM last_ok)",
            (cutoff,),
        )
        if cur.rowcount and run_key % _SWEEP_EVERY == 0:
            self.sweep()
        return int(cur.rowcount)


def _phases_ms(phases: Mapping[str, float]) -> str:
    """Phase timings as compact JSON in milliseconds to 0.01 ms (seconds with six
    decimals took twice the room, a third of a run's rows)."""
    return json.dumps({k: round(v * 1000.0, 2) for k, v in phases.items()}, separators=(",", ":"))


def _who() -> str:
    """Who accepted a baseline: the login name, or "" when the system cannot tell."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


def _migrate(
    db: sqlite3.Connection,
    path: Path,
    migrations: Sequence[Callable[[sqlite3.Connection], None]] = MIGRATIONS,
) -> None:
    """Bring the file to the latest version of ``migrations`` in one exclusive
    transaction (two runs creating the file at once take turns; a failed step leaves the
    file as it was)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        version = int(row[0]) if row and row[0] is not None else 0
        if version > len(migrations):
            raise HistoryError(
                f"{path}: written by a newer pop3mon (schema {version}, this one knows "
                f"{len(migrations)}); it was left unchanged"
            )
        if (
            version == 0
            and db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
        ):
            raise HistoryError(f"{path}: has tables but no schema version: not a pop3mon history")
        if version < len(migrations):
            for step in migrations[version:]:
                step(db)
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (len(migrations),))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def open_history_readonly(path: Path | None) -> HistoryStore | None:
    """Open an existing history for reading (workers, drift checks); ``None`` when there
    is none, it is unusable or of another schema version. Never raises, never creates or
    migrates the file."""
    if path is None:
        return None
    try:
        if not path.is_file():
            return None
        uri = "file:" + path.resolve().as_posix().replace("?", "%3f").replace("#", "%23")
        # mode=rw: WAL readers need the -shm file writable; query_only stops any write.
        # A read-only file falls back to mode=ro (reads still work if no WAL is pending).
        try:
            db = sqlite3.connect(uri + "?mode=rw", uri=True, timeout=2.0, isolation_level=None)
        except sqlite3.Error:
            db = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=2.0, isolation_level=None)
        try:
            db.execute("PRAGMA query_only = ON")
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            if row is None or row[0] not in READABLE_VERSIONS:
                db.close()
                return None
            return HistoryStore(path, db, readonly=True)
        except sqlite3.Error:
            db.close()
            return None
    except (OSError, sqlite3.Error, ValueError):
        return None
