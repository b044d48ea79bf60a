"""Host tier: each server's PING and TCP checks, once per run for all its connection types.

A host that is down is one CRIT here; every connection type on it (and on the servers that
``depends_on`` it) SKIPs its checks naming that host.
"""

from collections.abc import Callable

import pytest

pytestmark = [pytest.mark.host, pytest.mark.connectivity]


def test_host_ping(host_check: Callable[[str], object]) -> None:
    """The host answers ICMP echo (skipped when PING is off or the runner may not ping)."""
    host_check("ping")


def test_host_tcp(host_check: Callable[[str], object]) -> None:
    """At least one of the host's TCP ports accepts a connection."""
    host_check("tcp")
