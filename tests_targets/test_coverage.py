"""Coverage tier: each server with ``coverage:`` on, once per run, against the targets file.

The run re-discovers the server's connection types (its host's POP3 ports, and with a
``domain`` what its SRV records and client autoconfig publish; CAPA/STLS/QUIT only, never
a login) and reports what the targets file does not monitor.
"""

from collections.abc import Callable

import pytest

pytestmark = [pytest.mark.coverage]


def test_coverage_unmonitored(coverage_check: Callable[[str], object]) -> None:
    """Every POP3 connection type that answers is monitored (CRIT by default when an
    unmonitored one offers a cleartext login before TLS)."""
    coverage_check("coverage-unmonitored")


def test_coverage_published(coverage_check: Callable[[str], object]) -> None:
    """Every connection type the domain publishes (SRV, autoconfig) is monitored and answers."""
    coverage_check("coverage-published")


def test_coverage_autoconfig(coverage_check: Callable[[str], object]) -> None:
    """What the client autoconfig advertises is what the server does."""
    coverage_check("coverage-autoconfig")
