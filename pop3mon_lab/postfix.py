"""A real Postfix on 127.0.0.1 for the SMTP self-tests, and Dovecot's submission service.

:class:`PostfixLab` writes a ``main.cf``/``master.cf`` into a temporary directory and runs
``postfix -c DIR start``: a port-25-like ``smtpd`` offering STARTTLS and a port-465-like
``smtpd`` in wrapper (implicit TLS) mode, on ephemeral loopback ports. Nothing of the
system's Postfix is used or changed: its own queue and data directories, no chroot, and the
Debian service stays off. Loopback is deliberately *not* in ``mynetworks``, so the lab
refuses to relay for the probe as a well-run MX refuses strangers.

Postfix's master must be started by root (``mail_owner = postfix`` drops privileges), so
without root or without Postfix the lab raises :class:`LabUnavailable` and tests skip.

:func:`submission_config` is the Dovecot configuration that adds a submission (port-587
-like) listener to a :class:`~.dovecot.DovecotLab`: STARTTLS and AUTH against the lab's
passdb, relaying to a Postfix lab (or to nothing: a probe never sends mail).

Postfix prints its errors to stderr only when stderr is a terminal; everything else goes to
``maillog_file`` (``postlogd``), whose tail a start failure quotes.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, Self

from .certs import CertPair, LabCerts, generate_lab_certs
from .dovecot import HOST, LabBase, LabStartError, LabUnavailable, free_ports

__all__ = [
    "SMTP_HOSTNAME",
    "SUBMISSION_BINARY",
    "PostfixLab",
    "SmtpListener",
    "find_postfix",
    "find_submission",
    "submission_config",
]

#: What the lab's Postfix calls itself (greeting, EHLO).
SMTP_HOSTNAME: Final = "mx.pop3mon.test"
SmtpListener = Literal["smtp", "smtps"]
#: Dovecot's submission service binary (Debian package dovecot-submissiond).
SUBMISSION_BINARY: Final = "/usr/lib/dovecot/submission"

# The services a Postfix that accepts no mail still needs; every one without chroot.
_MASTER_SERVICES: Final = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

#: Postfix's delivery agent into maildirs, for a lab that delivers (``deliver=``).
_VIRTUAL_SERVICE: Final = "virtual   unix  -       n       n       -       -       virtual\n"


def find_postfix() -> Path:
    """The ``postfix`` command, or :class:`LabUnavailable` saying what is missing."""
    found = shutil.which("postfix") or (
        "/usr/sbin/postfix" if os.access("/usr/sbin/postfix", os.X_OK) else None
    )
    if found is None:
        raise LabUnavailable("Postfix is not installed (Debian package: postfix)")
    if os.geteuid() != 0:
        raise LabUnavailable("the Postfix lab needs root: its master starts as root")
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        raise LabUnavailable("Postfix's 'postfix' account does not exist") from None
    return Path(found)


def find_submission() -> Path:
    """Dovecot's submission service, or :class:`LabUnavailable` saying what is missing."""
    if not os.path.exists(SUBMISSION_BINARY):
        raise LabUnavailable(
            "Dovecot's submission service is not installed (Debian package: dovecot-submissiond)"
        )
    return Path(SUBMISSION_BINARY)


class PostfixLab(LabBase):
    """One Postfix instance with an STARTTLS ``smtpd`` and an implicit-TLS ``smtpd``.

    Use as a context manager (or :meth:`start` / :meth:`stop`)::

        with PostfixLab(certs) as lab:
            lab.port("smtp")    # 220, EHLO, STARTTLS offered
            lab.port("smtps")   # TLS first (wrapper mode)

    ``cert`` picks the certificate variant both listeners present (``valid`` by default).
    """

    host: Final[str] = HOST

    def __init__(
        self,
        certs: LabCerts | None = None,
        *,
        cert: str = "valid",
        workdir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 20.0,
        deliver: Mapping[str, Path] | None = None,
        mail_owner: tuple[int, int] | None = None,
        smtp_port: int | None = None,
        smtps_cert: str | None = None,
    ) -> None:
        """``deliver`` maps addresses to maildirs this Postfix delivers into (its
        ``virtual`` agent, as ``mail_owner`` uid/gid): the mail round trip's path into a
        Dovecot lab's mailbox (:meth:`~.dovecot.DovecotLab.maildir`). Without it the lab
        delivers nothing. ``smtp_port``: the STARTTLS listener's port, when a Dovecot
        submission lab that relays to it must know it first (default: a free one).
        ``smtps_cert``: another certificate variant for the implicit-TLS listener alone (the
        demo's broken 465-style listener serves ``expired``); default: ``cert``."""
        self._smtp_port = smtp_port
        self.binary = find_postfix()
        self._deliver = dict(deliver or {})
        self._mail_owner = mail_owner
        self.users = MappingProxyType({})
        self._certs = certs
        self._cert_variant = cert
        self._smtps_variant = smtps_cert
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._own_workdir = workdir is None
        self.startup_timeout = startup_timeout
        self._ports: dict[SmtpListener, int] = {}
        self._started = False

    # ------------------------------------------------------------------ facts
    @property
    def hostname(self) -> str:
        """The name the certificates are issued for (connect to :attr:`host`, verify this)."""
        return self.certs.hostname

    def port(self, listener: SmtpListener = "smtp") -> int:
        """TCP port of ``listener`` on 127.0.0.1."""
        return self._ports[listener]

    @property
    def config_dir(self) -> Path:
        """The directory holding the generated ``main.cf`` and ``master.cf``."""
        return self.workdir / "conf"

    def log_text(self) -> str:
        """Postfix's mail log so far."""
        try:
            return (self.workdir / "maillog").read_text("utf-8", "replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ life cycle
    def start(self) -> Self:
        """Write the configuration, start Postfix and wait until both listeners greet."""
        if self._started:
            return self
        if self._workdir_arg is not None:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
            self._workdir = self._workdir_arg
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="pop3mon-postfix-"))
        workdir = self._workdir
        # The postfix account walks to its queue and data directories.
        os.chmod(workdir, 0o755)
        if self._certs is None:
            self._certs = generate_lab_certs(workdir / "certs")
        smtp, smtps = free_ports(2)
        if self._smtp_port is not None:
            smtp = self._smtp_port
        self._ports = {"smtp": smtp, "smtps": smtps}
        conf = self.config_dir
        conf.mkdir(exist_ok=True)
        (workdir / "queue").mkdir(exist_ok=True)
        data = workdir / "data"
        data.mkdir(exist_ok=True)
        account = pwd.getpwnam("postfix")
        os.chown(data, account.pw_uid, account.pw_gid)
        (conf / "main.cf").write_text(
            self._main_cf(self.certs.variant(self._cert_variant)), "utf-8"
        )
        (conf / "master.cf").write_text(self._master_cf(), "utf-8")
        self._started = True
        try:
            self._postfix("start")
            self._wait_ready(time.monotonic() + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop Postfix (``postfix stop``, then the master's pid by force) and remove a
        temporary work directory."""
        if not self._started:
            return
        self._started = False
        pid = self._master_pid()
        try:
            self._postfix("stop", check=False)
        except (OSError, subprocess.SubprocessError):
            pass
        deadline = time.monotonic() + timeout
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid and _alive(pid):
            os.kill(pid, 9)
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    # ------------------------------------------------------------------ internals
    def _postfix(self, action: str, *, check: bool = True) -> None:
        run = subprocess.run(
            [str(self.binary), "-c", str(self.config_dir), action],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=self.startup_timeout,
            check=False,
        )
        if check and run.returncode != 0:
            raise LabStartError(
                f"postfix {action} failed with status {run.returncode} "
                f"(config {self.config_dir}).\nLog tail:\n{_tail(self.log_text())}"
            )

    def _master_pid(self) -> int:
        try:
            return int((self.workdir / "queue" / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return 0

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if _greets(self.port("smtp"), tls=False) and _greets(self.port("smtps"), tls=True):
                return
            time.sleep(0.05)
        raise LabStartError(
            f"Postfix did not greet on 127.0.0.1 ports {self.port('smtp')}/"
            f"{self.port('smtps')} within {self.startup_timeout:.0f} s.\n"
            f"Log tail:\n{_tail(self.log_text())}"
        )

    def _main_cf(self, pair: CertPair) -> str:
        workdir = self.workdir
        return "\n".join(
            [
                "# pop3mon lab; generated, do not edit",
                "compatibility_level = 3.6",
                f"queue_directory = {workdir / 'queue'}",
                f"data_directory = {workdir / 'data'}",
                "mail_owner = postfix",
                f"inet_interfaces = {HOST}",
                "inet_protocols = ipv4",
                f"myhostname = {SMTP_HOSTNAME}",
                "mydestination = $myhostname, localhost",
                # TEST-NET-1: nobody, so loopback clients are strangers who may not relay.
                "mynetworks = 192.0.2.1/32",
                "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, "
                "reject_unauth_destination",
                f"smtpd_tls_cert_file = {pair.cert}",
                f"smtpd_tls_key_file = {pair.key}",
                "smtpd_tls_security_level = may",
                f"maillog_file = {workdir / 'maillog'}",
                f"maillog_file_prefixes = {workdir}",
                # Nothing is ever delivered: no aliases, no local delivery, no DNS.
                "alias_maps =",
                "alias_database =",
                "local_recipient_maps =",
                "default_transport = error:the pop3mon lab delivers nothing",
                "relay_transport = error:the pop3mon lab delivers nothing",
                "disable_dns_lookups = yes",
                "smtp_dns_support_level = disabled",
                "biff = no",
                "smtputf8_enable = no",
                *self._virtual_cf(),
                "",
            ]
        )

    def _virtual_cf(self) -> list[str]:
        if not self._deliver:
            return []
        uid, gid = self._mail_owner or (65534, 65534)
        domains = sorted({address.rpartition("@")[2] for address in self._deliver})
        maps = ", ".join(f"{a}={p}/" for a, p in sorted(self._deliver.items()))
        return [
            # Straight into the maildirs Dovecot serves: no LMTP, no local(8).
            f"virtual_mailbox_domains = {' '.join(domains)}",
            "virtual_mailbox_base = /",
            f"virtual_mailbox_maps = inline:{{ {maps} }}",
            f"virtual_uid_maps = static:{uid}",
            f"virtual_gid_maps = static:{gid}",
            "virtual_minimum_uid = 1",
            "virtual_transport = virtual",
        ]

    def _master_cf(self) -> str:
        smtp, smtps = self.port("smtp"), self.port("smtps")
        own = ""
        if self._smtps_variant is not None and self._smtps_variant != self._cert_variant:
            pair = self.certs.variant(self._smtps_variant)
            own = f" -o smtpd_tls_cert_file={pair.cert} -o smtpd_tls_key_file={pair.key}"
        return (
            f"{HOST}:{smtp} inet n - n - - smtpd\n"
            f"{HOST}:{smtps} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes{own}\n"
            + _MASTER_SERVICES
            + (
                "virtual   unix  -       n       n       -       -       virtual\n"
                if self._deliver
                else ""
            )
        )


def submission_config(port: int, relay_port: int | None = None) -> str:
    """Dovecot settings that add a submission listener on 127.0.0.1 ``port``: STARTTLS
    (with the lab's certificate) and AUTH against the lab's passdb. ``relay_port``: a
    Postfix lab's port to relay to (none given: a closed port; pop3mon never sends mail)."""
    relay = relay_port if relay_port is not None else 9  # discard: nothing listens there
    return "\n".join(
        [
            "protocols = pop3 submission",
            f"hostname = {SMTP_HOSTNAME}",
            f"submission_relay_host = {HOST}",
            f"submission_relay_port = {relay}",
            "submission_relay_trusted = no",
            "service submission-login {",
            f"  inet_listener submission {{\n    port = {port}\n  }}",
            "}",
            "",
        ]
    )


def _greets(port: int, *, tls: bool) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as raw:
            if not tls:
                return raw.recv(512).startswith(b"220")
            # Readiness only: no verification (the variant may be broken on purpose).
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
                return sock.recv(512).startswith(b"220")
    except (OSError, ssl.SSLError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
