"""Self-tests of the report artifacts: the real suite runs as a subprocess against fault
servers, then every artifact is parsed and cross-checked.

One mixed lab serves five connection types, one per kind of outcome a report must show:

============  ======================================================  ==================
id            server / configuration                                  expected worst
============  ======================================================  ==================
healthy       healthy, STARTTLS, login                                 OK
warn          healthy, implicit TLS, cert warn_days 400, tiny latency  WARN
nostls        no-stls scenario, STARTTLS required                      CRIT (tls/stls)
closed        port 1 on loopback, nothing listens                      CRIT, rest SKIP
evil          html-ansi-err: -ERR <script>…ESC[31m, USER in plaintext  CRIT (auth/login)
============  ======================================================  ==================

The suite runs twice (serially and with ``-n 2``); both runs must produce the same
verdicts, and within each run the four artifacts must agree with each other.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pop3mon_lab.certs import generate_lab_certs
from pop3mon_lab.faultserver import FaultServer

REPO = Path(__file__).resolve().parent.parent
XSD = Path(__file__).resolve().parent / "data" / "junit-10.xsd"
PASSWORD_ENV = "POP3MON_TEST_PW"
PASSWORD = "report-test-pw-1"
TIERS = ("connectivity", "tls", "auth", "mailbox", "latency", "drift")
VERDICTS = ("OK", "WARN", "CRIT", "SKIP", "ERROR")
RANK = {"SKIP": 0, "OK": 1, "WARN": 2, "CRIT": 3, "ERROR": 4}
#: pop3mon_check_verdict's codes (README, "Prometheus metrics").
METRIC_VERDICTS = {0: "OK", 1: "WARN", 2: "CRIT", 3: "SKIP", 4: "ERROR"}
ALLOWED_ENVIRONMENT = {
    "Python",
    "Platform",
    "pop3mon",
    "Targets file",
    "Targets sha256",
    "Run id",
}
# Environment variables pytest-metadata copies into its table when it sees them (CI
# detection). The report must not show them.
CI_CANARIES = {"JENKINS_URL": "http://ci.invalid/canary-jenkins", "BUILD_ID": "canary-build-42"}
EVIL = "<script>alert(1)</script>"


# --------------------------------------------------------------------------- the lab
@dataclass
class Lab:
    """Fault servers plus a targets file that points at them."""

    targets: Path
    expected_worst: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        """Configured connection type ids."""
        return sorted(self.expected_worst)


def start_mixed_lab(stack: ExitStack, directory: Path) -> Lab:
    """Start the five fault servers of the module docstring; write ``targets.yaml``."""
    certs = generate_lab_certs(directory / "certs")
    users = {"alice": PASSWORD}
    cert, key = certs.valid.cert, certs.valid.key
    healthy = stack.enter_context(FaultServer("healthy", users=users, certfile=cert, keyfile=key))
    implicit = stack.enter_context(
        FaultServer("healthy", users=users, certfile=cert, keyfile=key, implicit_tls=True)
    )
    nostls = stack.enter_context(FaultServer("no-stls", users=users, certfile=cert, keyfile=key))
    evil = stack.enter_context(FaultServer("html-ansi-err", users=users))
    targets = directory / "targets.yaml"
    targets.write_text(
        f"""version: 1
defaults:
  ca_file: {certs.ca_file}
  timeout: 5
  # Fault servers neither penalize refusals nor lock mailboxes (pacing: test_pacing.py).
  login_pacing: parallel
  account: {{username: alice, password_env: {PASSWORD_ENV}}}
servers:
  - name: lab
    host: localhost
    connections:
      - {{id: healthy, port: {healthy.port}, security: starttls}}
      - id: warn
        port: {implicit.port}
        security: tls
        cert: {{warn_days: 400, crit_days: 7}}
        latency: {{total: {{warn: 0.000001, crit: 60}}}}
      - {{id: nostls, port: {nostls.port}, security: starttls}}
      - {{id: closed, port: 1, security: tls}}
      - {{id: evil, port: {evil.port}, security: none, auth: user, allow_cleartext: true}}
""",
        encoding="utf-8",
    )
    return Lab(
        targets=targets,
        expected_worst={
            "healthy": "OK",
            "warn": "WARN",
            "nostls": "CRIT",
            "closed": "CRIT",
            "evil": "CRIT",
        },
        env={PASSWORD_ENV: PASSWORD},
    )


@dataclass
class Run:
    """One finished subprocess run of the suite and where its artifacts are."""

    proc: subprocess.CompletedProcess[str]
    reports: Path
    args: tuple[str, ...]

    @property
    def output(self) -> str:
        """stdout and stderr together."""
        return self.proc.stdout + self.proc.stderr

    def path(self, name: str) -> Path:
        """An artifact of this run (asserted to exist)."""
        path = self.reports / name
        assert path.is_file(), f"{name} missing; output:\n{self.output[-3000:]}"
        return path

    def json(self) -> dict[str, Any]:
        """results.json, parsed."""
        data: dict[str, Any] = json.loads(self.path("results.json").read_text("utf-8"))
        return data


def run_suite(
    targets: Path,
    reports: Path | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    cache: bool = False,
) -> Run:
    """Run ``python -m pytest --targets=… [--reports-dir=…] ARGS`` in the repository."""
    cmd = [sys.executable, "-m", "pytest", f"--targets={targets}", *args]
    if reports is not None:
        cmd.append(f"--reports-dir={reports}")
    if not cache:
        cmd += ["-p", "no:cacheprovider"]
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_ADDOPTS", None)
    full_env.pop("POP3MON_TARGETS", None)
    proc = subprocess.run(
        cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120, check=False
    )
    # 0 all passed, 1 some failed: both are normal monitoring outcomes; anything else is
    # a crash of pytest or of the plugin.
    assert proc.returncode in (0, 1), proc.stdout[-4000:] + proc.stderr[-4000:]
    return Run(proc=proc, reports=reports or REPO / "reports", args=tuple(args))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The mixed lab, started once for this module."""
    with ExitStack() as stack:
        yield start_mixed_lab(stack, tmp_path_factory.mktemp("mixed-lab"))


@pytest.fixture(scope="module")
def runs(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The suite against the lab, serially and under xdist (each with its reports dir)."""
    env = {**lab.env, **CI_CANARIES}
    out = {}
    for name, extra in (("serial", ()), ("xdist", ("-n", "2"))):
        reports = tmp_path_factory.mktemp(f"reports-{name}")
        out[name] = run_suite(lab.targets, reports, *extra, env=env)
    return out


@pytest.fixture(params=["serial", "xdist"])
def run(request: pytest.FixtureRequest, runs: dict[str, Run]) -> Run:
    """Each of the two runs in turn."""
    return runs[request.param]


# --------------------------------------------------------------------------- readers
def json_verdicts(doc: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """(connection id, check) → verdict from results.json, asserting uniqueness; the host
    checks as (``host:<server>``, ping/tcp)."""
    out: dict[tuple[str, str], str] = {}
    entries = [(c["id"], c["checks"]) for c in doc["connections"]]
    entries += [(h["host"]["id"], h["checks"]) for h in doc.get("hosts", [])]
    for ct_id, checks in entries:
        for chk in checks:
            key = (ct_id, chk["check"])
            assert key not in out, f"duplicate check in JSON: {key}"
            out[key] = chk["verdict"]
    return out


def junit_cases(path: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Suite properties and each testcase's properties (plus its name and outcome)."""
    # junitparser's xunit2 flavour is the one that reads <testcase><properties>.
    from junitparser.xunit2 import JUnitXml

    xml = JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == 1
    suite = suites[0]
    suite_props = {p.name: p.value for p in suite.properties()}  # type: ignore[no-untyped-call]
    cases = []
    for case in suite:
        props = {p.name: p.value for p in case.properties()}  # type: ignore[attr-defined]
        props["__name__"] = case.name
        props["__result__"] = case.result[0].__class__.__name__ if case.result else "Passed"
        cases.append(props)
    return suite_props, cases


def metric_samples(path: Path) -> list[Any]:
    """Every sample of metrics.prom, parsed by prometheus_client's Prometheus text parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text = path.read_text("utf-8")
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


class _Page(HTMLParser):
    """Just enough of report.html: the matrix rows and cells, details ids, counts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.matrix_rows: list[dict[str, Any]] = []
        self.details: list[str] = []
        self.count_badges: list[str] = []
        self.jsonblob = ""
        self.external: list[str] = []
        self._in_matrix_body = False
        self._in_counts = False
        self._cell: dict[str, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        cls = a.get("class", "")
        for key in ("src", "href", "data", "srcset", "action"):
            value = a.get(key, "")
            if re.match(r"(?i)\s*(https?:|//|ftp:)", value) and tag != "a":
                self.external.append(f"<{tag} {key}={value}>")
        if tag == "table" and a.get("id") == "pop3mon-matrix":
            self._in_matrix_body = True
        if self._in_matrix_body and tag == "tr" and cls == "p3m-row":
            self.matrix_rows.append(
                {"id": a.get("data-connection"), "verdict": a.get("data-verdict"), "cells": []}
            )
        if self._in_matrix_body and tag == "td" and "p3m-cell" in cls:
            verdict = next((c[6:] for c in cls.split() if c.startswith("p3m-v-")), "")
            self.matrix_rows[-1]["cells"].append({"verdict": verdict, "title": a.get("title")})
        if tag == "details" and "p3m-ct" in cls:
            self.details.append(a.get("id", ""))
        if tag == "div" and cls == "p3m-counts":
            self._in_counts = True
        if self._in_counts and tag == "span":
            self._text = []
        if tag == "div" and a.get("id") == "data-container":
            self.jsonblob = a.get("data-jsonblob", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._in_matrix_body:
            self._in_matrix_body = False
        if self._in_counts and tag == "span":
            self.count_badges.append("".join(self._text).strip())
        if self._in_counts and tag == "div":
            self._in_counts = False

    def handle_data(self, data: str) -> None:
        self._text.append(data)


def parse_html(path: Path) -> _Page:
    """Parse report.html."""
    page = _Page()
    page.feed(path.read_text("utf-8"))
    return page


# --------------------------------------------------------------------------- tests
def test_terminal_lists_every_artifact(run: Run) -> None:
    """After writing, the terminal names each artifact with its path."""
    out = run.proc.stdout
    assert "pop3mon reports" in out
    for kind, name in (
        ("HTML", "report.html"),
        ("JUnit XML", "junit.xml"),
        ("JSON", "results.json"),
        ("OpenMetrics", "metrics.prom"),
    ):
        line = next((ln for ln in out.splitlines() if ln.startswith(kind + " ")), "")
        assert line.endswith(name), f"no terminal line for {kind}: {out[-2000:]}"
        assert Path(line.split(None, 2)[-1].strip()).name == name
        run.path(name)


def test_json_one_record_per_connection_type(run: Run, lab: Lab) -> None:
    """results.json: versioned schema, every connection type once with its whole probe
    result and every check, counts that add up, worst verdicts as configured."""
    doc = run.json()
    assert doc["schema"] == "pop3mon/results/v1"
    assert set(doc) >= {"schema", "run", "counts", "connections", "not_selected"}
    ids = [c["id"] for c in doc["connections"]]
    assert sorted(ids) == lab.ids, ids
    assert doc["not_selected"] == []
    sha = hashlib.sha256(lab.targets.read_bytes()).hexdigest()
    assert doc["run"]["targets"] == {
        "file": "targets.yaml",
        "sha256": sha,
        "connection_ids": lab.ids,  # the whole file's (what a merge checks shards cover)
    }
    for conn in doc["connections"]:
        assert conn["verdict"] == lab.expected_worst[conn["id"]], conn["id"]
        assert conn["probe"] is not None and conn["probe"]["id"] == conn["id"]
        assert {"phases", "stages", "tls", "auth", "transcript"} <= set(conn["probe"])
        checks = [c["check"] for c in conn["checks"]]
        assert len(checks) == len(set(checks)), checks
        # 15 tier checks plus at least the total latency.
        assert len(checks) >= 16 and "latency-total" in checks
        assert {c["tier"] for c in conn["checks"]} == set(TIERS)
    counts = Counter(v for v in json_verdicts(doc).values())
    assert doc["counts"] == {
        **{v: counts.get(v, 0) for v in VERDICTS},
        "total": sum(counts.values()),
    }
    by = {c["id"]: {k["check"]: k for k in c["checks"]} for c in doc["connections"]}
    assert by["warn"]["expiry"]["verdict"] == "WARN"
    assert by["warn"]["latency-total"]["verdict"] == "WARN"
    assert by["nostls"]["stls"]["verdict"] == "CRIT"
    assert by["closed"]["tcp"]["verdict"] == "CRIT"
    assert by["closed"]["login"]["verdict"] == "SKIP"
    assert "TCP connect" in by["closed"]["login"]["reason"]
    assert by["evil"]["login"]["verdict"] == "CRIT"
    # The lab's server has several connection types: one host check for them all, up
    # (one closed port among open ones is that connection type's own CRIT, not the host's).
    (host,) = doc["hosts"]
    assert (host["host"]["id"], host["status"]) == ("host:lab", "up")
    assert sorted(host["host"]["connections"]) == lab.ids
    # Its PING check only where PING is on (it is not, here).
    assert {c["check"]: c["verdict"] for c in host["checks"]} == {"tcp": "OK"}


def test_junit_valid_and_complete(run: Run, lab: Lab) -> None:
    """junit.xml: one testcase per check with pop3mon properties, suite properties from the
    controller, valid against the unmodified junit-10.xsd except for testcase properties."""
    import xmlschema

    path = run.path("junit.xml")
    tree = ET.parse(path)
    # 1. Strict: drop the testcase <properties> extension, the rest must be junit-10.
    for element in tree.iter("testcase"):
        for props in element.findall("properties"):
            element.remove(props)
    xmlschema.XMLSchema(str(XSD)).validate(tree)
    # 2. The full file against the schema with that one extension allowed.
    patched = XSD.read_text("utf-8").replace(
        '<xs:element name="testcase">\n        <xs:complexType>\n            <xs:sequence>',
        '<xs:element name="testcase">\n        <xs:complexType>\n            <xs:sequence>\n'
        '                <xs:element ref="properties" minOccurs="0"/>',
    )
    assert patched != XSD.read_text("utf-8")
    xmlschema.XMLSchema(patched).validate(str(path))
    # 3. Content, read with junitparser like a CI consumer would.
    suite_props, cases = junit_cases(path)
    doc = run.json()
    assert suite_props["pop3mon_run_id"] == doc["run"]["id"]
    assert suite_props["pop3mon_targets_sha256"] == doc["run"]["targets"]["sha256"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", suite_props["pop3mon_started"])
    seen: dict[tuple[str, str], str] = {}
    for case in cases:
        key = (case["pop3mon_ct"], case["pop3mon_check"])
        assert key not in seen, f"two testcases for {key}"
        seen[key] = case["pop3mon_verdict"]
        for prop in ("pop3mon_server", "pop3mon_tier", "pop3mon_reason", "pop3mon_host"):
            assert prop in case, (key, prop)
        if case["pop3mon_ct"].startswith("host:"):
            # A host check has no POP3 session: its host, ports and status instead.
            assert case["pop3mon_tier"] == "host" and case["pop3mon_host_status"] == "up", key
        elif case["pop3mon_ct"] != "closed":
            assert "pop3mon_phase_total_ms" in case, key
        expected = {"CRIT": "Failure", "SKIP": "Skipped"}.get(case["pop3mon_verdict"], "Passed")
        assert case["__result__"] == expected, (key, case["__result__"])
    assert seen == json_verdicts(doc)
    healthy = next(
        c for c in cases if c["pop3mon_ct"] == "healthy" and c["pop3mon_check"] == "expiry"
    )
    assert float(healthy["pop3mon_cert_days_left"]) > 300
    # Each testcase carries the timings of its own phases, not every phase of the session.
    tcp = next(c for c in cases if c["pop3mon_ct"] == "healthy" and c["pop3mon_check"] == "tcp")
    assert "pop3mon_phase_connect_ms" in tcp and "pop3mon_phase_auth_ms" not in tcp
    assert "pop3mon_cert_days_left" not in tcp
    for verdict in VERDICTS:
        assert int(suite_props[f"pop3mon_checks_{verdict}"]) == doc["counts"][verdict]


def test_metrics_valid_and_complete(run: Run, lab: Lab) -> None:
    """metrics.prom passes promtool, parses as Prometheus text, and holds one verdict
    series per check (a code, no verdict label) plus the per-connection gauges."""
    path = run.path("metrics.prom")
    text = path.read_text("utf-8")
    promtool = shutil.which("promtool")
    if promtool is not None:
        proc = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    samples = metric_samples(path)
    doc = run.json()
    verdicts: dict[tuple[str, str], str] = {}
    by_name: dict[str, list[Any]] = {}
    for s in samples:
        by_name.setdefault(s.name, []).append(s)
    for s in by_name["pop3mon_check_verdict"]:
        key = (s.labels["connection"], s.labels["check"])
        assert key not in verdicts, key
        verdicts[key] = METRIC_VERDICTS[int(s.value)]
        labels = {"connection", "server", "host", "port", "security", "tier", "check"}
        assert set(s.labels) == labels
    # The host checks: their own family, no label that changes with the verdict.
    for s in by_name["pop3mon_host_check_verdict"]:
        assert set(s.labels) == {"server", "host", "check"}
        verdicts["host:" + s.labels["server"], s.labels["check"]] = METRIC_VERDICTS[int(s.value)]
    assert verdicts == json_verdicts(doc)
    host = {s.name: s.value for s in samples if s.name.startswith("pop3mon_host_")}
    assert host["pop3mon_host_up"] == 1 and host["pop3mon_host_blocked_connections"] == 0
    up = {s.labels["connection"]: s.value for s in by_name["pop3mon_up"]}
    assert up == {"healthy": 1, "warn": 1, "nostls": 1, "closed": 0, "evil": 1}
    success = {s.labels["connection"]: s.value for s in by_name["pop3mon_probe_success"]}
    assert success == {"healthy": 1, "warn": 1, "nostls": 0, "closed": 0, "evil": 0}
    # Only where a login was tried: nostls and closed ended before it.
    auth = {s.labels["connection"]: s.value for s in by_name["pop3mon_auth_success"]}
    assert auth == {"healthy": 1, "warn": 1, "evil": 0}
    certs = {s.labels["connection"] for s in by_name["pop3mon_cert_expires_in_seconds"]}
    assert certs == {"healthy", "warn"}
    for s in by_name["pop3mon_cert_expires_in_seconds"]:
        assert 300 * 86400 < s.value < 400 * 86400
    phases = {(s.labels["connection"], s.labels["phase"]) for s in by_name["pop3mon_phase_seconds"]}
    assert ("healthy", "tls_handshake") in phases and ("warn", "tls") in phases
    probed = by_name["pop3mon_probe_start_timestamp_seconds"]
    assert {s.labels["connection"] for s in probed} == set(lab.ids)
    counts = {s.labels["verdict"]: s.value for s in by_name["pop3mon_checks"]}
    assert counts == {v: doc["counts"][v] for v in VERDICTS}


def test_html_matrix_details_and_environment(run: Run, lab: Lab) -> None:
    """report.html: a matrix row per connection type with cells coloured by each tier's
    worst verdict, one <details> each, nothing fetched from outside, allow-listed
    environment only, server text escaped."""
    path = run.path("report.html")
    text = path.read_text("utf-8")
    page = parse_html(path)
    doc = run.json()
    # Grouped by server (the lab has one), most severe first.
    assert [r["id"] for r in page.matrix_rows] == [
        c["id"] for c in sorted(doc["connections"], key=lambda c: (-RANK[c["verdict"]], c["id"]))
    ]
    assert 'data-server="lab"' in text
    for row in page.matrix_rows:
        conn = next(c for c in doc["connections"] if c["id"] == row["id"])
        assert row["verdict"] == conn["verdict"]
        assert len(row["cells"]) == len(TIERS)
        for tier, cell in zip(TIERS, row["cells"], strict=True):
            mine = [c["verdict"] for c in conn["checks"] if c["tier"] == tier]
            assert cell["verdict"] == max(mine, key=RANK.__getitem__), (row["id"], tier)
            # The tooltip names every check of the tier, a problem with its reason.
            for chk in (c for c in conn["checks"] if c["tier"] == tier):
                if chk["verdict"] in ("WARN", "CRIT", "ERROR"):
                    assert f"{chk['check']}: {chk['verdict']} — {chk['reason']}" in cell["title"]
                else:
                    assert chk["check"] in cell["title"]
    assert len(page.details) == len(lab.ids) == len(set(page.details))
    assert page.external == [], page.external
    assert not re.search(r"<link[^>]+href=|<script[^>]+src=|url\(\s*['\"]?https?:", text)
    # Counts at the top agree with the JSON.
    badges: dict[str, int] = {}
    for text_badge in page.count_badges:
        number, verdict = text_badge.split(" ", 1)
        badges[verdict] = int(number)
    assert badges == {v: doc["counts"][v] for v in VERDICTS}
    # pop3mon writes the page from the run model (pytest-html keeps no test's report): no
    # pytest-html data; the environment table allow-listed, no CI variable in it.
    assert page.jsonblob == ""
    section = re.search(r'<section class="p3m" id="environment">.*?</section>', text, re.S)
    assert section, "no environment table"
    environment = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", section[0]))
    assert set(environment) == ALLOWED_ENVIRONMENT
    assert environment["Run id"] == doc["run"]["id"]
    for canary in CI_CANARIES.values():
        assert canary not in text
    head = re.search(r'<tr class="p3m-group-head">.*?</tr>', text)
    assert head and "Server <b>lab</b>" in head[0], head
    assert re.search(r"host check <span[^>]*>OK</span> up", head[0]), head[0]
    # Hostile server text: escaped everywhere, never live markup; no raw escape byte.
    assert EVIL not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "\x1b" not in text


def test_server_text_escaped_in_junit_and_json(run: Run) -> None:
    """The hostile -ERR text stays inert text in JUnit (XML-escaped) and JSON."""
    raw = run.path("junit.xml").read_text("utf-8")
    assert EVIL not in raw and "&lt;script&gt;" in raw
    assert "\x1b" not in raw
    evil = next(c for c in run.json()["connections"] if c["id"] == "evil")
    reason = next(c["reason"] for c in evil["checks"] if c["check"] == "login")
    assert "\x1b" not in reason


def test_counts_agree_across_artifacts(run: Run) -> None:
    """JSON, JUnit, metrics and HTML count the same checks per verdict."""
    doc = run.json()
    json_counts = {v: doc["counts"][v] for v in VERDICTS}
    suite_props, cases = junit_cases(run.path("junit.xml"))
    junit_counts = Counter(c["pop3mon_verdict"] for c in cases)
    metric_counts = Counter(
        METRIC_VERDICTS[int(s.value)]
        for s in metric_samples(run.path("metrics.prom"))
        if s.name in ("pop3mon_check_verdict", "pop3mon_host_check_verdict")
    )
    page = parse_html(run.path("report.html"))
    html_counts: Counter[str] = Counter()
    for text_badge in page.count_badges:
        number, verdict = text_badge.split(" ", 1)
        html_counts[verdict] = int(number)
    for verdict in VERDICTS:
        expected = json_counts[verdict]
        assert junit_counts.get(verdict, 0) == expected, verdict
        assert int(suite_props[f"pop3mon_checks_{verdict}"]) == expected, verdict
        assert metric_counts.get(verdict, 0) == expected, verdict
        assert html_counts.get(verdict, 0) == expected, verdict


def test_serial_and_xdist_agree(runs: dict[str, Run]) -> None:
    """Under -n 2 the artifacts hold exactly the verdicts of the serial run."""
    serial = json_verdicts(runs["serial"].json())
    xdist = json_verdicts(runs["xdist"].json())
    assert serial == xdist


def test_report_options(lab: Lab, tmp_path: Path) -> None:
    """ini pop3mon_reports_dir places the files; an explicit --junitxml wins for JUnit;
    --no-reports writes nothing of pop3mon's own."""
    ini_dir = tmp_path / "from-ini"
    own_xml = tmp_path / "mine.xml"
    run = run_suite(
        lab.targets,
        None,
        "-k",
        "test_dns",
        "-o",
        f"pop3mon_reports_dir={ini_dir}",
        f"--junitxml={own_xml}",
        env=lab.env,
    )
    assert sorted(p.name for p in ini_dir.iterdir()) == [
        "history.sqlite",  # the run history lives next to the reports by default
        "metrics.prom",
        "report.html",
        "results.json",
    ], run.output[-2000:]
    assert own_xml.is_file()
    _, cases = junit_cases(own_xml)
    assert {c["pop3mon_ct"] for c in cases} == set(lab.ids)
    off_dir = tmp_path / "off"
    run_suite(
        lab.targets,
        None,
        "-k",
        "test_dns",
        "-o",
        f"pop3mon_reports_dir={off_dir}",
        "--no-reports",
        env=lab.env,
    )
    assert not off_dir.exists()


# --------------------------------------------------------------------------- unit level
def test_waterfall_svg_is_inert(lab: Lab) -> None:
    """The waterfall is one <svg> without script or external reference, labels escaped."""
    from pop3mon.engine.result import ProbeResult, StageOutcome
    from pop3mon.report.svg import waterfall_svg

    result = ProbeResult(
        id="x",
        host="h",
        port=1,
        security="tls",
        mechanism="auto",
        started_at=0.0,
        phases=(("dns", 0.001), ("connect", 0.002), ("total", 0.004)),
        stages=(
            StageOutcome("dns", "ok"),
            StageOutcome("connect", "ok"),
            StageOutcome("tls", "fail", "tls", EVIL),
        ),
    )
    svg = waterfall_svg(result, {"total": "WARN"}, title=EVIL)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert EVIL not in svg and "&lt;script&gt;" in svg
    assert "href" not in svg and "<script" not in svg
    ET.fromstring(svg)  # well-formed XML
    assert "failed" in svg  # the failed TLS stage is shown even without a timing


def test_waterfall_segments_add_up_to_the_total_bar() -> None:
    """The phase bars lie end to end and, with the remainder drawn as "other", are exactly
    as wide as the total bar: before, a total with time outside the phases (here half of
    it) ended far beyond the last phase, and tiny phases were padded to 1 px each."""
    from pop3mon.engine.result import ProbeResult, StageOutcome
    from pop3mon.report.svg import waterfall_svg

    phases = (("dns", 0.00001), ("connect", 0.00002), ("tls", 0.004), ("greeting", 0.006))
    result = ProbeResult(
        id="x",
        host="h",
        port=1,
        security="tls",
        mechanism="auto",
        started_at=0.0,
        phases=(*phases, ("total", 0.020)),
        stages=tuple(StageOutcome(name, "ok") for name, _ in phases),
    )
    root = ET.fromstring(waterfall_svg(result))
    rects = list(root.iter("{http://www.w3.org/2000/svg}rect"))
    segs = [r for r in rects if r.get("class") == "p3m-seg"]
    total = next(r for r in rects if r.get("class") == "p3m-total")
    assert len(segs) == len(phases) + 1  # the phases and "other"
    widths = [float(r.get("width", "")) for r in segs]
    assert abs(sum(widths) - float(total.get("width", ""))) < 0.05
    for seg, nxt in itertools.pairwise(segs):
        end = float(seg.get("x", "")) + float(seg.get("width", ""))
        assert abs(end - float(nxt.get("x", ""))) < 0.05
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "other (between phases)" in texts and "10.0 ms" in texts  # 20 - 10 ms


@pytest.mark.parametrize(
    ("error", "last"),
    [
        (
            {
                "error_kind": "tls-handshake",
                "error_stage": "tls",
                "error_reason": "certificate verify failed: unable to get local issuer",
            },
            "TLS handshake failed: certificate verify failed: unable to get local issuer",
        ),
        ({}, "QUIT answered +OK, connection closed"),
    ],
)
def test_transcript_ends_with_why_the_session_ended(error: dict[str, str], last: str) -> None:
    """The transcript's last line names why the session ended, as the engine knew it."""
    from pop3mon.engine.result import ProbeResult, StageOutcome, TranscriptLine
    from pop3mon.report.html import _transcript

    result = ProbeResult(
        id="x",
        host="h",
        port=1,
        security="tls",
        mechanism="auto",
        started_at=0.0,
        phases=(("total", 0.0123),),
        stages=(StageOutcome("quit", "ok"),) if not error else (),
        transcript=(TranscriptLine(0.001, "S", "+OK ready"),),
        **error,  # type: ignore[arg-type]
    )
    text = re.sub(r"<[^>]+>", "", _transcript(result)).splitlines()
    assert text[-1] == f"12.3 ms — session ended: {last}"


def test_results_table_keeps_only_rows_the_page_does_not_explain() -> None:
    """pytest-html's table keeps a test that broke (its log) and foreign tests only."""
    from pop3mon.report.html import keeps_row
    from pop3mon.report.recorder import CheckRecord
    from pop3mon.verdict import Verdict

    def rec(verdict: str) -> CheckRecord:
        return CheckRecord("t", "x", "s", "tls", "expiry", Verdict.parse(verdict), "r", "")

    assert keeps_row(None) and keeps_row(rec("ERROR"))
    assert not any(keeps_row(rec(v)) for v in ("OK", "WARN", "CRIT", "SKIP"))


# --------------------------------------------------------------------------- secrets
SENTINEL = "Sntl-7f3a9c-pop3mon-canary"


def _needles(user: str) -> dict[str, str]:
    return {
        "plain": SENTINEL,
        "base64": base64.b64encode(SENTINEL.encode()).decode(),
        "sasl-plain": base64.b64encode(f"\0{user}\0{SENTINEL}".encode()).decode(),
        "sasl-plain-authzid": base64.b64encode(f"{user}\0{user}\0{SENTINEL}".encode()).decode(),
    }


@pytest.fixture(scope="module")
def secret_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Servers that fail logins and echo or mangle the credentials they were sent."""
    directory = tmp_path_factory.mktemp("secret-lab")
    certs = generate_lab_certs(directory / "certs")
    other = {"alice": "not-the-sentinel"}
    with ExitStack() as stack:
        echo = stack.enter_context(FaultServer("echo-credentials", users=other))
        evil = stack.enter_context(FaultServer("html-ansi-err", users=other))
        wrong = stack.enter_context(
            FaultServer("healthy", users=other, certfile=certs.valid.cert, keyfile=certs.valid.key)
        )
        targets = directory / "targets.yaml"
        targets.write_text(
            f"""version: 1
defaults:
  ca_file: {certs.ca_file}
  timeout: 5
  login_pacing: parallel  # fault servers: no penalty, no locks (see test_pacing.py)
  allow_cleartext: true
  account: {{username: alice, password_env: {PASSWORD_ENV}}}
servers:
  - name: lab
    host: localhost
    connections:
      - {{id: echo-user, port: {echo.port}, security: none, auth: user}}
      - {{id: echo-plain, port: {echo.port}, security: none, auth: plain}}
      - {{id: evil-user, port: {evil.port}, security: none, auth: user}}
      - {{id: wrong-plain-tls, port: {wrong.port}, security: starttls, auth: plain}}
      - {{id: wrong-user, port: {wrong.port}, security: none, auth: user}}
      - {{id: wrong-login, port: {wrong.port}, security: starttls, auth: login}}
""",
            encoding="utf-8",
        )
        yield targets


@pytest.mark.parametrize(
    "args",
    [
        (
            "-vv",
            "--tb=long",
            "-l",
            "-rA",
            "-o",
            "log_cli=true",
            "--log-cli-level=DEBUG",
            "--log-level=DEBUG",
            "-o",
            "junit_logging=all",
        ),
        (
            "-v",
            "--showlocals",
            "--tb=long",
            "-rA",
            "-n",
            "2",
            "--log-level=DEBUG",
            "-o",
            "junit_logging=all",
        ),
    ],
    ids=["vv-long-locals-logcli", "v-showlocals-xdist"],
)
def test_no_secret_in_any_output(secret_lab: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    """Failing logins at high verbosity: the password appears nowhere — not in the
    terminal, not in any artifact, not in .pytest_cache — in any common encoding."""
    cache = tmp_path / "cache"
    reports = tmp_path / "reports"
    run = run_suite(
        secret_lab,
        reports,
        *args,
        "-o",
        f"cache_dir={cache}",
        env={PASSWORD_ENV: SENTINEL},
        cache=True,
    )
    assert run.proc.returncode == 1, run.output[-3000:]  # the logins must really have failed
    doc = run.json()
    login = {
        c["id"]: next(k for k in c["checks"] if k["check"] == "login") for c in doc["connections"]
    }
    assert all(v["verdict"] == "CRIT" for v in login.values()), login
    # The echo server did send the password back; the reports show it redacted.
    assert "[REDACTED]" in login["echo-user"]["reason"], login["echo-user"]
    assert "[REDACTED]" in login["echo-plain"]["reason"], login["echo-plain"]
    # `pop3mon merge` writes its reports from results.json alone: searched too.
    merged = tmp_path / "merged"
    merging = subprocess.run(
        [sys.executable, "-m", "pop3mon.cli", "merge", f"--out={merged}", str(reports)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "plugins")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert merging.returncode == 0, merging.stderr
    files = [p for p in (*reports.rglob("*"), *cache.rglob("*"), *merged.iterdir()) if p.is_file()]
    assert {p.name for p in files} >= {"report.html", "junit.xml", "results.json", "metrics.prom"}
    assert len([p for p in files if p.is_relative_to(merged)]) == 4
    assert any(p.is_relative_to(cache) for p in files), "cache was not written"
    # The run history (next to the reports) holds every check's reason and the probe's
    # facts: its raw bytes, and any WAL left beside it, are searched too.
    assert "history.sqlite" in {p.name for p in files}
    texts = {"terminal": run.output + merging.stdout + merging.stderr} | {
        str(p): p.read_text("utf-8", "replace") for p in files
    }
    hits = [
        f"{kind} in {where}"
        for where, text in texts.items()
        for kind, needle in _needles("alice").items()
        if needle in text
    ]
    hits += [
        f"{kind} in the bytes of {p}"
        for p in files
        if p.name.startswith("history.sqlite")
        for kind, needle in _needles("alice").items()
        if needle.encode() in p.read_bytes()
    ]
    assert hits == []
    # The reasons did reach the history (redacted), so the search above searched them.
    db = sqlite3.connect(reports / "history.sqlite")
    try:
        reasons = [r[0] for r in db.execute("SELECT reason FROM check_rows WHERE ct = 'echo-user'")]
    finally:
        db.close()
    assert any("[REDACTED]" in r for r in reasons), reasons


def test_collect_only_writes_no_reports(lab: Lab, tmp_path: Path) -> None:
    """``--collect-only`` probes nothing, so it must not replace the last real run's reports
    with empty ones."""
    reports = tmp_path / "reports"
    reports.mkdir()
    previous = reports / "report.html"
    previous.write_text("the last real run", encoding="utf-8")
    run_suite(lab.targets, reports, "--collect-only", "-q", env=lab.env)
    assert previous.read_text(encoding="utf-8") == "the last real run"
    assert sorted(p.name for p in reports.iterdir()) == ["report.html"]


def test_results_json_check_entries_are_scrubbed() -> None:
    """A check's results.json entry is built of scrubbed text and skipped by the scrub walk
    after it: a secret in any of its text fields, its state's included, still comes out
    redacted."""
    from pop3mon.history.model import CheckState
    from pop3mon.report.json_report import _check, _scrubbed
    from pop3mon.report.recorder import CheckRecord
    from pop3mon.secrets import REDACTED, Secret
    from pop3mon.verdict import Verdict

    secret = "json-entry-SENTINEL-5c2e"
    Secret(secret)
    rec = CheckRecord(
        f"tests_targets/test_auth.py::test_login[{secret}]",
        "ct",
        "srv",
        "auth",
        "login",
        Verdict.CRIT,
        f"server said {secret}",
        "failed",
        figure=1.5,
        unit=secret,
        blocked_by=secret,
    )
    state = CheckState("ct", "login", Verdict.CRIT, "hard", 0.0, 1, None)
    text = json.dumps(_scrubbed({"checks": [_check(rec, state)]}))
    assert secret not in text
    assert text.count(REDACTED) == 4  # nodeid, reason, unit, blocked_by
