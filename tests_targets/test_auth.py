"""Authentication tier: the technical account can log in, safely."""

import pytest

pytestmark = pytest.mark.auth


def test_login(check):
    """The configured mechanism (or the strongest allowed for auto) succeeds."""
    check("login")


def test_policy(check):
    """No cleartext secret on an unencrypted channel; APOP only with a valid timestamp."""
    check("policy")
