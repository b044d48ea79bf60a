"""Connectivity tier: can the server be reached and does it speak POP3?"""

import pytest

pytestmark = pytest.mark.connectivity


def test_dns(check):
    """The host name resolves (skipped for IP literals and pinned addresses)."""
    check("dns")


def test_ping(check):
    """ICMP echo is answered (skipped when disabled or when the runner may not ping)."""
    check("ping")


def test_tcp(check):
    """The POP3 port accepts TCP connections."""
    check("tcp")


def test_greeting(check):
    """The server greets with a proper +OK line."""
    check("greeting")


def test_capa(check):
    """CAPA is answered with a well-formed capability list."""
    check("capa")
