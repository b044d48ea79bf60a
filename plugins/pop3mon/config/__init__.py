"""Loading and strict validation of ``targets.yaml`` (see :mod:`.load`)."""

from .load import (
    ENV_VAR,
    LATENCY_PHASES,
    ConfigError,
    ConnectionType,
    LatencyThresholds,
    Targets,
    load_targets,
    targets_path,
)

__all__ = [
    "ENV_VAR",
    "LATENCY_PHASES",
    "ConfigError",
    "ConnectionType",
    "LatencyThresholds",
    "Targets",
    "load_targets",
    "targets_path",
]
