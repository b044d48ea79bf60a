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
from pathlib import Path

from pydantic import ValidationError

from .cascade import _build, _coverage, _hosts
from .files import _display_name, _read
from .messages import _allowed, _schema_message
from .model import ConfigError, HistorySettings, NotifySettings, NotifyTarget, Targets
from .schema import _File, _Notify, _resolve_path
from .wording import Loc, _closest, _show
from .yaml_lines import _compose, _Problems, _unencodable, _YamlTree


def load_targets(path: str | os.PathLike[str], *, raw: bytes | None = None) -> Targets:
    """Read, validate and resolve a targets file (``raw``: its bytes, already read).

    Raises :class:`ConfigError` listing every problem found, one line each, as
    ``FILE:LINE: field.path: message — hint``, ordered by line; whatever the file holds,
    nothing else escapes. Secrets are not read here; see
    :meth:`ConnectionType.to_probe_spec`.
    """
    try:
        return _load(path, raw)
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


def _load(path: str | os.PathLike[str], raw: bytes | None = None) -> Targets:
    file = Path(path)
    display = _display_name(file)
    if _unencodable(str(file.absolute())):
        # The path goes into every report, and reports are UTF-8 files.
        raise ConfigError(
            [f"{display}: the path is not valid UTF-8 — rename the file or its directory"]
        )
    if raw is None:
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
    coverage = _coverage(model, tree, base_dir, connections)
    notify = _notify(model.notify, tree, base_dir, problems) if model.notify else None
    problems.raise_if_any()
    hist = model.history
    return Targets(
        path=file.resolve(),
        sha256=digest,
        connections=tuple(sorted(connections, key=lambda c: c.id)),
        notify=notify,
        hosts=tuple(hosts),
        coverage=tuple(coverage),
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
