"""Test certificates for the lab: a private CA and one server certificate per failure mode.

Everything here is for self-tests, the demo and benchmarks against servers on 127.0.0.1. The
keys are EC P-256 because generating them takes well under a millisecond (RSA-2048 takes tens of
milliseconds each). The certificates are built to be accepted by a strict verifier
(``VERIFY_X509_STRICT``): CA with critical basicConstraints and keyCertSign, leaves with
subjectAltName, serverAuth EKU and key identifiers. That way a verification failure in a test
is caused by the one defect the variant is about and by nothing else.

Variants (see :data:`VARIANTS`) and what a verifier trusting only :attr:`LabCerts.ca_file` says:

``valid``             verifies for ``localhost`` / ``127.0.0.1``.
``chain``             leaf signed by an intermediate CA; the file holds leaf + intermediate, so
                      it verifies too (exercises a real chain).
``incomplete_chain``  same kind of leaf, but the file holds the leaf only: verify code 20
                      (``unable to get local issuer certificate``).
``expired``           not_after 2021-01-01: verify code 10 (``certificate has expired``).
``not_yet_valid``     not_before ten years ahead: verify code 9 (``certificate is not yet valid``).
``wrong_host``        SAN ``wrong.example`` only: verify code 62 (``Hostname mismatch``).
``self_signed``       not issued by the CA: verify code 18 (``self-signed certificate``).

Tests that need one certificate with exact contents instead (a hostile subject, a certificate
that is its own trust anchor) build it with :func:`self_signed_cert` and, when a server needs
files, write it with :func:`write_cert_pair`.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "EXPECTED_VERIFY_CODES",
    "VARIANTS",
    "CertPair",
    "LabCA",
    "LabCerts",
    "generate_ca",
    "generate_lab_certs",
    "issue_server_cert",
    "self_signed_cert",
    "write_cert_pair",
]

#: Every certificate variant the lab can serve, in a stable order.
VARIANTS: Final[tuple[str, ...]] = (
    "valid",
    "chain",
    "incomplete_chain",
    "expired",
    "not_yet_valid",
    "wrong_host",
    "self_signed",
)

#: OpenSSL ``X509_V_ERR_*`` code a client trusting only the lab CA sees per broken variant.
EXPECTED_VERIFY_CODES: Final[dict[str, int]] = {
    "incomplete_chain": 20,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    "expired": 10,  # X509_V_ERR_CERT_HAS_EXPIRED
    "not_yet_valid": 9,  # X509_V_ERR_CERT_NOT_YET_VALID
    "wrong_host": 62,  # X509_V_ERR_HOSTNAME_MISMATCH
    "self_signed": 18,  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
}

# Bump when the layout or content of generated files changes, so old caches are not reused.
_FORMAT: Final = 1
_MANIFEST: Final = "manifest.json"
# A cached set is regenerated once it is this old: keeps the "valid" leaf far from expiry and
# the "not yet valid" one far in the future, without having to parse certificates on reuse.
_MAX_CACHE_AGE: Final = _dt.timedelta(days=7)
_EXPIRED_NOT_BEFORE: Final = _dt.datetime(2020, 1, 1, tzinfo=_dt.UTC)
_EXPIRED_NOT_AFTER: Final = _dt.datetime(2021, 1, 1, tzinfo=_dt.UTC)


@dataclass(frozen=True)
class CertPair:
    """A server certificate file (PEM, possibly followed by chain certificates) and its key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class LabCerts:
    """Paths of one generated certificate set. All files are PEM."""

    directory: Path
    hostname: str
    #: The root CA a client must trust; the only trust anchor the tests use.
    ca_file: Path
    #: The intermediate CA that signs ``chain`` and ``incomplete_chain`` (not a trust anchor).
    intermediate_file: Path
    valid: CertPair
    chain: CertPair
    incomplete_chain: CertPair
    expired: CertPair
    not_yet_valid: CertPair
    wrong_host: CertPair
    self_signed: CertPair

    def variant(self, name: str) -> CertPair:
        """Return the certificate pair of variant ``name`` (one of :data:`VARIANTS`)."""
        if name not in VARIANTS:
            raise ValueError(f"unknown certificate variant {name!r}; known: {', '.join(VARIANTS)}")
        pair = getattr(self, name)
        assert isinstance(pair, CertPair)
        return pair


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pop3mon lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _ca_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    now: _dt.datetime,
    path_length: int | None,
) -> x509.Certificate:
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signing_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Starts well before the expired leaf so the CA itself is never the reason a chain fails.
        .not_valid_before(_EXPIRED_NOT_BEFORE - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=365 * 30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256())


def _leaf_cert(
    names: Sequence[str],
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
) -> x509.Certificate:
    """Build a server certificate; ``issuer=None`` makes it self-signed."""
    subject = _name(names[0])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    signer = issuer[1] if issuer else key
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
    )
    return builder.sign(signer, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    # Write then rename so a concurrent reader (another xdist worker sharing a cache directory)
    # never sees a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _paths(directory: Path, hostname: str) -> LabCerts:
    def pair(variant: str) -> CertPair:
        return CertPair(cert=directory / f"{variant}.crt", key=directory / f"{variant}.key")

    return LabCerts(
        directory=directory,
        hostname=hostname,
        ca_file=directory / "ca.crt",
        intermediate_file=directory / "intermediate.crt",
        valid=pair("valid"),
        chain=pair("chain"),
        incomplete_chain=pair("incomplete_chain"),
        expired=pair("expired"),
        not_yet_valid=pair("not_yet_valid"),
        wrong_host=pair("wrong_host"),
        self_signed=pair("self_signed"),
    )


def _cached(directory: Path, params: dict[str, object], certs: LabCerts) -> bool:
    try:
        manifest = json.loads((directory / _MANIFEST).read_text(encoding="utf-8"))
        created = _dt.datetime.fromisoformat(manifest["created"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if manifest.get("params") != params or _now() - created > _MAX_CACHE_AGE:
        return False
    files = [certs.ca_file, certs.intermediate_file]
    files += [p for v in VARIANTS for p in (certs.variant(v).cert, certs.variant(v).key)]
    return all(f.is_file() for f in files)


def generate_lab_certs(
    directory: str | os.PathLike[str],
    *,
    hostname: str = "localhost",
    extra_names: Sequence[str] = (),
    reuse: bool = True,
) -> LabCerts:
    """Create (or reuse) the CA and every certificate variant in ``directory``.

    The valid leaves carry SANs ``hostname``, ``127.0.0.1`` and ``extra_names`` (IP literals
    become IP SANs). With ``reuse`` a set generated earlier in the same directory with the same
    parameters, less than a week ago, is returned without regenerating anything.
    Private keys are written mode 0644: Dovecot reads them as root, but a lab run as an
    unprivileged user must be able to read them too, and they protect nothing.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    certs = _paths(out, hostname)
    names = list(dict.fromkeys([hostname, "127.0.0.1", *extra_names]))
    params: dict[str, object] = {"format": _FORMAT, "hostname": hostname, "names": names}
    if reuse and _cached(out, params, certs):
        return certs

    now = _now()
    root_key = _new_key()
    root = _ca_cert("pop3mon lab root CA", root_key, None, now, path_length=1)
    inter_key = _new_key()
    inter = _ca_cert("pop3mon lab intermediate CA", inter_key, (root, root_key), now, 0)
    # A small backdate tolerates clock differences between this host and the code under test.
    valid_from, valid_to = now - _dt.timedelta(days=1), now + _dt.timedelta(days=365)
    future_from = now + _dt.timedelta(days=3650)

    # variant -> (names, issuer, not_before, not_after, chain certs appended to the file)
    specs: dict[
        str,
        tuple[
            Sequence[str],
            tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
            _dt.datetime,
            _dt.datetime,
            tuple[x509.Certificate, ...],
        ],
    ] = {
        "valid": (names, (root, root_key), valid_from, valid_to, ()),
        "chain": (names, (inter, inter_key), valid_from, valid_to, (inter,)),
        "incomplete_chain": (names, (inter, inter_key), valid_from, valid_to, ()),
        "expired": (names, (root, root_key), _EXPIRED_NOT_BEFORE, _EXPIRED_NOT_AFTER, ()),
        "not_yet_valid": (
            names,
            (root, root_key),
            future_from,
            future_from + _dt.timedelta(days=365),
            (),
        ),
        "wrong_host": (["wrong.example"], (root, root_key), valid_from, valid_to, ()),
        "self_signed": (names, None, valid_from, valid_to, ()),
    }
    for variant, (leaf_names, issuer, not_before, not_after, chain) in specs.items():
        key = _new_key()
        leaf = _leaf_cert(leaf_names, key, issuer, not_before, not_after)
        pair = certs.variant(variant)
        _write(pair.key, _key_pem(key), 0o644)
        _write(pair.cert, _pem(leaf, *chain), 0o644)
    _write(certs.intermediate_file, _pem(inter), 0o644)
    _write(certs.ca_file, _pem(root), 0o644)
    manifest = {"created": now.isoformat(), "params": params}
    _write(out / _MANIFEST, json.dumps(manifest, indent=2).encode(), 0o644)
    return certs


@dataclass(frozen=True)
class LabCA:
    """A CA that can issue more certificates later: its certificate, its key and its name.

    :func:`generate_lab_certs` keeps no CA key (its set is fixed once written); a ``LabCA``
    is for a test or the demo that re-issues a server certificate while the server runs,
    e.g. from a second CA, so that the certificate's issuer changes but a client trusting
    both CAs still verifies it.
    """

    common_name: str
    cert: Path
    key: Path


def generate_ca(
    directory: str | os.PathLike[str], name: str, common_name: str | None = None
) -> LabCA:
    """Create a root CA as ``directory/name.crt`` and ``directory/name.key`` (PEM, 0644).

    The subject is ``O=pop3mon lab, CN=common_name`` (default ``pop3mon lab <name> CA``),
    built like the lab's own root, so a strict verifier accepts what it issues.
    """
    cn = common_name or f"pop3mon lab {name} CA"
    key = _new_key()
    cert = _ca_cert(cn, key, None, _now(), path_length=0)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca = LabCA(common_name=cn, cert=out / f"{name}.crt", key=out / f"{name}.key")
    _write(ca.key, _key_pem(key), 0o644)
    _write(ca.cert, _pem(cert), 0o644)
    return ca


def issue_server_cert(
    ca: LabCA,
    directory: str | os.PathLike[str],
    name: str,
    names: Sequence[str] = ("localhost", "127.0.0.1"),
    *,
    days: int = 365,
) -> CertPair:
    """Issue a server certificate for ``names`` from ``ca`` into ``directory/name.{crt,key}``.

    A fresh key every time (a re-issue, not a renewal); valid from a day ago for ``days``;
    the first name is the subject's common name, all of them are subjectAltNames.
    """
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca.key} is not an EC private key")
    now = _now()
    key = _new_key()
    leaf = _leaf_cert(
        names, key, (ca_cert, ca_key), now - _dt.timedelta(days=1), now + _dt.timedelta(days=days)
    )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    pair = CertPair(cert=out / f"{name}.crt", key=out / f"{name}.key")
    _write(pair.key, _key_pem(key), 0o644)
    _write(pair.cert, _pem(leaf), 0o644)
    return pair


def self_signed_cert(
    common_name: str,
    names: Sequence[str] = (),
    *,
    days: int = 30,
    ca: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Build a minimal self-signed EC certificate and return it with its key.

    For tests that need one certificate with exact contents rather than a :class:`LabCerts`
    set: subject and issuer are ``CN=common_name`` and nothing else, ``names`` become the
    subjectAltName (IP literals as IP SANs, any other text, hostile text included, as DNS
    names), valid from a day ago until ``days`` from now. No other extension is added unless
    ``ca`` is true: then a critical basicConstraints ``CA:TRUE`` lets a client use the
    certificate itself as its trust anchor.
    """
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=days))
    )
    if names:
        builder = builder.add_extension(_san(names), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    return builder.sign(key, hashes.SHA256()), key


def write_cert_pair(
    directory: str | os.PathLike[str],
    name: str,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
) -> CertPair:
    """Write ``cert`` and ``key`` as ``directory/name.crt`` and ``directory/name.key`` (PEM).

    The files are written like the lab's own (atomically, mode 0644).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    pair = CertPair(cert=out / f"{name}.crt", key=out / f"{name}.key")
    _write(pair.key, _key_pem(key), 0o644)
    _write(pair.cert, _pem(cert), 0o644)
    return pair
