"""A fault-injecting POP3 server for the self-tests and the demo.

Real Dovecot covers the success path; this server covers what real servers will not do on
demand: hostile and broken behaviour (silent or dripping greetings, endless multi-line
answers, STARTTLS injection, credential echo, resets mid-login ...). With the ``healthy``
scenario it is also a complete, RFC-conforming reference server (APOP, CAPA, STLS,
USER/PASS, SASL PLAIN/LOGIN/CRAM-MD5/SCRAM-SHA-1/SCRAM-SHA-256 (and, on request,
CRAM-SHA1/CRAM-SHA256/XOAUTH2/OAUTHBEARER), STAT/LIST/UIDL/RETR/TOP,
implicit TLS) that the demo falls back to when Dovecot cannot be installed.

Modules, each importing only those listed before it:

* :mod:`.log` - :class:`ServerLog`, the record of every received line and event.
* :mod:`.common` - constants, per-connection state, the server interface sessions use.
* :mod:`.channel` - stop-aware socket I/O and the server side of TLS.
* :mod:`.sasl` - the SASL mechanisms.
* :mod:`.session` - :class:`Session` (the healthy dialogue) and :class:`Scenario`.
* :mod:`.scenarios` - the fault scenarios and their registry, :data:`SCENARIOS`.
* :mod:`.server` - :class:`FaultServer`: threads, sockets, TLS contexts, inspection.

Import from this package, not from the modules: the split is an implementation detail.
"""

from .common import ALL_SASL, DEFAULT_SASL, DEFAULT_USERS, HOST, LOOPBACK_HOSTS, POLL_INTERVAL
from .log import Event, LogEntry, ServerLog
from .sasl import SaslExchange, SaslOutcome
from .scenarios import SCENARIOS, scenario_names
from .server import FaultServer
from .session import Scenario, Session

__all__ = [
    "ALL_SASL",
    "DEFAULT_SASL",
    "DEFAULT_USERS",
    "HOST",
    "LOOPBACK_HOSTS",
    "POLL_INTERVAL",
    "SCENARIOS",
    "Event",
    "FaultServer",
    "LogEntry",
    "SaslExchange",
    "SaslOutcome",
    "Scenario",
    "ServerLog",
    "Session",
    "scenario_names",
]
