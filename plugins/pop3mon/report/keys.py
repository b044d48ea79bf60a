"""The stash keys through which the monitoring glue hands the run's probe store (and the
history) to the report plugin. Its own module, so the glue need not import the report
plugin module itself (pytest would then find it imported before it could register it for
assertion rewriting).
"""

from __future__ import annotations

from typing import Protocol

import pytest

from ..config.shard import RunIdentity
from ..history.store import HistoryStore
from ..probestore import ProbeStore

__all__ = [
    "HISTORY_KEY",
    "HISTORY_REFUSED_KEY",
    "IDENTITY_KEY",
    "PAGES_KEY",
    "STORE_KEY",
    "PagesWriter",
]

#: Where the monitoring glue puts the run's probe store (absent when the targets file
#: failed to load or no targets are configured).
STORE_KEY = pytest.StashKey[ProbeStore]()

#: The run history opened read-only in this process (controller or xdist worker), or
#: ``None`` when there is none (yet) or it is unusable: filled by
#: :func:`pop3mon.report.history.history_for`, which the drift checks and the failure
#: messages call. Only the controller writes the history, at session end.
HISTORY_KEY = pytest.StashKey[HistoryStore | None]()
#: Why the history file was not opened although it exists and could be read (another
#: vantage's runs): the drift checks say so rather than "could not be read".
HISTORY_REFUSED_KEY = pytest.StashKey[str]()

#: The run's identity (run id, shard, vantage: :mod:`pop3mon.config.shard`), put there by
#: the monitoring glue next to the store; absent when the store is.
IDENTITY_KEY = pytest.StashKey[RunIdentity]()


class PagesWriter(Protocol):
    """What the glue may ask of the report plugin about report.html and junit.xml."""

    #: Whether they are written from the run model (decided at session start).
    pages_from_model: bool

    def write_pages_from_model(self) -> bool:
        """Write both from the run model; True when done (see the report plugin)."""
        ...


#: The report plugin (controller only), for the lean protocols of tier and check tests.
PAGES_KEY = pytest.StashKey[PagesWriter]()
