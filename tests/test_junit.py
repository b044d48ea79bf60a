"""Self-tests of junit.xml as CI views read it, on real suite runs against the Dovecot lab.

Three connection types on ``127.0.0.1`` (an address: the DNS check SKIPs, so it does no
work and must show none):

========  ===========================================================  ==============
id        configuration                                                 expected
========  ===========================================================  ==============
tls       implicit TLS, certificate warn_days 400 (the lab's is 365)   expiry WARN
starttls  STARTTLS, a wrong password (the secret sentinel)             login CRIT
closed    a port nothing listens on                                    tcp CRIT
========  ===========================================================  ==============

The suite runs twice: with the defaults (read with junitparser, as the GitHub reporters
do), and under xdist with ``--junit-classname=connection --junit-strict --strict-warn``
(validated against the unmodified Ant/Jenkins junit-10.xsd in ``tests/data``).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_reports import REPO, XSD, Run, run_suite

from pop3mon_lab.dovecot import DovecotLab

PW_ENV = "POP3MON_JUNIT_PW"
SENTINEL_ENV = "POP3MON_JUNIT_SENTINEL"
SENTINEL = "junit-sentinel-Qx7wK2"
# Rounding: pytest and pop3mon write testcase times with three decimals, so a time differs
# from its phase by up to half a millisecond; a tie such as 0.0365 (0.03649999... as a float)
# rounds down and the float subtraction lands a hair above 0.0005, hence the epsilon.
ROUNDING = 0.0005 + 1e-9


@dataclass(frozen=True)
class Runs:
    """The two runs of the module docstring and the lab's facts."""

    default: Run
    strict: Run
    password: str


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound (so nobody else takes it), never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture(scope="module")
def runs(dovecot: DovecotLab, closed_port: int, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The suite against the lab, with the default JUnit shape and the strict one."""
    work = tmp_path_factory.mktemp("junit")
    user = dovecot.demo_user
    targets = work / "targets.yaml"
    data = {
        "version": 1,
        "defaults": {
            "ca_file": str(dovecot.ca_file),
            "account": {"username": user, "password_env": PW_ENV},
            "login_pacing": "parallel",
            "latency": {"total": {"warn": 30, "crit": 60}},
        },
        "servers": [
            {
                "name": "lab",
                "host": "127.0.0.1",
                "connections": [
                    {
                        "id": "tls",
                        "port": dovecot.port("pop3s"),
                        "security": "tls",
                        "cert": {"warn_days": 400, "crit_days": 7},
                    },
                    {
                        "id": "starttls",
                        "port": dovecot.port("pop3"),
                        "security": "starttls",
                        "account": {"username": user, "password_env": SENTINEL_ENV},
                    },
                    {"id": "closed", "port": closed_port, "security": "tls", "timeout": 5},
                ],
            }
        ],
    }
    targets.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    env = {PW_ENV: dovecot.demo_password, SENTINEL_ENV: SENTINEL}
    default = run_suite(targets, work / "default", env=env)
    strict = run_suite(
        targets,
        work / "strict",
        "--junit-classname=connection",
        "--junit-strict",
        "--strict-warn",
        "-n",
        "2",
        env=env,
    )
    return Runs(default=default, strict=strict, password=dovecot.demo_password)


def cases(run: Run) -> list[ET.Element]:
    """Every testcase of the run's junit.xml."""
    return list(ET.parse(run.path("junit.xml")).getroot().iter("testcase"))


def props(case: ET.Element) -> dict[str, str]:
    """A testcase's properties (default shape)."""
    return {p.get("name", ""): p.get("value", "") for p in case.iter("property")}


def out_facts(case: ET.Element) -> dict[str, str]:
    """A strict testcase's properties, read back from its ``name: value`` output lines."""
    facts = {}
    for line in (case.findtext("system-out") or "").splitlines():
        name, sep, value = line.partition(": ")
        if sep and name.startswith("pop3mon_"):
            facts[name] = value
    return facts


def json_doc(run: Run) -> dict[str, Any]:
    """results.json of the run."""
    doc: dict[str, Any] = json.loads(run.path("results.json").read_text("utf-8"))
    return doc


def test_warn_is_visible_where_ci_views_look(runs: Runs) -> None:
    """A WARN check passes, and its name (all GitLab and the GitHub reporters show of a
    passing testcase) ends in [WARN]; its <system-out> starts with the reason."""
    from junitparser.xunit2 import JUnitXml

    suite = next(iter(JUnitXml.fromfile(str(runs.default.path("junit.xml")))))
    by_name = {case.name: case for case in suite}
    warn = by_name["test_expiry[tls] [WARN]"]
    assert not warn.result, "WARN must stay a pass without --strict-warn"
    assert (warn.system_out or "").startswith("WARN: certificate expires ")
    # Only WARN is marked: OK, CRIT and SKIP names are pytest's.
    marked = {name for name in by_name if name.endswith(" [WARN]")}
    verdicts = {
        c["pop3mon_ct"] + "/" + c["pop3mon_check"]: c for c in map(props, cases(runs.default))
    }
    warned = {k for k, c in verdicts.items() if c["pop3mon_verdict"] == "WARN"}
    assert len(marked) == len(warned) >= 1, (marked, warned)
    assert "test_tcp[closed]" in by_name and "test_login[starttls]" in by_name
    # Under --strict-warn the same check fails, named the same way.
    strict = {c.get("name"): c for c in cases(runs.strict)}
    failure = strict["test_expiry[tls] [WARN]"].find("failure")
    assert failure is not None and "--strict-warn" in failure.get("message", "")


def test_testcase_time_is_the_checks_own(runs: Runs) -> None:
    """Each check's time is the phases it owns: the skipped DNS check (the first test, in
    which the whole probe runs) shows 0, and a connection type's times add up to at most
    its probe total."""
    for run in (runs.default, runs.strict):
        doc = json_doc(run)
        probes = {c["id"]: c["probe"] for c in doc["connections"]}
        times: dict[str, list[float]] = {}
        for case in cases(run):
            facts = props(case) or out_facts(case)
            ct, check, verdict = (
                facts["pop3mon_ct"],
                facts["pop3mon_check"],
                facts["pop3mon_verdict"],
            )
            seconds = float(case.get("time", "nan"))
            if ct.startswith("host:"):
                # A host check's own time: the slowest of its ports' connects (tcp).
                (host,) = (h for h in doc["hosts"] if h["host"]["id"] == ct)
                slowest = max(p["seconds"] or 0.0 for p in host["result"]["ports"])
                assert check == "tcp" and abs(seconds - slowest) <= ROUNDING, (ct, seconds)
                continue
            times.setdefault(ct, []).append(seconds)
            phases = dict(probes[ct]["phases"])
            if check == "dns":
                assert verdict == "SKIP" and seconds == 0.0, (ct, case.get("time"))
            if verdict == "SKIP" or check.startswith("latency-"):
                assert seconds == 0.0, (ct, check, seconds)
            elif check == "tcp":
                assert abs(seconds - phases["connect"]) <= ROUNDING, (ct, seconds, phases)
            elif check == "login":
                assert abs(seconds - phases["auth"]) <= ROUNDING, (ct, seconds, phases)
            elif check == "handshake" and ct == "tls":
                assert abs(seconds - phases["tls"]) <= ROUNDING, (ct, seconds, phases)
        for ct, values in times.items():
            total = dict(probes[ct]["phases"])["total"]
            assert sum(values) <= total + ROUNDING * len(values), (ct, values, total)
        # A refused connect can take under half a millisecond; a TLS session cannot.
        assert max(times["tls"]) > 0.0 and max(times["starttls"]) > 0.0, times


def test_classname_groups_by_connection_type(runs: Runs) -> None:
    """--junit-classname=connection: classname is the connection type id; the default keeps
    pytest's module path (one group per tier)."""
    strict = cases(runs.strict)
    # The lab server's host check is a group of its own (host:lab).
    assert {c.get("classname") for c in strict} == {"tls", "starttls", "closed", "host:lab"}
    for case in strict:
        assert case.get("classname") == out_facts(case)["pop3mon_ct"]
    default = {c.get("classname") for c in cases(runs.default)}
    assert "tests_targets.test_connectivity" in default and "tls" not in default


def test_strict_is_schema_valid_and_default_parses(runs: Runs) -> None:
    """--junit-strict validates against the unmodified junit-10.xsd, keeping every fact in
    <system-out>; the default output (testcase properties) is not valid there, and
    junitparser reads it with its properties."""
    import xmlschema
    from junitparser.xunit2 import JUnitXml

    schema = xmlschema.XMLSchema(str(XSD))
    strict_path = runs.strict.path("junit.xml")
    schema.validate(str(strict_path))
    assert not ET.parse(strict_path).getroot().findall(".//testcase/properties")
    login = next(c for c in cases(runs.strict) if c.get("name") == "test_login[starttls]")
    facts = out_facts(login)
    assert facts["pop3mon_verdict"] == "CRIT" and facts["pop3mon_host"] == "127.0.0.1"
    assert login.find("failure") is not None

    default_path = runs.default.path("junit.xml")
    assert not schema.is_valid(str(default_path))
    suite = next(iter(JUnitXml.fromfile(str(default_path))))
    parsed = {case.name: {p.name: p.value for p in case.properties()} for case in suite}  # type: ignore[attr-defined]
    assert parsed["test_login[starttls]"]["pop3mon_verdict"] == "CRIT"
    assert len(parsed) == len(cases(runs.strict))


def test_no_secret_in_junit(runs: Runs) -> None:
    """Neither the refused sentinel password nor the real one reaches either JUnit file."""
    for run in (runs.default, runs.strict):
        text = run.path("junit.xml").read_text("utf-8")
        assert SENTINEL not in text and runs.password not in text
        assert "test_login[starttls]" in text


def test_bad_classname_ini_is_one_line(tmp_path: Path) -> None:
    """A wrong ini pop3mon_junit_classname stops the run at start with one line."""
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "version: 1\nservers:\n  - name: s\n    host: 127.0.0.1\n"
        "    connections: [{port: 1, security: tls}]\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"--targets={targets}",
            f"--reports-dir={tmp_path / 'reports'}",
            "-p",
            "no:cacheprovider",
            "-o",
            "pop3mon_junit_classname=tier",
        ],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "pop3mon_junit_classname = 'tier' is not one of module, connection" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_xml_text_writes_what_elementtree_writes() -> None:
    """The JUnit writers' own serializer gives ElementTree's bytes for every element shape
    they write: attributes and text with markup, quotes, CR/LF/TAB and non-ASCII, empty
    and nested elements, a tail."""
    import xml.etree.ElementTree as ET

    from pop3mon.report.junit import xml_text

    hostile = "a&b <c> \"d\" 'e'\r\n\tf ü \u2028 ]]>"
    case = ET.Element("testcase", {"classname": hostile, "name": "n[x]", "time": "0.100"})
    props = ET.SubElement(case, "properties")
    for i in range(3):
        ET.SubElement(props, "property", name=f"p{i}", value=hostile * i)
    ET.SubElement(case, "failure", message=hostile).text = hostile
    ET.SubElement(case, "skipped", message="")
    empty = ET.SubElement(case, "system-out")
    empty.text = ""
    empty.tail = hostile
    for elem in (case, props, empty, ET.Element("x")):
        assert xml_text(elem) == ET.tostring(elem, encoding="unicode")


def test_check_testcases_are_the_shaped_elements_bytes() -> None:
    """A check's testcase written as text (``check_case_text``) is, byte for byte, what
    ElementTree's element of the check's test, shaped by ``shape_testcase``, serializes
    to: every verdict and outcome, WARN, both classnames, strict mode, markup, quotes,
    line breaks, characters XML cannot hold, an empty reason, with and without the test's
    own failure message (or a broken test's traceback)."""
    import xml.etree.ElementTree as ET

    from pop3mon.report.junit import (
        JUnitOptions,
        _split_nodeid,
        check_case_text,
        shape_testcase,
        xml_text,
    )
    from pop3mon.report.recorder import NOT_RUN, CheckRecord, record_properties
    from pop3mon.verdict import Verdict

    def reference(
        rec: CheckRecord, seconds: float, extra: list[tuple[str, object]], options: JUnitOptions
    ) -> str:
        classname, _, name = _split_nodeid(rec.nodeid)
        case = ET.Element("testcase", classname=classname, name=name)
        holder = ET.SubElement(case, "properties")
        for key, value in [*record_properties(rec), *extra]:
            ET.SubElement(holder, "property", {"name": key, "value": str(value)})
        if rec.verdict == Verdict.ERROR:
            # A broken test's traceback, else its reason; its body broke: a failure.
            tag = "failure" if rec.broke_in == "call" else "error"
            ET.SubElement(case, tag, message=rec.reason).text = rec.failure or rec.reason
        elif rec.outcome == "failed":
            # The test's own failure message, else the plain one.
            text = rec.failure or f"{rec.verdict} {rec.ct} {rec.check}: {rec.reason}"
            ET.SubElement(case, "failure", message=f"Failed: {text}").text = text
        elif rec.outcome == "skipped":
            ET.SubElement(case, "skipped", type="pytest.skip", message=rec.reason).text = rec.reason
        shape_testcase(case, (rec, seconds), options)
        return xml_text(case)

    hostile = "a&b <c> \"d\" 'e'\r\n\tf \u00fc \x1b[31m \x07 ]]>"
    extra: list[tuple[str, object]] = [("pop3mon_host", hostile), ("pop3mon_phase_tcp_ms", 1.5)]
    shapes = [
        (Verdict.OK, "passed", ""),
        (Verdict.WARN, "passed", ""),
        (Verdict.CRIT, "failed", ""),
        (Verdict.SKIP, "skipped", ""),
        (Verdict.ERROR, "failed", "setup"),
        (Verdict.ERROR, "failed", "call"),
        (Verdict.SKIP, NOT_RUN, ""),
    ]
    compared = 0
    for (verdict, outcome, phase), failure in itertools.product(shapes, ("", f"message {hostile}")):
        for reason in (hostile, ""):
            rec = CheckRecord(
                f"tests_targets/test_tls.py::test_expiry[{hostile}]",
                f"ct {hostile}",
                "srv",
                "tls",
                "expiry",
                verdict,
                reason,
                outcome,
                figure=2.5,
                unit="days",
                blocked_by="handshake" if verdict == Verdict.SKIP else "",
                failure=failure,
                broke_in=phase,
            )
            for options in (
                JUnitOptions(),
                JUnitOptions(classname="connection"),
                JUnitOptions(strict=True),
            ):
                assert check_case_text(rec, 0.0125, extra, options) == reference(
                    rec, 0.0125, extra, options
                ), (verdict, outcome, phase, reason, options)
                compared += 1
    assert compared == len(shapes) * 2 * 2 * 3


def test_xml_text_writes_characters_xml_cannot_hold_as_junitxml_does() -> None:
    """ESC, BEL, NUL and friends (a project's own test may print them) are written as
    ``#xNN``: the file parses, where ElementTree would write them raw."""
    import xml.etree.ElementTree as ET

    from pop3mon.report.junit import xml_text

    raw = "bad \x1b[31m red \x07 bell \x00 \x7f \ufffe end"
    case = ET.Element("testcase", name=raw)
    ET.SubElement(case, "failure", message=raw).text = raw
    text = xml_text(case)
    back = ET.fromstring(text)
    failure = back.find("failure")
    assert failure is not None
    expected = "bad #x1B[31m red #x07 bell #x00 #x7F #xFFFE end"
    assert back.get("name") == failure.get("message") == failure.text == expected


def test_every_character_xml_cannot_hold_is_replaced_and_no_other() -> None:
    """Over all of Unicode, the characters replaced are exactly those XML 1.0's ``Char``
    production excludes (#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] |
    [#x10000-#x10FFFF], less #x7F as pytest's junitxml also replaces it)."""
    from pop3mon.report.junit import _NOT_XML

    def allowed(c: int) -> bool:
        return (
            c in (0x9, 0xA, 0xD)
            or (0x20 <= c <= 0xD7FF and c != 0x7F)
            or 0xE000 <= c <= 0xFFFD
            or 0x10000 <= c <= 0x10FFFF
        )

    every = "".join(map(chr, range(0x110000)))
    replaced = {ord(m.group()) for m in _NOT_XML.finditer(every)}
    assert replaced == {c for c in range(0x110000) if not allowed(c)}


def test_testcase_names_are_junitxmls() -> None:
    """classname and name of a node id as pytest's junitxml makes them: parameters that
    hold "::" (an IPv6 address) stay whole, a file's own node id is all name."""
    from _pytest.junitxml import mangle_test_address
    from pop3mon.report.junit import _split_nodeid

    for nodeid in (
        "tests_targets/test_tls.py::test_expiry[ct-1]",
        "tests_targets/test_latency.py::test_latency[ct-1-total]",
        "test_own.py::TestThing::test_method[::1-x]",
        "deep/dir/test_unimportable.py",
        "test_x.py::test_y[a/b.py]",
    ):
        names = mangle_test_address(nodeid)
        assert _split_nodeid(nodeid) == (".".join(names[:-1]), "", names[-1]), nodeid
