"""A real DNS server for self-tests: Debian's ``dnsmasq`` on 127.0.0.1, an ephemeral port.

:class:`DnsLab` runs ``dnsmasq -k`` (foreground, no daemonizing) with no upstream
(``--no-resolv``), no /etc/hosts (``--no-hosts``), no configuration file, and answers only
the records it is given: SRV records (``--srv-host``; a record without target is RFC 6186's
"." = service not offered) and A/AAAA records (``--host-record``). The zones given are
``--local``: names under them that have no record are NXDOMAIN, never forwarded.

Discovery's tests ask it through ``DiscoverySpec.nameserver`` ("127.0.0.1:PORT").
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from .dovecot import LabStartError, LabUnavailable

__all__ = ["DnsLab", "Srv", "find_dnsmasq"]

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Srv:
    """One SRV record. ``target`` None: the "." target (service not offered)."""

    name: str  # "_pop3s._tcp.example.test"
    target: str | None = None
    port: int = 0
    priority: int = 0
    weight: int = 1

    def option(self) -> str:
        if self.target is None:
            return f"--srv-host={self.name}"
        return f"--srv-host={self.name},{self.target},{self.port},{self.priority},{self.weight}"


def find_dnsmasq() -> Path:
    """The dnsmasq binary; raises :class:`LabUnavailable` when not installed."""
    for candidate in (shutil.which("dnsmasq"), "/usr/sbin/dnsmasq"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise LabUnavailable("dnsmasq is not installed (Debian package dnsmasq-base)")


def _free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 a moment ago (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise LabStartError("no port free for both UDP and TCP on 127.0.0.1")


class DnsLab:
    """dnsmasq serving ``srv`` and ``hosts`` (name -> address) for ``zones``."""

    def __init__(
        self,
        *,
        zones: Sequence[str],
        srv: Sequence[Srv] = (),
        hosts: dict[str, str] | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.binary = find_dnsmasq()
        self.zones = tuple(zones)
        self.srv = tuple(srv)
        self.hosts = dict(hosts or {})
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None

    @property
    def nameserver(self) -> str:
        """``IP:PORT`` for ``DiscoverySpec.nameserver`` and ``pop3mon discover --nameserver``."""
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "dnsmasq.log"

    def command(self) -> list[str]:
        assert self.workdir is not None
        cmd = [
            str(self.binary),
            "-k",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            f"--port={self.port}",
            f"--listen-address={HOST}",
            "--bind-interfaces",
            f"--pid-file={self.workdir / 'dnsmasq.pid'}",
            f"--log-facility={self.log_path}",
            "--log-queries",
            "--user=root",
        ]
        cmd += [f"--local=/{zone}/" for zone in self.zones]
        cmd += [record.option() for record in self.srv]
        cmd += [f"--host-record={name},{address}" for name, address in self.hosts.items()]
        return cmd

    def start(self) -> Self:
        """Start dnsmasq and wait until it answers; raises :class:`LabStartError`."""
        self.workdir = Path(tempfile.mkdtemp(prefix="pop3mon-dns-"))
        for _attempt in range(3):
            self.port = _free_udp_tcp_port()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._wait_ready():
                return self
            err = self._stop_proc()
            if "Address already in use" not in err:
                raise LabStartError(f"dnsmasq did not start: {err.strip()[-500:]}")
        raise LabStartError("dnsmasq did not start: its port was taken three times")

    def _wait_ready(self) -> bool:
        """True once a TCP connect to the port works (dnsmasq binds UDP and TCP together)."""
        end = time.monotonic() + self.startup_timeout
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def _stop_proc(self) -> str:
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.terminate()
        try:
            _out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
        return (err or b"").decode("utf-8", "replace")

    def queries(self) -> str:
        """dnsmasq's query log so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop dnsmasq and remove its work directory."""
        self._stop_proc()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
