"""Probe many connection types at once: bounded concurrency, one deadline each."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from .defaults import DEFAULTS
from .pacing import LoginPacer, server_key
from .result import ProbeResult, ProbeSpec, RoundTripInfo
from .retry import probe_with_retries
from .roundtrip import run_round_trip

__all__ = ["DEFAULT_CONCURRENCY", "run_probes", "with_round_trip"]

# The name predates the defaults table; plugin.py imports it for its option help.
DEFAULT_CONCURRENCY = DEFAULTS.concurrency


def with_round_trip(result: ProbeResult, spec: ProbeSpec, pacer: LoginPacer) -> ProbeResult:
    """``result`` with the connection type's mail round trip (engine/roundtrip.py), made
    after its own session ended (so the polls never overlap it) and only when that
    session's login succeeded: without a working login there is nothing to poll with, and
    no message is sent."""
    if result.auth is None or not result.auth.success:
        assert spec.round_trip is not None
        info = RoundTripInfo(
            status="not-run",
            via=spec.round_trip.via.id,
            reason="not made: this connection type's own POP3 login did not succeed",
            cleanup=spec.round_trip.cleanup,
        )
    else:
        info = run_round_trip(spec, pacer)
    return dataclasses.replace(result, round_trip=info)


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
        if spec.round_trip is not None:
            result = with_round_trip(result, spec, pacer)
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
