"""How problems are worded: field paths, values and "did you mean" suggestions.

Every message names the field as a path like ``servers[0].connections[1].security``
(:func:`_fmt_loc`), shows values briefly (:func:`_show`, or :func:`_kind` under
``account:`` where a value may be a misplaced password), and offers the closest valid
name when a word looks like a typo (:func:`_suggest`). Nothing here knows the schema.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Final

Loc = tuple[str | int, ...]

# Longest key shown whole in a field path; a longer one is cut (it is never a valid key).
_KEY_MAX: Final = 40
# Integers beyond this many digits are shown by their length: Python refuses to turn one of
# more than 4300 digits into text at all, and a 4000-digit line helps nobody.
_DIGITS_MAX: Final = 20


def _escape(text: str, limit: int) -> str:
    """``text`` quoted with control characters, bidi overrides and lone surrogates escaped
    (``repr`` style) and cut to ``limit`` characters: safe to print and to encode as UTF-8."""
    cut = text if len(text) <= limit else text[: limit - 3] + "..."
    return repr(cut)


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on (control characters, escape
    sequences, line and paragraph separators) written as its escape (``\\x1b``), the rest
    as it is: a value from a file that is printed must not move the cursor or forge a
    line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _fmt_loc(loc: Loc) -> str:
    out = ""
    for seg in loc:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            # Keys come from the file: one holding ESC or a line break must not reach the
            # terminal raw, and a lone surrogate would make the message unprintable.
            if not seg.isprintable() or len(seg) > _KEY_MAX:
                seg = _escape(seg, _KEY_MAX)
            out += f".{seg}" if out else seg
    return out


def _num(value: float) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**_DIGITS_MAX:
        return f"a number with {_digits(value)} digits"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _digits(value: int) -> int:
    """How many decimal digits ``value`` has, without converting it to text (which Python
    refuses beyond 4300 digits)."""
    size = abs(value)
    # bit_length gives the digit count within one; correct it with one comparison.
    digits = max(1, int(size.bit_length() * 0.30102999566398120))
    return digits + 1 if size >= 10**digits else digits


def _show(value: object) -> str:
    """A short description of a YAML value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _num(value)
    if isinstance(value, str):
        return _escape(value, 40)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _kind(value: object) -> str:
    """Like :func:`_show` but without the value (used under ``account:``)."""
    if isinstance(value, str):
        return "a text string"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return _show(value)


_FAMILY = re.compile(r"[a-z]+")


def _family(word: str) -> str:
    """The leading run of letters: ``cram`` of ``cram-sha256``, ``scram`` of ``scram-sha-1``."""
    match = _FAMILY.match(word)
    return match.group(0) if match else ""


def _closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice ``word`` most likely meant, or ``None``.

    A word that names a family of choices (its leading letters equal those of some choice:
    ``cram`` in ``cram-sha-256``) only gets a choice of that family: a typo inside a name is
    likely, one in the word that sets it apart is not. So ``cram-sha256`` never gets
    ``scram-sha-256``, a different mechanism, while ``scram-sha256`` does.
    """
    lowered = {c.lower(): c for c in choices}
    low = word.lower()
    if low in lowered:
        return lowered[low]
    family = _family(low)
    same = {c: v for c, v in lowered.items() if _family(c) == family}
    if family and same:
        lowered = same
    # A choice that starts the word ("hostname" -> "host", "server" -> "servers") beats
    # difflib's character ratio, which would pick "name" for "hostname".
    prefixed = [c for c in lowered if len(c) >= 3 and (low.startswith(c) or c.startswith(low))]
    if len(low) >= 3 and prefixed:
        return lowered[max(prefixed, key=len)]
    match = difflib.get_close_matches(low, list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _suggest(word: str, choices: Sequence[str]) -> str:
    """`` — did you mean 'x'?`` or ``""``."""
    best = _closest(word, choices)
    return f" — did you mean '{best}'?" if best else ""
