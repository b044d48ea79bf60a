"""Collects every check's verdict on the controller, once per test report.

Verdicts arrive in test reports' ``user_properties`` (from this process or from xdist
workers); :meth:`Recorder.record` turns each report into at most one :class:`CheckRecord`,
and every writer (terminal, HTML rows, JUnit, the run model) reads the records from here.
The property names are defined here too, next to their only parser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..checks import CheckResult
from ..verdict import Verdict, rank

if TYPE_CHECKING:  # the annotations only: `pop3mon merge` builds records without pytest
    import pytest

__all__ = [
    "CHECK_FIXTURES",
    "CHECK_KEYWORD",
    "FAILED_PREFIX",
    "GROUP_PROPERTY",
    "NOT_RUN",
    "CheckRecord",
    "OtherTest",
    "Recorder",
    "group_entry",
    "is_check",
    "one_per_check",
    "record_properties",
    "verdict_properties",
]

_P: Final = "pop3mon_"
#: The property a tier test (``--granularity=tier``) carries all its checks in: a list of
#: :func:`group_entry` lists, one per check, each becoming its own :class:`CheckRecord`.
GROUP_PROPERTY: Final = _P + "checks"
#: The keyword every pop3mon check test carries (set at collection; its reports keep it,
#: under xdist too): a failing test without it is a project's own test, not a broken check.
CHECK_KEYWORD: Final = _P + "check"
#: pytest's prefix of a ``pytest.fail()`` message (``Failed: <message>``), also in JUnit XML.
FAILED_PREFIX: Final = "Failed: "
#: The fixtures a pop3mon check test asks for (a connection type's, a host's, a server's).
CHECK_FIXTURES: Final = frozenset({"check", "host_check", "coverage_check"})
#: The outcome of a selected check the run ended before (SIGTERM, Ctrl-C, ``-x``).
NOT_RUN: Final = "not run"


@dataclass
class CheckRecord:
    """One tier check of one connection type, as it ended."""

    nodeid: str
    ct: str
    server: str
    tier: str
    check: str
    verdict: Verdict  # ERROR when the test broke without a verdict
    reason: str
    outcome: str  # pytest outcome: passed failed skipped, or NOT_RUN
    figure: float | None = None
    unit: str = ""
    duration: float = 0.0
    #: The check whose failure made this one a SKIP (empty when not blocked).
    blocked_by: str = ""
    #: Its test's failure message (``plugin.failure_message``: with the ``--strict-warn``
    #: and history notes) when its verdict failed the test, the traceback of a test that
    #: broke (ERROR); empty otherwise or unknown.
    failure: str = ""
    #: The phase its test broke in (ERROR): ``call`` is a JUnit failure, as junitxml counts
    #: an exception in a test's body; a set-up or teardown is an error. ``teardown`` with
    #: another verdict: the test broke after its verdict (a fixture's teardown raised), the
    #: verdict stands and the test failed (``failure``: junitxml's message).
    broke_in: str = ""

    @property
    def broke_after_verdict(self) -> bool:
        """Whether its test broke after its verdict (a fixture's teardown raised)."""
        return self.verdict != Verdict.ERROR and self.broke_in == "teardown"

    @property
    def broke_after_message(self) -> str:
        """junit.xml's ``<error>`` message of a test that broke after its verdict."""
        return self.failure or f"failed on {self.broke_in}"

    @property
    def junit_error(self) -> bool:
        """Whether junit.xml shows it as an ``<error>`` (else a failure, a skip or a pass)."""
        if self.verdict == Verdict.ERROR:
            return self.broke_in != "call"
        return self.broke_after_verdict

    @property
    def failure_text(self) -> str:
        """The failure message junit.xml shows: the test's own, else the plain one."""
        return self.failure or f"{self.verdict} {self.ct} {self.check}: {self.reason}"

    @property
    def error_text(self) -> str:
        """The text of junit.xml's ``<error>`` or ``<failure>`` of a test that broke (ERROR):
        its traceback."""
        return self.failure or self.reason


@dataclass
class OtherTest:
    """A test of the run that is not a pop3mon check (a project's own test run beside the
    tier tests), as JUnit shows it: the one writer of junit.xml when pop3mon writes it
    from the run model (``--granularity=tier``) must not lose it."""

    nodeid: str
    #: "passed", "failed" (its call failed), "error" (set-up or teardown failed), "skipped"
    outcome: str = "passed"
    seconds: float = 0.0
    message: str = ""
    text: str = ""
    #: A skip's JUnit type: "pytest.skip", or "pytest.xfail" for an expected failure;
    #: "" for none (a module skipped while collected).
    skip_type: str = "pytest.skip"
    #: ``record_property`` and other ``user_properties`` of the report that closes the
    #: testcase (the teardown's; the call's when a teardown error opens a second one).
    properties: tuple[tuple[str, str], ...] = ()
    #: A teardown error after a failed call: junitxml's second testcase of the same name.
    then: OtherTest | None = None
    #: A teardown error after a skip, (message, text): junitxml writes it into the same
    #: testcase, after the ``<skipped>``.
    skip_then_error: tuple[str, str] | None = None

    @property
    def failed(self) -> bool:
        """Whether junit.xml shows it as a failure or an error (its own testcase, a
        teardown error after its skip, or its second testcase)."""
        if self.outcome in ("failed", "error") or self.skip_then_error is not None:
            return True
        return self.then is not None and self.then.failed

    @classmethod
    def collected(cls, report: pytest.CollectReport) -> OtherTest:
        """A file or class that failed or skipped while collected, as junitxml words it:
        an error "collection failure" or a skip "collection skipped"."""
        failed = report.failed
        return cls(
            report.nodeid,
            outcome="error" if failed else "skipped",
            message="collection failure" if failed else "collection skipped",
            text=str(report.longrepr),
            skip_type="",
        )

    def add(self, report: pytest.TestReport) -> None:
        """Fold one phase's report in, as pytest's junitxml does."""
        if report.when == "teardown" and report.failed and self.outcome == "failed":
            # junitxml closes the failed call's testcase and opens another for this error.
            self.then = OtherTest(self.nodeid)
            self.then.add(report)
            return
        self.seconds += report.duration
        if report.when in ("call", "teardown"):  # the report junitxml closes the case with
            self.properties = tuple((str(k), str(v)) for k, v in report.user_properties)
        if report.when == "teardown" and report.failed and self.outcome == "skipped":
            self.skip_then_error = (_failure_message(report), report.longreprtext)
            return
        if report.skipped and self.outcome == "passed":
            self.outcome = "skipped"
            longrepr = report.longrepr
            xfail = getattr(report, "wasxfail", None)
            if xfail is not None:
                self.skip_type = "pytest.xfail"
                self.message = str(xfail).removeprefix("reason: ")  # junitxml: no text
            elif isinstance(longrepr, tuple) and len(longrepr) == 3:
                path, line, reason = longrepr
                self.message = str(reason).removeprefix("Skipped: ")
                self.text = f"{path}:{line}: {self.message}"
            else:
                self.message = self.text = report.longreprtext
        elif report.failed and self.outcome in ("passed", "skipped"):
            self.outcome = "failed" if report.when == "call" else "error"
            self.message = _failure_message(report)
            self.text = report.longreprtext


def _broke_after(rec: CheckRecord, report: pytest.TestReport) -> None:
    """A check's test broke after its verdict (a fixture's teardown raised): the verdict
    stands, the test failed, and unless it had failed already junit.xml shows the error as
    junitxml does (an ``<error>`` "failed on teardown with ...")."""
    failed_before = rec.outcome == "failed" or rec.verdict == Verdict.ERROR
    rec.outcome = "failed"
    if failed_before or report.when != "teardown":
        return
    rec.broke_in = "teardown"
    rec.failure = _failure_message(report)


def _failure_message(report: pytest.TestReport) -> str:
    """A failed phase's message, in junitxml's words."""
    crash = getattr(report.longrepr, "reprcrash", None)
    lines = report.longreprtext.strip().splitlines()
    reason = crash.message if crash is not None else (lines[-1] if lines else "")
    return reason if report.when == "call" else f'failed on {report.when} with "{reason}"'


def is_check(report: pytest.TestReport | pytest.CollectReport) -> bool:
    """Whether ``report`` is a pop3mon check test's (see :data:`CHECK_KEYWORD`)."""
    return CHECK_KEYWORD in report.keywords


def verdict_properties(ct: str, server: str, res: CheckResult) -> list[tuple[str, object]]:
    """The ``user_properties`` a tier test carries its verdict in (plain str/float, so they
    survive xdist's report serialisation)."""
    return _properties(
        ct,
        server,
        res.tier,
        res.check,
        res.verdict,
        res.reason,
        res.blocked_by or "",
        res.figure,
        res.unit,
    )


def record_properties(rec: CheckRecord) -> list[tuple[str, object]]:
    """The same properties for a record (a report written without pytest, ``pop3mon
    merge``: its JUnit testcases carry what a test's ``user_properties`` would have)."""
    return _properties(
        rec.ct,
        rec.server,
        rec.tier,
        rec.check,
        rec.verdict,
        rec.reason,
        rec.blocked_by,
        rec.figure,
        rec.unit,
    )


def _properties(
    ct: str,
    server: str,
    tier: str,
    check: str,
    verdict: Verdict,
    reason: str,
    blocked_by: str,
    figure: float | None,
    unit: str,
) -> list[tuple[str, object]]:
    props: list[tuple[str, object]] = [
        (_P + "ct", ct),
        (_P + "server", server),
        (_P + "tier", tier),
        (_P + "check", check),
        (_P + "verdict", str(verdict)),
        (_P + "reason", reason),
    ]
    if blocked_by:
        props.append((_P + "blocked_by", blocked_by))
    if figure is not None:
        props += [(_P + "figure", float(figure)), (_P + "unit", unit)]
    return props


def group_entry(
    nodeid: str,
    ct: str,
    server: str,
    res: CheckResult,
    outcome: str,
    duration: float,
    failure: str = "",
    *,
    broke_in: str = "",
) -> list[tuple[str, object]]:
    """One check of a tier test: :func:`verdict_properties` plus the node id the check
    has as a test of its own (``--granularity=check``), its outcome, its duration and the
    failure message its test would have failed with (``broke_in``: the phase a check that
    raised broke in, as :attr:`CheckRecord.broke_in`)."""
    entry: list[tuple[str, object]] = [
        *verdict_properties(ct, server, res),
        (_P + "nodeid", nodeid),
        (_P + "outcome", outcome),
        (_P + "duration", float(duration)),
        (_P + "failure", failure),
    ]
    if broke_in:
        entry.append((_P + "broke_in", broke_in))
    return entry


def _parse(report: pytest.TestReport, props: Mapping[str, object]) -> CheckRecord:
    figure = props.get(_P + "figure")
    duration = props.get(_P + "duration", report.duration)
    failure = props.get(_P + "failure")
    if failure is None and report.failed and report.when == "call":
        # A check test failed with pytest.fail(message, pytrace=False): the message, as
        # junitxml takes it (not longreprtext, which xdist begins with the worker's line).
        crash = getattr(report.longrepr, "reprcrash", None)
        text = crash.message if crash is not None else str(report.longrepr)
        failure = text.removeprefix(FAILED_PREFIX)
    return CheckRecord(
        nodeid=str(props.get(_P + "nodeid", report.nodeid)),
        ct=str(props[_P + "ct"]),
        server=str(props.get(_P + "server", "")),
        tier=str(props.get(_P + "tier", "")),
        check=str(props.get(_P + "check", "")),
        verdict=Verdict.parse(props.get(_P + "verdict")),
        reason=str(props.get(_P + "reason", "")),
        outcome=str(props.get(_P + "outcome", report.outcome)),
        figure=float(figure) if isinstance(figure, int | float) else None,
        unit=str(props.get(_P + "unit", "")),
        duration=float(duration) if isinstance(duration, int | float) else report.duration,
        blocked_by=str(props.get(_P + "blocked_by", "")),
        failure=str(failure or ""),
        broke_in=str(props.get(_P + "broke_in", "")),
    )


class Recorder:
    """The controller's record of every check, fed one test report at a time.

    ``server_of`` maps a connection type id to its server name, for tests that broke
    before they recorded a verdict.
    """

    def __init__(self, server_of: Callable[[str], str]) -> None:
        self.server_of = server_of
        self.records: dict[str, CheckRecord] = {}
        #: Node id of a tier test (``--granularity=tier``) -> the node ids of its checks.
        self.groups: dict[str, list[str]] = {}

    def record(self, report: pytest.TestReport) -> CheckRecord | None:
        """Take one test report. Returns the check's record when the report carries a
        verdict (a check test's report), else ``None`` (but a failure is still recorded).
        A tier test's report records each of its checks (see :attr:`groups`) and returns
        ``None``."""
        props = {str(k): v for k, v in report.user_properties}
        group = props.get(GROUP_PROPERTY)
        if isinstance(group, list):
            if report.when == "call" or report.nodeid not in self.groups:
                self._record_group(report, group)
            elif report.failed:  # a teardown error after the verdicts
                for nodeid in self.groups[report.nodeid]:
                    _broke_after(self.records[nodeid], report)
            return None
        if _P + "ct" not in props:
            known = self.records.get(report.nodeid)
            if report.failed and known is not None:
                _broke_after(known, report)
            elif report.failed and report.when in ("setup", "call") and is_check(report):
                self.records[report.nodeid] = self._broken(report)
            return None
        if report.when == "teardown" and report.nodeid in self.records:
            known = self.records[report.nodeid]
            if report.failed:  # the teardown report repeats the verdict's properties
                _broke_after(known, report)
            return known
        self.records[report.nodeid] = _parse(report, props)
        return self.records[report.nodeid]

    def _record_group(self, report: pytest.TestReport, group: list[object]) -> None:
        ids: list[str] = []
        for entry in group:
            if not isinstance(entry, list | tuple):
                continue
            rec = _parse(report, {str(k): v for k, v in entry})
            self.records[rec.nodeid] = rec
            ids.append(rec.nodeid)
        self.groups[report.nodeid] = ids

    def lookup(self, nodeid: str) -> CheckRecord | None:
        """The record of a test: a check test's own, or for a tier test the worst of its
        checks (the first of them when they tie)."""
        found = self.records.get(nodeid)
        if found is not None or nodeid not in self.groups:
            return found
        members = [self.records[n] for n in self.groups[nodeid] if n in self.records]
        return max(members, key=lambda r: rank(r.verdict), default=None)

    def _broken(self, report: pytest.TestReport) -> CheckRecord:
        """A test that errored before reaching a verdict (a bug or a fixture error)."""
        ct = ""
        check = report.nodeid.rsplit("::", 1)[-1]
        if "[" in check:
            check, ct = check.split("[", 1)
            ct = ct.rstrip("]")
        tier = report.nodeid.split("/")[-1].split("::")[0].removeprefix("test_")
        tier = tier.removesuffix(".py")
        text = report.longreprtext.strip().splitlines()
        # The exception and its message ("RuntimeError: boom"), not the location line.
        crash = getattr(report.longrepr, "reprcrash", None)
        reason = crash.message if crash is not None else (text[-1] if text else "")
        return CheckRecord(
            nodeid=report.nodeid,
            ct=ct,
            server=self.server_of(ct),
            tier=tier,
            check=check.removeprefix("test_"),
            verdict=Verdict.ERROR,
            reason=reason or "test error",
            outcome="failed",
            duration=report.duration,
            # What junitxml writes into its <error> or <failure>: the traceback.
            failure=str(report.longrepr),
            broke_in=report.when,
        )

    def not_run(self, nodeid: str, ct: str, tier: str, check: str, reason: str) -> CheckRecord:
        """Record a selected check that never ran (verdict SKIP, outcome :data:`NOT_RUN`)."""
        rec = CheckRecord(
            nodeid=nodeid,
            ct=ct,
            server=self.server_of(ct),
            tier=tier,
            check=check,
            verdict=Verdict.SKIP,
            reason=reason,
            outcome=NOT_RUN,
        )
        self.records[nodeid] = rec
        return rec

    def by_connection(self) -> dict[str, list[CheckRecord]]:
        """Records grouped by connection type id, each group in test order."""
        out: dict[str, list[CheckRecord]] = {}
        for rec in self.records.values():
            out.setdefault(rec.ct, []).append(rec)
        return dict(sorted(out.items()))


def one_per_check(records: Iterable[CheckRecord], *, by_tier: bool = False) -> list[CheckRecord]:
    """``records`` with one per connection type and check (and tier, ``by_tier``), in
    their order, where a project's own test evaluated a check that pop3mon's test
    evaluates too (``def test_mine(check): check("tcp")``): a record with a verdict before
    one of a test that broke first (ERROR: its check and tier only guessed from its
    names), then the worse, then the first. What is keyed so takes these: the history's rows (one
    per run, connection type and check) and the metrics' series (whose labels include the
    tier; Prometheus refuses a file with one series twice)."""
    kept: dict[tuple[str, ...], CheckRecord] = {}
    for rec in records:
        key = (rec.ct, rec.tier, rec.check) if by_tier else (rec.ct, rec.check)
        known = kept.get(key)
        if known is None or _weight(rec) > _weight(known):
            kept[key] = rec
    return list(kept.values())


def _weight(rec: CheckRecord) -> tuple[bool, int]:
    # ERROR is only ever a test that broke (its check and tier guessed from its names).
    # Only the verdict decides, which results.json keeps of every record: a merge chooses
    # as the run did.
    return rec.verdict != Verdict.ERROR, rank(rec.verdict)


def verdicts(records: Iterable[CheckRecord]) -> Iterable[Verdict]:
    """The verdicts of ``records`` (for :func:`pop3mon.verdict.worst` and ``count``)."""
    return (r.verdict for r in records)
