"""The suite driven through pytest's own ``pytester``, in a project laid out from scratch.

``tests/test_suite.py`` runs the repository itself in a subprocess; this module shows the
plugin and the tier tests working in any pytest project (a fresh ``pytester`` directory with
its own ``conftest.py``, ``pytest.ini`` and a copy of ``tests_targets/``), against the fault
server, and checks outcomes the way pytest's own plugin tests do.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Imported here, before any in-process run: pytester takes out of sys.modules whatever an
# inline_run imported, and PyYAML imported a second time beside its C extension composes
# nodes the second copy does not recognise (this module alone failed so; the whole suite
# imported yaml earlier).
import yaml  # noqa: F401

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.faultserver import FaultServer

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "pytester-SENTINEL-9e41"


@pytest.fixture
def project(
    pytester: pytest.Pytester, lab_certs: LabCerts, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[pytest.Pytester, FaultServer, FaultServer]]:
    """A pytest project that uses pop3mon only through its plugin and tier tests."""
    pytester.makeconftest('pytest_plugins = ["pop3mon.plugin"]\n')
    pytester.makeini(
        f"[pytest]\ntestpaths = tests_targets\npythonpath = {ROOT / 'plugins'}\n"
        "addopts = -p no:hypothesispytest -p no:benchmark -p no:cacheprovider\n"
    )
    tiers = pytester.mkdir("tests_targets")
    for module in sorted((ROOT / "tests_targets").glob("test_*.py")):
        (tiers / module.name).write_text(module.read_text(encoding="utf-8"), encoding="utf-8")
    with (
        FaultServer(
            "healthy",
            users={"alice": PASSWORD},
            certfile=lab_certs.valid.cert,
            keyfile=lab_certs.valid.key,
            implicit_tls=True,
        ) as good,
        FaultServer("no-stls", users={"alice": PASSWORD}) as nostls,
    ):
        pytester.path.joinpath("targets.yaml").write_text(
            "servers:\n"
            "  - name: lab\n"
            "    host: localhost\n"
            f"    ca_file: {lab_certs.ca_file}\n"
            "    account: {username: alice, password_env: PYTESTER_PW}\n"
            "    connections:\n"
            f"      - {{id: good, port: {good.port}, security: tls}}\n"
            f"      - {{id: nostls, port: {nostls.port}, security: starttls}}\n",
            encoding="utf-8",
        )
        monkeypatch.setenv("PYTESTER_PW", PASSWORD)
        yield pytester, good, nostls


Project = tuple[pytest.Pytester, FaultServer, FaultServer]


def test_plugin_works_in_a_fresh_project(project: Project) -> None:
    pytester, good, nostls = project
    # --strict-markers: the project declares no tier markers, pop3mon does.
    result = pytester.runpytest_subprocess("-rA", "--strict-markers")
    assert "PytestUnknownMarkWarning" not in result.stdout.str() + result.stderr.str()
    # 20 checks per connection type (the 4 drift checks SKIP: no history, no baseline; a
    # POP3 connection type has no SMTP relay check at all); the STLS-less server fails its
    # STLS check only and everything that needs TLS is skipped naming it. Plus the host
    # check of the server (two connection types): its TCP check passes (PING is off).
    result.assert_outcomes(passed=18, failed=1, skipped=22)
    result.stdout.fnmatch_lines(
        [
            "*CRIT nostls stls: server did not offer STLS*",
            "*pop3mon summary*",
            "CRIT (1 connection type, 1 root cause):",
            "  nostls tls/stls: server did not offer STLS*",
            "*13 dependent checks skipped because of it",
            "hosts: 1 up",
            "OK: 1 connection type (-v lists them)",
        ]
    )
    assert PASSWORD not in result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert good.logins == 1, "one login per connection type per run"
    assert nostls.logins == 0 and b"PASS" not in nostls.plaintext_bytes()


def test_bad_targets_file_is_a_usage_error(project: Project) -> None:
    pytester = project[0]
    pytester.path.joinpath("targets.yaml").write_text(
        "servers:\n  - name: lab\n    host: localhost\n    connections:\n"
        "      - {port: 995, security: startls}\n",
        encoding="utf-8",
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*targets.yaml:5: *security*did you mean 'starttls'*"])


def _merge(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pop3mon merge ARGS`` run in ``cwd`` (the pytester project) as a process."""
    return subprocess.run(
        [sys.executable, "-m", "pop3mon.cli", "merge", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _own_cases(junit: Path) -> dict[str, Any]:
    """The testcases of a project's own tests (not tests_targets') in ``junit``, each as
    (attributes but time, [(tag, attributes, text)] of its children) by name."""
    import xml.etree.ElementTree as ET

    root = ET.parse(junit).getroot()
    out: dict[str, Any] = {}
    for case in root.iter("testcase"):
        if (case.get("classname") or "").startswith("tests_targets"):
            continue
        attrs = {k: v for k, v in case.attrib.items() if k != "time"}
        children = [
            (e.tag, dict(e.attrib), [dict(p.attrib) for p in e] or (e.text or "").strip())
            for e in case
        ]
        name = case.get("name", "")
        out[f"{name}#2" if name in out else name] = (attrs, children)  # junitxml's second
    return out


def test_a_check_test_that_breaks_after_its_verdict_is_reported_as_junitxml_does(
    project: Project,
) -> None:
    """A fixture of the project's raises in its teardown, after a check test recorded its
    verdict: the verdict stands and the test failed (results.json: ``outcome`` failed,
    ``broke_in`` teardown), and the junit.xml pop3mon writes from its run model shows the
    error and counts the tests exactly as pytest's junitxml does (it was lost: passed)."""
    pytester = project[0]
    pytester.makeconftest(
        'import pytest\n\npytest_plugins = ["pop3mon.plugin"]\n\n\n'
        "@pytest.fixture(autouse=True)\n"
        "def breaks_after(request):\n"
        "    yield\n"
        '    if request.node.name.startswith(("test_tcp[", "test_stls[good")):\n'
        '        raise RuntimeError("teardown broke")\n\n\n'
        "@pytest.hookimpl(wrapper=True)\n"
        "def pytest_runtest_teardown(item):\n"  # a tier test has no fixtures to break
        "    yield\n"
        '    if item.name == "connectivity[good]":\n'
        '        raise RuntimeError("teardown broke")\n'
    )
    theirs = pytester.runpytest_subprocess("--junitxml=theirs.xml", "--reports-dir=theirs")
    ours = pytester.runpytest_subprocess("--reports-dir=ours")
    assert theirs.ret == ours.ret == pytest.ExitCode.TESTS_FAILED

    def suite(path: Path) -> tuple[dict[str, str | None], dict[str, list[tuple[str, str]]]]:
        root = ET.parse(path).getroot()
        top = root if root.tag == "testsuite" else root.find("testsuite")
        assert top is not None
        counts = {k: top.get(k) for k in ("tests", "errors", "failures", "skipped")}
        cases = {
            case.get("name", ""): [
                (e.tag, e.get("message", "")) for e in case if e.tag != "properties"
            ]
            for case in top.iter("testcase")
            if case.get("name", "").startswith(("test_tcp[", "test_stls[good"))
        }
        return counts, cases

    mine, junitxml = (
        suite(pytester.path / "ours" / "junit.xml"),
        suite(pytester.path / "theirs.xml"),
    )
    assert mine == junitxml
    counts, cases = mine
    assert counts["errors"] == "3" and len(cases) == 3
    broke = ("error", 'failed on teardown with "RuntimeError: teardown broke"')
    assert all(children[-1] == broke for children in cases.values())
    # An implicit-TLS connection has no STLS: a skip, then the error, in one testcase.
    assert [tag for tag, _ in cases["test_stls[good]"]] == ["skipped", "error"]
    document = json.loads((pytester.path / "ours" / "results.json").read_text("utf-8"))
    tcp = [k for c in document["connections"] for k in c["checks"] if k["check"] == "tcp"]
    assert [(k["verdict"], k["outcome"], k.get("broke_in")) for k in tcp] == [
        ("OK", "failed", "teardown")
    ] * 2
    # The run failed (pytest's exit status), and so does a merge of it that is asked to.
    merged = _merge(pytester.path, "--out=merged", "--exit-status", "ours")
    assert merged.returncode == 1, merged.stderr
    assert "3 check tests a fixture of yours broke after the verdict" in merged.stderr
    # The merge writes what the run wrote: results.json keeps junitxml's message.
    assert suite(pytester.path / "merged" / "junit.xml") == mine
    # With one test per tier, a --junitxml file pop3mon rewrites shows the same errors.
    pytester.runpytest_subprocess("--granularity=tier", "--junitxml=tier.xml", "--reports-dir=t")
    tier = ET.parse(pytester.path / "tier.xml").getroot()
    errors = [e.get("message") for e in tier.iter("error")]
    assert broke[1] in errors, errors


def test_tier_granularity_reports_the_projects_own_tests(project: Project) -> None:
    """With ``--granularity=tier`` pop3mon writes junit.xml and report.html itself (no
    pytest-html, no junitxml): a project's own tests run beside the tier tests are in both,
    exactly as pytest's junitxml lists them in a default run (passed, failed, skipped,
    xfail, broken in set-up, with their ``record_property`` values, and the files that
    failed or skipped while collected); the suite has junitxml's names and hostname; the
    tier tests' checks are there one testcase each, and the password nowhere."""
    import xml.etree.ElementTree as ET

    pytester = project[0]
    pytester.makepyfile(
        test_own="""
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture broke")

        def test_passes(record_property):
            record_property("build", 42)

        def test_fails():
            assert 1 == 2, "own failure"

        def test_skips():
            pytest.skip("own reason")

        def test_errors(broken):
            pass

        @pytest.mark.xfail(reason="known bug")
        def test_xfails():
            assert False

        @pytest.fixture
        def check():  # the project's own fixture of that name (pytest-check has one)
            return bool

        def test_own_check_passes(check):
            assert check(1)

        def test_own_check_fails(check):
            assert check(0), "own check"

        @pytest.fixture
        def breaks_after():
            yield
            raise RuntimeError("teardown broke")

        def test_fails_then_teardown_breaks(breaks_after, request):
            request.node.user_properties.append(("stage", "call"))  # no address to differ
            assert False, "call failed"

        def test_skips_then_teardown_breaks(breaks_after):
            pytest.skip("skipped first")
        """,
        test_unimportable="import module_that_is_not_there\n",
        test_skipped_module=(
            'import pytest\npytest.skip("not on this host", allow_module_level=True)\n'
        ),
    )
    files = ("tests_targets", "test_own.py", "test_unimportable.py", "test_skipped_module.py")
    keep = "--continue-on-collection-errors"
    default = pytester.runpytest_subprocess(keep, "--reports-dir=default", *files)
    result = pytester.runpytest_subprocess(keep, "--granularity=tier", *files)
    assert result.ret == default.ret == pytest.ExitCode.TESTS_FAILED
    reports = pytester.path / "reports"
    own = _own_cases(reports / "junit.xml")
    assert own == _own_cases(pytester.path / "default" / "junit.xml")
    assert sorted(own) == [
        "test_errors",
        "test_fails",
        "test_fails_then_teardown_breaks",
        "test_fails_then_teardown_breaks#2",
        "test_own_check_fails",
        "test_own_check_passes",
        "test_passes",
        "test_skipped_module",
        "test_skips",
        "test_skips_then_teardown_breaks",
        "test_unimportable",
        "test_xfails",
    ]
    for run in (default, result):
        out = run.stdout.str()
        assert "not run" not in out and "ended early" not in out, out[-2000:]
    # --junit-strict: the same in both modes, and the junit-10 schema holds in both.
    import xmlschema

    schema = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit-10.xsd"))
    strict = {}
    for mode in ("check", "tier"):
        directory = pytester.path / f"strict-{mode}"
        pytester.runpytest_subprocess(
            keep, "--junit-strict", f"--granularity={mode}", f"--reports-dir={directory}", *files
        )
        schema.validate(str(directory / "junit.xml"))
        strict[mode] = _own_cases(directory / "junit.xml")
    assert strict["tier"] == strict["check"]
    assert [c[0] for c in strict["tier"]["test_passes"][1]] == ["system-out"]
    assert own["test_passes"][1] == [("properties", {}, [{"name": "build", "value": "42"}])]
    # A failed call and a broken teardown: two testcases, the second the error.
    first = own["test_fails_then_teardown_breaks"][1]
    assert [c[0] for c in first] == ["properties", "failure"]
    second = own["test_fails_then_teardown_breaks#2"][1]
    assert [c[0] for c in second] == ["properties", "error"]
    assert second[1][1]["message"] == 'failed on teardown with "RuntimeError: teardown broke"'
    # A skip and a broken teardown: one testcase with both.
    both = own["test_skips_then_teardown_breaks"][1]
    assert [c[0] for c in both] == ["skipped", "error"], both
    assert both[1][1]["message"] == 'failed on teardown with "RuntimeError: teardown broke"'
    page = (reports / "report.html").read_text("utf-8")
    assert page.count("test_own.py::test_skips_then_teardown_breaks") == 2  # skipped, error
    # The project's tests are not pop3mon checks: no broken-check ERROR in pop3mon's
    # summary or results, however they failed.
    for run, directory in ((default, "default"), (result, "reports")):
        for own_check in ("own/fails", "own/errors", "own/own_check_fails"):
            assert own_check not in run.stdout.str()
        document = json.loads((pytester.path / directory / "results.json").read_text("utf-8"))
        assert document["unattributed_checks"] == []
    assert own["test_unimportable"][1][0][:2] == ("error", {"message": "collection failure"})
    assert "module_that_is_not_there" in own["test_unimportable"][1][0][2]
    assert own["test_skipped_module"][1][0][:2] == ("skipped", {"message": "collection skipped"})
    xfail = own["test_xfails"][1][0]
    assert xfail[:2] == ("skipped", {"type": "pytest.xfail", "message": "known bug"})
    assert "own failure" in own["test_fails"][1][0][2]
    assert own["test_skips"][1][0][1]["message"] == "own reason"
    assert "fixture broke" in own["test_errors"][1][0][1]["message"]

    root = ET.parse(reports / "junit.xml").getroot()
    theirs = ET.parse(pytester.path / "default" / "junit.xml").getroot()
    suite, their_suite = root.find("testsuite"), theirs.find("testsuite")
    assert suite is not None and their_suite is not None
    assert root.get("name") == theirs.get("name") == "pytest tests"
    assert suite.get("hostname") == their_suite.get("hostname") != ""
    # Each check of the tier tests is a testcase of its own, and the counts add up.
    doc = json.loads((reports / "results.json").read_text(encoding="utf-8"))
    checks = sum(1 for c in doc["connections"] for _ in c["checks"])
    checks += sum(1 for h in doc["hosts"] for _ in h["checks"])
    cases = list(root.iter("testcase"))
    assert len(cases) == checks + len(own)
    # One test in two testcases (a failure, then the teardown's error) and, as junitxml
    # counts them, two tests in one (a skip, then the teardown's error).
    assert int(suite.get("tests", "")) == len(cases) - 1 + 1
    for count in ("errors", "failures", "skipped", "tests"):
        assert suite.get(count) == their_suite.get(count), count
    assert int(suite.get("errors", "")) == sum(1 for c in cases if c.find("error") is not None)
    page = (reports / "report.html").read_text(encoding="utf-8")
    assert 'id="pop3mon-other-tests"' in page and "test_own.py::test_fails" in page
    assert "test_unimportable.py" in page
    for name in ("junit.xml", "report.html", "results.json", "metrics.prom"):
        assert PASSWORD not in (reports / name).read_text(encoding="utf-8"), name


def test_a_broken_tier_test_is_an_error_and_the_run_still_ends(project: Project) -> None:
    """A tier test that breaks before its verdicts (injected: its ``runtest`` raises) is
    one ERROR naming the exception in every report (in junit.xml a failure, as junitxml
    counts an exception in a test's body); its checks are "not run" because of
    it, and the run is not said to have ended early."""
    import json
    import xml.etree.ElementTree as ET

    pytester = project[0]
    pytester.makeconftest(
        'pytest_plugins = ["pop3mon.plugin"]\n'
        "from pop3mon.granularity import TierItem\n"
        "_real = TierItem.runtest\n"
        "def _broken(self):\n"
        "    if self.tier == 'mailbox' and self.ct == 'good':\n"
        "        raise RuntimeError('tier test broke: boom')\n"
        "    return _real(self)\n"
        "TierItem.runtest = _broken\n"
    )
    result = pytester.runpytest_subprocess("--granularity=tier")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    reports = pytester.path / "reports"
    doc = json.loads((reports / "results.json").read_text(encoding="utf-8"))
    assert not doc["run"].get("stopped"), doc["run"]
    good = next(c for c in doc["connections"] if c["id"] == "good")
    errors = [k for k in good["checks"] if k["verdict"] == "ERROR"]
    assert [e["reason"] for e in errors] == ["RuntimeError: tier test broke: boom"]
    skipped = [k for k in good["checks"] if k["tier"] == "mailbox" and k["outcome"] == "not run"]
    assert skipped and all("its tier test" in k["reason"] for k in skipped), good["checks"]
    # junit.xml counts it as junitxml counts an exception in a test's body: a failure,
    # with the traceback.
    root = ET.parse(reports / "junit.xml").getroot()
    broke = [e for e in root.iter("failure") if "boom" in (e.get("message") or "")]
    assert len(broke) == 1 and "Traceback" not in (broke[0].get("message") or "")
    assert "raise RuntimeError" in (broke[0].text or "")
    assert not [e for e in root.iter("error") if "boom" in (e.get("message") or "")]
    assert "was ended early" not in result.stdout.str()


def test_tier_tests_keep_pytests_protocol_where_it_is_needed(project: Project) -> None:
    """The lean protocol of tier tests never changes what a run does: a skip mark a
    project adds still skips (and a project's own phase hook still runs), ``--setup-plan``
    still logs in nowhere, a project's own report hook still sees every tier test's report,
    and ``-p no:html`` still writes no page."""
    pytester, good, nostls = project
    pytester.makeconftest(_MAINTENANCE_SKIP)
    result = pytester.runpytest_subprocess("--granularity=tier", "-rs")
    # Every failing check was nostls's: skipped by the mark, as with --granularity=check.
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*maintenance window*"])
    assert nostls.logins == 0

    pytester.makeconftest(
        'pytest_plugins = ["pop3mon.plugin"]\n'
        "SEEN = []\n"
        "def pytest_runtest_setup(item):\n"
        "    SEEN.append(item.nodeid)\n"
        "def pytest_sessionfinish(session):\n"
        "    print('phase hook saw', sum('::tls[' in n for n in SEEN), 'tests')\n" + _SKIP_LOCATIONS
    )
    full = pytester.runpytest_subprocess("--granularity=tier", "-s")
    seen = re.findall(r"phase hook saw (\d+) tests", full.stdout.str())
    assert seen and int(seen[-1]) > 0, full.stdout.str()[-2000:]
    # A skip's location, which only a report's reader sees, is the one pytest makes.
    pytester.makeconftest('pytest_plugins = ["pop3mon.plugin"]\n' + _SKIP_LOCATIONS)
    lean = pytester.runpytest_subprocess("--granularity=tier", "-s")
    where = [_skip_locations(run) for run in (lean, full)]
    assert where[0] and where[0] == where[1]

    pytester.makeconftest(
        'pytest_plugins = ["pop3mon.plugin"]\n'
        "import json, pytest\n"
        "MADE = []\n"
        "@pytest.hookimpl(wrapper=True)\n"
        "def pytest_runtest_makereport(item, call):\n"
        "    report = yield\n"
        "    MADE.append(item.nodeid)\n"
        "    json.dumps(report.user_properties)  # what such a hook may do with them\n"
        "    return report\n"
        "def pytest_sessionfinish(session):\n"
        "    print('report hook saw', sum('::tls[' in n for n in MADE), 'tests')\n"
    )
    result = pytester.runpytest_subprocess("--granularity=tier", "-s")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]
    seen = re.findall(r"report hook saw (\d+) tests", result.stdout.str())
    assert seen and int(seen[-1]) > 0, result.stdout.str()[-2000:]

    pytester.makeconftest('pytest_plugins = ["pop3mon.plugin"]\n')
    before = good.logins
    result = pytester.runpytest_subprocess("--granularity=tier", "--setup-plan")
    assert good.logins == before, "--setup-plan must not probe"

    reports = pytester.path / "off"
    result = pytester.runpytest_subprocess(
        "--granularity=tier", "-p", "no:html", f"--reports-dir={reports}"
    )
    assert (reports / "junit.xml").exists() and not (reports / "report.html").exists()


#: A conftest that marks every test of the nostls connection type skip.
_MAINTENANCE_SKIP = (
    'pytest_plugins = ["pop3mon.plugin"]\n'
    "import pytest\n"
    "def pytest_collection_modifyitems(items):\n"
    "    for item in items:\n"
    "        if 'nostls' in item.nodeid:\n"
    "            item.add_marker(pytest.mark.skip(reason='maintenance window'))\n"
)


#: A conftest that counts, per phase, the reports of pop3mon's check tests and how many of
#: them pytest's own phase hooks made (they set PYTEST_CURRENT_TEST to the test's node id
#: while a phase runs; the value the outer test run left in the environment is another).
_PHASE_COUNTER = (
    'pytest_plugins = ["pop3mon.plugin"]\n'
    "import collections, os\n"
    "SEEN = collections.Counter()\n"
    "def pytest_runtest_logreport(report):\n"
    "    if 'pop3mon_check' in report.keywords:\n"
    "        SEEN[report.when] += 1\n"
    "        current = os.environ.get('PYTEST_CURRENT_TEST', '')\n"
    "        SEEN['pytest-phase'] += current.startswith(report.nodeid + ' (')\n"
    "def pytest_sessionfinish(session):\n"
    "    print('phases', dict(sorted(SEEN.items())))\n"
)


#: A conftest's share that prints where each skipped test's report says it skipped (what
#: pytest's -rs shows; pop3mon's summary names the reason instead). It reads the reports
#: the terminal keeps, so the lean protocol's plain reports stay in use.
_SKIP_LOCATIONS = (
    "def pytest_terminal_summary(terminalreporter):\n"
    "    for report in terminalreporter.stats.get('skipped', []):\n"
    "        print('skipped-at', report.nodeid, report.longrepr)\n"
)


def _skip_locations(result: pytest.RunResult) -> list[str]:
    return sorted(line for line in result.stdout.lines if line.startswith("skipped-at "))


def _phases(result: pytest.RunResult) -> dict[str, int]:
    found = re.findall(r"phases (\{.*\})$", result.stdout.str(), re.M)
    assert found, result.stdout.str()[-3000:]
    counts: dict[str, int] = json.loads(found[-1].replace("'", '"'))
    return counts


def _junit_cases(path: Path) -> list[tuple[str, str, str]]:
    import xml.etree.ElementTree as ET

    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = next((e for e in case if e.tag in ("failure", "skipped", "error")), None)
        message = "" if outcome is None else f"{outcome.tag}: {outcome.get('message')}"
        out.append((case.get("classname", ""), case.get("name", ""), message))
    return sorted(out)


def test_check_tests_run_lean_only_where_nothing_could_tell(project: Project) -> None:
    """By default (one test per check) pop3mon's check tests skip pytest's fixture,
    capture and phase machinery, with the same three reports per test, the same outcomes,
    lines and junit.xml as pytest's whole protocol gives; that protocol stays where a
    project's phase hook, an autouse fixture of its own, a skip mark it adds, --setup-show
    or --setup-plan needs it."""
    pytester, good, nostls = project
    pytester.makeconftest(_PHASE_COUNTER)
    lean = pytester.runpytest_subprocess("--granularity=check", "-rA", "-s", "--reports-dir=lean")
    tests = 41  # as test_plugin_works_in_a_fresh_project counts them
    lean.assert_outcomes(passed=18, failed=1, skipped=22)
    assert _phases(lean) == {"setup": tests, "call": tests, "teardown": tests, "pytest-phase": 0}

    # A phase hook of the project's own: pytest's whole protocol, and the hook sees all.
    pytester.makeconftest(
        _PHASE_COUNTER
        + _SKIP_LOCATIONS
        + "SET_UP = []\n"
        + "def pytest_runtest_setup(item):\n    SET_UP.append(item.nodeid)\n"
        + "def pytest_unconfigure():\n    print('set up', len(SET_UP))\n"
    )
    full = pytester.runpytest_subprocess("--granularity=check", "-rA", "-s", "--reports-dir=full")
    assert _phases(full) == {
        "setup": tests,
        "call": tests,
        "teardown": tests,
        "pytest-phase": 2 * tests,  # pytest unsets it before the teardown's report
    }
    full.stdout.fnmatch_lines([f"set up {tests}"])
    # With nobody but pytest and pop3mon listening to reports, a passed set-up or teardown
    # is not reported at all (as with tier tests); --durations still gets all three. Each
    # test's location (worked out once per function) is the one pytest works out.
    pytester.makeconftest(
        'pytest_plugins = ["pop3mon.plugin"]\n'
        "from _pytest.nodes import Item\n"
        "ITEMS = []\n"
        "def pytest_collection_finish(session):\n    ITEMS.extend(session.items)\n"
        "def pytest_sessionfinish(session):\n"
        "    kept = [i for i in ITEMS if 'location' in i.__dict__]\n"
        "    same = sum(i.location == Item.location.func(i) for i in kept)\n"
        "    print('locations', len(kept), same)\n" + _SKIP_LOCATIONS
    )
    bare = pytester.runpytest_subprocess("--granularity=check", "-rA", "-s", "--reports-dir=bare")
    bare.stdout.fnmatch_lines([f"*locations {tests} {tests}*"])
    timed = pytester.runpytest_subprocess("--granularity=check", "--durations=0", "-vv")
    timed.stdout.fnmatch_lines(
        ["*s setup    tests_targets/test_connectivity.py::test_dns[[]good[]]"]
    )
    # Nothing else tells them apart: outcomes, the short summary, junit.xml.
    lines = [
        [line for line in run.stdout.lines if re.match(r"(PASSED|FAILED|SKIPPED|ERROR) ", line)]
        for run in (lean, full, bare)
    ]
    assert lines[0] and lines[0] == lines[1] == lines[2]
    # A skip's location, which only a report's reader sees, is the one pytest makes.
    where = [_skip_locations(run) for run in (full, bare)]
    assert where[0] and where[0] == where[1]
    cases = [_junit_cases(pytester.path / d / "junit.xml") for d in ("lean", "full", "bare")]
    assert len(cases[0]) == tests and cases[0] == cases[1] == cases[2]
    assert any("CRIT nostls stls" in message for _, _, message in cases[0])

    # A makereport hook of the project's own still sees every phase's report.
    pytester.makeconftest(
        'pytest_plugins = ["pop3mon.plugin"]\n'
        "import collections, pytest\n"
        "MADE = collections.Counter()\n"
        "@pytest.hookimpl(wrapper=True)\n"
        "def pytest_runtest_makereport(item, call):\n"
        "    report = yield\n"
        "    MADE[report.when] += 1\n"
        "    return report\n"
        "def pytest_unconfigure():\n    print('made', sorted(MADE.items()))\n"
    )
    made = pytester.runpytest_subprocess("--granularity=check", "-s")
    made.stdout.fnmatch_lines(
        [f"*made [[]('call', {tests}), ('setup', {tests}), ('teardown', {tests})[]]*"]
    )

    # An autouse fixture of the project's own runs for every check test.
    pytester.makeconftest(
        _PHASE_COUNTER
        + "import pytest\n"
        + "USED = []\n"
        + "@pytest.fixture(autouse=True)\n"
        + "def mine(request):\n    USED.append(request.node.nodeid)\n"
        + "def pytest_unconfigure():\n    print('autouse', len(USED))\n"
    )
    result = pytester.runpytest_subprocess("--granularity=check", "-s")
    result.stdout.fnmatch_lines([f"autouse {tests}"])

    # A skip mark the project adds still skips (and the skipped server is never probed).
    pytester.makeconftest(_MAINTENANCE_SKIP)
    logins = nostls.logins
    result = pytester.runpytest_subprocess("--granularity=check", "-rs")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*maintenance window*"])
    assert nostls.logins == logins

    pytester.makeconftest('pytest_plugins = ["pop3mon.plugin"]\n')
    result = pytester.runpytest_subprocess("--granularity=check", "--setup-show", "-k", "stls")
    result.stdout.fnmatch_lines(["*SETUP    F check*"])
    before = good.logins
    pytester.runpytest_subprocess("--granularity=check", "--setup-plan")
    assert good.logins == before, "--setup-plan must not probe"


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_lean_check_tests_keep_what_pytest_does_around_a_test(
    project: Project, xdist: tuple[str, ...]
) -> None:
    """What the lean protocol must still do as pytest would: a project's test in a tier
    module that also asks for ``request`` or ``pytestconfig`` runs; ``pytest.xfail()`` in a
    test is an xfail (also with pytest-html off, when pop3mon makes the reports itself);
    ``pytest_exception_interact`` hears of every failure; an exception a thread left
    unhandled during a check is that test's warning (an error with ``-W error``); junit.xml's
    failure messages are the tests' own, also from xdist workers."""
    pytester = project[0]
    (pytester.path / "tests_targets" / "test_own.py").write_text(
        "import threading\n"
        "import pytest\n"
        "pytestmark = pytest.mark.connectivity\n"
        "def test_with_request(check, request):\n    check('tcp')\n"
        "def test_with_config(check, pytestconfig):\n    check('tcp')\n"
        "def test_known(check):\n    pytest.xfail('known server bug #123')\n"
        "def test_thread(check):\n"
        "    def boom():\n        raise ValueError('thread boom')\n"
        "    t = threading.Thread(target=boom)\n    t.start()\n    t.join()\n"
        "    check('tcp')\n",
        encoding="utf-8",
    )
    pytester.makeconftest(
        'pytest_plugins = ["pop3mon.plugin"]\n'
        "CALLS = []\n"
        "def pytest_exception_interact(node, call, report):\n"
        "    CALLS.append(node.nodeid)\n"
        "def pytest_unconfigure():\n    print('interact', len(CALLS))\n"
    )
    result = pytester.runpytest_subprocess(
        "--granularity=check", "-p", "no:html", "-rA", "-s", *xdist, "--reports-dir=r"
    )
    out = result.stdout.str()
    # These tests evaluate checks pop3mon's own tests evaluate too (tcp): the history keeps
    # one row and metrics.prom one series per connection type and check.
    assert "history: new baseline" in out and "UNIQUE" not in out, out[-3000:]
    series = [
        line.rsplit(" ", 1)[0]
        for line in (pytester.path / "r" / "metrics.prom").read_text("utf-8").splitlines()
        if line.startswith("pop3mon_check_verdict{")
    ]
    assert len(series) == len(set(series))
    assert sum('check="tcp"' in line for line in series) == 2  # good and nostls
    result.assert_outcomes(passed=24, failed=1, skipped=22, xfailed=2, warnings=2)
    assert "KeyError" not in out, out[-3000:]
    for ct in ("good", "nostls"):
        assert f"XFAIL tests_targets/test_own.py::test_known[{ct}] - known server bug" in out
        assert f"PASSED tests_targets/test_own.py::test_with_request[{ct}]" in out
    if not xdist:  # a worker's conftest prints where the controller does not show it
        result.stdout.fnmatch_lines(["interact 1"])
    assert "PytestUnhandledThreadExceptionWarning" in out
    assert "test_thread[good]" in out.split("warnings summary")[-1]
    root = ET.parse(pytester.path / "r" / "junit.xml").getroot()
    failures = [f for f in root.iter("failure")]
    assert [f.get("message") for f in failures] == [
        "Failed: CRIT nostls stls: server did not offer STLS (not in CAPA); "
        "refusing to continue without TLS"
    ]
    assert failures[0].text == failures[0].get("message", "").removeprefix("Failed: ")

    strict = pytester.runpytest_subprocess(
        "--granularity=check",
        "-W",
        "error::pytest.PytestUnhandledThreadExceptionWarning",
        "-rA",
        "--no-history",
        *xdist,
        "tests_targets/test_own.py",
    )
    # test_thread[good]'s check passes; the thread's exception fails it, as pytest's own
    # protocol does (nostls's CRIT fails its call first, so there it is its teardown's).
    strict.stdout.fnmatch_lines(["FAILED tests_targets/test_own.py::test_thread[[]good[]]*"])
    strict.assert_outcomes(passed=2, failed=4, errors=1, xfailed=2)

    # A finalizer's unraisable exception at a lean tier test's teardown is its error there.
    (pytester.path / "tests_targets" / "test_aaa_own.py").write_text(
        "import pytest\n"
        "class Bad:\n"
        "    def __del__(self):\n        raise RuntimeError('unraisable from a finalizer')\n"
        "@pytest.fixture(scope='session')\n"
        "def res():\n    yield Bad()\n"
        "def test_own(res):\n    pass\n",
        encoding="utf-8",
    )
    (pytester.path / "tests_targets" / "test_own.py").unlink()
    tier = pytester.runpytest_subprocess(
        "--granularity=tier",
        "-W",
        "error::pytest.PytestUnraisableExceptionWarning",
        "--no-history",
        *xdist,
    )
    assert tier.parseoutcomes().get("errors") == 1, tier.stdout.str()[-3000:]


def test_lean_reports_are_what_pytests_would_be_for_every_reader(project: Project) -> None:
    """Readers of reports that do not stop the lean protocol see what pytest's would give
    them: pytest-html's ``extras`` on every call report (a ``pytest_exception_interact``
    may add to them) in both granularities; a skip mark a test adds to its module while
    the run goes on skips the tests after it; a ``unittest.SkipTest`` skips, with no
    ``pytest_exception_interact``. A project's test named after a check (a connection
    type's, a host's) that breaks before any verdict leaves pop3mon's own verdict of that
    check in the history and in metrics.prom, whose series stay one each, also when
    ``pop3mon merge`` rewrites them from results.json."""
    pytester = project[0]
    pytester.makeconftest(
        'pytest_plugins = ["pop3mon.plugin"]\n'
        "import collections\n"
        "SEEN = collections.Counter()\n"
        "def pytest_report_teststatus(report, config):\n"
        "    if report.when == 'call':\n"
        "        SEEN[str(hasattr(report, 'extras'))] += 1\n"
        "def pytest_exception_interact(node, call, report):\n"
        "    if report.when == 'call':\n"
        "        report.extras.append({'name': 'note'})\n"
        "def pytest_unconfigure():\n    print('extras', dict(SEEN))\n"
    )
    for granularity in ("check", "tier"):
        result = pytester.runpytest_subprocess(f"--granularity={granularity}", "-s")
        assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]
        result.stdout.fnmatch_lines(["extras {'True': *}"])  # no call report without

    pytester.makeconftest('pytest_plugins = ["pop3mon.plugin"]\n')
    (pytester.path / "tests_targets" / "test_own.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.connectivity\n"
        "def test_a(check):\n    check('tcp')\n"
        "def test_gate(request):\n"
        "    request.node.parent.add_marker(pytest.mark.skip(reason='gate closed'))\n"
        "def test_c(check):\n    check('greeting')\n",
        encoding="utf-8",
    )
    result = pytester.runpytest_subprocess(
        "--granularity=check", "-rA", "--no-history", "tests_targets/test_own.py"
    )
    for ct in ("good", "nostls"):
        result.stdout.fnmatch_lines([f"SKIPPED tests_targets/test_own.py::test_c[[]{ct}[]]*"])

    pytester.makeconftest(
        'pytest_plugins = ["pop3mon.plugin"]\n'
        "CALLS = []\n"
        "def pytest_exception_interact(node, call, report):\n    CALLS.append(node.nodeid)\n"
        "def pytest_unconfigure():\n    print('interact', len(CALLS))\n"
    )
    (pytester.path / "tests_targets" / "test_own.py").write_text(
        "import unittest, pytest\n"
        "pytestmark = pytest.mark.connectivity\n"
        "def test_mine(check):\n    raise unittest.SkipTest('not today')\n",
        encoding="utf-8",
    )
    result = pytester.runpytest_subprocess(
        "--granularity=check", "-s", "--no-history", "tests_targets/test_own.py"
    )
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["interact 0"])
    pytester.makeconftest('pytest_plugins = ["pop3mon.plugin"]\n')

    (pytester.path / "tests_targets" / "test_own.py").unlink()
    # Named like pop3mon's own module, its tier is guessed as pop3mon's: one series each.
    (pytester.path / "tests_targets" / "sub").mkdir()
    (pytester.path / "tests_targets" / "sub" / "__init__.py").write_text("", encoding="utf-8")
    (pytester.path / "tests_targets" / "sub" / "test_connectivity.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.connectivity\n"
        "def test_tcp(check):\n    raise RuntimeError('a bug before any check')\n",
        encoding="utf-8",
    )
    (pytester.path / "tests_targets" / "sub" / "test_hosts.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.host\n"
        "def test_tcp(host_check):\n    raise RuntimeError('a bug before any check')\n",
        encoding="utf-8",
    )
    pytester.runpytest_subprocess("--granularity=check", "--reports-dir=r")
    doc = json.loads((pytester.path / "r" / "results.json").read_text(encoding="utf-8"))
    states = {
        (conn["id"], check["nodeid"]): check["state"]["verdict"]
        for conn in doc["connections"]
        for check in conn["checks"]
        if check["check"] == "tcp" and check.get("state")
    }
    assert states[("good", "tests_targets/test_connectivity.py::test_tcp[good]")] == "OK"
    merged = _merge(pytester.path, "--out=m", "r/results.json")
    assert merged.returncode in (0, 1), merged.stdout + merged.stderr
    for directory in ("r", "m"):
        metrics = (pytester.path / directory / "metrics.prom").read_text(encoding="utf-8")
        series = [line.rsplit(" ", 1) for line in metrics.splitlines() if "_verdict{" in line]
        assert len({name for name, _ in series}) == len(series), directory
        tcp = [
            value
            for name, value in series
            if name.startswith(("pop3mon_check_verdict{", "pop3mon_host_check_verdict{"))
            and 'check="tcp"' in name
            and ('connection="good"' in name or name.startswith("pop3mon_host"))
        ]
        assert tcp == ["0.0", "0.0"], (directory, tcp)  # OK, the verdict pop3mon's tests got


def test_tier_tests_are_where_pytest_says(project: Project) -> None:
    """A tier test's location (what -v, -rs and the reports show) is the one pytest works
    out for any item: its module relative to the root, its line, its name."""
    from _pytest.nodes import Item
    from pop3mon.granularity import TierItem

    pytester = project[0]
    rec = pytester.inline_run("--collect-only", "--granularity=tier", "tests_targets")
    [finished] = rec.getcalls("pytest_collection_finish")
    tiers = [item for item in finished.session.items if isinstance(item, TierItem)]
    assert len(tiers) >= 10
    for item in tiers:
        expected = Item.location.func(item)  # type: ignore[attr-defined]
        assert item.location == expected
        assert expected[0].startswith("tests_targets/test_")


def _tier_items(pytester: pytest.Pytester, *args: str) -> list[tuple[str, list[str] | None]]:
    """What a tier run collects: each item's node id and, for a tier test, its checks'."""
    rec = pytester.inline_run("--collect-only", "--granularity=tier", *args)
    [finished] = rec.getcalls("pytest_collection_finish")
    return [(i.nodeid, getattr(i, "member_nodeids", None)) for i in finished.session.items]


def test_tier_tests_collected_directly_only_where_grouping_would_make_the_same(
    project: Project,
) -> None:
    """Tier tests are collected directly only where that gives what grouping the tests per
    check gives (compared with ``-k``, which always groups): a project's own test between a
    POP3-only and a both-protocol check keeps its place; a function parametrized besides
    pop3mon (an autouse fixture with params, a module's pytest_generate_tests, a class)
    is grouped as before; a conftest file found later that hooks into the whole session's
    collection stops the run with one line instead of seeing tier tests."""
    pytester = project[0]
    targets = pytester.path / "targets.yaml"
    targets.write_text(
        targets.read_text(encoding="utf-8")
        + "    smtp:\n      - {id: mx, port: 2525, security: none}\n",
        encoding="utf-8",
    )
    grouped = ("-k", "not no_such_test")
    mixed = pytester.path / "tests_targets" / "test_mixed.py"
    mixed.write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.mailbox\n"
        "def test_stat(check):\n    check('stat')\n"
        "def test_mine():\n    pass\n"
        "def test_logout(check):\n    check('logout')\n",
        encoding="utf-8",
    )
    direct = _tier_items(pytester)
    mine = [n for n, _ in direct].index("tests_targets/test_mixed.py::test_mine")
    assert [n for n, _ in direct][mine + 1] == "tests_targets/test_mixed.py::mailbox[mx]"
    assert direct == _tier_items(pytester, *grouped)

    variants = {
        "class": "import pytest\npytestmark = pytest.mark.mailbox\n"
        "class TestIn:\n    def test_stat(self, check):\n        check('stat')\n",
        "module hook": "import pytest\npytestmark = pytest.mark.mailbox\n"
        "def pytest_generate_tests(metafunc):\n"
        "    if 'extra' in metafunc.fixturenames:\n"
        "        metafunc.parametrize('extra', ['a', 'b'])\n"
        "def test_stat(check, extra):\n    check('stat')\n",
    }
    for name, source in variants.items():
        mixed.write_text(source, encoding="utf-8")
        found = _tier_items(pytester)
        assert found == _tier_items(pytester, *grouped), name
        ours = [m for n, m in found if "test_mixed.py" in n]
        assert ours and all(m for m in ours), (name, ours)  # tier tests, none left bare
    mixed.unlink()
    pytester.makeconftest(
        'pytest_plugins = ["pop3mon.plugin"]\n'
        "import pytest\n"
        "@pytest.fixture(autouse=True, params=['ipv4', 'ipv6'])\n"
        "def family(request):\n    return request.param\n"
    )
    found = _tier_items(pytester)
    assert found == _tier_items(pytester, *grouped)
    assert all(m for n, m in found if "::tls[" in n) and any("::tls[" in n for n, _ in found)

    pytester.makeconftest('pytest_plugins = ["pop3mon.plugin"]\n')
    # A conftest file below a directory given on the command line: pytest loads it only
    # when collection reaches it, after the tier tests.
    late = pytester.mkdir("zz_late") / "sub"
    late.mkdir()
    (late / "conftest.py").write_text(
        "def pytest_collection_modifyitems(items):\n"
        "    items[:] = [i for i in items if 'expiry' not in i.nodeid]\n",
        encoding="utf-8",
    )
    (late / "test_late.py").write_text("def test_here():\n    pass\n", encoding="utf-8")
    result = pytester.runpytest_subprocess(
        "--collect-only", "--granularity=tier", "tests_targets", "zz_late"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-2000:]
    result.stderr.fnmatch_lines(["*zz_late/sub/conftest.py hooks into collection but was found*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    grouped_run = pytester.runpytest_subprocess(
        "--collect-only", "--granularity=tier", "tests_targets", "zz_late", *grouped
    )
    assert grouped_run.ret == pytest.ExitCode.OK, grouped_run.stdout.str()[-2000:]


def test_junitxml_settings_only_pytest_honours_keep_its_writer(project: Project) -> None:
    """In tier mode a junitxml setting pop3mon's writer does not reproduce (here
    ``junit_logging``: captured output in the testcase) keeps pytest's writer, and the tier
    tests' checks are still one testcase each."""
    import xml.etree.ElementTree as ET

    pytester = project[0]
    pytester.makepyfile(test_talks="def test_talks():\n    print('said-out-loud')\n")
    result = pytester.runpytest_subprocess(
        "--granularity=tier", "-o", "junit_logging=system-out", "tests_targets", "test_talks.py"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the nostls connection type
    root = ET.parse(pytester.path / "reports" / "junit.xml").getroot()
    [talks] = [c for c in root.iter("testcase") if c.get("name") == "test_talks"]
    out = talks.find("system-out")
    assert out is not None and "said-out-loud" in (out.text or "")
    names = [c.get("name") or "" for c in root.iter("testcase")]
    assert "test_certificate[good]" in names and not any(n.startswith("tls[") for n in names)


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_what_only_junitxml_writes_is_not_lost_silently(
    project: Project, xdist: tuple[str, ...]
) -> None:
    """``record_xml_attribute``/``record_testsuite_property`` write into junitxml's own
    objects: where pop3mon writes junit.xml (tier mode) the run says the value is not
    written and how to keep pytest's writer; under xdist the workers, where the tests
    run, say it."""
    pytester = project[0]
    pytester.makepyfile(
        test_attrs="""
        def test_attr(record_xml_attribute):
            record_xml_attribute("owner", "me")

        def test_suite_prop(record_testsuite_property):
            record_testsuite_property("build", "7")
        """
    )
    result = pytester.runpytest_subprocess(
        "--granularity=tier", *xdist, "tests_targets", "test_attrs.py"
    )
    out = result.stdout.str()
    for name in ("record_xml_attribute", "record_testsuite_property"):
        assert f"{name}: not written: pop3mon writes junit.xml" in out, out[-3000:]
    assert "give --junitxml=PATH to keep pytest's writer" in out


def test_a_large_tier_run_writes_its_reports_in_two_processes(project: Project) -> None:
    """Once the probing threads have ended (the reports wait for them), a tier run large
    enough forks its second writer: here "large enough" is lowered to every run, and the
    project's conftest notes what the writer did. The batch thread is made to linger
    0.5 s after its last result (as closing a large pool does), so the reports must wait
    for it to fork at all. The reports are complete either way."""
    pytester = project[0]
    pytester.makeconftest(
        """
        pytest_plugins = ["pop3mon.plugin"]

        import time
        from pathlib import Path

        from pop3mon import probestore
        from pop3mon.report import standalone

        real_run_probes = probestore.run_probes

        def lingering(*args, **kwargs):
            real_run_probes(*args, **kwargs)  # every result is in (on_result)
            time.sleep(0.5)

        probestore.run_probes = lingering

        standalone.PARALLEL_MIN_CHECKS = 0
        real = standalone.in_parallel

        def noted(*args, **kwargs):
            forked = real(*args, **kwargs)
            Path("forked.txt").write_text(str(forked))
            return forked

        standalone.in_parallel = noted
        """
    )
    result = pytester.runpytest_subprocess("--granularity=tier", "tests_targets")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the nostls connection type
    assert (pytester.path / "forked.txt").read_text() == "True"
    reports = pytester.path / "reports"
    doc = json.loads((reports / "results.json").read_text(encoding="utf-8"))
    assert {c["id"] for c in doc["connections"]} == {"good", "nostls"}
    assert "test_certificate[good]" in (reports / "junit.xml").read_text(encoding="utf-8")
    assert "pop3mon_probe_" in (reports / "metrics.prom").read_text(encoding="utf-8")
