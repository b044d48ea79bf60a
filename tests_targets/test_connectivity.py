"""Connectivity tier: can the server be reached and does it speak POP3?"""

from collections.abc import Callable

import pytest

pytestmark = pytest.mark.connectivity


def test_dns(check: Callable[[str], object]) -> None:
    """The host name resolves (skipped for IP literals and pinned addresses)."""
    check("dns")


def test_ping(check: Callable[[str], object]) -> None:
    """ICMP echo is answered (skipped when disabled or when the runner may not ping)."""
    check("ping")


def test_tcp(check: Callable[[str], object]) -> None:
    """The POP3 port accepts TCP connections."""
    check("tcp")


def test_greeting(check: Callable[[str], object]) -> None:
    """The server greets with a proper +OK line."""
    check("greeting")


def test_capa(check: Callable[[str], object]) -> None:
    """CAPA is answered with a well-formed capability list."""
    check("capa")
