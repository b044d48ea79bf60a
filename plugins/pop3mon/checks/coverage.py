"""Coverage tier: what a server offers and its domain publishes, against the targets file.

Pure rules of ``(settings, Discovery, check)``; the discovery itself (CAPA/STLS/QUIT only,
one deadline) is :func:`pop3mon.engine.discovery.discover`, run once per server and run.

* ``coverage-unmonitored``: every POP3 connection type that answers but no connection type
  of the file monitors: the server's ``unmonitored`` level (WARN), or its
  ``cleartext_unmonitored`` level (CRIT) when it offers a cleartext login (USER, SASL
  PLAIN/LOGIN) before TLS: the forgotten port the brief warns about.
* ``coverage-published``: every connection type the domain publishes (RFC 6186 SRV, client
  autoconfig; POP3 and SMTP submission) that the file does not monitor (its connection
  types or its ``smtp:`` ones), or that does not answer: ``unmonitored``.
* ``coverage-autoconfig``: what the client autoconfig advertises against what the server
  does, for POP3 and SMTP: SSL whose certificate is not for the advertised name, STARTTLS
  where STLS (POP3) or STARTTLS (SMTP EHLO) is not offered, a port that does not answer:
  CRIT (every mail client set up from it fails); an advertised plaintext connection: WARN.

A check that could not look (the domain's DNS server timed out or failed, the autoconfig
host failed other than by saying "no document here", a probe did not end in time; see
:class:`~pop3mon.engine.discovery.Failure`) is never OK: WARN ``could not check: ...``,
as an inconclusive relay check is WARN, since SKIP in this suite means "not applicable"
or "blocked by another check's failure".

A connection type is monitored when some connection type of the file (any server) has the
same protocol and port and the same host name (case and a trailing dot aside) or the same
pinned ``address``; names are not resolved to compare them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..engine.discovery import Discovery, DiscoveryPart, Offered, Published
from ..engine.stages import COVERAGE_TIER, CoverageCheck, CoverageLevel
from ..verdict import Verdict, worst
from .base import CRIT, OK, SKIP, WARN, CheckResult

__all__ = ["CoverageSettings", "MonitoredLike", "coverage_check", "found_where", "monitor_of"]

_LEVEL: dict[CoverageLevel, Verdict] = {"warn": WARN, "crit": CRIT}
_SECURITY_WORDS = {"none": "plaintext", "starttls": "STARTTLS", "tls": "implicit TLS"}
_SOURCE_WORDS = {
    "srv": "SRV",
    "autoconfig": "autoconfig",
    "autoconfig-wellknown": "autoconfig (.well-known)",
    "port": "port probe",
}


class MonitoredLike(Protocol):
    """One connection type of the targets file (:class:`pop3mon.config.model.Monitored`)."""

    @property
    def host(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def port(self) -> int: ...
    @property
    def protocol(self) -> str: ...
    @property
    def id(self) -> str: ...


class CoverageSettings(Protocol):
    """What the rules read of a server's coverage (:class:`pop3mon.config.Coverage`)."""

    @property
    def domain(self) -> str | None: ...
    @property
    def unmonitored(self) -> CoverageLevel: ...
    @property
    def cleartext_unmonitored(self) -> CoverageLevel: ...
    @property
    def monitored(self) -> Sequence[MonitoredLike]: ...


def _norm(host: str) -> str:
    return host.lower().rstrip(".")


def monitor_of(
    settings: CoverageSettings, host: str, port: int, protocol: str, address: str = ""
) -> MonitoredLike | None:
    """The file's connection type that monitors ``host:port`` (``protocol``), if any."""
    name = _norm(host)
    for m in settings.monitored:
        if m.port != port or m.protocol != protocol:
            continue
        if m.host == name or (m.address and m.address in (name, address)):
            return m
        if address and m.host == address:
            return m
    return None


def found_where(discovery: Discovery, host: str, port: int) -> str:
    """Where ``host:port`` was found: the published records naming it, and the port probe."""
    name = _norm(host)
    said = [
        f"{_SOURCE_WORDS.get(p.source, p.source)} {p.where}"
        for p in discovery.published
        if _norm(p.host) == name and p.port == port
    ]
    if any(_norm(o.host) == name and o.port == port for o in discovery.offered):
        said.append("port probe")
    return "; ".join(dict.fromkeys(said)) or "port probe"


def _offered(discovery: Discovery, host: str, port: int, protocol: str = "pop3") -> Offered | None:
    name = _norm(host)
    mine = [
        o
        for o in discovery.offered
        if _norm(o.host) == name and o.port == port and o.protocol == protocol
    ]
    return next((o for o in mine if o.answered), next(iter(mine), None))


def _could_not(discovery: Discovery, *parts: DiscoveryPart) -> list[tuple[Verdict, str]]:
    """One WARN finding naming what discovery could not look at for ``parts``."""
    reasons = discovery.failed(*parts)
    return [(WARN, "could not check: " + "; ".join(reasons))] if reasons else []


def _security(word: str) -> str:
    return _SECURITY_WORDS.get(word, word)


def _problems(discovery: Discovery) -> str:
    return f" (discovery: {'; '.join(discovery.problems)})" if discovery.problems else ""


def _result(check: CoverageCheck, findings: list[tuple[Verdict, str]], ok: str) -> CheckResult:
    if not findings:
        return CheckResult(COVERAGE_TIER, check, OK, ok, 0.0, "")
    verdict = worst(v for v, _ in findings)
    # The worst first: a CRIT cleartext listener leads the reason.
    ordered = sorted(findings, key=lambda f: f[0] != verdict)
    reason = "; ".join(text for _, text in ordered)
    return CheckResult(COVERAGE_TIER, check, verdict, reason, float(len(findings)), "")


def _unmonitored(settings: CoverageSettings, discovery: Discovery) -> CheckResult:
    answered = [o for o in discovery.offered if o.answered and o.protocol == "pop3"]
    findings: list[tuple[Verdict, str]] = []
    covered: list[str] = []
    for o in answered:
        m = monitor_of(settings, o.host, o.port, o.protocol, o.address)
        if m is not None:
            covered.append(f"{o.host}:{o.port} ({m.id})")
            continue
        where = found_where(discovery, o.host, o.port)
        what = f"unmonitored POP3 {o.host}:{o.port} ({_security(o.security)}, found by {where})"
        if o.cleartext_login_before_tls:
            offers = ", ".join(o.cleartext_login_before_tls)
            findings.append(
                (
                    _LEVEL[settings.cleartext_unmonitored],
                    f"{what} offers a cleartext login before TLS ({offers}) — add it to the "
                    "targets file or close it",
                )
            )
        else:
            findings.append((_LEVEL[settings.unmonitored], f"{what} — add it to the targets file"))
    findings += _could_not(discovery, "probe")
    probed = sorted({f"{o.host}:{o.port}" for o in discovery.offered})
    if covered:
        ok = f"every POP3 connection type that answers is monitored: {', '.join(covered)}"
    else:
        ok = f"no POP3 connection type answers on {', '.join(probed) or 'no port'}"
    return _result("coverage-unmonitored", findings, ok + _problems(discovery))


def _published(settings: CoverageSettings, discovery: Discovery) -> CheckResult:
    if settings.domain is None:
        return CheckResult(
            COVERAGE_TIER,
            "coverage-published",
            SKIP,
            "no domain to look up — set coverage: {domain: ...} to compare what it publishes",
        )
    level = _LEVEL[settings.unmonitored]
    findings = _could_not(discovery, "srv", "autoconfig")
    seen: dict[tuple[str, int, str], Published] = {}
    for p in discovery.published:
        seen.setdefault((_norm(p.host), p.port, p.protocol), p)
    covered: list[str] = []
    for (host, port, protocol), p in seen.items():
        where = found_where(discovery, host, port)
        label = f"{protocol.upper()} {host}:{port} ({_security(p.security)}, published by {where})"
        probe = _offered(discovery, host, port, protocol)
        m = monitor_of(settings, host, port, protocol, probe.address if probe else "")
        if m is None:
            findings.append((level, f"published but unmonitored: {label} — add it"))
        elif probe is not None and not probe.answered:
            findings.append((level, f"published but failing: {label}: {probe.error}"))
        else:
            covered.append(f"{host}:{port} ({m.id})")
    if not seen:
        ok = f"{settings.domain} publishes no connection types (SRV, autoconfig)"
    else:
        ok = f"every connection type {settings.domain} publishes is monitored: " + ", ".join(
            covered
        )
    return _result("coverage-published", findings, ok + _problems(discovery))


def _autoconfig(settings: CoverageSettings, discovery: Discovery) -> CheckResult:
    check: CoverageCheck = "coverage-autoconfig"
    if settings.domain is None:
        return CheckResult(
            COVERAGE_TIER,
            check,
            SKIP,
            "no domain to look up — set coverage: {domain: ...} to check its client autoconfig",
        )
    advertised = [
        p for p in discovery.published if p.source in ("autoconfig", "autoconfig-wellknown")
    ]
    if not advertised:
        could_not = _could_not(discovery, "autoconfig")
        if could_not:
            return _result(check, could_not, "")
        return CheckResult(
            COVERAGE_TIER,
            check,
            SKIP,
            f"{settings.domain} publishes no client autoconfig{_problems(discovery)}",
        )
    findings: list[tuple[Verdict, str]] = []
    fine: list[str] = []
    # The same server advertised at both autoconfig locations is one finding.
    unique = {(_norm(p.host), p.port, p.protocol, p.security): p for p in reversed(advertised)}
    for p in reversed(unique.values()):
        proto = p.protocol.upper()
        said = (
            f"autoconfig ({p.where}) advertises {proto} {_security(p.security)} "
            f"on {p.host}:{p.port}"
        )
        o = _offered(discovery, p.host, p.port, p.protocol)
        if o is None or not o.answered:
            why = o.error if o is not None and o.error else "not probed"
            findings.append((CRIT, f"{said}, but it does not answer {proto}: {why}"))
        elif p.security == "tls" and o.tls_ok is False:
            findings.append((CRIT, f"{said}, but its certificate fails: {o.error}"))
        elif p.security == "starttls" and not o.stls_offered:
            caps = " ".join(o.capabilities) or "none"
            if p.protocol == "smtp":
                what = f"STARTTLS is not offered (EHLO: {caps})"
            else:
                what = f"STLS is not offered (CAPA: {caps})"
            findings.append((CRIT, f"{said}, but {what}"))
        elif p.security == "none":
            findings.append((WARN, f"{said}: mail clients set up from it send passwords in clear"))
        else:
            fine.append(f"{proto} {p.host}:{p.port} {_security(p.security)}")
    ok = "what the client autoconfig advertises works: " + ", ".join(fine)
    return _result(check, findings, ok)


def coverage_check(
    settings: CoverageSettings, discovery: Discovery, check: CoverageCheck
) -> CheckResult:
    """The verdict of coverage check ``check`` of one server (see the module docstring)."""
    if check == "coverage-unmonitored":
        return _unmonitored(settings, discovery)
    if check == "coverage-published":
        return _published(settings, discovery)
    return _autoconfig(settings, discovery)
