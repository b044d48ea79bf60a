"""Shared fixtures of the self-tests: lab certificates and real Dovecot servers.

Both fixtures are session-scoped. Under pytest-xdist every worker runs its own session and so
starts its own lab; each Dovecot listens on ephemeral ports on 127.0.0.1, so workers never
collide. When Dovecot is not installed the ``dovecot`` fixture skips with the reason, unless
``POP3MON_REQUIRE_DOVECOT=1`` is set (CI), where a missing Dovecot is an error. The same holds
for the ``courier`` fixture (real Courier POP3, see ``pop3mon_lab/courier.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pop3mon_lab.certs import VARIANTS, LabCerts, generate_lab_certs
from pop3mon_lab.courier import CourierLab
from pop3mon_lab.dovecot import DovecotLab, LabUnavailable


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
