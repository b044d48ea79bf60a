"""A real HTTP server for discovery's self-tests: serves client autoconfig documents.

:class:`AutoconfigServer` is the standard library's ``ThreadingHTTPServer`` in a thread on a
loopback address and an ephemeral port. ``documents`` maps a URL path to a body (bytes) or
an HTTP status (int); anything else is 404. ``drip`` (seconds) sends a body one byte at a
time with that pause, for deadline tests. Every request line is kept in :attr:`requests`.

:func:`config_xml` writes a Mozilla ``config-v1.1.xml`` document.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from xml.sax.saxutils import escape

__all__ = ["AUTOCONFIG_PATH", "WELLKNOWN_PATH", "AutoconfigServer", "config_xml"]

AUTOCONFIG_PATH = "/mail/config-v1.1.xml"
WELLKNOWN_PATH = "/.well-known/autoconfig/mail/config-v1.1.xml"


def config_xml(
    domain: str,
    incoming: Sequence[tuple[str, int, str]] = (),
    outgoing: Sequence[tuple[str, int, str]] = (),
    *,
    authentication: str = "password-cleartext",
    username: str = "%EMAILADDRESS%",
) -> bytes:
    """A ``clientConfig`` with POP3 ``incoming`` and SMTP ``outgoing`` servers, each
    (hostname, port, socketType: ``SSL``/``STARTTLS``/``plain``)."""

    def server(tag: str, kind: str, host: str, port: int, socket_type: str) -> str:
        return (
            f'    <{tag} type="{kind}">\n'
            f"      <hostname>{escape(host)}</hostname>\n"
            f"      <port>{port}</port>\n"
            f"      <socketType>{socket_type}</socketType>\n"
            f"      <authentication>{escape(authentication)}</authentication>\n"
            f"      <username>{escape(username)}</username>\n"
            f"    </{tag}>\n"
        )

    body = "".join(server("incomingServer", "pop3", *s) for s in incoming)
    body += "".join(server("outgoingServer", "smtp", *s) for s in outgoing)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<clientConfig version="1.1">\n'
        f'  <emailProvider id="{escape(domain)}">\n'
        f"    <domain>{escape(domain)}</domain>\n"
        f"{body}"
        "  </emailProvider>\n"
        "</clientConfig>\n"
    ).encode()


class AutoconfigServer:
    """HTTP on ``host`` (loopback) serving ``documents`` by path."""

    def __init__(
        self,
        documents: Mapping[str, bytes | int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        drip: float = 0.0,
    ) -> None:
        self.documents = dict(documents)
        self.drip = drip
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(f"{self.headers.get('Host', '')} {self.path}")
                path = self.path.split("?", 1)[0]
                doc = owner.documents.get(path, 404)
                if isinstance(doc, int):
                    self.send_response(doc)
                    if 300 <= doc < 400:
                        self.send_header("Location", "http://elsewhere.invalid/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(doc)))
                self.end_headers()
                if owner.drip <= 0:
                    self.wfile.write(doc)
                    return
                for i in range(len(doc)):
                    try:
                        self.wfile.write(doc[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(owner.drip)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
