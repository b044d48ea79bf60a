"""Mailbox tier: STAT answers, counts and sizes within bounds, clean logout."""

import pytest

pytestmark = pytest.mark.mailbox


def test_stat(check):
    """STAT answers '+OK count size' within the expected bounds."""
    check("stat")


def test_thresholds(check):
    """Message count and mailbox size are below the warn/crit thresholds."""
    check("thresholds")


def test_logout(check):
    """QUIT is answered."""
    check("logout")
