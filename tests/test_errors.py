"""Engine errors are fixed at construction, where their reason is redacted."""

from __future__ import annotations

import pickle

import pytest
from pop3mon.engine.errors import AuthError, TLSVerifyError, map_exception
from pop3mon.secrets import REDACTOR, Secret

SENTINEL = "errors-SENTINEL-7c2d"


def test_reason_kind_stage_cannot_be_rewritten() -> None:
    err = TLSVerifyError("certificate has expired", kind="cert-expired", stage="tls")
    for name in ("reason", "kind", "stage"):
        with pytest.raises(AttributeError):
            setattr(err, name, "x")
    with pytest.raises(AttributeError):
        AuthError("no", code="AUTH").code = "IN-USE"  # type: ignore[misc]


def test_replaced_redacts_the_new_reason_and_keeps_the_rest() -> None:
    Secret(SENTINEL, source="test")  # registers the value with the process-wide redactor
    assert SENTINEL not in REDACTOR.scrub(SENTINEL)
    err = AuthError("login failed", kind="auth-rejected", code="AUTH")
    better = err.replaced(reason=f"server echoed {SENTINEL}")
    assert SENTINEL not in better.reason and SENTINEL not in str(better)
    assert SENTINEL not in repr(better) and SENTINEL not in repr(better.args)
    assert (type(better), better.kind, better.code, better.stage) == (
        AuthError,
        "auth-rejected",
        "AUTH",
        "auth",
    )
    assert err.reason == "login failed"  # the original is untouched


def test_map_exception_sets_a_missing_stage_on_a_copy() -> None:
    err = AuthError("nope", stage="")
    mapped = map_exception(err, "auth")
    assert mapped.stage == "auth" and err.stage == ""
    assert map_exception(mapped, "stat") is mapped  # a known stage is kept


def test_errors_survive_pickling() -> None:
    err = AuthError("login failed", kind="login-delay", code="LOGIN-DELAY")
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.kind, back.code) == ("login failed", "login-delay", "LOGIN-DELAY")
