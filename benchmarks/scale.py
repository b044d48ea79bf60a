"""The whole suite at 1, 10, 100 and 1000 connection types behind a 20 ms link.

For each size a targets file is generated (explicit unique ``id:``s; the connection types
cycle through the four modes of :mod:`_common` and share two proxy ports), then the suite runs
exactly as a user runs it, all tiers and all report writers on::

    python -m pytest --targets=FILE --reports-dir=TMP -o cache_dir=TMP/cache [-n 2]
                     [--probe-concurrency=N]

from the repository root, once without and once with ``-n 2``. Figures per run:

* wall: from spawning pytest until it exited;
* CPU: user + sys of pytest and everything it waited for (``os.wait4`` of the child, so the
  xdist workers count, Dovecot and the proxy do not);
* peak RSS: ``ru_maxrss`` of that rusage, which is the *largest single process* (the kernel
  keeps the maximum, not a sum); with ``-n 2`` every process's own peak comes from the
  benchmark plugin ``_runstats`` (controller / gw0 / gw1);
* stages of the controller (from ``_runstats``): start-up, collection, the probe batch,
  the test loop, report writing, exit;
* ratio: wall / the slowest single probe's ``total`` (from results.json), i.e. how many
  "slowest probes" the run costs on top of probing;
* the floor (``--floor --probes-alone``): a pytest session that runs one empty test with a
  monitoring run's plugins, plus the probe batch alone. No pytest suite that probes these
  targets on this machine can go under it; ``wall - floor`` is the suite's own cost. Beside
  it, a session of as many empty tests as the suite ran: what pytest's own protocol costs
  per test (pop3mon's lean protocol costs less).

Dovecot gets ``mail_max_userip_connections = 5000`` (all probes log in as one user from one
IP), stores the password as SCRAM-SHA-256 credentials (``--password-scheme``; what a server
offering SCRAM stores in production: with ``PLAIN`` it derives a freshly salted PBKDF2 key
for every SCRAM login on its one auth process) and has its stock passdb chain (no login
fails here; the lab's fast-failure passdb would add a PBKDF2 per SCRAM login). The proxy
runs in a child process (``latency_proxy.spawn_proxies``) without spin.

    python benchmarks/scale.py [--sizes 1 10 100 1000] [--repeat 3] [--probe-concurrency 64]

Sharded (issue 14): ``--shards 10 --sizes 10000`` spreads the connection types over many
servers (``--cts-per-server``, default 10: 1,000 servers for 10,000), runs the suite as 10
shard processes (``--shard=K/10``, one run id) one after another and 2 at a time
(``--parallel 1 2``), then ``pop3mon merge --out=DIR`` over the shards' report
directories, and reports each schedule's total CPU (all shards), its wall, the slowest
shard's wall, the balance (connection types per shard), the merge's wall and CPU and the
merged reports' sizes::

    python benchmarks/scale.py --shards 10 --sizes 10000 [--parallel 1 2]
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from _common import MODES, REPO, DovecotLab, fmt, lab, print_machine, print_table
from latency_proxy import spawn_proxies
from pop3mon.config import load_targets
from pop3mon.config.shard import select_shard
from pop3mon.engine.runner import run_probes

from pop3mon_lab.dovecot import PasswordScheme

PASSWORD_ENV = "POP3MON_BENCH_PASSWORD"
BENCH_DIR = Path(__file__).resolve().parent


def targets_yaml(size: int, running: DovecotLab, ports: dict[str, int], mechanism: str) -> str:
    """A targets file with ``size`` connection types cycling through the four modes."""
    lines = [
        f"# pop3mon scale benchmark: {size} connection types behind the latency proxy",
        "version: 1",
        "defaults:",
        "  timeout: 20",
        # One server, one account, 1,000 logins: taking turns would serialize them all, and
        # the lab's Dovecot neither penalizes refusals nor locks mailboxes.
        "  login_pacing: parallel",
        f"  ca_file: {running.ca_file}",
        f"  account: {{username: {running.demo_user}, password_env: {PASSWORD_ENV}}}",
        "servers:",
        "  - name: bench",
        f"    host: {running.hostname}",
        "    address: 127.0.0.1",
        "    connections:",
    ]
    for i in range(size):
        mode = MODES[i % len(MODES)]
        auth = mode.auth.replace("{mech}", mechanism)
        lines += [
            f"      - id: ct{i:04d}-{mode.security}-{auth}",
            f"        port: {ports[mode.listener]}",
            f"        security: {mode.security}",
            f"        auth: {auth}",
        ]
    return "\n".join(lines) + "\n"


def sharded_targets_yaml(
    size: int, per_server: int, running: DovecotLab, ports: dict[str, int], mechanism: str
) -> str:
    """``size`` connection types, ``per_server`` to a server name (all of them the lab
    through the proxy ports), so that the split by server group has many units; each
    server with two or more gets its host check, as in a real fleet."""
    lines = [
        f"# pop3mon sharded scale benchmark: {size} connection types, {per_server} a server",
        "version: 1",
        "defaults:",
        "  timeout: 20",
        "  login_pacing: parallel",
        f"  ca_file: {running.ca_file}",
        f"  account: {{username: {running.demo_user}, password_env: {PASSWORD_ENV}}}",
        "servers:",
    ]
    for i in range(size):
        if i % per_server == 0:
            lines += [
                f"  - name: srv{i // per_server:05d}",
                f"    host: {running.hostname}",
                "    address: 127.0.0.1",
                "    connections:",
            ]
        mode = MODES[i % len(MODES)]
        auth = mode.auth.replace("{mech}", mechanism)
        # One flow mapping a line: 10,000 of them must stay under the 1 MiB file limit.
        lines.append(
            f"      - {{id: c{i:05d}, port: {ports[mode.listener]}, "
            f"security: {mode.security}, auth: {auth}}}"
        )
    return "\n".join(lines) + "\n"


@dataclass
class Run:
    """One pytest run's figures."""

    tree: str
    size: int
    xdist: bool
    wall: float
    cpu: float
    maxrss_mb: float
    rc: int
    summary: str
    slowest_probe: float | None
    html_bytes: int | None = None
    processes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def controller(self) -> dict[str, Any]:
        """The controller's _runstats record (empty if missing)."""
        for proc in self.processes:
            if proc.get("role") == "controller":
                return proc
        return {}

    def stage(self, start: str, end: str) -> float | None:
        """Controller wall seconds between two _runstats marks."""
        marks = self.controller.get("marks", {})
        if start not in marks or end not in marks:
            return None
        return float(marks[end]["wall"]) - float(marks[start]["wall"])


def _slowest(results_json: Path) -> float | None:
    try:
        doc = json.loads(results_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    totals = []
    for conn in doc.get("connections", []):
        probe = conn.get("probe") or {}
        for name, seconds in probe.get("phases", []):
            if name == "total":
                totals.append(float(seconds))
    return max(totals) if totals else None


def run_suite(
    repo: Path,
    targets: Path,
    size: int,
    xdist: bool,
    concurrency: int,
    password: str,
    keep: Path | None,
    extra: Sequence[str] = (),
    compiled: bool = False,
) -> Run:
    """Run the suite once as a child; measure it with wait4. ``compiled``: Python may
    write and reuse bytecode (as an installed package has it), whatever
    ``PYTHONDONTWRITEBYTECODE`` says here."""
    work = Path(tempfile.mkdtemp(prefix="pop3mon-scale-"))
    try:
        stats = work / "runstats"
        stats.mkdir()
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            f"--targets={targets}",
            f"--reports-dir={work / 'reports'}",
            f"--probe-concurrency={concurrency}",
            "-o",
            f"cache_dir={work / 'cache'}",
            "-p",
            "_runstats",
        ]
        if xdist:
            cmd += ["-n", "2"]
        cmd += list(extra)
        env = dict(os.environ)
        if compiled:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        env[PASSWORD_ENV] = password
        env["POP3MON_RUNSTATS_DIR"] = str(stats)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p
        )
        log = work / "pytest.log"
        with log.open("wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
            _pid, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        # pytest's "N passed, M skipped in T s" line (the history's lines may follow it).
        finals = [
            line for line in text if " in " in line and ("passed" in line or "failed" in line)
        ]
        summary = finals[-1].strip("= ") if finals else (text[-1].strip("= ") if text else "")
        processes = [json.loads(p.read_text()) for p in sorted(stats.glob("*.json"))]
        page = work / "reports" / "report.html"
        html_bytes = page.stat().st_size if page.exists() else None
        if keep is not None:
            suffix = f"{size}{'-n2' if xdist else ''}"
            shutil.copy(log, keep / f"pytest-{suffix}.log")
            if page.exists():
                shutil.copy(page, keep / f"report-{suffix}.html")
        return Run(
            tree=str(repo),
            size=size,
            xdist=xdist,
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            maxrss_mb=usage.ru_maxrss / 1024,
            rc=proc.returncode,
            summary=summary,
            slowest_probe=_slowest(work / "reports" / "results.json"),
            html_bytes=html_bytes,
            processes=processes,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pick(runs: list[Run]) -> Run:
    """The median run by wall time (the one reported in full)."""
    ordered = sorted(runs, key=lambda r: r.wall)
    return ordered[len(ordered) // 2]


def main(argv: Sequence[str] | None = None) -> int:
    """Generate targets, start Dovecot and the proxy, run the suite at every size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per size and mode (median)")
    parser.add_argument(
        "--repeat-large",
        type=int,
        default=1,
        help="runs per mode for sizes >= 1000 (default 1)",
    )
    parser.add_argument("--probe-concurrency", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.02, help="one-way delay (s)")
    parser.add_argument("--mechanism", default="auto", help="login mechanism (default auto)")
    parser.add_argument(
        "--password-scheme",
        choices=get_args(PasswordScheme),
        default="SCRAM-SHA-256",
        help="how the lab's Dovecot stores the password (default SCRAM-SHA-256, as a server "
        "offering SCRAM in production does; PLAIN makes Dovecot derive a freshly salted "
        "PBKDF2 key for every SCRAM login)",
    )
    parser.add_argument("--no-xdist", action="store_true", help="skip the -n 2 runs")
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="copy pytest logs and report.html here"
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="ARG",
        help="extra pytest argument for what-if runs (repeat; e.g. --extra=--no-reports)",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=0,
        metavar="N",
        help="run each size as N shard processes and merge them (see the docstring)",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        nargs="+",
        default=[1, 2],
        help="with --shards: shard processes at once, one schedule per value (default 1 2)",
    )
    parser.add_argument(
        "--cts-per-server",
        type=int,
        default=10,
        help="with --shards: connection types per server name (default 10)",
    )
    parser.add_argument(
        "--probes-alone",
        action="store_true",
        help="also time the probe batch alone per size (the engine, no pytest): the floor",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time a pytest session that runs one empty test with a monitoring run's "
        "plugins (this checkout's pytest.ini addopts): with --probes-alone, the floor under "
        "any pytest suite that probes these targets on this machine",
    )
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="measure a warmed installation: the runs write and reuse bytecode (this "
        "sandbox sets PYTHONDONTWRITEBYTECODE=1, which recompiles pop3mon at every start; one "
        "unmeasured run per tree first writes it) and find the targets file in the targets "
        "cache (one unmeasured --collect-only per tree and size fills it)",
    )
    parser.add_argument(
        "--repo",
        type=Path,
        action="append",
        default=[],
        help="checkout to run the suite from (default: this one); repeat to A/B two trees, "
        "runs interleaved, the order of each pair alternating",
    )
    args = parser.parse_args(argv)
    if args.password_scheme != "PLAIN" and args.mechanism in ("apop", "cram-md5", "scram-sha-1"):
        # Those need the clear password (or SHA-1 SCRAM credentials) on the server.
        parser.error(f"--mechanism {args.mechanism} needs --password-scheme PLAIN")

    print("# scale: the whole suite behind a latency proxy\n")
    print_machine(
        {
            "command": "python benchmarks/scale.py " + " ".join(argv or sys.argv[1:]),
            "delay": f"{args.delay * 1000:g} ms each way",
            "probe concurrency": str(args.probe_concurrency),
            "mechanism": args.mechanism,
            "password scheme": args.password_scheme,
            "bytecode": "written and reused (--compiled)"
            if args.compiled
            else "as the environment says",
        }
    )
    if args.keep_logs is not None:
        args.keep_logs.mkdir(parents=True, exist_ok=True)
    repos = [p.resolve() for p in args.repo] or [REPO]
    # The validated-targets cache of every run here (children inherit it): its own, so the
    # figures do not depend on what this machine's ~/.cache holds.
    os.environ["POP3MON_CACHE_DIR"] = tempfile.mkdtemp(prefix="pop3mon-scale-cache-")
    if args.shards:
        return sharded_main(args, repos[0])
    runs: list[Run] = []
    alone: list[tuple[int, float, float]] = []
    empty = empty_session(repos[0], max(args.repeat, 5)) if args.floor else None
    if empty is not None:
        print(f"empty pytest session: {empty:.2f} s wall (median)", flush=True)
    with (
        # No login fails here: Dovecot's stock passdb chain, as in production (the lab's
        # fast-failure passdb would add a PBKDF2 per SCRAM login on Dovecot's side).
        lab(args.password_scheme, fast_auth_failures=False) as running,
        tempfile.TemporaryDirectory(prefix="pop3mon-scale-t-") as tdir,
    ):
        upstreams = [("127.0.0.1", running.port("pop3")), ("127.0.0.1", running.port("pop3s"))]
        with spawn_proxies(upstreams, args.delay) as proxy_ports:
            ports = {"pop3": proxy_ports[0], "pop3s": proxy_ports[1]}
            if args.compiled:  # write every tree's bytecode, unmeasured
                warm = Path(tdir) / "targets-warm.yaml"
                warm.write_text(targets_yaml(1, running, ports, args.mechanism), "utf-8")
                for repo in repos:
                    run_suite(
                        repo,
                        warm,
                        1,
                        False,
                        args.probe_concurrency,
                        running.demo_password,
                        None,
                        args.extra,
                        compiled=True,
                    )
            for size in args.sizes:
                targets = Path(tdir) / f"targets-{size}.yaml"
                targets.write_text(
                    targets_yaml(size, running, ports, args.mechanism), encoding="utf-8"
                )
                repeat = args.repeat_large if size >= 1000 else args.repeat
                if args.compiled:  # an installation that ran this file before
                    for repo in repos:
                        warm_targets_cache(repo, targets, running.demo_password)
                if args.probes_alone:
                    alone.append((size, *probes_alone(targets, running.demo_password, args)))
                    print(
                        f"size {size:>5} probes alone: {alone[-1][1]:.2f} s wall,"
                        f" {alone[-1][2]:.2f} s CPU; load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
                for xdist in (False, True) if not args.no_xdist else (False,):
                    batches: dict[Path, list[Run]] = {repo: [] for repo in repos}
                    for i in range(repeat):
                        # Interleaved, so every tree sees the same drift, and in turns
                        # (A B, B A, ...): the second run of a pair was seen to be slower.
                        for repo in repos if i % 2 == 0 else repos[::-1]:
                            batches[repo].append(
                                run_suite(
                                    repo,
                                    targets,
                                    size,
                                    xdist,
                                    args.probe_concurrency,
                                    running.demo_password,
                                    args.keep_logs,
                                    args.extra,
                                    compiled=args.compiled,
                                )
                            )
                    for repo, batch in batches.items():
                        chosen = _pick(batch)
                        walls = ", ".join(f"{r.wall:.2f}" for r in batch)
                        cpus = ", ".join(f"{r.cpu:.2f}" for r in batch)
                        print(
                            f"size {size:>5} {'-n 2' if xdist else '    '} {repo}: walls {walls} s;"
                            f" CPU {cpus} s; {chosen.summary} (rc {chosen.rc});"
                            f" load {os.getloadavg()[0]:.2f}",
                            flush=True,
                        )
                        runs.append(chosen)
    print()
    _tables(runs)
    if alone:
        print("\n### the probes alone (the engine's batch, no pytest, no reports)")
        print_table(
            ["connection types", "wall s", "CPU s (this process)"],
            [(size, fmt(wall), fmt(cpu)) for size, wall, cpu in alone],
        )
    if empty is not None and alone:
        _floor_table(runs, alone, empty, repos[0])
    return 0


def empty_session(repo: Path, repeat: int, tests: int = 1) -> float:
    """Median wall seconds of a pytest session that collects and runs ``tests`` empty tests
    with the plugins a monitoring run of ``repo`` has (its pytest.ini ``addopts``, a cache
    directory): what pytest itself costs on this machine and Python environment before a
    suite's own code is imported, and for as many tests as the suite runs."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(repo / "pytest.ini", encoding="utf-8")
    addopts = " ".join(ini.get("pytest", "addopts", fallback="").split())
    with tempfile.TemporaryDirectory(prefix="pop3mon-scale-empty-") as tmp:
        root = Path(tmp)
        (root / "pytest.ini").write_text(f"[pytest]\naddopts = {addopts}\n", encoding="utf-8")
        (root / "test_empty.py").write_text(
            "import pytest\n\n\n"
            f"@pytest.mark.parametrize('n', range({tests}))\n"
            "def test_empty(n):\n    pass\n",
            encoding="utf-8",
        )
        walls = []
        for _ in range(repeat + 1):  # the first one unmeasured: it writes the bytecode
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-o", f"cache_dir={root / 'cache'}"],
                cwd=root,
                env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
            walls.append(time.perf_counter() - start)
    return statistics.median(walls[1:])


def _tests_run(summary: str) -> int:
    """How many tests pytest's summary line ("976 passed, 1025 skipped in 1.35s") counts."""
    return sum(
        int(n)
        for n in re.findall(r"(\d+) (?:passed|failed|skipped|error|xfailed|xpassed)", summary)
    )


def _floor_table(
    runs: list[Run], alone: list[tuple[int, float, float]], empty: float, repo: Path
) -> None:
    """Under each tree's median wall, the floors: an empty pytest session plus the probes
    alone (no pytest suite that probes these targets on this machine goes under it), and a
    session of as many empty tests as the suite ran (pytest's own protocol per test, which
    pop3mon's lean one undercuts: a reference, not a floor)."""
    probes = {size: wall for size, wall, _cpu in alone}
    many: dict[int, float] = {}
    rows = []
    for r in runs:
        if r.size not in probes or r.xdist:
            continue
        tests = _tests_run(r.summary)
        if tests > 1 and tests not in many:
            many[tests] = empty_session(repo, 3, tests)
        floor = empty + probes[r.size]
        rows.append(
            (
                r.size,
                r.tree,
                fmt(floor),
                fmt(r.wall),
                fmt(r.wall - floor),
                f"{tests}: {fmt(many[tests])}" if tests in many else "",
            )
        )
    print(
        f"\n### the floor: an empty pytest session + the probes alone (empty session {empty:.2f} s)"
    )
    print_table(
        [
            "connection types",
            "tree",
            "floor s",
            "wall s",
            "wall - floor s",
            "pytest, as many empty tests: wall s",
        ],
        rows,
    )


def warm_targets_cache(repo: Path, targets: Path, password: str) -> None:
    """Validate ``targets`` once in ``repo`` (``--collect-only``, unmeasured), so that the
    measured runs find it in the targets cache as every run after the first does."""
    env = dict(os.environ)  # as run_suite's: the tree's own pop3mon, its own cache key
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env[PASSWORD_ENV] = password
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p)
    subprocess.run(
        [sys.executable, "-m", "pytest", f"--targets={targets}", "--collect-only", "-q"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


def probes_alone(targets: Path, password: str, args: argparse.Namespace) -> tuple[float, float]:
    """Wall and CPU seconds of probing every connection type of ``targets`` once with
    :func:`run_probes` at the run's concurrency: the floor under a whole run's wall, set by
    the lab (one Dovecot on the same two cores: its auth process derives each SCRAM login's
    key on one core) and the engine, before pytest or any report."""
    os.environ[PASSWORD_ENV] = password
    loaded = load_targets(targets)
    specs = []
    for ct in loaded.connections:
        ct.resolve_secret()
        specs.append(ct.to_probe_spec())
    started, cpu = time.perf_counter(), time.process_time()
    run_probes(specs, concurrency=args.probe_concurrency)
    return time.perf_counter() - started, time.process_time() - cpu


def _tables(runs: list[Run]) -> None:
    trees = sorted({r.tree for r in runs})

    def label(r: Run) -> str:
        return f"{r.size} ({r.tree})" if len(trees) > 1 else str(r.size)

    rows = []
    for r in runs:
        ratio = r.wall / r.slowest_probe if r.slowest_probe else None
        rows.append(
            [
                label(r),
                "-n 2" if r.xdist else "no",
                fmt(r.wall),
                fmt(r.cpu),
                fmt(r.maxrss_mb, 0),
                fmt(r.slowest_probe * 1000 if r.slowest_probe else None, 0),
                fmt(ratio, 1),
                fmt(r.html_bytes / 1e6 if r.html_bytes is not None else None, 2),
                r.summary,
            ]
        )
    print("### whole runs (median by wall of the repeats)")
    print_table(
        [
            "connection types",
            "xdist",
            "wall s",
            "CPU s (user+sys)",
            "peak RSS MB (max single process)",
            "slowest probe ms",
            "wall / slowest probe",
            "report.html MB",
            "pytest summary",
        ],
        rows,
    )
    rows = []
    for r in runs:
        rows.append(
            [
                label(r),
                "-n 2" if r.xdist else "no",
                fmt(r.stage("configure", "collected") if r.controller else None),
                fmt(r.controller.get("probe_batch", {}).get("wall")),
                fmt(r.stage("first_item" if not r.xdist else "configure", "loop_done")),
                fmt(r.controller.get("loop", {}).get("main_thread_cpu")),
                fmt(r.stage("sessionfinish_start", "sessionfinish_done")),
                fmt(r.stage("sessionfinish_done", "exit")),
                fmt(r.controller.get("marks", {}).get("configure", {}).get("wall")),
            ]
        )
    print(
        "### controller stages, wall seconds (probe batch: the slowest test, which waited for it;"
        " with -n 2 the controller neither collects nor probes: its loop is configure → done)"
    )
    print_table(
        [
            "connection types",
            "xdist",
            "collection",
            "probe batch",
            "test loop (incl. probe batch)",
            "loop: main thread CPU",
            "sessionfinish (reports)",
            "unconfigure + exit",
            "start-up to configure",
        ],
        rows,
    )
    rows = []
    for r in runs:
        for proc in r.processes:
            rows.append(
                [
                    label(r),
                    "-n 2" if r.xdist else "no",
                    str(proc.get("role", "?")),
                    fmt(proc.get("utime", 0) + proc.get("stime", 0)),
                    fmt(proc.get("maxrss_kb", 0) / 1024, 0),
                ]
            )
    print("### per process (from _runstats)")
    print_table(["connection types", "xdist", "process", "CPU s", "peak RSS MB"], rows)


# ---------------------------------------------------------------------------------------
# Sharded runs and the merge (issue 14)
# ---------------------------------------------------------------------------------------


@dataclass
class ShardRun:
    """One shard process: its figures and where its reports are."""

    index: int
    wall: float
    cpu: float
    maxrss_mb: float
    rc: int
    summary: str
    reports: Path


@dataclass
class Schedule:
    """The N shards of one size run ``parallel`` at a time, then merged."""

    size: int
    parallel: int
    wall: float
    shards: list[ShardRun]
    merge_wall: float | None
    merge_cpu: float | None
    merge_rc: int | None
    merge_note: str
    merged_bytes: dict[str, int]


def _env(password: str) -> dict[str, str]:
    env = dict(os.environ)
    env[PASSWORD_ENV] = password
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(BENCH_DIR), str(REPO / "plugins"), env.get("PYTHONPATH", "")) if p
    )
    return env


def _measured(
    cmd: Sequence[str], cwd: Path, env: dict[str, str], log: Path
) -> tuple[float, Any, int]:
    """Run ``cmd`` as a child; (wall, its rusage from wait4, exit code)."""
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        # wait4 on this pid only: other shards (and the proxy) are children too.
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    return wall, usage, os.waitstatus_to_exitcode(status)


def run_shard(
    repo: Path,
    targets: Path,
    index: int,
    total: int,
    work: Path,
    args: argparse.Namespace,
    password: str,
) -> ShardRun:
    """Shard ``index`` of ``total`` as a user's shard job runs it."""
    reports = work / f"shard-{index:02d}"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        f"--targets={targets}",
        f"--reports-dir={reports}",
        f"--probe-concurrency={args.probe_concurrency}",
        f"--shard={index}/{total}",
        "--run-id=bench-shards",
        "--no-history",
        "-o",
        f"cache_dir={work / f'cache-{index}'}",
        *args.extra,
    ]
    log = work / f"shard-{index:02d}.log"
    wall, usage, rc = _measured(cmd, repo, _env(password), log)
    lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    finals = [ln for ln in lines if ln.startswith("=") and (" in " in ln or "no tests" in ln)]
    return ShardRun(
        index=index,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024,
        rc=rc,
        summary=(finals[-1] if finals else (lines[-1] if lines else "")).strip("= "),
        reports=reports,
    )


def run_schedule(
    repo: Path, targets: Path, size: int, args: argparse.Namespace, parallel: int, password: str
) -> Schedule:
    """All shards, ``parallel`` at a time, then ``pop3mon merge`` over their directories."""
    from concurrent.futures import ThreadPoolExecutor

    total = args.shards
    work = Path(tempfile.mkdtemp(prefix="pop3mon-shards-"))
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            shards = list(
                pool.map(
                    lambda k: run_shard(repo, targets, k, total, work, args, password),
                    range(1, total + 1),
                )
            )
        wall = time.perf_counter() - start
        out = work / "merged"
        cmd = [
            sys.executable,
            "-m",
            "pop3mon.cli",
            "merge",
            f"--out={out}",
            f"--expect-shards={total}",
            *(str(s.reports) for s in shards),
        ]
        log = work / "merge.log"
        merge_wall, usage, merge_rc = _measured(cmd, repo, _env(password), log)
        note = log.read_text(encoding="utf-8", errors="replace").strip()
        sizes = {
            name: (out / name).stat().st_size
            for name in ("report.html", "junit.xml", "results.json", "metrics.prom")
            if (out / name).exists()
        }
        if args.keep_logs is not None:
            for path in (*work.glob("*.log"),):
                shutil.copy(path, args.keep_logs / f"{size}-p{parallel}-{path.name}")
        return Schedule(
            size=size,
            parallel=parallel,
            wall=wall,
            shards=shards,
            merge_wall=merge_wall,
            merge_cpu=usage.ru_utime + usage.ru_stime,
            merge_rc=merge_rc,
            merge_note=note.splitlines()[-1] if note else "",
            merged_bytes=sizes,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sharded_main(args: argparse.Namespace, repo: Path) -> int:
    """``--shards N``: every size as N shards under each ``--parallel`` schedule."""
    schedules: list[Schedule] = []
    balance: list[list[str]] = []
    with (
        # No login fails here: Dovecot's stock passdb chain, as in production (the lab's
        # fast-failure passdb would add a PBKDF2 per SCRAM login on Dovecot's side).
        lab(args.password_scheme, fast_auth_failures=False) as running,
        tempfile.TemporaryDirectory(prefix="pop3mon-scale-t-") as tdir,
    ):
        upstreams = [("127.0.0.1", running.port("pop3")), ("127.0.0.1", running.port("pop3s"))]
        with spawn_proxies(upstreams, args.delay) as proxy_ports:
            ports = {"pop3": proxy_ports[0], "pop3s": proxy_ports[1]}
            for size in args.sizes:
                targets = Path(tdir) / f"targets-{size}.yaml"
                targets.write_text(
                    sharded_targets_yaml(size, args.cts_per_server, running, ports, args.mechanism),
                    encoding="utf-8",
                )
                loaded = load_targets(targets)
                counts = [
                    len(select_shard(loaded, (k, args.shards)).connections)
                    for k in range(1, args.shards + 1)
                ]
                mean = size / args.shards
                balance.append(
                    [
                        str(size),
                        str(args.shards),
                        str(-(-size // args.cts_per_server)),
                        " ".join(map(str, counts)),
                        str(min(counts)),
                        str(max(counts)),
                        fmt(max(counts) / mean if mean else None, 2),
                    ]
                )
                for parallel in args.parallel:
                    sched = run_schedule(repo, targets, size, args, parallel, running.demo_password)
                    print(
                        f"size {size} in {args.shards} shards, {parallel} at a time: "
                        f"wall {sched.wall:.1f} s; CPU {sum(s.cpu for s in sched.shards):.1f} s; "
                        f"merge rc {sched.merge_rc}: {sched.merge_note}; "
                        f"load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
                    schedules.append(sched)
    print()
    print("### balance (connection types per shard; split by server group)")
    print_table(
        ["connection types", "shards", "servers", "per shard", "min", "max", "max / mean"],
        balance,
    )
    rows = []
    for sc in schedules:
        slowest = max(sc.shards, key=lambda s: s.wall)
        rows.append(
            [
                str(sc.size),
                str(sc.parallel),
                fmt(sc.wall),
                fmt(sum(s.cpu for s in sc.shards)),
                f"{fmt(slowest.wall)} (shard {slowest.index})",
                fmt(max(s.maxrss_mb for s in sc.shards), 0),
                fmt(sc.merge_wall),
                fmt(sc.merge_cpu),
                str(sc.merge_rc),
                ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sc.merged_bytes.items()) or "-",
            ]
        )
    print("### sharded runs + merge")
    print_table(
        [
            "connection types",
            "shards at once",
            "all shards wall s",
            "total CPU s (all shards)",
            "slowest shard wall s",
            "peak RSS MB (largest shard)",
            "merge wall s",
            "merge CPU s",
            "merge rc",
            "merged reports",
        ],
        rows,
    )
    rows = [
        [
            str(sc.size),
            str(sc.parallel),
            str(s.index),
            fmt(s.wall),
            fmt(s.cpu),
            fmt(s.maxrss_mb, 0),
            f"{s.summary} (rc {s.rc})",
        ]
        for sc in schedules
        for s in sc.shards
    ]
    print("### per shard")
    print_table(
        [
            "connection types",
            "shards at once",
            "shard",
            "wall s",
            "CPU s",
            "peak RSS MB",
            "pytest summary",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
