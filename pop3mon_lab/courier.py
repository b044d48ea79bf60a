"""A real Courier POP3 server on 127.0.0.1 for self-tests: the server that offers CRAM-SHA1,
CRAM-SHA256 and answers ``-ERR TLS required to log in.``

:class:`CourierLab` runs Debian 12's Courier 1.0.16 (``couriertcpd`` → ``courierpop3login`` →
``courierpop3d``, authentication through ``authdaemond`` and a ``userdb``) from a private
configuration in a temporary directory, on two free ephemeral ports:

``pop3``              plaintext with STLS; logins allowed before TLS.
``pop3_tls_required`` plaintext with STLS and ``POP3_TLS_REQUIRED=1``: every login before STLS
                      is refused with ``-ERR TLS required to log in.``

Courier reads ``/etc/courier/authdaemonrc`` and ``/etc/courier/userdb.dat`` and talks to
authdaemond over ``/run/courier/...`` -- paths compiled into its libraries. So the lab runs
everything in a private mount namespace (``unshare --mount``, root only) where the lab's
directories are bind-mounted over ``/etc/courier`` and ``/run``: nothing outside the lab sees
them, no system-wide service runs, and the system's own Courier files stay untouched.

Debian's ``courier-pop`` and ``dovecot-pop3d`` conflict (both provide ``pop3-server``), so
the self-tests install ``courier-base`` (couriertcpd, couriertls, authdaemond, userdb tools)
as a package and take ``courierpop3login``/``courierpop3d`` from the ``courier-pop`` package
unpacked into a directory (``ci/selftest`` does it: ``apt-get download courier-pop`` +
``dpkg-deb -x`` into ``/var/cache/pop3mon/courier-pop``); ``$POP3MON_COURIER_ROOT`` names
another directory. An installed courier-pop (root ``/``) works too.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, Self

from .certs import LabCerts, generate_lab_certs
from .dovecot import (
    HOST,
    LabBase,
    LabError,
    LabStartError,
    LabUnavailable,
    _world_traversable,
    free_ports,
)

__all__ = [
    "COURIER_MECHANISMS",
    "DEFAULT_USERS",
    "CourierLab",
    "CourierTools",
    "find_courier",
]

CourierListener = Literal["pop3", "pop3_tls_required"]

#: Users of every Courier lab: name -> password.
DEFAULT_USERS: Final[Mapping[str, str]] = MappingProxyType({"demo": "courier-password-1"})

#: SASL mechanisms the lab offers, before and after STLS (Courier's own full list).
COURIER_MECHANISMS: Final[tuple[str, ...]] = (
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "CRAM-SHA1",
    "CRAM-SHA256",
)

_ENV_ROOT: Final = "POP3MON_COURIER_ROOT"
# Where ci/selftest unpacks the courier-pop package: outside the repository (its absolute
# symlinks dangle, and copies of the source tree must not carry it), and not under a 0700
# home: courierpop3d is started after the login dropped to the mail user.
_CACHE_ROOT: Final = Path("/var/cache/pop3mon/courier-pop")
_POP3LOGIN: Final = "usr/lib/courier/courier/courierpop3login"
_POP3D: Final = "usr/lib/courier/courier/courierpop3d"
_SYSTEM_TOOLS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "couriertcpd": "/usr/sbin/couriertcpd",
        "couriertls": "/usr/bin/couriertls",
        "authdaemond": "/usr/lib/courier/courier-authlib/authdaemond",
        "makeuserdb": "/usr/sbin/makeuserdb",
        "userdbpw": "/usr/sbin/userdbpw",
    }
)
# Mail files belong to "nobody": courierpop3d drops to the uid the userdb names.
_MAIL_UID: Final = 65534
_MAIL_GID: Final = 65534


@dataclass(frozen=True)
class CourierTools:
    """Paths of the Courier programs the lab runs."""

    pop3login: Path
    pop3d: Path
    couriertcpd: Path
    couriertls: Path
    authdaemond: Path
    makeuserdb: Path
    userdbpw: Path
    unshare: Path


def _candidate_roots(explicit: str | os.PathLike[str] | None) -> list[Path]:
    if explicit is not None:
        return [Path(explicit)]
    if os.environ.get(_ENV_ROOT):
        return [Path(os.environ[_ENV_ROOT])]
    return [Path("/"), _CACHE_ROOT]


def find_courier(root: str | os.PathLike[str] | None = None) -> CourierTools:
    """Locate the Courier programs or raise :class:`LabUnavailable` saying what is missing.

    ``root``: directory holding the unpacked ``courier-pop`` package (default:
    ``$POP3MON_COURIER_ROOT``, else ``/`` and then ``/var/cache/pop3mon/courier-pop``).
    The lab also needs root (a mount namespace) and ``unshare`` from util-linux.
    """
    if os.geteuid() != 0:
        raise LabUnavailable("the Courier lab needs root (it runs Courier in a mount namespace)")
    roots = _candidate_roots(root)
    login = next((r / _POP3LOGIN for r in roots if os.access(r / _POP3LOGIN, os.X_OK)), None)
    if login is None:
        where = ", ".join(str(r / _POP3LOGIN) for r in roots)
        raise LabUnavailable(
            f"Courier's POP3 server is not available (looked for {where}); install courier-pop "
            f"or unpack it (apt-get download courier-pop; dpkg-deb -x ...) and set {_ENV_ROOT}"
        )
    if not _world_traversable(login.parent):
        raise LabUnavailable(
            f"{login.parent} is not reachable by other users; courierpop3d runs as the mail "
            "user after a login: unpack courier-pop where every directory is o+x"
        )
    found: dict[str, Path] = {}
    for name, path in _SYSTEM_TOOLS.items():
        if not os.access(path, os.X_OK):
            raise LabUnavailable(f"{path} is missing; install courier-base (it brings {name})")
        found[name] = Path(path)
    unshare = shutil.which("unshare")
    if unshare is None:
        raise LabUnavailable("unshare (util-linux) is not installed")
    return CourierTools(
        pop3login=login,
        pop3d=login.parent / "courierpop3d",
        unshare=Path(unshare),
        **found,
    )


def _userdbpw(tool: Path, option: str, password: str) -> str:
    """One userdb password field, made by Courier's own ``userdbpw`` (the HMAC forms are
    its precomputed inner/outer hash states, not something to recompute here)."""
    done = subprocess.run(
        [str(tool), option],
        input=f"{password}\n{password}\n".encode(),
        capture_output=True,
        timeout=10,
        check=False,
    )
    value = done.stdout.decode("ascii", "replace").strip()
    if done.returncode != 0 or not value:
        raise LabStartError(f"userdbpw {option} failed: {done.stderr.decode(errors='replace')}")
    return value


class CourierLab(LabBase):
    """Real Courier POP3 on 127.0.0.1 (see the module docstring). Use as a context manager::

    with CourierLab(certs) as lab:
        port = lab.port("pop3")                       # CRAM-SHA1/CRAM-SHA256 offered
        strict = lab.port("pop3_tls_required")        # "-ERR TLS required to log in."
    """

    host: Final[str] = HOST

    def __init__(
        self,
        certs: LabCerts | None = None,
        *,
        users: Mapping[str, str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        courier_root: str | os.PathLike[str] | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        """Prepare (not start) a lab; raises :class:`LabUnavailable` when Courier is missing.

        ``workdir`` must be reachable by ``nobody`` (the mail files are read as that user);
        a fresh ``/tmp/pop3mon-courier-*`` directory, removed by :meth:`stop`, by default.
        """
        self.tools = find_courier(courier_root)
        self.users: Mapping[str, str] = MappingProxyType(dict(users or DEFAULT_USERS))
        for name, password in self.users.items():
            if not name.isalnum() or not password or any(c in password for c in "|\r\n\0"):
                raise ValueError(
                    f"user {name!r}: alphanumeric name, password without | or controls"
                )
        self.startup_timeout = startup_timeout
        self._certs_arg = certs
        self._certs: LabCerts | None = certs
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ports: dict[CourierListener, int] = {}
        self._started = False

    # ------------------------------------------------------------------ facts
    @property
    def hostname(self) -> str:
        """The name the certificate is issued for (``localhost``); use it as SNI."""
        return self.certs.hostname

    def port(self, listener: CourierListener = "pop3") -> int:
        """Port of ``listener`` on 127.0.0.1."""
        if not self._started:
            raise LabError("the Courier lab has not been started")
        return self._ports[listener]

    def log_text(self) -> str:
        """Everything Courier wrote to its log (stderr of all its processes)."""
        try:
            return (self.workdir / "courier.log").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def pids(self) -> list[int]:
        """Live processes of this lab: everything in the session it was started in."""
        if self._process is None:
            return []
        return _session_members(self._process.pid)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> Self:
        """Write the configuration, start Courier and wait until both ports greet."""
        if self._started:
            return self
        try:
            self._prepare()
            self._launch()
            self._started = True
            atexit.register(self.stop)
            self._wait_ready(time.monotonic() + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """End every process of the lab (only those: its own session) and remove a work
        directory the lab created. Idempotent."""
        proc, self._process = self._process, None
        if self._started:
            atexit.unregister(self.stop)
        self._started = False
        if proc is not None:
            _end_session(proc, timeout)
        if self._workdir is not None and self._workdir_arg is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # ------------------------------------------------------------------ internals
    def _prepare(self) -> None:
        if self._workdir_arg is not None:
            workdir = self._workdir_arg
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="pop3mon-courier-"))
        self._workdir = workdir
        os.chmod(workdir, 0o755)
        if self._certs is None:
            self._certs = generate_lab_certs(workdir / "certs")
        etc, run = workdir / "etc", workdir / "run"
        for directory in (etc, run / "courier" / "authdaemon"):
            directory.mkdir(parents=True, exist_ok=True)
        # Debian 12's libcourierauth connects to ".../autthdaemon/socket" (sic) while
        # authdaemond listens under authdaemonvar; one directory under both names.
        alias = run / "courier" / "autthdaemon"
        if not alias.exists():
            alias.symlink_to("authdaemon")
        # couriertls wants the key and the certificate in one PEM file, and reads it after
        # courierpop3login dropped root: readable by all (a throwaway lab key).
        pair = self.certs.valid
        pem = etc / "pop3d.pem"
        pem.write_bytes(Path(pair.key).read_bytes() + Path(pair.cert).read_bytes())
        os.chmod(pem, 0o644)
        (etc / "authdaemonrc").write_text(
            'authmodulelist="authuserdb"\ndaemons=2\nauthdaemonvar=/run/courier/authdaemon\n'
            'DEBUG_LOGIN=0\nDEFAULTOPTIONS=""\nLOGGEROPTS=""\n',
            encoding="ascii",
        )
        lines = []
        for name, password in self.users.items():
            home = workdir / "home" / name
            for sub in ("cur", "new", "tmp"):
                (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
            for path in [workdir / "home", home, *home.rglob("*")]:
                os.chown(path, _MAIL_UID, _MAIL_GID)
            fields = {
                "uid": str(_MAIL_UID),
                "gid": str(_MAIL_GID),
                "home": str(home),
                "mail": str(home / "Maildir"),
                "systempw": _userdbpw(self.tools.userdbpw, "-md5", password),
                "hmac-md5pw": _userdbpw(self.tools.userdbpw, "-hmac-md5", password),
                "hmac-sha1pw": _userdbpw(self.tools.userdbpw, "-hmac-sha1", password),
                "hmac-sha256pw": _userdbpw(self.tools.userdbpw, "-hmac-sha256", password),
            }
            lines.append(name + "\t" + "|".join(f"{k}={v}" for k, v in fields.items()) + "\n")
        userdb = etc / "userdb"
        userdb.write_text("".join(lines), encoding="ascii")
        os.chmod(userdb, 0o600)
        ports = free_ports(2)
        self._ports = {"pop3": ports[0], "pop3_tls_required": ports[1]}

    def _script(self) -> str:
        tools, workdir = self.tools, self.workdir
        q = shlex.quote
        mechs = " ".join(COURIER_MECHANISMS)

        def tcpd(port: int, tls_required: bool) -> str:
            env = {
                "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                "POP3AUTH": mechs,
                "POP3AUTH_TLS": mechs,
                "POP3_STARTTLS": "YES",
                "POP3_TLS_REQUIRED": "1" if tls_required else "0",
                "COURIERTLS": str(tools.couriertls),
                "TLS_CERTFILE": "/etc/courier/pop3d.pem",
                "TLS_VERIFYPEER": "NONE",
                "MAILDIRPATH": "Maildir",
            }
            assignments = " ".join(f"{k}={q(v)}" for k, v in env.items())
            return (
                f"env -i {assignments} {q(str(tools.couriertcpd))} -address={HOST} "
                f"-nodnslookup -noidentlookup -maxprocs=40 -maxperip=40 {port} "
                f"{q(str(tools.pop3login))} {q(str(tools.pop3d))} Maildir"
            )

        return "\n".join(
            [
                "set -e",
                # The namespace is private (unshare --propagation private): these mounts are
                # seen by this script and its children only.
                f"mount --bind {q(str(workdir / 'etc'))} /etc/courier",
                f"mount --bind {q(str(workdir / 'run'))} /run",
                f"{q(str(tools.makeuserdb))}",
                "cd /",
                f"env -i PATH=/usr/bin:/bin {q(str(tools.authdaemond))} &",
                f"{tcpd(self._ports['pop3_tls_required'], True)} &",
                f"exec {tcpd(self._ports['pop3'], False)}",
                "",
            ]
        )

    def _launch(self) -> None:
        script = self.workdir / "run.sh"
        script.write_text(self._script(), encoding="utf-8")
        if not Path("/etc/courier").is_dir():
            raise LabUnavailable("/etc/courier does not exist; install courier-base")
        with (self.workdir / "courier.log").open("ab") as log:
            # A file, not a pipe (the daemons keep it open); a new session: stop() ends
            # exactly the processes of this session.
            unshare = [str(self.tools.unshare), "--mount", "--propagation", "private", "--"]
            self._process = subprocess.Popen(
                [*unshare, "/bin/sh", str(script)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                close_fds=True,
            )

    def _wait_ready(self, deadline: float) -> None:
        pending = set(self._ports.values())
        while pending:
            if self._process is None or self._process.poll() is not None:
                code = self._process.returncode if self._process else None
                raise LabStartError(
                    f"Courier exited with status {code} during start-up.\n{self.log_text()[-3000:]}"
                )
            for port in list(pending):
                if _greets(port):
                    pending.discard(port)
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise LabStartError(
                    f"Courier did not greet on 127.0.0.1 port(s) {sorted(pending)} within "
                    f"{self.startup_timeout:.0f} s.\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.05)


def _greets(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            return sock.recv(512).startswith(b"+OK")
    except OSError:
        return False


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    members: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                rest = fh.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, session ...
        if len(rest) > 3 and rest[0] not in ("Z", "X") and int(rest[3]) == sid:
            members.append(int(entry.name))
    return members


def _end_session(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL, every process of the session ``proc`` leads."""
    sid = proc.pid
    for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid in _session_members(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        until = time.monotonic() + grace
        while _session_members(sid) and time.monotonic() < until:
            try:
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        if not _session_members(sid):
            break
    try:
        proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        pass
