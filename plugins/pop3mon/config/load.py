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
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import yaml
from pydantic import ValidationError

from .cascade import _build
from .messages import _allowed, _schema_message
from .model import ConfigError, Targets
from .schema import _File
from .wording import Loc, _closest, _show
from .yaml_lines import _Problems, _syntax_problem, _YamlTree

#: Environment variable that names the targets file when ``--targets`` is not given.
ENV_VAR: Final = "POP3MON_TARGETS"


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
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def load_targets(path: str | os.PathLike[str]) -> Targets:
    """Read, validate and resolve a targets file.

    Raises :class:`ConfigError` listing every problem found, one line each, as
    ``FILE:LINE: field.path: message — hint``, ordered by line. Secrets are not read here;
    see :meth:`ConnectionType.to_probe_spec`.
    """
    file = Path(path)
    display = _display_name(file)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [f"{display}: file not found — pass --targets PATH or set {ENV_VAR}"]
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([f"{display}: cannot read the targets file: {reason}"]) from None
    digest = hashlib.sha256(raw).hexdigest()
    problems = _Problems(display)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{display}:{line}: not UTF-8 text — save the file as UTF-8"]) from None

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        line, message = _syntax_problem(exc)
        raise ConfigError([f"{display}:{line}: {message}"]) from None

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
    problems.raise_if_any()
    return Targets(
        path=file.resolve(),
        sha256=digest,
        connections=tuple(sorted(connections, key=lambda c: c.id)),
    )
