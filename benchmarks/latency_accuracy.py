"""Are pop3mon's phase timings right? Measured vs expected through a known delay.

A real Dovecot (127.0.0.1) sits behind :mod:`latency_proxy`, which adds ``--delay`` seconds
(20 ms by default) to each direction. For every phase of every mode the expected duration is

    expected = round trips x 2 x delay + the same phase measured without the proxy

and the error is ``measured - expected`` (medians over all probes). Round trips per phase:
``connect`` 0 (the kernel completes the handshake with the proxy; see latency_proxy's
docstring), ``tls``/``tls_handshake`` 1 (TLS 1.3), ``greeting``/``capa``/``stls``/
``capa_tls``/``stat``/``quit`` 1, ``auth`` by mechanism (PLAIN and APOP 1, USER/PASS, LOGIN
and CRAM-MD5 2, SCRAM 3), ``total`` the sum.

Two runs per mode: probes one at a time ("alone"), and ``--inflight`` probes at once through
the engine's runner (bounded thread pool), direct and proxied batches alternating so both
see the same machine load. Target: |error| <= 2 ms for every phase.

    python benchmarks/latency_accuracy.py [--delay 0.02] [--probes 30] [--inflight 64]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import struct
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence

from _common import (
    MODES,
    Mode,
    ProbeResult,
    ProbeSpec,
    fmt,
    lab,
    median,
    print_machine,
    print_table,
    probe,
    run_probes,
    spec_for,
)
from latency_proxy import spawn_proxies

AUTH_ROUND_TRIPS = {
    "plain": 1,
    "apop": 1,
    "xoauth2": 1,
    "oauthbearer": 1,
    "user": 2,
    "login": 2,
    "cram-md5": 2,
    "scram-sha-1": 3,
    "scram-sha-256": 3,
}
PHASE_ORDER = (
    "connect",
    "tls",
    "greeting",
    "capa",
    "stls",
    "tls_handshake",
    "capa_tls",
    "auth",
    "stat",
    "quit",
    "total",
)
TARGET_MS = 2.0


def round_trips(result: ProbeResult) -> dict[str, int]:
    """Round trips through the proxy per phase of ``result`` (and their sum as total)."""
    trips: dict[str, int] = {}
    for name, _ in result.phases:
        if name == "total":
            continue
        if name == "connect":
            trips[name] = 0
        elif name == "auth":
            mech = result.auth.mechanism if result.auth else ""
            trips[name] = AUTH_ROUND_TRIPS.get(mech, 0)
        else:
            trips[name] = 1
    trips["total"] = sum(trips.values())
    return trips


def _phases(results: Sequence[ProbeResult]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for res in results:
        if not res.ok:
            raise SystemExit(f"probe failed: {res.error_stage}: {res.error_reason}")
        for name, seconds in res.phases:
            out[name].append(seconds)
    return out


Pair = tuple[list[ProbeResult], list[ProbeResult]]


def _alone(direct: ProbeSpec, proxied: ProbeSpec, count: int) -> Pair:
    a: list[ProbeResult] = []
    b: list[ProbeResult] = []
    for _ in range(count):  # interleaved: both paths see the same drift in load
        a.append(probe(direct))
        b.append(probe(proxied))
    return a, b


def _inflight(direct: ProbeSpec, proxied: ProbeSpec, inflight: int, batches: int) -> Pair:
    a: list[ProbeResult] = []
    b: list[ProbeResult] = []
    for n in range(batches):
        for spec, out in ((direct, a), (proxied, b)):
            specs = [dataclasses.replace(spec, id=f"{spec.id}-{n}-{i}") for i in range(inflight)]
            out.extend(run_probes(specs, concurrency=inflight).values())
    return a, b


def report(
    mode: Mode, label: str, base: list[ProbeResult], prox: list[ProbeResult], delay: float
) -> list[float]:
    """Print one table; return the absolute errors in ms."""
    trips = round_trips(prox[0])
    b, p = _phases(base), _phases(prox)
    rows: list[list[object]] = []
    errors: list[float] = []
    for name in PHASE_ORDER:
        if name not in trips or name not in b:
            continue
        base_ms = median(b[name]) * 1000
        expected = trips[name] * 2 * delay * 1000 + base_ms
        measured = median(p[name]) * 1000
        error = measured - expected
        errors.append(abs(error))
        flag = "" if abs(error) <= TARGET_MS else "  > 2 ms"
        rows.append(
            [
                name,
                trips[name],
                fmt(base_ms, 3),
                fmt(expected, 3),
                fmt(measured, 3),
                fmt(error, 3) + flag,
            ]
        )
    mech = prox[0].auth.mechanism if prox[0].auth else "-"
    print(f"### {mode.name} — {label} (n={len(prox)} proxied, {len(base)} direct; auth {mech})")
    print_table(
        ["phase", "RTs", "direct ms", "expected ms", "measured ms", "error ms"],
        rows,
    )
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    """Run the accuracy benchmark and print one table per mode and load."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=0.02, help="one-way delay (s)")
    parser.add_argument("--probes", type=int, default=30, help="sequential probes per path")
    parser.add_argument("--inflight", type=int, default=64, help="probes at once")
    parser.add_argument("--batches", type=int, default=3, help="in-flight batches per path")
    parser.add_argument("--mechanism", default="auto", help="login mechanism (default auto)")
    parser.add_argument(
        "--spin", type=float, default=0.0005, help="proxy spin before each due chunk (s)"
    )
    parser.add_argument(
        "--pm-qos",
        action="store_true",
        help="hold a /dev/cpu_dma_latency=0 request during the run (root): idle CPUs poll "
        "instead of halting, so waking a process costs microseconds, not ~0.1 ms (VMs)",
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.pm_qos:
            stack.enter_context(pm_qos())
        return run(args, argv)


@contextlib.contextmanager
def pm_qos() -> Iterator[None]:
    """Ask the kernel for zero wake-up latency while the block runs (released on close)."""
    fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
    try:
        os.write(fd, struct.pack("i", 0))
        yield
    finally:
        os.close(fd)


def run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """The measurement itself (see the module docstring)."""

    print("# latency accuracy: pop3mon phase timings through a known delay\n")
    print_machine(
        {
            "command": "python benchmarks/latency_accuracy.py " + " ".join(argv or sys.argv[1:]),
            "delay": f"{args.delay * 1000:g} ms each way (proxy in a child process)",
            "pm-qos": "cpu_dma_latency=0 held" if args.pm_qos else "off (CPUs may halt when idle)",
        }
    )
    worst: dict[str, float] = {}
    started = time.perf_counter()
    with lab() as running:
        upstreams = [("127.0.0.1", running.port("pop3")), ("127.0.0.1", running.port("pop3s"))]
        with spawn_proxies(upstreams, args.delay, spin=args.spin) as ports:
            proxy_port = {"pop3": ports[0], "pop3s": ports[1]}
            for mode in MODES:
                direct = spec_for(mode, running, mechanism=args.mechanism, ident="direct")
                proxied = spec_for(
                    mode,
                    running,
                    port=proxy_port[mode.listener],
                    mechanism=args.mechanism,
                    ident="proxied",
                )
                _alone(direct, proxied, 3)  # warm-up: contexts, caches, Dovecot processes
                base, prox = _alone(direct, proxied, args.probes)
                errs = report(mode, "alone", base, prox, args.delay)
                worst[f"{mode.name} alone"] = max(errs)
                base, prox = _inflight(direct, proxied, args.inflight, args.batches)
                errs = report(mode, f"{args.inflight} in flight", base, prox, args.delay)
                worst[f"{mode.name} {args.inflight} in flight"] = max(errs)
    print("### worst |error| per run (target <= 2 ms)")
    print_table(
        ["run", "worst |error| ms", "target met"],
        [[k, fmt(v, 3), "yes" if v <= TARGET_MS else "NO"] for k, v in worst.items()],
    )
    print(f"took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
