"""``metrics.prom``: the run as Prometheus metrics for node_exporter's textfile collector.

The text is made by ``prometheus_client`` (a custom :class:`CollectorRegistry` rendered with
``generate_latest``: Prometheus text exposition format 0.0.4, what ``promtool check
metrics`` and the textfile collector read), never by hand, so escaping and number formatting
are the client library's. Every family is a gauge. The file is written like the library's
``write_to_textfile`` (a temporary name, then one rename), except that the temporary file
belongs to the run's report set (:mod:`.reportset`), which renames it with the others.

Two vocabularies, documented metric by metric in README.md ("Prometheus metrics"):

* ``pop3mon_*`` with the labels ``connection``, ``server``, ``host``, ``port`` and
  ``security`` (plus ``tier``/``check``, ``phase`` or ``window`` where they apply);
* blackbox_exporter's names (``probe_success``, ``probe_duration_seconds``,
  ``probe_dns_lookup_time_seconds``, ``probe_ssl_earliest_cert_expiry``,
  ``probe_ssl_last_chain_expiry_timestamp_seconds``, ``probe_tls_version_info``) with the
  labels ``target`` (the connection type id) and ``module`` (:data:`MODULES`), so alerts
  written for blackbox_exporter work on pop3mon unchanged.

No label value changes with an outcome: a series is the same series whichever way its check
ends (verdicts are numbers, :data:`~pop3mon.verdict.VERDICT_CODES`), so an alert's ``for:``
keeps counting and a recovered series does not go stale beside a new one.

A run whose targets file is invalid probes nothing: :func:`mark_config_invalid` rewrites the
previous file's samples with ``pop3mon_config_valid 0`` and this run's run-health gauges.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString as _untyped_go_float

from ..config import ConnectionType
from ..engine.result import ProbeResult
from ..engine.stages import HOST_ID_PREFIX, Security
from ..verdict import VERDICT_CODES, Verdict, fails
from .model import ConnectionReport, CoverageReport, HostReport, RunReport, new_run_id, scrub
from .recorder import one_per_check
from .reportset import ReportSet, ReportSetError

__all__ = [
    "METRICS_NAME",
    "MODULES",
    "RUN_HEALTH",
    "mark_config_invalid",
    "metrics_text",
    "module_of",
    "write_metrics",
]

METRICS_NAME: Final = "metrics.prom"

#: The ``module`` label of the blackbox-compatible series: what blackbox_exporter calls the
#: probe's configuration, here the protocol and security mode of the connection type
#: (``pop3_tls``, ``smtp_starttls`` ...): :func:`module_of`.
MODULES: Final[Mapping[Security, str]] = {
    "tls": "tls",
    "starttls": "starttls",
    "starttls-optional": "starttls_optional",
    "none": "plain",
}


def module_of(ct: ConnectionType) -> str:
    """The ``module`` label of ``ct``'s blackbox-compatible series."""
    return f"{ct.protocol}_{MODULES[ct.security]}"


#: Python's names of the TLS versions -> blackbox_exporter's ``version`` label values.
_TLS_VERSION_LABELS: Final[Mapping[str, str]] = {
    "TLSv1": "TLS 1.0",
    "TLSv1.1": "TLS 1.1",
    "TLSv1.2": "TLS 1.2",
    "TLSv1.3": "TLS 1.3",
}

_VERDICT_HELP: Final = ", ".join(f"{code} {v}" for v, code in VERDICT_CODES.items())

#: (name, help, extra labels after the family's base labels) in output order. ``None`` as
#: extra labels: a run-level family without any labels.
_CONN: Final = ("connection", "server", "host", "port", "security")
_PROBE: Final = ("target", "module")
_HOST: Final = ("server", "host")
_FAMILIES: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    # -- per connection type, pop3mon's own --------------------------------------------
    (
        "pop3mon_up",
        "1 when the server greeted: POP3 +OK, SMTP 220 (after the handshake with security tls), "
        "0 when it did not: DNS, connect, TLS or greeting failed, or its host check found the "
        "host down (not probed).",
        _CONN,
    ),
    (
        "pop3mon_probe_success",
        "1 when no check of the connection type ended CRIT or ERROR, else 0; 0 also when "
        "its host check found the host down (its checks are SKIP, not probed).",
        _CONN,
    ),
    (
        "pop3mon_probe_duration_seconds",
        "Wall-clock duration of the whole probe (absent when the host was down: not probed).",
        _CONN,
    ),
    ("pop3mon_phase_seconds", "Time spent in each probe phase.", (*_CONN, "phase")),
    (
        "pop3mon_probe_start_timestamp_seconds",
        "When the connection type was probed in the run these samples are from (Unix time).",
        _CONN,
    ),
    (
        "pop3mon_cert_not_after_timestamp_seconds",
        "Expiry of the server certificate, as a Unix timestamp.",
        _CONN,
    ),
    (
        "pop3mon_cert_expires_in_seconds",
        "Seconds until the server certificate expires at probe time (negative: expired).",
        _CONN,
    ),
    (
        "pop3mon_auth_success",
        "1 when the server accepted the login, 0 when the login was tried and failed; "
        "absent when no login was tried (none configured or selected, or the probe ended "
        "before it).",
        _CONN,
    ),
    ("pop3mon_mailbox_messages", "Messages in the mailbox (STAT).", _CONN),
    ("pop3mon_mailbox_size_bytes", "Size of the mailbox in octets (STAT).", _CONN),
    (
        "pop3mon_check_verdict",
        f"Verdict of each check: {_VERDICT_HELP}.",
        (*_CONN, "tier", "check"),
    ),
    (
        "pop3mon_check_state_verdict",
        f"Each check's current state from the run history: {_VERDICT_HELP} "
        "(a SKIP or ERROR run keeps the last finding).",
        (*_CONN, "tier", "check"),
    ),
    (
        "pop3mon_check_state_hard",
        "1 when the check's state is hard, 0 while a CRIT is soft (not yet confirm runs).",
        (*_CONN, "tier", "check"),
    ),
    (
        "pop3mon_check_state_since_timestamp_seconds",
        "When each check's current state began: start of the first run of the streak "
        "(Unix time; from the run history).",
        (*_CONN, "tier", "check"),
    ),
    (
        "pop3mon_check_consecutive_runs",
        "Runs in a row each check has had its current state, this one included.",
        (*_CONN, "tier", "check"),
    ),
    (
        "pop3mon_availability_ratio",
        "Share of the connection type's runs without CRIT or ERROR over the window "
        "(24h, 7d, 30d; from the run history).",
        (*_CONN, "window"),
    ),
    (
        "pop3mon_flapping",
        "1 when the connection type is flapping (its changes are held), else 0.",
        _CONN,
    ),
    # -- per connection type, blackbox_exporter's names -----------------------------------
    (
        "probe_success",
        "1 when the POP3 session completed: every stage the probe ran succeeded, "
        "certificate verification included (thresholds do not count), else 0 (also when "
        "the host was down and the connection type not probed).",
        _PROBE,
    ),
    (
        "probe_duration_seconds",
        "Returns how long the probe took to complete in seconds (absent when not probed: the "
        "host was down)",
        _PROBE,
    ),
    (
        "probe_dns_lookup_time_seconds",
        "Returns the time taken for probe dns lookup in seconds",
        _PROBE,
    ),
    (
        "probe_ssl_earliest_cert_expiry",
        "Earliest expiry among the certificates the server presented, in unixtime.",
        _PROBE,
    ),
    (
        "probe_ssl_last_chain_expiry_timestamp_seconds",
        "Earliest expiry in the verified chain (trust anchor included), in unixtime.",
        _PROBE,
    ),
    (
        "probe_tls_version_info",
        "Returns the TLS version used (version label), 1.",
        (*_PROBE, "version"),
    ),
    # -- the run ------------------------------------------------------------------------------
    ("pop3mon_checks", "Number of checks in this run that ended with each verdict.", ("verdict",)),
    (
        "pop3mon_run_start_timestamp_seconds",
        "When the run these samples are from started (Unix time; results.json run.started_epoch).",
        (),
    ),
    (
        "pop3mon_run_complete",
        "1 when every selected check ran, 0 when the run was stopped early "
        "(SIGTERM, Ctrl-C, -x): its other checks are SKIP, not run.",
        (),
    ),
    (
        "pop3mon_history_ok",
        "1 when this run was recorded in the run history, 0 when the history failed "
        "(absent with --no-history).",
        (),
    ),
    # -- run health: rewritten by every run, also one that failed on its configuration -----
    (
        "pop3mon_last_run_timestamp_seconds",
        "When the last run ended (Unix time), whatever its outcome.",
        (),
    ),
    ("pop3mon_run_duration_seconds", "Wall-clock duration of the last run.", ()),
    (
        "pop3mon_config_valid",
        "1 when the last run loaded its targets file, 0 when the file was invalid "
        "(the other samples are then the last valid run's).",
        (),
    ),
    # -- per host check (one per server, shared by its connection types) ----------------
    (
        "pop3mon_host_up",
        "1 when the host answered (PING if on, a TCP port), 0 when it is down or a host "
        "it depends on is.",
        _HOST,
    ),
    (
        "pop3mon_host_check_verdict",
        f"Verdict of each host check (ping, tcp) as a code: {_VERDICT_HELP}.",
        (*_HOST, "check"),
    ),
    (
        "pop3mon_host_blocked_connections",
        "Connection types not probed because this host is down (0 when it is up).",
        _HOST,
    ),
    # -- per server with the coverage tier on ---------------------------------------------
    (
        "pop3mon_coverage_check_verdict",
        "Verdict of each coverage check (coverage-unmonitored, coverage-published, "
        f"coverage-autoconfig) as a code: {_VERDICT_HELP}.",
        (*_HOST, "check"),
    ),
    (
        "pop3mon_coverage_findings",
        "Connection types each coverage check found unmonitored, failing or not as "
        "advertised (0: none).",
        (*_HOST, "check"),
    ),
)

#: The families every run writes anew, even one that failed on its configuration.
RUN_HEALTH: Final[frozenset[str]] = frozenset(
    {
        "pop3mon_last_run_timestamp_seconds",
        "pop3mon_run_duration_seconds",
        "pop3mon_config_valid",
    }
)


class _Collector:
    """The families of one file; a ``prometheus_client`` collector (``collect``).

    Samples are kept as (label values, value) pairs until the text is made: a thousand
    connection types make some 120,000 samples, and prometheus_client's ``Sample`` tuples
    with a label dict each took several times the memory."""

    def __init__(self, by_vantage: bool = False) -> None:
        #: Families that get the ``vantage`` label (a merge of several vantage points):
        #: those of a connection type, which each vantage saw for itself.
        self.with_vantage: frozenset[str] = frozenset(
            name
            for name, _, labels in _FAMILIES
            if by_vantage and labels[:1] in (_CONN[:1], _PROBE[:1])
        )
        #: Each family's label names (``vantage`` last where it applies).
        self.labels: dict[str, tuple[str, ...]] = {
            name: (*labels, "vantage") if name in self.with_vantage else tuple(labels)
            for name, _, labels in _FAMILIES
        }
        self.samples: dict[str, list[tuple[tuple[str, ...], float]]] = {
            name: [] for name, _, _ in _FAMILIES
        }
        #: Families carried over from a previous file (see :func:`mark_config_invalid`).
        self.carried: list[Metric] = []
        #: The vantage the samples being added were seen from (with ``by_vantage``).
        self.vantage = ""
        # A connection type's labels recur in each of its ~120 samples: scrub each once.
        self._clean: dict[str, str] = {}

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        if name in self.with_vantage:
            labels = [*labels, self.vantage]
        # Secrets never reach a label, but the report's last pass scrubs everything.
        clean = self._clean
        values = []
        for v in labels:
            if v not in clean:
                clean[v] = scrub(v)
            values.append(clean[v])
        self.samples[name].append((tuple(values), float(value)))

    def collect(self) -> Iterator[Metric]:
        """Every family with at least one sample, in table order."""
        yield from self.carried
        for name, help_text, _ in _FAMILIES:
            if self.samples[name]:
                family = GaugeMetricFamily(name, help_text, labels=self.labels[name])
                for values, value in self.samples[name]:
                    family.add_metric(list(values), value)
                yield family

    def text(self, *, fast: bool = True) -> str:
        """The exposition text of :meth:`collect`: prometheus_client's ``generate_latest``,
        except that this run's own families go through :func:`_gauge_text` (the same
        bytes, ``tests/test_metrics.py`` compares them) unless ``fast`` is False."""
        if not fast:
            return _generate_latest(self)
        return "".join(self.pieces())

    def pieces(self) -> Iterator[str]:
        """:meth:`text` a family at a time (for a writer that streams them)."""
        if self.carried:
            yield _generate_latest(_Carried(self.carried))
        for name, help_text, _ in _FAMILIES:
            if self.samples[name]:
                yield _gauge_text(name, help_text, self.labels[name], self.samples[name])


class _Carried:
    """A collector of the families carried over from a previous file."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _generate_latest(collector: _Collector | _Carried) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # duck-typed: collect()
    return generate_latest(registry).decode("utf-8")


#: prometheus_client's float formatting (``+Inf``, ``1e+06`` ...), untyped upstream.
_go_float = cast("Callable[[float], str]", _untyped_go_float)


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _gauge_text(
    name: str,
    help_text: str,
    label_names: Sequence[str],
    samples: Sequence[tuple[tuple[str, ...], float]],
) -> str:
    """``generate_latest``'s text of one of :data:`_FAMILIES` (Prometheus text format
    0.0.4), without its per-sample checks and escaping of label *names*: ours are fixed
    identifiers of the table, so only values need escaping (labels sorted by name, as
    ``generate_latest`` writes them). At 1,000 connection types (120,000 samples) this
    takes a fraction of ``generate_latest``'s time."""
    doc = help_text.replace("\\", r"\\").replace("\n", r"\n")
    lines = [f"# HELP {name} {doc}\n", f"# TYPE {name} gauge\n"]
    order = sorted(range(len(label_names)), key=lambda i: label_names[i])
    # Label values and sample values repeat (a connection type's id in every family, 0
    # and 1): each is formatted once.
    shown: dict[str, str] = {}
    numbers: dict[float, str] = {}
    for values, value in samples:
        number = numbers.get(value) if value else None  # 0.0 and -0.0 are one key
        if number is None:
            number = _go_float(value)
            if value:
                numbers[value] = number
        if not order:
            lines.append(f"{name} {number}\n")
            continue
        parts = []
        for i in order:
            raw = values[i]
            text = shown.get(raw)
            if text is None:
                text = shown[raw] = f'"{_escape_value(raw)}"'
            parts.append(f"{label_names[i]}={text}")
        lines.append(f"{name}{{{','.join(parts)}}} {number}\n")
    return "".join(lines)


def _conn_labels(conn: ConnectionReport) -> list[str]:
    ct = conn.ct
    return [ct.id, ct.server, ct.host, str(ct.port), ct.security]


def _handshake_completed(result: ProbeResult) -> bool:
    """True when a TLS handshake (implicit or after STLS) finished with the configured
    verification: only then does blackbox_exporter report the ``probe_ssl_*`` figures."""
    return any(s.stage in ("tls", "tls_handshake") and s.status == "ok" for s in result.stages)


def _total(result: ProbeResult) -> float:
    total = result.phase("total")
    if total is None:
        total = sum(secs for name, secs in result.phases if name != "total")
    return total


def _connection(out: _Collector, report: RunReport, conn: ConnectionReport) -> None:
    base = _conn_labels(conn)
    probe = [conn.ct.id, module_of(conn.ct)]
    result = conn.result
    # Not probed because its host check found the host down: every check is SKIP, which
    # must not read as success, and no probe ran whose duration could be 0.
    blocked = result is not None and bool(result.blocked_host)
    success = not blocked and not fails(conn.worst)
    out.add("pop3mon_probe_success", base, 1 if success else 0)
    if result is not None:
        greeting = result.stage("greeting")
        out.add("pop3mon_up", base, 1 if greeting is not None and greeting.status == "ok" else 0)
        total = _total(result)
        if not blocked:
            out.add("pop3mon_probe_duration_seconds", base, total)
        for phase, secs in result.phases:
            if phase != "total":
                out.add("pop3mon_phase_seconds", [*base, phase], secs)
        out.add("pop3mon_probe_start_timestamp_seconds", base, result.started_at)
        tls = result.tls
        cert = tls.cert if tls is not None else None
        if cert is not None:
            out.add("pop3mon_cert_not_after_timestamp_seconds", base, cert.not_after_epoch)
            # From the probe's own clock, exact (days_left is rounded to 0.01 days).
            left = cert.not_after_epoch - result.started_at
            out.add("pop3mon_cert_expires_in_seconds", base, round(left, 3))
        # result.auth exists once the probe reached the login (engine/session.py): a
        # connect or TLS failure, `auth: none` or a run without a login tier (-m tls) is
        # no login failure, and must not page as one.
        if result.auth is not None:
            out.add("pop3mon_auth_success", base, 1 if result.auth.success else 0)
        if result.mailbox is not None:
            out.add("pop3mon_mailbox_messages", base, result.mailbox.count)
            out.add("pop3mon_mailbox_size_bytes", base, result.mailbox.size)
        out.add("probe_success", probe, 1 if result.ok and not blocked else 0)
        if not blocked:
            out.add("probe_duration_seconds", probe, total)
        dns = result.phase("dns")
        if dns is not None:
            out.add("probe_dns_lookup_time_seconds", probe, dns)
        if tls is not None and _handshake_completed(result):
            if tls.chain_earliest_expiry is not None:
                out.add("probe_ssl_earliest_cert_expiry", probe, tls.chain_earliest_expiry)
            elif cert is not None:
                out.add("probe_ssl_earliest_cert_expiry", probe, cert.not_after_epoch)
            if tls.verified_chain_earliest_expiry is not None:
                out.add(
                    "probe_ssl_last_chain_expiry_timestamp_seconds",
                    probe,
                    tls.verified_chain_earliest_expiry,
                )
            version = _TLS_VERSION_LABELS.get(tls.protocol, "unknown")
            out.add("probe_tls_version_info", [*probe, version], 1)
    for rec in one_per_check(conn.records, by_tier=True):
        check = [*base, rec.tier, rec.check]
        out.add("pop3mon_check_verdict", check, VERDICT_CODES[rec.verdict])
        state = report.states.get((conn.ct.id, rec.check))
        if state is not None:
            out.add("pop3mon_check_state_verdict", check, VERDICT_CODES[state.verdict])
            out.add("pop3mon_check_state_hard", check, 1 if state.hardness == "hard" else 0)
            out.add("pop3mon_check_state_since_timestamp_seconds", check, round(state.since, 3))
            out.add("pop3mon_check_consecutive_runs", check, state.runs)
    for window, ratio in report.history.availability.get(conn.ct.id, {}).items():
        if ratio is not None:
            out.add("pop3mon_availability_ratio", [*base, window], ratio)
    if report.history.ok:
        out.add("pop3mon_flapping", base, 1 if report.history.flapping.get(conn.ct.id) else 0)


def _run_health(out: _Collector, started: float, finished: float, valid: bool) -> None:
    out.add("pop3mon_last_run_timestamp_seconds", (), round(finished, 3))
    out.add("pop3mon_run_duration_seconds", (), round(max(0.0, finished - started), 3))
    out.add("pop3mon_config_valid", (), 1 if valid else 0)


def _host(out: _Collector, hrep: HostReport) -> None:
    base = [hrep.host.name, hrep.host.host]
    if hrep.result is not None:
        out.add("pop3mon_host_up", base, 1 if hrep.result.up else 0)
        cts = [i for i in hrep.blocked if not i.startswith(HOST_ID_PREFIX)]
        out.add("pop3mon_host_blocked_connections", base, len(cts))
    for rec in one_per_check(hrep.records):
        out.add("pop3mon_host_check_verdict", [*base, rec.check], VERDICT_CODES[rec.verdict])


def _coverage(out: _Collector, crep: CoverageReport) -> None:
    base = [crep.coverage.name, crep.coverage.host]
    for rec in one_per_check(crep.records):
        out.add("pop3mon_coverage_check_verdict", [*base, rec.check], VERDICT_CODES[rec.verdict])
        if rec.figure is not None:
            out.add("pop3mon_coverage_findings", [*base, rec.check], rec.figure)


def metrics_text(report: RunReport, vantages: Mapping[str, RunReport] | None = None) -> str:
    """The exposition text of a run (Prometheus text format 0.0.4).

    ``vantages`` (a merge of several vantage points, ``pop3mon merge``): each vantage's
    report; every connection type's families then carry a ``vantage`` label, one series
    per vantage, as that vantage saw it (the run-level and host families stay the merged
    report's)."""
    return _run_collector(report, vantages).text()


def _run_collector(report: RunReport, vantages: Mapping[str, RunReport] | None) -> _Collector:
    out = _Collector(by_vantage=bool(vantages))
    if vantages:
        for name, seen in sorted(vantages.items()):
            out.vantage = name
            for conn in seen.connections:
                _connection(out, seen, conn)
    else:
        for conn in report.connections:
            _connection(out, report, conn)
    for hrep in report.hosts:
        _host(out, hrep)
    for crep in report.coverage:
        _coverage(out, crep)
    counts: Mapping[Verdict, int] = report.counts()
    # Every verdict, zeros included: a count series that vanished would read as stale.
    for verdict in VERDICT_CODES:
        out.add("pop3mon_checks", [verdict], counts.get(verdict, 0))
    out.add("pop3mon_run_start_timestamp_seconds", (), round(report.info.started, 3))
    out.add("pop3mon_run_complete", (), 0 if report.info.stopped else 1)
    if report.history.status != "off":
        out.add("pop3mon_history_ok", (), 1 if report.history.ok else 0)
    _run_health(out, report.info.started, report.info.finished, valid=True)
    return out


def write_metrics(
    report: RunReport, path: Path, vantages: Mapping[str, RunReport] | None = None
) -> Path:
    """Write ``metrics.prom`` to ``path``: a temporary name of the report set (ending in
    ``.tmp``: the textfile collector reads only ``*.prom``, so never half a file), which
    renames it into place with the other files (:mod:`.reportset`)."""
    # A family at a time: the whole text is ~15 MB at 1,000 connection types.
    with path.open("w", encoding="utf-8") as out:
        for piece in _run_collector(report, vantages).pieces():
            out.write(piece)
    return path


def _previous_families(text: str) -> list[Metric]:
    """The families of a previous ``metrics.prom`` except the run-health ones; none when it
    cannot be parsed (then only this run's health is written)."""
    try:
        families = list(text_string_to_metric_families(text))
    except Exception:  # noqa: BLE001 - a damaged file is replaced, never a traceback
        return []
    return [f for f in families if f.name not in RUN_HEALTH]


def config_invalid_text(previous: str | None, started: float, finished: float) -> str:
    """The text for a run that failed on its configuration: ``previous``'s samples (the
    last valid run's) with this run's health and ``pop3mon_config_valid 0``."""
    out = _Collector()
    out.carried = _previous_families(previous) if previous else []
    _run_health(out, started, finished, valid=False)
    return out.text()


def mark_config_invalid(directory: Path, started: float, finished: float | None = None) -> str:
    """Rewrite ``directory/metrics.prom`` after a run whose targets file was invalid (see
    :func:`config_invalid_text`), atomically through a one-file :class:`ReportSet`.

    Never raises: returns "" when written, else why not (one line for the terminal), so
    the configuration error stays the message the user sees first.
    """
    files = ReportSet(new_run_id(started))
    final = directory / METRICS_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
        previous: str | None = None
        with contextlib.suppress(FileNotFoundError):
            previous = final.read_text(encoding="utf-8", errors="replace")
        text = config_invalid_text(previous, started, time.time() if finished is None else finished)
        files.stage("OpenMetrics", final).write_text(text, encoding="utf-8")
        files.commit()
    except OSError as exc:
        files.discard()
        return f"{final} not updated: {exc.strerror or exc}"
    except ReportSetError as exc:
        return f"{final} not updated: {exc}"
    return ""
