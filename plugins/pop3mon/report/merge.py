"""``pop3mon merge``: N shards' (and several vantage points') results into one report.

Each input is one run's ``results.json`` read back (:mod:`.load`). The merge refuses, one
line per problem and nothing written, what would make a silently wrong report:

* inputs from different targets files (``run.targets.sha256``);
* per vantage point: shards from different run ids, different ``shard.total``, a shard
  index twice, a connection id in two shards, sharded and unsharded inputs together;
* ``--expect-shards=N`` that is not the shards' total;
* an input that is itself a merge of several vantages (its per-vantage records are not a
  run's), or a merge given with other inputs of its vantage (it would count them twice);
  a merge alone in its vantage is that vantage's whole run: the multi-vantage templates
  merge each cluster's shards, then the clusters' merges;
* complete shards that do not split the targets file between them: a connection id of the
  file (``run.targets.connection_ids``) in no shard's ``connection_ids`` or in two, as
  shards split by different pop3mon builds may be;
* a missing shard: "shard 3/10 of run 123 (vantage eu-west) is missing" — the one refusal
  ``--if-complete`` turns into "not yet" (:attr:`MergeProblems.only_missing`).

Shards of one vantage are joined (:func:`join_shards`): connection types, host checks and
coverage checks in a whole run's order (connection types by id, the others by file line),
the run from the first start to the last end, the history's states, changes and
availability as each shard recorded them (each shard ran its own connection types against
the history, so they never overlap).

Several vantages (:func:`join_vantages`): each connection type once, each check's record
the worst any vantage saw (its reason saying which vantage and what the others saw), and
per vantage what it saw (:class:`~.model.VantageView`), so the reports can tell a network
path problem ("fails only from eu-west") from a server problem (failing from all). Host
and coverage checks likewise once, each check the worst any vantage saw (a coverage
finding seen from one vantage only is a finding).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from ..engine.stages import HOST_TIER
from ..history.model import Change, CheckState
from ..history.record import HistoryOutcome
from ..verdict import Verdict, rank
from .load import LoadedRun
from .model import (
    NO_VANTAGE,
    ConnectionReport,
    CoverageReport,
    HostReport,
    RunInfo,
    RunReport,
    VantageView,
    listed,
)
from .recorder import CheckRecord, OtherTest

__all__ = ["MergeProblems", "Merged", "join_shards", "join_vantages", "merge_runs"]

#: Worst first: the history status a merge reports when its inputs differ.
_HISTORY_ORDER: Final = ("warn", "new", "ok", "off")


class MergeProblems(Exception):
    """Why the inputs cannot be merged: one line per problem. ``missing`` are the
    missing-shard lines; the rest (``problems``) are refusals whatever ``--if-complete``."""

    def __init__(self, problems: Sequence[str], missing: Sequence[str]) -> None:
        self.problems = tuple(problems)
        self.missing = tuple(missing)
        super().__init__("\n".join([*self.problems, *self.missing]))

    @property
    def only_missing(self) -> bool:
        """True when the inputs are fine but some shards have not arrived yet."""
        return not self.problems and bool(self.missing)

    def lines(self) -> list[str]:
        """Every problem, refusals first."""
        return [*self.problems, *self.missing]


@dataclass(frozen=True)
class Merged:
    """The merged report, each vantage's report (several vantages only: the metrics'
    ``vantage`` label) and a line saying what was merged."""

    report: RunReport
    vantages: Mapping[str, RunReport]
    summary: str


def _name(vantage: str | None) -> str:
    return vantage if vantage is not None else NO_VANTAGE


def _of(run_id: str, vantage: str | None) -> str:
    where = f" (vantage {vantage})" if vantage is not None else ""
    return f"run {run_id}{where}"


def check_inputs(runs: Sequence[LoadedRun], expect_shards: int | None = None) -> None:
    """Raise :class:`MergeProblems` unless ``runs`` are complete, consistent shards."""
    problems: list[str] = []
    missing: list[str] = []
    targets = {r.report.info.targets_sha256 for r in runs}
    if len(targets) > 1:
        seen = ", ".join(
            f"{r.path} ({r.report.info.targets_name}, sha256 {r.report.info.targets_sha256[:12]})"
            for r in runs
        )
        problems.append(f"the inputs come from {len(targets)} different targets files: {seen}")
    # A merge of several vantages is no run: its per-vantage records are not a run's.
    several = [r for r in runs if any(c.vantages for c in r.report.connections)]
    problems += [f"{r.path} {_merge_of(r)} several vantage points: {_REMERGE}" for r in several]
    refused = {id(r) for r in several}
    by_vantage: dict[str | None, list[LoadedRun]] = {}
    for run in runs:
        if id(run) not in refused:  # not also counted as a vantage's run
            by_vantage.setdefault(run.vantage, []).append(run)
    for vantage, group in by_vantage.items():
        where = f" of vantage {vantage}" if vantage is not None else ""
        ids = sorted({r.report.info.run_id for r in group})
        # A merge of one vantage's shards is that vantage's whole run (each cluster of the
        # multi-vantage templates merges its own shards, then the vantages are merged):
        # alone in its vantage it is one unsharded run; with more of that vantage it would
        # count its runs twice.
        merges = [r for r in group if r.report.info.merged_from]
        if merges and len(group) > 1:
            problems += [
                f"{r.path} {_merge_of(r)} {_of(r.report.info.run_id, vantage)}, and "
                f"{len(group) - 1} other input(s){where} came with it: give either the merge "
                "or the runs it was merged from"
                for r in merges
            ]
            continue
        sharded = [r for r in group if r.shard is not None]
        if sharded and len(sharded) != len(group):
            plain = ", ".join(str(r.path) for r in group if r.shard is None)
            problems.append(f"sharded and unsharded runs{where} together (unsharded: {plain})")
            continue
        if len(ids) > 1:
            runs_of = ", ".join(f"{r.report.info.run_id} in {r.path}" for r in group)
            if sharded:
                problems.append(
                    f"the shards{where} come from {len(ids)} different runs ({runs_of}): "
                    f"merge the shards of one run; {_same_run_id(ids)}"
                )
            else:  # no shards: two whole runs from one place, not one run's parts
                problems.append(
                    f"{len(group)} runs{where or ' without a vantage'} ({runs_of}): give "
                    "each vantage point its own --vantage, or merge one run per vantage"
                )
            continue
        run_id = ids[0]
        totals = sorted({r.shard[1] for r in sharded if r.shard is not None})
        if len(totals) > 1:
            problems.append(
                f"the shards of {_of(run_id, vantage)} disagree on the number of shards ("
                + ", ".join(f"{r.shard[0]}/{r.shard[1]} in {r.path}" for r in sharded if r.shard)
                + ")"
            )
            continue
        total = totals[0] if totals else 1
        if expect_shards is not None and expect_shards != total:
            problems.append(
                f"--expect-shards={expect_shards}, but {_of(run_id, vantage)} has {total} "
                f"shard{'s' if total != 1 else ''}"
            )
        index: dict[int, LoadedRun] = {}
        for run in group:
            k = run.shard[0] if run.shard is not None else 1
            if k in index:
                what = f"shard {k}/{total}" if run.shard is not None else "the unsharded run"
                problems.append(
                    f"{what} of {_of(run_id, vantage)} is there twice: {index[k].path} and "
                    f"{run.path}"
                )
            else:
                index[k] = run
        owner: dict[str, LoadedRun] = {}
        for run in index.values():
            for ct in run.report.connections:
                if ct.ct.id in owner:
                    problems.append(
                        f"connection type {ct.ct.id} is in two shards of {_of(run_id, vantage)}: "
                        f"{owner[ct.ct.id].path} and {run.path}"
                    )
                owner.setdefault(ct.ct.id, run)
            for crep in run.report.coverage:
                if crep.coverage.id in owner:
                    problems.append(
                        f"the coverage checks {crep.coverage.id} are in two shards of "
                        f"{_of(run_id, vantage)}: {owner[crep.coverage.id].path} and {run.path}"
                    )
                owner.setdefault(crep.coverage.id, run)
        gaps = [
            f"shard {k}/{total} of {_of(run_id, vantage)} is missing"
            for k in range(1, total + 1)
            if k not in index
        ]
        missing += gaps
        if sharded and not gaps:
            problems += _split_problems(list(index.values()), _of(run_id, vantage))
    if problems or missing:
        raise MergeProblems(tuple(problems), tuple(missing))


#: What to merge instead of a merge that cannot be an input.
_REMERGE: Final = "merge the runs it was merged from"
#: Run ids as a run makes one up when none is given (model.new_run_id).
_MADE_UP_ID: Final = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")
#: How many ids a line names before "and N more".
_SHOWN_IDS: Final = 10


def _merge_of(run: LoadedRun) -> str:
    """The start of a refusal's line: is already a merge (pop3mon merge of 3 inputs) of."""
    return f"is already a merge (pop3mon merge of {len(run.report.info.merged_from)} inputs) of"


def _same_run_id(ids: Sequence[str]) -> str:
    """The fix for shards of different run ids: give them all the same one."""
    made_up = all(_MADE_UP_ID.fullmatch(i) for i in ids)
    why = "they were run without a run id, so each made up its own; " if made_up else ""
    return (
        f"{why}give every shard of a run the same --run-id=ID (or POP3MON_RUN_ID=ID; in "
        "GitHub Actions and GitLab CI the pipeline's id is taken by default)"
    )


def _split_problems(shards: Sequence[LoadedRun], run: str) -> list[str]:
    """Whether the (complete) shards of ``run`` split the targets file between them: every
    connection id of the file (``run.targets.connection_ids``) in exactly one shard's
    ``connection_ids``. Shards run by pop3mon builds that split differently may leave a
    connection type out (or take it twice) with every shard present: a silently smaller
    report otherwise. Shards of a pop3mon that did not record the file's ids are not
    checked (one shard that did is enough)."""
    files = {r.report.targets_ids for r in shards if r.report.targets_ids}
    if not files:
        return []
    if len(files) > 1:
        return [
            f"the shards of {run} list different connection types for their targets file "
            "(run by different pop3mon builds?): run every shard of a run with the same "
            "pop3mon"
        ]
    whole = set(next(iter(files)))
    taken = Counter(i for r in shards for i in r.report.connection_ids)
    left_out = sorted(whole - set(taken))
    twice = sorted(i for i, n in taken.items() if n > 1)
    unknown = sorted(set(taken) - whole)
    found = [
        f"{listed(left_out, _SHOWN_IDS)} in no shard" if left_out else "",
        f"{listed(twice, _SHOWN_IDS)} in more than one" if twice else "",
        f"{listed(unknown, _SHOWN_IDS)} not in the targets file" if unknown else "",
    ]
    if not any(found):
        return []
    return [
        f"the shards of {run} do not split the targets file between them ("
        + "; ".join(f for f in found if f)
        + "): they were split by different pop3mon builds; run every shard of a run with "
        "the same pop3mon"
    ]


def merge_runs(runs: Sequence[LoadedRun], expect_shards: int | None = None) -> Merged:
    """Check ``runs`` (:func:`check_inputs`) and merge them into one report."""
    check_inputs(runs, expect_shards)
    by_vantage: dict[str | None, list[LoadedRun]] = {}
    for run in runs:
        by_vantage.setdefault(run.vantage, []).append(run)
    joined = {
        vantage: join_shards([r.report for r in group]) for vantage, group in by_vantage.items()
    }
    shards = sum(len(g) for g in by_vantage.values())
    if len(joined) == 1:
        report = next(iter(joined.values()))
        return Merged(
            report, {}, f"{shards} result file(s) of {_of(report.info.run_id, report.info.vantage)}"
        )
    named = {_name(v): rep for v, rep in joined.items()}
    report = join_vantages(named)
    runs_of = ", ".join(f"{n}: run {rep.info.run_id}" for n, rep in sorted(named.items()))
    return Merged(report, named, f"{shards} result file(s) of {len(named)} vantages ({runs_of})")


def _in_file_order(items: Iterable[ConnectionReport]) -> list[ConnectionReport]:
    # The order a whole run reports them in: Targets.connections is sorted by id.
    return sorted(items, key=lambda c: c.ct.id)


def _history(outcomes: Sequence[HistoryOutcome], order: Sequence[str] = ()) -> HistoryOutcome:
    """The shards' history outcomes as one: the worst status, the notes once each, and
    states, changes and availability of every shard (their connection types differ);
    the changes in the order an unsharded run lists them (:func:`_in_run_order`)."""
    if not outcomes:
        return HistoryOutcome("off")
    status = min((o.status for o in outcomes), key=_HISTORY_ORDER.index)
    notes = list(dict.fromkeys(o.note for o in outcomes if o.note))
    paths = {o.path for o in outcomes}
    states: dict[tuple[str, str], CheckState] = {}
    availability: dict[str, Mapping[str, float | None]] = {}
    flapping: dict[str, bool] = {}
    changes: list[Change] = []
    series: dict[str, tuple[tuple[float, float | None, str], ...]] = {}
    for o in outcomes:
        for key, state in o.states.items():
            states.setdefault(key, state)
        for ct, avail in o.availability.items():
            availability.setdefault(ct, avail)
        for ct, flap in o.flapping.items():
            flapping.setdefault(ct, flap)
        for ct, points in o.series.items():
            series.setdefault(ct, points)
        seen = {(c.kind, c.ct, c.check) for c in changes}
        changes += [c for c in o.changes if (c.kind, c.ct, c.check) not in seen]
    return HistoryOutcome(
        status,
        next(iter(paths)) if len(paths) == 1 else None,
        "; ".join(notes),
        states,
        _in_run_order(changes, order),
        availability,
        flapping,
        series,
    )


def _in_run_order(changes: Iterable[Change], order: Sequence[str]) -> tuple[Change, ...]:
    """``changes`` in the order a whole run makes them: history/record.py observes the
    connection types (by id), then the host checks, then the coverage checks (``order``,
    the merged report's ids in that order), and history/states.evaluate() tells each
    one's changes together in that order. The sort is stable, so a connection type's own
    changes (its flapping or settled first, then its checks') keep their order; an id not
    in ``order`` goes last."""
    position = {ident: i for i, ident in enumerate(order)}
    return tuple(sorted(changes, key=lambda c: position.get(c.ct, len(position))))


def _tracked_order(
    connections: Iterable[ConnectionReport],
    hosts: Iterable[HostReport],
    coverage: Iterable[CoverageReport],
) -> list[str]:
    """The ids a run records in its history, in its order (see :func:`_in_run_order`)."""
    out = [c.ct.id for c in connections]
    out += [h.host.id for h in hosts]
    out += [c.coverage.id for c in coverage]
    return out


def _vantage_history(
    reports: Mapping[str, RunReport],
    chosen: Mapping[tuple[str, str], str],
    shown: Mapping[str, str],
    order: Sequence[str],
) -> HistoryOutcome:
    """Several vantages' histories as one, each vantage having recorded its own.

    A check's state is the state of the vantage whose record of it the merged report
    shows (``chosen``: (id, check) → vantage), so a CRIT from bbb never stands next to
    aaa's "OK since ..."; the availability, flapping and series of a connection type
    (host, coverage) are those of the vantage whose probe result is shown (``shown``: id
    → vantage). Every vantage's changes are kept, each naming its vantage, in the run's
    order (the vantages' changes of one id together, by name). The status is the worst
    of theirs; each note is prefixed with its vantage ("aaa: new baseline ...")."""
    names = sorted(reports)
    hists = {n: reports[n].history for n in names}
    if all(h.status == "off" for h in hists.values()):
        return HistoryOutcome("off")
    status = min((h.status for h in hists.values()), key=_HISTORY_ORDER.index)
    notes = [f"{n}: {h.note}" for n, h in hists.items() if h.note]
    paths = {h.path for h in hists.values() if h.path is not None}
    states: dict[tuple[str, str], CheckState] = {}
    for key, name in chosen.items():
        state = hists[name].states.get(key)
        if state is not None:
            states[key] = replace(state, vantage=name)
    availability = {i: a for i, n in shown.items() if (a := hists[n].availability.get(i))}
    flapping = {i: f for i, n in shown.items() if (f := hists[n].flapping.get(i)) is not None}
    series = {i: p for i, n in shown.items() if (p := hists[n].series.get(i))}
    changes: dict[tuple[str, str, str, str], Change] = {}
    for name in names:
        for c in hists[name].changes:
            changes.setdefault((name, c.kind, c.ct, c.check), replace(c, vantage=name))
    return HistoryOutcome(
        status,
        next(iter(paths)) if len(paths) == 1 else None,
        "; ".join(notes),
        states,
        _in_run_order(changes.values(), order),
        availability,
        flapping,
        series,
        frozenset(n for n, h in hists.items() if h.status == "new"),
    )


def _info(infos: Sequence[RunInfo], run_id: str, vantage: str | None) -> RunInfo:
    first = infos[0]
    stopped = [
        (f"shard {i.shard[0]}/{i.shard[1]}: " if i.shard else "") + i.stopped
        for i in infos
        if i.stopped
    ]
    return RunInfo(
        run_id=run_id,
        started=min(i.started for i in infos),
        finished=max(i.finished for i in infos),
        targets_name=first.targets_name,
        targets_sha256=first.targets_sha256,
        version=first.version,
        stopped="; ".join(stopped),
        shard=None,
        vantage=vantage,
        python=first.python,
        platform=first.platform,
    )


def join_shards(reports: Sequence[RunReport]) -> RunReport:
    """The shards of one run (one vantage) as one report, as if run unsharded."""
    if len(reports) == 1 and reports[0].info.shard is None:
        return reports[0]
    ordered = sorted(reports, key=lambda r: r.info.shard or (1, 1))
    connections = _in_file_order(c for r in ordered for c in r.connections)
    present = {c.ct.id for c in connections}
    hosts = sorted((h for r in ordered for h in r.hosts), key=lambda h: h.host.line)
    coverage = sorted((c for r in ordered for c in r.coverage), key=lambda c: c.coverage.line)
    return RunReport(
        info=_info([r.info for r in ordered], ordered[0].info.run_id, ordered[0].info.vantage),
        connections=tuple(connections),
        unattributed=tuple(u for r in ordered for u in r.unattributed),
        not_selected=tuple(sorted({i for r in ordered for i in r.not_selected} - present)),
        history=_history(
            [r.history for r in ordered], _tracked_order(connections, hosts, coverage)
        ),
        notify_warnings=tuple(dict.fromkeys(w for r in ordered for w in r.notify_warnings)),
        hosts=tuple(hosts),
        connection_ids=tuple(sorted({i for r in ordered for i in r.connection_ids})),
        coverage=tuple(coverage),
        targets_ids=tuple(sorted({i for r in ordered for i in r.targets_ids})),
        others=_worst_others(r.others for r in ordered),
    )


def _worst_records(
    views: Mapping[str, Sequence[CheckRecord]],
) -> tuple[list[CheckRecord], dict[str, str]]:
    """Per check, the record of the vantage that saw it worst (its reason telling what
    the others saw when they differ, and which vantages did not run it at all), in the
    check order of the first vantage; and per check the vantage whose record was chosen
    (whose history state goes with it)."""
    order: dict[str, CheckRecord] = {}
    chosen: dict[str, tuple[str, CheckRecord]] = {}
    seen: dict[str, dict[str, Verdict]] = {}
    for name in sorted(views):
        for rec in views[name]:
            order.setdefault(rec.check, rec)
            seen.setdefault(rec.check, {})[name] = rec.verdict
            best = chosen.get(rec.check)
            # Of equal verdicts, one whose test broke after it: the run of that vantage
            # failed, and so must the merge.
            if best is None or (rank(rec.verdict), rec.broke_after_verdict) > (
                rank(best[1].verdict),
                best[1].broke_after_verdict,
            ):
                chosen[rec.check] = (name, rec)
    out: list[CheckRecord] = []
    for check in order:
        name, rec = chosen[check]
        verdicts = seen[check]
        notes = []
        if len(set(verdicts.values())) > 1:
            notes.append(
                " · ".join(f"{v} from {n}" for n, v in sorted(verdicts.items()) if n != name)
            )
        # A vantage without the check (deselected there) saw nothing of it: say so, or
        # the reader takes the verdict for what every vantage found.
        absent = sorted(set(views) - set(verdicts))
        if absent:
            notes.append(f"not run from {', '.join(absent)}")
        if notes:
            rec = replace(rec, reason=f"{rec.reason} [seen from {name}; {'; '.join(notes)}]")
        out.append(rec)
    return out, {check: name for check, (name, _) in chosen.items()}


def join_vantages(reports: Mapping[str, RunReport]) -> RunReport:
    """Several vantages' reports (each already one whole run) as one (module docstring)."""
    names = sorted(reports)
    conns: dict[str, dict[str, ConnectionReport]] = {}
    blocked: dict[tuple[str, str], Verdict] = {}  # (vantage, ct id) → its host's verdict
    for name in names:
        for conn in reports[name].connections:
            conns.setdefault(conn.ct.id, {})[name] = conn
        for hrep in reports[name].hosts:
            if hrep.status in ("down", "blocked"):
                for ct_id in hrep.host.connections:
                    blocked[(name, ct_id)] = hrep.worst
    merged: list[ConnectionReport] = []
    # Whose history goes with what the merged report shows: per check the vantage whose
    # record was chosen; per connection type (host, coverage) the one whose result is.
    chosen: dict[tuple[str, str], str] = {}
    shown: dict[str, str] = {}
    for ct_id, views in conns.items():
        records, whose = _worst_records({n: c.records for n, c in views.items()})
        chosen.update(((ct_id, check), n) for check, n in whose.items())
        # The probe result of the vantage that saw it worst: its transcript explains the
        # verdict; each vantage's own is in its VantageView.
        worst_name = max(sorted(views), key=lambda n: rank(views[n].worst))
        shown[ct_id] = worst_name
        merged.append(
            ConnectionReport(
                ct=views[worst_name].ct,
                result=views[worst_name].result,
                records=tuple(records),
                vantages={
                    n: VantageView(n, c.records, c.result, _host_block(blocked, n, c))
                    for n, c in sorted(views.items())
                },
            )
        )
    hosts: dict[str, dict[str, HostReport]] = {}
    for name in names:
        for hrep in reports[name].hosts:
            hosts.setdefault(hrep.host.id, {})[name] = hrep
    merged_hosts: list[HostReport] = []
    for host_id, views_h in hosts.items():
        records, whose = _worst_records({n: h.records for n, h in views_h.items()})
        chosen.update(((host_id, check), n) for check, n in whose.items())
        worst_name = max(sorted(views_h), key=lambda n: rank(views_h[n].worst))
        shown[host_id] = worst_name
        top = views_h[worst_name]
        merged_hosts.append(HostReport(top.host, top.result, tuple(records), top.blocked))
    # A server's coverage checks likewise: each the worst any vantage saw (a listener
    # found from one vantage only is still a finding), with that vantage's discovery.
    covs: dict[str, dict[str, CoverageReport]] = {}
    for name in names:
        for crep in reports[name].coverage:
            covs.setdefault(crep.coverage.id, {})[name] = crep
    merged_coverage: list[CoverageReport] = []
    for cov_id, views_c in covs.items():
        records, whose = _worst_records({n: c.records for n, c in views_c.items()})
        chosen.update(((cov_id, check), n) for check, n in whose.items())
        worst_name = max(sorted(views_c), key=lambda n: rank(views_c[n].worst))
        shown[cov_id] = worst_name
        top_c = views_c[worst_name]
        merged_coverage.append(CoverageReport(top_c.coverage, top_c.result, tuple(records)))
    connections = _in_file_order(merged)
    merged_hosts.sort(key=lambda h: h.host.line)
    merged_coverage.sort(key=lambda c: c.coverage.line)
    infos = [reports[n].info for n in names]
    run_ids = sorted({i.run_id for i in infos})
    run_id = (
        run_ids[0]
        if len(run_ids) == 1
        else "merge-" + hashlib.sha256(" ".join(run_ids).encode()).hexdigest()[:12]
    )
    order = _tracked_order(connections, merged_hosts, merged_coverage)
    return RunReport(
        info=_info(infos, run_id, None),
        connections=tuple(connections),
        unattributed=tuple(u for n in names for u in reports[n].unattributed),
        not_selected=tuple(
            sorted({i for n in names for i in reports[n].not_selected} - set(conns))
        ),
        history=_vantage_history(reports, chosen, shown, order),
        notify_warnings=tuple(dict.fromkeys(w for n in names for w in reports[n].notify_warnings)),
        hosts=tuple(merged_hosts),
        connection_ids=tuple(sorted({i for n in names for i in reports[n].connection_ids})),
        coverage=tuple(merged_coverage),
        targets_ids=tuple(sorted({i for n in names for i in reports[n].targets_ids})),
        others=_worst_others(reports[n].others for n in names),
    )


#: A project's own test's outcomes, best first: a merge keeps each test's worst.
_OTHER_ORDER: Final = ("passed", "skipped", "failed", "error")


def _worst_others(groups: Iterable[Sequence[OtherTest]]) -> tuple[OtherTest, ...]:
    """A project's own tests of several runs (each shard and each vantage runs them all):
    each once, as the run that saw it worst reported it (a teardown error after a failure
    counts as an error), in the order they were first met."""
    chosen: dict[str, OtherTest] = {}
    for group in groups:
        for test in group:
            known = chosen.get(test.nodeid)
            if known is None or _other_rank(test) > _other_rank(known):
                chosen[test.nodeid] = test
    return tuple(chosen.values())


def _other_rank(test: OtherTest) -> int:
    if test.failed and test.outcome in ("passed", "skipped"):
        return _OTHER_ORDER.index("error")  # a teardown error after its pass or skip
    return _OTHER_ORDER.index(test.outcome) if test.outcome in _OTHER_ORDER else 0


def _host_block(
    blocked: Mapping[tuple[str, str], Verdict], vantage: str, conn: ConnectionReport
) -> Verdict | None:
    """The host check's verdict when it blocked ``conn`` from ``vantage``, else None."""
    if any(r.blocked_by == HOST_TIER for r in conn.records):
        return blocked.get((vantage, conn.ct.id))
    return None
