"""One exception tree for the engine, and the one place low-level errors are mapped.

Every failure the engine reports is a :class:`ProbeError` subclass carrying the ``stage``
where it happened, a stable machine ``kind`` (used in reports and metrics) and a human
``reason`` a mail administrator can act on. Low-level exceptions (``OSError``,
``ssl.SSLError``, ``TimeoutError``, ``UnicodeError`` ...) are turned into engine errors in
:func:`map_exception` and nowhere else.
"""

from __future__ import annotations

import copy
import errno
import socket
import ssl
from typing import Final, Literal, Self, get_args

from ..secrets import REDACTOR

__all__ = [
    "ERROR_KINDS",
    "AuthError",
    "ConnectError",
    "DeadlineExceeded",
    "ErrorKind",
    "MailboxError",
    "PolicyError",
    "ProbeError",
    "ProtocolError",
    "ResolveError",
    "StartTLSError",
    "TLSError",
    "TLSVerifyError",
    "map_exception",
]


#: Every machine-readable failure kind the engine reports (stable: reports, metrics and
#: alert rules match on them).
ErrorKind = Literal[
    # DNS, PING, TCP
    "dns-failed",
    "dns-nxdomain",
    "dns-timeout",
    "dns-temporary",  # the resolver says try again (EAI_AGAIN: SERVFAIL, no DNS server)
    "dns-wrong-family",  # no address of the configured address_family
    "ping-failed",
    "connect-failed",
    "connect-timeout",
    "connection-refused",
    "connection-reset",
    "connection-closed",
    "unreachable",
    "network-error",
    "timeout",
    # POP3 protocol
    "protocol-error",
    "bad-status-line",
    "line-too-long",
    "response-too-long",
    "greeting-refused",
    "ehlo-refused",  # SMTP: EHLO answered with anything but 250
    "command-refused",
    "stat-malformed",
    "mailbox-failed",
    # STLS and TLS
    "stls-failed",
    "stls-not-offered",
    "stls-refused",
    "stls-injection",
    "tls-handshake-failed",
    "tls-eof",
    "tls-not-spoken",
    "tls-protocol-too-old",
    "cert-invalid",
    "cert-expired",
    "cert-not-yet-valid",
    "cert-hostname-mismatch",
    "cert-self-signed",
    "cert-untrusted-root",
    "cert-unknown-ca",
    "cert-incomplete-chain",
    "cert-unparseable",
    "ca-file-unusable",
    # authentication and policy
    "policy",
    "auth-failed",
    "auth-rejected",
    "secret-missing",
    "cleartext-refused",
    "apop-no-timestamp",
    "mechanism-not-offered",
    "mechanism-unknown",
    "tls-required",
    "sasl-bad-base64",
    "sasl-malformed",
    "sasl-too-many-rounds",
    "scram-server-signature",
    "scram-iterations",
    "mailbox-in-use",
    "login-delay",
    "sys-temp",
    "sys-perm",
    # pop3mon itself
    "error",
    "internal",
]
ERROR_KINDS: Final[frozenset[str]] = frozenset(get_args(ErrorKind))


class ProbeError(Exception):
    """Base of every engine error.

    ``kind`` is a short stable identifier (``connection-refused``, ``cert-expired`` ...);
    ``reason`` is the sentence shown to people. Both are fixed at construction, where the
    reason is scrubbed of secrets: a better reason or a stage found later makes a new error
    with :meth:`replaced`, so no code path can put unredacted text into one.
    """

    default_kind: ErrorKind = "error"

    def __init__(self, reason: str, *, kind: ErrorKind | None = None, stage: str = "") -> None:
        self._reason = REDACTOR.scrub(reason)
        self._kind: ErrorKind = kind or self.default_kind
        self._stage = stage
        super().__init__(self._reason)

    @property
    def reason(self) -> str:
        """The sentence shown to people (already redacted)."""
        return self._reason

    @property
    def kind(self) -> ErrorKind:
        """The stable machine identifier."""
        return self._kind

    @property
    def stage(self) -> str:
        """The probe stage it happened in ("" until known)."""
        return self._stage

    def replaced(self, *, reason: str | None = None, stage: str | None = None) -> Self:
        """A copy with a new reason (redacted again) and/or stage; the kind stays."""
        new = copy.copy(self)
        if reason is not None:
            new._reason = REDACTOR.scrub(reason)
            new.args = (new._reason,)
        if stage is not None:
            new._stage = stage
        return new

    def __str__(self) -> str:
        return self._reason

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(kind={self.kind!r}, stage={self.stage!r}, reason={self.reason!r})"


class ResolveError(ProbeError):
    """The host name did not resolve."""

    default_kind: ErrorKind = "dns-failed"


class ConnectError(ProbeError):
    """TCP connection could not be made or was torn down by the peer."""

    default_kind: ErrorKind = "connect-failed"


class DeadlineExceeded(ProbeError):
    """The probe's absolute deadline passed."""

    default_kind: ErrorKind = "timeout"


class ProtocolError(ProbeError):
    """The server broke POP3 framing or answered with something unusable."""

    default_kind: ErrorKind = "protocol-error"


class StartTLSError(ProbeError):
    """STLS missing, refused, or abused (STARTTLS injection)."""

    default_kind: ErrorKind = "stls-failed"


class TLSError(ProbeError):
    """The TLS handshake failed for a reason other than certificate verification."""

    default_kind: ErrorKind = "tls-handshake-failed"


class TLSVerifyError(TLSError):
    """The certificate chain or host name did not verify."""

    default_kind: ErrorKind = "cert-invalid"


class PolicyError(ProbeError):
    """pop3mon refused to do something unsafe (cleartext secret, weak APOP timestamp ...)."""

    default_kind: ErrorKind = "policy"


class AuthError(ProbeError):
    """The server refused the login. ``code`` holds an RFC 2449/3206 response code."""

    default_kind: ErrorKind = "auth-failed"

    def __init__(
        self, reason: str, *, kind: ErrorKind | None = None, stage: str = "auth", code: str = ""
    ) -> None:
        super().__init__(reason, kind=kind, stage=stage)
        self._code = code

    @property
    def code(self) -> str:
        """The response code in the refusal (``IN-USE``, ``AUTH`` ...), if any."""
        return self._code


class MailboxError(ProbeError):
    """STAT failed or answered something malformed."""

    default_kind: ErrorKind = "mailbox-failed"


# OpenSSL X509_V_ERR_* codes we explain in words; the rest fall back to OpenSSL's text.
_VERIFY_CODES: dict[int, tuple[ErrorKind, str]] = {
    2: ("cert-incomplete-chain", "cannot find the issuer certificate (incomplete chain)"),
    9: ("cert-not-yet-valid", "certificate is not yet valid"),
    10: ("cert-expired", "certificate has expired"),
    18: ("cert-self-signed", "self-signed certificate (not issued by a trusted CA)"),
    19: ("cert-untrusted-root", "self-signed certificate in chain (root not trusted)"),
    20: (
        "cert-unknown-ca",
        "unable to get local issuer certificate (unknown CA or incomplete chain)",
    ),
    21: ("cert-incomplete-chain", "unable to verify the first certificate (incomplete chain)"),
    62: ("cert-hostname-mismatch", "certificate does not match the host name"),
    # An IP-address target is checked against the IP SANs: the same fault for the admin.
    64: ("cert-hostname-mismatch", "certificate does not match the IP address"),
}


def _ssl_reason(exc: ssl.SSLError) -> tuple[ErrorKind, str]:
    text = (exc.reason or "") if isinstance(exc.reason, str) else ""
    low = f"{text} {exc}".lower()
    if "wrong_version_number" in low or "wrong version number" in low or "record layer" in low:
        return ("tls-not-spoken", "server did not speak TLS (sent non-TLS data)")
    if (
        "unsupported_protocol" in low
        or "unsupported protocol" in low
        or "protocol version" in low
        or "no protocols available" in low
    ):
        return (
            "tls-protocol-too-old",
            "server only offers a TLS version below the minimum allowed",
        )
    if "handshake failure" in low or "no shared cipher" in low:
        return ("tls-handshake-failed", "TLS handshake failure (no common cipher or protocol)")
    if "unexpected eof" in low or "eof occurred" in low:
        return ("tls-eof", "server closed the connection during the TLS handshake")
    return ("tls-handshake-failed", f"TLS handshake failed: {text or exc}")


def map_exception(exc: BaseException, stage: str) -> ProbeError:
    """Translate any exception raised while probing into a :class:`ProbeError`.

    This is the only place the engine looks at ``OSError``/``ssl`` internals.
    """
    if isinstance(exc, ProbeError):
        return exc if exc.stage else exc.replaced(stage=stage)
    if isinstance(exc, ssl.SSLCertVerificationError):
        kind, text = _VERIFY_CODES.get(
            exc.verify_code, ("cert-invalid", exc.verify_message or "verification failed")
        )
        detail = exc.verify_message or ""
        reason = f"{text}" + (f" ({detail})" if detail and detail not in text else "")
        return TLSVerifyError(reason, kind=kind, stage=stage)
    if isinstance(exc, ssl.SSLError):
        kind, text = _ssl_reason(exc)
        return TLSError(text, kind=kind, stage=stage)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return DeadlineExceeded(f"timed out during {stage or 'probe'}", stage=stage)
    if isinstance(exc, socket.gaierror):
        return ResolveError(f"DNS lookup failed: {exc.strerror or exc}", stage=stage)
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError("connection refused", kind="connection-refused", stage=stage)
    if isinstance(exc, ConnectionResetError):
        return ConnectError(
            f"connection reset by the server during {stage}", kind="connection-reset", stage=stage
        )
    if isinstance(exc, (BrokenPipeError, ConnectionAbortedError)):
        return ConnectError(
            f"connection closed by the server during {stage}", kind="connection-closed", stage=stage
        )
    if isinstance(exc, OSError):
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return ConnectError(
                f"no route to host: {exc.strerror}", kind="unreachable", stage=stage
            )
        return ConnectError(
            f"network error during {stage}: {exc.strerror or exc}",
            kind="network-error",
            stage=stage,
        )
    if isinstance(exc, UnicodeError):
        return ProtocolError(f"undecodable data during {stage}", stage=stage)
    if isinstance(exc, ValueError):
        return ProtocolError(f"malformed data during {stage}: {exc}", stage=stage)
    # Anything else is a bug in pop3mon; still a verdict, never a traceback.
    return ProbeError(
        f"internal error during {stage}: {type(exc).__name__}: {exc}", kind="internal", stage=stage
    )
