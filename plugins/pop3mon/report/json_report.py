"""``results.json``: the whole run as versioned, machine-readable data.

Schema ``pop3mon/results/v1`` (keys are sorted, so diffs between runs stay small)::

    {
      "schema": "pop3mon/results/v1",
      "run": {"id", "started", "finished", "duration_seconds", "pop3mon_version",
              "python", "platform", "targets": {"file", "sha256"},
              "stopped"},             # why the run ended early ("stopped by SIGTERM"), or null
      "counts": {"OK", "WARN", "CRIT", "SKIP", "ERROR", "total"},
      "connections": [
        {"id", "server", "host", "port", "security", "auth", "tags", "verdict",
         "config": {...},            # the connection type's settings (never a secret value)
         "checks": [{"tier", "check", "verdict", "reason", "figure", "unit",
                     "outcome", "nodeid", "duration_seconds"}],   # outcome "not run":
                                                                    # the run ended first
         "probe": {...} | null}      # ProbeResult.to_dict(): phases, TLS, transcript ...
      ],
      "not_selected": [...],        # configured ids that no selected test touched
      "unattributed_checks": [...]  # checks whose connection type could not be told
    }

A consumer must check ``schema``; new keys may appear within v1, none will change meaning.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .model import ConnectionReport, RunReport, scrub
from .recorder import CheckRecord

__all__ = ["SCHEMA", "results_document", "write_json"]

SCHEMA = "pop3mon/results/v1"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _scrubbed(value: Any) -> Any:
    """Copy of ``value`` with every string passed through the redactor."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {str(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


def _check(rec: CheckRecord) -> dict[str, Any]:
    return {
        "tier": rec.tier,
        "check": rec.check,
        "verdict": rec.verdict,
        "reason": rec.reason,
        "figure": rec.figure,
        "unit": rec.unit,
        "outcome": rec.outcome,
        "nodeid": rec.nodeid,
        "duration_seconds": round(rec.duration, 6),
    }


def _connection(conn: ConnectionReport) -> dict[str, Any]:
    ct = conn.ct
    return {
        "id": ct.id,
        "server": ct.server,
        "host": ct.host,
        "port": ct.port,
        "security": ct.security,
        "auth": ct.auth,
        "tags": list(ct.tags),
        "verdict": conn.worst,
        "config": ct.to_dict(),
        "checks": [_check(r) for r in conn.records],
        "probe": conn.result.to_dict() if conn.result is not None else None,
    }


def results_document(report: RunReport) -> dict[str, Any]:
    """The JSON document as plain data (already scrubbed of secrets)."""
    info = report.info
    counts: dict[str, int] = {str(v): n for v, n in report.counts().items()}
    doc = {
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
            "targets": {"file": info.targets_name, "sha256": info.targets_sha256},
            "stopped": info.stopped or None,
        },
        "counts": {**counts, "total": sum(counts.values())},
        "connections": [_connection(c) for c in report.connections],
        "not_selected": list(report.not_selected),
        "unattributed_checks": [_check(r) for r in report.unattributed],
    }
    scrubbed: dict[str, Any] = _scrubbed(doc)
    return scrubbed


def write_json(report: RunReport, path: Path) -> Path:
    """Write ``results.json`` to ``path``: a temporary name of the report set, which
    renames it into place with the other files (:mod:`.reportset`)."""
    # Compact on purpose: an indent makes json use its pure-Python encoder, several times
    # slower on the megabytes a large run writes; `jq .` pretty-prints it for people.
    text = json.dumps(
        results_document(report), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    path.write_text(text + "\n", encoding="utf-8")
    return path
