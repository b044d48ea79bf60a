"""JUnit XML: what pop3mon adds to pytest's own ``--junitxml`` writer.

pytest writes one ``<testcase>`` per tier check and copies each report's ``user_properties``
into ``<testcase><properties>``; the ``check`` fixture already puts the verdict there. This
module adds the per-connection facts a CI page should show next to it (endpoint, phase
timings, certificate days left) and the suite-level properties (run id, targets hash, start
time, counts), which only the controller can write: ``record_testsuite_property`` does
nothing on xdist workers.

Format choice: ``junit_family=xunit2`` (pytest's default) keeps ``<testcase>`` attributes to
``classname``/``name``/``time``, which the strict Jenkins/Ant junit-10 schema requires.
The one extension is ``<properties>`` inside ``<testcase>``: Jenkins' JUnit plugin, GitLab
and the common GitHub actions accept (or ignore) it, and the self-tests check that the file
is otherwise valid against the unmodified junit-10.xsd.
"""

from __future__ import annotations

import time

from ..config import ConnectionType, Host
from ..engine.hosts import HostResult
from ..engine.result import ProbeResult
from ..engine.stages import HOST_ID_PREFIX
from .model import RunInfo, RunReport

__all__ = ["PREFIX", "suite_properties_finish", "suite_properties_start", "testcase_properties"]

PREFIX = "pop3mon_"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# The phases whose timing belongs next to each check's verdict. Copying every phase and the
# certificate onto all 16 testcases of a connection type made junit.xml (and pytest's
# in-memory copy of it) four times larger at 1000 connection types for no reader's benefit.
_CHECK_PHASES: dict[str, tuple[str, ...]] = {
    "dns": ("dns",),
    "ping": ("ping",),
    "tcp": ("connect",),
    "greeting": ("greeting",),
    "capa": ("capa", "capa_tls"),
    "stls": ("stls",),
    "handshake": ("tls", "tls_handshake"),
    "certificate": ("tls", "tls_handshake"),
    "expiry": (),
    "protocol": ("tls", "tls_handshake"),
    "login": ("auth",),
    "policy": ("auth",),
    "stat": ("stat",),
    "thresholds": ("stat",),
    "logout": ("quit",),
}


def testcase_properties(
    ct: ConnectionType, result: ProbeResult | None, tier: str = "", check: str = ""
) -> list[tuple[str, str | float]]:
    """Facts for the testcase of ``check`` of ``ct``: the endpoint, the total and the
    phases that check is about, and the certificate on TLS checks (plain str/float)."""
    props: list[tuple[str, str | float]] = [
        (PREFIX + "host", ct.host),
        (PREFIX + "port", str(ct.port)),
        (PREFIX + "security", ct.security),
    ]
    if result is None:
        return props
    wanted = {"total"}
    wanted.update(_CHECK_PHASES.get(check, ()))
    if check.startswith("latency-"):
        wanted.add(check.removeprefix("latency-"))
    if not check:  # no check known: every phase
        wanted.update(phase for phase, _ in result.phases)
    for phase, secs in result.phases:
        if phase in wanted:
            props.append((f"{PREFIX}phase_{phase}_ms", round(secs * 1000.0, 3)))
    cert = result.tls.cert if result.tls is not None else None
    if cert is not None and tier in ("tls", ""):
        props.append((PREFIX + "cert_days_left", round(cert.days_left, 2)))
        props.append((PREFIX + "cert_not_after", cert.not_after))
    return props


def host_testcase_properties(host: Host, result: HostResult | None) -> list[tuple[str, str]]:
    """Facts for the testcase of a host check: the host, its ports, its status and, for a
    blocked one, the root (the first failing host it depends on)."""
    props = [
        (PREFIX + "host", host.host),
        (PREFIX + "ports", " ".join(map(str, host.ports))),
        (PREFIX + "depends_on", " ".join(host.depends_on)),
    ]
    if result is not None:
        props.append((PREFIX + "host_status", result.status))
        if result.root:
            props.append((PREFIX + "root", HOST_ID_PREFIX + result.root))
    return props


def suite_properties_start(info: RunInfo) -> list[tuple[str, str]]:
    """Suite properties known when the session starts."""
    return [
        (PREFIX + "run_id", info.run_id),
        (PREFIX + "version", info.version),
        (PREFIX + "targets_file", info.targets_name),
        (PREFIX + "targets_sha256", info.targets_sha256),
        (PREFIX + "started", _iso(info.started)),
    ]


def suite_properties_finish(report: RunReport) -> list[tuple[str, str]]:
    """Suite properties known only at the end: duration, the verdict counts and, for a
    run that ended early, why (its checks that did not run are not testcases here)."""
    props = [(PREFIX + "duration_seconds", f"{report.info.duration:.3f}")]
    props += [(f"{PREFIX}checks_{v}", str(n)) for v, n in report.counts().items()]
    down = [h.host.id for h in report.hosts if h.status == "down"]
    if report.hosts:
        props.append((PREFIX + "hosts_down", " ".join(down)))
    if report.info.stopped:
        props += [
            (PREFIX + "stopped", report.info.stopped),
            (PREFIX + "not_run", str(report.not_run())),
        ]
    return props
