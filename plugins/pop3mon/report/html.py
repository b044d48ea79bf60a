"""HTML fragments that extend pytest-html's report.

pytest-html 4 renders its results table with JavaScript, but its summary section is plain
server-side HTML. So the part a mail admin reads first lives there and needs no script:

* an overview banner and a **matrix of connection types × tiers**, each cell coloured by
  the tier's worst verdict, its ``title`` listing every check and reason, and a column
  naming what needs attention;
* one ``<details>`` per connection type with every check and reason, the phase waterfall
  (inline SVG), certificate and TLS facts, capabilities before/after STLS, and the
  redacted protocol transcript.

pytest-html's results table keeps only the rows the page does not explain otherwise
(:func:`keeps_row`), with Verdict, Server, Connection, Tier and Key figure columns: at 100
connection types its per-check rows were three quarters of a 4.7 MB page.

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
from ..engine.stages import COVERAGE_TIER, PHASE_LABELS, TIERS
from ..history.model import CheckState
from ..verdict import VERDICT_CODES, Verdict, worst
from .html_style import SCRIPT, STYLE
from .model import ConnectionReport, RunReport, scrub
from .recorder import CheckRecord, verdicts
from .svg import sparkline_svg, waterfall_svg

__all__ = [
    "STYLE",
    "anchor",
    "badge",
    "details_html",
    "end_reason",
    "esc",
    "finish_page",
    "header_cells",
    "keeps_row",
    "key_figure",
    "overview_html",
    "reason_html",
    "results_table_note",
    "row_cells",
    "tier_anchor",
]

TIER_LABELS: Mapping[str, str] = {
    "connectivity": "Connectivity",
    "tls": "TLS",
    "auth": "Auth",
    "mailbox": "Mailbox",
    "latency": "Latency",
    "drift": "Drift",
    "coverage": "Coverage",
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


def badge(verdict: str, hint: bool = True) -> str:
    """A coloured verdict label (the colour never stands alone: the text says it too).

    ``hint=False`` leaves out the tooltip saying what the verdict means: badges repeated
    once per check (the legend says it once) would otherwise add ~60 bytes each.
    """
    v = Verdict.parse(verdict)
    tip = f' title="{esc(VERDICT_HINTS[v])}"' if hint else ""
    return f'<span class="p3m-badge p3m-v-{v}"{tip}>{esc(v)}</span>'


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


def keeps_row(rec: CheckRecord | None) -> bool:
    """Whether pytest-html's results table keeps a test's row.

    A check's row repeated what the matrix and the details say, and made up three quarters
    of the page (pytest-html keeps every row, its extras and its log in one JSON blob:
    ~2 KB per check). Only rows the rest of the page does not explain stay: a test that
    broke (ERROR, its log is the point) and tests that are not pop3mon's.
    """
    return rec is None or rec.verdict == Verdict.ERROR


def results_table_note(rows: int, checks: int) -> str:
    """The heading of pytest-html's table (placed right above it), or, without any row
    left, a line saying where the checks are and CSS that hides the empty table."""
    if rows == 0:
        return (
            '<p class="p3m p3m-muted" id="pop3mon-tests">Every one of the '
            f"{checks} checks is in the matrix and in its connection type's details above; "
            "no test broke, so pytest-html's per-test table is left out.</p>"
            "<style>#results-table, .summary .controls, .summary p.filter "
            "{ display: none; }</style>"
        )
    plural = "s" if rows != 1 else ""
    return (
        f'<section class="p3m" id="pop3mon-tests"><h3>pytest-html\'s table: {rows} '
        f"row{plural}</h3>"
        '<p class="p3m-muted">The table below lists only tests whose check gave no verdict '
        "(ERROR) and tests that are not pop3mon's, with their logs; all "
        f"{checks} checks are in the matrix and the details above.</p></section>"
    )


#: pytest-html's template has no viewport meta: a phone would lay the page out 980 px wide.
VIEWPORT = '<meta name="viewport" content="width=device-width, initial-scale=1">'


def finish_page(text: str) -> str:
    """pytest-html's finished page with the viewport meta in its ``<head>``."""
    if VIEWPORT in text:
        return text
    head = re.search(r"<meta charset=[^>]*>", text)
    if head is None:
        return text.replace("<head>", "<head>" + VIEWPORT, 1)
    return text[: head.end()] + VIEWPORT + text[head.end() :]


def reason_html(rec: CheckRecord) -> str:
    """The row extra: verdict, reason and a link to the connection type's details."""
    link = f' — <a href="#{anchor(rec.ct)}">details of {esc(rec.ct)}</a>' if rec.ct else ""
    return (
        f'<div class="p3m-reason-extra">{badge(rec.verdict)} '
        f"<b>{esc(rec.tier)}/{esc(rec.check)}</b>: {esc(rec.reason or 'no reason given')}"
        f"{link}</div>"
    )


# -- the overview (top of the summary) -------------------------------------------------------
def tier_anchor(ct_id: str, tier: str) -> str:
    """The HTML id of a tier's check that its matrix cell links to (in the details)."""
    return f"{anchor(ct_id)}-{tier}"


def _tier_target(records: Sequence[CheckRecord]) -> CheckRecord | None:
    """The check a tier's cell links to: the first with the tier's worst verdict."""
    if not records:
        return None
    top = worst(verdicts(records))
    return next(r for r in records if r.verdict == top)


def _cell(ct_id: str, tier: str, records: Sequence[CheckRecord]) -> str:
    if not records:
        return '<td class="p3m-cell p3m-v-SKIP" title="no checks of this tier ran">–</td>'
    verdict = worst(verdicts(records))
    # Problems with their reasons; the rest by verdict and name only (every reason is one
    # click away, and repeating the SKIP and OK reasons here cost ~1 KB per row).
    lines = [f"{r.check}: {r.verdict} — {r.reason}" for r in records if r.verdict in _BAD]
    for v in (Verdict.SKIP, Verdict.OK):
        names = [r.check for r in records if r.verdict == v]
        if names:
            lines.append(f"{v}: {', '.join(names)}")
    tally: dict[str, int] = {}
    for rec in records:
        tally[rec.verdict] = tally.get(rec.verdict, 0) + 1
    small = " · ".join(f"{n} {v}" for v, n in sorted(tally.items(), key=_tally_key))
    return (
        f'<td class="p3m-cell p3m-v-{esc(verdict)}" title="{esc(chr(10).join(lines))}">'
        f'<a href="#{tier_anchor(ct_id, tier)}">{esc(verdict)}<small>{esc(small)}</small></a></td>'
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


def _find(conn: ConnectionReport) -> str:
    """What the filter box matches besides id, server, endpoint and worst verdict: every
    problem as ``verdict:tier/check`` (``warn`` finds a WARN under a worse CRIT, ``expiry``
    an expiry problem), as an attribute (empty when there is none)."""
    words = sorted({f"{r.verdict}:{r.tier}/{r.check}".lower() for r in conn.problems()})
    return f' data-find="{esc(" ".join(words))}"' if words else ""


def _problems(conn: ConnectionReport) -> str:
    problems = conn.problems()
    if not problems:
        if conn.worst == Verdict.OK:
            return '<span class="p3m-good">All checks passed</span>'
        return '<span class="p3m-muted">Nothing was checked</span>'
    items = [
        f"<li>{badge(r.verdict, hint=False)} <b>{esc(r.tier)}/{esc(r.check)}</b>: "
        f"{esc(r.reason)}</li>"
        for r in problems[:_MAX_PROBLEMS]
    ]
    more = len(problems) - _MAX_PROBLEMS
    if more > 0:
        items.append(f'<li class="p3m-muted"><a href="#{anchor(conn.ct.id)}">{more} more…</a></li>')
    return "<ul>" + "".join(items) + "</ul>"


def _news(report: RunReport) -> str:
    """What changed since the last run, counted: "2 new · 1 recovered · 3 drift"."""
    hist = report.history
    # In a merge, a vantage's first run (a new baseline) hides none of the others' news.
    kinds = [
        c.kind for c in report.changes if not (c.before is None and c.vantage in hist.baselines)
    ]
    parts = [
        f"{n} {label}"
        for label, n in (
            ("new", kinds.count("new") + kinds.count("worse")),
            ("recovered", kinds.count("recovered")),
            ("drift", kinds.count("drift")),
        )
        if n
    ]
    news = " · ".join(parts) + " since the last run" if parts else ""
    if hist.baselines:
        first = f"first run with history from {', '.join(sorted(hist.baselines))}"
        return f"{news}; {first}" if news else first
    if hist.status == "new":
        return "first run with history: this run is the baseline"
    return news


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
    if info.label():
        sub += f" · {info.label()}"
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
        # Merged from several vantages: whose history this streak is.
        whose = f", from {oldest.vantage}" if oldest.vantage is not None else ""
        state = (
            f"{badge(top, hint=False)}{esc(soft)} since {esc(_when(oldest.since))} · {runs}"
            f" ({esc(oldest.check + whose)})"
        )
    else:
        since = max(s.since for s in states)
        state = f"{badge(Verdict.OK, hint=False)} since {esc(_when(since))}"
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


def _matrix_row(report: RunReport, conn: ConnectionReport) -> str:
    ct = conn.ct
    endpoint = f"{ct.host}:{ct.port}"
    mode = f"{ct.security} · auth {ct.auth}"
    cells = "".join(_cell(ct.id, t, conn.tier_records(t)) for t in TIERS)
    return (
        f'<tr class="p3m-row" data-connection="{esc(ct.id)}" data-verdict="{esc(conn.worst)}"'
        f"{_find(conn)}>"
        f'<th scope="row"><a href="#{anchor(ct.id)}">{esc(ct.id)}</a>'
        f'<span class="p3m-sub">{badge(conn.worst, hint=False)}'
        f"{change_mark(report, conn)}</span></th>"
        f'<td class="p3m-endpoint">{esc(endpoint)}<span class="p3m-sub">{esc(mode)}</span>'
        f"</td>{cells}"
        f'<td class="p3m-figures">{_figures(conn)}</td>'
        f'<td class="p3m-problems">{_problems(conn)}</td></tr>'
    )


def _groups(report: RunReport) -> list[tuple[str, list[ConnectionReport]]]:
    """Connection types by server, the server with the worst connection type first; each
    group most severe first (:meth:`RunReport.by_severity`)."""
    groups: dict[str, list[ConnectionReport]] = {}
    for conn in report.by_severity():
        groups.setdefault(conn.ct.server, []).append(conn)
    # by_severity() already put the worst connection type of all first: keep that order.
    return list(groups.items())


def _host_note(report: RunReport, server: str) -> str:
    """The server's host check in its group head: verdict, status, why it is down or
    which host it is behind ("" for a server without a host check)."""
    hrep = next((h for h in report.hosts if h.host.name == server), None)
    if hrep is None:
        return ""
    note = f" · host check {badge(hrep.worst, hint=False)} {esc(hrep.status)}"
    failed = next((r for r in hrep.records if r.verdict in (Verdict.CRIT, Verdict.ERROR)), None)
    if failed is not None:
        note += f" ({esc(failed.check)}: {esc(failed.reason)})"
    elif hrep.result is not None and hrep.result.root:
        note += f" behind <b>{esc(hrep.result.root)}</b>"
    if hrep.host.depends_on:
        note += f" · depends on {esc(', '.join(hrep.host.depends_on))}"
    return note


def _coverage_row(report: RunReport, server: str) -> str:
    """The server's coverage checks (``coverage:`` on) as one row under its group head:
    each check's verdict and reason, which names every unmonitored host:port ("" when the
    server has none)."""
    crep = next((c for c in report.coverage if c.coverage.name == server), None)
    if crep is None or not crep.records:
        return ""
    items = "".join(
        f"<li>{badge(r.verdict, hint=False)} <strong>{esc(r.check)}</strong>: {esc(r.reason)}</li>"
        for r in crep.records
    )
    return (
        f'<tr class="p3m-coverage" data-coverage="{esc(crep.coverage.id)}" '
        f'data-verdict="{esc(crep.worst)}"><th scope="row">{esc(TIER_LABELS[COVERAGE_TIER])}'
        f'<span class="p3m-sub">{badge(crep.worst, hint=False)}</span></th>'
        f'<td colspan="{len(TIERS) + 3}"><ul class="p3m-coverage-list">{items}</ul></td></tr>'
    )


def _group_head(report: RunReport, server: str, conns: Sequence[ConnectionReport]) -> str:
    hosts = sorted({c.ct.host for c in conns})
    where = ", ".join(hosts[:3]) + (f" and {len(hosts) - 3} more" if len(hosts) > 3 else "")
    tally = " · ".join(
        f"{n} {v}" for v in VERDICT_CODES if (n := sum(1 for c in conns if c.worst == v))
    )
    plural = "s" if len(conns) != 1 else ""
    return (
        f'<tr class="p3m-group-head"><th colspan="{len(TIERS) + 4}" scope="rowgroup">'
        f"Server <b>{esc(server)}</b> · {esc(where)} · {len(conns)} connection type{plural}: "
        f"{esc(tally)}{_host_note(report, server)}</th></tr>"
    )


def overview_html(report: RunReport) -> str:
    """Banner, counts, run facts, a filter, the connection × tier matrix grouped by server
    and a legend (and the small script for the filter and the links into the details)."""
    info = report.info
    counts = report.counts()
    count_badges = " ".join(
        f'<span class="p3m-badge p3m-v-{v}">{n} {v}</span>' for v, n in counts.items()
    )
    head = "".join(f"<th>{esc(TIER_LABELS.get(t, t))}</th>" for t in TIERS)
    bodies = []
    for server, conns in _groups(report):
        rows = "".join(_matrix_row(report, conn) for conn in conns)
        bodies.append(
            f'<tbody class="p3m-group" data-server="{esc(server)}">'
            f"{_group_head(report, server, conns)}{_coverage_row(report, server)}{rows}</tbody>"
        )
    if not bodies:
        bodies.append(
            f'<tbody><tr><td colspan="{len(TIERS) + 4}" class="p3m-muted">No checks ran.'
            "</td></tr></tbody>"
        )
    legend = " ".join(f"{badge(v)} {esc(VERDICT_HINTS[v])}" for v in VERDICT_CODES)
    facts = (
        f"Targets <code>{esc(info.targets_name)}</code> (sha256 "
        f"<code>{esc(info.targets_sha256[:16])}…</code>) · pop3mon {esc(info.version)} · "
        f"{len(report.records)} checks on {len(report.connections)} connection types"
    )
    if report.hosts:
        facts += f" and {len(report.hosts)} hosts (host checks: PING, TCP)"
    if report.coverage:
        facts += f" · coverage checked on {len(report.coverage)} servers"
    if report.not_selected:
        facts += f" · {len(report.not_selected)} connection types not selected in this run"
    if info.stopped:
        facts += f" · <strong>run {esc(info.stopped)}: {report.not_run()} checks not run</strong>"
    # The filter needs the script: without JavaScript it stays hidden (the script shows it).
    search = (
        '<div class="p3m-search" id="p3m-search" hidden><label for="p3m-filter">Filter</label> '
        '<input type="search" id="p3m-filter" autocomplete="off" spellcheck="false" '
        'placeholder="id, server, host or verdict, e.g. CRIT or mail1">'
        '<span class="p3m-muted" id="p3m-shown" aria-live="polite"></span></div>'
    )
    return (
        STYLE
        + '<section class="p3m" id="pop3mon-overview">'
        + _banner(report)
        + f'<div class="p3m-counts">{count_badges}</div>'
        + f'<p class="p3m-facts">{facts}</p>'
        + search
        + '<div class="p3m-scroll p3m-matrix-wrap">'
        + '<table class="p3m-matrix" id="pop3mon-matrix">'
        + f"<thead><tr><th>Connection type</th><th>Endpoint</th>{head}"
        + "<th>Key figures</th><th>What needs attention</th></tr></thead>"
        + "".join(bodies)
        + "</table></div>"
        + '<p class="p3m-muted">Each cell shows the worst verdict of that tier; hover it for '
        + "its checks, click it to open the check in the details below.</p>"
        + f'<p class="p3m-legend">{legend}</p>'
        + "</section>"
        + SCRIPT
    )


# -- per connection type details ------------------------------------------------------------
# The details' tables leave out the end tags HTML lets a table row and cell omit
# (</td>, </tr>): a page holds ~40 such rows per connection type, and at 1000 connection
# types the end tags alone were ~0.7 MB.
def _kv(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}<td>{v}" for k, v in rows)
    return f'<table class="p3m-kv">{body}</table>'


def _checks_table(records: Sequence[CheckRecord], ct_id: str = "") -> str:
    """Every check of a connection type, a tier's name once (its rows spanned), and checks
    of a tier in a row with the same verdict, figure and reason in one row (four drift
    checks "no baseline yet" are one line). The check each matrix cell links to carries
    that cell's :func:`tier_anchor` id."""
    if not records:
        return '<p class="p3m-muted">No checks of this connection type ran.</p>'
    by_tier: dict[str, list[list[CheckRecord]]] = {}
    for rec in records:
        runs = by_tier.setdefault(rec.tier, [])
        last = runs[-1][-1] if runs else None
        same = last is not None and (last.verdict, last.figure, last.unit, last.reason) == (
            rec.verdict,
            rec.figure,
            rec.unit,
            rec.reason,
        )
        if same:
            runs[-1].append(rec)
        else:
            runs.append([rec])
    rows = []
    for tier, runs in by_tier.items():
        target = _tier_target([r for run in runs for r in run]) if ct_id else None
        for i, run in enumerate(runs):
            r = run[0]
            ident = f' id="{tier_anchor(ct_id, tier)}"' if target in run else ""
            span = f' rowspan="{len(runs)}"' if len(runs) > 1 else ""
            first = f"<td{span}>{esc(tier)}" if i == 0 else ""
            rows.append(
                f"<tr{ident}>{first}<td>{esc(', '.join(x.check for x in run))}"
                f'<td class="p3m-v-{esc(r.verdict)}">{esc(r.verdict)}'
                f"<td>{esc(key_figure(r.figure, r.unit))}<td>{esc(r.reason)}"
            )
    return (
        '<div class="p3m-scroll"><table class="p3m-checks"><thead><tr><th>Tier</th>'
        "<th>Check</th><th>Verdict</th><th>Figure</th><th>Reason</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _cert_rows(
    tls: TLSInfo, cert: CertInfo | None, same_as: str | None = None
) -> list[tuple[str, str]]:
    """The TLS session's facts and the certificate's; a certificate already shown for the
    connection type ``same_as`` is a link to it (servers answer every port and account
    with one certificate: its ten rows, once per connection type, were ~0.5 KB each)."""
    rows = [
        ("Protocol", esc(tls.protocol or "–")),
        ("Cipher", esc(tls.cipher or "–")),
        ("SNI", esc(tls.sni or "–")),
        (
            "Verified",
            badge(Verdict.OK, hint=False)
            if tls.verified
            else f"{badge(Verdict.CRIT)} {esc(tls.verify_reason)}",
        ),
    ]
    if cert is None:
        return [*rows, ("Certificate", '<span class="p3m-muted">none presented</span>')]
    if same_as is not None:
        link = f'<a href="#{anchor(same_as)}">{esc(same_as)}</a>'
        return [*rows, ("Certificate", f"the same as {link} (SHA-256 {esc(cert.sha256[:23])}…)")]
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
            items.append(f"<li{cls}>{esc(cap)}")  # </li> is optional, like </td>
        return '<ul class="p3m-caps">' + "".join(items) + "</ul>"

    if result.security == "tls":
        # Implicit TLS: there is no "before"; the first CAPA already ran over TLS.
        return "<h4>Over TLS</h4>" + listing(before, None, "gone")
    first = "Plaintext (no TLS)" if result.security == "none" else "Before TLS"
    out = f"<h4>{first}</h4>" + listing(before, after, "gone")
    if after is not None or result.security in ("starttls", "starttls-optional"):
        verb = "STARTTLS" if result.protocol == "smtp" else "STLS"
        out += f"<h4>After {verb}</h4>" + listing(after, before, "new")
        if before is not None and after is not None:
            out += (
                '<p class="p3m-muted">Struck through: offered only before TLS; bold: only '
                "after TLS.</p>"
            )
    return out


def end_reason(result: ProbeResult) -> str:
    """Why the session ended, as the transcript's last line says it: the failing stage and
    the engine's reason ("TLS handshake failed: ..."), else how QUIT went."""
    if result.error_kind:
        stage = result.error_stage or next(
            (s.stage for s in result.stages if s.status == "fail"), ""
        )
        label = PHASE_LABELS.get(stage, stage) or "the probe"
        return f"{label} failed: {result.error_reason or result.error_kind}"
    quit_ = result.stage("quit")
    if quit_ is None:
        return "connection closed without QUIT"
    if quit_.status == "ok":
        said = "221" if result.protocol == "smtp" else "+OK"
        return f"QUIT answered {said}, connection closed"
    return f"{quit_.reason or 'QUIT not answered cleanly'}; connection closed"


def _transcript(result: ProbeResult) -> str:
    # One <span> per client line only (the colour); server lines are the block's default.
    lines = []
    for line in result.transcript:
        text = f"{line.t * 1000:.1f} ms {line.direction}: {esc(line.text)}"
        lines.append(f'<span class="p3m-c">{text}</span>' if line.direction == "C" else text)
    total = result.phase("total")
    when = f"{total * 1000:.1f} ms " if total is not None else ""
    cls = "p3m-end p3m-end-fail" if result.error_kind else "p3m-end"
    lines.append(f'<span class="{cls}">{when}— session ended: {esc(end_reason(result))}</span>')
    return '<pre class="p3m-transcript">' + "\n".join(lines) + "</pre>"


def _connection_rows(conn: ConnectionReport) -> list[tuple[str, str]]:
    ct = conn.ct
    # Endpoint, security and the configured auth are in the summary line above; the
    # greeting and the mailbox size are in their checks' reasons and the transcript.
    rows = [("Server", esc(ct.server))]
    result = conn.result
    if result is None:
        return [*rows, ("Probe", '<span class="p3m-muted">no probe result</span>')]
    rows += [
        ("Addresses", esc(", ".join(result.addresses) or "–")),
        ("Peer", esc(result.peer or "–")),
    ]
    if result.auth is not None:
        auth = result.auth
        chosen = f"{auth.mechanism or '–'} ({auth.strength or 'n/a'})"
        chosen += ", encrypted" if auth.encrypted else ", NOT encrypted"
        rows.append(("Auth (used)", esc(chosen)))
        rows.append(
            (
                "Login",
                badge(Verdict.OK, hint=False) if auth.success else esc(auth.reason or "failed"),
            )
        )
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
        f"{badge(conn.worst, hint=False)} <b>{esc(ct.id)}</b> "
        f'<span class="p3m-muted">{esc(f"{ct.host}:{ct.port} · {ct.security} · auth {ct.auth}")}'
        f"</span>{tail}"
    )


def details_html(report: RunReport) -> list[str]:
    """One collapsible ``<details>`` per connection type (problems open by default)."""
    out = ['<section class="p3m" id="pop3mon-details"><h3>Connection types in detail</h3>']
    shown: dict[str, str] = {}  # certificate SHA-256 -> the connection type showing it
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
                cert = result.tls.cert
                same_as = shown.get(cert.sha256) if cert is not None else None
                if cert is not None and same_as is None:
                    shown[cert.sha256] = conn.ct.id
                facts.append(
                    "<section><h4>TLS and certificate</h4>"
                    + _kv(_cert_rows(result.tls, cert, same_as))
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
                '<h4>Phase timings</h4><div class="p3m-scroll">'
                + waterfall_svg(result, latency, f"Phase timings of {scrub(conn.ct.id)}")
                + "</div>"
            )
            wide.append("<h4>Protocol transcript (credentials redacted)</h4>" + _transcript(result))
        out.append(
            f'<details class="p3m-ct p3m-b-{esc(conn.worst)}" id="{anchor(conn.ct.id)}"'
            f"{is_open}><summary>{_summary_line(conn)}</summary>"
            '<div class="p3m-ct-body">'
            f"<h4>Checks</h4>{_checks_table(conn.records, conn.ct.id)}"
            f'<div class="p3m-grid">{"".join(facts)}</div>'
            f"{''.join(wide)}</div></details>"
        )
    if report.unattributed:
        out.append("<h3>Checks without a connection type</h3>")
        out.append(_checks_table(report.unattributed))
    out.append("</section>")
    return out
