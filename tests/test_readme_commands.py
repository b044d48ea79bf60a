"""Every command README.md and the scheduling templates show is run by a self-test.

``RUN_BY`` names, for each command exactly as written (a line of a README ``sh``/``cron``
block, a template's script line or ``ExecStart=``), the self-test that runs it; ``NOT_RUN``
names the few that cannot run here, why, and the test that checks what can be checked;
``RUN_BY_PREFIX`` leaves a family of commands to a test that extracts them itself. A
command added to README.md or a template without an entry fails
``test_every_shown_command_has_a_test``: give it a test, then an entry.

The README's option and scheduling commands run here as written, from a copy of the checkout
whose ``targets.yaml`` lists a lab (the paths under /etc, /var/lib and /opt moved into a
temporary directory); ``--serve``'s commands against the running demo.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import foreground_signals
from pop3mon_lab.certs import LabCerts
from pop3mon_lab.faultserver import DEFAULT_USERS, FaultServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
USER = "alice"
PASSWORD = DEFAULT_USERS[USER]
OPTIONS = "test_readme_commands.py::test_readme_option_and_scheduling_commands"
SERVE = "test_readme_commands.py::test_readme_serve_commands"
CRON = "test_cron.py::test_the_readme_cron_line_runs_as_an_unprivileged_user"
SHARDED = "test_templates.py::test_readme_sharded_commands"
SHARDED_GITHUB = "test_templates.py::test_github_sharded_jobs_run_as_written"
SHARDED_GITLAB = "test_templates.py::test_gitlab_sharded_pipeline_runs_as_written"

#: command as written -> the self-test that runs it.
RUN_BY: dict[str, str] = {
    "./ci/demo": "test_demo.py::test_demo_end_to_end",
    "./ci/selftest": "test_templates.py::test_selftest_fails_when_pytest_collects_nothing",
    "./ci/demo --serve": SERVE,
    ". .venv/bin/activate": SERVE,
    'POP3MON_DEMO_PASSWORD="$(cat reports/demo/password)" pytest '
    "--targets=reports/demo-targets.yaml -k healthy": SERVE,
    "python3 -m venv .venv && . .venv/bin/activate": OPTIONS,
    "pytest -n 4": OPTIONS,
    "pytest -m tls": OPTIONS,
    'pytest -m "eu and not legacy"': OPTIONS,
    "pytest -k mail1": OPTIONS,
    "pytest --strict-warn": OPTIONS,
    "pytest --granularity=tier": OPTIONS,
    "pytest --probe-concurrency=8": OPTIONS,
    "pytest --targets=other.yaml": OPTIONS,
    "pytest --accept-drift=mail1:995-tls": OPTIONS,
    "pytest --shard=3/10 --run-id=nightly-42 --vantage=eu-west --reports-dir=reports/shard-3": (
        OPTIONS
    ),
    "ci/run-monitor --targets=/etc/pop3mon/targets.yaml --reports=/var/lib/pop3mon/reports": (
        OPTIONS
    ),
    "ci/run-monitor -n auto --strict-warn -k mail1": OPTIONS,
    "install -d -m 0750 -o pop3mon -g pop3mon /var/lib/pop3mon": CRON,
    "install -m 0640 -o root -g pop3mon /dev/null /etc/pop3mon/secrets.env": CRON,
    "*/5 * * * * pop3mon /opt/pop3mon/ci/run-monitor --env-file=/etc/pop3mon/secrets.env "
    "--targets=/etc/pop3mon/targets.yaml --reports=/var/lib/pop3mon/reports "
    "--log=/var/lib/pop3mon/log/run.log": CRON,
    "github: Monitor": "test_templates.py::test_github_monitor_step_runs_as_written",
    # `gh` itself is replaced by a recorder there: the API call needs GitHub.
    "github: Keep the schedule alive": "test_templates.py::test_github_keepalive_job",
    "gitlab: script": "test_templates.py::test_gitlab_job_runs_as_written",
    "gitlab: after_script": "test_templates.py::test_gitlab_job_runs_as_written",
    "systemd: pop3mon.service": OPTIONS,
    "for k in 1 2 3 4; do ci/run-monitor --shard=$k/4 --run-id=run-1 --reports=shards/$k; done": (
        SHARDED
    ),
    "ci/pop3mon merge --exit-status --expect-shards=4 --out=reports shards": SHARDED,
    "github sharded: Monitor": SHARDED_GITHUB,
    "github sharded: Merge": SHARDED_GITHUB,
    # the same job as pop3mon.yml's, whose script test_github_keepalive_job runs
    "github sharded: Keep the schedule alive": (
        "test_templates.py::test_sharded_github_keepalive_is_pop3mon_ymls"
    ),
    "gitlab sharded: pop3mon script": SHARDED_GITLAB,
    "gitlab sharded: pop3mon after_script": SHARDED_GITLAB,
    "gitlab sharded: pop3mon-merge script": SHARDED_GITLAB,
    "gitlab sharded: pop3mon-merge after_script": SHARDED_GITLAB,
    "kubernetes: pop3mon": "test_templates.py::test_kubernetes_pods_run_as_written",
}

#: command as written -> (why no self-test runs it, the test that checks what it can).
NOT_RUN: dict[str, tuple[str, str]] = {
    'pip install "pop3mon @ git+https://git.example/ops/pop3mon.git@main"': (
        "git.example is a placeholder for your git server",
        "test_install.py::test_installed_suite_runs_in_another_project",
    ),
    "pip install pop3mon-0.1.0-py3-none-any.whl": (
        "would download the dependencies (the self-tests are offline); the test installs the "
        "wheel it builds with --no-deps --no-index instead",
        "test_install.py::test_installed_suite_runs_in_another_project",
    ),
    "pip wheel --no-deps -w dist .": (
        "the test builds the wheel the same way into a temporary directory",
        "test_install.py::test_wheel_contents",
    ),
    "pytest --targets=monitoring/mail.yaml": (
        "runs in another project after the install above; the test does that with its own "
        "targets file",
        "test_install.py::test_installed_suite_runs_in_another_project",
    ),
    "ci/lock": (
        "re-resolves the pins against PyPI (network)",
        "test_install.py::test_lock_covers_the_pins",
    ),
    "ci/lock --upgrade": (
        "re-resolves the pins against PyPI (network)",
        "test_install.py::test_lock_refresh_is_one_checked_command",
    ),
    "systemd: pop3mon-failure@.service": (
        "logger needs the journal's or syslog's socket; systemd-analyze verify checks that "
        "the command exists and the unit is valid",
        "test_templates.py::test_systemd_units",
    ),
}


#: command prefix -> the test that extracts every README command starting with it and runs
#: it (its own file keeps the list); covers those commands once that test exists.
RUN_BY_PREFIX: dict[str, str] = {
    "pop3mon-check ": "test_plugin_mode.py::test_readme_commands_run_as_documented",
    "pop3mon check ": "test_plugin_mode.py::test_readme_commands_run_as_documented",
    "pop3mon discover ": "test_discover.py::test_readme_discover_commands",
    "pop3mon merge ": "test_merge.py::test_readme_merge_commands_run_as_written",
}


# --------------------------------------------------------------------------- what is shown


def _strip_comment(line: str) -> str:
    """A command without its trailing ``  # comment`` (two spaces or more before the #)."""
    return re.split(r"\s{2,}#", line, maxsplit=1)[0].strip()


def readme_commands() -> list[str]:
    """Each command line of README.md's ``sh`` and ``cron`` blocks, as written."""
    text = README.read_text(encoding="utf-8")
    found: list[str] = []
    for lang, body in re.findall(r"^ *```(\w*)\n(.*?)^ *```", text, re.M | re.S):
        if lang not in ("sh", "cron"):
            continue
        for raw in body.splitlines():
            line = _strip_comment(raw)
            if line and not line.startswith("#"):
                found.append(line)
    # A command mentioned in a comment is shown too (`pip wheel ...` in the install block).
    found += re.findall(r"# a wheel: `([^`]+)`", text)
    return found


def template_commands() -> list[str]:
    """The scripts of the CI templates and the units' ``ExecStart=``, one key each."""
    keys: list[str] = []
    github = yaml.safe_load((ROOT / "ci" / "github" / "pop3mon.yml").read_text("utf-8"))
    for job in github["jobs"].values():
        keys += [f"github: {step['name']}" for step in job["steps"] if "run" in step]
    gitlab = yaml.safe_load((ROOT / "ci" / "gitlab" / ".gitlab-ci.yml").read_text("utf-8"))
    for job in gitlab.values():
        if isinstance(job, dict):
            keys += [f"gitlab: {part}" for part in ("script", "after_script") if part in job]
    sharded = yaml.safe_load((ROOT / "ci" / "github" / "pop3mon-sharded.yml").read_text("utf-8"))
    for job in sharded["jobs"].values():
        keys += [f"github sharded: {step['name']}" for step in job["steps"] if "run" in step]
    path = ROOT / "ci" / "gitlab" / "pop3mon-sharded.gitlab-ci.yml"
    for name, job in yaml.safe_load(path.read_text("utf-8")).items():
        if isinstance(job, dict):
            keys += [f"gitlab sharded: {name} {p}" for p in ("script", "after_script") if p in job]
    path = ROOT / "ci" / "kubernetes" / "pop3mon-cronjob.yaml"
    for doc in yaml.safe_load_all(path.read_text("utf-8")):
        if doc["kind"] == "CronJob":
            pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            keys += [f"kubernetes: {c['name']}" for c in pod["containers"]]
    for unit in sorted((ROOT / "ci" / "systemd").glob("*.service")):
        if re.search(r"^ExecStart=", unit.read_text(encoding="utf-8"), re.M):
            keys.append(f"systemd: {unit.name}")
    return keys


def _defined_tests() -> set[str]:
    found = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        names = re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.M)
        found.update(f"{path.name}::{name}" for name in names)
    return found


def test_every_shown_command_has_a_test() -> None:
    shown = readme_commands() + template_commands()
    tests = _defined_tests()
    by_prefix = {
        c
        for c in shown
        for prefix, test in RUN_BY_PREFIX.items()
        if c.startswith(prefix) and test in tests
    }
    missing = [c for c in shown if c not in RUN_BY and c not in NOT_RUN and c not in by_prefix]
    assert not missing, f"commands shown without a self-test (add one, then to RUN_BY): {missing}"
    stale = sorted((set(RUN_BY) | set(NOT_RUN)) - set(shown))
    assert not stale, f"entries for commands no longer shown: {stale}"
    assert not set(RUN_BY) & set(NOT_RUN)
    for command, test in [*RUN_BY.items(), *((c, t) for c, (_, t) in NOT_RUN.items())]:
        assert test in tests, f"{command!r}: no such test {test}"


def test_the_finder_sees_a_new_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A README with one more command fails the check above."""
    text = README.read_text(encoding="utf-8") + "\n```sh\npytest --new-option  # shown\n```\n"
    copy = tmp_path / "README.md"
    copy.write_text(text, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "README", copy)
    assert "pytest --new-option" in readme_commands()
    with pytest.raises(AssertionError, match="pytest --new-option"):
        test_every_shown_command_has_a_test()


# --------------------------------------------------------------------------- running them


def _copy_checkout(dest: Path) -> Path:
    from test_demo import copy_repo

    return copy_repo(dest)


def _lab_targets(port: int, ca: Path) -> str:
    return f"""version: 1
defaults:
  timeout: 5
  ca_file: {ca}
  login_pacing: parallel
  account: {{username: {USER}, password_env: POP3MON_TEST_PASSWORD}}
servers:
  - name: mail1
    host: localhost
    address: 127.0.0.1
    tags: [eu]
    connections:
      - {{id: "mail1:995-tls", port: {port}, security: tls}}
  - name: mail2
    host: localhost
    address: 127.0.0.1
    tags: [eu, legacy]
    connections:
      - {{id: "mail2:995-tls", port: {port}, security: tls}}
"""


@pytest.fixture(scope="module")
def server(lab_certs: LabCerts) -> Iterator[int]:
    pair = lab_certs.variant("valid")
    with FaultServer(
        "healthy",
        users={USER: PASSWORD},
        certfile=pair.cert,
        keyfile=pair.key,
        implicit_tls=True,
    ) as srv:
        yield srv.port


def _shell(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("POP3MON_", "PYTEST_"))}
    full.pop("VIRTUAL_ENV", None)
    full.update(
        # `pytest` is the venv's, as after `. .venv/bin/activate`; ci/ scripts use this
        # interpreter as the .venv they would create.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        POP3MON_PYTHON=sys.executable,
        POP3MON_TEST_PASSWORD=PASSWORD,
        PYTHONDONTWRITEBYTECODE="1",
        NO_COLOR="1",
    )
    full.update(env)
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_readme_option_and_scheduling_commands(
    tmp_path: Path, server: int, lab_certs: LabCerts
) -> None:
    """The Options block, the Scheduling block, systemd's ExecStart and the venv line."""
    repo = _copy_checkout(tmp_path / "repo")
    targets = _lab_targets(server, lab_certs.ca_file)
    (repo / "targets.yaml").write_text(targets, encoding="utf-8")
    (repo / "other.yaml").write_text(targets, encoding="utf-8")
    base = tmp_path / "root"
    (base / "etc" / "pop3mon").mkdir(parents=True)
    (base / "etc" / "pop3mon" / "targets.yaml").write_text(targets, encoding="utf-8")

    def moved(command: str) -> str:
        for path in ("/etc/pop3mon", "/var/lib/pop3mon"):
            command = command.replace(path, f"{base}{path}")
        return command.replace("/opt/pop3mon", str(repo))

    ran: set[str] = set()
    for command, test in RUN_BY.items():
        if test != OPTIONS or command.startswith(("systemd:", "python3 -m venv")):
            continue
        proc = _shell(moved(command), repo)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, (command, out)
        ran.add(command)
        if "-k mail1" in command:
            assert "mail2" not in proc.stdout.split("pop3mon summary")[-1], (command, out)
        if "eu and not legacy" in command:
            assert "deselected" in out, out
        if "--granularity=tier" in command:
            # Fewer pytest tests (one per tier), and still every check in the reports.
            tests = sum(int(n) for n in re.findall(r"(\d+) (?:passed|failed|skipped)", out))
            run = json.loads((repo / "reports" / "results.json").read_text("utf-8"))
            checks = [c for conn in run["connections"] for c in conn["checks"]]
            assert 0 < tests < len(checks), (tests, len(checks), out)
        if "--shard=3/10" in command:
            run = json.loads((repo / "reports" / "shard-3" / "results.json").read_text("utf-8"))
            assert run["run"]["shard"] == {"index": 3, "total": 10}, run["run"]
            assert (run["run"]["id"], run["run"]["vantage"]) == ("nightly-42", "eu-west")
    assert (base / "var" / "lib" / "pop3mon" / "reports" / "junit.xml").is_file()

    # systemd: ExecStart with the unit's Environment=, from its WorkingDirectory.
    unit = (ROOT / "ci" / "systemd" / "pop3mon.service").read_text(encoding="utf-8")
    env = dict(re.findall(r"^Environment=(\w+)=(.*)$", unit, re.M))
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M)
    assert exec_start
    proc = _shell(moved(exec_start.group(1)), repo, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran.add("systemd: pop3mon.service")

    # The install block's first line, in an empty directory (python3 as on PATH).
    venv_line = "python3 -m venv .venv && . .venv/bin/activate"
    if shutil.which("python3") is None:
        pytest.fail("python3 is not on PATH")
    proc = _shell(f'{venv_line} && echo "active: $VIRTUAL_ENV"', tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"active: {tmp_path / '.venv'}" in proc.stdout
    ran.add(venv_line)
    assert ran == {c for c, t in RUN_BY.items() if t == OPTIONS}


def _serve_block() -> list[str]:
    text = README.read_text(encoding="utf-8")
    body = re.search(r"^```sh\n(\./ci/demo --serve.*?)^```", text, re.M | re.S)
    assert body, "README has no --serve block"
    return [_strip_comment(line) for line in body.group(1).splitlines() if line.strip()]


def test_readme_serve_commands(tmp_path: Path) -> None:
    """`./ci/demo --serve`, then the README's two lines in another shell: the password the
    banner prints is the one the README's command reads, and the run logs in."""
    serve, activate, monitor = _serve_block()
    assert serve == "./ci/demo --serve"
    repo = _copy_checkout(tmp_path / "repo")
    if not (Path(sys.prefix) / "bin" / "activate").is_file():
        pytest.skip(f"{sys.executable} is not in a virtual environment with bin/activate")
    (repo / ".venv").symlink_to(sys.prefix)  # the .venv ./ci/demo would have created
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POP3MON_", "PYTEST_"))}
    env.update(POP3MON_PYTHON=sys.executable, POP3MON_NO_INSTALL="1", NO_COLOR="1")
    env.update(PYTHONDONTWRITEBYTECODE="1")
    demo = subprocess.Popen(
        ["bash", "-c", serve],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=foreground_signals,  # SIGINT must be heard, as in a terminal
    )
    assert demo.stdout is not None
    raw = b""
    try:
        deadline = time.monotonic() + 120
        # The banner ends with the command to run; wait for its last line.
        while not re.search(rb"runs until Ctrl-C.*\n.*-k healthy\n", raw, re.S):
            assert time.monotonic() < deadline, raw.decode(errors="replace")
            ready, _, _ = select.select([demo.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(demo.stdout.fileno(), 65536)
                assert chunk, raw.decode(errors="replace")
                raw += chunk
        banner = raw.decode(errors="replace")
        assert monitor in banner, f"the README's command is not the banner's:\n{banner}"
        proc = _shell(f"{activate}\n{monitor}", repo, PATH=os.environ["PATH"])
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert re.search(r"\b\d+ passed\b", out) and " failed" not in out, out
        assert "POP3MON_DEMO_PASSWORD is not set" not in out
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        demo.communicate(timeout=60)
    assert demo.returncode == 130
