"""Authentication tier: the technical account can log in, safely."""

from collections.abc import Callable

import pytest

pytestmark = pytest.mark.auth


def test_login(check: Callable[[str], object]) -> None:
    """The configured mechanism (or the strongest allowed for auto) succeeds."""
    check("login")


def test_policy(check: Callable[[str], object]) -> None:
    """No cleartext secret on an unencrypted channel; APOP only with a valid timestamp."""
    check("policy")


def test_relay(check: Callable[[str], object]) -> None:
    """SMTP with relay_check: a stranger's mail to a foreign (.invalid) domain is refused;
    accepting it without a login is an open relay (CRIT)."""
    check("relay")
