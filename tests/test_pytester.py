"""The suite driven through pytest's own ``pytester``, in a project laid out from scratch.

``tests/test_suite.py`` runs the repository itself in a subprocess; this module shows the
plugin and the tier tests working in any pytest project (a fresh ``pytester`` directory with
its own ``conftest.py``, ``pytest.ini`` and a copy of ``tests_targets/``), against the fault
server, and checks outcomes the way pytest's own plugin tests do.
"""

from __future__ import annotations

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
