"""The HTML report's dependency tree: gateway → host → its connection types (a count per
verdict; each connection type is in the matrix, whose server group heads carry the host
check too), so a host that is down reads as one root with everything it took down under it.
Drawn only when a server has ``depends_on``: without one the group heads say it all."""

from __future__ import annotations

from collections.abc import Mapping

from ..verdict import VERDICT_CODES
from .html import badge, esc
from .model import ConnectionReport, HostReport, RunReport

__all__ = ["hosts_html"]


def hosts_html(report: RunReport) -> str:
    """A nested list of the host checks, dependencies outermost ("" without a
    ``depends_on``)."""
    if not any(h.host.depends_on for h in report.hosts):
        return ""
    by_name = {h.host.name: h for h in report.hosts}
    children: dict[str, list[HostReport]] = {}
    roots: list[HostReport] = []
    for hrep in report.hosts:
        parents = [d for d in hrep.host.depends_on if d in by_name]
        for parent in parents:
            children.setdefault(parent, []).append(hrep)
        if not parents:
            roots.append(hrep)
    conns = {c.ct.id: c for c in report.connections}
    items = "".join(_node(h, children, conns, set()) for h in roots)
    return (
        '<section class="p3m p3m-hosts"><h3>Hosts and dependencies</h3>'
        '<p class="p3m-muted">Each host is checked once per run (PING when on, TCP); when it '
        "is down, everything under it is skipped naming it.</p>"
        f'<ul class="p3m-tree">{items}</ul></section>'
    )


def _node(
    hrep: HostReport,
    children: Mapping[str, list[HostReport]],
    conns: Mapping[str, ConnectionReport],
    seen: set[str],
) -> str:
    host = hrep.host
    if host.name in seen:  # the loader rejects cycles; never draw one forever anyway
        return ""
    seen = {*seen, host.name}
    crit = next((r for r in hrep.records if r.verdict in ("CRIT", "ERROR")), None)
    why = f": {esc(crit.check)}: {esc(crit.reason)}" if crit is not None else ""
    label = (
        f'<li data-host="{esc(host.id)}" data-status="{esc(hrep.status)}">{badge(hrep.worst)} '
        f'<b>{esc(host.id)}</b> <span class="p3m-sub">{esc(host.host)} · '
        f"{esc(hrep.status)}</span>{why}"
    )
    inner = "".join(_node(c, children, conns, seen) for c in children.get(host.name, []))
    mine = [conns[i] for i in host.connections if i in conns]
    if mine:
        tally = ", ".join(
            f"{n} {v}" for v in VERDICT_CODES if (n := sum(1 for c in mine if c.worst == v))
        )
        plural = "s" if len(mine) != 1 else ""
        inner += (
            f'<li class="p3m-sub">{len(mine)} connection type{plural} ({esc(tally)}): '
            f'<a href="#pop3mon-matrix">matrix</a></li>'
        )
    return f"{label}<ul>{inner}</ul></li>" if inner else f"{label}</li>"
