"""Sending with Apprise: every target at once, all within one deadline, never raising.

Each target is sent from its own thread (``pop3mon-notify-N``) with its own
``apprise.Apprise`` instance, so one endpoint that hangs or refuses cannot hold up the
others; the run waits for all of them together at most ``notify.timeout`` seconds, and a
thread still waiting then is left to its socket timeouts (daemon threads never hold the
process). A failure is a warning line ``notification to <name or scheme://host> failed:
<why>``.

An Apprise URL holds credentials. Before anything is sent its secret parts are registered
with :data:`~pop3mon.secrets.REDACTOR`, and every title, body and warning passes through
it. Apprise's and urllib3's log records made while sending (in our threads or Apprise's
workers, told apart by a context variable Apprise carries over) are taken out of the
process's logging, since they spell the URL, token included, at DEBUG; the warnings among
them only serve as the reason of a failure, redacted.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from ..config.model import NotifySettings, NotifyTarget
from ..history.model import Change
from ..secrets import REDACTOR, Secret
from .message import Message, compose
from .rules import RunSummary, select

__all__ = ["deliver"]

# Loggers that spell a URL (path and query, so the token) when they log a request.
_LOGGERS: Final = (
    "apprise",
    "urllib3",
    "urllib3.connection",
    "urllib3.connectionpool",
    "urllib3.poolmanager",
    "urllib3.util.retry",
    "requests",
)
_THREAD_PREFIX: Final = "pop3mon-notify-"
_URL_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
# Query keys whose value is a credential whatever its length.
_SECRET_KEYS: Final = frozenset(
    {"pass", "password", "pwd", "token", "key", "apikey", "api_key", "secret", "auth"}
)
# A URL part shorter than this is a word of the service's API ("hooks", "json"), not a
# token: registering it would redact that word from every report.
_TOKEN_MIN: Final = 8


class _Job(threading.Thread):
    """One target's delivery: builds its own Apprise and sends one message."""

    def __init__(
        self, index: int, label: str, url: Secret, message: Message, timeout: float
    ) -> None:
        super().__init__(name=f"{_THREAD_PREFIX}{index}", daemon=True)
        self.label = label
        self._url = url
        self.message = message
        self.timeout = timeout
        self.failure = ""  # why it failed; "" while running or when it was delivered
        self.done = False
        self.log: list[str] = []  # this thread's warnings from Apprise, redacted

    def run(self) -> None:
        # Apprise hands the send to its own worker threads with a copy of this context:
        # the variable marks their log records as ours wherever they are made.
        _SENDING.set(self)
        try:
            import apprise

            # Our threads, not Apprise's; memory only: nothing of a URL is written to disk.
            asset = apprise.AppriseAsset(async_mode=False, storage_mode="memory")
            sender = apprise.Apprise(asset=asset)
            if not sender.add(self._url.reveal()):
                said = f": {self.log[-1].rstrip('.')}" if self.log else ""
                self.failure = (
                    f"Apprise does not understand the URL{said} (check its scheme and form "
                    "in the Apprise documentation)"
                )
                return
            # Apprise's own limit for the whole call; the caller's join is the guard.
            sent = sender.notify(
                title=self.message.title, body=self.message.body, timeout=self.timeout
            )
            if not sent:
                said = self.log[-1] if self.log else "the service did not accept it"
                self.failure = said.rstrip(".")
        except Exception as exc:  # noqa: BLE001 - a notification never ends the run
            self.failure = REDACTOR.scrub(f"{type(exc).__name__}: {exc}")
        finally:
            self.done = True


_SENDING: Final = contextvars.ContextVar[_Job | None]("pop3mon_notify_sending", default=None)


class _CaptureFilter(logging.Filter):
    """Takes the records made while sending out of logging (keeping the warnings' text for
    a failure's reason); every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = _SENDING.get()
        if job is None:
            return True
        if record.levelno >= logging.WARNING:
            try:
                text = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record must not break the send
                text = str(record.msg)
            # Apprise's "privacy" form of a URL keeps a secret's first and last characters
            # (p...d): no URL of any form goes into a reason.
            text = _URL_RE.sub("<the URL>", " ".join(text.split()))
            job.log.append(REDACTOR.scrub(text))
        return False


_FILTER: Final = _CaptureFilter()
_INSTALL_LOCK: Final = threading.Lock()


def _install_filter() -> None:
    with _INSTALL_LOCK:
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)


def _load_apprise() -> None:
    """Import Apprise and load its plugins now, in the caller's thread: loading them
    imports ``imghdr`` (deprecated since Python 3.11), a warning of Apprise's, not of the
    run, and ``warnings.catch_warnings`` is only safe in one thread."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from apprise.manager_plugins import NotificationManager

        NotificationManager().load_modules()  # type: ignore[no-untyped-call]


def _register_url(url: str) -> None:
    """Register the parts of ``url`` that may be credentials with the redactor: the whole
    URL, the password, and the user, host, path segments, query values and fragment that
    look like tokens (or sit under a key like ``token=``)."""
    parts = [url]
    try:
        split = urlsplit(url)
        password, user, host = split.password, split.username, split.hostname
    except ValueError:  # an invalid port or bracket: keep only the whole URL
        REDACTOR.register(*parts)
        return
    if password:
        parts.append(unquote(password))
    candidates = [user or "", *split.path.split("/"), split.fragment]
    # A token in the host's place (tgram://bottoken/...), not a DNS name or an address.
    if host and not any(c == "." for c in host):
        candidates.append(host)
    for key, value in parse_qsl(split.query, keep_blank_values=False):
        if key.lower() in _SECRET_KEYS:
            parts.append(value)
        else:
            candidates.append(value)
    for raw in candidates:
        value = unquote(raw)
        if len(value) >= _TOKEN_MIN and (
            any(c.isdigit() or c.isupper() for c in value) or len(value) >= 20
        ):
            parts.append(value)
    REDACTOR.register(*(p for p in parts if p))


def _bounded(url: str, timeout: float) -> str:
    """``url`` with Apprise's socket timeouts (``cto`` connect, ``rto`` read; every plugin
    takes them) at most ``timeout``: the run stops waiting at the deadline, but Apprise's
    worker threads are joined when the process exits, so a hanging endpoint must not keep
    one alive for longer than the deadline (Apprise's e-mail default is 15 s, a URL may say
    more)."""
    base, sep, rest = url.partition("?")
    query, hash_, fragment = rest.partition("#")
    kept: list[str] = []
    limits = {"cto": timeout, "rto": timeout}
    for piece in query.split("&") if sep else []:
        key, _, value = piece.partition("=")
        if key in limits:
            try:
                given = float(value)
            except ValueError:
                continue
            if 0 < given < limits[key]:
                limits[key] = given
            continue
        if piece:
            kept.append(piece)
    kept += [f"{key}={limit:g}" for key, limit in limits.items()]
    return f"{base}?{'&'.join(kept)}{hash_}{fragment}"


def _endpoint(url: str) -> str:
    """``scheme://host`` of a URL, redacted: what a warning names when a target has no
    name."""
    try:
        split = urlsplit(url)
        host = split.hostname or ""
    except ValueError:
        return "an unparsable URL"
    return REDACTOR.scrub(f"{split.scheme}://{host}" if host else f"{split.scheme}://")


def _label(target: NotifyTarget, index: int) -> str:
    return target.name or f"notify.targets[{index}]"


def deliver(
    settings: NotifySettings | None,
    changes: Sequence[Change],
    run: RunSummary,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Send this run's changes to every target whose rules select some of them; return the
    run-level warnings (one line per failed target). Never raises; returns within
    ``settings.timeout`` seconds plus the time to read the URL references.

    Nothing is sent when ``changes`` is empty or a target's rules select none of them.
    """
    if settings is None or not changes:
        return []
    warnings: list[str] = []
    jobs: list[_Job] = []
    try:
        _install_filter()
        for index, target in enumerate(settings.targets):
            chosen = select(target, changes, run)
            if not chosen:
                continue
            url, problem = target.resolve_url(environ)
            if url is None:
                warnings.append(f"notification to {_label(target, index)} failed: {problem}")
                continue
            _register_url(url.reveal())
            url = Secret(_bounded(url.reveal(), settings.timeout), source=url.source)
            # Composed after the registration, so the message cannot carry the URL.
            message = compose(chosen, settings, run)
            if message is None:
                continue
            label = target.name or _endpoint(url.reveal())
            jobs.append(_Job(index, label, url, message, settings.timeout))
        if jobs:
            _load_apprise()
        for job in jobs:
            job.start()
        deadline = time.monotonic() + settings.timeout
        for job in jobs:
            job.join(max(0.0, deadline - time.monotonic()))
        for job in jobs:
            if not job.done:
                why = f"no answer within {settings.timeout:g} s (the run went on without it)"
            else:
                why = job.failure
            if why:
                warnings.append(f"notification to {job.label} failed: {why}")
    except Exception as exc:  # noqa: BLE001 - a notification never ends the run
        warnings.append(f"notifications failed: {type(exc).__name__}: {exc}")
    return [REDACTOR.scrub(w) for w in warnings]
