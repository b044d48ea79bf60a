"""The stash key through which the monitoring glue hands the run's probe store to the
report plugin. Its own module, so the glue need not import the report plugin module itself
(pytest would then find it imported before it could register it for assertion rewriting).
"""

from __future__ import annotations

from typing import Any

import pytest

from ..probestore import ProbeStore

__all__ = ["HISTORY_KEY", "STORE_KEY"]

#: Where the monitoring glue puts the run's probe store (absent when the targets file
#: failed to load or no targets are configured).
STORE_KEY = pytest.StashKey[ProbeStore]()

#: Where the history (``pop3mon.history``) puts the run's opened store, when history is
#: on. The drift checks read baselines from it through ``checks.drift.BaselineSource``
#: (duck-typed: this key does not tie the glue to the store's module).
HISTORY_KEY = pytest.StashKey[Any]()
