"""A ``targets.yaml`` draft from a :class:`~pop3mon.engine.discovery.Discovery`.

One server per discovered host, one connection per POP3 connection type found (published
by SRV/autoconfig or answering the port probe), one ``smtp:`` entry per published SMTP
one (its security as probed when it answered; EHLO, STARTTLS and QUIT only). Comments say
where each was found and flag what needs a look: a cleartext login offered before TLS, a
certificate that did not verify, a published port that did not answer, an advertised
STARTTLS the server does not offer. Secrets are references only
(``password_env: POP3MON_PASSWORD``); the draft is meant to load with
:func:`~pop3mon.config.load_targets` as written (``pop3mon discover`` checks that it does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final

from ..engine.discovery import MAX_HOSTS, MAX_PORTS, Discovery, Offered, Published
from ..engine.stages import Protocol, Security

__all__ = ["PASSWORD_ENV", "ConnectionFinding", "draft_yaml", "findings"]

#: The environment variable the draft's accounts name (the secret is never in the file).
PASSWORD_ENV: Final = "POP3MON_PASSWORD"


@dataclass
class ConnectionFinding:
    """Everything discovery learnt about one (protocol, host, port)."""

    protocol: Protocol
    host: str
    port: int
    published: list[Published] = field(default_factory=list)
    offered: Offered | None = None
    not_probed: str = ""  # why a published entry was not probed (a cap), "" when probed

    @property
    def security(self) -> Security:
        """What to monitor: as probed when the port answered, else as published."""
        if self.offered is not None and self.offered.answered:
            return self.offered.security
        return self.published[0].security if self.published else "none"

    @property
    def sources(self) -> list[str]:
        """Where it was found, for the comment and the table."""
        out = []
        for p in self.published:
            out.append(f"SRV {p.where}" if p.source == "srv" else f"{p.source} {p.where}")
        o = self.offered
        if o is not None and o.answered:
            caps = " ".join(
                c.split()[0] if not c.upper().startswith("SASL") else c for c in o.capabilities[:12]
            )
            said = "EHLO" if self.protocol == "smtp" else "CAPA"
            out.append(f"port probe {o.port} ({said}: {caps or 'none'})")
        return out

    @property
    def warnings(self) -> list[str]:
        """What needs a look (cleartext before TLS, certificate, published but silent)."""
        out = [self.not_probed] if self.not_probed else []
        o = self.offered
        if o is not None and o.cleartext_login_before_tls:
            out.append(
                "CLEARTEXT LOGIN BEFORE TLS: offers "
                + ", ".join(o.cleartext_login_before_tls)
                + " on an unencrypted connection"
            )
        if o is not None and o.tls_ok is False:
            out.append(f"TLS not verified: {o.error or 'certificate did not verify'}")
        proto = self.protocol.upper()
        if o is not None and not o.answered and self.published:
            out.append(f"published but not answering {proto}: {o.error or 'no answer'}")
        upgrade = "STARTTLS" if self.protocol == "smtp" else "STLS"
        for p in self.published:
            if o is not None and o.answered and p.security == "starttls" and not o.stls_offered:
                out.append(f"published as STARTTLS ({p.source}) but {upgrade} is not offered")
        return out


def findings(found: Discovery) -> list[ConnectionFinding]:
    """One finding per (protocol, host, port), published first, in discovery's order."""
    table: dict[tuple[str, str, int], ConnectionFinding] = {}
    for p in found.published:
        key = (p.protocol, p.host, p.port)
        table.setdefault(key, ConnectionFinding(p.protocol, p.host, p.port)).published.append(p)
    for o in found.offered:
        key = (o.protocol, o.host, o.port)
        if key not in table and not o.answered:
            continue  # a standard port that is simply closed: nothing to monitor
        table.setdefault(key, ConnectionFinding(o.protocol, o.host, o.port)).offered = o
    probed = set(found.hosts)
    for f in table.values():
        if f.offered is None:
            f.not_probed = (
                f"not probed: over the {MAX_HOSTS}-host limit"
                if f.host not in probed
                else f"not probed: over the {MAX_PORTS}-port limit of its host"
            )
    return list(table.values())


def _q(text: str) -> str:
    """A YAML scalar: JSON strings are valid YAML and escape everything that matters."""
    return json.dumps(text, ensure_ascii=True)


def _comment(text: str) -> str:
    return " ".join(text.replace("\n", " ").split())


def draft_yaml(found: Discovery, *, ca_file: str | None = None) -> str:
    """The ``targets.yaml`` draft of ``found`` (see the module docstring)."""
    items = findings(found)
    lines = [
        f"# pop3mon targets draft written by `pop3mon discover"
        f"{' ' + found.domain if found.domain else ''}`.",
        "# Review it: every connection type found is listed with where it was found.",
        f"# Secrets are never written here: set {PASSWORD_ENV} in the environment.",
        "version: 1",
    ]
    if ca_file:
        lines += ["defaults:", f"  ca_file: {_q(ca_file)}"]
    hosts = list(dict.fromkeys(f.host for f in items))
    if not hosts:
        lines.append("servers: [] # discovery found no connection type")
        return "\n".join(lines) + "\n"
    lines.append("servers:")
    for host in hosts:
        mine = [f for f in items if f.host == host]
        pop3 = [f for f in mine if f.protocol == "pop3"]
        smtp = [f for f in mine if f.protocol == "smtp"]
        published_user = next((p.username for f in pop3 for p in f.published if p.username), None)
        username = published_user
        if not username or "%" in username:
            # An unfilled placeholder (%EMAILADDRESS%) is no account: name a technical one.
            username = f"monitor@{found.domain}" if found.domain else "monitor"
        lines += [
            f"  - name: {_q(_server_name(host))}",
            f"    host: {_q(host)}",
            "    account:",
            f"      username: {_q(username)}"
            + (f" # autoconfig says {_comment(published_user)}" if published_user else ""),
            f"      password_env: {PASSWORD_ENV}",
        ]
        if pop3:
            lines.append("    connections:")
            for f in pop3:
                lines += _entry(f, pop3=True)
        if smtp:
            lines.append("    smtp:")
            for f in smtp:
                lines += _entry(f, pop3=False)
    return "\n".join(lines) + "\n"


def _server_name(host: str) -> str:
    """A valid server name for ``host`` (an IPv6 literal's colons are not allowed)."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in host).strip("-._") or "server"


def _entry(f: ConnectionFinding, *, pop3: bool) -> list[str]:
    out = [f"      # found: {_comment('; '.join(f.sources) or 'port probe')}"]
    out += [f"      # WARNING: {_comment(w)}" for w in f.warnings]
    security = f.security
    out += [f"      - port: {f.port}", f"        security: {security}"]
    if security == "none":
        # Without TLS the password would cross the wire in clear: connect and inspect only.
        out.append("        auth: none # unencrypted: no login (allow_cleartext stays false)")
    elif pop3:
        out.append("        auth: auto")
    return out
