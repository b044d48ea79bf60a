"""Authentication: APOP, USER/PASS and SASL (RFC 1939, 5034, 4616, 2195, 5802, 7628).

Choosing a mechanism is policy (:func:`choose_mechanism`); running it is protocol
(:func:`authenticate`). A secret only ever reaches :meth:`Wire.command` or
:meth:`Wire.sasl_response` wrapped as :class:`Secret`, which the wire refuses to send over an
unencrypted channel unless cleartext was explicitly allowed.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..secrets import Secret
from .errors import (
    AuthError,
    DeadlineExceeded,
    ErrorKind,
    PolicyError,
    ProbeError,
    ProtocolError,
)
from .mechanisms import MECHANISMS
from .wire import Deadline, Sensitive, Status, Wire, sanitize

__all__ = [
    "CLEARTEXT",
    "SCRAM_MAX_ITERATIONS",
    "STRENGTH",
    "apop_digest",
    "authenticate",
    "choose_mechanism",
    "valid_apop_timestamp",
]

STAGE = "auth"
MAX_SASL_ROUNDS = 6
AUTH_LINE_MAX = 255  # RFC 5034: AUTH with an initial response must fit in 255 octets

# Views of the mechanism registry, in the shapes the policy and the exchanges use.
# Strongest first: what "auto" prefers when policy allows several.
PREFERENCE: tuple[str, ...] = tuple(
    m.name
    for m in sorted(MECHANISMS.values(), key=lambda m: m.preference or 0)
    if m.preference is not None
)
STRENGTH: dict[str, str] = {m.name: m.strength for m in MECHANISMS.values()}
# Mechanisms that put the secret itself (or a bearer token) on the wire.
CLEARTEXT = frozenset(m.name for m in MECHANISMS.values() if m.sends_secret)
SASL_NAMES: dict[str, str] = {m.name: m.sasl for m in MECHANISMS.values() if m.sasl}
TOKEN_ONLY: tuple[str, ...] = tuple(m.name for m in MECHANISMS.values() if m.preference is None)
# The CRAM family (RFC 2195 and Courier's CRAM-SHA1/CRAM-SHA256): one exchange, answered
# with "user hex(HMAC-<hash>(secret, challenge))"; only the hash differs.
CRAM_DIGESTS: dict[str, str] = {"cram-md5": "md5", "cram-sha1": "sha1", "cram-sha256": "sha256"}
assert set(CRAM_DIGESTS) == {m for m, s in SASL_NAMES.items() if s.startswith("CRAM-")}

# RFC 1939 §7 + the MD5 collision defence: a msg-id of printable characters with an "@".
_TIMESTAMP = re.compile(rb"<[!-;=?-~]{1,200}@[!-;=?-~]{1,200}>")
_ANY_TIMESTAMP = re.compile(rb"<[^<>]*>")


def valid_apop_timestamp(greeting: bytes) -> bytes | None:
    """The APOP timestamp of a greeting when it is a well-formed msg-id, else ``None``."""
    match = _TIMESTAMP.search(greeting)
    return match.group(0) if match else None


def has_any_timestamp(greeting: bytes) -> bool:
    """True when the greeting contains something that looks like ``<...>``."""
    return _ANY_TIMESTAMP.search(greeting) is not None


def apop_digest(timestamp: bytes, secret: str) -> str:
    """RFC 1939 APOP digest: lowercase hex MD5 of timestamp (with ``<>``) + secret."""
    return hashlib.md5(timestamp + secret.encode("utf-8"), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Offer:
    """What the server advertised: SASL mechanisms, USER, a usable APOP timestamp, STLS."""

    sasl: frozenset[str]
    user: bool
    capa_known: bool
    timestamp: bytes | None
    timestamp_seen: bool
    stls: bool = False

    def names(self) -> tuple[str, ...]:
        """Offered mechanisms in our naming, strongest first."""
        out = [m for m in PREFERENCE if self.offers(m)]
        out += [m for m in TOKEN_ONLY if self.offers(m)]
        return tuple(out)

    def offers(self, mech: str) -> bool:
        """Whether ``mech`` is advertised (APOP: whether a valid timestamp was sent)."""
        if mech == "apop":
            return self.timestamp is not None
        if mech == "user":
            # RFC 2449: USER in CAPA; without CAPA, USER/PASS is the RFC 1939 baseline.
            return self.user or not self.capa_known
        return SASL_NAMES.get(mech, "") in self.sasl


def offer_from(capabilities: Sequence[str] | None, greeting: bytes) -> Offer:
    """Build an :class:`Offer` from CAPA lines and the greeting."""
    sasl: set[str] = set()
    user = stls = False
    for line in capabilities or ():
        words = line.upper().split()
        if not words:
            continue
        if words[0] == "SASL":
            sasl.update(words[1:])
        elif words[0] == "USER":
            user = True
        elif words[0] == "STLS":
            stls = True
    return Offer(
        sasl=frozenset(sasl),
        user=user,
        capa_known=capabilities is not None,
        timestamp=valid_apop_timestamp(greeting),
        timestamp_seen=has_any_timestamp(greeting),
        stls=stls,
    )


# -- "TLS first" --------------------------------------------------------------------------
#: Response codes that say "encrypt first": IMAP's PRIVACYREQUIRED (RFC 5530), which some
#: POP3 servers reuse, and its shorter spelling.
TLS_REQUIRED_CODES = frozenset({"PRIVACYREQUIRED", "PRIVACY"})
# The wording servers use when they refuse a login before TLS, when no code says it:
# Courier "TLS required to log in.", Dovecot "Plaintext authentication disallowed on
# non-secure (SSL/TLS) connections.", others "must issue a STARTTLS command first".
_TLS_WORDS = re.compile(
    r"\b(?:tls|ssl|stls|starttls|encrypt\w*|secure|privacy|plain-?text|clear-?text)\b", re.I
)


def tls_required(detail: str, *, stls: bool) -> str:
    """The reason for a server that wants TLS before a login, with the setting that helps:
    ``security: starttls`` when it offers STLS, else ``security: tls`` (implicit TLS)."""
    fix = "security: starttls" if stls else "security: tls (implicit TLS, usually port 995)"
    return f"server requires TLS before login: use {fix} ({detail})"


def _withheld(mech: str, offer: Offer, *, encrypted: bool) -> PolicyError | None:
    """The capabilities say the server keeps ``mech`` back until TLS: on a plaintext
    channel it offers STLS but not the mechanism (RFC 2595 §4 servers drop USER and the
    cleartext SASL mechanisms before TLS), or no login mechanism at all."""
    if encrypted or not offer.stls or not offer.capa_known:
        return None
    if mech == "user":
        what = "USER"
    elif mech in CLEARTEXT or not offer.sasl:
        what = f"SASL {SASL_NAMES.get(mech, mech.upper())}"
    else:
        return None  # a strong mechanism the server simply lacks: not about TLS
    return PolicyError(
        tls_required(f"before TLS its CAPA lists STLS but not {what}", stls=True),
        kind="tls-required",
        stage=STAGE,
    )


def choose_mechanism(
    wanted: str, offer: Offer, *, encrypted: bool, allow_cleartext: bool, has_token: bool = False
) -> str:
    """Apply policy and return the mechanism to run, or raise :class:`PolicyError`."""
    safe_channel = encrypted or allow_cleartext
    if wanted == "auto":
        for mech in PREFERENCE:
            if not offer.offers(mech):
                continue
            if mech in CLEARTEXT and not safe_channel:
                continue
            if mech in SASL_NAMES and not offer.capa_known:
                continue
            return mech
        offered = ", ".join(m.upper() for m in offer.names()) or "nothing usable"
        if not offer.names() and not encrypted and offer.stls and offer.capa_known:
            raise PolicyError(
                tls_required("before TLS its CAPA lists STLS but no login mechanism", stls=True),
                kind="tls-required",
                stage=STAGE,
            )
        if not safe_channel:
            raise PolicyError(
                f"no mechanism that is safe on an unencrypted connection is offered "
                f"(offered: {offered}); use TLS/STLS or set allow_cleartext: true",
                kind="cleartext-refused",
                stage=STAGE,
            )
        raise PolicyError(
            f"server offers no supported login mechanism (offered: {offered})",
            kind="mechanism-not-offered",
            stage=STAGE,
        )
    if wanted == "apop":
        if offer.timestamp is None:
            why = (
                "greeting timestamp is not a valid msg-id (refusing APOP: MD5 collision risk)"
                if offer.timestamp_seen
                else "greeting has no timestamp"
            )
            raise PolicyError(f"APOP not possible: {why}", kind="apop-no-timestamp", stage=STAGE)
        return wanted
    if wanted in CLEARTEXT and not safe_channel:
        raise PolicyError(
            f"refusing {wanted.upper()} over an unencrypted connection: it would send the "
            "secret in cleartext (use TLS/STLS or set allow_cleartext: true)",
            kind="cleartext-refused",
            stage=STAGE,
        )
    if not offer.offers(wanted) and (withheld := _withheld(wanted, offer, encrypted=encrypted)):
        raise withheld
    if wanted in SASL_NAMES and offer.capa_known and not offer.offers(wanted):
        offered = ", ".join(sorted(offer.sasl)) or "none"
        raise PolicyError(
            f"server does not offer SASL {SASL_NAMES[wanted]} (SASL offered: {offered})",
            kind="mechanism-not-offered",
            stage=STAGE,
        )
    if wanted == "user" and offer.capa_known and not offer.user:
        raise PolicyError(
            "server does not offer USER/PASS (no USER capability)",
            kind="mechanism-not-offered",
            stage=STAGE,
        )
    return wanted


# -- failure mapping --------------------------------------------------------------------
_CODE_KINDS: dict[str, tuple[ErrorKind, str]] = {
    "AUTH": ("auth-rejected", "server rejected the credentials"),
    "IN-USE": ("mailbox-in-use", "mailbox is locked by another session"),
    "LOGIN-DELAY": ("login-delay", "server asks to wait before logging in again"),
    "SYS/TEMP": ("sys-temp", "temporary server-side failure"),
    "SYS/PERM": ("sys-perm", "permanent server-side failure"),
}


def _refused_for_tls(status: Status, mech: str, wire: Wire, *, stls: bool) -> AuthError | None:
    """A refusal on a plaintext channel that is about TLS, not the credentials.

    Decided from the protocol first: a response code that says so; an ``[AUTH]`` before
    any credential (the secret, a digest or proof of it) went out, with STLS offered (it
    cannot be about a password the server never saw). Only then from the words, for
    refusals without a code (Courier) or with an ``[AUTH]`` after the secret that names
    TLS (some servers refuse only at PASS).
    """
    if wire.encrypted:
        return None
    code, text = status.code, status.text
    said = text.split("]", 1)[-1].strip() if code and text.startswith("[") else text
    if code in TLS_REQUIRED_CODES:
        basis = ""
    elif code == "AUTH" and stls and not _TLS_WORDS.search(said) and not wire.secret_sent:
        if wire.derived_sent:
            return None  # a digest or proof went out: [AUTH] may well be about it
        basis = "; [AUTH] before any credential was sent, so not about the password"
    elif code in ("", "AUTH") and _TLS_WORDS.search(said):
        basis = ""
    else:
        return None
    shown = f"[{code}] " if code else ""
    detail = f"server said: {shown}{said or '(no text)'}; mechanism {mech.upper()}{basis}"
    return AuthError(tls_required(detail, stls=stls), kind="tls-required", code=code)


def _refused(status: Status, mech: str) -> AuthError:
    kind, text = _CODE_KINDS.get(status.code, ("auth-failed", "login failed"))
    said = status.text
    if status.code and said.startswith("["):
        said = said.split("]", 1)[-1].strip()
    code = f" [{status.code}]" if status.code else ""
    return AuthError(
        f"{text}{code} (server said: {said or '(no text)'}; mechanism {mech.upper()})",
        kind=kind,
        code=status.code,
    )


# -- SASL plumbing ----------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _read_sasl(wire: Wire) -> Status | bytes:
    """A server line inside AUTH: a final status, or a decoded ``+ challenge``."""
    # The framing is the protocol's (POP3 "+ ", SMTP "334 "); the wire knows it.
    reply = wire.sasl_reply(STAGE)
    if isinstance(reply, bytes):
        payload = reply
        try:
            return base64.b64decode(payload, validate=True) if payload else b""
        except (binascii.Error, ValueError):
            wire.sasl_response("*", STAGE)
            _drain_cancel(wire)
            raise ProtocolError(
                "server sent invalid base64 in a SASL challenge",
                kind="sasl-bad-base64",
                stage=STAGE,
            ) from None
    return reply


def _cancel(wire: Wire) -> None:
    """Send ``*`` and read the server's answer (best effort)."""
    try:
        wire.sasl_response("*", STAGE)
    except ProbeError:
        wire.end_sasl()
        return
    _drain_cancel(wire)


def _drain_cancel(wire: Wire) -> None:
    """After sending ``*``, read the server's ``-ERR`` (best effort)."""
    try:
        wire.read_line(STAGE)
    except Exception:  # noqa: BLE001 - the exchange has already failed; keep that reason
        pass
    wire.end_sasl()


Responder = Callable[[bytes, int], "str | Secret"]


def _sasl(
    wire: Wire,
    mech: str,
    initial: str | Secret | None,
    respond: Responder,
    final_check: Callable[[bytes], None] | None = None,
) -> Status:
    name = SASL_NAMES[mech]
    # Send the initial response inline when it fits (RFC 5034 §4), else wait for "+ ".
    sent_initial = False
    if initial is not None:
        size = (
            len(f"AUTH {name} ")
            + len(initial.reveal() if isinstance(initial, Secret) else initial)
            + 2
        )
        if size <= AUTH_LINE_MAX:
            wire.command("AUTH", name, initial or "=", stage=STAGE)
            sent_initial = True
    if not sent_initial:
        wire.command("AUTH", name, stage=STAGE)
    rounds = 0
    # Set when the initial response went out as the answer to the server's first, empty
    # challenge: that round is not one the mechanism's responder has to answer.
    deferred = 0
    while True:
        reply = _read_sasl(wire)
        if isinstance(reply, Status):
            wire.end_sasl()
            return reply
        rounds += 1
        if rounds > MAX_SASL_ROUNDS:
            wire.sasl_response("*", STAGE)
            _drain_cancel(wire)
            raise ProtocolError(
                f"SASL {name} exchange exceeded {MAX_SASL_ROUNDS} challenges; cancelled",
                kind="sasl-too-many-rounds",
                stage=STAGE,
            )
        if not sent_initial and initial is not None and rounds == 1:
            sent_initial = True
            deferred = 1
            wire.sasl_response(initial, STAGE)
            continue
        try:
            if final_check is not None and reply.startswith(b"v="):
                final_check(reply)
                answer: str | Secret = ""
            else:
                answer = respond(reply, rounds - deferred)
        except ProbeError:
            # We give up mid-exchange (malformed SCRAM message, bad server signature):
            # cancel with "*" so the server leaves the AUTH state and a later QUIT is read
            # as a command, not as one more SASL response.
            _cancel(wire)
            raise
        wire.sasl_response(answer, STAGE)


def _no_more(mech: str, seen: list[bytes] | None = None) -> Responder:
    def respond(challenge: bytes, rounds: int) -> str:
        # XOAUTH2/OAUTHBEARER: an error challenge gets an empty (or ^A) reply, after which
        # the server sends -ERR (RFC 7628 §3.2.3); other mechanisms expect nothing more.
        if seen is not None:
            seen.append(challenge)
        if mech == "oauthbearer":
            return _b64(b"\x01")
        return ""

    return respond


def _token(wire: Wire, mech: str, payload: Secret) -> Status:
    """XOAUTH2/OAUTHBEARER: a refusal comes as an error challenge (JSON with the HTTP-like
    status and scope) before the ``-ERR``; keep it in the reason, it says why."""
    seen: list[bytes] = []
    status = _sasl(wire, mech, payload, _no_more(mech, seen))
    if not status.ok and seen and seen[0]:
        detail = sanitize(seen[0], 200)
        text = f"{status.text}; error challenge: {detail}" if status.text else detail
        status = dataclasses.replace(status, text=text)
    return status


# -- SCRAM (RFC 5802) -------------------------------------------------------------------
#: Most PBKDF2 iterations a server may ask for. RFC 7677 asks for at least 4096; OWASP's
#: 2023 advice for PBKDF2-HMAC-SHA256 is 600000. One million takes about half a second of
#: CPU here: more is a misconfigured or hostile server, refused before any work.
SCRAM_MAX_ITERATIONS = 1_000_000


class _Derivation:
    """One SaltedPassword being derived (or derived) for every login that needs it."""

    __slots__ = ("done", "error", "key")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.key: bytes | None = None
        self.error: BaseException | None = None

    def run(self, algo: str, password: bytes, salt: bytes, iterations: int) -> None:
        try:
            self.key = hashlib.pbkdf2_hmac(algo, password, salt, iterations)
        except (ValueError, OverflowError, MemoryError) as exc:  # handed to the waiting probes
            self.error = exc
        finally:
            self.done.set()


#: SaltedPassword per (hash, password, salt, iterations), as RFC 5802 section 5.1 suggests
#: a client keeps it: a server that stores SCRAM credentials (salt and iteration count fixed
#: per account) gets one PBKDF2 per account and run from pop3mon, not one per login, and
#: logins of the same account in flight at once share the one being derived. The value is
#: password-equivalent for that server only, lives in this process's memory only (never
#: in a report), and the oldest entries go past :data:`_DERIVED_MAX`.
#: Keyed by an HMAC of the password under a key of this process, never the password
#: itself: the cache holds no second copy of it beside the run's Secret.
_DERIVED: collections.OrderedDict[tuple[str, bytes, bytes, int], _Derivation] = (
    collections.OrderedDict()
)
_DERIVED_MAX = 64
_DERIVED_KEY = os.urandom(32)
_DERIVED_LOCK = threading.Lock()
#: How many PBKDF2 derivations this process started (the self-tests read it).
derivations_started = 0


def forget_salted_passwords() -> None:
    """Drop every remembered SaltedPassword (a password rotation in a long-lived process;
    tests that must see a derivation happen)."""
    with _DERIVED_LOCK:
        _DERIVED.clear()


def _salted_password(
    deadline: Deadline, algo: str, password: bytes, salt: bytes, iterations: int
) -> bytes:
    """SCRAM's SaltedPassword (PBKDF2), derived once per account and salt, within the deadline.

    The derivation runs in a worker thread (hashlib releases the GIL while it computes) that
    the probe waits for only until its deadline; a challenge arriving just before it ends
    the probe on time, and the abandoned computation, bounded by
    :data:`SCRAM_MAX_ITERATIONS`, ends on its own shortly after (and serves the next login).
    """
    global derivations_started
    cache_key = (algo, hmac.digest(_DERIVED_KEY, password, "sha256"), salt, iterations)
    with _DERIVED_LOCK:
        derivation = _DERIVED.get(cache_key)
        start = derivation is None or derivation.error is not None
        if start:
            derivation = _DERIVED[cache_key] = _Derivation()
            derivations_started += 1
            while len(_DERIVED) > _DERIVED_MAX:
                _DERIVED.popitem(last=False)
        else:
            _DERIVED.move_to_end(cache_key)
    assert derivation is not None
    if start:
        try:
            threading.Thread(
                target=derivation.run,
                args=(algo, password, salt, iterations),
                name="pop3mon-scram-key",
                daemon=True,
            ).start()
        except BaseException as exc:
            # No thread (a pid limit): an entry nobody finishes would make every later
            # login of this account wait out its deadline. Fail this one, forget the entry.
            derivation.error = exc
            derivation.done.set()
            with _DERIVED_LOCK:
                if _DERIVED.get(cache_key) is derivation:
                    del _DERIVED[cache_key]
            raise
    if not derivation.done.wait(max(0.0, deadline.remaining())):
        raise DeadlineExceeded(
            f"deadline of {deadline.seconds:g}s exceeded while computing the SCRAM key "
            f"({iterations} iterations)",
            stage=STAGE,
        )
    if derivation.key is None:
        raise RuntimeError("SCRAM key derivation failed") from derivation.error
    return derivation.key


def _saslname(user: str) -> str:
    return user.replace("=", "=3D").replace(",", "=2C")


def _scram(wire: Wire, mech: str, username: str, secret: Secret) -> Status:
    algo = "sha256" if mech == "scram-sha-256" else "sha1"
    nonce = base64.b64encode(os.urandom(18)).decode("ascii")
    bare = f"n={_saslname(username)},r={nonce}"
    state: dict[str, bytes] = {}

    def respond(challenge: bytes, rounds: int) -> str | Secret:
        if rounds > 1 or "server_first" in state:
            return ""
        try:
            text = challenge.decode("ascii")
            attrs = dict(item.split("=", 1) for item in text.split(","))
            snonce, salt, iters = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        except (ValueError, KeyError, UnicodeDecodeError, binascii.Error):
            raise ProtocolError(
                "malformed SCRAM server-first message", kind="sasl-malformed", stage=STAGE
            ) from None
        if not snonce.startswith(nonce) or len(snonce) <= len(nonce):
            raise ProtocolError(
                "SCRAM server nonce does not extend the client nonce (possible attack)",
                kind="sasl-malformed",
                stage=STAGE,
            )
        if iters < 1:
            raise ProtocolError(
                f"SCRAM iteration count {iters} out of range", kind="sasl-malformed", stage=STAGE
            )
        if iters > SCRAM_MAX_ITERATIONS:
            raise PolicyError(
                f"server asks for {iters} SCRAM iterations, more than pop3mon computes "
                f"(cap {SCRAM_MAX_ITERATIONS}; servers use 4096 to a few hundred thousand); "
                "login cancelled",
                kind="scram-iterations",
                stage=STAGE,
            )
        salted = _salted_password(wire.deadline, algo, secret.reveal().encode("utf-8"), salt, iters)
        client_key = hmac.new(salted, b"Client Key", algo).digest()
        stored_key = hashlib.new(algo, client_key).digest()
        without_proof = f"c=biws,r={snonce}"
        auth_message = f"{bare},{text},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, algo).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", algo).digest()
        state["server_signature"] = hmac.new(server_key, auth_message, algo).digest()
        state["server_first"] = challenge
        return Sensitive(_b64(f"{without_proof},p={_b64(proof)}".encode()))

    def final_check(message: bytes) -> None:
        expected = state.get("server_signature")
        try:
            got = base64.b64decode(message[2:].split(b",")[0], validate=True)
        except (binascii.Error, ValueError):
            got = b""
        if expected is None or not hmac.compare_digest(expected, got):
            raise AuthError(
                "SCRAM server signature is invalid: the server does not know the password "
                "(possible man-in-the-middle)",
                kind="scram-server-signature",
            )
        state["verified"] = b"1"

    status = _sasl(wire, mech, _b64(f"n,,{bare}".encode()), respond, final_check)
    if status.ok and "verified" not in state:
        # RFC 5034 forbids data with +OK, so Dovecot sends v= as a challenge; a server that
        # skips it never proved it knows the password.
        sig = status.text.strip("[]")
        if not sig.startswith("v="):
            raise AuthError(
                "SCRAM server accepted the login without sending its signature: it never "
                "proved it knows the password (possible man-in-the-middle)",
                kind="scram-server-signature",
            )
        final_check(sig.encode())
    return status


# -- entry point ------------------------------------------------------------------------
def authenticate(
    wire: Wire,
    mech: str,
    username: str,
    secret: Secret,
    *,
    timestamp: bytes | None,
    host: str,
    port: int,
    stls_offered: bool = False,
) -> Status:
    """Run ``mech`` and return the final status (``ok`` or not); raise on protocol errors,
    and raise ``tls-required`` for a refusal that says "TLS first" (see
    :func:`_refused_for_tls`; ``stls_offered``: the capabilities in use list STLS)."""
    status = _exchange(wire, mech, username, secret, timestamp=timestamp, host=host, port=port)
    if not status.ok and (tls := _refused_for_tls(status, mech, wire, stls=stls_offered)):
        raise tls
    return status


def _exchange(
    wire: Wire,
    mech: str,
    username: str,
    secret: Secret,
    *,
    timestamp: bytes | None,
    host: str,
    port: int,
) -> Status:
    if mech == "user":
        wire.command("USER", username, stage=STAGE)
        status = wire.status(STAGE)
        if not status.ok:
            return status
        wire.command("PASS", secret, stage=STAGE)
        return wire.status(STAGE)
    if mech == "apop":
        assert timestamp is not None  # choose_mechanism guarantees it
        digest = Sensitive(apop_digest(timestamp, secret.reveal()))
        wire.command("APOP", username, digest, stage=STAGE)
        return wire.status(STAGE)
    if mech == "plain":
        payload = Secret(_b64(f"\0{username}\0{secret.reveal()}".encode()), "sasl-plain")
        return _sasl(wire, mech, payload, _no_more(mech))
    if mech == "login":
        user_b64 = _b64(username.encode())
        pass_b64 = Secret(_b64(secret.reveal().encode()), "sasl-login")
        sent: set[str] = set()

        def login_respond(challenge: bytes, rounds: int) -> str | Secret:
            # Each answer goes out once: a server that keeps prompting gets empty lines
            # until the round cap cancels, never the password again and again.
            prompt = challenge.lower()
            if "user" not in sent and (
                b"user" in prompt or (rounds == 1 and b"pass" not in prompt)
            ):
                sent.add("user")
                return user_b64
            if "pass" not in sent:
                sent.add("pass")
                return pass_b64
            return ""

        return _sasl(wire, mech, None, login_respond)
    if mech in CRAM_DIGESTS:
        algo = CRAM_DIGESTS[mech]

        def cram_respond(challenge: bytes, rounds: int) -> str:
            if rounds > 1:
                return ""
            digest = hmac.new(secret.reveal().encode(), challenge, algo).hexdigest()
            return Sensitive(_b64(f"{username} {digest}".encode()))

        return _sasl(wire, mech, None, cram_respond)
    if mech in ("scram-sha-1", "scram-sha-256"):
        return _scram(wire, mech, username, secret)
    if mech == "xoauth2":
        payload = Secret(
            _b64(f"user={username}\x01auth=Bearer {secret.reveal()}\x01\x01".encode()), "xoauth2"
        )
        return _token(wire, mech, payload)
    if mech == "oauthbearer":
        gs2 = f"n,a={_saslname(username)},\x01host={host}\x01port={port}\x01"
        payload = Secret(_b64(f"{gs2}auth=Bearer {secret.reveal()}\x01\x01".encode()), "oauth")
        return _token(wire, mech, payload)
    raise PolicyError(f"unknown mechanism {mech!r}", kind="mechanism-unknown", stage=STAGE)


def refused(status: Status, mech: str) -> AuthError:
    """Turn a failed final status into an :class:`AuthError` naming the response code."""
    return _refused(status, mech)
