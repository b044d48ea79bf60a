"""Loading and strict validation of ``targets.yaml``.

The file says *what* to monitor: servers, and per server a list of connection types (port,
security mode, auth mechanism, account). Settings cascade connection > server > ``defaults:``
> built-in. The result is a tuple of frozen :class:`ConnectionType` objects with stable,
readable ids built from configuration only (never from secrets).

Validation is strict and happens at start-up: every problem becomes ONE line naming the
file, the line, the field path and a hint, e.g.::

    targets.yaml:14: servers[0].connections[1].security: 'startls' is not one of none,
    starttls-optional, starttls, tls — did you mean 'starttls'?

(printed on one line). All problems are collected and raised together as
:class:`ConfigError`, sorted by line.

How it works: PyYAML *composes* the file into nodes (which carry line marks); we convert the
nodes ourselves so every mapping key and sequence item gets a line, keyed by its path
(``("servers", 0, "host")``). pydantic v2 checks the shape and values, and its error
``loc`` is exactly such a path, so each error maps back to a line. Checks that need the
merged view (inherited warn/crit pairs, auth vs. account, duplicate ids) run in a second
pass once the shape is valid.

Secrets appear in the file only as references (``password_env``, ``password_file``,
``token_env``, ``token_file``). They are resolved when :meth:`ConnectionType.to_probe_spec`
is called, not at load time, so a missing variable fails only that connection type's auth
tier. Values found under ``account:`` are never echoed in error messages, since a
misplaced password is the likeliest thing to be there.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import os
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..engine.result import MECHANISMS, MODES, STAGES, TLS_VERSIONS, ProbeSpec
from ..secrets import Secret

__all__ = [
    "ENV_VAR",
    "ConfigError",
    "ConnectionType",
    "LatencyThresholds",
    "Targets",
    "load_targets",
    "targets_path",
]

#: Environment variable that names the targets file when ``--targets`` is not given.
ENV_VAR: Final = "POP3MON_TARGETS"

Loc = tuple[str | int, ...]

# Mechanisms that send a password (or a digest of one) and those that send an OAuth token.
# "auto" picks among the password mechanisms, so it needs a password reference.
PASSWORD_MECHANISMS: Final = frozenset(
    {"auto", "user", "apop", "plain", "login", "cram-md5", "scram-sha-1", "scram-sha-256"}
)
TOKEN_MECHANISMS: Final = frozenset({"xoauth2", "oauthbearer"})

LATENCY_PHASES: Final[tuple[str, ...]] = (*STAGES, "total")

# Keys people use for a literal credential. They are never valid; the error explains the
# reference keys instead. The value is never printed.
_LITERAL_PASSWORD_KEYS: Final = frozenset({"password", "pass", "passwd", "pw", "secret"})
_LITERAL_TOKEN_KEYS: Final = frozenset(
    {"token", "access_token", "oauth_token", "bearer", "bearer_token"}
)

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
    "security": f"one of {', '.join(MODES)}",
    "username": "the login name of the monitoring account",
}

_SYNTAX_HINTS: Final[Mapping[str, str]] = {
    "found character '\\t' that cannot start any token": (
        "YAML does not allow tabs; indent with spaces"
    ),
}

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}\Z")
# Tags become pytest marker names (`-m eu`), so they must be identifier-like.
_TAG_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}\Z")
_ENV_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Tags are added to every item of their connection type as pytest markers. pytest's own
# markers would change the outcome (a tag "xfail" turns every CRIT into XFAIL and exit
# status 0, "skip"/"skipif" skips the connection type without probing it); the tier markers
# would make `-m tls` select the whole connection type; and/or/not cannot be used in -m.
_RESERVED_TAGS: Final = frozenset(
    {
        "skip",
        "skipif",
        "xfail",
        "parametrize",
        "usefixtures",
        "filterwarnings",
        "connectivity",
        "tls",
        "auth",
        "mailbox",
        "latency",
        "and",
        "or",
        "not",
    }
)
_LABEL_RE: Final = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")
_SIZE_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\Z")
_SIZE_UNITS: Final[Mapping[str, int]] = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}

# A secret file larger than this is almost certainly the wrong file (a key bundle, a log).
_MAX_SECRET_FILE: Final = 64 * 1024
# Aliases can expand a tiny file into a huge tree ("billion laughs"); no real targets file
# comes close to this many nodes.
_MAX_NODES: Final = 200_000


# ---------------------------------------------------------------------------------------
# Public error type
# ---------------------------------------------------------------------------------------


class ConfigError(Exception):
    """The targets file cannot be used. ``problems`` holds one finished line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[str]]]:
        # The default reduce would call __init__ with the joined string.
        return (type(self), (self.problems,))


# ---------------------------------------------------------------------------------------
# Public result types
# ---------------------------------------------------------------------------------------


class LatencyThresholds(Mapping[str, tuple[float, float]]):
    """Read-only, hashable, picklable ``phase -> (warn, crit)`` mapping in stage order."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, tuple[float, float]] | None = None) -> None:
        data = dict(items or {})
        order = {name: i for i, name in enumerate(LATENCY_PHASES)}
        self._items: tuple[tuple[str, tuple[float, float]], ...] = tuple(
            sorted(data.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
        )

    def __getitem__(self, key: str) -> tuple[float, float]:
        for name, pair in self._items:
            if name == key:
                return pair
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"LatencyThresholds({dict(self._items)!r})"

    def __reduce__(self) -> tuple[type[LatencyThresholds], tuple[dict[str, tuple[float, float]]]]:
        return (type(self), (dict(self._items),))


@dataclass(frozen=True)
class ConnectionType:
    """One thing to probe: a server, a port, a security mode and an auth mechanism.

    Holds only configuration and the *reference* to a secret (``secret_source``), never a
    secret value. ``line`` is where the connection is defined in the targets file.
    Thresholds: ``latency`` maps a phase name (engine STAGES plus ``total``) to
    ``(warn, crit)`` seconds; ``mailbox_count``/``mailbox_size`` are ``(warn, crit)`` or
    ``None``; ``stat_min``/``stat_max`` bound the STAT message count (outside is CRIT).
    """

    id: str
    server: str
    host: str
    address: str | None
    port: int
    security: str
    auth: str
    username: str | None
    secret_kind: str  # "password", "token" or "" (no reference)
    secret_source: str  # "env:NAME", "file:/abs/path" or ""
    tags: tuple[str, ...]
    timeout: float
    ping: bool
    ping_timeout: float
    ca_file: str | None
    min_tls_version: str
    verify_tls: bool
    allow_cleartext: bool
    collect_uidl: bool
    cert_warn_days: int
    cert_crit_days: int
    latency: LatencyThresholds
    mailbox_count: tuple[int, int] | None
    mailbox_size: tuple[int, int] | None
    stat_min: int | None
    stat_max: int | None
    line: int

    def resolve_secret(self, environ: Mapping[str, str] | None = None) -> tuple[Secret | None, str]:
        """Load the referenced secret now: ``(Secret, "")`` or ``(None, problem)``.

        Returns ``(None, "")`` when no secret is wanted (``auth: none``). The problem text
        names the variable or file, never any content.
        """
        if self.auth == "none" or not self.secret_source:
            return None, ""
        kind, _, ref = self.secret_source.partition(":")
        what = self.secret_kind or "password"
        if kind == "env":
            env = os.environ if environ is None else environ
            value = env.get(ref)
            if value is None:
                return None, f"environment variable {ref} is not set"
            if value == "":
                return None, f"environment variable {ref} is empty"
            return Secret(value, source=self.secret_source), ""
        return _read_secret_file(Path(ref), what, self.secret_source)

    def to_probe_spec(self, environ: Mapping[str, str] | None = None) -> ProbeSpec:
        """Build the engine's :class:`ProbeSpec`, resolving the secret reference now.

        A missing variable or unreadable file does not raise: the spec gets
        ``secret=None`` and ``secret_problem`` says why, so only the auth tier fails.
        """
        secret, problem = self.resolve_secret(environ)
        return ProbeSpec(
            id=self.id,
            host=self.host,
            port=self.port,
            mode=self.security,
            mechanism=self.auth,
            username=self.username or "",
            secret=secret,
            secret_problem=problem,
            allow_cleartext=self.allow_cleartext,
            ca_file=self.ca_file or "",
            min_tls_version=self.min_tls_version,
            verify_tls=self.verify_tls,
            timeout=self.timeout,
            ping=self.ping,
            ping_timeout=self.ping_timeout,
            address=self.address or "",
            collect_uidl=self.collect_uidl,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data (for reports); contains no secret value."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["latency"] = {phase: list(pair) for phase, pair in self.latency.items()}
        data["tags"] = list(self.tags)
        for key in ("mailbox_count", "mailbox_size"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data


@dataclass(frozen=True)
class Targets:
    """A loaded targets file: absolute ``path``, ``sha256`` of its bytes and the
    connection types sorted by id."""

    path: Path
    sha256: str
    connections: tuple[ConnectionType, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        """The connection ids in order."""
        return tuple(c.id for c in self.connections)

    def by_id(self, connection_id: str) -> ConnectionType:
        """The connection type with this id; ``KeyError`` if there is none."""
        for conn in self.connections:
            if conn.id == connection_id:
                return conn
        raise KeyError(connection_id)


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


# ---------------------------------------------------------------------------------------
# Small helpers for messages
# ---------------------------------------------------------------------------------------


def _fmt_loc(loc: Loc) -> str:
    out = ""
    for seg in loc:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += f".{seg}" if out else seg
    return out


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _show(value: object) -> str:
    """A short description of a YAML value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _num(value)
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _kind(value: object) -> str:
    """Like :func:`_show` but without the value (used under ``account:``)."""
    if isinstance(value, str):
        return "a text string"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return _show(value)


def _closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice ``word`` most likely meant, or ``None``."""
    lowered = {c.lower(): c for c in choices}
    low = word.lower()
    if low in lowered:
        return lowered[low]
    # A choice that starts the word ("hostname" -> "host", "server" -> "servers") beats
    # difflib's character ratio, which would pick "name" for "hostname".
    prefixed = [c for c in lowered if len(c) >= 3 and (low.startswith(c) or c.startswith(low))]
    if len(low) >= 3 and prefixed:
        return lowered[max(prefixed, key=len)]
    match = difflib.get_close_matches(low, list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _suggest(word: str, choices: Sequence[str]) -> str:
    """`` — did you mean 'x'?`` or ``""``."""
    best = _closest(word, choices)
    return f" — did you mean '{best}'?" if best else ""


def _bad(message: str) -> PydanticCustomError:
    # The message goes through context so braces in it are not read as a template.
    return PydanticCustomError("pop3mon", "{message}", {"message": message})


def _choice(value: object, choices: Sequence[str]) -> str:
    if isinstance(value, str) and value in choices:
        return value
    word = value if isinstance(value, str) else _show(value)
    raise _bad(f"{_show(value)} is not one of {', '.join(choices)}{_suggest(word, choices)}")


# ---------------------------------------------------------------------------------------
# Field validators
# ---------------------------------------------------------------------------------------


def _v_security(value: object) -> str:
    return _choice(value, MODES)


def _v_auth(value: object) -> str:
    return _choice(value, MECHANISMS)


def _v_tls_version(value: object) -> str:
    if isinstance(value, str) and value in TLS_VERSIONS:
        return value
    # "1.2", 1.2, "TLS1.2", "tlsv1.2" all mean TLSv1.2; "1.0" means TLSv1.
    text = _num(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    hint = ""
    if isinstance(text, str):
        core = re.sub(r"^(tls)?\s*v?", "", text.strip().lower())
        core = {"1.0": "1", "1": "1"}.get(core, core)
        for name in TLS_VERSIONS:
            if name.lower().removeprefix("tlsv") == core:
                hint = f" — did you mean '{name}'?"
                break
    raise _bad(f"{_show(value)} is not one of {', '.join(TLS_VERSIONS)}{hint}")


def _v_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise _bad(
            f"{_show(value)} is not a valid server name — use letters, digits, '.', '_' and "
            "'-' (it becomes part of every connection id)"
        )
    return value


def _v_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise _bad(
            f"{_show(value)} is not a valid connection id — use letters, digits and "
            "'.', '_', '-', ':', '@', '+', starting with a letter or digit"
        )
    return value


def _v_tag(value: str) -> str:
    if not _TAG_RE.match(value):
        raise _bad(
            f"{_show(value)} is not a valid tag — use letters, digits, '_' and '-', starting "
            "with a letter (tags become pytest markers for -m)"
        )
    if value in _RESERVED_TAGS:
        raise _bad(
            f"{_show(value)} cannot be a tag — it is a pytest or pop3mon marker name "
            "(skip, skipif, xfail, a tier like tls) or a -m keyword; choose another name"
        )
    return value


def _v_host(value: str) -> str:
    if "://" in value:
        raise _bad(f"{_show(value)} is not a host name — write only the name, without a scheme")
    if value.startswith("[") and value.endswith("]"):
        raise _bad(f"{_show(value)} is not a host name — write IPv6 addresses without brackets")
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if re.fullmatch(r"[^:]+:\d+", value):
        raise _bad(
            f"{_show(value)} is not a host name — drop ':port'; set port: on each connection"
        )
    if not value.isascii():
        raise _bad(
            f"{_show(value)} is not an ASCII host name — use the IDNA form (xn--...) that "
            "the certificate names"
        )
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253 or not all(_LABEL_RE.match(p) for p in name.split(".")):
        raise _bad(f"{_show(value)} is not a valid host name")
    return value


def _v_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise _bad(
            f"{_show(value)} is not an IP address — address pins the IP to connect to; put "
            "names under host"
        ) from None
    return value


def _v_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise _bad(f"{value} is out of range — a port is between 1 and 65535")
    return value


def _v_username(value: str) -> str:
    # Never echo: the value sits under account: and might be a misplaced password.
    if not value:
        raise _bad("must not be empty")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise _bad("must not contain control characters or line breaks")
    return value


def _v_env_name(value: str) -> str:
    if value.startswith("$"):
        raise _bad("write the variable name without '$' or braces, e.g. POP3_PASSWORD")
    if not _ENV_RE.match(value):
        raise _bad(
            "is not an environment variable name (letters, digits and '_', not starting "
            "with a digit) — if this is the secret itself, move it into a variable"
        )
    return value


def _v_nonempty_path(value: str) -> str:
    if not value.strip():
        raise _bad("must not be empty")
    return value


def _v_size(value: object) -> object:
    """Sizes: whole bytes, or text with a unit ("5GB", "1.5 GiB")."""
    if not isinstance(value, str):
        return value
    match = _SIZE_RE.match(value.strip())
    if not match:
        raise _bad(
            f"{_show(value)} is not a size — write whole bytes or a number with B, KB, MB, "
            "GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 5GB"
        )
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def _v_version(value: object) -> object:
    if value == 1 and type(value) is int:
        return value
    raise _bad(f"unsupported version {_show(value)} — this pop3mon reads version: 1")


def _base_dir(info: ValidationInfo) -> Path:
    ctx = info.context or {}
    base = ctx.get("base_dir", ".")
    return Path(base)


def _resolve_path(base: Path, value: str) -> Path:
    # Relative paths start at the targets file's directory, so the suite works whatever
    # directory pytest is started from.
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------

_Seconds = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]
_Days = Annotated[int, Field(ge=0, le=3650)]
_Count = Annotated[int, Field(ge=0)]
_Size = Annotated[int, BeforeValidator(_v_size), Field(ge=0)]
_Tag = Annotated[str, AfterValidator(_v_tag)]
_EnvName = Annotated[str, AfterValidator(_v_env_name)]
_FileName = Annotated[str, AfterValidator(_v_nonempty_path)]


class _Model(BaseModel):
    # strict: no "10" -> 10 or 1 -> True coercion; forbid: every unknown key is an error.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)


class _SecondsPair(_Model):
    """Latency threshold in seconds; either half may be inherited."""

    warn: _Seconds = 0.0  # placeholder: only keys in model_fields_set count
    crit: _Seconds = 0.0

    @model_validator(mode="after")
    def _order(self) -> _SecondsPair:
        if {"warn", "crit"} <= self.model_fields_set and self.warn >= self.crit:
            raise _bad(
                f"warn ({_num(self.warn)}) must be less than crit ({_num(self.crit)}) — "
                "warn is the smaller, earlier alarm"
            )
        return self


class _CountPair(_Model):
    warn: _Count = 0
    crit: _Count = 0

    @model_validator(mode="after")
    def _order(self) -> _CountPair:
        if {"warn", "crit"} <= self.model_fields_set and self.warn >= self.crit:
            raise _bad(f"warn ({self.warn}) must be less than crit ({self.crit})")
        return self


class _SizePair(_Model):
    warn: _Size = 0
    crit: _Size = 0

    @model_validator(mode="after")
    def _order(self) -> _SizePair:
        if {"warn", "crit"} <= self.model_fields_set and self.warn >= self.crit:
            raise _bad(f"warn ({self.warn} bytes) must be less than crit ({self.crit} bytes)")
        return self


class _Cert(_Model):
    warn_days: _Days = 0
    crit_days: _Days = 0

    @model_validator(mode="after")
    def _order(self) -> _Cert:
        given = {"warn_days", "crit_days"} <= self.model_fields_set
        if given and self.warn_days <= self.crit_days:
            raise _bad(
                f"warn_days ({self.warn_days}) must be greater than crit_days "
                f"({self.crit_days}) — warn comes first, while more days are left"
            )
        return self


class _Latency(_Model):
    """Per-phase thresholds; ``null`` removes an inherited one."""

    dns: _SecondsPair | None = None
    ping: _SecondsPair | None = None
    connect: _SecondsPair | None = None
    tls: _SecondsPair | None = None
    greeting: _SecondsPair | None = None
    capa: _SecondsPair | None = None
    stls: _SecondsPair | None = None
    tls_handshake: _SecondsPair | None = None
    capa_tls: _SecondsPair | None = None
    auth: _SecondsPair | None = None
    stat: _SecondsPair | None = None
    quit: _SecondsPair | None = None
    total: _SecondsPair | None = None


# The engine owns the stage names; fail loudly at import if they drift apart.
assert set(_Latency.model_fields) == set(LATENCY_PHASES), "update _Latency to match STAGES"


class _Mailbox(_Model):
    count: _CountPair | None = None
    size: _SizePair | None = None
    stat_min: _Count | None = None
    stat_max: _Count | None = None

    @model_validator(mode="after")
    def _order(self) -> _Mailbox:
        low, high = self.stat_min, self.stat_max
        if low is not None and high is not None and low > high:
            raise _bad(f"stat_min ({low}) must not be greater than stat_max ({high})")
        return self


class _Account(_Model):
    username: Annotated[str, AfterValidator(_v_username)]
    password_env: _EnvName | None = None
    password_file: _FileName | None = None
    token_env: _EnvName | None = None
    token_file: _FileName | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> _Account:
        given = [k for k in _REF_KEYS if getattr(self, k) is not None]
        if len(given) > 1:
            raise _bad(
                f"gives {' and '.join(given)} — use exactly one of "
                "password_env, password_file, token_env, token_file"
            )
        return self

    @property
    def reference(self) -> tuple[str, str, str] | None:
        """``(kind, "env"|"file", name)`` of the one reference, if any."""
        for key in _REF_KEYS:
            value = getattr(self, key)
            if value is not None:
                kind, _, how = key.partition("_")
                return kind, how, value
        return None


_REF_KEYS: Final = ("password_env", "password_file", "token_env", "token_file")


class _Settings(_Model):
    """Everything that cascades connection > server > defaults > built-in."""

    auth: Annotated[str, BeforeValidator(_v_auth)] = "auto"
    timeout: _Seconds = 0.0
    ping: bool = False
    ping_timeout: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 1.0
    ca_file: str | None = None
    min_tls_version: Annotated[str, BeforeValidator(_v_tls_version)] = "TLSv1.2"
    verify_tls: bool = True
    allow_cleartext: bool = False
    collect_uidl: bool = False
    cert: _Cert = _Cert()
    latency: _Latency | None = None
    mailbox: _Mailbox | None = None
    tags: list[_Tag] = []
    account: _Account | None = None

    @field_validator("ca_file")
    @classmethod
    def _ca_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise _bad("must not be empty — use null for the system CA store")
        path = _resolve_path(_base_dir(info), value)
        if not path.exists():
            raise _bad(
                f"{_show(value)} does not exist (relative paths start at the directory of "
                "the targets file)"
            )
        if not path.is_file():
            raise _bad(f"{_show(value)} is not a file — give a PEM file with the CA certificates")
        return value


class _Connection(_Settings):
    id: Annotated[str, AfterValidator(_v_id)] | None = None
    port: Annotated[int, AfterValidator(_v_port)] | None = None
    security: Annotated[str, BeforeValidator(_v_security)]


class _Server(_Settings):
    name: Annotated[str, AfterValidator(_v_name)]
    host: Annotated[str, AfterValidator(_v_host)]
    address: Annotated[str, AfterValidator(_v_address)] | None = None
    connections: list[_Connection]

    @field_validator("connections")
    @classmethod
    def _nonempty(cls, value: list[_Connection]) -> list[_Connection]:
        if not value:
            raise _bad("is empty — list at least one connection type (port, security, auth)")
        return value


class _File(_Model):
    version: Annotated[int, BeforeValidator(_v_version)] = 1
    defaults: _Settings | None = None
    servers: list[_Server]

    @field_validator("servers")
    @classmethod
    def _nonempty(cls, value: list[_Server]) -> list[_Server]:
        if not value:
            raise _bad("is empty — list at least one server with name, host and connections")
        return value


# ---------------------------------------------------------------------------------------
# YAML with line numbers
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# pydantic errors -> lines
# ---------------------------------------------------------------------------------------


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
    secretish = "account" in loc
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


# ---------------------------------------------------------------------------------------
# Cascade: defaults -> server -> connection
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Origin:
    loc: Loc | None  # None = built-in default
    line: int


_BUILTIN_ORIGIN: Final = _Origin(None, 0)
_CLEAR: Final = object()

_BUILTIN: Final[Mapping[str, object]] = {
    "auth": "auto",
    "timeout": 10.0,
    "ping": False,
    "ping_timeout": 1.0,
    "ca_file": None,
    "min_tls_version": "TLSv1.2",
    "verify_tls": True,
    "allow_cleartext": False,
    "collect_uidl": False,
    "cert.warn_days": 21,
    "cert.crit_days": 7,
    "latency.total.warn": 2.0,
    "latency.total.crit": 5.0,
    "account": None,
}

_SCALARS: Final = (
    "auth",
    "timeout",
    "ping",
    "ping_timeout",
    "ca_file",
    "min_tls_version",
    "verify_tls",
    "allow_cleartext",
    "collect_uidl",
    "account",
)


def _layer(settings: _Settings, loc: Loc) -> Iterator[tuple[str, object, Loc]]:
    """The keys one level sets explicitly, flattened to dotted names."""
    given = settings.model_fields_set
    for name in _SCALARS:
        if name in given:
            yield name, getattr(settings, name), (*loc, name)
    if "cert" in given:
        for half in sorted(settings.cert.model_fields_set):
            yield f"cert.{half}", getattr(settings.cert, half), (*loc, "cert", half)
    if "latency" in given:
        if settings.latency is None:
            yield "latency", _CLEAR, (*loc, "latency")
        else:
            for phase in sorted(settings.latency.model_fields_set):
                pair = getattr(settings.latency, phase)
                ploc = (*loc, "latency", phase)
                if pair is None:
                    yield f"latency.{phase}", _CLEAR, ploc
                else:
                    for half in sorted(pair.model_fields_set):
                        yield f"latency.{phase}.{half}", getattr(pair, half), (*ploc, half)
    if "mailbox" in given:
        mailbox = settings.mailbox
        if mailbox is None:
            yield "mailbox", _CLEAR, (*loc, "mailbox")
        else:
            for part in sorted(mailbox.model_fields_set):
                value = getattr(mailbox, part)
                ploc = (*loc, "mailbox", part)
                if part in ("stat_min", "stat_max"):
                    yield f"mailbox.{part}", value, ploc
                elif value is None:
                    yield f"mailbox.{part}", _CLEAR, ploc
                else:
                    for half in sorted(value.model_fields_set):
                        yield f"mailbox.{part}.{half}", getattr(value, half), (*ploc, half)


class _Effective:
    """The merged settings of one connection, each value with where it came from."""

    def __init__(self, tree: _YamlTree) -> None:
        self.tree = tree
        self.values: dict[str, tuple[object, _Origin]] = {
            k: (v, _BUILTIN_ORIGIN) for k, v in _BUILTIN.items()
        }
        self.tags: list[str] = []

    def apply(self, settings: _Settings | None, loc: Loc) -> None:
        if settings is None:
            return
        for key, value, vloc in _layer(settings, loc):
            if value is _CLEAR:
                for old in [k for k in self.values if k == key or k.startswith(key + ".")]:
                    del self.values[old]
            else:
                self.values[key] = (value, _Origin(vloc, self.tree.line(vloc)))
        # Tags accumulate (defaults' "production" plus the server's "eu"), they do not
        # replace: a tag is a label for selection, not a setting.
        for tag in settings.tags:
            if tag not in self.tags:
                self.tags.append(tag)

    def get(self, key: str) -> Any:
        return self.values[key][0]

    def optional(self, key: str) -> Any:
        return self.values[key][0] if key in self.values else None

    def origin(self, key: str) -> _Origin:
        return self.values[key][1]

    def pair(
        self,
        prefix: str,
        problems: _Problems,
        low: str = "warn",
        high: str = "crit",
        *,
        reverse: bool = False,
    ) -> tuple[Any, Any] | None:
        """Join ``prefix.low``/``prefix.high`` that may come from different levels."""
        a, b = f"{prefix}.{low}", f"{prefix}.{high}"
        if a not in self.values and b not in self.values:
            return None
        if a not in self.values or b not in self.values:
            have, missing = (a, high) if a in self.values else (b, low)
            origin = self.origin(have)
            assert origin.loc is not None
            problems.add(
                origin.line,
                origin.loc[:-1],
                f"{missing} is not set here or inherited — a threshold needs both warn and crit",
            )
            return None
        oa, ob = self.origin(a), self.origin(b)
        va, vb = self.get(a), self.get(b)
        bad = va <= vb if reverse else va >= vb
        # Same mapping: the schema check already reported it.
        same = oa.loc is not None and ob.loc is not None and oa.loc[:-1] == ob.loc[:-1]
        if bad and not same:
            here, there = (oa, ob) if _depth(oa) >= _depth(ob) else (ob, oa)
            assert here.loc is not None
            relation = "greater than" if reverse else "less than"
            problems.add(
                here.line,
                here.loc,
                f"{low} ({_num(va)}) must be {relation} {high} ({_num(vb)}) "
                f"inherited from {_where(there)}",
            )
            return None
        return va, vb


def _depth(origin: _Origin) -> int:
    return -1 if origin.loc is None else len(origin.loc)


def _where(origin: _Origin) -> str:
    if origin.loc is None:
        return "the built-in default"
    return f"{_fmt_loc(origin.loc)} (line {origin.line})"


def _read_secret_file(path: Path, what: str, source: str) -> tuple[Secret | None, str]:
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_SECRET_FILE + 1)
    except FileNotFoundError:
        return None, f"{what} file {path} does not exist"
    except IsADirectoryError:
        return None, f"{what} file {path} is a directory"
    except PermissionError:
        return None, f"{what} file {path} is not readable (permission denied)"
    except OSError as exc:
        return None, f"cannot read {what} file {path}: {exc.strerror or type(exc).__name__}"
    if len(raw) > _MAX_SECRET_FILE:
        return None, f"{what} file {path} is larger than {_MAX_SECRET_FILE} bytes"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, f"{what} file {path} is not UTF-8 text"
    # Files written by editors and `echo` end in a newline that is not part of the secret.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        return None, f"{what} file {path} is empty"
    return Secret(text, source=source), ""


def _check_auth(eff: _Effective, conn_loc: Loc, conn: _Connection, problems: _Problems) -> None:
    auth: str = eff.get("auth")
    if auth == "none":
        return
    account: _Account | None = eff.get("account")
    here = (*conn_loc, "auth") if "auth" in conn.model_fields_set else conn_loc
    line = eff.tree.line(here)
    default = " (the default)" if eff.origin("auth").loc is None else ""
    if account is None:
        ref = "token_env" if auth in TOKEN_MECHANISMS else "password_env"
        problems.add(
            line,
            here,
            f"auth '{auth}'{default} needs an account — add account: {{username: NAME, "
            f"{ref}: VAR_NAME}} here, on the server or in defaults, or set auth: none",
        )
        return
    reference = account.reference
    acc = eff.origin("account")
    assert acc.loc is not None
    if reference is None:
        if auth in TOKEN_MECHANISMS:
            fix = "token_env: VAR_NAME or token_file: PATH"
        else:
            fix = "password_env: VAR_NAME or password_file: PATH"
        problems.add(acc.line, acc.loc, f"no secret reference for auth '{auth}' — add {fix}")
        return
    kind, how, _name = reference
    if auth in TOKEN_MECHANISMS and kind != "token":
        problems.add(
            line,
            here,
            f"auth '{auth}' needs an OAuth token, but the account (line {acc.line}) gives "
            f"password_{how} — use token_env or token_file",
        )
    elif auth not in TOKEN_MECHANISMS and kind == "token":
        fix = (
            "set auth: xoauth2 or auth: oauthbearer"
            if auth == "auto"
            else "use password_env or password_file, or auth: xoauth2 / oauthbearer"
        )
        problems.add(
            line,
            here,
            f"auth '{auth}'{default} sends a password, but the account (line {acc.line}) "
            f"gives token_{how} — {fix}",
        )


def _build(
    model: _File, tree: _YamlTree, base_dir: Path, problems: _Problems
) -> list[ConnectionType]:
    out: list[ConnectionType] = []
    id_lines: dict[str, int] = {}
    server_lines: dict[str, int] = {}
    for si, server in enumerate(model.servers):
        sloc: Loc = ("servers", si)
        name_line = tree.line((*sloc, "name"))
        if server.name in server_lines:
            problems.add(
                name_line,
                (*sloc, "name"),
                f"duplicate server name {_show(server.name)} (first at line "
                f"{server_lines[server.name]}) — server names must be unique",
            )
        else:
            server_lines[server.name] = name_line
        for ci, conn in enumerate(server.connections):
            cloc: Loc = (*sloc, "connections", ci)
            eff = _Effective(tree)
            eff.apply(model.defaults, ("defaults",))
            eff.apply(server, sloc)
            eff.apply(conn, cloc)
            before = len(problems.items)

            port = conn.port if conn.port is not None else (995 if conn.security == "tls" else 110)
            if conn.id is not None:
                cid, id_loc = conn.id, (*cloc, "id")
                how, fix = "", "ids must be unique"
            else:
                cid, id_loc = f"{server.name}:{port}-{conn.security}", cloc
                how = "built from server name, port and security; "
                fix = "add id: to tell them apart"
            id_line = tree.line(id_loc)
            if cid in id_lines:
                problems.add(
                    id_line,
                    id_loc,
                    f"duplicate connection id {_show(cid)} ({how}first at line "
                    f"{id_lines[cid]}) — {fix}",
                )
            else:
                id_lines[cid] = id_line

            _check_auth(eff, cloc, conn, problems)
            cert = _cert_pair(eff, problems)
            latency: dict[str, tuple[float, float]] = {}
            for phase in LATENCY_PHASES:
                pair = eff.pair(f"latency.{phase}", problems)
                if pair is not None:
                    latency[phase] = (float(pair[0]), float(pair[1]))
            count = eff.pair("mailbox.count", problems)
            size = eff.pair("mailbox.size", problems)
            stat_min: int | None = eff.optional("mailbox.stat_min")
            stat_max: int | None = eff.optional("mailbox.stat_max")
            if stat_min is not None and stat_max is not None and stat_min > stat_max:
                omin, omax = eff.origin("mailbox.stat_min"), eff.origin("mailbox.stat_max")
                assert omin.loc is not None and omax.loc is not None
                if omin.loc[:-1] != omax.loc[:-1]:
                    here, there = (omin, omax) if _depth(omin) >= _depth(omax) else (omax, omin)
                    assert here.loc is not None
                    problems.add(
                        here.line,
                        here.loc,
                        f"stat_min ({stat_min}) must not be greater than stat_max ({stat_max}) "
                        f"inherited from {_where(there)}",
                    )
            if len(problems.items) != before or cert is None:
                continue

            account: _Account | None = eff.get("account")
            auth: str = eff.get("auth")
            kind = source = ""
            reference = account.reference if account is not None else None
            if reference is not None and auth != "none":
                kind, how_ref, ref = reference
                if how_ref == "file":
                    source = f"file:{_resolve_path(base_dir, ref)}"
                else:
                    source = f"env:{ref}"
            ca_file: str | None = eff.get("ca_file")
            out.append(
                ConnectionType(
                    id=cid,
                    server=server.name,
                    host=server.host,
                    address=server.address,
                    port=port,
                    security=conn.security,
                    auth=auth,
                    username=account.username if account is not None else None,
                    secret_kind=kind,
                    secret_source=source,
                    tags=tuple(eff.tags),
                    timeout=float(eff.get("timeout")),
                    ping=eff.get("ping"),
                    ping_timeout=float(eff.get("ping_timeout")),
                    ca_file=str(_resolve_path(base_dir, ca_file)) if ca_file else None,
                    min_tls_version=eff.get("min_tls_version"),
                    verify_tls=eff.get("verify_tls"),
                    allow_cleartext=eff.get("allow_cleartext"),
                    collect_uidl=eff.get("collect_uidl"),
                    cert_warn_days=cert[0],
                    cert_crit_days=cert[1],
                    latency=LatencyThresholds(latency),
                    mailbox_count=(int(count[0]), int(count[1])) if count else None,
                    mailbox_size=(int(size[0]), int(size[1])) if size else None,
                    stat_min=stat_min,
                    stat_max=stat_max,
                    line=tree.line(cloc),
                )
            )
    return out


def _cert_pair(eff: _Effective, problems: _Problems) -> tuple[int, int] | None:
    pair = eff.pair("cert", problems, "warn_days", "crit_days", reverse=True)
    return (int(pair[0]), int(pair[1])) if pair is not None else None


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


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
