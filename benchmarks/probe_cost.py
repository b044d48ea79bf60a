#!/usr/bin/env python3
"""What one probe costs: wall time and CPU per probe against a local Dovecot lab.

Usage::

    python3 benchmarks/probe_cost.py [--n 200] [--concurrency 16] [--warmup 5] [--json FILE]

The script starts its own :class:`DovecotLab` (one Dovecot 2.3 on 127.0.0.1, certificate
variant ``valid``), then runs ``n`` probes of each case one after the other, and, unless
``--concurrency 0``, ``n`` more through :func:`run_probes` with that many at a time. Cases:

=================  ============================================================
plain banner       mode ``none``, auth ``none``: TCP, greeting, CAPA, QUIT
STLS + SCRAM       mode ``starttls``, ``scram-sha-256`` (PBKDF2 on the client)
STLS + USER        mode ``starttls``, ``user`` (USER/PASS inside TLS)
TLS + SCRAM        mode ``tls`` (implicit, pop3s), ``scram-sha-256``
TLS + USER         mode ``tls``, ``user``
TLS banner         mode ``tls``, auth ``none``: handshake, greeting, CAPA, QUIT
=================  ============================================================

Every probe uses ``host="localhost"`` (so a DNS lookup runs, as it would in production) and
verifies the certificate against the lab CA. Columns:

* ``wall`` mean / median / p95: the probe's own ``total`` phase, in milliseconds;
* ``thread CPU``: mean :attr:`ProbeResult.cpu_seconds`, the CPU of the probing thread;
* ``process CPU``: :func:`time.process_time` around the whole batch divided by ``n``; it also
  counts helper threads (DNS lookups, the thread pool) but not Dovecot, which is another
  process;
* ``server CPU``: CPU the lab's Dovecot processes used during the batch divided by ``n``
  (``/proc``: user + system time of every live process in the lab's process groups plus what
  the masters collected from session processes that exited; 10 ms clock-tick resolution,
  so meaningful over a batch, not for one probe);
* ``probes/s``: ``n`` divided by the batch's wall-clock time.

A second table splits the sequential runs into phases (median milliseconds), which shows
where the time goes: on loopback nearly all of a login's wall time is Dovecot authenticating
and starting the session process, not the engine.

Warm-up probes (``--warmup`` per case, not measured) load the trust store into the cached
TLS context and let Dovecot start its processes, so the table shows the steady state.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# _common also puts the repository and plugins/ on sys.path, which the import below needs.
from _common import DovecotLab, ProbeResult, ProbeSpec, Secret, probe, run_probes

from pop3mon_lab.dovecot import LabError

# The lab already allows 2000 sessions per user and IP; say it here too so this script keeps
# working at any concurrency should the lab's defaults change (Dovecot's own is 10).
EXTRA_CONFIG = "protocol pop3 {\n  mail_max_userip_connections = 4000\n}\n"


@dataclass(frozen=True)
class Case:
    """One kind of probe to measure."""

    name: str
    security: str
    auth: str


CASES: tuple[Case, ...] = (
    Case("plain banner", "none", "none"),
    Case("STLS + SCRAM-SHA-256", "starttls", "scram-sha-256"),
    Case("STLS + USER", "starttls", "user"),
    Case("TLS + SCRAM-SHA-256", "tls", "scram-sha-256"),
    Case("TLS + USER", "tls", "user"),
    Case("TLS banner", "tls", "none"),
)


@dataclass(frozen=True)
class Row:
    """Measurements of one case in one execution style."""

    case: str
    style: str  # "seq" or "cN"
    n: int
    failures: int
    wall_mean_ms: float
    wall_median_ms: float
    wall_p95_ms: float
    thread_cpu_ms: float
    process_cpu_ms: float
    server_cpu_ms: float
    probes_per_second: float
    phase_median_ms: dict[str, float]
    first_failure: str


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (``fraction`` in 0..1)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def server_cpu_seconds(lab: DovecotLab) -> float:
    """CPU seconds used so far by the lab's processes, including reaped children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in lab.pids():
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue  # exited meanwhile; its master will account for it
        # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17.
        total += sum(int(v) for v in fields[11:15])
    return total / ticks


def make_spec(lab: DovecotLab, secret: Secret, case: Case, index: int) -> ProbeSpec:
    """The spec for probe number ``index`` of ``case`` (ids are unique per batch)."""
    return ProbeSpec(
        id=f"{case.name}#{index}",
        host=lab.hostname,
        port=lab.port("pop3s" if case.security == "tls" else "pop3"),
        security=case.security,
        auth=case.auth,
        username=lab.demo_user,
        secret=None if case.auth == "none" else secret,
        ca_file=str(lab.ca_file),
        timeout=10.0,
    )


def measure(
    lab: DovecotLab, secret: Secret, case: Case, n: int, concurrency: int, idle_processes: int
) -> tuple[Row, list[ProbeResult]]:
    """Run ``n`` probes of ``case`` (sequentially when ``concurrency`` is 1).

    ``idle_processes`` is how many processes the lab has between sessions; before reading
    the server's CPU the batch's session processes must have exited and been reaped.
    """
    specs = [make_spec(lab, secret, case, i) for i in range(n)]
    server0 = server_cpu_seconds(lab)
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    if concurrency <= 1:
        results = [probe(spec) for spec in specs]
    else:
        results = list(run_probes(specs, concurrency=concurrency).values())
    elapsed = time.perf_counter() - wall0
    process_cpu = time.process_time() - cpu0
    # Session processes exit after QUIT; wait until the masters have reaped them so their
    # CPU shows up in the masters' cutime (bounded: a busy machine only loses accuracy).
    settle = time.monotonic() + 2.0
    while len(lab.pids()) > idle_processes and time.monotonic() < settle:
        time.sleep(0.02)
    server_cpu = server_cpu_seconds(lab) - server0
    walls = [(r.phase("total") or 0.0) * 1000 for r in results]
    failed = [r for r in results if not r.ok]
    phases: dict[str, list[float]] = {}
    for r in results:
        for name, seconds in r.phases:
            phases.setdefault(name, []).append(seconds * 1000)
    row = Row(
        case=case.name,
        style="seq" if concurrency <= 1 else f"c{concurrency}",
        n=n,
        failures=len(failed),
        wall_mean_ms=statistics.fmean(walls),
        wall_median_ms=statistics.median(walls),
        wall_p95_ms=percentile(walls, 0.95),
        thread_cpu_ms=statistics.fmean(r.cpu_seconds for r in results) * 1000,
        process_cpu_ms=process_cpu / n * 1000,
        server_cpu_ms=server_cpu / n * 1000,
        probes_per_second=n / elapsed if elapsed > 0 else float("inf"),
        phase_median_ms={k: statistics.median(v) for k, v in phases.items()},
        first_failure=f"{failed[0].error_kind}: {failed[0].error_reason}" if failed else "",
    )
    return row, results


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or what platform knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def dovecot_version(binary: Path) -> str:
    """``dovecot --version`` of the binary the lab runs."""
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as exc:
        return f"unknown ({exc})"
    return done.stdout.strip() or "unknown"


def machine_lines(lab: DovecotLab) -> list[str]:
    """A description of where the numbers were measured."""
    return [
        f"machine : {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}",
        f"kernel  : {platform.system()} {platform.release()}",
        f"python  : {platform.python_implementation()} {platform.python_version()}",
        f"openssl : {ssl.OPENSSL_VERSION}",
        f"dovecot : {dovecot_version(lab.binary)} on 127.0.0.1 (certificate: lab CA, EC P-256)",
    ]


def render(rows: Sequence[Row]) -> str:
    """The result table as aligned text."""
    columns = (
        ("case", 22, "", ""),
        ("run", 4, "", ""),
        ("n", 5, "", ""),
        ("fail", 4, "", ""),
        ("wall mean", 9, "ms", ".2f"),
        ("median", 7, "ms", ".2f"),
        ("p95", 7, "ms", ".2f"),
        ("thread CPU", 10, "ms", ".2f"),
        ("proc CPU", 8, "ms", ".2f"),
        ("server CPU", 10, "ms", ".1f"),
        ("probes/s", 9, "", ".1f"),
    )
    header = " ".join(
        f"{name:<{w}}" if i == 0 else f"{name:>{w}}" for i, (name, w, _, _) in enumerate(columns)
    )
    units = " ".join(
        f"{unit:<{w}}" if i == 0 else f"{unit:>{w}}" for i, (_, w, unit, _) in enumerate(columns)
    )
    lines = [header, units, "-" * len(header)]
    for r in rows:
        values = (
            r.case,
            r.style,
            r.n,
            r.failures,
            r.wall_mean_ms,
            r.wall_median_ms,
            r.wall_p95_ms,
            r.thread_cpu_ms,
            r.process_cpu_ms,
            r.server_cpu_ms,
            r.probes_per_second,
        )
        cells = []
        for i, ((_, width, _, fmt), value) in enumerate(zip(columns, values, strict=True)):
            text = format(value, fmt) if fmt else str(value)
            cells.append(f"{text:<{width}}" if i == 0 else f"{text:>{width}}")
        lines.append(" ".join(cells))
    return "\n".join(lines)


PHASE_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dns", ("dns",)),
    ("connect", ("connect",)),
    ("tls", ("tls", "tls_handshake")),
    ("greet", ("greeting",)),
    ("capa", ("capa", "capa_tls")),
    ("stls", ("stls",)),
    ("auth", ("auth",)),
    ("stat", ("stat",)),
    ("quit", ("quit",)),
    ("total", ("total",)),
)


def render_phases(rows: Sequence[Row]) -> str:
    """Median milliseconds per phase of the sequential runs (``-``: phase did not run).

    ``tls`` is the implicit handshake or the one after STLS; ``capa`` adds both CAPAs.
    """
    header = f"{'case (sequential, median ms)':<30}" + "".join(
        f"{name:>8}" for name, _ in PHASE_COLUMNS
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if r.style != "seq":
            continue
        cells = []
        for _, names in PHASE_COLUMNS:
            found = [r.phase_median_ms[n] for n in names if n in r.phase_median_ms]
            cells.append(f"{sum(found):>8.2f}" if found else f"{'-':>8}")
        lines.append(f"{r.case:<30}" + "".join(cells))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Per-probe wall and CPU time of the pop3mon engine against local Dovecot."
    )
    parser.add_argument("--n", type=int, default=200, help="probes per case (default 200)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="also run each case through run_probes with this many at a time (0: skip)",
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="unmeasured probes per case first (default 5)"
    )
    parser.add_argument("--json", type=Path, help="also write the rows and machine as JSON")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if args.concurrency < 0 or args.warmup < 0:
        parser.error("--concurrency and --warmup must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Start the lab, measure every case, print the table. Exit 1 if any probe failed."""
    args = parse_args(argv)
    try:
        lab = DovecotLab(extra_config=EXTRA_CONFIG)
    except LabError as exc:
        print(f"probe_cost: cannot run: {exc}", file=sys.stderr)
        return 2
    rows: list[Row] = []
    with lab:
        secret = Secret(lab.demo_password, "benchmark:dovecot-lab")
        for line in machine_lines(lab):
            print(line)
        print(
            f"lab     : started in {lab.startup_seconds or 0:.2f}s; {args.n} probes per case, "
            f"{args.warmup} warm-up probes per case not counted\n",
            flush=True,
        )
        idle_processes = len(lab.pids())  # master, login, auth, log ... before any session
        styles = [1] + ([args.concurrency] if args.concurrency > 1 else [])
        for case in CASES:
            for i in range(args.warmup):
                warm = probe(make_spec(lab, secret, case, -1 - i))
                if not warm.ok:
                    print(
                        f"probe_cost: warm-up of {case.name!r} failed: {warm.error_kind}: "
                        f"{warm.error_reason}",
                        file=sys.stderr,
                    )
                    return 1
            for concurrency in styles:
                row, _ = measure(lab, secret, case, args.n, concurrency, idle_processes)
                rows.append(row)
    print(render(rows))
    print()
    print(render_phases(rows))
    failures = [r for r in rows if r.failures]
    for r in failures:
        print(f"\n{r.case} ({r.style}): {r.failures} failed; first: {r.first_failure}")
    if args.json:
        payload = {
            "machine": machine_lines(lab),
            "n": args.n,
            "rows": [r.__dict__ for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
