"""TLS tier: STLS, handshake, certificate validity and expiry, protocol version."""

from collections.abc import Callable

import pytest

pytestmark = pytest.mark.tls


def test_stls(check: Callable[[str], object]) -> None:
    """STLS is offered where required and the switch is clean (no STARTTLS injection)."""
    check("stls")


def test_handshake(check: Callable[[str], object]) -> None:
    """The TLS handshake completes."""
    check("handshake")


def test_certificate(check: Callable[[str], object]) -> None:
    """The chain verifies and the certificate matches the configured host name (SNI)."""
    check("certificate")


def test_expiry(check: Callable[[str], object]) -> None:
    """The certificate is not expired nor within the warn/crit expiry windows."""
    check("expiry")


def test_protocol(check: Callable[[str], object]) -> None:
    """The negotiated TLS version is at least the configured minimum."""
    check("protocol")
