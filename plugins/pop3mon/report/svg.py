"""The phase waterfall: one inline SVG per connection type, readable without JavaScript.

Each probe phase (DNS, TCP connect, greeting, CAPA, STLS, TLS handshake, authentication,
STAT, QUIT) is one bar that starts where the previous phase ended, so the picture shows at a
glance where the time went. Bars are coloured by the outcome: a failed stage or a CRIT
latency is red, a WARN latency amber, everything else blue. Every label is escaped; the SVG
contains no script, no external reference and no font download.
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
}


def _ms(seconds: float) -> str:
    ms = seconds * 1000.0
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def _colour(status: str, verdict: str) -> str:
    if status == "fail" or verdict == Verdict.CRIT:
        return _COLOURS["fail"]
    if status == "warn" or verdict == Verdict.WARN:
        return _COLOURS["warn"]
    return _COLOURS["ok"]


def waterfall_svg(
    result: ProbeResult, latency_verdicts: Mapping[str, str] | None = None, title: str = ""
) -> str:
    """Inline SVG of ``result``'s phase timings (HTML-safe text).

    ``latency_verdicts`` maps a phase to its latency check verdict, so a phase that broke
    its threshold is coloured like its verdict even when the stage itself succeeded.
    """
    verdicts = latency_verdicts or {}
    phases = [(name, max(0.0, secs)) for name, secs in result.phases if name != "total"]
    if not phases:
        return '<p class="p3m-muted">No phase timings: the probe did not get far enough.</p>'
    span = sum(secs for _, secs in phases)
    total = result.phase("total")
    scale = max(span, total or 0.0) or 1e-9
    status = {s.stage: s.status for s in result.stages}
    timed = {name for name, _ in phases}
    # A stage that failed before its timing was recorded still belongs in the picture:
    # it is where the probe stopped.
    failed = [s for s in result.stages if s.status == "fail" and s.stage not in timed]
    rows = len(phases) + len(failed) + (1 if total is not None else 0)
    width = _LABEL_W + _BAR_W + _VALUE_W
    height = _TOP + rows * _ROW_H + 6
    label = title or f"Phase timings of {result.id}"
    out = [
        f'<svg class="p3m-waterfall" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'style="max-width: 100%; height: auto" '
        f'aria-label="{escape(label)}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(label)}</title>",
    ]
    # Axis: 0, half and full scale, with light grid lines so the bars can be read off.
    for frac in (0.0, 0.5, 1.0):
        x = _LABEL_W + frac * _BAR_W
        anchor = "start" if frac == 0 else ("end" if frac == 1 else "middle")
        out.append(
            f'<line x1="{x:.1f}" y1="{_TOP - 4}" x2="{x:.1f}" y2="{height - 4}" '
            'stroke="#d0d0d0" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{_TOP - 8}" text-anchor="{anchor}" fill="#555">'
            f"{escape(_ms(scale * frac))}</text>"
        )
    # Rows in session order; a failed stage without a timing sits where the probe stopped.
    rows_in_order: list[tuple[str, float | None]] = [*phases, *((f.stage, None) for f in failed)]
    rows_in_order.sort(key=lambda row: stage_index(row[0]))
    offset = 0.0
    y = _TOP
    for name, maybe_secs in rows_in_order:
        text = PHASE_LABELS.get(name, name)
        x = _LABEL_W + offset / scale * _BAR_W
        if maybe_secs is None:
            reason = next((f.reason for f in failed if f.stage == name), "")
            out.append(
                f"<g><title>{escape(f'{text} failed: {reason}')}</title>"
                f'<text x="{_LABEL_W - 6}" y="{y + 14}" text-anchor="end" fill="#222">'
                f"{escape(text)}</text>"
                f'<rect x="{x:.1f}" y="{y + 3}" width="3" height="{_ROW_H - 6}" '
                f'fill="{_COLOURS["fail"]}"/>'
                f'<text x="{_LABEL_W + _BAR_W + 6}" y="{y + 14}" fill="{_COLOURS["fail"]}" '
                f'font-weight="bold">failed</text></g>'
            )
            y += _ROW_H
            continue
        secs = maybe_secs
        w = max(1.0, secs / scale * _BAR_W)
        colour = _colour(status.get(name, "ok"), verdicts.get(name, ""))
        tip = f"{text}: {_ms(secs)}"
        if status.get(name) == "fail":
            tip += " (failed)"
        out.append(
            f"<g><title>{escape(tip)}</title>"
            f'<text x="{_LABEL_W - 6}" y="{y + 14}" text-anchor="end" fill="#222">'
            f"{escape(text)}</text>"
            f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{_ROW_H - 8}" '
            f'rx="2" fill="{colour}"/>'
            f'<text x="{_LABEL_W + _BAR_W + 6}" y="{y + 14}" fill="#222">'
            f"{escape(_ms(secs))}</text></g>"
        )
        offset += secs
        y += _ROW_H
    if total is not None:
        colour = (
            "#c62828"
            if verdicts.get("total") == Verdict.CRIT
            else ("#e0a100" if verdicts.get("total") == Verdict.WARN else "#444")
        )
        w = max(1.0, total / scale * _BAR_W)
        out.append(
            f"<g><title>{escape('total: ' + _ms(total))}</title>"
            f'<text x="{_LABEL_W - 6}" y="{y + 14}" text-anchor="end" fill="#222" '
            f'font-weight="bold">total</text>'
            f'<rect x="{_LABEL_W}" y="{y + 7}" width="{w:.1f}" height="{_ROW_H - 14}" '
            f'fill="{colour}"/>'
            f'<text x="{_LABEL_W + _BAR_W + 6}" y="{y + 14}" fill="#222" font-weight="bold">'
            f"{escape(_ms(total))}</text></g>"
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
