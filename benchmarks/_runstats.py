"""pytest plugin used only by the benchmarks: where does a suite run spend its time?

Loaded with ``-p _runstats`` (``benchmarks/`` on ``PYTHONPATH``) by :mod:`scale`. Every
pytest process (the controller and each xdist worker) writes one JSON file into
``$POP3MON_RUNSTATS_DIR`` when it exits, holding wall-clock and CPU marks of the run's stages
and the process's own resource usage (peak RSS included), so a benchmark can report
per-process figures that ``getrusage(RUSAGE_CHILDREN)`` of the parent cannot tell apart.

The plugin measures and records; it never changes what the suite does.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

ENV_DIR = "POP3MON_RUNSTATS_DIR"

_T0 = time.perf_counter()
_C0 = time.process_time()
_marks: dict[str, tuple[float, float]] = {}
_probe: dict[str, float] = {}
_loop: dict[str, float] = {}
_role = {"name": "controller"}


def _mark(name: str) -> None:
    """Record wall and CPU seconds since this module was imported, once per name."""
    if name not in _marks:
        _marks[name] = (time.perf_counter() - _T0, time.process_time() - _C0)


def _dump() -> None:
    target = os.environ.get(ENV_DIR)
    if not target:
        return
    _mark("exit")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    data: dict[str, Any] = {
        "role": _role["name"],
        "pid": os.getpid(),
        "marks": {k: {"wall": round(w, 4), "cpu": round(c, 4)} for k, (w, c) in _marks.items()},
        "probe_batch": {k: round(v, 4) for k, v in _probe.items()},
        "loop": {k: round(v, 4) for k, v in _loop.items()},
        "utime": usage.ru_utime,
        "stime": usage.ru_stime,
        "maxrss_kb": usage.ru_maxrss,
    }
    path = Path(target) / f"{_role['name']}-{os.getpid()}.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


atexit.register(_dump)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Remember whether this process is the controller or an xdist worker."""
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        _role["name"] = str(worker.get("workerid", "worker"))
    _mark("configure")


def pytest_collection_finish(session: pytest.Session) -> None:
    """End of collection (items built, parametrized and modified)."""
    _mark("collected")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, Any, Any]:
    """First item started, and the slowest test: the one that waited for the probe batch
    (a wrapper: a plugin's own protocol, such as pop3mon's lean one, returns a result
    before any plain implementation would run; a fixture hook would make pop3mon keep
    pytest's whole protocol, since it cannot tell a timer from a plugin that needs it)."""
    _mark("first_item")
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        return (yield)
    finally:
        wall = time.perf_counter() - w0
        if wall > _probe.get("wall", 0.0):
            _probe["wall"] = wall
            _probe["cpu"] = time.process_time() - c0


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, Any, Any]:
    """End of the test loop (on the xdist controller: when every worker is done), and
    the CPU the main thread spent in it: the rest of the loop it waited for probe results
    (the batch's threads' CPU is in the process's, not here)."""
    c0 = time.thread_time()
    try:
        return (yield)
    finally:
        _mark("loop_done")
        _loop["main_thread_cpu"] = time.thread_time() - c0


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, Any, Any]:
    """Session finish: the report writers run inside this hook."""
    _mark("sessionfinish_start")
    try:
        return (yield)
    finally:
        _mark("sessionfinish_done")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Last plugin hook before pytest's own clean-up (gc passes) and interpreter exit."""
    _mark("unconfigure")
