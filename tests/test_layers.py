"""The layering of docs/ARCHITECTURE.md, checked on the code itself.

Imports only point down (engine <- checks/config <- probestore <- history <- notify <- report
<- plugin), the
engine, checks, config and the probe store import no pytest, and the product package never
imports the lab.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "plugins" / "pop3mon"

#: Layer of each top-level part of the package; a module may import only its own layer or
#: lower ones.
LAYERS = {
    "verdict": 1,
    "secrets": 1,
    "engine": 2,
    "checks": 3,
    "config": 3,
    "probestore": 4,
    "history": 5,
    "notify": 6,
    "report": 7,
    "plugin": 8,
    "cli": 8,
    "plugin_mode": 8,
    "tests_targets": 9,
}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def _imports(path: Path) -> list[str]:
    """Absolute names of the pop3mon modules that ``path`` imports."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            names = [name] if node.module else [f"{name}.{a.name}" for a in node.names]
            out += [n for n in names if n.startswith("pop3mon.") or n == "pop3mon"]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("pop3mon")]
    return out


MODULES = sorted(p for p in PKG.rglob("*.py") if "tests_targets" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_only_point_down(path: Path) -> None:
    me = path.relative_to(PKG).parts[0].removesuffix(".py")
    for name in _imports(path):
        assert not name.startswith("pop3mon_lab"), f"{path.name} imports the lab"
        target = _part(name)
        if target in LAYERS and me in LAYERS:
            assert LAYERS[target] <= LAYERS[me], f"{path.relative_to(PKG)} imports {name}"


def test_the_engine_checks_config_and_store_import_neither_pytest_nor_the_lab() -> None:
    code = (
        "import sys\n"
        "import pop3mon.engine, pop3mon.checks, pop3mon.config, pop3mon.probestore\n"
        "import pop3mon.history.store, pop3mon.history.states, pop3mon.history.record\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest',"
        " 'pop3mon_lab'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(PKG.parent), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "", out.stdout


def test_plugins_load_without_import_order_warnings() -> None:
    """The glue must not import the report plugin module before pytest registers it (it
    would then not be rewritten and pytest warns on every run)."""
    root = PKG.parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:]
    assert "Warning" not in out.stdout, out.stdout[-2000:]
