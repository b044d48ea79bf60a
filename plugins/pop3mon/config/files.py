"""Reading a targets file's bytes safely, and how its path is shown (no YAML, no pydantic
here: the plugin mode's cache reads the bytes without importing the validator)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from .model import ConfigError
from .wording import _escape

__all__ = ["ENV_VAR", "MAX_FILE_BYTES", "targets_path"]

#: Environment variable that names the targets file when ``--targets`` is not given.
ENV_VAR: Final = "POP3MON_TARGETS"

#: The largest targets file read. A fleet of 10,000 connection types takes about 0.8 MiB,
#: parsing takes seconds per MiB and memory grows with it: a larger file is the wrong file.
MAX_FILE_BYTES: Final = 2**20


def _display_name(path: Path) -> str:
    # Relative to the working directory when the file is below it: short and clickable.
    try:
        shown = str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):
        shown = str(path)
    # A name with undecodable bytes (surrogate escapes) or control characters is shown
    # escaped, so the message can be printed at all.
    return shown if shown.isprintable() else _escape(shown, 200)


def _read(file: Path, display: str) -> bytes:
    """The file's bytes, refusing what is not a regular file of sensible size before
    reading it: a FIFO would block the run forever, /dev/zero or a wrong 50 MB file would
    take minutes and gigabytes to parse."""
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to returns at once instead of hanging.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(
            [f"{display}: file not found — pass --targets PATH or set {ENV_VAR}"]
        ) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError([f"{display}: cannot read the targets file: {reason}"]) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise ConfigError([f"{display}: is {what} — --targets needs the YAML targets file"])
        if info.st_size > MAX_FILE_BYTES:
            raise _too_big(display, info.st_size)
        # Up to one byte past the limit: a file that grows while it is read is caught too.
        chunks: list[bytes] = []
        left = MAX_FILE_BYTES + 1
        while left > 0 and (chunk := os.read(fd, min(left, 2**16))):
            chunks.append(chunk)
            left -= len(chunk)
        raw = b"".join(chunks)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([f"{display}: cannot read the targets file: {reason}"]) from None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise _too_big(display, None)
    return raw


def _too_big(display: str, size: int | None) -> ConfigError:
    shown = f"{size / 2**20:.1f} MiB" if size is not None else "growing"
    return ConfigError(
        [
            f"{display}: the file is {shown}, over the {MAX_FILE_BYTES // 2**20} MiB limit "
            "for a targets file (10,000 connection types fit in less) — is this the right "
            "file?"
        ]
    )


def targets_path(
    option: str | os.PathLike[str] | None,
    rootdir: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Where the targets file is: ``--targets`` value, else ``$POP3MON_TARGETS``, else
    ``targets.yaml`` in ``rootdir`` (the directory of pytest.ini)."""
    env = os.environ if environ is None else environ
    if option:
        return Path(option)
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR])
    return Path(rootdir) / "targets.yaml"
