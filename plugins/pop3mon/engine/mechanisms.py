"""The login mechanisms, defined once: one registry row per mechanism.

Config validates ``auth:`` against :data:`AUTH_SETTINGS` and decides the secret reference
kind from :attr:`MechanismSpec.secret`; the engine's policy (``auto``, cleartext refusal)
and SASL exchange read the SASL name, strength and preference from here; reports show the
strength. Adding a mechanism is a row here plus its exchange in :mod:`.auth`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

__all__ = [
    "AUTH_SETTINGS",
    "MECHANISMS",
    "Mechanism",
    "MechanismSpec",
    "SecretKind",
    "Strength",
]

Mechanism = Literal[
    "user",
    "apop",
    "plain",
    "login",
    "cram-md5",
    "cram-sha1",
    "cram-sha256",
    "scram-sha-1",
    "scram-sha-256",
    "xoauth2",
    "oauthbearer",
]
#: strong: the secret never crosses the wire and the server proves it knows it (SCRAM);
#: weak: a digest crosses the wire (APOP, CRAM-*); cleartext: the password itself;
#: token: an OAuth bearer token itself.
Strength = Literal["strong", "weak", "cleartext", "token"]
SecretKind = Literal["password", "token"]


@dataclass(frozen=True)
class MechanismSpec:
    """Facts about one mechanism.

    ``sasl`` is the name in ``CAPA``'s ``SASL`` line ("" for USER/PASS and APOP, which are
    POP3 commands). ``sends_secret``: the secret (or bearer token) itself goes on the wire,
    so it needs TLS or ``allow_cleartext``. ``round_trips`` is the fewest client commands a
    successful login takes. ``preference`` orders ``auth: auto`` (lower is tried first;
    ``None``: never chosen by ``auto``).
    """

    name: Mechanism
    sasl: str
    strength: Strength
    secret: SecretKind
    sends_secret: bool
    round_trips: int
    preference: int | None


MECHANISMS: Final[Mapping[Mechanism, MechanismSpec]] = {
    m.name: m
    for m in (
        MechanismSpec("scram-sha-256", "SCRAM-SHA-256", "strong", "password", False, 3, 0),
        MechanismSpec("scram-sha-1", "SCRAM-SHA-1", "strong", "password", False, 3, 1),
        # CRAM-SHA1/CRAM-SHA256 (Courier): RFC 2195's exchange with a stronger HMAC; the
        # server still keeps a password-equivalent, so they are no stronger a class.
        MechanismSpec("cram-sha256", "CRAM-SHA256", "weak", "password", False, 2, 2),
        MechanismSpec("cram-sha1", "CRAM-SHA1", "weak", "password", False, 2, 3),
        MechanismSpec("cram-md5", "CRAM-MD5", "weak", "password", False, 2, 4),
        MechanismSpec("apop", "", "weak", "password", False, 1, 5),
        MechanismSpec("plain", "PLAIN", "cleartext", "password", True, 1, 6),
        MechanismSpec("login", "LOGIN", "cleartext", "password", True, 2, 7),
        MechanismSpec("user", "", "cleartext", "password", True, 2, 8),
        MechanismSpec("xoauth2", "XOAUTH2", "token", "token", True, 1, None),
        MechanismSpec("oauthbearer", "OAUTHBEARER", "token", "token", True, 1, None),
    )
}
assert set(MECHANISMS) == set(get_args(Mechanism)), "one registry row per Mechanism"

#: What ``auth:`` accepts: ``auto`` picks the strongest offered mechanism that policy
#: allows; ``none`` connects and inspects without logging in.
AUTH_SETTINGS: Final[tuple[str, ...]] = ("auto", "none", *get_args(Mechanism))
