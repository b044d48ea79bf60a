"""Multi-vantage merges and histories on real runs of the Dovecot lab.

Three servers (``s1``: ``healthy-tls``, logging in; ``s3``: ``other-tls``, no login; ``s5``:
``closed-tls``, a closed port: CRIT from everywhere, so every vantage's run is equally
bad and no vantage's history can win by being worst overall), run from
vantage points told apart by ``--vantage`` only: a vantage "fails" by being given a wrong
password (the targets file and its sha256 stay the same), so every run is fast and real.
Each vantage keeps its own ``--history``, except where the test is about sharing one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_merge import doc, merge, pytest_run

from pop3mon_lab.dovecot import DovecotLab, free_port

PW_ENV = "POP3MON_VANTAGE_PW"


@dataclass
class Lab:
    targets: Path
    good: dict[str, str]  # the environment with the right password
    bad: dict[str, str]  # with a wrong one: healthy-tls's login is CRIT


@pytest.fixture(scope="module")
def lab(dovecot: DovecotLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("vantage-lab")
    targets = directory / "targets.yaml"
    account = f"{{username: {dovecot.demo_user}, password_env: {PW_ENV}}}"
    # s3 logs in nowhere, so it is no group with s1 and lands in the other of 2 shards.
    targets.write_text(
        f"""version: 1
defaults:
  ca_file: {dovecot.ca_file}
  timeout: 5
  login_pacing: parallel
servers:
  - name: s1
    host: {dovecot.hostname}
    connections:
      - {{id: healthy-tls, port: {dovecot.port("pop3s")}, security: tls, account: {account}}}
  - name: s3
    host: {dovecot.hostname}
    connections:
      - {{id: other-tls, port: {dovecot.port("pop3s")}, security: tls, auth: none}}
  - name: s5
    host: {dovecot.hostname}
    connections:
      - {{id: closed-tls, port: {free_port()}, security: tls, auth: none}}
""",
        encoding="utf-8",
    )
    yield Lab(
        targets,
        {PW_ENV: dovecot.demo_password, "COLUMNS": "200"},
        {PW_ENV: "not-" + dovecot.demo_password, "COLUMNS": "200"},
    )


def run(lab: Lab, reports: Path, vantage: str, *args: str, good: bool = True) -> str:
    """One run from ``vantage``; its stdout."""
    env = lab.good if good else lab.bad
    return pytest_run(lab.targets, reports, f"--vantage={vantage}", *args, env=env).stdout


def check(document: dict[str, Any], ct: str, name: str) -> dict[str, Any]:
    conn = next(c for c in document["connections"] if c["id"] == ct)
    found: dict[str, Any] = next(c for c in conn["checks"] if c["check"] == name)
    return found


def connection(document: dict[str, Any], ct: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in document["connections"] if c["id"] == ct)
    return found


@pytest.fixture(scope="module")
def rounds(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """aaa and bbb, each with its own history: round 1 both fine, round 2 bbb with a
    wrong password, round 3 aaa with one (bbb fine again); plus ccc, a vantage with a
    fresh history, in round 3. Reports directories by "<vantage><round>"."""
    base = tmp_path_factory.mktemp("rounds")
    out: dict[str, Path] = {}
    bad = {("bbb", 2), ("aaa", 3)}
    for n in (1, 2, 3):
        for vantage in ("aaa", "bbb"):
            out[f"{vantage}{n}"] = base / f"{vantage}{n}"
            history = f"--history={base / f'{vantage}.sqlite'}"
            run(lab, out[f"{vantage}{n}"], vantage, history, good=(vantage, n) not in bad)
    out["ccc3"] = base / "ccc3"
    run(lab, out["ccc3"], "ccc", f"--history={base / 'ccc.sqlite'}")
    return out


def test_each_check_shows_the_state_of_the_vantage_it_comes_from(
    rounds: dict[str, Path], tmp_path: Path
) -> None:
    """bbb's CRIT login stands with bbb's state (CRIT, 1 run), not aaa's "OK since, 2
    runs"; the connection type's availability is bbb's (whose probe result is shown)."""
    out = tmp_path / "merged"
    proc = merge(f"--out={out}", rounds["aaa2"], rounds["bbb2"])
    assert proc.returncode == 0, proc.stderr
    merged, own = doc(out), doc(rounds["bbb2"])
    login = check(merged, "healthy-tls", "login")
    assert login["verdict"] == "CRIT"
    assert login["state"]["verdict"] == "CRIT" and login["state"]["vantage"] == "bbb"
    assert login["state"]["runs"] == check(own, "healthy-tls", "login")["state"]["runs"]
    availability = connection(merged, "healthy-tls")["availability"]
    assert availability == connection(own, "healthy-tls")["availability"]
    assert availability["24h"] < 1.0
    # Every state in the merged file is that of the vantage its check's record is from
    # (a SKIP or ERROR carries the last finding forward: no verdict to compare).
    for conn in merged["connections"]:
        for chk in conn["checks"]:
            if chk["state"] is None or chk["verdict"] in ("SKIP", "ERROR"):
                continue
            mine = doc(rounds[f"{chk['state']['vantage']}2"])
            assert chk["state"]["verdict"] == check(mine, conn["id"], chk["check"])["verdict"]
    page = (out / "report.html").read_text("utf-8")
    assert "(login, from bbb)" in page  # the State row: bbb's CRIT streak
    assert "still failing: healthy-tls" not in proc.stdout  # new from bbb, not still
    assert "new since last run: healthy-tls login (CRIT from bbb)" in proc.stdout


def test_every_vantage_change_is_kept_and_named(rounds: dict[str, Path], tmp_path: Path) -> None:
    """Round 3: aaa's login is newly CRIT while bbb's recovered; the merged changes hold
    both, each naming its vantage, and the merge prints both."""
    out = tmp_path / "merged"
    proc = merge(f"--out={out}", rounds["aaa3"], rounds["bbb3"])
    assert proc.returncode == 0, proc.stderr
    told = doc(out)["changes"]
    changes = {(c["kind"], c["connection"], c["check"], c.get("vantage")) for c in told}
    assert ("new", "healthy-tls", "login", "aaa") in changes
    assert ("recovered", "healthy-tls", "login", "bbb") in changes
    assert all(c.get("vantage") in ("aaa", "bbb") for c in told)
    assert "new since last run: healthy-tls login (CRIT from aaa)" in proc.stdout
    assert "recovered: healthy-tls login (from bbb)" in proc.stdout
    login = check(doc(out), "healthy-tls", "login")
    assert login["state"]["vantage"] == "aaa" and login["state"]["verdict"] == "CRIT"
    # The merged file reads back with the vantages (report/load.py) and writes the same.
    from pop3mon.report.json_report import results_document
    from pop3mon.report.load import load_results

    again = results_document(load_results(out / "results.json").report)
    assert again["changes"] == told
    assert again["connections"] == doc(out)["connections"]


def test_a_new_baseline_hides_no_other_vantage(rounds: dict[str, Path], tmp_path: Path) -> None:
    """ccc's history is new; aaa's says its login is newly CRIT: the merge prints both."""
    out = tmp_path / "merged"
    proc = merge(f"--out={out}", rounds["aaa3"], rounds["ccc3"])
    assert proc.returncode == 0, proc.stderr
    assert "history: ccc: new baseline" in proc.stdout
    assert "new since last run: healthy-tls login (CRIT from aaa)" in proc.stdout
    assert doc(out)["history"]["note"].startswith("ccc: new baseline")


def test_a_check_new_in_an_older_history_is_news_beside_a_new_baseline(
    lab: Lab, rounds: dict[str, Path], tmp_path: Path
) -> None:
    """eee's history has an earlier run (of healthy-tls only): closed-tls failing in its
    second run is news, from nothing before (a change with no "before"), and ccc's new
    baseline in the same merge does not hide it (neither in the output nor in the page)."""
    history = f"--history={tmp_path / 'eee.sqlite'}"
    run(lab, tmp_path / "eee1", "eee", history, "-k", "healthy")
    run(lab, tmp_path / "eee2", "eee", history)
    alone = merge(f"--out={tmp_path / 'alone'}", tmp_path / "eee2")
    assert "closed-tls tcp (CRIT)" in alone.stdout, alone.stdout  # as eee's run says it
    out = tmp_path / "merged"
    proc = merge(f"--out={out}", tmp_path / "eee2", rounds["ccc3"])
    assert proc.returncode == 0, proc.stderr
    assert "history: ccc: new baseline" in proc.stdout
    assert "closed-tls tcp (CRIT from eee)" in proc.stdout, proc.stdout
    page = (out / "report.html").read_text("utf-8")
    assert "first run with history from ccc" in page
    assert re.search(r"\d+ new[^<]* since the last run", page), "eee's news is on the page"


@pytest.fixture(scope="module")
def partial(
    lab: Lab, rounds: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """bbb's round 2 (its login CRIT) merged with ddd, which ran only the TLS and
    connectivity checks of s1 (``-m``, ``-k``): the merged reports and the merge's output."""
    base = tmp_path_factory.mktemp("partial")
    run(lab, base / "ddd", "ddd", "--no-history", "-m", "tls or connectivity", "-k", "healthy")
    proc = merge(f"--out={base / 'merged'}", rounds["bbb2"], base / "ddd")
    assert proc.returncode == 0, proc.stderr
    return base / "merged", proc.stdout


def test_a_check_one_vantage_never_ran_is_not_compared(partial: tuple[Path, str]) -> None:
    """No "network path" conclusion about a login ddd never tried: the finding says ddd
    did not run it, and the login check's reason says where it was not run."""
    out, stdout = partial
    assert "network path" not in stdout
    line = next(x for x in stdout.splitlines() if x.startswith("  healthy-tls:"))
    assert "fails from bbb, not compared: ddd did not run login" in line, stdout
    assert "[seen from bbb; not run from ddd]" in check(doc(out), "healthy-tls", "login")["reason"]
    assert "network path" not in (out / "report.html").read_text("utf-8")


def test_a_connection_type_one_vantage_did_not_probe_is_named(partial: tuple[Path, str]) -> None:
    """other-tls and closed-tls, not probed from ddd, are rows of their own ("–", "not
    probed from ddd") in the page and lines of the merge's output, never counted as
    "the same from all of them"."""
    out, stdout = partial
    assert "  other-tls: OK from bbb — not probed from ddd" in stdout
    page = (out / "report.html").read_text("utf-8")
    assert 'data-connection="other-tls"' in page and "not probed from ddd" in page
    assert "0 connection types looked the same from all of them" in page
    assert "2 connection types not probed from all of them" in page


def test_vantage_lines_fit_the_terminal(lab: Lab, rounds: dict[str, Path], tmp_path: Path) -> None:
    """Many long vantage names: the merge's per-connection lines wrap to COLUMNS."""
    names = [f"{'v' * 58}-{i:02d}" for i in range(4)]
    inputs = []
    for name in names:
        data = doc(rounds["aaa3"])
        data["run"]["vantage"] = name
        path = tmp_path / name / "results.json"
        path.parent.mkdir()
        path.write_text(json.dumps(data), encoding="utf-8")
        inputs.append(path)
    proc = merge(f"--out={tmp_path / 'merged'}", rounds["bbb3"], *inputs, COLUMNS="100")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(x.startswith("  healthy-tls: CRIT from") for x in lines), proc.stdout
    assert (
        max(map(len, lines[: lines.index(next(x for x in lines if x.startswith("wrote ")))])) <= 100
    )


def test_two_unsharded_runs_of_one_vantage_are_worded_as_runs(
    rounds: dict[str, Path], tmp_path: Path
) -> None:
    proc = merge(f"--out={tmp_path / 'merged'}", rounds["aaa1"], rounds["aaa2"])
    assert proc.returncode == 2
    assert "2 runs of vantage aaa (" in proc.stderr
    assert "give each vantage point its own --vantage, or merge one run per vantage" in proc.stderr
    assert "shards" not in proc.stderr


def test_vantages_sharing_one_history_do_not_overwrite_each_other(lab: Lab, tmp_path: Path) -> None:
    """aaa (fine) and bbb (wrong password) alternate on one --history: bbb's runs are
    not recorded (one WARN naming both vantages), use no baseline of aaa's (its
    credentials drift check SKIPs) and aaa's runs stay a steady OK."""
    shared = f"--history={tmp_path / 'shared.sqlite'}"
    outs = []
    for i, (vantage, good) in enumerate([("aaa", True), ("bbb", False)] * 2):
        reports = tmp_path / f"{vantage}-{i}"
        outs.append((vantage, run(lab, reports, vantage, shared, good=good), doc(reports)))
    for vantage, stdout, document in outs:
        assert "flapping" not in stdout and "recovered" not in stdout, stdout
        if vantage == "aaa":
            assert document["history"]["status"] in ("new", "ok")
            continue
        assert document["history"]["status"] == "warn"
        note = document["history"]["note"]
        assert "holds the runs of vantage aaa, this run is vantage bbb" in note
        assert "give each vantage point its own --history" in note
        assert "history: WARN" in stdout and "holds the runs of vantage aaa" in stdout
        drift = check(document, "healthy-tls", "credentials_changed")
        assert drift["verdict"] == "SKIP", drift
        assert "holds the runs of vantage aaa" in drift["reason"], drift  # not "unreadable"
    assert outs[2][2]["history"]["status"] == "ok"
    assert check(outs[2][2], "healthy-tls", "login")["state"]["runs"] == 2


def test_shards_of_one_vantage_still_share_a_history(lab: Lab, tmp_path: Path) -> None:
    shared = f"--history={tmp_path / 'shared.sqlite'}"
    for i in (1, 2):
        for k in (1, 2):
            reports = tmp_path / f"shard-{k}-{i}"
            run(lab, reports, "aaa", shared, f"--shard={k}/2", "--run-id=r" + str(i))
            document = doc(reports)
            assert document["connections"], f"shard {k}/2 has no connection type"
            assert document["history"]["status"] == ("new" if (i, k) == (1, 1) else "ok")


def test_a_merge_with_a_run_without_vantage_reads_back(lab: Lab, tmp_path: Path) -> None:
    """A run without --vantage beside bbb's is "(none)" in the merge's results.json; that
    file reads back: merging the folder again skips --out's earlier merge, and given by
    name it is refused as a merge of several vantages, not as a malformed file."""
    pytest_run(lab.targets, tmp_path / "runs" / "plain", "--no-history", env=lab.good)
    run(lab, tmp_path / "runs" / "bbb", "bbb", "--no-history")
    out = tmp_path / "runs" / "merged"
    first = merge(f"--out={out}", tmp_path / "runs" / "plain", tmp_path / "runs" / "bbb")
    assert first.returncode == 0, first.stderr
    assert "(none)" in doc(out)["connections"][0]["vantages"]
    again = merge(f"--out={out}", tmp_path / "runs")
    assert again.returncode == 0, again.stderr
    named = merge(f"--out={tmp_path / 'other'}", out / "results.json", tmp_path / "runs" / "bbb")
    assert named.returncode == 2
    assert "malformed" not in named.stderr and "is already a merge" in named.stderr, named.stderr


def test_of_equal_verdicts_the_vantage_whose_check_test_broke_after_it_is_chosen() -> None:
    """Two vantages saw a check OK; one's test then broke in a fixture's teardown (its run
    failed). Whatever the vantages' names, the merge keeps that record, so its junit.xml
    shows the error and ``--exit-status`` fails as that run did."""
    from pop3mon.report.merge import _worst_records
    from pop3mon.report.recorder import CheckRecord
    from pop3mon.verdict import Verdict

    def rec(broken: bool) -> CheckRecord:
        return CheckRecord(
            nodeid="tests_targets/test_connectivity.py::test_tcp[ct]",
            ct="ct",
            server="s",
            tier="connectivity",
            check="tcp",
            verdict=Verdict.OK,
            reason="connected",
            outcome="failed" if broken else "passed",
            broke_in="teardown" if broken else "",
            failure='failed on teardown with "RuntimeError: x"' if broken else "",
        )

    for broken_one in ("aaa", "zzz"):
        views = {name: [rec(name == broken_one)] for name in ("aaa", "zzz")}
        records, chosen = _worst_records(views)
        assert [r.broke_after_verdict for r in records] == [True]
        assert chosen == {"tcp": broken_one}
