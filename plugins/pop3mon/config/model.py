"""The public result types of loading a targets file, and the error type.

:class:`Targets` holds frozen :class:`ConnectionType` objects; each can build the engine's
:class:`ProbeSpec` and only then reads its secret reference (environment variable or
file), so a missing secret fails that connection type's auth tier, not the load.
:class:`ConfigError` carries one finished line per problem. The mechanism sets and
:data:`LATENCY_PHASES` are the vocabulary the schema and the cascade share.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

from ..engine.defaults import DEFAULTS, DriftPolicy
from ..engine.discovery import DiscoverySpec
from ..engine.hosts import HostSpec
from ..engine.mechanisms import MECHANISMS
from ..engine.result import ProbeSpec, RoundTripSpec
from ..engine.stages import (
    COVERAGE_ID_PREFIX,
    HOST_ID_PREFIX,
    LATENCY_PHASES,
    AddressFamily,
    Cleanup,
    CoverageLevel,
    Pacing,
    Protocol,
    Security,
)
from ..secrets import MAX_SECRET_BYTES, Secret, secret_problem

# Mechanisms that send an OAuth token rather than a password (or a digest of one). "auto"
# picks among the password mechanisms, so it needs a password reference.
TOKEN_MECHANISMS: Final = frozenset(m.name for m in MECHANISMS.values() if m.secret == "token")


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
        order: dict[str, int] = {name: i for i, name in enumerate(LATENCY_PHASES)}
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
class RoundTrip:
    """A POP3 connection type's opt-in mail round trip (``round_trip:``): the SMTP
    connection type ``via`` that submits the message, the envelope, the delivery-time
    thresholds and deadline in seconds, what cleanup may delete and the *reference*
    (``env:NAME``/``file:/abs/path``, "" for none) to the key that signs the tag."""

    via: str
    recipient: str
    sender: str
    warn: float
    crit: float
    timeout: float
    cleanup: Cleanup
    key_source: str
    line: int


@dataclass(frozen=True)
class ConnectionType:
    """One thing to probe: a server, a port, a security mode and an auth mechanism.

    Holds only configuration and the *reference* to a secret (``secret_source``), never a
    secret value. ``line`` is where the connection is defined in the targets file.
    Thresholds: ``latency`` maps a phase name (engine stages plus ``total``) to
    ``(warn, crit)`` seconds; ``mailbox_count``/``mailbox_size`` are ``(warn, crit)`` or
    ``None``; ``stat_min``/``stat_max`` bound the STAT message count (outside is CRIT);
    ``drift`` holds the drift checks' levels and the mailbox ratio.
    """

    id: str
    server: str
    host: str
    address: str | None
    address_family: AddressFamily
    port: int
    security: Security
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
    login_pacing: Pacing
    retries: int
    retry_backoff: float
    cert_warn_days: int
    cert_crit_days: int
    drift: DriftPolicy
    latency: LatencyThresholds
    mailbox_count: tuple[int, int] | None
    mailbox_size: tuple[int, int] | None
    stat_min: int | None
    stat_max: int | None
    line: int
    #: Runs in a row a CRIT must hold before it is hard (a history setting: not the probe's).
    confirm: int = DEFAULTS.confirm
    #: ``pop3`` (a ``connections:`` entry) or ``smtp`` (a server's ``smtp:`` entry); the
    #: SMTP relay-refusal recipient ("" = none) and EHLO name ("" = address literal).
    protocol: Protocol = "pop3"
    relay_check: str = ""
    ehlo_name: str = ""
    #: The opt-in mail round trip (POP3 only); None: not configured.
    round_trip: RoundTrip | None = None

    def resolve_secret(self, environ: Mapping[str, str] | None = None) -> tuple[Secret | None, str]:
        """Load the referenced secret now: ``(Secret, "")`` or ``(None, problem)``.

        Returns ``(None, "")`` when no secret is wanted (``auth: none``). Never raises and
        never blocks: whatever the reference or the value, a problem is a sentence naming
        the variable or file and what is wrong, never any content, and it fails only this
        connection type's auth checks. Every value passes :func:`~pop3mon.secrets.
        secret_problem`, the one rule, whichever mechanism will carry it.
        """
        if self.auth == "none" or not self.secret_source:
            return None, ""
        return read_reference(self.secret_source, self.secret_kind or "password", environ)

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
            security=self.security,
            auth=self.auth,
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
            address_family=self.address_family,
            collect_uidl=self.collect_uidl,
            login_pacing=self.login_pacing,
            retries=self.retries,
            retry_backoff=self.retry_backoff,
            protocol=self.protocol,
            relay_check=self.relay_check,
            ehlo_name=self.ehlo_name,
        )

    def with_round_trip(
        self,
        spec: ProbeSpec,
        via: ConnectionType,
        environ: Mapping[str, str] | None = None,
    ) -> ProbeSpec:
        """``spec`` (this connection type's) with its round trip: ``via``'s spec (its
        secret resolved now) and the HMAC key read now; an unreadable key is a
        ``key_problem`` sentence, never an exception or any of its content."""
        rt = self.round_trip
        if rt is None:
            return spec
        key: Secret | None = None
        problem = ""
        if rt.key_source:
            key, problem = read_reference(rt.key_source, "password", environ, what="HMAC key")
        return dataclasses.replace(
            spec,
            round_trip=RoundTripSpec(
                via=via.to_probe_spec(environ),
                recipient=rt.recipient,
                sender=rt.sender,
                warn=rt.warn,
                crit=rt.crit,
                timeout=rt.timeout,
                cleanup=rt.cleanup,
                hmac_key=key,
                key_problem=problem,
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data (for reports); contains no secret value."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.round_trip is not None:
            data["round_trip"] = dataclasses.asdict(self.round_trip)
        data["latency"] = {phase: list(pair) for phase, pair in self.latency.items()}
        data["tags"] = list(self.tags)
        data["drift"] = dataclasses.asdict(self.drift)
        for key in ("mailbox_count", "mailbox_size"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data


@dataclass(frozen=True)
class Host:
    """A server entry's host check: PING (when ``ping`` is on for the server) and TCP on
    ``ports`` (``tcp_ports:``, else the distinct ports of its connection types), probed once
    per run and shared by ``connections`` (their ids). ``depends_on`` names the servers it
    is reached through. Only servers where a host check says more than their connection
    types' own checks have one (see :func:`~pop3mon.config.cascade._hosts`)."""

    name: str
    host: str
    address: str | None
    address_family: AddressFamily
    ping: bool
    ping_timeout: float
    timeout: float
    ports: tuple[int, ...]
    depends_on: tuple[str, ...]
    connections: tuple[str, ...]
    tags: tuple[str, ...]
    line: int

    @property
    def id(self) -> str:
        """The host tests' parameter and its records' id: ``host:<name>``."""
        return HOST_ID_PREFIX + self.name

    def to_spec(self) -> HostSpec:
        """The engine's :class:`~pop3mon.engine.hosts.HostSpec`."""
        return HostSpec(
            name=self.name,
            host=self.host,
            address=self.address or "",
            address_family=self.address_family,
            ping=self.ping,
            ping_timeout=self.ping_timeout,
            timeout=self.timeout,
            ports=self.ports,
            depends_on=self.depends_on,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data (for reports)."""
        data = dataclasses.asdict(self)
        for key in ("ports", "depends_on", "connections", "tags"):
            data[key] = list(data[key])
        data["id"] = self.id
        return data


@dataclass(frozen=True)
class Monitored:
    """One connection type of the targets file as coverage compares it: where it connects
    (``host`` lower-case without a trailing dot, and the pinned ``address`` if any), its
    port, protocol, security and id."""

    host: str
    address: str | None
    port: int
    protocol: Protocol
    security: Security
    id: str


@dataclass(frozen=True)
class Coverage:
    """A server's opt-in coverage tier (``coverage:``): re-discover its connection types
    each run (its ``host``, the standard POP3 ports plus ``ports``, and with ``domain``
    what the domain's SRV records and client autoconfig publish) and compare them with
    ``monitored``, every connection type of the whole targets file. ``timeout`` is the
    one deadline of that discovery (the server's ``timeout:``)."""

    name: str
    host: str
    domain: str | None
    unmonitored: CoverageLevel
    cleartext_unmonitored: CoverageLevel
    nameserver: str | None
    ports: tuple[int, ...]
    autoconfig_port: int | None
    timeout: float
    ca_file: str | None
    monitored: tuple[Monitored, ...]
    tags: tuple[str, ...]
    line: int

    @property
    def _host(self) -> str:
        return self.host.lower().rstrip(".")

    @property
    def id(self) -> str:
        """The coverage tests' parameter and its records' id: ``server:<name>``."""
        return COVERAGE_ID_PREFIX + self.name

    def to_spec(self) -> DiscoverySpec:
        """The discovery engine's :class:`~pop3mon.engine.discovery.DiscoverySpec`."""
        return DiscoverySpec(
            domain=self.domain,
            hosts=(self.host,),
            ports=tuple(dict.fromkeys((*DEFAULTS.coverage_ports, *self.ports))),
            # A port the file monitors with implicit TLS is probed with TLS at once, not
            # after discovery's wait for a plaintext greeting that never comes.
            tls_ports=tuple(
                sorted(
                    {995}
                    | {
                        m.port
                        for m in self.monitored
                        if m.security == "tls" and m.protocol == "pop3" and m.host == self._host
                    }
                )
            ),
            nameserver=self.nameserver,
            autoconfig_port=self.autoconfig_port,
            timeout=self.timeout,
            ca_file=self.ca_file,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data (for reports; the monitored list is the file's own)."""
        data = dataclasses.asdict(self)
        del data["monitored"]
        data["ports"] = list(self.ports)
        data["tags"] = list(self.tags)
        data["id"] = self.id
        return data


@dataclass(frozen=True)
class HistorySettings:
    """The targets file's top-level ``history:`` (see :mod:`pop3mon.history`).

    ``path`` is absolute (a relative one starts at the targets file's directory), or
    ``None``: the command line, the ini file or the default (next to the reports) decides.
    """

    path: Path | None = None
    retention_days: int = DEFAULTS.history_retention_days
    lock_timeout: float = DEFAULTS.history_lock_timeout
    flapping_changes: int = DEFAULTS.flapping_changes
    flapping_runs: int = DEFAULTS.flapping_runs


@dataclass(frozen=True)
class Targets:
    """A loaded targets file: absolute ``path``, ``sha256`` of its bytes, the connection
    types sorted by id and the ``history:`` settings."""

    path: Path
    sha256: str
    connections: tuple[ConnectionType, ...]
    notify: NotifySettings | None = None  # None: no notify: section
    history: HistorySettings = HistorySettings()
    #: The host checks, in file order (servers whose host check says nothing more than
    #: their one connection type's checks have none).
    hosts: tuple[Host, ...] = ()
    #: The servers with the coverage tier on, in file order.
    coverage: tuple[Coverage, ...] = ()
    #: Every connection id of the file when this is one shard's part of it
    #: (:func:`~pop3mon.config.shard.select_shard`); () for the whole file.
    file_ids: tuple[str, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        """The connection ids in order."""
        return tuple(c.id for c in self.connections)

    @property
    def all_ids(self) -> tuple[str, ...]:
        """Every connection id of the file, also of a shard's part of it: what the shards
        of a run cover between them (``pop3mon merge`` checks that they do)."""
        return self.file_ids or self.ids

    def by_id(self, connection_id: str) -> ConnectionType:
        """The connection type with this id; ``KeyError`` if there is none."""
        for conn in self.connections:
            if conn.id == connection_id:
                return conn
        raise KeyError(connection_id)


# ---------------------------------------------------------------------------------------
# Notifications (the ``notify:`` section; read by :mod:`pop3mon.notify`)
# ---------------------------------------------------------------------------------------

#: Which state changes a notification target is told about (``on:``): ``hard`` a CRIT
#: that is confirmed (a new CRIT with ``confirm: 1``, or a soft CRIT that held), ``soft``
#: a CRIT not yet confirmed, ``recovered`` back to OK from CRIT, ``warn`` to or from WARN
#: (and CRIT → WARN), ``drift`` a drift check fired, ``flapping`` a connection type
#: started or stopped flapping. The mapping from the history's change kinds is
#: ``pop3mon.notify.rules``.
NotifyRule = Literal["hard", "recovered", "drift", "warn", "soft", "flapping"]
NOTIFY_RULES: Final[tuple[NotifyRule, ...]] = get_args(NotifyRule)
#: A new CRIT that is hard, a recovery, a drift: what an admin acts on; and flapping,
#: since a flapping connection type holds those (the run it settles in tells them).
DEFAULT_NOTIFY_ON: Final[tuple[NotifyRule, ...]] = ("hard", "recovered", "drift", "flapping")
#: Starts every notification title ("pop3mon: 2 problems on targets.yaml").
DEFAULT_NOTIFY_TITLE: Final = "pop3mon"
#: Seconds all the notifications of one run may take together; an endpoint that has not
#: answered by then is a warning and the run goes on.
DEFAULT_NOTIFY_TIMEOUT: Final = 20.0


@dataclass(frozen=True)
class NotifyTarget:
    """One place notifications go. ``url_source`` is ``env:NAME`` or ``file:/abs/path``:
    the Apprise URL holds credentials, so it is read only when a run sends
    (:meth:`resolve_url`), never at load time and never kept in the configuration."""

    name: str  # "" when the file gives none; messages then use scheme://host
    url_source: str
    on: frozenset[NotifyRule]
    tags: tuple[str, ...]  # only changes of connection types with one of these tags
    connections: tuple[str, ...]  # only these connection ids (shell-style patterns)
    line: int

    def resolve_url(self, environ: Mapping[str, str] | None = None) -> tuple[Secret | None, str]:
        """The URL now, as a :class:`Secret` (registered with the redactor), or ``(None,
        problem)`` under the same rules as a password reference."""
        return read_reference(self.url_source, "token", environ, what="notification URL")


@dataclass(frozen=True)
class NotifySettings:
    """The ``notify:`` section: where and when a run with state changes tells someone."""

    targets: tuple[NotifyTarget, ...]
    title: str = DEFAULT_NOTIFY_TITLE
    report_url: str = ""  # "" : messages name the local path of report.html
    timeout: float = DEFAULT_NOTIFY_TIMEOUT


# ---------------------------------------------------------------------------------------
# Secret files (read when a probe spec is built, never at load time)
# ---------------------------------------------------------------------------------------


def _shown(ref: str) -> str:
    """A variable name or path as it may be shown: controls and lone surrogates escaped."""
    if ref.isprintable():
        return ref
    return ref.encode("unicode_escape", "backslashreplace").decode("ascii")


_FILE_TYPES: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str:
    """Why a file of this mode cannot hold a secret ("" for a regular file)."""
    if stat.S_ISREG(mode):
        return ""
    name = next((name for test, name in _FILE_TYPES if test(mode)), "not a regular file")
    return f"is {name}, not a regular file"


def _read_secret_file(ref: str, what: str) -> tuple[str, str]:
    """``(text, "")`` or ``("", problem)``: the file's one line, read without blocking.

    Only a regular file (after following symlinks) is opened, so a FIFO, ``/dev/stdin``
    or a terminal never blocks the run before any deadline exists; the read is bounded by
    the largest secret plus a line ending.
    """
    largest = MAX_SECRET_BYTES.get(what, MAX_SECRET_BYTES["password"])
    limit = largest + 2  # and "\r\n"
    try:
        # stat() before open(): opening a FIFO for reading blocks until a writer comes.
        problem = _not_regular(os.stat(ref).st_mode)
        if problem:
            return "", problem
        fd = os.open(ref, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            # The path may have been replaced between stat() and open().
            problem = _not_regular(os.fstat(fd).st_mode)
            if problem:
                return "", problem
            raw = b""
            while len(raw) <= limit:
                chunk = os.read(fd, limit + 1 - len(raw))
                if not chunk:
                    break
                raw += chunk
        finally:
            os.close(fd)
    except FileNotFoundError:
        return "", "does not exist"
    except PermissionError:
        return "", "is not readable (permission denied)"
    except OSError as exc:
        return "", f"cannot be read: {exc.strerror or type(exc).__name__}"
    except ValueError:  # NUL in the path, or a lone surrogate the OS cannot encode
        return "", "is not a usable path (it contains a NUL or an unencodable character)"
    if len(raw) > limit:
        return "", f"is larger than {largest} bytes (a secret file holds one line)"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "", "is not UTF-8 text"
    # One line and an optional line ending (editors and `echo` add one); anything after it
    # is refused by secret_problem, so /etc/shadow behind a symlink is never sent whole.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        return "", "is empty"
    return text, ""


def read_reference(
    source: str,
    kind: str,
    environ: Mapping[str, str] | None = None,
    *,
    what: str = "",
) -> tuple[Secret | None, str]:
    """Read a secret reference (``env:NAME`` or ``file:/abs/path``) now: ``(Secret, "")``
    or ``(None, problem)``.

    The one way a referenced secret is read, whatever it is (a password, a token, a
    notification URL): never raises and never blocks; a problem is a sentence naming the
    variable or file and what is wrong, never any content; every value passes
    :func:`~pop3mon.secrets.secret_problem` for ``kind``. ``what`` names a file's content
    in the problem (default: ``kind``).
    """
    how, _, ref = source.partition(":")
    if how == "env":
        subject = f"environment variable {_shown(ref)}"
        env = os.environ if environ is None else environ
        try:
            value = env.get(ref)
        except ValueError:  # a name the OS cannot encode (lone surrogate)
            value = None
        if value is None:
            return None, f"{subject} is not set"
        if value == "":
            return None, f"{subject} is empty"
    else:
        subject = f"{what or kind} file {_shown(ref)}"
        value, problem = _read_secret_file(ref, kind)
        if problem:
            return None, f"{subject} {problem}"
    problem = secret_problem(value, kind)
    if problem:
        return None, f"{subject} is refused: it {problem}"
    return Secret(value, source=source), ""
