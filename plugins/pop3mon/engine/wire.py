"""Deadline-bound, size-bound POP3 reading and writing with a redacting transcript.

Two rules live here so that no caller can forget them:

* every read recomputes the socket timeout from one absolute :class:`Deadline`, so a server
  that drips a byte a second cannot stretch a probe beyond its deadline;
* every write goes through :meth:`Wire.command`, which refuses verbs outside the wire's
  allowlist (:data:`ALLOWED_COMMANDS` for POP3, ``engine/smtp.py``'s for SMTP) and refuses
  to put a :class:`Secret` on an unencrypted channel
  unless the caller explicitly allowed cleartext.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from dataclasses import dataclass

from ..secrets import REDACTED, REDACTOR, Secret
from .errors import ConnectError, DeadlineExceeded, PolicyError, ProtocolError
from .result import TranscriptLine

__all__ = [
    "ALLOWED_COMMANDS",
    "Deadline",
    "Sensitive",
    "Status",
    "Wire",
    "parse_status",
    "sanitize",
]

# Read-only commands only. DELE, RETR, TOP, RSET, LIST and anything else never reach the
# socket; RFC 1939 deletes mail only after QUIT following DELE, and we never send DELE.
ALLOWED_COMMANDS = frozenset(
    {"CAPA", "STLS", "USER", "PASS", "APOP", "AUTH", "STAT", "NOOP", "UIDL", "QUIT"}
)

STATUS_LINE_MAX = 512  # RFC 2449: status lines are at most 512 octets including CRLF
MULTILINE_LINE_MAX = 1024
MULTILINE_MAX_LINES = 2000
MULTILINE_MAX_BYTES = 256 * 1024
TRANSCRIPT_MAX_LINES = 400
DISPLAY_MAX = 300

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
# C0/C1 controls (line feed included: a decoded SASL challenge may carry one, and a reason
# must stay one line in the terminal), plus Unicode line separators and the bidirectional
# overrides/isolates that make text display differently from what it is.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def sanitize(raw: bytes | str, limit: int = DISPLAY_MAX) -> str:
    """Make server-controlled text safe to show: decode, strip ANSI/control bytes, cap
    the length and scrub registered secrets. HTML escaping is left to each writer."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    # Scrub before cutting: a secret straddling the length cap would otherwise leave its
    # first characters behind. Scrub again after stripping, which can join split pieces.
    text = REDACTOR.scrub(text)
    text = _ANSI.sub("", text)
    text = _CONTROL.sub("", text.replace("\t", " ").replace("\n", " "))
    text = REDACTOR.scrub(text)
    if len(text) > limit:
        text = text[:limit] + "…"
    return text


class Deadline:
    """An absolute point in monotonic time by which the whole probe must end."""

    __slots__ = ("expires", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds

    def extend(self, seconds: float) -> None:
        """Move the deadline later by ``seconds``: time the probe spent waiting for its
        login turn (engine/pacing.py) is the run's doing, not the server's."""
        self.expires += max(0.0, seconds)

    def remaining(self) -> float:
        """Seconds left (may be negative)."""
        return self.expires - time.monotonic()

    def budget(self, stage: str, cap: float | None = None) -> float:
        """Seconds to allow the next blocking call; raises when the deadline has passed."""
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceeded(
                f"deadline of {self.seconds:g}s exceeded during {stage}", stage=stage
            )
        return min(left, cap) if cap is not None else left


class Sensitive(str):
    """A value derived from a secret (APOP digest, SCRAM proof, CRAM response).

    It may travel over an unencrypted channel, unlike a :class:`Secret`, but is redacted
    from the transcript like one.
    """

    __slots__ = ()


@dataclass(frozen=True)
class Status:
    """A parsed ``+OK``/``-ERR`` status line; ``code`` is an RFC 2449 response code."""

    ok: bool
    text: str
    code: str = ""


_CODE = re.compile(r"^\[([A-Za-z0-9/\-]{1,40})(?:\s[^\]]*)?\]\s*")


def parse_status(line: bytes, stage: str) -> Status:
    """Parse one status line (without CRLF). Anything but exact ``+OK``/``-ERR`` is an error."""
    if line.startswith(b"+OK") and (len(line) == 3 or line[3:4] in (b" ", b"\t")):
        return Status(True, sanitize(line[3:].strip()))
    if line.startswith(b"-ERR") and (len(line) == 4 or line[4:5] in (b" ", b"\t")):
        text = sanitize(line[4:].strip())
        match = _CODE.match(text)
        code = match.group(1).upper() if match else ""
        return Status(False, text, code)
    shown = sanitize(line, 60) or "(empty line)"
    raise ProtocolError(
        f"server sent an invalid status line (expected '+OK' or '-ERR'): {shown!r}",
        kind="bad-status-line",
        stage=stage,
    )


class Wire:
    """A POP3 connection: buffered reads, guarded writes, a redacted transcript.

    :attr:`allowed` is the command allowlist :meth:`command` enforces; a protocol's wire
    subclass (``engine/smtp.py``) sets its own, and reads its own replies."""

    #: The verbs :meth:`command` sends; anything else is refused before the socket.
    allowed: frozenset[str] = ALLOWED_COMMANDS
    #: Which protocol's words a refusal uses.
    protocol_name: str = "POP3"

    def __init__(
        self,
        sock: socket.socket,
        deadline: Deadline,
        *,
        started: float,
        cleartext_allowed: bool = False,
    ) -> None:
        self.sock = sock
        self.deadline = deadline
        self.started = started
        self.encrypted = isinstance(sock, ssl.SSLSocket)
        self.cleartext_allowed = cleartext_allowed
        self.transcript: list[TranscriptLine] = []
        self.sent_verbs: list[str] = []
        # Whether the secret itself (not a value derived from it) was handed to the socket:
        # what the auth policy check reports, and what tells a refusal about the password
        # from one before it.
        self.secret_sent = False
        # A value derived from it (digest, proof) was: the server has seen a credential.
        self.derived_sent = False
        self._buf = bytearray()
        self._in_sasl = False

    # -- transcript --------------------------------------------------------------------
    def note(self, direction: str, text: str) -> None:
        if len(self.transcript) < TRANSCRIPT_MAX_LINES:
            t = round(time.perf_counter() - self.started, 6)
            self.transcript.append(TranscriptLine(t, direction, text))
        elif len(self.transcript) == TRANSCRIPT_MAX_LINES:
            self.transcript.append(TranscriptLine(0.0, "-", "(transcript truncated)"))

    # -- TLS switch --------------------------------------------------------------------
    def pending(self) -> int:
        """Bytes already received but not consumed (used for STARTTLS injection checks)."""
        return len(self._buf)

    def upgrade(self, tls_sock: ssl.SSLSocket) -> None:
        """Continue on the TLS socket; nothing read in plaintext survives the switch."""
        self.sock = tls_sock
        self.encrypted = True
        self._buf.clear()

    # -- reading -----------------------------------------------------------------------
    def _fill(self, stage: str) -> None:
        self.sock.settimeout(self.deadline.budget(stage))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise DeadlineExceeded(
                f"deadline of {self.deadline.seconds:g}s exceeded waiting for the server "
                f"during {stage}",
                stage=stage,
            ) from None
        if not data:
            raise ConnectError(
                f"server closed the connection during {stage}",
                kind="connection-closed",
                stage=stage,
            )
        self._buf += data

    def read_line(self, stage: str, limit: int = STATUS_LINE_MAX) -> bytes:
        """One line without CRLF; longer than ``limit`` octets (CRLF included) is an error."""
        start = 0
        while True:
            idx = self._buf.find(b"\n", start)
            if idx >= 0:
                if idx + 1 > limit:
                    break
                line = bytes(self._buf[:idx])
                del self._buf[: idx + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buf) >= limit:
                break
            start = len(self._buf)
            self._fill(stage)
        raise ProtocolError(
            f"server sent a line longer than {limit} octets during {stage}",
            kind="line-too-long",
            stage=stage,
        )

    def status(self, stage: str) -> Status:
        """Read and parse one status line, recording it in the transcript."""
        line = self.read_line(stage)
        self.note("S", sanitize(line))
        return parse_status(line, stage)

    def multiline(self, stage: str) -> list[str]:
        """Read the body of a multi-line response up to the ``.`` line, dot-unstuffed."""
        lines: list[str] = []
        total = 0
        while True:
            raw = self.read_line(stage, MULTILINE_LINE_MAX)
            if raw == b".":
                return lines
            if raw.startswith(b"."):
                raw = raw[1:]
            total += len(raw) + 2
            if len(lines) >= MULTILINE_MAX_LINES or total > MULTILINE_MAX_BYTES:
                raise ProtocolError(
                    f"multi-line response during {stage} exceeded {MULTILINE_MAX_LINES} lines "
                    f"or {MULTILINE_MAX_BYTES // 1024} KiB without its terminating '.' line",
                    kind="response-too-long",
                    stage=stage,
                )
            text = sanitize(raw)
            lines.append(text)
            self.note("S", text)

    # -- writing -----------------------------------------------------------------------
    def _write(self, data: bytes, stage: str) -> None:
        self.sock.settimeout(self.deadline.budget(stage))
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise DeadlineExceeded(
                f"deadline exceeded while sending during {stage}", stage=stage
            ) from None

    def _reveal(self, arg: str | Secret, verb: str, stage: str) -> tuple[str, str]:
        if isinstance(arg, Secret):
            if not self.encrypted and not self.cleartext_allowed:
                # The last line of defence: policy code should never get here.
                raise PolicyError(
                    f"refusing to send a secret with {verb} over an unencrypted connection",
                    kind="cleartext-refused",
                    stage=stage,
                )
            self.secret_sent = True
            return arg.reveal(), REDACTED
        if isinstance(arg, Sensitive):
            self.derived_sent = True
            return str(arg), REDACTED
        return arg, arg

    def command(self, verb: str, *args: str | Secret, stage: str) -> None:
        """Send one allow-listed command. Secret/Sensitive arguments are redacted."""
        verb = verb.upper()
        if verb not in self.allowed:
            raise PolicyError(
                f"pop3mon never sends {verb} over {self.protocol_name}: not in the allowlist",
                kind="command-refused",
                stage=stage,
            )
        wire_parts = [verb]
        shown_parts = [verb]
        for arg in args:
            real, shown = self._reveal(arg, verb, stage)
            if "\r" in real or "\n" in real:
                raise PolicyError(
                    "argument contains a line break", kind="command-refused", stage=stage
                )
            wire_parts.append(real)
            shown_parts.append(shown)
        self._in_sasl = verb == "AUTH"
        self.sent_verbs.append(verb)
        self.note("C", " ".join(shown_parts))
        self._write((" ".join(wire_parts) + "\r\n").encode("utf-8"), stage)

    def sasl_response(self, payload: str | Secret, stage: str) -> None:
        """Send one SASL continuation line; only valid inside an ``AUTH`` exchange."""
        if not self._in_sasl:
            raise PolicyError(
                "SASL response outside an AUTH exchange", kind="command-refused", stage=stage
            )
        real, shown = self._reveal(payload, "AUTH", stage)
        if real == "*":
            shown = "*"
        elif real == "":
            shown = "(empty response)"
        if "\r" in real or "\n" in real:
            raise PolicyError("SASL response contains a line break", stage=stage)
        self.note("C", shown)
        self._write((real + "\r\n").encode("ascii"), stage)

    def sasl_reply(self, stage: str) -> Status | bytes:
        """A server line inside AUTH: a final status, or a ``+ challenge``'s still
        base64-encoded payload (RFC 5034). The SMTP wire reads ``334`` replies instead."""
        line = self.read_line(stage)
        if line.startswith((b"+OK", b"-ERR")):
            self.note("S", sanitize(line))
            return parse_status(line, stage)
        if line == b"+" or line.startswith(b"+ "):
            payload = line[2:].strip()
            self.note("S", "+ " + sanitize(payload, 120))
            return payload
        self.note("S", sanitize(line))
        return parse_status(line, stage)  # raises a clear invalid-status error

    def end_sasl(self) -> None:
        """Mark the end of an AUTH exchange."""
        self._in_sasl = False

    def close(self) -> None:
        """Close the socket, ignoring errors: the verdict is already known."""
        try:
            self.sock.close()
        except OSError:
            pass
