"""HTML fragments that extend pytest-html's report.

pytest-html 4 renders its results table with JavaScript, but its summary section is plain
server-side HTML. So the part a mail admin reads first lives there and needs no script:

* an overview banner and a **matrix of connection types × tiers**, each cell coloured by
  the tier's worst verdict, its ``title`` listing every check and reason, and a column
  naming what needs attention;
* one ``<details>`` per connection type with every check and reason, the phase waterfall
  (inline SVG), certificate and TLS facts, capabilities before/after STLS, and the
  redacted protocol transcript.

The results table gets Verdict, Server, Connection, Tier and Key figure columns.

Escaping rule: every value that reaches HTML goes through :func:`esc`, which scrubs
secrets and HTML-escapes (quotes included, so it is safe inside attributes). pytest-html
inserts cells, extras and environment values with ``innerHTML`` without escaping them, so
nothing server-controlled may reach it raw.
"""

from __future__ import annotations

import hashlib
import html
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from ..engine.result import CertInfo, ProbeResult, TLSInfo
from ..engine.stages import TIERS
from ..history.model import CheckState
from ..verdict import VERDICT_CODES, Verdict, worst
from .html_style import STYLE
from .model import ConnectionReport, RunReport, scrub
from .recorder import CheckRecord, verdicts
from .svg import sparkline_svg, waterfall_svg

__all__ = [
    "STYLE",
    "anchor",
    "badge",
    "details_html",
    "esc",
    "header_cells",
    "key_figure",
    "overview_html",
    "reason_html",
    "row_cells",
]

TIER_LABELS: Mapping[str, str] = {
    "connectivity": "Connectivity",
    "tls": "TLS",
    "auth": "Auth",
    "mailbox": "Mailbox",
    "latency": "Latency",
    "drift": "Drift",
}
VERDICT_HINTS: Mapping[str, str] = {
    Verdict.OK: "passed",
    Verdict.WARN: "passes, but needs attention soon",
    Verdict.CRIT: "failed",
    Verdict.SKIP: "not applicable, or blocked by an earlier failure",
    Verdict.ERROR: "the test itself broke (see its log)",
}
_MAX_PROBLEMS = 3


def esc(value: object) -> str:
    """Scrub secrets from ``value`` and HTML-escape it (safe in text and attributes)."""
    return html.escape(scrub(str(value)), quote=True)


def badge(verdict: str) -> str:
    """A coloured verdict label (the colour never stands alone: the text says it too)."""
    v = Verdict.parse(verdict)
    return f'<span class="p3m-badge p3m-v-{v}" title="{esc(VERDICT_HINTS[v])}">{esc(v)}</span>'


def anchor(ct_id: str) -> str:
    """A stable HTML id for a connection type's details (ids may hold ':', '@', '+')."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", ct_id)
    return f"p3m-ct-{safe}-{hashlib.sha256(ct_id.encode()).hexdigest()[:6]}"


def _fmt_ms(ms: float) -> str:
    return f"{ms:.0f} ms" if ms >= 100 else (f"{ms:.1f} ms" if ms >= 1 else f"{ms:.2f} ms")


def key_figure(figure: float | None, unit: str) -> str:
    """A check's key figure as text: ``12.3 ms``, ``42 days`` (empty when there is none)."""
    if figure is None:
        return ""
    if unit == "ms":
        return _fmt_ms(figure)
    if unit == "days":
        return f"{figure:.0f} days"
    return f"{figure:g} {unit}".strip()


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


# -- the results table ---------------------------------------------------------------------
def header_cells(cells: list[str]) -> None:
    """Insert our columns into pytest-html's header (in place)."""
    cells.insert(1, '<th class="sortable" data-column-type="verdict">Verdict</th>')
    cells.insert(3, '<th class="sortable" data-column-type="server">Server</th>')
    cells.insert(4, '<th class="sortable" data-column-type="connection">Connection type</th>')
    cells.insert(5, '<th class="sortable" data-column-type="tier">Tier</th>')
    cells.insert(6, "<th>Key figure</th>")


def row_cells(cells: list[str], rec: CheckRecord | None) -> None:
    """Insert our cells into one results-table row (in place), matching :func:`header_cells`.

    ``rec`` is ``None`` for setup/teardown rows and tests outside pop3mon: they get empty
    cells so every row keeps the header's column count.
    """
    # pytest-html puts the node id into its cell unescaped; ids come from validated
    # configuration, but escaping here keeps that true whatever a future id may hold.
    test_id = re.fullmatch(r'<td class="col-testId">(.*)</td>', cells[1], re.S) if cells else None
    if test_id is not None:
        cells[1] = f'<td class="col-testId">{html.escape(test_id[1], quote=True)}</td>'
    if rec is None:
        values = ["", "", "", "", ""]
    else:
        values = [
            badge(rec.verdict),
            esc(rec.server),
            f'<a href="#{anchor(rec.ct)}">{esc(rec.ct)}</a>' if rec.ct else "",
            esc(f"{rec.tier}/{rec.check}"),
            esc(key_figure(rec.figure, rec.unit)),
        ]
    cells.insert(1, f'<td class="col-verdict">{values[0]}</td>')
    cells.insert(3, f'<td class="col-server">{values[1]}</td>')
    cells.insert(4, f'<td class="col-connection">{values[2]}</td>')
    cells.insert(5, f'<td class="col-tier">{values[3]}</td>')
    cells.insert(6, f'<td class="col-figure">{values[4]}</td>')


def reason_html(rec: CheckRecord) -> str:
    """The row extra: verdict, reason and a link to the connection type's details."""
    link = f' — <a href="#{anchor(rec.ct)}">details of {esc(rec.ct)}</a>' if rec.ct else ""
    return (
        f'<div class="p3m-reason-extra">{badge(rec.verdict)} '
        f"<b>{esc(rec.tier)}/{esc(rec.check)}</b>: {esc(rec.reason or 'no reason given')}"
        f"{link}</div>"
    )


# -- the overview (top of the summary) -------------------------------------------------------
def _cell(records: Sequence[CheckRecord]) -> str:
    if not records:
        return '<td class="p3m-cell p3m-v-SKIP" title="no checks of this tier ran">–</td>'
    verdict = worst(verdicts(records))
    tip = "\n".join(f"{r.check}: {r.verdict} — {r.reason}" for r in records)
    tally: dict[str, int] = {}
    for rec in records:
        tally[rec.verdict] = tally.get(rec.verdict, 0) + 1
    small = " · ".join(f"{n} {v}" for v, n in sorted(tally.items(), key=_tally_key))
    return (
        f'<td class="p3m-cell p3m-v-{esc(verdict)}" title="{esc(tip)}">{esc(verdict)}'
        f"<small>{esc(small)}</small></td>"
    )


def _tally_key(item: tuple[str, int]) -> int:
    order = (Verdict.ERROR, Verdict.CRIT, Verdict.WARN, Verdict.OK, Verdict.SKIP)
    return order.index(item[0]) if item[0] in order else 0


def _figures(conn: ConnectionReport) -> str:
    parts = []
    total = conn.latency_ms()
    if total is not None:
        parts.append(f"total {_fmt_ms(total)}")
    days = conn.cert_days_left()
    if days is not None:
        parts.append(f"cert expires in {days:.0f} days" if days >= 0 else "cert EXPIRED")
    return "<br>".join(esc(p) for p in parts) or '<span class="p3m-muted">–</span>'


def _problems(conn: ConnectionReport) -> str:
    problems = conn.problems()
    if not problems:
        if conn.worst == Verdict.OK:
            return '<span class="p3m-good">All checks passed</span>'
        return '<span class="p3m-muted">Nothing was checked</span>'
    items = [
        f"<li>{badge(r.verdict)} <b>{esc(r.tier)}/{esc(r.check)}</b>: {esc(r.reason)}</li>"
        for r in problems[:_MAX_PROBLEMS]
    ]
    more = len(problems) - _MAX_PROBLEMS
    if more > 0:
        items.append(f'<li class="p3m-muted"><a href="#{anchor(conn.ct.id)}">{more} more…</a></li>')
    return "<ul>" + "".join(items) + "</ul>"


def _news(report: RunReport) -> str:
    """What changed since the last run, counted: "2 new · 1 recovered · 3 drift"."""
    kinds = [c.kind for c in report.changes]
    parts = [
        f"{n} {label}"
        for label, n in (
            ("new", kinds.count("new") + kinds.count("worse")),
            ("recovered", kinds.count("recovered")),
            ("drift", kinds.count("drift")),
        )
        if n
    ]
    if report.history.status == "new":
        return "first run with history: this run is the baseline"
    return " · ".join(parts) + " since the last run" if parts else ""


def _banner(report: RunReport) -> str:
    conns = report.connections
    # What broke this run first: it is what the reader came for.
    fresh = {c.ct for c in report.changes if c.kind in ("new", "worse")}
    bad = sorted(
        (c for c in conns if c.worst in (Verdict.CRIT, Verdict.ERROR)),
        key=lambda c: c.ct.id not in fresh,
    )
    warn = [c for c in conns if c.worst == Verdict.WARN]
    overall = worst(c.worst for c in conns)
    if not conns:
        head = "No connection type was checked"
    elif bad:
        names = ", ".join(c.ct.id for c in bad[:4]) + (" …" if len(bad) > 4 else "")
        head = f"{len(bad)} of {len(conns)} connection types FAILING: {names}"
    elif warn:
        head = f"{len(warn)} of {len(conns)} connection types need attention (WARN)"
    else:
        head = f"All {len(conns)} connection types healthy"
    if bad and warn:
        head += f"; {len(warn)} more with warnings"
    info = report.info
    sub = f"{_when(info.started)} · run took {_duration(info.duration)} · run id {info.run_id}"
    news = _news(report)
    lead = f'<span class="p3m-news">{esc(news)}</span>' if news else ""
    return (
        f'<div class="p3m-banner p3m-v-{esc(overall)}" role="status">{lead}{esc(head)}'
        f"<small>{esc(sub)}</small></div>"
    )


# -- history (states over runs) --------------------------------------------------------------
_BAD: Final = frozenset({Verdict.WARN, Verdict.CRIT, Verdict.ERROR})


def _ct_states(report: RunReport, conn: ConnectionReport) -> list[CheckState]:
    return [s for r in conn.records if (s := report.states.get((conn.ct.id, r.check)))]


def change_mark(report: RunReport, conn: ConnectionReport) -> str:
    """ "NEW" when a check of ``conn`` failed for the first time this run, "RECOVERED"
    when one recovered (and none is new); "" without a history or a change."""
    states = _ct_states(report, conn)
    if any(s.new and s.verdict in _BAD for s in states):
        return '<span class="p3m-mark p3m-mark-new">NEW</span>'
    if any(s.new and s.verdict == Verdict.OK and s.previous in _BAD for s in states):
        return '<span class="p3m-mark p3m-mark-recovered">RECOVERED</span>'
    return ""


def history_html(report: RunReport, conn: ConnectionReport) -> str:
    """The connection type over time: its state and since when, the last change,
    availability over 24 h / 7 d / 30 d, total latency over the last runs and the drift
    found this run (before → after). Empty without a history."""
    hist = report.history
    states = _ct_states(report, conn)
    if not states:
        return ""
    ct = conn.ct.id
    bad = [s for s in states if s.verdict in _BAD]
    if bad:
        # The oldest streak of the worst verdict: "CRIT since <time>" is what was broken.
        top = worst(s.verdict for s in bad)
        oldest = min((s for s in bad if s.verdict == top), key=lambda s: s.since)
        soft = " (soft)" if oldest.hardness == "soft" else ""
        runs = f"{oldest.runs} run{'s' if oldest.runs != 1 else ''}"
        state = (
            f"{badge(top)}{esc(soft)} since {esc(_when(oldest.since))} · {runs}"
            f" ({esc(oldest.check)})"
        )
    else:
        since = max(s.since for s in states)
        state = f"{badge(Verdict.OK)} since {esc(_when(since))}"
    if hist.flapping.get(ct):
        state += ' <span class="p3m-mark p3m-mark-new">FLAPPING (changes held)</span>'
    # A change that moved a verdict that matters (a drift check getting its first baseline,
    # SKIP → OK, is not news).
    moved = [
        s
        for s in states
        if s.previous is not None
        and Verdict.SKIP not in (s.previous, s.verdict)
        and s.previous != s.verdict
    ]
    last = max(moved, key=lambda s: s.since) if moved else None
    change = (
        f"{esc(last.check)}: {badge(last.previous or '')} → {badge(last.verdict)} at "
        f"{esc(_when(last.since))}"
        if last is not None
        else "none recorded"
    )
    avail = hist.availability.get(ct, {})
    ratios = " · ".join(
        f"{esc(label)} {'—' if ratio is None else f'{ratio * 100:.1f} %'}"
        for label, ratio in avail.items()
    )
    rows = [("State", state), ("Last change", change), ("Availability", ratios or "—")]
    series = hist.series.get(ct, ())
    if len(series) > 1:
        rows.append(
            (
                f"Total latency, last {len(series)} runs",
                sparkline_svg(series, f"total latency of {scrub(ct)} over its last runs"),
            )
        )
    drift = [r for r in conn.records if r.tier == "drift" and r.verdict in _BAD]
    body = _kv(rows)
    if drift:
        items = "".join(
            f"<li>{badge(r.verdict)} <strong>{esc(r.check)}</strong>: {esc(r.reason)}</li>"
            for r in drift
        )
        body += f'<h5>Drift since the baseline</h5><ul class="p3m-drift">{items}</ul>'
    return f"<section><h4>History</h4>{body}</section>"


def overview_html(report: RunReport) -> str:
    """Banner, counts, run facts, the connection × tier matrix and a legend."""
    info = report.info
    counts = report.counts()
    count_badges = " ".join(
        f'<span class="p3m-badge p3m-v-{v}">{n} {v}</span>' for v, n in counts.items()
    )
    head = "".join(f"<th>{esc(TIER_LABELS.get(t, t))}</th>" for t in TIERS)
    rows = []
    for conn in report.by_severity():
        ct = conn.ct
        endpoint = f"{ct.host}:{ct.port}"
        mode = f"{ct.security} · auth {ct.auth}"
        cells = "".join(_cell(conn.tier_records(t)) for t in TIERS)
        rows.append(
            f'<tr class="p3m-row" data-connection="{esc(ct.id)}" data-verdict="{esc(conn.worst)}">'
            f'<th scope="row"><a href="#{anchor(ct.id)}">{esc(ct.id)}</a>'
            f'<span class="p3m-sub">server {esc(ct.server)} · {badge(conn.worst)}'
            f"{change_mark(report, conn)}</span></th>"
            f'<td class="p3m-endpoint">{esc(endpoint)}<span class="p3m-sub">{esc(mode)}</span>'
            f"</td>{cells}"
            f'<td class="p3m-figures">{_figures(conn)}</td>'
            f'<td class="p3m-problems">{_problems(conn)}</td></tr>'
        )
    if not rows:
        rows.append('<tr><td colspan="9" class="p3m-muted">No checks ran.</td></tr>')
    legend = " ".join(f"{badge(v)} {esc(VERDICT_HINTS[v])}" for v in VERDICT_CODES)
    facts = (
        f"Targets <code>{esc(info.targets_name)}</code> (sha256 "
        f"<code>{esc(info.targets_sha256[:16])}…</code>) · pop3mon {esc(info.version)} · "
        f"{len(report.records)} checks on {len(report.connections)} connection types"
    )
    if report.not_selected:
        facts += f" · {len(report.not_selected)} connection types not selected in this run"
    if info.stopped:
        facts += f" · <strong>run {esc(info.stopped)}: {report.not_run()} checks not run</strong>"
    return (
        STYLE
        + '<section class="p3m" id="pop3mon-overview">'
        + _banner(report)
        + f'<div class="p3m-counts">{count_badges}</div>'
        + f'<p class="p3m-facts">{facts}</p>'
        + '<table class="p3m-matrix" id="pop3mon-matrix">'
        + '<caption class="p3m-muted" style="caption-side: bottom; text-align: left">'
        + "Each cell shows the worst verdict of that tier; hover it for every check and its "
        + "reason. Click a connection type for its details.</caption>"
        + f"<thead><tr><th>Connection type</th><th>Endpoint</th>{head}"
        + "<th>Key figures</th><th>What needs attention</th></tr></thead>"
        + "<tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + f'<p class="p3m-legend">{legend}</p>'
        + "</section>"
    )


# -- per connection type details ------------------------------------------------------------
def _kv(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="p3m-kv">{body}</table>'


def _checks_table(records: Sequence[CheckRecord]) -> str:
    if not records:
        return '<p class="p3m-muted">No checks of this connection type ran.</p>'
    rows = "".join(
        f'<tr class="p3m-r-{esc(r.verdict)}"><td>{esc(r.tier)}</td><td>{esc(r.check)}</td>'
        f"<td>{badge(r.verdict)}</td>"
        f"<td>{esc(key_figure(r.figure, r.unit))}</td>"
        f'<td class="p3m-reason">{esc(r.reason)}</td></tr>'
        for r in records
    )
    return (
        '<table class="p3m-checks"><thead><tr><th>Tier</th><th>Check</th><th>Verdict</th>'
        f"<th>Figure</th><th>Reason</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _cert_rows(tls: TLSInfo, cert: CertInfo | None) -> list[tuple[str, str]]:
    rows = [
        ("Protocol", esc(tls.protocol or "–")),
        ("Cipher", esc(tls.cipher or "–")),
        ("SNI", esc(tls.sni or "–")),
        (
            "Verified",
            badge(Verdict.OK)
            if tls.verified
            else f"{badge(Verdict.CRIT)} {esc(tls.verify_reason)}",
        ),
    ]
    if cert is None:
        return [*rows, ("Certificate", '<span class="p3m-muted">none presented</span>')]
    days = f"{cert.days_left:.1f}"
    return [
        *rows,
        ("Subject", esc(cert.subject)),
        ("Issuer", esc(cert.issuer)),
        ("SANs", esc(", ".join(cert.sans) or "–")),
        ("Not before", esc(cert.not_before)),
        ("Not after", esc(f"{cert.not_after} ({days} days left)")),
        ("Serial", f"<code>{esc(cert.serial)}</code>"),
        ("SHA-256", f"<code>{esc(cert.sha256)}</code>"),
        ("Self-signed", esc("yes" if cert.self_signed else "no")),
    ]


def _caps(result: ProbeResult) -> str:
    before = result.capabilities_before
    after = result.capabilities_after
    if before is None and after is None:
        return '<p class="p3m-muted">CAPA was not answered.</p>'

    def listing(caps: Sequence[str] | None, other: Sequence[str] | None, mark: str) -> str:
        if caps is None:
            return '<p class="p3m-muted">not asked</p>'
        items = []
        for cap in caps:
            cls = f' class="p3m-{mark}"' if other is not None and cap not in other else ""
            items.append(f"<li{cls}>{esc(cap)}</li>")
        return '<ul class="p3m-caps">' + "".join(items) + "</ul>"

    if result.security == "tls":
        # Implicit TLS: there is no "before"; the first CAPA already ran over TLS.
        return "<h4>Over TLS</h4>" + listing(before, None, "gone")
    first = "Plaintext (no TLS)" if result.security == "none" else "Before TLS"
    out = f"<h4>{first}</h4>" + listing(before, after, "gone")
    if after is not None or result.security in ("starttls", "starttls-optional"):
        out += "<h4>After STLS</h4>" + listing(after, before, "new")
        if before is not None and after is not None:
            out += (
                '<p class="p3m-muted">Struck through: offered only before TLS; bold: only '
                "after TLS.</p>"
            )
    return out


def _transcript(result: ProbeResult) -> str:
    if not result.transcript:
        return '<p class="p3m-muted">No dialogue was recorded.</p>'
    lines = []
    for line in result.transcript:
        cls = "p3m-c" if line.direction == "C" else "p3m-s"
        who = "C:" if line.direction == "C" else "S:"
        lines.append(f'<span class="{cls}">{line.t * 1000:8.1f} ms {who} {esc(line.text)}</span>')
    return '<pre class="p3m-transcript">' + "\n".join(lines) + "</pre>"


def _connection_rows(conn: ConnectionReport) -> list[tuple[str, str]]:
    ct = conn.ct
    rows = [
        ("Server", esc(ct.server)),
        ("Endpoint", esc(f"{ct.host}:{ct.port}")),
        ("Security", esc(ct.security)),
        ("Auth (configured)", esc(ct.auth)),
    ]
    result = conn.result
    if result is None:
        return [*rows, ("Probe", '<span class="p3m-muted">no probe result</span>')]
    rows += [
        ("Addresses", esc(", ".join(result.addresses) or "–")),
        ("Peer", esc(result.peer or "–")),
        ("Greeting", esc(result.greeting or "–")),
    ]
    if result.auth is not None:
        auth = result.auth
        chosen = f"{auth.mechanism or '–'} ({auth.strength or 'n/a'})"
        chosen += ", encrypted" if auth.encrypted else ", NOT encrypted"
        rows.append(("Auth (used)", esc(chosen)))
        rows.append(("Login", badge(Verdict.OK) if auth.success else esc(auth.reason or "failed")))
    if result.mailbox is not None:
        box = result.mailbox
        rows.append(("Mailbox", esc(f"{box.count} messages, {box.size} octets")))
    if result.error_kind:
        rows.append(
            (
                "Probe error",
                f"{badge(Verdict.CRIT)} "
                + esc(f"{result.error_stage}: {result.error_reason} [{result.error_kind}]"),
            )
        )
    return rows


def _summary_line(conn: ConnectionReport) -> str:
    ct = conn.ct
    first = conn.problems()[:1]
    tail = f" — {esc(first[0].reason)}" if first else ""
    return (
        f"{badge(conn.worst)} <b>{esc(ct.id)}</b> "
        f'<span class="p3m-muted">{esc(f"{ct.host}:{ct.port} · {ct.security} · auth {ct.auth}")}'
        f"</span>{tail}"
    )


def details_html(report: RunReport) -> list[str]:
    """One collapsible ``<details>`` per connection type (problems open by default)."""
    out = ['<section class="p3m" id="pop3mon-details"><h3>Connection types in detail</h3>']
    for conn in report.by_severity():
        result = conn.result
        is_open = " open" if conn.worst in (Verdict.CRIT, Verdict.WARN, Verdict.ERROR) else ""
        facts = ["<section><h4>Connection</h4>" + _kv(_connection_rows(conn)) + "</section>"]
        history = history_html(report, conn)
        if history:
            facts.insert(0, history)
        wide: list[str] = []
        if result is not None:
            if result.tls is not None:
                facts.append(
                    "<section><h4>TLS and certificate</h4>"
                    + _kv(_cert_rows(result.tls, result.tls.cert))
                    + "</section>"
                )
            elif conn.ct.security != "none":
                facts.append(
                    '<section><h4>TLS and certificate</h4><p class="p3m-muted">No TLS session '
                    "was established.</p></section>"
                )
            facts.append("<section><h4>Capabilities</h4>" + _caps(result) + "</section>")
            latency = {
                r.check.removeprefix("latency-"): r.verdict
                for r in conn.records
                if r.tier == "latency"
            }
            wide.append(
                "<h4>Phase timings</h4>"
                + waterfall_svg(result, latency, f"Phase timings of {scrub(conn.ct.id)}")
            )
            wide.append("<h4>Protocol transcript (credentials redacted)</h4>" + _transcript(result))
        out.append(
            f'<details class="p3m-ct p3m-b-{esc(conn.worst)}" id="{anchor(conn.ct.id)}"'
            f"{is_open}><summary>{_summary_line(conn)}</summary>"
            '<div class="p3m-ct-body">'
            f"<h4>Checks</h4>{_checks_table(conn.records)}"
            f'<div class="p3m-grid">{"".join(facts)}</div>'
            f"{''.join(wide)}</div></details>"
        )
    if report.unattributed:
        out.append("<h3>Checks without a connection type</h3>")
        out.append(_checks_table(report.unattributed))
    out.append("</section>")
    return out
