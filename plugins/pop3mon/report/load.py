"""``results.json`` read back into the :class:`~.model.RunReport` the writers read.

``pop3mon merge`` combines shards (and vantage points) from their ``results.json`` files
alone: no pytest, no targets file, no run directory. So the document has to carry
everything a writer reads, and this module is its inverse (:func:`load_results`): the
connection types' configuration (``config``), the probe results (``probe``), the check
records, the host checks and the history's states, changes and availability as the run
recorded them, and the coverage checks with what their discovery found.

What the document does not carry, and a report written from a loaded run therefore lacks
(documented in README.md, "Merging shards and vantage points"): the history's latency
series (the HTML sparkline), a state's ``told`` verdict and a change's ``was_hard`` (the
notifications' business, not a report's), and the sub-millisecond part of the run's start
and end (``run.started_epoch`` is rounded to 1 ms, so ``duration_seconds`` may differ in
its last digit).
"""

from __future__ import annotations

import calendar
import dataclasses
import functools
import json
import math
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, Final

from ..config.model import ConnectionType, Coverage, Host, LatencyThresholds, RoundTrip
from ..config.shard import MAX_SHARDS, is_run_id, is_vantage
from ..config.wording import printable
from ..engine.defaults import DriftPolicy
from ..engine.hosts import HostResult
from ..engine.result import ProbeResult
from ..history.model import Change, CheckState
from ..history.record import HistoryOutcome, HistoryStatus
from ..history.store import WINDOWS
from ..probestore import discovery_from_dict
from ..verdict import Verdict
from .json_report import SCHEMA
from .model import (
    NO_VANTAGE,
    ConnectionReport,
    CoverageReport,
    HostReport,
    RunInfo,
    RunReport,
    VantageView,
)
from .recorder import CheckRecord, OtherTest

__all__ = ["LoadError", "LoadedRun", "find_results", "load_results", "report_from_document"]

RESULTS_NAME: Final = "results.json"
#: How a refusal of a malformed file ends: what to do about it.
_FIX: Final = "merge the results.json a pop3mon run wrote, unchanged"
#: Epochs a report can print (time.gmtime, strftime): from 1970 to the end of year 9999.
_MAX_EPOCH: Final = 253402300799.0
#: No number pop3mon writes is this large; a larger one overflows a float or a writer.
_MAX_NUMBER: Final = 1e18
#: The history statuses a run writes (history/record.py ``HistoryStatus``).
_HISTORY_STATUS: Final = typing.get_args(HistoryStatus)


class LoadError(Exception):
    """A results.json that cannot be read back; the message is one line naming the file."""


@dataclass(frozen=True)
class LoadedRun:
    """One run's results.json and the report it was written from."""

    path: Path
    report: RunReport

    @property
    def shard(self) -> tuple[int, int] | None:
        """``run.shard`` as (index, total); None for an unsharded run."""
        return self.report.info.shard

    @property
    def vantage(self) -> str | None:
        """``run.vantage``: where the run probed from, or None."""
        return self.report.info.vantage


def find_results(arg: Path) -> list[Path]:
    """The results.json files an INPUT names: the file itself, or ``DIR/results.json``
    and ``DIR/*/results.json`` (a folder of downloaded artifacts), sorted."""
    if arg.is_file():
        return [arg]
    if not arg.is_dir():
        raise LoadError(f"{arg}: no such file or directory")
    found = ([arg / RESULTS_NAME] if (arg / RESULTS_NAME).is_file() else []) + sorted(
        p for p in arg.glob(f"*/{RESULTS_NAME}") if p.is_file()
    )
    if not found:
        raise LoadError(f"{arg}: no {RESULTS_NAME} in it or in its subdirectories")
    return found


def load_results(path: Path) -> LoadedRun:
    """Read ``path`` (a results.json of schema v1) into a :class:`LoadedRun`.

    The file comes from elsewhere (another runner, an artifact store), so every value is
    checked against what a run writes (types, finite numbers, known names, ids a
    terminal can show); anything else is a :class:`LoadError`, one line naming the file
    and the field, never an exception from deeper down."""
    constants: list[str] = []

    def constant(name: str) -> float:
        # NaN and Infinity are no JSON, and no run writes them; noted here, refused with
        # the field's name by the checks below (or as the file's, should none meet it).
        constants.append(name)
        return float(name)

    try:
        doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=constant)
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoadError(f"{path}: not JSON ({exc})") from None
    except RecursionError:
        raise LoadError(f"{path}: not a pop3mon results file (nested too deeply); {_FIX}") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise LoadError(f"{path}: malformed results file ({exc}); {_FIX}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else None
        raise LoadError(
            f"{path}: not a pop3mon results file (schema {ascii(found)[:80]}, want {SCHEMA!r})"
        )
    try:
        report = report_from_document(doc)
    except KeyError as exc:
        raise LoadError(f"{path}: malformed results file (missing key {exc}); {_FIX}") from None
    except (TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        raise LoadError(f"{path}: malformed results file ({_one_line(exc)}); {_FIX}") from None
    except Exception as exc:  # noqa: BLE001 - the net: one line naming the file, always
        raise LoadError(
            f"{path}: malformed results file (unexpected {type(exc).__name__}: "
            f"{_one_line(exc)}); {_FIX}"
        ) from None
    if constants:
        raise LoadError(
            f"{path}: malformed results file ({constants[0]} where a run writes a number); {_FIX}"
        )
    return LoadedRun(path=path, report=report)


def _one_line(exc: BaseException) -> str:
    """An exception's message as one printable line (it may quote the file)."""
    return printable(str(exc)[:300])


# ----------------------------------------------------------------------------- checks
def _shown(value: Any) -> str:
    """A value of the file as a message quotes it: ASCII, short, one line."""
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} is {_shown(value)}, not an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where} is {_shown(value)}, not a list")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    """A list of strings (ids, warnings): each checked as :func:`_string` checks one."""
    return tuple(_string(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} is {_shown(value)}, not a string")
    return value


def _name(value: Any, where: str) -> str:
    """An id or a check's name: a non-empty string with no control character (the
    terminal shows them as they are)."""
    text = _string(value, where)
    if not text or not text.isprintable():
        raise ValueError(f"{where} {_shown(text)} is not a name pop3mon writes")
    return text


def _number(value: Any, where: str) -> float:
    """A finite number a writer can format (``figure``, durations, thresholds)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} is {_shown(value)}, not a number")
    if isinstance(value, int) and abs(value) > _MAX_NUMBER:
        raise ValueError(f"{where} is a number of {len(str(abs(value)))} digits")
    if not math.isfinite(value) or abs(value) > _MAX_NUMBER:
        raise ValueError(f"{where} is {_shown(value)}, not a finite number")
    return float(value)


def _epoch_at(value: Any, where: str) -> float:
    """Seconds since 1970 that a report prints as a date."""
    epoch = _number(value, where)
    if not 0 <= epoch <= _MAX_EPOCH:
        raise ValueError(f"{where} is {_shown(value)}, not a time between 1970 and 9999")
    return epoch


#: Fields that are epochs (a report prints them as a date).
_EPOCHS: Final = frozenset({"started_at", "since"})
#: A check of one value against a type hint: raises ValueError naming ``where``.
_Check = Callable[[Any, str], None]
_T = typing.TypeVar("_T")
#: Per dataclass met by :func:`_valid`, its fields' checks (worked out once per type: a
#: large run's file holds hundreds of thousands of values).
_FIELD_CHECKS: dict[type, tuple[tuple[str, _Check, frozenset[type]], ...]] = {}


def _valid(obj: Any, where: str) -> None:
    """Check every field of the dataclass ``obj`` (built from the file) against its type
    hint: strings, whole numbers, finite numbers, booleans, known names (``Literal``),
    tuples of them and nested dataclasses; epochs (``started_at``, ``since``) as dates a
    report can print. What a hint does not describe (a mapping) its builder checks.
    Raises ValueError naming the field."""
    kind = type(obj)
    checks = _FIELD_CHECKS.get(kind)
    if checks is None:
        hints = typing.get_type_hints(kind)
        checks = _FIELD_CHECKS[kind] = tuple(
            (f.name, _epoch_check, frozenset())
            if f.name in _EPOCHS
            else (f.name, _checker(hints[f.name]), _fast(hints[f.name]))
            for f in dataclasses.fields(kind)
        )
    for name, check, fast in checks:
        value = getattr(obj, name)
        # Most values are a string, None or a number in range: taken here without a call
        # or the field's name worked out (a 1,000-connection-type file: ~200,000 values).
        fits = type(value) in fast
        if fits and (type(value) not in _NUMBERS or -_MAX_NUMBER <= value <= _MAX_NUMBER):
            continue
        check(value, f"{where}.{name}")


#: The types :func:`_fast` accepts only within the range :func:`_number` allows.
_NUMBERS: Final = frozenset({int, float})


@functools.cache
def _fast(hint: Any) -> frozenset[type]:
    """The types a value of ``hint`` may have to be valid without its check (numbers:
    when within ±:data:`_MAX_NUMBER`, NaN never): a shortcut of :func:`_checker`'s check,
    never wider."""
    if hint in (str, bool, type(None)):
        return frozenset({hint})
    if hint is float:
        return _NUMBERS  # as _number: an int is a number, a bool is not
    if hint is int:
        return frozenset({int})
    if isinstance(hint, type) and issubclass(hint, Enum):
        return frozenset({hint})
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return frozenset().union(*map(_fast, typing.get_args(hint)))
    return frozenset()


def _epoch_check(value: Any, where: str) -> None:
    # 0 is "not known" (a change's since after a flap), as the writers take it.
    if value != 0 or type(value) not in (int, float):
        _epoch_at(value, where)


def _is_str(value: Any, where: str) -> None:
    if type(value) is not str:
        _string(value, where)


def _is_number(value: Any, where: str) -> None:
    _number(value, where)


def _anything(value: Any, where: str) -> None:
    """A value a hint does not describe (a mapping such as LatencyThresholds): its
    builder checks it."""


@functools.cache
def _checker(hint: Any) -> _Check:
    """The check of a value against the type hint ``hint`` (see :func:`_valid`)."""
    origin = typing.get_origin(hint)
    if hint is str:
        return _is_str
    if hint is float:
        return _is_number
    if hint is int or hint is bool:

        def exact(value: Any, where: str) -> None:
            if type(value) is not hint:
                raise ValueError(f"{where} is {_shown(value)}, not {hint.__name__}")
            if hint is int and abs(value) > _MAX_NUMBER:
                raise ValueError(f"{where} is a number of {len(str(abs(value)))} digits")

        return exact
    if hint is type(None):

        def null(value: Any, where: str) -> None:
            if value is not None:
                raise ValueError(f"{where} is {_shown(value)}, not null")

        return null
    if origin is typing.Literal:
        known = frozenset(typing.get_args(hint))
        listed = ", ".join(map(str, typing.get_args(hint)))

        def one_of(value: Any, where: str) -> None:
            if type(value) is not str or value not in known:
                raise ValueError(f"{where} is {_shown(value)}, not one of {listed}")

        return one_of
    if origin is types.UnionType or origin is typing.Union:
        args = typing.get_args(hint)
        nullable = type(None) in args
        options = tuple(_checker(o) for o in args if o is not type(None))

        def either(value: Any, where: str) -> None:
            if value is None and nullable:
                return
            first: ValueError | None = None
            for option in options:
                try:
                    option(value, where)
                except ValueError as exc:
                    first = first or exc
                else:
                    return
            raise first or ValueError(f"{where} is {_shown(value)}")

        return either
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _checker(args[0])

            def items(value: Any, where: str) -> None:
                if type(value) is not tuple:
                    raise ValueError(f"{where} is {_shown(value)}, not a list")
                for i, one in enumerate(value):
                    item(one, f"{where}[{i}]")

            return items
        parts = tuple(_checker(a) for a in args)

        def fixed(value: Any, where: str) -> None:
            if type(value) is not tuple or len(value) != len(parts):
                raise ValueError(f"{where} is {_shown(value)}, not {len(parts)} values")
            for i, (part, one) in enumerate(zip(parts, value, strict=True)):
                part(one, f"{where}[{i}]")

        return fixed
    if isinstance(hint, type) and issubclass(hint, Enum):

        def member(value: Any, where: str) -> None:
            if not isinstance(value, hint):
                raise ValueError(f"{where} is {_shown(value)}, not a {hint.__name__}")

        return member
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):

        def nested(value: Any, where: str) -> None:
            if not isinstance(value, hint):
                raise ValueError(f"{where} is {_shown(value)}, not an object")
            _valid(value, where)

        return nested
    return _anything


def _epoch(iso: Any, where: str) -> float:
    """Inverse of the writers' ISO 8601 to the second (0 for null: not known)."""
    if iso is None or iso == "":
        return 0.0
    try:
        return float(calendar.timegm(time.strptime(_string(iso, where), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        raise ValueError(f"{where} {_shown(iso)} is not a time as YYYY-MM-DDTHH:MM:SSZ") from None


def _verdict(value: object) -> Verdict | None:
    return None if value is None else Verdict.parse(value)


def _tracked_checks(
    entry: Mapping[str, Any],
    tracked: str,
    name: str,
    states: dict[tuple[str, str], CheckState],
    availability: dict[str, Mapping[str, float | None]],
    where: str,
) -> tuple[CheckRecord, ...]:
    """The check records of a host or coverage entry (history id ``tracked``), adding
    their history states and the entry's availability to ``states``/``availability``."""
    checks = _list(entry["checks"], f"{where}.checks")
    records = tuple(_record(c, tracked, name, f"{where}.checks[{i}]") for i, c in enumerate(checks))
    for i, (chk, rec) in enumerate(zip(checks, records, strict=True)):
        if chk.get("state") is not None:
            states[(tracked, rec.check)] = _state(
                tracked, rec.check, chk["state"], f"{where}.checks[{i}].state"
            )
    if entry.get("availability") is not None:
        availability[tracked] = _windows(entry["availability"], f"{where}.availability")
    return records


def _record(data: Any, ct: str, server: str, where: str) -> CheckRecord:
    data = _obj(data, where)
    figure = data.get("figure")
    rec = CheckRecord(
        nodeid=_string(data.get("nodeid", ""), f"{where}.nodeid"),
        ct=ct,
        server=server,
        tier=_name(data["tier"], f"{where}.tier"),
        check=_name(data["check"], f"{where}.check"),
        verdict=Verdict.parse(_string(data["verdict"], f"{where}.verdict")),
        reason=_string(data.get("reason", ""), f"{where}.reason"),
        outcome=_string(data.get("outcome", ""), f"{where}.outcome"),
        figure=_number(figure, f"{where}.figure") if figure is not None else None,
        unit=_string(data.get("unit", ""), f"{where}.unit"),
        duration=_number(data.get("duration_seconds", 0.0), f"{where}.duration_seconds"),
        blocked_by=_string(data.get("blocked_by") or "", f"{where}.blocked_by"),
        broke_in=_phase(data.get("broke_in", ""), f"{where}.broke_in"),
        failure=_string(data.get("failure", ""), f"{where}.failure"),
    )
    # Every field checked as it was read: no _valid() (the hottest path of a large file).
    return rec


#: The outcomes a test that is not a pop3mon check has in results.json (as junit.xml).
_OTHER_OUTCOMES: Final = ("passed", "failed", "error", "skipped")


def _other(data: Any, where: str, *, second: bool = False) -> OtherTest:
    """A test that is not a pop3mon check (``others``), as the run wrote it (``second``:
    its second testcase, ``then``, which has none of its own)."""
    data = _obj(data, where)
    outcome = data.get("outcome")
    if outcome not in _OTHER_OUTCOMES:
        raise ValueError(f"{where}.outcome is {_shown(outcome)}, not one of {_OTHER_OUTCOMES}")
    pair = data.get("skip_then_error")
    then = data.get("then")
    if then is not None and second:
        raise ValueError(f"{where}.then is a second testcase's second testcase")
    nodeid = _string(data["nodeid"], f"{where}.nodeid")  # any text pytest's ids have
    if not nodeid:
        raise ValueError(f"{where}.nodeid is empty")
    return OtherTest(
        nodeid=nodeid,
        outcome=str(outcome),
        seconds=_number(data.get("seconds", 0.0), f"{where}.seconds"),
        message=_string(data.get("message", ""), f"{where}.message"),
        text=_string(data.get("text", ""), f"{where}.text"),
        skip_type=_string(data.get("skip_type", ""), f"{where}.skip_type"),
        properties=tuple(
            _two_strings(p, f"{where}.properties[{i}]")
            for i, p in enumerate(_list(data.get("properties", []), f"{where}.properties"))
        ),
        then=_other(then, f"{where}.then", second=True) if then is not None else None,
        skip_then_error=(
            _two_strings(pair, f"{where}.skip_then_error") if pair is not None else None
        ),
    )


def _two_strings(value: Any, where: str) -> tuple[str, str]:
    items = _strings(value, where)
    if len(items) != 2:
        raise ValueError(f"{where} is {_shown(value)}, not two strings")
    return items[0], items[1]


def _built(entry: Mapping[str, Any], key: str, where: str, build: Callable[[Any], _T]) -> _T | None:
    """``entry[key]`` (an object the writers made of a dataclass, or null) built back by
    ``build`` and checked field by field (:func:`_valid`); None for null."""
    found = entry.get(key)
    if found is None:
        return None
    built = build(_obj(found, f"{where}.{key}"))
    _valid(built, f"{where}.{key}")
    return built


def _phase(value: Any, where: str) -> str:
    """The phase a check's test broke in (``broke_in``): one pytest has, or "" for none."""
    if value not in ("", "setup", "call", "teardown"):
        raise ValueError(f"{where} is {_shown(value)}, not setup, call or teardown")
    return str(value)


def _windows(data: Any, where: str) -> dict[str, float | None]:
    """Availability in the history's window order (the JSON has its keys sorted)."""
    data = _obj(data, where)
    order = [label for label, _ in WINDOWS]
    out: dict[str, float | None] = {}
    for k in sorted(data, key=lambda k: (k not in order, order.index(k) if k in order else 0, k)):
        share = data[k]
        if share is None:
            out[_name(k, where)] = None
            continue
        value = _number(share, f"{where}.{_shown(k)}")
        if not 0 <= value <= 1:
            raise ValueError(f"{where}.{_shown(k)} is {_shown(share)}, not a share from 0 to 1")
        out[_name(k, where)] = value
    return out


def _state(ct: str, check: str, data: Any, where: str) -> CheckState:
    data = _obj(data, where)
    state = CheckState(
        ct=ct,
        check=check,
        verdict=Verdict.parse(_string(data["verdict"], f"{where}.verdict")),
        hardness=data["hardness"],
        since=_epoch_at(data["since_epoch"], f"{where}.since_epoch"),
        runs=data["runs"],
        previous=_verdict(data.get("previous")),
        flapping=bool(data.get("flapping", False)),
        new=bool(data.get("new", False)),
        vantage=_whose(data.get("vantage"), "a state"),
    )
    _valid(state, where)
    return state


def _whose(value: Any, what: str) -> str | None:
    """The vantage a merged state or change names (None: a run's own), a name as
    ``--vantage`` takes it: never raw control characters for the terminal."""
    if value is None:
        return None
    if value == NO_VANTAGE:
        return NO_VANTAGE
    if not isinstance(value, str) or not is_vantage(value):
        raise ValueError(f"the vantage of {what} {ascii(value)[:80]} is not a vantage name")
    return value


def connection_type(config: Mapping[str, Any], where: str = "config") -> ConnectionType:
    """Inverse of :meth:`ConnectionType.to_dict` (the ``config`` of a connection);
    ValueError naming the field (``where``: its place in the file) for a value no run
    writes."""
    config = _obj(config, where)
    d = {f.name: config[f.name] for f in fields(ConnectionType) if f.name in config}
    d["tags"] = tuple(_list(d.get("tags", []), f"{where}.tags"))
    latency = _obj(d["latency"], f"{where}.latency")
    d["latency"] = LatencyThresholds(
        {
            _name(k, f"{where}.latency"): (
                _number(_list(v, f"{where}.latency.{k}")[0], f"{where}.latency.{k}[0]"),
                _number(v[1], f"{where}.latency.{k}[1]"),
            )
            for k, v in latency.items()
        }
    )
    d["drift"] = DriftPolicy(**_obj(d["drift"], f"{where}.drift"))
    for key in ("mailbox_count", "mailbox_size"):
        if d.get(key) is not None:
            pair = _list(d[key], f"{where}.{key}")
            d[key] = (pair[0], pair[1])
    if d.get("round_trip") is not None:
        d["round_trip"] = RoundTrip(**_obj(d["round_trip"], f"{where}.round_trip"))
    ct = ConnectionType(**d)
    _valid(ct, where)
    for key in ("id", "server"):
        _name(getattr(ct, key), f"{where}.{key}")
    return ct


def _host(data: Any, where: str) -> Host:
    data = _obj(data, where)
    d = {f.name: data[f.name] for f in fields(Host)}
    for key in ("ports", "depends_on", "connections", "tags"):
        d[key] = tuple(_list(d[key], f"{where}.{key}"))
    host = Host(**d)
    _valid(host, where)
    _name(host.name, f"{where}.name")
    return host


def _coverage(data: Any, where: str) -> Coverage:
    """Inverse of :meth:`Coverage.to_dict`, without ``monitored`` (the targets file's
    connection types, which only the rules read; a report reads the records)."""
    data = _obj(data, where)
    d = {f.name: data[f.name] for f in fields(Coverage) if f.name != "monitored"}
    d["ports"] = tuple(_list(d["ports"], f"{where}.ports"))
    d["tags"] = tuple(_list(d["tags"], f"{where}.tags"))
    cov = Coverage(monitored=(), **d)
    _valid(cov, where)
    _name(cov.name, f"{where}.name")
    return cov


def _shard(value: Any) -> tuple[int, int] | None:
    """``run.shard`` as (K, N), 1 <= K <= N; a merge must not count shard 0 of 0 as done."""
    if value is None:
        return None
    value = _obj(value, "run.shard")
    index, total = value["index"], value["total"]
    if not (type(index) is int and type(total) is int and 1 <= index <= total <= MAX_SHARDS):
        raise ValueError(
            f"run.shard {_shown(index)}/{_shown(total)} is not K/N with 1 <= K <= N <= {MAX_SHARDS}"
        )
    return index, total


def _vantage(value: Any, where: str = "run.vantage") -> str | None:
    """``run.vantage`` (or a vantage's name): a name as ``--vantage`` takes it, never raw
    control characters for the terminal."""
    if value is None:
        return None
    if not isinstance(value, str) or not is_vantage(value):
        raise ValueError(f"{where} {ascii(value)[:80]} is not a vantage name")
    return value


def _vantage_name(value: Any, where: str) -> str:
    """A vantage's name in a merge of several (the keys of ``vantages``; a run made
    without ``--vantage`` is :data:`~.model.NO_VANTAGE` there)."""
    if value == NO_VANTAGE:
        return NO_VANTAGE
    name = _vantage(value, where)
    if name is None:
        raise ValueError(f"{where} has a vantage without a name")
    return name


def _run_id(value: Any) -> str:
    """``run.id``: an id as ``--run-id`` takes it (it names files and reaches the
    terminal: no path separator, no control character, not empty)."""
    if not isinstance(value, str) or not is_run_id(value):
        raise ValueError(
            f"run.id {ascii(value)[:80]} is not a run id (1-128 letters, digits, '.', '_', "
            "':', '+' or '-')"
        )
    return value


def report_from_document(doc: Mapping[str, Any]) -> RunReport:
    """The :class:`RunReport` a results.json document was written from (see the module
    docstring for the little it cannot restore); ValueError or TypeError naming the field
    for a value no run writes."""
    run = _obj(doc["run"], "run")
    targets = _obj(run["targets"], "run.targets")
    info = RunInfo(
        run_id=_run_id(run["id"]),
        started=_epoch_at(run["started_epoch"], "run.started_epoch"),
        finished=_epoch_at(run["finished_epoch"], "run.finished_epoch"),
        targets_name=_string(targets["file"], "run.targets.file"),
        targets_sha256=_string(targets["sha256"], "run.targets.sha256"),
        version=_string(run["pop3mon_version"], "run.pop3mon_version"),
        stopped=_string(run.get("stopped") or "", "run.stopped"),
        shard=_shard(run.get("shard")),
        vantage=_vantage(run.get("vantage")),
        merged_from=_strings(run.get("merged_from") or [], "run.merged_from"),
        python=_string(run["python"], "run.python"),
        platform=_string(run["platform"], "run.platform"),
    )
    states: dict[tuple[str, str], CheckState] = {}
    availability: dict[str, Mapping[str, float | None]] = {}
    flapping: dict[str, bool] = {}
    connections: list[ConnectionReport] = []
    for n, conn in enumerate(_list(doc["connections"], "connections")):
        where = f"connections[{n}]"
        conn = _obj(conn, where)
        ct = connection_type(conn["config"], f"{where}.config")
        checks = _list(conn["checks"], f"{where}.checks")
        records = tuple(
            _record(c, ct.id, ct.server, f"{where}.checks[{i}]") for i, c in enumerate(checks)
        )
        for i, (chk, rec) in enumerate(zip(checks, records, strict=True)):
            if chk.get("state") is not None:
                states[(ct.id, rec.check)] = _state(
                    ct.id, rec.check, chk["state"], f"{where}.checks[{i}].state"
                )
        if conn.get("availability") is not None:
            availability[ct.id] = _windows(conn["availability"], f"{where}.availability")
        if conn.get("flapping") is not None:
            if not isinstance(conn["flapping"], bool):
                raise ValueError(f"{where}.flapping is {_shown(conn['flapping'])}, not a boolean")
            flapping[ct.id] = conn["flapping"]
        vantages = {}
        for name, view in _obj(conn.get("vantages") or {}, f"{where}.vantages").items():
            at = f"{where}.vantages.{_shown(name)}"
            view_checks = _list(_obj(view, at).get("checks", []), f"{at}.checks")
            vantages[_vantage_name(name, f"{where}.vantages")] = VantageView(
                name,
                tuple(
                    _record(c, ct.id, ct.server, f"{at}.checks[{i}]")
                    for i, c in enumerate(view_checks)
                ),
            )
        result = _built(conn, "probe", where, ProbeResult.from_dict)
        connections.append(
            ConnectionReport(ct=ct, result=result, records=records, vantages=vantages)
        )
    hosts: list[HostReport] = []
    for n, entry in enumerate(_list(doc.get("hosts", []), "hosts")):
        where = f"hosts[{n}]"
        entry = _obj(entry, where)
        host = _host(entry["host"], f"{where}.host")
        records = _tracked_checks(entry, host.id, host.name, states, availability, where)
        host_result = _built(entry, "result", where, HostResult.from_dict)
        hosts.append(
            HostReport(
                host=host,
                result=host_result,
                records=records,
                blocked=_strings(entry.get("blocked", []), f"{where}.blocked"),
            )
        )
    coverage: list[CoverageReport] = []
    for n, entry in enumerate(_list(doc.get("coverage", []), "coverage")):
        where = f"coverage[{n}]"
        entry = _obj(entry, where)
        cov = _coverage(entry["coverage"], f"{where}.coverage")
        records = _tracked_checks(entry, cov.id, cov.name, states, availability, where)
        discovery = _built(entry, "discovery", where, discovery_from_dict)
        coverage.append(CoverageReport(cov, discovery, records))
    hist = _obj(doc.get("history") or {"status": "off"}, "history")
    status = hist["status"]
    if status not in _HISTORY_STATUS or type(status) is not str:
        raise ValueError(
            f"history.status is {_shown(status)}, not one of {', '.join(_HISTORY_STATUS)}"
        )
    changes = []
    for n, c in enumerate(_list(doc.get("changes", []), "changes")):
        where = f"changes[{n}]"
        c = _obj(c, where)
        change = Change(
            kind=c["kind"],
            ct=c["connection"],
            check=c["check"],
            before=_verdict(c.get("before")),
            after=Verdict.parse(_string(c["after"], f"{where}.after")),
            reason=_string(c.get("reason", ""), f"{where}.reason"),
            since=_epoch(c.get("since"), f"{where}.since"),
            detail=_string(c.get("detail", ""), f"{where}.detail"),
            vantage=_whose(c.get("vantage"), "a change"),
        )
        _valid(change, where)
        changes.append(change)
    history = HistoryOutcome(
        status=typing.cast(HistoryStatus, status),
        path=Path(_string(hist["path"], "history.path")) if hist.get("path") else None,
        note=_string(hist.get("note") or "", "history.note"),
        states=states,
        changes=tuple(changes),
        availability=availability,
        flapping=flapping,
    )
    unattributed = tuple(
        _record(c, "", "", f"unattributed_checks[{i}]")
        for i, c in enumerate(_list(doc.get("unattributed_checks", []), "unattributed_checks"))
    )
    notify = _obj(doc.get("notify") or {}, "notify")
    return RunReport(
        info=info,
        connections=tuple(connections),
        unattributed=unattributed,
        not_selected=_strings(doc.get("not_selected", []), "not_selected"),
        history=history,
        notify_warnings=_strings(notify.get("warnings", []), "notify.warnings"),
        hosts=tuple(hosts),
        connection_ids=_strings(run.get("connection_ids", []), "run.connection_ids"),
        coverage=tuple(coverage),
        # Absent from an older pop3mon's file: () (not known).
        targets_ids=_strings(targets.get("connection_ids", []), "run.targets.connection_ids"),
        # Absent where the run had none (and from an older pop3mon's file).
        others=tuple(
            _other(o, f"others[{i}]") for i, o in enumerate(_list(doc.get("others", []), "others"))
        ),
    )
