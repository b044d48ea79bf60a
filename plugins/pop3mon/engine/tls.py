"""TLS contexts, handshakes and certificate facts.

Contexts always verify chain and host name unless the target disables verification
explicitly; poplib's defaults verify nothing and are never used. Contexts are cached per
(CA file, minimum version, verify) because building one loads the trust store, which costs
more CPU than the rest of a probe.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import socket
import ssl
import warnings

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .errors import TLSError, map_exception
from .result import CertInfo
from .wire import Deadline, sanitize

__all__ = ["cert_info", "chain_expiries", "client_context", "handshake", "unverified_context"]

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


@functools.lru_cache(maxsize=64)
def client_context(ca_file: str, min_version: str, verify: bool) -> ssl.SSLContext:
    """A verifying client context (shared; SSLContext is safe to use from many threads).

    Raises :class:`TLSError` (``ca-file-unusable``) when ``ca_file`` cannot be loaded: the
    configuration checks it at load time, so this is a file changed since, or a spec
    built in code; either way it is this side's problem, not the server's."""
    if verify:
        try:
            ctx = ssl.create_default_context(cafile=ca_file or None)
        except (ssl.SSLError, OSError, ValueError) as exc:
            why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise TLSError(
                f"ca_file {sanitize(ca_file, 200)} cannot be loaded as PEM CA certificates "
                f"({sanitize(str(why), 200)}) — fix the monitor's configuration (the TLS handshake "
                "was not attempted)",
                kind="ca-file-unusable",
            ) from None
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    version = _VERSIONS.get(min_version, ssl.TLSVersion.TLSv1_2)
    _set_minimum(ctx, version)
    if version < ssl.TLSVersion.TLSv1_2:
        # OpenSSL 3's default security level refuses TLS < 1.2 even when the minimum
        # allows it; an admin who configured an old minimum asked for exactly that.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


@functools.lru_cache(maxsize=8)
def unverified_context(min_version: str = "TLSv1") -> ssl.SSLContext:
    """A context that accepts any certificate: used only to *read* a certificate that
    failed verification, so the report can show what the server presented."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _set_minimum(ctx, _VERSIONS.get(min_version, ssl.TLSVersion.TLSv1))
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def _set_minimum(ctx: ssl.SSLContext, version: ssl.TLSVersion) -> None:
    # Python warns that TLS < 1.2 is deprecated; allowing it here is a deliberate,
    # configured choice (or a read-only certificate fetch), not an accident to flag.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version


def handshake(
    sock: socket.socket, ctx: ssl.SSLContext, sni: str, deadline: Deadline, stage: str
) -> ssl.SSLSocket:
    """Run the TLS handshake on ``sock`` within the deadline; SNI is the configured host."""
    server_hostname = sni or None
    tls: ssl.SSLSocket | None = None
    try:
        tls = ctx.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
        # CPython bounds the whole handshake by this timeout, not each read.
        tls.settimeout(deadline.budget(stage))
        tls.do_handshake()
    except BaseException as exc:  # noqa: BLE001 - mapped to the engine's tree right here
        # wrap_socket detached ``sock``: the SSLSocket now owns the descriptor, and the
        # caller only holds the detached shell. Close it here or it leaks until GC.
        if tls is not None:
            tls.close()
        raise map_exception(exc, stage) from None
    return tls


_NAME_MAX = 1000  # characters of a subject, issuer or SAN shown (longer ones are cut)


def _name(cert: x509.Certificate, field: str) -> str:
    # cryptography parses names lazily: a malformed name raises on first access, and not
    # only ValueError (KeyError/TypeError for bad tags or string types were seen).
    try:
        name: x509.Name = getattr(cert, field)
        # Whoever made the certificate chose these bytes (ESC, CR, bidi overrides ...):
        # RFC 4514 escaping does not remove control characters, so sanitize like any other
        # server text before it reaches a reason, the terminal or a report.
        return sanitize(name.rfc4514_string(), _NAME_MAX)
    except Exception:  # noqa: BLE001 - a fact we cannot read is reported, not raised
        return "(unparseable name)"


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans.extend(f"DNS:{sanitize(n, _NAME_MAX)}" for n in ext.get_values_for_type(x509.DNSName))
        sans.extend(f"IP:{ip}" for ip in ext.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    except Exception:  # noqa: BLE001 - duplicate/malformed extensions: no SANs to show
        return ()
    return tuple(sans)


def cert_info(der: bytes, now: dt.datetime | None = None) -> CertInfo:
    """Extract the facts a mail admin needs from a DER certificate.

    Returns a :class:`CertInfo` or raises :class:`TLSError` (``cert-unparseable``); never
    a parser exception, whatever bytes the server sent.
    """
    try:
        facts = _cert_facts(der)
    except Exception as exc:  # noqa: BLE001 - load errors (ValueError, InvalidVersion ...)
        raise TLSError(
            f"server certificate cannot be parsed: {sanitize(str(exc), 200)}",
            kind="cert-unparseable",
        ) from None
    not_after = dt.datetime.fromtimestamp(facts.not_after_epoch, dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return dataclasses.replace(
        facts, days_left=round((not_after - now).total_seconds() / 86400.0, 2)
    )


#: Certificates parsed per process: a fleet's probes see the same few certificates again and
#: again (every connection type of a server, every run of a long-lived process), and parsing
#: one is most of a handshake's Python time. Keyed by the DER bytes, so a renewed
#: certificate is parsed afresh.
_PARSED_MAX = 512


@functools.lru_cache(maxsize=_PARSED_MAX)
def _cert_facts(der: bytes) -> CertInfo:
    """Everything of :func:`cert_info` but ``days_left`` (0 here), which depends on now."""
    cert = x509.load_der_x509_certificate(der)
    not_after = cert.not_valid_after_utc
    subject = _name(cert, "subject")
    issuer = _name(cert, "issuer")
    return CertInfo(
        subject=subject,
        issuer=issuer,
        sans=_sans(cert),
        serial=format(cert.serial_number, "X"),
        sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        not_before=cert.not_valid_before_utc.isoformat(),
        not_after=not_after.isoformat(),
        not_after_epoch=not_after.timestamp(),
        days_left=0.0,
        self_signed=subject == issuer and subject != "(unparseable name)",
    )


@functools.lru_cache(maxsize=_PARSED_MAX)
def _not_after_epoch(der: bytes) -> float:
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


def chain_expiries(tls: ssl.SSLSocket, verified: bool) -> tuple[float | None, float | None]:
    """When the certificates of a completed handshake expire, as blackbox_exporter words it.

    Returns (earliest ``notAfter`` among every certificate the server presented, earliest
    ``notAfter`` in the verified chain, trust anchor included) as Unix times: the figures
    of ``probe_ssl_earliest_cert_expiry`` and ``probe_ssl_last_chain_expiry_timestamp_seconds``
    (OpenSSL builds one verified chain, so its earliest expiry is the "last chain"'s). The
    second is ``None`` when verification is off; either is ``None`` when the chain cannot be
    read (an interpreter without the chain accessors): a fact for the metrics, never a
    reason to fail the probe.
    """
    presented = _chain_not_after(tls, "unverified")
    chain = _chain_not_after(tls, "verified") if verified else []
    return (min(presented) if presented else None), (min(chain) if chain else None)


def _chain_not_after(tls: ssl.SSLSocket, which: str) -> list[float]:
    # Public from Python 3.13 (DER bytes); on 3.10-3.12 the same accessors live on the
    # private _sslobj and return _ssl.Certificate objects.
    getter = getattr(tls, f"get_{which}_chain", None)
    if getter is None:
        getter = getattr(getattr(tls, "_sslobj", None), f"get_{which}_chain", None)
    if getter is None:
        return []
    try:
        out = []
        for item in getter() or ():
            der = item if isinstance(item, bytes) else item.public_bytes(_ENCODING_DER)
            out.append(_not_after_epoch(der))
        return out
    except Exception:  # noqa: BLE001 - OpenSSL accepted the chain; an odd one is no failure
        return []


_ENCODING_DER = 2  # _ssl.ENCODING_DER: the private module's constant, stable since 3.10
