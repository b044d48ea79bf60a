"""An option's value that pytest also took for a test path (``--targets /etc/x.yaml``).

pytest finds its rootdir and configuration file before any plugin has registered its options,
so in ``--targets /etc/pop3mon/targets.yaml`` it cannot know that the path is ``--targets``'s
value: it takes it for a test path, and the rootdir becomes ``/etc/pop3mon`` (no ini file,
reports in ``/etc/pop3mon/reports``). No plugin can change that order. Where pop3mon's own
options are not registered yet (this checkout's ``conftest.py`` is not loaded from a rootdir
elsewhere) pytest ends with ``unrecognized arguments``; where they are (pop3mon installed),
this module turns the silently wrong rootdir into one line naming the fix: the ``=`` form.
A path inside the project, the usual ``--targets other.yaml``, works with a space.
"""

from __future__ import annotations

import itertools
import os
import shlex
from pathlib import Path

import pytest

__all__ = ["stray_option_value"]


def _setup_without_strays(config: pytest.Config) -> tuple[Path, Path | None] | None:
    """The rootdir and ini file pytest would have found from the real test paths alone;
    None where this pytest's finder cannot be asked (it is internal: then no check)."""
    try:
        from _pytest.config.findpaths import determine_setup

        found = determine_setup(
            inifile=None,
            override_ini=None,
            args=[str(a) for a in config.getoption("file_or_dir", None) or ()],
            rootdir_cmd_arg=None,
            invocation_dir=config.invocation_params.dir,
        )
    except (ImportError, TypeError, pytest.UsageError):
        return None
    return Path(found[0]), (Path(found[1]) if found[1] is not None else None)


def stray_option_value(config: pytest.Config) -> str | None:
    """The one-line problem when a spaced option value moved pytest's rootdir, else None."""
    if config.getoption("rootdir", None) or config.getoption("inifilename", None):
        return None  # the rootdir was given, not derived from the arguments
    expected = _setup_without_strays(config)
    if expected is None or expected == (config.rootpath, config.inipath):
        return None
    args = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *config.invocation_params.args]
    positional = {str(a) for a in config.getoption("file_or_dir", None) or ()}
    here = config.invocation_params.dir
    for option, value in itertools.pairwise(args):
        if not option.startswith("--") or "=" in option or value.startswith("-"):
            continue
        if value in positional:
            continue  # a flag followed by a real test path
        try:
            found = Path(here, value.split("::")[0]).exists()
        except OSError:
            continue
        if found:
            return (
                f"pop3mon: write {option}={value}, not '{option} {value}': with a space pytest "
                f"took {value} for a test path when it looked for its rootdir (it became "
                f"{config.rootpath}, not {expected[0]}); the '=' form works for every option"
            )
    return None
