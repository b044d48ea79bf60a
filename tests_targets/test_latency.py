"""Latency tier: each configured phase and the total against warn/crit thresholds."""

import pytest

pytestmark = pytest.mark.latency


def test_latency(check, phase):
    """The phase took less than its thresholds."""
    check(f"latency-{phase}")
