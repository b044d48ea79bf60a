"""Sharded runs: which part of a targets file one run of N takes, and the run's identity.

A fleet too large for one runner (or watched from several places) runs as N shards on the
CI engine the user already has (a GitHub Actions matrix, GitLab ``parallel:``, a
Kubernetes Indexed Job); ``pop3mon merge`` joins their ``results.json`` into one report.

The split is a pure function of the targets file, so every shard (and ``merge``, and the
benchmark) computes the same one, on any machine and under any ``PYTHONHASHSEED``. Its unit
is a *server group*: the servers linked by ``depends_on``, by logging in to one host (the
login pacer's key: several accounts, POP3 and SMTP, IPv4 and IPv6 entries of one host) or
by a round trip's ``via`` (a connected component), so all connection types of one server,
the logins that take turns, one host check and the hosts it is reached through land in the
same shard. A group goes to shard :func:`shard_of` of its smallest server name.

Where the shard comes from (first that applies): ``--shard=K/N``; ``POP3MON_SHARD=K/N``;
GitLab's ``CI_NODE_INDEX`` (1-based) with ``CI_NODE_TOTAL``, only in a ``parallel: N`` job
(not in a ``parallel: matrix:`` one, where GitLab sets them too); Kubernetes'
``JOB_COMPLETION_INDEX`` (0-based) with ``POP3MON_SHARD_TOTAL`` (Kubernetes does not export
the total; setting it is what opts an Indexed Job in). A bad value is a :class:`ShardError`
whose message is one line naming the option or variable and the fix.

The run identity: ``--run-id``/``POP3MON_RUN_ID``, else GitHub's
``GITHUB_RUN_ID``-``GITHUB_RUN_ATTEMPT``, else GitLab's ``CI_PIPELINE_ID``, else none (the
reports generate one); all shards of one run share it. ``--vantage``/``POP3MON_VANTAGE``
names the place a run probes from. No pytest here: ``merge`` and the benchmark import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from ..engine.pacing import server_key
from .model import Targets

__all__ = [
    "RunIdentity",
    "Shard",
    "ShardError",
    "gitlab_nodes_ignored",
    "group_keys",
    "is_run_id",
    "is_vantage",
    "resolve_identity",
    "select_shard",
    "shard_of",
    "shard_servers",
]

#: (K, N): this run is shard K (1-based) of N.
Shard = tuple[int, int]

SHARD_ENV: Final = "POP3MON_SHARD"
SHARD_TOTAL_ENV: Final = "POP3MON_SHARD_TOTAL"
VANTAGE_ENV: Final = "POP3MON_VANTAGE"
RUN_ID_ENV: Final = "POP3MON_RUN_ID"
#: More shards than this is a typo, not a fleet (each shard is a CI job of its own).
MAX_SHARDS: Final = 10_000
_VANTAGE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
#: A run id names files and rows: no path separators, spaces or control characters.
_RUN_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}")
#: A shard number or total as written: ASCII digits only (``str.isdigit`` and ``\\d`` also
#: take superscripts and other scripts' digits, which ``int()`` refuses or reads as a
#: number nobody typed), and few of them, so ``int()`` never meets Python's limit on the
#: digits of a number (4300); MAX_SHARDS has five.
_DIGITS: Final = r"[0-9]{1,18}"
_NUMBER: Final = re.compile(_DIGITS)
_SHARD: Final = re.compile(rf"\s*({_DIGITS})\s*/\s*({_DIGITS})\s*", re.ASCII)
#: How GitLab names the jobs of ``parallel: N``: ``<name> K/N``.
_PARALLEL_JOB: Final = re.compile(rf" ({_DIGITS})/({_DIGITS})\Z")
#: A value longer than this is shortened where a message shows it, so the message stays a
#: line one can read.
_SHOWN_MAX: Final = 40


class ShardError(ValueError):
    """A bad ``--shard``/``--vantage``/``--run-id`` value or environment variable: one
    line naming it and the fix."""


def is_vantage(name: str) -> bool:
    """Whether ``name`` is a valid vantage name (also checked when ``merge`` loads one)."""
    return _VANTAGE.fullmatch(name) is not None


def is_run_id(value: str) -> bool:
    """Whether ``value`` is a run id as ``--run-id`` takes one (also checked when
    ``merge`` loads one: it names files and reaches the terminal)."""
    return _RUN_ID.fullmatch(value) is not None


def shard_of(group_key: str, total: int) -> int:
    """The shard (1-based, of ``total``) of the server group whose smallest server name
    is ``group_key``: ``1 + sha256(name) mod total``, the same in every process."""
    digest = hashlib.sha256(group_key.encode("utf-8")).hexdigest()
    return 1 + int(digest, 16) % total


def group_keys(targets: Targets) -> dict[str, str]:
    """Every server of ``targets`` (of a connection type or a host check) → its group's
    key, the smallest server name among the servers linked with it: by ``depends_on``, by
    logging in to the same host (pacing's :func:`~pop3mon.engine.pacing.server_key`: the
    pinned address, else the host) or by a round trip's ``via``."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        parent.setdefault(name, name)
        while parent[name] != name:
            parent[name] = parent[parent[name]]  # path halving
            name = parent[name]
        return name

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            # The smaller name is the root, so a root is its group's key.
            parent[max(ra, rb)] = min(ra, rb)

    # Login pacing takes turns per host (server_key), not per server entry: the entries of
    # one host's accounts, of its POP3 and SMTP logins, of its IPv4 and IPv6 sides must not
    # log in from two runners at once. Connection types that never log in are not paced.
    logins: dict[str, str] = {}
    by_id = {ct.id: ct for ct in targets.connections}
    for ct in targets.connections:
        find(ct.server)
        if ct.auth != "none" and ct.secret_source:
            first = logins.setdefault(server_key(ct.host, ct.address), ct.server)
            union(first, ct.server)
        # A round trip logs in to its via's server from this connection type's run (and
        # needs via's configuration there), so both servers are probed by one shard.
        via = by_id.get(ct.round_trip.via) if ct.round_trip is not None else None
        if via is not None:
            union(ct.server, via.server)
    for host in targets.hosts:
        find(host.name)
        for dep in host.depends_on:
            union(host.name, dep)
    return {name: find(name) for name in sorted(parent)}


def shard_servers(targets: Targets, total: int) -> dict[str, int]:
    """Every server of ``targets`` → the shard (1-based, of ``total``) that probes it."""
    return {name: shard_of(key, total) for name, key in group_keys(targets).items()}


def select_shard(targets: Targets, shard: Shard) -> Targets:
    """``targets`` narrowed to the connection types, host and coverage checks of shard ``shard``.

    The path and sha256 stay the file's (shards of one file are told apart from shards of
    another by them); notify and history settings stay as they are.
    """
    index, total = shard
    mine = {name for name, k in shard_servers(targets, total).items() if k == index}
    return dataclasses.replace(
        targets,
        connections=tuple(c for c in targets.connections if c.server in mine),
        hosts=tuple(h for h in targets.hosts if h.name in mine),
        # A coverage check still compares with every connection type of the file
        # (Coverage.monitored), so a port monitored by another shard is not "unmonitored".
        coverage=tuple(c for c in targets.coverage if c.name in mine),
        # What the shards cover between them: a merge checks that each id is in one shard
        # (shards split by different pop3mon builds may leave one out).
        file_ids=targets.all_ids,
    )


def _show(value: str) -> str:
    """``value`` as a message shows it: shortened when long (a pasted blob, a runaway
    number), with its length, so the message stays one readable line."""
    if len(value) <= _SHOWN_MAX:
        return value
    return f"{value[: _SHOWN_MAX - 8]}… ({len(value)} characters)"


def _parse_shard(text: str, name: str, example: str) -> Shard:
    """``K/N`` from option or variable ``name`` (``--shard`` or ``POP3MON_SHARD``)."""
    shown = f"{name}={_show(text)}"
    match = _SHARD.fullmatch(text.strip())
    if match is None:
        raise ShardError(
            f"pop3mon: {shown}: not K/N (K and N whole numbers, digits 0-9) — give this "
            f"run's shard and the total, e.g. {example}"
        )
    index, total = int(match[1]), int(match[2])
    return _checked(index, total, shown, example)


def _checked(index: int, total: int, shown: str, example: str) -> Shard:
    if not 1 <= total <= MAX_SHARDS:
        raise ShardError(
            f"pop3mon: {shown}: the number of shards must be between 1 and {MAX_SHARDS}, "
            f"e.g. {example}"
        )
    if not 1 <= index <= total:
        raise ShardError(
            f"pop3mon: {shown}: the shard must be between 1 and {total} (it counts from 1), "
            f"e.g. {example}"
        )
    return index, total


def _int(environ: Mapping[str, str], name: str, fix: str) -> int:
    """Variable ``name`` as a whole number (digits 0-9, see ``_DIGITS``), else a
    :class:`ShardError` naming it and ``fix``."""
    raw = environ[name].strip()
    if not _NUMBER.fullmatch(raw):
        raise ShardError(
            f"pop3mon: {name}={_show(environ[name])}: not a whole number (digits 0-9) — {fix}"
        )
    return int(raw)


def _shard(option: str | None, environ: Mapping[str, str]) -> tuple[Shard | None, str]:
    """This run's shard and where it came from ("" when unsharded)."""
    if option is not None:
        return _parse_shard(option, "--shard", "--shard=2/10"), "--shard"
    if environ.get(SHARD_ENV, "").strip():
        return _parse_shard(environ[SHARD_ENV], SHARD_ENV, f"{SHARD_ENV}=2/10"), SHARD_ENV
    if _gitlab_parallel(environ):
        # Both are short runs of digits 0-9 here: the job name's K/N (_DIGITS) matched them.
        index, total = int(environ["CI_NODE_INDEX"]), int(environ["CI_NODE_TOTAL"])
        shown = f"CI_NODE_INDEX={index} CI_NODE_TOTAL={total}"
        return _checked(index, total, shown, "parallel: 10"), "CI_NODE_INDEX"
    if environ.get(SHARD_TOTAL_ENV, "").strip():
        fix = (
            "in a Kubernetes Indexed Job (completionMode: Indexed) JOB_COMPLETION_INDEX is "
            f"set; elsewhere use {SHARD_ENV}=K/N"
        )
        if not environ.get("JOB_COMPLETION_INDEX", "").strip():
            raise ShardError(
                f"pop3mon: {SHARD_TOTAL_ENV} is set but JOB_COMPLETION_INDEX is not — {fix}"
            )
        index = _int(environ, "JOB_COMPLETION_INDEX", fix) + 1
        total = _int(environ, SHARD_TOTAL_ENV, "set it to the Job's completions, e.g. 10")
        shown = f"JOB_COMPLETION_INDEX={index - 1} {SHARD_TOTAL_ENV}={total}"
        return _checked(index, total, shown, "completions: 10 and POP3MON_SHARD_TOTAL=10"), (
            "JOB_COMPLETION_INDEX"
        )
    return None, ""


def _gitlab_parallel(environ: Mapping[str, str]) -> bool:
    """Whether CI_NODE_INDEX/CI_NODE_TOTAL come from a plain ``parallel: N`` job.

    GitLab sets them in ``parallel: matrix:`` jobs too (one job per value, e.g. per
    vantage), which must each probe the whole file. It names a ``parallel: N`` job
    ``<name> K/N`` and a matrix job ``<name>: [value, ...]``, so only a job name ending in
    the same K/N as the variables makes them a shard.
    """
    named = _PARALLEL_JOB.search(environ.get("CI_JOB_NAME", ""))
    node = (environ.get("CI_NODE_INDEX", "").strip(), environ.get("CI_NODE_TOTAL", "").strip())
    return named is not None and (named[1], named[2]) == node


def gitlab_nodes_ignored(environ: Mapping[str, str], identity: RunIdentity) -> str:
    """One line saying CI_NODE_INDEX/CI_NODE_TOTAL were set but not taken as this run's
    shard (a ``parallel: matrix:`` job, or no GitLab job name), "" otherwise."""
    if identity.shard_source or not environ.get("CI_NODE_INDEX", "").strip():
        return ""
    if _gitlab_parallel(environ):
        return ""
    return (
        f"pop3mon: CI_NODE_INDEX={_show(environ['CI_NODE_INDEX'].strip())} ignored: job "
        f"{_show(environ.get('CI_JOB_NAME', '(CI_JOB_NAME unset)'))!r} is not a parallel: N job "
        "(a parallel: matrix: job probes the whole file); shard with --shard=K/N"
    )


def _vantage(option: str | None, environ: Mapping[str, str]) -> str | None:
    name, value = "--vantage", option
    if value is None:
        name, value = VANTAGE_ENV, environ.get(VANTAGE_ENV) or None
    if value is None:
        return None
    if not is_vantage(value):
        raise ShardError(
            f"pop3mon: {name}={_show(value)}: a vantage name is 1-63 letters, digits, '.', '_' or "
            f"'-', starting with a letter or digit, e.g. {name}=eu-west"
        )
    return value


def _run_id(option: str | None, environ: Mapping[str, str]) -> str | None:
    candidates: Iterable[tuple[str, str | None]] = (
        ("--run-id", option),
        (RUN_ID_ENV, environ.get(RUN_ID_ENV) or None),
    )
    for name, value in candidates:
        if value is None:
            continue
        if not _RUN_ID.fullmatch(value):
            raise ShardError(
                f"pop3mon: {name}={_show(value)}: a run id is 1-128 letters, digits, '.', '_', "
                f"':', '+' or '-', starting with a letter or digit, e.g. {name}=nightly-2024-06-01"
            )
        return value
    if environ.get("GITHUB_RUN_ID"):
        attempt = environ.get("GITHUB_RUN_ATTEMPT") or "1"
        value = f"{environ['GITHUB_RUN_ID']}-{attempt}"
    elif environ.get("CI_PIPELINE_ID"):
        value = environ["CI_PIPELINE_ID"]
    else:
        return None
    # CI engines set these; should one ever hold something odd, it is not a usage error
    # of the user's, so it is not the run id either.
    return value if _RUN_ID.fullmatch(value) else None


@dataclass(frozen=True)
class RunIdentity:
    """Who this run is among others: its run id (``None``: none given, the reports
    generate one), its shard (``None``: unsharded) and vantage (``None``: not named)."""

    run_id: str | None = None
    shard: Shard | None = None
    vantage: str | None = None
    #: Where the shard came from: "--shard", "POP3MON_SHARD", "CI_NODE_INDEX",
    #: "JOB_COMPLETION_INDEX", or "" when unsharded.
    shard_source: str = ""


def resolve_identity(
    environ: Mapping[str, str],
    *,
    shard: str | None = None,
    vantage: str | None = None,
    run_id: str | None = None,
) -> RunIdentity:
    """This run's identity from the options given (``None``: not given) and the
    environment; raises :class:`ShardError` on a bad value."""
    found, source = _shard(shard, environ)
    return RunIdentity(
        run_id=_run_id(run_id, environ),
        shard=found,
        vantage=_vantage(vantage, environ),
        shard_source=source,
    )
