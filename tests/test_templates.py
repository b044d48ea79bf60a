"""Self-tests of the scheduling entry points and templates in ci/.

* ``ci/run-monitor``: its exit status (0 OK, 1 CRIT, 2 no verdict) and WARN handling, run for
  real against the project's fault server on 127.0.0.1;
* the GitHub Actions workflow and the GitLab CI pipeline: their structure, that every secret
  the example targets.yaml references is mapped, and that the validators ci/selftest runs
  (jactionlint, check-jsonschema) accept them and reject a broken copy;
* the systemd units (``systemd-analyze verify`` where it exists, the OnFailure= template
  too), the README's promises, ``.ci/run`` -> ``ci/selftest`` and the selftest's handling of
  pytest's exit 5;
* the templates' scripts run as written (GitLab's script and after_script, GitHub's Monitor
  and keepalive steps) in a copy of the checkout. The cron line: tests/test_cron.py; which
  test runs which shown command: tests/test_readme_commands.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pop3mon.config import load_targets

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dovecot import free_port
from pop3mon_lab.faultserver import DEFAULT_USERS, FaultServer

ROOT = Path(__file__).resolve().parents[1]
GITHUB = ROOT / "ci" / "github" / "pop3mon.yml"
GITLAB = ROOT / "ci" / "gitlab" / ".gitlab-ci.yml"
RUN_MONITOR = ROOT / "ci" / "run-monitor"
BIN = Path(sys.executable).parent
USER = "alice"
PASSWORD = DEFAULT_USERS[USER]
REPORTS = ("report.html", "junit.xml", "results.json", "metrics.prom")


def _env_secrets() -> set[str]:
    """Environment variables the example targets.yaml references for secrets."""
    targets = load_targets(ROOT / "targets.yaml")
    return {
        c.secret_source.removeprefix("env:")
        for c in targets.connections
        if c.secret_source.startswith("env:")
    }


def _tool(name: str) -> str | None:
    """A console script next to this interpreter (the venv), else on PATH."""
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name)


def _strict() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(name: str) -> str:
    path = _tool(name)
    if path is None:
        if _strict():
            pytest.fail(f"{name} is not installed (CI=true)")
        pytest.skip(f"{name} is not installed")
    return path


# --------------------------------------------------------------------------- run-monitor


@pytest.fixture(scope="module")
def servers(lab_certs: LabCerts) -> Iterator[dict[str, int]]:
    """Fault servers: implicit TLS (healthy) and plaintext with APOP (WARN: weak mechanism)."""
    users = {USER: PASSWORD}
    pair = lab_certs.variant("valid")
    with (
        FaultServer(
            "healthy", users=users, certfile=pair.cert, keyfile=pair.key, implicit_tls=True
        ) as tls,
        FaultServer("healthy", users=users) as plain,
    ):
        yield {"tls": tls.port, "apop": plain.port}


def _targets(path: Path, ca: Path, connections: list[str]) -> Path:
    body = "\n".join(f"      - {c}" for c in connections)
    path.write_text(
        f"""version: 1
defaults:
  timeout: 5
  ca_file: {ca}
  account: {{username: {USER}, password_env: POP3MON_TEST_PASSWORD}}
servers:
  - name: lab
    host: localhost
    address: 127.0.0.1
    connections:
{body}
""",
        encoding="utf-8",
    )
    return path


def run_monitor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    for key in ("POP3MON_TARGETS", "POP3MON_REPORTS", "POP3MON_STRICT_WARN", "POP3MON_WORKERS"):
        full.pop(key, None)
    full.update(
        POP3MON_PYTHON=sys.executable,
        POP3MON_NO_INSTALL="1",
        POP3MON_TEST_PASSWORD=PASSWORD,
        PYTHONDONTWRITEBYTECODE="1",
    )
    full.update(env)
    return subprocess.run(
        ["bash", str(RUN_MONITOR), *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture
def ok_targets(tmp_path: Path, servers: dict[str, int], lab_certs: LabCerts) -> Path:
    return _targets(
        tmp_path / "ok.yaml",
        lab_certs.ca_file,
        [f"{{id: ok-tls, port: {servers['tls']}, security: tls}}"],
    )


@pytest.fixture
def warn_targets(tmp_path: Path, servers: dict[str, int], lab_certs: LabCerts) -> Path:
    return _targets(
        tmp_path / "warn.yaml",
        lab_certs.ca_file,
        [f"{{id: weak-apop, port: {servers['apop']}, security: none, auth: apop}}"],
    )


@pytest.fixture
def crit_targets(tmp_path: Path, servers: dict[str, int], lab_certs: LabCerts) -> Path:
    return _targets(
        tmp_path / "crit.yaml",
        lab_certs.ca_file,
        [
            f"{{id: ok-tls, port: {servers['tls']}, security: tls}}",
            f"{{id: closed, port: {free_port()}, security: tls}}",
        ],
    )


def test_run_monitor_ok_writes_reports(ok_targets: Path, tmp_path: Path) -> None:
    reports = tmp_path / "out"
    (reports).mkdir()
    (reports / "results.json").write_text("stale", encoding="utf-8")
    proc = run_monitor(f"--targets={ok_targets}", f"--reports={reports}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pop3mon: exit 0" in proc.stderr
    assert (reports / "junit.xml").exists() and (reports / "report.html").exists()
    assert 'name="test_login[ok-tls]"' in (reports / "junit.xml").read_text(encoding="utf-8")
    # The new set replaced the earlier run's files (none is left behind looking current).
    assert (reports / "results.json").read_text(encoding="utf-8") != "stale"
    # pytest's cache (the login ledger) lives with the reports, not in the checkout.
    assert (reports / ".pytest_cache").is_dir()


def test_run_monitor_keeps_the_previous_reports_on_a_config_error(
    ok_targets: Path, tmp_path: Path
) -> None:
    reports = tmp_path / "out"
    assert run_monitor(f"--targets={ok_targets}", f"--reports={reports}").returncode == 0
    before = {p.name: p.read_bytes() for p in reports.iterdir() if p.is_file()}
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nservers: [{name: x}]\n", encoding="utf-8")
    proc = run_monitor(f"--targets={broken}", f"--reports={reports}")
    assert proc.returncode == 2 and "targets file error" in proc.stderr, proc.stderr
    after = {p.name: p.read_bytes() for p in reports.iterdir() if p.is_file()}
    # metrics.prom keeps the previous samples, marked config_valid 0 (tests/test_metrics.py).
    metrics = after.pop("metrics.prom").decode()
    assert metrics.endswith("pop3mon_config_valid 0.0\n")
    assert after == {k: v for k, v in before.items() if k != "metrics.prom"}


def test_run_monitor_crit_exits_1(crit_targets: Path, tmp_path: Path) -> None:
    proc = run_monitor(f"--targets={crit_targets}", f"--reports={tmp_path / 'r'}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "CRIT closed tcp" in proc.stdout
    assert "pop3mon: exit 1: at least one check is CRIT" in proc.stderr


def test_run_monitor_crit_under_xdist(crit_targets: Path, tmp_path: Path) -> None:
    proc = run_monitor(f"--targets={crit_targets}", f"--reports={tmp_path / 'r'}", "-n", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"\b2 workers\b|created: 2/2 workers", proc.stdout), proc.stdout


def test_run_monitor_warn_is_configurable(warn_targets: Path, tmp_path: Path) -> None:
    reports = f"--reports={tmp_path / 'r'}"
    relaxed = run_monitor(f"--targets={warn_targets}", reports)
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert "WARN" in relaxed.stdout
    flag = run_monitor(f"--targets={warn_targets}", reports, "--strict-warn")
    assert flag.returncode == 1, flag.stdout + flag.stderr
    assert "(--strict-warn)" in flag.stdout
    env = run_monitor(f"--targets={warn_targets}", reports, POP3MON_STRICT_WARN="1")
    assert env.returncode == 1, env.stdout + env.stderr
    off = run_monitor(f"--targets={warn_targets}", reports, POP3MON_STRICT_WARN="0")
    assert off.returncode == 0, off.stdout + off.stderr


def test_run_monitor_usage_errors_exit_2(ok_targets: Path, tmp_path: Path) -> None:
    reports = f"--reports={tmp_path / 'r'}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\n", encoding="utf-8")
    cases: list[tuple[tuple[str, ...], dict[str, str], str]] = [
        ((f"--targets={bad}", reports), {}, "invalid targets file"),
        ((f"--targets={tmp_path / 'missing.yaml'}", reports), {}, "targets file not found"),
        ((f"--targets={ok_targets}", reports, "-k", "no_such_connection"), {}, "no check"),
        ((f"--targets={ok_targets}", reports), {"POP3MON_STRICT_WARN": "maybe"}, "must be 1 or 0"),
        ((f"--targets={ok_targets}", reports, "-n", "lots"), {}, "number of workers"),
        ((f"--targets={ok_targets}", reports, "--no-such-option"), {}, "exit 2"),
    ]
    for args, env, message in cases:
        proc = run_monitor(*args, **env)
        assert proc.returncode == 2, (args, env, proc.stdout + proc.stderr)
        assert message in proc.stdout + proc.stderr, (args, proc.stdout + proc.stderr)


def test_run_monitor_help() -> None:
    proc = run_monitor("--help")
    assert proc.returncode == 0
    assert "Exit status: 0" in proc.stdout and "--strict-warn" in proc.stdout


# --------------------------------------------------------------------------- GitHub Actions


def _load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_github_workflow_structure() -> None:
    wf = _load(GITHUB)
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert isinstance(on, dict)
    assert on["schedule"] and all("cron" in entry for entry in on["schedule"])
    assert "workflow_dispatch" in on
    steps = wf["jobs"]["monitor"]["steps"]
    monitor = next(s for s in steps if "ci/run-monitor" in s.get("run", ""))
    env = monitor["env"]
    for name in _env_secrets():
        assert env.get(name) == f"${{{{ secrets.{name} }}}}", name
    uses = [s["uses"] for s in steps if "uses" in s]
    junit = next(u for u in uses if u.startswith(("mikepenz/action-junit-report@", "dorny/")))
    assert re.search(r"@v\d+\.\d+\.\d+$|@[0-9a-f]{40}$", junit), f"not pinned: {junit}"
    assert "actions/upload-artifact@v4" in uses
    upload = next(s for s in steps if s.get("uses") == "actions/upload-artifact@v4")
    for name in REPORTS:
        assert f"reports/{name}" in upload["with"]["path"]
    publish = next(s for s in steps if s.get("uses") == junit)
    assert publish["with"]["report_paths"] == "reports/junit.xml"
    # Reports are published and uploaded also when the monitor step failed on CRIT.
    assert "cancelled()" in publish["if"] and "cancelled()" in upload["if"]


def test_github_workflow_passes_validators() -> None:
    jactionlint = _need("jactionlint")
    lint = subprocess.run(
        [jactionlint, "--no-online", "--no-color", "--ignore=unpinned-uses", str(GITHUB)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    schema = subprocess.run(
        [_need("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(GITHUB)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr


@pytest.mark.parametrize(
    ("old", "new", "finding"),
    [
        ('cron: "*/15 * * * *"', 'cron: "*/15 25 * * *"', "invalid-cron"),
        ("retention-days: 30", "retention-dayz: 30", "unknown-action-input"),
        ("${{ inputs.select }}", "${{ inputs.selekt }}", "undefined-property"),
    ],
)
def test_actionlint_rejects_a_broken_workflow(
    tmp_path: Path, old: str, new: str, finding: str
) -> None:
    jactionlint = _need("jactionlint")
    text = GITHUB.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "pop3mon.yml"
    broken.write_text(text.replace(old, new), encoding="utf-8")
    lint = subprocess.run(
        [jactionlint, "--no-online", "--no-color", "--ignore=unpinned-uses", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert lint.returncode == 1, lint.stdout + lint.stderr
    assert finding in lint.stdout, lint.stdout


# --------------------------------------------------------------------------- GitLab CI


def test_gitlab_pipeline_structure() -> None:
    ci = _load(GITLAB)
    job = ci["pop3mon"]
    assert {"if": '$CI_PIPELINE_SOURCE == "schedule"'} in job["rules"]
    assert any("ci/run-monitor" in line for line in job["script"])
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"
    assert artifacts["reports"]["junit"] == "reports/junit.xml"
    # expose_as shows only in merge requests, never for a schedule: the link is in the job
    # log and the job's annotations instead.
    assert "expose_as" not in artifacts
    assert artifacts["reports"]["annotations"] == "reports/annotations.json"
    assert any("$CI_JOB_URL/artifacts/file/reports/report.html" in c for c in job["after_script"])
    assert "reports/report.html" in artifacts["paths"]
    text = GITLAB.read_text(encoding="utf-8")
    assert "Masked" in text
    for name in _env_secrets():
        assert name in text, f"{name} is not documented as a CI/CD variable"


def test_gitlab_pipeline_schema(tmp_path: Path) -> None:
    checker = _need("check-jsonschema")
    ok = subprocess.run(
        [checker, "--builtin-schema", "vendor.gitlab-ci", str(GITLAB)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / ".gitlab-ci.yml"
    broken.write_text(
        GITLAB.read_text(encoding="utf-8").replace("expire_in:", "expires_in:"), encoding="utf-8"
    )
    bad = subprocess.run(
        [checker, "--builtin-schema", "vendor.gitlab-ci", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "expires_in" in bad.stdout


# --------------------------------------------------------------------------- the lock


def test_templates_keep_the_history_between_scheduled_runs() -> None:
    """The history database and pytest's cache (the login ledger) survive between runs:
    GitHub restores the newest saved copy before the run and saves one after it (also when
    a check failed), GitLab caches them always, systemd keeps them in its StateDirectory."""
    kept = {"reports/history.sqlite", "reports/.pytest_cache"}
    steps = _load(GITHUB)["jobs"]["monitor"]["steps"]
    names = [s.get("name", "") for s in steps]
    restore = steps[names.index("Restore history")]
    save = steps[names.index("Save history")]
    assert names.index("Restore history") < names.index("Monitor") < names.index("Save history")
    assert str(restore["uses"]).startswith("actions/cache/restore@")
    assert str(save["uses"]).startswith("actions/cache/save@") and "cancelled" in save["if"]
    for step in (restore, save):
        assert set(step["with"]["path"].split()) == kept
    assert restore["with"]["restore-keys"] and save["with"]["key"] == restore["with"]["key"]
    history = _load(GITLAB)["pop3mon"]["cache"][1]
    assert set(history["paths"]) == kept and history["when"] == "always"
    service = (ROOT / "ci" / "systemd" / "pop3mon.service").read_text(encoding="utf-8")
    assert "StateDirectory=pop3mon" in service
    assert "--reports=/var/lib/pop3mon/reports" in service


def test_templates_install_from_the_lock() -> None:
    """Every template runs ci/run-monitor, which installs requirements.lock hash-checked;
    the CI caches are keyed on the lock, so a refreshed lock is a fresh cache."""
    assert re.search(
        r"^PY=\"\$\(pop3mon_python requirements\.txt\)\"", RUN_MONITOR.read_text(), re.M
    )
    lib = (ROOT / "ci" / "lib.sh").read_text(encoding="utf-8")
    assert "--require-hashes" in lib and "_pop3mon_lock_of" in lib
    steps = _load(GITHUB)["jobs"]["monitor"]["steps"]
    setup = next(s for s in steps if str(s.get("uses", "")).startswith("actions/setup-python@"))
    assert setup["with"]["cache-dependency-path"] == "requirements.lock"
    caches = _load(GITLAB)["pop3mon"]["cache"]
    assert caches[0]["key"]["files"] == ["requirements.lock"]
    service = (ROOT / "ci" / "systemd" / "pop3mon.service").read_text(encoding="utf-8")
    assert "requirements.lock" in service and "Environment=POP3MON_NO_INSTALL=1" in service


# --------------------------------------------------------------------------- systemd, README


SYSTEMD = ROOT / "ci" / "systemd"


def _systemd_verify(unit_dir: Path, *names: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if _strict():
            pytest.fail("systemd-analyze is not installed (CI=true)")
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run(
        [analyze, "verify", *(f"./{name}" for name in names)],
        cwd=unit_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _units_here(tmp_path: Path, edit: tuple[str, str] = ("", "")) -> Path:
    """Every unit of ci/systemd in ``tmp_path``, pointing at this checkout (verify checks
    that each ExecStart exists); ``edit`` replaces one text in them."""
    for unit in SYSTEMD.iterdir():
        text = unit.read_text(encoding="utf-8").replace("/opt/pop3mon", str(ROOT))
        (tmp_path / unit.name).write_text(text.replace(*edit) if edit[0] else text, "utf-8")
    return tmp_path


def test_systemd_units(tmp_path: Path) -> None:
    service = (SYSTEMD / "pop3mon.service").read_text(encoding="utf-8")
    timer = (SYSTEMD / "pop3mon.timer").read_text(encoding="utf-8")
    assert re.search(r"^ExecStart=/opt/pop3mon/ci/run-monitor --targets=", service, re.M)
    assert re.search(r"^Type=oneshot$", service, re.M)
    assert re.search(r"^OnCalendar=", timer, re.M) and "Persistent=true" in timer
    # A failed run starts the failure template, which ships beside it, for this unit.
    on_failure = re.search(r"^OnFailure=(\S+)@%n\.service$", service, re.M)
    assert on_failure, "pop3mon.service has no OnFailure= template example"
    template = f"{on_failure.group(1)}@.service"
    assert (SYSTEMD / template).is_file()
    assert template in service, "the install comment does not copy the failure unit"
    units = sorted(p.name for p in SYSTEMD.iterdir())
    instance = f"{on_failure.group(1)}@pop3mon.service.service"
    proc = _systemd_verify(_units_here(tmp_path), *units, instance)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_systemd_verify_catches_a_broken_failure_unit(tmp_path: Path) -> None:
    """The verification above would see a failure unit that cannot run."""
    here = _units_here(tmp_path, ("ExecStart=/usr/bin/logger", "ExecStart=/usr/bin/no-such"))
    proc = _systemd_verify(here, "pop3mon-failure@pop3mon.service.service")
    assert proc.returncode != 0 and "no-such" in proc.stdout + proc.stderr


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^(\./ci/\w+)", text, re.M)
    assert commands[:2] == ["./ci/demo", "./ci/selftest"]
    assert text.index("./ci/demo") < text.index("## ")
    for name in REPORTS:
        assert f"`{name}`" in text
    assert re.search(r"^\*/\d+ \* \* \* \* .*ci/run-monitor .*--targets=", text, re.M)
    for path in ("ci/github/pop3mon.yml", "ci/gitlab/.gitlab-ci.yml", "ci/systemd/pop3mon.timer"):
        assert path in text and (ROOT / path).exists()
    assert "## Performance" in text


def test_ci_run_calls_selftest() -> None:
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^exec bash ci/selftest\b", text, re.M)


def test_selftest_fails_when_pytest_collects_nothing() -> None:
    """pytest exit 5 (no test ran) must fail ci/selftest, so it can never pass empty."""
    env = dict(os.environ)
    env.update(
        POP3MON_PYTHON=sys.executable,
        POP3MON_NO_INSTALL="1",
        POP3MON_SELFTEST_WORKERS="0",
        CI="false",
        PYTHONDONTWRITEBYTECODE="1",
    )
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "ci" / "selftest"),
            "-k",
            "no_test_has_this_name",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "collected no test (exit 5)" in out
    assert re.search(r"pytest tests/\s+FAIL \(5\)", out), out


# --------------------------------------------------------------------------- templates, run


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout: the templates write reports/ into the repository."""
    from test_demo import copy_repo

    return copy_repo(tmp_path_factory.mktemp("repo") / "checkout")


def _bash(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("POP3MON_")}
    full.update(
        POP3MON_PYTHON=sys.executable, POP3MON_TEST_PASSWORD=PASSWORD, PYTHONDONTWRITEBYTECODE="1"
    )
    full.update(env)
    return subprocess.run(
        # GitHub's and GitLab's shell for a script: bash, stop at the first failure.
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_gitlab_job_runs_as_written(repo_copy: Path, ok_targets: Path) -> None:
    """The job's script and after_script, line by line as the runner does, in a checkout,
    with the variables GitLab sets and a schedule variable selecting the lab."""
    job = _load(GITLAB)["pop3mon"]
    job_url = "https://gitlab.example/ops/pop3mon/-/jobs/42"
    env = {
        **{k: str(v) for k, v in job["variables"].items()},
        "CI_PROJECT_DIR": str(repo_copy),
        "CI_JOB_URL": job_url,
        "POP3MON_TARGETS": str(ok_targets),  # a schedule variable overrides the job's
        "POP3MON_PYTEST_ARGS": "-k ok-tls",
    }
    script = _bash("\n".join(job["script"]), repo_copy, **env)
    assert script.returncode == 0, script.stdout + script.stderr
    after = _bash("\n".join(job["after_script"]), repo_copy, **env)
    assert after.returncode == 0, after.stdout + after.stderr
    link = f"{job_url}/artifacts/file/reports/report.html"
    assert f"pop3mon report: {link}" in after.stdout
    for path in [*job["artifacts"]["paths"], *job["artifacts"]["reports"].values()]:
        assert (repo_copy / path).is_file(), path
    annotations = json.loads((repo_copy / "reports" / "annotations.json").read_text("utf-8"))
    assert annotations == {"pop3mon": [{"external_link": {"label": "pop3mon report", "url": link}}]}


def test_github_monitor_step_runs_as_written(
    repo_copy: Path, ok_targets: Path, tmp_path: Path
) -> None:
    """The Monitor step's script in a checkout whose targets.yaml lists the lab; the inputs
    as workflow_dispatch passes them (a -k selection)."""
    steps = _load(GITHUB)["jobs"]["monitor"]["steps"]
    monitor = next(s for s in steps if s.get("name") == "Monitor")
    shutil.copy(ok_targets, repo_copy / "targets.yaml")
    proc = _bash(monitor["run"], repo_copy, SELECT="ok-tls", POP3MON_STRICT_WARN="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pop3mon: exit 0" in proc.stderr
    junit = (repo_copy / "reports" / "junit.xml").read_text(encoding="utf-8")
    assert 'name="test_login[ok-tls]"' in junit


def test_github_keepalive_job(tmp_path: Path) -> None:
    """Public repositories lose their schedule after 60 days without activity: the template
    says so and its weekly keepalive job calls the enable API for its own workflow file."""
    text = GITHUB.read_text(encoding="utf-8")
    assert "60 days" in text and "gh workflow enable" in text
    wf = _load(GITHUB)
    on = wf.get("on", wf.get(True))
    crons = [entry["cron"] for entry in on["schedule"]]
    job = wf["jobs"]["keepalive"]
    weekly = re.fullmatch(r"github\.event\.schedule == '(.+)'", job["if"])
    assert weekly and weekly.group(1) in crons and weekly.group(1) != crons[0]
    assert job["permissions"] == {"actions": "write"}
    # Its script, with `gh` replaced by a recorder (no network here): which API it calls.
    step = job["steps"][0]
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "gh").write_text('#!/bin/sh\nprintf "gh %s\\n" "$*"\n', encoding="utf-8")
    (fake / "gh").chmod(0o755)
    proc = _bash(
        step["run"],
        tmp_path,
        PATH=f"{fake}:{os.environ['PATH']}",
        GITHUB_REPOSITORY="ops/pop3mon",
        WORKFLOW_REF="ops/pop3mon/.github/workflows/pop3mon.yml@refs/heads/main",
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "gh api --method PUT repos/ops/pop3mon/actions/workflows/pop3mon.yml/enable" in proc.stdout
    )
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "60 days without repository activity" in readme
