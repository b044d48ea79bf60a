"""The opt-in mail round trip: send one tagged message through an SMTP submission
connection type, then find it in the POP3 mailbox of the technical account within a
deadline, and say how long delivery took.

It is the one place pop3mon sends mail and the one place it may delete any, so both are
fenced in at the wire, not only by the code that drives it:

* the submission session's :class:`~.smtp.SmtpWire` is the only one built with ``send``
  (MAIL, RCPT, DATA, RSET added to its allowlist) and sends exactly one message;
* each poll is a POP3 session whose :class:`PollWire` adds ``TOP`` to the read-only
  allowlist, and refuses any ``TOP`` asking for body lines (headers only: ``TOP n 0``);
  ``DELE`` exists only with ``cleanup: own-probe-messages``, and then only for message
  numbers whose headers this session read and found carrying this monitor's tag *and*
  a valid HMAC of it made with the key only the monitor knows. RETR never.

Logins: a POP3 session never sees mail that arrives after its login (RFC 1939: the
maildrop is a snapshot), so finding a message means logging in again. The round trip's
logins are its own, counted (:attr:`~.result.RoundTripInfo.logins`: one submission login,
then one per poll, backing off from 0.25 s to 15 s, at most
:attr:`~.defaults.Defaults.round_trip_polls`), made after the connection type's own
session has ended and paced by the run's :class:`~.pacing.LoginPacer` like every other
login (one session per account at a time, LOGIN-DELAY, refusal penalties).
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import hmac
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Final

from ..secrets import Secret
from .defaults import DEFAULTS
from .errors import PolicyError, ProtocolError
from .pacing import LoginPacer
from .result import ProbeResult, ProbeSpec, RoundTripInfo, RoundTripStatus, TranscriptLine
from .session import _Probe
from .smtp import SmtpProbe, SmtpWire, _address_literal
from .wire import ALLOWED_COMMANDS, Deadline, Wire

__all__ = [
    "MAC_HEADER",
    "POLL_COMMANDS",
    "TAG_HEADER",
    "PollWire",
    "message_mac",
    "run_round_trip",
]

#: The header that carries the round trip's tag, and the one with its HMAC.
TAG_HEADER: Final = "X-Pop3mon-Round-Trip"
MAC_HEADER: Final = "X-Pop3mon-Round-Trip-MAC"
#: What a poll session may send: the read-only POP3 allowlist plus TOP (headers only).
POLL_COMMANDS: Final = ALLOWED_COMMANDS | {"TOP"}
#: The newest messages not yet read that one poll reads the headers of.
TOP_PER_POLL: Final = 20
_FIRST_POLL: Final = 0.25
_POLL_MAX_GAP: Final = 15.0
_TAG_PREFIX: Final = "pop3mon/1 "
_MAC_CONTEXT: Final = b"pop3mon round trip tag v1\0"
_TRANSCRIPT_MAX: Final = 120


def message_mac(key: Secret, tag: str) -> str:
    """HMAC-SHA256 of ``tag`` with ``key``, hex: what makes a tagged message this
    monitor's own (a look-alike can copy the tag, not make its HMAC)."""
    return hmac.new(
        key.reveal().encode("utf-8"), _MAC_CONTEXT + tag.encode("utf-8"), hashlib.sha256
    ).hexdigest()


class PollWire(Wire):
    """A poll session's wire: TOP with 0 body lines, DELE only for verified own messages."""

    def __init__(
        self,
        sock: socket.socket,
        deadline: Deadline,
        *,
        started: float,
        cleartext_allowed: bool = False,
        cleanup: bool = False,
    ) -> None:
        super().__init__(sock, deadline, started=started, cleartext_allowed=cleartext_allowed)
        self.allowed = POLL_COMMANDS | ({"DELE"} if cleanup else frozenset())
        #: Message numbers whose tag and HMAC verified in this session (DELE may name them).
        self.deletable: set[str] = set()

    def command(self, verb: str, *args: str | Secret, stage: str) -> None:
        """:meth:`Wire.command`, refusing TOP with body lines and DELE of anything but a
        message this session verified as its own."""
        upper = verb.upper()
        if upper == "TOP" and (len(args) != 2 or args[1] != "0"):
            raise PolicyError(
                "pop3mon reads headers only: TOP n 0, never body lines",
                kind="command-refused",
                stage=stage,
            )
        if upper == "DELE" and (
            "DELE" not in self.allowed or len(args) != 1 or args[0] not in self.deletable
        ):
            raise PolicyError(
                "pop3mon deletes only its own round-trip messages (tag and HMAC verified, "
                "cleanup: own-probe-messages)",
                kind="command-refused",
                stage=stage,
            )
        super().command(verb, *args, stage=stage)


@dataclass
class _PollState:
    """What the polls of one round trip share."""

    tag: str
    key: Secret | None
    cleanup: bool
    seen: set[str] = field(default_factory=set)  # UIDLs whose headers were read
    found_at: float | None = None  # monotonic time of the poll that saw our message
    deleted: int = 0
    kept: int = 0


def _headers(lines: list[str]) -> dict[str, list[str]]:
    """Header name (lower case) -> values, folded lines joined (RFC 5322 §2.2.3)."""
    out: dict[str, list[str]] = {}
    last = ""
    for line in lines:
        if not line:
            break
        if line[:1] in (" ", "\t") and last:
            out[last][-1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        last = name.strip().lower()
        out.setdefault(last, []).append(value.strip())
    return out


class _Poller(_Probe):
    """One poll: the POP3 session up to the login, then UIDL, TOP n 0 of the newest
    messages not read yet, DELE of verified own ones (cleanup only), QUIT."""

    def __init__(self, spec: ProbeSpec, pacer: LoginPacer, state: _PollState) -> None:
        super().__init__(spec, pacer)
        self.state = state

    def make_wire(self, sock: socket.socket) -> Wire:
        return PollWire(
            sock,
            self.deadline,
            started=self.t0,
            cleartext_allowed=self.spec.allow_cleartext,
            cleanup=self.state.cleanup,
        )

    def stat(self, wire: Wire) -> None:
        # In place of STAT after the login: the scan for the tagged message.
        assert isinstance(wire, PollWire)
        self.scan(wire)

    def scan(self, wire: PollWire) -> None:
        state = self.state
        wire.command("UIDL", stage="stat")
        if not wire.status("stat").ok:
            raise ProtocolError(
                "server refused UIDL: the round trip needs it to tell messages apart",
                kind="mailbox-failed",
                stage="stat",
            )
        listing: list[tuple[str, str]] = []
        for line in wire.multiline("stat"):
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                listing.append((parts[0], parts[1]))
        fresh = [(n, uid) for n, uid in listing if uid not in state.seen]
        # Newest last in a POP3 listing: read from the end, a bounded number per poll.
        for number, uid in reversed(fresh[-TOP_PER_POLL:]):
            wire.command("TOP", number, "0", stage="stat")
            if not wire.status("stat").ok:
                continue
            headers = _headers(wire.multiline("stat"))
            state.seen.add(uid)
            tags = headers.get(TAG_HEADER.lower(), [])
            if not tags:
                continue
            macs = headers.get(MAC_HEADER.lower(), [])
            tag = tags[0]
            own = (
                state.key is not None
                and len(tags) == 1
                and len(macs) == 1
                and tag.startswith(_TAG_PREFIX)
                and hmac.compare_digest(macs[0], message_mac(state.key, tag))
            )
            if tag == state.tag and (own or state.key is None) and state.found_at is None:
                state.found_at = time.monotonic()
            if own and state.cleanup:
                wire.deletable.add(number)
            elif not own:
                state.kept += 1
        for number in sorted(wire.deletable, key=int):
            wire.command("DELE", number, stage="stat")
            if wire.status("stat").ok:
                state.deleted += 1
        self.ok("stat")


class _Sender(SmtpProbe):
    """The round trip's submission session: the SMTP probe's way to a login, then one
    message (MAIL FROM, RCPT TO, DATA), then QUIT."""

    def __init__(self, spec: ProbeSpec, pacer: LoginPacer, envelope: tuple[str, str], data: bytes):
        super().__init__(spec, pacer)
        self.envelope = envelope
        self.data = data
        self.sent_at: float | None = None
        self.send_reason = ""

    def make_wire(self, sock: socket.socket) -> Wire:
        if not self.ehlo_name:
            self.ehlo_name = _address_literal(sock)
        return SmtpWire(
            sock,
            self.deadline,
            started=self.t0,
            cleartext_allowed=self.spec.allow_cleartext,
            send=True,
        )

    def after_login(self, wire: SmtpWire) -> None:
        self.stage = "relay"
        self.send(wire)

    def send(self, wire: SmtpWire) -> None:
        sender, recipient = self.envelope
        for verb, arg, want in (("MAIL", f"FROM:<{sender}>", 2), ("RCPT", f"TO:<{recipient}>", 2)):
            wire.command(verb, arg, stage="relay")
            reply = wire.reply("relay")
            if reply.code // 100 != want:
                self.send_reason = f"{verb} {arg} refused: {reply.shown()}"
                wire.command("RSET", stage="relay")
                wire.reply("relay")
                return
        wire.command("DATA", stage="relay")
        reply = wire.reply("relay")
        if reply.code != 354:
            self.send_reason = f"DATA refused: {reply.shown()}"
            return
        wire.message(self.data, "relay")
        reply = wire.reply("relay")
        if reply.code // 100 != 2:
            self.send_reason = f"message refused after DATA: {reply.shown()}"
            return
        self.sent_at = time.monotonic()
        self.ok("relay")


def _message(rt_from: str, rt_to: str, tag: str, mac: str) -> bytes:
    lines = [
        f"From: pop3mon round trip <{rt_from}>",
        f"To: <{rt_to}>",
        "Subject: pop3mon mail round trip",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Message-ID: <{secrets.token_hex(12)}@round-trip.pop3mon.invalid>",
        f"{TAG_HEADER}: {tag}",
        *([f"{MAC_HEADER}: {mac}"] if mac else []),
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "Sent by pop3mon's mail round trip check to measure delivery time.",
        "It can be deleted.",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")


def _failure(result: ProbeResult) -> str:
    return f"{result.error_stage or 'session'}: {result.error_reason}" if result.error_kind else ""


def run_round_trip(spec: ProbeSpec, pacer: LoginPacer | None = None) -> RoundTripInfo:
    """Send, then poll until the message is seen or the deadline passes. Never raises
    for anything a server does; the answer's ``status`` and ``reason`` say what happened."""
    rt = spec.round_trip
    if rt is None:
        raise ValueError("spec has no round_trip")
    pacer = pacer if pacer is not None else LoginPacer()
    via = rt.via
    base = RoundTripInfo(status="send-failed", via=via.id, cleanup=rt.cleanup)
    if rt.key_problem or (rt.cleanup != "off" and rt.hmac_key is None):
        problem = rt.key_problem or "no HMAC key configured"
        return dataclasses.replace(base, reason=f"nothing sent: the {problem}")
    tag = f"{_TAG_PREFIX}ct={spec.id} run={secrets.token_hex(16)} sent={int(time.time())}"
    mac = message_mac(rt.hmac_key, tag) if rt.hmac_key is not None else ""
    sender = _Sender(
        # The sender sends; a relay check is the connection type's own run's business.
        dataclasses.replace(via, id=f"{via.id} (round trip)", relay_check=""),
        pacer,
        (rt.sender, rt.recipient),
        _message(rt.sender, rt.recipient, tag, mac),
    )
    sent = sender.run()
    transcript: list[TranscriptLine] = list(sent.transcript)
    logins = 1 if sender.turn is not None else 0
    if sender.sent_at is None:
        why = sender.send_reason or _failure(sent) or "the server did not accept the message"
        return dataclasses.replace(
            base,
            reason=f"message not sent through {via.id}: {why}",
            tag=tag,
            logins=logins,
            transcript=tuple(transcript[-_TRANSCRIPT_MAX:]),
        )
    state = _PollState(tag, rt.hmac_key, rt.cleanup == "own-probe-messages")
    deadline = sender.sent_at + rt.timeout
    gap = _FIRST_POLL
    polls = 0
    status: RoundTripStatus = "timeout"
    reason = ""
    poll_spec = dataclasses.replace(spec, id=f"{spec.id} (round trip)", round_trip=None)
    while polls < DEFAULTS.round_trip_polls:
        wake = min(time.monotonic() + gap, deadline)
        time.sleep(max(0.0, wake - time.monotonic()))
        left = deadline - time.monotonic()
        if left <= 0:
            break
        polls += 1
        poller = _Poller(
            dataclasses.replace(poll_spec, timeout=min(spec.timeout, left)), pacer, state
        )
        polled = poller.run()
        logins += 1 if poller.turn is not None else 0
        transcript = list(polled.transcript)
        if state.found_at is not None:
            status = "delivered"
            break
        if polled.error_kind:
            if polled.error_kind == "timeout" and deadline - time.monotonic() <= 0:
                break
            status, reason = "poll-failed", f"poll {polls} failed: {_failure(polled)}"
            break
        gap = min(gap * 2, _POLL_MAX_GAP)
    delivery = state.found_at - sender.sent_at if state.found_at is not None else None
    if status == "timeout":
        reason = (
            f"message sent through {via.id} not in the mailbox after {rt.timeout:g} s "
            f"({polls} poll{'s' if polls != 1 else ''})"
        )
    return RoundTripInfo(
        status=status,
        via=via.id,
        reason=reason,
        tag=tag,
        delivery=round(delivery, 6) if delivery is not None else None,
        polls=polls,
        logins=logins,
        deleted=state.deleted,
        kept=state.kept,
        cleanup=rt.cleanup,
        transcript=tuple(transcript[-_TRANSCRIPT_MAX:]),
    )
