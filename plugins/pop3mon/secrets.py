"""Secret values, the one rule a secret must pass, and the process-wide redactor.

A :class:`Secret` never shows its value through ``repr``/``str``/``format``, pickling or
equality; the value leaves the object only through :meth:`Secret.reveal`, which the engine
calls where bytes are written to the socket (or hashed for a digest mechanism).

:func:`secret_problem` is the one rule for a usable secret, applied to every value from an
environment variable or a file, whatever mechanism will carry it: one line of text, no
control character, at least :data:`MIN_SECRET_CHARS` characters, at most
:data:`MAX_SECRET_BYTES` bytes. A refused secret is never sent.

Every secret created here is also registered with :data:`REDACTOR`, which scrubs it from
any text before that text reaches a result, a report, a log line or an exception message.
It matches by meaning, not only by exact bytes, because a server that echoes a credential
back rarely echoes it verbatim. Redacted, for each registered value:

* the value in any letter case, each character as itself or in one layer of escaping, mixed
  freely: JSON/JavaScript ``\\u00e4`` (and surrogate pairs), ``\\/``-style backslash escapes,
  ``\\xe4``, percent-encoding (``%C3%A4`` or the Latin-1 ``%E4``, ``+`` for a space),
  quoted-printable/RFC 2047 (``=C3=A4``, ``_``), HTML/XML character references
  (``&#228;``, ``&#xe4;``, ``&amp;``), and a non-ASCII character turned into ``?`` or
  U+FFFD by a lossy decoding;
* the same for its Unicode normalisations (NFC, NFD, NFKC) and its mojibake: the UTF-8
  bytes read as Latin-1 or Windows-1252;
* base64 (standard and URL-safe) of its UTF-8, Latin-1 and Windows-1252 bytes and of its
  JSON escaping (an RFC 7628 error challenge is base64 of JSON), including inside a longer
  base64 blob at any offset: the three "phase cores", the characters that encode only
  secret bits at each of the three alignments, leaving at most two characters (a few
  bits) at each end of the secret;
* hex of those bytes, in either case.

Not covered: other combinations of two encoding layers, a secret split across lines, a
partial echo (a server that trims or truncates what it echoes). Values shorter than four
characters are never registered: they would shred ordinary text; :func:`secret_problem`
refuses anything shorter than :data:`MIN_SECRET_CHARS`, so such a value is never sent.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NoReturn

__all__ = [
    "MAX_SECRET_BYTES",
    "MIN_SECRET_CHARS",
    "REDACTED",
    "REDACTOR",
    "Redactor",
    "Secret",
    "secret_problem",
]

REDACTED = "[REDACTED]"

#: The shortest secret pop3mon sends. A monitoring account's password is machine-made and
#: only typed into a secret store, so length costs nothing; and a short value cannot be
#: told apart from ordinary text when it has to be redacted from a server's answer.
MIN_SECRET_CHARS: Final = 8
#: The longest secret, in UTF-8 bytes, by kind (``engine.mechanisms.SecretKind``). A
#: password longer than 4 KiB is the wrong file (a key bundle, a log); OAuth access tokens
#: with many claims run to a few KiB.
MAX_SECRET_BYTES: Final[Mapping[str, int]] = MappingProxyType({"password": 4096, "token": 16384})

# str.splitlines() boundaries: each would end a POP3 command line or split a SASL payload.
_LINE_BREAKS: Final = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def secret_problem(value: str, kind: str = "password") -> str:
    """Why ``value`` cannot be used as a secret of ``kind``, or ``""`` when it can.

    The one rule for every secret, whatever mechanism carries it (USER/PASS, APOP, every
    SASL mechanism), so that no mechanism sends what another refuses. The answer is a
    phrase to follow a subject ("environment variable X ", "password file F ") and never
    contains any part of the value.
    """
    if not value:
        return "is empty"
    if any(unicodedata.category(c) == "Cs" for c in value):
        return "is not valid UTF-8 text"
    if any(c in _LINE_BREAKS for c in value):
        return "contains a line break (a secret is one line)"
    if "\0" in value:
        return "contains a NUL character"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return "contains a control character (tab, escape, ...)"
    limit = MAX_SECRET_BYTES.get(kind, MAX_SECRET_BYTES["password"])
    if len(value.encode("utf-8")) > limit:
        return f"is longer than {limit} bytes"
    if len(value) < MIN_SECRET_CHARS:
        return (
            f"is shorter than {MIN_SECRET_CHARS} characters: too short for a monitoring "
            "account, and too short to redact reliably from server answers"
        )
    return ""


# -- the redactor ---------------------------------------------------------------------------

# Shorter values would shred ordinary text (see the module docstring).
_MIN_REGISTERED: Final = 4
#: Bounds of :class:`Redactor`'s memo: texts up to this length, at most this many (a few MB).
_MEMO_TEXT: Final = 256
_MEMO_ENTRIES: Final = 50_000
# A base64 core shorter than this matches ordinary words.
_MIN_CORE: Final = 6
_HTML_NAMED: Final[Mapping[str, str]] = MappingProxyType(
    {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}
)
_B64_ENCODERS: Final = (base64.b64encode, base64.urlsafe_b64encode)


def _cp1252(raw: bytes) -> str:
    # Windows-1252 leaves five bytes undefined; browsers (WHATWG) show them as C1 controls.
    return "".join(
        chr(b) if b in (0x81, 0x8D, 0x8F, 0x90, 0x9D) else bytes([b]).decode("cp1252") for b in raw
    )


def _byte_forms(value: str) -> list[bytes]:
    """The value's bytes in every encoding a server might have used, and the UTF-8 of its
    JSON escaping: an RFC 7628 error challenge is base64 of JSON that may carry it."""
    out = [value.encode("utf-8", "surrogateescape")]
    for codec in ("latin-1", "cp1252"):
        try:
            out.append(value.encode(codec))
        except UnicodeEncodeError:
            continue
    for ascii_only in (True, False):
        escaped = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
        out.append(escaped.encode("utf-8", "surrogateescape"))
        out.append(escaped.replace("/", "\\/").encode("utf-8", "surrogateescape"))
    return list(dict.fromkeys(out))


def _text_forms(value: str) -> list[tuple[str, bool]]:
    """``(text, lossy)``: the value, its normalisations and its mojibake. ``lossy``: a
    non-ASCII character may also show as ``?``/U+FFFD (not for mojibake, already lossy)."""
    out: list[tuple[str, bool]] = [(value, True)]
    for form in ("NFC", "NFD", "NFKC"):
        normal = unicodedata.normalize(form, value)
        if (normal, True) not in out:
            out.append((normal, True))
    if not value.isascii():
        raw = value.encode("utf-8", "surrogateescape")
        views = [raw.decode("latin-1"), _cp1252(raw)]
        # The other way round: its Latin-1/Windows-1252 bytes ('?' where a character has
        # none) read as UTF-8 by us.
        for codec in ("latin-1", "cp1252"):
            views.append(value.encode(codec, "replace").decode("utf-8", "replace"))
        for view in views:
            if view != value and (view, False) not in out:
                out.append((view, False))
    return out


def _base64_forms(raw: bytes) -> set[str]:
    """The whole base64 of ``raw`` and, for each of the three alignments it can have inside
    a longer blob, the characters that encode only bits of ``raw``."""
    out: set[str] = set()
    for encode in _B64_ENCODERS:
        whole = encode(raw).decode("ascii")
        out.update((whole, whole.rstrip("=")))
        for phase in range(3):
            enc = encode(b"\0" * phase + raw).decode("ascii")
            # Character k carries bits [6k, 6k+6); the secret's are [8*phase, 8*(phase+n)).
            core = enc[-(-8 * phase // 6) : 8 * (phase + len(raw)) // 6]
            if len(core) >= _MIN_CORE:
                out.add(core)
    return out


def _char_pattern(c: str) -> str:
    """One character as itself or in one layer of any escaping a server may apply."""
    cp = ord(c)
    utf8 = c.encode("utf-8", "surrogatepass")
    alts = [re.escape(c)]
    if not c.isascii():  # explicit case partners: IGNORECASE misses some (dotless i ...)
        alts += [re.escape(x) for x in sorted({c.upper(), c.lower()} - {c}) if len(x) == 1]
    units = [cp] if cp < 0x10000 else [0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + (cp & 0x3FF)]
    alts.append("".join(rf"\\u{u:04x}" for u in units))  # JSON, JavaScript, Python
    if cp > 0xFFFF:
        alts.append(rf"\\U{cp:08x}")
    if cp < 0x100:
        alts.append(rf"\\x{cp:02x}")
    if not c.isalnum():
        alts.append(r"\\" + re.escape(c))  # \/ \" \\ and shell-style escapes
    for prefix in ("%", "="):  # percent-encoding, quoted-printable
        alts.append("".join(f"{prefix}{b:02x}" for b in utf8))
        if 0x80 <= cp < 0x100:
            alts.append(f"{prefix}{cp:02x}")
    if c == " ":
        alts += [r"\+", "_"]  # form encoding, RFC 2047 Q-encoding
    alts += [f"&\\#0*{cp};", f"&\\#x0*{cp:x};"]
    if c in _HTML_NAMED:
        alts.append(f"&{_HTML_NAMED[c]};")
    group = "(?:" + "|".join(alts) + ")"
    # Sanitising strips control characters (mojibake of UTF-8 has C1 ones): optional.
    return group + "?" if unicodedata.category(c) == "Cc" else group


def _text_pattern(text: str, lossy: bool) -> tuple[str, int]:
    """The pattern of one text form and the shortest text it matches."""
    parts: list[str] = []
    shortest = 0
    i = 0
    while i < len(text):
        j = i
        if lossy and not text[i].isascii():
            while j < len(text) and not text[j].isascii():
                j += 1
            run = text[i:j]
            width = len(run.encode("utf-8", "surrogatepass"))
            # One run of non-ASCII characters decoded lossily: one '?' or U+FFFD per
            # character or per byte. A single bounded class keeps backtracking linear.
            lossy_run = f"[\ufffd?]{{{len(run)},{width}}}"
            parts.append("(?:" + "".join(map(_char_pattern, run)) + "|" + lossy_run + ")")
            shortest += len(run)
            i = j
            continue
        parts.append(_char_pattern(text[i]))
        shortest += unicodedata.category(text[i]) != "Cc"
        i += 1
    return "".join(parts), shortest


def _fold(text: str) -> str:
    """Letter case folded so that a character and its single-character upper or lower case
    partner (what the patterns accept) fold alike: "ı" and "I", "ς" and "Σ"."""
    return text.upper().lower()


@dataclass(frozen=True)
class _Needle:
    """Everything that reveals one registered value, and cheap tests that say when looking
    is worth it (scrub() runs on every string every report writes: close to a million calls
    for 1000 connection types, and each regex pass costs far more than a substring test).

    ``literals`` (base64 forms, longest first) are replaced as they are when one of the
    shortest ones (``probes``) occurs. ``pattern`` matches the text forms and hex. Without
    any escape introducer (``escapes``) in the text, a match can only be a text form in
    some letter case (``folded``, by :func:`_fold`). With one, ``gate`` first looks for a
    run of at least ``shortest`` characters all from the alphabet a match is made of.
    """

    size: int  # the value's length: longer values are scrubbed first
    shortest: int  # no text shorter than this can contain any match
    literals: tuple[str, ...]
    probes: tuple[str, ...]
    escapes: tuple[str, ...]
    folded: tuple[str, ...]
    gate: re.Pattern[str]
    pattern: re.Pattern[str]

    def scrub(self, text: str) -> str:
        """``text`` without any form of this value."""
        if len(text) < self.shortest:
            return text
        # Plain loops: generator expressions cost more than the substring tests themselves.
        for probe in self.probes:
            if probe in text:
                for literal in self.literals:
                    text = text.replace(literal, REDACTED)
                break
        for c in self.escapes:
            if c in text:
                if self.gate.search(text) is None:
                    return text
                return self.pattern.sub(REDACTED, text)
        folded = _fold(text)
        for form in self.folded:
            if form in folded:
                return self.pattern.sub(REDACTED, text)
        return text


# Characters the escapes of _char_pattern are made of, beyond the escaped character.
_ESCAPE_ALPHABET: Final = "\\uUxX0123456789abcdefABCDEF%=&#;"


def _needle(value: str) -> _Needle:
    literals: set[str] = set()
    hexes: set[str] = set()
    for raw in _byte_forms(value):
        literals |= _base64_forms(raw)
        hexes.add(raw.hex())
    forms = _text_forms(value)
    texts = [_text_pattern(text, lossy) for text, lossy in forms]
    branches = [f"(?i:{x})" for x in sorted(hexes)]
    branches += [f"(?i:{pattern})" for pattern, _ in texts]
    shortest = max(1, min([*(len(x) for x in hexes), *(n for _, n in texts)]))
    # A match without an escape: a text form in some letter case, with or without its
    # control characters (sanitising strips them).
    folded = set(hexes)
    introducers = ["\\", "%", "=", "&"]
    alphabet = set(_ESCAPE_ALPHABET)
    for text, _ in forms:
        folded.add(_fold(text))
        folded.add(_fold("".join(c for c in text if unicodedata.category(c) != "Cc")))
        for c in text:
            alphabet.update(x for x in (c, c.upper(), c.lower()) if len(x) == 1)
            if c in _HTML_NAMED:
                alphabet.update(_HTML_NAMED[c] + _HTML_NAMED[c].upper())
    if " " in value:
        introducers += ["+", "_"]
    if not value.isascii():
        introducers += ["?", "\ufffd"]
    alphabet.update(introducers)
    # Longest first: the whole base64 goes before its core. A literal containing another
    # one occurs only where the shorter one does: only the shortest need looking for.
    ordered = sorted(literals, key=lambda x: (-len(x), x))
    probes = [x for x in ordered if not any(y != x and y in x for y in literals)]
    charset = "".join(re.escape(c) for c in sorted(alphabet))
    return _Needle(
        size=len(value),
        shortest=min(shortest, *(len(x) for x in probes)),
        literals=tuple(ordered),
        probes=tuple(probes),
        escapes=tuple(introducers),
        folded=tuple(sorted(f for f in folded if f)),
        gate=re.compile(f"[{charset}]{{{shortest},}}"),
        pattern=re.compile("|".join(branches)),
    )


class Redactor:
    """A thread-safe set of sensitive values that :meth:`scrub` removes from text in every
    form listed in the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        # Longest value first, compiled once per registration: scrub() runs on every
        # string every report writes (close to a million calls for 1000 connection types).
        self._needles: tuple[_Needle, ...] = ()
        # What scrub() returned for a text, valid for exactly one needle set: the report
        # writers scrub the same short strings (stage names, reasons, labels) thousands of
        # times. A registration makes a new needle tuple, and a memo made for another tuple
        # is never read, so a result from before a registration cannot be returned after it.
        self._memo: tuple[tuple[_Needle, ...], dict[str, str]] = ((), {})
        self._shortest = sys.maxsize

    @property
    def shortest(self) -> int:
        """No text shorter than this contains any registered value in any form: a caller
        scrubbing millions of short strings may skip those (``sys.maxsize`` with none)."""
        return self._shortest

    def register(self, *values: str) -> None:
        """Add values that must never appear in output, in any form the redactor knows."""
        fresh = [v for v in dict.fromkeys(values) if len(v) >= _MIN_REGISTERED]
        fresh = [v for v in fresh if v not in self._values]
        if not fresh:
            # The auth exchange wraps the same payloads in a new Secret on every probe.
            return
        built = [_needle(v) for v in fresh]
        with self._lock:
            known = self._values
            new = [n for v, n in zip(fresh, built, strict=True) if v not in known]
            self._values = known | frozenset(fresh)
            needles = tuple(sorted((*self._needles, *new), key=lambda n: -n.size))
            # Lowered before the new needles are visible: a reader never skips a text
            # the new set would scrub.
            self._shortest = min(n.shortest for n in needles)
            self._needles = needles

    def scrub(self, text: str) -> str:
        """Return ``text`` with every registered value replaced by ``[REDACTED]``."""
        needles = self._needles
        if not needles or not text:
            return text
        needles_memo, memo = self._memo
        if needles_memo is not needles:
            memo = {}
            self._memo = (needles, memo)
        found = memo.get(text)
        if found is not None:
            return found
        clean = text
        # Longest value first, so that a secret inside a longer registered payload does not
        # leave the payload's remainder behind.
        for needle in needles:
            clean = needle.scrub(clean)
        if len(text) <= _MEMO_TEXT and len(memo) < _MEMO_ENTRIES:
            memo[text] = clean
        return clean

    def clear(self) -> None:
        """Forget every registered value (self-tests only)."""
        with self._lock:
            self._values = frozenset()
            self._needles = ()
            self._memo = ((), {})
            self._shortest = sys.maxsize


REDACTOR = Redactor()


class Secret:
    """A credential whose value is never rendered.

    ``source`` is a human description of where the value came from (``env:POP3_PASSWORD``,
    ``file:/run/secrets/pop3``); it is safe to show and is what ``repr`` displays.
    """

    __slots__ = ("_value", "source")
    source: str

    def __init__(self, value: str, source: str = "literal") -> None:
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "source", source)
        REDACTOR.register(value)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def problem(self, kind: str = "password") -> str:
        """:func:`secret_problem` of the value (``""`` when it may be sent)."""
        value: str = object.__getattribute__(self, "_value")
        return secret_problem(value, kind)

    def reveal(self) -> str:
        """Return the value. Call only where it is written to the wire."""
        value: str = object.__getattribute__(self, "_value")
        return value

    def __repr__(self) -> str:
        return f"Secret(source={self.source!r}, value={REDACTED})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> NoReturn:
        # Pickling would write the value into xdist channels or caches.
        raise TypeError("Secret cannot be pickled")

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        return bool(object.__getattribute__(self, "_value"))
