"""pytest glue of the reports: options, enabling pytest-html and junitxml, writing artifacts.

By default every run writes four artifacts into ``reports/`` next to ``pytest.ini``:

==============  ================================================================
report.html     pytest-html 4, self-contained and offline, with pop3mon's matrix,
                per-connection details and extra columns (``--granularity=tier``:
                :mod:`.standalone`'s page of the same pieces, see
                :meth:`ReportPlugin.write_pages_from_model`)
junit.xml       pytest's JUnit XML (xunit2) with pop3mon properties per testcase
                and per suite (``--granularity=tier``: :func:`.junit.junit_pieces`)
results.json    schema ``pop3mon/results/v1`` (see :mod:`.json_report`)
metrics.prom    Prometheus text format / OpenMetrics (see :mod:`.metrics`)
==============  ================================================================

``--reports-dir PATH`` (or ini ``pop3mon_reports_dir``) moves them; ``--no-reports`` turns
pop3mon's own artifacts off (an explicit ``--html``/``--junitxml`` still works and still
gets pop3mon's columns and properties). An explicit ``--html`` or ``--junitxml`` path
always wins over the reports directory. A reports directory that is a file or cannot be
created stops the run at start-up with one line.

The files of a run are replaced as a set (:mod:`.reportset`): every writer writes a
temporary name, and only when all of them succeeded are they renamed into place; a failed
write (a full disk) leaves the previous set and says so. A run that selected no check
(``-k``/``-m`` matching nothing) leaves the previous reports alone; a shard the split gave
nothing (``--shard``), or whose ``-k``/``-m`` matched nothing in its part, is a successful
run and writes its empty set (its connection types "not selected"), which ``pop3mon
merge`` needs. SIGTERM and SIGINT end
the run with the reports of what finished, every selected check that did not run marked
"not run" (:mod:`.stop`).

Everything here runs on the controller only: pytest-xdist workers neither write reports nor
register :class:`ReportPlugin`. Per-test data reaches the controller in ``user_properties``
(the :class:`~pop3mon.report.recorder.Recorder` collects it) and probe results through the
:class:`~pop3mon.probestore.ProbeStore`, so the artifacts are complete under ``-n``. The
monitoring glue hands the store over in ``config.stash[STORE_KEY]``; nothing here imports it.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, Final
from xml.etree.ElementTree import ParseError

import pytest

from .. import checks, notify
from ..engine.hosts import HostResult
from ..engine.result import ProbeResult
from ..engine.stages import COVERAGE_ID_PREFIX, COVERAGE_TIER, HOST_ID_PREFIX, HOST_TIER, TIERS
from ..probestore import ProbeStore
from . import history as history_glue
from . import html as html_parts
from . import junit
from .html_hosts import hosts_html
from .json_report import write_json
from .keys import IDENTITY_KEY, PAGES_KEY, STORE_KEY
from .metrics import METRICS_NAME, write_metrics
from .model import RunInfo, RunReport, build_run_report, new_run_id, pop3mon_version, scrub
from .paths import DEFAULT_DIR, reports_dir, reports_enabled
from .recorder import CHECK_KEYWORD, GROUP_PROPERTY, OtherTest, Recorder, is_check
from .reportset import HTML_NAME, JSON_NAME, JUNIT_NAME, ReportSet, ReportSetError
from .standalone import write_set_files
from .stop import StopControl, install_worker_handlers
from .terminal import adapt_short_summary, shows_summary, write_summary

__all__ = ["REPORT_KEY", "ReportPlugin"]

REPORT_KEY = pytest.StashKey["ReportPlugin"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--reports-dir``, ``--no-reports`` and ini ``pop3mon_reports_dir``."""
    group = parser.getgroup("pop3mon", "POP3 monitoring")
    group.addoption(
        "--reports-dir",
        metavar="PATH",
        default=None,
        help="write report.html, junit.xml, results.json and metrics.prom into PATH "
        f"(default: ini pop3mon_reports_dir, else {DEFAULT_DIR}/ next to pytest.ini)",
    )
    group.addoption(
        "--no-reports",
        action="store_true",
        default=False,
        help="write no pop3mon report files (an explicit --html/--junitxml still works)",
    )
    group.addoption(
        "--junit-classname",
        choices=junit.CLASSNAMES,
        default=None,
        help="the JUnit testcases' classname: 'module' (pytest's, one group per tier) or "
        "'connection' (the connection type id, one group per connection type) "
        "(default: ini pop3mon_junit_classname, else module)",
    )
    group.addoption(
        "--junit-strict",
        action="store_true",
        default=None,
        help="write JUnit XML valid against the Ant/Jenkins junit-10 schema: testcase "
        "properties go into <system-out> (default: ini pop3mon_junit_strict)",
    )
    history_glue.add_options(group, parser)
    parser.addini(
        "pop3mon_reports_dir",
        "directory for pop3mon's report files (relative to the rootdir)",
        default=DEFAULT_DIR,
    )
    parser.addini(
        "pop3mon_junit_classname",
        f"the JUnit testcases' classname: {' or '.join(junit.CLASSNAMES)}",
        default="module",
    )
    parser.addini(
        "pop3mon_junit_strict",
        "write JUnit XML valid against the junit-10 schema",
        type="bool",
        default=False,
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register :class:`ReportPlugin` on the controller, before pytest-html and junitxml
    read their options (so the paths set here enable them)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        # Where the controller writes junit.xml itself, the project's tests that record
        # what only junitxml writes run here: the warning has to come from here too.
        if workerinput.get(_PAGES_FROM_MODEL_KEY):
            config.pluginmanager.register(_JunitxmlOnlyWarning(), _JUNITXML_ONLY_PLUGIN)
        return
    if config.getoption("help", False) or config.getoption("version", False):
        return
    plugin = ReportPlugin(config)
    plugin.enable_writers()
    config.stash[REPORT_KEY] = plugin
    config.stash[PAGES_KEY] = plugin
    config.pluginmanager.register(plugin, "pop3mon-report")
    config.pluginmanager.register(_Summary(plugin), "pop3mon-summary")
    config.pluginmanager.register(_ReportFiles(plugin), "pop3mon-report-files")
    # Registered now, so it runs after every other cleanup of the run.
    config.add_cleanup(plugin.stop.exit_if_probes_linger)


def pytest_sessionstart(session: pytest.Session) -> None:
    """An xdist worker of a monitoring run ends at once on SIGTERM/SIGINT (see :mod:`.stop`);
    the controller's handlers are installed by :class:`ReportPlugin`."""
    config = session.config
    if config.stash.get(STORE_KEY, None) is None:
        return
    # Open the history for reading now, in every process, before any check runs.
    history_glue.history_for(config)
    if hasattr(config, "workerinput"):
        install_worker_handlers()


#: junitxml's ini settings whose other values only pytest's writer honours, with their
#: defaults (see :meth:`ReportPlugin._junit_configured`).
_JUNITXML_DEFAULTS: Final = {
    "junit_logging": "no",
    "junit_family": "xunit2",
    "junit_duration_report": "total",
}


#: How long the reports wait for the probing threads to end, so that the writers may
#: fork (they finish within milliseconds of the last result; a run stopped mid-probe has
#: some that do not, and the writers then run in this process).
_SETTLE_SECONDS: Final = 1.0

#: Fixtures whose values only junitxml writes (into its own objects, not the reports).
_JUNITXML_ONLY_FIXTURES: Final = frozenset({"record_xml_attribute", "record_testsuite_property"})
#: The workerinput key that tells an xdist worker the controller writes junit.xml itself.
_PAGES_FROM_MODEL_KEY: Final = "pop3mon_pages_from_model"
_JUNITXML_ONLY_PLUGIN: Final = "pop3mon-junitxml-only"


class _JunitxmlOnlyWarning:
    """Registered where pop3mon writes junit.xml from the run model (its default),
    on the controller and on each xdist worker, where the tests run: a test that records
    what only pytest's junitxml writes is told the value would be lost."""

    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> None:
        name = fixturedef.argname
        if name in _JUNITXML_ONLY_FIXTURES:
            request.node.warn(
                pytest.PytestWarning(
                    f"{name}: not written: pop3mon writes junit.xml from its run model; "
                    "give --junitxml=PATH to keep pytest's writer"
                )
            )


@dataclasses.dataclass(frozen=True)
class _Params:
    """A probe store's test parameters other than connection ids (``ReportPlugin._params``)."""

    store: ProbeStore
    hosts: frozenset[str]
    coverage: frozenset[str]
    #: "<connection id>-<phase>" (a latency test's parameter) -> (connection id, phase)
    latency: dict[str, tuple[str, str]]


class ReportPlugin:
    """The report hooks; one instance on the controller."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        # --collect-only probes nothing: writing reports then would only overwrite the last
        # real run's reports with empty ones.
        self.enabled = reports_enabled(config)
        self.directory = reports_dir(config)
        self.run_id = new_run_id()
        self.own_junit = False
        self.own_html = False
        #: True when pop3mon writes report.html and junit.xml from the run model itself
        #: (:meth:`write_pages_from_model`) instead of finishing pytest-html's and junitxml's.
        self.pages_from_model = False
        #: The pages written so: "HTML", "JUnit XML" (not those whose plugin is off).
        self.model_pages: tuple[str, ...] = ()
        self.junit = self.junit_options()
        self.info: RunInfo | None = None
        self.started = time.time()
        self.recorder = Recorder(self._server_of)
        #: The run model, built once at session finish and shared by every writer.
        self.report: RunReport | None = None
        #: The files this run replaced, once the set was committed.
        self.written: list[tuple[str, Path]] = []
        self.files = ReportSet(self.run_id)
        self.stop = StopControl()
        self._params_cache: _Params | None = None
        #: Node ids of every selected test (the controller's collection or xdist's).
        self.expected: dict[str, None] = {}
        #: The node ids of the selected pop3mon checks where this process collected them
        #: (None under xdist: the controller has node ids only).
        self.checks: set[str] | None = None
        #: A check's node id -> the tier test evaluating it (``--granularity=tier``).
        self.tier_of: dict[str, str] = {}
        #: Why the run ended before every selected check ran ("" when all ran).
        self.stopped = ""
        #: Why this run replaced no report file (said on the terminal), or "".
        self.kept = ""
        #: Why the reports this run wrote have no check in them (said on the terminal), or "".
        self.note = ""
        #: Why writing the reports failed (said on the terminal), or "".
        self.problem = ""
        self._results: dict[str, ProbeResult] = {}
        self._host_results: dict[str, HostResult] = {}
        #: The run's tests that are not pop3mon checks, when pop3mon writes junit.xml.
        self.others: dict[str, OtherTest] = {}

    # -- wiring ----------------------------------------------------------------------------
    def enable_writers(self) -> None:
        """Point pytest-html and junitxml at the reports directory unless the user chose."""
        if not self.enabled:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # pytest-html would otherwise fail on it with a traceback a moment later.
            reason = "it is a file" if self.directory.is_file() else exc.strerror or str(exc)
            raise pytest.UsageError(
                f"pop3mon: cannot use {self.directory} as the reports directory: {reason} "
                "(choose another with --reports-dir, or --no-reports)"
            ) from None
        opt = self.config.option
        # htmlpath exists only while pytest-html is active (not with -p no:html).
        if hasattr(opt, "htmlpath") and not opt.htmlpath:
            opt.htmlpath = str(self.directory / HTML_NAME)
            # Self-contained: one file, no assets/ folder, nothing fetched when opened.
            opt.self_contained_html = True
            self.own_html = True
        if hasattr(opt, "xmlpath") and not opt.xmlpath:
            opt.xmlpath = str(self.directory / JUNIT_NAME)
            self.own_junit = True

    def write_pages_from_model(self) -> bool:
        """Let pop3mon write report.html and junit.xml from the run model at session end
        (:func:`.standalone.write_set_files`: :mod:`.standalone`'s page and
        :func:`.junit.junit_pieces`) instead of pytest-html and junitxml keeping every
        test's report to write theirs; True when so (also when neither page is written).

        Only where pop3mon chose both files: a ``--html``/``--junitxml`` the user gave keeps
        its writer, and a writer the user turned off (``-p no:html``, ``-p no:junitxml``)
        stays off. Called at session start (:meth:`pytest_sessionstart`, whatever the
        granularity; again by :class:`~pop3mon.granularity.TierGrouping`, which asks for the
        answer), when the two writers have seen nothing worth keeping yet; they are
        unregistered, so no test's report passes through them.
        """
        if self.pages_from_model:
            return True
        opt = self.config.option
        user_html = bool(getattr(opt, "htmlpath", None)) and not self.own_html
        user_junit = bool(getattr(opt, "xmlpath", None)) and not self.own_junit
        if user_html or user_junit or self._junit_configured():
            return False
        html = self._html_writer()
        if html is not None:
            self.config.pluginmanager.unregister(html)
        xml = self._logxml()
        if xml is not None:
            from _pytest.junitxml import xml_key

            del self.config.stash[xml_key]
            self.config.pluginmanager.unregister(xml)
        # The options exist only while their plugin is active.
        self.model_pages = tuple(
            label
            for label, active in (
                ("HTML", hasattr(opt, "htmlpath")),
                ("JUnit XML", hasattr(opt, "xmlpath")),
            )
            if active and self.enabled
        )
        self.pages_from_model = True
        # Only now a fixture's set-up needs a look: no hook on every set-up of other runs.
        if not self.config.pluginmanager.hasplugin(_JUNITXML_ONLY_PLUGIN):
            self.config.pluginmanager.register(_JunitxmlOnlyWarning(), _JUNITXML_ONLY_PLUGIN)
        return True

    @property
    def store(self) -> ProbeStore | None:
        """The run's probe store (absent when the targets file failed to load)."""
        return self.config.stash.get(STORE_KEY, None)

    def _server_of(self, ct_id: str) -> str:
        store = self.store
        ct = store.by_id.get(ct_id) if store is not None else None
        if ct is None and store is not None and ct_id.startswith(HOST_ID_PREFIX):
            return ct_id.removeprefix(HOST_ID_PREFIX)
        if ct is None and store is not None and ct_id.startswith(COVERAGE_ID_PREFIX):
            return ct_id.removeprefix(COVERAGE_ID_PREFIX)
        return ct.server if ct is not None else ""

    def _junit_configured(self) -> bool:
        """Whether the run asks junitxml for what only it writes: captured output
        (``junit_logging``), another schema (``junit_family``), call-only times
        (``junit_duration_report``) or ``--junit-prefix``; pytest's writer stays then."""
        for name, default in _JUNITXML_DEFAULTS.items():
            try:
                if str(self.config.getini(name)) != default:
                    return True
            except ValueError:  # junitxml is off: nothing of it to keep
                return False
        return bool(getattr(self.config.option, "junitprefix", None))

    def _logxml(self) -> Any:
        from _pytest.junitxml import xml_key  # private, but the documented way in

        return self.config.stash.get(xml_key, None)

    def junit_options(self) -> junit.JUnitOptions:
        """``--junit-classname``/``--junit-strict``, else their ini values (checked at
        start-up: a bad ini value is a usage error, not a traceback at the end)."""
        name = self.config.getoption("junit_classname", None)
        if name is None:
            name = str(self.config.getini("pop3mon_junit_classname")).strip()
        classname = next((c for c in junit.CLASSNAMES if c == name), None)
        if classname is None:
            raise pytest.UsageError(
                f"pop3mon: ini pop3mon_junit_classname = {name!r} is not one of "
                f"{', '.join(junit.CLASSNAMES)}"
            )
        strict = self.config.getoption("junit_strict", None)
        if strict is None:
            strict = bool(self.config.getini("pop3mon_junit_strict"))
        try:  # junitxml's ini option (absent with -p no:junitxml); its default means ours
            suite = str(self.config.getini("junit_suite_name") or "pytest")
        except ValueError:
            suite = "pytest"
        return junit.JUnitOptions(
            classname=classname,
            strict=bool(strict),
            suite="pop3mon" if suite == "pytest" else suite,
            hostname=platform.node(),
        )

    def _html_path(self) -> Path | None:
        raw = getattr(self.config.option, "htmlpath", None)
        if not raw:
            return None
        # pytest-html resolves a relative --html path against the working directory.
        return Path.cwd() / os.path.expandvars(os.path.expanduser(str(raw)))

    @property
    def empty_shard(self) -> bool:
        """True for a shard the split gave nothing: a normal, successful run whose reports
        (empty, with the shard's identity) ``pop3mon merge`` needs like any other's."""
        identity = self.config.stash.get(IDENTITY_KEY, None)
        store = self.store
        return (
            identity is not None
            and identity.shard is not None
            and store is not None
            and not store.targets.connections
            and not store.targets.hosts
        )

    def shard_selected_nothing(self, session: pytest.Session) -> bool:
        """True for a shard whose ``-k``/``-m`` matched no test in its part (pytest's "no
        tests ran"): like an empty shard, a successful run whose reports ``pop3mon merge``
        needs (every connection type of the shard "not selected"), so that the merge of all
        shards is the unsharded run with that selection. Not for a run stopped before it
        selected anything: its reports would make the merge look complete."""
        identity = self.config.stash.get(IDENTITY_KEY, None)
        return (
            identity is not None
            and identity.shard is not None
            and self.store is not None
            and not self.stop.stopped_by
            and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
            and session.testscollected == 0
            and not self.recorder.records
        )

    def _run_info(self, finished: float | None = None) -> RunInfo:
        store = self.store
        if self.info is None:
            assert store is not None
            identity = self.config.stash.get(IDENTITY_KEY, None)
            self.info = RunInfo(
                # The id given (or the CI's) names the run all shards share; else this
                # process's own, which also names the report set's temporary files.
                run_id=(identity.run_id if identity is not None else None) or self.run_id,
                started=self.started,
                finished=self.started,
                targets_name=store.targets.path.name,
                targets_sha256=store.targets.sha256,
                version=pop3mon_version(self.config.rootpath),
                shard=identity.shard if identity is not None else None,
                vantage=identity.vantage if identity is not None else None,
            )
        if finished is None:
            return self.info
        return RunInfo(**{**self.info.__dict__, "finished": finished, "stopped": self.stopped})

    def _run_report(self) -> RunReport | None:
        """The run model: built on first use after the tests finished, then reused, so
        every artifact shows the same checks and the same duration."""
        store = self.store
        if self.report is None and store is not None:
            info = self._run_info(time.time())
            report = build_run_report(store, self.recorder, info)
            # The history never costs the run its reports: record() never raises.
            path = history_glue.history_path(self.config, self.directory, self.enabled)
            outcome = history_glue.record(self.config, report, path)
            # Changes only exist where the history does; deliver() sends nothing without any
            # and never raises: a failing endpoint is a run-level warning.
            page = self.directory / "report.html" if self.enabled else ""
            warnings = notify.deliver(
                store.targets.notify,
                outcome.changes,
                notify.RunSummary.build(store.targets, outcome.states.values(), page),
            )
            self.report = dataclasses.replace(
                report,
                history=outcome,
                notify_warnings=tuple(scrub(w) for w in warnings),
                others=tuple(self.others.values()),
            )
        return self.report

    def _strip_metadata(self) -> None:
        """Reduce pytest-metadata's table to the allow-list (no environment variables,
        plugin lists or anything else a CI job may have put there)."""
        try:
            from pytest_metadata.plugin import metadata_key  # type: ignore[import-untyped]
        except ImportError:
            return
        data = self.config.stash.get(metadata_key, None)
        if data is None or self.store is None:
            return
        data.clear()
        # pytest-html inserts these values with innerHTML: escape them.
        data.update({k: html_parts.esc(v) for k, v in self._run_info().environment().items()})

    def _result(self, ct_id: str) -> ProbeResult | None:
        store = self.store
        if store is None:
            return None
        if ct_id not in self._results:
            # Under xdist the controller never probes; results come from the run directory.
            self._results.update(store.results)
            if ct_id not in self._results:
                self._results.update(store.load_all())
        return self._results.get(ct_id)

    def _host_result(self, name: str) -> HostResult | None:
        """The host check result of server ``name``, read once (under xdist a worker wrote
        it to the run directory) rather than once per host testcase."""
        store = self.store
        if store is None:
            return None
        if name not in self._host_results:
            self._host_results.update(store.host_results)
            if name not in self._host_results:
                self._host_results.update(store.load_hosts())
        return self._host_results.get(name)

    # -- session -------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Allow-list the environment table and write the suite properties known now."""
        store = self.store
        if store is None:
            return
        # Before xdist starts its workers (its session start is trylast): they hear the
        # choice in pytest_configure_node.
        self.write_pages_from_model()
        self.stop.install()
        # Resolve every secret once on the controller too: that registers it with the
        # redactor, so the reports' scrub pass knows it even when only workers probe.
        # A missing secret is not an error here: resolve_secret returns the problem.
        for ct in store.targets.connections:
            ct.resolve_secret()
        self._strip_metadata()
        xml = self._logxml()
        if xml is not None:
            if self.own_junit and xml.suite_name == "pytest":
                xml.suite_name = "pop3mon"
            for name, value in junit.suite_properties_start(self._run_info()):
                xml.add_global_property(name, value)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Record the verdict; add per-connection facts to the JUnit testcase and the
        reason to the HTML row."""
        rec = self.recorder.record(report)
        if rec is None:
            members = self.recorder.groups.get(report.nodeid)
            if members is not None and (report.when == "teardown" or self.pages_from_model):
                # LogXML copies these into the testcase as text; junit.finish needs only the
                # marker (it expands the testcase from the records), not ~3 KB per test.
                report.user_properties = [
                    (k, f"{len(members)} checks" if k == GROUP_PROPERTY else v)
                    for k, v in report.user_properties
                ]
            elif members is None and not is_check(report):
                # A test of the project's own: for junit.xml and the page where pop3mon
                # writes them, and for results.json always (a merge lists it, fails on it).
                self.others.setdefault(report.nodeid, OtherTest(report.nodeid)).add(report)
            return
        if report.when == "teardown":
            # LogXML copies the teardown report's user_properties into <testcase>.
            store = self.store
            ct = store.by_id.get(rec.ct) if store is not None else None
            if ct is not None:
                report.user_properties.extend(
                    junit.testcase_properties(ct, self._result(ct.id), rec.tier, rec.check)
                )
            elif store is not None and rec.tier == HOST_TIER:
                name = rec.ct.removeprefix(HOST_ID_PREFIX)
                if name in store.hosts:
                    report.user_properties.extend(
                        junit.host_testcase_properties(store.hosts[name], self._host_result(name))
                    )
        elif (
            report.when == "call"
            # pytest-html's row, where pytest-html writes the page (its path resolved on
            # every report was 3 % of a run of 2,000 check tests that did not need it).
            and not self.pages_from_model
            and html_parts.keeps_row(rec)
            and self._html_path() is not None
        ):
            extras = list(getattr(report, "extras", []) or [])
            extras.append(
                {
                    "name": "pop3mon",
                    "format_type": "html",
                    "content": html_parts.reason_html(rec),
                    "mime_type": None,
                    "extension": None,
                }
            )
            report.extras = extras  # type: ignore[attr-defined]

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Tell an xdist worker whether junit.xml is written from the run model (decided
        at session start, before the workers start)."""
        node.workerinput[_PAGES_FROM_MODEL_KEY] = self.pages_from_model

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """Keep a file that failed or skipped while collected for junit.xml and the page
        where pop3mon writes them (junitxml would have a testcase for it) and for
        results.json (``others``)."""
        if not report.passed:
            self.others[report.nodeid] = OtherTest.collected(report)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Remember the selected tests (without xdist the controller collects them)."""
        self.checks = set()
        for item in session.items:
            # A tier test (--granularity=tier) stands for the checks it evaluates.
            members = getattr(item, "member_nodeids", None)
            if members is None:
                self.expected[item.nodeid] = None
                if CHECK_KEYWORD in item.keywords:
                    self.checks.add(item.nodeid)
                continue
            self.expected.update(dict.fromkeys(members))
            self.checks.update(members)
            self.tier_of.update(dict.fromkeys(members, item.nodeid))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Remember the selected tests (under xdist every worker collects the same)."""
        self.expected.update(dict.fromkeys(ids))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodeready(self, node: Any) -> None:
        """Know the xdist workers, to pass a stop signal on to them."""
        # execnet's remote info (cached: xdist asked for it when it set the worker up).
        try:
            pid = node.gateway._rinfo().pid
        except Exception:  # noqa: BLE001 - another execnet: forwarding is a nicety
            return
        if isinstance(pid, int):
            self.stop.worker_pids.add(pid)

    def mark_not_run(self, session: pytest.Session) -> None:
        """Record every selected check that did not report as "not run", with the cause."""
        # Only pop3mon's own checks carry a verdict: a project's other tests never count.
        recorder = self.recorder
        missing = [
            n
            for n in self.expected
            if n not in recorder.records and n not in recorder.groups and self._is_check(n)
        ]
        # The checks of a tier test that broke before its verdicts (its own record is the
        # ERROR): not run because of it, in a run that went on to its end.
        for nodeid in [n for n in missing if self.tier_of.get(n) in recorder.records]:
            ct, tier, check = self._describe(nodeid)
            why = f"not run: its tier test {self.tier_of[nodeid]} broke before this check"
            self.recorder.not_run(nodeid, ct, tier, check, why)
        missing = [n for n in missing if n not in recorder.records]
        if self.stop.stopped_by:
            self.stopped = f"stopped by {self.stop.stopped_by}"
        elif not missing:
            return
        elif session.exitstatus == pytest.ExitCode.INTERRUPTED:
            self.stopped = "interrupted"
        else:
            self.stopped = str(session.shouldfail or session.shouldstop or "ended early")
        reason = f"not run: the run was {self.stopped} before this check ran"
        if self.stopped.startswith("stopping"):  # pytest's -x/--maxfail wording
            reason = f"not run: {self.stopped}"
        for nodeid in missing:
            ct, tier, check = self._describe(nodeid)
            self.recorder.not_run(nodeid, ct, tier, check, reason)

    def _is_check(self, nodeid: str) -> bool:
        """True for a pop3mon check test: known from the collected items, or under xdist
        (the controller has only node ids) a tier test of a configured connection type."""
        if self.checks is not None:
            return nodeid in self.checks
        ct, tier, _ = self._describe(nodeid)
        if tier in (HOST_TIER, COVERAGE_TIER):
            return True
        return tier in TIERS and self.store is not None and ct in self.store.by_id

    def _describe(self, nodeid: str) -> tuple[str, str, str]:
        """(connection id, tier, check) of a tier test from its node id alone (under xdist
        the controller has no items): ``tests_targets/test_<tier>.py::test_<check>[<id>]``,
        latency tests ``...::test_latency[<id>-<phase>]``."""
        path, _, name = nodeid.rpartition("::")
        func, _, param = name.partition("[")
        param = param.removesuffix("]")
        tier = path.rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
        check = func.removeprefix("test_")
        store = self.store
        if store is None:
            return param, tier, check
        params = self._params(store)
        if param in params.hosts:
            return param, HOST_TIER, check.removeprefix("host_")
        if param in params.coverage:
            # test_coverage_unmonitored -> coverage-unmonitored
            return param, COVERAGE_TIER, check.replace("_", "-")
        if param in store.by_id:
            return param, tier, check
        latency = params.latency.get(param)
        if latency is not None:
            return latency[0], tier, f"latency-{latency[1]}"
        return param, tier, check

    def _params(self, store: ProbeStore) -> _Params:
        """The test parameters of ``store``'s targets other than connection ids, worked
        out once: :meth:`_describe` runs for every selected test (under xdist, for every
        node id), and looking through every connection type's latency phases each time
        made a 1,000-connection-type run's end quadratic (seconds)."""
        found = self._params_cache
        if found is None or found.store is not store:
            latency = {
                f"{ct.id}-{phase}": (ct.id, phase)
                for ct in store.targets.connections
                for phase in checks.latency_phases(ct)
            }
            found = self._params_cache = _Params(
                store,
                frozenset(h.id for h in store.targets.hosts),
                frozenset(c.id for c in store.targets.coverage),
                latency,
            )
        return found

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Build the run model; finish the JUnit suite properties (the files are written
        and swapped in by :class:`_ReportFiles`)."""
        # xdist merges each worker's metadata back in when the worker goes down.
        self._strip_metadata()
        report = self._run_report()
        if report is None:
            return
        xml = self._logxml()
        if xml is not None:
            for name, value in junit.suite_properties_finish(report):
                xml.add_global_property(name, value)

    def _html_writer(self) -> Any:
        """pytest-html's report object of this run, if it writes one."""
        try:
            from pytest_html.basereport import BaseReport  # type: ignore[import-untyped]
        except ImportError:
            return None
        for plugin in self.config.pluginmanager.get_plugins():
            if isinstance(plugin, BaseReport):
                return plugin
        return None

    # -- pytest-html hooks ------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_html_report_title(self, report: Any) -> None:
        """Title of the HTML page."""
        report.title = "pop3mon — POP3 monitoring report"

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        """Verdict, Server, Connection type, Tier and Key figure columns."""
        html_parts.header_cells(cells)

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        """Fill our columns; setup/teardown rows get the verdict only when they did not
        pass. A check's row is dropped (no cells) unless :func:`html.keeps_row` keeps it."""
        rec = None
        if report.when == "call" or not report.passed:
            rec = self.recorder.lookup(report.nodeid)
        if not html_parts.keeps_row(rec):
            cells.clear()
            return
        html_parts.row_cells(cells, rec)

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: Any
    ) -> None:
        """The overview matrix on top; one <details> per connection type below."""
        report = self._run_report()
        if report is None:
            return
        prefix.append(html_parts.overview_html(report))
        prefix.append(hosts_html(report))
        summary.extend(html_parts.details_html(report))
        # pytest-html's data (4.x, private): a test whose rows were all dropped still
        # leaves an empty list under its node id (its teardown looks the id up); those ids
        # alone were ~80 bytes per check in the page.
        writer = self._html_writer()
        data = getattr(getattr(writer, "_report", None), "data", {})
        tests = data.get("tests", {})
        for nodeid in [n for n, rows in tests.items() if not rows]:
            del tests[nodeid]
        rows = sum(len(r) for r in tests.values())
        postfix.append(html_parts.results_table_note(rows, len(report.records)))

    # -- terminal ----------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """One line per artifact with its path, or why no report file was replaced."""
        if self.problem:
            terminalreporter.write_sep("!", "pop3mon reports NOT written", red=True, bold=True)
            terminalreporter.write_line(self.problem, red=True)
            return
        if self.kept:
            terminalreporter.write_sep("-", "pop3mon reports")
            terminalreporter.write_line(self.kept, yellow=True)
            return
        if self.stopped:
            terminalreporter.write_line(
                f"pop3mon: the run was {self.stopped}; the reports show what finished, "
                "every other selected check as not run",
                yellow=True,
            )
        if self.note and self.written:
            terminalreporter.write_line(self.note, yellow=True)
        if not self.written:
            return
        terminalreporter.write_sep("-", "pop3mon reports")
        for kind, path in self.written:
            terminalreporter.write_line(f"{kind:<12} {_display(path, self.config)}")
        hist = self.report.history if self.report is not None else None
        if hist is not None and hist.ok and hist.path is not None:
            terminalreporter.write_line(f"{'History':<12} {_display(hist.path, self.config)}")


def _display(path: Path, config: pytest.Config) -> str:
    try:
        return str(path.resolve().relative_to(config.invocation_params.dir.resolve()))
    except ValueError:
        return str(path)


class _Summary:
    """The pop3mon summary, the last thing a monitoring run prints, and pop3mon's lines of
    pytest's short test summary (see :mod:`.terminal`)."""

    def __init__(self, owner: ReportPlugin) -> None:
        self.owner = owner

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        # Runs inside pytest's own terminal summary, before its short test summary.
        if self.owner.store is not None:
            adapt_short_summary(terminalreporter, self.owner.recorder.records)

    # tryfirst makes this the outermost wrapper: its second half runs after pytest's
    # terminal reporter wrote its final "N failed, M passed" line.
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(
        self, session: pytest.Session, exitstatus: int
    ) -> Generator[None, object, object]:
        result = yield
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        report = self.owner.report
        if tr is not None and report is not None and shows_summary(session.config, exitstatus):
            write_summary(tr, report, verbose=session.config.get_verbosity() >= 1)
        return result


def _stream_junit(path: Path, text: str, report: RunReport, options: junit.JUnitOptions) -> bool:
    """Write pytest's JUnit ``text`` finished (:func:`junit.finish`) and scrubbed to
    ``path``, a piece (one testcase) at a time rather than as copies of the whole file;
    False, with ``path`` untouched, when ``text`` is not pytest's XML."""
    part = path.with_name(path.name + ".part")
    try:
        with part.open("w", encoding="utf-8") as out:
            for piece in junit.finish_pieces(text, report, options):
                out.write(scrub(piece))
    except ParseError:
        part.unlink(missing_ok=True)
        return False
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, path)
    return True


class _ReportFiles:
    """Writes the report set: every file under a temporary name, scrubbed, then swapped in.

    A separate plugin because it must wrap the whole ``pytest_sessionfinish`` call: before
    it, pytest-html and junitxml are pointed at temporary names; after it (once every
    writer finished) results.json and metrics.prom are written, the pytest-html and JUnit
    files are scrubbed of secrets (the engine already redacts all it records; this is the
    net under it for anything else that reached a report: captured logs, a failure
    message) and the set is committed (:mod:`.reportset`) or, when anything failed or the
    run selected nothing, discarded.
    """

    def __init__(self, owner: ReportPlugin) -> None:
        self.owner = owner
        self.html: Any = None
        self.html_final: Path | None = None
        self.xml: Any = None
        self.xml_final: Path | None = None

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, None, None]:
        owner = self.owner
        owner.stop.finishing = True
        if owner.store is None:
            # Not a monitoring run (no targets): pytest-html and junitxml as without pop3mon.
            return (yield)
        owner.mark_not_run(session)
        self._stage()
        try:
            result = yield
        except OSError as exc:
            # A writer failed (a full disk): the other writers of the set may not have run.
            self._fail(session, exc.strerror or str(exc))
            return None
        except BaseException:
            self._restore()
            owner.files.discard()
            raise
        self._restore()
        nothing_selected = not owner.empty_shard and owner.shard_selected_nothing(session)
        if owner.empty_shard or nothing_selected:
            if nothing_selected:
                owner.note = (
                    "pop3mon: no check of this shard was selected (-k/-m matched none of its "
                    "connection types): its reports list them as not selected, for the merge"
                )
            self._commit(session)
            # pytest's "no tests ran" (5) is the normal outcome of a shard with nothing in
            # it, or nothing the selection wanted (another shard has that), not a failed
            # selection: the run succeeded, its reports say so.
            if session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and not owner.problem:
                session.exitstatus = pytest.ExitCode.OK
        elif session.testscollected == 0 and not owner.recorder.records:
            self._keep(session)
        else:
            self._commit(session)
        owner.stop.exitstatus = int(session.exitstatus)
        return result

    def _stage(self) -> None:
        """Point pytest-html and junitxml at temporary names next to their files."""
        files = self.owner.files
        html = self.owner._html_writer()
        # pytest-html keeps the resolved path of its file here (4.x).
        if html is not None and isinstance(getattr(html, "_report_path", None), Path):
            self.html, self.html_final = html, html._report_path
            html._report_path = files.stage("HTML", html._report_path)
        xml = self.owner._logxml()
        if xml is not None:
            self.xml, self.xml_final = xml, Path(xml.logfile)
            xml.logfile = str(files.stage("JUnit XML", self.xml_final))
        names = {"HTML": HTML_NAME, "JUnit XML": JUNIT_NAME}
        for label in self.owner.model_pages:
            files.stage(label, self.owner.directory / names[label])
        if self.owner.enabled:
            files.stage("OpenMetrics", self.owner.directory / METRICS_NAME)
            files.stage("JSON", self.owner.directory / JSON_NAME)

    def _restore(self) -> None:
        """Give the writers their final paths back (their terminal lines name them)."""
        if self.html is not None:
            self.html._report_path = self.html_final
        if self.xml is not None:
            self.xml.logfile = str(self.xml_final)

    def _silence_writers(self) -> None:
        """No "generated html report"/"generated xml file" line for a file not replaced."""
        config = self.owner.config
        if self.html is not None:
            config.pluginmanager.unregister(self.html)
        if self.xml is not None:
            from _pytest.junitxml import xml_key

            # junitxml's own unconfigure unregisters what it finds in the stash.
            del config.stash[xml_key]
            config.pluginmanager.unregister(self.xml)

    def _commit(self, session: pytest.Session) -> None:
        owner, files = self.owner, self.owner.files
        try:
            report = owner._run_report()
            if owner.pages_from_model and report is not None:
                store = owner.store
                write_set_files(
                    report,
                    files,
                    owner.junit,
                    # The writers fork only without other threads: let the batch threads
                    # that delivered every result finish closing their pools first.
                    before_fork=(lambda: store.settle(_SETTLE_SECONDS)) if store else None,
                )
                owner.written = files.commit(last="JSON")
                return
            json_tmp, metrics_tmp = files.temp("JSON"), files.temp("OpenMetrics")
            if report is not None and json_tmp is not None and metrics_tmp is not None:
                write_json(report, json_tmp)
                write_metrics(report, metrics_tmp)
            for label in ("HTML", "JUnit XML"):
                path = files.temp(label)
                if path is not None and path.exists():
                    text = path.read_text(encoding="utf-8")
                    is_junit = label == "JUnit XML"
                    if is_junit and report and _stream_junit(path, text, report, owner.junit):
                        continue
                    clean = scrub(text)
                    if label == "HTML":
                        clean = html_parts.finish_page(clean)
                    if clean != text:
                        path.write_text(clean, encoding="utf-8")
            owner.written = files.commit(last="JSON")
        except OSError as exc:
            self._fail(session, exc.strerror or str(exc))
        except ReportSetError as exc:
            self._fail(session, str(exc))

    def _fail(self, session: pytest.Session, why: str) -> None:
        owner = self.owner
        self._restore()
        owner.files.discard()
        self._silence_writers()
        where = sorted({str(p.parent) for _, p in owner.files.finals()})
        owner.problem = (
            f"pop3mon: the reports of this run were not written to {', '.join(where)}: {why}; "
            "the previous reports there are unchanged"
        )
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
        owner.stop.exitstatus = int(session.exitstatus)

    def _keep(self, session: pytest.Session) -> None:
        owner = self.owner
        owner.files.discard()
        self._silence_writers()
        if owner.stop.stopped_by:
            why = f"the run was stopped by {owner.stop.stopped_by} before any check was selected"
        else:
            why = "no check was selected (-k/-m matched no connection type)"
        owner.kept = f"pop3mon: {why}: the previous reports were left as they were"
