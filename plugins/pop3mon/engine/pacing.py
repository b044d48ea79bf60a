"""Login pacing: the run's own logins must never cost the other connection types.

Real servers punish an address after a refused login: Dovecot's authentication penalty
delays every following login from that address by 4 s after one refusal (doubling per
refusal up to 15 s), in full until 15 s have passed since the last refusal or a login
succeeds (auth-penalty.c; measured on Dovecot 2.3.19); servers that lock the maildrop
at login (RFC 1939) refuse a second session of the same account with ``[IN-USE]``; and RFC 2449's
``LOGIN-DELAY n`` asks for ``n`` seconds between two logins of one account. A monitor
that probes several connection types of one server at the same moment would report all
of these as the server's fault, while it caused them.

:class:`LoginPacer` coordinates the logins of one run, per server (the configured host,
or the pinned address):

* ``serial`` pacing (the default): one login exchange at a time per server, and one
  session per account from login to QUIT; connecting, TLS and CAPA still run at once;
* after a refused login, the next login on that server first waits until the penalty has
  faded (:func:`penalty_window`); the wait is recorded and excluded from the probe's deadline
  and latency, and its reason names the connection type whose refusal caused it;
* connection types whose login was refused in the previous run (the :class:`Ledger`) log
  in after the others, so a known-bad password costs the healthy ones nothing, also when
  runs follow each other with no pause (the ledger carries the penalty window over);
* ``LOGIN-DELAY n`` spaces logins of one account on one server by ``n`` seconds, or the
  login is deferred (not made) when that would mean waiting longer than ``max_wait``.

``parallel`` pacing lets every login go at once and keeps only LOGIN-DELAY (which the
server announces itself): for servers known to neither penalize refusals nor lock the
mailbox, where a big fleet would otherwise log in one at a time (the scale benchmark).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from .errors import PolicyError
from .stages import Pacing

__all__ = [
    "LEDGER_VERSION",
    "Ledger",
    "LedgerEntry",
    "LoginPacer",
    "Turn",
    "login_delay_of",
    "penalty_window",
    "server_key",
]

LEDGER_VERSION: Final = 1

#: Dovecot (auth-penalty.c) keeps an address's whole penalty while less than
#: AUTH_PENALTY_MAX_SECS (15 s) have passed since its last refusal, and drops all of it
#: after that: a login inside the window is delayed by the full 4-15 s, not by the rest.
_PENALTY_FADE: Final = 15.0
#: How long Dovecot's anvil remembers an address's refusals (penalty.c: one hour).
_PENALTY_MEMORY: Final = 3600.0


def penalty_window(refusals: int) -> float:
    """Seconds after the last of ``refusals`` refused logins in a row until a login from
    the same address is no longer delayed (0 for none)."""
    return _PENALTY_FADE if refusals > 0 else 0.0


def login_delay_of(capabilities: Iterable[str] | None) -> int | None:
    """The ``LOGIN-DELAY`` seconds a CAPA list announces (RFC 2449 §6.8), if any."""
    for line in capabilities or ():
        parts = line.upper().split()
        if len(parts) >= 2 and parts[0] == "LOGIN-DELAY" and parts[1].isdigit():
            return int(parts[1][:9])
    return None


def server_key(host: str, address: str | None) -> str:
    """What "one server" is for pacing: the pinned address, else the configured host."""
    return (address or host).strip().lower()


@dataclass(frozen=True)
class Turn:
    """What a login waited for before it was made: seconds and why (empty: no wait), and
    ``exposed``: why the login went while the server may still delay it (its latency is
    then not the server's alone), empty when it did not."""

    waited: float = 0.0
    reason: str = ""
    exposed: str = ""


@dataclass(frozen=True)
class LedgerEntry:
    """One server in the :class:`Ledger`: refused logins in a row at the end of the run,
    when the last one was answered (epoch seconds), and the connection types refused."""

    refusals: int
    last_refusal: float
    refused: tuple[str, ...]


@dataclass(frozen=True)
class Ledger:
    """What the next run must know about this one's refused logins, per server key
    (ids, counts and times only: nothing secret)."""

    servers: Mapping[str, LedgerEntry] = field(default_factory=dict)

    def to_json(self) -> str:
        """The ledger as a JSON document."""
        servers = {
            key: {"refusals": e.refusals, "last_refusal": e.last_refusal, "refused": e.refused}
            for key, e in self.servers.items()
        }
        return json.dumps({"version": LEDGER_VERSION, "servers": servers}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Ledger:
        """Read a ledger; anything unreadable or from another version is an empty one
        (pacing then starts from nothing, as on a first run)."""
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION:
            return cls()
        servers = data.get("servers")
        if not isinstance(servers, dict):
            return cls()
        clean: dict[str, LedgerEntry] = {}
        for key, entry in servers.items():
            if not isinstance(entry, dict):
                continue
            refusals = entry.get("refusals")
            at = entry.get("last_refusal")
            refused = entry.get("refused")
            if (
                isinstance(refusals, int)
                and isinstance(at, (int, float))
                and isinstance(refused, list)
                and all(isinstance(i, str) for i in refused)
            ):
                clean[str(key)] = LedgerEntry(refusals, float(at), tuple(refused))
        return cls(clean)


@dataclass
class _Server:
    busy: bool = False  # a login exchange is in flight (serial pacing)
    refusals: int = 0  # refused logins in a row since the last success
    penalty_until: float = 0.0  # monotonic time before which no login starts
    penalty_at: float = 0.0  # epoch seconds of the last refusal's answer
    penalty_cause: str = ""
    refused: list[str] = field(default_factory=list)
    suspects: set[str] = field(default_factory=set)  # refused last run: log in last
    waiting_first: set[str] = field(default_factory=set)  # expected, not suspects, not done
    accounts: set[str] = field(default_factory=set)  # accounts with a session in progress
    last_login: dict[str, tuple[float, str]] = field(default_factory=dict)  # account -> t, id


class LoginPacer:
    """Coordinates the logins of one run (thread-safe; one per run, shared by batches)."""

    def __init__(self, ledger: Ledger | None = None, *, max_wait: float = 30.0) -> None:
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._servers: dict[str, _Server] = {}
        self._clock = time.monotonic
        now_mono, now_wall = time.monotonic(), time.time()
        for key, entry in (ledger.servers if ledger else {}).items():
            server = self._server(key)
            server.suspects = set(entry.refused)
            if now_wall - entry.last_refusal < _PENALTY_MEMORY:
                # The server still counts these refusals: the next one's window is longer.
                server.refusals = entry.refusals
                server.penalty_at = entry.last_refusal
                server.refused = list(entry.refused)
            left = entry.last_refusal + penalty_window(entry.refusals) - now_wall
            if left > 0:
                server.penalty_until = now_mono + left
                server.penalty_cause = "the previous run's refused login of " + (
                    ", ".join(entry.refused) or "a connection type"
                )

    def _server(self, key: str) -> _Server:
        server = self._servers.get(key)
        if server is None:
            server = self._servers[key] = _Server()
        return server

    def expect(self, logins: Iterable[tuple[str, str]]) -> None:
        """Announce the logins of a batch as ``(server key, connection type id)``: the
        previous run's refused ones then wait for these to go first."""
        with self._cond:
            for key, ct_id in logins:
                server = self._server(key)
                if ct_id not in server.suspects:
                    server.waiting_first.add(ct_id)

    def turn(
        self,
        key: str,
        ct_id: str,
        account: str,
        *,
        pacing: Pacing,
        login_delay: int | None = None,
    ) -> Turn:
        """Block until ``ct_id`` may log in to server ``key`` as ``account``.

        Returns what it waited for. Raises :class:`PolicyError` (kind ``login-delay``)
        when the server's LOGIN-DELAY would mean waiting longer than ``max_wait``: the
        login is deferred, not made. Every call must be followed by :meth:`done` (in a
        ``finally``), with :meth:`answered` in between when the login was sent.
        """
        start = self._clock()
        limit = start + self.max_wait
        # (reason, whether it is worth telling even when the wait was short)
        reasons: dict[str, bool] = {}
        exposed = ""
        with self._cond:
            server = self._server(key)
            while True:
                now = self._clock()
                wait_for: float | None = None  # None: wait for a notify; else seconds
                penalty = pacing == "serial" and server.penalty_until > now
                if penalty and now >= limit:
                    # Refusals in a row keep the penalty alive: never wait without end.
                    penalty = False
                    exposed = (
                        f"the login went during the server's login penalty after "
                        f"{server.penalty_cause} (the run waits at most {self.max_wait:g} s "
                        "for it to fade)"
                    )
                if penalty:
                    wait_for = min(server.penalty_until, limit) - now
                    reason = (
                        f"the server's login penalty after {server.penalty_cause} to fade"
                        if server.penalty_cause
                        else "the server's login penalty to fade"
                    )
                elif pacing == "serial" and server.busy:
                    reason = "another login to this server"
                elif pacing == "serial" and account in server.accounts:
                    reason = f"another session of {account} on this server (mailbox lock)"
                elif (
                    pacing == "serial"
                    and ct_id in server.suspects
                    and server.waiting_first - {ct_id}
                    and now < start + self.max_wait / 2
                ):
                    # Best effort only: a refused login goes last, but never waits for
                    # stragglers longer than half the allowance.
                    reason = "the other logins to go first (this one was refused last run)"
                    wait_for = start + self.max_wait / 2 - now
                else:
                    delay = self._login_delay_left(server, account, login_delay, now)
                    if delay is None:
                        break
                    seconds, previous = delay
                    if now + seconds > limit + 0.001:
                        raise PolicyError(
                            f"login deferred by pop3mon: the server asks for {login_delay} s "
                            f"between logins of {account} (LOGIN-DELAY) and {previous} "
                            f"logged in as {account} in this run; the run waits at most "
                            f"{self.max_wait:g} s: monitor this account through one "
                            "connection type, or give each its own account",
                            kind="login-delay",
                            stage="auth",
                        )
                    wait_for = seconds
                    reason = f"LOGIN-DELAY {login_delay} s after {previous}'s login as {account}"
                reasons.setdefault(reason, not reason.startswith("another "))
                # Woken by answered()/done(); the timeout only re-checks the clock.
                self._cond.wait(timeout=0.5 if wait_for is None else max(0.001, wait_for))
            if pacing == "serial":
                server.busy = True
                server.accounts.add(account)
        waited = self._clock() - start
        # What made the wait long (a penalty, LOGIN-DELAY, going last) says it all; taking
        # turns costs each login milliseconds and is only worth a word when it was long.
        told = [r for r, always in reasons.items() if always]
        if not told and waited >= 1.0:
            told = list(reasons)
        if waited < 0.001 or not told:
            return Turn(waited if waited >= 0.001 else 0.0, exposed=exposed)
        return Turn(waited, "; ".join(told), exposed)

    def _login_delay_left(
        self, server: _Server, account: str, login_delay: int | None, now: float
    ) -> tuple[float, str] | None:
        if not login_delay or login_delay <= 0:
            return None
        last = server.last_login.get(account)
        if last is None:
            return None
        left = last[0] + login_delay - now
        return (left, last[1]) if left > 0 else None

    def answered(self, key: str, ct_id: str, account: str, *, refused: bool) -> None:
        """The server answered the login (``refused``: an ``-ERR`` or no answer)."""
        with self._cond:
            server = self._server(key)
            now = self._clock()
            if refused:
                server.refusals += 1
                server.penalty_at = time.time()
                server.penalty_until = now + penalty_window(server.refusals)
                server.penalty_cause = f"{ct_id}'s refused login"
                if ct_id not in server.refused:
                    server.refused.append(ct_id)
            else:
                server.refusals = 0
                server.penalty_until = 0.0
                server.penalty_cause = ""
                server.last_login[account] = (now, ct_id)
            server.busy = False
            server.waiting_first.discard(ct_id)
            self._cond.notify_all()

    def done(self, key: str, ct_id: str, account: str, *, held: bool) -> None:
        """The probe of ``ct_id`` is over (``held``: it had its turn, so it holds the
        account until now)."""
        with self._cond:
            server = self._server(key)
            if held:
                server.busy = False
                server.accounts.discard(account)
            server.waiting_first.discard(ct_id)
            self._cond.notify_all()

    def ledger(self) -> Ledger:
        """The state the next run needs: every server where a login was refused (its
        penalty, if still in effect, and who goes last next time)."""
        with self._cond:
            return Ledger(
                {
                    key: LedgerEntry(
                        server.refusals, round(server.penalty_at, 3), tuple(server.refused)
                    )
                    for key, server in self._servers.items()
                    if server.refused
                }
            )
