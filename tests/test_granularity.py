"""``--granularity=tier`` (issue 14, scale): one pytest test per tier of each connection
type, and still every check in every report.

The Dovecot lab of tests/test_metrics.py (OK, expired certificate, wrong password, closed
port: passes, failures and skips) runs once per granularity; results.json, junit.xml and
metrics.prom must list the same checks with the same verdicts, reasons, outcomes and node
ids, and the pop3mon summary must count the same verdicts. Figures that are timings (or a
greeting's nonce) differ between two runs and are left out of the comparison.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from test_metrics import PW_ENV, SENTINEL, WRONG_ENV, Run, run_suite, samples_of, write_targets

from pop3mon_lab.dovecot import DovecotLab, free_port

REPO = Path(__file__).resolve().parent.parent

#: Values that are timings or change from one probe to the next.
_VOLATILE_PROPS = ("phase_", "figure", "cert_days_left")


@pytest.fixture(scope="module")
def runs(dovecot: DovecotLab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The lab run once with each granularity (the ini option, then the command line)."""
    directory = tmp_path_factory.mktemp("granularity-lab")
    targets = write_targets(directory / "targets.yaml", dovecot, free_port())
    env = {PW_ENV: dovecot.demo_password, WRONG_ENV: SENTINEL}
    out = {}
    for mode in ("check", "tier"):
        env["PYTEST_ADDOPTS"] = f"--granularity={mode}"
        done = run_suite(targets, tmp_path_factory.mktemp(f"granularity-{mode}"), env)
        assert done.returncode == 1, done.output[-4000:]  # expired, wrong, closed are CRIT
        out[mode] = done
    return out


def _tests_line(run: Run) -> str:
    found = re.findall(r"^=* ?(\d+ (?:failed|passed).*) in [\d.]+s", run.output, re.M)
    assert found, run.output[-3000:]
    return str(found[-1])


def _checks(run: Run) -> list[tuple[str, str, str, str, str, str, str]]:
    doc = run.json()
    out = []
    for conn in doc["connections"]:
        for c in conn["checks"]:
            reason = re.sub(r"<[^>]*>|\d+(\.\d+)?", "N", c["reason"])
            out.append(
                (conn["id"], c["tier"], c["check"], c["verdict"], c["outcome"], c["nodeid"], reason)
            )
    return sorted(out)


def _junit(run: Run) -> tuple[dict[str, str], list[tuple[Any, ...]]]:
    root = ET.parse(run.reports / "junit.xml").getroot()
    suite = root.find("testsuite")
    assert suite is not None
    counts = {k: suite.get(k, "") for k in ("tests", "failures", "errors", "skipped")}
    cases = []
    for case in root.iter("testcase"):
        props = sorted(
            (p.get("name", ""), re.sub(r"<[^>]*>|\d+(\.\d+)?", "N", p.get("value", "")))
            for p in case.iter("property")
            if not any(v in p.get("name", "") for v in _VOLATILE_PROPS)
        )
        outcome = sorted(e.tag for e in case if e.tag in ("failure", "error", "skipped"))
        failure = case.find("failure")
        message = failure.get("message", "") if failure is not None else ""
        message = re.sub(r"\d+(\.\d+)?", "N", message)
        cases.append(
            (case.get("classname"), case.get("name"), tuple(props), tuple(outcome), message)
        )
    return counts, sorted(cases)


def _metrics(run: Run) -> list[tuple[str, tuple[tuple[str, str], ...], float | None]]:
    out = []
    for s in samples_of(run.text):
        if "seconds" in s.name or s.name.startswith("probe_"):
            continue  # timings and timestamps
        value = s.value if "mailbox" not in s.name else None
        out.append((s.name, tuple(sorted(s.labels.items())), value))
    return sorted(out)


def test_tier_granularity_runs_one_test_per_tier(runs: dict[str, Run]) -> None:
    """Fewer pytest tests, each named after its tier (``tls[<id>]``)."""
    fine, coarse = _tests_line(runs["check"]), _tests_line(runs["tier"])
    count = lambda line: sum(int(n) for n in re.findall(r"(\d+) \w+", line))  # noqa: E731
    assert count(coarse) < count(fine) / 2, (fine, coarse)
    assert "test_tls.py::tls[expired]" in runs["tier"].output  # the failing tier test


def test_tier_granularity_reports_every_check_as_the_fine_mode(runs: dict[str, Run]) -> None:
    """results.json, junit.xml and metrics.prom list the same checks, verdicts, reasons,
    outcomes and node ids with either granularity; the summary counts the same."""
    fine, coarse = runs["check"], runs["tier"]
    assert _checks(coarse) == _checks(fine)
    assert _junit(coarse) == _junit(fine)
    assert _metrics(coarse) == _metrics(fine)
    verdicts = [re.findall(r"^verdicts: .*$", r.output, re.M) for r in (fine, coarse)]
    assert verdicts[0] and verdicts[0] == verdicts[1]
    for run in (fine, coarse):  # the secret scrub covers the tier tests' reports too
        for name in ("junit.xml", "results.json", "metrics.prom", "report.html"):
            assert SENTINEL not in (run.reports / name).read_text(encoding="utf-8"), name


def test_tier_granularity_keeps_the_selection(dovecot: DovecotLab, tmp_path: Path) -> None:
    """``-k`` still selects checks: a tier test holds just the selected ones."""
    targets = write_targets(tmp_path / "targets.yaml", dovecot, free_port())
    env = {
        PW_ENV: dovecot.demo_password,
        WRONG_ENV: SENTINEL,
        "PYTEST_ADDOPTS": "--granularity=tier -k 'expiry or login'",
    }
    done = run_suite(targets, tmp_path / "reports", env)
    checks = {(c["id"], k["check"]) for c in done.json()["connections"] for k in c["checks"]}
    assert {check for _, check in checks} == {"expiry", "login"}, checks
    assert ("expired", "expiry") in checks and ("wrong", "login") in checks


def test_bad_granularity_is_one_usage_line(dovecot: DovecotLab, tmp_path: Path) -> None:
    """A wrong ini value stops the run with one line naming the choices, no traceback."""
    targets = write_targets(tmp_path / "targets.yaml", dovecot, free_port())
    env = {PW_ENV: dovecot.demo_password, "PYTEST_ADDOPTS": "-o pop3mon_granularity=tiers"}
    done = run_suite(targets, tmp_path / "reports", env)
    assert done.returncode == 4, done.output[-2000:]
    assert "pop3mon_granularity = 'tiers' is not one of auto, check, tier" in done.output
    assert "Traceback" not in done.output


def test_auto_granularity_follows_the_number_of_connection_types(
    dovecot: DovecotLab, tmp_path: Path
) -> None:
    """The default (``auto``) collects one test per check below ini ``pop3mon_tier_from``
    connection types and one per tier from it on, saying so in the header; an explicit
    ``--granularity`` wins over the size."""
    targets = write_targets(tmp_path / "targets.yaml", dovecot, free_port())
    count = len({c["id"] for s in _servers(targets) for c in s["connections"]})
    note = "pop3mon: one test per tier of each connection type (--granularity=auto: "

    def collected(addopts: str) -> str:
        env = {PW_ENV: dovecot.demo_password, "PYTEST_ADDOPTS": f"--collect-only {addopts}"}
        done = run_suite(targets, tmp_path / "reports", env)
        assert done.returncode == 0, done.output[-3000:]
        return done.output

    default = collected("")
    assert "<Function test_stls[tls]>" in default and note not in default
    below = collected(f"-o pop3mon_tier_from={count + 1}")
    assert "<Function test_stls[tls]>" in below and note not in below
    at = collected(f"-o pop3mon_tier_from={count}")
    assert "<TierItem tls[tls]>" in at and "test_stls[" not in at
    assert f"{note}{count} connection types, tier from {count} on" in at
    summary = f"granularity: one test per tier (auto: {count} connection types, tier from"
    assert summary in at  # again after the summary: -q hides the header
    forced = collected("-o pop3mon_tier_from=1 --granularity=check")
    assert "<Function test_stls[tls]>" in forced and note not in forced
    assert summary not in forced
    assert "<Function test_stls[tls]>" in collected("-o pop3mon_tier_from=")  # the default

    # Under xdist the workers run what the controller chose, and -q still tells.
    env = {
        PW_ENV: dovecot.demo_password,
        WRONG_ENV: SENTINEL,
        "PYTEST_ADDOPTS": f"-n 2 -q -o pop3mon_tier_from={count}",
    }
    done = run_suite(targets, tmp_path / "xdist", env)
    assert done.returncode == 1, done.output[-3000:]
    assert "FAILED tests_targets/test_tls.py::tls[expired]" in done.output, done.output[-3000:]
    assert summary in done.output and note not in done.output


_DUMP_PLUGIN = """
import json, os
import pytest

_COLLECTED = []

def pytest_collectreport(report):
    _COLLECTED.extend(
        x.nodeid for x in report.result if isinstance(x, pytest.Function) and "::test_" in x.nodeid
    )

@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    items = [
        [
            item.nodeid,
            getattr(item, "members", None),
            sorted((m.name, list(m.args)) for m in item.iter_markers()),
            list(item.location),
            sorted(k for k in item.keywords if not k.startswith("_")),
        ]
        for item in session.items
    ]
    with open(os.environ["DUMP_ITEMS"], "w") as out:
        json.dump({"items": items, "functions": _COLLECTED}, out)
"""

#: A project's own hook on the tests per check: tier tests must then be grouped from them.
_FOREIGN_HOOK = "def pytest_collection_modifyitems(items):\n    pass\n"


def test_tier_tests_collected_directly_are_the_grouped_ones(
    dovecot: DovecotLab, tmp_path: Path
) -> None:
    """Without a selection, tier tests are collected directly (no test per check is made
    first); they are the tier tests grouped from the tests per check, as ``-k``, ``-m``
    or a project's own collection hook get them: the same node ids, checks, marks (tags
    included), locations and keywords, in the same order."""
    import yaml

    targets = write_targets(tmp_path / "targets.yaml", dovecot, free_port())
    data = yaml.safe_load(targets.read_text("utf-8"))
    data["defaults"]["latency"] = {
        "total": {"warn": 30, "crit": 60},
        "auth": {"warn": 20, "crit": 40},
    }
    data["servers"][0]["connections"][0]["tags"] = ["gold", "eu_west"]
    data["servers"][0]["connections"][2]["tags"] = ["gold"]
    targets.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (tmp_path / "dump_items.py").write_text(_DUMP_PLUGIN, encoding="utf-8")
    (tmp_path / "foreign_hook.py").write_text(_FOREIGN_HOOK, encoding="utf-8")
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)

    def collected(name: str, addopts: str) -> dict[str, Any]:
        out = tmp_path / f"{name}.json"
        env = {
            PW_ENV: dovecot.demo_password,
            "PYTHONPATH": path,
            "DUMP_ITEMS": str(out),
            "PYTEST_ADDOPTS": f"--collect-only -q -p dump_items --granularity=tier {addopts}",
        }
        done = run_suite(targets, tmp_path / name, env)
        assert done.returncode == 0, done.output[-3000:]
        found: dict[str, Any] = json.loads(out.read_text("utf-8"))
        return found

    direct = collected("direct", "")
    tier_modules = ("test_connectivity.py", "test_tls.py", "test_auth.py", "test_latency.py")
    per_check = lambda run: [n for n in run["functions"] if n.split("::")[0].endswith(tier_modules)]  # noqa: E731
    assert per_check(direct) == []  # no test per check was made
    tls = next(i for i in direct["items"] if i[0] == "tests_targets/test_tls.py::tls[tls]")
    assert ["gold", []] in tls[2] and ["eu_west", []] in tls[2]
    latency = next(i for i in direct["items"] if i[0].endswith("::latency[tls]"))
    assert [m[1] for m in latency[1]] == ["latency-total", "latency-auth"]
    for name, addopts in (
        ("keyword", "-k 'not no_such_test'"),
        ("mark", "-m 'not no_such_mark'"),
        ("hook", "-p foreign_hook"),
    ):
        grouped = collected(name, addopts)
        assert len(per_check(grouped)) > len(direct["items"]), name  # from tests per check
        assert grouped["items"] == direct["items"], name


@pytest.mark.parametrize(
    "value",
    ["many", "0", "-5", "2.5", "\u00b2", "\u0661", "9" * 5000],
    ids=["word", "zero", "negative", "fraction", "superscript", "arabic-indic", "5000-digits"],
)
def test_bad_tier_threshold_is_one_usage_line(
    dovecot: DovecotLab, tmp_path: Path, value: str
) -> None:
    """ini ``pop3mon_tier_from`` takes a whole number >= 1; anything else stops the run
    with one line naming the setting and the default."""
    targets = write_targets(tmp_path / "targets.yaml", dovecot, free_port())
    env = {PW_ENV: dovecot.demo_password, "PYTEST_ADDOPTS": f"-o pop3mon_tier_from={value}"}
    done = run_suite(targets, tmp_path / "reports", env)
    assert done.returncode == 4, done.output[-2000:]
    shown = f"'{value[:20]}'..." if len(value) > 20 else f"'{value}'"
    assert f"pop3mon_tier_from = {shown} is not a whole number" in done.output
    assert "(default 200)" in done.output and "Traceback" not in done.output
    assert "INTERNALERROR" not in done.output


def _servers(targets: Path) -> list[dict[str, Any]]:
    import yaml

    servers: list[dict[str, Any]] = yaml.safe_load(targets.read_text("utf-8"))["servers"]
    return servers


def test_results_json_is_written_as_one_document(runs: dict[str, Run]) -> None:
    """results.json, now written a connection at a time, is still one compact document
    with sorted keys."""
    text = (runs["tier"].reports / "results.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    assert text == json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


def test_tier_granularity_marks_unrun_checks_not_run(dovecot: DovecotLab, tmp_path: Path) -> None:
    """``-x`` ends the run at the first failing tier test; every check of the tier tests
    that never ran is in results.json as "not run", one record per check."""
    targets = write_targets(tmp_path / "targets.yaml", dovecot, free_port())
    env = {
        PW_ENV: dovecot.demo_password,
        WRONG_ENV: SENTINEL,
        "PYTEST_ADDOPTS": "--granularity=tier -x",
    }
    done = run_suite(targets, tmp_path / "reports", env)
    assert done.returncode == 1, done.output[-3000:]
    doc = done.json()
    checks = [(c["id"], k["check"], k["outcome"]) for c in doc["connections"] for k in c["checks"]]
    not_run = [c for c in checks if c[2] == "not run"]
    assert not_run, checks
    assert len({(i, k) for i, k, _ in checks}) == len(checks)  # each check once
    # The same checks as a complete run: none lost with its tier test.
    full = run_suite(targets, tmp_path / "full", {**env, "PYTEST_ADDOPTS": "--granularity=tier"})
    assert {(i, k) for i, k, _ in checks} == {
        (c["id"], k["check"]) for c in full.json()["connections"] for k in c["checks"]
    }


#: A plugin whose ``stat`` rule raises for connection type "tls" (a bug in one check).
_BROKEN_STAT = """
import pop3mon.checks as checks

_stat = checks._RULES["stat"]


def _raising(result, thresholds):
    if result.id == "tls":
        raise RuntimeError("stat rule broke")
    return _stat(result, thresholds)


checks._RULES = {**checks._RULES, "stat": _raising}
"""


def test_a_check_that_raises_breaks_only_itself_in_either_granularity(
    dovecot: DovecotLab, tmp_path: Path
) -> None:
    """A check whose rule raises is an ERROR with the exception as its reason, and the other
    checks of its tier still get their verdicts: a tier test reports what the check tests
    report (results.json and junit.xml), not one broken tier."""
    (tmp_path / "broken_stat.py").write_text(_BROKEN_STAT, encoding="utf-8")
    targets = write_targets(tmp_path / "targets.yaml", dovecot, free_port())
    done = {}
    for mode in ("check", "tier"):
        env = {
            PW_ENV: dovecot.demo_password,
            WRONG_ENV: SENTINEL,
            "PYTHONPATH": str(tmp_path),
            "PYTEST_ADDOPTS": f"--granularity={mode} -p broken_stat",
        }
        done[mode] = run_suite(targets, tmp_path / mode, env)
        assert done[mode].returncode == 1, done[mode].output[-3000:]
    fine, coarse = done["check"], done["tier"]
    mailbox = {
        k["check"]: (k["verdict"], k["reason"], k["outcome"])
        for c in coarse.json()["connections"]
        if c["id"] == "tls"
        for k in c["checks"]
        if k["tier"] == "mailbox"
    }
    assert mailbox["stat"] == ("ERROR", "RuntimeError: stat rule broke", "failed"), mailbox
    assert mailbox["logout"][0] == "OK", mailbox  # evaluated, not "not run"
    assert _checks(coarse) == _checks(fine)
    assert _junit(coarse) == _junit(fine)
    assert "RuntimeError: stat rule broke" in (coarse.reports / "junit.xml").read_text("utf-8")
    # Merged from results.json alone, the broken check is still a JUnit <failure> (it broke
    # in its body), not an <error>.
    merged = tmp_path / "merged"
    subprocess.run(
        [sys.executable, "-m", "pop3mon.cli", "merge", f"--out={merged}", str(fine.reports)],
        env={**os.environ, "PYTHONPATH": str(REPO / "plugins")},
        capture_output=True,
        check=True,
    )
    case = _case(merged / "junit.xml", "test_stat[tls]")
    assert [e.tag for e in case if e.tag in ("failure", "error")] == ["failure"]


def _case(junit: Path, name: str) -> ET.Element:
    found = [c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name") == name]
    assert len(found) == 1, name
    return found[0]
