"""What a run learnt about a connection type that the next run compares against (drift).

:class:`Facts` is taken from one :class:`~pop3mon.engine.result.ProbeResult` and holds only
what is safe to keep: certificate identity and dates, the capabilities before and after
STLS, the greeting with the APOP timestamp's variable part masked, whether the login
succeeded and how it was refused, the mailbox count and size. Never a secret (the probe
result's text is already redacted; nothing here comes from a credential).

:class:`Baseline` is what the history (``pop3mon.history``) hands the drift checks: the facts of
the last run in which a check was OK (or whose change was accepted), with when that was.
The history stores ``Facts.to_dict()`` as JSON and rebuilds it with :meth:`Facts.from_dict`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from ..engine.result import ProbeResult

__all__ = ["FACTS_VERSION", "Baseline", "Facts", "mask_greeting"]

#: Bumped when a field changes meaning; the history then treats older facts as no baseline.
FACTS_VERSION: Final = 1

# RFC 1939 APOP timestamp: <process-id.clock@hostname>; its variable part changes every
# session, so a greeting compared across runs must not include it.
_APOP_TIMESTAMP: Final = re.compile(r"<[^<>@\s]*@[^<>\s]*>")


def mask_greeting(greeting: str) -> str:
    """The greeting with an APOP timestamp replaced by ``<…@host>`` (host kept)."""
    return _APOP_TIMESTAMP.sub(lambda m: "<…@" + m.group(0)[1:-1].rsplit("@", 1)[1] + ">", greeting)


@dataclass(frozen=True)
class Facts:
    """The comparable facts of one probe (all optional: a stage that did not run is None)."""

    cert_sha256: str | None = None
    cert_subject: str | None = None
    cert_issuer: str | None = None
    cert_sans: tuple[str, ...] | None = None
    cert_not_after: str | None = None  # ISO 8601 UTC
    caps_before: tuple[str, ...] | None = None
    caps_after: tuple[str, ...] | None = None
    apop_timestamp: bool | None = None
    greeting: str | None = None  # masked (mask_greeting)
    login_ok: bool | None = None  # None: no login was made
    login_code: str = ""  # the refusal's response code (AUTH, IN-USE ...) or ""
    login_kind: str = ""  # the auth failure's error kind, or ""
    mailbox_count: int | None = None
    mailbox_size: int | None = None

    @classmethod
    def from_result(cls, result: ProbeResult) -> Facts:
        """The facts of one probe result."""
        cert = result.tls.cert if result.tls is not None else None
        auth = result.auth
        failed_auth = result.error_stage == "auth"
        login_ok: bool | None = None
        if auth is not None and auth.success:
            login_ok = True
        elif failed_auth:
            login_ok = False
        return cls(
            cert_sha256=cert.sha256 if cert else None,
            cert_subject=cert.subject if cert else None,
            cert_issuer=cert.issuer if cert else None,
            cert_sans=cert.sans if cert else None,
            cert_not_after=cert.not_after if cert else None,
            caps_before=result.capabilities_before,
            caps_after=result.capabilities_after,
            apop_timestamp=result.apop_timestamp if result.greeting else None,
            greeting=mask_greeting(result.greeting) if result.greeting else None,
            login_ok=login_ok,
            login_code=auth.response_code if auth is not None and not auth.success else "",
            login_kind=result.error_kind if failed_auth else "",
            mailbox_count=result.mailbox.count if result.mailbox else None,
            mailbox_size=result.mailbox.size if result.mailbox else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data, with the format version."""
        # Every field is text, a number, a flag or a tuple of text: read as they are, they
        # are what asdict() gives, without its deep copy (the history converts a run's
        # facts once per connection type; a self-test compares the two).
        return {"version": FACTS_VERSION, **{name: getattr(self, name) for name in _NAMES}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Facts | None:
        """Inverse of :meth:`to_dict`; ``None`` for another version or unreadable data."""
        if not isinstance(data, Mapping) or data.get("version") != FACTS_VERSION:
            return None
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for key in ("cert_sans", "caps_before", "caps_after"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except TypeError:
            return None


#: The fields of :class:`Facts`, in order.
_NAMES: Final = tuple(f.name for f in fields(Facts))


@dataclass(frozen=True)
class Baseline:
    """The facts a drift check compares against: from the last run in which that check was
    OK, or whose change an operator accepted (``accepted``). ``at`` is that run's start
    (epoch seconds), ``runs_ago`` how many runs of this connection type lie between it and
    the current one (1: the previous run)."""

    facts: Facts
    at: float
    runs_ago: int
    run_id: str
    accepted: bool = False
