"""``results.json``: the whole run as versioned, machine-readable data.

Schema ``pop3mon/results/v1`` (keys are sorted, so diffs between runs stay small)::

    {
      "schema": "pop3mon/results/v1",
      "run": {"id", "started", "finished", "duration_seconds", "pop3mon_version",
              "python", "platform",
              "targets": {"file", "sha256",
                          "connection_ids": [...]},   # every id of the file, sorted (all
                                                      # shards' connection_ids together)
              "stopped",              # why the run ended early ("stopped by SIGTERM"), or null
              "shard": {"index", "total"} | null,   # --shard=K/N (K from 1); null: unsharded
              "vantage",              # --vantage NAME, or null
              "connection_ids": [...],   # the ids this run was responsible for (its
                                         # shard's under --shard), sorted
              "merged_from": [...]},     # pop3mon merge's inputs (results.json paths);
                                         # [] for a run
      "counts": {"OK", "WARN", "CRIT", "SKIP", "ERROR", "total"},
      "connections": [
        {"id", "server", "host", "port", "security", "auth", "tags", "verdict",
         "config": {...},            # the connection type's settings (never a secret value)
         "checks": [{"tier", "check", "verdict", "reason", "figure", "unit",
                     "outcome", "nodeid", "duration_seconds",   # outcome "not run":
                     "blocked_by",       # the check whose failure made it a SKIP, or null
                     "broke_in",         # only a check whose test broke: setup|call|teardown
                                         # (teardown with a verdict: broke after it,
                     "failure",          # then junitxml's message, "failed on teardown
                                         # with ...")
                                                                 # the run ended first
                     "state": {"verdict", "hardness",            # "soft" | "hard"
                               "since", "since_epoch",           # start of the streak
                               "runs", "previous", "new", "flapping",
                               "vantage"} | null}],   # vantage: a merge of several
                                                       # vantages only: whose history
         "availability": {"24h", "7d", "30d"} | null,   # share of runs without CRIT/ERROR
         "flapping": bool | null,
         "probe": {...} | null,      # ProbeResult.to_dict(): phases, TLS, transcript ...
         "vantages": {NAME: {"verdict", "checks": [{...}]}} | null}  # a merge of several
      ],                             # --vantage runs: what each saw (checks as above)
      "hosts": [{"host": {"id", "name", "host", "ports", "depends_on", "connections", ...},
                 "availability": {...} | null,  # as a connection's (id host:<server>)
                 "status",                # up | down | blocked | not checked
                 "result": {...} | null,  # engine.hosts.HostResult: ping, ports, root
                 "checks": [{...}],       # ping, tcp: as a connection's checks
                 "blocked": [...]}],      # ids it was the root cause for (when down)
      "coverage": [{"coverage": {"id", "name", "host", "domain", "unmonitored", ...},
                    "availability": {...} | null,  # as a connection's (id server:<name>)
                    "verdict",
                    "discovery": {...} | null,  # engine.discovery.Discovery: published,
                                                # offered, problems (null: not run)
                    "checks": [{...}]}],        # coverage-unmonitored, -published, -autoconfig
      "changes": [{"kind", "connection", "check", "before", "after", "reason",
                   "since", "detail",     # since: null when not known (after a flap)
                   "vantage"}],           # a merge of several vantages only: whose
                                          # history made it
                                          # kind: new worse better recovered hard drift
                                          # flapping settled (check "" for the last two)
      "history": {"status", "path", "note"},   # status ok | new | warn | off
      "notify": {"warnings": [...]},          # notifications that failed (run-level WARN)
      "not_selected": [...],        # ids of run.connection_ids no selected test touched
      "unattributed_checks": [...], # checks whose connection type could not be told
      "others": [{"nodeid", "outcome",   # only when the run had tests that are not
                  "seconds", "message",  # pop3mon checks (a project's own): outcome
                  "text", "skip_type",   # passed | failed | error | skipped, as junit.xml
                  "properties", "then",  # shows them
                  "skip_then_error"}]
    }

``state``, ``availability`` and ``flapping`` are null when the run was not recorded in a
history (``--no-history``, or the history's WARN).

A consumer must check ``schema``; new keys may appear within v1, none will change meaning.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from ..history.model import Change, CheckState
from ..secrets import REDACTOR
from .model import ConnectionReport, CoverageReport, HostReport, RunReport, scrub
from .recorder import CheckRecord

__all__ = ["SCHEMA", "results_document", "write_json"]

SCHEMA = "pop3mon/results/v1"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _scrubbed(value: Any) -> Any:
    """Copy of ``value`` with every string passed through the redactor."""
    kind = type(value)
    # Exact types first: a run at 1,000 connection types passes some 660,000 values here.
    if kind in _PLAIN or kind is _Clean:
        return value
    if kind is dict:
        return {str(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {str(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    if kind not in _FIELDS:  # once per type: numbers, None and enums are most values
        _FIELDS[kind] = (
            tuple(f.name for f in dataclasses.fields(kind))
            if dataclasses.is_dataclass(kind)
            else None
        )
    names = _FIELDS[kind]
    if names is not None:
        # What dataclasses.asdict() gives, made and scrubbed in one pass (asdict's own
        # deep copy was half of this writer's time at 1,000 connection types).
        return {name: _scrubbed(getattr(value, name)) for name in names}
    return value


def _text(value: str) -> str:
    """``value`` through the redactor. Most values are shorter than any form of any
    secret (a stage name, "ok"): the redactor's own first test, without two calls."""
    return scrub(value) if len(value) >= REDACTOR.shortest else value


class _Clean(dict[str, Any]):
    """A check's entry or its state built of scrubbed text (:func:`_check`,
    :func:`_state`): :func:`_scrubbed` takes it as it is rather than walking its fields
    again (20,000 checks at 1,000 connection types, half of the values in the file)."""


#: Field names per type met by :func:`_scrubbed` (None: not a dataclass).
_FIELDS: dict[type, tuple[str, ...] | None] = {}
#: Types :func:`_scrubbed` returns as they are (no string inside).
_PLAIN: frozenset[type] = frozenset({int, float, bool, type(None)})


def _state(state: CheckState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    # Only a merge of several vantages names one: a run's file stays as it was.
    mine = {"vantage": _text(state.vantage)} if state.vantage is not None else {}
    return _Clean(
        **mine,
        verdict=_text(state.verdict),
        hardness=_text(state.hardness),
        since=_text(_iso(state.since)),
        since_epoch=round(state.since, 3),
        runs=state.runs,
        previous=_text(state.previous) if state.previous is not None else None,
        new=state.new,
        flapping=state.flapping,
    )


def _change(change: Change) -> dict[str, Any]:
    return {
        "kind": change.kind,
        "connection": change.ct,
        "check": change.check,
        "before": change.before,
        "after": change.after,
        "reason": change.reason,
        "since": _iso(change.since) if change.since > 0 else None,  # 0: not known
        "detail": change.detail,
        **({"vantage": change.vantage} if change.vantage is not None else {}),
    }


def _check(rec: CheckRecord, state: CheckState | None = None) -> dict[str, Any]:
    entry = _Clean(
        state=_state(state),
        tier=_text(rec.tier),
        check=_text(rec.check),
        verdict=_text(rec.verdict),
        reason=_text(rec.reason),
        figure=_scrubbed(rec.figure),
        unit=_text(rec.unit),
        outcome=_text(rec.outcome),
        nodeid=_text(rec.nodeid),
        duration_seconds=round(rec.duration, 6),
        blocked_by=_text(rec.blocked_by) if rec.blocked_by else None,
    )
    if rec.broke_in:
        # Only a check whose test broke has it (ERROR; or ``teardown`` after its verdict):
        # junit.xml shows one that broke in its body as a <failure>, in set-up or teardown
        # as an <error>; a merge must too.
        entry["broke_in"] = _text(rec.broke_in)
    if rec.broke_after_verdict and rec.failure:
        # junit.xml's "failed on teardown with ..." of a merge, as the run wrote it.
        entry["failure"] = _text(rec.failure)
    return entry


def _connection(conn: ConnectionReport, report: RunReport) -> dict[str, Any]:
    ct = conn.ct
    hist = report.history
    avail = hist.availability.get(ct.id)
    return {
        "availability": dict(avail) if avail is not None else None,
        # Only recorded connection types have one; a merge whose status is one vantage's
        # WARN still has the others'.
        "flapping": hist.flapping.get(ct.id),
        "id": ct.id,
        "server": ct.server,
        "host": ct.host,
        "port": ct.port,
        "security": ct.security,
        "auth": ct.auth,
        "tags": list(ct.tags),
        "verdict": conn.worst,
        "config": ct.to_dict(),
        "checks": [_check(r, report.states.get((ct.id, r.check))) for r in conn.records],
        "probe": conn.result,  # ProbeResult.to_dict()'s dict, made by _scrubbed
        "vantages": {
            name: {"verdict": view.worst, "checks": [_check(r) for r in view.records]}
            for name, view in sorted(conn.vantages.items())
        }
        or None,
    }


def _host(hrep: HostReport, report: RunReport) -> dict[str, Any]:
    """One host check: its configuration, what it found, its checks (with their history
    states, tracked under the id ``host:<server>``) and what it blocked."""
    hid = hrep.host.id
    hist = report.history
    avail = hist.availability.get(hid)
    return {
        "availability": dict(avail) if avail is not None else None,
        "host": hrep.host.to_dict(),
        "status": hrep.status,
        "result": hrep.result,  # as dataclasses.asdict(), made by _scrubbed
        "checks": [_check(r, report.states.get((hid, r.check))) for r in hrep.records],
        "blocked": list(hrep.blocked),
    }


def _coverage(crep: CoverageReport, report: RunReport) -> dict[str, Any]:
    """One server's coverage checks: its settings, what discovery found, its checks (with
    their history states, tracked under the id ``server:<name>``)."""
    cid = crep.coverage.id
    avail = report.history.availability.get(cid)
    return {
        "availability": dict(avail) if avail is not None else None,
        "coverage": crep.coverage.to_dict(),
        "verdict": crep.worst,
        "discovery": crep.result,  # as dataclasses.asdict(), made by _scrubbed
        "checks": [_check(r, report.states.get((cid, r.check))) for r in crep.records],
    }


def results_document(report: RunReport, *, connections: bool = True) -> dict[str, Any]:
    """The JSON document as plain data (already scrubbed of secrets); without its
    ``connections`` list when ``connections`` is False (:func:`write_json` streams them)."""
    info = report.info
    counts: dict[str, int] = {str(v): n for v, n in report.counts().items()}
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "run": {
            "id": info.run_id,
            "started": _iso(info.started),
            "finished": _iso(info.finished),
            "started_epoch": round(info.started, 3),
            "finished_epoch": round(info.finished, 3),
            "duration_seconds": round(info.duration, 3),
            "pop3mon_version": info.version,
            "python": info.python,
            "platform": info.platform,
            "targets": {
                "file": info.targets_name,
                "sha256": info.targets_sha256,
                "connection_ids": list(report.targets_ids),
            },
            "stopped": info.stopped or None,
            "shard": (
                {"index": info.shard[0], "total": info.shard[1]} if info.shard is not None else None
            ),
            "vantage": info.vantage,
            "connection_ids": list(report.connection_ids),
            "merged_from": list(info.merged_from),
        },
        "counts": {**counts, "total": sum(counts.values())},
        "connections": [_connection(c, report) for c in report.connections] if connections else [],
        "hosts": [_host(h, report) for h in report.hosts],
        "coverage": [_coverage(c, report) for c in report.coverage],
        "changes": [_change(c) for c in report.changes],
        "history": {
            "status": report.history.status,
            "path": str(report.history.path) if report.history.path is not None else None,
            "note": report.history.note or None,
        },
        "notify": {"warnings": list(report.notify_warnings)},
        "not_selected": list(report.not_selected),
        "unattributed_checks": [_check(r) for r in report.unattributed],
    }
    if report.others:
        # Only where there are any (a run of the tier tests alone keeps its bytes): a
        # merge lists them and fails on them as the shards' own reports did.
        doc["others"] = list(report.others)  # each by its fields, as _scrubbed makes them
    scrubbed: dict[str, Any] = _scrubbed(doc)
    return scrubbed


def write_json(report: RunReport, path: Path) -> Path:
    """Write ``results.json`` to ``path``: a temporary name of the report set, which
    renames it into place with the other files (:mod:`.reportset`).

    The same bytes as ``json.dumps(results_document(report), sort_keys=True, ...)``, but
    the connections, which hold every probe's transcript, are built, scrubbed and written
    one at a time instead of as one document copied twice (~70 MB at 1,000 connection
    types)."""
    doc = results_document(report, connections=False)
    with path.open("w", encoding="utf-8") as out:
        out.write("{")
        for n, key in enumerate(sorted(doc)):
            out.write(("," if n else "") + _dumps(key) + ":")
            if key != "connections":
                out.write(_dumps(doc[key]))
                continue
            out.write("[")
            for i, conn in enumerate(report.connections):
                out.write(("," if i else "") + _dumps(_scrubbed(_connection(conn, report))))
            out.write("]")
        out.write("}\n")
    return path


def _dumps(value: Any) -> str:
    # Compact on purpose: an indent makes json use its pure-Python encoder, several times
    # slower on the megabytes a large run writes; `jq .` pretty-prints it for people.
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
