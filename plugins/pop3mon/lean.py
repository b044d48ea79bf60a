"""pytest glue: the lean protocol of a pop3mon check test (``--granularity=check``).

A check test (``test_tls.py::test_stls[ct]``) asks for one of pop3mon's check fixtures
(``check``, ``host_check``, ``coverage_check``) and nothing else, and prints nothing. pytest's
own protocol still costs most of such a test's time: the fixture machinery (a
``FixtureRequest``, a ``FixtureDef`` and a signature inspection for ``request``, the
parametrized ``ct`` as a fixture of its own), output and log capture around each of the three
phases, and the set-up, call and teardown hooks. At 100 connection types (2,000 check tests)
that was well over half of the run.

Where nothing could tell the difference (:func:`lean_allowed`, :meth:`LeanChecks.how`),
:class:`LeanChecks` runs such a test itself: its check fixture's value is built directly in
the set-up phase (where the fixture would have waited for the probe), then the test function
is called through ``pytest_pyfunc_call`` as pytest calls it, then the teardown phase tears
down what tests before it set up. Every reporter gets the reports pytest would make, made the
same way: all three per test where anything besides pytest and pop3mon makes or reads them
(junitxml, pytest-html, a conftest's ``pytest_runtest_makereport`` or
``pytest_runtest_logreport``, ``--durations``, an xdist controller); else, as for tier
tests, a passed set-up or teardown is not reported (:func:`call_report_only`), since nothing
pytest or pop3mon shows or counts reads it.

pytest's whole protocol stays where something needs it: a project's own
``pytest_runtest_setup``/``call``/``teardown`` or fixture hook, another plugin's protocol (a
re-runner), ``--setup-show``, ``--setup-only``, ``--setup-plan``, ``--pdb``, ``--trace``, a
check test marked skip, skipif or xfail, and any test whose fixtures are not exactly
pop3mon's (an autouse fixture of a conftest, a fixture overridden by the project, a test
that also asks for ``request``). What pytest's protocol does around a phase besides the
phase is done too: ``pytest_exception_interact`` on a failure, pytest's collectors of
unhandled thread and unraisable exceptions at each phase's end.
"""

from __future__ import annotations

import bdb
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import pytest

from .report.keys import PAGES_KEY

__all__ = [
    "PHASE_MARKS",
    "CheckRunner",
    "LeanChecks",
    "PhaseMarks",
    "ReportMaker",
    "Site",
    "call_report_only",
    "lean_allowed",
    "phase_report",
    "report_maker",
    "reports_stay_home",
    "unhandled_collector",
]

#: Marks that pytest evaluates in a test's set-up and call phases.
PHASE_MARKS: Final = frozenset({"skip", "skipif", "xfail"})

#: Builds a check fixture's value for a test: (the test, its parameter's value) -> the
#: function the test calls with a check name (``plugin._check_runner`` and its siblings).
CheckRunner = Callable[[pytest.Function, str], Callable[[str], object]]

#: Options under which a test's fixtures must go through pytest: ``--setup-show`` prints
#: each set-up, ``--setup-only``/``--setup-plan`` run none, ``--pdb``/``--trace`` debug.
_FULL_PROTOCOL_OPTIONS: Final = ("setupshow", "setuponly", "setupplan", "usepdb", "trace")


#: pytest's fixtures a pop3mon check test may have in its closure, by where their function is.
_PYTESTS_OWN: Final = {"pytestconfig": frozenset({("_pytest.fixtures", "pytestconfig")})}
#: The fixture pytest makes of a directly parametrized argument.
_DIRECT_PARAMETER: Final = frozenset({("_pytest.python", "get_direct_param_fixture_func")})


def lean_allowed(config: pytest.Config) -> bool:
    """Whether pop3mon's tests may skip pytest's set-up, call and teardown machinery: only
    when nothing but pytest itself hooks into those phases or into fixtures (a project's
    ``pytest_runtest_setup``, a plugin with its own protocol such as a re-runner) and no
    option needs them (:data:`_FULL_PROTOCOL_OPTIONS`)."""
    opt = config.option
    if any(getattr(opt, name, False) for name in _FULL_PROTOCOL_OPTIONS):
        return False
    hook = config.pluginmanager.hook
    for phase in (
        hook.pytest_runtest_setup,
        hook.pytest_runtest_call,
        hook.pytest_runtest_teardown,
    ):
        if any(not _pytests(impl.function) for impl in phase.get_hookimpls()):
            return False
    # pop3mon's own fixture hook looks for fixtures that its check tests never ask for.
    for phase in (hook.pytest_fixture_setup, hook.pytest_fixture_post_finalizer):
        if any(
            not _pytests(impl.function) and not _ours(impl.function)
            for impl in phase.get_hookimpls()
        ):
            return False
    return all(
        impl.wrapper or impl.hookwrapper or _pytests(impl.function) or _ours(impl.function)
        for impl in hook.pytest_runtest_protocol.get_hookimpls()
    )


def call_report_only(config: pytest.Config) -> bool:
    """Whether a lean check test may report only its call, as a tier test does, when its
    set-up and teardown pass: where nobody but pytest and pop3mon reads test reports
    (:func:`reports_stay_home`) and ``--durations`` lists no phases. A passed set-up or
    teardown report changes nothing pytest's own listeners show or count (the terminal
    keeps them uncounted in ``stats[""]``, which only ``--durations`` reads)."""
    return config.getoption("durations", None) is None and reports_stay_home(config)


#: How a lean test's phase report is made (:func:`report_maker`): through the
#: ``pytest_runtest_makereport`` hook, or directly (``TestReport.from_item_and_call``), or
#: directly with the ``extras`` pytest-html's hook gives a call report.
ReportMaker = Literal["hook", "direct", "direct+html"]


def report_maker(config: pytest.Config) -> ReportMaker:
    """How a lean test's report may be made: directly where only pytest's own
    ``pytest_runtest_makereport`` implementations take part (for a fixture-free test that
    is no unittest case they add nothing to ``TestReport.from_item_and_call`` unless the
    phase raised what they turn into another outcome, which :func:`phase_report` sends
    through the hook, :func:`_hook_transforms`; a skip's location is the item's either
    way: ``_use_item_location``), and where pytest-html's takes part besides and nobody else
    reads reports (:func:`reports_stay_home`), with the call report's ``extras`` made as
    its hook makes them (a conftest's ``pytest_exception_interact`` may read them). A
    conftest's or plugin's own hook (one that adds extras or logs each phase) keeps the
    hook call."""
    impls = config.pluginmanager.hook.pytest_runtest_makereport.get_hookimpls()
    if all(_pytests(impl.function) for impl in impls):
        return "direct"
    if reports_stay_home(config) and all(
        _pytests(impl.function) or _html_plugin(impl.function) for impl in impls
    ):
        return "direct+html"
    return "hook"


def reports_stay_home(config: pytest.Config) -> bool:
    """Whether no test report reaches anyone but pytest's and pop3mon's own listeners:
    pop3mon writes report.html and junit.xml from the run model (pytest-html and junitxml,
    which want every report, are not registered), no other plugin or conftest has a
    ``pytest_runtest_logreport`` or ``pytest_runtest_makereport`` hook (pytest-html's
    module keeps one of each, for a page that is not written) and this is no xdist worker
    (its controller's listeners are not known here)."""
    if hasattr(config, "workerinput"):
        return False
    writer = config.stash.get(PAGES_KEY, None)
    if writer is None or not writer.pages_from_model:
        return False
    hook = config.pluginmanager.hook
    return all(
        _pytests(impl.function) or _ours(impl.function) or _html_plugin(impl.function)
        for impl in (
            *hook.pytest_runtest_logreport.get_hookimpls(),
            *hook.pytest_runtest_makereport.get_hookimpls(),
        )
    )


class Site:
    """What every test of one test function shares and pytest works out again for each
    (``Item.location``, ``reportinfo()``, ``ihook``: a source lookup, path resolutions and
    a walk of the conftest modules each, ~10 % of a run of 2,000 check tests), worked out
    from the function's first test."""

    __slots__ = ("ihook", "line", "path", "prefix", "relpath")

    def __init__(self, item: pytest.Function) -> None:
        #: The file relative to the root and the line, as ``item.location`` has them.
        self.relpath, self.line, modpath = item.location
        #: The file as ``item.reportinfo()`` gives it (where a skip at the test is reported).
        self.path = os.fspath(item.reportinfo()[0])
        #: ``getmodpath()`` up to the test's own name (a class's name and a dot, or nothing).
        self.prefix = modpath.removesuffix(item.name)
        #: The file's hook proxy (which conftest files apply is a matter of the path).
        self.ihook = item.ihook

    def locate(self, item: pytest.Function) -> None:
        """Put ``item.location`` where pytest's cached property would keep it."""
        if "location" not in item.__dict__:
            item.__dict__["location"] = (self.relpath, self.line, self.prefix + item.name)


def phase_report(
    item: pytest.Item,
    phase: pytest.CallInfo[None],
    maker: ReportMaker,
    *,
    ihook: Any = None,
    path: str | None = None,
) -> pytest.TestReport:
    """One phase's report, made and logged as pytest's ``call_and_report`` does it:
    ``TestReport.from_item_and_call`` unless ``maker`` (:func:`report_maker`) says the
    ``pytest_runtest_makereport`` hook (always for an exception pytest's own hooks turn
    into another outcome: :func:`_hook_transforms`); then ``pytest_exception_interact``
    for an exception that is neither a skip nor expected. ``ihook`` (``item.ihook``) and
    ``path`` (``item.reportinfo()``'s file) spare looking up again for each test what all
    tests of one function or module share (:func:`_skip_at_item`)."""
    if ihook is None:
        ihook = item.ihook
    made: pytest.TestReport
    if maker == "hook" or _hook_transforms(phase.excinfo):
        made = ihook.pytest_runtest_makereport(item=item, call=phase)
    else:
        skipped = None if path is None else _skip_at_item(item, phase, path)
        made = skipped or pytest.TestReport.from_item_and_call(item, phase)
        if maker == "direct+html" and made.when == "call":
            made.extras = _html_fixture_extras(item.config)  # type: ignore[attr-defined]
    ihook.pytest_runtest_logreport(report=made)
    # As pytest's check_interactive_exception: the hook may have replaced the exception
    # (_pytest.unittest turns a unittest.SkipTest into a skip).
    excinfo = phase.excinfo
    if (
        excinfo is not None
        and not hasattr(made, "wasxfail")
        and not excinfo.errisinstance((pytest.skip.Exception, bdb.BdbQuit))
    ):
        ihook.pytest_exception_interact(node=item, call=phase, report=made)
    return made


def _hook_transforms(excinfo: pytest.ExceptionInfo[BaseException] | None) -> bool:
    """Whether pytest's own ``pytest_runtest_makereport`` implementations turn this
    exception into another outcome: ``pytest.xfail()`` into an xfail (``_pytest.skipping``),
    a ``unittest.SkipTest`` raised by any test into a skip (``_pytest.unittest``)."""
    if excinfo is None:
        return False
    if excinfo.errisinstance(pytest.xfail.Exception):
        return True
    unittest = sys.modules.get("unittest")
    return unittest is not None and excinfo.errisinstance(unittest.SkipTest)


def _html_fixture_extras(config: pytest.Config) -> list[Any]:
    """What pytest-html's ``pytest_runtest_makereport`` sets a fresh call report's
    ``extras`` to: a copy of the extras its ``extras`` fixture last left in the stash."""
    try:
        from pytest_html.fixtures import extras_stash_key  # type: ignore[import-untyped]
    except ImportError:
        return []
    return list(config.stash.get(extras_stash_key, []))


def _skip_at_item(
    item: pytest.Item, phase: pytest.CallInfo[None], path: str
) -> pytest.TestReport | None:
    """The report ``TestReport.from_item_and_call`` makes of a phase that skipped at the
    test's own location (``_use_item_location``: pop3mon's check fixture skips so when a
    check's dependency failed, half of a typical run's check tests), made without what it
    spends there on things that do not change from test to test of one function: a walk of
    the traceback for a crash location it then does not use, and the function's source
    lookup (``item.reportinfo()``, here ``path`` and ``item.location``'s line). None for
    any other phase."""
    excinfo = phase.excinfo
    if excinfo is None or type(excinfo.value) is not pytest.skip.Exception:
        return None
    if not excinfo.value._use_item_location:
        return None
    line = item.location[1]
    when = phase.when
    if line is None or when == "collect":
        return None
    return pytest.TestReport(
        item.nodeid,
        item.location,
        {x: 1 for x in item.keywords},
        "skipped",
        (path, line + 1, _skip_message(excinfo)),
        when,
        [(f"Captured {key} {rwhen}", content) for rwhen, key, content in item._report_sections],
        phase.duration,
        phase.start,
        phase.stop,
        user_properties=item.user_properties,
    )


#: A skip's reason -> what ``ExceptionInfo.exconly(tryshort=True)`` makes of it (a
#: ``traceback.TracebackException`` each time; a run repeats a few reasons many times).
_SKIP_MESSAGES: dict[str, str] = {}


def _skip_message(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """The message of the crash entry pytest would find for a ``pytest.skip.Exception``:
    the exception, shortened (the same for every skip with the same reason and no notes)."""
    reason = str(excinfo.value)
    if hasattr(excinfo.value, "__notes__") or len(_SKIP_MESSAGES) > 1024:
        return excinfo.exconly(tryshort=True)
    message = _SKIP_MESSAGES.get(reason)
    if message is None:
        message = _SKIP_MESSAGES[reason] = excinfo.exconly(tryshort=True)
    return message


def unhandled_collector(config: pytest.Config) -> Callable[[], None]:
    """What pytest's ``threadexception`` and ``unraisableexception`` plugins do at the end
    of every phase: turn an exception a thread or a finalizer left unhandled meanwhile into
    the test's warning (with ``-W error``, its failure). Does nothing where a plugin is off
    (``-p no:threadexception``) or pytest has no such collector."""
    found: list[Callable[[pytest.Config], None]] = []
    for plugin, module, name in (
        ("threadexception", "_pytest.threadexception", "collect_thread_exception"),
        ("unraisableexception", "_pytest.unraisableexception", "collect_unraisable"),
    ):
        if config.pluginmanager.has_plugin(plugin):
            collect = getattr(importlib.import_module(module), name, None)
            if callable(collect):
                found.append(collect)

    def collect_all() -> None:
        for collect in found:
            collect(config)

    return collect_all


def _pytests(function: Callable[..., object]) -> bool:
    return str(getattr(function, "__module__", "")).startswith("_pytest.")


def _ours(function: Callable[..., object]) -> bool:
    return str(getattr(function, "__module__", "")).startswith("pop3mon.")


def _html_plugin(function: Callable[..., object]) -> bool:
    return str(getattr(function, "__module__", "")) == "pytest_html.plugin"


class PhaseMarks:
    """Whether a skip, skipif or xfail mark applies to a test (``item.iter_markers()``),
    with the share of the nodes above it looked up again only when a mark was added there
    since (the walk was 4 % of a run of 2,000 tests). Marks are only ever added, so the
    number of them on the nodes above tells whether the answer can have changed."""

    def __init__(self) -> None:
        #: A test's parent -> (the number of marks on it and the nodes above it, whether
        #: one of them is a phase mark).
        self._above: dict[int, tuple[int, bool]] = {}

    def __call__(self, item: pytest.Item) -> bool:
        if any(m.name in PHASE_MARKS for m in item.own_markers):
            return True
        parent = item.parent
        if parent is None:
            return False
        count = sum(len(node.own_markers) for node in parent.iter_parents())
        known = self._above.get(id(parent))
        if known is None or known[0] != count:
            known = (count, any(m.name in PHASE_MARKS for m in parent.iter_markers()))
            self._above[id(parent)] = known
        return known[1]


class LeanChecks:
    """Runs pop3mon's check tests without pytest's fixture, capture and phase machinery
    where nothing could tell the difference (module docstring)."""

    def __init__(
        self,
        state: object,
        runners: Mapping[str, tuple[str, CheckRunner]],
        state_fixture: str,
    ) -> None:
        #: Check fixture name -> (the parameter it reads, what builds its value).
        self.runners = runners
        self.state = state
        self.state_fixture = state_fixture
        #: Decided when collection is done (:meth:`pytest_collection_finish`).
        self.allowed = False
        self.maker: ReportMaker = "hook"
        #: Whether a passed set-up or teardown goes unreported (:func:`call_report_only`).
        self.call_only = False
        #: pytest's end-of-phase collector of unhandled exceptions (:func:`unhandled_collector`).
        self.collect: Callable[[], None] = lambda: None
        #: A test function's fixture closure (shared by its parametrized tests) -> how its
        #: tests run lean, or None when they keep pytest's protocol.
        self._how: dict[int, tuple[str, str] | None] = {}
        #: (the test function's parent, its name) -> what its tests share.
        self._sites: dict[tuple[int, str], Site] = {}
        self.phase_marked = PhaseMarks()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # Every conftest file whose tests run is loaded by now (also on an xdist worker).
        self.allowed = lean_allowed(session.config)
        self.maker = report_maker(session.config)
        self.call_only = call_report_only(session.config)
        self.collect = unhandled_collector(session.config)

    def _site(self, item: pytest.Function) -> Site:
        """What ``item`` shares with the other tests of its function (:class:`Site`), and
        its ``location`` put in place from it."""
        key = (id(item.parent), item.originalname)
        site = self._sites.get(key)
        if site is None:
            site = self._sites[key] = Site(item)
        else:
            site.locate(item)
        return site

    def how(self, item: pytest.Item) -> tuple[str, str] | None:
        """(check fixture, parameter) when ``item`` is a pop3mon check test whose fixtures
        are exactly pop3mon's and that no mark sends through pytest's set-up; else None."""
        if type(item) is not pytest.Function:
            return None
        info = item._fixtureinfo
        key = id(info)
        if key not in self._how:
            self._how[key] = self._closure(info)
        found = self._how[key]
        if found is None or self.phase_marked(item):
            return None
        callspec = getattr(item, "callspec", None)
        if callspec is None or not isinstance(callspec.params.get(found[1]), str):
            return None
        return found

    def _closure(self, info: Any) -> tuple[str, str] | None:
        # pytest keeps a test function's fixture closure in its FuncFixtureInfo: each name
        # must resolve to pop3mon's own fixture, to pytest's ``pytestconfig`` (which
        # pop3mon's state fixture asks for) or to the fixture pytest makes of a direct
        # parametrization (``ct``, ``phase``).
        names = set(info.names_closure) - {"request"}
        used = [name for name in names if name in self.runners]
        if len(used) != 1:
            return None
        fixture = used[0]
        param = self.runners[fixture][0]
        parameters = set()
        for name in names:
            defs = info.name2fixturedefs.get(name)
            if not defs:
                return None
            func = defs[-1].func
            where = (str(getattr(func, "__module__", "")), getattr(func, "__name__", ""))
            if name in (fixture, self.state_fixture):
                if not where[0].startswith("pop3mon."):
                    return None
            elif where in _DIRECT_PARAMETER:
                parameters.add(name)
            elif where not in _PYTESTS_OWN.get(name, ()):
                return None
        # The test function itself asks for its check fixture and its parameters only (a
        # project's test that also takes ``request`` keeps pytest's protocol).
        if any(arg != fixture and arg not in parameters for arg in info.argnames):
            return None
        return (fixture, param) if param in names else None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> bool | None:
        """A check test's three phases without pytest's machinery: the set-up builds its
        check fixture (waiting for the probe, as the fixture would), the call runs the test
        function through ``pytest_pyfunc_call``, the teardown tears down what tests before
        it set up; each phase's report as pytest makes it (a passed set-up or teardown's
        only where someone reads it: :func:`call_report_only`)."""
        if not self.allowed:
            return None
        how = self.how(item)
        if how is None:
            return None
        assert isinstance(item, pytest.Function)
        fixture, param = how
        site = self._site(item)
        ihook = site.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        reraise = (pytest.exit.Exception, KeyboardInterrupt)

        def setup() -> None:
            args = dict(item.callspec.params)
            args[fixture] = self.runners[fixture][1](item, str(args[param]))
            args[self.state_fixture] = self.state
            item.funcargs = args
            self.collect()

        def call() -> None:
            item.runtest()
            self.collect()

        def teardown() -> None:
            item.session._setupstate.teardown_exact(nextitem)
            self.collect()

        def report(
            phase: pytest.CallInfo[None], optional: bool = False
        ) -> pytest.TestReport | None:
            if optional and phase.excinfo is None:
                return None  # a passed set-up or teardown nobody listens for
            return phase_report(item, phase, self.maker, ihook=site.ihook, path=site.path)

        rep = report(
            pytest.CallInfo.from_call(setup, when="setup", reraise=reraise), self.call_only
        )
        if rep is None or rep.passed:
            report(pytest.CallInfo.from_call(call, when="call", reraise=reraise))
        # pytest's teardown phase for the tests around this one: a module of other tests
        # before it keeps its fixtures until the last of them is done; all of them go when
        # -x or --maxfail ends the run here.
        if item.session.shouldfail or item.session.shouldstop:
            nextitem = None
        report(
            pytest.CallInfo.from_call(teardown, when="teardown", reraise=reraise), self.call_only
        )
        # What pytest drops after a test so its fixtures' values do not live on.
        item.funcargs = None  # type: ignore[assignment]
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True
