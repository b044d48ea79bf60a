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
  test runs which shown command: tests/test_readme_commands.py;
* the sharded templates (GitHub matrix, GitLab ``parallel:``, the Kubernetes CronJob): their
  structure (every shard 1..N, one run id, the merge needs them all, the interface's
  environment names), their validators (jactionlint, the GitHub and GitLab schemas,
  kubernetes-validate) with a broken copy each, and each template's shard and merge commands
  run as written against the Dovecot lab (the merge jobs end on ``pop3mon merge
  --exit-status``, tested in tests/test_merge.py).
"""

from __future__ import annotations

import fnmatch
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


# --------------------------------------------------------------------------- sharded templates
# The sharded templates (issue 14): a GitHub matrix, GitLab `parallel:`, a Kubernetes Indexed
# Job. Each runs the suite as N shards sharing one run id and merges their results.json with
# `pop3mon merge` (ci/pop3mon in a checkout); the GitHub and GitLab merge jobs fail on the
# merged run's exit status (`--exit-status`).

GITHUB_SHARDED = ROOT / "ci" / "github" / "pop3mon-sharded.yml"
GITLAB_SHARDED = ROOT / "ci" / "gitlab" / "pop3mon-sharded.gitlab-ci.yml"
KUBERNETES = ROOT / "ci" / "kubernetes" / "pop3mon-cronjob.yaml"


def _step(steps: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(s for s in steps if s.get("name") == name)


def _expect_shards(script: str) -> int:
    found = re.findall(r"--expect-shards=(\d+)", script)
    assert len(found) == 1, script
    return int(found[0])


def _k8s() -> dict[str, dict[str, Any]]:
    """The manifest's documents by kind."""
    docs = list(yaml.safe_load_all(KUBERNETES.read_text(encoding="utf-8")))
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs)
    return by_kind


def _k8s_version() -> str:
    """The Kubernetes version ci/selftest validates the manifest against (defined there)."""
    found = re.search(r"^K8S_VERSION=([0-9.]+)$", (ROOT / "ci" / "selftest").read_text(), re.M)
    assert found, "ci/selftest defines no K8S_VERSION"
    return found.group(1)


def _validate(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=False)


def _jactionlint(path: Path) -> subprocess.CompletedProcess[str]:
    jactionlint = _need("jactionlint")
    return _validate(jactionlint, "--no-online", "--no-color", "--ignore=unpinned-uses", str(path))


def _kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    checker = _need("kubernetes-validate")
    return _validate(checker, "-k", _k8s_version(), "--strict", str(path))


def test_sharded_github_workflow_structure() -> None:
    wf = _load(GITHUB_SHARDED)
    monitor = wf["jobs"]["monitor"]
    strategy = monitor["strategy"]
    assert strategy["fail-fast"] is False
    shards = strategy["matrix"]["shard"]
    n = len(shards)
    assert n >= 2 and shards == list(range(1, n + 1)), "every shard index 1..N, once"
    steps = monitor["steps"]
    step = _step(steps, "Monitor")
    assert '--shard="$SHARD"' in step["run"] and '--run-id="$RUN_ID"' in step["run"]
    env = step["env"]
    # K/N with N the matrix's size; one run id for every shard and every re-run attempt.
    assert env["SHARD"] == "${{ matrix.shard }}/${{ strategy.job-total }}"
    assert env["RUN_ID"] == "${{ github.run_id }}"
    for name in _env_secrets():
        assert env.get(name) == f"${{{{ secrets.{name} }}}}", name
    upload = _step(steps, "Upload shard reports")
    assert "cancelled()" in upload["if"] and upload["with"]["overwrite"] is True
    assert set(upload["with"]["path"].split()) == {f"reports/{r}" for r in REPORTS}
    names = [upload["with"]["name"].replace("${{ matrix.shard }}", str(k)) for k in shards]
    assert len(set(names)) == n, "each shard uploads under its own name"
    # Each shard keeps its own history, keyed by K and N.
    restore, save = _step(steps, "Restore history"), _step(steps, "Save history")
    for key in (restore["with"]["key"], save["with"]["key"], restore["with"]["restore-keys"]):
        assert "${{ matrix.shard }}of${{ strategy.job-total }}-" in key
    assert "cancelled()" in save["if"]

    merge = wf["jobs"]["merge"]
    assert merge["needs"] in ("monitor", ["monitor"]) and "cancelled()" in merge["if"]
    steps = merge["steps"]
    download = next(s for s in steps if s.get("uses") == "actions/download-artifact@v4")
    assert all(fnmatch.fnmatch(name, download["with"]["pattern"]) for name in names)
    merge_step = _step(steps, "Merge")
    merged = merge_step["run"]
    assert merged.startswith("ci/pop3mon merge ") and _expect_shards(merged) == n
    assert merged.split()[-1] == download["with"]["path"] and "--out=reports" in merged
    # The merged verdict fails the job (as an unsharded run's), strict WARN as in Monitor;
    # the steps after it still publish and upload the merged reports.
    assert "--exit-status" in merged.split()
    assert merge_step["env"]["POP3MON_STRICT_WARN"] == env["POP3MON_STRICT_WARN"]
    assert not any(s.get("name") == "Verdict" for s in steps)
    later = steps[steps.index(merge_step) + 1 :]
    assert later and all("cancelled()" in s["if"] for s in later), later
    publish = next(s for s in steps if str(s.get("uses", "")).startswith("mikepenz/"))
    assert publish["with"]["report_paths"] == "reports/junit.xml"
    uploaded = _step(steps, "Upload reports")
    assert set(uploaded["with"]["path"].split()) == {f"reports/{r}" for r in REPORTS}
    assert "keepalive" in wf["jobs"]


def test_sharded_github_workflow_passes_validators() -> None:
    lint = _jactionlint(GITHUB_SHARDED)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    schema = _validate(
        _need("check-jsonschema"),
        "--builtin-schema",
        "vendor.github-workflows",
        str(GITHUB_SHARDED),
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr


@pytest.mark.parametrize(
    ("old", "new", "finding"),
    [
        ("needs: monitor", "needs: monitr", "undefined-job-needs"),
        ("SHARD: ${{ matrix.shard }}/", "SHARD: ${{ matrix.shards }}/", "undefined-property"),
        ("fail-fast: false", "fail-fast: sometimes", "workflow-syntax"),
    ],
)
def test_actionlint_rejects_a_broken_sharded_workflow(
    tmp_path: Path, old: str, new: str, finding: str
) -> None:
    text = GITHUB_SHARDED.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "pop3mon-sharded.yml"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    lint = _jactionlint(broken)
    assert lint.returncode == 1, lint.stdout + lint.stderr
    assert f"[{finding}]" in lint.stdout, lint.stdout


def test_github_schema_rejects_a_broken_sharded_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "pop3mon-sharded.yml"
    text = GITHUB_SHARDED.read_text(encoding="utf-8")
    assert "timeout-minutes: 10" in text
    broken.write_text(text.replace("timeout-minutes: 10", "timeout-minutes: ten"), "utf-8")
    bad = _validate(
        _need("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(broken)
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "$.jobs.merge" in bad.stdout and "'ten'" in bad.stdout, bad.stdout


def test_sharded_gitlab_pipeline_structure() -> None:
    ci = _load(GITLAB_SHARDED)
    assert ci["stages"] == ["monitor", "merge"]
    job = ci["pop3mon"]
    n = job["parallel"]
    assert isinstance(n, int) and n >= 2
    # A resource_group would run the parallel jobs one at a time.
    assert "resource_group" not in job
    (script,) = job["script"]
    # The shard comes from CI_NODE_INDEX/CI_NODE_TOTAL (no --shard); one run id for all.
    assert script.startswith("ci/run-monitor ") and "--shard" not in script
    assert '--run-id="$CI_PIPELINE_ID"' in script and "--reports=reports" in script
    history = job["cache"][1]
    assert "$CI_NODE_INDEX-of-$CI_NODE_TOTAL" in history["key"] and history["when"] == "always"
    assert set(history["paths"]) == {"reports/history.sqlite", "reports/.pytest_cache"}
    # Each shard's reports in its own directory, also after a CRIT.
    after = "\n".join(job["after_script"])
    assert '"shards/$CI_NODE_INDEX/"' in after
    for name in REPORTS:
        assert f"reports/{name}" in after
    assert job["artifacts"]["when"] == "always" and job["artifacts"]["paths"] == ["shards/"]

    merge = ci["pop3mon-merge"]
    assert merge["stage"] == "merge"
    assert merge["needs"] == [{"job": "pop3mon", "artifacts": True}]
    assert all(rule["when"] == "always" for rule in merge["rules"])
    assert [r["if"] for r in merge["rules"]] == [r["if"] for r in job["rules"]]
    (merged,) = merge["script"]
    assert merged.startswith("ci/pop3mon merge ") and _expect_shards(merged) == n
    assert merged.split()[-1] == "shards" and "--out=reports" in merged
    assert "--exit-status" in merged.split()  # the merged verdict fails the job
    assert merge["artifacts"]["when"] == "always"
    for name in REPORTS:
        assert f"reports/{name}" in merge["artifacts"]["paths"]
    text = GITLAB_SHARDED.read_text(encoding="utf-8")
    assert "Masked" in text or "masked" in text


def test_sharded_gitlab_pipeline_schema(tmp_path: Path) -> None:
    checker = _need("check-jsonschema")
    ok = _validate(checker, "--builtin-schema", "vendor.gitlab-ci", str(GITLAB_SHARDED))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / ".gitlab-ci.yml"
    text = GITLAB_SHARDED.read_text(encoding="utf-8")
    # GitLab allows at most 200 parallel jobs.
    broken.write_text(re.sub(r"parallel: \d+", "parallel: 201", text), encoding="utf-8")
    bad = _validate(checker, "--builtin-schema", "vendor.gitlab-ci", str(broken))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "201" in bad.stdout or "parallel" in bad.stdout, bad.stdout


def _k8s_container() -> dict[str, Any]:
    job = _k8s()["CronJob"]["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_kubernetes_manifest_structure() -> None:
    from pop3mon.config import shard

    docs = _k8s()
    cron = docs["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    job = cron["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    n = job["completions"]
    assert isinstance(n, int) and n >= 2 and job["parallelism"] == n
    # A CRIT (exit 1) fails its index at once; no verdict (exit 2) is retried.
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailIndex" and rule["onExitCodes"]["values"] == [1]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = _k8s_container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in container["env"]}
    # The names the shard module reads (Kubernetes sets JOB_COMPLETION_INDEX itself).
    assert env[shard.SHARD_TOTAL_ENV]["value"] == str(n)
    run_id = env[shard.RUN_ID_ENV]["valueFrom"]["fieldRef"]["fieldPath"]
    assert run_id == "metadata.labels['batch.kubernetes.io/job-name']"
    assert shard.VANTAGE_ENV in KUBERNETES.read_text(encoding="utf-8")
    # Secrets by reference to the Secret, never a value in the manifest.
    for name in _env_secrets():
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "pop3mon-secrets" and ref["key"] == name and "value" not in env[name]
    (script,) = container["args"]
    assert "$((JOB_COMPLETION_INDEX + 1))" in script and "--if-complete" in script
    assert f'--expect-shards="${shard.SHARD_TOTAL_ENV}"' in script
    # The shared volume: ReadWriteMany, mounted where the script writes.
    pvc = docs["PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == env["POP3MON_DATA"]["value"]
    assert "/tmp" in mounts.values()


def test_kubernetes_manifest_validates(tmp_path: Path) -> None:
    ok = _kubernetes_validate(KUBERNETES)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "pop3mon-cronjob.yaml"
    text = KUBERNETES.read_text(encoding="utf-8")
    broken.write_text(
        text.replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:"), encoding="utf-8"
    )
    bad = _kubernetes_validate(broken)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "readOnlyRootFileSystem" in bad.stdout + bad.stderr


# --------------------------------------------------------------------------- sharded, run

#: Servers of the sharded runs on the Dovecot lab: healthy ones and one whose port is closed.
FLEET_OK = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
FLEET_DOWN = "down"


@pytest.fixture(scope="module")
def fleet(dovecot: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A targets file of several servers on the one Dovecot lab (no login), one of them
    down (CRIT), so the shards differ and the merged verdict is CRIT."""
    from pop3mon_lab.dovecot import DovecotLab

    assert isinstance(dovecot, DovecotLab)

    def server(name: str, port: int) -> dict[str, Any]:
        return {
            "name": name,
            "host": dovecot.hostname,
            "address": "127.0.0.1",
            "auth": "none",
            "connections": [{"id": f"{name}:pop3s", "port": port, "security": "tls"}],
        }

    data = {
        "version": 1,
        "defaults": {"ca_file": str(dovecot.ca_file), "timeout": 5},
        "servers": [server(n, dovecot.port("pop3s")) for n in FLEET_OK]
        + [server(FLEET_DOWN, free_port())],
    }
    path = tmp_path_factory.mktemp("fleet") / "targets.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sharded_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout of its own for the sharded runs (they write reports/ and shards/)."""
    from test_demo import copy_repo

    return copy_repo(tmp_path_factory.mktemp("sharded") / "checkout")


def _fresh(repo: Path, *dirs: str) -> None:
    """Another job on another runner: nothing of the previous job's output is left."""
    for name in ("reports", "shards", *dirs):
        shutil.rmtree(repo / name, ignore_errors=True)


def _down_shard(total: int) -> int:
    from pop3mon.config.shard import shard_of

    return shard_of(FLEET_DOWN, total)


def _check_merged(reports: Path, run_id: str) -> dict[str, Any]:
    """The merged results.json: one run id, every connection type of the fleet once, the
    down one CRIT and no other."""
    doc: dict[str, Any] = json.loads((reports / "results.json").read_text(encoding="utf-8"))
    assert doc["run"]["id"] == run_id
    ids = [c["id"] for c in doc["connections"]]
    assert sorted(ids) == sorted(f"{n}:pop3s" for n in (*FLEET_OK, FLEET_DOWN))
    verdicts = {c["id"]: c["verdict"] for c in doc["connections"]}
    assert verdicts.pop(f"{FLEET_DOWN}:pop3s") == "CRIT"
    assert "CRIT" not in verdicts.values() and "ERROR" not in verdicts.values(), verdicts
    for name in REPORTS:
        assert (reports / name).is_file(), name
    return doc


def test_github_sharded_jobs_run_as_written(sharded_repo: Path, fleet: Path) -> None:
    """Every matrix job's Monitor step (its env as GitHub fills it in), the artifacts moved
    as upload/download-artifact move them, then the merge job's Merge and Verdict steps."""
    wf = _load(GITHUB_SHARDED)
    shards = wf["jobs"]["monitor"]["strategy"]["matrix"]["shard"]
    n = len(shards)
    steps = wf["jobs"]["monitor"]["steps"]
    monitor = _step(steps, "Monitor")
    upload = _step(steps, "Upload shard reports")["with"]
    merge_steps = wf["jobs"]["merge"]["steps"]
    download = next(s for s in merge_steps if s.get("uses") == "actions/download-artifact@v4")
    repo = sharded_repo
    artifacts = repo.parent / "github-artifacts"
    _fresh(repo)
    shutil.rmtree(artifacts, ignore_errors=True)
    shutil.copy(fleet, repo / "targets.yaml")
    run_id = "7002"
    for k in shards:
        env = {
            name: value.replace("${{ matrix.shard }}", str(k))
            .replace("${{ strategy.job-total }}", str(n))
            .replace("${{ github.run_id }}", run_id)
            for name, value in monitor["env"].items()
            if "secrets." not in value and "inputs." not in value
        }
        env["POP3MON_STRICT_WARN"] = "0"
        proc = _bash(monitor["run"], repo, **env)
        want = 1 if k == _down_shard(n) else 0
        assert proc.returncode == want, (k, proc.stdout[-3000:] + proc.stderr[-2000:])
        # upload-artifact: the listed files, under the artifact's name.
        name = upload["name"].replace("${{ matrix.shard }}", str(k))
        (artifacts / name).mkdir(parents=True)
        for path in upload["path"].split():
            shutil.copy(repo / path, artifacts / name)
        _fresh(repo)
    # download-artifact: every artifact matching the pattern, each in its own directory.
    shutil.copytree(artifacts, repo / download["with"]["path"])
    # The Merge step writes the merged reports and fails on their CRIT (--exit-status).
    merged = _bash(_step(merge_steps, "Merge")["run"], repo, POP3MON_STRICT_WARN="0")
    assert merged.returncode == 1, merged.stdout + merged.stderr
    assert "exit 1: the merged report has CRIT" in merged.stderr
    _check_merged(repo / "reports", run_id)
    # One shard's artifact missing (its job never ran): the merge names it and fails.
    _fresh(repo)
    missing = _down_shard(n) % n + 1
    shutil.copytree(artifacts, repo / download["with"]["path"])
    shutil.rmtree(repo / download["with"]["path"] / f"pop3mon-shard-{missing}")
    refused = _bash(_step(merge_steps, "Merge")["run"], repo)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"shard {missing}/{n}" in refused.stdout + refused.stderr
    assert not (repo / "reports" / "results.json").exists()


def test_gitlab_sharded_pipeline_runs_as_written(sharded_repo: Path, fleet: Path) -> None:
    """Each parallel job's script and after_script with the CI_NODE_INDEX/CI_NODE_TOTAL and
    CI_PIPELINE_ID GitLab sets, its artifacts (shards/) collected as the merge job receives
    them, then the merge job's script (merge, then the verdict) and after_script."""
    ci = _load(GITLAB_SHARDED)
    job, merge = ci["pop3mon"], ci["pop3mon-merge"]
    n = job["parallel"]
    repo = sharded_repo
    collected = repo.parent / "gitlab-artifacts"
    _fresh(repo)
    shutil.rmtree(collected, ignore_errors=True)
    collected.mkdir()
    pipeline = "4242"
    for k in range(1, n + 1):
        env = {
            **{name: str(v) for name, v in job["variables"].items()},
            "CI_PROJECT_DIR": str(repo),
            "CI_NODE_INDEX": str(k),
            "CI_NODE_TOTAL": str(n),
            "CI_JOB_NAME": f"pop3mon {k}/{n}",  # GitLab's name for a parallel: N job
            "CI_PIPELINE_ID": pipeline,
            "POP3MON_TARGETS": str(fleet),  # a schedule variable overrides the job's
        }
        proc = _bash("\n".join(job["script"]), repo, **env)
        want = 1 if k == _down_shard(n) else 0
        assert proc.returncode == want, (k, proc.stdout[-3000:] + proc.stderr[-2000:])
        after = _bash("\n".join(job["after_script"]), repo, **env)
        assert after.returncode == 0, after.stdout + after.stderr
        for path in job["artifacts"]["paths"]:
            shutil.copytree(repo / path, collected / path, dirs_exist_ok=True)
        assert (repo / job["artifacts"]["reports"]["junit"]).is_file()
        _fresh(repo)
    assert sorted(p.name for p in (collected / "shards").iterdir()) == [
        str(k) for k in range(1, n + 1)
    ]
    shutil.copytree(collected, repo, dirs_exist_ok=True)
    job_url = "https://gitlab.example/ops/pop3mon/-/jobs/43"
    env = {"CI_PROJECT_DIR": str(repo), "CI_JOB_URL": job_url}
    env.update({name: str(v) for name, v in merge.get("variables", {}).items()})
    # The script as the runner runs it: the merged reports, then the verdict fails the job
    # (a CRIT).
    whole = _bash("\n".join(merge["script"]), repo, **env)
    assert whole.returncode == 1, whole.stdout + whole.stderr
    assert "exit 1: the merged report has CRIT" in whole.stderr
    _check_merged(repo / "reports", pipeline)
    after = _bash("\n".join(merge["after_script"]), repo, **env)
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"pop3mon report: {job_url}/artifacts/file/reports/report.html" in after.stdout
    for path in [*merge["artifacts"]["paths"], *merge["artifacts"]["reports"].values()]:
        assert (repo / path).is_file(), path


def _k8s_expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of a container's command and args: ``$(NAME)`` of a variable
    the container defines becomes its value, ``$$`` a ``$``; anything else stays."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, text)


def test_kubernetes_pods_run_as_written(sharded_repo: Path, fleet: Path, tmp_path: Path) -> None:
    """The CronJob's container command in each of its N pods, one after another, as
    Kubernetes starts them (JOB_COMPLETION_INDEX 0..N-1, the env of the manifest, the Job's
    name as run id, the targets ConfigMap's path and the volume moved here): every pod
    writes its shard; only the last one finds the run complete and merges."""
    container = _k8s_container()
    job = _k8s()["CronJob"]["spec"]["jobTemplate"]["spec"]
    n = job["completions"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    data = tmp_path / "data"
    env.update(POP3MON_DATA=str(data), POP3MON_RUN_ID="pop3mon-29410245", HOME=str(tmp_path))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(fleet, etc / "targets.yaml")
    command = [*container["command"], *container["args"]]
    assert command[:2] == ["/bin/bash", "-c"]
    script = _k8s_expand(command[2], env).replace(mounts["targets"], str(etc))
    assert container["workingDir"] == "/opt/pop3mon"  # the image's checkout: here, this copy
    repo = sharded_repo
    _fresh(repo)
    reports = data / "reports"
    for index in range(n):
        pod = {**env, "JOB_COMPLETION_INDEX": str(index)}
        proc = subprocess.run(
            ["/bin/bash", "-c", script],
            cwd=repo,
            env={k: v for k, v in os.environ.items() if not k.startswith("POP3MON_")}
            | {"POP3MON_PYTHON": sys.executable}
            | pod,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        out = proc.stdout[-3000:] + proc.stderr[-2000:]
        want = 1 if index + 1 == _down_shard(n) else 0
        assert proc.returncode == want, (index, out)
        shard_dir = data / "runs" / "pop3mon-29410245" / f"shard-{index + 1}"
        assert (shard_dir / "results.json").is_file(), out
        # The history and the login ledger outlive the run's directory.
        state = data / "state" / f"shard-{index + 1}-of-{n}"
        assert (state / ".pytest_cache").is_dir() and not (shard_dir / ".pytest_cache").exists()
        # Not complete before the last pod: nothing merged, and that is no failure.
        assert (reports / "results.json").is_file() == (index == n - 1), out
    _check_merged(reports, "pop3mon-29410245")


def test_sharded_github_keepalive_is_pop3mon_ymls() -> None:
    """The sharded workflow keeps its schedule alive with the same job and crons as
    pop3mon.yml (whose script test_github_keepalive_job runs)."""
    sharded, plain = _load(GITHUB_SHARDED), _load(GITHUB)
    assert sharded["jobs"]["keepalive"] == plain["jobs"]["keepalive"]
    assert (
        sharded.get("on", sharded.get(True))["schedule"]
        == plain.get("on", plain.get(True))["schedule"]
    )


def _readme_sharded_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Sharded and multi-vantage runs in CI", 1)[1].split("\n## ", 1)[0]
    body = re.search(r"^```sh\n(.*?)^```", section, re.M | re.S)
    assert body, "the section has no sh block"
    return [re.split(r"\s{2,}#", line)[0].strip() for line in body.group(1).splitlines()]


def test_readme_sharded_commands(sharded_repo: Path, fleet: Path) -> None:
    """The README's by-hand sharded run, line by line in a checkout whose targets.yaml is
    the lab fleet: four shards, then the merge and its verdict (CRIT: one server is down)."""
    shards, merge = _readme_sharded_block()
    repo = sharded_repo
    _fresh(repo)
    shutil.copy(fleet, repo / "targets.yaml")
    n = _expect_shards(merge)
    assert f"--shard=$k/{n}" in shards and f"for k in {' '.join(map(str, range(1, n + 1)))};" in (
        shards
    )
    # As typed in an interactive shell (no -e): a CRIT shard does not stop the loop, whose
    # status is its last shard's.
    ran = _bash(f"set +e\n{shards}", repo)
    assert ran.returncode == (1 if _down_shard(n) == n else 0), ran.stdout[-3000:] + ran.stderr
    assert ran.stderr.count("pop3mon: exit ") == n
    merged = _bash(merge, repo)
    assert merged.returncode == 1, merged.stdout + merged.stderr
    assert "exit 1: the merged report has CRIT" in merged.stderr
    _check_merged(repo / "reports", "run-1")


def test_readme_sharded_commands_from_another_directory(
    sharded_repo: Path, fleet: Path, tmp_path: Path
) -> None:
    """The same by-hand run typed in a directory outside the checkout (the wrappers called
    by their path): the relative ``--reports=shards/$k`` and the merge's ``shards`` and
    ``--out=reports`` are that directory's, as in any command, though ci/run-monitor runs
    pytest in the checkout; the checkout gets no shards/ or reports/."""
    shards, merge = _readme_sharded_block()
    repo = sharded_repo
    _fresh(repo)
    shutil.copy(fleet, repo / "targets.yaml")
    n = _expect_shards(merge)
    here = tmp_path / "elsewhere"
    here.mkdir()
    wrapped = [line.replace("ci/", f"{repo}/ci/") for line in (shards, merge)]
    assert all(f"{repo}/ci/" in line for line in wrapped), wrapped
    ran = _bash(f"set +e\n{wrapped[0]}", here)
    assert ran.returncode == (1 if _down_shard(n) == n else 0), ran.stdout[-3000:] + ran.stderr
    assert sorted(p.name for p in (here / "shards").iterdir()) == [str(k) for k in range(1, n + 1)]
    merged = _bash(wrapped[1], here)
    assert merged.returncode == 1, merged.stdout + merged.stderr
    _check_merged(here / "reports", "run-1")
    assert not (repo / "shards").exists() and not (repo / "reports").exists()
    # pytest's own file options passed through, and a relative interpreter path, are the
    # caller's too.
    extra = _bash(
        f"{repo}/ci/run-monitor --shard=1/{n} --reports=one --history=h.sqlite --junitxml=j.xml",
        here,
        POP3MON_PYTHON=os.path.relpath(sys.executable, here),
    )
    assert extra.returncode in (0, 1), extra.stdout[-3000:] + extra.stderr
    assert (here / "one" / "results.json").is_file() and (here / "j.xml").is_file()
    assert (here / "h.sqlite").is_file() and not (repo / "h.sqlite").exists()
    # A path from the home directory (`--opt=~/x`, which the shell leaves alone) is the
    # home directory's, as pop3mon and pytest take it, not one under the caller's.
    home = tmp_path / "home"
    home.mkdir()
    tilde = _bash(
        f"{repo}/ci/run-monitor --shard=1/{n} '--reports=~/r' '--history=~/h.sqlite' "
        "'--log=~/logs/run.log'",
        here,
        HOME=str(home),
    )
    assert tilde.returncode in (0, 1), tilde.stdout[-3000:] + tilde.stderr
    assert (home / "r" / "results.json").is_file() and (home / "h.sqlite").is_file()
    assert (home / "logs" / "run.log").is_file()
    assert not (here / "~").exists() and not (repo / "~").exists()
    # ~name of no user is a name like any other: the caller's, never the checkout's.
    nobody = _bash(f"{repo}/ci/run-monitor --shard=1/{n} '--reports=~no_such_user_p3m/r'", here)
    assert nobody.returncode in (0, 1), nobody.stdout[-3000:] + nobody.stderr
    assert (here / "~no_such_user_p3m" / "r" / "results.json").is_file()
    assert not any(p.name.startswith("~") for p in repo.iterdir())
