"""pytest glue: ``--granularity=tier``, one pytest test per tier of each connection type.

With ``check`` every check of every connection type is a pytest test of its own
(``test_tls.py::test_stls[ct]``): the natural view in CI, where each check is one line, and
what ``auto`` (the default) chooses for fleets under :data:`TIER_FROM` connection types. A
fleet of a thousand connection types makes that some 16,000 tests, and pytest's own
per-test machinery (fixtures, capture, three reports per test, every reporter's hooks),
not the probing, then decides how long the run takes. With ``tier`` the check tests are
collected and selected (``-k``/``-m``) exactly as before, then each connection type's
selected checks of one tier become one :class:`TierItem` (``test_tls.py::tls[ct]``)
that evaluates them in turn without any fixture. Every check is still recorded on its own,
under the node id it has as a test of its own (:func:`~pop3mon.report.recorder.group_entry`),
so results.json, metrics, the HTML page, the terminal summary and junit.xml list the same
checks as with ``check``. Where nothing selects tests per check and no other plugin or
conftest takes part in collecting them (:func:`_direct_allowed`), the tier tests are
collected directly instead (:meth:`TierGrouping.takes`): at 1,000 connection types,
making 20,000 tests per check only to group them cost over a second and 40 MB.

A tier test needs none of pytest's per-test machinery either: where pop3mon writes the
pages itself (:meth:`~pop3mon.report.plugin.ReportPlugin.write_pages_from_model`: report.html
and junit.xml from the run model, so pytest-html and junitxml keep no test's report), a
:class:`TierItem` runs through :meth:`TierGrouping.pytest_runtest_protocol`: no set-up or
teardown phase and none of their hooks (it has no fixture), no output capture (it prints
nothing), one ``call`` report instead of three, no ``PYTEST_CURRENT_TEST``. pytest's whole
protocol stays where something needs it (:func:`lean_allowed`): a ``--html``/``--junitxml``
the user gave (and :func:`pop3mon.report.junit.finish` expands each tier testcase into its
checks), a project's own ``pytest_runtest_setup``/``call``/``teardown`` hook, another
plugin's protocol (a re-runner), ``--setup-only``, ``--setup-plan``, ``--pdb``, ``--trace``,
and a tier test marked skip, skipif or xfail.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import pytest

from .checks import CheckResult
from .config import ConnectionType
from .engine.result import ProbeResult
from .engine.stages import TIERS
from .lean import (
    PhaseMarks,
    ReportMaker,
    lean_allowed,
    phase_report,
    report_maker,
    unhandled_collector,
)
from .report.keys import PAGES_KEY
from .report.recorder import CHECK_KEYWORD, GROUP_PROPERTY, group_entry
from .verdict import Verdict

__all__ = [
    "GRANULARITIES",
    "GRANULARITY_CHOICES",
    "TIER_FROM",
    "Granularity",
    "GranularityChoice",
    "GranularityDecision",
    "TierGrouping",
    "TierItem",
    "TierTest",
    "TierTests",
    "granularity",
]

#: The workerinput key that tells an xdist worker the controller chose the lean protocol.
_LEAN_KEY: Final = "pop3mon_lean_tier_tests"

Granularity = Literal["check", "tier"]
GRANULARITIES: Final[tuple[Granularity, ...]] = ("check", "tier")
#: What ``--granularity`` and ini ``pop3mon_granularity`` accept: ``auto`` picks one of
#: :data:`GRANULARITIES` by the number of connection types (:func:`granularity`).
GranularityChoice = Literal["auto", "check", "tier"]
GRANULARITY_CHOICES: Final[tuple[GranularityChoice, ...]] = ("auto", *GRANULARITIES)
#: ``auto``'s default threshold (ini ``pop3mon_tier_from``): from 200 connection types
#: (some 3,200 check tests) on, one test per tier. Below it a person still reads the
#: per-check lines; above it pytest's per-test machinery costs three times the tier run
#: (benchmarks/README.md §3f: 200 connection types 9.4 s vs 3.0 s, 150 vs 82 MB).
TIER_FROM: Final = 200


@dataclass(frozen=True)
class GranularityDecision:
    """The granularity of this run and, when ``auto`` chose it, why."""

    chosen: Granularity
    auto: bool
    connection_types: int
    tier_from: int

    @property
    def told(self) -> bool:
        """Whether the run says what it chose: only ``auto``'s choice of ``tier`` makes a
        run look different from what its user asked for."""
        return self.auto and self.chosen == "tier"

    def summary(self) -> str:
        """The terminal summary's line of an ``auto`` choice of ``tier`` (else empty): the
        header may be hidden (``-q``, ``--no-header``)."""
        if not self.told:
            return ""
        return (
            f"granularity: one test per tier (auto: {self.connection_types} connection types, "
            f"tier from {self.tier_from} on); --granularity=check for one test per check"
        )

    def header(self) -> str:
        """The report-header line of an ``auto`` choice of ``tier`` (else empty): the run
        looks different from a small one's, so it says why and how to get one test per
        check back."""
        if not self.told:
            return ""
        return (
            f"pop3mon: one test per tier of each connection type (--granularity=auto: "
            f"{self.connection_types} connection type{'' if self.connection_types == 1 else 's'}"
            f", tier from {self.tier_from} on, "
            "ini pop3mon_tier_from); every check is still in the reports; "
            "--granularity=check for one test per check"
        )


def granularity(config: pytest.Config, connection_types: int) -> GranularityDecision:
    """``--granularity``, else ini ``pop3mon_granularity`` (default ``auto``: ``tier`` for
    ``connection_types`` at or above ini ``pop3mon_tier_from``, else ``check``). A bad ini
    value is a usage error at start-up."""
    raw = config.getoption("granularity", None)
    if raw is None:
        raw = str(config.getini("pop3mon_granularity")).strip() or "auto"
    found = next((g for g in GRANULARITY_CHOICES if g == raw), None)
    if found is None:
        raise pytest.UsageError(
            f"pop3mon: ini pop3mon_granularity = {raw!r} is not one of "
            f"{', '.join(GRANULARITY_CHOICES)}"
        )
    text = str(config.getini("pop3mon_tier_from")).strip() or str(TIER_FROM)
    # ASCII digits only (str.isdigit() takes "²", which int() refuses), and few enough of
    # them for int(): anything else is a usage error, never a traceback.
    tier_from = int(text) if re.fullmatch(r"[0-9]{1,9}", text) else 0
    if tier_from < 1:
        raise pytest.UsageError(
            f"pop3mon: ini pop3mon_tier_from = {text[:20]!r}{'...' if len(text) > 20 else ''} "
            "is not a whole number of connection "
            f"types >= 1 (default {TIER_FROM})"
        )
    if found != "auto":
        return GranularityDecision(found, False, connection_types, tier_from)
    chosen: Granularity = "tier" if connection_types >= tier_from else "check"
    return GranularityDecision(chosen, True, connection_types, tier_from)


class _State(Protocol):
    """What a tier test needs of the run's state (``plugin.RunState``)."""

    by_id: dict[str, ConnectionType]

    def result_for(self, ct: ConnectionType, session: pytest.Session) -> ProbeResult: ...

    def evaluate(
        self, connection: ConnectionType, probe_result: ProbeResult, name: str
    ) -> CheckResult: ...


#: The failure message of a verdict that fails its test, or None (``plugin.failure_message``).
Judge = Callable[[pytest.Config, Any, str, CheckResult], "str | None"]
#: One test of a tier test function: (its parameter id, connection id, latency phase or "",
#: check name); ``plugin._tier_tests``.
TierTest = tuple[str, str, str, str]
#: The tests of a tier test function (``test_<check>``; whether it takes a phase).
TierTests = Callable[[str, bool], list[TierTest]]


class TierItem(pytest.Item):
    """The selected checks of one tier of one connection type, as one pytest test."""

    def __init__(
        self,
        *,
        ct: str,
        tier: str,
        members: list[tuple[str, str]],
        state: _State,
        judge: Judge,
        line: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.keywords[CHECK_KEYWORD] = 1
        self.line = line
        self.ct = ct
        self.tier = tier
        #: (node id of the check as a test of its own, check name), in collection order.
        self.members = members
        self.state = state
        self.judge = judge

    @property
    def check_names(self) -> list[str]:
        """The checks this test evaluates."""
        return [name for _, name in self.members]

    @property
    def member_nodeids(self) -> list[str]:
        """The node ids its checks have as tests of their own (and in the reports)."""
        return [nodeid for nodeid, _ in self.members]

    def runtest(self) -> None:
        """Evaluate every check; fail when one fails, skip when all skip."""
        connection = self.state.by_id[self.ct]
        result = self.state.result_for(connection, self.session)
        entries: list[list[tuple[str, object]]] = []
        failures: list[str] = []
        skips: list[str] = []
        for nodeid, name in self.members:
            began = time.perf_counter()
            broke = ""
            try:
                res = self.state.evaluate(connection, result, name)
                failure = self.judge(self.config, self.state, connection.id, res)
            except Exception as exc:  # noqa: BLE001  # one check's bug, not its tier's
                # As the check's own test would have broken (--granularity=check): an ERROR
                # with the exception as its reason and the traceback as its failure, while
                # the tier's other checks still get their verdicts.
                res, failure, broke = self._broken(name, exc)
            if failure is not None:
                outcome = "failed"
                failures.append(failure)
            elif res.verdict == Verdict.SKIP:
                outcome = "skipped"
                skips.append(f"{res.check}: {res.reason}")
            else:
                outcome = "passed"
            entries.append(
                group_entry(
                    nodeid,
                    connection.id,
                    connection.server,
                    res,
                    outcome,
                    time.perf_counter() - began,
                    broke or failure or "",
                    broke_in="call" if broke else "",
                )
            )
        self.user_properties.append((GROUP_PROPERTY, entries))
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)
        if skips and len(skips) == len(entries):
            raise pytest.skip.Exception("; ".join(skips), _use_item_location=True)

    def _broken(self, name: str, exc: Exception) -> tuple[CheckResult, str, str]:
        """Check ``name`` raised ``exc``: its ERROR result, the failure line of this tier
        test and the traceback its own test would have reported."""
        excinfo = pytest.ExceptionInfo.from_exception(exc)
        reason = excinfo.exconly(tryshort=True)
        res = CheckResult(tier=self.tier, check=name, verdict=Verdict.ERROR, reason=reason)  # type: ignore[arg-type]
        return res, f"{name}: {reason}", str(self._repr_failure_py(excinfo, style="long"))

    def reportinfo(self) -> tuple[Any, int, str]:
        """Where the tier's tests are (their module) and this test's name."""
        return self.path, self.line, self.name

    @functools.cached_property
    def location(self) -> tuple[str, int | None, str]:
        """pytest's ``Item.location``, with the module's path relative to the root worked
        out once per module rather than once per tier test (thousands of them)."""
        module = self.parent
        assert module is not None  # a tier test's module
        relative = module.stash.get(_RELPATH, None)
        if relative is None:
            relative = module.stash[_RELPATH] = super().location[0]
        return relative, self.line, self.name


class TierGrouping:
    """Registered with ``--granularity=tier``: replaces the selected check tests by one
    :class:`TierItem` per (tier module, connection type)."""

    def __init__(
        self,
        config: pytest.Config,
        state: _State,
        check_name: Callable[[pytest.Item], str],
        judge: Judge,
        tests: TierTests,
    ) -> None:
        self.state = state
        self.check_name = check_name
        self.judge = judge
        self.tests = tests
        #: Whether tier tests are collected directly (:meth:`takes`); decided at the first
        #: tier test function, when the conftest files of its directory are loaded.
        self.direct: bool | None = None
        #: Node ids of the tier test functions collected so, not as a test per check.
        self.taken: set[str] = set()
        #: The session-wide collection hooks' implementers when the choice was made.
        self.direct_hooks: frozenset[str] = frozenset()
        #: How a lean tier test's report is made (:func:`~pop3mon.lean.report_maker`) and
        #: pytest's end-of-phase collector of unhandled exceptions, decided once collection
        #: is done (every conftest file whose tests run is loaded).
        self.maker: ReportMaker = "hook"
        self.collect: Callable[[], None] = lambda: None
        #: A tier module -> its hook proxy and its file as ``reportinfo()`` gives it.
        self._modules: dict[int, tuple[Any, str]] = {}
        self.phase_marked = PhaseMarks()
        #: Whether tier tests run the lean protocol; a worker hears the controller's choice.
        workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
        self.lean = bool(workerinput.get(_LEAN_KEY)) if workerinput is not None else False

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Before xdist starts its workers (its session start is trylast): they hear the
        # choice in pytest_configure_node.
        plugin = session.config.stash.get(PAGES_KEY, None)
        if plugin is not None:
            self.lean = plugin.write_pages_from_model()
        self.lean = self.lean and lean_allowed(session.config)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[_LEAN_KEY] = self.lean

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.maker = report_maker(session.config)
        self.collect = unhandled_collector(session.config)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> bool | None:
        """A tier test's whole protocol: log start, the call and its one report, finish.
        A tier test marked skip, skipif or xfail (by the project's own hooks: pop3mon marks
        none so) keeps pytest's protocol, which evaluates those marks."""
        if not self.lean or not isinstance(item, TierItem):
            return None
        if self.phase_marked(item):
            return None
        # What all tier tests of one module share (pytest looks them up for each test).
        shared = self._modules.get(id(item.parent))
        if shared is None:
            shared = self._modules[id(item.parent)] = (item.ihook, os.fspath(item.path))
        ihook, path = shared
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        reraise = (pytest.exit.Exception, KeyboardInterrupt)

        def run() -> None:
            item.runtest()
            self.collect()

        phase_report(
            item,
            pytest.CallInfo.from_call(run, when="call", reraise=reraise),
            self.maker,
            ihook=ihook,
            path=path,
        )
        # What pytest's teardown phase does for the tests around this one (a module of
        # fine-grained tests before it keeps its fixtures until the last of them is done;
        # all of them go when -x or --maxfail ends the run here).
        if item.session.shouldfail or item.session.shouldstop:
            nextitem = None

        def teardown() -> None:
            item.session._setupstate.teardown_exact(nextitem)
            self.collect()

        down = pytest.CallInfo.from_call(teardown, when="teardown", reraise=reraise)
        if down.excinfo is not None:
            phase_report(item, down, "hook", ihook=ihook)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def takes(self, metafunc: pytest.Metafunc) -> bool:
        """Whether this tier test function is collected directly as part of tier tests
        (``pytest_generate_tests`` then makes no test per connection type of it): only
        where nothing could tell the difference (:func:`_direct_allowed`), as grouping
        20,000 check tests of 1,000 connection types cost a second of collection."""
        if _tier_of(metafunc.definition) is None or not _only_ours(metafunc):
            return False
        if self.direct is None:
            self.direct = _direct_allowed(metafunc.config)
            # Hooks of the whole session a conftest found later could still add.
            self.direct_hooks = _session_hooks(metafunc.config)
        if self.direct:
            self.taken.add(metafunc.definition.nodeid)
        return self.direct

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        """A module's tier test functions :meth:`takes` became one test each: their tier
        tests take their place, the same ones :meth:`pytest_collection_modifyitems` makes
        of the tests per check."""
        report = yield
        if self.taken and isinstance(collector, pytest.Module) and report.passed:
            report.result = self._tier_items(collector, report.result)
        return report

    def _tier_items(
        self, module: pytest.Module, found: list[pytest.Item | pytest.Collector]
    ) -> list[pytest.Item | pytest.Collector]:
        # Each connection type's tier test goes where its first test per check would be
        # (function by function, connection by connection), as grouping places it: a
        # connection type a later function adds (an SMTP-only check) comes after the
        # tests in between.
        out: list[pytest.Item | pytest.Collector | str] = []
        groups: dict[str, tuple[pytest.Function, list[tuple[str, str]]]] = {}
        for item in found:
            if not isinstance(item, pytest.Function) or item.nodeid not in self.taken:
                if (
                    isinstance(item, pytest.Function)
                    and item.nodeid.partition("[")[0] in self.taken
                ):
                    raise pytest.UsageError(  # _only_ours() foresees every known way
                        f"pop3mon: {item.nodeid} is parametrized by something besides "
                        "pop3mon; run with --granularity=check"
                    )
                out.append(item)
                continue
            phased = "phase" in item.fixturenames
            for test_id, ct, _, check in self.tests(item.originalname, phased):
                if ct not in groups:
                    groups[ct] = (item, [])
                    out.append(ct)
                groups[ct][1].append((f"{item.nodeid}[{test_id}]", check))
        if not groups and len(out) == len(found):
            return found
        made: dict[str, pytest.Item] = {}
        tiers: dict[int, str] = {}  # the first tests' tiers (most share one first test)
        for ct, (first, members) in groups.items():
            tier = tiers.get(id(first))
            if tier is None:
                tier = tiers[id(first)] = _tier_of(first) or ""
            # A test per check would also carry the connection type's tags
            # (plugin.pytest_collection_modifyitems adds them).
            made[ct] = self._tier_item(
                module, ct, first, members, self.state.by_id[ct].tags, tier=tier
            )
        return [made[x] if isinstance(x, str) else x for x in out]

    def _tier_item(
        self,
        module: pytest.Collector,
        ct: str,
        first: pytest.Item,
        members: list[tuple[str, str]],
        tags: tuple[str, ...] = (),
        tier: str | None = None,
    ) -> TierItem:
        """The tier test of ``ct`` in ``module`` holding ``members``; ``first``: its first
        check's test (function), whose marks it carries (tier marks aside) and where -rs
        points a skip of it; ``tags``: marks to add besides; ``tier``: ``first``'s, where
        known."""
        if tier is None:
            tier = _tier_of(first) or ""
        tier_item = TierItem.from_parent(
            module,
            name=f"{tier}[{ct}]",
            ct=ct,
            tier=tier,
            members=members,
            state=self.state,
            judge=self.judge,
            line=_line_of(first),
        )
        for marker in first.own_markers:
            if marker.name not in TIERS:
                tier_item.add_marker(
                    getattr(pytest.mark, marker.name)(*marker.args, **marker.kwargs)
                )
        for tag in tags:
            tier_item.add_marker(tag)
        return tier_item

    # trylast: after -k/-m and every other plugin chose the items, so a tier test holds
    # exactly the checks the run selected.
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        if self.taken:
            # Tier tests collected directly, but a conftest file found later in the
            # collection hooks into the whole session's tests: its hook was written for
            # tests per check and saw tier tests. One clear line rather than a selection
            # silently not made.
            late = _session_hooks(config) - self.direct_hooks
            if late:
                raise pytest.UsageError(
                    f"pop3mon: {', '.join(sorted(late))} hooks into collection but was found "
                    "after the tier tests were collected; move the hook to a conftest.py at "
                    "the root, or run with --granularity=check"
                )
        out: list[pytest.Item] = []
        groups: dict[tuple[int, str], list[pytest.Item]] = {}
        for item in items:
            callspec = getattr(item, "callspec", None)
            ct = callspec.params.get("ct") if callspec is not None else None
            tier = _tier_of(item)
            if not isinstance(ct, str) or ct not in self.state.by_id or tier is None:
                out.append(item)
                continue
            key = (id(item.parent), ct)
            if key not in groups:
                groups[key] = []
                out.append(item)  # the group's place in the run order
            groups[key].append(item)
        for n, item in enumerate(out):
            callspec = getattr(item, "callspec", None)
            ct = callspec.params.get("ct") if callspec is not None else None
            group = groups.get((id(item.parent), ct)) if isinstance(ct, str) else None
            if group is None or group[0] is not item or not isinstance(ct, str):
                continue
            assert isinstance(item.parent, pytest.Collector)  # a test function's module
            # The tags are among the first check's marks already (-m selects by them).
            members = [(i.nodeid, self.check_name(i)) for i in group]
            out[n] = self._tier_item(item.parent, ct, item, members)
        items[:] = out


#: A tier module's path as pytest's locations show it, kept on the module's node.
_RELPATH: Final = pytest.StashKey[str]()

#: Hooks through which a project's conftest or another plugin would see or change the
#: tests per check: where one is implemented, tier tests are grouped from those tests.
_COLLECTION_HOOKS: Final = (
    "pytest_generate_tests",
    "pytest_pycollect_makeitem",
    "pytest_make_collect_report",
    "pytest_itemcollected",
    "pytest_collection_modifyitems",
    "pytest_deselected",
)
#: Whose implementations of those hooks leave the tests per check alone (xdist's worker
#: renames tests only with --dist=loadgroup, by marks a tier test keeps).
_QUIET_COLLECTORS: Final = ("_pytest.", "pop3mon.", "xdist.")
#: Options that choose tests per check (by name, mark or node id) or by an earlier run's
#: outcomes: with one, tier tests are grouped from the tests per check it chose.
_SELECTING_OPTIONS: Final = (
    "keyword",
    "markexpr",
    "deselect",
    "lf",
    "failedfirst",
    "stepwise",
    "stepwise_skip",
)


def _only_ours(metafunc: pytest.Metafunc) -> bool:
    """Whether pop3mon's parametrization would be a tier test function's only one: no
    class, no ``parametrize`` mark, no ``pytest_generate_tests`` of its module, no fixture
    with ``params`` (a conftest's autouse fixture, say). Otherwise it is parametrized per
    check and grouped, as everything else would end up with a test of no connection."""
    if metafunc.cls is not None or hasattr(metafunc.module, "pytest_generate_tests"):
        return False
    if any(True for _ in metafunc.definition.iter_markers("parametrize")):
        return False
    # pytest keeps the fixture closure's definitions here (no public accessor); where it
    # does not, nothing is known, so the function is grouped.
    defs: dict[str, Any] | None = getattr(metafunc, "_arg2fixturedefs", None)
    if defs is None:
        return False
    return all(d.params is None for found in defs.values() for d in found)


def _session_hooks(config: pytest.Config) -> frozenset[str]:
    """Who implements the collection hooks of the whole session (``pytest_collection_
    modifyitems``, ``pytest_deselected``): a conftest file anywhere takes part in them."""
    hook = config.pluginmanager.hook
    impls = [
        *hook.pytest_collection_modifyitems.get_hookimpls(),
        *hook.pytest_deselected.get_hookimpls(),
    ]
    return frozenset(
        str(getattr(impl.plugin, "__file__", None) or impl.plugin_name) for impl in impls
    )


def _direct_allowed(config: pytest.Config) -> bool:
    """Whether tier tests may be collected directly, without first collecting a test per
    check (:meth:`TierGrouping.takes`): the same tier tests result, as long as no option
    selects tests per check (``-k``, ``-m``, ``--deselect``, a node id with ``::``,
    ``--lf``, ``--ff``, ``--sw``) and no conftest or plugin but pytest's, pop3mon's and
    xdist's takes part in collecting them."""
    opt = config.option
    if any(getattr(opt, name, None) for name in _SELECTING_OPTIONS):
        return False
    if any("::" in str(arg) for arg in config.args):
        return False
    hook = config.pluginmanager.hook
    for name in _COLLECTION_HOOKS:
        for impl in getattr(hook, name).get_hookimpls():
            module = str(getattr(impl.function, "__module__", ""))
            if not module.startswith(_QUIET_COLLECTORS):
                return False
    return True


def _tier_of(item: pytest.Item) -> str | None:
    for marker in item.iter_markers():
        if marker.name in TIERS:
            return marker.name
    return None


def _line_of(item: pytest.Item) -> int:
    code = getattr(getattr(item, "function", None), "__code__", None)
    return int(code.co_firstlineno) - 1 if code is not None else 0
