"""Sharded runs (config/shard.py, ``--shard``/``--vantage``/``--run-id``): the split is a
partition of the targets file by server group, the same in every process; the shard, the
vantage and the run id come from the options or the CI engine's variables; a bad value is
one usage line; each shard's ``results.json`` carries its identity and ids, and an empty
shard is a successful run with empty reports.

The end-to-end runs probe the real Dovecot lab (no login: ``auth: none``) under several
server names, as ``python -m pytest`` in the repository root, like a user's shard job.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pop3mon.config import Targets, load_targets
from pop3mon.config.shard import (
    ShardError,
    gitlab_nodes_ignored,
    group_keys,
    resolve_identity,
    select_shard,
    shard_of,
    shard_servers,
)
from test_suite import ROOT, write_targets

from pop3mon_lab.dovecot import DovecotLab

#: Variables that choose a shard, a vantage or a run id: never inherited by a run here.
IDENTITY_ENV = (
    "POP3MON_SHARD",
    "POP3MON_SHARD_TOTAL",
    "POP3MON_VANTAGE",
    "POP3MON_RUN_ID",
    "CI_NODE_INDEX",
    "CI_NODE_TOTAL",
    "CI_JOB_NAME",
    "JOB_COMPLETION_INDEX",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "CI_PIPELINE_ID",
)
SCRUBBED = (*IDENTITY_ENV, "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "POP3MON_TARGETS")


# ---------------------------------------------------------------------------------------
# The split, on a loaded targets file (no probing)
# ---------------------------------------------------------------------------------------


def _fleet(path: Path, port: int = 110, servers: int = 24) -> Path:
    """A targets file of ``servers`` plain servers (1-3 connection types each) and two
    ``depends_on`` groups: core <- edge1 <- edge2 and dns <- resolver1, resolver2."""
    entries: list[dict[str, Any]] = []
    for i in range(servers):
        entries.append(
            {
                "name": f"mail{i:02d}",
                "host": "127.0.0.1",
                "auth": "none",
                "connections": [{"port": port + j, "security": "none"} for j in range(1 + i % 3)],
                # Every third server has the coverage tier on (its checks follow the server).
                **({"coverage": True} if i % 3 == 0 else {}),
            }
        )
    chain = [("core", []), ("edge1", ["core"]), ("edge2", ["edge1"])]
    chain += [("dns", []), ("resolver1", ["dns"]), ("resolver2", ["dns"])]
    for name, deps in chain:
        entry: dict[str, Any] = {
            "name": name,
            "host": "127.0.0.1",
            "auth": "none",
            "connections": [{"port": port, "security": "none"}],
        }
        if deps:
            entry["depends_on"] = deps
        entries.append(entry)
    return write_targets(path, {"servers": entries})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Targets:
    return load_targets(_fleet(tmp_path_factory.mktemp("fleet") / "targets.yaml"))


@pytest.mark.parametrize("total", [1, 2, 3, 7, 10, 40])
def test_shards_partition_the_file(fleet: Targets, total: int) -> None:
    """Every connection type and host check is in exactly one of the N shards, and the
    servers of one depends_on group share a shard."""
    shards = [select_shard(fleet, (k, total)) for k in range(1, total + 1)]
    ids = [i for s in shards for i in s.ids]
    assert sorted(ids) == sorted(fleet.ids) and len(ids) == len(set(ids))
    hosts = [h.name for s in shards for h in s.hosts]
    assert sorted(hosts) == sorted(h.name for h in fleet.hosts)
    covered = [c.name for s in shards for c in s.coverage]
    assert fleet.coverage and sorted(covered) == sorted(c.name for c in fleet.coverage)
    where = shard_servers(fleet, total)
    assert where["edge1"] == where["edge2"] == where["core"]
    assert where["resolver1"] == where["resolver2"] == where["dns"]
    for k, shard in enumerate(shards, start=1):
        assert {c.server for c in shard.connections} <= {s for s, n in where.items() if n == k}
        assert {c.name for c in shard.coverage} <= {s for s, n in where.items() if n == k}
        # ... and still compares with the whole file's connection types.
        assert all(len(c.monitored) == len(fleet.connections) for c in shard.coverage)
        # A shard's host checks depend only on hosts of the same shard.
        names = {h.name for h in shard.hosts}
        assert all(set(h.depends_on) <= names for h in shard.hosts)
        assert shard.sha256 == fleet.sha256 and shard.path == fleet.path


def test_groups_are_keyed_by_their_smallest_name(fleet: Targets) -> None:
    keys = group_keys(fleet)
    assert keys["edge2"] == keys["edge1"] == "core"
    assert keys["resolver2"] == "dns" and keys["mail03"] == "mail03"
    # The formula the merge and the benchmark recompute, pinned so that it never drifts:
    # 1 + sha256(name) mod N.
    assert [shard_of("core", 10), shard_of("mail00", 10), shard_of("mail00", 7)] == [1, 2, 1]
    assert shard_of("x", 1) == 1


def test_logins_to_one_host_share_a_shard(tmp_path: Path) -> None:
    """Login pacing takes turns per host (its pinned address, else its name), so every
    server entry that logs in to one host is in one group: two accounts' entries, a
    POP3 and an SMTP entry, one spelled in capitals; likewise a round trip and its via.
    Entries that never log in are not paced and stay groups of their own."""
    account = {"username": "monitor", "password_env": "POP3MON_TEST_PW"}

    def entry(name: str, host: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "host": host,
            "account": account,
            "connections": [{"port": 995, "security": "tls"}],
            **extra,
        }

    smtp = [{"id": "sub", "port": 587, "security": "starttls", "auth": "auto"}]
    servers = [
        entry("mail1-alice", "mail1.example.com"),
        entry("mail1-bob", "mail1.example.com"),
        {**entry("mail1-smtp", "MAIL1.example.com"), "connections": [], "smtp": smtp},
        entry("pinned-a", "a.example.com", address="192.0.2.7"),
        entry("pinned-b", "b.example.com", address="192.0.2.7"),
        {
            **entry("rt-smtp", "submit.example.com"),
            "connections": [],
            "smtp": [{**smtp[0], "id": "rt-sub"}],
        },
        entry(
            "rt-pop",
            "pop.example.com",
            connections=[
                {
                    "port": 995,
                    "security": "tls",
                    "round_trip": {"via": "rt-sub", "recipient": "monitor@example.com"},
                }
            ],
        ),
        *(
            {
                "name": f"open{i}",
                "host": "open.example.com",
                "auth": "none",
                "connections": [{"port": 110, "security": "none"}],
            }
            for i in range(12)
        ),
    ]
    targets = load_targets(write_targets(tmp_path / "targets.yaml", {"servers": servers}))
    keys = group_keys(targets)
    assert keys["mail1-alice"] == keys["mail1-bob"] == keys["mail1-smtp"] == "mail1-alice"
    assert keys["pinned-a"] == keys["pinned-b"] == "pinned-a"
    assert keys["rt-pop"] == keys["rt-smtp"] == "rt-pop"
    assert [keys[f"open{i}"] for i in range(12)] == [f"open{i}" for i in range(12)]
    for total in range(2, 21):
        where = shard_servers(targets, total)
        assert where["mail1-alice"] == where["mail1-bob"] == where["mail1-smtp"], total
        assert where["pinned-a"] == where["pinned-b"] and where["rt-pop"] == where["rt-smtp"]
        k = where["rt-pop"]
        mine = select_shard(targets, (k, total))
        assert {c.id for c in mine.connections} >= {"rt-sub", "rt-pop:995-tls"}, total


def test_split_is_the_same_in_every_process(fleet: Targets, tmp_path: Path) -> None:
    """Not Python's salted hash(): other processes under other PYTHONHASHSEEDs agree."""
    code = (
        "import json, sys; from pop3mon.config import load_targets; "
        "from pop3mon.config.shard import shard_servers; "
        "print(json.dumps(shard_servers(load_targets(sys.argv[1]), 7)))"
    )
    here = shard_servers(fleet, 7)
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT / "plugins")}
        out = subprocess.run(
            [sys.executable, "-c", code, str(fleet.path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        assert json.loads(out) == here
    # And not all in one shard: 30 servers in 26 groups spread over 7 shards.
    assert len(set(here.values())) == 7


# ---------------------------------------------------------------------------------------
# Where the shard, the vantage and the run id come from
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "option", "shard", "source"),
    [
        ({}, None, None, ""),
        ({}, "3/10", (3, 10), "--shard"),
        (
            {"POP3MON_SHARD": "2/4", "CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "4"},
            "3/10",
            (3, 10),
            "--shard",
        ),
        ({"POP3MON_SHARD": " 2 / 4 "}, None, (2, 4), "POP3MON_SHARD"),
        (
            {"POP3MON_SHARD": "2/4", "CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "4"},
            None,
            (2, 4),
            "POP3MON_SHARD",
        ),
        (
            {"CI_NODE_INDEX": "5", "CI_NODE_TOTAL": "5", "CI_JOB_NAME": "pop3mon 5/5"},
            None,
            (5, 5),
            "CI_NODE_INDEX",
        ),
        # GitLab sets them in a parallel: matrix: job too (one job per vantage, say): not
        # a shard. Nor without the job name, or with another job's K/N.
        (
            {"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "2", "CI_JOB_NAME": "pop3mon: [us-east]"},
            None,
            None,
            "",
        ),
        ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "2"}, None, None, ""),
        (
            {"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "2", "CI_JOB_NAME": "pop3mon 1/2"},
            None,
            None,
            "",
        ),
        # --shard=1/1 is the explicit off switch: the whole file, whatever the environment.
        (
            {"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "4", "CI_JOB_NAME": "pop3mon 2/4"},
            "1/1",
            (1, 1),
            "--shard",
        ),
        # GitLab sets CI_NODE_TOTAL=1 in every job without parallel:, and no index.
        ({"CI_NODE_TOTAL": "1"}, None, None, ""),
        (
            {"JOB_COMPLETION_INDEX": "0", "POP3MON_SHARD_TOTAL": "3"},
            None,
            (1, 3),
            "JOB_COMPLETION_INDEX",
        ),
        (
            {"JOB_COMPLETION_INDEX": "2", "POP3MON_SHARD_TOTAL": "3"},
            None,
            (3, 3),
            "JOB_COMPLETION_INDEX",
        ),
        # Any Indexed Job has the index; the total is what opts it in.
        ({"JOB_COMPLETION_INDEX": "2"}, None, None, ""),
    ],
)
def test_shard_sources(
    environ: Mapping[str, str], option: str | None, shard: tuple[int, int] | None, source: str
) -> None:
    found = resolve_identity(environ, shard=option)
    assert (found.shard, found.shard_source) == (shard, source)


@pytest.mark.parametrize(
    ("environ", "options", "run_id", "vantage"),
    [
        ({}, {}, None, None),
        (
            {"GITHUB_RUN_ID": "9876", "GITHUB_RUN_ATTEMPT": "2", "CI_PIPELINE_ID": "5"},
            {},
            "9876-2",
            None,
        ),
        ({"GITHUB_RUN_ID": "9876"}, {}, "9876-1", None),
        ({"CI_PIPELINE_ID": "5"}, {}, "5", None),
        ({"POP3MON_RUN_ID": "nightly-1", "GITHUB_RUN_ID": "9876"}, {}, "nightly-1", None),
        ({"POP3MON_RUN_ID": "env"}, {"run_id": "opt"}, "opt", None),
        ({"POP3MON_VANTAGE": "eu-west"}, {}, None, "eu-west"),
        ({"POP3MON_VANTAGE": "eu-west"}, {"vantage": "us.east_1"}, None, "us.east_1"),
    ],
)
def test_run_id_and_vantage_sources(
    environ: Mapping[str, str], options: Mapping[str, str], run_id: str | None, vantage: str | None
) -> None:
    found = resolve_identity(environ, **options)
    assert (found.run_id, found.vantage) == (run_id, vantage)


@pytest.mark.parametrize(
    ("environ", "options", "says"),
    [
        ({}, {"shard": "3"}, "--shard=3: not K/N"),
        ({}, {"shard": "0/3"}, "--shard=0/3: the shard must be between 1 and 3 (it counts from 1)"),
        ({}, {"shard": "4/3"}, "--shard=4/3: the shard must be between 1 and 3"),
        ({}, {"shard": "1/0"}, "--shard=1/0: the number of shards must be between 1 and"),
        ({"POP3MON_SHARD": "a/b"}, {}, "POP3MON_SHARD=a/b: not K/N"),
        (
            {"CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "2", "CI_JOB_NAME": "m 0/2"},
            {},
            "CI_NODE_INDEX=0 CI_NODE_TOTAL=2: the shard must be between 1 and 2",
        ),
        ({"POP3MON_SHARD_TOTAL": "3"}, {}, "POP3MON_SHARD_TOTAL is set but JOB_COMPLETION_INDEX"),
        ({"POP3MON_SHARD_TOTAL": "3", "JOB_COMPLETION_INDEX": "3"}, {}, "between 1 and 3"),
        ({}, {"vantage": "eu west"}, "--vantage=eu west: a vantage name is 1-63 letters"),
        ({"POP3MON_VANTAGE": "-x"}, {}, "POP3MON_VANTAGE=-x: a vantage name"),
        ({}, {"run_id": "a/b"}, "--run-id=a/b: a run id is 1-128 letters"),
        ({"POP3MON_RUN_ID": "x y"}, {}, "POP3MON_RUN_ID=x y: a run id"),
        # Digits str.isdigit() or re's \\d take but int() refuses (a superscript) or reads
        # as a number nobody typed (other scripts' digits), and numbers past Python's
        # 4300-digit limit: one line each, the long value shortened, never a traceback.
        (
            {"JOB_COMPLETION_INDEX": "0", "POP3MON_SHARD_TOTAL": "\u00b2"},
            {},
            "POP3MON_SHARD_TOTAL=\u00b2: not a whole number (digits 0-9)",
        ),
        (
            {"JOB_COMPLETION_INDEX": "\u00b9", "POP3MON_SHARD_TOTAL": "3"},
            {},
            "JOB_COMPLETION_INDEX=\u00b9: not a whole number (digits 0-9)",
        ),
        (
            {"JOB_COMPLETION_INDEX": "9" * 5000, "POP3MON_SHARD_TOTAL": "3"},
            {},
            "(5000 characters): not a whole number (digits 0-9)",
        ),
        (
            {"JOB_COMPLETION_INDEX": "0", "POP3MON_SHARD_TOTAL": "9" * 5000},
            {},
            "POP3MON_SHARD_TOTAL=9999",
        ),
        ({}, {"shard": "1/" + "9" * 5000}, "(5002 characters): not K/N (K and N whole numbers"),
        ({"POP3MON_SHARD": "9" * 5000 + "/3"}, {}, "POP3MON_SHARD=9999"),
        ({}, {"shard": "\u0662/\u0663"}, "--shard=\u0662/\u0663: not K/N"),
        ({}, {"shard": "\u00b9/3"}, "not K/N (K and N whole numbers, digits 0-9)"),
        ({}, {"run_id": "r" * 5000}, "(5000 characters): a run id is 1-128 letters"),
        ({"POP3MON_VANTAGE": "v" * 5000}, {}, "(5000 characters): a vantage name is 1-63"),
    ],
)
def test_bad_values_are_one_line_with_the_fix(
    environ: Mapping[str, str], options: Mapping[str, str], says: str
) -> None:
    with pytest.raises(ShardError) as caught:
        resolve_identity(environ, **options)
    text = str(caught.value)
    assert text.startswith("pop3mon: ") and says in text and "\n" not in text
    assert "e.g." in text or "set" in text
    # A line one can read, whatever was pasted into the variable.
    assert len(text) < 300, text


@pytest.mark.parametrize(
    "environ",
    [
        # GitLab's variables go through int() only when the job name's K/N equals them;
        # a number too long (or not ASCII) for that is no parallel: N job, not a crash.
        {
            "CI_NODE_INDEX": "9" * 5000,
            "CI_NODE_TOTAL": "9" * 5000,
            "CI_JOB_NAME": "m " + "9" * 5000 + "/" + "9" * 5000,
        },
        {"CI_NODE_INDEX": "\u0662", "CI_NODE_TOTAL": "\u0663", "CI_JOB_NAME": "m \u0662/\u0663"},
    ],
)
def test_odd_gitlab_node_numbers_are_not_a_shard(environ: Mapping[str, str]) -> None:
    found = resolve_identity(environ)
    assert found.shard is None and found.shard_source == ""
    note = gitlab_nodes_ignored(environ, found)
    assert note.startswith("pop3mon: CI_NODE_INDEX=") and len(note) < 300, note


# ---------------------------------------------------------------------------------------
# Real shard runs on the Dovecot lab
# ---------------------------------------------------------------------------------------


def _run(
    targets: Path,
    reports: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    cache: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m pytest`` in the repository root writing its reports to ``reports`` (no
    pytest cache unless ``cache``)."""
    environ = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    environ.update(env or {})
    environ["COLUMNS"] = "160"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"--targets={targets}",
            f"--reports-dir={reports}",
            *(("-o", f"cache_dir={cache}") if cache else ("-p", "no:cacheprovider")),
            "-p",
            "no:hypothesispytest",
            "-p",
            "no:randomly",
            *args,
        ],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _lab_fleet(path: Path, lab: DovecotLab) -> Path:
    """Seven server names on the one Dovecot lab (no login), two linked by depends_on."""

    def server(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "host": lab.hostname,
            "address": "127.0.0.1",
            "ca_file": str(lab.ca_file),
            "auth": "none",
            **extra,
            "connections": [
                {"port": lab.port("pop3s"), "security": "tls"},
                {"port": lab.port("pop3"), "security": "starttls"},
            ],
        }

    names = ["alpha", "bravo", "charlie", "delta", "echo"]
    servers = [server(n) for n in names]
    servers += [server("gw"), server("inner", depends_on=["gw"])]
    return write_targets(path, {"servers": servers})


@pytest.fixture(scope="module")
def shard_runs(
    dovecot: DovecotLab, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Targets, dict[int, subprocess.CompletedProcess[str]], Path]:
    """The lab fleet run as 3 shards at once, sharing one run id and one history file."""
    work = tmp_path_factory.mktemp("shards")
    path = _lab_fleet(work / "targets.yaml", dovecot)
    history = work / "history.sqlite"
    runs: dict[int, subprocess.CompletedProcess[str]] = {}

    def one(k: int) -> None:
        runs[k] = _run(
            path,
            work / f"shard-{k}",
            f"--shard={k}/3",
            f"--history={history}",
            env={"POP3MON_RUN_ID": "lab-run-7", "POP3MON_VANTAGE": "lab"},
        )

    threads = [threading.Thread(target=one, args=(k,)) for k in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return load_targets(path), runs, work


def _results(reports: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((reports / "results.json").read_text(encoding="utf-8"))
    return data


def test_lab_shards_partition_the_file(
    shard_runs: tuple[Targets, dict[int, subprocess.CompletedProcess[str]], Path],
) -> None:
    targets, runs, work = shard_runs
    seen: list[str] = []
    for k, proc in runs.items():
        assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-2000:]
        doc = _results(work / f"shard-{k}")
        run = doc["run"]
        assert run["id"] == "lab-run-7" and run["vantage"] == "lab"
        assert run["shard"] == {"index": k, "total": 3}
        mine = select_shard(targets, (k, 3))
        assert run["connection_ids"] == sorted(mine.ids)
        # Every selected connection type once; none of another shard's, not even as
        # not_selected noise, and no other shard's host checked.
        assert [c["id"] for c in doc["connections"]] == list(mine.ids)
        assert doc["not_selected"] == []
        assert {h["host"]["name"] for h in doc["hosts"]} == {h.name for h in mine.hosts}
        seen += run["connection_ids"]
        # The shard's own probes only: every check of it ran on the lab.
        verdicts = {ch["verdict"] for c in doc["connections"] for ch in c["checks"]}
        assert "CRIT" not in verdicts and "ERROR" not in verdicts, proc.stdout[-3000:]
        if mine.ids:
            assert f"shard {k}/3 · vantage lab" in proc.stdout
    assert sorted(seen) == sorted(targets.ids) and len(seen) == len(set(seen))
    where = shard_servers(targets, 3)
    assert where["gw"] == where["inner"]


def test_shards_share_one_history_file(
    shard_runs: tuple[Targets, dict[int, subprocess.CompletedProcess[str]], Path],
) -> None:
    """Three shards of one run (one run id) on one machine, one history file, at once:
    each records its own connection types, none is refused for the shared id."""
    _, runs, work = shard_runs
    for k in runs:
        doc = _results(work / f"shard-{k}")
        if doc["connections"]:
            assert doc["history"]["status"] in ("ok", "new"), doc["history"]
            states = [c["checks"][0]["state"] for c in doc["connections"]]
            assert all(s is not None for s in states)
    db = sqlite3.connect(work / "history.sqlite")
    try:
        keys = [r[0] for r in db.execute("SELECT run_id FROM runs")]
        recorded = {r[0] for r in db.execute("SELECT DISTINCT ct FROM cts")}
    finally:
        db.close()
    busy = [k for k in runs if _results(work / f"shard-{k}")["connections"]]
    assert len(keys) == len(busy)
    assert all(key.startswith("lab-run-7 shard ") and " @lab " in key for key in keys)
    assert {i for i in recorded if not i.startswith("host:")} == set(shard_runs[0].ids)


def test_empty_shard_writes_its_reports_and_succeeds(dovecot: DovecotLab, tmp_path: Path) -> None:
    """A shard the split gives nothing is a normal run: exit 0, all four reports, the
    identity in results.json; the previous reports there are replaced, not kept."""
    path = _lab_fleet(tmp_path / "targets.yaml", dovecot)
    targets = load_targets(path)
    total = 40
    used = set(shard_servers(targets, total).values())
    empty = min(set(range(1, total + 1)) - used)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "results.json").write_text('{"stale": true}\n', encoding="utf-8")
    gitlab = {
        "CI_NODE_INDEX": str(empty),
        "CI_NODE_TOTAL": str(total),
        "CI_JOB_NAME": f"pop3mon {empty}/{total}",
    }
    proc = _run(path, reports, env=gitlab)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"shard {empty}/{total}: no connection type falls in this shard" in proc.stdout
    for name in ("report.html", "junit.xml", "results.json", "metrics.prom"):
        assert (reports / name).is_file(), name
    doc = _results(reports)
    assert doc["run"]["shard"] == {"index": empty, "total": total}
    assert doc["run"]["connection_ids"] == [] and doc["connections"] == []
    assert doc["run"]["targets"]["sha256"] == targets.sha256
    assert doc["counts"]["total"] == 0


def _merge(out: Path, inputs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pop3mon merge [args] --out=out inputs`` as the command runs it."""
    environ = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    environ["PYTHONPATH"] = str(ROOT / "plugins")
    return subprocess.run(
        [sys.executable, "-m", "pop3mon.cli", "merge", *args, f"--out={out}", str(inputs)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_shard_whose_selection_matches_nothing_writes_its_reports(
    dovecot: DovecotLab, tmp_path: Path
) -> None:
    """``-k alpha`` over three shards: the two shards without alpha selected nothing in
    their part. Each is a successful run writing its reports (every connection type of it
    "not selected"), replacing a stale results.json, so the merge of the three is the
    unsharded run with the same -k; the unsharded run that selects nothing still keeps the
    previous reports (exit 5)."""
    path = _lab_fleet(tmp_path / "targets.yaml", dovecot)
    targets = load_targets(path)
    where = shard_servers(targets, 3)
    shards = tmp_path / "shards"
    stale = shards / "1"
    stale.mkdir(parents=True)
    (stale / "results.json").write_text('{"stale": true}\n', encoding="utf-8")
    # The split of this file: one shard without alpha has servers (the case at hand), one
    # has none (an empty shard, which already wrote its reports).
    unselected = {k for k in where.values() if k != where["alpha"]}
    assert unselected and len(set(where.values())) == 2, where
    for k in (1, 2, 3):
        proc = _run(path, shards / str(k), f"--shard={k}/3", "--run-id=ksel", "-k", "alpha")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        doc = _results(shards / str(k))
        mine = sorted(select_shard(targets, (k, 3)).ids)
        assert doc["run"]["shard"] == {"index": k, "total": 3}
        assert doc["run"]["connection_ids"] == mine
        if k in unselected:
            assert doc["connections"] == [] and sorted(doc["not_selected"]) == mine
            assert "no check of this shard was selected (-k/-m matched none" in proc.stdout
            for name in ("report.html", "junit.xml", "metrics.prom"):
                assert (shards / str(k) / name).is_file(), name
    merged = _merge(tmp_path / "merged", shards)
    assert merged.returncode == 0, merged.stdout[-3000:] + merged.stderr[-2000:]
    whole = _run(path, tmp_path / "whole", "--run-id=ksel", "-k", "alpha")
    assert whole.returncode == 0, whole.stdout[-3000:]
    got, want = _results(tmp_path / "merged"), _results(tmp_path / "whole")
    assert [c["id"] for c in got["connections"]] == [c["id"] for c in want["connections"]]
    assert sorted(got["not_selected"]) == sorted(want["not_selected"])
    assert got["run"]["connection_ids"] == want["run"]["connection_ids"]
    assert got["counts"] == want["counts"]
    # Unsharded, a selection matching nothing is still no run: the reports stay.
    before = (tmp_path / "whole" / "results.json").read_bytes()
    none = _run(path, tmp_path / "whole", "--run-id=ksel", "-k", "no_such_server")
    assert none.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, none.stdout[-3000:]
    assert "no check was selected" in none.stdout
    assert (tmp_path / "whole" / "results.json").read_bytes() == before
    # Sharded, that selection passes in every shard (none can know the others selected
    # nothing either); their merge says so, and with --exit-status fails as the unsharded
    # run does under ci/run-monitor (2), not green.
    nothing = tmp_path / "nothing"
    for k in (1, 2, 3):
        proc = _run(path, nothing / str(k), f"--shard={k}/3", "--run-id=none", "-k", "no_such")
        assert proc.returncode == 0, proc.stdout[-3000:]
    told = _merge(tmp_path / "nothing-merged", nothing)
    assert told.returncode == 0 and "no input selected any check" in told.stderr, told.stderr
    failed = _merge(tmp_path / "nothing-merged", nothing, "--exit-status")
    assert failed.returncode == 2, failed.stdout[-2000:] + failed.stderr


def test_own_tests_are_in_a_merge_once_with_their_worst_outcome(
    dovecot: DovecotLab, tmp_path: Path
) -> None:
    """A project's own tests run beside the tier tests: every shard runs them, its
    results.json carries them (``others``), and the merged junit.xml, report.html and
    results.json list each once, with the worst outcome a shard saw; ``merge
    --exit-status`` fails on a failing one as the shards' runs did."""
    path = _lab_fleet(tmp_path / "targets.yaml", dovecot)
    mine = tmp_path / "own" / "test_mine.py"
    mine.parent.mkdir()
    mine.write_text(
        "import os\n\n\ndef test_mine():\n"
        "    assert os.environ.get('MINE_OK'), 'my own check failed'\n\n\n"
        "def test_fine():\n    pass\n",
        "utf-8",
    )
    # A file name pytest keeps as it is in the node id (no-break space): it reads back.
    odd = mine.parent / "test_a\u00a0b.py"
    odd.write_text("def test_odd():\n    pass\n", "utf-8")
    shards = tmp_path / "shards"
    for k, ok in ((1, "1"), (2, "")):  # test_mine passes in shard 1, fails in shard 2
        # Shard 2 names its own junit.xml, as ci/run-monitor does: pytest's junitxml and
        # pytest-html write the pages then, results.json must still carry the tests.
        own_junit = (f"--junitxml={tmp_path / 'own-junit.xml'}",) if k == 2 else ()
        proc = _run(
            path,
            shards / str(k),
            f"--shard={k}/2",
            "--run-id=own",
            *own_junit,
            "tests_targets",
            str(mine),
            str(odd),
            env={"MINE_OK": ok},
        )
        assert proc.returncode == (0 if ok else 1), proc.stdout[-3000:] + proc.stderr[-2000:]
        assert "test_mine" in (shards / str(k) / "results.json").read_text(encoding="utf-8")
    merged = _merge(tmp_path / "merged", shards, "--exit-status")
    assert merged.returncode == 1, merged.stdout[-3000:] + merged.stderr[-2000:]
    assert "1 failed test of yours" in merged.stderr, merged.stderr
    doc = _results(tmp_path / "merged")
    outcomes = {o["nodeid"].rsplit("::", 1)[-1]: o["outcome"] for o in doc["others"]}
    assert outcomes == {"test_mine": "failed", "test_fine": "passed", "test_odd": "passed"}
    junit = ET.parse(tmp_path / "merged" / "junit.xml").getroot()
    cases = [c for c in junit.iter("testcase") if c.get("name") in ("test_mine", "test_fine")]
    assert sorted(c.get("name", "") for c in cases) == ["test_fine", "test_mine"]
    assert [c.get("name") for c in cases if c.find("failure") is not None] == ["test_mine"]
    assert "my own check failed" in (tmp_path / "merged" / "report.html").read_text("utf-8")
    # Shards that selected only tests of yours: no check anywhere, yet not "nothing
    # selected": the merge fails on the failing one as the runs did.
    only = tmp_path / "only"
    for k in (1, 2):
        proc = _run(
            path,
            only / str(k),
            f"--shard={k}/2",
            "--run-id=only",
            "-k",
            "test_mine",
            "tests_targets",
            str(mine),
        )
        assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    told = _merge(tmp_path / "only-merged", only, "--exit-status")
    assert told.returncode == 1 and "1 failed test of yours" in told.stderr, told.stderr


def test_gitlab_matrix_job_is_not_a_shard(dovecot: DovecotLab, tmp_path: Path) -> None:
    """A parallel: matrix: job (one per vantage) gets CI_NODE_INDEX/CI_NODE_TOTAL too; it
    probes the whole file, unsharded, and the header says the variables were ignored."""
    path = _lab_fleet(tmp_path / "targets.yaml", dovecot)
    reports = tmp_path / "reports"
    env = {
        "CI_NODE_INDEX": "2",
        "CI_NODE_TOTAL": "2",
        "CI_JOB_NAME": "pop3mon: [us-east]",
        "POP3MON_VANTAGE": "us-east",
    }
    proc = _run(path, reports, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = _results(reports)
    assert doc["run"]["shard"] is None and doc["run"]["vantage"] == "us-east"
    assert doc["run"]["connection_ids"] == sorted(load_targets(path).ids)
    assert (
        "pop3mon: CI_NODE_INDEX=2 ignored: job 'pop3mon: [us-east]' is not a parallel: N job"
        in proc.stdout
    )


def test_bad_shard_value_stops_the_run_with_one_line(dovecot: DovecotLab, tmp_path: Path) -> None:
    path = _lab_fleet(tmp_path / "targets.yaml", dovecot)
    proc = _run(path, tmp_path / "reports", env={"POP3MON_SHARD": "11/10"})
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR
    lines = [ln for ln in proc.stderr.splitlines() if "POP3MON_SHARD" in ln]
    assert lines == [
        "ERROR: pop3mon: POP3MON_SHARD=11/10: the shard must be between 1 and 10 "
        "(it counts from 1), e.g. POP3MON_SHARD=2/10"
    ], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "reports" / "results.json").exists()


@pytest.mark.parametrize(
    ("env", "option", "says"),
    [
        (
            {"JOB_COMPLETION_INDEX": "0", "POP3MON_SHARD_TOTAL": "\u00b2"},
            (),
            "POP3MON_SHARD_TOTAL=\u00b2: not a whole number (digits 0-9)",
        ),
        ({}, ("--shard=1/" + "9" * 5000,), "(5002 characters): not K/N"),
        (
            {"JOB_COMPLETION_INDEX": "9" * 5000, "POP3MON_SHARD_TOTAL": "3"},
            (),
            "(5000 characters): not a whole number (digits 0-9)",
        ),
    ],
)
def test_unparsable_shard_numbers_are_one_usage_line(
    dovecot: DovecotLab,
    tmp_path: Path,
    env: Mapping[str, str],
    option: tuple[str, ...],
    says: str,
) -> None:
    """The values that crashed int() with an INTERNALERROR traceback: a usage error (4)
    and one line naming the option or variable and its form, as any bad shard value."""
    path = _lab_fleet(tmp_path / "targets.yaml", dovecot)
    proc = _run(path, tmp_path / "reports", *option, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out[-3000:]
    assert "Traceback" not in out and "INTERNALERROR" not in out, out[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR: pop3mon:")]
    assert len(lines) == 1 and says in lines[0] and len(lines[0]) < 300, proc.stderr[-3000:]


def test_run_id_from_github_and_unsharded_ids(dovecot: DovecotLab, tmp_path: Path) -> None:
    """Unsharded: run.shard null, every id of the file in run.connection_ids, the run id
    GitHub's run and attempt; a -k deselection reads as not_selected among them."""
    path = _lab_fleet(tmp_path / "targets.yaml", dovecot)
    reports = tmp_path / "reports"
    proc = _run(
        path,
        reports,
        "-k",
        "alpha",
        env={"GITHUB_RUN_ID": "555", "GITHUB_RUN_ATTEMPT": "3"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    doc = _results(reports)
    ids = sorted(load_targets(path).ids)
    assert doc["run"]["id"] == "555-3" and doc["run"]["shard"] is None
    assert doc["run"]["vantage"] is None and doc["run"]["connection_ids"] == ids
    assert sorted(doc["not_selected"]) == [i for i in ids if not i.startswith("alpha:")]


def test_each_shard_keeps_its_own_pacing_ledger(dovecot: DovecotLab, tmp_path: Path) -> None:
    """Shards on one machine may share pytest's cache; each rewrites its whole login ledger,
    so each has its own file rather than overwriting the others' refusals."""
    path = _lab_fleet(tmp_path / "targets.yaml", dovecot)
    where = shard_servers(load_targets(path), 2)
    k = where["alpha"]
    proc = _run(path, tmp_path / "reports", f"--shard={k}/2", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stdout[-3000:]
    ledgers = [p.name for p in (tmp_path / "cache").rglob("login-ledger-*.json")]
    assert len(ledgers) == 1 and ledgers[0].endswith(f"-shard-{k}-of-2.json"), ledgers
