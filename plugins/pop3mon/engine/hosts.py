"""Host checks: one PING and one TCP check per server entry (host), probed once per run and
shared by every connection type on it; ``depends_on`` orders them and blocks a host behind
one that is down.

A host is *down* when its PING fails (only when ``ping`` is on for it), when its name does
not resolve, or when none of its TCP ports accepts a connection; one closed port among
several is not the host's failure but that connection type's own (its ``tcp`` check). A
PING the runner may not send ("no permission") decides nothing. A host whose dependency is
down (or blocked) is *blocked*: it is not probed, and ``root`` names the first failing
ancestor. No pytest here; :class:`HostResult` is plain data that serialises to JSON, so
xdist workers share it through the run directory as they share probe results.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from .defaults import DEFAULTS
from .dial import dial
from .dns import is_ip, resolve
from .errors import ProbeError, map_exception
from .ping import ping as icmp_ping
from .result import PingInfo
from .stages import AddressFamily, HostCheck
from .wire import Deadline, sanitize

__all__ = [
    "HostResult",
    "HostSpec",
    "HostStatus",
    "PortOutcome",
    "ancestors",
    "probe_host",
    "probe_hosts",
]

#: ``up``: reachable; ``down``: its own check failed; ``blocked``: a dependency is down.
HostStatus = Literal["up", "down", "blocked"]


@dataclass(frozen=True)
class HostSpec:
    """What the engine needs to check one host: the name to resolve (or the pinned
    ``address``), whether to PING it, the TCP ports to try and the servers it depends on."""

    name: str
    host: str
    address: str = ""
    address_family: AddressFamily = DEFAULTS.address_family
    ping: bool = DEFAULTS.ping
    ping_timeout: float = DEFAULTS.ping_timeout
    timeout: float = DEFAULTS.timeout
    ports: tuple[int, ...] = ()
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortOutcome:
    """One TCP port of a host: whether it accepted, why not, and the connect time."""

    port: int
    open: bool
    reason: str = ""
    seconds: float | None = None


@dataclass(frozen=True)
class HostResult:
    """The outcome of checking one host once. ``failed`` is the host check that owns a
    ``down`` (``ping`` or ``tcp``); ``reason`` says why it is down, or for ``blocked`` why
    its root is; ``root`` is the first failing ancestor of a blocked host."""

    name: str
    host: str
    status: HostStatus
    started_at: float
    failed: HostCheck | Literal[""] = ""
    reason: str = ""
    root: str = ""
    addresses: tuple[str, ...] = ()
    ping: PingInfo | None = None
    ports: tuple[PortOutcome, ...] = ()
    seconds: float = 0.0

    @property
    def up(self) -> bool:
        """True when the host was reached (its connection types are probed)."""
        return self.status == "up"

    def to_json(self) -> str:
        """Serialise to JSON text (the xdist run directory, the reports)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostResult:
        """Inverse of :func:`dataclasses.asdict`."""
        d = dict(data)
        d["addresses"] = tuple(d.get("addresses", ()))
        d["ports"] = tuple(PortOutcome(**p) for p in d.get("ports", ()))
        if d.get("ping") is not None:
            d["ping"] = PingInfo(**d["ping"])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> HostResult:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def _addresses(spec: HostSpec, deadline: Deadline) -> tuple[str, ...]:
    if spec.address:
        return (spec.address,)
    if is_ip(spec.host):
        return (spec.host,)
    return resolve(spec.host, spec.ports[0] if spec.ports else 0, deadline, spec.address_family)


def _port(spec: HostSpec, addresses: tuple[str, ...], port: int) -> PortOutcome:
    start = time.perf_counter()
    try:
        dialed = dial(addresses, port, Deadline(spec.timeout), spec.host)
    except Exception as exc:  # noqa: BLE001 - mapped, never raised
        err = map_exception(exc, "connect")
        # dial's reason spells host and port again; the host's reason names them once.
        short = {
            "connection-refused": "connection refused",
            "connect-timeout": f"no answer within {spec.timeout:g}s",
        }
        return PortOutcome(port, False, short.get(err.kind, sanitize(err.reason, 500)))
    dialed.sock.close()
    return PortOutcome(port, True, seconds=round(time.perf_counter() - start, 6))


def probe_host(spec: HostSpec) -> HostResult:
    """Check one host: resolve, PING (when on), then try every TCP port at once. Never
    raises; a host is down only as the module docstring says."""
    started, t0 = time.time(), time.perf_counter()

    def done(status: HostStatus, **kw: Any) -> HostResult:
        seconds = round(time.perf_counter() - t0, 6)
        return HostResult(spec.name, spec.host, status, started, seconds=seconds, **kw)

    first: HostCheck = "ping" if spec.ping else "tcp"
    try:
        addresses = _addresses(spec, Deadline(spec.timeout))
    except Exception as exc:  # noqa: BLE001 - a name that does not resolve: the host is down
        err = exc if isinstance(exc, ProbeError) else map_exception(exc, "dns")
        return done("down", failed=first, reason=sanitize(err.reason, 500))
    info: PingInfo | None = None
    if spec.ping:
        info = icmp_ping(addresses[0], spec.ping_timeout)
        if info.status == "fail":
            return done("down", failed="ping", reason=info.reason, addresses=addresses, ping=info)
    if not spec.ports:
        return done("up", addresses=addresses, ping=info)
    with ThreadPoolExecutor(len(spec.ports), thread_name_prefix="pop3mon-host") as pool:
        ports = tuple(pool.map(lambda p: _port(spec, addresses, p), spec.ports))
    if any(p.open for p in ports):
        return done("up", addresses=addresses, ping=info, ports=ports)
    said = "; ".join(f"{p.port}: {p.reason}" for p in ports)
    where = f"{spec.host} ({addresses[0]})" if addresses[0] != spec.host else spec.host
    if len(ports) == 1:
        reason = f"{where} does not accept TCP connections on its port ({said})"
    else:
        reason = f"none of the {len(ports)} ports of {where} accepts a TCP connection ({said})"
    return done("down", failed="tcp", reason=reason, addresses=addresses, ping=info, ports=ports)


def ancestors(specs: Mapping[str, HostSpec], name: str) -> list[str]:
    """Every host ``name`` depends on, directly or not, nearest first (the config loader
    rejects cycles; a name it does not know is ignored)."""
    out: list[str] = []
    todo = list(specs[name].depends_on) if name in specs else []
    while todo:
        dep = todo.pop(0)
        if dep in specs and dep not in out and dep != name:
            out.append(dep)
            todo.extend(specs[dep].depends_on)
    return out


def probe_hosts(
    specs: Mapping[str, HostSpec],
    names: Iterable[str],
    concurrency: int = DEFAULTS.concurrency,
    done: Mapping[str, HostResult] | None = None,
) -> dict[str, HostResult]:
    """Check each named host and every host it depends on once, dependencies first, many
    at a time; a host behind one that is not up is ``blocked`` and not probed. ``done``:
    results that exist already (not probed again). Returns the results of every host
    involved."""
    results: dict[str, HostResult] = dict(done or {})
    wanted: list[str] = []
    for name in names:
        for host in (name, *ancestors(specs, name)):
            if host in specs and host not in wanted:
                wanted.append(host)
    todo = [n for n in wanted if n not in results]
    while todo:
        ready = [n for n in todo if all(d in results for d in _deps(specs, n))]
        if not ready:  # a cycle the loader let through: check what is left on its own
            ready = list(todo)
        probe: list[str] = []
        for name in ready:
            blocker = next(
                (results[d] for d in _deps(specs, name) if d in results and not results[d].up),
                None,
            )
            if blocker is None:
                probe.append(name)
                continue
            root = blocker.root or blocker.name
            results[name] = HostResult(
                name, specs[name].host, "blocked", time.time(), reason=blocker.reason, root=root
            )
        if probe:
            workers = max(1, min(concurrency, len(probe)))
            with ThreadPoolExecutor(workers, thread_name_prefix="pop3mon-hosts") as pool:
                for result in pool.map(lambda n: probe_host(specs[n]), probe):
                    results[result.name] = result
        todo = [n for n in todo if n not in results]
    return results


def _deps(specs: Mapping[str, HostSpec], name: str) -> Collection[str]:
    return [d for d in specs[name].depends_on if d in specs]
