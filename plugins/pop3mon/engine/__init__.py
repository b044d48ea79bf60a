"""The pop3mon probe engine: importable and testable without pytest.

``probe(spec)`` probes one connection type and returns a frozen ``ProbeResult``;
``run_probes(specs)`` probes many at once with bounded concurrency.
"""

from .dispatch import probe
from .errors import ProbeError
from .result import ProbeResult, ProbeSpec
from .runner import run_probes

__all__ = ["ProbeError", "ProbeResult", "ProbeSpec", "probe", "run_probes"]
