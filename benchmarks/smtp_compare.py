"""SMTP probe cost: pop3mon's SMTP probe vs ``check_smtp`` vs blackbox_exporter's tcp
prober with an SMTP query/response module, against the same Postfix listeners.

Usage: ``python benchmarks/smtp_compare.py [--count 100]`` (as root: the Postfix lab's
master starts as root). Starts a :class:`~pop3mon_lab.postfix.PostfixLab` on 127.0.0.1 and,
where installed, the exporter; prints the machine and a Markdown table. Every tool does the
same dialogue: greeting, EHLO, STARTTLS (or implicit TLS), EHLO, QUIT; pop3mon and the
exporter verify the chain and host name, ``check_smtp`` verifies nothing.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _common import REPO, fmt, print_machine, print_table
from compare import BLACKBOX, Row, _free_port, _proc_cpu, _subprocess_batch

sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from pop3mon.engine import ProbeSpec, probe  # noqa: E402

from pop3mon_lab.postfix import PostfixLab  # noqa: E402

CHECK_SMTP = Path("/usr/lib/nagios/plugins/check_smtp")

BLACKBOX_CONFIG = """\
modules:
  smtp_starttls:
    prober: tcp
    timeout: 5s
    tcp:
      tls_config: {{ca_file: "{ca}", server_name: "{sni}"}}
      query_response:
        - expect: "^220 "
        - send: "EHLO prober\\r"
        - expect: "^250-STARTTLS"
        - send: "STARTTLS\\r"
        - expect: "^220"
        - starttls: true
        - send: "EHLO prober\\r"
        - expect: "^250 "
        - send: "QUIT\\r"
  smtps:
    prober: tcp
    timeout: 5s
    tcp:
      tls: true
      tls_config: {{ca_file: "{ca}", server_name: "{sni}"}}
      query_response:
        - expect: "^220 "
        - send: "EHLO prober\\r"
        - expect: "^250 "
        - send: "QUIT\\r"
"""

MODES = (("starttls", "smtp", "STARTTLS (25-like)"), ("tls", "smtps", "implicit TLS (465-like)"))


def pop3mon_rows(lab: PostfixLab, count: int) -> list[Row]:
    """``count`` sequential SMTP probes in this process, per mode."""
    rows = []
    for security, listener, label in MODES:
        spec = ProbeSpec(
            id="bench",
            host=lab.hostname,
            address="127.0.0.1",
            port=lab.port(listener),  # type: ignore[arg-type]
            security=security,  # type: ignore[arg-type]
            auth="none",
            protocol="smtp",
            ca_file=str(lab.ca_file),
        )
        for _ in range(5):
            probe(spec)
        failures, thread_cpu = 0, 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(count):
            result = probe(spec)
            failures += not result.ok
            thread_cpu += result.cpu_seconds
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        rows.append(Row("pop3mon in process", label, count, wall, cpu, "verified", failures))
        rows.append(
            Row("pop3mon (probe thread only)", label, count, wall, thread_cpu, "", failures)
        )
    return rows


def check_smtp_rows(lab: PostfixLab, count: int) -> list[Row]:
    """check_smtp -S (EHLO, STARTTLS, EHLO, QUIT); it has no implicit-TLS mode."""
    if not CHECK_SMTP.exists():
        return []
    cmd = [str(CHECK_SMTP), "-H", "127.0.0.1", "-p", str(lab.port("smtp")), "-S"]
    row = _subprocess_batch("check_smtp -S", MODES[0][2], cmd, count, note="not verified")
    return [row]


def blackbox_rows(lab: PostfixLab, count: int) -> list[Row]:
    """The exporter's tcp prober, probed over HTTP; CPU is the exporter's own."""
    if not BLACKBOX.exists():
        return []
    rows = []
    with tempfile.TemporaryDirectory(prefix="pop3mon-bb-smtp-") as tmp:
        config = Path(tmp) / "blackbox.yml"
        config.write_text(BLACKBOX_CONFIG.format(ca=lab.ca_file, sni=lab.hostname))
        port = _free_port()
        proc = subprocess.Popen(
            [str(BLACKBOX), f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

            def one(module: str, target: int) -> bool:
                conn.request("GET", f"/probe?module={module}&target=127.0.0.1:{target}")
                return b"\nprobe_success 1" in conn.getresponse().read()

            for (_sec, listener, label), module in zip(
                MODES, ("smtp_starttls", "smtps"), strict=True
            ):
                target = lab.port(listener)  # type: ignore[arg-type]
                for _ in range(5):
                    one(module, target)
                failures = 0
                cpu0, wall0 = _proc_cpu(proc.pid), time.perf_counter()
                for _ in range(count):
                    failures += not one(module, target)
                wall, cpu = time.perf_counter() - wall0, _proc_cpu(proc.pid) - cpu0
                rows.append(
                    Row(
                        f"blackbox_exporter {module}", label, count, wall, cpu, "verified", failures
                    )
                )
            conn.close()
        finally:
            proc.terminate()
            proc.wait(timeout=5)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run every tool against one Postfix lab and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="probes per tool and mode")
    args = parser.parse_args(argv)
    extra = (
        {
            "postfix": subprocess.run(
                ["postconf", "-d", "-h", "mail_version"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        }
        if shutil.which("postconf")
        else {}
    )
    print_machine(extra)
    with PostfixLab() as lab:
        rows = (
            pop3mon_rows(lab, args.count)
            + check_smtp_rows(lab, args.count)
            + blackbox_rows(lab, args.count)
        )
    print_table(
        ["tool", "mode", "probes", "wall ms/probe", "CPU ms/probe", "failures", "note"],
        [
            [r.tool, r.mode, r.probes, fmt(r.wall_ms), fmt(r.cpu_ms), r.failures, r.note]
            for r in rows
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
