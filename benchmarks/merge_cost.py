"""What ``pop3mon merge`` costs: 1,000 connection types in 10 shards into one report set.

One real run of the suite (all tiers, all reports) probes ``--size`` connection types on
``--servers`` servers of the lab's Dovecot (each server its own host check); its
``results.json`` is then cut into ``--shards`` shard files exactly as ``--shard=K/N`` would
have split the targets (``config/shard.py``'s ``shard_of`` of each server, all in one run
id), and ``pop3mon merge`` runs on them as a process, ``--repeat`` times. Figures (median):

* wall: from spawning ``python -m pop3mon.cli merge`` until it exited;
* CPU: user + sys of that process (``os.wait4``);
* peak RSS: its ``ru_maxrss``;
* the merged reports' sizes, and whether the merged results.json has the unsharded run's
  connection types, verdicts and reasons (it must).

    python benchmarks/merge_cost.py [--size 1000] [--servers 100] [--shards 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import REPO, lab, print_machine
from pop3mon.config.shard import shard_of

PASSWORD_ENV = "POP3MON_BENCH_PASSWORD"


def targets_yaml(size: int, servers: int, running: Any) -> str:
    """``size`` connection types (implicit TLS and STLS, logging in) on ``servers``."""
    lines = [
        "version: 1",
        "defaults:",
        "  timeout: 20",
        "  login_pacing: parallel",
        f"  ca_file: {running.ca_file}",
        f"  account: {{username: {running.demo_user}, password_env: {PASSWORD_ENV}}}",
        "servers:",
    ]
    per = size // servers
    for s in range(servers):
        lines += [
            f"  - name: mail{s:03d}",
            f"    host: {running.hostname}",
            "    address: 127.0.0.1",
            "    connections:",
        ]
        for i in range(per):
            tls = i % 2 == 0
            lines += [
                f"      - id: mail{s:03d}-ct{i:02d}",
                f"        port: {running.port('pop3s' if tls else 'pop3')}",
                f"        security: {'tls' if tls else 'starttls'}",
            ]
    return "\n".join(lines) + "\n"


def split(doc: dict[str, Any], shards: int, run_id: str, out: Path) -> list[Path]:
    """``doc`` cut into the shard files ``--shard=K/shards`` would have written (no
    ``depends_on`` here: a server is its own group)."""
    paths = []
    for k in range(1, shards + 1):
        part = json.loads(json.dumps(doc))
        part["connections"] = [c for c in doc["connections"] if shard_of(c["server"], shards) == k]
        part["hosts"] = [h for h in doc["hosts"] if shard_of(h["host"]["name"], shards) == k]
        ids = sorted(c["id"] for c in part["connections"])
        part["run"].update(id=run_id, shard={"index": k, "total": shards}, connection_ids=ids)
        path = out / f"shard-{k}" / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(part, sort_keys=True), encoding="utf-8")
        paths.append(path)
    return paths


def facts(doc: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str]]:
    return {
        (c["id"], k["check"]): (k["verdict"], k["reason"])
        for c in doc["connections"]
        for k in c["checks"]
    }


def timed(argv: list[str]) -> tuple[float, float, int]:
    """(wall s, CPU s, peak RSS KiB) of one process."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    assert os.waitstatus_to_exitcode(status) == 0, argv
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print("# merge cost: one run's results cut into shards, merged by pop3mon merge\n")
    print_machine({"command": "python benchmarks/merge_cost.py " + " ".join(argv or sys.argv[1:])})
    with lab() as running, tempfile.TemporaryDirectory(prefix="pop3mon-merge-") as tdir:
        work = Path(tdir)
        targets = work / "targets.yaml"
        targets.write_text(targets_yaml(args.size, args.servers, running), encoding="utf-8")
        env = {**os.environ, PASSWORD_ENV: running.demo_password}
        env.pop("PYTEST_ADDOPTS", None)
        subprocess.run(
            [sys.executable, "-m", "pytest", f"--targets={targets}",
             f"--reports-dir={work / 'whole'}", "--no-history", "-p", "no:cacheprovider", "-q"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        whole = json.loads((work / "whole" / "results.json").read_text("utf-8"))
        split(whole, args.shards, "bench-run", work / "shards")
        figures = []
        for i in range(args.repeat):
            out = work / f"merged-{i}"
            cmd = [sys.executable, "-m", "pop3mon.cli", "merge", f"--out={out}"]
            figures.append(timed([*cmd, f"--expect-shards={args.shards}", str(work / "shards")]))
        merged = json.loads((work / "merged-0" / "results.json").read_text("utf-8"))
        same = facts(merged) == facts(whole)
        sizes = {p.name: p.stat().st_size for p in sorted((work / "merged-0").iterdir())}
    wall = statistics.median(f[0] for f in figures)
    cpu = statistics.median(f[1] for f in figures)
    rss = statistics.median(f[2] for f in figures) / 1024
    print(f"connection types: {len(whole['connections'])} on {args.servers} servers, "
          f"{args.shards} shards")  # fmt: skip
    print(f"merge: wall {wall:.2f} s, CPU {cpu:.2f} s, peak RSS {rss:.0f} MB "
          f"(median of {args.repeat})")  # fmt: skip
    print("merged reports: " + ", ".join(f"{n} {s / 1e6:.1f} MB" for n, s in sizes.items()))
    print(f"merged verdicts and reasons equal the unsharded run's: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
