"""The built-in demo: a lab of POP3 servers on 127.0.0.1, a targets file, two monitoring runs
with an incident between them.

Run it with ``./ci/demo`` (which prepares ``.venv`` and Dovecot first) or directly::

    python -m pop3mon_lab.demo [--reports DIR] [--backend auto|dovecot|faultserver]
                               [--once] [--serve] [--verbose] [-- PYTEST ARGS]

What it does:

1. Generates a private CA and certificates (:mod:`.certs`), a second CA, and starts the lab:
   real Dovecot (:class:`.dovecot.DovecotLab`) with one master per certificate variant
   (``valid``, ``expired``, ``wrong_host``) plus three for the incident, listening on free
   ports of 127.0.0.1 only. With Dovecot, also the mail lab where Postfix and Dovecot's
   submission service are installed (else it says so and leaves the SMTP part out): the
   ``valid`` Dovecot offers submission (STARTTLS + AUTH) and relays to a Postfix
   (:class:`.postfix.PostfixLab`) whose STARTTLS listener is the demo's MX and whose
   implicit-TLS listener serves the expired certificate; Postfix delivers the round trip's
   message straight into the demo account's maildir. Where Dovecot is not installed (or
   does not start) it says so and uses the project's reference server
   (:class:`.faultserver.FaultServer`, ``healthy``), without the SMTP part.
2. Writes ``DIR/demo-targets.yaml`` (see :data:`DEMO_CONNECTIONS`): three healthy connection
   types (implicit TLS, STLS with SCRAM-SHA-256, plaintext with APOP), four broken on purpose
   (expired certificate, wrong host name, closed port, wrong password), with the mail lab
   four more (:data:`MAIL_CONNECTIONS`: a healthy MX whose relay check must be refused, a
   healthy submission listener, an implicit-TLS SMTP listener with the expired certificate,
   and a POP3 connection type with a mail round trip through that submission listener,
   cleanup ``own-probe-messages``), and four the incident will change (``incident-*``).
   Passwords and the round trip's HMAC key are random per demo (or taken from the
   environment when set there) and reach pytest through environment variables
   (``POP3MON_DEMO_PASSWORD``, ``POP3MON_DEMO_INCIDENT_PASSWORD``,
   ``POP3MON_DEMO_HMAC_KEY``); the wrong password is read from a file (``password_file``).
   None is in the YAML.
3. Run 1: ``ci/run-monitor --targets=DIR/demo-targets.yaml --reports=DIR/run1``, the same
   entry point scheduled runs use (pytest's output: ``DIR/run1/demo-pytest.log``).
4. The incident, done to the running lab as it happens to real servers: ``incident-cert``'s
   certificate is re-issued by the second CA (which the demo's ``ca_file`` also trusts, so
   it still verifies: only the issuer changed), ``incident-password``'s account gets a new
   password on the server, ``incident-stls``'s server is restarted without TLS (no STLS any
   more), and ``incident-recovers``'s server, down during run 1, comes back.
5. Run 2 with reports in ``DIR`` (the ones to open; run 1's stay in ``DIR/run1``). Both runs
   share the history ``DIR/history.sqlite`` when this pop3mon has one (``--history``), which
   the demo starts afresh, so run 2 is compared with run 1.
6. Reads the verdicts back from each run's ``junit.xml`` (and ``results.json``), prints a
   one-screen summary, run 1 beside run 2, checks them against :data:`DEMO_CONNECTIONS`'
   expectations, and stops everything it started, also on Ctrl-C, SIGTERM or an error.

``--once`` makes one run of the seven original connection types (and the mail lab's four)
without the incident, with reports in ``DIR``, for quick use. The incident and the mail lab
need Dovecot: with the reference server both runs see the same lab, and the demo says so.

Exit status:

* 0 - every run behaved as the demo expects: every healthy connection type has no CRIT/ERROR
  and logged in; every broken one failed with CRIT in the check it is broken for, and nothing
  before that check failed; the incident changed what it should. (pytest itself exits 1
  here, because broken servers fail checks.)
* 1 - some verdict differs from that expectation (the summary says which): a bug in pop3mon,
  in the lab, or something odd about this machine.
* 2 - the demo could not run: no lab could be started, bad arguments, pytest did not produce
  verdicts.
* 130 - interrupted.

``--serve`` starts the lab, writes the targets file and waits for Ctrl-C instead of running
the suite, for trying ``pytest --targets=...`` options by hand (the round trip then reads
its key from ``DIR/demo/hmac-key``, 0600, removed at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final, Literal

from .certs import LabCA, LabCerts, generate_ca, generate_lab_certs
from .dovecot import DEFAULT_MAILBOXES, DovecotLab, LabError, LabUnavailable, free_port
from .faultserver import FaultServer
from .postfix import PostfixLab, find_postfix, find_submission, submission_config

__all__ = [
    "DEMO_CONNECTIONS",
    "MAIL_CONNECTIONS",
    "OPTIONAL_TIERS",
    "CheckExpect",
    "DemoConnection",
    "DemoLab",
    "Expect",
    "Outcome",
    "demo_connections",
    "evaluate",
    "main",
    "read_junit",
    "read_results",
    "targets_yaml",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
PASSWORD_ENV: Final = "POP3MON_DEMO_PASSWORD"
INCIDENT_PASSWORD_ENV: Final = "POP3MON_DEMO_INCIDENT_PASSWORD"
#: The round trip's cleanup key (random per demo, like the passwords; never in a file).
HMAC_KEY_ENV: Final = "POP3MON_DEMO_HMAC_KEY"
#: Where the lab's Postfix delivers the round trip's message: the demo account's maildir.
DEMO_ADDRESS: Final = "demo@pop3mon.test"
#: The open-relay check's recipient (a .invalid domain: never deliverable anywhere).
RELAY_CHECK: Final = "relay-test@demo.invalid"
DEMO_USER: Final = "demo"
INCIDENT_USER: Final = "incident"
HOST: Final = "127.0.0.1"
SNI: Final = "localhost"
#: Report order of the tiers the demo shows; ``drift`` arrives with the history (issue 11).
TIERS: Final[tuple[str, ...]] = ("connectivity", "tls", "auth", "mailbox", "latency", "drift")
#: Expectations on these tiers apply only when the run collected the tier for that connection
#: type (its testcases are in junit.xml). This is the hook for checks a build may not have
#: yet: without them the summary says how many expectations it could not check.
OPTIONAL_TIERS: Final[frozenset[str]] = frozenset({"drift"})
_RANK: Final = {"SKIP": 0, "OK": 1, "WARN": 2, "CRIT": 3, "ERROR": 4}
_SHORT: Final = {
    "connectivity": "conn",
    "tls": "tls",
    "auth": "auth",
    "mailbox": "mbox",
    "latency": "lat",
    "drift": "drift",
}

EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1
EXIT_ERROR: Final = 2
EXIT_INTERRUPTED: Final = 130

Endpoint = Literal[
    "tls",
    "stls",
    "expired",
    "wrong_host",
    "closed",
    "incident_cert",
    "incident_stls",
    "recovers",
    "smtp",
    "submission",
    "smtps_expired",
]
Protocol = Literal["pop3", "smtp"]
#: Whose credentials a connection type logs in with: the demo account, the demo account with
#: a wrong password (from a file), or the incident's own account (its password changes).
Account = Literal["demo", "wrong", "incident"]
#: Facts of a probe (from results.json) that the incident must change between the runs.
Fact = Literal["certificate issuer"]
RunNo = Literal[1, 2]


@dataclass(frozen=True)
class CheckExpect:
    """One more check a run must show: ``(tier, check)`` with one of ``verdicts``.

    ``check="*"`` means every check of the tier that the run has. ``reason``: a text the
    reason must contain. ``fields``: values the check must have in results.json (e.g.
    ``(("new", True),)``); a field results.json does not have is not checked but counted (a
    build without the history). A tier in :data:`OPTIONAL_TIERS` that the run did not collect
    for the connection type is likewise not checked but counted.
    """

    tier: str
    check: str
    verdicts: tuple[str, ...]
    reason: str = ""
    fields: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class Expect:
    """What the monitor must say about a connection type in one run.

    ``crit`` is ``(tier, check)`` for a broken connection type: that check must be CRIT (its
    reason containing ``reason``) and no check of an earlier tier may be CRIT/ERROR. ``None``
    means healthy: no CRIT/ERROR at all and a successful login. ``checks`` adds exact
    expectations on single checks.
    """

    crit: tuple[str, str] | None = None
    reason: str = ""
    checks: tuple[CheckExpect, ...] = ()

    @property
    def healthy(self) -> bool:
        """True when the connection type must pass."""
        return self.crit is None


#: A first run has no baseline: every drift check says so (SKIP).
_FIRST_RUN: Final = (CheckExpect("drift", "*", ("SKIP",)),)
HEALTHY: Final = Expect(checks=_FIRST_RUN)


def _broken(tier: str, check: str, reason: str = "") -> Expect:
    return Expect(crit=(tier, check), reason=reason, checks=_FIRST_RUN)


@dataclass(frozen=True)
class DemoConnection:
    """One connection type of the demo and what the monitor must say about it.

    ``expect`` holds for run 1 (and ``--once``); ``after`` for run 2, after the incident
    (``None``: the same as run 1, without the first-run rules). ``incident`` says what the
    incident does to it (empty: nothing; such a type is left out of ``--once`` and of a lab
    without Dovecot). ``changes``: facts that must differ between the runs. ``protocol``
    ``smtp`` makes it an ``smtp:`` entry (``relay_check``: its open-relay recipient);
    ``round_trip`` names the SMTP connection type a POP3 one sends its round trip through.
    Both need the mail lab (Postfix + Dovecot's submission): without it they are left out.
    """

    id: str
    what: str
    endpoint: Endpoint
    security: str
    auth: str
    expect: Expect = HEALTHY
    after: Expect | None = None
    account: Account = "demo"
    incident: str = ""
    changes: tuple[Fact, ...] = ()
    protocol: Protocol = "pop3"
    relay_check: str = ""
    round_trip: str = ""

    @property
    def mail(self) -> bool:
        """True when it needs the mail lab (an SMTP listener or the round trip)."""
        return self.protocol == "smtp" or bool(self.round_trip)

    @property
    def healthy(self) -> bool:
        """True for the connection types that must pass (in run 1)."""
        return self.expect.healthy

    @property
    def expect_crit(self) -> tuple[str, str] | None:
        """The check that must be CRIT in run 1, or None (healthy)."""
        return self.expect.crit

    def expected(self, run: RunNo) -> Expect:
        """What run ``run`` must show."""
        if run == 1 or self.after is None:
            if run == 2:
                # Not a first run any more: no "no baseline yet" SKIP to expect.
                return dataclasses.replace(
                    self.expect, checks=tuple(c for c in self.expect.checks if c.tier != "drift")
                )
            return self.expect
        return self.after


DEMO_CONNECTIONS: Final[tuple[DemoConnection, ...]] = (
    DemoConnection("healthy-tls", "implicit TLS, valid certificate", "tls", "tls", "auto"),
    DemoConnection(
        "healthy-starttls", "STLS required, SCRAM-SHA-256", "stls", "starttls", "scram-sha-256"
    ),
    DemoConnection("healthy-apop", "plaintext port, APOP login", "stls", "none", "apop"),
    DemoConnection(
        "broken-expired-cert",
        "certificate expired 2021",
        "expired",
        "tls",
        "auto",
        expect=_broken("tls", "certificate"),
    ),
    DemoConnection(
        "broken-wrong-host",
        "certificate for wrong.example",
        "wrong_host",
        "tls",
        "auto",
        expect=_broken("tls", "certificate"),
    ),
    DemoConnection(
        "broken-closed-port",
        "nothing listens there",
        "closed",
        "tls",
        "auto",
        expect=_broken("connectivity", "tcp"),
    ),
    DemoConnection(
        "broken-wrong-password",
        "valid server, wrong password",
        "tls",
        "tls",
        "auto",
        expect=_broken("auth", "login"),
        account="wrong",
    ),
    # The mail lab (Postfix + Dovecot's submission service), where both are installed.
    DemoConnection(
        "healthy-smtp-mx",
        "SMTP port-25 style MX (Postfix): STARTTLS, relaying refused",
        "smtp",
        "starttls",
        "none",
        expect=Expect(
            checks=(
                *_FIRST_RUN,
                CheckExpect("auth", "relay", ("OK",), reason="Relay access denied"),
            )
        ),
        protocol="smtp",
        relay_check=RELAY_CHECK,
    ),
    DemoConnection(
        "healthy-submission",
        "SMTP port-587 style submission (Dovecot): STARTTLS + AUTH",
        "submission",
        "starttls",
        "auto",
        protocol="smtp",
    ),
    DemoConnection(
        "broken-smtps-expired",
        "SMTP port-465 style implicit TLS (Postfix), certificate expired 2021",
        "smtps_expired",
        "tls",
        "none",
        expect=_broken("tls", "certificate", "expired"),
        protocol="smtp",
    ),
    DemoConnection(
        "healthy-round-trip",
        "implicit TLS; mail round trip: healthy-submission -> Postfix -> this mailbox",
        "tls",
        "tls",
        "auto",
        expect=Expect(
            checks=(
                *_FIRST_RUN,
                CheckExpect(
                    "latency",
                    "latency-delivery",
                    ("OK",),
                    reason="delivered through healthy-submission",
                ),
                # Its own message is gone again: the mailbox does not grow run by run.
                CheckExpect(
                    "latency", "latency-delivery", ("OK",), reason="cleanup deleted 1 own message"
                ),
            )
        ),
        round_trip="healthy-submission",
    ),
    # The incident's own connection types, so the ones above keep their meaning.
    DemoConnection(
        "incident-cert",
        "implicit TLS; its certificate is re-issued by another CA",
        "incident_cert",
        "tls",
        "auto",
        after=Expect(checks=(CheckExpect("drift", "certificate_changed", ("WARN",)),)),
        incident="certificate re-issued by the second lab CA (still trusted, new issuer)",
        changes=("certificate issuer",),
    ),
    DemoConnection(
        "incident-password",
        "implicit TLS, its own account; the password is changed on the server",
        "tls",
        "tls",
        "auto",
        after=Expect(
            crit=("auth", "login"),
            reason="[AUTH]",
            checks=(
                CheckExpect(
                    "drift",
                    "credentials_changed",
                    ("WARN", "CRIT"),
                    reason="they were accepted at",
                ),
            ),
        ),
        account="incident",
        incident="the account's password changed on the server",
    ),
    DemoConnection(
        "incident-stls",
        "STLS required; the server is restarted without TLS",
        "incident_stls",
        "starttls",
        "auto",
        after=Expect(
            crit=("tls", "stls"), checks=(CheckExpect("drift", "capabilities_changed", ("WARN",)),)
        ),
        incident="server restarted with ssl = no: STLS withdrawn",
    ),
    DemoConnection(
        "incident-recovers",
        "implicit TLS; its server is down in run 1 and back for run 2",
        "recovers",
        "tls",
        "auto",
        expect=_broken("connectivity", "tcp"),
        after=Expect(),
        incident="server down during run 1, started again: recovers",
    ),
)


def demo_connections(incident: bool, mail: bool) -> tuple[DemoConnection, ...]:
    """The connection types of a demo with or without the incident and the mail lab."""
    return tuple(
        c for c in DEMO_CONNECTIONS if (incident or not c.incident) and (mail or not c.mail)
    )


#: The seven original POP3 connection types: ``--once`` and a lab without Dovecot run these
#: (plus :data:`MAIL_CONNECTIONS` where the mail lab starts).
ORIGINAL_CONNECTIONS: Final = demo_connections(incident=False, mail=False)
#: The SMTP listeners and the round trip: they need Postfix and Dovecot's submission.
MAIL_CONNECTIONS: Final = tuple(c for c in DEMO_CONNECTIONS if c.mail)


# --------------------------------------------------------------------------- the lab


@dataclass(frozen=True)
class DemoLab:
    """What a started lab offers: its ports on 127.0.0.1 and the certificates it uses.

    ``incident`` (Dovecot only) changes the running lab as the incident does and returns one
    line per change; it may move ``ports`` (a restarted server whose port was taken).
    ``mail``: the mail lab runs too (Postfix's ``smtp`` and ``smtps_expired``, Dovecot's
    ``submission``); ``mail_note`` says why not when it was wanted and did not start.
    """

    backend: Literal["dovecot", "faultserver"]
    description: str
    certs: LabCerts
    ports: dict[str, int]
    logs: tuple[Path, ...] = ()
    ca_files: tuple[Path, ...] = ()
    incident: Callable[[], list[str]] | None = None
    mail: bool = False
    mail_note: str = ""


def _dovecot_version(binary: Path) -> str:
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.split()[0] if out else ""


#: Dovecot instances of the incident (name -> certificate variant served in run 1).
_INCIDENT_INSTANCES: Final = {
    "incident-cert": "valid",
    "incident-stls": "valid",
    "incident-recovers": "valid",
}


def start_dovecot_lab(
    stack: contextlib.ExitStack,
    certs: LabCerts,
    workdir: Path,
    passwords: Mapping[str, str],
    second_ca: LabCA | None = None,
    mail: bool = True,
) -> DemoLab:
    """Real Dovecot: one master per certificate variant, three more for the incident.

    ``passwords``: account -> password (``demo`` and ``incident``). ``second_ca``: the CA the
    incident re-issues ``incident-cert``'s certificate from (no incident without it). The
    ``incident-recovers`` server is stopped before run 1. ``mail``: also the mail lab, when
    Postfix and Dovecot's submission service are installed (else ``mail_note`` says why
    not): the ``valid`` Dovecot offers submission (STARTTLS + AUTH), relaying to a Postfix
    whose STARTTLS listener is the demo's MX and whose implicit-TLS one serves the expired
    certificate; Postfix delivers to :data:`DEMO_ADDRESS` straight into the demo account's
    maildir. Raises :class:`LabError`.
    """
    note = ""
    if mail:
        try:
            find_postfix()
            find_submission()
        except LabUnavailable as exc:
            mail, note = False, str(exc)
    relay_port, submission_port = free_port(), free_port()
    lab = DovecotLab(
        certs,
        variants=("expired", "wrong_host"),
        users=dict(passwords),
        mailboxes={user: DEFAULT_MAILBOXES["demo"] for user in passwords},
        workdir=workdir,
        extra_instances=_INCIDENT_INSTANCES if second_ca is not None else None,
        instance_config={"valid": submission_config(submission_port, relay_port)} if mail else None,
    )
    stack.enter_context(lab)
    version = _dovecot_version(lab.binary)
    ports = {
        "tls": lab.port("pop3s"),
        "stls": lab.port("pop3"),
        "expired": lab.port("pop3s", "expired"),
        "wrong_host": lab.port("pop3s", "wrong_host"),
        # The coverage finding: a listener no connection type monitors, offering USER
        # before TLS (the expired instance's plaintext one, running anyway).
        "unmonitored": lab.port("pop3", "expired"),
    }
    logs = [lab.instance(v).log_path for v in lab.instance_names]
    postfix: PostfixLab | None = None
    if mail:
        try:
            postfix = PostfixLab(
                certs,
                smtps_cert="expired",
                deliver={DEMO_ADDRESS: lab.maildir(DEMO_USER)},
                mail_owner=lab.mail_owner,
                smtp_port=relay_port,
            )
            stack.enter_context(postfix)
        except LabError as exc:
            mail, postfix = False, None
            note = "Postfix did not start: " + "\n".join(str(exc).splitlines()[:12])
    if postfix is not None:
        ports["smtp"] = postfix.port("smtp")
        ports["submission"] = submission_port
        ports["smtps_expired"] = postfix.port("smtps")
        logs.append(postfix.workdir / "maillog")
    incident: Callable[[], list[str]] | None = None
    if second_ca is not None:
        lab.stop_instance("incident-recovers")

        def read_ports() -> None:
            ports["incident_cert"] = lab.port("pop3s", "incident-cert")
            ports["incident_stls"] = lab.port("pop3", "incident-stls")
            ports["recovers"] = lab.port("pop3s", "incident-recovers")

        def incident() -> list[str]:
            assert second_ca is not None
            done = []
            lab.reissue_certificate("incident-cert", second_ca)
            done.append(f"incident-cert: certificate re-issued by '{second_ca.common_name}'")
            lab.set_password(INCIDENT_USER, secrets.token_urlsafe(18))
            done.append(f"incident-password: the password of '{INCIDENT_USER}' was changed")
            lab.restart("incident-stls", tls=False)
            done.append("incident-stls: server restarted with ssl = no (no STLS)")
            lab.start_instance("incident-recovers")
            done.append("incident-recovers: server started again")
            read_ports()
            return done

        read_ports()
    return DemoLab(
        backend="dovecot",
        description=f"Dovecot {version or '(version unknown)'} ({lab.binary})"
        + (f" + Postfix ({postfix.binary})" if postfix is not None else ""),
        certs=certs,
        ports=ports,
        logs=tuple(logs),
        ca_files=(certs.ca_file, *((second_ca.cert,) if second_ca else ())),
        incident=incident,
        mail=mail,
        mail_note=note,
    )


def start_fault_lab(
    stack: contextlib.ExitStack, certs: LabCerts, passwords: Mapping[str, str]
) -> DemoLab:
    """The project's reference server (FaultServer ``healthy``) in this process; no incident."""
    users = dict(passwords)

    def server(variant: str, implicit_tls: bool) -> int:
        pair = certs.variant(variant)
        srv = FaultServer(
            "healthy",
            users=users,
            certfile=pair.cert,
            keyfile=pair.key,
            implicit_tls=implicit_tls,
            messages=3,
            hostname=SNI,
        )
        stack.enter_context(srv)
        return srv.port

    return DemoLab(
        backend="faultserver",
        description="pop3mon reference server (FaultServer, scenario 'healthy')",
        certs=certs,
        ports={
            "tls": server("valid", True),
            "stls": server("valid", False),
            "expired": server("expired", True),
            "wrong_host": server("wrong_host", True),
            "unmonitored": server("valid", False),  # the coverage finding (USER before TLS)
        },
        ca_files=(certs.ca_file,),
    )


def start_lab(
    stack: contextlib.ExitStack,
    backend: str,
    workdir: Path,
    passwords: Mapping[str, str],
    say: _Say,
    incident: bool = True,
) -> DemoLab:
    """Start the lab for ``backend`` (``auto`` prefers Dovecot and falls back).

    ``incident``: also start the incident's servers and make the second CA (Dovecot only).
    """
    certs = generate_lab_certs(workdir / "certs")
    if backend in ("auto", "dovecot"):
        second = generate_ca(workdir / "certs", "second-ca", "pop3mon lab second CA")
        try:
            lab = start_dovecot_lab(
                stack, certs, workdir / "dovecot", passwords, second if incident else None
            )
            if lab.mail_note:
                say.note(
                    f"the SMTP part of the demo is left out: {lab.mail_note}.\n"
                    "For it run ./ci/demo as root on Debian/Ubuntu (it installs postfix and "
                    "dovecot-submissiond without starting their services)."
                )
            return lab
        except LabUnavailable as exc:
            if backend == "dovecot":
                raise
            say.note(
                f"Dovecot is not available: {exc}.\n"
                "Falling back to pop3mon's own reference POP3 server (FaultServer, 'healthy').\n"
                "For real Dovecot run ./ci/demo as root on Debian/Ubuntu (it installs "
                "dovecot-pop3d without starting its service)."
            )
        except LabError as exc:
            if backend == "dovecot":
                raise
            tail = "\n".join(str(exc).splitlines()[:12])
            say.note(
                f"Dovecot is installed but did not start:\n{tail}\n"
                "Falling back to pop3mon's own reference POP3 server (FaultServer, 'healthy')."
            )
    return start_fault_lab(stack, certs, passwords)


# --------------------------------------------------------------------------- targets


#: The demo server whose coverage tier is on, its tests' id, and the check that finds the
#: lab's unmonitored listener (``ports["unmonitored"]``) offering a cleartext login: CRIT.
COVERAGE_SERVER: Final = "broken"
COVERAGE_ID: Final = f"server:{COVERAGE_SERVER}"
COVERAGE_EXPECT: Final = ("coverage", "coverage-unmonitored", "CRIT")


def _group(conn: DemoConnection) -> str:
    """The demo server (targets file group) a connection type belongs to."""
    if conn.incident:
        return "incident"
    return "healthy" if conn.healthy else "broken"


def targets_yaml(
    lab: DemoLab,
    ca_file: str,
    wrong_password_file: str,
    connections: Sequence[DemoConnection] = ORIGINAL_CONNECTIONS,
    hmac_key_file: str = "",
) -> str:
    """The demo's targets file; secrets are references only (env vars and a file).

    ``hmac_key_file``: the round trip reads its key from this file (``--serve``, where a
    shell must give it) instead of :data:`HMAC_KEY_ENV`.
    """
    lines = [
        "# pop3mon demo targets, written by `python -m pop3mon_lab.demo`.",
        f"# The lab ({lab.backend}) listens on 127.0.0.1 only and is gone after the demo.",
        f"# The demo password is in the environment variable {PASSWORD_ENV} (the round",
        f"# trip's key in {HMAC_KEY_ENV}); the wrong password of broken-wrong-password is",
        "# read from a file. None is in this file.",
        "version: 1",
        "defaults:",
        "  timeout: 5",
        f"  ca_file: {ca_file}  # the demo's own CAs",
        "  tags: [demo]",
        "  # The lab's Dovecot answers a wrong password at once and keeps no address penalty:",
        "  # logins need not take turns (production servers keep the default, serial).",
        "  login_pacing: parallel",
        f"  account: {{username: {DEMO_USER}, password_env: {PASSWORD_ENV}}}",
        "  mailbox: {stat_min: 1}  # the demo mailbox holds seeded messages",
        "servers:",
    ]
    for server in ("healthy", "broken", "incident"):
        mine = [c for c in connections if _group(c) == server]
        if not mine:
            continue
        lines += [
            f"  - name: {server}",
            f"    host: {SNI}  # SNI and certificate name",
            f"    address: {HOST}  # connect here; never resolve or leave loopback",
            f"    tags: [{server}]",
        ]
        if server == COVERAGE_SERVER and "unmonitored" in lab.ports:
            lines += [
                "    # Coverage: each run re-discovers this host's POP3 ports (CAPA only, no",
                "    # login) and reports the ones no connection type here monitors.",
                f"    coverage: {{ports: [{lab.ports['unmonitored']}]}}",
            ]
        for key, group in (
            ("connections", [c for c in mine if c.protocol == "pop3"]),
            ("smtp", [c for c in mine if c.protocol == "smtp"]),
        ):
            if group:
                lines.append(f"    {key}:")
            for conn in group:
                lines += _connection_yaml(lab, conn, wrong_password_file, hmac_key_file)
    return "\n".join(lines) + "\n"


def _connection_yaml(
    lab: DemoLab, conn: DemoConnection, wrong_password_file: str, hmac_key_file: str
) -> list[str]:
    lines = [
        f"      - id: {conn.id}  # {conn.what}",
        f"        port: {lab.ports[conn.endpoint]}",
        f"        security: {conn.security}",
    ]
    if conn.protocol == "pop3" or conn.auth != "none":
        lines.append(f"        auth: {conn.auth}")  # an smtp: entry without auth logs in not
    if conn.relay_check:
        lines.append(f"        relay_check: {conn.relay_check}  # must be refused")
    if conn.round_trip:
        lines += [
            "        round_trip:  # one tagged message per run, sent, then polled for here",
            f"          via: {conn.round_trip}",
            f"          recipient: {DEMO_ADDRESS}  # the lab's Postfix delivers to this mailbox",
            "          warn: 5",
            "          crit: 15",
            "          timeout: 20  # a lost message ends the demo's run in time",
            "          cleanup: own-probe-messages  # deletes only messages signed with the key",
            f"          hmac_key_file: {hmac_key_file}"
            if hmac_key_file
            else f"          hmac_key_env: {HMAC_KEY_ENV}",
        ]
    if conn.account == "wrong":
        lines.append(
            f"        account: {{username: {DEMO_USER}, password_file: {wrong_password_file}}}"
        )
    elif conn.account == "incident":
        lines.append(
            f"        account: {{username: {INCIDENT_USER}, password_env: {INCIDENT_PASSWORD_ENV}}}"
        )
    return lines


# --------------------------------------------------------------------------- verdicts

Checks = dict[tuple[str, str], tuple[str, str]]


@dataclass
class Outcome:
    """What one run said about one demo connection type, and whether that was expected."""

    conn: DemoConnection
    tiers: dict[str, str] = dataclasses.field(default_factory=dict)
    checks: Checks = dataclasses.field(default_factory=dict)
    expected: bool = False
    why: str = ""
    #: Expectations this build could not check (a tier it lacks, a results.json field).
    unchecked: list[str] = dataclasses.field(default_factory=list)

    @property
    def worst(self) -> str:
        """The worst verdict of all checks (SKIP when nothing ran)."""
        verdicts = [v for v, _ in self.checks.values()]
        return max(verdicts, key=lambda v: _RANK.get(v, 4)) if verdicts else "SKIP"

    def first(self, verdicts: Sequence[str]) -> tuple[str, str, str] | None:
        """``(tier/check, verdict, reason)`` of the first check (tier order) in ``verdicts``."""
        for tier in TIERS:
            for (t, check), (verdict, reason) in self.checks.items():
                if t == tier and verdict in verdicts:
                    return f"{t}/{check}", verdict, reason
        return None


def read_junit(path: Path) -> dict[str, Checks]:
    """``{connection id: {(tier, check): (verdict, reason)}}`` from pytest's JUnit XML."""
    root = ET.parse(path).getroot()
    out: dict[str, Checks] = {}
    for case in root.iter("testcase"):
        props = {
            p.get("name", ""): p.get("value", "")
            for p in case.iter("property")
            if p.get("name", "").startswith("pop3mon_")
        }
        ct = props.get("pop3mon_ct")
        if not ct:
            continue
        key = (props.get("pop3mon_tier", ""), props.get("pop3mon_check", ""))
        verdict = props.get("pop3mon_verdict", "ERROR")
        if case.find("error") is not None:
            verdict = "ERROR"  # the test broke after recording its verdict
        out.setdefault(ct, {})[key] = (verdict, props.get("pop3mon_reason", ""))
    return out


@dataclass(frozen=True)
class ConnFacts:
    """What results.json says about one connection type beyond the verdicts."""

    checks: dict[tuple[str, str], dict[str, Any]]
    facts: dict[str, str]


def read_results(path: Path) -> dict[str, ConnFacts]:
    """Per connection id: each check's results.json fields and the :data:`Fact` values.

    An unreadable or missing file gives ``{}``: the verdicts come from junit.xml, this only
    adds what junit.xml does not carry.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        conns = doc["connections"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    out: dict[str, ConnFacts] = {}
    for conn in conns if isinstance(conns, list) else []:
        if not isinstance(conn, dict) or not isinstance(conn.get("id"), str):
            continue
        checks = {
            (str(c.get("tier", "")), str(c.get("check", ""))): c
            for c in conn.get("checks") or []
            if isinstance(c, dict)
        }
        facts: dict[str, str] = {}
        cert = ((conn.get("probe") or {}).get("tls") or {}).get("cert") or {}
        if isinstance(cert, dict) and cert.get("issuer"):
            facts["certificate issuer"] = str(cert["issuer"])
        out[conn["id"]] = ConnFacts(checks, facts)
    return out


def _check_extra(
    want: CheckExpect, outcome: Outcome, fields: Mapping[tuple[str, str], Mapping[str, Any]]
) -> str:
    """Problem with one :class:`CheckExpect` ("" when met); counts what it could not check."""
    label = f"{want.tier}/{want.check}"
    keys = [k for k in outcome.checks if k[0] == want.tier and want.check in ("*", k[1])]
    if not keys:
        if want.tier in OPTIONAL_TIERS and not any(t == want.tier for t, _ in outcome.checks):
            outcome.unchecked.append(f"{label} (no {want.tier} tier in this build)")
            return ""
        if want.check == "*":
            return ""
        return f"expected {'/'.join(want.verdicts)} in {label}, it is not in the report"
    for key in keys:
        verdict, reason = outcome.checks[key]
        if verdict not in want.verdicts:
            return f"expected {'/'.join(want.verdicts)} in {key[0]}/{key[1]}, got {verdict}"
        if want.reason and want.reason not in reason:
            return f"expected {key[0]}/{key[1]} to say '{want.reason}', it says: {reason}"
        mine = fields.get(key, {})
        for name, value in want.fields:
            if name not in mine:
                outcome.unchecked.append(f"{key[0]}/{key[1]} {name} (not in results.json)")
            elif mine[name] != value:
                return f"expected {key[0]}/{key[1]} {name}={value!r}, got {mine[name]!r}"
    return ""


def evaluate(
    conn: DemoConnection,
    checks: Checks | None,
    expect: Expect | None = None,
    fields: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> Outcome:
    """Compare one connection type's verdicts with what the demo expects of a run.

    ``expect`` defaults to run 1's (:attr:`DemoConnection.expect`); ``fields`` are the
    checks' results.json entries, for :attr:`CheckExpect.fields`.
    """
    want = conn.expect if expect is None else expect
    outcome = Outcome(conn, checks=dict(checks or {}))
    for tier in TIERS:
        mine = [v for (t, _), (v, _) in outcome.checks.items() if t == tier]
        outcome.tiers[tier] = max(mine, key=lambda v: _RANK.get(v, 4)) if mine else "-"
    if not outcome.checks:
        outcome.why = "no verdicts in the report (was it selected? did pytest run?)"
        return outcome
    problem = _base_rule(want, outcome)
    for extra in want.checks:
        problem = problem or _check_extra(extra, outcome, fields or {})
    if problem:
        outcome.why = problem
        return outcome
    outcome.expected = True
    if want.crit is not None:
        tier, check = want.crit
        outcome.why = f"CRIT {tier}/{check}: {outcome.checks[want.crit][1]}"
    else:
        warn = outcome.first(("WARN",))
        delivery = outcome.checks.get(("latency", "latency-delivery"))
        if warn:
            outcome.why = f"WARN {warn[0]}: {warn[2]}"
        elif delivery is not None:  # the round trip's headline: how long the mail took
            outcome.why = f"{delivery[0]} latency/latency-delivery: {delivery[1]}"
        else:
            outcome.why = "all checks OK"
    return outcome


def _base_rule(want: Expect, outcome: Outcome) -> str:
    """The healthy / broken rule of :class:`Expect`; "" when met."""
    bad = outcome.first(("CRIT", "ERROR"))
    if want.crit is None:
        login = outcome.checks.get(("auth", "login"), ("missing", ""))[0]
        if bad is not None:
            return f"expected no CRIT, got {bad[1]} {bad[0]}: {bad[2]}"
        # An MX takes no login (auth: none): nothing to have succeeded.
        if outcome.conn.auth != "none" and login not in ("OK", "WARN"):
            return f"expected a successful login, auth/login is {login}"
        return ""
    tier, check = want.crit
    verdict, reason = outcome.checks.get((tier, check), ("missing", ""))
    earlier = TIERS[: TIERS.index(tier)]
    early_bad = [
        f"{t}/{c} {v}"
        for (t, c), (v, _) in outcome.checks.items()
        if t in earlier and v in ("CRIT", "ERROR")
    ]
    if verdict != "CRIT":
        return f"expected CRIT in {tier}/{check}, got {verdict}"
    if early_bad:
        return f"failed too early: {', '.join(early_bad)}"
    if want.reason and want.reason not in reason:
        return f"expected {tier}/{check} to say '{want.reason}', it says: {reason}"
    return ""


def changed_facts(
    conn: DemoConnection, before: ConnFacts | None, after: ConnFacts | None
) -> tuple[list[str], str]:
    """``(lines "fact: before -> after", problem)`` for the facts ``conn`` must change."""
    lines, problems = [], []
    for fact in conn.changes:
        old = before.facts.get(fact) if before else None
        new = after.facts.get(fact) if after else None
        if old is None or new is None:
            problems.append(f"no {fact} in results.json of run {1 if old is None else 2}")
        elif old == new:
            problems.append(f"expected the {fact} to change, it is {old} in both runs")
        else:
            lines.append(f"{fact}: {old} -> {new}")
    return lines, "; ".join(problems)


# --------------------------------------------------------------------------- output


class _Say:
    """Terminal output: plain when not a terminal or NO_COLOR is set."""

    def __init__(self) -> None:
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def line(self, text: str = "") -> None:
        print(text, flush=True)

    def note(self, text: str) -> None:
        for i, part in enumerate(text.splitlines()):
            print(self.paint(("NOTE: " if i == 0 else "      ") + part, "33"), flush=True)


def _verdict_cell(verdict: str, say: _Say, width: int) -> str:
    code = {"OK": "32", "WARN": "33", "CRIT": "31", "ERROR": "31;1"}.get(verdict, "2")
    return say.paint(verdict.ljust(width), code)


@dataclass
class Row:
    """One connection type over the demo's runs (one or two) and the demo's judgement."""

    conn: DemoConnection
    runs: list[Outcome]
    facts: list[str] = dataclasses.field(default_factory=list)
    problem: str = ""  # a fact that should have changed and did not

    @property
    def expected(self) -> bool:
        """Every run as expected and every fact changed as it should."""
        return all(o.expected for o in self.runs) and not self.problem

    @property
    def changed(self) -> bool:
        """The worst verdict differs between the runs."""
        return len(self.runs) > 1 and self.runs[0].worst != self.runs[-1].worst


def _clip(text: str) -> str:
    room = max(60, shutil.get_terminal_size((120, 24)).columns) - 5
    return text if len(text) <= room else text[: room - 3] + "..."


def _summary(rows: list[Row], say: _Say) -> None:
    width = max(len(r.conn.id) for r in rows) + 2
    two = any(len(r.runs) > 1 for r in rows)
    tiers = [
        t
        for t in TIERS
        if t != "drift" or any(o.tiers.get(t, "-") != "-" for r in rows for o in r.runs)
    ]
    head = "connection type".ljust(width)
    if two:
        head += "run 1 run 2   "
    head += "".join(_SHORT[t].ljust(6) for t in tiers)
    say.line(head + "demo verdict")
    if two:
        say.line(" " * width + "(worst)       (run 2 per tier; * = changed since run 1)")
    for row in rows:
        last = row.runs[-1]
        cells = ""
        if two:
            first = row.runs[0].worst if len(row.runs) > 1 else "-"
            cells += _verdict_cell(first, say, 6) + _verdict_cell(last.worst, say, 6)
            cells += say.paint("* ", "1") if row.changed else "  "
        cells += "".join(_verdict_cell(last.tiers[t], say, 6) for t in tiers)
        mark = say.paint("as expected", "32") if row.expected else say.paint("UNEXPECTED", "31;1")
        say.line(f"{row.conn.id.ljust(width)}{cells}{mark}")
        details: list[tuple[str, bool]] = []
        if two and row.conn.incident:
            details.append((f"incident: {row.conn.incident}", True))
        for number, out in enumerate(row.runs, start=1):
            if not out.expected or row.changed or not two:
                label = f"run {number}: " if two else ""
                details.append((label + out.why, out.expected))
        if two and not row.changed and all(o.expected for o in row.runs):
            details.append((f"both runs: {last.why}", True))
        if two and row.changed:
            # What the history found on run 2, each drift on its own line (the headline
            # above names only the worst check).
            for (tier, check), (verdict, reason) in last.checks.items():
                line = f"run 2: {verdict} {tier}/{check}: {reason}"
                if tier == "drift" and verdict in ("WARN", "CRIT") and line != "run 2: " + last.why:
                    details.append((line, True))
        if row.problem:
            details.append((row.problem, False))
        for text, good in details:
            say.line(" " * 4 + say.paint(_clip(text), "2" if good else "31"))
        for line in row.facts:  # the incident's evidence: shown whole, however wide
            say.line(" " * 4 + say.paint(line, "2"))


def _history_lines(log: Path | None) -> list[str]:
    """pop3mon's own history summary lines from a pytest log (runs with a history only)."""
    if log is None or not log.exists():
        return []
    pattern = re.compile(r"new since last run|recovered|still failing|no baseline", re.I)
    text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.rstrip() for line in text if pattern.search(line)][:20]


# --------------------------------------------------------------------------- running


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM/SIGHUP so cleanup runs like on Ctrl-C."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(signum)


def _run_child(cmd: list[str], env: dict[str, str], log: Path | None) -> int:
    """Run ``cmd`` in its own process group; on interruption stop the whole group."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("wb")) if log is not None else None
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
        )
        try:
            return proc.wait()
        except BaseException:
            # Ctrl-C / SIGTERM: let pytest finish its reports, then make sure it is gone.
            for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            raise


def _has_history_option(env: dict[str, str]) -> bool:
    """True when this pop3mon has ``--history`` (asked the way a user would: pytest --help)."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "--help"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return re.search(r"^\s*--history[= ]", out, re.M) is not None


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pop3mon_lab.demo",
        description="Start a demo lab of POP3 servers on 127.0.0.1, monitor it with pop3mon "
        "twice with an incident in between, and summarise the verdicts. Exit 0 when healthy "
        "servers pass, broken ones fail as designed and the incident shows as it should.",
    )
    parser.add_argument("--reports", default="reports", help="reports directory (default: reports)")
    parser.add_argument(
        "--backend",
        choices=("auto", "dovecot", "faultserver"),
        default=os.environ.get("POP3MON_DEMO_BACKEND", "auto"),
        help="auto (default): Dovecot if it is installed and starts, else the reference server",
    )
    parser.add_argument(
        "--workdir",
        help="keep the lab's configs, logs and maildirs here (default: a temporary directory "
        "that is removed at the end)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="one run without the incident (quicker)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="start the lab, write the targets file and wait for Ctrl-C instead of running",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    parser.add_argument(
        "pytest_args",
        nargs="*",
        metavar="PYTEST_ARGS",
        help="extra arguments for ci/run-monitor / pytest (after --), e.g. -- -n 2",
    )
    args = parser.parse_args(argv)
    if args.backend not in ("auto", "dovecot", "faultserver"):
        parser.error(f"invalid POP3MON_DEMO_BACKEND {args.backend!r}")
    return args


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status documented in the module docstring."""
    args = _parse_args(argv)
    say = _Say()
    try:
        with _signals():
            return _demo(args, say)
    except (KeyboardInterrupt, _Terminated):
        say.line()
        say.note("interrupted; everything the demo started has been stopped")
        return EXIT_INTERRUPTED
    except LabError as exc:
        say.line(say.paint(f"error: the demo lab did not start: {exc}", "31"))
        return EXIT_ERROR


@dataclass(frozen=True)
class _Run:
    """Where one monitoring run writes and what it said."""

    number: RunNo
    reports: Path
    log: Path | None
    rc: int = -1
    verdicts: dict[str, Checks] = dataclasses.field(default_factory=dict)
    results: dict[str, ConnFacts] = dataclasses.field(default_factory=dict)


#: The history files of the demo (SQLite's WAL companions included), started afresh.
_HISTORY_FILES: Final = ("history.sqlite", "history.sqlite-wal", "history.sqlite-shm")


def _demo(args: argparse.Namespace, say: _Say) -> int:
    reports = Path(args.reports).resolve()
    demo_dir = reports / "demo"
    targets = reports / "demo-targets.yaml"
    two = not (args.once or args.serve)
    runs = [
        _Run(1, reports / "run1" if two else reports, None),
        _Run(2, reports, None),
    ][: 2 if two else 1]
    if not args.verbose:
        runs = [dataclasses.replace(r, log=r.reports / "demo-pytest.log") for r in runs]
    demo_dir.mkdir(parents=True, exist_ok=True)
    for stale in (
        *demo_dir.glob("dovecot-*.log"),
        demo_dir / "postfix.log",
        demo_dir / "hmac-key",  # an interrupted --serve's
        *(r.log for r in runs if r.log),
    ):
        stale.unlink(missing_ok=True)
    # Random per demo; taken from the environment when given there (the self-test does, to
    # look for them in every artifact).
    passwords = {
        DEMO_USER: os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(18),
        INCIDENT_USER: os.environ.get(INCIDENT_PASSWORD_ENV) or secrets.token_urlsafe(18),
    }
    hmac_key = os.environ.get(HMAC_KEY_ENV) or secrets.token_urlsafe(32)
    wrong = demo_dir / "wrong-password"
    wrong.write_text("not-the-" + secrets.token_urlsafe(6) + "\n", encoding="utf-8")
    wrong.chmod(0o600)

    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = Path(args.workdir).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="pop3mon-demo-"))
            stack.callback(shutil.rmtree, workdir, True)
        say.line(say.paint("pop3mon demo", "1") + ": starting the lab on 127.0.0.1 ...")
        lab = start_lab(stack, args.backend, workdir, passwords, say, incident=two)
        # Runs before the lab stops (ExitStack is LIFO): keep the server logs for reading.
        stack.callback(_keep_logs, lab, demo_dir)
        closed = free_port()  # bound a moment ago, now closed: nothing listens there
        lab.ports["closed"] = closed
        conns = demo_connections(incident=two and lab.incident is not None, mail=lab.mail)
        if two and lab.incident is None:
            say.note(
                "the incident needs Dovecot: both runs see the same lab, and the incident-*\n"
                "connection types are left out"
            )
        (demo_dir / "ca.crt").write_bytes(b"".join(p.read_bytes() for p in lab.ca_files))

        key_file = ""
        if args.serve:  # a shell gives the password; the key is read from a file
            _write_secret(demo_dir / "hmac-key", hmac_key)
            stack.callback((demo_dir / "hmac-key").unlink, True)
            key_file = "demo/hmac-key"

        def write_targets() -> None:
            text = targets_yaml(lab, "demo/ca.crt", "demo/wrong-password", conns, key_file)
            targets.write_text(text, encoding="utf-8")

        write_targets()
        say.line(f"lab: {lab.description}, up in {time.monotonic() - started:.1f} s")
        say.line(
            "  ports: "
            + ", ".join(f"{name} {port}" for name, port in lab.ports.items())
            + f"  (CA: {_rel(demo_dir / 'ca.crt')})"
        )
        env = dict(os.environ)
        env[PASSWORD_ENV] = passwords[DEMO_USER]
        env[INCIDENT_PASSWORD_ENV] = passwords[INCIDENT_USER]
        env[HMAC_KEY_ENV] = hmac_key
        env["POP3MON_PYTHON"] = sys.executable
        env["POP3MON_NO_INSTALL"] = "1"
        if args.serve:
            return _serve(targets, passwords[DEMO_USER], demo_dir, say)
        extra = list(args.pytest_args)
        if two:
            for name in _HISTORY_FILES:
                (reports / name).unlink(missing_ok=True)  # the demo's own: run 1 is a first run
            if _has_history_option(env):
                # One history for both runs (the default would follow each run's reports).
                extra.append(f"--history={reports / 'history.sqlite'}")
            else:
                say.line("(this pop3mon keeps no history: each run stands alone)")
        done: list[_Run] = []
        for run in runs:
            if run.number == 2:
                assert lab.incident is not None or not any(c.incident for c in conns)
                if lab.incident is not None:
                    say.line("incident between the runs:")
                    began = time.monotonic()
                    for line in lab.incident():
                        say.line("  " + line)
                    say.line(f"  (done to the running lab in {time.monotonic() - began:.1f} s)")
                    write_targets()  # a restarted server may have had to move its port
            run.reports.mkdir(parents=True, exist_ok=True)
            cmd = [
                str(REPO_ROOT / "ci" / "run-monitor"),
                f"--targets={targets}",
                f"--reports={run.reports}",
                *extra,
            ]
            label = f"run {run.number} of 2: " if two else "running: "
            say.line(
                f"{label}ci/run-monitor --targets={_rel(targets)} --reports={_rel(run.reports)}"
            )
            rc = _run_child(cmd, env, run.log)
            finished = _collect(dataclasses.replace(run, rc=rc), say)
            if finished is None:
                return EXIT_ERROR
            done.append(finished)
    say.line(f"lab stopped; demo took {time.monotonic() - started:.1f} s")
    return _report(done, conns, reports, say)


def _keep_logs(lab: DemoLab, demo_dir: Path) -> None:
    for log in lab.logs:
        name = "postfix.log" if log.name == "maillog" else f"dovecot-{log.parent.name}.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(log, demo_dir / name)


def _write_secret(path: Path, value: str) -> None:
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)


def _serve(targets: Path, password: str, demo_dir: Path, say: _Say) -> int:
    secret = demo_dir / "password"
    _write_secret(secret, password)
    try:
        say.line(f"targets file: {_rel(targets)}")
        say.line("The lab runs until Ctrl-C. Monitor it from another terminal, e.g.:")
        say.line(
            f'  {PASSWORD_ENV}="$(cat {_rel(secret)})" pytest --targets={_rel(targets)} -k healthy'
        )
        while True:
            time.sleep(3600)
    finally:
        secret.unlink(missing_ok=True)


def _collect(run: _Run, say: _Say) -> _Run | None:
    """Read a finished run's verdicts; None (after saying why) when it gave none."""
    junit = run.reports / "junit.xml"
    log_hint = f" (pytest output: {_rel(run.log)})" if run.log else ""
    if run.rc not in (0, 1) or not junit.exists():
        say.line(
            say.paint(
                f"error: monitoring run {run.number} gave no verdicts (status {run.rc}){log_hint}",
                "31",
            )
        )
        if run.log is not None and run.log.exists():
            tail = run.log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            for line in tail:
                say.line("  | " + line)
        return None
    try:
        verdicts = read_junit(junit)
    except ET.ParseError as exc:
        say.line(say.paint(f"error: {_rel(junit)} is not valid XML: {exc}", "31"))
        return None
    return dataclasses.replace(
        run, verdicts=verdicts, results=read_results(run.reports / "results.json")
    )


def _coverage_summary(run: _Run, say: _Say) -> bool:
    """The coverage finding of the last run (the broken server's unmonitored listener):
    each coverage check's verdict and reason; False when the expected CRIT is missing."""
    checks = run.verdicts.get(COVERAGE_ID, {})
    tier, check, want = COVERAGE_EXPECT
    got = checks.get((tier, check), ("-", "not in the report"))
    good = got[0] == want
    say.line()
    mark = say.paint("as expected", "32") if good else say.paint("UNEXPECTED", "31;1")
    say.line(f"coverage of server {COVERAGE_SERVER} ({COVERAGE_ID}): {mark}")
    for (t, name), (verdict, reason) in sorted(checks.items()):
        say.line(" " * 4 + say.paint(_clip(f"{verdict} {t}/{name}: {reason}"), "2"))
    if not good:
        say.line(" " * 4 + say.paint(f"expected {want} {tier}/{check}, got {got[0]}", "31"))
    return good


def _report(runs: list[_Run], conns: Sequence[DemoConnection], reports: Path, say: _Say) -> int:
    rows: list[Row] = []
    for conn in conns:
        outcomes = []
        for run in runs:
            facts = run.results.get(conn.id)
            outcomes.append(
                evaluate(
                    conn,
                    run.verdicts.get(conn.id),
                    conn.expected(run.number),
                    facts.checks if facts else None,
                )
            )
        row = Row(conn, outcomes)
        if len(runs) > 1:
            row.facts, row.problem = changed_facts(
                conn, runs[0].results.get(conn.id), runs[-1].results.get(conn.id)
            )
        rows.append(row)
    say.line()
    _summary(rows, say)
    coverage_ok = _coverage_summary(runs[-1], say)
    unchecked = sorted({u for r in rows for o in r.runs for u in o.unchecked})
    if unchecked:
        say.line()
        say.line(
            say.paint(
                _clip(
                    f"not checked (this build lacks them): {len(unchecked)}: "
                    + ", ".join(unchecked)
                ),
                "2",
            )
        )
    history = _history_lines(runs[-1].log) if len(runs) > 1 else []
    if history:
        say.line()
        say.line("pop3mon on run 2 (from its history):")
        for line in history:
            say.line("  " + _clip(line.strip()))
    say.line()
    say.line("reports:")
    listing = [
        ("report.html", "HTML report for people"),
        ("junit.xml", "JUnit XML for CI test views"),
        ("results.json", "machine-readable results"),
        ("metrics.prom", "Prometheus/OpenMetrics textfile"),
        ("history.sqlite", "the history both runs shared"),
        ("demo-targets.yaml", "the demo's targets file"),
        ("demo-pytest.log", "pytest's full output"),
    ]
    if len(runs) > 1:
        listing.append(("run1/report.html", "run 1 (before the incident): its reports"))
    for name, what in listing:
        path = reports / name
        if path.exists():
            say.line(f"  {_rel(path):34} {what}")
    unexpected = [r for r in rows if not r.expected]
    say.line()
    if not coverage_ok:
        unexpected_ids = ", ".join([*(r.conn.id for r in unexpected), COVERAGE_ID])
        say.line(
            say.paint(
                f"demo result: did NOT behave as designed: {unexpected_ids}",
                "31;1",
            )
        )
        return EXIT_UNEXPECTED
    if unexpected:
        say.line(
            say.paint(
                f"demo result: {len(unexpected)} of {len(rows)} connection types did NOT "
                f"behave as designed: {', '.join(r.conn.id for r in unexpected)}",
                "31;1",
            )
        )
        return EXIT_UNEXPECTED
    healthy = sum(c.healthy and not c.incident for c in conns)
    broken = sum(not c.healthy and not c.incident for c in conns)
    incident = sum(bool(c.incident) for c in conns)
    tail = f", {incident} changed by the incident as expected" if incident else ""
    say.line(
        say.paint("demo result: as designed", "32;1")
        + f" ({healthy} healthy pass, {broken} broken fail with the expected CRIT{tail})"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
