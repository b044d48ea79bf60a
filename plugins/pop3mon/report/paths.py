"""Where a run's files go: the reports directory (and, in :mod:`.history`, the history).

Its own module so the history glue and the report plugin share one rule without the
glue importing the report plugin module.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["DEFAULT_DIR", "reports_dir", "reports_enabled"]

DEFAULT_DIR = "reports"


def reports_dir(config: pytest.Config) -> Path:
    """The reports directory: ``--reports-dir`` (relative to where pytest was started),
    else ini ``pop3mon_reports_dir`` (relative to the rootdir), else ``reports/``."""
    raw = config.getoption("reports_dir")
    if raw:
        path = Path(os.path.expanduser(str(raw)))
        return path if path.is_absolute() else config.invocation_params.dir / path
    ini = Path(os.path.expanduser(str(config.getini("pop3mon_reports_dir") or DEFAULT_DIR)))
    return ini if ini.is_absolute() else config.rootpath / ini


def reports_enabled(config: pytest.Config) -> bool:
    """Whether this run writes pop3mon's report files (not ``--no-reports`` or
    ``--collect-only``: the latter probes nothing)."""
    return not (
        bool(config.getoption("no_reports")) or bool(config.getoption("collectonly", False))
    )
