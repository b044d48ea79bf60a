"""Real Dovecot POP3 servers on 127.0.0.1 for self-tests, the demo and benchmarks.

:class:`DovecotLab` writes a private Dovecot configuration into a temporary directory and runs
one ``dovecot -F -c CONF`` master per certificate variant (``valid``, ``expired``,
``wrong_host`` ...), each with its own ``base_dir``/``state_dir``, log file and two listeners on
free ephemeral ports: ``pop3`` (plaintext + STLS) and ``pop3s`` (implicit TLS). One master per
variant because Dovecot can only pick a certificate by local IP or by SNI, and we want every
variant reachable on 127.0.0.1 with the SNI a real client sends (``localhost``). A master starts
in a few tens of milliseconds and all of them start in parallel, so this stays cheap.

Dovecot 2.3 behaviours this module works around (see DESIGN.md §4):

* ``auth_failure_delay = 0`` is not enough for a fast ``-ERR``: failed requests are queued and
  flushed by a fixed 500 ms timer, and every failure also feeds the per-IP auth penalty (anvil),
  which then delays the *next* login from 127.0.0.1 by 2-15 s, whoever makes it. A first passdb
  (``static``, ``nopassword``, ``result_success = continue-fail``) adds the ``nodelay`` extra
  field to every request before the real passwd-file passdb decides; Dovecot then answers
  failures at once and skips the penalty update. Pass ``fast_auth_failures=False`` to get
  Dovecot's stock timing.
* The daemons inherit the master's stdout/stderr and keep them open, so output goes to a log
  file, never to a pipe somebody would have to drain.
* Loopback clients count as "secured": plaintext USER/PASS is accepted without STLS no matter
  what ``ssl`` says. Tests of an "STLS required" refusal need the fault server, not Dovecot.
"""

from __future__ import annotations

import atexit
import base64
import collections
import grp
import hashlib
import hmac
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Final, Literal, Self

from .certs import VARIANTS, CertPair, LabCA, LabCerts, generate_lab_certs, issue_server_cert

__all__ = [
    "DEFAULT_MAILBOXES",
    "DEFAULT_USERS",
    "DovecotInstance",
    "DovecotLab",
    "LabError",
    "LabStartError",
    "LabUnavailable",
    "Listeners",
    "LoginRecord",
    "MailboxInfo",
    "PasswordScheme",
    "find_dovecot",
    "free_port",
    "free_ports",
]

HOST: Final = "127.0.0.1"
ListenerName = Literal["pop3", "pop3s"]
#: How the passwd-file stores passwords: ``PLAIN`` (every mechanism works, APOP and CRAM-MD5
#: included; Dovecot derives a freshly salted SCRAM key, PBKDF2, for every SCRAM login) or
#: ``SCRAM-SHA-256`` (what a production server offering SCRAM stores: salt, iteration count,
#: StoredKey and ServerKey, RFC 5802; SCRAM-SHA-256, PLAIN and LOGIN work, and a SCRAM login
#: costs the server no PBKDF2).
PasswordScheme = Literal["PLAIN", "SCRAM-SHA-256"]
#: RFC 7677's minimum and Dovecot's default.
SCRAM_ITERATIONS: Final = 4096

#: Users created in every lab: name -> password (plain text on purpose: APOP, CRAM-MD5 and
#: SCRAM need the clear secret on the server side).
DEFAULT_USERS: Final[Mapping[str, str]] = MappingProxyType(
    {"demo": "demo-password-1", "second": "second-password-2"}
)


def _stored_password(scheme: PasswordScheme, user: str, password: str) -> str:
    """The passwd-file's password field for ``password`` stored as ``scheme``.

    ``SCRAM-SHA-256`` is Dovecot's ``{SCRAM-SHA-256}iterations,salt,StoredKey,ServerKey``
    (base64, RFC 5802 section 3), as ``doveadm pw -s SCRAM-SHA-256`` writes it; the salt
    comes from the user name, so a restarted lab keeps the same credentials.
    """
    if scheme == "PLAIN":
        return f"{{PLAIN}}{password}"
    salt = hashlib.sha256(f"pop3mon-lab-salt:{user}".encode()).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    fields = [base64.b64encode(part).decode("ascii") for part in (salt, stored_key, server_key)]
    return f"{{SCRAM-SHA-256}}{SCRAM_ITERATIONS},{','.join(fields)}"


def _message(user: str, number: int, body_lines: int) -> bytes:
    body = "".join(f"Line {i} of lab message {number} for {user}.\r\n" for i in range(body_lines))
    return (
        "From: pop3mon lab <lab@localhost>\r\n"
        f"To: {user}@localhost\r\n"
        f"Subject: pop3mon lab message {number}\r\n"
        f"Message-ID: <lab-{user}-{number}@localhost>\r\n"
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        "\r\n"
        f"{body}"
    ).encode("ascii")


#: Messages seeded per user. CRLF line ends, so the size on disk equals the size STAT reports.
DEFAULT_MAILBOXES: Final[Mapping[str, tuple[bytes, ...]]] = MappingProxyType(
    {
        "demo": (_message("demo", 1, 1), _message("demo", 2, 5), _message("demo", 3, 20)),
        "second": (_message("second", 1, 2),),
    }
)

_ENV_BINARY: Final = "POP3MON_DOVECOT"
_FALLBACK_BINARIES: Final = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
# Unix socket paths are limited to 108 bytes; Dovecot's longest name under base_dir is ~25.
_MAX_BASE_DIR: Final = 70
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")
_LOGIN_RE: Final = re.compile(r"\bpop3-login: Info: Login: (?P<fields>.*)$")
_BIND_FAILED: Final = "Address already in use"
_START_ATTEMPTS: Final = 3


class LabError(RuntimeError):
    """Base class of lab failures."""


class LabUnavailable(LabError):
    """Dovecot (or something it needs) is not installed here; callers may fall back."""


class LabStartError(LabError):
    """Dovecot was found but did not come up; the message carries the log tail."""


@dataclass(frozen=True)
class Listeners:
    """TCP ports of one Dovecot instance, all on 127.0.0.1."""

    pop3: int
    pop3s: int

    def port(self, listener: ListenerName) -> int:
        """Port of ``listener`` (``"pop3"`` = plaintext/STLS, ``"pop3s"`` = implicit TLS)."""
        return self.pop3 if listener == "pop3" else self.pop3s


@dataclass(frozen=True)
class MailboxInfo:
    """What ``STAT`` answers for a seeded mailbox."""

    count: int
    size: int


@dataclass(frozen=True)
class LoginRecord:
    """One successful login as Dovecot logged it (``pop3-login: Info: Login: ...``)."""

    variant: str
    user: str
    method: str
    lport: int
    rport: int
    tls: bool
    session: str
    line: str


def find_dovecot(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate the ``dovecot`` master binary or raise :class:`LabUnavailable`.

    Order: ``explicit``, ``$POP3MON_DOVECOT``, ``$PATH``, then ``/usr/sbin`` and
    ``/usr/local/sbin`` (not on an unprivileged user's ``PATH`` on Debian).
    """
    candidates: list[str] = []
    if explicit is not None:
        candidates.append(os.fspath(explicit))
    elif os.environ.get(_ENV_BINARY):
        candidates.append(os.environ[_ENV_BINARY])
    else:
        found = shutil.which("dovecot")
        if found:
            candidates.append(found)
        candidates.extend(_FALLBACK_BINARIES)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise LabUnavailable(
        "Dovecot is not installed (looked for "
        + ", ".join(candidates)
        + f"); install dovecot-pop3d or set {_ENV_BINARY}"
    )


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Return ``count`` distinct TCP ports that were free on ``host`` a moment ago.

    The kernel picks them; all sockets are held open until every port is chosen so no port
    is handed out twice. There is an unavoidable window before Dovecot binds them;
    :class:`DovecotLab` retries with new ports when the bind fails.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = HOST) -> int:
    """Return one TCP port that was free on ``host`` a moment ago (see :func:`free_ports`)."""
    return free_ports(1, host)[0]


def _tail(path: Path, lines: int = 40, offset: int = 0) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:]) or "(log is empty)"


def _process_groups() -> dict[int, list[int]]:
    """Map pgid -> live (non-zombie) pids, read from /proc."""
    groups: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                stat_line = fh.read()
        except OSError:
            continue  # exited while we looked
        # The command name (field 2) may contain spaces and ')'; fields after the last ')'.
        rest = stat_line.rsplit(")", 1)[-1].split()
        if len(rest) > 2 and rest[0] not in ("Z", "X"):
            groups[int(rest[2])].append(int(entry.name))
    return groups


def _group_members(pgid: int) -> list[int]:
    if os.path.isdir("/proc"):
        return _process_groups().get(pgid, [])
    try:  # not Linux: no zombie filter, but still bounded by the caller's deadline
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    return [pgid]


def _world_traversable(path: Path) -> bool:
    """True when every directory from / down to ``path`` lets "others" pass (o+x)."""
    current = path.resolve()
    for directory in (current, *current.parents):
        try:
            if not directory.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _port_closed(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _check_name(kind: str, value: str) -> None:
    if not _NAME_RE.match(value):
        raise ValueError(f"{kind} {value!r} is not usable in a passwd-file (use [A-Za-z0-9._@+-])")


def _check_password(user: str, password: str) -> None:
    if not password or any(c in password for c in ":\r\n\t\0"):
        raise ValueError(f"password of {user!r} must be non-empty without ':' or controls")


@dataclass
class _Accounts:
    """Which system accounts the Dovecot processes and the mail files use."""

    internal_user: str
    internal_group: str
    login_user: str
    mail_uid: int
    mail_gid: int
    as_root: bool


def _accounts() -> _Accounts:
    if os.geteuid() != 0:
        # Unprivileged Dovecot: every process runs as us; no chroot, no privilege changes.
        me = pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(os.getegid()).gr_name
        return _Accounts(me.pw_name, group, me.pw_name, me.pw_uid, me.pw_gid, as_root=False)

    def first(*names: str) -> pwd.struct_passwd:
        for name in names:
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise LabUnavailable(f"none of the system users {', '.join(names)} exists")

    # Debian's package creates dovecot (internal) and dovenull (login). Mail files belong to
    # nobody: unprivileged, and neither of Dovecot's own service users.
    internal = first("dovecot", "nobody")
    login = first("dovenull", "nobody")
    mail = first("nobody", "dovecot")
    internal_group = grp.getgrgid(internal.pw_gid).gr_name
    return _Accounts(
        internal.pw_name, internal_group, login.pw_name, mail.pw_uid, mail.pw_gid, as_root=True
    )


@dataclass
class DovecotInstance:
    """One Dovecot master serving one certificate variant on its own two ports.

    ``variant`` is the instance's name: a certificate variant, or the name of an extra
    instance (``extra_instances`` of :class:`DovecotLab`), whose certificate variant is
    ``cert_variant``. ``cert`` (a re-issued certificate), ``tls`` and ``extra_config`` are
    what :meth:`DovecotLab.restart` changes.
    """

    variant: str
    directory: Path
    base_dir: Path
    config_path: Path
    log_path: Path
    ports: Listeners
    process: subprocess.Popen[bytes] | None = None
    _log_offset: int = 0
    _attempts: int = 0
    cert_variant: str = ""
    cert: CertPair | None = None
    tls: bool = True
    extra_config: str = ""

    @property
    def certificate(self) -> CertPair | None:
        """The certificate this instance serves next time it starts (None without TLS)."""
        return self.cert if self.tls else None

    @property
    def pid(self) -> int | None:
        """Pid of the master (also its process group id), or None when not started."""
        return self.process.pid if self.process else None

    def running(self) -> bool:
        """True while the master process is alive."""
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        """The whole log of this instance (all attempts), decoded leniently."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log written since the last start attempt."""
        return _tail(self.log_path, lines, self._log_offset)


class LabBase:
    """What every lab server (Dovecot, Courier) tells its users the same way: its
    certificates, work directory and accounts, and use as a context manager. Subclasses
    set ``users``, ``_certs`` and ``_workdir`` and implement :meth:`start` / :meth:`stop`."""

    users: Mapping[str, str]
    _certs: LabCerts | None
    _workdir: Path | None

    def start(self) -> Self:
        """Start the lab (idempotent)."""
        raise NotImplementedError

    def stop(self, timeout: float = 15.0) -> None:
        """Stop everything the lab started."""
        raise NotImplementedError

    @property
    def certs(self) -> LabCerts:
        """The certificate set in use (available after :meth:`start`)."""
        if self._certs is None:
            raise LabError(f"the {type(self).__name__} has not been started")
        return self._certs

    @property
    def ca_file(self) -> Path:
        """The CA file a client must trust to verify the lab's certificates."""
        return self.certs.ca_file

    @property
    def workdir(self) -> Path:
        """Directory holding configs, logs and the maildirs."""
        if self._workdir is None:
            raise LabError(f"the {type(self).__name__} has not been started")
        return self._workdir

    @property
    def demo_user(self) -> str:
        """The first user (``demo`` by default, three seeded messages)."""
        return next(iter(self.users))

    @property
    def demo_password(self) -> str:
        """Password of :attr:`demo_user`."""
        return self.users[self.demo_user]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class DovecotLab(LabBase):
    """Real Dovecot 2.3 POP3 servers on 127.0.0.1, one per certificate variant.

    Use as a context manager (or call :meth:`start` / :meth:`stop`)::

        with DovecotLab(certs, variants=("valid", "expired")) as lab:
            port = lab.port("pop3s")                 # implicit TLS, valid certificate
            bad = lab.port("pop3s", "expired")       # same server, expired certificate

    Every instance has the same users (``demo`` and ``second`` by default) and shares one maildir
    tree, so STAT answers :meth:`mailbox` everywhere. Logins are counted from the logs with
    :meth:`logins` / :meth:`login_count` / :meth:`wait_for_logins`.
    """

    host: Final[str] = HOST

    def __init__(
        self,
        certs: LabCerts | None = None,
        *,
        variants: Iterable[str] = ("valid",),
        users: Mapping[str, str] | None = None,
        mailboxes: Mapping[str, Sequence[bytes]] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        dovecot: str | os.PathLike[str] | None = None,
        fast_auth_failures: bool = True,
        startup_timeout: float = 20.0,
        extra_config: str = "",
        extra_instances: Mapping[str, str] | None = None,
        instance_config: Mapping[str, str] | None = None,
        password_scheme: PasswordScheme = "PLAIN",
    ) -> None:
        """Prepare (but do not start) a lab.

        ``certs``: certificate set; generated into the work directory when omitted.
        ``variants``: certificate variants to serve, one Dovecot each; ``valid`` is always
        included. ``users``/``mailboxes``: override :data:`DEFAULT_USERS` /
        :data:`DEFAULT_MAILBOXES`. ``workdir``: where configs, logs and mail live (a fresh
        ``/tmp/pop3mon-dovecot-*`` directory, removed by :meth:`stop`, when omitted; a given
        one is kept). If Dovecot's unprivileged users cannot reach ``workdir`` (pytest's 0700
        basetemp) or its path is too long for sockets, the passwd-file, maildirs and
        ``base_dir`` go to a companion ``/tmp/p3lab-*`` directory that :meth:`stop` removes.
        ``dovecot``: binary to run (see :func:`find_dovecot`). ``fast_auth_failures``: answer
        failed logins at once and without the per-IP penalty (see the module docstring).
        ``extra_config``: appended verbatim to every instance's configuration.
        ``extra_instances``: more instances, name -> certificate variant, for tests that change
        one server while the others keep serving (:meth:`restart`, :meth:`reissue_certificate`);
        a name must not be a certificate variant. They share the users and maildirs.
        ``instance_config``: instance name -> settings appended to that instance only (a
        listener on a fixed port, e.g. the demo's submission service on the ``valid`` one).
        ``password_scheme``: how the passwd-file stores the passwords (:data:`PasswordScheme`).
        Raises :class:`LabUnavailable` when Dovecot is not installed.
        """
        self.binary = find_dovecot(dovecot)
        wanted = ["valid", *variants]
        for name in wanted:
            if name not in VARIANTS:
                raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        self.variants: tuple[str, ...] = tuple(dict.fromkeys(wanted))
        extra = dict(extra_instances or {})
        for name, variant in extra.items():
            _check_name("instance name", name)
            if name in VARIANTS or variant not in VARIANTS:
                raise ValueError(
                    f"extra instance {name!r} -> {variant!r}: the name must not be a certificate "
                    f"variant and the variant must be one of {', '.join(VARIANTS)}"
                )
        self._extra_instances: Mapping[str, str] = MappingProxyType(extra)
        user_map = dict(DEFAULT_USERS if users is None else users)
        if not user_map:
            raise ValueError("a lab needs at least one user")
        for name, password in user_map.items():
            _check_name("user name", name)
            _check_password(name, password)
        self.users: Mapping[str, str] = MappingProxyType(user_map)
        boxes = DEFAULT_MAILBOXES if mailboxes is None else mailboxes
        self._mailboxes = {u: tuple(_crlf(m) for m in boxes.get(u, ())) for u in user_map}
        self.startup_timeout = startup_timeout
        self.startup_seconds: float | None = None
        self._own_workdir = workdir is None
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self._certs_arg = certs
        self._fast = fast_auth_failures
        self._extra = extra_config
        self.password_scheme: PasswordScheme = password_scheme
        self._instance_config: Mapping[str, str] = MappingProxyType(dict(instance_config or {}))
        unknown = set(self._instance_config) - {*self.variants, *extra}
        if unknown:
            raise ValueError(f"instance_config for unknown instances: {', '.join(sorted(unknown))}")
        self._instances: dict[str, DovecotInstance] = {}
        self._lock = threading.Lock()
        self._started = False
        self._workdir: Path | None = None
        self._shared_root: Path | None = None
        self._certs: LabCerts | None = certs
        self._accounts: _Accounts  # set by _prepare()
        self._users_file: Path

    # ------------------------------------------------------------------ facts
    @property
    def hostname(self) -> str:
        """The name the valid certificate is issued for (``localhost``); use it as SNI."""
        return self._certs.hostname if self._certs else "localhost"

    @property
    def second_user(self) -> str:
        """The second user (``second`` by default); equals :attr:`demo_user` if there is one."""
        names = list(self.users)
        return names[1] if len(names) > 1 else names[0]

    @property
    def instance_names(self) -> tuple[str, ...]:
        """Every instance: the certificate variants, then the extra instances."""
        return (*self.variants, *self._extra_instances)

    def instance(self, variant: str = "valid") -> DovecotInstance:
        """The Dovecot instance serving certificate ``variant``."""
        try:
            return self._instances[variant]
        except KeyError:
            raise LabError(
                f"variant {variant!r} is not running in this lab; running: "
                + ", ".join(self._instances)
            ) from None

    def ports(self, variant: str = "valid") -> Listeners:
        """Both ports of the instance serving ``variant``."""
        return self.instance(variant).ports

    def port(self, listener: ListenerName = "pop3", variant: str = "valid") -> int:
        """One port: ``pop3`` (plaintext, offers STLS) or ``pop3s`` (implicit TLS)."""
        return self.ports(variant).port(listener)

    def mailbox(self, user: str | None = None) -> MailboxInfo:
        """What STAT answers for ``user`` (default :attr:`demo_user`)."""
        messages = self._mailboxes[user or self.demo_user]
        return MailboxInfo(count=len(messages), size=sum(len(m) for m in messages))

    def maildir(self, user: str | None = None) -> Path:
        """The maildir of ``user`` (default :attr:`demo_user`), shared by every instance:
        where a Postfix lab delivers (``PostfixLab(deliver=...)``)."""
        if self._shared_root is None:
            raise LabError("the lab is not started")
        return self._shared_root / "home" / (user or self.demo_user) / "Maildir"

    @property
    def mail_owner(self) -> tuple[int, int]:
        """``(uid, gid)`` the maildir files belong to."""
        return self._accounts.mail_uid, self._accounts.mail_gid

    def add_message(self, data: bytes, user: str | None = None) -> Path:
        """Put one message into ``user``'s maildir ``new/`` as a delivery agent would (the
        self-tests seed look-alike messages this way)."""
        maildir = self.maildir(user)
        message = _crlf(data)
        name = f"{time.time_ns()}.M{os.getpid()}P{threading.get_ident() % 100000}.lab"
        tmp = maildir / "tmp" / name
        tmp.write_bytes(message)
        if self._accounts.as_root:
            os.chown(tmp, *self.mail_owner)
        final = maildir / "new" / name
        os.replace(tmp, final)
        return final

    def pids(self) -> list[int]:
        """Live processes started by this lab (masters and all their children)."""
        pids: list[int] = []
        groups = _process_groups() if os.path.isdir("/proc") else None
        for inst in self._instances.values():
            if inst.pid is None:
                continue
            pids += groups.get(inst.pid, []) if groups is not None else _group_members(inst.pid)
        return sorted(pids)

    # ------------------------------------------------------------------ logs
    def log_text(self, variant: str | None = None) -> str:
        """Log of one instance, or of all instances concatenated when ``variant`` is None."""
        if variant is not None:
            return self.instance(variant).log_text()
        return "".join(inst.log_text() for inst in self._instances.values())

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of every instance's log, labelled; for error messages."""
        parts = [f"--- {v} ({i.log_path}) ---\n{i.log_tail(lines)}" for v, i in self._items()]
        return "\n".join(parts)

    def logins(self, user: str | None = None, port: int | None = None) -> list[LoginRecord]:
        """Successful logins logged so far, optionally only those of ``user`` / local ``port``."""
        records: list[LoginRecord] = []
        for variant, inst in self._items():
            for line in inst.log_text().splitlines():
                record = _parse_login(variant, line)
                if record is None:
                    continue
                if user is not None and record.user != user:
                    continue
                if port is not None and record.lport != port:
                    continue
                records.append(record)
        return records

    @property
    def passwd_file(self) -> Path:
        """The passwd-file (passdb and userdb) the instances read; exists once started."""
        if not self._started:
            raise LabError(f"the {type(self).__name__} has not been started")
        return self._users_file

    def login_count(self, user: str | None = None, port: int | None = None) -> int:
        """Number of successful logins logged so far (filtered like :meth:`logins`)."""
        return len(self.logins(user, port))

    def login_counts(self) -> collections.Counter[tuple[str, int]]:
        """Successful logins per ``(user, local port)``."""
        return collections.Counter((r.user, r.lport) for r in self.logins())

    def wait_for_logins(
        self,
        expected: int,
        *,
        user: str | None = None,
        port: int | None = None,
        timeout: float = 5.0,
    ) -> int:
        """Wait until at least ``expected`` matching logins are logged; return the count.

        The client sees ``+OK`` a moment before Dovecot's log process writes the line, so
        counting right after a login races; this polls (bounded) instead. Returns the last
        count when ``timeout`` passes, so the caller's assertion shows the real number.
        """
        deadline = time.monotonic() + timeout
        while True:
            count = self.login_count(user, port)
            if count >= expected or time.monotonic() >= deadline:
                return count
            time.sleep(0.02)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Write the configuration, start every instance and wait until all answer.

        Raises :class:`LabStartError` (with the log tail) when an instance exits or does not
        answer within ``startup_timeout``; whatever was started is stopped again first.
        """
        with self._lock:
            if self._started:
                return self
            began = time.monotonic()
            try:
                self._prepare()
                for inst in self._instances.values():
                    self._launch(inst)
                # Registered before waiting, so an interrupted start is still cleaned up.
                atexit.register(self.stop)
                self._started = True
                self._wait_ready(began + self.startup_timeout)
            except BaseException:
                self._started = True
                self._stop_locked(remove_workdir=False)
                raise
            self.startup_seconds = time.monotonic() - began
            return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every process this lab started and wait until its ports are closed.

        Sends SIGTERM to each master (Dovecot then stops its children), waits, and SIGKILLs
        whatever is left in the masters' process groups. Only those groups are touched.
        Idempotent. Removes the work directory if the lab created it.
        """
        with self._lock:
            self._stop_locked(remove_workdir=self._own_workdir, timeout=timeout)

    # ------------------------------------------------------------------ incidents
    # What changes on a real server between two monitoring runs: an account's password, the
    # certificate of one listener, TLS withdrawn, a service going down and coming back. Each
    # touches one instance (or one account) and leaves the rest of the lab serving.

    def set_password(self, user: str, password: str) -> None:
        """Change ``user``'s password in the passwd-file, as an admin's ``doveadm pw`` edit.

        No restart: Dovecot's passwd-file driver re-reads the file when its mtime (in whole
        seconds) or size differs, checking at most once per second of its clock. So the new
        file replaces the old one atomically, its mtime is moved on by a second when it would
        otherwise be equal (a same-length password written within the same second), and this
        returns only once the clock has reached the next whole second (up to 1 s): every
        login after that is checked against the new password, and one with the old password
        is refused (``-ERR [AUTH]``).
        """
        with self._lock:
            if user not in self.users:
                raise ValueError(f"no user {user!r} in this lab; users: {', '.join(self.users)}")
            _check_password(user, password)
            users = dict(self.users)
            users[user] = password
            self.users = MappingProxyType(users)
            if self._started:
                self._write_users_file()
                time.sleep(1.0 - time.time() % 1.0 + 0.01)

    def stop_instance(self, name: str, timeout: float = 15.0) -> None:
        """Stop one instance (its ports close: "the service is down"); the others keep serving.

        :meth:`start_instance` brings it back on the same ports. Idempotent.
        """
        with self._lock:
            inst = self.instance(name)
            if inst.running():
                assert inst.process is not None
                inst.process.send_signal(signal.SIGTERM)
            survivors = self._reap_groups([inst], time.monotonic() + timeout)
            self._wait_closed([inst], time.monotonic() + 5.0)
            if survivors:
                raise LabError(f"Dovecot processes survived SIGKILL: {survivors}")

    def start_instance(self, name: str) -> DovecotInstance:
        """(Re)start one stopped instance with its current settings; wait until it answers.

        It listens on the ports it had unless another process took one meanwhile: then it
        moves to new ones, like at start-up, so read :meth:`port` again afterwards.
        Raises :class:`LabStartError` like :meth:`start`.
        """
        with self._lock:
            if not self._started:
                raise LabError("the lab has not been started")
            inst = self.instance(name)
            if inst.running():
                return inst
            inst._attempts = 0
            self._launch(inst)
            self._wait_ready(time.monotonic() + self.startup_timeout, [inst])
            return inst

    def restart(
        self,
        name: str,
        *,
        tls: bool | None = None,
        extra_config: str | None = None,
    ) -> DovecotInstance:
        """Restart one instance, optionally with TLS switched on/off or other extra settings.

        ``tls=False`` is an admin turning TLS off (``ssl = no``): the plaintext listener stops
        offering STLS and the implicit-TLS listener is not opened, so its port refuses
        connections. ``extra_config`` replaces this instance's own extra settings (appended
        after the lab's). ``None`` keeps the current value. See :meth:`start_instance` for the
        ports.
        """
        inst = self.instance(name)
        self.stop_instance(name)
        if tls is not None:
            inst.tls = tls
        if extra_config is not None:
            inst.extra_config = extra_config
        return self.start_instance(name)

    def reissue_certificate(self, name: str, ca: LabCA) -> CertPair:
        """Serve a new certificate on instance ``name``, issued by ``ca``, and restart it.

        The new certificate has a fresh key and the same names as the lab's valid one
        (:attr:`hostname`, ``127.0.0.1``), so a client that trusts ``ca`` still verifies it:
        only the issuer (and key, serial, fingerprint) changed, as when a certificate is
        re-issued from another CA. Returns the new files (under the instance's directory).
        """
        inst = self.instance(name)
        number = sum(1 for _ in inst.directory.glob("reissued-*.crt")) + 1
        pair = issue_server_cert(ca, inst.directory, f"reissued-{number}", (self.hostname, HOST))
        self.stop_instance(name)
        inst.cert = pair
        self.start_instance(name)
        return pair

    # ------------------------------------------------------------------ internals
    def _items(self) -> Iterator[tuple[str, DovecotInstance]]:
        return iter(list(self._instances.items()))

    def _prepare(self) -> None:
        if self._workdir_arg is not None:
            workdir = self._workdir_arg
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="pop3mon-dovecot-"))
        self._workdir = workdir
        self._certs = self._certs_arg
        self._instances = {}
        accounts = _accounts()
        os.chmod(workdir, 0o755)
        if self._certs is None:
            self._certs = generate_lab_certs(workdir / "certs")
        # Configs, logs and certificates are only touched by Dovecot's root processes and can
        # live anywhere. The passwd-file (read by auth as "dovecot"), the maildirs (mail
        # processes as "nobody") and base_dir (login as "dovenull") must be reachable by those
        # users, and base_dir must be short enough for unix socket paths. pytest's basetemp
        # is 0700 and long, so such a workdir gets a companion directory under /tmp.
        if (not accounts.as_root or _world_traversable(workdir)) and (
            len(str(workdir)) + 25 <= _MAX_BASE_DIR
        ):
            self._shared_root = workdir
        else:
            self._shared_root = Path(tempfile.mkdtemp(prefix="p3lab-"))
            os.chmod(self._shared_root, 0o755)
        shared = self._shared_root
        self._accounts = accounts
        self._users_file = shared / "users"
        for name in self.users:
            self._seed_maildir(shared / "home" / name, self._mailboxes[name], accounts)
        self._write_users_file()
        names = self.instance_names
        ports = iter(free_ports(2 * len(names)))
        for name in names:
            directory = workdir / name
            directory.mkdir(exist_ok=True)
            cert_variant = self._extra_instances.get(name, name)
            inst = DovecotInstance(
                variant=name,
                directory=directory,
                base_dir=shared / f"run-{name}",
                config_path=directory / "dovecot.conf",
                log_path=directory / "dovecot.log",
                ports=Listeners(next(ports), next(ports)),
                cert_variant=cert_variant,
                cert=self.certs.variant(cert_variant),
                extra_config=self._instance_config.get(name, ""),
            )
            self._instances[name] = inst

    def _write_users_file(self) -> None:
        acc = self._accounts
        lines = []
        for name, password in self.users.items():
            home = self._users_file.parent / "home" / name
            # name:password:uid:gid:gecos:home:shell:extra - also serves as the userdb.
            stored = _stored_password(self.password_scheme, name, password)
            lines.append(f"{name}:{stored}:{acc.mail_uid}:{acc.mail_gid}::{home}::\n")
        path = self._users_file
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        # Read by the auth process, which runs as the unprivileged internal user.
        os.chmod(tmp, 0o644)
        try:
            old = path.stat().st_mtime_ns
        except FileNotFoundError:
            old = None
        if old is not None and tmp.stat().st_mtime_ns // 10**9 == old // 10**9:
            # Dovecot compares whole-second mtimes (and sizes): make the change visible.
            bumped = (old // 10**9 + 1) * 10**9
            os.utime(tmp, ns=(bumped, bumped))
        os.replace(tmp, path)

    @staticmethod
    def _seed_maildir(home: Path, messages: Sequence[bytes], accounts: _Accounts) -> None:
        maildir = home / "Maildir"
        if maildir.exists():
            shutil.rmtree(maildir)  # a reused workdir must not keep old messages or indexes
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        base = 1_700_000_000
        for number, message in enumerate(messages, start=1):
            # S= and W= give Dovecot the physical and virtual (CRLF) size without reading.
            name = f"{base + number}.M{number}P1.pop3mon-lab,S={len(message)},W={len(message)}:2,"
            (maildir / "cur" / name).write_bytes(message)
        if accounts.as_root:
            for path in [home, *home.rglob("*")]:
                os.chown(path, accounts.mail_uid, accounts.mail_gid)

    def _config(self, inst: DovecotInstance) -> str:
        acc = self._accounts
        instance_name = f"pop3mon-{inst.variant}-{os.getpid()}"
        parts = [
            f"# pop3mon lab instance {inst.variant!r}; generated, do not edit",
            f"instance_name = {instance_name}",
            f"base_dir = {inst.base_dir}",
            f"state_dir = {inst.directory / 'state'}",
            f"log_path = {inst.log_path}",
            "protocols = pop3",
            f"listen = {HOST}",
            f"default_internal_user = {acc.internal_user}",
            f"default_login_user = {acc.login_user}",
            f"default_internal_group = {acc.internal_group}",
            f"first_valid_uid = {min(acc.mail_uid, 500)}",
            f"first_valid_gid = {min(acc.mail_gid, 500)}",
            "auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256 apop",
            "auth_verbose = yes",
            "verbose_proctitle = yes",
            # Loopback is "secured" for Dovecot anyway; say it explicitly for non-loopback use.
            "disable_plaintext_auth = no",
            # lport makes logins countable per listener (and so per variant).
            (
                "login_log_format_elements = user=<%u> method=%m rip=%r lip=%l lport=%{lport} "
                "rport=%{rport} mpid=%e %c session=<%{session}>"
            ),
            "mail_location = maildir:~/Maildir",
        ]
        pair = inst.certificate
        if pair is not None:
            parts += ["ssl = yes", f"ssl_cert = <{pair.cert}", f"ssl_key = <{pair.key}"]
        else:
            # No STLS in CAPA; an implicit-TLS listener would be a config error, so none.
            parts.append("ssl = no")
        parts += [
            "protocol pop3 {",
            "  mail_max_userip_connections = 2000",
            "}",
            # One login process serves every client ("high-performance" mode): no fork per
            # connection, and it is up before the first client arrives.
            "service pop3-login {",
            "  service_count = 0",
            "  process_min_avail = 1",
            "  client_limit = 2000",
            f"  inet_listener pop3 {{\n    port = {inst.ports.pop3}\n  }}",
        ]
        if pair is not None:
            parts.append(
                f"  inet_listener pop3s {{\n    port = {inst.ports.pop3s}\n    ssl = yes\n  }}"
            )
        if not acc.as_root:
            parts.append("  chroot =")  # chroot needs root
        parts += [
            "}",
            "service pop3 {",
            "  process_limit = 2000",
            "}",
            "service auth {",
            "  client_limit = 5000",
            "}",
            "service anvil {",
            "  client_limit = 5000",
        ]
        if not acc.as_root:
            parts.append("  chroot =")
        parts.append("}")
        if self._fast:
            parts += [
                "auth_failure_delay = 0",
                # Accept anything, add nodelay, then fail over to the real passdb; the extra
                # fields of a successful passdb survive a later failure (see module doc).
                "passdb {",
                "  driver = static",
                "  args = nopassword=y nodelay=y",
                "  result_success = continue-fail",
                "}",
            ]
        parts += [
            "passdb {",
            "  driver = passwd-file",
            f"  args = {self._users_file}",
            "}",
            "userdb {",
            "  driver = passwd-file",
            f"  args = {self._users_file}",
            "}",
            self._extra,
            inst.extra_config,
            "",
        ]
        return "\n".join(parts)

    def _launch(self, inst: DovecotInstance) -> None:
        if inst.base_dir.exists():
            shutil.rmtree(inst.base_dir)  # no stale master.pid / sockets from an old attempt
        inst.config_path.write_text(self._config(inst), encoding="utf-8")
        inst._attempts += 1
        with inst.log_path.open("ab") as log:
            inst._log_offset = log.tell()
            # A file, not a pipe: Dovecot's daemons keep the inherited descriptors open.
            # A new session makes the master a process group leader; its children stay in
            # that group, which is what stop() cleans up.
            inst.process = subprocess.Popen(
                [str(self.binary), "-F", "-c", str(inst.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=inst.directory,
                start_new_session=True,
                close_fds=True,
            )

    def _wait_ready(
        self, deadline: float, instances: Iterable[DovecotInstance] | None = None
    ) -> None:
        chosen = self._instances.values() if instances is None else instances
        pending = {inst.variant: inst for inst in chosen}
        while pending:
            for variant, inst in list(pending.items()):
                if inst.process is not None and inst.process.poll() is not None:
                    self._relaunch_or_fail(inst)
                    continue
                wait = max(0.05, min(1.0, deadline - time.monotonic()))
                if _answers(inst.ports, timeout=wait, tls=inst.tls):
                    del pending[variant]
            if not pending:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(pending)
                tails = "\n".join(f"--- {v} ---\n{i.log_tail()}" for v, i in pending.items())
                raise LabStartError(
                    f"Dovecot ({self.binary}) did not answer on 127.0.0.1 within "
                    f"{self.startup_timeout:.0f} s for variant(s) {names}.\n{tails}"
                )
            time.sleep(0.01)

    def _relaunch_or_fail(self, inst: DovecotInstance) -> None:
        assert inst.process is not None
        tail = inst.log_tail()
        if _BIND_FAILED in tail and inst._attempts < _START_ATTEMPTS:
            # Another process (an xdist sibling?) took a port between free_ports() and bind.
            self._reap_groups([inst], time.monotonic() + 5.0)
            inst.ports = Listeners(*free_ports(2))
            self._launch(inst)
            return
        raise LabStartError(
            f"Dovecot ({self.binary}) for variant {inst.variant!r} exited with status "
            f"{inst.process.returncode} during start-up (config {inst.config_path}).\n"
            f"Log tail ({inst.log_path}):\n{tail}"
        )

    @staticmethod
    def _reap_groups(instances: Iterable[DovecotInstance], deadline: float) -> list[int]:
        """Wait for the (already signalled) masters, then end what is left of their groups.

        Returns the pids that survived even SIGKILL (normally none).
        """
        pgids: list[int] = []
        for inst in instances:
            proc = inst.process
            if proc is None:
                continue
            pgids.append(proc.pid)
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5.0)
        # The master does not wait for everything: a pop3 session process outlives it while
        # its client stays connected, and log/stats wait for their last writer. Give them a
        # moment, then end them; they are all in the masters' process groups, and only there.
        steps: tuple[tuple[signal.Signals | None, float], ...] = (
            (None, 0.2),
            (signal.SIGTERM, 3.0),
            (signal.SIGKILL, 2.0),
        )
        for sig, grace in steps:
            left = [g for g in pgids if _group_members(g)]
            if not left:
                return []
            if sig is not None:
                for pgid in left:
                    _signal_group(pgid, sig)
            until = time.monotonic() + grace
            while any(_group_members(g) for g in left) and time.monotonic() < until:
                time.sleep(0.02)
        return [pid for g in pgids for pid in _group_members(g)]

    def _stop_locked(self, remove_workdir: bool, timeout: float = 15.0) -> None:
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        # Signal all masters first so they shut down in parallel (each takes about 1 s).
        for inst in self._instances.values():
            if inst.running():
                assert inst.process is not None
                inst.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        survivors = self._reap_groups(self._instances.values(), deadline)
        self._wait_closed(self._instances.values(), time.monotonic() + 5.0)
        if self._shared_root is not None and self._shared_root != self._workdir:
            shutil.rmtree(self._shared_root, ignore_errors=True)
            self._shared_root = None
        if remove_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        if survivors:
            raise LabError(f"Dovecot processes survived SIGKILL: {survivors}")

    @staticmethod
    def _wait_closed(instances: Iterable[DovecotInstance], deadline: float) -> None:
        for inst in instances:
            for port in (inst.ports.pop3, inst.ports.pop3s):
                while not _port_closed(port) and time.monotonic() < deadline:
                    time.sleep(0.02)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _answers(ports: Listeners, timeout: float, tls: bool = True) -> bool:
    """True when both listeners send a POP3 greeting (pop3s after an unverified handshake).

    ``tls=False``: the instance runs without TLS and has no pop3s listener.
    """
    try:
        with socket.create_connection((HOST, ports.pop3), timeout=timeout) as sock:
            if not sock.recv(512).startswith(b"+OK"):
                return False
        if not tls:
            return True
        # Only readiness is checked here, so no verification: the variant may be broken.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection((HOST, ports.pop3s), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls_sock,
        ):
            return tls_sock.recv(512).startswith(b"+OK")
    except (OSError, ssl.SSLError):
        return False


def _crlf(message: bytes) -> bytes:
    data = re.sub(rb"\r?\n", b"\r\n", message)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _parse_login(variant: str, line: str) -> LoginRecord | None:
    match = _LOGIN_RE.search(line)
    if match is None:
        return None
    values: dict[str, str] = {}
    flags: set[str] = set()
    for element in match.group("fields").split(", "):
        key, sep, value = element.partition("=")
        if sep:
            values[key] = value[1:-1] if value.startswith("<") and value.endswith(">") else value
        else:
            flags.add(element)
    try:
        lport, rport = int(values.get("lport", "")), int(values.get("rport", ""))
    except ValueError:
        return None
    return LoginRecord(
        variant=variant,
        user=values.get("user", ""),
        method=values.get("method", ""),
        lport=lport,
        rport=rport,
        tls="TLS" in flags,
        session=values.get("session", ""),
        line=line,
    )
