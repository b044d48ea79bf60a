"""Stopping a run early: SIGTERM (systemd's stop) and SIGINT (Ctrl-C).

On the controller the first signal ends the test loop the way Ctrl-C does (a
:class:`RunStopped`, which is a ``KeyboardInterrupt``), so pytest still runs
``pytest_sessionfinish`` and the reports of what finished are written, the rest marked
"not run". Further signals, and any signal once the tests are over and the reports are
being written, only print a line: a second Ctrl-C must not cut the report writing short
(the report set is replaced as a whole or not at all either way, see
:mod:`.reportset`). pytest-xdist workers hold nothing the reports need (every finished
test's report has reached the controller already), so a worker exits at once on either
signal, and the controller forwards a signal it alone received (``kill PID``) to them.

A stopped run does not wait for probes still in flight: their threads are bounded only by
their own deadline (which may be many seconds away), so once pytest is done the process
ends with ``os._exit`` after flushing its output.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, Final

__all__ = ["RunStopped", "StopControl", "install_worker_handlers"]

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
#: Threads of the probe engine are named with this prefix (runner, probe store).
PROBE_THREAD_PREFIX: Final = "pop3mon-"


class RunStopped(KeyboardInterrupt):
    """The run was told to stop by a signal (pytest treats it as Ctrl-C)."""

    def __init__(self, signame: str) -> None:
        super().__init__(f"stopped by {signame}")
        self.signame = signame


def _is_default(signum: int, handler: Any) -> bool:
    """Whether ``handler`` is Python's default for ``signum`` (else an embedding
    application chose its own, which pop3mon leaves alone)."""
    if signum == signal.SIGINT:
        return handler is signal.default_int_handler
    return handler in (signal.SIG_DFL, None)


def _say(text: str) -> None:
    # Inside a signal handler: one unbuffered write, no locks of sys.stderr.
    with contextlib.suppress(OSError):
        os.write(2, f"\npop3mon: {text}\n".encode())


class StopControl:
    """The controller's signal handling for one run."""

    def __init__(self) -> None:
        #: The signal that stopped the run ("SIGTERM", "SIGINT"), or "".
        self.stopped_by = ""
        #: Set once the tests are over: signals no longer interrupt anything.
        self.finishing = False
        self.exitstatus = 0
        self.worker_pids: set[int] = set()
        self._previous: dict[int, Any] = {}
        self._told = False

    def install(self) -> None:
        """Take over SIGTERM and SIGINT where they still have Python's default handlers
        (only possible in the main thread; pytest.main() elsewhere keeps them)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            current = signal.getsignal(signum)
            if _is_default(signum, current):
                self._previous[signum] = current
                signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Give the signals their previous handlers back."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stopped_by or self.finishing:
            if not self._told:
                self._told = True
                doing = "already stopping" if self.stopped_by else "the tests are over"
                _say(f"{name}: {doing}, writing the reports first")
            return
        self.stopped_by = name
        # SIGTERM whatever arrived here: it ends a worker even where SIGINT is ignored.
        for pid in sorted(self.worker_pids):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        _say(f"{name}: stopping, writing the reports of what finished")
        raise RunStopped(name)

    def exit_if_probes_linger(self) -> None:
        """After a stopped run, end the process now rather than wait for probe threads
        (the interpreter joins them at exit, each until its own deadline)."""
        self.uninstall()
        if not self.stopped_by:
            return
        lingering = [
            t
            for t in threading.enumerate()
            if t.is_alive() and t.name.startswith(PROBE_THREAD_PREFIX)
        ]
        if not lingering:
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(int(self.exitstatus))


def _worker_exit(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)


def install_worker_handlers() -> None:
    """In a pytest-xdist worker: end the process at once on SIGTERM or SIGINT."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        if _is_default(signum, signal.getsignal(signum)):
            signal.signal(signum, _worker_exit)
