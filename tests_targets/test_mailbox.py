"""Mailbox tier: STAT answers, counts and sizes within bounds, clean logout."""

from collections.abc import Callable

import pytest

pytestmark = pytest.mark.mailbox


def test_stat(check: Callable[[str], object]) -> None:
    """STAT answers '+OK count size' within the expected bounds."""
    check("stat")


def test_thresholds(check: Callable[[str], object]) -> None:
    """Message count and mailbox size are below the warn/crit thresholds."""
    check("thresholds")


def test_logout(check: Callable[[str], object]) -> None:
    """QUIT is answered."""
    check("logout")
