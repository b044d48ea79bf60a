"""One probe of a connection type, whatever its protocol: the engine's entry point.

The POP3 session (:mod:`.session`) and the SMTP one (:mod:`.smtp`, built on the POP3
session's dialing, deadline and TLS) sit below this module, so neither imports the other
to choose.
"""

from __future__ import annotations

from .pacing import LoginPacer
from .result import ProbeResult, ProbeSpec
from .session import _Probe
from .smtp import SmtpProbe

__all__ = ["probe"]


def probe(spec: ProbeSpec, pacer: LoginPacer | None = None) -> ProbeResult:
    """Probe one connection type once. Never raises for anything the server does.

    ``pacer`` coordinates this probe's login with the other probes of the run (see
    :mod:`.pacing`); without one the login goes ahead at once.
    """
    if spec.protocol == "smtp":
        return SmtpProbe(spec, pacer).run()
    return _Probe(spec, pacer).run()
