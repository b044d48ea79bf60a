#!/usr/bin/env python3
"""Wall time of ``pop3mon check`` (the monitoring-plugin mode), as a scheduler runs it.

Usage::

    python3 benchmarks/plugin_mode.py [--n 20] [--warmup 2] [--no-bytecode]

Starts a Dovecot lab (certificate variant ``valid``), writes a targets file with one
connection type per case, copies ``plugins/pop3mon`` to a temporary directory and compiles
it (as ``pip install`` does; ``--no-bytecode`` leaves it uncompiled and sets
``PYTHONDONTWRITEBYTECODE=1``, as this repository's sandbox does), then starts
``python -m pop3mon.cli check --targets FILE --id ID`` ``n`` times per case, one after the
other, and prints min / median / max wall seconds of the whole process next to:

* ``python -c pass``: the interpreter's own start;
* ``import only``: the process importing what a check imports, and probing nothing;
* the probe's own ``total`` phase (from the perfdata): the network part.

Each case runs twice: with the validated-targets cache (``pop3mon.config.cache``, in a
directory of the benchmark's own, filled by the warm-up) and with ``--no-cache``.

Cases: the implicit TLS port with a USER login (``tls``), STLS with SCRAM-SHA-256
(``starttls``), and the banner only (``banner``: TLS, no login).
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, lab, print_machine

CASES = {
    "tls": ("tls", "pop3s", "user"),
    "starttls": ("starttls", "pop3", "scram-sha-256"),
    "banner": ("tls", "pop3s", "none"),
}
IMPORTS = (
    "import pop3mon.cli, pop3mon.config, pop3mon.checks, pop3mon.engine.runner, "
    "pop3mon.engine.pacing, pop3mon.engine.session"
)


def _targets(path: Path, running: object) -> None:
    lines = [
        "servers:",
        "  - name: lab",
        f"    host: {running.hostname}",  # type: ignore[attr-defined]
        "    address: 127.0.0.1",
        f"    ca_file: {running.ca_file}",  # type: ignore[attr-defined]
        f"    account: {{username: {running.demo_user}, password_env: BENCH_PW}}",  # type: ignore[attr-defined]
        "    latency: {total: {warn: 2, crit: 5}, auth: {warn: 1, crit: 3}}",
        "    connections:",
    ]
    for ident, (security, listener, auth) in CASES.items():
        port = running.port(listener)  # type: ignore[attr-defined]
        lines.append(f"      - {{id: {ident}, port: {port}, security: {security}, auth: {auth}}}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _time(cmd: list[str], env: dict[str, str], n: int, warmup: int) -> tuple[list[float], str]:
    walls: list[float] = []
    out = ""
    for i in range(warmup + n):
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        took = time.perf_counter() - start
        out = proc.stdout
        if i >= warmup:
            walls.append(took)
    return walls, out


def _row(name: str, walls: list[float], extra: str = "") -> None:
    print(
        f"| {name} | {min(walls):.3f} | {statistics.median(walls):.3f} | {max(walls):.3f} "
        f"| {extra} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-bytecode", action="store_true")
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory() as tmp, lab() as running:
        base = Path(tmp)
        shutil.copytree(
            REPO / "plugins" / "pop3mon",
            base / "pkg" / "pop3mon",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("POP3MON_")}
        env.update(
            PYTHONPATH=str(base / "pkg"),
            BENCH_PW=running.demo_password,
            POP3MON_CACHE_DIR=str(base / "cache"),
        )
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            compileall.compile_dir(str(base / "pkg"), quiet=1)
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        targets = base / "targets.yaml"
        _targets(targets, running)
        py = sys.executable
        how = "no bytecode" if args.no_bytecode else "compiled, as installed"
        print(f"\n{args.n} runs each after {args.warmup} warm-up; package {how}\n")
        print("| command | min s | median s | max s | probe total (median) |")
        print("|---|---:|---:|---:|---|")
        walls, _ = _time([py, "-c", "pass"], env, args.n, args.warmup)
        _row("python -c pass", walls)
        walls, _ = _time([py, "-c", IMPORTS], env, args.n, args.warmup)
        _row("import only (no probe)", walls)
        runs = [(ident, cache) for ident in CASES for cache in ("cached", "--no-cache")]
        for ident, cache in runs:
            cmd = [py, "-m", "pop3mon.cli", "check", f"--targets={targets}", f"--id={ident}"]
            if cache != "cached":
                cmd.append(cache)
            totals: list[float] = []
            walls = []
            for _ in range(args.warmup + args.n):
                start = time.perf_counter()
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                took = time.perf_counter() - start
                found = re.search(r"'total'=([0-9.]+)s", proc.stdout)
                if proc.returncode != 0 or found is None:
                    sys.exit(f"{ident}: exit {proc.returncode}: {proc.stdout}{proc.stderr}")
                walls.append(took)
                totals.append(float(found[1]))
            walls, totals = walls[args.warmup :], totals[args.warmup :]
            note = f"{statistics.median(totals) * 1000:.1f} ms"
            _row(f"pop3mon check --id={ident} ({cache})", walls, note)


if __name__ == "__main__":
    main()
