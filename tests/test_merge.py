"""``pop3mon merge`` on real runs: shards of the Dovecot lab (plus fault servers for the
failing connection types) merged into one report set that equals the unsharded run's.

The fleet: four servers with a mix of outcomes, so the three shards of ``--shard=K/3`` get
different parts of it (an empty shard is a normal one):

============  ==========================================  ========
server        connection types                            worst
============  ==========================================  ========
dove          Dovecot implicit TLS and STLS, logging in   OK
slow          Dovecot implicit TLS, a tiny latency warn   WARN
expired       Dovecot, expired certificate                CRIT
faulty        fault server refusing STLS; a closed port   CRIT
============  ==========================================  ========

Two vantage points: the same targets run again with ``--vantage=eu-west`` inside a fresh
network namespace (``unshare -n``: its own loopback, on which none of the lab's servers
listen), a real network path that fails, beside ``--vantage=us-east`` on the host's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dovecot import DovecotLab, free_port
from pop3mon_lab.faultserver import FaultServer

REPO = Path(__file__).resolve().parent.parent
PLUGINS = REPO / "plugins"
PW_ENV = "POP3MON_MERGE_PW"
SHARDS = 3
RUN_ID = "merge-run-1"
#: The coverage checks' id of the fleet's server with ``coverage:`` on.
COVERAGE = "server:dove"
REPORTS = ("report.html", "junit.xml", "results.json", "metrics.prom")
_NUMBER = re.compile(r"\d+(\.\d+)?")
#: A greeting's APOP challenge (Dovecot's, the fault server's) differs on every connect.
_CHALLENGE = re.compile(r"<[^<>]*@[^<>]*>")


# --------------------------------------------------------------------------- helpers
def pytest_run(
    targets: Path, reports: Path, *args: str, env: Mapping[str, str], netns: bool = False
) -> subprocess.CompletedProcess[str]:
    """The suite as a process (``netns``: in a new network namespace, its loopback up)."""
    cmd = [sys.executable, "-m", "pytest", f"--targets={targets}", f"--reports-dir={reports}"]
    cmd += ["-p", "no:cacheprovider", "-p", "no:randomly", *args]
    if netns:
        cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("POP3MON_", "PYTEST_"))}
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def merge(*args: str | Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """``pop3mon merge ARGS`` as a process (``extra``: more environment)."""
    env = {**os.environ, "PYTHONPATH": str(PLUGINS), "COLUMNS": "100", **extra}
    return subprocess.run(
        [sys.executable, "-m", "pop3mon.cli", "merge", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def doc(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "results.json").read_text("utf-8"))
    return data


def facts(document: Mapping[str, Any]) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(id, tier, check) → (verdict, reason with its numbers blanked: timings differ
    between two runs, and the fault server's greeting carries a timestamp), for every
    check: connection types', host checks' (id host:<server>) and coverage checks' (id
    server:<name>)."""
    out = {}
    entries = [(c["id"], c["checks"]) for c in document["connections"]]
    entries += [(h["host"]["id"], h["checks"]) for h in document["hosts"]]
    entries += [(c["coverage"]["id"], c["checks"]) for c in document["coverage"]]
    for ident, checks in entries:
        for chk in checks:
            key = (ident, chk["tier"], chk["check"])
            assert key not in out, f"{key} twice in results.json"
            reason = _CHALLENGE.sub("<challenge>", chk["reason"])
            out[key] = (chk["verdict"], _NUMBER.sub("#", reason))
    return out


def summary(stdout: str) -> str:
    """The root causes of a pop3mon summary (from its CRIT line to its OK line), words
    joined by one space (the two may wrap differently) and numbers blanked."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("CRIT ("))
    end = next(i for i, line in enumerate(lines) if line.startswith("OK: "))
    return _NUMBER.sub("#", " ".join(" ".join(lines[start:end]).split()))


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# --------------------------------------------------------------------------- the lab
@dataclass
class Fleet:
    targets: Path
    env: dict[str, str]
    worst: dict[str, str]  # expected worst verdict per connection type
    stack: ExitStack


@pytest.fixture(scope="module")
def fleet(
    dovecot: DovecotLab, lab_certs: LabCerts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("merge-fleet")
    with ExitStack() as stack:
        cert = lab_certs.variant("valid")
        nostls = stack.enter_context(
            FaultServer("no-stls", users={"alice": "pw"}, certfile=cert.cert, keyfile=cert.key)
        )
        account = f"{{username: {dovecot.demo_user}, password_env: {PW_ENV}}}"
        targets = directory / "targets.yaml"
        targets.write_text(
            f"""version: 1
defaults:
  ca_file: {dovecot.ca_file}
  timeout: 5
  login_pacing: parallel
  account: {account}
servers:
  - name: dove
    host: {dovecot.hostname}
    # The coverage tier: the expired instance's plaintext listener is monitored by no
    # connection type (a cleartext finding); its implicit TLS one is, by another server
    # (another shard, perhaps: a shard still compares with the whole file).
    coverage:
      ports: [{dovecot.port("pop3s", "expired")}, {dovecot.port("pop3", "expired")}]
    connections:
      - {{id: dove-tls, port: {dovecot.port("pop3s")}, security: tls}}
      - {{id: dove-stls, port: {dovecot.port("pop3")}, security: starttls}}
  - name: slow
    host: {dovecot.hostname}
    connections:
      - id: slow-tls
        port: {dovecot.port("pop3s")}
        security: tls
        latency: {{total: {{warn: 0.000001, crit: 60}}}}
  - name: expired
    host: {dovecot.hostname}
    connections:
      - {{id: expired-tls, port: {dovecot.port("pop3s", "expired")}, security: tls}}
  - name: faulty
    host: localhost
    connections:
      - {{id: faulty-nostls, port: {nostls.port}, security: starttls, auth: none}}
      - {{id: faulty-closed, port: {free_port()}, security: tls, auth: none}}
""",
            encoding="utf-8",
        )
        yield Fleet(
            targets=targets,
            env={PW_ENV: dovecot.demo_password},
            worst={
                "dove-tls": "OK",
                "dove-stls": "OK",
                "slow-tls": "WARN",
                "expired-tls": "CRIT",
                "faulty-nostls": "CRIT",
                "faulty-closed": "CRIT",
            },
            stack=stack,
        )


@pytest.fixture(scope="module")
def runs(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fleet unsharded, and as three shards of one run (each with its own history)."""
    base = tmp_path_factory.mktemp("merge-runs")
    out = {"whole": base / "whole"}
    proc = pytest_run(fleet.targets, out["whole"], env={**fleet.env, "COLUMNS": "100"})
    (base / "whole.stdout").write_text(proc.stdout, encoding="utf-8")
    for k in range(1, SHARDS + 1):
        out[f"shard-{k}"] = base / "shards" / f"shard-{k}"
        pytest_run(
            fleet.targets,
            out[f"shard-{k}"],
            f"--shard={k}/{SHARDS}",
            f"--run-id={RUN_ID}",
            env=fleet.env,
        )
    return out


@pytest.fixture(scope="module")
def merged(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three shards merged (the shards' parent directory as the one INPUT)."""
    out = tmp_path_factory.mktemp("merged") / "reports"
    proc = merge(f"--out={out}", "--expect-shards=3", runs["shard-1"].parent)
    assert proc.returncode == 0, proc.stderr
    assert f"merged {SHARDS} result file(s) of run {RUN_ID}" in proc.stdout
    (out.parent / "merge.stdout").write_text(proc.stdout, encoding="utf-8")
    return out


# --------------------------------------------------------------------------- round trip
def test_results_json_round_trips_into_the_same_reports(runs: dict[str, Path]) -> None:
    """A run's results.json read back (report/load.py) writes the same results.json, the
    same metrics.prom and JUnit testcases equal to pytest's (names, classnames, times,
    properties, failure and skip messages, WARN suffix), plus the suite's properties."""
    from pop3mon.report.json_report import results_document
    from pop3mon.report.junit import JUnitOptions, junit_text
    from pop3mon.report.load import load_results
    from pop3mon.report.metrics import metrics_text

    whole = runs["whole"]
    report = load_results(whole / "results.json").report
    again = json.loads(json.dumps(results_document(report)))
    original = doc(whole)
    # The documented difference: the run's epochs are stored to 1 ms, so its duration,
    # recomputed from them, may differ in the last digit (two epochs rounded to 1 ms and the
    # duration rounded once more: 1.5 ms, plus a float epsilon for a tie).
    duration = again["run"].pop("duration_seconds") - original["run"].pop("duration_seconds")
    assert abs(duration) <= 0.0015 + 1e-9
    assert again == original
    assert _same_run_duration(metrics_text(report)) == _same_run_duration(
        (whole / "metrics.prom").read_text("utf-8")
    )
    ours = _junit(junit_text(report, JUnitOptions()))
    theirs = _junit((whole / "junit.xml").read_text("utf-8"))
    skip = "pop3mon_duration_seconds"
    assert [p for p in ours[0] if p[0] != skip] == [p for p in theirs[0] if p[0] != skip]
    assert ours[1] == theirs[1]  # every testcase
    assert any(name.endswith(" [WARN]") for _, name in ours[1])


def _same_run_duration(text: str) -> str:
    return re.sub(r"(?m)^pop3mon_run_duration_seconds .*$", "", text)


def _junit(text: str) -> tuple[list[tuple[str, str]], dict[tuple[str, str], Any]]:
    root = ET.fromstring(text.split("?>", 1)[-1])
    suite = root.find("testsuite")
    assert suite is not None
    holder = suite.find("properties")
    props = [(p.get("name", ""), p.get("value", "")) for p in (holder or [])]
    cases = {}
    for case in root.iter("testcase"):
        key = (case.get("classname", ""), case.get("name", ""))
        assert key not in cases, f"{key} twice in junit.xml"
        cases[key] = (
            case.get("time"),
            [(p.get("name"), p.get("value")) for p in case.iter("property")],
            [(e.tag, e.get("message")) for e in case if e.tag in ("failure", "skipped", "error")],
            case.findtext("system-out"),
        )
    return props, cases


# --------------------------------------------------------------------------- shards
def test_merged_shards_equal_the_unsharded_run(runs: dict[str, Path], merged: Path) -> None:
    """Same connection types, verdicts and reasons as the unsharded run; the counts too;
    the shards' histories carried (every check has its state, as each shard recorded)."""
    whole, mine = doc(runs["whole"]), doc(merged)
    shard_ids = [doc(runs[f"shard-{k}"])["run"]["connection_ids"] for k in (1, 2, 3)]
    assert sum(1 for ids in shard_ids if ids) >= 2, f"the split put all in one shard: {shard_ids}"
    assert [c["id"] for c in mine["connections"]] == [c["id"] for c in whole["connections"]]
    assert facts(mine) == facts(whole)
    assert mine["counts"] == whole["counts"]
    assert {c["id"]: c["verdict"] for c in mine["connections"]} == {
        c["id"]: c["verdict"] for c in whole["connections"]
    }
    assert mine["run"]["id"] == RUN_ID and mine["run"]["shard"] is None
    assert mine["run"]["connection_ids"] == whole["run"]["connection_ids"]
    assert mine["history"]["status"] == "new"
    assert all(chk["state"] is not None for c in mine["connections"] for chk in c["checks"])
    assert {p.name for p in merged.iterdir()} == set(REPORTS)
    # The host checks and the coverage tier came along (facts() holds their checks too):
    # the coverage finding, what its discovery found and its history states.
    assert {h["host"]["id"] for h in mine["hosts"]} == {"host:dove", "host:faulty"}
    cov = (COVERAGE, "coverage", "coverage-unmonitored")
    assert facts(whole)[cov][0] == "CRIT"
    assert "cleartext login before TLS" in facts(whole)[cov][1]
    assert _coverage_found(mine) == _coverage_found(whole)
    assert all(chk["state"] is not None for c in mine["coverage"] for chk in c["checks"])
    # The merge's output names the root causes as the unsharded run's summary does.
    merge_out = (merged.parent / "merge.stdout").read_text("utf-8")
    whole_out = (runs["whole"].parent / "whole.stdout").read_text("utf-8")
    assert summary(merge_out) == summary(whole_out)
    assert f"{COVERAGE} coverage/coverage-unmonitored" in summary(merge_out)


def test_merged_shards_list_changes_in_the_unsharded_order(
    runs: dict[str, Path], merged: Path
) -> None:
    """Each shard's first run tells its failing checks as new: merged, the changes are
    those of the unsharded run in its order (connection types, host checks, coverage
    checks), not one shard's after the other's."""

    def told(document: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
        return [(c["kind"], c["connection"], c["check"], c["after"]) for c in document["changes"]]

    whole = told(doc(runs["whole"]))
    assert len({c[1] for c in whole}) > 2, whole
    assert told(doc(merged)) == whole


def _coverage_found(document: Mapping[str, Any]) -> list[Any]:
    """Each coverage entry: settings, verdict and what discovery found, without timings
    (``elapsed``) and greetings (an APOP challenge differs on every connect)."""

    def untimed(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if k != "elapsed"}
        if isinstance(value, list):
            return [untimed(v) for v in value]
        return _CHALLENGE.sub("<challenge>", value) if isinstance(value, str) else value

    return [(e["coverage"], e["verdict"], untimed(e["discovery"])) for e in document["coverage"]]


def test_every_check_appears_once_in_every_merged_report(merged: Path) -> None:
    """Each (connection type, tier, check) once in results.json, junit.xml and
    metrics.prom; every connection type in every tier."""
    from prometheus_client.parser import text_string_to_metric_families

    document = doc(merged)
    in_json = Counter(facts(document).keys())
    _, cases = _junit((merged / "junit.xml").read_text("utf-8"))
    in_junit = Counter(
        (dict(c[1])["pop3mon_ct"], dict(c[1])["pop3mon_tier"], dict(c[1])["pop3mon_check"])
        for c in cases.values()
    )
    text = (merged / "metrics.prom").read_text("utf-8")
    samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    in_metrics = Counter(
        (s.labels["connection"], s.labels["tier"], s.labels["check"])
        for s in samples
        if s.name == "pop3mon_check_verdict"
    )
    in_metrics += Counter(
        (f"host:{s.labels['server']}", "host", s.labels["check"])
        for s in samples
        if s.name == "pop3mon_host_check_verdict"
    )
    in_metrics += Counter(
        (f"server:{s.labels['server']}", "coverage", s.labels["check"])
        for s in samples
        if s.name == "pop3mon_coverage_check_verdict"
    )
    assert {k[0] for k in in_json} >= {"host:dove", COVERAGE}
    assert set(in_json.values()) == {1}
    assert in_junit == in_json
    assert in_metrics == in_json
    tiers = {(ct, tier) for ct, tier, _ in in_json}
    ids = {c["id"] for c in document["connections"]}
    for tier in ("connectivity", "tls", "auth", "mailbox", "latency", "drift"):
        assert {(i, tier) for i in ids} <= tiers


def test_merged_html_is_one_self_contained_page(merged: Path, runs: dict[str, Path]) -> None:
    """Every connection type once in the matrix and once in the details, no pytest-html,
    nothing loaded from elsewhere."""
    page = (merged / "report.html").read_text("utf-8")
    for ct in doc(runs["whole"])["connections"]:
        assert page.count(f'data-connection="{ct["id"]}"') == 1
    # The coverage row under its server's group head, as in the unsharded run's page.
    whole = (runs["whole"] / "report.html").read_text("utf-8")
    row = re.compile(r'<tr class="p3m-coverage" data-coverage="server:dove".*?</tr>', re.S)
    found = [_NUMBER.sub("#", m) for m in row.findall(page)]
    assert len(found) == 1
    assert found == [_NUMBER.sub("#", m) for m in row.findall(whole)]
    assert page.index('data-server="dove"') < page.index('data-coverage="server:dove"')
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "fetches from elsewhere"
    assert 'id="pop3mon-matrix"' in page and 'id="pop3mon-details"' in page
    assert f"<td>{RUN_ID}</td>" in page


def _with_verdicts(document: Mapping[str, Any], change: Mapping[str, str], path: Path) -> Path:
    """``document`` with every check's verdict mapped by ``change``, written to ``path``."""
    data = json.loads(json.dumps(document))
    entries = [*data["connections"], *data["hosts"], *data["coverage"]]
    for chk in (c for e in entries for c in e["checks"]):
        chk["verdict"] = change.get(chk["verdict"], chk["verdict"])
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_exit_status_is_the_runs_rule(merged: Path, tmp_path: Path) -> None:
    """``--exit-status``: 1 when the merged report has CRIT or ERROR (or WARN with
    ``--strict-warn`` or POP3MON_STRICT_WARN=1), as a run's exit status; written either
    way. Without it a merge exits 0 whatever the verdicts."""
    document = doc(merged)
    assert document["counts"]["CRIT"] and document["counts"]["WARN"]
    out = tmp_path / "out"
    plain = merge(f"--out={out}", merged)
    assert plain.returncode == 0, plain.stderr
    failing = merge("--exit-status", f"--out={out}", merged)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "pop3mon merge: exit 1: the merged report has CRIT" in failing.stderr
    assert doc(out)["counts"] == document["counts"], "written before the exit status"
    warn_only = _with_verdicts(document, {"CRIT": "OK", "ERROR": "OK"}, tmp_path / "w.json")
    error = _with_verdicts(document, {"CRIT": "ERROR"}, tmp_path / "e.json")
    cases: list[tuple[tuple[str, ...], dict[str, str], int]] = [
        (("--exit-status", str(warn_only)), {}, 0),
        (("--exit-status", "--strict-warn", str(warn_only)), {}, 1),
        (("--exit-status", str(warn_only)), {"POP3MON_STRICT_WARN": "1"}, 1),
        (("--exit-status", str(warn_only)), {"POP3MON_STRICT_WARN": "off"}, 0),
        (("--exit-status", str(error)), {}, 1),
        ((str(error),), {}, 0),
    ]
    for args, env, rc in cases:
        proc = merge(f"--out={out}", *args, **env)
        assert proc.returncode == rc, (args, env, proc.stdout + proc.stderr)
        assert "Traceback" not in proc.stderr
    before = snapshot(out)
    bad = merge("--exit-status", f"--out={out}", warn_only, POP3MON_STRICT_WARN="maybe")
    assert bad.returncode == 2 and "POP3MON_STRICT_WARN must be 1 or 0" in bad.stderr
    assert snapshot(out) == before


def _merge_at_once(barrier: Any, out: Path, inputs: Path) -> None:
    """One writer of :func:`test_concurrent_merges_into_one_directory` (a forked child)."""
    from pop3mon import cli

    barrier.wait()
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        code = cli.main(["merge", f"--out={out}", str(inputs)])
    os._exit(code)


def test_concurrent_merges_into_one_directory(merged: Path, tmp_path: Path) -> None:
    """Several merges into one --out at the same moment (the Kubernetes template's last
    pods finishing together): each succeeds, and the directory holds one complete set of
    one run and no temporary file. A killed writer's temporary, once old, is removed; a
    fresh one (a writer still at work) is not."""
    import multiprocessing

    from pop3mon.report.reportset import STALE_AFTER

    out = tmp_path / "reports"
    out.mkdir()
    killed = out / ".results.json.some-run.1234-deadbeef.tmp"
    killed.write_text("half a file", encoding="utf-8")
    old = time.time() - STALE_AFTER - 60
    os.utime(killed, (old, old))
    working = out / ".junit.xml.other-run.5678-cafe.tmp"
    working.write_text("being written", encoding="utf-8")
    ctx = multiprocessing.get_context("fork")
    writers = 4
    for _ in range(5):
        barrier = ctx.Barrier(writers)
        procs = [
            ctx.Process(target=_merge_at_once, args=(barrier, out, merged)) for _ in range(writers)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [p.exitcode for p in procs] == [0] * writers
        assert sorted(p.name for p in out.iterdir()) == sorted([*REPORTS, working.name]), (
            "a temporary file was left, or one of another writer removed"
        )
        document = doc(out)
        assert facts(document) == facts(doc(merged))
        run_id = document["run"]["id"]
        assert f'name="pop3mon_run_id" value="{run_id}"' in (out / "junit.xml").read_text("utf-8")
        assert f"<td>{run_id}</td>" in (out / "report.html").read_text("utf-8")
        assert "pop3mon_run_start_timestamp_seconds" in (out / "metrics.prom").read_text("utf-8")


# --------------------------------------------------------------------------- refusals
@pytest.fixture
def previous(tmp_path: Path, runs: dict[str, Path]) -> tuple[Path, dict[str, bytes]]:
    """A reports directory holding an earlier merge (which a refusal must leave alone)."""
    out = tmp_path / "out"
    assert merge(f"--out={out}", runs["shard-1"].parent).returncode == 0
    return out, snapshot(out)


def _refused(
    out: Path, before: Mapping[str, bytes], proc: subprocess.CompletedProcess[str]
) -> list[str]:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(out) == before, "a refused merge changed the reports"
    return proc.stderr.splitlines()


def test_a_missing_shard_is_named(
    previous: tuple[Path, dict[str, bytes]], runs: dict[str, Path]
) -> None:
    out, before = previous
    lines = _refused(out, before, merge(f"--out={out}", runs["shard-1"], runs["shard-3"]))
    assert lines == [f"pop3mon: error: shard 2/3 of run {RUN_ID} is missing"]


def test_if_complete_waits_for_missing_shards(
    previous: tuple[Path, dict[str, bytes]], runs: dict[str, Path]
) -> None:
    """Missing shards: exit 0, which ones, nothing written; other refusals stay exit 2."""
    out, before = previous
    proc = merge("--if-complete", f"--out={out}", runs["shard-2"])
    assert proc.returncode == 0, proc.stderr
    assert f"not yet: shard 1/3 of run {RUN_ID} is missing" in proc.stdout
    assert f"not yet: shard 3/3 of run {RUN_ID} is missing" in proc.stdout
    assert snapshot(out) == before
    proc = merge("--if-complete", "--expect-shards=4", f"--out={out}", runs["shard-2"])
    lines = _refused(out, before, proc)
    assert f"pop3mon: error: --expect-shards=4, but run {RUN_ID} has 3 shards" in lines


def test_a_duplicated_shard_is_refused(
    previous: tuple[Path, dict[str, bytes]], runs: dict[str, Path], tmp_path: Path
) -> None:
    out, before = previous
    copy = tmp_path / "downloaded-again"
    shutil.copytree(runs["shard-2"], copy)
    lines = _refused(out, before, merge(f"--out={out}", runs["shard-1"].parent, copy))
    assert len(lines) >= 1
    assert lines[0].startswith(f"pop3mon: error: shard 2/3 of run {RUN_ID} is there twice: ")
    assert str(copy / "results.json") in lines[0]
    # The same connection types twice are named as well (when shard 2 has any).
    if doc(runs["shard-2"])["connections"]:
        assert any("is in two shards" in line for line in lines) or len(lines) == 1


def test_shards_of_another_targets_file_or_run_are_refused(
    previous: tuple[Path, dict[str, bytes]],
    runs: dict[str, Path],
    fleet: Fleet,
    tmp_path: Path,
) -> None:
    """A shard of another targets file (one comment more: another sha256) and a shard of
    another run id: each refusal names the problem and the files."""
    out, before = previous
    other = tmp_path / "other.yaml"
    other.write_text(fleet.targets.read_text("utf-8") + "# changed\n", encoding="utf-8")
    foreign = tmp_path / "foreign"
    # The shard of the fleet with the fewest connection types keeps these runs short.
    k = min((1, 2, 3), key=lambda i: len(doc(runs[f"shard-{i}"])["connections"]))
    pytest_run(other, foreign, f"--shard={k}/3", f"--run-id={RUN_ID}", env=fleet.env)
    mixed = [runs[f"shard-{i}"] for i in (1, 2, 3) if i != k]
    lines = _refused(out, before, merge(f"--out={out}", *mixed, foreign))
    assert len(lines) == 1
    assert lines[0].startswith("pop3mon: error: the inputs come from 2 different targets files:")
    assert str(foreign / "results.json") in lines[0] and "other.yaml" in lines[0]
    later = tmp_path / "later"
    pytest_run(fleet.targets, later, f"--shard={k}/3", "--run-id=merge-run-2", env=fleet.env)
    lines = _refused(out, before, merge(f"--out={out}", *mixed, later))
    assert len(lines) == 1
    assert "come from 2 different runs" in lines[0]
    assert f"merge-run-2 in {later / 'results.json'}" in lines[0]


def test_unusable_inputs_are_one_line_each(
    previous: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    out, before = previous
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    other = tmp_path / "other.json"
    other.write_text('{"schema": "something/else"}', encoding="utf-8")
    proc = merge(f"--out={out}", tmp_path / "empty", broken, other, tmp_path / "nowhere")
    lines = _refused(out, before, proc)
    assert len(lines) == 4, lines
    assert "no results.json in it" in lines[0]
    assert "not JSON" in lines[1]
    assert "not a pop3mon results file" in lines[2]
    assert "no such file or directory" in lines[3]


def test_the_merge_imports_no_pytest(merged: Path, tmp_path: Path) -> None:
    """``pop3mon merge`` writes its reports without pytest (test_layers.py's rule for the
    command)."""
    code = (
        "import sys\n"
        "from pop3mon import cli\n"
        f"assert cli.main(['merge', '--out={tmp_path / 'again'}', '{merged}']) == 0\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest'))\n"
        "print('PYTEST:' + ','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(PLUGINS), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "PYTEST:\n" in out.stdout, out.stdout
    # A merged report merges again into the same report (it is one whole run).
    assert facts(doc(tmp_path / "again")) == facts(doc(merged))


# --------------------------------------------------------------------------- vantages
def _netns_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = ["unshare", "-n", "sh", "-c", "ip link set lo up"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def vantages(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """us-east on the host's network, eu-west in a network namespace where nothing of the
    lab is reachable, merged: the merged reports and the merge's output."""
    if not _netns_works():
        pytest.skip("needs unshare -n and ip (a network namespace) for the failing vantage")
    base = tmp_path_factory.mktemp("vantages")
    pytest_run(fleet.targets, base / "us-east", "--vantage=us-east", env=fleet.env)
    pytest_run(fleet.targets, base / "eu-west", "--vantage=eu-west", env=fleet.env, netns=True)
    out = base / "merged"
    proc = merge(f"--out={out}", base / "us-east", base / "eu-west")
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_two_vantages_tell_the_network_path_from_the_server(
    vantages: tuple[Path, str], fleet: Fleet
) -> None:
    """What is healthy from us-east and fails from eu-west "fails only from eu-west"; what
    fails from both (a server problem) has no such finding; each verdict is the worst."""
    out, stdout = vantages
    document = doc(out)
    by_id = {c["id"]: c for c in document["connections"]}
    assert set(by_id) == set(fleet.worst)
    finding = "fails only from eu-west: network path, not the server"
    for ct, expected in fleet.worst.items():
        conn = by_id[ct]
        seen = {name: view["verdict"] for name, view in conn["vantages"].items()}
        assert seen["us-east"] == expected, (ct, seen)
        assert seen["eu-west"] == "CRIT", (ct, seen)
        assert conn["verdict"] == "CRIT"  # the worst over both
        # A line wraps to the terminal width: its continuation lines are indented more.
        joined = re.sub(r"\n {4,}", " ", stdout)
        line = next((x for x in joined.splitlines() if x.strip().startswith(f"{ct}:")), "")
        if expected in ("OK", "WARN"):
            assert finding in line, stdout
        else:
            assert line == "", stdout
    page = (out / "report.html").read_text("utf-8")
    assert 'id="pop3mon-vantages"' in page and finding in page
    # The unmonitored listener answers only on us-east's network: a finding seen from one
    # vantage is the merged report's finding (JSON, JUnit, metrics, page and output).
    checks = facts(document)
    verdict, reason = checks[(COVERAGE, "coverage", "coverage-unmonitored")]
    assert verdict == "CRIT" and "[seen from us-east; " in reason, reason
    assert "cleartext login before TLS" in reason
    assert f"{COVERAGE} coverage/coverage-unmonitored" in stdout
    assert 'data-coverage="server:dove"' in page
    _, cases = _junit((out / "junit.xml").read_text("utf-8"))
    assert any(
        dict(c[1])["pop3mon_ct"] == COVERAGE and dict(c[1])["pop3mon_verdict"] == "CRIT"
        for c in cases.values()
    )
    # The host checks likewise: down from eu-west (nothing listens there), so CRIT.
    assert checks[("host:dove", "host", "tcp")][0] == "CRIT"
    assert document["run"]["vantage"] is None
    assert "us-east" in document["run"]["id"] or document["run"]["id"].startswith("merge-")
    # Metrics: one series per vantage for a connection type's families.
    from prometheus_client.parser import text_string_to_metric_families

    text = (out / "metrics.prom").read_text("utf-8")
    tcp = {
        (s.labels["connection"], s.labels["vantage"]): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "pop3mon_check_verdict" and s.labels["check"] == "tcp"
    }
    assert len(tcp) == 2 * len(fleet.worst)
    assert tcp[("dove-tls", "us-east")] == 0  # OK
    assert tcp[("dove-tls", "eu-west")] != 0  # not OK: blocked or refused
    coverage = {
        s.labels["check"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "pop3mon_coverage_check_verdict"
    }
    assert coverage["coverage-unmonitored"] == 2  # CRIT
    # A multi-vantage merge is no run to merge again.
    proc = merge(f"--out={out.parent / 'again'}", out, out.parent / "us-east")
    assert proc.returncode == 2
    assert "is already a merge (pop3mon merge of 2 inputs)" in proc.stderr


# --------------------------------------------------------------------------- browser
def test_merged_page_in_a_real_browser(merged: Path) -> None:
    """Headless Chromium opens the merged report offline, without console errors, and
    its filter works (the script came along without pytest-html)."""
    pytest.importorskip("playwright.sync_api")
    import test_browser  # the browser fixture's launch options and request guard
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(test_browser.CHROMIUM), headless=True, args=test_browser.ARGS
        )
        try:
            page = chromium.new_page()
            guard = test_browser._Guard(page)
            page.goto((merged / "report.html").as_uri(), wait_until="load")
            assert page.locator("#p3m-search").is_visible()
            everything = test_browser._visible_rows(page)
            assert len(everything) == 6
            page.fill("#p3m-filter", "CRIT")
            shown = test_browser._visible_rows(page)
            crit = {c["id"] for c in doc(merged)["connections"] if c["verdict"] == "CRIT"}
            assert set(shown) == crit
            assert page.locator("#p3m-shown").inner_text() == f"{len(crit)} of 6 shown"
            test_browser._clean(guard)
        finally:
            chromium.close()


# --------------------------------------------------------------------------- README
def _readme_merge_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Merging shards and vantage points", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, re.M | re.S)
    return [line for b in blocks for line in b.splitlines() if line.startswith("pop3mon merge ")]


def test_readme_merge_commands_run_as_written(
    runs: dict[str, Path], vantages: tuple[Path, str], tmp_path: Path
) -> None:
    """Each ``pop3mon merge`` line of the README runs as written (a shell, ``pop3mon`` on
    PATH) in a directory laid out as its paths say: the three shards as ``reports/shard-*``
    and under ``reports/shards/``, the two vantages as ``reports/us-east`` and ``eu-west``."""
    commands = _readme_merge_commands()
    assert len(commands) == 3, commands
    work = tmp_path / "checkout"
    for k in range(1, SHARDS + 1):
        shutil.copytree(runs[f"shard-{k}"], work / "reports" / f"shard-{k}")
        shutil.copytree(runs[f"shard-{k}"], work / "reports" / "shards" / f"shard-{k}")
    base = vantages[0].parent
    for name in ("us-east", "eu-west"):
        shutil.copytree(base / name, work / "reports" / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "pop3mon"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pop3mon.cli "$@"\n', "utf-8")
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(PLUGINS),
    }
    for line in commands:
        shutil.rmtree(work / "reports" / "merged", ignore_errors=True)
        proc = subprocess.run(
            ["sh", "-c", line], cwd=work, env=env, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
        assert {p.name for p in (work / "reports" / "merged").iterdir()} == set(REPORTS), line
        assert len(doc(work / "reports" / "merged")["connections"]) == 6, line


def test_out_among_the_inputs_is_refused_or_skipped(runs: dict[str, Path], tmp_path: Path) -> None:
    """--out a shard's own directory would overwrite its results.json: refused, the shard
    unchanged. An earlier merge in --out inside a folder of inputs is skipped (merging
    again works); a merged results.json given as input is refused as a merge by name."""
    shard = runs["shard-1"]
    before = snapshot(shard)
    lines = _refused(shard, before, merge(f"--out={shard}", runs["shard-1"].parent))
    assert lines == [
        f"pop3mon: error: --out={shard} holds the input {shard / 'results.json'}: the merge "
        "would overwrite it; choose a directory of its own for --out"
    ]
    art = tmp_path / "artifacts"
    shutil.copytree(runs["shard-1"].parent, art)
    first = merge(f"--out={art / 'merged'}", art)
    assert first.returncode == 0, first.stderr
    assert doc(art / "merged")["run"]["merged_from"] == [
        str(art / f"shard-{k}" / "results.json") for k in range(1, SHARDS + 1)
    ]
    again = merge(f"--out={art / 'merged'}", art)
    assert again.returncode == 0, again.stderr
    other = tmp_path / "other"
    proc = merge(f"--out={other}", art)
    assert proc.returncode == 2 and not other.exists()
    assert proc.stderr.splitlines() == [
        f"pop3mon: error: {art / 'merged' / 'results.json'} is already a merge (pop3mon merge "
        f"of {SHARDS} inputs) of run {RUN_ID}, and {SHARDS} other input(s) came with it: give "
        "either the merge or the runs it was merged from"
    ]


@pytest.mark.parametrize(
    ("run", "says"),
    [
        ({"shard": {"index": 0, "total": 0}}, "run.shard 0/0 is not K/N"),
        ({"shard": {"index": 5, "total": 3}}, "run.shard 5/3 is not K/N"),
        ({"vantage": "eu\nwest\x1b[31m"}, "run.vantage 'eu\\nwest\\x1b[31m' is not a vantage"),
    ],
)
def test_a_crafted_shard_or_vantage_is_refused(
    runs: dict[str, Path], tmp_path: Path, run: Mapping[str, Any], says: str
) -> None:
    """results.json is input from elsewhere: shard 0 of 0 is no complete merge, and a
    vantage with a newline or an escape never reaches the terminal."""
    data = doc(runs["shard-1"])
    data["run"].update(run)
    crafted = tmp_path / "crafted.json"
    crafted.write_text(json.dumps(data), encoding="utf-8")
    proc = merge(f"--out={tmp_path / 'out'}", crafted)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        f"pop3mon: error: {crafted}: malformed results file ({says}"
        + proc.stderr.split(says, 1)[1].rstrip("\n")
    ]
    assert "\x1b" not in proc.stderr + proc.stdout and not (tmp_path / "out").exists()


def test_reports_written_in_parallel_equal_those_written_in_one_process(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """A large set is written by two processes (junit.xml and metrics.prom by a forked
    child, ``report/parallel.py``): byte for byte the set one process writes. Run in a
    fresh single-threaded interpreter (an xdist worker has threads and never forks)."""
    script = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(PLUGINS)!r})
from pop3mon.report import standalone
from pop3mon.report.load import load_results

forked = []
real = standalone.in_parallel

def watched(*args, **kwargs):
    forked.append(real(*args, **kwargs))
    return forked[-1]

standalone.in_parallel = watched
report = load_results(Path(sys.argv[1])).report
standalone.PARALLEL_MIN_CHECKS = 0
standalone.write_report_set(report, Path(sys.argv[2]))
standalone.PARALLEL_MIN_CHECKS = 10**9
standalone.write_report_set(report, Path(sys.argv[3]))
print(forked)
"""
    two, one = tmp_path / "two", tmp_path / "one"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(runs["whole"] / "results.json"), str(two), str(one)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[True, False]"
    assert snapshot(two) == snapshot(one)
    assert set(snapshot(two)) == set(REPORTS)


# --------------------------------------------------------------------------- review: inputs
#: The multi-vantage workflow as the Kubernetes template's header writes it: each cluster
#: merges its own shards, then the clusters' merged reports are merged.
_K8S_VANTAGES = re.compile(r"`(pop3mon merge --out=DIR eu-west/ us-east/)`")


@pytest.fixture(scope="module")
def vantage_merges(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two clusters' merged reports, as the Kubernetes template leaves them on each
    cluster's volume: ``eu-west/`` the merge of three shards run with ``--vantage=eu-west``,
    ``us-east/`` the merge of a cluster that runs one shard (``--shard=1/1``)."""
    base = tmp_path_factory.mktemp("vantage-merges")
    for name, total in (("eu-west", SHARDS), ("us-east", 1)):
        for k in range(1, total + 1):
            pytest_run(
                fleet.targets,
                base / "runs" / name / f"shard-{k}",
                f"--shard={k}/{total}",
                f"--run-id=job-{name}",
                f"--vantage={name}",
                env=fleet.env,
            )
        proc = merge(f"--out={base / name}", f"--expect-shards={total}", base / "runs" / name)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return base


def test_each_clusters_merge_merges_as_its_vantage(vantage_merges: Path) -> None:
    """The Kubernetes template's multi-vantage workflow runs as its header writes it: a
    merge of one vantage's complete set of shards is that vantage's whole run, and the
    clusters' merges merge into one report with each connection type once and what each
    vantage saw. A vantage's merge given with more of that vantage's results stays
    refused (it would count them twice)."""
    header = (REPO / "ci" / "kubernetes" / "pop3mon-cronjob.yaml").read_text("utf-8")
    (command,) = _K8S_VANTAGES.findall(" ".join(header.replace("#", " ").split()))
    env = {**os.environ, "PYTHONPATH": str(PLUGINS), "COLUMNS": "100"}
    line = command.replace("pop3mon ", f"{sys.executable} -m pop3mon.cli ", 1)
    proc = subprocess.run(
        ["sh", "-c", line.replace("DIR", "merged")],
        cwd=vantage_merges,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "merged 2 result file(s) of 2 vantages (eu-west: run job-eu-west, us-east: run " in (
        proc.stdout
    )
    document = doc(vantage_merges / "merged")
    assert len(document["connections"]) == 6
    for conn in document["connections"]:
        assert sorted(conn["vantages"]) == ["eu-west", "us-east"], conn["id"]
    # One vantage's merge with one of the shards it was merged from: refused by name.
    shard = vantage_merges / "runs" / "eu-west" / "shard-1"
    again = merge(f"--out={vantage_merges / 'again'}", vantage_merges / "eu-west", shard)
    assert again.returncode == 2, again.stdout + again.stderr
    assert again.stderr.splitlines() == [
        f"pop3mon: error: {vantage_merges / 'eu-west' / 'results.json'} is already a merge "
        f"(pop3mon merge of {SHARDS} inputs) of run job-eu-west (vantage eu-west), and 1 "
        "other input(s) of vantage eu-west came with it: give either the merge or the runs "
        "it was merged from"
    ]


def test_shards_split_by_different_builds_are_refused(
    runs: dict[str, Path], fleet: Fleet, tmp_path: Path
) -> None:
    """Shard K of 3 run by a pop3mon that splits differently (here: every server in shard
    1), the others by this one, one run id: every shard is there, but connection types
    of the file are in none of them. The merge refuses, naming them and why; also when
    the odd shard is of a pop3mon that did not record the file's connection ids."""
    head = {k: doc(runs[f"shard-{k}"])["run"]["connection_ids"] for k in (1, 2, 3)}
    k = 2 if head[2] else 3
    assert head[k], head
    other = tmp_path / "other-build"
    other.mkdir()
    (other / "other_split.py").write_text(
        '"""Another pop3mon build\'s split: every server group in shard 1."""\n'
        "import pop3mon.config.shard as shard\n\n"
        "shard.shard_of = lambda key, total: 1\n",
        encoding="utf-8",
    )
    odd = tmp_path / f"odd-shard-{k}"
    pytest_run(
        fleet.targets,
        odd,
        "-p",
        "other_split",
        f"--shard={k}/{SHARDS}",
        f"--run-id={RUN_ID}",
        env={**fleet.env, "PYTHONPATH": str(other)},
    )
    assert doc(odd)["run"]["connection_ids"] == []  # the other build put nothing here
    inputs = [runs[f"shard-{i}"] for i in (1, 2, 3) if i != k]
    out = tmp_path / "out"
    proc = merge(f"--out={out}", "--expect-shards=3", *inputs, odd)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and not out.exists(), proc.stdout + proc.stderr
    assert lines == [
        f"pop3mon: error: the shards of run {RUN_ID} do not split the targets file between "
        f"them ({', '.join(head[k])} in no shard): they were split by different pop3mon "
        "builds; run every shard of a run with the same pop3mon"
    ]
    # The odd shard of an older pop3mon (no run.targets.connection_ids): the others carry
    # the file's ids, so the merge still sees what is left out.
    older = doc(odd)
    del older["run"]["targets"]["connection_ids"]
    (tmp_path / "older.json").write_text(json.dumps(older), encoding="utf-8")
    proc = merge(f"--out={out}", "--expect-shards=3", *inputs, tmp_path / "older.json")
    assert proc.returncode == 2 and proc.stderr.splitlines() == lines, proc.stderr


def _other_chain(depth: int) -> dict[str, Any]:
    """A project's own test in results.json whose second testcase has one, ``depth`` deep."""
    test: dict[str, Any] = {"nodeid": "test_mine.py::test_x", "outcome": "failed"}
    for _ in range(depth):
        test = {"nodeid": "test_mine.py::test_x", "outcome": "failed", "then": test}
    return test


def _set(path: str, value: Any) -> Any:
    """A change of a results.json: ``path`` (dotted, numbers index lists) set to ``value``."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        here: Any = data
        for key in parents:
            here = here[int(key)] if key.isdigit() else here[key]
        here[int(last) if last.isdigit() else last] = value

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("deep", "not a pop3mon results file (nested too deeply)"),
        (_set("run.started_epoch", float("nan")), "run.started_epoch is nan, not a finite"),
        ("figure", "connections[0].checks[0].figure is a number of 401 digits"),
        (_set("connections.0.config.id", 7), "connections[0].config.id is 7, not a string"),
        (_set("history.status", "great"), "history.status is 'great', not one of ok, new,"),
        (_set("not_selected", [{"id": "x"}]), "not_selected[0] is {'id': 'x'}, not a string"),
        (_set("notify.warnings", [["x"]]), "notify.warnings[0] is ['x'], not a string"),
        (_set("connections.0.availability", [0.5]), "connections[0].availability is [0.5], not"),
        (_set("run.id", "a/b"), "run.id 'a/b' is not a run id"),
        (_set("run.id", "../../x"), "run.id '../../x' is not a run id"),
        (_set("run.id", ""), "run.id '' is not a run id"),
        (_set("run.id", "r2\x1b]0;pwned\x07"), "run.id 'r2\\x1b]0;pwned\\x07' is not a run id"),
        (_set("run.id", "r2\nmerged 9 result file(s)"), "run.id 'r2\\nmerged 9 result"),
        (_set("connections.0.checks.0.check", "tcp\x1b[2J"), "checks[0].check 'tcp\\x1b[2J' is"),
        (
            _set("changes", [{"kind": "odd", "connection": "x", "check": "tcp", "after": "OK"}]),
            "changes[0].kind is 'odd', not one of new,",
        ),
        (
            # A run's own test has at most one second testcase (a teardown error after
            # its failure), never a chain a writer would recurse into.
            _set("others", [_other_chain(900)]),
            "others[0].then.then is a second testcase's second testcase",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 12 else None,
)
def test_a_corrupt_input_is_one_line(
    previous: tuple[Path, dict[str, bytes]],
    runs: dict[str, Path],
    tmp_path: Path,
    change: Any,
    says: str,
) -> None:
    """A results.json with values no run writes (too deep, NaN, a number of 401 digits, a
    wrong type, an unknown status or kind, a run id that is a path or holds control
    characters): one line naming the file and the field, exit 2, no traceback, the
    previous reports untouched and no temporary file left."""
    out, before = previous
    source = runs["whole"] / "results.json"
    crafted = tmp_path / "crafted.json"
    if change == "deep":
        crafted.write_text(
            '{"schema": "pop3mon/results/v1", "run": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "utf-8",
        )
    elif change == "figure":
        data = json.loads(source.read_text("utf-8"))
        data["connections"][0]["checks"][0]["figure"] = "FIGURE"
        crafted.write_text(json.dumps(data).replace('"FIGURE"', "1" + "0" * 400), "utf-8")
    else:
        data = json.loads(source.read_text("utf-8"))
        change(data)
        crafted.write_text(json.dumps(data), "utf-8")
    proc = merge(f"--out={out}", crafted)
    lines = _refused(out, before, proc)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"pop3mon: error: {crafted}: "), lines
    assert says in lines[0], lines
    assert lines[0].endswith("; merge the results.json a pop3mon run wrote, unchanged"), lines
    assert not any(c in proc.stderr + proc.stdout for c in "\x1b\x07"), lines


def test_a_writer_that_fails_leaves_no_temporary_file(
    previous: tuple[Path, dict[str, bytes]], runs: dict[str, Path]
) -> None:
    """write_report_set removes its temporary files whatever a writer raised (here a
    start time no writer can format: ValueError from the HTML's date), not only on an
    OSError; the previous set stays."""
    import dataclasses

    from pop3mon.report.load import load_results
    from pop3mon.report.standalone import write_report_set

    out, before = previous
    report = load_results(runs["whole"] / "results.json").report
    broken = dataclasses.replace(
        report, info=dataclasses.replace(report.info, started=float("nan"))
    )
    with pytest.raises(ValueError):
        write_report_set(broken, out)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORTS), "a temporary file was left"


def test_no_control_character_of_an_input_reaches_the_terminal(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """Free text of an input (a check's reason, the history's note, a notification
    warning) reaches the merge's output escaped: no escape sequence, no bell, no newline
    that forges a line of its own."""
    data = doc(runs["whole"])
    forged = "\x1b]0;pwned\x07\nmerged 99 result file(s) of run forged\x1b[2J"
    crit = next(c for c in data["connections"] if c["verdict"] == "CRIT")
    chk = next(c for c in crit["checks"] if c["verdict"] == "CRIT")
    chk["reason"] = f"refused {forged}"
    data["history"]["note"] = f"note {forged}"
    data["notify"]["warnings"] = [f"warning {forged}"]
    crafted = tmp_path / "crafted.json"
    crafted.write_text(json.dumps(data), encoding="utf-8")
    proc = merge(f"--out={tmp_path / 'out'}", crafted)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not any(c in proc.stdout + proc.stderr for c in "\x1b\x07"), proc.stdout
    assert not any(line.startswith("merged 99") for line in proc.stdout.splitlines())
    assert "refused \\x1b]0;pwned\\x07\\nmerged 99 result file(s)" in " ".join(
        proc.stdout.split()
    ), proc.stdout


def test_exit_status_survives_a_closed_pipe(merged: Path, tmp_path: Path) -> None:
    """``pop3mon merge --exit-status ... | head -1``: the reader goes away before the merge
    prints; the merge still exits 1 (its merged report has CRIT), without a traceback."""
    env = {**os.environ, "PYTHONPATH": str(PLUGINS), "COLUMNS": "100"}
    cmd = [sys.executable, "-m", "pop3mon.cli", "merge", "--exit-status"]
    proc = subprocess.Popen(
        [*cmd, f"--out={tmp_path / 'out'}", str(merged)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the merge writes a line: its first write fails (EPIPE)
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 1, stderr
    assert "pop3mon merge: exit 1: the merged report has CRIT" in stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert (tmp_path / "out" / "results.json").is_file()


def test_shards_without_a_common_run_id_are_told_the_fix(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """Shards run without --run-id outside CI each make up their own run id: the refusal
    says so and how to give them one."""
    for k in (1, 2, 3):
        data = doc(runs[f"shard-{k}"])
        data["run"]["id"] = f"20261201T1400{k:02d}Z-abc12{k}"
        (tmp_path / f"shard-{k}.json").write_text(json.dumps(data), encoding="utf-8")
    proc = merge(f"--out={tmp_path / 'out'}", *sorted(tmp_path.glob("shard-*.json")))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "come from 3 different runs" in line
    assert line.endswith(
        "merge the shards of one run; they were run without a run id, so each made up its "
        "own; give every shard of a run the same --run-id=ID (or POP3MON_RUN_ID=ID; in GitHub "
        "Actions and GitLab CI the pipeline's id is taken by default)"
    ), line
