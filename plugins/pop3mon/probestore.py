"""One probe per selected connection type per run, and where its result lives (no pytest).

The pytest glue asks :meth:`ProbeStore.result_for` when a tier test needs a result; the
reports read every result with :meth:`ProbeStore.load_all`. Two ways to run:

* one process (no xdist): the first request starts one background batch of every selected
  connection type and each test waits only for its own, so the cheap connectivity checks
  run while slower probes are still in flight; results stay in memory;
* xdist workers: every worker computes the same selection; the first to take a file lock
  probes the whole batch, the others read the results from the shared run directory.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from .config import ConnectionType, Targets
from .engine.defaults import DEFAULTS
from .engine.pacing import Ledger, LoginPacer
from .engine.result import ProbeResult, ProbeSpec
from .engine.runner import run_probes

__all__ = ["ProbeStore", "Selection"]

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

    def result_for(self, ct_id: str, selection: Callable[[], Selection]) -> ProbeResult:
        """The probe result for ``ct_id``; the first call probes everything ``selection``
        returns (called once, lazily: the glue computes it from the collected items)."""
        if ct_id in self.results:
            return self.results[ct_id]
        if not self.shared:
            return self._background_result(ct_id, selection)
        self._probe_shared(ct_id, selection)
        return self.results[ct_id]

    def _background_result(self, ct_id: str, selection: Callable[[], Selection]) -> ProbeResult:
        with self._lock:
            event = self._pending.get(ct_id)
            if event is None:
                # The first test that needs a result starts one batch of every selected
                # connection type not probed yet; later ones just wait for theirs.
                selected = {**selection()}
                selected.setdefault(ct_id, True)
                todo = [i for i in selected if i not in self.results and i not in self._pending]
                for i in todo:
                    self._pending[i] = threading.Event()
                specs = [self._spec(i, login=selected[i]) for i in todo]
                threading.Thread(
                    target=self._run_batch, args=(specs,), name="pop3mon-batch", daemon=True
                ).start()
                event = self._pending[ct_id]
        event.wait()
        result = self.results.get(ct_id)
        if result is None:
            raise RuntimeError(f"pop3mon: probing {ct_id} produced no result")
        return result

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

    def _run_batch(self, specs: list[ProbeSpec]) -> None:
        try:
            self._probe(specs, self._arrived)
        finally:
            # Never leave a test waiting, even if pop3mon itself broke mid-batch.
            for spec in specs:
                self._pending[spec.id].set()

    def _arrived(self, result: ProbeResult) -> None:
        self.results[result.id] = result
        self._pending[result.id].set()

    def _probe_shared(self, ct_id: str, selection: Callable[[], Selection]) -> None:
        selected = {**selection()}
        selected.setdefault(ct_id, True)
        # xdist workers all compute the same selection; the first to take the lock probes
        # the whole batch concurrently, the others find the results on disk.
        with (self.rundir / "probe.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                missing = [
                    i for i in selected if i not in self.results and not self._file(i).exists()
                ]
                if missing:
                    specs = [self._spec(i, login=selected[i]) for i in missing]
                    self._probe(specs, self._write)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        for i in selected:
            if i not in self.results:
                self.results[i] = self._read(i)

    def _spec(self, ct_id: str, login: bool) -> ProbeSpec:
        """The probe spec; without a login when no selected test needs one (``-m tls``,
        ``-m connectivity``): deselected tiers must not cost the server a login."""
        ct = self.by_id[ct_id]
        spec = ct.to_probe_spec()
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
