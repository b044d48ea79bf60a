"""Cost per probe: pop3mon next to check_pop / check_spop and the Prometheus blackbox exporter.

All tools probe the same Dovecot on 127.0.0.1 in the same run, one probe at a time, ``--probes``
probes per tool and mode (200 by default, after a few warm-up probes). Per probe we report wall
time and CPU time:

* **pop3mon, in process**: ``probe()`` in a loop; CPU = ``time.process_time()`` delta of this
  process around the batch (all threads) / probes, and the engine's own per-probe
  ``ProbeResult.cpu_seconds`` (thread CPU of the probe) for comparison. This is what one more
  connection type adds to a pop3mon run: the run's fixed cost (Python start-up, imports,
  pytest, reports) is paid once per run, not per probe.
* **pop3mon, one-shot process**: a fresh ``python`` that imports the engine, probes once and
  exits (CPU from ``getrusage(RUSAGE_CHILDREN)`` deltas), i.e. what pop3mon would cost if it
  were run like a Nagios plugin, once per check. Dominated by interpreter start-up and
  imports.
* **check_pop / check_spop** (monitoring-plugins): one process per check, as Nagios/Icinga run
  them; CPU from ``getrusage(RUSAGE_CHILDREN)`` deltas. ``check_spop`` does not verify the
  certificate chain; ``-D`` adds the expiry check.
* **blackbox_exporter**: started here on 127.0.0.1 with a generated config (``tcp`` prober,
  ``query_response`` for the POP3 banner, ``tls: true`` for implicit TLS, ``starttls`` for
  STLS; the chain is verified against the lab CA). Probed over HTTP like Prometheus does;
  CPU of the exporter before and after each batch from ``/proc/<pid>/task/*/schedstat``
  (nanoseconds, all threads; ``/proc/<pid>/stat`` has 10 ms ticks).
  It is a long-running daemon, so this is comparable with pop3mon in process.

What compares to what: pop3mon in-process vs blackbox (both amortise their start-up over many
probes); pop3mon one-shot vs check_pop/check_spop (both pay a process per probe). The target
("CPU per comparable probe <= 1.5 x check_spop") is checked for pop3mon's implicit-TLS banner
probe in process against ``check_spop``, the per-check cost an operator pays with each.

    python benchmarks/compare.py [--probes 200] [--one-shot-runs 20] [--mechanism auto]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from _common import (
    MODES,
    REPO,
    DovecotLab,
    Mode,
    fmt,
    lab,
    print_machine,
    print_table,
    probe,
    spec_for,
)

PLUGINS = Path("/usr/lib/nagios/plugins")
BLACKBOX = Path("/usr/bin/prometheus-blackbox-exporter")
CLK_TCK = os.sysconf("SC_CLK_TCK")
STLS_BANNER = Mode("STLS banner (extra)", "starttls", "none", "pop3")


@dataclasses.dataclass
class Row:
    """One tool x mode measurement."""

    tool: str
    mode: str
    probes: int
    wall: float  # seconds, whole batch
    cpu: float  # seconds, whole batch
    note: str = ""
    failures: int = 0

    @property
    def wall_ms(self) -> float:
        """Wall milliseconds per probe."""
        return self.wall / self.probes * 1000

    @property
    def cpu_ms(self) -> float:
        """CPU milliseconds per probe."""
        return self.cpu / self.probes * 1000


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a running process, all threads: nanosecond run time from each
    thread's schedstat (utime + stime in /proc/PID/stat only has 10 ms ticks)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


# -- pop3mon --------------------------------------------------------------------------------
def pop3mon_in_process(mode: Mode, running: DovecotLab, count: int, mechanism: str) -> list[Row]:
    """``count`` sequential probes in this process."""
    spec = spec_for(mode, running, mechanism=mechanism)
    for _ in range(5):
        probe(spec)
    failures = 0
    thread_cpu = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(count):
        result = probe(spec)
        failures += not result.ok
        thread_cpu += result.cpu_seconds
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    last = probe(spec)
    mech = last.auth.mechanism if last.auth else "-"
    note = f"auth {mech}" if mode.auth != "none" else "greeting, CAPA, QUIT"
    if mode.security != "none":
        note += f"; {last.tls.protocol if last.tls else '?'}, chain + host name verified"
    return [
        Row("pop3mon in process", mode.name, count, wall, cpu, note, failures),
        Row(
            "pop3mon in process (probe thread only)",
            mode.name,
            count,
            wall,
            thread_cpu,
            "ProbeResult.cpu_seconds",
            failures,
        ),
    ]


ONE_SHOT = """
import sys
sys.path[:0] = [{repo!r}, {repo!r} + "/plugins"]
from pop3mon.engine.result import ProbeSpec
from pop3mon.engine.dispatch import probe
from pop3mon.secrets import Secret
import os
secret = os.environ.get("POP3MON_BENCH_PASSWORD")
spec = ProbeSpec(id="one", host={host!r}, address="127.0.0.1", port={port}, security={security!r},
                 auth={auth!r}, username={user!r}, ca_file={ca!r},
                 secret=Secret(secret) if secret and {auth!r} != "none" else None)
sys.exit(0 if probe(spec).ok else 1)
"""


def pop3mon_one_shot(mode: Mode, running: DovecotLab, count: int, mechanism: str) -> Row:
    """A fresh interpreter per probe: import the engine, probe once, exit."""
    auth = mode.auth.replace("{mech}", mechanism)
    code = ONE_SHOT.format(
        repo=str(REPO),
        host=running.hostname,
        port=running.port(mode.listener),  # type: ignore[arg-type]
        security=mode.security,
        auth=auth,
        user=running.demo_user,
        ca=str(running.ca_file),
    )
    env = dict(os.environ, POP3MON_BENCH_PASSWORD=running.demo_password)
    cmd = [sys.executable, "-c", code]
    return _subprocess_batch("pop3mon one-shot process", mode.name, cmd, count, env)


# -- monitoring-plugins ---------------------------------------------------------------------
def _subprocess_batch(
    tool: str,
    mode: str,
    cmd: list[str],
    count: int,
    env: dict[str, str] | None = None,
    note: str = "",
) -> Row:
    for _ in range(min(3, count)):
        subprocess.run(cmd, capture_output=True, env=env, check=False)
    failures = 0
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    for _ in range(count):
        done = subprocess.run(cmd, capture_output=True, env=env, check=False)
        failures += done.returncode != 0
    wall, cpu = time.perf_counter() - wall0, _children_cpu() - cpu0
    return Row(tool, mode, count, wall, cpu, note, failures)


def nagios_rows(running: DovecotLab, count: int) -> list[Row]:
    """check_pop (plaintext banner) and check_spop (implicit TLS banner, with/without -D)."""
    rows = []
    host = ["-H", "127.0.0.1"]
    if (PLUGINS / "check_pop").exists():
        cmd = [str(PLUGINS / "check_pop"), *host, "-p", str(running.port("pop3"))]
        rows.append(
            _subprocess_batch("check_pop", "plain banner", cmd, count, note="greeting, QUIT")
        )
    if (PLUGINS / "check_spop").exists():
        cmd = [str(PLUGINS / "check_spop"), *host, "-p", str(running.port("pop3s"))]
        rows.append(
            _subprocess_batch(
                "check_spop",
                "implicit TLS banner",
                cmd,
                count,
                note="greeting, QUIT; certificate not verified",
            )
        )
        cmd = [*cmd, f"--sni={running.hostname}", "-D", "21,7"]
        rows.append(
            _subprocess_batch(
                "check_spop -D 21,7",
                "implicit TLS banner",
                cmd,
                count,
                note="+ certificate expiry; chain not verified",
            )
        )
    return rows


# -- blackbox exporter ----------------------------------------------------------------------
BLACKBOX_CONFIG = """
modules:
  pop3_banner:
    prober: tcp
    timeout: 5s
    tcp:
      preferred_ip_protocol: ip4
      query_response:
        - expect: "^\\\\+OK"
        - send: "QUIT"
        - expect: "^\\\\+OK"
  pop3s_banner:
    prober: tcp
    timeout: 5s
    tcp:
      preferred_ip_protocol: ip4
      tls: true
      tls_config: {{ca_file: "{ca}", server_name: "{sni}"}}
      query_response:
        - expect: "^\\\\+OK"
        - send: "QUIT"
        - expect: "^\\\\+OK"
  pop3_stls:
    prober: tcp
    timeout: 5s
    tcp:
      preferred_ip_protocol: ip4
      tls_config: {{ca_file: "{ca}", server_name: "{sni}"}}
      query_response:
        - expect: "^\\\\+OK"
        - send: "STLS"
        - expect: "^\\\\+OK"
        - starttls: true
        - send: "QUIT"
        - expect: "^\\\\+OK"
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def blackbox(running: DovecotLab, workdir: Path) -> Iterator[tuple[int, int]]:
    """Run the exporter on 127.0.0.1; yield (pid, port)."""
    config = workdir / "blackbox.yml"
    config.write_text(BLACKBOX_CONFIG.format(ca=running.ca_file, sni=running.hostname))
    port = _free_port()
    log = (workdir / "blackbox.log").open("wb")
    proc = subprocess.Popen(
        [
            str(BLACKBOX),
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/-/healthy")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"blackbox exporter did not start; see {workdir}/blackbox.log")
            time.sleep(0.1)
        yield proc.pid, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def blackbox_rows(running: DovecotLab, count: int) -> list[Row]:
    """The exporter's tcp prober for each POP3 flavour, probed over HTTP."""
    if not BLACKBOX.exists():
        return []
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="pop3mon-bb-") as tmp,
        blackbox(running, Path(tmp)) as (pid, port),
    ):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def one(module: str, target: int) -> bool:
            conn.request("GET", f"/probe?module={module}&target=127.0.0.1:{target}")
            body = conn.getresponse().read()
            return b"\nprobe_success 1" in body

        cases = (
            ("pop3_banner", "plain banner", running.port("pop3"), "greeting, QUIT"),
            (
                "pop3s_banner",
                "implicit TLS banner",
                running.port("pop3s"),
                "greeting, QUIT; chain + host name verified",
            ),
            ("pop3_stls", STLS_BANNER.name, running.port("pop3"), "STLS, QUIT; verified"),
        )
        for module, mode, target, note in cases:
            for _ in range(5):
                one(module, target)
            failures = 0
            cpu0, wall0 = _proc_cpu(pid), time.perf_counter()
            for _ in range(count):
                failures += not one(module, target)
            wall, cpu = time.perf_counter() - wall0, _proc_cpu(pid) - cpu0
            rows.append(Row(f"blackbox_exporter {module}", mode, count, wall, cpu, note, failures))
        conn.close()
    return rows


# -- report ---------------------------------------------------------------------------------
def ratios(rows: list[Row]) -> list[list[str]]:
    """pop3mon's CPU per probe against each comparable tool, mode by mode."""

    def find(tool: str, mode: str) -> Row | None:
        return next((r for r in rows if r.tool == tool and r.mode == mode), None)

    out = []
    pairs: list[tuple[str, str, str, str]] = [
        ("pop3mon in process", "check_spop", "implicit TLS banner", "target <= 1.5"),
        ("pop3mon in process", "check_spop -D 21,7", "implicit TLS banner", ""),
        ("pop3mon in process", "check_pop", "plain banner", ""),
        ("pop3mon one-shot process", "check_spop", "implicit TLS banner", ""),
        ("pop3mon one-shot process", "check_pop", "plain banner", ""),
        ("pop3mon in process", "blackbox_exporter pop3s_banner", "implicit TLS banner", ""),
        ("pop3mon in process", "blackbox_exporter pop3_banner", "plain banner", ""),
        ("pop3mon in process", "blackbox_exporter pop3_stls", STLS_BANNER.name, ""),
    ]
    for ours, theirs, mode, target in pairs:
        a, b = find(ours, mode), find(theirs, mode)
        if a is None or b is None or b.cpu <= 0:
            continue
        ratio = a.cpu_ms / b.cpu_ms
        verdict = ""
        if target:
            verdict = "met" if ratio <= 1.5 else "MISSED"
        out.append([mode, ours, theirs, fmt(a.cpu_ms, 3), fmt(b.cpu_ms, 3), fmt(ratio, 2), verdict])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run every tool against one Dovecot lab and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=200, help="probes per tool and mode")
    parser.add_argument("--one-shot-runs", type=int, default=20, help="one-shot processes")
    parser.add_argument("--mechanism", default="auto", help="login mechanism (default auto)")
    args = parser.parse_args(argv)

    print("# compare: cost per probe, pop3mon vs check_pop/check_spop vs blackbox_exporter\n")
    print_machine(
        {
            "command": "python benchmarks/compare.py " + " ".join(argv or sys.argv[1:]),
            "check_spop": _tool_version([str(PLUGINS / "check_spop"), "-V"]),
            "blackbox_exporter": _tool_version([str(BLACKBOX), "--version"]),
        }
    )
    rows: list[Row] = []
    steps: list[tuple[str, Callable[[DovecotLab], list[Row]]]] = []
    for mode in (*MODES, STLS_BANNER):
        steps.append((f"pop3mon {mode.name}", _in_process_step(mode, args)))
    for mode in (*MODES, STLS_BANNER):
        steps.append((f"pop3mon one-shot {mode.name}", _one_shot_step(mode, args)))
    steps.append(("monitoring-plugins", lambda r: nagios_rows(r, args.probes)))
    steps.append(("blackbox_exporter", lambda r: blackbox_rows(r, args.probes)))
    with lab() as running:
        for label, step in steps:
            print(f"... {label}", file=sys.stderr, flush=True)
            rows.extend(step(running))
    print("### per probe (sequential, one at a time)")
    print_table(
        ["tool", "mode", "probes", "failed", "wall ms/probe", "CPU ms/probe", "what it does"],
        [
            [r.tool, r.mode, r.probes, r.failures, fmt(r.wall_ms), fmt(r.cpu_ms, 3), r.note]
            for r in rows
        ],
    )
    print("### CPU ratios (pop3mon / other; < 1 means pop3mon is cheaper)")
    print_table(
        ["mode", "pop3mon", "other", "pop3mon CPU ms", "other CPU ms", "ratio", "target"],
        ratios(rows),
    )
    return 0


def _in_process_step(mode: Mode, args: argparse.Namespace) -> Callable[[DovecotLab], list[Row]]:
    return lambda running: pop3mon_in_process(mode, running, args.probes, args.mechanism)


def _one_shot_step(mode: Mode, args: argparse.Namespace) -> Callable[[DovecotLab], list[Row]]:
    return lambda running: [pop3mon_one_shot(mode, running, args.one_shot_runs, args.mechanism)]


def _tool_version(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not installed"
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


if __name__ == "__main__":
    sys.exit(main())
