"""The shape of ``targets.yaml``: pydantic models and the field validators.

The models are strict (no ``"10"`` -> 10 coercion) and forbid unknown keys. Validators
raise :func:`_bad` with a finished message and hint; :mod:`.messages` words pydantic's
own errors. Settings that may be inherited are checked only as far as one mapping can be
(a warn/crit pair given together); the merged view is checked in :mod:`.cascade`.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import ssl
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..engine.defaults import DEFAULTS
from ..engine.mechanisms import AUTH_SETTINGS, MECHANISMS
from ..engine.smtp import relay_recipient_problem
from ..engine.stages import (
    ADDRESS_FAMILIES,
    CLEANUP_MODES,
    COVERAGE_LEVELS,
    DRIFT_CHECKS,
    DRIFT_LEVELS,
    LATENCY_PHASES,
    PACING_MODES,
    SECURITY_MODES,
    TLS_VERSIONS,
    AddressFamily,
    Cleanup,
    CoverageLevel,
    DriftLevel,
    Pacing,
    Security,
)
from .model import (
    DEFAULT_NOTIFY_ON,
    DEFAULT_NOTIFY_TIMEOUT,
    DEFAULT_NOTIFY_TITLE,
    NOTIFY_RULES,
    NotifyRule,
)
from .wording import _num, _show, _suggest

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
        # pytest-xdist's: --dist=loadgroup renames the tests that carry it
        "xdist_group",
        "filterwarnings",
        "connectivity",
        "tls",
        "auth",
        "mailbox",
        "latency",
        "drift",
        "host",
        "coverage",
        "and",
        "or",
        "not",
    }
)
_LABEL_RE: Final = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")
_SIZE_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\Z")
_MAX_SIZE: Final = 10**18
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


def _v_security(value: object) -> Security:
    chosen = _choice(value, SECURITY_MODES)
    # Narrow the checked string to the Literal without a cast.
    return next(mode for mode in SECURITY_MODES if mode == chosen)


def _v_drift_level(value: object) -> DriftLevel:
    # YAML 1.1 reads a bare `off` as false: take it for what was meant.
    chosen = _choice("off" if value is False else value, DRIFT_LEVELS)
    return next(level for level in DRIFT_LEVELS if level == chosen)


def _v_coverage_level(value: object) -> CoverageLevel:
    chosen = _choice(value, COVERAGE_LEVELS)
    return next(level for level in COVERAGE_LEVELS if level == chosen)


def _v_pacing(value: object) -> Pacing:
    chosen = _choice(value, PACING_MODES)
    return next(mode for mode in PACING_MODES if mode == chosen)


# Other ways to name a family (socket constants, `ip -6`, "dual stack"): hints only, never
# accepted, so one file does not spell the same setting three ways.
_FAMILY_HINTS: Final[Mapping[str, AddressFamily]] = {
    "4": "ipv4",
    "6": "ipv6",
    "v4": "ipv4",
    "v6": "ipv6",
    "ip4": "ipv4",
    "ip6": "ipv6",
    "inet": "ipv4",
    "inet4": "ipv4",
    "inet6": "ipv6",
    "af_inet": "ipv4",
    "af_inet6": "ipv6",
    "any": "auto",
    "both": "auto",
    "dual": "auto",
    "dualstack": "auto",
    "dual-stack": "auto",
}


def _v_address_family(value: object) -> AddressFamily:
    if isinstance(value, str) and value in ADDRESS_FAMILIES:
        return next(family for family in ADDRESS_FAMILIES if family == value)
    word = _show(value).strip("'").lower() if isinstance(value, int | str) else ""
    hint = _FAMILY_HINTS.get(word) or _FAMILY_HINTS.get(word.replace(" ", ""))
    suggestion = f" — did you mean '{hint}'?" if hint else _suggest(word, ADDRESS_FAMILIES)
    raise _bad(f"{_show(value)} is not one of {', '.join(ADDRESS_FAMILIES)}{suggestion}")


def _v_auth(value: object) -> str:
    return _choice(value, AUTH_SETTINGS)


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
    # The value is not echoed: under account: a misplaced password may sit here.
    if not value.strip():
        raise _bad("must not be empty")
    if "\0" in value:
        raise _bad("contains a NUL character (\\0), which no path can — remove it")
    try:
        Path(value).expanduser()
    except RuntimeError:
        user = value[1:].partition("/")[0]
        who = f"~{user}: there is no user {user!r}" if user else "~: there is no home directory"
        raise _bad(f"{who} on this system to expand it — write the full path") from None
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
    size = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    # 400 digits are inf as a float; no mailbox holds an exabyte.
    if not size < _MAX_SIZE:
        raise _bad(f"{_show(value)} is too large — a mailbox size is below 1 EB")
    return int(size)


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
# Models
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
    # Like _Settings' defaults, never read: only keys in model_fields_set count.
    warn_days: _Days = DEFAULTS.cert_warn_days
    crit_days: _Days = DEFAULTS.cert_crit_days

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
    ehlo: _SecondsPair | None = None
    stls: _SecondsPair | None = None
    starttls: _SecondsPair | None = None
    tls_handshake: _SecondsPair | None = None
    capa_tls: _SecondsPair | None = None
    ehlo_tls: _SecondsPair | None = None
    relay: _SecondsPair | None = None
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


_DriftLevelField = Annotated[DriftLevel, BeforeValidator(_v_drift_level)]


class _Drift(_Model):
    """``drift:``: each drift check's level (warn, crit, off) and the mailbox ratio. Like
    _Cert's, the defaults are never read: only keys in model_fields_set count."""

    certificate_changed: _DriftLevelField = DEFAULTS.drift.certificate_changed
    capabilities_changed: _DriftLevelField = DEFAULTS.drift.capabilities_changed
    credentials_changed: _DriftLevelField = DEFAULTS.drift.credentials_changed
    mailbox_changed: _DriftLevelField = DEFAULTS.drift.mailbox_changed
    # A fraction of the baseline: 0.5 fires when count or size moves by more than half.
    mailbox_ratio: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = (
        DEFAULTS.drift.mailbox_ratio
    )


assert set(_Drift.model_fields) == {*DRIFT_CHECKS, "mailbox_ratio"}, "update _Drift"


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
    """Everything that cascades connection > server > defaults > built-in.

    The field defaults are never read: the cascade takes only the keys a level gives
    (``model_fields_set``) and the built-in layer reads ``DEFAULTS`` itself. They name
    the same values anyway, so the model does not mislead whoever reads it.
    """

    auth: Annotated[str, BeforeValidator(_v_auth)] = DEFAULTS.auth
    timeout: _Seconds = DEFAULTS.timeout
    ping: bool = DEFAULTS.ping
    ping_timeout: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = DEFAULTS.ping_timeout
    ca_file: str | None = None
    min_tls_version: Annotated[str, BeforeValidator(_v_tls_version)] = DEFAULTS.min_tls_version
    verify_tls: bool = DEFAULTS.verify_tls
    allow_cleartext: bool = DEFAULTS.allow_cleartext
    collect_uidl: bool = DEFAULTS.collect_uidl
    login_pacing: Annotated[Pacing, BeforeValidator(_v_pacing)] = DEFAULTS.login_pacing
    # Runs in a row a CRIT must hold before it is hard (history/states.py).
    confirm: Annotated[int, Field(ge=1, le=100)] = DEFAULTS.confirm
    address_family: Annotated[AddressFamily, BeforeValidator(_v_address_family)] = (
        DEFAULTS.address_family
    )
    retries: Annotated[int, Field(ge=0, le=DEFAULTS.retries_max)] = DEFAULTS.retries
    retry_backoff: Annotated[
        float, Field(ge=0, le=DEFAULTS.retry_backoff_max, allow_inf_nan=False)
    ] = DEFAULTS.retry_backoff
    cert: _Cert = _Cert()
    drift: _Drift = _Drift()
    latency: _Latency | None = None
    mailbox: _Mailbox | None = None
    tags: list[_Tag] = []
    account: _Account | None = None

    @field_validator("ca_file")
    @classmethod
    def _ca_usable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise _bad("must not be empty — use null for the system CA store")
        _v_nonempty_path(value)
        problem = _ca_problem(_resolve_path(_base_dir(info), value), value)
        if problem:
            raise _bad(f"{_show(value)} {problem}")
        return value


# A CA bundle is a few hundred KiB (the whole Mozilla store is about 220 KiB).
_MAX_CA_FILE: Final = 16 * 2**20
_PEM_CERT: Final = b"-----BEGIN CERTIFICATE-----"
_PEM_FIX: Final = "give the CA certificates as PEM (-----BEGIN CERTIFICATE----- blocks)"


def _ca_problem(path: Path, given: str) -> str | None:
    """What makes ``path`` (written ``given`` in the file) unusable as ``ca_file``, or
    ``None``.

    Checked when the file is loaded, so a wrong file is a configuration error naming it,
    not a TLS failure blamed on every server that uses it. The last step loads it the way
    the engine's TLS context will."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "does not exist (relative paths start at the directory of the targets file)"
    except (OSError, ValueError) as exc:
        return f"cannot be read: {getattr(exc, 'strerror', None) or exc} — {_PEM_FIX}"
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or a device would block or never end when read.
        return "is not a file — give a PEM file with the CA certificates"
    if info.st_size == 0:
        return f"is empty — {_PEM_FIX}"
    if info.st_size > _MAX_CA_FILE:
        return f"is {info.st_size / 2**20:.0f} MiB, too large for a CA bundle — {_PEM_FIX}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read: {exc.strerror or type(exc).__name__} — make it readable"
    if _PEM_CERT not in data:
        if data[:1] == b"\x30":  # an ASN.1 SEQUENCE: a DER certificate
            name = shlex.quote(given) if given.isprintable() else "FILE"
            return (
                f"is DER (binary), not PEM — convert it: openssl x509 -inform der -in {name} "
                f"-out {name}.pem"
            )
        if b"-----BEGIN " in data:
            return f"holds PEM blocks but no certificate (a key?) — {_PEM_FIX}"
        return f"is not a PEM file — {_PEM_FIX}"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", None)
        said = f" (OpenSSL: {why})" if isinstance(why, str) and why.isprintable() else ""
        name = shlex.quote(given) if given.isprintable() else "FILE"
        return (
            f"has a damaged certificate block{said} — check it with openssl x509 -in {name} -noout"
        )
    return None


def _v_cleanup(value: object) -> Cleanup:
    # YAML 1.1 reads a bare `off` as false: take it for what was meant.
    chosen = _choice("off" if value is False else value, CLEANUP_MODES)
    return next(mode for mode in CLEANUP_MODES if mode == chosen)


def _v_mail_address(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or any(c in value for c in '<> \r\n\t,"')
        or (not value.isascii() or not value.isprintable())
    ):
        raise _bad(f"{_show(value)} is not a plain mail address local@domain")
    return value


_MailAddress = Annotated[str, AfterValidator(_v_mail_address)]


class _RoundTrip(_Model):
    """A POP3 connection's ``round_trip:``: send one tagged message through the SMTP
    connection type ``via`` and wait for it in this mailbox (engine/roundtrip.py). Its
    defaults are read: a round trip is one block, not cascaded."""

    via: Annotated[str, AfterValidator(_v_id)]
    recipient: _MailAddress | None = None
    sender: _MailAddress | None = None
    warn: _Seconds = DEFAULTS.round_trip_warn
    crit: _Seconds = DEFAULTS.round_trip_crit
    timeout: _Seconds = DEFAULTS.round_trip_timeout
    cleanup: Annotated[Cleanup, BeforeValidator(_v_cleanup)] = "off"
    hmac_key_env: _EnvName | None = None
    hmac_key_file: _FileName | None = None

    @model_validator(mode="after")
    def _consistent(self) -> _RoundTrip:
        if self.warn >= self.crit:
            raise _bad(
                f"warn ({_num(self.warn)}) must be less than crit ({_num(self.crit)}) — "
                "warn is the smaller, earlier alarm"
            )
        if self.crit > self.timeout:
            raise _bad(
                f"crit ({_num(self.crit)}) must not be greater than timeout "
                f"({_num(self.timeout)}) — the round trip stops waiting at timeout"
            )
        if self.hmac_key_env is not None and self.hmac_key_file is not None:
            raise _bad("gives hmac_key_env and hmac_key_file — use exactly one")
        if self.cleanup != "off" and self.hmac_key_env is None and self.hmac_key_file is None:
            raise _bad(
                f"cleanup: {self.cleanup} needs hmac_key_env or hmac_key_file — only messages "
                "signed with a key only this monitor knows are ever deleted"
            )
        return self


class _Connection(_Settings):
    id: Annotated[str, AfterValidator(_v_id)] | None = None
    port: Annotated[int, AfterValidator(_v_port)] | None = None
    security: Annotated[Security, BeforeValidator(_v_security)]
    round_trip: _RoundTrip | None = None


def _v_one_or_list(value: object) -> object:
    # `depends_on: gw` reads as the list of one.
    return [value] if isinstance(value, str) else value


def _v_unique_ports(value: list[int]) -> list[int]:
    seen: set[int] = set()
    for port in value:
        if port in seen:
            raise _bad(f"lists port {port} twice — give each port once")
        seen.add(port)
    return value


_Port = Annotated[int, AfterValidator(_v_port)]


def _v_relay_check(value: str) -> str:
    problem = relay_recipient_problem(value)
    if problem:
        raise _bad(f"{_show(value)} {problem}")
    return value


def _v_ehlo_name(value: str) -> str:
    # RFC 5321 §4.1.1.1: a domain or an address literal; never anything with spaces.
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.IPv]{2,60}\]", value):
        raise _bad(f"{_show(value)} is not a domain name or an address literal like [192.0.2.1]")
    return value


# POP3 commands, not SASL: an SMTP server logs in with AUTH only.
_POP3_ONLY_AUTH: Final = frozenset(m for m, spec in MECHANISMS.items() if not spec.sasl)


class _SmtpConnection(_Settings):
    """A server's ``smtp:`` entry: the SMTP companion checks (engine/smtp.py). Its ``auth``
    is never inherited: an SMTP connection type logs in only when it says ``auth:`` itself
    (a port-25 MX takes no login; submission on 587 or 465 does)."""

    id: Annotated[str, AfterValidator(_v_id)] | None = None
    port: Annotated[int, AfterValidator(_v_port)] | None = None
    security: Annotated[Security, BeforeValidator(_v_security)]
    relay_check: Annotated[str, AfterValidator(_v_relay_check)] | None = None
    ehlo_name: Annotated[str, AfterValidator(_v_ehlo_name)] | None = None

    @field_validator("auth")
    @classmethod
    def _sasl_only(cls, value: str) -> str:
        if value in _POP3_ONLY_AUTH:
            raise _bad(
                f"'{value}' is a POP3 command, not a SASL mechanism — SMTP logs in with AUTH: "
                "use auto, plain, login, cram-md5, scram-sha-1 or scram-sha-256"
            )
        return value


def _v_nameserver(value: str) -> str:
    # "IP" or "IP:PORT" ("[v6]:PORT" for IPv6 with a port): the resolver coverage asks.
    host, port = value, ""
    if value.startswith("[") and "]:" in value:
        host, _, port = value[1:].partition("]:")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise _bad(
            f"{_show(value)} is not a name server address — give an IP, IP:PORT or "
            "[IPv6]:PORT (no name: it would need a resolver to find the resolver)"
        ) from None
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise _bad(f"{_show(value)} has a bad port — a port is between 1 and 65535")
    return value


class _Coverage(_Model):
    """A server's ``coverage:`` mapping (``coverage: true`` is this with every default):
    the domain whose SRV records and client autoconfig to compare with the targets file,
    the verdicts of unmonitored connection types, the resolver and extra ports to probe.
    Its defaults are read: coverage is one block of one server, not cascaded."""

    domain: Annotated[str, AfterValidator(_v_host)] | None = None
    unmonitored: Annotated[CoverageLevel, BeforeValidator(_v_coverage_level)] = (
        DEFAULTS.coverage_unmonitored
    )
    cleartext_unmonitored: Annotated[CoverageLevel, BeforeValidator(_v_coverage_level)] = (
        DEFAULTS.coverage_cleartext_unmonitored
    )
    nameserver: Annotated[str, AfterValidator(_v_nameserver)] | None = None
    ports: Annotated[list[_Port], AfterValidator(_v_unique_ports)] = []
    # The autoconfig server's port when not the standard 443/80 (a lab, a test).
    autoconfig_port: _Port | None = None


def _v_coverage(value: object) -> object:
    # `coverage: true` is the mapping with every default; false (or null) is off.
    if value is True:
        return {}
    if value is False or value is None:
        return None
    if isinstance(value, Mapping):
        return value
    raise _bad(
        f"{_show(value)} is not true, false or a mapping — write coverage: true, or "
        "coverage: {domain: example.com, unmonitored: warn}"
    )


class _Server(_Settings):
    name: Annotated[str, AfterValidator(_v_name)]
    host: Annotated[str, AfterValidator(_v_host)]
    address: Annotated[str, AfterValidator(_v_address)] | None = None
    # Other servers (by name) this one is reached through: a gateway, a resolver. When one
    # of them is down, this server's host check and connection types are skipped naming it.
    depends_on: Annotated[
        list[Annotated[str, AfterValidator(_v_name)]], BeforeValidator(_v_one_or_list)
    ] = []
    # The ports the host check tries (default: the distinct ports of the connection types,
    # POP3 and SMTP).
    tcp_ports: Annotated[list[_Port], AfterValidator(_v_unique_ports)] | None = None
    # Opt-in coverage tier (checks/coverage.py): true, false or a _Coverage mapping.
    coverage: Annotated[_Coverage | None, BeforeValidator(_v_coverage)] = None
    # tcp_ports and smtp before connections: the check of an empty connections: list reads them.
    smtp: list[_SmtpConnection] = []
    connections: list[_Connection] = []

    @field_validator("connections")
    @classmethod
    def _nonempty(cls, value: list[_Connection], info: ValidationInfo) -> list[_Connection]:
        if not value and not info.data.get("smtp") and info.data.get("tcp_ports") is None:
            raise _bad(
                "is empty — list at least one connection type (port, security, auth), or "
                "give tcp_ports: for a server that is only a dependency of others"
            )
        return value

    @model_validator(mode="after")
    def _some(self) -> _Server:
        if not self.connections and not self.smtp and self.tcp_ports is None:
            raise _bad(
                "has no connection types — list at least one under connections: (POP3: "
                "port, security, auth) or smtp: (SMTP: port, security), or give tcp_ports: "
                "for a server that is only a dependency of others"
            )
        return self


# ---------------------------------------------------------------------------------------
# notify: (notifications on state change)
# ---------------------------------------------------------------------------------------

# Words people use for a rule, mapped to the rule that covers them (hints only).
_RULE_HINTS: Final[Mapping[str, str]] = {
    "crit": "hard",
    "critical": "hard",
    "new": "hard",
    "worse": "hard",
    "problem": "hard",
    "ok": "recovered",
    "recovery": "recovered",
    "better": "warn",
    "warning": "warn",
    "settled": "flapping",
    "flap": "flapping",
}
_TITLE_MAX: Final = 60
_REPORT_URL_MAX: Final = 2000


def _v_rule(value: object) -> NotifyRule:
    if isinstance(value, str) and value in NOTIFY_RULES:
        return next(rule for rule in NOTIFY_RULES if rule == value)
    word = value.strip().lower() if isinstance(value, str) else ""
    hint = _RULE_HINTS.get(word)
    suggestion = f" — did you mean '{hint}'?" if hint else _suggest(word, NOTIFY_RULES)
    raise _bad(
        f"{_show(value)} is not a notification rule — rules are {', '.join(NOTIFY_RULES)}"
        f"{suggestion}"
    )


def _v_title(value: str) -> str:
    if not value.strip() or not value.isprintable() or len(value) > _TITLE_MAX:
        raise _bad(f"must be one line of 1 to {_TITLE_MAX} printable characters")
    return value


def _v_report_url(value: str) -> str:
    # Shown in every message: a link, never credentials (those would go to every receiver).
    if not re.fullmatch(r"https?://[^\s/@]+(/\S*)?", value) or len(value) > _REPORT_URL_MAX:
        raise _bad(
            "must be an http:// or https:// link without user:password@ (the link every "
            "message shows to the report)"
        )
    return value


def _v_ct_pattern(value: str) -> str:
    if not value or not value.isprintable() or len(value) > 128:
        raise _bad("must be a connection id or a shell-style pattern like 'mail1:*'")
    return value


_Rule = Annotated[NotifyRule, BeforeValidator(_v_rule)]


class _NotifyTarget(_Model):
    name: Annotated[str, AfterValidator(_v_name)] | None = None
    url_env: _EnvName | None = None
    url_file: _FileName | None = None
    on: list[_Rule] | None = None  # None: the section's on:
    tags: list[_Tag] = []
    connections: list[Annotated[str, AfterValidator(_v_ct_pattern)]] = []

    @model_validator(mode="after")
    def _one_reference(self) -> _NotifyTarget:
        given = [k for k in ("url_env", "url_file") if getattr(self, k) is not None]
        if len(given) != 1:
            said = f"gives {' and '.join(given)}" if given else "has no URL"
            raise _bad(
                f"{said} — give exactly one of url_env: VAR or url_file: PATH (an Apprise "
                "URL holds credentials, so it is never written in this file)"
            )
        return self


class _Notify(_Model):
    title: Annotated[str, AfterValidator(_v_title)] = DEFAULT_NOTIFY_TITLE
    report_url: Annotated[str, AfterValidator(_v_report_url)] | None = None
    timeout: _Seconds = DEFAULT_NOTIFY_TIMEOUT
    on: list[_Rule] = list(DEFAULT_NOTIFY_ON)
    targets: list[_NotifyTarget]

    @field_validator("targets")
    @classmethod
    def _nonempty(cls, value: list[_NotifyTarget]) -> list[_NotifyTarget]:
        if not value:
            raise _bad("is empty — list at least one target with url_env or url_file")
        return value


class _Flapping(_Model):
    """More than ``changes`` state changes in the last ``runs`` runs is flapping."""

    changes: Annotated[int, Field(ge=1, le=1000)] = DEFAULTS.flapping_changes
    runs: Annotated[int, Field(ge=2, le=1000)] = DEFAULTS.flapping_runs

    @model_validator(mode="after")
    def _order(self) -> _Flapping:
        if self.changes >= self.runs:
            raise _bad(
                f"changes ({self.changes}) must be less than runs ({self.runs}) — a run "
                "changes state at most once"
            )
        return self


class _History(_Model):
    """Top-level ``history:``: where the run history is kept and how states are judged."""

    path: _FileName | None = None
    retention_days: Annotated[int, Field(ge=1, le=36500)] = DEFAULTS.history_retention_days
    lock_timeout: _Seconds = DEFAULTS.history_lock_timeout
    flapping: _Flapping = _Flapping()


class _File(_Model):
    version: Annotated[int, BeforeValidator(_v_version)] = 1
    defaults: _Settings | None = None
    history: _History = _History()
    servers: list[_Server]
    notify: _Notify | None = None

    @field_validator("servers")
    @classmethod
    def _nonempty(cls, value: list[_Server]) -> list[_Server]:
        if not value:
            raise _bad("is empty — list at least one server with name, host and connections")
        return value
