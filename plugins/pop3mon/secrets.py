"""Secret values and the process-wide redaction registry.

A :class:`Secret` never shows its value through ``repr``/``str``/``format``, pickling or
equality; the value leaves the object only through :meth:`Secret.reveal`, which the engine
calls at the single place where bytes are written to the socket.

Every secret created here is also registered with :data:`REDACTOR`, which scrubs the value
(and its common encodings: base64, SASL PLAIN payloads) from any text before it reaches a
result, a report, a log line or an exception message. That covers servers that echo
credentials back in ``-ERR`` text.
"""

from __future__ import annotations

import base64
import threading
from typing import NoReturn

__all__ = ["REDACTED", "REDACTOR", "Redactor", "Secret"]

REDACTED = "[REDACTED]"


class Redactor:
    """A thread-safe set of sensitive strings that :meth:`scrub` removes from text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._needles: frozenset[str] = frozenset()
        # Longest first, computed once per registration: scrub() runs on every string
        # every report writes (close to a million calls for 1000 connection types).
        self._ordered: tuple[str, ...] = ()

    def register(self, *values: str) -> None:
        """Add values (and their base64 forms) that must never appear in output."""
        new: set[str] = set()
        for value in values:
            # Very short values would shred ordinary text; a 1-3 character password is
            # already a finding of its own and is still never printed by the engine.
            if len(value) < 4:
                continue
            new.add(value)
            raw = value.encode("utf-8", "surrogateescape")
            whole = base64.b64encode(raw).decode("ascii")
            new.add(whole)
            # A secret embedded in a longer base64 payload shows up in one of three
            # alignments; register the stable inner part of each. At offset 0 the groups
            # holding only secret bytes survive whatever follows; the padded tail does not.
            head = whole[: len(raw) // 3 * 4]
            if len(head) >= 6:
                new.add(head)
            for pad in (b"\x00", b"\x00\x00"):
                enc = base64.b64encode(pad + raw).decode("ascii")
                inner = enc[4:-4] if len(enc) > 12 else ""
                if len(inner) >= 6:
                    new.add(inner)
        with self._lock:
            needles = self._needles | frozenset(new)
            ordered = tuple(sorted(needles, key=lambda n: (-len(n), n)))
            # Publish the order before the set so a reader never sees needles it would skip.
            self._ordered = ordered
            self._needles = needles

    def scrub(self, text: str) -> str:
        """Return ``text`` with every registered value replaced by ``[REDACTED]``."""
        ordered = self._ordered
        if not ordered or not text:
            return text
        # Longest first so that a secret contained in a longer registered payload
        # does not leave the payload's remainder behind.
        for needle in ordered:
            if needle in text:
                text = text.replace(needle, REDACTED)
        return text

    def clear(self) -> None:
        """Forget every registered value (self-tests only)."""
        with self._lock:
            self._needles = frozenset()
            self._ordered = ()


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
