"""Self-tests of ``metrics.prom`` against real Dovecot: what every series means, blackbox_exporter
compatibility, run health, a failed configuration, and the example alerting rules.

The suite runs as a user runs it (``python -m pytest --targets=…``) against the Dovecot lab;
the file is read back with ``prometheus_client``'s parser and checked by ``promtool``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from pop3mon_lab.dovecot import DovecotLab, free_port

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "ci" / "prometheus" / "pop3mon-rules.yml"
RULE_TESTS = ROOT / "ci" / "prometheus" / "pop3mon-rules.test.yml"
PW_ENV = "POP3MON_METRICS_PW"
WRONG_ENV = "POP3MON_METRICS_WRONG_PW"
#: The wrong password: a secret like any other, so it must not reach the file either.
SENTINEL = "Sntl-metrics-4b1d-canary"
VERDICTS = {"OK", "WARN", "CRIT", "SKIP", "ERROR"}
HEALTH = {
    "pop3mon_last_run_timestamp_seconds",
    "pop3mon_run_duration_seconds",
    "pop3mon_config_valid",
}
BLACKBOX = {
    "probe_success",
    "probe_duration_seconds",
    "probe_dns_lookup_time_seconds",
    "probe_ssl_earliest_cert_expiry",
    "probe_ssl_last_chain_expiry_timestamp_seconds",
    "probe_tls_version_info",
}


def _strict() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists() else None)
    if path is None:
        if _strict():
            pytest.fail(f"{tool} is not installed (CI=true)")
        pytest.skip(f"{tool} is not installed (Debian package prometheus / blackbox exporter)")
    return path


# --------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One finished suite run: exit status, output, its reports directory, its window."""

    returncode: int
    output: str
    reports: Path
    began: float
    ended: float

    @property
    def text(self) -> str:
        return (self.reports / "metrics.prom").read_text("utf-8")

    def samples(self) -> list[Any]:
        return samples_of(self.text)

    def by_name(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for s in self.samples():
            out.setdefault(s.name, []).append(s)
        return out

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.reports / "results.json").read_text("utf-8"))
        return data


def samples_of(text: str) -> list[Any]:
    """Every sample, parsed by prometheus_client's Prometheus text parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def families_of(text: str) -> dict[str, str]:
    """Family name → type."""
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f.type for f in text_string_to_metric_families(text)}


def run_suite(targets: Path, reports: Path, env: Mapping[str, str]) -> Run:
    """``python -m pytest --targets=… --reports-dir=…`` in the repository root."""
    environ = {
        k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "POP3MON_TARGETS")
    }
    environ.update(env)
    began = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"--targets={targets}",
            f"--reports-dir={reports}",
            "-p",
            "no:cacheprovider",
            "--no-history",
        ],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(proc.returncode, proc.stdout + proc.stderr, reports, began, time.time())


def write_targets(path: Path, dovecot: DovecotLab, closed: int) -> Path:
    """Six connection types on Dovecot, each a different outcome for the metrics."""
    data = {
        "version": 1,
        "defaults": {
            "ca_file": str(dovecot.ca_file),
            "account": {"username": dovecot.demo_user, "password_env": PW_ENV},
            "login_pacing": "parallel",
            "timeout": 5,
            "latency": {"total": {"warn": 30, "crit": 60}},
        },
        "servers": [
            {
                "name": "lab",
                "host": dovecot.hostname,
                "connections": [
                    {"id": "tls", "port": dovecot.port("pop3s"), "security": "tls"},
                    {
                        "id": "starttls",
                        "port": dovecot.port("pop3", "chain"),
                        "security": "starttls",
                    },
                    {
                        "id": "plain",
                        "port": dovecot.port("pop3", "self_signed"),
                        "security": "none",
                        "auth": "apop",
                    },
                    {"id": "expired", "port": dovecot.port("pop3s", "expired"), "security": "tls"},
                    {
                        "id": "wrong",
                        "port": dovecot.port("pop3s"),
                        "security": "tls",
                        "account": {"username": dovecot.demo_user, "password_env": WRONG_ENV},
                    },
                    {"id": "closed", "port": closed, "security": "tls"},
                ],
            }
        ],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Lab:
    targets: Path
    env: dict[str, str]
    dovecot: DovecotLab


@pytest.fixture(scope="module")
def lab(dovecot: DovecotLab, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    directory = tmp_path_factory.mktemp("metrics-lab")
    targets = write_targets(directory / "targets.yaml", dovecot, free_port())
    return Lab(targets, {PW_ENV: dovecot.demo_password, WRONG_ENV: SENTINEL}, dovecot)


@pytest.fixture(scope="module")
def run(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The suite against the lab, once for this module."""
    done = run_suite(lab.targets, tmp_path_factory.mktemp("metrics-reports"), lab.env)
    assert done.returncode == 1, done.output[-4000:]  # expired, wrong, closed are CRIT
    return done


def _by_label(samples: list[Any], label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in samples:
        assert s.labels[label] not in out, s
        out[s.labels[label]] = s.value
    return out


def _cert_expiries(pem: bytes) -> list[float]:
    return [c.not_valid_after_utc.timestamp() for c in x509.load_pem_x509_certificates(pem)]


# --------------------------------------------------------------------------- format
def test_metrics_parse_and_pass_promtool(run: Run) -> None:
    """prometheus_client parses every family as a gauge, and promtool accepts the file."""
    families = families_of(run.text)
    assert set(families.values()) == {"gauge"}, families
    assert BLACKBOX - {"probe_dns_lookup_time_seconds"} <= set(families)
    proc = subprocess.run(
        [_need("promtool"), "check", "metrics"],
        input=run.text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert SENTINEL not in run.text and run.output.count(SENTINEL) == 0


def test_own_exposition_writer_is_byte_identical_to_prometheus_client(run: Run) -> None:
    """metrics.prom is written without ``generate_latest``'s per-sample label-name checks
    (issue 14, scale); the bytes must stay exactly what prometheus_client writes for the
    same samples: for this run's file and for label values that need escaping."""
    from pop3mon.report.metrics import _Collector
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    class Parsed:
        def collect(self) -> Any:
            return text_string_to_metric_families(run.text)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Parsed())  # type: ignore[arg-type]
    assert generate_latest(registry).decode("utf-8") == run.text

    out = _Collector()
    hostile = ["back\\slash", 'quote"d', "new\nline", "plain", "ünïcode"]
    for n, value in enumerate(hostile):
        out.add("pop3mon_up", [value, "srv", "host", "110", "none"], n)
    out.add("pop3mon_checks", ["OK"], 1e-7)
    out.add("pop3mon_config_valid", (), float("nan"))
    assert out.text() == out.text(fast=False)


def test_no_label_value_changes_with_the_verdict(run: Run, lab: Lab, tmp_path: Path) -> None:
    """No series carries a verdict (or a state's hardness) as a label value, except the
    per-verdict counts, which always list all five; and a run in which every login fails
    writes the same check series as one in which they pass."""
    samples = run.samples()
    for s in samples:
        if s.name == "pop3mon_checks":
            continue
        for key, value in s.labels.items():
            assert value.upper() not in VERDICTS, (s.name, key, value)
            assert value not in ("soft", "hard"), (s.name, key, value)
    counts = {s.labels["verdict"] for s in samples if s.name == "pop3mon_checks"}
    assert counts == VERDICTS
    failing = run_suite(lab.targets, tmp_path, {**lab.env, PW_ENV: SENTINEL})
    assert failing.returncode == 1, failing.output[-3000:]

    def series(r: Run, names: set[str]) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {(s.name, tuple(sorted(s.labels.items()))) for s in r.samples() if s.name in names}

    stable = {"pop3mon_check_verdict", "pop3mon_checks", "probe_success", "pop3mon_up"}
    assert series(failing, stable) == series(run, stable)

    def verdicts(r: Run) -> dict[tuple[str, str], float]:
        return {
            (s.labels["connection"], s.labels["check"]): s.value
            for s in r.samples()
            if s.name == "pop3mon_check_verdict"
        }

    before, after = verdicts(run), verdicts(failing)
    assert before[("tls", "login")] == 0 and after[("tls", "login")] == 2
    assert before != after  # the values changed, the series did not
    assert SENTINEL not in failing.text


# --------------------------------------------------------------------------- meaning
def test_up_and_auth_success_mean_what_they_say(run: Run) -> None:
    """pop3mon_up: the server greeted +OK; pop3mon_auth_success: present once a login was
    tried, 1 accepted, 0 refused; absent when the probe never reached the login."""
    by = run.by_name()
    up = _by_label(by["pop3mon_up"], "connection")
    assert up == {"tls": 1, "starttls": 1, "plain": 1, "expired": 0, "wrong": 1, "closed": 0}
    auth = _by_label(by["pop3mon_auth_success"], "connection")
    assert auth == {"tls": 1, "starttls": 1, "plain": 1, "wrong": 0}
    success = _by_label(by["pop3mon_probe_success"], "connection")
    assert success == {"tls": 1, "starttls": 1, "plain": 1, "expired": 0, "wrong": 0, "closed": 0}


def test_a_host_down_is_no_probe_success(tmp_path: Path) -> None:
    """A connection type its host check blocked (the host is down: every check SKIP, not
    probed) is no success: pop3mon_probe_success and blackbox's probe_success are 0, as a
    blackbox user alerting on ``probe_success == 0`` expects of a dead host, pop3mon_up is
    0, and no probe duration is made up (absent, not 0)."""
    data = {
        "version": 1,
        "defaults": {"timeout": 2, "auth": "none"},
        "servers": [
            {
                "name": "gone",
                "host": "127.0.0.1",
                "connections": [
                    {"id": "gone-tls", "port": free_port(), "security": "tls"},
                    {"id": "gone-plain", "port": free_port(), "security": "none"},
                ],
            }
        ],
    }
    targets = tmp_path / "targets.yaml"
    targets.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    done = run_suite(targets, tmp_path / "reports", {})
    assert done.returncode == 1, done.output[-3000:]
    document = done.json()
    assert [h["status"] for h in document["hosts"]] == ["down"]
    ids = {"gone-tls", "gone-plain"}
    for conn in document["connections"]:
        assert {c["verdict"] for c in conn["checks"]} == {"SKIP"}, conn["checks"]
    by = done.by_name()
    assert _by_label(by["pop3mon_host_up"], "server") == {"gone": 0}
    assert _by_label(by["pop3mon_probe_success"], "connection") == dict.fromkeys(ids, 0)
    assert _by_label(by["probe_success"], "target") == dict.fromkeys(ids, 0)
    assert _by_label(by["pop3mon_up"], "connection") == dict.fromkeys(ids, 0)
    for name in ("pop3mon_probe_duration_seconds", "probe_duration_seconds"):
        assert not by.get(name), (name, by.get(name))


def test_mailbox_gauges_and_run_health(run: Run, lab: Lab) -> None:
    """STAT's count and size per connection type that logged in; the run's health gauges."""
    by = run.by_name()
    box = lab.dovecot.mailbox()
    assert _by_label(by["pop3mon_mailbox_messages"], "connection") == dict.fromkeys(
        ("tls", "starttls", "plain"), box.count
    )
    assert _by_label(by["pop3mon_mailbox_size_bytes"], "connection") == dict.fromkeys(
        ("tls", "starttls", "plain"), box.size
    )
    (last,) = by["pop3mon_last_run_timestamp_seconds"]
    (duration,) = by["pop3mon_run_duration_seconds"]
    (valid,) = by["pop3mon_config_valid"]
    assert run.began <= last.value <= run.ended
    assert 0 < duration.value <= run.ended - run.began
    assert valid.value == 1 and not last.labels and not valid.labels
    (start,) = by["pop3mon_run_start_timestamp_seconds"]
    assert start.value == run.json()["run"]["started_epoch"]


def test_blackbox_series_mean_what_blackbox_means(run: Run, lab: Lab) -> None:
    """probe_* carry target (connection id) and module (security mode), and their values
    follow blackbox_exporter: success of the whole session, the TLS version as a label,
    the earliest expiry among presented certificates and within the verified chain."""
    by = run.by_name()
    for name in BLACKBOX & set(by):
        for s in by[name]:
            extra = {"version"} if name == "probe_tls_version_info" else set()
            assert set(s.labels) == {"target", "module", *extra}, s
    modules = {s.labels["target"]: s.labels["module"] for s in by["probe_success"]}
    assert modules == {
        "tls": "pop3_tls",
        "starttls": "pop3_starttls",
        "plain": "pop3_plain",
        "expired": "pop3_tls",
        "wrong": "pop3_tls",
        "closed": "pop3_tls",
    }
    success = _by_label(by["probe_success"], "target")
    assert success == {"tls": 1, "starttls": 1, "plain": 1, "expired": 0, "wrong": 0, "closed": 0}
    total = _by_label(by["pop3mon_probe_duration_seconds"], "connection")
    assert _by_label(by["probe_duration_seconds"], "target") == total
    # Only a completed handshake has TLS facts (blackbox_exporter likewise).
    versions = {s.labels["target"]: s.labels["version"] for s in by["probe_tls_version_info"]}
    protocols = {
        c["id"]: c["probe"]["tls"]["protocol"]
        for c in run.json()["connections"]
        if c["probe"] is not None and c["probe"]["tls"] is not None
    }
    assert set(versions) == {"tls", "starttls", "wrong"}
    for target, version in versions.items():
        assert version == protocols[target].replace("TLSv", "TLS ")
        assert version in ("TLS 1.2", "TLS 1.3")
    certs = lab.dovecot.certs
    ca = _cert_expiries(certs.ca_file.read_bytes())
    valid = _cert_expiries(certs.variant("valid").cert.read_bytes())
    chain = _cert_expiries(certs.variant("chain").cert.read_bytes())
    assert len(chain) == 2  # leaf + intermediate presented
    earliest = _by_label(by["probe_ssl_earliest_cert_expiry"], "target")
    last = _by_label(by["probe_ssl_last_chain_expiry_timestamp_seconds"], "target")
    assert earliest == {"tls": min(valid), "wrong": min(valid), "starttls": min(chain)}
    assert last == {"tls": min(valid + ca), "wrong": min(valid + ca), "starttls": min(chain + ca)}
    # The expired certificate is still reported by pop3mon's own series.
    expired = _by_label(by["pop3mon_cert_expires_in_seconds"], "connection")["expired"]
    assert expired < 0


def test_blackbox_exporter_emits_the_same_names_and_values(
    run: Run, lab: Lab, tmp_path: Path
) -> None:
    """Debian's blackbox_exporter probing the same Dovecot port (tcp prober with TLS) emits
    the probe_* families pop3mon writes, as gauges, with the same certificate figures."""
    binary = _need("prometheus-blackbox-exporter")
    port = free_port()
    config = tmp_path / "blackbox.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "modules": {
                    "pop3_tls": {
                        "prober": "tcp",
                        "timeout": "5s",
                        "tcp": {
                            "preferred_ip_protocol": "ip4",
                            "tls": True,
                            "tls_config": {
                                "ca_file": str(lab.dovecot.ca_file),
                                "server_name": "localhost",
                            },
                            "query_response": [{"expect": "^\\+OK"}],
                        },
                    }
                }
            }
        ),
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        target = f"127.0.0.1:{lab.dovecot.port('pop3s')}"
        url = f"http://127.0.0.1:{port}/probe?module=pop3_tls&target={target}"
        text = _fetch_when_up(url, proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    theirs = families_of(text)
    ours = families_of(run.text)
    for name in BLACKBOX:
        assert theirs.get(name) == "gauge", (name, theirs)
        if name != "probe_dns_lookup_time_seconds":
            assert ours.get(name) == "gauge", name
    bb = {s.name: s for s in samples_of(text)}
    assert bb["probe_success"].value == 1
    by = run.by_name()
    for name in ("probe_ssl_earliest_cert_expiry", "probe_ssl_last_chain_expiry_timestamp_seconds"):
        mine = _by_label(by[name], "target")["tls"]
        assert bb[name].value == int(mine), name  # blackbox_exporter truncates to seconds
    assert bb["probe_tls_version_info"].labels["version"] == next(
        s.labels["version"] for s in by["probe_tls_version_info"] if s.labels["target"] == "tls"
    )


def _fetch_when_up(url: str, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return str(answer.read().decode("utf-8"))
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"blackbox_exporter did not answer: {err[-2000:]}")
            time.sleep(0.1)


# --------------------------------------------------------------------------- config errors
BROKEN = "version: 1\nservers:\n  - name: lab\n    hostt: localhost\n"


def _without_health(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for s in samples_of(text)
        if s.name not in HEALTH
    }


def _health(text: str) -> dict[str, float]:
    return {s.name: s.value for s in samples_of(text) if s.name in HEALTH}


def test_config_error_keeps_previous_metrics_marked_invalid(
    run: Run, lab: Lab, tmp_path: Path
) -> None:
    """A typo in targets.yaml: exit 4 with the config error, every other report file as it
    was, metrics.prom the previous samples plus config_valid 0 and this run's health."""
    reports = tmp_path / "reports"
    shutil.copytree(run.reports, reports)
    before = {p.name: p.read_bytes() for p in reports.iterdir() if p.is_file()}
    broken = tmp_path / "targets.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    failed = run_suite(broken, reports, lab.env)
    assert failed.returncode == 4, failed.output[-3000:]
    assert "invalid targets file" in failed.output and "Traceback" not in failed.output
    after = {p.name: p.read_bytes() for p in reports.iterdir() if p.is_file()}
    assert set(after) == set(before)  # nothing new, no temporary file left
    for name in before:
        if name != "metrics.prom":
            assert after[name] == before[name], name
    text = after["metrics.prom"].decode()
    assert _without_health(text) == _without_health(before["metrics.prom"].decode())
    health = _health(text)
    assert health["pop3mon_config_valid"] == 0
    assert failed.began <= health["pop3mon_last_run_timestamp_seconds"] <= failed.ended
    assert health["pop3mon_run_duration_seconds"] >= 0
    proc = subprocess.run(
        [_need("promtool"), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The next valid run is valid again.
    again = run_suite(lab.targets, reports, lab.env)
    assert again.returncode == 1 and _health(again.text)["pop3mon_config_valid"] == 1


def test_config_error_without_previous_file_writes_run_health(tmp_path: Path) -> None:
    """No previous metrics.prom: the failed run leaves one with its health only, so the
    config_valid alert fires from the first run on."""
    broken = tmp_path / "targets.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    reports = tmp_path / "reports"
    failed = run_suite(broken, reports, {})
    assert failed.returncode == 4, failed.output[-3000:]
    assert [p.name for p in reports.iterdir()] == ["metrics.prom"]
    text = (reports / "metrics.prom").read_text("utf-8")
    assert set(families_of(text)) == HEALTH
    assert _health(text)["pop3mon_config_valid"] == 0


def test_run_monitor_with_a_mistyped_targets_path_keeps_metrics(run: Run, tmp_path: Path) -> None:
    """ci/run-monitor with a targets path that does not exist (a typo in the cron line):
    exit 2, and the reports directory keeps its files, metrics.prom marked config_valid 0."""
    reports = tmp_path / "reports"
    shutil.copytree(run.reports, reports)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POP3MON_")}
    env.update(POP3MON_PYTHON=sys.executable, POP3MON_NO_INSTALL="1")
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "ci" / "run-monitor"),
            f"--targets={tmp_path / 'targts.yaml'}",
            f"--reports={reports}",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "file not found" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    text = (reports / "metrics.prom").read_text("utf-8")
    assert _health(text)["pop3mon_config_valid"] == 0
    assert _without_health(text) == _without_health(run.text)
    assert (reports / "results.json").read_bytes() == (run.reports / "results.json").read_bytes()


# --------------------------------------------------------------------------- alert rules
def test_alert_rules_pass_promtool_unit_tests() -> None:
    """ci/prometheus/pop3mon-rules.yml is valid and its unit tests pass."""
    promtool = _need("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert test.returncode == 0, test.stdout + test.stderr


def test_alert_rules_use_only_series_pop3mon_writes() -> None:
    """Every metric a rule (or its unit test) names is one metrics.py defines, and every
    alert has a unit test: a renamed metric cannot leave a rule silently matching nothing."""
    from pop3mon.report import metrics

    defined = {name for name, _, _ in metrics._FAMILIES}
    rules = yaml.safe_load(RULES.read_text("utf-8"))
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\b(?:pop3mon|probe)_[a-z_]+\b", e)}
    assert used and used <= defined, used - defined
    tests = yaml.safe_load(RULE_TESTS.read_text("utf-8"))
    series = {s["series"].split("{")[0] for t in tests["tests"] for s in t.get("input_series", ())}
    assert series <= defined, series - defined
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tested = {
        a["alertname"]
        for t in tests["tests"]
        for a in t.get("alert_rule_test", ())
        if a.get("exp_alerts")
    }
    assert alerts == tested, alerts ^ tested


# --------------------------------------------------------------------------- chain semantics
def _issue(
    subject: str,
    key: Any,
    issuer: tuple[x509.Certificate, Any] | None,
    days: int,
    ca: bool,
) -> x509.Certificate:
    import datetime as dt

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def test_chain_expiries_follow_blackbox_exporter(tmp_path: Path) -> None:
    """A chain whose trust anchor expires first (200 days), then the intermediate (300),
    then the leaf (400): probe_ssl_earliest_cert_expiry is the intermediate's (the earliest
    the server *presented*: leaf and intermediate), probe_ssl_last_chain_expiry_timestamp_
    seconds the root's (the earliest in the *verified* chain), as blackbox_exporter's
    getEarliestCertExpiry and getLastChainExpiry compute them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from pop3mon.engine import ProbeSpec, probe

    from pop3mon_lab.faultserver import FaultServer

    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    root = _issue("metrics root", keys[0], None, 200, ca=True)
    inter = _issue("metrics intermediate", keys[1], (root, keys[0]), 300, ca=True)
    leaf = _issue("localhost", keys[2], (inter, keys[1]), 400, ca=False)
    pem = serialization.Encoding.PEM
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(root.public_bytes(pem))
    cert_file.write_bytes(leaf.public_bytes(pem) + inter.public_bytes(pem))
    key_file.write_bytes(
        keys[2].private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with FaultServer("healthy", certfile=cert_file, keyfile=key_file, implicit_tls=True) as server:
        spec = ProbeSpec(
            id="chain",
            host="localhost",
            port=server.port,
            security="tls",
            auth="none",
            ca_file=str(ca_file),
            address="127.0.0.1",
        )
        result = probe(spec)
    assert result.tls is not None and result.tls.verified, result.error_reason
    assert result.tls.chain_earliest_expiry == inter.not_valid_after_utc.timestamp()
    assert result.tls.verified_chain_earliest_expiry == root.not_valid_after_utc.timestamp()
    # Without verification there is no verified chain (blackbox_exporter: none either).
    with FaultServer("healthy", certfile=cert_file, keyfile=key_file, implicit_tls=True) as server:
        spec = ProbeSpec(
            id="chain",
            host="localhost",
            port=server.port,
            security="tls",
            auth="none",
            verify_tls=False,
            address="127.0.0.1",
        )
        unverified = probe(spec)
    assert unverified.tls is not None
    assert unverified.tls.chain_earliest_expiry == inter.not_valid_after_utc.timestamp()
    assert unverified.tls.verified_chain_earliest_expiry is None
