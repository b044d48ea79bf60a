"""pop3mon as an installed package, and the lock files that make installs reproducible.

* The wheel: built from a copy of this checkout, it holds ``pop3mon`` with every subpackage
  and the tier tests as ``pop3mon.tests_targets``, the pytest11 entry points, and none of the
  self-test lab, the self-tests or the benchmarks.
* Installed into a fresh virtual environment (no repository on its path), ``pytest
  --targets=FILE`` in some other project runs the bundled tier tests beside that project's
  own tests against the fault server, also under pytest-xdist, and writes the reports; in a
  project without targets the plugin changes nothing.
* requirements.lock and requirements-dev.lock (ci/lock) hold every pin of requirements*.txt
  at the same version, each entry with hashes.

Everything runs offline: the wheel is built with the dev environment's pinned setuptools
(``--no-build-isolation``), and the fresh environment borrows the dev environment's
third-party packages through a ``.pth`` file instead of downloading them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.faultserver import FaultServer

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "install-SENTINEL-41c7"
REPORTS = ("report.html", "junit.xml", "results.json", "metrics.prom")
# Not part of the product; never in the wheel (beside the usual caches and build output).
NOT_SHIPPED = ("pop3mon_lab", "tests", "benchmarks")
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "reports", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


# --------------------------------------------------------------------------- the lock


def _canonical(name: str) -> str:
    """PEP 503 name: the lock spells PyYAML as pyyaml, types-PyYAML as types-pyyaml."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    """``name == version`` of a requirements file and of the files it includes with -r."""
    pins: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r"):
            pins.update(_pins(path.parent / line[2:].strip()))
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        assert match, f"{path.name}: not an exact pin: {raw!r}"
        pins[_canonical(match[1])] = match[2]
    return pins


@dataclass
class LockEntry:
    version: str
    hashes: list[str]


def _lock(path: Path) -> dict[str, LockEntry]:
    """The entries of a hashed lock: ``name==version [; marker] \\`` then ``--hash=`` lines."""
    entries: dict[str, LockEntry] = {}
    current: LockEntry | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        head = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if head:
            current = LockEntry(head[2], [])
            entries[_canonical(head[1])] = current
        elif line.strip().startswith("--hash=") and current is not None:
            current.hashes.append(line.strip().removeprefix("--hash=").rstrip(" \\"))
        elif line and not line.startswith(" "):
            assert line.startswith("#"), f"{path.name}: unexpected line {line!r}"
    return entries


LOCKS = [
    ("requirements.txt", "requirements.lock"),
    ("requirements-dev.txt", "requirements-dev.lock"),
]


@pytest.mark.parametrize(("requirements", "lock"), LOCKS)
def test_lock_covers_the_pins(requirements: str, lock: str) -> None:
    """Every pin is in the lock at its version and every lock entry is hash-checked: a pin
    changed without running ci/lock fails here rather than in the next install."""
    pins = _pins(ROOT / requirements)
    entries = _lock(ROOT / lock)
    assert pins and entries
    stale = {
        name: (version, entries[name].version if name in entries else "missing")
        for name, version in pins.items()
        if name not in entries or entries[name].version != version
    }
    assert not stale, f"{lock} does not match {requirements} (run ci/lock): {stale}"
    for name, entry in entries.items():
        assert entry.hashes, f"{lock}: {name} has no hash"
        for digest in entry.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), (name, digest)
    assert "ci/lock" in (ROOT / lock).read_text(encoding="utf-8").split("\n", 3)[1]


def test_dev_lock_has_the_runtime_versions() -> None:
    """The self-tests run the monitor's dependencies at the versions the monitor runs."""
    runtime = _lock(ROOT / "requirements.lock")
    dev = _lock(ROOT / "requirements-dev.lock")
    differ = {
        n: (e.version, dev[n].version)
        for n, e in runtime.items()
        if n in dev and dev[n].version != e.version
    }
    assert not differ
    assert runtime.keys() <= dev.keys()


def test_lock_refresh_is_one_checked_command() -> None:
    lock = ROOT / "ci" / "lock"
    assert os.access(lock, os.X_OK)
    assert re.search(
        r"^SHELL_SCRIPTS=\(.*\bci/lock\b", (ROOT / "ci" / "selftest").read_text(), re.M
    )
    assert "--require-hashes" in (ROOT / "ci" / "lib.sh").read_text(encoding="utf-8")
    assert "ci/lock" in (ROOT / "README.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built offline from a copy of this checkout (building in place would leave
    build/ and an egg-info in the working tree, and race another worker doing the same)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(base / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = (base / "dist").glob("pop3mon-*.whl")
    return built


def test_wheel_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(
            archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"pop3mon"}, tops
    for top in NOT_SHIPPED:
        assert not any(n.startswith(f"{top}/") or f"/{top}/" in n for n in names), top
    # Every package of the product (a new subpackage too), every tier test module.
    for init in (ROOT / "plugins" / "pop3mon").rglob("__init__.py"):
        rel = init.relative_to(ROOT / "plugins").as_posix()
        assert rel in names, f"{rel} is not in the wheel"
    for module in (ROOT / "tests_targets").glob("*.py"):
        assert f"pop3mon/tests_targets/{module.name}" in names, module.name
    # Named like the modules: the repository's conftest.py `pytest_plugins` then names
    # plugins already registered, and pytest does not load them twice.
    conftest = (ROOT / "conftest.py").read_text(encoding="utf-8")
    declared = re.search(r"^\s*pytest_plugins = \[(.*)\]$", conftest, re.M)
    assert declared, conftest
    modules = re.findall(r'"([\w.]+)"', declared[1])
    assert modules == ["pop3mon.plugin", "pop3mon.report.plugin"]
    section = entry_points.split("[pytest11]", 1)[1]
    for module in modules:
        assert re.search(rf"^{re.escape(module)} = {re.escape(module)}$", section, re.M)
    scripts = entry_points.split("[console_scripts]", 1)[1].split("\n[", 1)[0]
    assert re.search(r"^pop3mon = pop3mon\.cli:main$", scripts, re.M), entry_points


@dataclass
class Venv:
    python: Path
    site: Path


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh virtual environment with only the wheel installed into it.

    Its third-party packages (pytest, pydantic, ...) are the dev environment's, seen through
    a .pth file: what a user's ``pip install pop3mon`` would download, without the network.
    This checkout is on no path of it.
    """
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    dev = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "_pop3mon_dev_packages.pth").write_text("\n".join(sorted(dev)) + "\n", encoding="utf-8")
    proc = subprocess.run(
        # --ignore-installed: never touch a pop3mon the dev environment might have.
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            "-q",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return Venv(python, site)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POP3MON_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _pytest(venv: Venv, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv.python), "-m", "pytest", "-p", "no:randomly", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_env(**env),
    )


MINE = '''\
import json
import os
from pathlib import Path

import pop3mon
import pop3mon.plugin


def test_mine(request):
    """The infrastructure repo's own test, run beside the bundled tier tests."""
    plugin = request.config.pluginmanager.get_plugin("pop3mon.plugin")
    Path(os.environ["WHERE"]).write_text(json.dumps({
        "pop3mon": pop3mon.__file__,
        "plugin": pop3mon.plugin.__file__,
        "registered": getattr(plugin, "__file__", None),
    }))
'''


@pytest.fixture
def infra(tmp_path: Path, lab_certs: LabCerts) -> Iterator[tuple[Path, Path, FaultServer]]:
    """A user's infrastructure repo (its own test, no copy of the tier tests) and a targets
    file in another directory naming a healthy implicit-TLS fault server."""
    project = tmp_path / "infra"
    (project / "tests").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (project / "tests" / "test_mine.py").write_text(MINE, encoding="utf-8")
    with FaultServer(
        "healthy",
        users={"alice": PASSWORD},
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
        implicit_tls=True,
    ) as server:
        targets = tmp_path / "etc" / "their.yaml"
        targets.parent.mkdir()
        targets.write_text(
            "servers:\n"
            "  - name: lab\n"
            "    host: localhost\n"
            f"    ca_file: {lab_certs.ca_file}\n"
            "    account: {username: alice, password_env: INFRA_PW}\n"
            "    connections:\n"
            f"      - {{id: lab-tls, port: {server.port}, security: tls}}\n",
            encoding="utf-8",
        )
        yield project, targets, server


def _counts(output: str) -> dict[str, int]:
    last = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)][-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}


def test_installed_suite_runs_in_another_project(
    venv: Venv, infra: tuple[Path, Path, FaultServer], tmp_path: Path
) -> None:
    project, targets, server = infra
    where = tmp_path / "where.json"
    # No history: both runs must see the same (baseline-free) drift checks to compare.
    proc = _pytest(
        venv,
        project,
        f"--targets={targets}",
        "-rA",
        "--no-history",
        WHERE=str(where),
        INFRA_PW=PASSWORD,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"^PASSED \S*test_connectivity\.py::test_tcp\[lab-tls\]$", out, re.M), out
    assert re.search(r"^PASSED \S*test_auth\.py::test_login\[lab-tls\]$", out, re.M), out
    assert re.search(r"^PASSED tests/test_mine\.py::test_mine$", out, re.M), out
    assert "pop3mon summary" in out and PASSWORD not in out
    assert server.logins == 1, "one login per connection type per run"
    # pop3mon came from the fresh environment, not from this checkout.
    found = json.loads(where.read_text(encoding="utf-8"))
    for key in ("pop3mon", "plugin", "registered"):
        assert Path(found[key]).is_relative_to(venv.site), (key, found)
    reports = project / "reports"
    for name in REPORTS:
        assert (reports / name).is_file(), name
    junit = (reports / "junit.xml").read_text(encoding="utf-8")
    assert 'name="test_tcp[lab-tls]"' in junit and 'name="test_mine"' in junit
    lab = subprocess.run(
        [str(venv.python), "-c", "import pop3mon_lab"],
        cwd=project,
        capture_output=True,
        env=_env(),
        check=False,
    )
    assert lab.returncode != 0, "the repository leaked into the fresh environment"

    # The same run under xdist: the workers collect the bundled tests once each, like the
    # controller would (a difference would stop the run), and no check runs twice.
    serial = _counts(out)
    proc = _pytest(
        venv,
        project,
        f"--targets={targets}",
        "-n",
        "2",
        "--no-history",
        WHERE=str(where),
        INFRA_PW=PASSWORD,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _counts(proc.stdout) == serial, proc.stdout
    # The project's own test has no verdict: it is not a check that "did not run".
    assert "not run" not in proc.stdout and "ended early" not in proc.stdout, proc.stdout
    assert server.logins == 2


def test_installed_console_command(venv: Venv, tmp_path: Path) -> None:
    """``pop3mon`` is on the PATH of the environment: help, and a usage error in one line."""
    command = str(venv.python.parent / "pop3mon")
    ok = subprocess.run(
        [command, "history", "--help"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False, env=_env(),
    )  # fmt: skip
    assert ok.returncode == 0 and "accept" in ok.stdout, ok
    bad = subprocess.run(
        [command, "history", "states"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False, env=_env(),
    )  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, bad
    assert "--history" in bad.stderr and "Traceback" not in bad.stderr


def test_installed_plugin_is_inert_without_targets(venv: Venv, tmp_path: Path) -> None:
    """Installing pop3mon must not change an unrelated project's pytest run."""
    project = tmp_path / "unrelated"
    project.mkdir()
    (project / "test_other.py").write_text("def test_other():\n    assert True\n", encoding="utf-8")
    before = sorted(p.name for p in project.iterdir())
    proc = _pytest(venv, project, "-p", "no:cacheprovider", "--strict-markers")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _counts(proc.stdout) == {"passed": 1}, proc.stdout
    assert "pop3mon summary" not in proc.stdout and "pop3mon reports" not in proc.stdout
    assert sorted(p.name for p in project.iterdir()) == before, "pop3mon wrote into the project"
    # A targets file named explicitly is still required to exist.
    missing = _pytest(venv, project, "-p", "no:cacheprovider", "--targets=missing.yaml")
    assert missing.returncode == pytest.ExitCode.USAGE_ERROR, missing.stdout + missing.stderr
    assert "missing.yaml: file not found" in missing.stderr
