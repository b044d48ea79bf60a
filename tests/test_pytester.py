"""The suite driven through pytest's own ``pytester``, in a project laid out from scratch.

``tests/test_suite.py`` runs the repository itself in a subprocess; this module shows the
plugin and the tier tests working in any pytest project (a fresh ``pytester`` directory with
its own ``conftest.py``, ``pytest.ini`` and a copy of ``tests_targets/``), against the fault
server, and checks outcomes the way pytest's own plugin tests do.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

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
    result = pytester.runpytest_subprocess("-rA")
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


def test_tier_granularity_reports_the_projects_own_tests(project: Project) -> None:
    """With ``--granularity=tier`` pop3mon writes junit.xml and report.html itself (no
    pytest-html, no junitxml): a project's own tests run beside the tier tests are in both,
    passed, failed, skipped and broken in set-up, as junitxml would list them; the tier
    tests' checks are there one testcase each, and the password nowhere."""
    import xml.etree.ElementTree as ET

    pytester = project[0]
    pytester.makepyfile(
        test_own="""
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture broke")

        def test_passes():
            pass

        def test_fails():
            assert 1 == 2, "own failure"

        def test_skips():
            pytest.skip("own reason")

        def test_errors(broken):
            pass

        @pytest.mark.xfail(reason="known bug")
        def test_xfails():
            assert False
        """
    )
    result = pytester.runpytest_subprocess("--granularity=tier", "tests_targets", "test_own.py")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    reports = pytester.path / "reports"
    root = ET.parse(reports / "junit.xml").getroot()
    suite = root.find("testsuite")
    assert suite is not None
    own = {c.get("name"): c for c in root.iter("testcase") if c.get("classname") == "test_own"}
    assert sorted(own) == ["test_errors", "test_fails", "test_passes", "test_skips", "test_xfails"]
    xfail = own["test_xfails"].find("skipped")
    assert xfail is not None and xfail.get("type") == "pytest.xfail"
    assert xfail.get("message") == "known bug"
    assert [e.tag for e in own["test_passes"]] == []
    failure = own["test_fails"].find("failure")
    assert failure is not None and "own failure" in (failure.text or "")
    skipped = own["test_skips"].find("skipped")
    assert skipped is not None and skipped.get("message") == "own reason"
    error = own["test_errors"].find("error")
    assert error is not None and "fixture broke" in (error.get("message") or "")
    # Each check of the tier tests is a testcase of its own, and the counts add up.
    doc = __import__("json").loads((reports / "results.json").read_text(encoding="utf-8"))
    checks = sum(1 for c in doc["connections"] for _ in c["checks"])
    checks += sum(1 for h in doc["hosts"] for _ in h["checks"])
    cases = list(root.iter("testcase"))
    assert int(suite.get("tests", "")) == len(cases) == checks + 5
    assert int(suite.get("errors", "")) == sum(1 for c in cases if c.find("error") is not None)
    page = (reports / "report.html").read_text(encoding="utf-8")
    assert 'id="pop3mon-other-tests"' in page and "test_own.py::test_fails" in page
    for name in ("junit.xml", "report.html", "results.json", "metrics.prom"):
        assert PASSWORD not in (reports / name).read_text(encoding="utf-8"), name


def test_a_broken_tier_test_is_an_error_and_the_run_still_ends(project: Project) -> None:
    """A tier test that breaks before its verdicts (injected: its ``runtest`` raises) is
    one ERROR naming the exception in every report; its checks are "not run" because of
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
    root = ET.parse(reports / "junit.xml").getroot()
    error = [e for e in root.iter("error") if "boom" in (e.get("message") or "")]
    assert len(error) == 1
    assert "was ended early" not in result.stdout.str()


def test_tier_tests_keep_pytests_protocol_where_it_is_needed(project: Project) -> None:
    """The lean protocol of tier tests never changes what a run does: a skip mark a
    project adds still skips (and a project's own phase hook still runs), ``--setup-plan``
    still logs in nowhere, and ``-p no:html`` still writes no page."""
    pytester, good, nostls = project
    pytester.makeconftest(
        'pytest_plugins = ["pop3mon.plugin"]\n'
        "import pytest\n"
        "def pytest_collection_modifyitems(items):\n"
        "    for item in items:\n"
        "        if 'nostls' in item.nodeid:\n"
        "            item.add_marker(pytest.mark.skip(reason='maintenance window'))\n"
    )
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
        "    print('phase hook saw', sum('::tls[' in n for n in SEEN), 'tests')\n"
    )
    result = pytester.runpytest_subprocess("--granularity=tier", "-s")
    seen = re.findall(r"phase hook saw (\d+) tests", result.stdout.str())
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
