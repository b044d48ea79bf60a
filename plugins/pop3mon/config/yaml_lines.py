"""YAML to plain data with a line number for every value, and YAML syntax problems.

PyYAML *composes* the file into nodes (which carry line marks); :class:`_YamlTree` converts
the nodes itself so every mapping key and sequence item gets a line, keyed by its path
(``("servers", 0, "host")``), the same shape as a pydantic error ``loc``. It also refuses
what a targets file never needs and hostile input uses: duplicate keys, unusual tags,
recursive aliases, alias and merge bombs, deep nesting (which would exhaust Python's
stack), numbers too long for Python to print, and text that is not Unicode (lone
surrogates from ``\\u`` escapes, which no report or terminal can encode).
:func:`_compose` parses the text; :class:`_Problems` collects the resulting lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import yaml

from .model import ConfigError
from .wording import Loc, _escape, _fmt_loc, _show

_SYNTAX_HINTS: Final[Mapping[str, str]] = {
    "found character '\\t' that cannot start any token": (
        "YAML does not allow tabs; indent with spaces"
    ),
}

# Aliases can expand a tiny file into a huge tree ("billion laughs"); no real targets file
# comes close to this many nodes.
_MAX_NODES: Final = 200_000
# The deepest path a targets file needs is six levels (servers[0].connections[0].latency.
# total.warn). PyYAML composes recursively and so do we: 20,000 "[" would exhaust the stack.
_MAX_DEPTH: Final = 32
# Larger whole numbers mean nothing in any setting (5 TB in bytes has 13 digits), and
# Python refuses to print one of more than 4300 digits at all.
_MAX_DIGITS: Final = 18
_MAX_INT: Final = 10**_MAX_DIGITS
_INT: Final = "tag:yaml.org,2002:int"
_FLOAT: Final = "tag:yaml.org,2002:float"


def _too_deep(display: str, line: int, loc: Loc = ()) -> ConfigError:
    where = f"{_fmt_loc(loc)}: " if loc else ""
    return ConfigError(
        [
            f"{display}:{line}: {where}nested deeper than {_MAX_DEPTH} levels — a targets "
            "file needs about 6; is this the right file?"
        ]
    )


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with a bound on nesting, checked before each level recurses."""

    def __init__(self, text: str, display: str) -> None:
        super().__init__(text)
        self._display = display
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
                mark = event.start_mark
                raise _too_deep(self._display, mark.line + 1 if mark else 1)
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1


# libyaml's parser composes about 9x faster than PyYAML's pure-Python one (1,000 connection
# types: 0.05 s instead of 0.45 s), which a plugin-mode check pays on every call.
_CLoader: Final = getattr(yaml, "CSafeLoader", None)
_OPENS: Final = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSES: Final = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _compose_fast(text: str) -> yaml.Node | None:
    """The node tree of ``text`` composed by libyaml, or ``None`` whenever the careful
    path must decide: no libyaml, nesting deeper than :data:`_MAX_DEPTH` (libyaml composes
    recursively in C, where nothing bounds the stack), or any problem in the text, which
    the pure-Python loader words with its line as every other config error."""
    if _CLoader is None or not text.strip():
        return None
    try:
        depth = 0
        # The event stream is flat, so counting nesting on it is safe at any depth.
        for event in yaml.parse(text, Loader=_CLoader):
            if isinstance(event, _OPENS):
                depth += 1
                if depth > _MAX_DEPTH:
                    return None
            elif isinstance(event, _CLOSES):
                depth -= 1
        node: yaml.Node | None = yaml.compose(text, Loader=_CLoader)
        return node
    except (yaml.YAMLError, ValueError):
        return None


def _compose(text: str, display: str) -> yaml.Node | None:
    """The node tree of ``text`` (``None`` for an empty document); syntax problems raise
    :class:`ConfigError` with their line."""
    fast = _compose_fast(text)
    if fast is not None:
        return fast
    try:
        loader = _Loader(text, display)
    except yaml.reader.ReaderError as exc:
        # Raised before parsing: the reader refuses control characters (a binary file).
        line = text[: exc.position].count("\n") + 1
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character))
        raise ConfigError(
            [
                f"{display}:{line}: the file contains the character U+{code:04X}, which YAML "
                "does not allow — a targets file is UTF-8 text; is this the right file?"
            ]
        ) from None
    try:
        return loader.get_single_node()
    except yaml.YAMLError as exc:
        line, message = _syntax_problem(exc)
        raise ConfigError([f"{display}:{line}: {message}"]) from None
    finally:
        loader.dispose()


def _unencodable(text: str) -> str | None:
    """The first lone surrogate in ``text``, escaped (``'\\ud800'``), or ``None``.

    YAML's ``"\\ud800"`` escape makes one; it is not a character, so the text could be
    neither printed nor written to a report."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return repr(text[exc.start])
    return None


_SURROGATE_FIX: Final = (
    "a lone UTF-16 surrogate from a \\u escape, which is not a character — write the "
    "character itself, or one \\U escape of 8 hex digits"
)


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
        self._depth = 0

    def line(self, loc: Loc) -> int:
        """The line of ``loc`` or of its nearest ancestor that has one."""
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def _enter(self, node: yaml.Node, loc: Loc) -> None:
        """Count one more value (alias bombs) and bound the depth (alias and merge chains
        nest deeper than the text does)."""
        self._count += 1
        if self._count > _MAX_NODES:
            raise ConfigError(
                [
                    f"{self.problems.display}:{node.start_mark.line + 1}: the file expands to "
                    "too many values (aliases nested too deep?)"
                ]
            )
        if len(loc) > _MAX_DEPTH or self._depth > _MAX_DEPTH:
            # Only aliases and merges get here (the text itself was bounded when composed):
            # name the top-level key where the chain starts, not 32 levels of path.
            raise _too_deep(self.problems.display, self.line(loc[:1]), loc[:1])

    def convert(self, node: yaml.Node, loc: Loc) -> Any:
        self._enter(node, loc)
        if id(node) in self._active:
            # Fatal: the structure around it would only produce confusing follow-up errors.
            line = self.line(loc)
            raise ConfigError(
                [f"{self.problems.display}:{line}: {_fmt_loc(loc)}: recursive YAML alias"]
            )
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, loc)
        if node.tag not in ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"):
            # !!set, !!omap, !!python/... : nothing in this file needs them.
            self.problems.add(
                node.start_mark.line + 1, loc, f"unsupported YAML tag {_short_tag(node.tag)}"
            )
            self.broken.add(loc)
            return None
        self._active.add(id(node))
        self._depth += 1
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
            self._depth -= 1
            self._active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        line = node.start_mark.line + 1
        problem = ""
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            problem = f"cannot read value: {problem}"
        except (ValueError, OverflowError) as exc:
            # int() of more than 4300 decimal digits (Python's limit on int/str conversion),
            # a float too large for a sexagesimal 1:0:0..., or a date like 2001-02-30.
            digits = sum(ch.isdigit() for ch in node.value)
            if node.tag in (_INT, _FLOAT) and digits > _MAX_DIGITS:
                problem = f"a number with {digits} digits is too large for any setting"
            else:
                problem = f"cannot read value: {_escape(' '.join(str(exc).split()), 120)[1:-1]}"
        else:
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _MAX_INT:
                problem = f"{_show(value)} is too large for any setting"
            elif isinstance(value, str) and (bad := _unencodable(value)):
                problem = f"the text contains {bad}, {_SURROGATE_FIX}"
        if problem:
            self.problems.add(line, loc, problem)
            self.broken.add(loc)
            return None
        return value

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
                # A merge recurses without a longer path: count and bound it here.
                self._enter(source, loc)
                self._depth += 1
                try:
                    out.update(self._mapping(source, loc))
                finally:
                    self._depth -= 1
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
            if _unencodable(key):
                self.problems.add(line, (*loc, key), f"the key contains {_SURROGATE_FIX}")
                continue
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
