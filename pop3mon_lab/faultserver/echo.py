"""The encodings in which the ``echo-encoded`` scenario sends a client's secret back.

A server that echoes a credential rarely echoes it byte for byte: it JSON-escapes it (the
RFC 7628 error JSON), percent- or quoted-printable-encodes it, HTML-escapes it, changes its
case, shows its UTF-8 bytes as Latin-1 (mojibake) or re-encodes it lossily, or logs a base64
blob with the secret somewhere inside. :data:`ECHO_ENCODINGS` is the one table of those
forms: the scenario uses it to answer (the login name picks the encoding) and the self-tests
use it to know what must never show up in any output.
"""

from __future__ import annotations

import base64
import html
import json
import urllib.parse
from collections.abc import Callable, Mapping
from types import MappingProxyType

__all__ = ["ECHO_ENCODINGS", "as_client_sees", "encode_echo"]


def _upper(secret: str) -> str:
    # Only case changes that keep the length (str.upper turns "ß" into "SS").
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in secret)


def _json_ascii(secret: str) -> str:
    # The escaping of PHP's json_encode and of many RFC 7628 error bodies: "\/" and \uXXXX.
    return json.dumps(secret, ensure_ascii=True)[1:-1].replace("/", "\\/")


def _mojibake(codec: str) -> Callable[[str], str]:
    def encode(secret: str) -> str:
        raw = secret.encode("utf-8")
        if codec == "latin-1":
            return raw.decode("latin-1")
        # Windows-1252 with the five undefined bytes as C1 controls (what browsers do).
        return "".join(
            chr(b) if b in (0x81, 0x8D, 0x8F, 0x90, 0x9D) else bytes([b]).decode("cp1252")
            for b in raw
        )

    return encode


def _latin1_bytes(secret: str) -> str:
    # The server re-encodes the secret as Latin-1 ('?' where it cannot): raw bytes that are
    # not UTF-8, carried in a str by surrogateescape (the fault server's wire convention).
    return secret.encode("latin-1", "replace").decode("utf-8", "surrogateescape")


def _base64_at(offset: int) -> Callable[[str], str]:
    def encode(secret: str) -> str:
        # "password=" is 9 bytes: the secret starts at byte 9 + offset, phase offset mod 3.
        blob = b"password=" + b"x" * offset + secret.encode("utf-8") + b";end"
        return base64.b64encode(blob).decode("ascii")

    return encode


def _quoted_printable(secret: str) -> str:
    # RFC 2045 without soft line breaks: a status line has room for one line only.
    out = []
    for b in secret.encode("utf-8"):
        c = chr(b)
        out.append(c if 33 <= b <= 126 and c not in "=?_" else f"={b:02X}")
    return "".join(out)


def _html(secret: str) -> str:
    return html.escape(secret).encode("ascii", "xmlcharrefreplace").decode("ascii")


#: Encoding name (also the login name that asks for it) -> the text the server sends.
ECHO_ENCODINGS: Mapping[str, Callable[[str], str]] = MappingProxyType(
    {
        "plain": lambda s: s,
        "upper": _upper,
        "json": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
        "json-ascii": _json_ascii,
        "mojibake-latin1": _mojibake("latin-1"),
        "mojibake-cp1252": _mojibake("cp1252"),
        "latin1-bytes": _latin1_bytes,
        "percent": lambda s: urllib.parse.quote(s, safe=""),
        "form": urllib.parse.quote_plus,
        "quoted-printable": _quoted_printable,
        "html": _html,
        "hex": lambda s: s.encode("utf-8").hex(),
        "base64-0": _base64_at(0),
        "base64-1": _base64_at(1),
        "base64-2": _base64_at(2),
    }
)


def encode_echo(name: str, secret: str) -> str:
    """``secret`` in encoding ``name``; an unknown name echoes it as it is."""
    return ECHO_ENCODINGS.get(name, ECHO_ENCODINGS["plain"])(secret)


def as_client_sees(text: str) -> str:
    """What a client decoding the server's bytes as UTF-8 (with replacement) reads."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
