"""Self-tests of the run history (issue 11, items 1, 2 and the machine-readable half of 5).

Three parts: the state rules on hand-made sequences (:mod:`pop3mon.history.states`), the
SQLite store on its own (migrations, baselines, retention, damaged files), and real runs of
the suite as a subprocess against fault servers: two runs in a row, ``confirm: 2``, xdist,
a locked and a corrupt history, ``--no-history``.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pop3mon.checks.drift import certificate_changed
from pop3mon.checks.facts import Facts
from pop3mon.config import HistorySettings
from pop3mon.engine.defaults import DEFAULTS
from pop3mon.engine.stages import DRIFT_CHECKS
from pop3mon.history.model import CheckState
from pop3mon.history.record import HistoryOutcome, record_run, streak_note
from pop3mon.history.states import Evaluation, FlapPolicy, Observation, evaluate
from pop3mon.history.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    CheckRow,
    CtRow,
    HistoryError,
    HistoryStore,
    RunRow,
    open_history_readonly,
)
from pop3mon.verdict import Verdict
from test_reports import run_suite

from pop3mon_lab.certs import generate_lab_certs
from pop3mon_lab.faultserver import FaultServer

OK, WARN, CRIT, SKIP = Verdict.OK, Verdict.WARN, Verdict.CRIT, Verdict.SKIP
POLICY = FlapPolicy(changes=4, runs=10)


# --------------------------------------------------------------------------- states
class Sequence_:
    """Feeds one run after another through :func:`evaluate`, as the store would."""

    def __init__(self, confirm: int = 1, policy: FlapPolicy = POLICY) -> None:
        self.states: dict[tuple[str, str], CheckState] = {}
        self.recent: dict[str, list[bool]] = {}
        self.flapping: dict[str, bool] = {}
        self.confirm = confirm
        self.policy = policy
        self.now = 1_000_000.0

    def run(self, *verdicts: tuple[str, Verdict] | tuple[str, Verdict, str]) -> Evaluation:
        self.now += 300.0
        obs = [
            Observation("ct", v[0], v[2] if len(v) == 3 else "tls", v[1], f"reason {v[1]}")  # type: ignore[misc]
            for v in verdicts
        ]
        result = evaluate(
            self.states,
            obs,
            self.now,
            confirm={"ct": self.confirm},
            recent=self.recent,
            was_flapping=self.flapping,
            policy=self.policy,
        )
        self.states.update({(s.ct, s.check): s for s in result.states})
        self.recent.setdefault("ct", []).append(result.changed.get("ct", False))
        self.flapping.update(result.flapping)
        return result


def kinds(result: Evaluation) -> list[tuple[str, str]]:
    return [(c.kind, c.check) for c in result.changes]


def test_streak_counts_runs_and_keeps_since_and_previous() -> None:
    seq = Sequence_()
    first = seq.run(("cert", OK))
    assert first.states[0].new and first.states[0].previous is None and first.states[0].runs == 1
    start = seq.now
    seq.run(("cert", CRIT))
    seq.run(("cert", CRIT))
    third = seq.run(("cert", CRIT))
    state = third.states[0]
    assert (state.verdict, state.runs, state.since, state.previous, state.new) == (
        CRIT,
        3,
        start + 300.0,
        OK,
        False,
    )
    assert kinds(third) == []  # an unchanged state is never a change
    assert streak_note(state, CRIT, True) == (
        f"failing for 4 runs since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(state.since))}"
    )
    assert streak_note(None, CRIT, True).startswith("new")
    assert streak_note(state, CRIT, False) == ""  # no history: nothing to say


def test_change_kinds() -> None:
    seq = Sequence_()
    assert kinds(seq.run(("a", OK), ("b", OK), ("c", SKIP), ("d", OK, "drift"))) == []
    assert kinds(seq.run(("a", WARN), ("b", OK), ("c", CRIT), ("d", WARN, "drift"))) == [
        ("new", "a"),
        ("new", "c"),
        ("drift", "d"),
    ]
    assert kinds(seq.run(("a", CRIT), ("b", OK), ("c", WARN), ("d", WARN, "drift"))) == [
        ("worse", "a"),
        ("better", "c"),
    ]
    # A failing check now skipped (its dependency failed instead) has not recovered.
    assert kinds(seq.run(("a", SKIP), ("b", OK), ("c", OK), ("d", OK, "drift"))) == [
        ("recovered", "c"),
        ("recovered", "d"),
    ]
    change = seq.run(("a", SKIP), ("b", CRIT))
    assert [(c.kind, c.before, c.after, c.reason) for c in change.changes] == [
        ("new", OK, CRIT, "reason CRIT")
    ]


def test_first_run_failures_are_new() -> None:
    result = Sequence_().run(("a", CRIT), ("b", OK))
    assert kinds(result) == [("new", "a")]
    assert result.changes[0].before is None
    assert not result.changed["ct"]  # first sight of a check is no state change


def test_confirm_keeps_a_crit_soft_until_it_held_n_runs() -> None:
    seq = Sequence_(confirm=3)
    seq.run(("login", OK))
    one = seq.run(("login", CRIT))
    assert one.states[0].hardness == "soft" and kinds(one) == [("new", "login")]
    assert one.changes[0].detail == "soft: 1 of 3 runs"
    two = seq.run(("login", CRIT))
    assert two.states[0].hardness == "soft" and kinds(two) == []
    three = seq.run(("login", CRIT))
    assert three.states[0].hardness == "hard" and kinds(three) == [("hard", "login")]
    assert kinds(seq.run(("login", CRIT))) == []  # told once
    assert kinds(seq.run(("login", OK))) == [("recovered", "login")]
    # A WARN is never soft; with the default confirm 1 a CRIT is hard at once.
    assert seq.run(("login", WARN)).states[0].hardness == "hard"
    assert Sequence_().run(("login", CRIT)).states[0].hardness == "hard"


def test_flapping_holds_changes_until_it_settles() -> None:
    seq = Sequence_(policy=FlapPolicy(changes=2, runs=5))
    seq.run(("tcp", OK))
    assert kinds(seq.run(("tcp", CRIT))) == [("new", "tcp")]
    assert kinds(seq.run(("tcp", OK))) == [("recovered", "tcp")]
    start = seq.run(("tcp", CRIT))  # third change in the last 5 runs: more than 2
    assert kinds(start) == [("flapping", "")]
    assert start.states[0].flapping and start.flapping["ct"]
    assert "3 state changes in the last 4 runs" in start.changes[0].reason
    assert kinds(seq.run(("tcp", OK))) == []  # held
    assert kinds(seq.run(("tcp", CRIT))) == []  # held
    assert kinds(seq.run(("tcp", CRIT))) == []
    assert kinds(seq.run(("tcp", CRIT))) == []  # still 3 changes in the last 5 runs
    settled = seq.run(("tcp", CRIT))  # the last 5 runs: two changes
    # Last told before the flap: recovered (OK); it settled on CRIT, so that is told now.
    assert kinds(settled) == [("settled", ""), ("new", "tcp")]
    assert settled.changes[1].before == OK and settled.changes[1].since == 0.0
    assert "after flapping settled" in settled.changes[1].detail
    assert not settled.states[0].flapping
    assert kinds(seq.run(("tcp", OK))) == [("recovered", "tcp")]


def test_skip_and_error_carry_the_last_finding_forward() -> None:
    # OK, CRIT, CRIT, SKIP, OK: the recovery after the skipped run is told.
    seq = Sequence_()
    seq.run(("login", OK))
    seq.run(("login", CRIT))
    seq.run(("login", CRIT))
    skipped = seq.run(("login", SKIP))
    assert kinds(skipped) == [] and skipped.states[0].verdict == CRIT
    assert not skipped.changed["ct"]  # no finding: no change counted towards flapping
    recovered = seq.run(("login", OK))
    assert kinds(recovered) == [("recovered", "login")]
    assert recovered.changes[0].before == CRIT
    # OK, CRIT, SKIP, CRIT and CRIT, ERROR, CRIT: one CRIT, told once, since its first run;
    # runs count the runs that found it.
    for gap in (SKIP, Verdict.ERROR):
        seq = Sequence_()
        seq.run(("login", OK))
        seq.run(("login", CRIT))
        start = seq.now
        assert kinds(seq.run(("login", gap))) == []
        again = seq.run(("login", CRIT))
        assert kinds(again) == []
        state = again.states[0]
        assert (state.verdict, state.since, state.runs, state.previous, state.new) == (
            CRIT,
            start,
            2,
            OK,
            False,
        )
    # A soft CRIT stays soft over a skipped run and is confirmed by the next finding.
    seq = Sequence_(confirm=2)
    seq.run(("login", OK))
    seq.run(("login", CRIT))
    assert seq.run(("login", SKIP)).states[0].hardness == "soft"
    assert kinds(seq.run(("login", CRIT))) == [("hard", "login")]
    # A check that never had a finding is in its own state.
    assert Sequence_().run(("login", SKIP)).states[0].verdict == SKIP


def test_skip_carries_the_state_through_the_store(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    now = time.time()
    told = []
    for i, v in enumerate([OK, CRIT, SKIP, CRIT, SKIP, OK]):
        out = _record(path, f"r{i}", now + i * 300, {"login": v})
        assert isinstance(out, HistoryOutcome)
        told.append([(c.kind, c.before, c.after) for c in out.changes])
        if i == 3:
            assert out.states[("ct", "login")].since == now + 300
    assert told == [[], [("new", OK, CRIT)], [], [], [], [("recovered", CRIT, OK)]]


def test_a_recovery_from_a_soft_crit_says_it_was_soft() -> None:
    seq = Sequence_(confirm=3)
    seq.run(("login", OK))
    seq.run(("login", CRIT))
    seq.run(("login", CRIT))
    soft = seq.run(("login", OK))
    assert kinds(soft) == [("recovered", "login")] and not soft.changes[0].was_hard
    for _ in range(3):
        seq.run(("login", CRIT))
    hard = seq.run(("login", OK))
    assert kinds(hard) == [("recovered", "login")] and hard.changes[0].was_hard


def test_drift_is_hard_at_once_and_told_once() -> None:
    seq = Sequence_(confirm=3)
    seq.run(("cert", OK, "drift"))
    fired = seq.run(("cert", CRIT, "drift"))
    assert kinds(fired) == [("drift", "cert")] and fired.states[0].hardness == "hard"
    for _ in range(4):
        assert kinds(seq.run(("cert", CRIT, "drift"))) == []


def test_latency_and_drift_flips_do_not_make_a_connection_type_flap() -> None:
    seq = Sequence_(policy=FlapPolicy(changes=2, runs=5))
    for i in range(8):
        noisy = WARN if i % 2 else OK
        result = seq.run(("login", OK, "auth"), ("latency-total", noisy, "latency"))
        assert not result.flapping["ct"]
    for verdict in (CRIT, OK):
        result = seq.run(("login", OK, "auth"), ("cert", verdict, "drift"))
        assert not result.flapping["ct"]
    hard = seq.run(("login", CRIT, "auth"), ("latency-total", OK, "latency"))
    assert ("new", "login") in kinds(hard) and not hard.flapping["ct"]


def test_settled_tells_what_differs_from_before_the_flap() -> None:
    seq = Sequence_(policy=FlapPolicy(changes=2, runs=5))
    seq.run(("tcp", OK), ("login", CRIT), ("cert", OK))
    for verdict in (CRIT, OK, CRIT):  # the third change starts the flap
        last = seq.run(("tcp", verdict), ("login", CRIT), ("cert", OK))
    assert kinds(last) == [("flapping", "")]
    # Held meanwhile: login recovers, cert fails.
    seq.run(("tcp", OK), ("login", OK), ("cert", CRIT))
    while not (settled := seq.run(("tcp", OK), ("login", OK), ("cert", CRIT))).changes:
        pass
    # Told before the flap: tcp OK (recovered), login CRIT, cert OK.
    assert kinds(settled) == [("settled", ""), ("recovered", "login"), ("new", "cert")]
    assert all("after flapping settled" in c.detail for c in settled.changes[1:])
    assert kinds(seq.run(("tcp", OK), ("login", OK), ("cert", CRIT))) == []


def test_settled_compares_with_the_state_told_through_the_store(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    settings = HistorySettings(flapping_changes=2, flapping_runs=5)
    now = time.time()
    seen = []
    for i, v in enumerate([OK, CRIT, OK, CRIT, OK] + [CRIT] * 6):
        out = _record(path, f"r{i}", now + i * 300, {"tcp": v}, settings=settings)
        assert isinstance(out, HistoryOutcome)
        seen.extend((i, c.kind, c.before) for c in out.changes)
    assert seen[-2:] == [(8, "settled", CRIT), (8, "new", OK)]


# --------------------------------------------------------------------------- store
def _run(run_id: str, started: float) -> RunRow:
    return RunRow(run_id, started, started + 1.0, "targets.yaml", "0" * 64, "test")


def _record(
    path: Path,
    run_id: str,
    started: float,
    verdicts: Mapping[str, Verdict],
    facts: Facts | None = None,
    settings: HistorySettings | None = None,
) -> object:
    checks = [
        CheckRow(
            "ct",
            name,
            "drift" if name.startswith("d-") or name in DRIFT_CHECKS else "tls",
            v,
            "r",
            None,
            "",
        )
        for name, v in verdicts.items()
    ]
    worst = CRIT if CRIT in verdicts.values() else OK
    cts = [CtRow("ct", worst, {"total": 0.1}, facts or Facts(cert_sha256=run_id))]
    return record_run(
        path, settings or HistorySettings(), _run(run_id, started), cts, checks, {"ct": 1}
    )


def test_baseline_is_the_last_ok_run_or_an_accepted_one(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "history.sqlite"  # a missing directory is created
    now = time.time()
    _record(path, "r1", now - 300, {"d-cert": OK})
    _record(path, "r2", now - 200, {"d-cert": OK})
    out = _record(path, "r3", now - 100, {"d-cert": WARN})
    assert out.status == "ok"  # type: ignore[attr-defined]
    reader = open_history_readonly(path)
    assert reader is not None
    base = reader.baseline("ct", "d-cert")
    assert base is not None and not base.accepted
    assert (base.run_id, base.facts.cert_sha256, base.runs_ago) == ("r2", "r2", 2)
    # A check never OK and never accepted compares with the first recorded run.
    never = reader.baseline("ct", "nothing")
    assert never is not None and (never.run_id, never.runs_ago) == ("r1", 3)
    assert reader.baseline("other-ct", "d-cert") is None
    with pytest.raises(HistoryError):
        reader.accept("ct", None)  # read-only
    reader.close()
    with HistoryStore.open(path) as writer:
        assert writer.accept("ct", None, note="new CA").accepted == ("d-cert",)
        assert not writer.accept("other", "d-cert").known  # never ran
    reader = open_history_readonly(path)
    assert reader is not None
    base = reader.baseline("ct", "d-cert")
    assert base is not None and base.accepted and base.facts.cert_sha256 == "r3"
    row = reader.db.execute("SELECT who, note FROM accepted").fetchone()
    assert row[1] == "new CA"
    reader.close()


#: A run that got all the way: what every drift check compares.
FULL = Facts(
    cert_sha256="A",
    cert_issuer="CN=CA 1",
    caps_before=("USER", "STLS"),
    greeting="+OK ready",
    login_ok=True,
    mailbox_count=3,
    mailbox_size=300,
)
#: A run whose TCP connect failed: no facts at all.
DOWN = Facts()
SKIPPED = {name: SKIP for name in DRIFT_CHECKS}


def test_a_first_run_that_failed_early_is_no_drift_baseline(tmp_path: Path) -> None:
    """Never OK and nothing accepted: the fallback is the first run that has what the
    check compares, not the first run (TCP failed: no certificate, and the check would
    SKIP "no certificate in the baseline" until the run is pruned)."""
    path = tmp_path / "h.sqlite"
    now = time.time()
    _record(path, "down", now - 300, SKIPPED, facts=DOWN)
    _record(path, "up", now - 200, SKIPPED, facts=FULL)
    with HistoryStore.open(path) as store:
        for check in DRIFT_CHECKS:
            base = store.baseline("ct", check)
            assert base is not None and base.run_id == "up", (check, base)
        cert = store.baseline("ct", "certificate_changed")
    assert cert is not None
    # What the drift check then says on the next run with the same certificate: OK.
    assert certificate_changed(FULL, cert, DEFAULTS.drift).verdict == OK


def test_pruning_keeps_the_baseline_of_an_open_drift(tmp_path: Path) -> None:
    """Retention must not prune the last OK run while the drift is open: the baseline
    would become the drifted facts, accepting the drift in silence."""
    path = tmp_path / "h.sqlite"
    now = time.time()
    day = 86400.0
    old = dataclasses.replace(FULL, cert_sha256="OLD", cert_issuer="CN=CA 1")
    new = dataclasses.replace(FULL, cert_sha256="NEW", cert_issuer="CN=CA 2")
    long = HistorySettings(retention_days=365)  # as if recorded back then
    _record(path, "ok", now - 100 * day, {"certificate_changed": OK}, facts=old, settings=long)
    _record(
        path, "drift1", now - 89.99 * day, {"certificate_changed": WARN}, facts=new, settings=long
    )
    _record(path, "drift2", now, {"certificate_changed": WARN}, facts=new)  # prunes
    with HistoryStore.open(path) as store:
        base = store.baseline("ct", "certificate_changed")
        assert base is not None and (base.run_id, base.facts.cert_sha256) == ("ok", "OLD")
        assert not base.accepted
        # Only the pinned run outlived retention; the drift stays open until accepted.
        assert [r[0] for r in store.db.execute("SELECT run_id FROM runs ORDER BY id")] == [
            "ok",
            "drift1",
            "drift2",
        ]
    _record(path, "fixed", now + 1, {"certificate_changed": OK}, facts=old)
    with HistoryStore.open(path) as store:
        base = store.baseline("ct", "certificate_changed")
        assert base is not None and base.run_id == "fixed"
    _record(path, "later", now + 2, {"certificate_changed": OK}, facts=old)  # unpinned: pruned
    with HistoryStore.open(path) as store:
        assert "ok" not in {r[0] for r in store.db.execute("SELECT run_id FROM runs")}


def test_accept_takes_each_check_from_the_latest_run_that_has_its_facts(tmp_path: Path) -> None:
    """Accepting right after a run that failed at TCP takes the last run that got as far
    (never an all-null baseline that SKIPs for good); a check no run has facts for is
    not accepted, and the result says so."""
    path = tmp_path / "h.sqlite"
    now = time.time()
    no_mailbox = dataclasses.replace(FULL, mailbox_count=None, mailbox_size=None)
    _record(path, "up", now - 200, {"certificate_changed": OK}, facts=no_mailbox)
    _record(path, "down", now - 100, SKIPPED, facts=DOWN)
    with HistoryStore.open(path) as store:
        done = store.accept("ct", None, note="after the outage")
        assert done.known
        assert set(done.accepted) == set(DRIFT_CHECKS) - {"mailbox_changed"}
        assert done.missing == ("mailbox_changed",)
        assert "not accepted mailbox_changed" in done.describe()
        cert = store.baseline("ct", "certificate_changed")
        assert cert is not None and cert.accepted and cert.facts.cert_sha256 == "A"
        assert cert.run_id == "up"
        rows = store.acceptances(["ct"])
        assert {(a.ct, a.check, a.note) for a in rows} == {
            ("ct", c, "after the outage") for c in done.accepted
        }
        assert store.accept("nope", None).describe() == (
            "no run of connection type 'nope' in the history"
        )


def test_availability_comes_from_hourly_counters_and_v1_files_are_migrated(
    tmp_path: Path,
) -> None:
    """Availability is counted per hour (one row per connection type and hour, not every
    run's row in 30 days); a v1 file gets its counters from the runs it holds."""
    path = tmp_path / "h.sqlite"
    now = time.time()
    hour = 3600.0
    with HistoryStore.open(path, migrations=MIGRATIONS[:1]) as v1:
        v1.db.execute("BEGIN")
        for i, (ago, worst) in enumerate(
            [(40 * 86400.0, "OK"), (3 * 86400.0, "CRIT"), (2 * hour, "OK"), (hour, "ERROR")]
        ):
            v1.db.execute(
                "INSERT INTO runs (id, run_id, started, finished, host, targets_name, "
                "targets_sha256, version) VALUES (?, ?, ?, ?, 'h', 't', 'x', '0')",
                (i + 1, f"r{i}", now - ago, now - ago + 1),
            )
            v1.db.execute(
                "INSERT INTO cts (run, ct, worst, changed, flapping, peer, phases, facts) "
                "VALUES (?, 'ct', ?, 0, 0, '', '{}', NULL)",
                (i + 1, worst),
            )
        v1.db.execute("COMMIT")
    reader = open_history_readonly(path)  # a v1 file is still readable before migration
    assert reader is not None
    reader.close()
    with HistoryStore.open(path) as store:
        assert store.db.execute("SELECT sum(runs), sum(ok) FROM hourly").fetchone() == (4, 2)
        assert store.availability(["ct", "none"], now) == {
            "ct": {"24h": 0.5, "7d": round(1 / 3, 6), "30d": round(1 / 3, 6)},
            "none": {"24h": None, "7d": None, "30d": None},
        }
    out = _record(path, "r9", now, {"cert": OK}, facts=FULL)
    assert out.availability["ct"]["24h"] == round(2 / 3, 6)  # type: ignore[attr-defined]
    with HistoryStore.open(path) as store:
        # Retention (90 days) keeps the 40-day-old hour; 1 day of retention drops it.
        assert store.db.execute("SELECT count(*) FROM hourly").fetchone()[0] == 5
        store.db.execute("BEGIN IMMEDIATE")
        store._prune(now - 86400.0, 1)
        store.db.execute("COMMIT")
        assert store.db.execute("SELECT sum(runs) FROM hourly").fetchone()[0] == 3


def test_facts_are_stored_once_per_distinct_value(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    now = time.time()
    for n in range(5):
        _record(path, f"r{n}", now - 100 + n, {"cert": OK}, facts=Facts(cert_sha256="same"))
    with HistoryStore.open(path) as store:
        assert store.db.execute("SELECT count(*) FROM facts").fetchone()[0] == 1
        assert store.run_count() == 5


def test_retention_prunes_old_runs(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    now = time.time()
    settings = HistorySettings(retention_days=1)
    _record(path, "old", now - 3 * 86400, {"cert": CRIT}, settings=settings)
    _record(path, "older-ok", now - 2 * 86400, {"cert": OK, "gone": OK}, settings=settings)
    out = _record(path, "new", now, {"cert": OK}, settings=settings)
    with HistoryStore.open(path) as store:
        store.sweep()  # otherwise once a day
        assert [r[0] for r in store.db.execute("SELECT run_id FROM runs")] == ["new"]
        assert store.db.execute("SELECT count(*) FROM checks").fetchone()[0] == 1
        assert store.db.execute("SELECT count(*) FROM facts").fetchone()[0] == 1
        assert store.db.execute("SELECT count(*) FROM texts").fetchone()[0] == 5
        assert set(store.states()) == {("ct", "cert")}  # "gone" left with its runs
    assert out.availability == {"ct": {"24h": 1.0, "7d": 1.0, "30d": 1.0}}  # type: ignore[attr-defined]


def test_an_older_schema_is_migrated_and_a_newer_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    _record(path, "r1", time.time(), {"cert": OK})

    def newer(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE runs ADD COLUMN note TEXT NOT NULL DEFAULT 'migrated'")

    with HistoryStore.open(path, migrations=(*MIGRATIONS, newer)) as store:
        assert store.db.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION + 1,)
        ]
        assert store.db.execute("SELECT run_id, note FROM runs").fetchall() == [("r1", "migrated")]
    # This pop3mon knows one version less: it must not touch the file.
    with pytest.raises(HistoryError, match="written by a newer pop3mon"):
        HistoryStore.open(path)
    assert open_history_readonly(path) is None
    # A fresh file gets every step at once.
    fresh = tmp_path / "fresh.sqlite"
    with HistoryStore.open(fresh) as store:
        assert store.db.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)
        ]
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "content", [b"this is not a database at all" * 100, b"SQLite format 3\0" + b"\xff" * 4000]
)
def test_a_corrupt_file_is_a_warn_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "history.sqlite"
    path.write_bytes(content)
    out = _record(path, "r1", time.time(), {"cert": OK})
    assert out.status == "warn"  # type: ignore[attr-defined]
    assert str(path) in out.note and "database" in out.note  # type: ignore[attr-defined]
    assert open_history_readonly(path) is None
    assert path.read_bytes() == content  # left as it was


def test_a_read_only_file_is_a_warn(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    _record(path, "r1", time.time(), {"cert": OK})
    path.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        if sys.platform != "win32" and __import__("os").geteuid() == 0:
            pytest.skip("root ignores file permissions")
        out = _record(path, "r2", time.time(), {"cert": OK})
        assert out.status == "warn" and str(path) in out.note  # type: ignore[attr-defined]
    finally:
        tmp_path.chmod(0o755)
        path.chmod(0o644)


def test_an_uncreatable_directory_is_a_warn(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    path = blocker / "history.sqlite"
    out = _record(path, "r1", time.time(), {"cert": OK})
    assert out.status == "warn" and str(path) in out.note  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- real runs
@dataclass
class HistLab:
    """Two fault servers and a targets file whose ``flip``/``breaks`` ports can be swapped."""

    directory: Path
    ca_file: Path
    up: int
    env: dict[str, str]

    def targets(self, *, flip_up: bool, breaks_up: bool, extra: str = "") -> Path:
        down = 1  # nothing listens on port 1 of loopback
        path = self.directory / "targets.yaml"
        path.write_text(
            f"""version: 1
defaults:
  ca_file: {self.ca_file}
  timeout: 5
  login_pacing: parallel
  account: {{username: alice, password_env: POP3MON_HIST_PW}}
{extra}
servers:
  - name: lab
    host: localhost
    connections:
      - {{id: steady, port: {self.up}, security: starttls}}
      - {{id: down, port: {down}, security: tls}}
      - {{id: flip, port: {self.up if flip_up else down}, security: starttls}}
      - {{id: breaks, port: {self.up if breaks_up else down}, security: starttls}}
""",
            encoding="utf-8",
        )
        return path


@pytest.fixture(scope="module")
def hist_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HistLab]:
    directory = tmp_path_factory.mktemp("hist-lab")
    certs = generate_lab_certs(directory / "certs")
    with ExitStack() as stack:
        up = stack.enter_context(
            FaultServer(
                "healthy",
                users={"alice": "hist-pw-1"},
                certfile=certs.valid.cert,
                keyfile=certs.valid.key,
            )
        )
        yield HistLab(directory, certs.ca_file, up.port, {"POP3MON_HIST_PW": "hist-pw-1"})


def _states(doc: Mapping[str, object]) -> dict[tuple[str, str], dict[str, object]]:
    out = {}
    for conn in doc["connections"]:  # type: ignore[attr-defined]
        for chk in conn["checks"]:
            out[(conn["id"], chk["check"])] = chk["state"]
    return out


def _runs_in(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM runs").fetchone()[0])
    finally:
        db.close()


REPORTS = ("report.html", "junit.xml", "results.json", "metrics.prom")


def test_two_runs_tell_new_recovered_and_still_failing(hist_lab: HistLab, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    first = run_suite(
        hist_lab.targets(flip_up=False, breaks_up=True), reports, "-q", env=hist_lab.env
    )
    history = reports / "history.sqlite"
    # The summary wraps at the terminal width: compare with line breaks taken out.
    flat = " ".join(first.output.split())
    assert "history: new baseline (no earlier runs in " in flat, first.output[-3000:]
    assert history.is_file() and _runs_in(history) == 1
    doc1 = first.json()
    assert doc1["history"]["status"] == "new"
    start = doc1["run"]["started"]

    second = run_suite(
        hist_lab.targets(flip_up=True, breaks_up=False), reports, "-q", env=hist_lab.env
    )
    out = " ".join(second.output.split())
    assert _runs_in(history) == 2
    assert "new since last run: breaks tcp (CRIT)" in out, out[-3000:]
    assert "recovered: flip tcp" in out
    assert f"still failing: down tcp (CRIT, 2 runs, since {start})" in out
    doc = second.json()
    assert doc["history"]["status"] == "ok" and doc["history"]["path"] == str(history)
    states = _states(doc)
    assert states[("down", "tcp")] == {
        "verdict": "CRIT",
        "hardness": "hard",
        "since": start,
        "since_epoch": doc1["run"]["started_epoch"],
        "runs": 2,
        "previous": None,
        "new": False,
        "flapping": False,
    }
    assert states[("breaks", "tcp")]["new"] and states[("breaks", "tcp")]["previous"] == "OK"
    assert states[("steady", "login")]["runs"] == 2
    changes = {(c["kind"], c["connection"], c["check"]) for c in doc["changes"]}
    assert ("new", "breaks", "tcp") in changes and ("recovered", "flip", "tcp") in changes
    assert not any(c[1] in ("down", "steady") for c in changes)  # unchanged: never told
    avail = {c["id"]: c["availability"] for c in doc["connections"]}
    assert avail["steady"] == {"24h": 1.0, "7d": 1.0, "30d": 1.0}
    assert avail["down"]["24h"] == 0.0 and avail["flip"]["24h"] == 0.5
    metrics = second.path("metrics.prom").read_text("utf-8")
    assert "pop3mon_history_ok 1.0" in metrics
    assert 'pop3mon_availability_ratio{connection="flip",' in metrics
    assert 'window="24h"} 0.5' in metrics
    # The state's verdict and hardness are values (a label would change with them).
    down = (
        '{check="tcp",connection="down",host="localhost",port="1",security="tls",'
        'server="lab",tier="connectivity"}'
    )
    assert f"pop3mon_check_consecutive_runs{down} 2.0" in metrics
    assert f"pop3mon_check_state_verdict{down} 2.0" in metrics  # CRIT
    assert f"pop3mon_check_state_hard{down} 1.0" in metrics
    assert f"pop3mon_check_state_since_timestamp_seconds{down} " in metrics
    junit = second.path("junit.xml").read_text("utf-8")
    assert "CRIT down tcp: " in junit
    assert f"failing for 2 runs since {start}" in junit
    assert "breaks tcp: " in junit and "new since the last run (was OK)" in junit
    # The report for people: each connection type's state with since when, the last change,
    # availability, a latency sparkline; the matrix marks what is new and what recovered.
    page = second.path("report.html").read_text("utf-8")
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r'<tr class="p3m-row" data-connection="([^"]+)".*?</tr>', page, re.S)
    }
    assert "p3m-mark-new" in rows["breaks"] and "p3m-mark-new" not in rows["down"]
    assert "p3m-mark-recovered" in rows["flip"]
    assert page.count("<h4>History</h4>") == 4
    assert "Availability" in page and "24h 50.0 %" in page
    assert re.search(r"CRIT</span> since [^<]*· 2 runs \(tcp\)", page), page[-5000:]
    assert page.count('class="p3m-spark"') == 4
    assert "1 new · 1 recovered since the last run" in page
    # The newly broken connection type leads the headline and the matrix.
    assert re.search(r"FAILING: breaks, down", page), page[:3000]


def test_confirm_two_makes_the_first_crit_soft(hist_lab: HistLab, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    targets = hist_lab.targets(flip_up=True, breaks_up=True, extra="  confirm: 2")
    text = (
        targets.read_text("utf-8")
        .replace("\n  confirm: 2\n", "\n")
        .replace("login_pacing: parallel", "login_pacing: parallel\n  confirm: 2")
    )
    targets.write_text(text, encoding="utf-8")
    first = run_suite(targets, reports, "-q", "-k", "down", env=hist_lab.env)
    assert _states(first.json())[("down", "tcp")]["hardness"] == "soft"
    second = run_suite(targets, reports, "-q", "-k", "down", env=hist_lab.env)
    doc = second.json()
    assert _states(doc)[("down", "tcp")]["hardness"] == "hard"
    assert {(c["kind"], c["check"]) for c in doc["changes"]} == {("hard", "tcp")}
    assert "still failing: down tcp (CRIT, 2 runs, since" in second.output


def test_xdist_records_one_run(hist_lab: HistLab, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    run = run_suite(
        hist_lab.targets(flip_up=True, breaks_up=True), reports, "-q", "-n", "2", env=hist_lab.env
    )
    history = reports / "history.sqlite"
    assert _runs_in(history) == 1
    doc = run.json()
    db = sqlite3.connect(history)
    try:
        rows = db.execute("SELECT count(*) FROM checks").fetchone()[0]
    finally:
        db.close()
    # The host check of the lab's server (its connection types share it) is recorded too.
    hosts = sum(len(h["checks"]) for h in doc["hosts"])
    assert hosts > 0
    assert rows == sum(len(c["checks"]) for c in doc["connections"]) + hosts


def test_a_locked_history_is_a_warn_and_every_report_is_written(
    hist_lab: HistLab, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    history = tmp_path / "hist" / "h.sqlite"
    targets = hist_lab.targets(flip_up=True, breaks_up=True)
    run_suite(targets, reports, "-q", f"--history={history}", env=hist_lab.env)
    # Another process holds the writer lock for longer than the run's lock timeout.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"db = sqlite3.connect({str(history)!r}, isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        text = targets.read_text("utf-8").replace(
            "servers:", "history: {lock_timeout: 0.5}\nservers:"
        )
        targets.write_text(text, encoding="utf-8")
        for name in REPORTS:
            (reports / name).unlink()
        run = run_suite(targets, reports, "-q", f"--history={history}", env=hist_lab.env)
    finally:
        holder.communicate("", timeout=10)
    # The summary wraps to the terminal width: compare with the line breaks taken out.
    flat = " ".join(run.output.split())
    assert f"history: WARN {history}: locked by another process" in flat, run.output[-2000:]
    for name in REPORTS:
        run.path(name)
    doc = run.json()
    assert doc["history"]["status"] == "warn" and str(history) in doc["history"]["note"]
    assert all(s is None for s in _states(doc).values())
    assert "pop3mon_history_ok 0.0" in run.path("metrics.prom").read_text("utf-8")
    assert _runs_in(history) == 1


def test_a_corrupt_history_is_a_warn_and_every_report_is_written(
    hist_lab: HistLab, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    history = reports / "history.sqlite"
    history.write_bytes(b"garbage, not SQLite" * 200)
    run = run_suite(
        hist_lab.targets(flip_up=True, breaks_up=True), reports, "-q", "-n", "2", env=hist_lab.env
    )
    flat = " ".join(run.output.split())
    assert f"history: WARN {history}: not a usable SQLite database" in flat
    for name in REPORTS:
        run.path(name)
    assert run.json()["history"]["status"] == "warn"
    assert history.read_bytes() == b"garbage, not SQLite" * 200
    # The drift checks say why they have nothing to compare with (not "first run").
    drift = _drift_reasons(run.json())
    assert drift and all("could not be read" in r for r in drift), drift


def _drift_reasons(doc: dict[str, Any]) -> list[str]:
    return [
        str(k["reason"])
        for c in doc["connections"]
        for k in c["checks"]
        if k["tier"] == "drift" and k["verdict"] == "SKIP" and "baseline" in k["reason"]
    ]


def test_no_history_neither_reads_nor_writes(hist_lab: HistLab, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    run = run_suite(
        hist_lab.targets(flip_up=True, breaks_up=True),
        reports,
        "-q",
        "--no-history",
        env=hist_lab.env,
    )
    assert not (reports / "history.sqlite").exists()
    assert "history:" not in run.output
    doc = run.json()
    assert doc["history"] == {"status": "off", "path": None, "note": None}
    drift = _drift_reasons(doc)
    assert drift and all("the history is off" in r for r in drift), drift
    assert "pop3mon_history_ok" not in run.path("metrics.prom").read_text("utf-8")


# --------------------------------------------------------------------------- config
def test_history_and_confirm_settings_load_and_cascade(tmp_path: Path) -> None:
    from pop3mon.config import ConfigError, load_targets

    path = tmp_path / "t.yaml"
    path.write_text(
        """version: 1
defaults: {confirm: 2}
history: {path: state/h.sqlite, retention_days: 7, flapping: {changes: 2, runs: 6}}
servers:
  - name: a
    host: a.example
    confirm: 3
    connections:
      - {id: one, security: tls, auth: none}
      - {id: two, security: tls, auth: none, port: 996, confirm: 1}
  - name: b
    host: b.example
    connections: [{id: three, security: tls, auth: none}]
""",
        encoding="utf-8",
    )
    targets = load_targets(path)
    assert {c.id: c.confirm for c in targets.connections} == {"one": 3, "two": 1, "three": 2}
    assert targets.history == HistorySettings(
        path=tmp_path / "state" / "h.sqlite",
        retention_days=7,
        flapping_changes=2,
        flapping_runs=6,
    )
    for bad, expected in (
        ("history: {retention_days: 0}", "history.retention_days: "),
        ("history: {flapping: {changes: 5, runs: 5}}", "changes (5) must be less than runs (5)"),
        ("history: {keep: 3}", "history.keep: unknown key"),
        ("defaults: {confirm: 0}", "defaults.confirm: "),
    ):
        path.write_text(
            f"version: 1\n{bad}\nservers:\n  - name: a\n    host: a.example\n"
            "    connections: [{security: tls, auth: none}]\n",
            encoding="utf-8",
        )
        with pytest.raises(ConfigError) as info:
            load_targets(path)
        assert len(info.value.problems) == 1 and expected in info.value.problems[0], (
            info.value.problems
        )


def test_settled_states_keep_every_field() -> None:
    """evaluate() settles each state by its constructor, not dataclasses.replace(): it must
    carry every other field over (one added to CheckState later included)."""
    from pop3mon.history.states import _settled
    from pop3mon.verdict import Verdict

    values: dict[str, Any] = {
        "ct": "mail1",
        "check": "login",
        "verdict": Verdict.CRIT,
        "hardness": "soft",
        "since": 12.5,
        "runs": 7,
        "previous": Verdict.WARN,
        "flapping": False,
        "new": True,
        "told": None,
        "vantage": "eu-west",
    }
    assert set(values) == {f.name for f in dataclasses.fields(CheckState)}, (
        "a new CheckState field: give it a non-default value here and carry it in _settled"
    )
    state = CheckState(**values)
    for flapping, told in ((True, Verdict.OK), (False, None)):
        expected = dataclasses.replace(state, flapping=flapping, told=told)
        assert _settled(state, flapping, told) == expected


def test_facts_to_dict_is_asdicts() -> None:
    """Facts.to_dict() reads the fields as they are instead of dataclasses.asdict()'s deep
    copy: the same data for facts with every field set (and the format version)."""
    from pop3mon.checks.facts import FACTS_VERSION

    values: dict[str, Any] = {}
    for n, f in enumerate(dataclasses.fields(Facts)):
        kind = str(f.type)
        if "tuple" in kind:
            values[f.name] = (f"{f.name}-a", f"{f.name}-b")
        elif "bool" in kind:
            values[f.name] = n % 2 == 0
        elif "int" in kind:
            values[f.name] = n
        else:
            values[f.name] = f"{f.name}-value"
    facts = Facts(**values)
    assert facts.to_dict() == {"version": FACTS_VERSION, **dataclasses.asdict(facts)}
    assert Facts.from_dict(facts.to_dict()) == facts
