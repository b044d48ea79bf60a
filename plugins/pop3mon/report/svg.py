"""The phase waterfall: one inline SVG per connection type, readable without JavaScript.

Each probe phase (DNS, TCP connect, greeting, CAPA, STLS, TLS handshake, authentication,
STAT, QUIT) is one bar that starts where the previous phase ended, so the picture shows at a
glance where the time went; what the total holds beyond the phases is one more bar, "other",
so the bars end exactly where the total bar does. Bars are coloured by the outcome: a failed
stage or a CRIT latency is red, a WARN latency amber, "other" grey, everything else blue.
Every label is escaped; the SVG contains no script, no external reference and no font
download.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from html import escape

from ..engine.result import ProbeResult
from ..engine.stages import PHASE_LABELS, stage_index
from ..verdict import Verdict

__all__ = ["sparkline_svg", "waterfall_svg"]

_LABEL_W = 190  # left column: phase names
_BAR_W = 430  # the time axis
_VALUE_W = 90  # right column: "12.3 ms"
_ROW_H = 20
_TOP = 24  # room for the axis labels
_COLOURS = {
    "ok": "#3b7dd8",
    "warn": "#e0a100",
    "fail": "#c62828",
    "other": "#9e9e9e",
}
#: The remainder of the total outside every timed phase, drawn as its own segment.
_OTHER = "other"
_OTHER_LABEL = "other (between phases)"


def _ms(seconds: float) -> str:
    ms = seconds * 1000.0
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def _px(value: float) -> str:
    """A coordinate to 0.1 px without a trailing ".0" (a waterfall has ~40 of them)."""
    return f"{value:.1f}".removesuffix(".0")


def _colour(status: str, verdict: str) -> str:
    if status == "fail" or verdict == Verdict.CRIT:
        return _COLOURS["fail"]
    if status == "warn" or verdict == Verdict.WARN:
        return _COLOURS["warn"]
    return _COLOURS["ok"]


def _edges(durations: Sequence[float], scale: float) -> list[float]:
    """Pixel edges of consecutive segments, rounded once at each cumulative boundary.

    Rounding each width on its own (and padding tiny ones to 1 px) made the bars add up to
    more or less than the total bar; rounding the running sum makes the widths add up to
    the rounded total exactly.
    """
    edges = [0.0]
    acc = 0.0
    for secs in durations:
        acc += secs
        edges.append(round(acc / scale * _BAR_W, 1))
    return edges


def waterfall_svg(
    result: ProbeResult, latency_verdicts: Mapping[str, str] | None = None, title: str = ""
) -> str:
    """Inline SVG of ``result``'s phase timings (HTML-safe text).

    ``latency_verdicts`` maps a phase to its latency check verdict, so a phase that broke
    its threshold is coloured like its verdict even when the stage itself succeeded.

    The segments (``rect.p3m-seg``) lie end to end and add up to the total bar: the time
    the session spent outside every timed phase (opening and closing sockets, parsing
    between commands) is its own grey segment, "other", instead of a gap.
    """
    verdicts = latency_verdicts or {}
    phases = [(name, max(0.0, secs)) for name, secs in result.phases if name != "total"]
    if not phases:
        return '<p class="p3m-muted">No phase timings: the probe did not get far enough.</p>'
    span = sum(secs for _, secs in phases)
    total = result.phase("total")
    other = max(0.0, total - span) if total is not None else 0.0
    scale = max(span + other, total or 0.0) or 1e-9  # > total only if phases overlapped
    status = {s.stage: s.status for s in result.stages}
    timed = {name for name, _ in phases}
    # A stage that failed before its timing was recorded still belongs in the picture:
    # it is where the probe stopped.
    failed = [s for s in result.stages if s.status == "fail" and s.stage not in timed]
    rows_in_order: list[tuple[str, float | None]] = [*phases, *((f.stage, None) for f in failed)]
    rows_in_order.sort(key=lambda row: stage_index(row[0]))
    segments = [(name, secs) for name, secs in rows_in_order if secs is not None]
    if other > 0:
        segments.append((_OTHER, other))
    ends = iter(_edges([secs for _, secs in segments], scale)[1:])
    rows = len(rows_in_order) + (1 if other > 0 else 0) + (1 if total is not None else 0)
    width = _LABEL_W + _BAR_W + _VALUE_W
    height = _TOP + rows * _ROW_H + 6
    label = title or f"Phase timings of {result.id}"
    out = [
        f'<svg class="p3m-waterfall" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11">',
        # The accessible name (an aria-label repeating it cost ~45 bytes per waterfall).
        f"<title>{escape(label)}</title>",
    ]
    # Axis: 0, half and full scale, with light grid lines so the bars can be read off.
    grid, ticks = [], []
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        x = _LABEL_W + frac * _BAR_W
        grid.append(f'<line x1="{_px(x)}" y1="{_TOP - 4}" x2="{_px(x)}" y2="{height - 4}"/>')
        ticks.append(
            f'<text x="{_px(x)}" y="{_TOP - 8}" text-anchor="{anchor}">'
            f"{escape(_ms(scale * frac))}</text>"
        )
    out.append(f'<g stroke="#d0d0d0">{"".join(grid)}</g><g fill="#555">{"".join(ticks)}</g>')
    # Three columns, each one group: the shared attributes once per column, not per row
    # (a page holds one waterfall per connection type).
    labels: list[str] = []
    bars: list[str] = []
    values: list[str] = []
    pos = 0.0  # where the last segment drawn ends (px from the axis start)
    y = _TOP
    for name, maybe_secs in [*rows_in_order, *([(_OTHER, other)] if other > 0 else [])]:
        text = _OTHER_LABEL if name == _OTHER else PHASE_LABELS.get(name, name)
        labels.append(f'<text y="{y + 14}">{escape(text)}</text>')
        if maybe_secs is None:
            reason = next((f.reason for f in failed if f.stage == name), "")
            bars.append(
                f'<rect x="{_px(_LABEL_W + pos)}" y="{y + 3}" width="3" height="{_ROW_H - 6}" '
                f'fill="{_COLOURS["fail"]}"><title>{escape(f"{text} failed: {reason}")}</title>'
                "</rect>"
            )
            values.append(
                f'<text y="{y + 14}" fill="{_COLOURS["fail"]}" font-weight="bold">failed</text>'
            )
            y += _ROW_H
            continue
        secs = maybe_secs
        start, end = pos, next(ends)
        pos = end
        colour = (
            _COLOURS["other"]
            if name == _OTHER
            else _colour(status.get(name, "ok"), verdicts.get(name, ""))
        )
        fill = "" if colour == _COLOURS["ok"] else f' fill="{colour}"'
        tip = ""
        if name == _OTHER:
            tip = "<title>time outside the timed phases: sockets, parsing, closing</title>"
        elif status.get(name) == "fail":
            tip = f"<title>{escape(text)} failed</title>"
        close = f">{tip}</rect>" if tip else "/>"
        bars.append(
            f'<rect class="p3m-seg" x="{_px(_LABEL_W + start)}" y="{y + 4}" '
            f'width="{_px(end - start)}" height="{_ROW_H - 8}"{fill}{close}'
        )
        values.append(f'<text y="{y + 14}">{escape(_ms(secs))}</text>')
        y += _ROW_H
    if total is not None:
        colour = (
            "#c62828"
            if verdicts.get("total") == Verdict.CRIT
            else ("#e0a100" if verdicts.get("total") == Verdict.WARN else "#444")
        )
        w = round(total / scale * _BAR_W, 1)
        labels.append(f'<text y="{y + 14}" font-weight="bold">total</text>')
        bars.append(
            f'<rect class="p3m-total" x="{_LABEL_W}" y="{y + 7}" width="{_px(w)}" '
            f'height="{_ROW_H - 14}" fill="{colour}"/>'
        )
        values.append(f'<text y="{y + 14}" font-weight="bold">{escape(_ms(total))}</text>')
    out.append(
        f'<g text-anchor="end" transform="translate({_LABEL_W - 6} 0)">{"".join(labels)}</g>'
        f'<g fill="{_COLOURS["ok"]}">{"".join(bars)}</g>'
        f'<g transform="translate({_LABEL_W + _BAR_W + 6} 0)">{"".join(values)}</g>'
    )
    out.append("</svg>")
    return "".join(out)


def sparkline_svg(
    points: Sequence[tuple[float, float | None, str]], title: str = "", width: int = 160
) -> str:
    """A small inline SVG of one connection type's total latency over its last runs.

    ``points`` are ``(run start epoch, total seconds or None, worst verdict)`` oldest first;
    a run without a total (it failed before) is a red tick at the bottom, a WARN/CRIT run's
    dot is amber/red. Every point has a ``<title>`` with its time and value (no script).
    """
    height, pad = 28, 3
    values = [v for _, v, _ in points if v is not None]
    top = max(values) if values else 0.0
    top = top if top > 0 else 1.0
    step = (width - 2 * pad) / max(1, len(points) - 1)
    out = [
        f'<svg class="p3m-spark" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title or "latency over the last runs")}">'
    ]
    line: list[str] = []
    for i, (when, value, verdict) in enumerate(points):
        x = pad + i * step
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
        if value is None:
            if len(line) > 1:
                out.append(_polyline(line))
            line = []
            out.append(
                f"<g><title>{escape(f'{stamp}: no total ({verdict})')}</title>"
                f'<rect x="{x - 1:.1f}" y="{height - 6}" width="2" height="6" '
                f'fill="{_COLOURS["fail"]}"/></g>'
            )
            continue
        y = height - pad - (value / top) * (height - 2 * pad)
        line.append(f"{x:.1f},{y:.1f}")
        colour = _colour("", verdict) if verdict in (Verdict.WARN, Verdict.CRIT) else "#3b7dd8"
        out.append(
            f"<g><title>{escape(f'{stamp}: {_ms(value)} ({verdict})')}</title>"
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.8" fill="{colour}"/></g>'
        )
    if len(line) > 1:
        out.append(_polyline(line))
    out.append("</svg>")
    return "".join(out)


def _polyline(points: list[str]) -> str:
    return (
        f'<polyline points="{" ".join(points)}" fill="none" stroke="#3b7dd8" '
        'stroke-width="1" opacity="0.6"/>'
    )
