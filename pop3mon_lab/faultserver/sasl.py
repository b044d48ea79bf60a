"""The SASL mechanisms of the fault server (RFC 4422 profile for POP3, RFC 5034).

Each mechanism is a generator (:data:`SaslExchange`): it yields challenge text and receives
the client's decoded responses; ``Session.cmd_auth`` drives it over the wire. They live in
the :class:`SaslMechanisms` mixin so a scenario subclassing ``Session`` can still override
any single mechanism, or :meth:`SaslMechanisms.sasl_exchange` as a whole.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import ClassVar

from .common import Options, as_text, b64

__all__ = ["SaslExchange", "SaslMechanisms", "SaslOutcome"]


@dataclass(frozen=True)
class SaslOutcome:
    """End of a SASL exchange: who, whether the credentials were right, what secret the
    client sent (for the credential-echo scenario) and an optional final line overriding
    the standard answer."""

    user: str
    ok: bool
    secret: str = ""
    reply: str = ""


SaslExchange = Generator[str, bytes, SaslOutcome]
"""A SASL mechanism: yields base64 challenge text, receives decoded client responses."""


def _scram_attrs(text: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and len(key) == 1:
            attrs.setdefault(key, value)
    return attrs


def _oauth_fields(text: str) -> dict[str, str]:
    # key=value pairs separated by ^A (XOAUTH2 and RFC 7628 share the layout).
    fields: dict[str, str] = {}
    for part in text.split("\x01"):
        key, sep, value = part.partition("=")
        if sep:
            fields.setdefault(key, value)
    return fields


_CRAM_HASHES = {"CRAM-MD5": "md5", "CRAM-SHA1": "sha1", "CRAM-SHA256": "sha256"}


class SaslMechanisms:
    """Every SASL mechanism the fault server implements; mixed into ``Session``."""

    # Set by Channel.__init__ in the Session this class is mixed into.
    opts: Options
    #: SCRAM iteration count in the server-first message (RFC 7677's minimum keeps a login
    #: in the millisecond range; scenarios raise it).
    scram_iterations: ClassVar[int] = 4096

    def before_server_first(self) -> bool:
        """Hook run before the SCRAM server-first message; False ends the exchange."""
        return True

    def check_password(self, user: str, password: str) -> bool:
        """Whether the pair matches the configured users."""
        expected = self.opts.users.get(user)
        return expected is not None and hmac.compare_digest(
            expected.encode("utf-8", "surrogateescape"),
            password.encode("utf-8", "surrogateescape"),
        )

    def sasl_exchange(self, mech: str, first: bytes | None) -> SaslExchange:
        """The generator implementing ``mech``; ``first`` is the initial response."""
        if mech == "PLAIN":
            return self.sasl_plain(first)
        if mech == "LOGIN":
            return self.sasl_login(first)
        if mech in _CRAM_HASHES:
            return self.sasl_cram(_CRAM_HASHES[mech], first)
        if mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
            return self.sasl_scram("sha1" if mech == "SCRAM-SHA-1" else "sha256", first)
        if mech == "XOAUTH2":
            return self.sasl_xoauth2(first)
        return self.sasl_oauthbearer(first)

    def sasl_plain(self, first: bytes | None) -> SaslExchange:
        """PLAIN (RFC 4616): authzid NUL authcid NUL passwd."""
        data = first if first is not None else (yield "")
        parts = as_text(data).split("\0")
        if len(parts) != 3:
            return SaslOutcome("", False, as_text(data))
        authzid, user, password = parts
        ok = authzid in ("", user) and self.check_password(user, password)
        return SaslOutcome(user, ok, password)

    def sasl_login(self, first: bytes | None) -> SaslExchange:
        """LOGIN (draft-murchison-sasl-login): username and password prompts."""
        user = first if first is not None else (yield b64("Username:"))
        password = yield b64("Password:")
        name, secret = as_text(user), as_text(password)
        return SaslOutcome(name, self.check_password(name, secret), secret)

    def sasl_cram(self, hash_name: str, first: bytes | None) -> SaslExchange:
        """CRAM-MD5 (RFC 2195) and Courier's CRAM-SHA1/CRAM-SHA256 (same exchange, other
        HMAC hash)."""
        challenge = f"<{os.getpid()}.{time.time_ns()}@{self.opts.hostname}>"
        response = as_text((yield b64(challenge)))
        user, _, digest = response.rpartition(" ")
        password = self.opts.users.get(user)
        ok = False
        if password is not None:
            expected = hmac.new(
                password.encode("utf-8", "surrogateescape"), challenge.encode(), hash_name
            ).hexdigest()
            ok = hmac.compare_digest(expected, digest)
        return SaslOutcome(user, ok, digest)

    def sasl_scram(self, hash_name: str, first: bytes | None) -> SaslExchange:
        """SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802, 7677) without channel binding."""
        client_first = as_text(first if first is not None else (yield ""))
        gs2_flag, _, rest = client_first.partition(",")
        authzid, _, bare = rest.partition(",")
        if gs2_flag not in ("n", "y") or not bare:
            return SaslOutcome("", False)
        gs2_header = f"{gs2_flag},{authzid},"
        attrs = _scram_attrs(bare)
        user = attrs.get("n", "").replace("=2C", ",").replace("=3D", "=")
        client_nonce = attrs.get("r", "")
        if not user or not client_nonce:
            return SaslOutcome(user, False)
        # Deterministic salt per user keeps runs reproducible.
        salt = hashlib.sha256(b"pop3mon-salt:" + user.encode("utf-8", "surrogateescape"))
        salt_bytes = salt.digest()[:16]
        iterations = self.scram_iterations
        if not self.before_server_first():
            return SaslOutcome(user, False)
        nonce = client_nonce + base64.b64encode(os.urandom(18)).decode("ascii")
        server_first = f"r={nonce},s={b64(salt_bytes)},i={iterations}"
        client_final = as_text((yield b64(server_first)))
        without_proof, sep, proof_b64 = client_final.rpartition(",p=")
        final_attrs = _scram_attrs(without_proof)
        if not sep or final_attrs.get("c") != b64(gs2_header) or final_attrs.get("r") != nonce:
            return SaslOutcome(user, False, proof_b64)
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except binascii.Error:
            return SaslOutcome(user, False, proof_b64)
        password = self.opts.users.get(user)
        if password is None:
            return SaslOutcome(user, False, proof_b64)
        salted = hashlib.pbkdf2_hmac(
            hash_name, password.encode("utf-8", "surrogateescape"), salt_bytes, iterations
        )
        client_key = hmac.digest(salted, b"Client Key", hash_name)
        stored_key = hashlib.new(hash_name, client_key).digest()
        auth_message = f"{bare},{server_first},{without_proof}".encode("utf-8", "surrogateescape")
        client_signature = hmac.digest(stored_key, auth_message, hash_name)
        if len(proof) != len(client_signature):
            return SaslOutcome(user, False, proof_b64)
        recovered = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(hashlib.new(hash_name, recovered).digest(), stored_key):
            return SaslOutcome(user, False, proof_b64)
        server_key = hmac.digest(salted, b"Server Key", hash_name)
        server_signature = hmac.digest(server_key, auth_message, hash_name)
        # POP3 has no "success with data": the server-final message goes out as one more
        # challenge and the client answers with an empty line (RFC 5034 §4).
        yield b64("v=" + b64(server_signature))
        return SaslOutcome(user, True, proof_b64)

    def sasl_xoauth2(self, first: bytes | None) -> SaslExchange:
        """XOAUTH2 (Google): ``user=U^Aauth=Bearer T^A^A``; token = the user's password."""
        data = as_text(first if first is not None else (yield ""))
        fields = _oauth_fields(data)
        user = fields.get("user", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        if self.check_password(user, token):
            return SaslOutcome(user, True, token)
        error = {"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"}
        yield b64(json.dumps(error))
        return SaslOutcome(user, False, token)

    def sasl_oauthbearer(self, first: bytes | None) -> SaslExchange:
        """OAUTHBEARER (RFC 7628); token = the user's password."""
        data = as_text(first if first is not None else (yield ""))
        header, _, kvpairs = data.partition("\x01")
        gs2 = _scram_attrs(header.partition(",")[2].rstrip(","))
        fields = _oauth_fields(kvpairs)
        user = gs2.get("a", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        if self.check_password(user, token):
            return SaslOutcome(user, True, token)
        yield b64(json.dumps({"status": "invalid_token", "scope": "mail"}))
        return SaslOutcome(user, False, token)
