"""Loading and strict validation of ``targets.yaml``.

The file says *what* to monitor: servers, and per server a list of connection types (port,
security mode, auth mechanism, account). Settings cascade connection > server > ``defaults:``
> built-in. The result is a tuple of frozen :class:`ConnectionType` objects with stable,
readable ids built from configuration only (never from secrets).

Validation is strict and happens at start-up: every problem becomes ONE line naming the
file, the line, the field path and a hint, e.g.::

    targets.yaml:14: servers[0].connections[1].security: 'startls' is not one of none,
    starttls-optional, starttls, tls — did you mean 'starttls'?

(printed on one line). All problems are collected and raised together as
:class:`ConfigError`, sorted by line.

How it works, one module per job (imports point down this list, never up):

* :mod:`.wording` — field paths, short value descriptions, "did you mean" suggestions;
* :mod:`.model` — the public types (:class:`Targets`, :class:`ConnectionType`,
  :class:`ConfigError`) and reading a secret file when a probe spec is built;
* :mod:`.yaml_lines` — PyYAML *composes* the file into nodes (which carry line marks);
  we convert the nodes ourselves so every mapping key and sequence item gets a line,
  keyed by its path (``("servers", 0, "host")``);
* :mod:`.schema` — pydantic v2 models check the shape and values; an error's ``loc`` is
  exactly such a path, so each error maps back to a line;
* :mod:`.messages` — pydantic errors worded as messages with hints;
* :mod:`.cascade` — checks that need the merged view (inherited warn/crit pairs, auth vs.
  account, duplicate ids) run in a second pass once the shape is valid;
* :mod:`.load` — :func:`load_targets`, the orchestration of the steps above.

Secrets appear in the file only as references (``password_env``, ``password_file``,
``token_env``, ``token_file``). They are resolved when :meth:`ConnectionType.to_probe_spec`
is called, not at load time, so a missing variable fails only that connection type's auth
tier. Values found under ``account:`` are never echoed in error messages, since a
misplaced password is the likeliest thing to be there.
"""

from typing import TYPE_CHECKING, Any

from ..engine.stages import LATENCY_PHASES
from .files import ENV_VAR, targets_path
from .model import (
    NOTIFY_RULES,
    ConfigError,
    ConnectionType,
    Coverage,
    HistorySettings,
    Host,
    LatencyThresholds,
    NotifyRule,
    NotifySettings,
    NotifyTarget,
    Targets,
)

if TYPE_CHECKING:
    from .load import load_targets


def __getattr__(name: str) -> Any:
    # The validator (pydantic, PyYAML) loads on first use: a plugin-mode check whose
    # targets file is in the cache (:mod:`.cache`) never imports it.
    if name == "load_targets":
        from .load import load_targets

        return load_targets
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENV_VAR",
    "LATENCY_PHASES",
    "NOTIFY_RULES",
    "ConfigError",
    "ConnectionType",
    "Coverage",
    "HistorySettings",
    "Host",
    "LatencyThresholds",
    "NotifyRule",
    "NotifySettings",
    "NotifyTarget",
    "Targets",
    "load_targets",
    "targets_path",
]
