"""pytest glue of the reports: options, enabling pytest-html and junitxml, writing artifacts.

By default every run writes four artifacts into ``reports/`` next to ``pytest.ini``:

==============  ================================================================
report.html     pytest-html 4, self-contained and offline, with pop3mon's matrix,
                per-connection details and extra columns
junit.xml       pytest's JUnit XML (xunit2) with pop3mon properties per testcase
                and per suite
results.json    schema ``pop3mon/results/v1`` (see :mod:`.json_report`)
metrics.prom    Prometheus text format / OpenMetrics (see :mod:`.metrics`)
==============  ================================================================

``--reports-dir PATH`` (or ini ``pop3mon_reports_dir``) moves them; ``--no-reports`` turns
pop3mon's own artifacts off (an explicit ``--html``/``--junitxml`` still works and still
gets pop3mon's columns and properties). An explicit ``--html`` or ``--junitxml`` path
always wins over the reports directory.

Everything here runs on the controller only: pytest-xdist workers neither write reports nor
register :class:`ReportPlugin`. Per-test data reaches the controller in ``user_properties``
(the :class:`~pop3mon.report.recorder.Recorder` collects it) and probe results through the
:class:`~pop3mon.probestore.ProbeStore`, so the artifacts are complete under ``-n``. The
monitoring glue hands the store over in ``config.stash[STORE_KEY]``; nothing here imports it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from ..engine.result import ProbeResult
from ..probestore import ProbeStore
from . import html as html_parts
from . import junit
from .json_report import write_json
from .keys import STORE_KEY
from .metrics import write_metrics
from .model import RunInfo, RunReport, build_run_report, new_run_id, pop3mon_version, scrub
from .recorder import Recorder
from .terminal import write_summary

__all__ = ["REPORT_KEY", "ReportPlugin"]

REPORT_KEY = pytest.StashKey["ReportPlugin"]()
DEFAULT_DIR = "reports"
HTML_NAME = "report.html"
JUNIT_NAME = "junit.xml"
JSON_NAME = "results.json"
METRICS_NAME = "metrics.prom"


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
    parser.addini(
        "pop3mon_reports_dir",
        "directory for pop3mon's report files (relative to the rootdir)",
        default=DEFAULT_DIR,
    )


def _reports_dir(config: pytest.Config) -> Path:
    # A command-line path is relative to where pytest was started, an ini path to the
    # rootdir (as pytest does for its own ini paths).
    raw = config.getoption("reports_dir")
    if raw:
        path = Path(os.path.expanduser(str(raw)))
        return path if path.is_absolute() else config.invocation_params.dir / path
    ini = Path(os.path.expanduser(str(config.getini("pop3mon_reports_dir") or DEFAULT_DIR)))
    return ini if ini.is_absolute() else config.rootpath / ini


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register :class:`ReportPlugin` on the controller, before pytest-html and junitxml
    read their options (so the paths set here enable them)."""
    if hasattr(config, "workerinput"):
        return
    if config.getoption("help", False) or config.getoption("version", False):
        return
    plugin = ReportPlugin(config)
    plugin.enable_writers()
    config.stash[REPORT_KEY] = plugin
    config.pluginmanager.register(plugin, "pop3mon-report")
    config.pluginmanager.register(_Summary(plugin), "pop3mon-summary")
    config.pluginmanager.register(_ScrubFiles(plugin), "pop3mon-report-scrub")


class ReportPlugin:
    """The report hooks; one instance on the controller."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        # --collect-only probes nothing: writing reports then would only overwrite the last
        # real run's reports with empty ones.
        self.enabled = not (
            bool(config.getoption("no_reports")) or bool(config.getoption("collectonly", False))
        )
        self.directory = _reports_dir(config)
        self.run_id = new_run_id()
        self.own_junit = False
        self.info: RunInfo | None = None
        self.started = time.time()
        self.recorder = Recorder(self._server_of)
        #: The run model, built once at session finish and shared by every writer.
        self.report: RunReport | None = None
        self.written: list[tuple[str, Path]] = []
        self._results: dict[str, ProbeResult] = {}

    # -- wiring ----------------------------------------------------------------------------
    def enable_writers(self) -> None:
        """Point pytest-html and junitxml at the reports directory unless the user chose."""
        if not self.enabled:
            return
        opt = self.config.option
        # htmlpath exists only while pytest-html is active (not with -p no:html).
        if hasattr(opt, "htmlpath") and not opt.htmlpath:
            opt.htmlpath = str(self.directory / HTML_NAME)
            # Self-contained: one file, no assets/ folder, nothing fetched when opened.
            opt.self_contained_html = True
        if hasattr(opt, "xmlpath") and not opt.xmlpath:
            opt.xmlpath = str(self.directory / JUNIT_NAME)
            self.own_junit = True

    @property
    def store(self) -> ProbeStore | None:
        """The run's probe store (absent when the targets file failed to load)."""
        return self.config.stash.get(STORE_KEY, None)

    def _server_of(self, ct_id: str) -> str:
        store = self.store
        ct = store.by_id.get(ct_id) if store is not None else None
        return ct.server if ct is not None else ""

    def _logxml(self) -> Any:
        from _pytest.junitxml import xml_key  # private, but the documented way in

        return self.config.stash.get(xml_key, None)

    def _html_path(self) -> Path | None:
        raw = getattr(self.config.option, "htmlpath", None)
        if not raw:
            return None
        # pytest-html resolves a relative --html path against the working directory.
        return Path.cwd() / os.path.expandvars(os.path.expanduser(str(raw)))

    def _run_info(self, finished: float | None = None) -> RunInfo:
        store = self.store
        if self.info is None:
            assert store is not None
            self.info = RunInfo(
                run_id=self.run_id,
                started=self.started,
                finished=self.started,
                targets_name=store.targets.path.name,
                targets_sha256=store.targets.sha256,
                version=pop3mon_version(self.config.rootpath),
            )
        if finished is None:
            return self.info
        return RunInfo(**{**self.info.__dict__, "finished": finished})

    def _run_report(self) -> RunReport | None:
        """The run model: built on first use after the tests finished, then reused, so
        every artifact shows the same checks and the same duration."""
        store = self.store
        if self.report is None and store is not None:
            info = self._run_info(time.time())
            self.report = build_run_report(store, self.recorder, info)
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

    # -- session -------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Allow-list the environment table and write the suite properties known now."""
        store = self.store
        if store is None:
            return
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
            return
        if report.when == "teardown":
            # LogXML copies the teardown report's user_properties into <testcase>.
            store = self.store
            ct = store.by_id.get(rec.ct) if store is not None else None
            if ct is not None:
                report.user_properties.extend(
                    junit.testcase_properties(ct, self._result(ct.id), rec.tier, rec.check)
                )
        elif report.when == "call" and self._html_path() is not None:
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

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write results.json and metrics.prom; finish the JUnit suite properties."""
        # xdist merges each worker's metadata back in when the worker goes down.
        self._strip_metadata()
        report = self._run_report()
        if report is None:
            return
        xml = self._logxml()
        if xml is not None:
            for name, value in junit.suite_properties_finish(report):
                xml.add_global_property(name, value)
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.written.append(("JSON", write_json(report, self.directory / JSON_NAME)))
        self.written.append(("OpenMetrics", write_metrics(report, self.directory / METRICS_NAME)))

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
        """Fill our columns; setup/teardown rows get the verdict only when they failed."""
        rec = None
        if report.when == "call" or report.failed:
            rec = self.recorder.records.get(report.nodeid)
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
        summary.extend(html_parts.details_html(report))

    # -- terminal ----------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """One line per artifact with its path."""
        if not self.enabled:
            return
        artifacts: list[tuple[str, Path]] = []
        html_path = self._html_path()
        if html_path is not None and html_path.exists():
            artifacts.append(("HTML", html_path))
        xml = self._logxml()
        if xml is not None and Path(xml.logfile).exists():
            artifacts.append(("JUnit XML", Path(xml.logfile)))
        artifacts += [(k, p) for k, p in self.written if p.exists()]
        if not artifacts:
            return
        terminalreporter.write_sep("-", "pop3mon reports")
        for kind, path in artifacts:
            terminalreporter.write_line(f"{kind:<12} {_display(path, self.config)}")


def _display(path: Path, config: pytest.Config) -> str:
    try:
        return str(path.resolve().relative_to(config.invocation_params.dir.resolve()))
    except ValueError:
        return str(path)


class _Summary:
    """The pop3mon terminal summary, before pytest's own short summary and the paths."""

    def __init__(self, owner: ReportPlugin) -> None:
        self.owner = owner

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        write_summary(terminalreporter, self.owner.recorder.by_connection())


class _ScrubFiles:
    """Runs after pytest-html and junitxml wrote their files and scrubs secrets from them.

    A separate plugin because it must wrap the whole ``pytest_sessionfinish`` call: its code
    after ``yield`` runs once every writer finished. The engine already redacts all it
    records; this is the net under it for anything else that reached a report (captured
    logs, a failure message).
    """

    def __init__(self, owner: ReportPlugin) -> None:
        self.owner = owner

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_sessionfinish(self) -> Generator[None, None, None]:
        yield
        paths = [self.owner._html_path()]
        xml = self.owner._logxml()
        if xml is not None:
            paths.append(Path(xml.logfile))
        for path in paths:
            if path is None or not path.exists():
                continue
            text = path.read_text(encoding="utf-8")
            clean = scrub(text)
            if clean != text:
                path.write_text(clean, encoding="utf-8")
