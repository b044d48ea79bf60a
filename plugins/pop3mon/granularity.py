"""pytest glue: ``--granularity=tier``, one pytest test per tier of each connection type.

By default (``check``) every check of every connection type is a pytest test of its own
(``test_tls.py::test_stls[ct]``): the natural view in CI, where each check is one line. A
fleet of a thousand connection types makes that some 16,000 tests, and pytest's own
per-test machinery (fixtures, capture, three reports per test, every reporter's hooks),
not the probing, then decides how long the run takes. With ``tier`` the check tests are
collected and selected (``-k``/``-m``) exactly as before, then each connection type's
selected checks of one tier become one :class:`TierItem` (``test_tls.py::tls[ct]``)
that evaluates them in turn without any fixture. Every check is still recorded on its own,
under the node id it has as a test of its own (:func:`~pop3mon.report.recorder.group_entry`),
so results.json, metrics, the HTML page, the terminal summary and (expanded by
:func:`pop3mon.report.junit.finish`) junit.xml list the same checks as with ``check``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol

import pytest

from .checks import CheckResult
from .config import ConnectionType
from .engine.result import ProbeResult
from .engine.stages import TIERS
from .report.recorder import GROUP_PROPERTY, group_entry
from .verdict import Verdict

__all__ = ["GRANULARITIES", "Granularity", "TierGrouping", "TierItem", "granularity"]

Granularity = Literal["check", "tier"]
GRANULARITIES: Final[tuple[Granularity, ...]] = ("check", "tier")


def granularity(config: pytest.Config) -> Granularity:
    """``--granularity``, else ini ``pop3mon_granularity`` (a bad ini value is a usage
    error at start-up)."""
    raw = config.getoption("granularity", None)
    if raw is None:
        raw = str(config.getini("pop3mon_granularity")).strip() or "check"
    found = next((g for g in GRANULARITIES if g == raw), None)
    if found is None:
        raise pytest.UsageError(
            f"pop3mon: ini pop3mon_granularity = {raw!r} is not one of {', '.join(GRANULARITIES)}"
        )
    return found


class _State(Protocol):
    """What a tier test needs of the run's state (``plugin.RunState``)."""

    by_id: dict[str, ConnectionType]

    def result_for(self, ct: ConnectionType, session: pytest.Session) -> ProbeResult: ...

    def evaluate(
        self, connection: ConnectionType, probe_result: ProbeResult, name: str
    ) -> CheckResult: ...


#: The failure message of a verdict that fails its test, or None (``plugin.failure_message``).
Judge = Callable[[pytest.Config, Any, str, CheckResult], "str | None"]


class TierItem(pytest.Item):
    """The selected checks of one tier of one connection type, as one pytest test."""

    def __init__(
        self,
        *,
        ct: str,
        tier: str,
        members: list[tuple[str, str]],
        state: _State,
        judge: Judge,
        line: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.line = line
        self.ct = ct
        self.tier = tier
        #: (node id of the check as a test of its own, check name), in collection order.
        self.members = members
        self.state = state
        self.judge = judge

    @property
    def check_names(self) -> list[str]:
        """The checks this test evaluates."""
        return [name for _, name in self.members]

    @property
    def member_nodeids(self) -> list[str]:
        """The node ids its checks have as tests of their own (and in the reports)."""
        return [nodeid for nodeid, _ in self.members]

    def runtest(self) -> None:
        """Evaluate every check; fail when one fails, skip when all skip."""
        connection = self.state.by_id[self.ct]
        result = self.state.result_for(connection, self.session)
        entries: list[list[tuple[str, object]]] = []
        failures: list[str] = []
        skips: list[str] = []
        for nodeid, name in self.members:
            began = time.perf_counter()
            res = self.state.evaluate(connection, result, name)
            failure = self.judge(self.config, self.state, connection.id, res)
            if failure is not None:
                outcome = "failed"
                failures.append(failure)
            elif res.verdict == Verdict.SKIP:
                outcome = "skipped"
                skips.append(f"{res.check}: {res.reason}")
            else:
                outcome = "passed"
            entries.append(
                group_entry(
                    nodeid,
                    connection.id,
                    connection.server,
                    res,
                    outcome,
                    time.perf_counter() - began,
                )
            )
        self.user_properties.append((GROUP_PROPERTY, entries))
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)
        if skips and len(skips) == len(entries):
            raise pytest.skip.Exception("; ".join(skips), _use_item_location=True)

    def reportinfo(self) -> tuple[Any, int, str]:
        """Where the tier's tests are (their module) and this test's name."""
        return self.path, self.line, self.name


class TierGrouping:
    """Registered with ``--granularity=tier``: replaces the selected check tests by one
    :class:`TierItem` per (tier module, connection type)."""

    def __init__(
        self, state: _State, check_name: Callable[[pytest.Item], str], judge: Judge
    ) -> None:
        self.state = state
        self.check_name = check_name
        self.judge = judge

    # trylast: after -k/-m and every other plugin chose the items, so a tier test holds
    # exactly the checks the run selected.
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        out: list[pytest.Item] = []
        groups: dict[tuple[int, str], list[pytest.Item]] = {}
        for item in items:
            callspec = getattr(item, "callspec", None)
            ct = callspec.params.get("ct") if callspec is not None else None
            tier = _tier_of(item)
            if not isinstance(ct, str) or ct not in self.state.by_id or tier is None:
                out.append(item)
                continue
            key = (id(item.parent), ct)
            if key not in groups:
                groups[key] = []
                out.append(item)  # the group's place in the run order
            groups[key].append(item)
        for n, item in enumerate(out):
            callspec = getattr(item, "callspec", None)
            ct = callspec.params.get("ct") if callspec is not None else None
            group = groups.get((id(item.parent), ct)) if isinstance(ct, str) else None
            if group is None or group[0] is not item:
                continue
            tier = _tier_of(item) or ""
            assert item.parent is not None  # a test function's module
            tier_item = TierItem.from_parent(
                item.parent,
                name=f"{tier}[{ct}]",
                ct=ct,
                tier=tier,
                members=[(i.nodeid, self.check_name(i)) for i in group],
                state=self.state,
                judge=self.judge,
                # The first check's test function: where -rs points a skip of this tier.
                line=_line_of(item),
            )
            # The connection type's tags (-m selects by them in a later run's report too).
            for marker in item.own_markers:
                if marker.name not in TIERS:
                    tier_item.add_marker(
                        getattr(pytest.mark, marker.name)(*marker.args, **marker.kwargs)
                    )
            out[n] = tier_item
        items[:] = out


def _tier_of(item: pytest.Item) -> str | None:
    for marker in item.iter_markers():
        if marker.name in TIERS:
            return marker.name
    return None


def _line_of(item: pytest.Item) -> int:
    code = getattr(getattr(item, "function", None), "__code__", None)
    return int(code.co_firstlineno) - 1 if code is not None else 0
