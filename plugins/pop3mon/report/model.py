"""The run as the report writers see it: one :class:`RunReport` built on the controller.

Every writer (HTML, JUnit properties, JSON, OpenMetrics) reads the same :class:`RunReport`,
so the four artifacts cannot disagree about which checks ran and how they ended. It joins
three sources that only the controller holds complete under pytest-xdist:

* the targets (configuration, never a secret value),
* the probe results every process wrote to the run directory
  (:meth:`~pop3mon.probestore.ProbeStore.load_all`),
* the per-check verdicts the :class:`~pop3mon.report.recorder.Recorder` collected from the
  test reports' ``user_properties``.
"""

from __future__ import annotations

import functools
import platform
import secrets
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Final

from .. import checks
from ..config import ConnectionType, Coverage, Host
from ..engine.discovery import Discovery
from ..engine.hosts import HostResult
from ..engine.result import ProbeResult
from ..engine.stages import CHECKS, COVERAGE_CHECKS, HOST_CHECKS, HOST_ID_PREFIX, TIERS
from ..history.model import Change, CheckState
from ..history.record import OFF, HistoryOutcome
from ..probestore import ProbeStore
from ..secrets import REDACTOR
from ..verdict import Verdict, count, fails, rank, worst
from .recorder import NOT_RUN, CheckRecord, OtherTest, Recorder, verdicts

__all__ = [
    "NO_VANTAGE",
    "ConnectionReport",
    "CoverageReport",
    "HostReport",
    "RunInfo",
    "RunReport",
    "VantageView",
    "build_run_report",
    "listed",
    "new_run_id",
    "pop3mon_version",
    "scrub",
]

#: How a merge of several vantage points calls a run made without ``--vantage`` (in its
#: messages, its per-vantage breakdown and its results.json): no name ``--vantage`` takes.
NO_VANTAGE: Final = "(none)"

_CHECK_ORDER: Final[Mapping[str, int]] = {c.name: i for i, c in enumerate(CHECKS)}


def scrub(text: str) -> str:
    """Remove every registered secret (and its encodings) from ``text``.

    The engine already redacts what it records; this second pass is the last line of
    defence for anything a report writes.
    """
    return REDACTOR.scrub(text)


def new_run_id(now: float | None = None) -> str:
    """A readable, unique id for one run: UTC start time plus 6 random hex digits."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def pop3mon_version(rootdir: Path) -> str:
    """The installed pop3mon version, else the one in ``rootdir/pyproject.toml``."""
    try:
        return importlib_metadata.version("pop3mon")
    except importlib_metadata.PackageNotFoundError:
        pass
    try:
        with (rootdir / "pyproject.toml").open("rb") as handle:
            project = tomllib.load(handle).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return "unknown"
    if project.get("name") == "pop3mon" and isinstance(project.get("version"), str):
        return str(project["version"])
    return "unknown"


@dataclass(frozen=True)
class RunInfo:
    """Facts about the run that every artifact carries (all safe to publish)."""

    run_id: str
    started: float
    finished: float
    targets_name: str
    targets_sha256: str
    version: str
    #: Why the run ended before every selected check ran ("stopped by SIGTERM",
    #: "interrupted", pytest's "stopping after 1 failures"), "" when all ran.
    stopped: str = ""
    #: (K, N): this run was shard K of N (``--shard``); None: unsharded.
    shard: tuple[int, int] | None = None
    #: Where the run probed from (``--vantage``), or None.
    vantage: str | None = None
    #: The inputs ``pop3mon merge`` joined into this report; empty for a run.
    merged_from: tuple[str, ...] = ()
    python: str = field(default_factory=platform.python_version)
    platform: str = field(default_factory=platform.platform)

    @property
    def duration(self) -> float:
        """Wall-clock seconds from session start to finish."""
        return max(0.0, self.finished - self.started)

    def environment(self) -> dict[str, str]:
        """The allow-listed environment table (pytest-html, JSON ``run``)."""
        table = {
            "Python": self.python,
            "Platform": self.platform,
            "pop3mon": self.version,
            "Targets file": self.targets_name,
            "Targets sha256": self.targets_sha256,
            "Run id": self.run_id,
        }
        if self.shard is not None:
            table["Shard"] = f"{self.shard[0]}/{self.shard[1]}"
        if self.vantage is not None:
            table["Vantage"] = self.vantage
        return table

    def label(self) -> str:
        """``shard 3/10 · vantage eu-west``, or "" for an unsharded run from no named
        place (the terminal summary's line)."""
        parts = []
        if self.shard is not None:
            parts.append(f"shard {self.shard[0]}/{self.shard[1]}")
        if self.vantage is not None:
            parts.append(f"vantage {self.vantage}")
        return " · ".join(parts)


def _check_key(ct: ConnectionType, rec: CheckRecord) -> tuple[int, int, str]:
    tier = TIERS.index(rec.tier) if rec.tier in TIERS else len(TIERS)
    if rec.check.startswith("latency-"):
        phases = checks.latency_phases(ct)
        phase = rec.check.removeprefix("latency-")
        pos = phases.index(phase) if phase in phases else len(phases)
        return tier, pos, rec.check
    return tier, _CHECK_ORDER.get(rec.check, len(_CHECK_ORDER)), rec.check


@dataclass(frozen=True)
class VantageView:
    """What one vantage point (``--vantage``) saw of a connection type, in a report merged
    from several (``pop3mon merge``): its checks as that vantage's run recorded them."""

    vantage: str
    records: tuple[CheckRecord, ...]
    result: ProbeResult | None = None
    #: The verdict of the server's host check when it blocked this connection type from
    #: this vantage (its checks are then SKIP, but the vantage did not reach the server).
    host: Verdict | None = None

    @property
    def worst(self) -> Verdict:
        """The worst verdict this vantage saw (its host check's, when that blocked it)."""
        seen = list(verdicts(self.records))
        return worst([*seen, self.host] if self.host is not None else seen)


@dataclass(frozen=True)
class ConnectionReport:
    """One connection type of the run: configuration, probe result and check verdicts."""

    ct: ConnectionType
    result: ProbeResult | None
    records: tuple[CheckRecord, ...]
    #: Per vantage point, by name, when the report was merged from several vantages (then
    #: ``records`` hold each check's worst verdict over them); empty otherwise.
    vantages: Mapping[str, VantageView] = field(default_factory=dict)

    # Worked out once: the writers ask for both again and again (the page's matrix, its
    # server tallies and its order, for every connection type of a large run).
    @functools.cached_property
    def worst(self) -> Verdict:
        """The worst verdict of all its checks (and, merged from several vantages, the
        worst any of them saw: one whose host check blocked it counts that)."""
        own = worst(verdicts(self.records))
        if not self.vantages:
            return own
        return worst([own, *(v.worst for v in self.vantages.values())])

    def tier_records(self, tier: str) -> tuple[CheckRecord, ...]:
        """Its checks of one tier, in check order."""
        return self._by_tier.get(tier, ())

    @functools.cached_property
    def _by_tier(self) -> dict[str, tuple[CheckRecord, ...]]:
        found: dict[str, list[CheckRecord]] = {}
        for rec in self.records:
            found.setdefault(rec.tier, []).append(rec)
        return {tier: tuple(recs) for tier, recs in found.items()}

    def problems(self) -> tuple[CheckRecord, ...]:
        """Checks a mail admin must act on: CRIT and ERROR first, then WARN."""
        bad = [r for r in self.records if rank(r.verdict) >= rank(Verdict.WARN)]
        return tuple(sorted(bad, key=lambda r: -rank(r.verdict)))

    def latency_ms(self) -> float | None:
        """Total probe time in milliseconds (the headline latency figure)."""
        if self.result is None:
            return None
        total = self.result.phase("total")
        return None if total is None else total * 1000.0

    def cert_days_left(self) -> float | None:
        """Days until the certificate expires, when one was seen."""
        tls = self.result.tls if self.result is not None else None
        return tls.cert.days_left if tls is not None and tls.cert is not None else None

    def seen_from(self) -> str:
        """What each vantage point saw, worst first: "CRIT from eu-west · OK from us-east"
        ("" unless merged from several vantages)."""
        views = sorted(self.vantages.values(), key=lambda v: (-rank(v.worst), v.vantage))
        return " · ".join(f"{v.worst} from {v.vantage}" for v in views)

    def not_probed_from(self, names: Iterable[str]) -> list[str]:
        """Of the merge's vantage points ``names``, those that did not probe this
        connection type at all (deselected there, or another shard plan), sorted."""
        return sorted(set(names) - set(self.vantages)) if self.vantages else []

    def vantage_finding(self, names: Iterable[str] = ()) -> str:
        """The conclusion the vantages allow: a connection type that fails (CRIT, ERROR)
        from some vantage points and not from others has a problem on the network path,
        not on the server ("" when they agree, or with fewer than two vantages).

        A vantage counts as "not failing" only when it ran every check that failed from
        the others (OK or WARN, not SKIP or absent): one that never tried to log in says
        nothing about a failed login, so the finding then names what it did not run. A
        vantage whose host check blocked the connection type did not reach the server, so
        it counts as failing. ``names``: every vantage of the merge, to name those that
        did not probe this connection type at all ("not probed from apac")."""
        parts = []
        missing = self.not_probed_from(names)
        if missing:
            parts.append(f"not probed from {', '.join(missing)}")
        if len(self.vantages) >= 2:
            found = self._compare(fails, "fails only from {}: network path, not the server")
            if not found:
                found = self._compare(
                    lambda v: v == Verdict.WARN, "WARN only from {}", fine=(Verdict.OK,)
                )
            if found:
                parts.append(found)
        return "; ".join(parts)

    def _compare(
        self,
        bad: Callable[[Verdict], bool],
        finding: str,
        fine: tuple[Verdict, ...] = (Verdict.OK, Verdict.WARN),
    ) -> str:
        """``finding`` naming the vantages whose worst is ``bad`` when another vantage
        ran every check that was ``bad`` there and found it ``fine``; else which vantage
        did not run which of them (no comparison); "" when none is ``bad`` or none is
        ``fine``."""
        views = sorted(self.vantages.items())
        failing = [n for n, v in views if bad(v.worst)]
        if not failing:
            return ""
        checks = {r.check for n in failing for r in self.vantages[n].records if bad(r.verdict)}
        agree, untried = [], []
        for name, view in views:
            if name in failing or view.worst not in fine:
                continue
            ran = {r.check for r in view.records if r.verdict in fine}
            if checks <= ran:
                agree.append(name)
            else:
                untried.append(f"{name} did not run {listed(sorted(checks - ran))}")
        if agree:
            return finding.format(", ".join(failing))
        if untried:
            what = finding.split(" only from", 1)[0]
            return f"{what} from {', '.join(failing)}, not compared: {'; '.join(untried)}"
        return ""


def listed(items: Sequence[str], limit: int | None = 3) -> str:
    """``a, b, c`` or, past ``limit`` items, ``a, b, c and 4 more`` (``None``: all): a
    line names a few, not thousands."""
    if limit is None or len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f" and {len(items) - limit} more"


@dataclass(frozen=True)
class HostReport:
    """One host check of the run (a server's PING and TCP, engine/hosts.py): its result,
    its two check records, and what its being down blocked (the connection types and hosts
    whose root cause it is; empty when it is up or blocked itself)."""

    host: Host
    result: HostResult | None
    records: tuple[CheckRecord, ...]
    blocked: tuple[str, ...] = ()

    @property
    def worst(self) -> Verdict:
        """The worst verdict of its checks."""
        return worst(verdicts(self.records))

    @property
    def status(self) -> str:
        """up, down, blocked, or "not checked" (not selected, or the run ended first)."""
        return self.result.status if self.result is not None else "not checked"


@dataclass(frozen=True)
class CoverageReport:
    """One server's coverage checks (checks/coverage.py): its settings, what this run's
    discovery found (``None``: not run) and its check records."""

    coverage: Coverage
    result: Discovery | None
    records: tuple[CheckRecord, ...]

    @property
    def worst(self) -> Verdict:
        """The worst verdict of its checks."""
        return worst(verdicts(self.records))


@dataclass(frozen=True)
class RunReport:
    """Everything the writers need; built once per run by :func:`build_run_report`."""

    info: RunInfo
    connections: tuple[ConnectionReport, ...]
    #: Checks whose connection type could not be told (a test that broke oddly).
    unattributed: tuple[CheckRecord, ...] = ()
    #: Configured connection types no selected test touched (``-k``/``-m`` deselection).
    not_selected: tuple[str, ...] = ()
    #: What the run history made of this run (states, changes, availability), set on the
    #: controller after the run was recorded; status "off" without a history.
    history: HistoryOutcome = OFF
    #: Run-level warnings of the notifications (a failing endpoint), set on the controller
    #: after they were sent; empty when all went out or nothing had to.
    notify_warnings: tuple[str, ...] = ()
    #: The host checks (file order); empty when the targets file has none.
    hosts: tuple[HostReport, ...] = ()
    #: The connection ids this run was responsible for, sorted: the targets file's, or its
    #: shard's under ``--shard`` (``not_selected`` is what ``-k``/``-m`` left of them).
    connection_ids: tuple[str, ...] = ()
    #: The coverage checks of the servers that have them on (file order).
    coverage: tuple[CoverageReport, ...] = ()
    #: Every connection id of the targets file, sorted (a shard's ``connection_ids`` are
    #: its part of them); empty when not known (a results.json of an older pop3mon).
    targets_ids: tuple[str, ...] = ()
    #: The run's tests that are not pop3mon checks (a project's own tests run beside the
    #: tier tests), as JUnit shows them; a merge keeps each once, its worst outcome.
    others: tuple[OtherTest, ...] = ()

    @property
    def states(self) -> Mapping[tuple[str, str], CheckState]:
        """Each check's state after this run, by (connection id, check); empty without a
        history."""
        return self.history.states

    @property
    def changes(self) -> tuple[Change, ...]:
        """The changes this run made, to tell (empty without a history)."""
        return self.history.changes

    @property
    def history_note(self) -> str:
        """The history's run-level WARN or new-baseline sentence, or ""."""
        return self.history.note

    @property
    def vantage_names(self) -> tuple[str, ...]:
        """The vantage points a merge of several joined, sorted (empty for a run)."""
        return tuple(sorted({n for c in self.connections for n in c.vantages}))

    @property
    def records(self) -> tuple[CheckRecord, ...]:
        """Every check of the run."""
        out = [r for h in self.hosts for r in h.records]
        out += [r for c in self.connections for r in c.records]
        out += [r for c in self.coverage for r in c.records]
        return (*out, *self.unattributed)

    def not_run(self) -> int:
        """How many selected checks did not run because the run ended first."""
        return sum(1 for r in self.records if r.outcome == NOT_RUN)

    def counts(self) -> dict[Verdict, int]:
        """How many checks ended with each verdict (every verdict present, zero or not)."""
        return count(verdicts(self.records))

    def by_severity(self) -> tuple[ConnectionReport, ...]:
        """Connection types, most severe first, newly broken ones first among equals, then
        by id: what broke this run is what the reader came for."""
        fresh = {c.ct for c in self.changes if c.kind in ("new", "worse")}
        return tuple(
            sorted(self.connections, key=lambda c: (-rank(c.worst), c.ct.id not in fresh, c.ct.id))
        )


def build_run_report(
    store: ProbeStore,
    recorder: Recorder | None,
    info: RunInfo,
    results: Mapping[str, ProbeResult] | None = None,
) -> RunReport:
    """Join targets, probe results and verdicts into a :class:`RunReport`."""
    results = dict(store.load_all() if results is None else results)
    grouped: dict[str, list[CheckRecord]] = {}
    unattributed: list[CheckRecord] = []
    records: Sequence[CheckRecord] = list(recorder.records.values()) if recorder else []
    host_ids = {h.id for h in store.targets.hosts} | {c.id for c in store.targets.coverage}
    for rec in records:
        if rec.ct in store.by_id or rec.ct in host_ids:
            grouped.setdefault(rec.ct, []).append(rec)
        else:
            unattributed.append(rec)
    connections: list[ConnectionReport] = []
    not_selected: list[str] = []
    for ct in store.targets.connections:
        mine = grouped.get(ct.id, [])
        result = results.get(ct.id)
        if not mine and result is None:
            not_selected.append(ct.id)
            continue
        # Under -n records arrive in completion order; sort them into tier/check order so
        # every artifact lists them the same way on every run.
        mine.sort(key=functools.partial(_check_key, ct))
        connections.append(ConnectionReport(ct=ct, result=result, records=tuple(mine)))
    return RunReport(
        info=info,
        connections=tuple(connections),
        unattributed=tuple(unattributed),
        not_selected=tuple(not_selected),
        hosts=_host_reports(store, grouped, results),
        connection_ids=tuple(sorted(store.targets.ids)),
        coverage=_coverage_reports(store, grouped),
        targets_ids=tuple(sorted(store.targets.all_ids)),
    )


def _coverage_reports(
    store: ProbeStore, grouped: Mapping[str, list[CheckRecord]]
) -> tuple[CoverageReport, ...]:
    """Each server's coverage checks with what its discovery found, when they ran or
    were selected."""
    found = store.load_coverage()
    order: dict[str, int] = {name: i for i, name in enumerate(COVERAGE_CHECKS)}
    out: list[CoverageReport] = []
    for cov in store.targets.coverage:
        mine = sorted(grouped.get(cov.id, []), key=lambda r: order.get(r.check, len(order)))
        result = found.get(cov.name)
        if result is None and not mine:
            continue
        out.append(CoverageReport(cov, result, tuple(mine)))
    return tuple(out)


def _host_reports(
    store: ProbeStore, grouped: Mapping[str, list[CheckRecord]], results: Mapping[str, ProbeResult]
) -> tuple[HostReport, ...]:
    """Each host check with its records and what it blocked, when it was checked or
    selected."""
    found = store.load_hosts()
    order: dict[str, int] = {name: i for i, name in enumerate(HOST_CHECKS)}
    out: list[HostReport] = []
    for host in store.targets.hosts:
        mine = sorted(grouped.get(host.id, []), key=lambda r: order.get(r.check, len(order)))
        result = found.get(host.name)
        if result is None and not mine:
            continue
        blocked: list[str] = []
        if result is not None and result.status == "down":
            blocked += [
                HOST_ID_PREFIX + r.name
                for r in found.values()
                if r.status == "blocked" and r.root == host.name
            ]
            blocked += [i for i, res in results.items() if res.blocked_host == host.name]
        out.append(HostReport(host, result, tuple(mine), tuple(blocked)))
    return tuple(out)
