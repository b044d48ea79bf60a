"""Drift tier: what changed since the baseline the history keeps.

Each check compares this run's :class:`~.facts.Facts` with a :class:`~.facts.Baseline`:
the facts of the last run in which that check was OK (or whose change an operator
accepted). The rules are pure functions of ``(Facts, Baseline, DriftPolicy)``; the gating
(a level set to ``off``, no baseline, an earlier stage that failed) is :func:`evaluate`'s.

* ``certificate_changed``: another leaf certificate. A renewal (same subject, issuer and
  names, later not-after) is OK with "renewed: …"; another issuer, subject or names, or
  a new certificate that is no renewal, is drift.
* ``capabilities_changed``: CAPA before and after STLS, each against its own baseline
  list (STLS withdrawn, a SASL mechanism added or gone, a cleartext login now offered
  before TLS, IMPLEMENTATION changed ...), the APOP timestamp gone, the greeting changed.
* ``credentials_changed``: the login was accepted in the baseline and is now refused as a
  wrong password is (``[AUTH]`` or the mechanism's failure): "credentials unexpectedly
  changed". A refusal that was never preceded by a success is no drift.
* ``mailbox_changed``: count or size moved by more than ``mailbox_ratio`` of the
  baseline, or the login is now deferred (``[IN-USE]``, ``[LOGIN-DELAY]``, ``[SYS/TEMP]``).

A drift check that fires gives its configured level (``drift:`` in targets.yaml: warn by
default, crit, or off); with no baseline it SKIPs, and a SKIP blocks nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final, Protocol

from ..engine.defaults import DriftPolicy
from ..engine.result import ProbeResult
from ..engine.stages import DRIFT_CHECKS, DriftCheck, Stage, stage_index
from .base import CRIT, OK, SKIP, WARN, CheckResult, Thresholds, blocked, failed_stage
from .connectivity import capability_changes
from .facts import Baseline, Facts
from .login import DEGRADED_LOGIN

__all__ = [
    "BASELINE_FIELDS",
    "CREDENTIAL_REFUSALS",
    "NO_BASELINE",
    "BaselineSource",
    "capabilities_changed",
    "certificate_changed",
    "credentials_changed",
    "evaluate",
    "has_baseline_fields",
    "is_drift_check",
    "mailbox_changed",
    "parse_accept",
]

#: Why a drift check SKIPs when the history has nothing to compare with.
NO_BASELINE: Final = "no baseline yet (first run with history)"
#: Auth failures that mean "these credentials are wrong": ``[AUTH]``, or a refusal without
#: a response code (a mechanism's failure). Not network, TLS, policy or a deferred login.
CREDENTIAL_REFUSALS: Final = frozenset({"auth-rejected", "auth-failed"})
#: Capabilities that let a password cross the wire as it is (RFC 1939 USER/PASS, SASL
#: PLAIN and LOGIN): offered before TLS, a client may send it in the clear.
_CLEARTEXT_CAPS: Final = frozenset({"USER", "SASL(PLAIN)", "SASL(LOGIN)"})
_ARROW: Final = "\u2192"
_MINUS: Final = "\u2212"


#: The :class:`~.facts.Facts` fields each drift check compares: a run whose facts have
#: none of them set (the probe failed before that stage) is no baseline for that check, so
#: the history never falls back to, nor accepts, such a run for it (its rule would SKIP
#: "nothing in the baseline" for good). Each rule SKIPs exactly when all of them are None.
#: credentials_changed: login_ok set (accepted or refused); only an accepted one (True)
#: can make the check fire, a refused one SKIPs "never accepted yet" until a login works.
BASELINE_FIELDS: Final[Mapping[DriftCheck, tuple[str, ...]]] = {
    "certificate_changed": ("cert_sha256",),
    "capabilities_changed": ("caps_before", "greeting"),
    "credentials_changed": ("login_ok",),
    "mailbox_changed": ("mailbox_count",),
}
assert tuple(BASELINE_FIELDS) == DRIFT_CHECKS, "every drift check names its baseline fields"


def has_baseline_fields(check: str, facts: Facts) -> bool:
    """Whether ``facts`` can be the baseline of drift check ``check`` (any other name:
    any facts can)."""
    names = BASELINE_FIELDS.get(check)  # type: ignore[call-overload]
    return names is None or any(getattr(facts, name) is not None for name in names)


class BaselineSource(Protocol):
    """Where the glue gets baselines from (``pop3mon.history``'s store fits).

    ``baseline(ct_id, check)`` is the facts of the last run of connection type ``ct_id``
    in which the drift check ``check`` was OK or its change was accepted. The first run
    that has facts must count as one too (its drift checks SKIP with :data:`NO_BASELINE`),
    else no drift check could ever leave that SKIP.
    """

    def baseline(self, ct_id: str, check: str) -> Baseline | None:
        """The baseline of one drift check of one connection type, or None."""
        ...


def is_drift_check(check: str) -> bool:
    """Whether ``check`` names a drift check."""
    return check in DRIFT_CHECKS


def parse_accept(
    spec: str, ids: Collection[str] | None = None, where: str = "in the targets file"
) -> tuple[str, DriftCheck | None]:
    """``ID`` or ``ID:check`` (``--accept-drift``, ``pop3mon history accept``) as
    ``(connection id, drift check or None: all of them)``. Connection ids may hold ``:``
    themselves, so a known id wins over a split. ``ids``: the targets' connection ids, to
    refuse an unknown one (None: not known, any id is taken); ``where`` says where they come
    from in that refusal. ValueError says what is wrong.
    """
    head, sep, tail = spec.rpartition(":")
    if ids is not None and spec in ids:
        return spec, None
    for name in DRIFT_CHECKS:
        if sep and tail == name and head:
            if ids is not None and head not in ids:
                raise ValueError(f"no connection type {head!r} {where}")
            return head, name
    if not spec:
        raise ValueError("give a connection type id, or ID:CHECK")
    if sep and ids is not None and head in ids:
        raise ValueError(f"{tail!r} is not a drift check — one of {', '.join(DRIFT_CHECKS)}")
    if ids is not None:
        raise ValueError(f"no connection type {spec!r} {where}")
    return spec, None


# ----------------------------------------------------------------------------- wording


def _when(base: Baseline) -> str:
    """``2025-01-02 10:15:00 UTC (3 runs ago)``, and whether an operator accepted it."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(base.at))
    ago = "1 run ago" if base.runs_ago == 1 else f"{base.runs_ago} runs ago"
    return f"{stamp} ({ago}{', accepted' if base.accepted else ''})"


def _fired(check: DriftCheck, policy: DriftPolicy, reason: str) -> CheckResult:
    verdict = CRIT if policy.level(check) == "crit" else WARN
    return CheckResult("drift", check, verdict, reason)


def _q(value: object) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def _changed(what: str, before: object, after: object) -> str:
    return f"{what} {_q(before)} {_ARROW} {_q(after)}"


# ----------------------------------------------------------------------------- rules


def certificate_changed(now: Facts, base: Baseline, policy: DriftPolicy) -> CheckResult:
    """The leaf certificate is the baseline's, a renewal of it, or another one (drift)."""
    check: DriftCheck = "certificate_changed"
    old = base.facts
    if now.cert_sha256 is None:
        return CheckResult("drift", check, SKIP, "no certificate this run (no TLS)")
    if old.cert_sha256 is None:
        return CheckResult("drift", check, SKIP, "no certificate in the baseline")
    if now.cert_sha256 == old.cert_sha256:
        return CheckResult(
            "drift",
            check,
            OK,
            f"same certificate as at {_when(base)}: not after {now.cert_not_after}",
        )
    diffs = [
        _changed(what, a, b)
        for what, a, b in (
            ("issuer", old.cert_issuer, now.cert_issuer),
            ("subject", old.cert_subject, now.cert_subject),
        )
        if a != b
    ]
    if set(old.cert_sans or ()) != set(now.cert_sans or ()):
        diffs.append(_sans_change(old.cert_sans or (), now.cert_sans or ()))
    later = (now.cert_not_after or "") > (old.cert_not_after or "")
    if not diffs and later:
        # ISO 8601 UTC strings of one format sort as the times they name.
        return CheckResult(
            "drift",
            check,
            OK,
            f"renewed: not after {old.cert_not_after} {_ARROW} {now.cert_not_after}",
        )
    if not diffs:
        diffs.append(
            f"same names and issuer but not after {old.cert_not_after} {_ARROW} "
            f"{now.cert_not_after} (no renewal)"
        )
    fingerprint = _changed("sha256", _short(old.cert_sha256), _short(now.cert_sha256))
    return _fired(
        check,
        policy,
        f"certificate changed since {_when(base)}: {'; '.join(diffs)}; {fingerprint}",
    )


def _sans_change(old: Sequence[str], new: Sequence[str]) -> str:
    added = [f"+{n}" for n in new if n not in old]
    removed = [f"{_MINUS}{n}" for n in old if n not in new]
    return f"names {' '.join(added + removed)}"


def _short(sha256: str | None) -> str:
    """The first 8 bytes of a fingerprint (``1F:FB:...`` or plain hex), as plain hex."""
    return (sha256 or "").replace(":", "").lower()[:16] + "…"


def capabilities_changed(now: Facts, base: Baseline, policy: DriftPolicy) -> CheckResult:
    """CAPA before and after STLS, the APOP timestamp and the greeting are the baseline's."""
    check: DriftCheck = "capabilities_changed"
    old = base.facts
    if now.caps_before is None and now.greeting is None:
        return CheckResult("drift", check, SKIP, "no CAPA answer this run")
    if old.caps_before is None and old.greeting is None:
        # Nothing to compare with: "as at <time>" would claim a comparison never made.
        return CheckResult("drift", check, SKIP, "no CAPA answer or greeting in the baseline")
    changes: list[str] = []
    # With a list after STLS, the first one was asked in plaintext (Facts do not carry the
    # security mode; implicit TLS has only the first list, asked over TLS).
    stls = now.caps_after is not None or old.caps_after is not None
    for where, before, after, plaintext in (
        ("CAPA", old.caps_before, now.caps_before, stls),
        ("CAPA after STLS", old.caps_after, now.caps_after, False),
    ):
        # A list the baseline or this run lacks (STLS not reached) is not compared:
        # its absence is another check's failure (stls, capa), not a changed list.
        if before is None or after is None:
            continue
        diff = capability_changes(before, after)
        if diff:
            changes.append(f"{where}: {' '.join(_worded(d, plaintext) for d in diff)}")
    if old.apop_timestamp and now.apop_timestamp is False:
        changes.append("APOP timestamp gone from the greeting")
    if old.greeting is not None and now.greeting is not None and old.greeting != now.greeting:
        changes.append(_changed("greeting", old.greeting, now.greeting))
    if not changes:
        return CheckResult("drift", check, OK, f"capabilities and greeting as at {_when(base)}")
    return _fired(check, policy, f"capabilities changed since {_when(base)}: {'; '.join(changes)}")


def _worded(change: str, plaintext: bool) -> str:
    """One :func:`capability_changes` entry, with what it means where it matters."""
    name = change[1:].split("(", 1)[0] if change[:1] in ("+", _MINUS) else ""
    if change.startswith("+") and change[1:] in _CLEARTEXT_CAPS and plaintext:
        return f"{change} (a cleartext login now offered before TLS)"
    if change == f"{_MINUS}STLS":
        return f"{change} (STLS withdrawn)"
    if name == "SASL" and change.startswith("+"):
        return f"{change} (SASL mechanism added)"
    if name == "SASL":
        return f"{change} (SASL mechanism gone)"
    return change


def credentials_changed(now: Facts, base: Baseline, policy: DriftPolicy) -> CheckResult:
    """A login accepted in the baseline is now refused as a wrong password is."""
    check: DriftCheck = "credentials_changed"
    old = base.facts
    if now.login_ok is None:
        return CheckResult("drift", check, SKIP, "no login this run")
    if now.login_ok:
        return CheckResult("drift", check, OK, "credentials accepted")
    if now.login_kind not in CREDENTIAL_REFUSALS:
        return CheckResult(
            "drift",
            check,
            SKIP,
            f"the login failed ({now.login_kind or 'unknown'}) for a reason other than the "
            "credentials",
        )
    if not old.login_ok:
        return CheckResult(
            "drift",
            check,
            SKIP,
            "credentials rejected and never accepted yet: no drift (the login check "
            "reports the refusal)",
        )
    code = f" [{now.login_code}]" if now.login_code else ""
    return _fired(
        check,
        policy,
        f"credentials rejected{code}; they were accepted at {_when(base)}: the password "
        "was changed or the account locked",
    )


def mailbox_changed(now: Facts, base: Baseline, policy: DriftPolicy) -> CheckResult:
    """The login is not newly deferred, and count and size stay within ``mailbox_ratio``
    of the baseline's."""
    check: DriftCheck = "mailbox_changed"
    old = base.facts
    if now.login_ok is False and now.login_kind in DEGRADED_LOGIN:
        if old.login_ok:
            code = f"[{now.login_code}]" if now.login_code else now.login_kind
            return _fired(
                check, policy, f"login now deferred ({code}); it was not at {_when(base)}"
            )
        return CheckResult("drift", check, SKIP, "login deferred, as in the baseline")
    if now.mailbox_count is None or now.mailbox_size is None:
        return CheckResult("drift", check, SKIP, "no STAT answer this run")
    if old.mailbox_count is None or old.mailbox_size is None:
        return CheckResult("drift", check, SKIP, "no STAT answer in the baseline")
    ratio = policy.mailbox_ratio
    jumps = [
        _changed(what, a, b) + f" ({_percent(a, b)})"
        for what, a, b in (
            ("count", old.mailbox_count, now.mailbox_count),
            ("size", old.mailbox_size, now.mailbox_size),
        )
        if _jumped(a, b, ratio)
    ]
    if jumps:
        return _fired(
            check,
            policy,
            f"mailbox jumped since {_when(base)}: {'; '.join(jumps)}, beyond "
            f"\u00b1{ratio:.0%} (drift: mailbox_ratio)",
        )
    return CheckResult(
        "drift",
        check,
        OK,
        f"{now.mailbox_count} messages, {now.mailbox_size} bytes: within \u00b1{ratio:.0%} "
        f"of {old.mailbox_count} messages, {old.mailbox_size} bytes at {_when(base)}",
    )


def _jumped(before: int, after: int, ratio: float) -> bool:
    """Whether ``after`` is more than ``ratio`` of ``before`` away from it (from an empty
    mailbox, any growth is a jump)."""
    return abs(after - before) > ratio * before


def _percent(before: int, after: int) -> str:
    if before == 0:
        return "from empty"
    return f"{(after - before) / before:+.0%}"


# ----------------------------------------------------------------------------- gating

Rule = Callable[[Facts, Baseline, DriftPolicy], CheckResult]
RULES: Final[Mapping[DriftCheck, Rule]] = {
    "certificate_changed": certificate_changed,
    "capabilities_changed": capabilities_changed,
    "credentials_changed": credentials_changed,
    "mailbox_changed": mailbox_changed,
}
assert tuple(RULES) == DRIFT_CHECKS, "every drift check needs exactly one rule"


#: The login failures that are what a drift check is about; any other one blocks it.
_AUTH_FAILURES_OF: Final[Mapping[DriftCheck, frozenset[str]]] = {
    "credentials_changed": CREDENTIAL_REFUSALS,
    "mailbox_changed": DEGRADED_LOGIN,
}


def _needs(check: DriftCheck, t: Thresholds) -> Stage:
    """The stage whose facts ``check`` compares: a failure before it blocks the check."""
    if check == "certificate_changed":
        return "tls" if t.security == "tls" else "tls_handshake"
    if check == "capabilities_changed":
        return "capa"
    return "auth"


def evaluate(
    result: ProbeResult, t: Thresholds, check: DriftCheck, baseline: Baseline | None
) -> CheckResult:
    """The verdict of one drift check: SKIP when it is off, when an earlier stage failed
    (``blocked_by`` its owner) or with no baseline; else its rule's."""
    policy = t.drift
    if policy.level(check) == "off":
        return CheckResult("drift", check, SKIP, f"drift check off (drift: {check}: off)")
    if check == "certificate_changed" and t.security == "none":
        return CheckResult("drift", check, SKIP, "not applicable: no TLS (security: none)")
    if check in ("credentials_changed", "mailbox_changed") and t.auth == "none":
        return CheckResult("drift", check, SKIP, "not applicable: no login (auth: none)")
    failed = failed_stage(result)
    if failed is not None and stage_index(failed.stage) < stage_index(_needs(check, t)):
        return blocked("drift", check, failed)
    if baseline is None:
        return CheckResult("drift", check, SKIP, NO_BASELINE)
    own = _AUTH_FAILURES_OF.get(check)
    if own is not None and failed is not None and failed.stage == "auth" and failed.kind not in own:
        # A login failure this check is not about (TLS required first, a missing secret;
        # for the mailbox a wrong password too): the login check owns it.
        return blocked("drift", check, failed)
    return RULES[check](Facts.from_result(result), baseline, policy)
