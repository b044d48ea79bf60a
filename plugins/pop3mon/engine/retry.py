"""In-run retry of a transient failure: probe again, but never log in twice.

A monitor that reports every dropped SYN as an outage wakes people for nothing; one that
retries blindly hides real faults and, worse, repeats logins: a second refused login
doubles the server's penalty for the address (Dovecot: 4 s, then 8 s ...) and can lock
the account. So :func:`probe_with_retries` probes once more (``ProbeSpec.retries`` times
at most, ``retry_backoff`` seconds apart, each attempt with its own deadline) only when

* the failure's kind is transient (:data:`TRANSIENT_KINDS`: a refused, reset or timed
  out connection, a DNS server that did not answer, a TLS handshake cut off, a greeting
  that never came); the kind decides, never the reason's wording, and a permanent fault
  (a certificate, a policy refusal, an old TLS version, STLS missing, a name that does not
  exist) is reported at once; and
* the failure came before the login (:data:`RETRY_STAGES`): a login that was sent (and
  answered, refused or cut off) is never sent again in the run, whatever happened after
  it. Attempts before the login take no turn from the run's :class:`~.pacing.LoginPacer`;
  the attempt that reaches the login takes its turn like any other probe.

A connection type's wall time is therefore at most about ``(retries + 1) x timeout +
retries x retry_backoff`` seconds, plus any wait for its login turn (which is outside
the deadline already).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Final

from .dispatch import probe
from .errors import ErrorKind
from .pacing import LoginPacer
from .result import ProbeResult, ProbeSpec, StageOutcome
from .stages import STAGES, Stage, stage_index

__all__ = ["RETRY_STAGES", "TRANSIENT_KINDS", "probe_with_retries", "retry_decision"]

#: Failure kinds that a second attempt a moment later may well not see.
TRANSIENT_KINDS: Final[frozenset[ErrorKind]] = frozenset(
    {
        "dns-timeout",  # the resolver did not answer in time
        "dns-temporary",  # EAI_AGAIN: SERVFAIL or an unreachable DNS server
        "connect-timeout",
        "connection-refused",  # a restarting server, a full backlog, a failover
        "connection-reset",
        "connection-closed",  # closed before the login (after it, see RETRY_STAGES)
        "timeout",  # the deadline passed waiting for the greeting, CAPA, a handshake
        "tls-eof",  # the handshake was cut off
    }
)

#: The stages a failure may happen in for the probe to be made again: those before the
#: login. From ``auth`` on, a login may have gone out, and it never goes out twice.
RETRY_STAGES: Final[frozenset[Stage]] = frozenset(
    s.name for s in STAGES if stage_index(s.name) < stage_index("auth")
)


def retry_decision(result: ProbeResult) -> tuple[bool, str]:
    """Whether to probe again after ``result``, and, when its failure is transient by kind
    but must not be retried, why (for the reports; ``""`` otherwise)."""
    if result.ok or result.error_kind not in TRANSIENT_KINDS:
        return False, ""
    auth = result.auth
    if auth is not None and auth.success:
        return False, "a login was made in this attempt, and pop3mon logs in once per run"
    if result.error_stage not in RETRY_STAGES or (auth is not None and auth.secret_sent):
        return False, (
            "the login had started when it failed, and pop3mon never starts a login "
            "twice in one run"
        )
    return True, ""


def probe_with_retries(
    spec: ProbeSpec,
    pacer: LoginPacer | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> ProbeResult:
    """:func:`~.dispatch.probe`, probed again up to ``spec.retries`` times after a transient
    failure before the login (see the module). Never raises for anything the server does.

    The result is the last attempt's, with ``attempts``, the failing stage of each earlier
    attempt in ``retried`` and, when a transient failure was not retried because of the
    login, ``not_retried``. ``sleep`` waits the backoff (nothing is held meanwhile: each
    attempt has ended, and released its login turn, before it).
    """
    if pacer is None:
        pacer = LoginPacer()  # one for all attempts, so they pace against each other
    earlier: list[StageOutcome] = []
    while True:
        result = probe(spec, pacer)
        again, why_not = retry_decision(result)
        if not again or len(earlier) >= spec.retries:
            break
        earlier.append(_failure(result))
        sleep(spec.retry_backoff)
    if not earlier and not (spec.retries and why_not):
        return result
    return dataclasses.replace(
        result,
        attempts=len(earlier) + 1,
        retried=tuple(earlier),
        not_retried=why_not if spec.retries else "",
    )


def _failure(result: ProbeResult) -> StageOutcome:
    """The stage outcome that failed ``result`` (a failed probe always records one)."""
    for outcome in result.stages:
        if outcome.status == "fail":
            return outcome
    return StageOutcome(result.error_stage, "fail", result.error_kind, result.error_reason)
