"""JUnit XML: what pop3mon adds to pytest's own ``--junitxml`` writer.

pytest writes one ``<testcase>`` per tier check and copies each report's ``user_properties``
into ``<testcase><properties>``; the ``check`` fixture already puts the verdict there. This
module adds the per-connection facts a CI page should show next to it (endpoint, phase
timings, certificate days left) and the suite-level properties (run id, targets hash, start
time, counts), which only the controller can write: ``record_testsuite_property`` does
nothing on xdist workers.

When pytest has written the file, :func:`finish` rewrites each check's testcase from the
run model (it runs before the secrets scrub and the report set's rename):

* ``time`` is the check's own time (:func:`own_seconds`), not pytest's duration: the probe
  runs lazily inside the first test of a connection type, which pytest would charge with
  the whole probe (a skipped DNS check showing 5.8 s).
* A WARN testcase's ``name`` ends in ``[WARN]`` and its ``<system-out>`` starts with
  ``WARN: <reason>``. WARN passes (unless ``--strict-warn``), and for a passing testcase
  GitLab's Tests tab and the GitHub reporters render only name, classname, time and status
  (GitLab drops ``<system-out>`` of passing testcases): the name is what they all show.
* ``--junit-classname=connection`` sets ``classname`` to the connection type id, so one
  connection type's checks sit together (GitLab's "Suite" column, Jenkins' class); the
  default ``module`` keeps pytest's (``tests_targets.test_tls``: one group per tier).
* ``--junit-strict`` makes the file valid against the Ant/Jenkins junit-10 schema
  (``tests/data/junit-10.xsd``), for consumers that validate: ``<properties>`` is not
  allowed inside ``<testcase>`` there, so each testcase's properties become
  ``name: value`` lines of its ``<system-out>``. Without it the file carries that one
  extension, which Jenkins' JUnit plugin, GitLab and the common GitHub actions accept.

``junit_family=xunit2`` (pytest's default) keeps the other ``<testcase>`` attributes to
``classname``/``name``/``time``, as junit-10 requires.
"""

from __future__ import annotations

import functools
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from ..checks.base import own_phases
from ..config import ConnectionType, Host
from ..engine.hosts import HostResult
from ..engine.result import ProbeResult
from ..engine.stages import HOST_ID_PREFIX, TIERS
from ..verdict import Verdict
from .model import CoverageReport, RunInfo, RunReport
from .recorder import (
    FAILED_PREFIX,
    GROUP_PROPERTY,
    NOT_RUN,
    CheckRecord,
    OtherTest,
    record_properties,
)

__all__ = [
    "CLASSNAMES",
    "PREFIX",
    "WARN_SUFFIX",
    "Classname",
    "JUnitOptions",
    "finish",
    "finish_pieces",
    "host_own_seconds",
    "host_testcase_properties",
    "junit_pieces",
    "junit_text",
    "own_seconds",
    "shape_testcase",
    "suite_properties_finish",
    "suite_properties_start",
    "testcase_properties",
]

PREFIX = "pop3mon_"
#: What a testcase's ``classname`` is: pytest's module path (one group per tier) or the
#: connection type id (one group per connection type).
Classname = Literal["module", "connection"]
CLASSNAMES: Final[tuple[Classname, ...]] = get_args(Classname)
#: The end of a WARN testcase's name: the one part of a passing testcase every CI view shows.
WARN_SUFFIX: Final = " [WARN]"
_DECLARATION: Final = '<?xml version="1.0" encoding="utf-8"?>'


@dataclass(frozen=True)
class JUnitOptions:
    """How :func:`finish` shapes the file (``--junit-classname``, ``--junit-strict``)."""

    classname: Classname = "module"
    strict: bool = False
    #: The ``<testsuite>``'s name where pop3mon writes the file (ini ``junit_suite_name``).
    suite: str = "pop3mon"
    #: The ``<testsuite>``'s ``hostname`` (the machine that ran the checks, as junitxml
    #: writes it); "" for none (a merge of runs from several machines).
    hostname: str = ""


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def own_seconds(result: ProbeResult | None, rec: CheckRecord) -> float:
    """A check's own time: the phases it owns (:func:`~pop3mon.checks.base.own_phases`);
    0 for a SKIP (it did no work) and for a check that judges a phase another one owns."""
    if result is None or rec.verdict == Verdict.SKIP:
        return 0.0
    return sum(seconds for _, seconds in own_phases(result, rec.check))


def host_own_seconds(result: HostResult | None, rec: CheckRecord) -> float:
    """A host check's own time: the echo's round trip for ``ping``, the slowest of its
    ports' connects for ``tcp`` (they are tried at once); 0 for a SKIP."""
    if result is None or rec.verdict == Verdict.SKIP:
        return 0.0
    if rec.check == "ping":
        rtt = result.ping.rtt_seconds if result.ping is not None else None
        return rtt or 0.0
    return max((p.seconds or 0.0 for p in result.ports), default=0.0)


def testcase_properties(
    ct: ConnectionType, result: ProbeResult | None, tier: str = "", check: str = ""
) -> list[tuple[str, str | float]]:
    """Facts for the testcase of ``check`` of ``ct``: the endpoint, the total and the
    phases that check owns (its latency phase for ``latency-*``), and the certificate on
    TLS checks (plain str/float)."""
    props: list[tuple[str, str | float]] = [
        (PREFIX + "host", ct.host),
        (PREFIX + "port", str(ct.port)),
        (PREFIX + "security", ct.security),
    ]
    if result is None:
        return props
    wanted = {"total"}
    wanted.update(phase for phase, _ in own_phases(result, check))
    if check.startswith("latency-"):
        wanted.add(check.removeprefix("latency-"))
    if not check:  # no check known: every phase
        wanted.update(phase for phase, _ in result.phases)
    for phase, secs in result.phases:
        if phase in wanted:
            props.append((f"{PREFIX}phase_{phase}_ms", round(secs * 1000.0, 3)))
    cert = result.tls.cert if result.tls is not None else None
    if cert is not None and tier in ("tls", ""):
        props.append((PREFIX + "cert_days_left", round(cert.days_left, 2)))
        props.append((PREFIX + "cert_not_after", cert.not_after))
    return props


def host_testcase_properties(host: Host, result: HostResult | None) -> list[tuple[str, str]]:
    """Facts for the testcase of a host check: the host, its ports, its status and, for a
    blocked one, the root (the first failing host it depends on)."""
    props = [
        (PREFIX + "host", host.host),
        (PREFIX + "ports", " ".join(map(str, host.ports))),
        (PREFIX + "depends_on", " ".join(host.depends_on)),
    ]
    if result is not None:
        props.append((PREFIX + "host_status", result.status))
        if result.root:
            props.append((PREFIX + "root", HOST_ID_PREFIX + result.root))
    return props


def suite_properties_start(info: RunInfo) -> list[tuple[str, str]]:
    """Suite properties known when the session starts."""
    return [
        (PREFIX + "run_id", info.run_id),
        (PREFIX + "version", info.version),
        (PREFIX + "targets_file", info.targets_name),
        (PREFIX + "targets_sha256", info.targets_sha256),
        (PREFIX + "started", _iso(info.started)),
    ]


def suite_properties_finish(report: RunReport) -> list[tuple[str, str]]:
    """Suite properties known only at the end: duration, the verdict counts and, for a
    run that ended early, why (its checks that did not run are not testcases here)."""
    props = [(PREFIX + "duration_seconds", f"{report.info.duration:.3f}")]
    props += [(f"{PREFIX}checks_{v}", str(n)) for v, n in report.counts().items()]
    down = [h.host.id for h in report.hosts if h.status == "down"]
    if report.hosts:
        props.append((PREFIX + "hosts_down", " ".join(down)))
    if report.info.stopped:
        props += [
            (PREFIX + "stopped", report.info.stopped),
            (PREFIX + "not_run", str(report.not_run())),
        ]
    return props


def finish(text: str, report: RunReport, options: JUnitOptions) -> str:
    """pytest's JUnit XML ``text`` with each check's testcase rewritten from ``report``
    (see the module docstring): its own time, WARN made visible, the chosen classname, and
    under ``options.strict`` no ``<properties>`` inside a testcase. A tier test's testcase
    (``--granularity=tier``) becomes one testcase per check it evaluated, as with
    ``--granularity=check``. Testcases that are not a check of the run (a project's own
    tests, a test that broke before its verdict) keep what pytest wrote, except that strict
    mode moves their properties too.

    The file is read as a stream, one testcase at a time: a tree of the whole file (some
    300,000 elements at 1,000 connection types) took more memory than the rest of the run.
    """
    try:
        return "".join(finish_pieces(text, report, options))
    except ET.ParseError:
        return text  # not pytest's writer's file: leave it as it was written


def finish_pieces(text: str, report: RunReport, options: JUnitOptions) -> Iterator[str]:
    """:func:`finish`'s text in pieces (a testcase or a suite's end each), for a writer
    that streams them to the file; raises ``ET.ParseError`` (possibly after some pieces)
    on a file pytest did not write."""
    rewrite = _Rewrite(report, options)
    parser: Any = ET.XMLPullParser(events=("start", "end"))
    stack: list[ET.Element] = []
    # A suite's start tag carries its counts, known only at its end: its testcases wait
    # as text (pytest's file has the root <testsuites> and one <testsuite> in it).
    pending: list[list[str]] = []
    yield _DECLARATION
    for at in range(0, len(text), _CHUNK):
        parser.feed(text[at : at + _CHUNK])
        for event, elem in parser.read_events():
            if event == "start":
                stack.append(elem)
                pending.append([])
                continue
            depth = len(stack) - 1
            stack.pop()
            own = pending.pop()
            if depth == 2 and elem.tag == "testcase":
                own.append(rewrite.case(elem))
            elif depth == 2:  # the suite's own <properties>, as pytest wrote them
                own.append(ET.tostring(elem, encoding="unicode"))
            elif depth < 2:
                own.insert(0, _start_tag(elem, rewrite.counts(elem)))
                own.append(f"</{elem.tag}>")
                rewrite.suite_done()
            else:
                continue  # inside a testcase: serialized with it
            if not stack:
                yield from own
            else:
                pending[-1].extend(own)
                stack[-1].remove(elem)  # free it now
    parser.close()


_CHUNK: Final = 1 << 16


def _start_tag(elem: ET.Element, counts: dict[str, str]) -> str:
    """``<tag attr="...">`` of ``elem``, with ``counts`` replacing its count attributes."""
    shell = ET.Element(elem.tag, {**elem.attrib, **counts})
    empty = ET.tostring(shell, encoding="unicode")  # <tag a="b" />
    return empty.removesuffix(" />").removesuffix("/>") + ">"


class _Rewrite:
    """The per-testcase rewriting of :func:`finish`."""

    def __init__(self, report: RunReport, options: JUnitOptions) -> None:
        self.options = options
        self.conns = {c.ct.id: c for c in report.connections}
        self.by_key = {
            (c.ct.id, r.check): (r, c.result) for c in report.connections for r in c.records
        }
        self.hosts = {(h.host.id, r.check): (r, h.result) for h in report.hosts for r in h.records}
        self.covered = {
            (c.coverage.id, r.check): (r, coverage_own_seconds(c))
            for c in report.coverage
            for r in c.records
        }
        self._tally = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
        self._expanded = False

    def case(self, case: ET.Element) -> str:
        """The serialized testcase(s) for pytest's ``case``."""
        out: list[str] = []
        for one in self._expand(case):
            self._rewrite(one)
            self._tally["tests"] += 1
            for tag, attr in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
                if one.find(tag) is not None:
                    self._tally[attr] += 1
            out.append(xml_text(one))
        return "".join(out)

    def counts(self, elem: ET.Element) -> dict[str, str]:
        """A suite's count attributes after tier tests were expanded (else as pytest wrote)."""
        if elem.tag != "testsuite" or not self._expanded:
            return {}
        return {k: str(v) for k, v in self._tally.items()}

    def suite_done(self) -> None:
        self._tally = dict.fromkeys(self._tally, 0)
        self._expanded = False

    def _expand(self, case: ET.Element) -> list[ET.Element]:
        """A tier test's testcase as one testcase per check; any other as it is."""
        holder = case.find("properties")
        tier, _, rest = case.get("name", "").partition("[")
        conn = self.conns.get(rest.removesuffix("]"))
        if (
            holder is None
            or conn is None
            or not any(p.get("name") == GROUP_PROPERTY for p in holder.iter("property"))
        ):
            return [case]
        self._expanded = True
        messages = _failure_lines(case)
        extra = [e for e in case if e.tag in ("system-out", "system-err")]
        out: list[ET.Element] = []
        for rec in (r for r in conn.records if r.tier == tier):
            new = _check_case(case.get("classname", ""), rec, conn.ct, conn.result, messages)
            if not out:  # what the tier test printed: on its first check
                new.extend(extra)
            out.append(new)
        return out

    def _rewrite(self, case: ET.Element) -> None:
        holder = case.find("properties")
        props = (
            []
            if holder is None
            else [(p.get("name", ""), p.get("value", "")) for p in holder.iter("property")]
        )
        key = _key(props)
        found: tuple[CheckRecord, float] | None = None
        if key in self.by_key:
            rec, result = self.by_key[key]
            found = rec, own_seconds(result, rec)
        elif key in self.hosts:
            rec, host_result = self.hosts[key]
            found = rec, host_own_seconds(host_result, rec)
        elif key in self.covered:
            found = self.covered[key]
        shape_testcase(case, found, self.options)


def _failure_lines(case: ET.Element) -> dict[str, str]:
    """A tier test's failure message, one line per failed check, by check name."""
    failure = case.find("failure")
    out: dict[str, str] = {}
    if failure is None:
        return out
    for line in failure.get("message", "").splitlines():
        # "[Failed: ]CRIT <id> <check>: <reason>" (plugin.failure_message)
        line = line.removeprefix(FAILED_PREFIX)
        words = line.split(" ", 2)
        if len(words) == 3:
            out.setdefault(words[2].split(":", 1)[0], line)
    return out


def _check_case(
    classname: str,
    rec: CheckRecord,
    ct: ConnectionType,
    result: ProbeResult | None,
    messages: dict[str, str],
) -> ET.Element:
    """One check's testcase, as pytest writes a check test's (before :func:`finish`)."""
    case = ET.Element("testcase", {"classname": classname, "name": rec.nodeid.rpartition("::")[2]})
    props = [*record_properties(rec), *testcase_properties(ct, result, rec.tier, rec.check)]
    _add_properties(case, props)
    if rec.broke_after_verdict:  # as check_case_text writes it
        if rec.verdict == Verdict.SKIP:
            ET.SubElement(
                case, "skipped", {"type": "pytest.skip", "message": rec.reason}
            ).text = rec.reason
        message = rec.broke_after_message
        ET.SubElement(case, "error", {"message": message}).text = message
    elif rec.outcome == "failed":
        text = messages.get(rec.check, rec.failure_text)
        # As pytest writes a pytest.fail(pytrace=False): the message with its prefix.
        ET.SubElement(case, "failure", {"message": FAILED_PREFIX + text}).text = text
    elif rec.outcome in ("skipped", NOT_RUN):
        ET.SubElement(
            case, "skipped", {"type": "pytest.skip", "message": rec.reason}
        ).text = rec.reason
    return case


def shape_testcase(
    case: ET.Element, found: tuple[CheckRecord, float] | None, options: JUnitOptions
) -> None:
    """pop3mon's shape of one ``<testcase>`` (in place), for pytest's file (:func:`finish`)
    and for one written without pytest (:func:`junit_text`): ``found`` is the check's
    record and own time (None: not a check of the run); see the module docstring."""
    holder = case.find("properties")
    props = (
        []
        if holder is None
        else [(p.get("name", ""), p.get("value", "")) for p in holder.iter("property")]
    )
    lines: list[str] = []
    if found is not None:
        rec, seconds = found
        case.set("time", f"{seconds:.3f}")
        if options.classname == "connection":
            case.set("classname", rec.ct)
        if rec.verdict == Verdict.WARN:
            case.set("name", case.get("name", "") + WARN_SUFFIX)
            lines.append(f"WARN: {rec.reason}")
    if options.strict and holder is not None:
        case.remove(holder)
        lines += [f"{name}: {value}" for name, value in props]
    if lines:
        _prepend_output(case, lines)


def coverage_own_seconds(crep: CoverageReport) -> float:
    """A coverage check's own time: its server's one discovery (0 when none ran)."""
    return crep.result.elapsed if crep.result is not None else 0.0


def junit_text(report: RunReport, options: JUnitOptions) -> str:
    """The JUnit XML of ``report`` as one string (see :func:`junit_pieces`)."""
    return "".join(junit_pieces(report, options))


def junit_pieces(
    report: RunReport, options: JUnitOptions, others: Sequence[OtherTest] = ()
) -> Iterator[str]:
    """The JUnit XML of ``report`` written without pytest (``pop3mon merge``, and a run
    with ``--granularity=tier``), a testcase at a time for a writer that streams them to
    the file: what pytest's writer and :func:`finish` make of a run, one testcase per check
    that ran, in tier order. ``classname`` and ``name`` come from each check's pytest node
    id, the properties are the test's and :func:`testcase_properties`, a failure's message
    is ``CRIT <id> <check>: <reason>`` as the ``check`` fixture words it (without the
    history's "new since the last run" note) and a SKIP's is its reason. ``others``, the
    run's tests that are not pop3mon checks, follow as pytest's junitxml writes them (a
    broken one is among them rather than an ERROR record)."""
    cases: list[tuple[CheckRecord, float, list[tuple[str, object]]]] = []
    for hrep in report.hosts:
        host_extra: list[tuple[str, object]] = [*host_testcase_properties(hrep.host, hrep.result)]
        cases += [(r, host_own_seconds(hrep.result, r), host_extra) for r in hrep.records]
    order: dict[str, int] = {tier: i for i, tier in enumerate(TIERS)}
    conns = sorted(
        ((r, c) for c in report.connections for r in c.records),
        key=lambda rc: (order.get(rc[0].tier, len(order)), rc[0].nodeid.split("::")[0]),
    )
    for rec, conn in conns:
        ct_extra: list[tuple[str, object]] = [
            *testcase_properties(conn.ct, conn.result, rec.tier, rec.check)
        ]
        cases.append((rec, own_seconds(conn.result, rec), ct_extra))
    for crep in report.coverage:
        cases += [(r, coverage_own_seconds(crep), []) for r in crep.records]
    told = {o.nodeid for o in others}
    cases += [(r, 0.0, []) for r in report.unattributed if r.nodeid not in told]
    # As in pytest's file: a check that never ran is no testcase.
    cases = [c for c in cases if c[0].outcome != NOT_RUN]
    errors = sum(1 for rec, _, _ in cases if rec.junit_error)
    failures = sum(1 for rec, _, _ in cases if not rec.junit_error and rec.outcome == "failed")
    skipped = sum(1 for rec, _, _ in cases if not rec.junit_error and rec.outcome == "skipped")
    # A skip whose test broke after it: junitxml counts the skip and the error.
    skipped += sum(
        1 for rec, _, _ in cases if rec.broke_after_verdict and rec.verdict == Verdict.SKIP
    )
    # A failed call with a teardown error is two testcases but one test, as junitxml
    # writes and counts it.
    doubles = sum(1 for o in others if o.then is not None)
    others = [t for o in others for t in (o, o.then) if t is not None]
    # A skip with a teardown error is one testcase that junitxml counts as two tests, and
    # so is a check whose test broke after its verdict (its pass or skip, then the error).
    doubles -= sum(1 for o in others if o.skip_then_error is not None)
    doubles -= sum(1 for rec, _, _ in cases if rec.broke_after_verdict)
    errors += sum(1 for o in others if o.outcome == "error" or o.skip_then_error is not None)
    failures += sum(1 for o in others if o.outcome == "failed")
    skipped += sum(1 for o in others if o.outcome == "skipped")
    yield _DECLARATION
    yield '<testsuites name="pytest tests">'  # as pytest's junitxml names it
    suite = ET.Element(
        "testsuite",
        {
            "name": options.suite,
            "errors": str(errors),
            "failures": str(failures),
            "skipped": str(skipped),
            "tests": str(len(cases) + len(others) - doubles),
            "time": f"{report.info.duration:.3f}",
            "timestamp": _iso(report.info.started),
            **({"hostname": options.hostname} if options.hostname else {}),
        },
    )
    yield _open_tag(suite) + ">"
    props = ET.Element("properties")
    for name, value in suite_properties_start(report.info) + suite_properties_finish(report):
        ET.SubElement(props, "property", name=name, value=value)
    yield xml_text(props)
    for rec, seconds, extra in cases:
        yield check_case_text(rec, seconds, extra, options)
    for other in others:
        classname, _, name = _split_nodeid(other.nodeid)
        case = ET.Element("testcase", classname=classname, name=name, time=f"{other.seconds:.3f}")
        _add_properties(case, other.properties)
        if other.outcome in ("failed", "error"):
            tag = "failure" if other.outcome == "failed" else "error"
            ET.SubElement(case, tag, message=other.message).text = other.text
        elif other.outcome == "skipped":
            typed = {"type": other.skip_type} if other.skip_type else {}
            ET.SubElement(case, "skipped", {**typed, "message": other.message}).text = other.text
            if other.skip_then_error is not None:
                message, text = other.skip_then_error
                ET.SubElement(case, "error", message=message).text = text
        shape_testcase(case, None, options)  # --junit-strict: properties as output lines
        yield xml_text(case)
    yield "</testsuite></testsuites>"


def check_case_text(
    rec: CheckRecord, seconds: float, extra: Sequence[tuple[str, object]], options: JUnitOptions
) -> str:
    """One check's ``<testcase>`` as :func:`junit_pieces` writes it: the bytes
    :func:`xml_text` gives for the element pytest's writer would make of the check's test
    and :func:`shape_testcase` would shape (tests compare the two), written as text
    directly. At 20,000 testcases of some 14 elements each, building and walking the
    elements took two thirds of the JUnit writer's time."""
    classname, _, name = _split_nodeid(rec.nodeid)
    if options.classname == "connection":
        classname = rec.ct
    lines: list[str] = []
    if rec.verdict == Verdict.WARN:
        name += WARN_SUFFIX
        lines.append(f"WARN: {rec.reason}")
    props = [*record_properties(rec), *extra]
    body: list[str] = []
    if options.strict:
        lines += [f"{key}: {value}" for key, value in props]
    elif props:
        body.append("<properties>")
        body += [
            f'<property name="{_attrib(key)}" value="{_attrib(str(value))}" />'
            for key, value in props
        ]
        body.append("</properties>")
    if rec.verdict == Verdict.ERROR:
        # A test that broke: junitxml's <error> (set-up, teardown) or <failure> (its body).
        tag = "error" if rec.junit_error else "failure"
        body.append(_leaf(tag, f' message="{_attrib(rec.reason)}"', rec.error_text))
    elif rec.broke_after_verdict:  # junitxml's error, "failed on teardown with ..."
        if rec.verdict == Verdict.SKIP:  # after the skip, in the same testcase
            attrs = f' type="pytest.skip" message="{_attrib(rec.reason)}"'
            body.append(_leaf("skipped", attrs, rec.reason))
        message = rec.broke_after_message
        body.append(_leaf("error", f' message="{_attrib(message)}"', message))
    elif rec.outcome == "failed":
        text = rec.failure_text
        body.append(_leaf("failure", f' message="{_attrib(FAILED_PREFIX + text)}"', text))
    elif rec.outcome == "skipped":
        attrs = f' type="pytest.skip" message="{_attrib(rec.reason)}"'
        body.append(_leaf("skipped", attrs, rec.reason))
    if lines:
        body.append(_leaf("system-out", "", "\n".join(lines) + "\n"))
    head = f'<testcase classname="{_attrib(classname)}" name="{_attrib(name)}" time="{seconds:.3f}"'
    text = f"{head}>{''.join(body)}</testcase>" if body else head + " />"
    return _NOT_XML.sub(_not_xml, text) if _NOT_XML.search(text) is not None else text


def _leaf(tag: str, attrs: str, text: str) -> str:
    """An element with attributes and text only, as :func:`xml_text` writes it."""
    return f"<{tag}{attrs}>{_cdata(text)}</{tag}>" if text else f"<{tag}{attrs} />"


def _add_properties(case: ET.Element, props: Sequence[tuple[str, object]]) -> None:
    """A testcase's ``<properties>`` (none without any), as junitxml writes them."""
    if props:
        holder = ET.SubElement(case, "properties")
        for name, value in props:
            ET.SubElement(holder, "property", {"name": name, "value": str(value)})


def xml_text(elem: ET.Element) -> str:
    """``ET.tostring(elem, encoding="unicode")`` for the namespace-free elements written
    here, without its per-call namespace pass over the tree (a third of the JUnit
    writer's time at 20,000 testcases), and with the characters XML 1.0 cannot hold
    written as ``#xNN`` (ElementTree writes them raw, and the file would not parse);
    tests compare the two."""
    out: list[str] = []
    _serialize(elem, out)
    text = "".join(out)
    # Once over the whole element: "#xNN" holds nothing the escapes above would touch.
    return _NOT_XML.sub(_not_xml, text) if _NOT_XML.search(text) is not None else text


def _serialize(elem: ET.Element, out: list[str]) -> None:
    tag, text = elem.tag, elem.text
    head = _open_tag(elem)
    if text or len(elem):
        out.append(head + ">")
        if text:
            out.append(_cdata(text))
        for child in elem:
            _serialize(child, out)
        out.append(f"</{tag}>")
    else:
        out.append(head + " />")
    if elem.tail:
        out.append(_cdata(elem.tail))


def _open_tag(elem: ET.Element) -> str:
    """``<tag a="v"``, unterminated."""
    return "".join([f"<{elem.tag}", *[f' {k}="{_attrib(v)}"' for k, v in elem.attrib.items()]])


#: Characters XML 1.0 does not allow (a project's own test may print ESC or BEL): written
#: as ``#xNN``, as pytest's junitxml writes them, so the file always parses. Listed as
#: what is excluded, not as the complement of what is allowed: re compiles the negated
#: class over all of Unicode in ~10 ms, a sixtieth of a one-connection-type run.
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def _not_xml(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"#x{code:02X}" if code <= 0xFF else f"#x{code:04X}"


#: What ElementTree escapes in text, and in an attribute value (in this order).
_TEXT_ESCAPES: Final = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))
_ATTRIB_ESCAPES: Final = (
    *_TEXT_ESCAPES,
    ('"', "&quot;"),
    ("\r", "&#13;"),
    ("\n", "&#10;"),
    ("\t", "&#09;"),
)


def _escaped(text: str, table: tuple[tuple[str, str], ...]) -> str:
    for raw, entity in table:
        if raw in text:
            text = text.replace(raw, entity)
    return text


def _cdata(text: str) -> str:
    return _escaped(text, _TEXT_ESCAPES)


@functools.lru_cache(maxsize=65536)
def _attrib(text: str) -> str:
    # Cached: a run's testcases repeat the same few hundred property values (ids, hosts,
    # tiers, verdicts, reasons) tens of thousands of times.
    return _escaped(text, _ATTRIB_ESCAPES)


def _split_nodeid(nodeid: str) -> tuple[str, str, str]:
    """(classname, "", name) as pytest's junitxml makes them of a node id
    (``mangle_test_address``): ``tests_targets/test_tls.py::test_expiry[x]`` →
    ``tests_targets.test_tls``, ``test_expiry[x]``; parameters (which may hold "::")
    stay whole, and a file's own node id (a collection error) is all name."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = names[0].removesuffix(".py").replace("/", ".")
    names[-1] += bracket + params
    return ".".join(names[:-1]), "", names[-1]


def _key(props: Iterable[tuple[str, str]]) -> tuple[str, str]:
    found = dict(props)
    return found.get(PREFIX + "ct", ""), found.get(PREFIX + "check", "")


def _prepend_output(case: ET.Element, lines: list[str]) -> None:
    """Put ``lines`` first in the testcase's ``<system-out>`` (pytest writes one there with
    ``junit_logging``; readers take the first)."""
    text = "\n".join(lines) + "\n"
    out = case.find("system-out")
    if out is None:
        out = ET.SubElement(case, "system-out")
        out.text = text
    else:
        out.text = text + (out.text or "")
