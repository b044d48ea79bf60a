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
