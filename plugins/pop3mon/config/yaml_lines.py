"""YAML to plain data with a line number for every value, and YAML syntax problems.

PyYAML *composes* the file into nodes (which carry line marks); :class:`_YamlTree` converts
the nodes itself so every mapping key and sequence item gets a line, keyed by its path
(``("servers", 0, "host")``), the same shape as a pydantic error ``loc``. It also refuses
what a targets file never needs: duplicate keys, unusual tags, recursive aliases and alias
bombs. :class:`_Problems` collects the resulting lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import yaml

from .model import ConfigError
from .wording import Loc, _fmt_loc

_SYNTAX_HINTS: Final[Mapping[str, str]] = {
    "found character '\\t' that cannot start any token": (
        "YAML does not allow tabs; indent with spaces"
    ),
}

# Aliases can expand a tiny file into a huge tree ("billion laughs"); no real targets file
# comes close to this many nodes.
_MAX_NODES: Final = 200_000


class _Problems:
    """Collects (line, message) pairs; the file name is added when raising."""

    def __init__(self, display: str) -> None:
        self.display = display
        self.items: set[tuple[int, str]] = set()

    def add(self, line: int, loc: Loc, message: str) -> None:
        path = _fmt_loc(loc)
        self.items.add((line, f"{path}: {message}" if path else message))

    def raise_if_any(self) -> None:
        if self.items:
            ordered = sorted(self.items)
            raise ConfigError([f"{self.display}:{line}: {msg}" for line, msg in ordered])


class _YamlTree:
    """Plain Python data from composed YAML nodes plus a line for every path."""

    def __init__(self, problems: _Problems) -> None:
        self.lines: dict[Loc, int] = {}
        self.problems = problems
        self._constructor = yaml.SafeLoader("")
        self._active: set[int] = set()
        # Paths whose value could not be read; schema errors about them would only repeat it.
        self.broken: set[Loc] = set()
        self._count = 0

    def line(self, loc: Loc) -> int:
        """The line of ``loc`` or of its nearest ancestor that has one."""
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def convert(self, node: yaml.Node, loc: Loc) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            raise ConfigError(
                [
                    f"{self.problems.display}:{node.start_mark.line + 1}: the file expands to "
                    "too many values (aliases nested too deep?)"
                ]
            )
        if id(node) in self._active:
            # Fatal: the structure around it would only produce confusing follow-up errors.
            line = self.line(loc)
            raise ConfigError(
                [f"{self.problems.display}:{line}: {_fmt_loc(loc)}: recursive YAML alias"]
            )
        if isinstance(node, yaml.ScalarNode):
            try:
                return self._constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                self.problems.add(node.start_mark.line + 1, loc, f"cannot read value: {problem}")
                self.broken.add(loc)
                return None
        if node.tag not in ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"):
            # !!set, !!omap, !!python/... : nothing in this file needs them.
            self.problems.add(
                node.start_mark.line + 1, loc, f"unsupported YAML tag {_short_tag(node.tag)}"
            )
            self.broken.add(loc)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                out: list[Any] = []
                for i, item in enumerate(node.value):
                    self.lines[(*loc, i)] = item.start_mark.line + 1
                    out.append(self.convert(item, (*loc, i)))
                return out
            assert isinstance(node, yaml.MappingNode)
            return self._mapping(node, loc)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merges: list[yaml.Node] = []
        explicit: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                if isinstance(value_node, yaml.SequenceNode):
                    merges.extend(value_node.value)
                else:
                    merges.append(value_node)
            else:
                explicit.append((key_node, value_node))
        # YAML merge keys (<<: *anchor): earlier sources win, explicit keys win over all.
        for source in reversed(merges):
            if isinstance(source, yaml.MappingNode):
                out.update(self._mapping(source, loc))
            else:
                self.problems.add(
                    source.start_mark.line + 1, loc, "'<<' must merge a mapping (an &anchor)"
                )
        seen: dict[str, int] = {}
        for key_node, value_node in explicit:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.add(line, loc, "keys must be plain names")
                continue
            # Use the key's source text: `on:` or `1:` are names here, not booleans/numbers.
            key = str(key_node.value)
            if key in seen:
                self.problems.add(line, (*loc, key), f"duplicate key (first at line {seen[key]})")
                continue
            seen[key] = line
            self.lines[(*loc, key)] = line
            out[key] = self.convert(value_node, (*loc, key))
        return out


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org") else tag


def _syntax_problem(exc: yaml.YAMLError) -> tuple[int, str]:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return 1, f"YAML syntax error: {' '.join(str(exc).split())}"
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    problem = exc.problem or "invalid YAML"
    text = f"YAML syntax error: {problem}"
    if exc.context:
        where = ""
        if exc.context_mark is not None and exc.context_mark.line + 1 != line:
            where = f" at line {exc.context_mark.line + 1}"
        text = f"YAML syntax error: {problem.removeprefix('but ')} ({exc.context}{where})"
    hint = _SYNTAX_HINTS.get(problem)
    if hint:
        text += f" — {hint}"
    return line, " ".join(text.split())
