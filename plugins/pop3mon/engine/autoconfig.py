"""The Mozilla client autoconfig document (``config-v1.1.xml``): fetch and parse, safely.

Locations (Thunderbird's order): ``autoconfig.<domain>/mail/config-v1.1.xml`` and
``<domain>/.well-known/autoconfig/mail/config-v1.1.xml``, each over HTTPS then HTTP.

The fetch is a plain HTTP/1.0 GET on the engine's own dialing and TLS code (names through
discovery's nameserver, certificates verified for the name) that reads with the deadline
recomputed on every chunk, so a server dripping a byte a second cannot outlive it, and
stops at :data:`MAX_DOCUMENT` bytes. Redirects are not followed (reported instead).

The document is server-controlled: it is parsed by expat with a refused DOCTYPE (so no
entity, internal or external, can be declared: no billion laughs, no XXE), a depth cap
and the size cap above.
"""

from __future__ import annotations

import socket
import xml.parsers.expat
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote
from xml.etree import ElementTree as ET

from .dial import dial
from .discovery_dns import resolve_host
from .errors import ProbeError, map_exception
from .stages import Protocol, Security
from .tls import client_context, handshake
from .wire import Deadline, sanitize

__all__ = [
    "MAX_DOCUMENT",
    "AutoconfigServer",
    "Fetched",
    "Location",
    "fetch",
    "locations",
    "parse",
]

#: Largest autoconfig document read (real ones are a few KiB).
MAX_DOCUMENT: Final = 256 * 1024
_MAX_HEADER: Final = 16 * 1024
_MAX_DEPTH: Final = 32
#: At most this many POP3/SMTP server entries are read from one document (real ones have
#: a handful), across all its ``<emailProvider>`` elements.
_MAX_SERVERS: Final = 32
#: At most this many problem lines about one document's entries.
_MAX_PROBLEMS: Final = 5

Location = Literal["autoconfig", "autoconfig-wellknown"]
Scheme = Literal["https", "http"]

#: socketType → the engine's security vocabulary.
_SOCKET_TYPES: Final[dict[str, Security]] = {"SSL": "tls", "STARTTLS": "starttls", "plain": "none"}
_SERVER_TYPES: Final[dict[tuple[str, str], Protocol]] = {
    ("incomingServer", "pop3"): "pop3",
    ("outgoingServer", "smtp"): "smtp",
}


@dataclass(frozen=True)
class AutoconfigServer:
    """One ``incomingServer type="pop3"`` or ``outgoingServer type="smtp"`` entry."""

    protocol: Protocol
    host: str
    port: int
    security: Security
    authentication: str | None
    username: str | None


#: Fetch failures that mean "no document is published here", as a mail client sees it
#: (Thunderbird moves on to the next location and never gets a document from such a
#: place): no such host, nothing listening, a certificate no client accepts. Any other
#: failure (a timeout, a DNS server failing, a reset, a 5xx, an answer that is not HTTP)
#: means discovery could not look.
_ABSENT_KINDS: Final = frozenset({"dns-nxdomain", "connection-refused"})


@dataclass(frozen=True)
class Fetched:
    """One URL's answer: the body on HTTP 200, else ``problem`` says why not, and
    ``absent`` whether that answer says there is no document here (HTTP 3xx/4xx, no such
    host, connection refused, a certificate no client accepts) rather than that the fetch
    failed (timeout, DNS failure, HTTP 5xx, a reset, not HTTP)."""

    url: str
    body: bytes | None
    problem: str
    absent: bool = False


def locations(
    domain: str, port: int | None, email: str | None, schemes: tuple[Scheme, ...]
) -> list[tuple[Location, Scheme, str, str, str]]:
    """(location, scheme, host, path, url) in the order to try, for ``domain``."""
    query = f"?emailaddress={quote(email, safe='@')}" if email else ""
    out: list[tuple[Location, Scheme, str, str, str]] = []
    places: list[tuple[Location, str, str]] = [
        ("autoconfig", f"autoconfig.{domain}", "/mail/config-v1.1.xml"),
        ("autoconfig-wellknown", domain, "/.well-known/autoconfig/mail/config-v1.1.xml"),
    ]
    for location, host, path in places:
        for scheme in schemes:
            netloc = host if port is None else f"{host}:{port}"
            out.append((location, scheme, host, path + query, f"{scheme}://{netloc}{path}{query}"))
    return out


def fetch(
    scheme: Scheme,
    host: str,
    path: str,
    url: str,
    *,
    port: int | None,
    nameserver: str | None,
    ca_file: str | None,
    deadline: Deadline,
) -> Fetched:
    """GET ``url`` within the deadline. Never raises for what the network does."""
    port = port if port is not None else (443 if scheme == "https" else 80)
    sock: socket.socket | None = None
    try:
        addresses = resolve_host(host, port, nameserver, deadline)
        sock = dial(addresses, port, deadline, host).sock
        if scheme == "https":
            sock = handshake(
                sock, client_context(ca_file or "", "TLSv1.2", True), host, deadline, "tls"
            )
        request = (
            f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: pop3mon-discover\r\n"
            "Accept: application/xml, text/xml\r\nConnection: close\r\n\r\n"
        )
        sock.settimeout(deadline.budget("autoconfig"))
        sock.sendall(request.encode("ascii"))
        raw = _read_all(sock, deadline)
    except Exception as exc:  # noqa: BLE001 - mapped into a reason, never raised
        err = exc if isinstance(exc, ProbeError) else map_exception(exc, "autoconfig")
        absent = err.kind in _ABSENT_KINDS or err.kind.startswith("cert-")
        return Fetched(url, None, err.reason, absent=absent)
    finally:
        if sock is not None:
            sock.close()
    return _response(url, raw)


def _read_all(sock: socket.socket, deadline: Deadline) -> bytes:
    """Read until the server closes, the size cap or the deadline (which raises)."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_DOCUMENT + _MAX_HEADER:
        sock.settimeout(deadline.budget("autoconfig"))
        data = sock.recv(16384)
        if not data:
            break
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)


def _response(url: str, raw: bytes) -> Fetched:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    if not sep or len(head) > _MAX_HEADER:
        return Fetched(url, None, "not an HTTP response")
    lines = head.decode("latin-1").splitlines()
    parts = lines[0].split(None, 2) if lines else []
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return Fetched(
            url, None, f"not an HTTP response: {sanitize(lines[0] if lines else '', 80)}"
        )
    code = int(parts[1])
    if code != 200:
        location = next(
            (ln.split(":", 1)[1].strip() for ln in lines[1:] if ln.lower().startswith("location:")),
            "",
        )
        moved = f" (redirect to {sanitize(location, 120)} not followed)" if location else ""
        # 3xx/4xx: the server says no document is here; 5xx: it failed to say.
        return Fetched(url, None, f"HTTP {code}{moved}", absent=code < 500)
    if len(body) > MAX_DOCUMENT:
        return Fetched(url, None, f"document larger than {MAX_DOCUMENT // 1024} KiB; not read")
    return Fetched(url, body, "")


class _Refused(Exception):
    """The document uses a construct we refuse (DOCTYPE, too deep)."""


def _tree(body: bytes) -> ET.Element:
    """Parse ``body`` with expat, refusing any DOCTYPE (hence any entity declaration)."""
    builder = ET.TreeBuilder()
    parser = xml.parsers.expat.ParserCreate()
    depth = 0

    def doctype(*_args: object) -> None:
        raise _Refused("the document has a DOCTYPE (refused: no entity declarations)")

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > _MAX_DEPTH:
            raise _Refused(f"the document nests deeper than {_MAX_DEPTH} elements")
        builder.start(tag, attrs)

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(tag)

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.Parse(body, True)
    return builder.close()


def parse(
    body: bytes, domain: str, email: str | None
) -> tuple[tuple[AutoconfigServer, ...], tuple[str, ...]]:
    """The POP3 and SMTP servers of an autoconfig document, and problems (one line each).

    Placeholders: ``%EMAILDOMAIN%`` is the domain; ``%EMAILADDRESS%`` and
    ``%EMAILLOCALPART%`` are filled from ``email`` when given and kept otherwise (they only
    appear in user names). A host name still holding a placeholder is a problem.
    """
    if len(body) > MAX_DOCUMENT:
        return (), (f"document larger than {MAX_DOCUMENT // 1024} KiB; not parsed",)
    try:
        root = _tree(body)
    except _Refused as exc:
        return (), (str(exc),)
    except xml.parsers.expat.ExpatError as exc:
        return (), (f"not well-formed XML: {sanitize(str(exc), 120)}",)
    if root.tag != "clientConfig":
        return (), (f"root element is <{sanitize(root.tag, 40)}>, not <clientConfig>",)
    values = {"%EMAILDOMAIN%": domain}
    if email:
        values["%EMAILADDRESS%"] = email
        values["%EMAILLOCALPART%"] = email.partition("@")[0]

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    servers: list[AutoconfigServer] = []
    problems: list[str] = []
    # The caps hold across every <emailProvider>: a document of a thousand providers is
    # still at most _MAX_SERVERS servers and _MAX_PROBLEMS problem lines.
    entries = [
        (element, protocol)
        for provider in root.findall("emailProvider")
        for element in provider
        if (protocol := _SERVER_TYPES.get((element.tag, element.get("type", "")))) is not None
    ]
    ignored = 0
    for element, protocol in entries:
        if len(servers) >= _MAX_SERVERS:
            ignored += 1
            continue
        host = fill((element.findtext("hostname") or "").strip()).lower().rstrip(".")
        port_text = (element.findtext("port") or "").strip()
        socket_type = (element.findtext("socketType") or "").strip()
        what = f"{element.tag} {protocol} {sanitize(host, 80) or '(no hostname)'}"
        if not host or "%" in host or not _hostname_ok(host):
            problems.append(f"{what}: unusable hostname")
            continue
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            problems.append(f"{what}: port {sanitize(port_text, 20)!r} is not a port")
            continue
        security = _SOCKET_TYPES.get(socket_type)
        if security is None:
            problems.append(f"{what}: unknown socketType {sanitize(socket_type, 20)!r}")
            continue
        auth = (element.findtext("authentication") or "").strip() or None
        user = (element.findtext("username") or "").strip() or None
        servers.append(
            AutoconfigServer(
                protocol=protocol,
                host=host,
                port=int(port_text),
                security=security,
                authentication=sanitize(auth, 40) if auth else None,
                username=sanitize(fill(user), 120) if user else None,
            )
        )
    if len(problems) > _MAX_PROBLEMS:
        more = len(problems) - _MAX_PROBLEMS
        problems[_MAX_PROBLEMS:] = [f"… and {more} more unusable server entries"]
    if ignored:
        problems.append(
            f"{len(entries)} POP3/SMTP server entries; only the first {_MAX_SERVERS} "
            f"read ({ignored} ignored)"
        )
    return tuple(servers), tuple(problems)


def _hostname_ok(host: str) -> bool:
    """A DNS name or IP literal of sane characters (it is shown and dialed)."""
    return len(host) <= 253 and all(c.isalnum() or c in ".-_:" for c in host)
