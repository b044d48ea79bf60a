"""A real browser opens report.html from disk, offline, and what a mail admin sees is checked.

Headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright for Python) loads the
report of a run against the mixed lab of ``test_reports.py``. Every request that is not a
``file:`` URL is aborted and recorded; none may happen. The test also checks the page with
JavaScript disabled, since the overview must not depend on it, and saves a screenshot to
``$POP3MON_ARTIFACTS/screenshots/report.png`` (default ``reports/screenshots/report.png`` in
the repository) for a human to look at.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

playwright_sync = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)

# The lab and the subprocess runner are shared with the artifact tests.
from test_reports import ALLOWED_ENVIRONMENT, EVIL, Lab, run_suite, start_mixed_lab  # noqa: E402


def _artifacts_dir() -> Path:
    return Path(os.environ.get("POP3MON_ARTIFACTS") or REPO / "reports")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Lab, dict[str, Any]]]:
    """report.html (and results.json) of one run against the mixed lab."""
    with ExitStack() as stack:
        lab = start_mixed_lab(stack, tmp_path_factory.mktemp("browser-lab"))
        reports = tmp_path_factory.mktemp("browser-reports")
        run = run_suite(lab.targets, reports, env=lab.env)
        yield run.path("report.html"), lab, run.json()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium."""
    with playwright_sync.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class _Guard:
    """Records every request, aborts all that do not read a local file, collects errors."""

    def __init__(self, page: Any) -> None:
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.route("**/*", self._route)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("dialog", self._dialog)

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(msg.text)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith("file://"):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def test_report_in_a_real_browser(browser: Any, report: tuple[Path, Lab, dict[str, Any]]) -> None:
    """Offline, without console errors or script injection: the matrix shows one row per
    connection type, pytest-html's table and environment render, a screenshot is saved."""
    path, lab, doc = report
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    guard = _Guard(page)
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_selector("#results-table tbody.results-table-row")

    matrix = page.locator("#pop3mon-matrix")
    assert matrix.is_visible()
    rows = page.locator("#pop3mon-matrix tbody tr")
    assert rows.count() == len(lab.ids)
    shown = sorted(rows.nth(i).get_attribute("data-connection") for i in range(rows.count()))
    assert shown == lab.ids
    # The first row is the worst connection type, and its first cell names a verdict.
    assert rows.first.get_attribute("data-verdict") == "CRIT"
    banner = page.locator(".p3m-banner").inner_text()
    assert "FAILING" in banner
    # pytest-html's own table and environment are rendered by its (inline) script.
    checks = sum(len(c["checks"]) for c in doc["connections"])
    assert page.locator("#results-table tbody.results-table-row").count() == checks
    env_keys = page.locator("#environment tr td:first-child").all_inner_texts()
    assert set(env_keys) == ALLOWED_ENVIRONMENT
    # Every connection type has its details, problems open.
    assert page.locator("details.p3m-ct").count() == len(lab.ids)
    assert page.locator("details.p3m-ct[open]").count() == sum(
        1 for v in lab.expected_worst.values() if v != "OK"
    )
    assert page.locator("svg.p3m-waterfall").count() >= len(lab.ids) - 1
    # The hostile greeting/ERR text is shown as text, never run.
    assert EVIL in page.locator("#pop3mon-details").inner_text()

    shots = _artifacts_dir() / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "report.png"))
    page.screenshot(path=str(shots / "report-full.png"), full_page=True)
    context.close()

    assert guard.blocked == [], f"network requests attempted: {guard.blocked}"
    assert guard.errors == [], f"console errors: {guard.errors}"
    assert guard.dialogs == [], f"script injection: {guard.dialogs}"


def test_overview_readable_without_javascript(
    browser: Any, report: tuple[Path, Lab, dict[str, Any]]
) -> None:
    """With JavaScript off, the matrix, counts and details are still all there."""
    path, lab, doc = report
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    guard = _Guard(page)
    page.goto(path.as_uri(), wait_until="load")
    assert page.locator("#pop3mon-matrix tbody tr").count() == len(lab.ids)
    counts = page.locator(".p3m-counts").inner_text()
    for verdict, number in doc["counts"].items():
        if verdict != "total":
            assert f"{number} {verdict}" in counts
    assert page.locator("details.p3m-ct").count() == len(lab.ids)
    titles = page.locator("#pop3mon-matrix td.p3m-cell").evaluate_all(
        "cells => cells.map(c => c.title)"
    )
    assert all(titles), "every matrix cell has its reasons as a tooltip"
    assert json.dumps(guard.blocked) == "[]"
    context.close()
