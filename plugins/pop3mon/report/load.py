"""``results.json`` read back into the :class:`~.model.RunReport` the writers read.

``pop3mon merge`` combines shards (and vantage points) from their ``results.json`` files
alone: no pytest, no targets file, no run directory. So the document has to carry
everything a writer reads, and this module is its inverse (:func:`load_results`): the
connection types' configuration (``config``), the probe results (``probe``), the check
records, the host checks and the history's states, changes and availability as the run
recorded them, and the coverage checks with what their discovery found.

What the document does not carry, and a report written from a loaded run therefore lacks
(documented in README.md, "Merging shards and vantage points"): the history's latency
series (the HTML sparkline), a state's ``told`` verdict and a change's ``was_hard`` (the
notifications' business, not a report's), and the sub-millisecond part of the run's start
and end (``run.started_epoch`` is rounded to 1 ms, so ``duration_seconds`` may differ in
its last digit).
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

from ..config.model import ConnectionType, Coverage, Host, LatencyThresholds, RoundTrip
from ..config.shard import MAX_SHARDS, is_vantage
from ..engine.defaults import DriftPolicy
from ..engine.hosts import HostResult
from ..engine.result import ProbeResult
from ..history.model import Change, CheckState
from ..history.record import HistoryOutcome
from ..history.store import WINDOWS
from ..probestore import discovery_from_dict
from ..verdict import Verdict
from .json_report import SCHEMA
from .model import (
    ConnectionReport,
    CoverageReport,
    HostReport,
    RunInfo,
    RunReport,
    VantageView,
)
from .recorder import CheckRecord

__all__ = ["LoadError", "LoadedRun", "find_results", "load_results", "report_from_document"]

RESULTS_NAME: Final = "results.json"


class LoadError(Exception):
    """A results.json that cannot be read back; the message is one line naming the file."""


@dataclass(frozen=True)
class LoadedRun:
    """One run's results.json and the report it was written from."""

    path: Path
    report: RunReport

    @property
    def shard(self) -> tuple[int, int] | None:
        """``run.shard`` as (index, total); None for an unsharded run."""
        return self.report.info.shard

    @property
    def vantage(self) -> str | None:
        """``run.vantage``: where the run probed from, or None."""
        return self.report.info.vantage


def find_results(arg: Path) -> list[Path]:
    """The results.json files an INPUT names: the file itself, or ``DIR/results.json``
    and ``DIR/*/results.json`` (a folder of downloaded artifacts), sorted."""
    if arg.is_file():
        return [arg]
    if not arg.is_dir():
        raise LoadError(f"{arg}: no such file or directory")
    found = ([arg / RESULTS_NAME] if (arg / RESULTS_NAME).is_file() else []) + sorted(
        p for p in arg.glob(f"*/{RESULTS_NAME}") if p.is_file()
    )
    if not found:
        raise LoadError(f"{arg}: no {RESULTS_NAME} in it or in its subdirectories")
    return found


def load_results(path: Path) -> LoadedRun:
    """Read ``path`` (a results.json of schema v1) into a :class:`LoadedRun`."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoadError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else None
        raise LoadError(f"{path}: not a pop3mon results file (schema {found!r}, want {SCHEMA!r})")
    try:
        return LoadedRun(path=path, report=report_from_document(doc))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise LoadError(f"{path}: malformed results file ({what})") from None


def _epoch(iso: str | None) -> float:
    """Inverse of the writers' ISO 8601 to the second (0 for null: not known)."""
    if not iso:
        return 0.0
    return float(calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))


def _verdict(value: object) -> Verdict | None:
    return None if value is None else Verdict.parse(value)


def _tracked_checks(
    entry: Mapping[str, Any],
    tracked: str,
    name: str,
    states: dict[tuple[str, str], CheckState],
    availability: dict[str, Mapping[str, float | None]],
) -> tuple[CheckRecord, ...]:
    """The check records of a host or coverage entry (history id ``tracked``), adding
    their history states and the entry's availability to ``states``/``availability``."""
    for chk in entry["checks"]:
        if chk.get("state") is not None:
            states[(tracked, chk["check"])] = _state(tracked, chk["check"], chk["state"])
    if entry.get("availability") is not None:
        availability[tracked] = _windows(entry["availability"])
    return tuple(_record(c, tracked, name) for c in entry["checks"])


def _record(data: Mapping[str, Any], ct: str, server: str) -> CheckRecord:
    figure = data.get("figure")
    return CheckRecord(
        nodeid=str(data.get("nodeid", "")),
        ct=ct,
        server=server,
        tier=str(data["tier"]),
        check=str(data["check"]),
        verdict=Verdict.parse(data["verdict"]),
        reason=str(data.get("reason", "")),
        outcome=str(data.get("outcome", "")),
        figure=float(figure) if figure is not None else None,
        unit=str(data.get("unit", "")),
        duration=float(data.get("duration_seconds", 0.0)),
        blocked_by=str(data.get("blocked_by") or ""),
    )


def _windows(data: Mapping[str, float | None]) -> dict[str, float | None]:
    """Availability in the history's window order (the JSON has its keys sorted)."""
    order = [label for label, _ in WINDOWS]
    return {
        k: data[k]
        for k in sorted(
            data, key=lambda k: (k not in order, order.index(k) if k in order else 0, k)
        )
    }


def _state(ct: str, check: str, data: Mapping[str, Any]) -> CheckState:
    return CheckState(
        ct=ct,
        check=check,
        verdict=Verdict.parse(data["verdict"]),
        hardness=data["hardness"],
        since=float(data["since_epoch"]),
        runs=int(data["runs"]),
        previous=_verdict(data.get("previous")),
        flapping=bool(data.get("flapping", False)),
        new=bool(data.get("new", False)),
        vantage=_whose(data.get("vantage"), "a state"),
    )


def _whose(value: Any, what: str) -> str | None:
    """The vantage a merged state or change names (None: a run's own), a name as
    ``--vantage`` takes it: never raw control characters for the terminal."""
    if value is None:
        return None
    if not isinstance(value, str) or not is_vantage(value):
        raise ValueError(f"the vantage of {what} {ascii(value)[:80]} is not a vantage name")
    return value


def connection_type(config: Mapping[str, Any]) -> ConnectionType:
    """Inverse of :meth:`ConnectionType.to_dict` (the ``config`` of a connection)."""
    d = {f.name: config[f.name] for f in fields(ConnectionType) if f.name in config}
    d["tags"] = tuple(d.get("tags", ()))
    d["latency"] = LatencyThresholds({k: (v[0], v[1]) for k, v in d["latency"].items()})
    d["drift"] = DriftPolicy(**d["drift"])
    for key in ("mailbox_count", "mailbox_size"):
        if d.get(key) is not None:
            d[key] = (d[key][0], d[key][1])
    if d.get("round_trip") is not None:
        d["round_trip"] = RoundTrip(**d["round_trip"])
    return ConnectionType(**d)


def _host(data: Mapping[str, Any]) -> Host:
    d = {f.name: data[f.name] for f in fields(Host)}
    for key in ("ports", "depends_on", "connections", "tags"):
        d[key] = tuple(d[key])
    return Host(**d)


def _coverage(data: Mapping[str, Any]) -> Coverage:
    """Inverse of :meth:`Coverage.to_dict`, without ``monitored`` (the targets file's
    connection types, which only the rules read; a report reads the records)."""
    d = {f.name: data[f.name] for f in fields(Coverage) if f.name != "monitored"}
    d["ports"] = tuple(d["ports"])
    d["tags"] = tuple(d["tags"])
    return Coverage(monitored=(), **d)


def _shard(value: Any) -> tuple[int, int] | None:
    """``run.shard`` as (K, N), 1 <= K <= N; a merge must not count shard 0 of 0 as done."""
    if value is None:
        return None
    index, total = value["index"], value["total"]
    if not (type(index) is int and type(total) is int and 1 <= index <= total <= MAX_SHARDS):
        raise ValueError(
            f"run.shard {index!r}/{total!r} is not K/N with 1 <= K <= N <= {MAX_SHARDS}"
        )
    return index, total


def _vantage(value: Any) -> str | None:
    """``run.vantage``: a name as ``--vantage`` takes it, never raw control characters
    for the terminal."""
    if value is None:
        return None
    if not isinstance(value, str) or not is_vantage(value):
        raise ValueError(f"run.vantage {ascii(value)[:80]} is not a vantage name")
    return value


def report_from_document(doc: Mapping[str, Any]) -> RunReport:
    """The :class:`RunReport` a results.json document was written from (see the module
    docstring for the little it cannot restore)."""
    run = doc["run"]
    info = RunInfo(
        run_id=str(run["id"]),
        started=float(run["started_epoch"]),
        finished=float(run["finished_epoch"]),
        targets_name=str(run["targets"]["file"]),
        targets_sha256=str(run["targets"]["sha256"]),
        version=str(run["pop3mon_version"]),
        stopped=str(run.get("stopped") or ""),
        shard=_shard(run.get("shard")),
        vantage=_vantage(run.get("vantage")),
        merged_from=tuple(str(m) for m in run.get("merged_from") or ()),
        python=str(run["python"]),
        platform=str(run["platform"]),
    )
    states: dict[tuple[str, str], CheckState] = {}
    availability: dict[str, Mapping[str, float | None]] = {}
    flapping: dict[str, bool] = {}
    connections: list[ConnectionReport] = []
    for conn in doc["connections"]:
        ct = connection_type(conn["config"])
        records = tuple(_record(c, ct.id, ct.server) for c in conn["checks"])
        for chk in conn["checks"]:
            if chk.get("state") is not None:
                states[(ct.id, chk["check"])] = _state(ct.id, chk["check"], chk["state"])
        if conn.get("availability") is not None:
            availability[ct.id] = _windows(conn["availability"])
        if conn.get("flapping") is not None:
            flapping[ct.id] = bool(conn["flapping"])
        vantages = {
            name: VantageView(
                name, tuple(_record(c, ct.id, ct.server) for c in view.get("checks", ()))
            )
            for name, view in (conn.get("vantages") or {}).items()
        }
        probe = conn.get("probe")
        connections.append(
            ConnectionReport(
                ct=ct,
                result=ProbeResult.from_dict(probe) if probe is not None else None,
                records=records,
                vantages=vantages,
            )
        )
    hosts: list[HostReport] = []
    for entry in doc.get("hosts", ()):
        host = _host(entry["host"])
        records = _tracked_checks(entry, host.id, host.name, states, availability)
        result = entry.get("result")
        hosts.append(
            HostReport(
                host=host,
                result=HostResult.from_dict(result) if result is not None else None,
                records=records,
                blocked=tuple(entry.get("blocked", ())),
            )
        )
    coverage: list[CoverageReport] = []
    for entry in doc.get("coverage", ()):
        cov = _coverage(entry["coverage"])
        records = _tracked_checks(entry, cov.id, cov.name, states, availability)
        found = entry.get("discovery")
        coverage.append(
            CoverageReport(cov, discovery_from_dict(found) if found is not None else None, records)
        )
    hist = doc.get("history") or {"status": "off"}
    changes = tuple(
        Change(
            kind=c["kind"],
            ct=c["connection"],
            check=c["check"],
            before=_verdict(c.get("before")),
            after=Verdict.parse(c["after"]),
            reason=str(c.get("reason", "")),
            since=_epoch(c.get("since")),
            detail=str(c.get("detail", "")),
            vantage=_whose(c.get("vantage"), "a change"),
        )
        for c in doc.get("changes", ())
    )
    history = HistoryOutcome(
        status=hist["status"],
        path=Path(hist["path"]) if hist.get("path") else None,
        note=str(hist.get("note") or ""),
        states=states,
        changes=changes,
        availability=availability,
        flapping=flapping,
    )
    unattributed = tuple(_record(c, "", "") for c in doc.get("unattributed_checks", ()))
    return RunReport(
        info=info,
        connections=tuple(connections),
        unattributed=unattributed,
        not_selected=tuple(doc.get("not_selected", ())),
        history=history,
        notify_warnings=tuple((doc.get("notify") or {}).get("warnings", ())),
        hosts=tuple(hosts),
        connection_ids=tuple(str(i) for i in run.get("connection_ids", ())),
        coverage=tuple(coverage),
    )
