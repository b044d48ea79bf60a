"""One probe per selected connection type per run, and where its result lives (no pytest).

The pytest glue asks :meth:`ProbeStore.result_for` when a tier test needs a result; the
reports read every result with :meth:`ProbeStore.load_all`. Two ways to run:

* one process (no xdist): the first request starts one background batch of every selected
  connection type and each test waits only for its own, so the cheap connectivity checks
  run while slower probes are still in flight; results stay in memory;
* xdist workers: every worker computes the same selection; the first to take a file lock
  probes the whole batch, the others read the results from the shared run directory.

Either way a batch checks the hosts first (:mod:`pop3mon.engine.hosts`: the hosts of the
selected connection types, the hosts whose host tests are selected, and every host they
depend on, each once), then probes only the connection types whose host is up, reusing the
host's PING; a connection type whose host is down gets a result that names the host and
was never sent a byte (:func:`pop3mon.checks.hosts.not_probed`). The same batch runs the
discovery of every server whose coverage tests are selected (:mod:`pop3mon.engine.discovery`,
once per server and run, alongside the probes: no login, so no pacing), shared under xdist
through ``coverage-*.json`` like the host results.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .checks.hosts import not_probed
from .config import ConnectionType, Coverage, Host, Targets
from .engine.defaults import DEFAULTS
from .engine.discovery import (
    Discovery,
    DiscoveryPart,
    Failure,
    Offered,
    Published,
    discover,
)
from .engine.hosts import HostResult, probe_hosts
from .engine.pacing import Ledger, LoginPacer
from .engine.result import ProbeResult, ProbeSpec
from .engine.runner import run_probes

__all__ = [
    "ProbeStore",
    "Selection",
    "discovery_from_dict",
    "discovery_from_json",
    "discovery_to_json",
]

#: Selected connection type ids -> whether a selected test of theirs needs a login.
Selection = Mapping[str, bool]


class ProbeStore:
    """The run's probe results, probing each selected connection type at most once."""

    def __init__(
        self,
        targets: Targets,
        rundir: Path,
        *,
        shared: bool,
        concurrency: int,
        ledger: Callable[[], Path | None] | None = None,
    ):
        """``ledger`` says where login pacing keeps what the next run must know about this
        run's refused logins (see :mod:`pop3mon.engine.pacing`), asked when the first
        batch starts (``None``, or it returns ``None``: nowhere)."""
        self.targets = targets
        self.rundir = rundir
        self.shared = shared
        self.concurrency = max(1, concurrency)
        self._ledger = ledger
        self.ledger_path: Path | None = None
        self._pacer: LoginPacer | None = None
        self.by_id: dict[str, ConnectionType] = {c.id: c for c in targets.connections}
        self.results: dict[str, ProbeResult] = {}
        self._lock = threading.Lock()
        self._pending: dict[str, threading.Event] = {}
        self.hosts: dict[str, Host] = {h.name: h for h in targets.hosts}
        self.host_of: dict[str, str] = {c: h.name for h in targets.hosts for c in h.connections}
        self.host_results: dict[str, HostResult] = {}
        self._host_pending: dict[str, threading.Event] = {}
        self.coverage: dict[str, Coverage] = {c.name: c for c in targets.coverage}
        self.coverage_results: dict[str, Discovery] = {}
        self._coverage_pending: dict[str, threading.Event] = {}
        #: The batch threads started in this process (each joins its probing threads).
        self._batches: list[threading.Thread] = []

    def result_for(
        self,
        ct_id: str,
        selection: Callable[[], Selection],
        hosts: Callable[[], Collection[str]] = tuple,
        coverage: Callable[[], Collection[str]] = tuple,
    ) -> ProbeResult:
        """The probe result for ``ct_id``; the first call probes everything ``selection``
        returns (called once, lazily: the glue computes it from the collected items), after
        the hosts it involves and the ones ``hosts`` names (selected host tests), and
        discovers the servers ``coverage`` names (selected coverage tests) meanwhile."""
        if ct_id in self.results:
            return self.results[ct_id]
        if not self.shared:
            event = self._start(selection, hosts, coverage, ct_id=ct_id)
            event.wait()
            result = self.results.get(ct_id)
            if result is None:
                raise RuntimeError(f"pop3mon: probing {ct_id} produced no result")
            return result
        self._probe_shared(selection, hosts, coverage, ct_id=ct_id)
        return self.results[ct_id]

    def host_result_for(
        self,
        name: str,
        selection: Callable[[], Selection],
        hosts: Callable[[], Collection[str]],
        coverage: Callable[[], Collection[str]] = tuple,
    ) -> HostResult:
        """The host check result of server ``name``; the first call starts the same one
        batch as :meth:`result_for` (hosts first)."""
        if name not in self.host_results:
            self._run_batch_for(selection, hosts, coverage, host=name)
        result = self.host_results.get(name)
        if result is None:
            raise RuntimeError(f"pop3mon: checking host {name} produced no result")
        return result

    def coverage_result_for(
        self,
        name: str,
        selection: Callable[[], Selection],
        hosts: Callable[[], Collection[str]],
        coverage: Callable[[], Collection[str]],
    ) -> Discovery:
        """What discovery found for server ``name``'s coverage tests; the first call starts
        the same one batch as :meth:`result_for` (its discoveries run beside the probes)."""
        if name not in self.coverage_results:
            self._run_batch_for(selection, hosts, coverage, server=name)
        found = self.coverage_results.get(name)
        if found is None:
            raise RuntimeError(f"pop3mon: discovering server {name} produced no result")
        return found

    def _run_batch_for(
        self,
        selection: Callable[[], Selection],
        hosts: Callable[[], Collection[str]],
        coverage: Callable[[], Collection[str]],
        **wanted: str,
    ) -> None:
        """Run (or, under xdist, join) the run's one batch for a host check (``host=``)
        or a server's coverage (``server=``) that has no result yet."""
        if self.shared:
            self._probe_shared(selection, hosts, coverage, **wanted)
        else:
            self._start(selection, hosts, coverage, **wanted).wait()

    def _start(
        self,
        selection: Callable[[], Selection],
        hosts: Callable[[], Collection[str]],
        coverage: Callable[[], Collection[str]] = tuple,
        *,
        ct_id: str = "",
        host: str = "",
        server: str = "",
    ) -> threading.Event:
        """The event to wait on for ``ct_id`` (or host ``host``, or the discovery of
        ``server``), starting a batch of everything not probed or pending yet when the item
        is neither."""
        with self._lock:
            if ct_id:
                event = self._pending.get(ct_id)
            elif server:
                event = self._coverage_pending.get(server)
            else:
                event = self._host_pending.get(host)
            if event is None:
                # The first test that needs a result starts one batch of every selected
                # connection type not probed yet; later ones just wait for theirs.
                selected = {**selection()}
                if ct_id:
                    selected.setdefault(ct_id, True)
                todo = {
                    i: login
                    for i, login in selected.items()
                    if i not in self.results and i not in self._pending
                }
                names = self._hosts_wanted(todo, {*hosts(), *([host] if host else [])})
                names = [n for n in names if n not in self.host_results]
                names = [n for n in names if n not in self._host_pending]
                for i in todo:
                    self._pending[i] = threading.Event()
                for n in names:
                    self._host_pending[n] = threading.Event()
                servers = self._coverage_wanted({*coverage(), *([server] if server else [])})
                servers = [n for n in servers if n not in self._coverage_pending]
                for n in servers:
                    self._coverage_pending[n] = threading.Event()
                batch = threading.Thread(
                    target=self._run_batch,
                    args=(todo, names, servers),
                    name="pop3mon-batch",
                    daemon=True,
                )
                self._batches.append(batch)
                batch.start()
                if ct_id:
                    event = self._pending[ct_id]
                elif server:
                    event = self._coverage_pending[server]
                else:
                    event = self._host_pending[host]
        return event

    def settle(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s in all for this process's batches to end: once their
        last results are in, they only close their thread pools and save the pacing
        ledger. True when no batch (and so no probing thread) is left."""
        deadline = time.monotonic() + timeout
        for batch in list(self._batches):
            batch.join(max(0.0, deadline - time.monotonic()))
        return not any(batch.is_alive() for batch in self._batches)

    def _coverage_wanted(self, names: Collection[str]) -> list[str]:
        """The servers among ``names`` with coverage on and not discovered yet."""
        return [n for n in sorted(names) if n in self.coverage and n not in self.coverage_results]

    def _discover(
        self, names: Collection[str], on_result: Callable[[str, Discovery], None]
    ) -> threading.Thread | None:
        """Discover ``names`` in the background (each within its own one deadline, beside
        the batch's probes); join the thread returned to wait for all of them."""
        if not names:
            return None

        def one(name: str) -> None:
            started = time.perf_counter()
            try:
                found = discover(self.coverage[name].to_spec())
            except Exception as exc:  # noqa: BLE001 - a coverage test must get a result
                why = f"discovery failed: {type(exc).__name__}"
                parts: tuple[DiscoveryPart, ...] = ("srv", "autoconfig", "probe")
                found = Discovery(
                    None, (), (), (), (why,), 0.0, tuple(Failure(p, why) for p in parts)
                )
                found = dataclasses.replace(found, elapsed=time.perf_counter() - started)
            on_result(name, found)

        def run() -> None:
            workers = max(1, min(self.concurrency, len(names)))
            with ThreadPoolExecutor(workers, thread_name_prefix="pop3mon-discover") as pool:
                list(pool.map(one, names))

        thread = threading.Thread(target=run, name="pop3mon-discovery", daemon=True)
        thread.start()
        return thread

    def _hosts_wanted(self, cts: Collection[str], hosts: Collection[str]) -> list[str]:
        """The host checks a batch needs: of its connection types, and those named."""
        names = [self.host_of[i] for i in cts if i in self.host_of]
        return list(dict.fromkeys(n for n in [*names, *hosts] if n in self.hosts))

    def _check_hosts(self, names: Collection[str], on_result: Callable[[HostResult], None]) -> None:
        """Check ``names`` and what they depend on (each host once: known ones are reused)."""
        if not names:
            return
        specs = {n: h.to_spec() for n, h in self.hosts.items()}
        known = dict(self.host_results)
        for result in probe_hosts(specs, names, self.concurrency, done=known).values():
            if result.name not in known:
                on_result(result)

    def _gated(self, todo: Mapping[str, bool]) -> tuple[list[ProbeSpec], list[ProbeResult]]:
        """The specs to probe, and the results of connection types whose host is not up
        (not probed at all)."""
        specs: list[ProbeSpec] = []
        down: list[ProbeResult] = []
        for ct_id, login in todo.items():
            host = self.host_results.get(self.host_of.get(ct_id, ""))
            if host is not None and not host.up:
                ct = self.by_id[ct_id]
                down.append(not_probed(ct.id, ct.host, ct.port, ct.security, host))
            else:
                specs.append(self._spec(ct_id, login=login))
        return specs, down

    def _pacer_for_run(self) -> LoginPacer:
        """The run's one login pacer, started from the previous run's ledger."""
        if self._pacer is None:
            self.ledger_path = self._ledger() if self._ledger else None
            ledger = Ledger()
            if self.ledger_path is not None:
                try:
                    ledger = Ledger.from_json(self.ledger_path.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError):
                    pass  # first run, or unreadable: pace from nothing
            self._pacer = LoginPacer(ledger, max_wait=DEFAULTS.login_wait_max)
        return self._pacer

    def _probe(self, specs: list[ProbeSpec], on_result: Callable[[ProbeResult], None]) -> None:
        pacer = self._pacer_for_run()
        try:
            run_probes(specs, self.concurrency, on_result=on_result, pacer=pacer)
        finally:
            self._save_ledger(pacer)

    def _save_ledger(self, pacer: LoginPacer) -> None:
        if self.ledger_path is None:
            return
        try:
            self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.ledger_path.with_name(self.ledger_path.name + f".{os.getpid()}.tmp")
            tmp.write_text(pacer.ledger().to_json(), encoding="utf-8")
            tmp.replace(self.ledger_path)
        except OSError:
            pass  # pacing memory is an optimisation; never a reason to fail the run

    def _run_batch(
        self, todo: Mapping[str, bool], hosts: Collection[str], servers: Collection[str] = ()
    ) -> None:
        discovering = self._discover(servers, self._coverage_arrived)
        try:
            self._check_hosts(hosts, self._host_arrived)
            specs, down = self._gated(todo)
            for result in down:
                self._arrived(result)
            self._probe(specs, self._arrived)
        finally:
            # Never leave a test waiting, even if pop3mon itself broke mid-batch.
            for name in hosts:
                self._host_pending[name].set()
            for ct_id in todo:
                self._pending[ct_id].set()
            if discovering is not None:
                discovering.join()
            for name in servers:
                self._coverage_pending[name].set()

    def _coverage_arrived(self, name: str, found: Discovery) -> None:
        self.coverage_results[name] = found
        event = self._coverage_pending.get(name)
        if event is not None:
            event.set()

    def _arrived(self, result: ProbeResult) -> None:
        self.results[result.id] = result
        self._pending[result.id].set()

    def _host_arrived(self, result: HostResult) -> None:
        self.host_results[result.name] = result
        event = self._host_pending.get(result.name)
        if event is not None:
            event.set()

    def _probe_shared(
        self,
        selection: Callable[[], Selection],
        hosts: Callable[[], Collection[str]],
        coverage: Callable[[], Collection[str]] = tuple,
        *,
        ct_id: str = "",
        host: str = "",
        server: str = "",
    ) -> None:
        selected = {**selection()}
        if ct_id:
            selected.setdefault(ct_id, True)
        names = self._hosts_wanted(selected, {*hosts(), *([host] if host else [])})
        servers = self._coverage_wanted({*coverage(), *([server] if server else [])})
        # xdist workers all compute the same selection; the first to take the lock checks
        # the hosts and probes the whole batch concurrently, the others find the results on
        # disk. Each host and each connection type is probed once per run.
        with (self.rundir / "probe.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            discovering = None
            try:
                discovering = self._discover(
                    [n for n in servers if not self._coverage_file(n).exists()],
                    self._write_coverage,
                )
                for path in self.rundir.glob("host-*.json"):
                    found = HostResult.from_json(path.read_text(encoding="utf-8"))
                    self.host_results.setdefault(found.name, found)
                self._check_hosts(
                    [n for n in names if n not in self.host_results], self._write_host
                )
                missing = {
                    i: login
                    for i, login in selected.items()
                    if i not in self.results and not self._file(i).exists()
                }
                if missing:
                    specs, down = self._gated(missing)
                    for result in down:
                        self._write(result)
                    self._probe(specs, self._write)
            finally:
                if discovering is not None:
                    discovering.join()
                fcntl.flock(handle, fcntl.LOCK_UN)
        for i in selected:
            if i not in self.results:
                self.results[i] = self._read(i)
        for n in servers:
            if n not in self.coverage_results and self._coverage_file(n).exists():
                text = self._coverage_file(n).read_text(encoding="utf-8")
                self.coverage_results[n] = discovery_from_json(text)

    def _coverage_file(self, name: str) -> Path:
        return self.rundir / (
            "coverage-" + hashlib.sha256(name.encode()).hexdigest()[:24] + ".json"
        )

    def _write_coverage(self, name: str, found: Discovery) -> None:
        path = self._coverage_file(name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(discovery_to_json(found), encoding="utf-8")
        tmp.replace(path)
        self.coverage_results[name] = found

    def load_coverage(self) -> dict[str, Discovery]:
        """What discovery found for each server's coverage this run (memory, else the
        xdist run directory); a server whose coverage tests did not run is absent."""
        out: dict[str, Discovery] = {}
        for name in self.coverage:
            if name in self.coverage_results:
                out[name] = self.coverage_results[name]
            elif self._coverage_file(name).exists():
                text = self._coverage_file(name).read_text(encoding="utf-8")
                out[name] = discovery_from_json(text)
        return out

    def _host_file(self, name: str) -> Path:
        return self.rundir / ("host-" + hashlib.sha256(name.encode()).hexdigest()[:24] + ".json")

    def _write_host(self, result: HostResult) -> None:
        path = self._host_file(result.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(result.to_json(), encoding="utf-8")
        tmp.replace(path)
        self.host_results[result.name] = result

    def load_hosts(self) -> dict[str, HostResult]:
        """Every host check result of the run (memory, else the xdist run directory)."""
        out: dict[str, HostResult] = {}
        for name in self.hosts:
            if name in self.host_results:
                out[name] = self.host_results[name]
            elif self._host_file(name).exists():
                text = self._host_file(name).read_text(encoding="utf-8")
                out[name] = HostResult.from_json(text)
        return out

    def _spec(self, ct_id: str, login: bool) -> ProbeSpec:
        """The probe spec; without a login when no selected test needs one (``-m tls``,
        ``-m connectivity``): deselected tiers must not cost the server a login."""
        ct = self.by_id[ct_id]
        spec = ct.to_probe_spec()
        host = self.host_results.get(self.host_of.get(ct_id, ""))
        if spec.ping and host is not None and host.ping is not None:
            # One echo per host and run: the connection type reads the host check's.
            spec = dataclasses.replace(spec, ping_result=host.ping)
        if login and ct.round_trip is not None and ct.round_trip.via in self.by_id:
            # The round trip (opt-in) needs the login; a run without one makes none.
            spec = ct.with_round_trip(spec, self.by_id[ct.round_trip.via])
        if login or spec.auth == "none":
            return spec
        return dataclasses.replace(spec, auth="none", secret=None, secret_problem="")

    def _file(self, ct_id: str) -> Path:
        return self.rundir / ("probe-" + hashlib.sha256(ct_id.encode()).hexdigest()[:24] + ".json")

    def _write(self, result: ProbeResult) -> None:
        path = self._file(result.id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(result.to_json(), encoding="utf-8")
        tmp.replace(path)
        self.results[result.id] = result

    def _read(self, ct_id: str) -> ProbeResult:
        return ProbeResult.from_json(self._file(ct_id).read_text(encoding="utf-8"))

    def load_all(self) -> dict[str, ProbeResult]:
        """Every result any process of this run has (the controller's view for reports):
        its own from memory, the xdist workers' from the run directory."""
        out: dict[str, ProbeResult] = {}
        for ct in self.targets.connections:
            if ct.id in self.results:
                out[ct.id] = self.results[ct.id]
            elif self._file(ct.id).exists():
                out[ct.id] = self._read(ct.id)
        return out


def discovery_to_json(found: Discovery) -> str:
    """A :class:`~pop3mon.engine.discovery.Discovery` as JSON text (the xdist run
    directory)."""
    return json.dumps(dataclasses.asdict(found), sort_keys=True)


def discovery_from_json(text: str) -> Discovery:
    """Inverse of :func:`discovery_to_json`."""
    return discovery_from_dict(json.loads(text))


def discovery_from_dict(data: Mapping[str, Any]) -> Discovery:
    """A :class:`~pop3mon.engine.discovery.Discovery` from its ``dataclasses.asdict`` form
    (the run directory's JSON, results.json ``coverage[].discovery``)."""
    return Discovery(
        domain=data["domain"],
        hosts=tuple(data["hosts"]),
        published=tuple(Published(**p) for p in data["published"]),
        offered=tuple(
            Offered(
                **{
                    **o,
                    "capabilities": tuple(o["capabilities"]),
                    "cleartext_login_before_tls": tuple(o["cleartext_login_before_tls"]),
                }
            )
            for o in data["offered"]
        ),
        problems=tuple(data["problems"]),
        elapsed=float(data["elapsed"]),
        failures=tuple(Failure(**f) for f in data.get("failures", ())),
    )
