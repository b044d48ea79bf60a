"""Latency tier: each configured phase and the total against warn/crit thresholds."""

from collections.abc import Callable

import pytest

pytestmark = pytest.mark.latency


def test_latency(check: Callable[[str], object], phase: str) -> None:
    """The phase took less than its thresholds."""
    check(f"latency-{phase}")
