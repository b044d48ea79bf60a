"""pytest glue: options, parametrization, the one-probe-per-run store, tier gating.

The plugin holds no protocol logic and no verdict rules. It loads ``targets.yaml`` at
start-up (a bad file stops the run with one line per problem), parametrizes the tier tests
with one stable id per connection type, asks the :class:`~pop3mon.probestore.ProbeStore`
for each connection type's probe result (one probe per selected connection type per run,
also under pytest-xdist), and turns :mod:`pop3mon.checks` verdicts into pass / WARN / fail /
skip. The report plugin (loaded with this one) records the verdicts and writes the reports.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from . import checks
from .checks import hosts as host_checks
from .checks.coverage import coverage_check as judge_coverage
from .checks.drift import NO_BASELINE, BaselineSource, is_drift_check, parse_accept
from .checks.facts import Baseline
from .config import ConfigError, ConnectionType, Coverage, Host
from .config.cache import load_targets_cached
from .config.shard import (
    RUN_ID_ENV,
    SHARD_ENV,
    SHARD_TOTAL_ENV,
    VANTAGE_ENV,
    ShardError,
    gitlab_nodes_ignored,
    resolve_identity,
    select_shard,
)
from .engine.discovery import Discovery
from .engine.hosts import HostResult, ancestors
from .engine.result import ProbeResult
from .engine.runner import DEFAULT_CONCURRENCY
from .engine.stages import (
    CHECKS,
    COVERAGE_CHECKS,
    COVERAGE_ID_PREFIX,
    COVERAGE_TIER,
    HOST_CHECKS,
    HOST_ID_PREFIX,
    HOST_TIER,
    TIERS,
    DriftCheck,
)
from .granularity import (
    GRANULARITIES,
    GRANULARITY_CHOICES,
    TIER_FROM,
    GranularityDecision,
    TierGrouping,
    TierItem,
    TierTest,
    granularity,
)
from .history.record import streak_note
from .history.store import HistoryError, HistoryStore
from .lean import CheckRunner, LeanChecks
from .probestore import ProbeStore
from .report.history import history_for, history_path
from .report.keys import HISTORY_KEY, HISTORY_REFUSED_KEY, IDENTITY_KEY, STORE_KEY
from .report.metrics import mark_config_invalid
from .report.paths import reports_dir, reports_enabled
from .report.recorder import CHECK_FIXTURES, CHECK_KEYWORD, verdict_properties
from .spaced_options import stray_option_value
from .verdict import Verdict, fails

__all__ = ["RunState"]

# The reports come with the monitoring plugin: a project that lists only this module gets
# the terminal summary and the report files too.
pytest_plugins = ["pop3mon.report.plugin"]

TARGETS_ENV = "POP3MON_TARGETS"
DEFAULT_TARGETS = "targets.yaml"
STATE_KEY = pytest.StashKey["RunState"]()
GRANULARITY_KEY = pytest.StashKey[GranularityDecision]()
GROUPING_KEY = pytest.StashKey[TierGrouping]()
#: The workerinput key that carries the controller's granularity to its xdist workers.
_GRANULARITY_NODE_KEY = "pop3mon_granularity"
# Tiers whose checks need the probe to log in; with none of them selected it does not
# (drift compares the login's outcome and the mailbox with the baseline).
LOGIN_TIERS = ("auth", "mailbox", "latency", "drift")
_CHECK_PROTOCOLS = {c.name: c.protocols for c in CHECKS}


def pytest_addoption(parser: pytest.Parser) -> None:
    """Command-line and ini options of pop3mon."""
    group = parser.getgroup("pop3mon", "POP3 monitoring")
    group.addoption(
        "--targets",
        metavar="PATH",
        default=None,
        help=f"targets file to monitor (default: ${TARGETS_ENV}, then ini pop3mon_targets, "
        "then targets.yaml in the rootdir)",
    )
    group.addoption(
        "--strict-warn",
        action="store_true",
        default=None,
        help="fail checks whose verdict is WARN (default: ini pop3mon_strict_warn)",
    )
    group.addoption(
        "--probe-concurrency",
        type=int,
        default=None,
        metavar="N",
        help=f"probe at most N connection types at once (default {DEFAULT_CONCURRENCY})",
    )
    group.addoption(
        "--accept-drift",
        action="append",
        default=[],
        metavar="ID[:CHECK]",
        help="after the run, accept connection type ID's current facts as the drift "
        "baseline (of one drift check with ID:CHECK); repeatable; needs the history",
    )
    group.addoption(
        "--shard",
        metavar="K/N",
        default=None,
        help=f"probe only shard K of N of the targets (servers linked by depends_on stay "
        f"together; default: ${SHARD_ENV}, GitLab's CI_NODE_INDEX/CI_NODE_TOTAL, Kubernetes' "
        f"JOB_COMPLETION_INDEX with ${SHARD_TOTAL_ENV}); `pop3mon merge` joins the shards",
    )
    group.addoption(
        "--vantage",
        metavar="NAME",
        default=None,
        help=f"name the place this run probes from, e.g. eu-west (default: ${VANTAGE_ENV})",
    )
    group.addoption(
        "--run-id",
        metavar="ID",
        default=None,
        help=f"the run's id, shared by its shards (default: ${RUN_ID_ENV}, else "
        "GITHUB_RUN_ID-GITHUB_RUN_ATTEMPT, else CI_PIPELINE_ID, else a generated one)",
    )
    group.addoption(
        "--granularity",
        choices=GRANULARITY_CHOICES,
        default=None,
        help="'check': one test per check of each connection type; 'tier': one test per tier "
        "of each connection type, for very large fleets (the reports still list every check); "
        f"'auto': tier from ini pop3mon_tier_from ({TIER_FROM}) connection types on, else "
        "check (default: ini pop3mon_granularity, else auto)",
    )
    parser.addini(
        "pop3mon_granularity",
        f"tests per connection type: {', '.join(GRANULARITY_CHOICES)} (see --granularity)",
        default="auto",
    )
    parser.addini(
        "pop3mon_tier_from",
        "--granularity=auto runs one test per tier from this many connection types on "
        f"(default {TIER_FROM})",
        default=str(TIER_FROM),
    )
    # Empty default: an unset ini value must be told apart from one naming targets.yaml.
    parser.addini("pop3mon_targets", f"default targets file ({DEFAULT_TARGETS})", default="")
    parser.addini(
        "pop3mon_bundled_tests",
        "collect the tier tests shipped in the pop3mon package (off where a project has "
        "its own copy, as this repository's tests_targets/)",
        type="bool",
        default=True,
    )
    parser.addini("pop3mon_strict_warn", "treat WARN as failure", type="bool", default=False)
    parser.addini(
        "pop3mon_concurrency", "probes in flight at once", default=str(DEFAULT_CONCURRENCY)
    )


def _targets_path(config: pytest.Config) -> Path:
    raw = config.getoption("targets") or os.environ.get(TARGETS_ENV) or ""
    if raw:
        return Path(raw).expanduser().resolve()
    ini = str(config.getini("pop3mon_targets")) or DEFAULT_TARGETS
    path = Path(ini)
    return path if path.is_absolute() else (config.rootpath / path)


def _targets_configured(config: pytest.Config) -> bool:
    """Whether the run names a targets file: ``--targets``, ``$POP3MON_TARGETS``, ini
    ``pop3mon_targets``, or a targets.yaml in the rootdir.

    Without one pop3mon stays inert (no targets, no tier tests, no reports): installed into
    an environment, its pytest11 entry points load in every pytest run there, and a run of
    some unrelated project must go on as if pop3mon were not installed.
    """
    explicit = (
        config.getoption("targets")
        or os.environ.get(TARGETS_ENV)
        or config.getini("pop3mon_targets")
    )
    return bool(explicit) or (config.rootpath / DEFAULT_TARGETS).exists()


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Without a targets file write no reports: as ``--no-reports``, set before the reports
    plugin's ``pytest_configure`` (which may run before ours) points pytest-html and junitxml
    at ``reports/``. A run whose rootdir a spaced option value moved stops here, before
    anything is written there (see :mod:`.spaced_options`)."""
    if not _targets_configured(config):
        config.option.no_reports = True
        return  # another project's run is not pop3mon's to judge
    problem = None if hasattr(config, "workerinput") else stray_option_value(config)
    if problem:
        raise pytest.UsageError(problem)


def _bundled_tests() -> Path | None:
    """The tier tests shipped in the installed package (``pop3mon.tests_targets``), or None
    where pop3mon is imported from this repository's plugins/ (they are in tests_targets/)."""
    spec = importlib.util.find_spec("pop3mon.tests_targets")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _declare_tier_markers(config: pytest.Config) -> None:
    """Declare the tier markers the project's ini does not: this repository's pytest.ini
    declares them, a project that runs the bundled tests or its own copy of tests_targets/
    has none, and pytest warns about each tier module (``--strict-markers`` rejects it)."""
    declared = {
        str(line).split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")
    }
    for tier in (HOST_TIER, *TIERS, COVERAGE_TIER):
        if tier not in declared:
            config.addinivalue_line("markers", f"{tier}: pop3mon's {tier} tier")


def _add_bundled_tests(config: pytest.Config) -> None:
    """Collect the bundled tier tests too, so a project that installed pop3mon needs no copy.

    Only when pytest collects its default set (no test paths on the command line: naming
    some means running just those, and must not log in to every mail server besides), when
    ini ``pop3mon_bundled_tests`` allows it, and when the directory is not collected
    already (an editable install resolves to this repository's tests_targets/). xdist
    workers get the command line, not ``config.args``, and come to the same answer.
    """
    _declare_tier_markers(config)
    bundled = _bundled_tests()
    if bundled is None:
        return
    if config.args_source == pytest.Config.ArgsSource.ARGS or not config.getini(
        "pop3mon_bundled_tests"
    ):
        return
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::", 1)[0]).resolve()
        if path == bundled or bundled in path.parents:
            return
    config.args.append(str(bundled))


class RunState:
    """Per-process glue state: the targets, the probe store and what this run selected."""

    def __init__(self, config: pytest.Config, store: ProbeStore, owner: bool):
        self.config = config
        self.store = store
        self.targets = store.targets
        self.owner = owner
        self.by_id = store.by_id
        self.selected_checks: dict[str, set[str]] = {}
        #: Host name -> its host checks a selected test runs.
        self.selected_hosts: dict[str, set[str]] = {}
        #: Servers whose coverage tests a selected test runs.
        self.selected_coverage: set[str] = set()
        self.accept_drift: list[tuple[str, DriftCheck | None]] = []
        opt = config.getoption("strict_warn")
        self.strict_warn = (
            bool(opt) if opt is not None else bool(config.getini("pop3mon_strict_warn"))
        )

    def result_for(self, ct: ConnectionType, session: pytest.Session) -> ProbeResult:
        """The probe result for ``ct``, probing every selected connection type on first use."""
        return self.store.result_for(
            ct.id,
            lambda: self._selected(session),
            lambda: self.selected_hosts,
            lambda: self.selected_coverage,
        )

    def host_result_for(self, host: Host, session: pytest.Session) -> HostResult:
        """The host check result of ``host``, starting the run's one batch on first use."""
        return self.store.host_result_for(
            host.name,
            lambda: self._selected(session),
            lambda: self.selected_hosts,
            lambda: self.selected_coverage,
        )

    def coverage_result_for(self, cov: Coverage, session: pytest.Session) -> Discovery:
        """What discovery found for ``cov``'s server, starting the run's one batch (whose
        discoveries run beside its probes) on first use."""
        return self.store.coverage_result_for(
            cov.name,
            lambda: self._selected(session),
            lambda: self.selected_hosts,
            lambda: self.selected_coverage,
        )

    def evaluate(
        self, connection: ConnectionType, probe_result: ProbeResult, name: str
    ) -> checks.CheckResult:
        """The verdict of check ``name`` of ``connection`` in this run (its selection, its
        drift baseline)."""
        selected = self.selected_checks.get(connection.id, set())
        baseline = self.baseline(connection.id, name)
        res = checks.evaluate_selected(probe_result, connection, name, selected, baseline)
        if res.reason == NO_BASELINE and self.no_baseline_reason:
            res = dataclasses.replace(res, reason=self.no_baseline_reason)
        return res

    def root_selected(self, name: str) -> bool:
        """Whether a selected host test reports host ``name`` and everything it depends on
        (else the first check that a failure there blocks reports it)."""
        specs = {n: h.to_spec() for n, h in self.store.hosts.items()}
        return all(n in self.selected_hosts for n in (name, *ancestors(specs, name)))

    def baseline(self, ct_id: str, check: str) -> Baseline | None:
        """What drift check ``check`` of ``ct_id`` compares with: from the history store the
        history put in the stash (:data:`HISTORY_KEY`), or None (no history, history off,
        first run, not a drift check)."""
        source: BaselineSource | None = self.config.stash.get(HISTORY_KEY, None)
        if source is None or not is_drift_check(check):
            return None
        try:
            found = source.baseline(ct_id, check)
        except Exception:  # noqa: BLE001  # history never costs a verdict: no baseline then
            return None
        return found if isinstance(found, Baseline) else None

    @functools.cached_property
    def no_baseline_reason(self) -> str:
        """Why the drift checks have no baseline when it is not the first run: the history
        is off, or there is a file but it could not be read (else "")."""
        path = history_path(self.config, reports_dir(self.config), reports_enabled(self.config))
        if path is None:
            return "no baseline: the history is off (--no-history, or no reports directory)"
        refused = self.config.stash.get(HISTORY_REFUSED_KEY, "")
        if refused:
            return f"no baseline: {refused}"
        if self.config.stash.get(HISTORY_KEY, None) is None and path.exists():
            return f"no baseline: the history {path} could not be read (locked, corrupt or newer)"
        return ""

    def _selected(self, session: pytest.Session) -> dict[str, bool]:
        """Selected connection ids -> whether a selected test of theirs needs a login."""
        ids: dict[str, bool] = {}
        self.selected_checks = {}
        self.selected_hosts = {}
        self.selected_coverage = set()
        for item in session.items:
            if isinstance(item, TierItem):
                ids[item.ct] = ids.get(item.ct, False) or item.tier in LOGIN_TIERS
                self.selected_checks.setdefault(item.ct, set()).update(item.check_names)
                continue
            callspec = getattr(item, "callspec", None)
            server = callspec.params.get("server") if callspec is not None else None
            if isinstance(server, str) and server.startswith(COVERAGE_ID_PREFIX):
                self.selected_coverage.add(server.removeprefix(COVERAGE_ID_PREFIX))
                continue
            host = callspec.params.get("host") if callspec is not None else None
            if isinstance(host, str) and host.startswith(HOST_ID_PREFIX):
                name = host.removeprefix(HOST_ID_PREFIX)
                check = _check_name(item).removeprefix("host_")
                self.selected_hosts.setdefault(name, set()).add(check)
                continue
            ct = callspec.params.get("ct") if callspec is not None else None
            if isinstance(ct, str) and ct in self.by_id:
                # Marker lookups walk the node chain: skip them once a login is known needed.
                ids[ct] = ids.get(ct, False) or any(map(item.get_closest_marker, LOGIN_TIERS))
                self.selected_checks.setdefault(ct, set()).add(_check_name(item))
        # A connection type blocked by its host: the host tests name the root once when
        # they are selected; else one of its own checks must (checks.evaluate_selected).
        for ct, names in self.selected_checks.items():
            host = self.store.host_of.get(ct)
            if host is not None and self.root_selected(host):
                names.add(HOST_TIER)
        return dict(sorted(ids.items()))


def _check_name(item: pytest.Item) -> str:
    """The checks-module name of a tier test (``test_tcp`` → ``tcp``)."""
    callspec = getattr(item, "callspec", None)
    phase = callspec.params.get("phase", "") if callspec is not None else None
    return _check_of(getattr(item, "originalname", item.name), phase)


def _check_of(function: str, phase: object) -> str:
    """The check a tier test function (``test_tcp``) runs; the latency test's names its
    phase (``latency-auth``; ``phase``: None when the test has no parameters)."""
    name = function.removeprefix("test_")
    if name == "latency" and phase is not None:
        return f"latency-{phase}"
    return name


def _ledger_path(
    config: pytest.Config, targets: Path, shard: tuple[int, int] | None = None
) -> Path | None:
    """Where login pacing remembers this targets file's refused logins between runs: in
    pytest's cache (``-p no:cacheprovider``: nowhere, and each run starts afresh). One file
    per shard: shards on one machine may share the cache, each rewrites its whole ledger,
    and a shard's servers are the same from run to run."""
    cache = getattr(config, "cache", None)
    if cache is None:
        return None
    digest = hashlib.sha256(str(targets.resolve()).encode()).hexdigest()[:16]
    part = f"-shard-{shard[0]}-of-{shard[1]}" if shard is not None else ""
    return Path(cache.mkdir("pop3mon")) / f"login-ledger-{digest}{part}.json"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Load and validate the targets; a bad file stops the run here."""
    if config.getoption("help", False) or config.getoption("version", False):
        return
    if not _targets_configured(config):
        return
    path = _targets_path(config)
    started = time.time()
    try:
        identity = resolve_identity(
            os.environ,
            shard=config.getoption("shard"),
            vantage=config.getoption("vantage"),
            run_id=config.getoption("run_id"),
        )
    except ShardError as exc:
        raise pytest.UsageError(str(exc)) from None
    try:
        # The validated file of an earlier run when nothing it depends on changed: pydantic
        # and PyYAML are then not even imported (0.2 s of a small run's start-up, plus the
        # validation: 0.17 s at 1,000 connection types). See config/cache.py.
        targets = load_targets_cached(path)
    except ConfigError as exc:
        message = f"pop3mon: invalid targets file\n{exc}"
        # The previous samples stay, marked pop3mon_config_valid 0, so an alert tells the
        # run is broken rather than the directory going quiet (report/metrics.py).
        if not _is_worker(config) and reports_enabled(config):
            problem = mark_config_invalid(reports_dir(config), started)
            if problem:
                message += f"\npop3mon: {problem}"
        raise pytest.UsageError(message) from None
    _add_bundled_tests(config)
    # The file's own ids and tags, before a shard narrows it: --accept-drift and -m take
    # any of them in every shard.
    all_ids, all_tags = targets.ids, {t for c in targets.connections for t in c.tags}
    if identity.shard is not None:
        # A selection of the configuration, not of tests: the other shards' servers are
        # never parametrized, probed or host-checked here, and no report lists them.
        targets = select_shard(targets, identity.shard)
    config.stash[IDENTITY_KEY] = identity
    if _is_worker(config):
        rundir = Path(config.workerinput["pop3mon_rundir"])  # type: ignore[attr-defined]
        owner = False
    else:
        rundir = Path(tempfile.mkdtemp(prefix="pop3mon-run-"))
        owner = True
    conc = config.getoption("probe_concurrency") or int(str(config.getini("pop3mon_concurrency")))
    # Under xdist the workers share probe results through ``rundir``; a process that runs
    # the tests itself keeps them in memory and writes no files.
    store = ProbeStore(
        targets,
        rundir,
        shared=not owner,
        concurrency=conc,
        # Asked later: pytest's cache plugin is configured after this hook.
        ledger=lambda: _ledger_path(config, path, identity.shard),
    )
    state = RunState(config, store, owner)
    for spec in config.getoption("accept_drift") or ():
        try:
            state.accept_drift.append(parse_accept(spec, all_ids))
        except ValueError as exc:
            raise pytest.UsageError(f"pop3mon: --accept-drift={spec}: {exc}") from None
    for tag in sorted(all_tags):
        config.addinivalue_line("markers", f"{tag}: tag from the targets file")
    config.stash[STATE_KEY] = state
    config.stash[STORE_KEY] = store
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(state), "pop3mon-xdist")
    config.pluginmanager.register(_GcFreezer(), "pop3mon-gc")
    # After the shard: a shard's run is as large as its own part of the file.
    decision = granularity(config, len(targets.connections))
    if not owner:
        # A worker groups as its controller chose, whatever it read of the file itself.
        chosen = config.workerinput.get(_GRANULARITY_NODE_KEY)  # type: ignore[attr-defined]
        if chosen in GRANULARITIES:
            decision = dataclasses.replace(decision, chosen=chosen)
    config.stash[GRANULARITY_KEY] = decision
    # Also with tier tests: a check test that grouping leaves as it is (a tier function
    # something else parametrizes) still runs lean.
    runners: dict[str, tuple[str, CheckRunner]] = {
        "check": ("ct", functools.partial(_check_runner, state)),
        "host_check": ("host", functools.partial(_host_check_runner, state)),
        "coverage_check": ("server", functools.partial(_coverage_check_runner, state)),
    }
    config.pluginmanager.register(LeanChecks(state, runners, "pop3mon_state"), "pop3mon-lean")
    if decision.chosen == "tier":
        grouping = TierGrouping(
            config, state, _check_name, failure_message, functools.partial(_tier_tests, state)
        )
        config.stash[GROUPING_KEY] = grouping
        config.pluginmanager.register(grouping, "pop3mon-granularity")


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The ``auto`` choice of one test per tier once more, after pop3mon's summary: the
    header that says it first is hidden by ``-q``."""
    decision = terminalreporter.config.stash.get(GRANULARITY_KEY, None)
    line = decision.summary() if decision is not None else ""
    if line:
        terminalreporter.write_line(line)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say when GitLab's CI_NODE_INDEX was set but not taken as the shard (a matrix job):
    such a run probes the whole file, which a user expecting a shard should see; and when
    ``--granularity=auto`` chose one test per tier."""
    identity = config.stash.get(IDENTITY_KEY, None)
    notes = [gitlab_nodes_ignored(os.environ, identity) if identity is not None else ""]
    decision = config.stash.get(GRANULARITY_KEY, None)
    notes.append(decision.header() if decision is not None else "")
    return [note for note in notes if note]


class _GcFreezer:
    """Keep the cyclic garbage collector off the run's long-lived objects.

    A run keeps nearly everything it creates until it exits: items and their fixture
    definitions, and for every test three reports that the terminal summary, the JUnit and
    HTML writers and the recorder hold on to. With thousands of tests each full collection
    of the cyclic GC walks all of them again, and full collections keep coming as the heap
    grows (a quarter of the run's CPU at 1000 connection types, 16000 tests). Freezing moves
    the objects alive now into the permanent generation, which the GC skips; reference
    counting still frees them. Only cyclic garbage younger than the last freeze would be
    kept; freezing after collection (during which the GC is paused) and then every
    ``every`` tests bounds that to a few objects of the tests just finished.
    """

    def __init__(self, every: int = 200) -> None:
        self.every = every
        self.finished = 0

    @pytest.hookimpl(wrapper=True)
    def pytest_collection(self, session: pytest.Session) -> Generator[None, object, object]:
        # Collection only builds what the run keeps: no point in hunting for garbage among
        # thousands of new items while it runs. Collect once at the end, then freeze.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return (yield)
        finally:
            gc.collect()
            gc.freeze()
            if enabled:
                gc.enable()

    def pytest_runtest_logfinish(self) -> None:
        self.finished += 1
        if self.finished % self.every == 0:
            gc.freeze()


class _XdistHooks:
    """Hooks that exist only when pytest-xdist is installed."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["pop3mon_rundir"] = str(self.state.store.rundir)
        decision = self.state.config.stash.get(GRANULARITY_KEY, None)
        if decision is not None:
            node.workerinput[_GRANULARITY_NODE_KEY] = decision.chosen


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """``--accept-drift``: after the run was recorded, its facts become the baseline of the
    connection types (and checks) named, on the controller only."""
    state = session.config.stash.get(STATE_KEY, None)
    if state is None or not state.owner or not state.accept_drift:
        return
    config = session.config
    # The run is recorded by now (the report plugin's session finish ran first); accepting
    # writes, so it opens the history for writing, once.
    path = history_path(config, reports_dir(config), reports_enabled(config))
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    store: HistoryStore | None = None
    problem = "the history is off" if path is None else ""
    if path is not None:
        try:
            store = HistoryStore.open(path)
        except HistoryError as exc:
            problem = f"the history cannot be written: {exc}"
    try:
        for ct_id, check in state.accept_drift:
            what = f"{ct_id}:{check}" if check else ct_id
            if store is None:
                line = f"pop3mon: --accept-drift={what} not applied: {problem}"
            else:
                try:
                    done = store.accept(ct_id, check, note="--accept-drift")
                    if done.accepted and not done.missing:
                        line = (
                            f"pop3mon: accepted {what}'s current facts as the drift baseline "
                            f"({', '.join(done.accepted)})"
                        )
                    else:  # nothing, or not every check: say which and why
                        line = f"pop3mon: --accept-drift={what}: {done.describe()}"
                except HistoryError as exc:  # the run's reports are already written
                    line = f"pop3mon: --accept-drift={what} failed: {exc}"
            if terminal is not None:
                terminal.write_line(line)
    finally:
        if store is not None:
            store.close()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run directory (controller only, after the reports were written)."""
    state = config.stash.get(STATE_KEY, None)
    if state is not None and state.owner:
        shutil.rmtree(state.store.rundir, ignore_errors=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One parameter per connection type (and per latency phase), with stable ids; the
    host tests one per host check (``host:<server>``)."""
    state = metafunc.config.stash.get(STATE_KEY, None)
    if state is None:
        return
    if "host" in metafunc.fixturenames:
        # A host's PING check exists only where PING is on (as its connection types'
        # ping checks read that one echo); its TCP check always.
        ping = metafunc.function.__name__ == "test_host_ping"
        ids = [h.id for h in state.targets.hosts if h.ping or not ping]
        metafunc.parametrize("host", ids, ids=ids)
        return
    if "server" in metafunc.fixturenames:
        # The coverage tests: one set per server with coverage: on.
        ids = [c.id for c in state.targets.coverage]
        metafunc.parametrize("server", ids, ids=ids)
        return
    if "ct" not in metafunc.fixturenames:
        return
    grouping = metafunc.config.stash.get(GROUPING_KEY, None)
    if grouping is not None and grouping.takes(metafunc):
        return  # collected as tier tests directly, without a test per check
    tests = _tier_tests(state, metafunc.function.__name__, "phase" in metafunc.fixturenames)
    if "phase" in metafunc.fixturenames:
        pairs = [(ct, phase) for _, ct, phase, _ in tests]
        metafunc.parametrize(
            ("ct", "phase"), pairs, ids=[test_id for test_id, *_ in tests], scope="function"
        )
    else:
        ids = [test_id for test_id, *_ in tests]
        metafunc.parametrize("ct", ids, ids=ids)


def _tier_tests(state: RunState, function: str, phased: bool) -> list[TierTest]:
    """The tests of tier test function ``function`` (``test_<check>``): one per connection
    type whose protocol has that check (no relay row for POP3, no STAT row for SMTP), and
    for the phased latency test one per latency phase of each."""
    cts = state.targets.connections
    name = function.removeprefix("test_")
    if name in _CHECK_PROTOCOLS:
        cts = tuple(ct for ct in cts if ct.protocol in _CHECK_PROTOCOLS[name])
    if phased:
        return [
            (f"{ct.id}-{phase}", ct.id, phase, _check_of(function, phase))
            for ct in cts
            for phase in checks.latency_phases(ct)
        ]
    return [(ct.id, ct.id, "", _check_of(function, "")) for ct in cts]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tag items with their server and connection type so ``-m``/``-k`` and reports see them."""
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        return
    hosts = {h.id: h for h in state.targets.hosts}
    servers = {c.id: c for c in state.targets.coverage}
    kept: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params: dict[str, object] = callspec.params if callspec is not None else {}
        host_id, ct_id = params.get("host"), params.get("ct")
        host = hosts.get(host_id) if isinstance(host_id, str) else None
        ct = state.by_id.get(ct_id) if isinstance(ct_id, str) else None
        # A check test nothing of this file has (test_relay without an SMTP connection
        # type, the host tests without a host check) gets pytest's empty-parameter-set
        # item (its parameter NOTSET): not a check of this run, not even a SKIP; drop it.
        server_id = params.get("server")
        cov = servers.get(server_id) if isinstance(server_id, str) else None
        if (
            ("host" in params and host is None)
            or ("ct" in params and ct is None)
            or ("server" in params and cov is None)
        ):
            continue
        kept.append(item)
        # pop3mon's check fixture on a test pop3mon parametrised: a project's own fixture
        # named "check" (pytest-check has one) does not make its tests pop3mon checks.
        ours = ct is not None or host is not None or cov is not None
        if ours and CHECK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.keywords[CHECK_KEYWORD] = 1
        tags = (*(host.tags if host else ()), *(ct.tags if ct else ()), *(cov.tags if cov else ()))
        for tag in tags:
            item.add_marker(tag)
    items[:] = kept
    # Run the tiers in their logical order (connectivity, TLS, auth, mailbox, latency)
    # rather than by file name. Besides reading naturally, the cheap connectivity checks
    # then run while the probes that logins need are still in flight.
    rank: dict[str, int] = {tier: n for n, tier in enumerate(TIERS)}

    def tier_rank(item: pytest.Item) -> int:
        if isinstance(item, TierItem):
            # A connection type's tier test knows its tier (a walk of the marks of each of
            # thousands was a tenth of collecting 1,000 connection types).
            return rank.get(item.tier, -1)
        # The host checks first: they gate every connection type on their host.
        if item.get_closest_marker(HOST_TIER) is not None:
            return -1
        # The coverage checks last: a server's, after every connection type's.
        if item.get_closest_marker(COVERAGE_TIER) is not None:
            return len(rank)
        for marker in item.iter_markers():
            if marker.name in rank:
                return rank[marker.name]
        return -1

    items.sort(key=tier_rank)


@pytest.fixture(scope="session")
def pop3mon_state(pytestconfig: pytest.Config) -> RunState:
    """The run's state (targets, results)."""
    state: RunState = pytestconfig.stash[STATE_KEY]
    return state


def _streak(config: pytest.Config, ct_id: str, check: str, verdict: Verdict) -> str:
    """ " — new since the last run" / " — failing for N runs since <time>" from the run
    history (the JUnit failure message and the terminal say whether a failure is new)."""
    history = history_for(config)
    prev = history.state(ct_id, check) if history is not None else None
    note = streak_note(prev, verdict, history is not None)
    return f" — {note}" if note else ""


@pytest.fixture
def check(
    ct: str, pop3mon_state: RunState, request: pytest.FixtureRequest
) -> Callable[[str], checks.CheckResult]:
    """Evaluate one named check and turn its verdict into the test outcome.

    CRIT fails, SKIP skips with the dependency's reason, WARN passes (or fails with
    ``--strict-warn``). The verdict travels in ``user_properties`` (plain str/float), which
    survive xdist and feed the JUnit, HTML, JSON and metrics writers.

    Every tier test uses this fixture, so it resolves the connection type and its probe
    result itself instead of through further fixtures: each fixture pytest sets up costs
    per test, and ``request`` more than most (a new FixtureDef and a signature inspection
    each time it is asked for). Where nothing else takes part, :class:`.lean.LeanChecks`
    builds the same value without pytest's fixture machinery.
    """
    return _check_runner(pop3mon_state, request.node, ct)


def _check_runner(
    state: RunState, node: pytest.Item, ct: str
) -> Callable[[str], checks.CheckResult]:
    """The ``check`` fixture's value for the test ``node`` of connection type ``ct``."""
    connection = state.by_id[ct]
    probe_result = state.result_for(connection, node.session)

    def run(name: str) -> checks.CheckResult:
        res = state.evaluate(connection, probe_result, name)
        return _outcome(node, state, connection.id, connection.server, res)

    return run


def _outcome(
    node: pytest.Item,
    state: RunState,
    ct_id: str,
    server: str,
    res: checks.CheckResult,
) -> checks.CheckResult:
    """Record ``res`` on the test ``node`` and turn its verdict into the test's outcome."""
    node.user_properties.extend(verdict_properties(ct_id, server, res))
    if res.verdict == Verdict.SKIP:
        # Report the skip at the test's location (not this fixture's) so -rs groups
        # skips per check instead of lumping them under plugin.py.
        raise pytest.skip.Exception(res.reason, _use_item_location=True)
    failure = failure_message(node.config, state, ct_id, res)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    return res


def failure_message(
    config: pytest.Config, state: RunState, ct_id: str, res: checks.CheckResult
) -> str | None:
    """The failure message of a check whose verdict fails its test (``verdict.fails``:
    CRIT; WARN with ``--strict-warn``), else None."""
    if not fails(res.verdict, state.strict_warn):
        return None
    note = _streak(config, ct_id, res.check, res.verdict)
    strict = " (--strict-warn)" if res.verdict == Verdict.WARN else ""
    return f"{res.verdict} {ct_id} {res.check}: {res.reason}{strict}{note}"


@pytest.fixture
def host_check(
    host: str, pop3mon_state: RunState, request: pytest.FixtureRequest
) -> Callable[[str], checks.CheckResult]:
    """Evaluate one host check (``ping`` or ``tcp``) of the server ``host`` names
    (``host:<server>``), checked once per run for all its connection types."""
    return _host_check_runner(pop3mon_state, request.node, host)


def _host_check_runner(
    state: RunState, node: pytest.Item, host: str
) -> Callable[[str], checks.CheckResult]:
    """The ``host_check`` fixture's value for the test ``node`` of ``host``."""
    entry = state.store.hosts[host.removeprefix(HOST_ID_PREFIX)]
    result = state.host_result_for(entry, node.session)

    def run(name: str) -> checks.CheckResult:
        check = next(c for c in HOST_CHECKS if c == name)
        selected = state.selected_hosts.get(entry.name, set())
        root = result.root or entry.name
        res = host_checks.host_check(
            entry.to_spec(), result, check, selected, state.root_selected(root)
        )
        return _outcome(node, state, entry.id, entry.name, res)

    return run


@pytest.fixture
def coverage_check(
    server: str, pop3mon_state: RunState, request: pytest.FixtureRequest
) -> Callable[[str], checks.CheckResult]:
    """Evaluate one coverage check of the server ``server`` names (``server:<name>``),
    on what this run's one discovery of it found."""
    return _coverage_check_runner(pop3mon_state, request.node, server)


def _coverage_check_runner(
    state: RunState, node: pytest.Item, server: str
) -> Callable[[str], checks.CheckResult]:
    """The ``coverage_check`` fixture's value for the test ``node`` of ``server``."""
    cov = state.store.coverage[server.removeprefix(COVERAGE_ID_PREFIX)]
    found = state.coverage_result_for(cov, node.session)

    def run(name: str) -> checks.CheckResult:
        check = next(c for c in COVERAGE_CHECKS if c == name)
        res = judge_coverage(cov, found, check)
        return _outcome(node, state, cov.id, cov.name, res)

    return run
