"""The settings cascade: connection > server > ``defaults:`` > built-in.

Once the shape is valid, each connection's effective settings are merged key by key
(:class:`_Effective`), remembering where every value came from, so checks that need the
merged view (a warn/crit pair whose halves come from different levels, auth vs. account,
duplicate ids) can point at the right line. :func:`_build` turns each connection into a
:class:`ConnectionType`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..engine.defaults import DEFAULTS, DriftPolicy
from ..engine.dns import family_of
from ..engine.stages import FAMILY_LABELS, LATENCY_PHASES
from .model import (
    TOKEN_MECHANISMS,
    ConnectionType,
    Coverage,
    Host,
    LatencyThresholds,
    Monitored,
    RoundTrip,
)
from .schema import (
    _Account,
    _Connection,
    _File,
    _resolve_path,
    _RoundTrip,
    _Server,
    _Settings,
    _SmtpConnection,
)
from .wording import Loc, _fmt_loc, _num, _show, _suggest
from .yaml_lines import _Problems, _YamlTree


@dataclass(frozen=True)
class _Origin:
    loc: Loc | None  # None = built-in default
    line: int


_BUILTIN_ORIGIN: Final = _Origin(None, 0)
_CLEAR: Final = object()

# The bottom layer of the cascade. The values live in the engine's table so a ProbeSpec
# built in code gets the same ones; None here means "not set" (system CA store, no login).
_BUILTIN: Final[Mapping[str, object]] = {
    "auth": DEFAULTS.auth,
    "timeout": DEFAULTS.timeout,
    "ping": DEFAULTS.ping,
    "ping_timeout": DEFAULTS.ping_timeout,
    "ca_file": None,
    "min_tls_version": DEFAULTS.min_tls_version,
    "verify_tls": DEFAULTS.verify_tls,
    "allow_cleartext": DEFAULTS.allow_cleartext,
    "collect_uidl": DEFAULTS.collect_uidl,
    "login_pacing": DEFAULTS.login_pacing,
    "confirm": DEFAULTS.confirm,
    "address_family": DEFAULTS.address_family,
    "retries": DEFAULTS.retries,
    "retry_backoff": DEFAULTS.retry_backoff,
    "cert.warn_days": DEFAULTS.cert_warn_days,
    "cert.crit_days": DEFAULTS.cert_crit_days,
    **{f"drift.{k}": v for k, v in dataclasses.asdict(DEFAULTS.drift).items()},
    "latency.total.warn": DEFAULTS.latency_total[0],
    "latency.total.crit": DEFAULTS.latency_total[1],
    "account": None,
}

_SCALARS: Final = (
    "auth",
    "timeout",
    "ping",
    "ping_timeout",
    "ca_file",
    "min_tls_version",
    "verify_tls",
    "allow_cleartext",
    "collect_uidl",
    "login_pacing",
    "confirm",
    "address_family",
    "retries",
    "retry_backoff",
    "account",
)


def _layer(settings: _Settings, loc: Loc) -> Iterator[tuple[str, object, Loc]]:
    """The keys one level sets explicitly, flattened to dotted names."""
    given = settings.model_fields_set
    for name in _SCALARS:
        if name in given:
            yield name, getattr(settings, name), (*loc, name)
    if "cert" in given:
        for half in sorted(settings.cert.model_fields_set):
            yield f"cert.{half}", getattr(settings.cert, half), (*loc, "cert", half)
    if "drift" in given:
        # Key by key, as cert: a server's `crit` for one check keeps the others inherited.
        for key in sorted(settings.drift.model_fields_set):
            yield f"drift.{key}", getattr(settings.drift, key), (*loc, "drift", key)
    if "latency" in given:
        if settings.latency is None:
            yield "latency", _CLEAR, (*loc, "latency")
        else:
            for phase in sorted(settings.latency.model_fields_set):
                pair = getattr(settings.latency, phase)
                ploc = (*loc, "latency", phase)
                if pair is None:
                    yield f"latency.{phase}", _CLEAR, ploc
                else:
                    for half in sorted(pair.model_fields_set):
                        yield f"latency.{phase}.{half}", getattr(pair, half), (*ploc, half)
    if "mailbox" in given:
        mailbox = settings.mailbox
        if mailbox is None:
            yield "mailbox", _CLEAR, (*loc, "mailbox")
        else:
            for part in sorted(mailbox.model_fields_set):
                value = getattr(mailbox, part)
                ploc = (*loc, "mailbox", part)
                if part in ("stat_min", "stat_max"):
                    yield f"mailbox.{part}", value, ploc
                elif value is None:
                    yield f"mailbox.{part}", _CLEAR, ploc
                else:
                    for half in sorted(value.model_fields_set):
                        yield f"mailbox.{part}.{half}", getattr(value, half), (*ploc, half)


class _Effective:
    """The merged settings of one connection, each value with where it came from."""

    def __init__(self, tree: _YamlTree) -> None:
        self.tree = tree
        self.values: dict[str, tuple[object, _Origin]] = {
            k: (v, _BUILTIN_ORIGIN) for k, v in _BUILTIN.items()
        }
        self.tags: list[str] = []

    def apply(self, settings: _Settings | None, loc: Loc) -> None:
        if settings is None:
            return
        for key, value, vloc in _layer(settings, loc):
            if value is _CLEAR:
                for old in [k for k in self.values if k == key or k.startswith(key + ".")]:
                    del self.values[old]
            else:
                self.values[key] = (value, _Origin(vloc, self.tree.line(vloc)))
        # Tags accumulate (defaults' "production" plus the server's "eu"), they do not
        # replace: a tag is a label for selection, not a setting.
        for tag in settings.tags:
            if tag not in self.tags:
                self.tags.append(tag)

    def get(self, key: str) -> Any:
        return self.values[key][0]

    def optional(self, key: str) -> Any:
        return self.values[key][0] if key in self.values else None

    def origin(self, key: str) -> _Origin:
        return self.values[key][1]

    def pair(
        self,
        prefix: str,
        problems: _Problems,
        low: str = "warn",
        high: str = "crit",
        *,
        reverse: bool = False,
    ) -> tuple[Any, Any] | None:
        """Join ``prefix.low``/``prefix.high`` that may come from different levels."""
        a, b = f"{prefix}.{low}", f"{prefix}.{high}"
        if a not in self.values and b not in self.values:
            return None
        if a not in self.values or b not in self.values:
            have, missing = (a, high) if a in self.values else (b, low)
            origin = self.origin(have)
            assert origin.loc is not None
            problems.add(
                origin.line,
                origin.loc[:-1],
                f"{missing} is not set here or inherited — a threshold needs both warn and crit",
            )
            return None
        oa, ob = self.origin(a), self.origin(b)
        va, vb = self.get(a), self.get(b)
        bad = va <= vb if reverse else va >= vb
        # Same mapping: the schema check already reported it.
        same = oa.loc is not None and ob.loc is not None and oa.loc[:-1] == ob.loc[:-1]
        if bad and not same:
            here, there = (oa, ob) if _depth(oa) >= _depth(ob) else (ob, oa)
            assert here.loc is not None
            relation = "greater than" if reverse else "less than"
            problems.add(
                here.line,
                here.loc,
                f"{low} ({_num(va)}) must be {relation} {high} ({_num(vb)}) "
                f"inherited from {_where(there)}",
            )
            return None
        return va, vb


def _depth(origin: _Origin) -> int:
    return -1 if origin.loc is None else len(origin.loc)


def _where(origin: _Origin) -> str:
    if origin.loc is None:
        return "the built-in default"
    return f"{_fmt_loc(origin.loc)} (line {origin.line})"


def _check_auth(
    eff: _Effective, conn_loc: Loc, conn: _Connection | _SmtpConnection, problems: _Problems
) -> None:
    auth: str = eff.get("auth")
    if auth == "none":
        return
    account: _Account | None = eff.get("account")
    here = (*conn_loc, "auth") if "auth" in conn.model_fields_set else conn_loc
    line = eff.tree.line(here)
    default = " (the default)" if eff.origin("auth").loc is None else ""
    if account is None:
        ref = "token_env" if auth in TOKEN_MECHANISMS else "password_env"
        problems.add(
            line,
            here,
            f"auth '{auth}'{default} needs an account — add account: {{username: NAME, "
            f"{ref}: VAR_NAME}} here, on the server or in defaults, or set auth: none",
        )
        return
    reference = account.reference
    acc = eff.origin("account")
    assert acc.loc is not None
    if reference is None:
        if auth in TOKEN_MECHANISMS:
            fix = "token_env: VAR_NAME or token_file: PATH"
        else:
            fix = "password_env: VAR_NAME or password_file: PATH"
        problems.add(acc.line, acc.loc, f"no secret reference for auth '{auth}' — add {fix}")
        return
    kind, how, _name = reference
    if auth in TOKEN_MECHANISMS and kind != "token":
        problems.add(
            line,
            here,
            f"auth '{auth}' needs an OAuth token, but the account (line {acc.line}) gives "
            f"password_{how} — use token_env or token_file",
        )
    elif auth not in TOKEN_MECHANISMS and kind == "token":
        fix = (
            "set auth: xoauth2 or auth: oauthbearer"
            if auth == "auto"
            else "use password_env or password_file, or auth: xoauth2 / oauthbearer"
        )
        problems.add(
            line,
            here,
            f"auth '{auth}'{default} sends a password, but the account (line {acc.line}) "
            f"gives token_{how} — {fix}",
        )


def _check_family(eff: _Effective, server: _Server, sloc: Loc, problems: _Problems) -> None:
    """An ``address_family`` other than auto must fit the IP the connection would use
    without DNS: the pinned ``address``, else an IP-literal ``host``."""
    family = eff.get("address_family")
    key = "address" if server.address is not None else "host"
    literal = server.address if server.address is not None else server.host
    own = family_of(literal)
    if family == "auto" or own is None or own == family:
        return
    lit_loc: Loc = (*sloc, key)
    lit_line = eff.tree.line(lit_loc)
    origin = eff.origin("address_family")
    assert origin.loc is not None  # the built-in default is auto
    label, want = FAMILY_LABELS[own], FAMILY_LABELS[family]
    how = "pinned by" if key == "address" else "given as"
    if len(origin.loc) >= len(lit_loc):
        problems.add(
            origin.line,
            origin.loc,
            f"{family} cannot reach the {label} address {literal} {how} "
            f"{_fmt_loc(lit_loc)} (line {lit_line}) — set address_family: {own} or auto, "
            f"or use an {want} address there",
        )
    else:
        problems.add(
            lit_line,
            lit_loc,
            f"{literal} is an {label} address, but address_family {family} is inherited "
            f"from {_where(origin)} — use an {want} address, or set "
            f"address_family: {own} or auto on this server",
        )


def _build(
    model: _File, tree: _YamlTree, base_dir: Path, problems: _Problems
) -> list[ConnectionType]:
    out: list[ConnectionType] = []
    id_lines: dict[str, int] = {}
    server_lines: dict[str, int] = {}
    round_trips: list[tuple[str, Loc, _RoundTrip]] = []
    for si, server in enumerate(model.servers):
        sloc: Loc = ("servers", si)
        name_line = tree.line((*sloc, "name"))
        if server.name in server_lines:
            problems.add(
                name_line,
                (*sloc, "name"),
                f"duplicate server name {_show(server.name)} (first at line "
                f"{server_lines[server.name]}) — server names must be unique",
            )
        else:
            server_lines[server.name] = name_line
        entries: list[tuple[Loc, _Connection | _SmtpConnection]] = [
            ((*sloc, "connections", ci), conn) for ci, conn in enumerate(server.connections)
        ] + [((*sloc, "smtp", ci), conn) for ci, conn in enumerate(server.smtp)]
        for cloc, conn in entries:
            smtp = isinstance(conn, _SmtpConnection)
            eff = _Effective(tree)
            eff.apply(model.defaults, ("defaults",))
            eff.apply(server, sloc)
            if smtp and "auth" not in conn.model_fields_set:
                # Never inherited (see schema._SmtpConnection): no login unless asked here.
                eff.values["auth"] = ("none", _Origin(cloc, tree.line(cloc)))
            eff.apply(conn, cloc)
            before = len(problems.items)

            port = conn.port
            if port is None and smtp:
                port = DEFAULTS.smtps_port if conn.security == "tls" else DEFAULTS.smtp_port
            elif port is None:
                port = DEFAULTS.pop3s_port if conn.security == "tls" else DEFAULTS.pop3_port
            if conn.id is not None:
                cid, id_loc = conn.id, (*cloc, "id")
                how, fix = "", "ids must be unique"
            else:
                kind = "smtp-" if smtp else ""
                cid, id_loc = f"{server.name}:{kind}{port}-{conn.security}", cloc
                how = "built from server name, port and security; "
                fix = "add id: to tell them apart"
            id_line = tree.line(id_loc)
            if cid in id_lines:
                problems.add(
                    id_line,
                    id_loc,
                    f"duplicate connection id {_show(cid)} ({how}first at line "
                    f"{id_lines[cid]}) — {fix}",
                )
            else:
                id_lines[cid] = id_line

            _check_auth(eff, cloc, conn, problems)
            _check_family(eff, server, sloc, problems)
            cert = _cert_pair(eff, problems)
            latency: dict[str, tuple[float, float]] = {}
            for phase in LATENCY_PHASES:
                pair = eff.pair(f"latency.{phase}", problems)
                if pair is not None:
                    latency[phase] = (float(pair[0]), float(pair[1]))
            count = eff.pair("mailbox.count", problems)
            size = eff.pair("mailbox.size", problems)
            stat_min: int | None = eff.optional("mailbox.stat_min")
            stat_max: int | None = eff.optional("mailbox.stat_max")
            if stat_min is not None and stat_max is not None and stat_min > stat_max:
                omin, omax = eff.origin("mailbox.stat_min"), eff.origin("mailbox.stat_max")
                assert omin.loc is not None and omax.loc is not None
                if omin.loc[:-1] != omax.loc[:-1]:
                    here, there = (omin, omax) if _depth(omin) >= _depth(omax) else (omax, omin)
                    assert here.loc is not None
                    problems.add(
                        here.line,
                        here.loc,
                        f"stat_min ({stat_min}) must not be greater than stat_max ({stat_max}) "
                        f"inherited from {_where(there)}",
                    )
            if len(problems.items) != before or cert is None:
                continue

            account: _Account | None = eff.get("account")
            auth: str = eff.get("auth")
            kind = source = ""
            reference = account.reference if account is not None else None
            if reference is not None and auth != "none":
                kind, how_ref, ref = reference
                if how_ref == "file":
                    source = f"file:{_resolve_path(base_dir, ref)}"
                else:
                    source = f"env:{ref}"
            ca_file: str | None = eff.get("ca_file")
            if isinstance(conn, _Connection) and conn.round_trip is not None:
                round_trips.append((cid, (*cloc, "round_trip"), conn.round_trip))
            out.append(
                ConnectionType(
                    id=cid,
                    server=server.name,
                    host=server.host,
                    address=server.address,
                    address_family=eff.get("address_family"),
                    port=port,
                    security=conn.security,
                    auth=auth,
                    username=account.username if account is not None else None,
                    secret_kind=kind,
                    secret_source=source,
                    tags=tuple(eff.tags),
                    timeout=float(eff.get("timeout")),
                    ping=eff.get("ping"),
                    ping_timeout=float(eff.get("ping_timeout")),
                    ca_file=str(_resolve_path(base_dir, ca_file)) if ca_file else None,
                    min_tls_version=eff.get("min_tls_version"),
                    verify_tls=eff.get("verify_tls"),
                    allow_cleartext=eff.get("allow_cleartext"),
                    collect_uidl=eff.get("collect_uidl"),
                    login_pacing=eff.get("login_pacing"),
                    retries=eff.get("retries"),
                    retry_backoff=float(eff.get("retry_backoff")),
                    confirm=eff.get("confirm"),
                    cert_warn_days=cert[0],
                    cert_crit_days=cert[1],
                    drift=DriftPolicy(
                        **{
                            f.name: eff.get(f"drift.{f.name}")
                            for f in dataclasses.fields(DriftPolicy)
                        }
                    ),
                    latency=LatencyThresholds(latency),
                    mailbox_count=(int(count[0]), int(count[1])) if count else None,
                    mailbox_size=(int(size[0]), int(size[1])) if size else None,
                    stat_min=stat_min,
                    stat_max=stat_max,
                    line=tree.line(cloc),
                    protocol="smtp" if smtp else "pop3",
                    relay_check=(conn.relay_check or "")
                    if isinstance(conn, _SmtpConnection)
                    else "",
                    ehlo_name=(conn.ehlo_name or "") if isinstance(conn, _SmtpConnection) else "",
                )
            )
    if round_trips:
        out = _with_round_trips(out, round_trips, tree, base_dir, problems)
    return out


def _with_round_trips(
    built: list[ConnectionType],
    round_trips: list[tuple[str, Loc, _RoundTrip]],
    tree: _YamlTree,
    base_dir: Path,
    problems: _Problems,
) -> list[ConnectionType]:
    """Each ``round_trip:`` checked against the connection types it pairs (its ``via``
    must be an SMTP connection type that logs in; the POP3 side must log in too, and have
    a recipient) and attached as a :class:`RoundTrip`."""
    by_id = {c.id: c for c in built}
    attached: dict[str, RoundTrip] = {}
    for cid, rloc, rt in round_trips:
        pop3 = by_id.get(cid)
        if pop3 is None:
            continue  # its own problems are already reported
        vloc = (*rloc, "via")
        vline = tree.line(vloc)
        via = by_id.get(rt.via)
        if via is None:
            smtp_ids = sorted(c.id for c in built if c.protocol == "smtp")
            known = ", ".join(smtp_ids) if smtp_ids else "none: add a server's smtp: entry"
            problems.add(
                vline, vloc, f"no connection type has id {_show(rt.via)} — SMTP ids: {known}"
            )
            continue
        if via.protocol != "smtp":
            problems.add(
                vline,
                vloc,
                f"{_show(rt.via)} is a POP3 connection type — via names an smtp: entry "
                "(submission on 587 or 465) that sends the message",
            )
            continue
        if via.auth == "none" or not via.secret_source:
            problems.add(
                vline,
                vloc,
                f"{_show(rt.via)} does not log in (auth: none or no account) — the round "
                "trip submits with the technical account: give that smtp: entry auth: and "
                "account:",
            )
            continue
        if pop3.auth == "none" or not pop3.secret_source:
            problems.add(
                tree.line(rloc),
                rloc,
                "needs a login on this connection type (auth: and account:) — the round "
                "trip looks for the message in its mailbox",
            )
            continue
        recipient = rt.recipient or ""
        if not recipient:
            name = pop3.username or ""
            if "@" not in name:
                problems.add(
                    tree.line(rloc),
                    rloc,
                    f"has no recipient: and the account name {_show(name)} is not a mail "
                    "address — add recipient: (the address delivering to this mailbox)",
                )
                continue
            recipient = name
        source = ""
        if rt.hmac_key_env is not None:
            source = f"env:{rt.hmac_key_env}"
        elif rt.hmac_key_file is not None:
            source = f"file:{_resolve_path(base_dir, rt.hmac_key_file)}"
        attached[cid] = RoundTrip(
            via=rt.via,
            recipient=recipient,
            sender=rt.sender or recipient,
            warn=float(rt.warn),
            crit=float(rt.crit),
            timeout=float(rt.timeout),
            cleanup=rt.cleanup,
            key_source=source,
            line=tree.line(rloc),
        )
    return [
        dataclasses.replace(c, round_trip=attached[c.id]) if c.id in attached else c for c in built
    ]


def _cert_pair(eff: _Effective, problems: _Problems) -> tuple[int, int] | None:
    pair = eff.pair("cert", problems, "warn_days", "crit_days", reverse=True)
    return (int(pair[0]), int(pair[1])) if pair is not None else None


def _hosts(
    model: _File, tree: _YamlTree, connections: list[ConnectionType], problems: _Problems
) -> list[Host]:
    """The host checks of the servers, with ``depends_on`` checked: every name a server of
    the file, no server its own dependency, no cycle.

    A server gets a host check where it says more than its connection types' own checks:
    two or more connection types (one CRIT for the host instead of one per connection
    type), ``tcp_ports:``, PING on for the server, or a ``depends_on`` relation either way.
    A lone connection type's ``ping``/``tcp`` checks already are its host's.
    """
    names = {server.name: si for si, server in enumerate(model.servers)}
    needed: set[str] = set()
    for si, server in enumerate(model.servers):
        for di, dep in enumerate(server.depends_on):
            loc: Loc = ("servers", si, "depends_on", di)
            if dep == server.name:
                problems.add(
                    tree.line(loc),
                    loc,
                    f"server {_show(dep)} cannot depend on itself — name the gateway or "
                    "resolver it is reached through",
                )
            elif dep not in names:
                problems.add(
                    tree.line(loc),
                    loc,
                    f"unknown server {_show(dep)} — depends_on takes the name: of another "
                    f"server in this file{_suggest(dep, [n for n in names if n != server.name])}",
                )
            else:
                needed.update((dep, server.name))
    _cycles(model, tree, problems)
    by_server: dict[str, list[ConnectionType]] = {}
    for ct in connections:
        by_server.setdefault(ct.server, []).append(ct)
    out: list[Host] = []
    for si, server in enumerate(model.servers):
        sloc: Loc = ("servers", si)
        eff = _Effective(tree)
        eff.apply(model.defaults, ("defaults",))
        eff.apply(server, sloc)
        mine = sorted(by_server.get(server.name, []), key=lambda c: c.line)
        ping: bool = eff.get("ping")
        if server.tcp_ports is not None:
            ports = tuple(server.tcp_ports)
            if not ports and not ping:
                loc = (*sloc, "tcp_ports")
                problems.add(
                    tree.line(loc),
                    loc,
                    "is empty and ping is off — the host check would check nothing; list "
                    "a port, or set ping: true on this server",
                )
        else:
            ports = tuple(dict.fromkeys(c.port for c in mine))
        checked = len(mine) > 1 or server.tcp_ports is not None or ping or server.name in needed
        if not checked:
            continue
        out.append(
            Host(
                name=server.name,
                host=server.host,
                address=server.address,
                address_family=eff.get("address_family"),
                ping=ping,
                ping_timeout=float(eff.get("ping_timeout")),
                timeout=float(eff.get("timeout")),
                ports=ports,
                depends_on=tuple(dict.fromkeys(server.depends_on)),
                connections=tuple(c.id for c in mine),
                tags=tuple(eff.tags),
                line=tree.line(sloc),
            )
        )
    return out


def _coverage(
    model: _File, tree: _YamlTree, base_dir: Path, connections: list[ConnectionType]
) -> list[Coverage]:
    """The coverage tier of each server that turns it on (``coverage: true`` or a mapping),
    with what it compares against: every connection type of the file, of any server (a
    listener of mail1 may be monitored under another server entry or an address)."""
    monitored = tuple(
        Monitored(
            host=c.host.lower().rstrip("."),
            address=c.address,
            port=c.port,
            protocol=c.protocol,
            security=c.security,
            id=c.id,
        )
        for c in sorted(connections, key=lambda c: c.id)
    )
    out: list[Coverage] = []
    for si, server in enumerate(model.servers):
        cov = server.coverage
        if cov is None:
            continue
        sloc: Loc = ("servers", si)
        eff = _Effective(tree)
        eff.apply(model.defaults, ("defaults",))
        eff.apply(server, sloc)
        ca_file: str | None = eff.get("ca_file")
        out.append(
            Coverage(
                name=server.name,
                host=server.host,
                domain=cov.domain.rstrip(".").lower() if cov.domain else None,
                unmonitored=cov.unmonitored,
                cleartext_unmonitored=cov.cleartext_unmonitored,
                nameserver=cov.nameserver,
                ports=tuple(cov.ports),
                autoconfig_port=cov.autoconfig_port,
                timeout=float(eff.get("timeout")),
                ca_file=str(_resolve_path(base_dir, ca_file)) if ca_file else None,
                monitored=monitored,
                tags=tuple(eff.tags),
                line=tree.line((*sloc, "coverage")),
            )
        )
    return out


def _cycles(model: _File, tree: _YamlTree, problems: _Problems) -> None:
    """One problem per ``depends_on`` cycle, at the entry that closes it (seen from the
    first server of the cycle in file order), spelling the whole loop."""
    deps = {s.name: [d for d in s.depends_on if d != s.name] for s in model.servers}
    index = {s.name: si for si, s in enumerate(model.servers)}
    reported: set[frozenset[str]] = set()
    for start in deps:
        path: list[str] = [start]
        stack: list[list[str]] = [list(deps.get(start, []))]
        while stack:
            if not stack[-1]:
                stack.pop()
                path.pop()
                continue
            nxt = stack[-1].pop(0)
            if nxt == start:
                loop = frozenset(path)
                if loop not in reported:
                    reported.add(loop)
                    last = path[-1]
                    di = model.servers[index[last]].depends_on.index(start)
                    loc: Loc = ("servers", index[last], "depends_on", di)
                    chain = " → ".join([*path, start])
                    problems.add(
                        tree.line(loc),
                        loc,
                        f"dependency cycle {chain} — a server cannot be reached through "
                        "itself; remove one of these depends_on entries",
                    )
                continue
            if nxt in path or nxt not in deps:
                continue
            path.append(nxt)
            stack.append(list(deps[nxt]))
