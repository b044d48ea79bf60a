"""Drift tier: what changed since the baseline the history keeps (see checks/drift.py).

Each check SKIPs until the history has a baseline for it (first run, or history off).
"""

from collections.abc import Callable

import pytest

pytestmark = pytest.mark.drift


def test_certificate_changed(check: Callable[[str], object]) -> None:
    """The leaf certificate is the baseline's or a renewal of it (same names and issuer)."""
    check("certificate_changed")


def test_capabilities_changed(check: Callable[[str], object]) -> None:
    """CAPA before and after STLS, the APOP timestamp and the greeting are the baseline's."""
    check("capabilities_changed")


def test_credentials_changed(check: Callable[[str], object]) -> None:
    """Credentials accepted in the baseline are not now refused (changed password, lock)."""
    check("credentials_changed")


def test_mailbox_changed(check: Callable[[str], object]) -> None:
    """Count and size stay near the baseline's, and the login is not newly deferred."""
    check("mailbox_changed")
