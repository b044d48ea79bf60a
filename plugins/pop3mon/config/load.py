"""Finding and loading a targets file: the steps from bytes to :class:`Targets`.

Read the bytes (their sha256 goes into the reports), decode, compose the YAML with line
numbers (:mod:`.yaml_lines`), validate the shape (:mod:`.schema`, errors worded by
:mod:`.messages`), then merge the cascade and check the merged view (:mod:`.cascade`).
Problems are collected per step and raised together, sorted by line; a later step runs
only when the earlier ones found nothing, so one mistake does not cause a cascade of
follow-up messages.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from pydantic import ValidationError

from .cascade import _build, _hosts
from .messages import _allowed, _schema_message
from .model import ConfigError, HistorySettings, NotifySettings, NotifyTarget, Targets
from .schema import _File, _Notify, _resolve_path
from .wording import Loc, _closest, _escape, _show
from .yaml_lines import _compose, _Problems, _unencodable, _YamlTree

#: Environment variable that names the targets file when ``--targets`` is not given.
ENV_VAR: Final = "POP3MON_TARGETS"

#: The largest targets file read. A fleet of 10,000 connection types takes about 0.8 MiB,
#: parsing takes seconds per MiB and memory grows with it: a larger file is the wrong file.
MAX_FILE_BYTES: Final = 2**20


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


def load_targets(path: str | os.PathLike[str]) -> Targets:
    """Read, validate and resolve a targets file.

    Raises :class:`ConfigError` listing every problem found, one line each, as
    ``FILE:LINE: field.path: message — hint``, ordered by line; whatever the file holds,
    nothing else escapes. Secrets are not read here; see
    :meth:`ConnectionType.to_probe_spec`.
    """
    try:
        return _load(path)
    except ConfigError:
        raise
    except (RecursionError, MemoryError, ValueError, OverflowError, OSError) as exc:
        # _load and the modules it calls bound depth, size, numbers and text; if input still
        # finds a way through, it is one line like every other problem, never a traceback.
        display = _display_name(Path(path))
        raise ConfigError(
            [
                f"{display}: cannot read the targets file ({type(exc).__name__}) — please "
                "report this as a pop3mon bug, with the file if you can"
            ]
        ) from None


def _load(path: str | os.PathLike[str]) -> Targets:
    file = Path(path)
    display = _display_name(file)
    if _unencodable(str(file.absolute())):
        # The path goes into every report, and reports are UTF-8 files.
        raise ConfigError(
            [f"{display}: the path is not valid UTF-8 — rename the file or its directory"]
        )
    raw = _read(file, display)
    digest = hashlib.sha256(raw).hexdigest()
    problems = _Problems(display)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        hint = " (it is UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(
            [f"{display}:{line}: not UTF-8 text{hint} — save the file as UTF-8"]
        ) from None

    node = _compose(text, display)
    if node is None:
        raise ConfigError(
            [f"{display}:1: the file is empty — it needs version: 1 and a servers: list"]
        )
    tree = _YamlTree(problems)
    tree.lines[()] = node.start_mark.line + 1
    data = tree.convert(node, ())
    if not isinstance(data, dict):
        problems.add(
            tree.lines[()],
            (),
            f"the top level must be a mapping with version, defaults and servers, not "
            f"{_show(data)}",
        )
        problems.raise_if_any()

    base_dir = file.resolve().parent
    try:
        model = _File.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # "hostname: unknown key — did you mean 'host'?" already covers "host: missing".
        meant = {
            (*tuple(e["loc"])[:-1], _closest(str(e["loc"][-1]), _allowed(tuple(e["loc"])[:-1])))
            for e in errors
            if e["type"] == "extra_forbidden"
        }
        for err in errors:
            loc: Loc = tuple(err["loc"])
            if err["type"] == "missing" and loc in meant:
                continue
            if any(loc[: len(b)] == b for b in tree.broken):
                continue
            problems.add(tree.line(loc), loc, _schema_message(err))
        problems.raise_if_any()
        raise AssertionError("unreachable") from None  # pragma: no cover
    # Duplicate keys etc. from the YAML pass would be hidden by a valid schema otherwise.
    problems.raise_if_any()

    connections = _build(model, tree, base_dir, problems)
    hosts = _hosts(model, tree, connections, problems)
    notify = _notify(model.notify, tree, base_dir, problems) if model.notify else None
    problems.raise_if_any()
    hist = model.history
    return Targets(
        path=file.resolve(),
        sha256=digest,
        connections=tuple(sorted(connections, key=lambda c: c.id)),
        notify=notify,
        hosts=tuple(hosts),
        history=HistorySettings(
            path=_resolve_path(base_dir, hist.path) if hist.path is not None else None,
            retention_days=hist.retention_days,
            lock_timeout=float(hist.lock_timeout),
            flapping_changes=hist.flapping.changes,
            flapping_runs=hist.flapping.runs,
        ),
    )


def _notify(
    section: _Notify, tree: _YamlTree, base_dir: Path, problems: _Problems
) -> NotifySettings:
    """The ``notify:`` section as :class:`NotifySettings`: file references made absolute,
    each target's rules defaulting to the section's, names unique."""
    targets: list[NotifyTarget] = []
    seen: dict[str, int] = {}
    for i, target in enumerate(section.targets):
        loc: Loc = ("notify", "targets", i)
        line = tree.line(loc)
        if target.name is not None:
            if target.name in seen:
                problems.add(
                    tree.line((*loc, "name")),
                    (*loc, "name"),
                    f"duplicate target name {_show(target.name)} (first at line "
                    f"{seen[target.name]}) — names tell the targets apart in warnings",
                )
            seen.setdefault(target.name, tree.line((*loc, "name")))
        if target.url_env is not None:
            source = f"env:{target.url_env}"
        else:
            source = f"file:{_resolve_path(base_dir, target.url_file or '')}"
        targets.append(
            NotifyTarget(
                name=target.name or "",
                url_source=source,
                on=frozenset(section.on if target.on is None else target.on),
                tags=tuple(dict.fromkeys(target.tags)),
                connections=tuple(dict.fromkeys(target.connections)),
                line=line,
            )
        )
    return NotifySettings(
        targets=tuple(targets),
        title=section.title,
        report_url=section.report_url or "",
        timeout=section.timeout,
    )
