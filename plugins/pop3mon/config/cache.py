"""A validated targets file kept between processes, for the monitoring-plugin mode and
monitoring runs (the pytest plugin loads through it too).

A scheduler starts ``pop3mon check`` once per service and interval: hundreds of processes a
minute that each load the same targets file. Validating it means importing pydantic and
PyYAML and running both (0.15–0.2 s of a 0.3 s check for a small file, more for a fleet),
so the first check stores the resulting :class:`~.model.Targets` and the next ones read it
back when nothing it depends on changed.

What a cached entry depends on is its key: the file's bytes, its path as given, the path it
resolves to (relative ``ca_file`` paths start at that directory), the working directory
(the path shown in messages and reports), the home directory (``~`` in a path), and the
pop3mon code that validated it (name, size and modification time of every module of the
package) on this Python, and the installed pydantic, pydantic-core and PyYAML (an upgrade
may read the same file differently). The validator
also reads every ``ca_file``, so an entry keeps their identity (inode, size, modification
time) and is used only while they are unchanged: a CA bundle broken after the first check
is a config error (UNKNOWN), as without the cache. Any change is a miss; a miss loads and
validates the file as always (:func:`~.load.load_targets`) and replaces the entry.

A :class:`~.model.Targets` holds configuration and secret *references* only, never a
secret value, so an entry holds nothing a ``ps`` or ``cat targets.yaml`` would not show.
Entries are pickles: they are read only from a directory owned by this user that nobody
else may write (``$POP3MON_CACHE_DIR``, else ``$XDG_CACHE_HOME/pop3mon``, else
``~/.cache/pop3mon``), and written atomically with mode 0600. Anything unexpected (no home,
a read-only disk, a foreign or corrupt entry) means loading without the cache, never a
failed check.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pickle
import stat
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from .files import _display_name, _read
from .model import Targets

__all__ = ["CACHE_ENV", "cache_dir", "load_targets_cached"]

#: Environment variable naming the cache directory (empty: no cache).
CACHE_ENV: Final = "POP3MON_CACHE_DIR"
#: Entries kept; older ones (another targets file, an older pop3mon) are removed.
_KEEP: Final = 32
_PREFIX: Final = "targets-"
_PACKAGE: Final = Path(__file__).resolve().parents[1]
#: The libraries the validation runs on, import name -> distribution name: an upgrade of
#: any may change what a file means (a new coercion, a fixed bug), so it invalidates every
#: entry. Found without importing them (importing pydantic is what a cache hit saves).
_VALIDATORS: Final = {"pydantic": "pydantic", "pydantic_core": "pydantic_core", "yaml": "PyYAML"}


def cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """Where entries live (``None``: caching is off, ``POP3MON_CACHE_DIR=""``)."""
    env = os.environ if environ is None else environ
    if CACHE_ENV in env:
        return Path(env[CACHE_ENV]) if env[CACHE_ENV] else None
    base = env.get("XDG_CACHE_HOME") or ""
    if base:
        return Path(base) / "pop3mon"
    home = env.get("HOME") or ""
    return Path(home) / ".cache" / "pop3mon" if home else None


def _code_stamp() -> bytes:
    """What identifies the validating code: every module of the package by name, size and
    modification time, the Python version (a pickle's classes must match), and where each
    of :data:`_VALIDATORS` is installed with its recorded version."""
    h = hashlib.sha256(sys.version.encode())
    for path in sorted(_PACKAGE.rglob("*.py")):
        info = path.stat()
        h.update(f"{path.relative_to(_PACKAGE)}:{info.st_size}:{info.st_mtime_ns};".encode())
    for name in _VALIDATORS:
        h.update(f"{name}:{_installed(name)};".encode())
    return h.digest()


def _installed(name: str) -> str:
    """Where top-level package ``name`` is and the version its installer recorded (the
    ``*.dist-info`` directories of its distribution beside it, :data:`_VALIDATORS`),
    without importing it; "" when it is not found."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return ""
    origin = spec.origin if spec is not None else None
    if not origin:
        return ""
    site = Path(origin).parent.parent
    prefix = _VALIDATORS[name].lower() + "-"
    try:
        found = sorted(
            entry
            for entry in os.listdir(site)
            if entry.endswith(".dist-info") and entry.lower().startswith(prefix)
        )
    except OSError:
        found = []
    return f"{origin}:{','.join(found)}"


#: A file the validation read, as ``(path, inode, size, mtime_ns)``; ``None`` fields: it
#: could not be stat()ed then (the validator reported that, so the entry was never written).
_FileStamp = tuple[str, int | None, int | None, int | None]


def _file_stamps(targets: Targets) -> tuple[_FileStamp, ...]:
    """The identity of every file besides the targets file that the validation read: the
    ``ca_file`` of each connection type (the validator checks it is a PEM CA bundle)."""
    out: list[_FileStamp] = []
    for name in sorted({c.ca_file for c in targets.connections if c.ca_file}):
        try:
            info = os.stat(name)
        except OSError:
            out.append((name, None, None, None))
        else:
            out.append((name, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(out)


def _private(directory: Path) -> bool:
    """Whether ``directory`` is this user's and nobody else may write to it."""
    try:
        info = directory.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _read_entry(entry: Path, digest: str) -> Targets | None:
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            value = pickle.load(fh)
    except Exception:  # noqa: BLE001 — a corrupt or stale entry is a miss, never a failure
        return None
    finally:
        os.close(fd)
    if not (isinstance(value, tuple) and len(value) == 2):
        return None
    targets, stamps = value
    if (
        isinstance(targets, Targets)
        and targets.sha256 == digest
        and stamps == _file_stamps(targets)
    ):
        return targets
    return None


def _write_entry(directory: Path, entry: Path, targets: Targets) -> None:
    with contextlib.suppress(OSError, pickle.PicklingError):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(directory):
            return
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump((targets, _file_stamps(targets)), fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, entry)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        entries = sorted(
            directory.glob(f"{_PREFIX}*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for old in entries[_KEEP:]:
            with contextlib.suppress(OSError):
                old.unlink()


def load_targets_cached(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> Targets:
    """:func:`~.load.load_targets`, answered from the cache when the file, its path and
    pop3mon are what they were when the entry was written. Raises what it raises."""
    file = Path(path)
    directory = cache_dir(environ)
    if directory is None:
        from .load import load_targets

        return load_targets(file)
    # Read with the loader's own guards (no FIFO, no 50 MB file); any problem is worded by
    # the loader below, exactly as without a cache.
    try:
        raw = _read(file, _display_name(file))
    except Exception:  # noqa: BLE001
        raw = None
    if raw is not None:
        digest = hashlib.sha256(raw).hexdigest()
        key = hashlib.sha256(
            _code_stamp()
            + os.fsencode(str(file))
            + b"\0"
            + os.fsencode(os.path.realpath(file))
            + b"\0"
            + os.fsencode(os.getcwd())
            + b"\0"
            # "~" in ca_file, password_file and other paths is expanded by the validator.
            + os.fsencode(os.path.expanduser("~"))
            + b"\0"
            + digest.encode()
        ).hexdigest()
        entry = directory / f"{_PREFIX}{key}.pickle"
        if _private(directory):
            hit = _read_entry(entry, digest)
            if hit is not None:
                return hit
    from .load import load_targets

    if raw is None:
        return load_targets(file)
    # Validate exactly the bytes the key was made from: a file replaced meanwhile cannot
    # be stored under the old content's key.
    targets = load_targets(file, raw=raw)
    _write_entry(directory, entry, targets)
    return targets
