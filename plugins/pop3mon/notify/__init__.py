"""Notifications on state change, through Apprise.

One message per run and target, grouping every change the target's rules select; nothing
at all when nothing changed. The history computes the changes
(:class:`~pop3mon.history.model.Change`); this package only decides who hears of which
(:mod:`.rules`), words them (:mod:`.message`) and sends them (:mod:`.send`) within one
deadline. A failing endpoint is a run-level warning, never an exception.

The coordinator of a run calls :func:`deliver` once, at the end of the run, with the
``notify:`` settings of the targets file, the run's changes and a :class:`RunSummary`.
"""

from __future__ import annotations

from .message import Message, compose
from .rules import RunSummary, rule_of, select
from .send import deliver

__all__ = ["Message", "RunSummary", "compose", "deliver", "rule_of", "select"]
