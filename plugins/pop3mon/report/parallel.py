"""Two report writers at once: one in a forked child, one in this process.

Writing the reports of a large run is pure CPU on data the run already holds (1,000
connection types: ~1.3 s for junit.xml and metrics.prom, ~1.5 s for report.html and
results.json, on one core). A forked child shares that data without copying or pickling
it, so the two halves take the time of the longer one where a second core is free.

The child only writes its staged files and leaves with :func:`os._exit` (no atexit
handler, no flush of buffers it inherited, so nothing is printed twice). Whatever goes
wrong there, the parent does the child's part itself afterwards, where an error is
reported as usual: the parallel path can make a run faster, never lose or change a
report. A fork is only made where it is safe and worth it: POSIX, one thread alive (a
fork copies no other thread, and a lock another thread held would stay held in the
child) and a run large enough that ~10 ms of fork pays.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
from collections.abc import Callable
from typing import Final

__all__ = ["PARALLEL_MIN_CHECKS", "in_parallel"]

#: Fewer checks than this are written in one process: the fork and the child's copy-on-
#: write faults cost more than half the writing saves.
PARALLEL_MIN_CHECKS: Final = 2000


def in_parallel(
    child: Callable[[], None],
    here: Callable[[], None],
    *,
    worth_it: bool,
    prepare: Callable[[], object] | None = None,
) -> bool:
    """Run ``child`` in a forked child process while this process runs ``here``; both only
    write files. Returns True when the two ran at once. ``prepare`` runs first when it is
    ``worth_it`` (to let threads that are ending end).

    Without a fork (not ``worth_it``, no :func:`os.fork`, another thread alive, fork
    failed) both run here, ``here`` first. If the child fails in any way, ``child`` runs
    here afterwards, so its exception (a full disk) reaches the caller. If ``here`` raises
    (or a signal interrupts the wait), the child is killed and reaped before the exception
    goes on: no process is left writing files the caller is about to discard.
    """
    if worth_it and prepare is not None:
        prepare()
    if not worth_it or not hasattr(os, "fork") or threading.active_count() != 1:
        return _one_after_the_other(child, here)
    # Objects the collector tracks move to its permanent generation, so that neither
    # process's collections touch (and the child's copy-on-write duplicates) the run model.
    gc.freeze()
    # Held back across the fork: the parent hears Ctrl-C and SIGTERM (and says so once);
    # the child ignores Ctrl-C and dies of SIGTERM, and its part is then redone here.
    stops = {signal.SIGINT, signal.SIGTERM}
    held = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return _one_after_the_other(child, here)
    if pid == 0:  # pragma: no cover - the child's exit status is what the parent tests
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            gc.disable()
            child()
            code = 0
        finally:
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    try:
        here()
    except BaseException:
        _reap(pid, kill=True)
        raise
    try:
        ok = _reap(pid, kill=False)
    except BaseException:
        _reap(pid, kill=True)
        raise
    if not ok:
        child()
    return ok


def _one_after_the_other(child: Callable[[], None], here: Callable[[], None]) -> bool:
    here()
    child()
    return False


def _reap(pid: int, *, kill: bool) -> bool:
    """Wait for child ``pid`` (killing it first when ``kill``); True if it exited 0."""
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # already reaped
        return False
    return os.waitstatus_to_exitcode(status) == 0
