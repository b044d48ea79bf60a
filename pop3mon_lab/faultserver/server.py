"""The fault server itself: listening socket, connection threads, TLS setup, inspection.

Design:

* One accept thread plus one thread per connection. Threads are cheap at the scale of a
  test suite and keep every scenario a plain, readable sequence of blocking calls.
* Every blocking socket call has a short timeout (:data:`~.common.POLL_INTERVAL`) and every
  loop re-checks the server's stop event, so scenarios that "never end" still end on
  :meth:`FaultServer.stop`. ``stop`` additionally shuts the sockets down, which wakes
  blocked calls at once instead of after the next poll.
* The server binds to loopback only (127.0.0.1, or ``::1`` with ``host="::1"``); port 0
  picks a free port.
"""

from __future__ import annotations

import difflib
import os
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType, TracebackType

from .common import (
    DEFAULT_SASL,
    DEFAULT_USERS,
    HOST,
    LOOPBACK_HOSTS,
    POLL_INTERVAL,
    Conn,
    Options,
)
from .log import ServerLog
from .scenarios import SCENARIOS

__all__ = ["FaultServer"]


class FaultServer:
    """A POP3 server on 127.0.0.1 (or ``host="::1"``) that behaves according to a named
    scenario.

    Use as a context manager (``with FaultServer("healthy") as srv: ...``) or call
    :meth:`start` and :meth:`stop`. ``users`` maps names to passwords (used for PASS,
    APOP, all SASL mechanisms, and as the bearer token for XOAUTH2/OAUTHBEARER).
    ``certfile``/``keyfile`` (or a ready ``tls_context``) enable STLS and implicit TLS.
    ``response_delay`` is slept before every response line (latency tests);
    ``drip_interval`` paces drip-greeting; ``huge_size`` sizes huge-line's line;
    ``challenge_delay`` is slept before scram-slow-key's SCRAM challenge;
    ``messages`` is the mailbox size (``mailbox``: the messages themselves, as lines);
    ``allow_plaintext_auth=False`` refuses USER and
    PLAIN/LOGIN before TLS (like Dovecot's ``disable_plaintext_auth``);
    ``sasl_mechanisms`` overrides the offered SASL list; ``flaky_first`` is how many
    connections (the first ones this server accepts) flaky-first resets. ``host`` is the
    loopback address to listen on (see :data:`~.common.LOOPBACK_HOSTS`).
    """

    def __init__(
        self,
        scenario: str = "healthy",
        *,
        users: Mapping[str, str] | None = None,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        tls_min_version: ssl.TLSVersion | None = None,
        tls_max_version: ssl.TLSVersion | None = None,
        response_delay: float = 0.0,
        drip_interval: float = 1.0,
        challenge_delay: float = 0.0,
        huge_size: int = 10 * 1024 * 1024,
        messages: int = 2,
        allow_plaintext_auth: bool = True,
        sasl_mechanisms: Iterable[str] = DEFAULT_SASL,
        hostname: str = "pop3mon.test",
        flaky_first: int = 1,
        mailbox: Iterable[Sequence[str]] = (),
        port: int = 0,
        host: str = HOST,
    ) -> None:
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"host must be one of {', '.join(LOOPBACK_HOSTS)} (loopback only)")
        if scenario not in SCENARIOS:
            close = difflib.get_close_matches(scenario, list(SCENARIOS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown fault-server scenario {scenario!r}{hint}")
        self.scenario = SCENARIOS[scenario]
        if certfile is not None and tls_context is not None:
            raise ValueError("pass certfile/keyfile or tls_context, not both")
        if tls_context is None and certfile is not None:
            tls_context = self._make_context(
                certfile, keyfile, self.scenario.tls_profile, tls_min_version, tls_max_version
            )
        if (self.scenario.needs_tls or implicit_tls) and tls_context is None:
            raise ValueError(f"scenario {scenario!r} needs certfile/keyfile or tls_context")
        self.tls_context = tls_context
        self.options = Options(
            users=MappingProxyType(dict(DEFAULT_USERS if users is None else users)),
            hostname=hostname,
            implicit_tls=implicit_tls,
            response_delay=response_delay,
            drip_interval=drip_interval,
            challenge_delay=challenge_delay,
            huge_size=huge_size,
            messages=messages,
            allow_plaintext_auth=allow_plaintext_auth,
            sasl_mechanisms=tuple(m.upper() for m in sasl_mechanisms),
            flaky_first=flaky_first,
            mailbox=tuple(tuple(m) for m in mailbox),
        )
        self.log = ServerLog()
        self.stop_event = threading.Event()
        self._requested_port = port
        self._host = host
        self._lock = threading.Condition()
        self._conns: dict[int, Conn] = {}
        self._threads: list[threading.Thread] = []
        self._sni: dict[int, str] = {}
        self._next_id = 0
        self._connections = 0
        self._logins = 0
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._port = 0

    # ------------------------------------------------------------------ TLS setup

    def _make_context(
        self,
        certfile: str | os.PathLike[str],
        keyfile: str | os.PathLike[str] | None,
        profile: str,
        min_version: ssl.TLSVersion | None,
        max_version: ssl.TLSVersion | None,
    ) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        if profile == "tls10":
            min_version = max_version = ssl.TLSVersion.TLSv1
        legacy = {ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1}
        with warnings.catch_warnings():
            # Python deprecates TLSv1/TLSv1_1 constants; offering them is the point here.
            warnings.simplefilter("ignore", DeprecationWarning)
            if min_version in legacy or max_version in legacy:
                # OpenSSL 3 refuses TLS < 1.2 at the default security level 1; level 0
                # re-enables the SHA-1 based handshakes those versions need.
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            if min_version is not None:
                ctx.minimum_version = min_version
            if max_version is not None:
                ctx.maximum_version = max_version
        ctx.sni_callback = self._on_sni
        return ctx

    def _on_sni(
        self, tls: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext
    ) -> None:
        # Record the requested name so tests can check the client sends the right SNI.
        with self._lock:
            self._sni[id(tls)] = server_name or ""

    def pop_sni(self, tls_sock: ssl.SSLSocket) -> str:
        """SNI name the client sent on this socket's handshake (``""`` if none)."""
        with self._lock:
            return self._sni.pop(id(tls_sock), "")

    def wrap_conn(self, conn: Conn, ctx: ssl.SSLContext) -> ssl.SSLSocket:
        """Replace the connection's socket by a server-side SSLSocket (handshake not run)."""
        # Under the lock so stop() never shuts down a detached socket object.
        with self._lock:
            tls_sock = ctx.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
            conn.sock = tls_sock
        return tls_sock

    # ------------------------------------------------------------------ life cycle

    def start(self) -> FaultServer:
        """Bind host:port and start accepting; returns self."""
        if self._listener is not None:
            raise RuntimeError("FaultServer already started")
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.create_server(
            (self._host, self._requested_port), family=family, backlog=256
        )
        listener.settimeout(POLL_INTERVAL)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"faultserver-{self._port}-accept", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, shut every connection down and join every thread.

        Raises RuntimeError if a thread is still alive after ``timeout`` seconds.
        Idempotent.
        """
        if self._listener is None or self.stop_event.is_set():
            self.stop_event.set()
            return
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        try:
            # Wakes a blocked accept() at once on Linux; the accept thread closes it.
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            conns = list(self._conns.values())
            threads = list(self._threads)
            for conn in conns:
                try:
                    # Base-class shutdown on the fd: wakes a thread blocked in recv/send or
                    # in a TLS handshake without touching the SSL object it is using.
                    socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
                except OSError:
                    pass
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in [*threads, self._accept_thread] if t and t.is_alive()]
        if alive:
            raise RuntimeError(f"fault server threads did not stop: {alive}")

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        except RuntimeError:
            if exc is None:
                raise  # a leaked thread is a bug; never mask the test's own error with it

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        try:
            while not self.stop_event.is_set():
                try:
                    sock, addr = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self.stop_event.is_set():
                        break
                    # EMFILE and friends: back off instead of spinning.
                    self.stop_event.wait(0.05)
                    continue
                self._start_connection(sock, f"{addr[0]}:{addr[1]}")
        finally:
            listener.close()

    def _start_connection(self, sock: socket.socket, peer: str) -> None:
        with self._lock:
            if self.stop_event.is_set():
                sock.close()
                return
            self._next_id += 1
            self._connections += 1
            conn = Conn(self._next_id, sock, peer)
            self._conns[conn.id] = conn
            thread = threading.Thread(
                target=self._handle,
                args=(conn,),
                name=f"faultserver-{self._port}-conn-{conn.id}",
                daemon=True,
            )
            # Forget finished threads so long load tests do not grow the list.
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _handle(self, conn: Conn) -> None:
        self.log.add_event(conn.id, "connect", conn.peer)
        try:
            conn.sock.settimeout(POLL_INTERVAL)
            # Every write leaves at once: drip bytes one per segment, and the STLS +OK
            # with its injected line in one segment.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.scenario.session(self, conn, self.scenario).run()
        except Exception as exc:  # noqa: BLE001 - bad input must never kill the server
            self.log.add_event(conn.id, "error", repr(exc))
        finally:
            self.close_conn_socket(conn)
            self.log.add_event(conn.id, "close")
            with self._lock:
                self._conns.pop(conn.id, None)
                self._lock.notify_all()

    def close_conn_socket(self, conn: Conn) -> None:
        """Close a connection's socket (no TLS close_notify, no exceptions)."""
        with self._lock:
            try:
                conn.sock.close()
            except OSError:
                pass

    def count_login(self) -> None:
        """Count one successful login."""
        with self._lock:
            self._logins += 1

    # ------------------------------------------------------------------ inspection

    @property
    def host(self) -> str:
        """The loopback address listened on (``127.0.0.1`` unless asked for ``::1``)."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (valid after start)."""
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return (self._host, self._port)

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return self._connections

    @property
    def active_connections(self) -> int:
        """Connections currently open."""
        with self._lock:
            return len(self._conns)

    @property
    def logins(self) -> int:
        """Successful logins so far."""
        with self._lock:
            return self._logins

    def commands(self, conn: int | None = None) -> list[str]:
        """Command verbs received, in order (see :meth:`ServerLog.commands`)."""
        return self.log.commands(conn)

    def plaintext_bytes(self, conn: int | None = None) -> bytes:
        """Everything received while unencrypted (grep it for secrets)."""
        return self.log.plaintext_bytes(conn)

    def wait_idle(self, timeout: float = 2.0) -> bool:
        """Wait until no connection is open, so the log holds a client's last line.

        Returns False on timeout.
        """
        with self._lock:
            return self._lock.wait_for(lambda: not self._conns, timeout)

    def __repr__(self) -> str:
        return f"FaultServer({self.scenario.name!r}, port={self._port})"
