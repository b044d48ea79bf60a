"""``metrics.prom``: the run as Prometheus metrics for node_exporter's textfile collector.

The file is Prometheus text exposition format 0.0.4 (what ``promtool check metrics`` and the
textfile collector read) and is at the same time valid OpenMetrics 1.0: only gauges, HELP and
TYPE lines, no other comments, every family's samples together, and a final ``# EOF`` line,
which the Prometheus text parser reads as an ordinary comment.

Every per-connection series carries the labels ``connection``, ``server``, ``host``, ``port``
and ``security``; label values are escaped (backslash, double quote, line feed).
Certificate expiry is in seconds (``pop3mon_cert_expires_in_seconds``), not days:
``promtool check metrics`` rejects non-base units in metric names; days are
``pop3mon_cert_expires_in_seconds / 86400`` in PromQL.
Verdicts are numeric: 0 OK, 1 WARN, 2 CRIT, 3 SKIP, 4 ERROR; the ``verdict`` label repeats
the name so an alert can show it (``pop3mon_check_verdict >= 2``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..engine.stages import HOST_ID_PREFIX
from ..verdict import VERDICT_CODES, Verdict
from .model import ConnectionReport, RunReport, scrub

__all__ = ["escape_label_value", "format_value", "metrics_text", "write_metrics"]

# (name, help) in output order. HELP texts avoid backslashes and double quotes, which the
# two formats would escape differently.
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("pop3mon_up", "1 when the server accepted TCP and greeted with +OK, else 0."),
    (
        "pop3mon_probe_success",
        "1 when no check of the connection type ended CRIT or ERROR, else 0.",
    ),
    ("pop3mon_probe_duration_seconds", "Wall-clock duration of the whole probe."),
    ("pop3mon_phase_seconds", "Time spent in each probe phase (phase label)."),
    (
        "pop3mon_cert_not_after_timestamp_seconds",
        "Expiry of the server certificate, as a Unix timestamp.",
    ),
    (
        "pop3mon_cert_expires_in_seconds",
        "Seconds until the server certificate expires (negative: expired).",
    ),
    (
        "pop3mon_auth_success",
        "1 when the login succeeded, 0 when it failed or could not run "
        "(absent when no login was tried).",
    ),
    (
        "pop3mon_check_verdict",
        "Verdict of each tier check: 0 OK, 1 WARN, 2 CRIT, 3 SKIP, 4 ERROR.",
    ),
    ("pop3mon_last_run_timestamp_seconds", "When the connection type was last probed (Unix time)."),
    ("pop3mon_checks", "Number of checks in this run that ended with each verdict."),
    (
        "pop3mon_run_start_timestamp_seconds",
        "When this run started (Unix time; the same in results.json: run.started_epoch).",
    ),
    (
        "pop3mon_check_state_since_timestamp_seconds",
        "When each check's current verdict began: start of the first run of the streak "
        "(Unix time; from the run history).",
    ),
    (
        "pop3mon_check_consecutive_runs",
        "Runs in a row each check has had its current verdict, this one included "
        "(hardness label: soft until confirm runs of CRIT, else hard).",
    ),
    (
        "pop3mon_availability_ratio",
        "Share of the connection type's runs without CRIT or ERROR over the window "
        "(window label: 24h, 7d, 30d; from the run history).",
    ),
    (
        "pop3mon_flapping",
        "1 when the connection type is flapping (its changes are held), else 0.",
    ),
    (
        "pop3mon_history_ok",
        "1 when this run was recorded in the run history, 0 when the history failed "
        "(absent with --no-history).",
    ),
    (
        "pop3mon_run_complete",
        "1 when every selected check ran, 0 when the run was stopped early "
        "(SIGTERM, Ctrl-C, -x): its other checks are SKIP, not run.",
    ),
    # The host checks (one per server, shared by its connection types).
    (
        "pop3mon_host_up",
        "1 when the host answered (PING if on, a TCP port), 0 when it is down or a host "
        "it depends on is.",
    ),
    (
        "pop3mon_host_check_verdict",
        "Verdict of each host check (ping, tcp): 0 OK, 1 WARN, 2 CRIT, 3 SKIP, 4 ERROR.",
    ),
    (
        "pop3mon_host_blocked_connections",
        "Connection types not probed because this host was the root cause of their skip.",
    ),
)


def escape_label_value(value: str) -> str:
    """Escape a label value for the text formats (backslash, double quote, line feed)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value both formats accept (integers without a fraction, NaN, +Inf)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{escape_label_value(scrub(v))}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _base(conn: ConnectionReport) -> list[tuple[str, str]]:
    ct = conn.ct
    return [
        ("connection", ct.id),
        ("server", ct.server),
        ("host", ct.host),
        ("port", str(ct.port)),
        ("security", ct.security),
    ]


def _samples(report: RunReport) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {name: [] for name, _ in _FAMILIES}

    def add(name: str, labels: list[tuple[str, str]], value: float) -> None:
        out[name].append(f"{name}{_labels(labels)} {format_value(value)}")

    for conn in report.connections:
        base = _base(conn)
        result = conn.result
        bad = conn.worst in (Verdict.CRIT, Verdict.ERROR)
        add("pop3mon_probe_success", base, 0 if bad else 1)
        if result is not None:
            greeting = result.stage("greeting")
            add("pop3mon_up", base, 1 if greeting is not None and greeting.status == "ok" else 0)
            total = result.phase("total")
            if total is None:
                total = sum(secs for name, secs in result.phases if name != "total")
            add("pop3mon_probe_duration_seconds", base, total)
            for phase, secs in result.phases:
                if phase != "total":
                    add("pop3mon_phase_seconds", [*base, ("phase", phase)], secs)
            cert = result.tls.cert if result.tls is not None else None
            if cert is not None:
                add("pop3mon_cert_not_after_timestamp_seconds", base, cert.not_after_epoch)
                # From the probe's own clock, exact (days_left is rounded to 0.01 days).
                left = cert.not_after_epoch - result.started_at
                add("pop3mon_cert_expires_in_seconds", base, round(left, 3))
            # result.mechanism is "none" also when no selected test needed a login
            # (-m tls, -m connectivity) and the probe skipped it: no login, no sample,
            # rather than a 0 that pages someone for a login that was never tried.
            if conn.ct.auth != "none" and result.mechanism != "none":
                ok = result.auth is not None and result.auth.success
                add("pop3mon_auth_success", base, 1 if ok else 0)
            add("pop3mon_last_run_timestamp_seconds", base, result.started_at)
        for rec in conn.records:
            labels = [*base, ("tier", rec.tier), ("check", rec.check), ("verdict", rec.verdict)]
            add("pop3mon_check_verdict", labels, VERDICT_CODES[rec.verdict])
            state = report.states.get((conn.ct.id, rec.check))
            if state is not None:
                check = [*base, ("tier", rec.tier), ("check", rec.check)]
                add("pop3mon_check_state_since_timestamp_seconds", check, round(state.since, 3))
                add(
                    "pop3mon_check_consecutive_runs",
                    [*check, ("verdict", state.verdict), ("hardness", state.hardness)],
                    state.runs,
                )
        for window, ratio in report.history.availability.get(conn.ct.id, {}).items():
            if ratio is not None:
                add("pop3mon_availability_ratio", [*base, ("window", window)], ratio)
        if report.history.ok:
            add("pop3mon_flapping", base, 1 if report.history.flapping.get(conn.ct.id) else 0)
    _host_samples(report, add)
    counts: Mapping[Verdict, int] = report.counts()
    for verdict, number in counts.items():
        add("pop3mon_checks", [("verdict", verdict)], number)
    add("pop3mon_run_start_timestamp_seconds", [], round(report.info.started, 3))
    add("pop3mon_run_complete", [], 0 if report.info.stopped else 1)
    if report.history.status != "off":
        add("pop3mon_history_ok", [], 1 if report.history.ok else 0)
    return out


def _host_samples(
    report: RunReport, add: Callable[[str, list[tuple[str, str]], float], None]
) -> None:
    for hrep in report.hosts:
        base = [("server", hrep.host.name), ("host", hrep.host.host)]
        if hrep.result is not None:
            add("pop3mon_host_up", base, 1 if hrep.result.up else 0)
            cts = [i for i in hrep.blocked if not i.startswith(HOST_ID_PREFIX)]
            if hrep.result.status == "down":
                add("pop3mon_host_blocked_connections", base, len(cts))
        for rec in hrep.records:
            labels = [*base, ("check", rec.check), ("verdict", rec.verdict)]
            add("pop3mon_host_check_verdict", labels, VERDICT_CODES[rec.verdict])


def metrics_text(report: RunReport) -> str:
    """The exposition text, ending with ``# EOF`` and a line feed."""
    samples = _samples(report)
    lines: list[str] = []
    for name, help_text in _FAMILIES:
        if not samples[name]:
            continue
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(samples[name])
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def write_metrics(report: RunReport, path: Path) -> Path:
    """Write ``metrics.prom`` to ``path``: a temporary name of the report set (ending in
    ``.tmp``: the textfile collector reads only ``*.prom``, so never half a file), which
    renames it into place with the other files (:mod:`.reportset`)."""
    path.write_text(metrics_text(report), encoding="utf-8")
    return path
