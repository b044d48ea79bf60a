"""Shared fixtures of the self-tests: lab certificates and real Dovecot servers.

Both fixtures are session-scoped. Under pytest-xdist every worker runs its own session and so
starts its own lab; each Dovecot listens on ephemeral ports on 127.0.0.1, so workers never
collide. When Dovecot is not installed the ``dovecot`` fixture skips with the reason, unless
``POP3MON_REQUIRE_DOVECOT=1`` is set (CI), where a missing Dovecot is an error. The same holds
for the ``courier`` fixture (real Courier POP3, see ``pop3mon_lab/courier.py``), the
``postfix`` fixture (real Postfix, ``pop3mon_lab/postfix.py``) and ``submission`` (Dovecot's
submission service, package dovecot-submissiond).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from pop3mon_lab.certs import VARIANTS, LabCerts, generate_lab_certs
from pop3mon_lab.courier import CourierLab
from pop3mon_lab.dovecot import DovecotLab, LabUnavailable, free_port
from pop3mon_lab.postfix import SUBMISSION_BINARY, PostfixLab, submission_config


def _unavailable(why: object) -> None:
    """Skip for a missing lab component, or fail when CI requires every one."""
    if os.environ.get("POP3MON_REQUIRE_DOVECOT", "") not in ("", "0"):
        pytest.fail(f"POP3MON_REQUIRE_DOVECOT is set but {why}", pytrace=False)
    pytest.skip(str(why))


@pytest.fixture(scope="session")
def lab_certs(tmp_path_factory: pytest.TempPathFactory) -> LabCerts:
    """Private CA plus one server certificate per variant (valid, expired, wrong_host ...)."""
    return generate_lab_certs(tmp_path_factory.mktemp("lab-certs"))


@pytest.fixture(scope="session")
def dovecot(lab_certs: LabCerts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotLab]:
    """A started :class:`DovecotLab` serving every certificate variant; stopped at session end.

    Its work directory (configs, logs, maildirs) lives under pytest's temporary directory and
    is kept after the run, so a failing test's Dovecot log can be read afterwards.
    """
    try:
        lab = DovecotLab(
            lab_certs,
            variants=VARIANTS,
            workdir=tmp_path_factory.mktemp("dovecot"),
        )
    except LabUnavailable as exc:
        if os.environ.get("POP3MON_REQUIRE_DOVECOT", "") not in ("", "0"):
            pytest.fail(f"POP3MON_REQUIRE_DOVECOT is set but {exc}", pytrace=False)
        pytest.skip(str(exc))
    with lab:
        yield lab


@pytest.fixture(scope="session")
def courier(lab_certs: LabCerts) -> Iterator[CourierLab]:
    """A started :class:`CourierLab` (CRAM-SHA1/CRAM-SHA256, a TLS-required port); stopped at
    session end. Skips when Courier is missing, unless ``POP3MON_REQUIRE_DOVECOT=1``."""
    try:
        lab = CourierLab(lab_certs)
    except LabUnavailable as exc:
        if os.environ.get("POP3MON_REQUIRE_DOVECOT", "") not in ("", "0"):
            pytest.fail(f"POP3MON_REQUIRE_DOVECOT is set but {exc}", pytrace=False)
        pytest.skip(str(exc))
    with lab:
        yield lab


@pytest.fixture(scope="session")
def postfix(lab_certs: LabCerts) -> Iterator[PostfixLab]:
    """A started :class:`PostfixLab` (STARTTLS smtpd and implicit-TLS smtpd on loopback,
    relaying refused); stopped at session end. Skips when Postfix or root is missing, unless
    ``POP3MON_REQUIRE_DOVECOT=1``."""
    try:
        lab = PostfixLab(lab_certs)
    except LabUnavailable as exc:
        _unavailable(exc)
    with lab:
        yield lab


@pytest.fixture(scope="session")
def submission(
    lab_certs: LabCerts, postfix: PostfixLab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DovecotLab, int]]:
    """A Dovecot lab with a submission listener (STARTTLS, AUTH against the lab's users,
    relaying to the Postfix lab) and that listener's port."""
    if not os.path.exists(SUBMISSION_BINARY):
        _unavailable("Dovecot's submission service is not installed (dovecot-submissiond)")
    port = free_port()
    try:
        lab = DovecotLab(
            lab_certs,
            workdir=tmp_path_factory.mktemp("submission"),
            extra_config=submission_config(port, postfix.port("smtp")),
        )
    except LabUnavailable as exc:
        _unavailable(exc)
    with lab:
        yield lab, port


def foreground_signals() -> None:
    """``preexec_fn`` for a child a test stops as Ctrl-C in a terminal would: SIGINT and
    SIGQUIT back to their default actions. A shell starts background jobs with both
    ignored and children inherit that, so a self-test run started in the background
    would otherwise send a Ctrl-C nobody hears."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def another_lab(
    lab_certs: LabCerts, tmp_path_factory: pytest.TempPathFactory, name: str, **settings: Any
) -> Iterator[DovecotLab]:
    """A second Dovecot lab for a module's fixture (``yield from another_lab(...)``): the
    lab's certificates, a work directory named ``name``, ``settings`` as
    :class:`DovecotLab` takes them; stopped when the fixture ends. Its fixture asks for
    ``dovecot`` too, so that a missing Dovecot skips its tests the same way."""
    with DovecotLab(lab_certs, workdir=tmp_path_factory.mktemp(name), **settings) as lab:
        yield lab
