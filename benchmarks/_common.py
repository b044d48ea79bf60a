"""Shared pieces of the benchmarks: the machine description, the lab, probe modes, tables.

Every benchmark prints the machine it ran on (cores, CPU model, RAM, Python, OpenSSL, load
average) next to its figures, because on a shared two-core box the load decides wall times.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "plugins"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from pop3mon.engine.dispatch import probe  # noqa: E402
from pop3mon.engine.result import ProbeResult, ProbeSpec  # noqa: E402
from pop3mon.engine.runner import run_probes  # noqa: E402
from pop3mon.secrets import Secret  # noqa: E402

from pop3mon_lab.dovecot import DovecotLab, PasswordScheme  # noqa: E402

__all__ = [
    "LAB_LIMITS",
    "MODES",
    "REPO",
    "DovecotLab",
    "Mode",
    "ProbeResult",
    "ProbeSpec",
    "Secret",
    "fmt",
    "lab",
    "machine_info",
    "median",
    "print_machine",
    "print_table",
    "probe",
    "run_probes",
    "spec_for",
]

#: Appended to every benchmark Dovecot's configuration: many sessions of one user from one
#: IP at once (default 10) and enough login clients for hundreds of probes in flight.
LAB_LIMITS = """
protocol pop3 {
  mail_max_userip_connections = 5000
}
"""


@dataclass(frozen=True)
class Mode:
    """One way of probing: security mode, auth mechanism and the Dovecot listener."""

    name: str
    security: str
    auth: str  # "none" = banner only (greeting, CAPA, QUIT)
    listener: str  # "pop3" (plaintext/STLS) or "pop3s" (implicit TLS)


#: The four modes of the benchmarks. ``{mech}`` is filled with the login mechanism.
MODES: tuple[Mode, ...] = (
    Mode("plain banner", "none", "none", "pop3"),
    Mode("STLS + login", "starttls", "{mech}", "pop3"),
    Mode("implicit TLS + login", "tls", "{mech}", "pop3s"),
    Mode("implicit TLS banner", "tls", "none", "pop3s"),
)


def spec_for(
    mode: Mode,
    running: DovecotLab,
    port: int | None = None,
    mechanism: str = "auto",
    ident: str = "bench",
    timeout: float = 10.0,
) -> ProbeSpec:
    """A probe spec for ``mode`` against the lab (or a proxy in front of it at ``port``)."""
    auth = mode.auth.replace("{mech}", mechanism)
    return ProbeSpec(
        id=ident,
        host=running.hostname,  # SNI and certificate name
        address="127.0.0.1",  # never resolve, never leave loopback
        port=port if port is not None else running.port(mode.listener),  # type: ignore[arg-type]
        security=mode.security,
        auth=auth,
        username=running.demo_user if auth != "none" else "",
        secret=Secret(running.demo_password, "benchmark") if auth != "none" else None,
        ca_file=str(running.ca_file),
        timeout=timeout,
    )


@contextlib.contextmanager
def lab(
    password_scheme: PasswordScheme = "PLAIN", *, fast_auth_failures: bool = True
) -> Iterator[DovecotLab]:
    """A started Dovecot lab (valid certificate only) with raised connection limits, its
    passwords stored as ``password_scheme``; ``fast_auth_failures`` as in :class:`DovecotLab`
    (its extra passdb makes Dovecot derive one more PBKDF2 key per SCRAM login)."""
    with DovecotLab(
        extra_config=LAB_LIMITS,
        password_scheme=password_scheme,
        fast_auth_failures=fast_auth_failures,
    ) as running:
        yield running


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ram() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _version(cmd: Sequence[str]) -> str:
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        return "not installed"
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine_info() -> dict[str, str]:
    """What a figure depends on: cores, CPU, RAM, versions, and the load right now."""
    import pytest

    load = os.getloadavg()
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "ram": _ram(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "pytest": pytest.__version__,
        "dovecot": _version(["/usr/sbin/dovecot", "--version"]),
        "loadavg": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "(unset)"),
    }


def print_machine(extra: dict[str, str] | None = None) -> None:
    """Print :func:`machine_info` (and ``extra``) as ``key: value`` lines."""
    for key, value in {**machine_info(), **(extra or {})}.items():
        print(f"{key:>24}: {value}")
    print()


def median(values: Sequence[float]) -> float:
    """Median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table cell; ``-`` for missing."""
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a Markdown table (pastes into benchmarks/README.md as is)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print()
