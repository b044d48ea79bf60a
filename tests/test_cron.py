"""The README's cron example, run as written in a simulated cron environment.

The install commands and the ``/etc/cron.d`` line are read from README.md (not copied here),
their paths moved into a temporary directory, and run as cron would: the command of the line
through ``/bin/sh -c`` as an unprivileged user created for the test, with cron's bare
environment (``PATH=/usr/bin:/bin``, ``HOME``, ``LOGNAME``, ``SHELL``), against real Dovecot.

The only stand-in: ``POP3MON_PYTHON`` names this interpreter, where a real install has the
``.venv`` its first run created. When that interpreter lives under a directory others cannot
enter (``/root`` with pyenv), the commands run in a private mount namespace in which that
directory is an empty world-readable tmpfs holding only the interpreter's tree.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pop3mon_lab.dovecot import DovecotLab

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PASSWORD_ENV = "POP3MON_CRON_PASSWORD"
REPORTS = ("report.html", "junit.xml", "results.json", "metrics.prom")


def readme_cron() -> tuple[list[str], str]:
    """The install commands (the ``sh`` block right before the ``cron`` block) and the line."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)
    index = next(i for i, (lang, _) in enumerate(blocks) if lang == "cron")
    lang, install = blocks[index - 1]
    assert lang == "sh", "the cron block must follow the sh block of its install commands"
    commands = [
        line.split("  #")[0].strip()
        for line in install.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    lines = [line for line in blocks[index][1].splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return commands, lines[0]


@dataclass(frozen=True)
class CronSetup:
    """The moved paths, the test's unprivileged user and the line's command for it."""

    base: Path
    user: str
    command: str
    reports: Path
    log: Path
    secrets: Path


def _run_as_root(cmd: str) -> None:
    subprocess.run(["/bin/sh", "-c", cmd], check=True, timeout=60)


@pytest.fixture(scope="module")
def cron_user() -> Iterator[str]:
    """A system user and group for the cron job, removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the cron self-test creates an unprivileged user: needs root")
    for tool in ("useradd", "userdel", "setpriv", "unshare", "flock"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    name = f"p3mcron{os.getpid() % 100000}"
    subprocess.run(
        [
            *("useradd", "--system", "--user-group", "--no-create-home"),
            *("--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name),
        ],
        check=True,
        timeout=30,
    )
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, timeout=30)
        subprocess.run(["groupdel", name], check=False, timeout=30, capture_output=True)


def _hidden_parents() -> dict[Path, set[str]]:
    """Directories others cannot enter on the way to this interpreter and this checkout,
    with the child each path needs (``/root`` -> ``{".pyenv"}``)."""
    needed = {Path(os.path.realpath(sys.executable)), Path(sys.prefix), Path(sys.base_prefix)}
    needed.add(ROOT)
    hidden: dict[Path, set[str]] = {}
    for path in needed:
        parts = path.parts
        for depth in range(1, len(parts) - 1):
            parent = Path(*parts[:depth])
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                hidden.setdefault(parent, set()).add(parts[depth])
    for parent, children in hidden.items():
        for child in children:
            if not os.stat(parent / child).st_mode & stat.S_IXOTH:
                pytest.skip(f"{parent / child} cannot be entered by other users either")
    return hidden


def as_cron_user(setup: CronSetup, command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as cron runs a job's command: ``/bin/sh -c`` as the user, bare env."""
    prologue = ["set -e"]
    for n, (parent, children) in enumerate(sorted(_hidden_parents().items())):
        stage = f"/tmp/p3m-stage-{os.getpid()}-{n}"  # /tmp of the namespace is not touched
        prologue.append(f"mkdir -p {stage} && mount --bind {parent} {stage}")
        prologue.append(f"mount -t tmpfs -o mode=0755 tmpfs {parent}")
        for child in sorted(children):
            prologue.append(
                f"mkdir {parent / child} && mount --bind {stage}/{child} {parent / child}"
            )
    cron_env = {
        "HOME": "/nonexistent",
        "LOGNAME": setup.user,
        "SHELL": "/bin/sh",
        "PATH": "/usr/bin:/bin",
        "POP3MON_PYTHON": sys.executable,  # stands for the .venv the first run creates
    }
    argv = ["setpriv", f"--reuid={setup.user}", f"--regid={setup.user}", "--init-groups"]
    argv += ["env", "-i", *(f"{k}={v}" for k, v in cron_env.items()), "/bin/sh", "-c", command]
    script = "\n".join([*prologue, 'exec "$@"'])
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script, "bash", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _move(text: str, base: Path, user: str) -> str:
    """README paths into ``base``, the checkout for /opt/pop3mon, the test's user."""
    text = text.replace("/opt/pop3mon", str(ROOT))
    text = text.replace("/etc/pop3mon", f"{base}/etc/pop3mon")
    text = text.replace("/var/lib/pop3mon", f"{base}/var/lib/pop3mon")
    return re.sub(r"(?<=-[og] )pop3mon\b|(?<=root:)pop3mon\b", user, text)


@pytest.fixture
def cron(cron_user: str, dovecot: DovecotLab) -> Iterator[CronSetup]:
    """The README's install commands done in a temporary root, a Dovecot targets file, the
    secrets file filled with the password the targets file references."""
    commands, line = readme_cron()
    fields = line.split(None, 6)
    assert len(fields) == 7 and fields[5] == "pop3mon", f"not an /etc/cron.d line: {line}"
    assert "%" not in fields[6], "cron turns % into a newline"
    base = Path(tempfile.mkdtemp(prefix="pop3mon-cron-"))
    base.chmod(0o755)
    try:
        # What the systemd header installs before (the cron section refers to it).
        _run_as_root(f"install -d -m 0750 -o root -g {cron_user} {base}/etc/pop3mon")
        (base / "var" / "lib").mkdir(parents=True)
        for command in commands:
            _run_as_root(_move(command, base, cron_user))
        etc = base / "etc" / "pop3mon"
        shutil.copy(dovecot.ca_file, etc / "ca.pem")
        (etc / "targets.yaml").write_text(
            f"""version: 1
defaults:
  ca_file: {etc / "ca.pem"}
  login_pacing: parallel
  account: {{username: {dovecot.demo_user}, password_env: {PASSWORD_ENV}}}
servers:
  - name: lab
    host: {dovecot.hostname}
    address: 127.0.0.1
    connections:
      - {{id: cron-tls, port: {dovecot.port("pop3s")}, security: tls}}
      - {{id: cron-stls, port: {dovecot.port("pop3")}, security: starttls}}
""",
            encoding="utf-8",
        )
        secrets = etc / "secrets.env"
        with secrets.open("a", encoding="utf-8") as out:  # the README's "then VAR=value lines"
            out.write(f"# written by the cron self-test\n{PASSWORD_ENV}={dovecot.demo_password}\n")
        var = base / "var" / "lib" / "pop3mon"
        yield CronSetup(
            base=base,
            user=cron_user,
            command=_move(fields[6], base, cron_user),
            reports=var / "reports",
            log=var / "log" / "run.log",
            secrets=secrets,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_readme_cron_line_runs_as_an_unprivileged_user(cron: CronSetup) -> None:
    """The secrets file as the README installs it (root:pop3mon 0640) is read by the job
    run as that user, the log directory nobody made is created, the reports appear."""
    st = cron.secrets.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o640)
    assert not cron.log.parent.exists()
    proc = as_cron_user(cron, cron.command)
    log = cron.log.read_text(encoding="utf-8") if cron.log.exists() else "(no log)"
    assert proc.returncode == 0, proc.stdout + proc.stderr + log
    assert proc.stdout == proc.stderr == "", "cron would mail this; everything goes to the log"
    assert "pop3mon: exit 0: every selected check is OK" in log, log
    for name in REPORTS:
        path = cron.reports / name
        assert path.is_file() and path.stat().st_uid != 0, name
    results = json.loads((cron.reports / "results.json").read_text(encoding="utf-8"))
    assert "login" in json.dumps(results)
    assert PASSWORD_ENV in cron.secrets.read_text(encoding="utf-8")
    password = cron.secrets.read_text(encoding="utf-8").split(f"{PASSWORD_ENV}=")[1].strip()
    assert password not in log and password not in proc.stdout + proc.stderr


def test_an_overlapping_cron_run_exits_saying_who_holds_the_lock(cron: CronSetup) -> None:
    """While a run holds the reports directory's lock, the next one touches nothing."""
    assert as_cron_user(cron, cron.command).returncode == 0
    before = {p.name: p.read_bytes() for p in cron.reports.iterdir() if p.is_file()}
    lock = cron.reports / ".run-monitor.lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what flock(1) takes
        proc = as_cron_user(cron, cron.command)
    log = cron.log.read_text(encoding="utf-8")
    assert proc.returncode == 2, proc.stdout + proc.stderr + log
    assert f"pop3mon: exit 2: another run holds the lock on {cron.reports}" in log, log
    assert "this run is skipped" in log
    after = {p.name: p.read_bytes() for p in cron.reports.iterdir() if p.is_file()}
    assert after == before


def test_a_root_only_secrets_file_is_one_line_naming_the_fix(cron: CronSetup) -> None:
    """The README's earlier advice (a root-only file) is what broke cron: it is diagnosed."""
    os.chmod(cron.secrets, 0o600)
    proc = as_cron_user(cron, cron.command)
    log = cron.log.read_text(encoding="utf-8")
    assert proc.returncode == 2, log
    assert f"cannot read the secrets file {cron.secrets} as user {cron.user}" in log, log
    assert "chmod 0640" in log
    assert not cron.reports.exists() or not (cron.reports / "junit.xml").exists()
