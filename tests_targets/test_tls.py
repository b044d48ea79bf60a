"""TLS tier: STLS, handshake, certificate validity and expiry, protocol version."""

import pytest

pytestmark = pytest.mark.tls


def test_stls(check):
    """STLS is offered where required and the switch is clean (no STARTTLS injection)."""
    check("stls")


def test_handshake(check):
    """The TLS handshake completes."""
    check("handshake")


def test_certificate(check):
    """The chain verifies and the certificate matches the configured host name (SNI)."""
    check("certificate")


def test_expiry(check):
    """The certificate is not expired nor within the warn/crit expiry windows."""
    check("expiry")


def test_protocol(check):
    """The negotiated TLS version is at least the configured minimum."""
    check("protocol")
