"""Host tier: the PING and TCP checks of one server entry (host), and what a connection type
reads when its host is down (every check SKIPs, ``blocked_by`` the host check).

A host has at most one CRIT: PING when it fails (TCP is then not tried and SKIPs), else TCP
when no port accepts. A host behind a dependency that is down SKIPs both, naming that root
once; when the root's own host checks are not selected, this host's TCP check reports it
(as :func:`~pop3mon.checks.evaluate_selected` does for a deselected root in one probe).
"""

from __future__ import annotations

from collections.abc import Collection

from ..engine.hosts import HostResult, HostSpec
from ..engine.result import ProbeResult, StageOutcome
from ..engine.stages import CHECKS, HOST_TIER, HostCheck, Tier
from .base import CRIT, OK, SKIP, CheckResult, ms
from .latency import PREFIX

__all__ = ["blocked_connection", "host_check", "host_down_reason", "not_probed"]

_TIER_OF: dict[str, Tier] = {c.name: c.tier for c in CHECKS}


def host_down_reason(host: str, result: HostResult) -> str:
    """How every report names a host that is down, or the root a host is blocked by:
    ``host gw is down: ...`` (with ``(mail1 depends on it)`` for a blocked one)."""
    if result.status == "blocked":
        return f"host {result.root} is down ({host} depends on it): {result.reason}"
    return f"host {host} is down: {result.reason}"


def not_probed(ct_id: str, host: str, port: int, security: str, result: HostResult) -> ProbeResult:
    """The result of a connection type whose host is not up: nothing was sent, and the one
    failing "stage" is the host, so every check SKIPs naming it."""
    reason = host_down_reason(result.name, result)
    root = result.root or result.name
    return ProbeResult(
        id=ct_id,
        host=host,
        port=port,
        security=security,
        mechanism="",
        started_at=result.started_at,
        stages=(StageOutcome(HOST_TIER, "fail", "host-down", reason),),
        error_kind="host-down",
        error_stage=HOST_TIER,
        error_reason=reason,
        blocked_host=root,
    )


def blocked_connection(result: ProbeResult, check: str) -> CheckResult:
    """A check of a connection type that was not probed because its host is down."""
    tier: Tier = "latency" if check.startswith(PREFIX) else _TIER_OF.get(check, "connectivity")
    return CheckResult(tier, check, SKIP, f"skipped: {result.error_reason}", blocked_by=HOST_TIER)


def host_check(
    spec: HostSpec,
    result: HostResult,
    check: HostCheck,
    selected: Collection[str] = ("ping", "tcp"),
    root_selected: bool = True,
) -> CheckResult:
    """The verdict of host check ``check`` (``ping`` or ``tcp``) of one host.

    ``selected``: this host's host checks the run selected; ``root_selected``: whether the
    checks of the root a blocked host waits on are selected (else this host reports it).
    """
    if result.status == "blocked":
        cause = host_down_reason(spec.name, result)
        reporter = check == "tcp" or "tcp" not in selected
        if root_selected or not reporter:
            return CheckResult(HOST_TIER, check, SKIP, f"skipped: {cause}", blocked_by=HOST_TIER)
        note = f"(reported here: the checks of host:{result.root} are not selected)"
        return CheckResult(HOST_TIER, check, CRIT, f"{cause} {note}")
    if check == "ping":
        return _ping(spec, result)
    return _tcp(spec, result)


def _ping(spec: HostSpec, result: HostResult) -> CheckResult:
    info = result.ping
    if not spec.ping:
        return CheckResult(HOST_TIER, "ping", SKIP, "PING disabled for this server (ping: false)")
    if result.failed == "ping":
        return CheckResult(HOST_TIER, "ping", CRIT, result.reason)
    if info is None:
        return CheckResult(HOST_TIER, "ping", SKIP, "PING not sent")
    if info.status == "no-permission":
        return CheckResult(HOST_TIER, "ping", SKIP, info.reason)
    rtt = ms(info.rtt_seconds)
    return CheckResult(HOST_TIER, "ping", OK, f"echo reply in {rtt} ms", rtt, "ms")


def _tcp(spec: HostSpec, result: HostResult) -> CheckResult:
    if result.failed == "ping":
        return CheckResult(
            HOST_TIER, "tcp", SKIP, f"skipped: PING failed: {result.reason}", blocked_by="ping"
        )
    if result.failed == "tcp":
        return CheckResult(HOST_TIER, "tcp", CRIT, result.reason)
    if not result.ports:
        return CheckResult(HOST_TIER, "tcp", SKIP, "no TCP ports to check (tcp_ports: [])")
    open_ = [p for p in result.ports if p.open]
    closed = [p for p in result.ports if not p.open]
    said = ", ".join(f"{p.port} ({ms(p.seconds)} ms)" for p in open_)
    reason = f"{len(open_)} of {len(result.ports)} ports accept: {said}"
    if closed:
        # Not the host's failure: the connection types on those ports fail their own tcp.
        shut = "; ".join(f"{p.port}: {p.reason}" for p in closed)
        reason += f"; not accepting (their connection types report it): {shut}"
    return CheckResult(HOST_TIER, "tcp", OK, reason, ms(open_[0].seconds), "ms")
