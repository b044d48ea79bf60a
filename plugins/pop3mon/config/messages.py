"""pydantic validation errors turned into one-line messages with hints.

An error's ``loc`` is a path into the file; this module says what went wrong there in the
user's terms: unknown keys get a "did you mean", a note on where the key belongs, or the
keys allowed at that level (found by walking the schema along the path); literal
credentials get the reference keys to use instead; missing keys get what to put there.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Annotated, Any, Final, Union, get_args, get_origin

from pydantic import BaseModel

from ..engine.stages import LATENCY_PHASES, SECURITY_MODES
from .schema import _File
from .wording import Loc, _kind, _num, _show, _suggest

# Keys people use for a literal credential. They are never valid; the error explains the
# reference keys instead. The value is never printed.
_LITERAL_PASSWORD_KEYS: Final = frozenset({"password", "pass", "passwd", "pw", "secret"})
_LITERAL_TOKEN_KEYS: Final = frozenset(
    {"token", "access_token", "oauth_token", "bearer", "bearer_token"}
)

# Keys people use for a literal notification URL under notify: (it holds credentials).
_LITERAL_URL_KEYS: Final = frozenset({"url", "urls", "webhook", "apprise", "uri"})

# Where keys belong when someone puts them at the wrong level.
_BELONGS: Final[Mapping[str, str]] = {
    "port": "it belongs on each entry under connections:",
    "security": "it belongs on each entry under connections:",
    "id": "it belongs on each entry under connections:",
    "name": "it belongs on the server",
    "host": "it belongs on the server (define another server for another host)",
    "address": "it belongs on the server",
    "connections": "it belongs on a server",
}

_MISSING_HINTS: Final[Mapping[str, str]] = {
    "servers": "list the servers to monitor, each with name, host and connections",
    "name": "give the server a short name; it starts every connection id",
    "host": "the DNS name to connect to, also used for SNI and the certificate check",
    "connections": "list the connection types to probe (port, security, auth, account)",
    "security": f"one of {', '.join(SECURITY_MODES)}",
    "username": "the login name of the monitoring account",
}


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The schema model that validates the mapping at ``loc``."""
    current: Any = _File
    for seg in loc:
        current = _unwrap(current)
        if isinstance(seg, int):
            if get_origin(current) is not list:
                return None
            current = get_args(current)[0]
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(seg)
            if field is None:
                return None
            current = field.annotation
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _allowed(loc: Loc) -> list[str]:
    """The keys the mapping at ``loc`` accepts, sorted."""
    model = _model_at(loc)
    return sorted(model.model_fields) if model is not None else []


def _unknown_key(loc: Loc) -> str:
    key = str(loc[-1])
    parent = loc[:-1]
    where = "" if parent and parent[-1] == "account" else " under account:"
    if key in _LITERAL_PASSWORD_KEYS:
        return (
            "literal passwords are not allowed in the targets file — put the password in an "
            "environment variable and write password_env: VAR_NAME, or in a file only the "
            f"monitor can read and write password_file: PATH{where}"
        )
    if key in _LITERAL_TOKEN_KEYS:
        return (
            "literal tokens are not allowed in the targets file — put the token in an "
            "environment variable and write token_env: VAR_NAME, or in a file only the "
            f"monitor can read and write token_file: PATH{where}"
        )
    if parent[:1] == ("notify",) and key in _LITERAL_URL_KEYS:
        return (
            "notification URLs are not allowed in the targets file (they hold tokens and "
            "passwords) — put the Apprise URL in an environment variable and write url_env: "
            "VAR_NAME, or in a file only the monitor can read and write url_file: PATH"
        )
    allowed = _allowed(parent)
    if parent and parent[-1] == "latency" and key not in allowed:
        return f"unknown phase — phases are {', '.join(LATENCY_PHASES)}{_suggest(key, allowed)}"
    suggestion = _suggest(key, allowed)
    if suggestion:
        return f"unknown key{suggestion}"
    if key in _BELONGS:
        return f"not allowed here — {_BELONGS[key]}"
    return f"unknown key — allowed here: {', '.join(allowed)}"


_TYPE_WORDS: Final[Mapping[str, str]] = {
    "float_type": "must be a number",
    "int_type": "must be a whole number",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "dict_type": "must be a mapping (key: value lines)",
    "model_type": "must be a mapping (key: value lines)",
    "model_attributes_type": "must be a mapping (key: value lines)",
}


def _schema_message(err: Mapping[str, Any]) -> str:
    loc: Loc = tuple(err["loc"])
    kind: str = err["type"]
    value = err.get("input")
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    # Under notify: a value may be a pasted Apprise URL (with its token): never echoed.
    secretish = "account" in loc or loc[:1] == ("notify",)
    shown = _kind(value) if secretish else _show(value)
    if kind == "pop3mon":
        return str(ctx.get("message", err["msg"]))
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        hint = _MISSING_HINTS.get(str(loc[-1]))
        return "required key is missing" + (f" — {hint}" if hint else "")
    if kind in _TYPE_WORDS:
        return f"{_TYPE_WORDS[kind]}, not {shown}"
    bounds = {
        "greater_than": "must be greater than {gt}",
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
    }
    if kind in bounds:
        limit = bounds[kind].format(**{k: _num(v) for k, v in ctx.items()})
        return f"{limit}, not {shown}"
    if kind == "finite_number":
        return f"must be a finite number, not {shown}"
    # Anything unforeseen: pydantic's own sentence, without its URL or input dump.
    return str(err["msg"])
