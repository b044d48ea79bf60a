"""How quickly headless Chromium makes report.html usable: bytes, DOMContentLoaded, load.

Opens each given page from disk (every non-``file:`` request aborted) ``--repeat`` times in
a fresh context and prints the median of the Navigation Timing marks, measured from the
navigation start: ``DOMContentLoaded`` (its handlers included, so pytest-html's script and
pop3mon's filter/link script have run: the page is interactive), ``load``, and how long one
filter keystroke takes to apply (``input`` event to the rows hidden), at the page's size::

    python benchmarks/scale.py --sizes 100 1000 --no-xdist --repeat 1 --keep-logs OUT
    python benchmarks/html_page.py OUT/report-100.html OUT/report-1000.html

Uses Playwright for Python with Debian's ``/usr/bin/chromium`` (as ``tests/test_browser.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import print_machine, print_table
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

_FILTER = """() => {
    const box = document.getElementById('p3m-filter');
    if (!box) { return null; }
    const t0 = performance.now();
    box.value = 'crit';
    box.dispatchEvent(new Event('input'));
    const t1 = performance.now();
    box.value = '';
    box.dispatchEvent(new Event('input'));
    return t1 - t0;
}"""


def _measure(browser: Any, page_path: Path) -> dict[str, float | None]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.route(
        "**/*",
        lambda route: (
            route.continue_() if route.request.url.startswith("file://") else route.abort()
        ),
    )
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    nav = page.evaluate(
        "(() => { const n = performance.getEntriesByType('navigation')[0];"
        " return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd}; })()"
    )
    nav["filter"] = page.evaluate(_FILTER)
    context.close()
    return {k: (float(v) if v is not None else None) for k, v in nav.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every page given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", type=Path, nargs="+", help="report.html files")
    parser.add_argument("--repeat", type=int, default=5, help="loads per page (median)")
    args = parser.parse_args(argv)
    print("# html_page: report.html in headless Chromium\n")
    print_machine({"command": "python benchmarks/html_page.py " + " ".join(sys.argv[1:])})
    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            for path in args.pages:
                runs = [_measure(browser, path) for _ in range(args.repeat)]

                def med(key: str, runs: list[dict[str, float | None]] = runs) -> str:
                    values = [r[key] for r in runs if r[key] is not None]
                    return f"{statistics.median(values):.0f}" if values else "-"

                filt = [r["filter"] for r in runs if r["filter"] is not None]
                rows.append(
                    [
                        f"{path.parent.name}/{path.name}",
                        f"{path.stat().st_size / 1e6:.2f}",
                        med("dcl"),
                        med("load"),
                        f"{statistics.median(filt):.1f}" if filt else "-",
                    ]
                )
        finally:
            browser.close()
    print_table(["page", "MB", "DOMContentLoaded ms", "load ms", "one filter keystroke ms"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
