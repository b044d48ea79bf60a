"""The HTML report's dependency tree: gateway → host → connection types, each with its
verdict, so a host that is down reads as one root with everything it took down under it."""

from __future__ import annotations

from collections.abc import Mapping

from .html import anchor, badge, esc
from .model import ConnectionReport, HostReport, RunReport

__all__ = ["hosts_html"]


def hosts_html(report: RunReport) -> str:
    """A nested list of the host checks, dependencies outermost ("" without hosts)."""
    if not report.hosts:
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
    for ct_id in host.connections:
        conn = conns.get(ct_id)
        if conn is None:
            continue
        inner += (
            f'<li data-connection="{esc(ct_id)}">{badge(conn.worst)} '
            f'<a href="#{anchor(ct_id)}">{esc(ct_id)}</a></li>'
        )
    return f"{label}<ul>{inner}</ul></li>" if inner else f"{label}</li>"
