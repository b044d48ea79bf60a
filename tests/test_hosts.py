"""Host checks (engine/hosts.py, checks/hosts.py, tests_targets/test_hosts.py): each server's
PING and TCP once per run, shared by its connection types; ``depends_on``; one CRIT per
host that is down, every connection type behind it skipped naming it.

Real sockets on 127.0.0.x only: closed ports are bound and never listening (they refuse),
the recording listener counts the TCP connections a run makes, the mail host is the real
Dovecot lab.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from pop3mon.checks.hosts import host_check
from pop3mon.config import load_targets
from pop3mon.engine.hosts import HostSpec, probe_hosts
from pop3mon.engine.ping import no_permission_reason
from test_suite import SuiteRun, run_suite, write_targets

from pop3mon_lab.dovecot import DovecotLab


@contextmanager
def closed_port(address: str = "127.0.0.1") -> Iterator[int]:
    """A port on ``address`` that refuses: bound (nobody else takes it), never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((address, 0))
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


class Recorder:
    """A listener that accepts and counts connections (the host check's TCP connect)."""

    def __init__(self, address: str = "127.0.0.3") -> None:
        self.sock = socket.create_server((address, 0))
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def _lab_server(dovecot: DovecotLab, **extra: Any) -> dict[str, Any]:
    """A server entry with two connection types on the real Dovecot (no login)."""
    return {
        "name": "mail",
        "host": dovecot.hostname,
        "address": "127.0.0.1",
        "ca_file": str(dovecot.ca_file),
        "auth": "none",
        **extra,
        "connections": [
            {"port": dovecot.port("pop3s"), "security": "tls"},
            {"port": dovecot.port("pop3"), "security": "starttls"},
        ],
    }


def _ct_cases(run: SuiteRun) -> list[Any]:
    return [c for c in run.cases.values() if c.ct and not c.ct.startswith("host:")]


# ---------------------------------------------------------------------------------------
# Engine and rules, on real loopback sockets
# ---------------------------------------------------------------------------------------


def test_host_down_only_when_no_port_accepts() -> None:
    with closed_port() as shut, closed_port() as shut2:
        listener = Recorder("127.0.0.1")
        try:
            specs = {
                "half": HostSpec("half", "127.0.0.1", ports=(shut, listener.port)),
                "dead": HostSpec("dead", "127.0.0.1", ports=(shut, shut2)),
            }
            found = probe_hosts(specs, ["half", "dead"])
        finally:
            listener.close()
    assert found["half"].up and listener.accepted == 1
    ok = host_check(specs["half"], found["half"], "tcp")
    assert ok.verdict == "OK" and f"{shut}: connection refused" in ok.reason
    dead = host_check(specs["dead"], found["dead"], "tcp")
    assert dead.verdict == "CRIT" and found["dead"].status == "down"
    assert dead.reason.startswith("none of the 2 ports of 127.0.0.1 accepts a TCP connection")
    assert f"{shut2}: connection refused" in dead.reason
    # PING is off: its check SKIPs and decides nothing.
    assert host_check(specs["dead"], found["dead"], "ping").verdict == "SKIP"


def test_blocked_host_is_not_probed_and_names_its_root() -> None:
    listener = Recorder()
    try:
        with closed_port("127.0.0.2") as gw_port:
            specs = {
                "gw": HostSpec("gw", "127.0.0.2", ports=(gw_port,)),
                "core": HostSpec("core", "127.0.0.3", ports=(listener.port,), depends_on=("gw",)),
                "mail": HostSpec("mail", "127.0.0.3", ports=(listener.port,), depends_on=("core",)),
            }
            found = probe_hosts(specs, ["mail"])
    finally:
        listener.close()
    assert found["gw"].status == "down"
    assert [found[n].status for n in ("core", "mail")] == ["blocked", "blocked"]
    assert found["mail"].root == "gw" and listener.accepted == 0
    skip = host_check(specs["mail"], found["mail"], "tcp")
    assert (skip.verdict, skip.blocked_by) == ("SKIP", "host")
    assert skip.reason.startswith("skipped: host gw is down (mail depends on it)")
    # The root's own checks not selected: this host's TCP check reports it, once.
    crit = host_check(specs["mail"], found["mail"], "tcp", root_selected=False)
    assert crit.verdict == "CRIT" and "host:gw are not selected" in crit.reason
    assert host_check(specs["mail"], found["mail"], "ping", root_selected=False).verdict == "SKIP"


def test_ping_without_permission_names_the_sysctl() -> None:
    reason = no_permission_reason(privileged=False)
    assert "net.ipv4.ping_group_range" in reason and "PING not checked" in reason


_UNPRIVILEGED_PING = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pop3mon.engine.ping import ping
print(json.dumps(ping("127.0.0.1", 1.0).__dict__))
"""


@pytest.mark.parametrize("group_range", ["1 0", "0 2147483647"])
def test_unprivileged_ping_as_nobody(group_range: str) -> None:
    """PING as an unprivileged user in a network namespace of its own (the sysctl is per
    namespace, so the machine's stays untouched): "1 0" allows nobody and the result is a
    SKIP naming the sysctl, a range with nobody's group pings without root."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip("needs root, unshare and setpriv to test as an unprivileged user")
    plugins = str(Path(__file__).resolve().parents[1] / "plugins")
    inner = (
        f"ip link set lo up && sysctl -qw net.ipv4.ping_group_range='{group_range}' && "
        'exec setpriv --reuid nobody --regid nogroup --clear-groups "$@"'
    )
    argv = [sys.executable, "-c", _UNPRIVILEGED_PING, plugins]
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", inner, "sh", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    if proc.returncode != 0 and "unshare" in proc.stderr:
        pytest.skip(f"no network namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().splitlines()[-1]
    if group_range == "1 0":
        assert '"no-permission"' in out and "net.ipv4.ping_group_range" in out, out
    else:
        assert '"status": "ok"' in out, out


# ---------------------------------------------------------------------------------------
# The suite: one CRIT per host, dependents skipped naming the root, once per run under -n
# ---------------------------------------------------------------------------------------


def test_eight_connection_types_on_a_dead_host_are_one_crit(tmp_path: Path) -> None:
    with ExitStack() as stack:
        ports = [stack.enter_context(closed_port()) for _ in range(8)]
        conns = [
            {"port": p, "security": sec}
            for p, sec in zip(
                ports, ["none", "tls", "starttls", "starttls-optional"] * 2, strict=True
            )
        ]
        targets = write_targets(
            tmp_path / "dead-host.yaml",
            {
                "version": 1,
                "defaults": {"auth": "none", "timeout": 3},
                "servers": [{"name": "dead", "host": "127.0.0.1", "connections": conns}],
            },
        )
        run = run_suite(targets, "-n", "0", workdir=tmp_path)
    assert run.returncode == 1, run.describe()
    crits = [c for c in run.cases.values() if c.verdict == "CRIT"]
    assert [c.nodeid.rsplit("::", 1)[1] for c in crits] == ["test_host_tcp[host:dead]"]
    cts = _ct_cases(run)
    assert len({c.ct for c in cts}) == 8
    assert all(c.verdict == "SKIP" for c in cts), run.describe()
    assert all(
        c.reason.startswith("skipped: host dead is down: no of its 8")
        or c.reason.startswith("skipped: host dead is down:")
        for c in cts
    )
    # The terminal names the host once, as the one root cause of every skipped check.
    summary = run.stdout.split("pop3mon summary", 1)[1]
    assert "CRIT (1 host, 1 root cause):" in summary, run.describe()
    assert summary.count("host:dead host/tcp: none of the 8 ports") == 1, run.describe()
    assert "160 dependent checks skipped because of it" in summary, run.describe()
    # The skipped connection types are no root causes of their own; PING is off for this
    # server, so it has no host PING check at all.
    assert "SKIP (" not in summary and "host/ping" not in summary, run.describe()


def test_depends_on_gateway_down_skips_the_mail_host(dovecot: DovecotLab, tmp_path: Path) -> None:
    before = dovecot.login_counts()
    with closed_port("127.0.0.2") as gw_port:
        data = {
            "version": 1,
            "servers": [
                {"name": "gw", "host": "127.0.0.2", "tcp_ports": [gw_port]},
                _lab_server(dovecot, depends_on="gw"),
            ],
        }
        run = run_suite(write_targets(tmp_path / "gw-down.yaml", data), "-n", "0", workdir=tmp_path)
    assert run.returncode == 1, run.describe()
    assert run.case("host_tcp", "host:gw").verdict == "CRIT"
    mail = run.case("host_tcp", "host:mail")
    assert (mail.verdict, mail.outcome) == ("SKIP", "skipped")
    assert mail.reason.startswith("skipped: host gw is down (mail depends on it)")
    cts = _ct_cases(run)
    assert cts and all(c.verdict == "SKIP" and "host gw is down" in c.reason for c in cts)
    assert "hosts: gw down, blocking host:mail, mail:" in run.stdout, run.describe()
    assert dovecot.login_counts() == before  # nothing was sent to the mail host


def test_depends_on_gateway_up_probes_the_mail_host(dovecot: DovecotLab, tmp_path: Path) -> None:
    listener = Recorder("127.0.0.2")
    try:
        data = {
            "version": 1,
            "servers": [
                {"name": "gw", "host": "127.0.0.2", "tcp_ports": [listener.port]},
                _lab_server(dovecot, depends_on=["gw"]),
            ],
        }
        run = run_suite(write_targets(tmp_path / "gw-up.yaml", data), "-n", "0", workdir=tmp_path)
    finally:
        listener.close()
    assert run.returncode == 0, run.describe()
    assert run.case("host_tcp", "host:gw").verdict == "OK"
    assert run.case("host_tcp", "host:mail").verdict == "OK"
    assert run.case("tcp", f"mail:{dovecot.port('pop3s')}-tls").verdict == "OK"


def test_xdist_checks_each_host_once(dovecot: DovecotLab, tmp_path: Path) -> None:
    listener = Recorder()
    try:
        data = {
            "version": 1,
            "servers": [
                {"name": "gw", "host": "127.0.0.3", "tcp_ports": [listener.port]},
                _lab_server(dovecot, depends_on=["gw"]),
            ],
        }
        targets = write_targets(tmp_path / "xdist.yaml", data)
        run = run_suite(targets, "-n", "2", workdir=tmp_path)
    finally:
        listener.close()
    assert run.returncode == 0, run.describe()
    assert run.case("host_tcp", "host:gw").verdict == "OK"
    # Two workers, three host tests and every tier test of two connection types: the
    # gateway's one port was connected to once in the whole run.
    assert listener.accepted == 1, run.describe()


def test_single_connection_server_has_no_host_check(tmp_path: Path) -> None:
    path = write_targets(
        tmp_path / "t.yaml",
        {
            "version": 1,
            "defaults": {"auth": "none"},
            "servers": [
                {"name": "solo", "host": "127.0.0.1", "connections": [{"security": "tls"}]},
                {
                    "name": "pinged",
                    "host": "127.0.0.1",
                    "ping": True,
                    "connections": [{"security": "tls"}],
                },
            ],
        },
    )
    hosts = load_targets(path).hosts
    assert [h.name for h in hosts] == ["pinged"]
    assert hosts[0].ports == (995,) and hosts[0].connections == ("pinged:995-tls",)


def test_smtp_connection_types_count_toward_the_host(tmp_path: Path) -> None:
    """A POP3 and an SMTP connection type on one server: one host check whose TCP tries
    both ports; an SMTP-only server with two ports has one too."""
    path = write_targets(
        tmp_path / "t.yaml",
        {
            "version": 1,
            "defaults": {"auth": "none"},
            "servers": [
                {
                    "name": "mixed",
                    "host": "127.0.0.1",
                    "connections": [{"security": "tls"}],
                    "smtp": [{"port": 25, "security": "starttls-optional"}],
                },
                {
                    "name": "mx",
                    "host": "127.0.0.1",
                    "smtp": [
                        {"port": 25, "security": "starttls-optional"},
                        {"port": 465, "security": "tls"},
                    ],
                },
            ],
        },
    )
    hosts = {h.name: h for h in load_targets(path).hosts}
    assert sorted(hosts) == ["mixed", "mx"]
    assert sorted(hosts["mixed"].ports) == [25, 995] and len(hosts["mixed"].connections) == 2
    assert sorted(hosts["mx"].ports) == [25, 465]
