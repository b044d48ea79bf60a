#!/usr/bin/env python3
"""What the run history costs per run: write time and database growth, at 1/100/1000
connection types, and the size after 90 days of 5-minute runs by extrapolation.

Usage::

    python3 benchmarks/history_cost.py [--runs 30] [--sizes 1,100,1000] [--json FILE]
    python3 benchmarks/history_cost.py --sizes 100 --prefill-days 30

``--prefill-days D`` first fills each file with D days of 5-minute runs of the same
connection types (their ``runs`` and per-connection-type rows, inserted directly: what the
availability, latency series and flapping reads scan; no per-check rows, which only the
prune deletes), so the write time is the one a long-running monitor sees, not an empty
file's.

Each size gets a fresh history file in a temporary directory and ``--runs`` runs recorded
one after the other through :func:`pop3mon.history.record.record_run` (what the controller
calls at session end: one ``BEGIN IMMEDIATE`` transaction, states computed, retention
pruned). The runs are synthetic but shaped like real ones: per connection type 16 checks
(15 tier checks and one latency check), their reasons as the checks word them (latency and
mailbox reasons carry this run's figure, so they differ from run to run), 12 phase timings
that change every run, and facts (certificate, capabilities, greeting, mailbox) that stay
the same (as they do between real runs) except the mailbox count of every tenth connection
type, which changes every run. One connection type in twenty fails its login.

Columns: median and p95 wall time of ``record_run`` (open, write, prune, close) over the
runs after the first (the first creates the schema), and the growth per run: the file's
size after the last run minus after the first, divided by the runs between (the WAL is
checkpointed before each size is read). The extrapolation multiplies the growth per run
by 90 days × 288 runs a day = 25 920 runs (with retention at 90 days that is also where
the size levels off).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from pop3mon.checks.facts import Facts
from pop3mon.config import HistorySettings
from pop3mon.history.record import record_run
from pop3mon.history.store import CheckRow, CtRow, RunRow
from pop3mon.verdict import Verdict

CHECKS = (
    ("connectivity", "dns", "resolved mail{n}.example.net to 192.0.2.{m} in 2 ms"),
    ("connectivity", "tcp", "connected to 192.0.2.{m} port 995 in 1 ms"),
    ("connectivity", "greeting", "+OK greeting in 3 ms"),
    ("connectivity", "capa", "CAPA: SASL PLAIN SCRAM-SHA-256, UIDL, TOP, PIPELINING"),
    ("tls", "handshake", "TLSv1.3 TLS_AES_256_GCM_SHA384 in 12 ms"),
    ("tls", "certificate", "valid for mail{n}.example.net, issued by Lab CA"),
    ("tls", "expiry", "certificate valid for 88.41 more days"),
    ("tls", "protocol", "TLSv1.3 (minimum TLSv1.2)"),
    ("auth", "login", "login as monitor with SCRAM-SHA-256 in {ms} ms"),
    ("auth", "policy", "no cleartext password offered before TLS"),
    ("mailbox", "stat", "STAT: {count} messages, {size} bytes"),
    ("mailbox", "thresholds", "{count} messages below 5000, {size} bytes below 1 GB"),
    ("mailbox", "logout", "QUIT acknowledged in 1 ms"),
    ("connectivity", "ping", "skipped: ping is off"),
    ("mailbox", "uidl", "skipped: collect_uidl is off"),
    ("latency", "latency-total", "total {ms} ms below 2000 ms"),
)
PHASES = (
    "dns",
    "connect",
    "tls",
    "greeting",
    "capa",
    "auth",
    "stat",
    "quit",
    "capa_tls",
    "stls",
    "tls_handshake",
    "total",
)


def _facts(n: int, run: int) -> Facts:
    return Facts(
        cert_sha256=f"{n:064x}",
        cert_subject=f"CN=mail{n}.example.net",
        cert_issuer="CN=Lab CA,O=pop3mon lab",
        cert_sans=(f"mail{n}.example.net", f"pop{n}.example.net"),
        cert_not_after="2027-03-01T00:00:00Z",
        caps_before=(
            "TOP",
            "UIDL",
            "RESP-CODES",
            "PIPELINING",
            "AUTH-RESP-CODE",
            "USER",
            "SASL PLAIN SCRAM-SHA-256",
        ),
        caps_after=None,
        apop_timestamp=False,
        greeting="+OK Dovecot ready.",
        login_ok=n % 20 != 0,
        login_code="AUTH" if n % 20 == 0 else "",
        mailbox_count=(17 + run) if n % 10 == 0 else 17,
        mailbox_size=123456,
    )


def _run_rows(size: int, run: int, rng: random.Random) -> tuple[list[CtRow], list[CheckRow]]:
    cts: list[CtRow] = []
    checks: list[CheckRow] = []
    for n in range(size):
        ct = f"server{n // 4}-{('pop3s', 'starttls', 'plain', 'apop')[n % 4]}"
        failing = n % 20 == 0
        ms = rng.randint(20, 400)
        for tier, name, reason in CHECKS:
            verdict = Verdict.OK
            if failing and name == "login":
                verdict, reason = Verdict.CRIT, "login refused: -ERR [AUTH] Authentication failed."
            elif failing and tier == "mailbox":
                verdict, reason = Verdict.SKIP, "skipped: auth/login failed"
            elif "skipped" in reason:
                verdict = Verdict.SKIP
            text = reason.format(n=n, m=n % 250, ms=ms, count=17 + run, size=123456 + run)
            checks.append(CheckRow(ct, name, tier, verdict, text, float(ms), "ms"))
        phases = {p: round(rng.uniform(0.0005, 0.05), 6) for p in PHASES}
        worst = Verdict.CRIT if failing else Verdict.OK
        cts.append(CtRow(ct, worst, phases, _facts(n, run), peer=f"192.0.2.{n % 250}:995"))
    return cts, checks


def _size(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return path.stat().st_size + sum(
        p.stat().st_size for p in path.parent.glob(path.name + "-*") if p.exists()
    )


def prefill(path: Path, size: int, days: float, end: float) -> None:
    """``days`` of 5-minute runs of ``size`` connection types before ``end``, written
    straight into the tables (recording them one by one would take hours)."""
    from pop3mon.history.store import HistoryStore

    rng = random.Random(days)
    names = [f"server{n // 4}-{('pop3s', 'starttls', 'plain', 'apop')[n % 4]}" for n in range(size)]
    count = int(days * 288)
    with HistoryStore.open(path) as store:
        db = store.db
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO runs (id, run_id, started, finished, host, targets_name, "
            "targets_sha256, version) VALUES (?, ?, ?, ?, 'bench', 'targets.yaml', ?, 'bench')",
            [
                (
                    i + 1,
                    f"pre-{i}",
                    end - (count - i) * 300.0,
                    end - (count - i) * 300.0 + 5,
                    "0" * 64,
                )
                for i in range(count)
            ],
        )
        db.executemany(
            "INSERT INTO cts (run, ct, worst, changed, flapping, peer, phases, facts) "
            "VALUES (?, ?, ?, 0, 0, '192.0.2.1:995', ?, NULL)",
            (
                (
                    i + 1,
                    ct,
                    "CRIT" if n % 20 == 0 else "OK",
                    f'{{"total":{rng.uniform(20, 400):.2f}}}',
                )
                for i in range(count)
                for n, ct in enumerate(names)
            ),
        )
        rebuild = getattr(store, "rebuild_hourly", None)
        if rebuild is not None:  # a schema with hourly counters derives them from cts
            rebuild()
        db.execute("COMMIT")


def measure(size: int, runs: int, prefill_days: float = 0.0) -> dict[str, float]:
    rng = random.Random(size)
    with tempfile.TemporaryDirectory(prefix="pop3mon-hist-") as tmp:
        path = Path(tmp) / "history.sqlite"
        times: list[float] = []
        first_size = 0
        start = time.time() - runs * 300.0
        if prefill_days:
            prefill(path, size, prefill_days, start)
        for run in range(runs):
            cts, checks = _run_rows(size, run, rng)
            row = RunRow(
                f"run-{run}",
                start + run * 300.0,
                start + run * 300.0 + 5,
                "targets.yaml",
                "0" * 64,
                "bench",
            )
            confirm = {c.ct: 1 for c in cts}
            t0 = time.perf_counter()
            out = record_run(path, HistorySettings(), row, cts, checks, confirm)
            times.append(time.perf_counter() - t0)
            assert out.ok, out.note
            if run == 0:
                first_size = _size(path)
        last = _size(path)
    later = sorted(times[1:])
    growth = (last - first_size) / max(1, runs - 1)
    return {
        "connection_types": size,
        "runs": runs,
        "prefill_days": prefill_days,
        "first_run_ms": times[0] * 1000,
        "median_ms": statistics.median(later) * 1000,
        "p95_ms": later[min(len(later) - 1, int(len(later) * 0.95))] * 1000,
        "growth_per_run_bytes": growth,
        "size_after_runs_bytes": last,
        "extrapolated_90d_5min_bytes": first_size + growth * 25920,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--sizes", default="1,100,1000")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--prefill-days",
        type=float,
        default=0.0,
        help="fill each file with this many days of 5-minute runs first (e.g. 30)",
    )
    args = parser.parse_args()
    print(
        f"# history_cost {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, nproc {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.2f}, prefilled days {args.prefill_days:g}"
    )
    print()
    print(
        "| connection types | checks/run | first run ms | write ms median | p95 | "
        "growth/run | 90 d × 288 runs/day |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, args.runs, args.prefill_days)
        results.append(r)
        print(
            f"| {size} | {size * len(CHECKS)} | {r['first_run_ms']:.1f} | {r['median_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {r['growth_per_run_bytes'] / 1024:.1f} KiB | "
            f"{r['extrapolated_90d_5min_bytes'] / 2**30:.2f} GiB |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
