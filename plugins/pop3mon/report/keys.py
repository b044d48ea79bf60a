"""The stash key through which the monitoring glue hands the run's probe store to the
report plugin. Its own module, so the glue need not import the report plugin module itself
(pytest would then find it imported before it could register it for assertion rewriting).
"""

from __future__ import annotations

import pytest

from ..probestore import ProbeStore

__all__ = ["STORE_KEY"]

#: Where the monitoring glue puts the run's probe store (absent when the targets file
#: failed to load or no targets are configured).
STORE_KEY = pytest.StashKey[ProbeStore]()
