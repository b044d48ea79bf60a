"""``--option PATH`` with a space, where PATH lies outside the project.

pytest looks for its rootdir and ini file before plugins register their options, so it takes
PATH for a test path there. Where pop3mon is installed (its options known), the run stops with
one line naming the ``=`` form instead of running from a wrong rootdir (no ini file, reports
written next to PATH); the ``=`` form and a path inside the project work either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = """version: 1
servers:
  - name: lab
    host: localhost
    address: 127.0.0.1
    connections:
      - {port: 1, security: tls, auth: none}
"""


def _installed_pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest as where pop3mon is installed: its plugins load before the command line is
    parsed (PYTEST_PLUGINS does what the pytest11 entry points do)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POP3MON_", "PYTEST_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
        PYTEST_PLUGINS="pop3mon.plugin,pop3mon.report.plugin",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """A project with its pytest.ini, and a directory elsewhere holding a targets file."""
    proj = tmp_path / "infra"
    proj.mkdir()
    (proj / "pytest.ini").write_text("[pytest]\npop3mon_bundled_tests = false\n", "utf-8")
    (proj / "inside.yaml").write_text(TARGETS, encoding="utf-8")
    elsewhere = tmp_path / "etc" / "pop3mon"
    elsewhere.mkdir(parents=True)
    (elsewhere / "targets.yaml").write_text(TARGETS, encoding="utf-8")
    return proj, elsewhere


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--targets", "{elsewhere}/targets.yaml"),
        ("--reports-dir", "{elsewhere}"),
        ("--history", "{elsewhere}/targets.yaml"),  # any existing path does it
    ],
)
def test_a_spaced_path_outside_the_project_is_one_line_naming_the_fix(
    project: tuple[Path, Path], option: str, value: str
) -> None:
    proj, elsewhere = project
    path = value.format(elsewhere=elsewhere)
    extra = [] if option == "--targets" else [f"--targets={proj / 'inside.yaml'}"]
    proc = _installed_pytest(proj, option, path, *extra, "--collect-only", "-q")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    problem = [line for line in proc.stderr.splitlines() if "pop3mon:" in line]
    assert len(problem) == 1, proc.stderr
    assert f"write {option}={path}, not '{option} {path}'" in problem[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    # Nothing was written next to the path taken for the rootdir.
    assert not (elsewhere / "reports").exists() and not (elsewhere.parent / "reports").exists()


def test_the_equals_form_and_a_spaced_path_inside_the_project_work(
    project: tuple[Path, Path],
) -> None:
    proj, elsewhere = project
    for args in (
        [f"--targets={elsewhere / 'targets.yaml'}", f"--reports-dir={elsewhere}"],
        ["--targets", "inside.yaml", "--reports-dir", str(proj / "out")],
    ):
        proc = _installed_pytest(proj, *args, "-m", "not connectivity")
        # 5: -m deselected every check; the point is that no usage error (4) stopped it.
        assert proc.returncode == 5, (args, proc.stdout + proc.stderr)
        assert f"rootdir: {proj}" in proc.stdout, proc.stdout


def test_the_readme_warns_for_every_option_that_takes_a_path() -> None:
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "unrecognized arguments: --targets" in text
    for option in ("--targets=", "--reports-dir=", "--history="):
        assert option in text, option
