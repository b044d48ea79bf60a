"""The four reports written from a :class:`~.model.RunReport` alone, without pytest.

``pop3mon merge`` has no pytest session: no pytest-html page to extend and no junitxml
file to finish. It writes the same set from the merged report with the same pieces:

* ``report.html``: a self-contained page of :mod:`.html`'s banner, matrix, filter script
  and details (their style inline, nothing fetched), the run's allow-listed environment
  table in place of pytest-html's, and, for a merge of several vantage points, what each
  saw (:func:`vantages_html`);
* ``junit.xml``: :func:`.junit.junit_pieces`, shaped like a run's (:func:`.junit.finish`);
* ``results.json`` and ``metrics.prom``: :mod:`.json_report` and :mod:`.metrics`.

Written as one set (:mod:`.reportset`): all four new files, or the previous ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

from .html import VIEWPORT, badge, details_html, esc, overview_html
from .html_hosts import hosts_html
from .json_report import write_json
from .junit import JUnitOptions, junit_pieces
from .metrics import METRICS_NAME, write_metrics
from .model import RunReport, scrub
from .parallel import PARALLEL_MIN_CHECKS, in_parallel
from .recorder import OtherTest
from .reportset import HTML_NAME, JSON_NAME, JUNIT_NAME, ReportSet, ReportSetError

__all__ = [
    "html_pieces",
    "others_html",
    "vantages_html",
    "write_report_set",
    "write_set_files",
]

_PAGE_STYLE: Final = (
    "<style>body { font-family: Helvetica, Arial, sans-serif; margin: 12px 18px; }"
    " .p3m-env td, .p3m-env th { text-align: left; padding: 1px 8px 1px 0; }</style>"
)


def vantages_html(report: RunReport) -> str:
    """ "Seen from": every connection type whose vantage points disagree, or that some of
    them did not probe ("–", "not probed from apac"), with each vantage's verdict and the
    finding ("fails only from eu-west: network path, not the server"), then how many
    looked the same from all of them ("" unless merged from several vantages)."""
    names = report.vantage_names
    if len(names) < 2:
        return ""
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    rows = []
    agree = partial = 0
    for conn in report.by_severity():
        views = conn.vantages
        missing = conn.not_probed_from(names)
        if missing:
            partial += 1  # seen from fewer than all: not "the same from all of them"
        elif len({v.worst for v in views.values()}) <= 1:
            agree += 1
            continue
        cells = "".join(
            f"<td>{badge(views[n].worst, hint=False)}</td>" if n in views else "<td>–</td>"
            for n in names
        )
        finding = conn.vantage_finding(names) or conn.seen_from()
        rows.append(
            f'<tr data-connection="{esc(conn.ct.id)}"><th scope="row">{esc(conn.ct.id)}</th>'
            f"{cells}<td>{esc(finding)}</td></tr>"
        )
    table = (
        '<div class="p3m-scroll"><table class="p3m-checks" id="pop3mon-vantage-table">'
        f"<thead><tr><th>Connection type</th>{head}<th>Finding</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        if rows
        else ""
    )
    plural = "s" if agree != 1 else ""
    gap = (
        f" {partial} connection type{'s' if partial != 1 else ''} not probed from all of them (–)."
        if partial
        else ""
    )
    return (
        '<section class="p3m" id="pop3mon-vantages"><h3>Seen from</h3>'
        f'<p class="p3m-facts">Merged from {len(names)} vantage points ({esc(", ".join(names))})'
        "; each connection type's verdict is the worst any of them saw. "
        f"{agree} connection type{plural} looked the same from all of them.{gap}</p>"
        f"{table}</section>"
    )


def others_html(others: Sequence[OtherTest]) -> str:
    """The run's tests that are not pop3mon checks, a row per outcome ("" without any): a
    teardown error after a failure or a skip is a row of its own, as it is an element of
    its own in junit.xml."""
    if not others:
        return ""
    lines: list[tuple[str, str, str, str]] = []
    for o in others:
        lines.append((o.nodeid, o.outcome, f"{o.seconds:.3f}", o.message))
        if o.then is not None:
            lines.append((o.nodeid, o.then.outcome, f"{o.then.seconds:.3f}", o.then.message))
        if o.skip_then_error is not None:
            lines.append((o.nodeid, "error", "", o.skip_then_error[0]))
    rows = "".join(
        f"<tr><td>{esc(test)}</td><td>{esc(outcome)}</td><td>{seconds}</td>"
        f"<td>{esc(message)}</td></tr>"
        for test, outcome, seconds, message in lines
    )
    return (
        '<section class="p3m" id="pop3mon-other-tests"><h3>Other tests in this run</h3>'
        '<div class="p3m-scroll"><table class="p3m-checks"><thead><tr><th>Test</th>'
        "<th>Outcome</th><th>Seconds</th><th>Message</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div></section>"
    )


def html_pieces(
    report: RunReport, merged_from: str = "", others: Sequence[OtherTest] = ()
) -> Iterator[str]:
    """A self-contained ``report.html`` for ``report``, a section (a connection type's
    details) at a time, each scrubbed of secrets, for a writer that streams them to the
    file; ``others``: the run's tests that are not pop3mon checks."""
    info = report.info
    env = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in info.environment().items()
    )
    if merged_from:
        env += f"<tr><th>Merged from</th><td>{esc(merged_from)}</td></tr>"
    title = f"pop3mon report: {info.targets_name}"
    yield scrub(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"{VIEWPORT}<title>{esc(title)}</title>{_PAGE_STYLE}</head><body>"
        f"<h1>{esc(title)}</h1>"
    )
    yield scrub(overview_html(report))
    yield scrub(hosts_html(report))
    yield scrub(vantages_html(report))
    for piece in details_html(report):
        yield scrub(piece)
    yield scrub(others_html(others))
    yield scrub(
        '<section class="p3m" id="environment"><h3>Environment</h3>'
        f'<table class="p3m-env">{env}</table></section>'
        "</body></html>\n"
    )


def write_set_files(
    report: RunReport,
    files: ReportSet,
    junit: JUnitOptions,
    *,
    merged_from: str = "",
    vantages: Mapping[str, RunReport] | None = None,
    before_fork: Callable[[], object] | None = None,
) -> bool:
    """Write report.html, junit.xml, metrics.prom and results.json of ``report`` to their
    staged names in ``files`` (every merge's, and a run's with ``--granularity=tier``),
    each a piece at a time (with the run's tests that are not pop3mon checks,
    ``report.others``), ``vantages`` as in :func:`write_report_set`. A large run writes
    junit.xml and metrics.prom in a forked child meanwhile (:func:`.parallel.in_parallel`,
    which calls ``before_fork`` first); returns whether it did. A member ``files`` does not
    stage is not written."""

    # In a run at 1,000 connection types the halves take 1.2-1.35 s (junit.xml +
    # metrics.prom) and 1.4-1.65 s (report.html + results.json; benchmarks/README.md §3g).
    def child_part() -> None:
        junit_tmp, metrics_tmp = files.temp("JUnit XML"), files.temp("OpenMetrics")
        if junit_tmp is not None:
            with junit_tmp.open("w", encoding="utf-8") as out:
                out.writelines(scrub(piece) for piece in junit_pieces(report, junit, report.others))
        if metrics_tmp is not None:
            write_metrics(report, metrics_tmp, vantages)

    def own_part() -> None:
        html_tmp, json_tmp = files.temp("HTML"), files.temp("JSON")
        if html_tmp is not None:
            with html_tmp.open("w", encoding="utf-8") as out:
                out.writelines(html_pieces(report, merged_from, report.others))
        if json_tmp is not None:
            write_json(report, json_tmp)

    worth_it = len(report.records) >= PARALLEL_MIN_CHECKS
    return in_parallel(child_part, own_part, worth_it=worth_it, prepare=before_fork)


def write_report_set(
    report: RunReport,
    directory: Path,
    junit: JUnitOptions | None = None,
    vantages: Mapping[str, RunReport] | None = None,
    merged_from: str = "",
) -> list[tuple[str, Path]]:
    """Write report.html, junit.xml, metrics.prom and results.json of ``report`` into
    ``directory`` as one set (``vantages``: each vantage's report, for the metrics'
    ``vantage`` label). Raises :class:`ReportSetError` when any file could not be
    written; the previous set is then in place, and no temporary file is left (also when
    a writer raised something else, which is raised again)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportSetError(f"{exc.strerror or exc} ({directory})") from None
    files = ReportSet(report.info.run_id)
    files.stage("HTML", directory / HTML_NAME)
    files.stage("JUnit XML", directory / JUNIT_NAME)
    files.stage("OpenMetrics", directory / METRICS_NAME)
    files.stage("JSON", directory / JSON_NAME)
    try:
        write_set_files(
            report,
            files,
            junit or JUnitOptions(),
            merged_from=merged_from,
            vantages=vantages,
        )
    except BaseException as exc:
        # Whatever stopped the writers (a full disk, a value a writer could not format,
        # Ctrl-C), their temporary files go: the previous set stays as it was.
        with contextlib.suppress(OSError):
            files.discard()
        if isinstance(exc, OSError):
            raise ReportSetError(f"{exc.strerror or exc} ({exc.filename or directory})") from None
        raise
    return files.commit(last="JSON")
