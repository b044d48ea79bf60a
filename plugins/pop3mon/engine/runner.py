"""Probe many connection types at once: bounded concurrency, one deadline each."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from .defaults import DEFAULTS
from .pacing import LoginPacer, server_key
from .result import ProbeResult, ProbeSpec
from .retry import probe_with_retries

__all__ = ["DEFAULT_CONCURRENCY", "run_probes"]

# The name predates the defaults table; plugin.py imports it for its option help.
DEFAULT_CONCURRENCY = DEFAULTS.concurrency


def run_probes(
    specs: Iterable[ProbeSpec],
    concurrency: int = DEFAULT_CONCURRENCY,
    on_result: Callable[[ProbeResult], None] | None = None,
    pacer: LoginPacer | None = None,
) -> dict[str, ProbeResult]:
    """Probe every spec once, at most ``concurrency`` at a time.

    Probes are I/O-bound and each is bounded by its own deadline, so threads suffice; the
    run takes about as long as the slowest probe times the number of waves. ``on_result``
    is called from the probing threads, once per result, as each probe finishes.
    ``pacer`` takes the logins of one server in turns (see :mod:`.pacing`); pass the run's
    one pacer when a run probes in several batches. A spec with ``retries`` is probed
    again after a transient failure before its login (see :mod:`.retry`), so one
    connection type takes at most ``(retries + 1) x timeout + retries x retry_backoff``.
    """
    todo = list(specs)
    results: dict[str, ProbeResult] = {}
    if not todo:
        return results
    if pacer is None:
        pacer = LoginPacer(max_wait=DEFAULTS.login_wait_max)
    pacer.expect(
        (server_key(s.host, s.address), s.id) for s in todo if s.auth != "none" and s.secret
    )

    def one(spec: ProbeSpec) -> ProbeResult:
        result = probe_with_retries(spec, pacer)
        # Hand each result over as soon as it exists (not in input order), so a consumer
        # can work on finished connection types while slower ones are still in flight.
        if on_result is not None:
            on_result(result)
        return result

    workers = max(1, min(concurrency, len(todo)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pop3mon-probe") as pool:
        for result in pool.map(one, todo):
            results[result.id] = result
    return results
