# ruff: noqa: E501
# (Golden error messages are single lines by design; wrapping them would hide what users see.)
"""Self-tests for plugins/pop3mon/config.py: golden bad configs and good-config behaviour.

Every file in tests/bad_configs/ must appear in GOLDEN with its exact, complete error output
(file name as shown when loading from that directory, line, field path, message, hint).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import pytest
from pop3mon.config import (
    ENV_VAR,
    ConfigError,
    ConnectionType,
    LatencyThresholds,
    Targets,
    load_targets,
    targets_path,
)
from pop3mon.config.wording import _suggest
from pop3mon.engine.mechanisms import AUTH_SETTINGS, MECHANISMS
from pop3mon.engine.result import ProbeSpec
from pop3mon.secrets import Secret

from pop3mon_lab.certs import LabCerts

ROOT = Path(__file__).resolve().parents[1]
BAD = Path(__file__).resolve().parent / "bad_configs"

# Strings planted in bad configs that must never be echoed back.
PLANTED_SECRETS = ("hunter2", "not-echoed", "not echoed", "ya29")

GOLDEN: dict[str, list[str]] = {
    "account_without_reference": [
        "account_without_reference.yaml:4: defaults.account: no secret reference for auth 'scram-sha-256' — add password_env: VAR_NAME or password_file: PATH",
    ],
    "address_family_bad": [
        "address_family_bad.yaml:7: servers[0].address_family: 'IPv6' is not one of auto, ipv4, ipv6 — did you mean 'ipv6'?",
        "address_family_bad.yaml:11: servers[0].connections[1].address_family: 4 is not one of auto, ipv4, ipv6 — did you mean 'ipv4'?",
    ],
    "address_family_mismatch": [
        "address_family_mismatch.yaml:9: servers[0].address: 2001:db8::7 is an IPv6 address, but address_family ipv4 is inherited from defaults.address_family (line 4) — use an IPv4 address, or set address_family: ipv6 or auto on this server",
        "address_family_mismatch.yaml:19: servers[1].connections[0].address_family: ipv6 cannot reach the IPv4 address 192.0.2.8 given as servers[1].host (line 16) — set address_family: ipv4 or auto, or use an IPv6 address there",
    ],
    "address_not_ip": [
        "address_not_ip.yaml:6: servers[0].address: 'mail1-backend.example' is not an IP address — address pins the IP to connect to; put names under host",
    ],
    "auth_without_account": [
        "auth_without_account.yaml:8: servers[0].connections[0].auth: auth 'plain' needs an account — add account: {username: NAME, password_env: VAR_NAME} here, on the server or in defaults, or set auth: none",
        "auth_without_account.yaml:9: servers[0].connections[1]: auth 'auto' (the default) needs an account — add account: {username: NAME, password_env: VAR_NAME} here, on the server or in defaults, or set auth: none",
    ],
    "auto_with_token": [
        "auto_with_token.yaml:8: servers[0].connections[0]: auth 'auto' (the default) sends a password, but the account (line 6) gives token_file — set auth: xoauth2 or auth: oauthbearer",
    ],
    "auth_other_family": [
        "auth_other_family.yaml:9: servers[0].connections[0].auth: 'cram-sha-512' is not one of auto, none, user, apop, plain, login, cram-md5, cram-sha1, cram-sha256, scram-sha-1, scram-sha-256, xoauth2, oauthbearer — did you mean 'cram-sha1'?",
        "auth_other_family.yaml:11: servers[0].connections[1].auth: 'scram-md5' is not one of auto, none, user, apop, plain, login, cram-md5, cram-sha1, cram-sha256, scram-sha-1, scram-sha-256, xoauth2, oauthbearer — did you mean 'scram-sha-256'?",
    ],
    "bad_auth": [
        "bad_auth.yaml:9: servers[0].connections[0].auth: 'cram_md5' is not one of auto, none, user, apop, plain, login, cram-md5, cram-sha1, cram-sha256, scram-sha-1, scram-sha-256, xoauth2, oauthbearer — did you mean 'cram-md5'?",
    ],
    "bad_security": [
        "bad_security.yaml:11: servers[0].connections[1].security: 'startls' is not one of none, starttls-optional, starttls, tls — did you mean 'starttls'?",
    ],
    "bad_server_name": [
        "bad_server_name.yaml:4: servers[0].name: 'mail 1' is not a valid server name — use letters, digits, '.', '_' and '-' (it becomes part of every connection id)",
    ],
    "bad_tag": [
        "bad_tag.yaml:4: defaults.tags[1]: 'eu west' is not a valid tag — use letters, digits, '_' and '-', starting with a letter (tags become pytest markers for -m)",
    ],
    "ca_file_missing": [
        "ca_file_missing.yaml:4: defaults.ca_file: 'no-such-ca.pem' does not exist (relative paths start at the directory of the targets file)",
    ],
    "cert_days_inherited": [
        "cert_days_inherited.yaml:7: servers[0].cert.warn_days: warn_days (5) must be greater than crit_days (7) inherited from the built-in default",
    ],
    "cert_days_inverted": [
        "cert_days_inverted.yaml:4: defaults.cert: warn_days (7) must be greater than crit_days (21) — warn comes first, while more days are left",
    ],
    "connections_empty": [
        "connections_empty.yaml:6: servers[0].connections: is empty — list at least one connection type (port, security, auth), or give tcp_ports: for a server that is only a dependency of others",
    ],
    "depends_on_cycle": [
        "depends_on_cycle.yaml:16: servers[2].depends_on[0]: dependency cycle gw → mail1 → mail2 → gw — a server cannot be reached through itself; remove one of these depends_on entries",
    ],
    "depends_on_unknown": [
        "depends_on_unknown.yaml:10: servers[1].depends_on[0]: unknown server 'gatway' — depends_on takes the name: of another server in this file — did you mean 'gateway'?",
        "depends_on_unknown.yaml:10: servers[1].depends_on[1]: server 'mail1' cannot depend on itself — name the gateway or resolver it is reached through",
    ],
    "duplicate_derived_id": [
        "duplicate_derived_id.yaml:10: servers[0].connections[1]: duplicate connection id 'mail1:995-tls' (built from server name, port and security; first at line 8) — add id: to tell them apart",
    ],
    "duplicate_explicit_id": [
        "duplicate_explicit_id.yaml:15: servers[1].connections[0].id: duplicate connection id 'primary' (first at line 9) — ids must be unique",
    ],
    "duplicate_server_name": [
        "duplicate_server_name.yaml:9: servers[1].name: duplicate server name 'mail1' (first at line 4) — server names must be unique",
    ],
    "duplicate_yaml_key": [
        "duplicate_yaml_key.yaml:10: servers[0].connections[0].timeout: duplicate key (first at line 9)",
    ],
    "empty_file": [
        "empty_file.yaml:1: the file is empty — it needs version: 1 and a servers: list",
    ],
    "env_name_is_a_password": [
        "env_name_is_a_password.yaml:6: servers[0].account.password_env: is not an environment variable name (letters, digits and '_', not starting with a digit) — if this is the secret itself, move it into a variable",
    ],
    "env_name_with_dollar": [
        "env_name_with_dollar.yaml:6: servers[0].account.password_env: write the variable name without '$' or braces, e.g. POP3_PASSWORD",
    ],
    "host_with_scheme": [
        "host_with_scheme.yaml:5: servers[0].host: 'pop3s://mail1.example' is not a host name — write only the name, without a scheme",
    ],
    "latency_half_pair": [
        "latency_half_pair.yaml:10: servers[0].connections[0].latency.greeting: crit is not set here or inherited — a threshold needs both warn and crit",
    ],
    "latency_unknown_phase": [
        "latency_unknown_phase.yaml:10: servers[0].connections[0].latency.conect: unknown phase — phases are dns, ping, connect, tls, greeting, capa, ehlo, stls, starttls, tls_handshake, capa_tls, ehlo_tls, relay, auth, stat, quit, total — did you mean 'connect'?",
    ],
    "latency_warn_ge_crit": [
        "latency_warn_ge_crit.yaml:5: defaults.latency.connect: warn (3) must be less than crit (2) — warn is the smaller, earlier alarm",
    ],
    "latency_warn_ge_inherited_crit": [
        "latency_warn_ge_inherited_crit.yaml:13: servers[0].connections[0].latency.total.warn: warn (6) must be less than crit (5) inherited from defaults.latency.total.crit (line 5)",
    ],
    "literal_password": [
        "literal_password.yaml:10: servers[0].connections[0].account.password: literal passwords are not allowed in the targets file — put the password in an environment variable and write password_env: VAR_NAME, or in a file only the monitor can read and write password_file: PATH",
    ],
    "literal_token_on_connection": [
        "literal_token_on_connection.yaml:10: servers[0].connections[0].token: literal tokens are not allowed in the targets file — put the token in an environment variable and write token_env: VAR_NAME, or in a file only the monitor can read and write token_file: PATH under account:",
    ],
    "mailbox_count_inverted": [
        "mailbox_count_inverted.yaml:10: servers[0].connections[0].mailbox.count: warn (500) must be less than crit (100)",
    ],
    "mailbox_size_bad_unit": [
        "mailbox_size_bad_unit.yaml:10: servers[0].connections[0].mailbox.size.warn: '1G' is not a size — write whole bytes or a number with B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 5GB",
    ],
    "many_problems_sorted": [
        "many_problems_sorted.yaml:4: defaults.timout: unknown key — did you mean 'timeout'?",
        "many_problems_sorted.yaml:5: defaults.verify_tls: must be true or false, not 'maybe'",
        "many_problems_sorted.yaml:10: servers[0].connections[0].security: 'TLS' is not one of none, starttls-optional, starttls, tls — did you mean 'tls'?",
        "many_problems_sorted.yaml:12: servers[0].connections[0].port: 0 is out of range — a port is between 1 and 65535",
    ],
    "min_tls_version_bad": [
        "min_tls_version_bad.yaml:9: servers[0].connections[0].min_tls_version: '1.3' is not one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3 — did you mean 'TLSv1.3'?",
        "min_tls_version_bad.yaml:11: servers[0].connections[1].min_tls_version: 'SSLv3' is not one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3",
    ],
    "missing_security": [
        "missing_security.yaml:8: servers[0].connections[0].security: required key is missing — one of none, starttls-optional, starttls, tls",
    ],
    "missing_servers": [
        "missing_servers.yaml:2: servers: required key is missing — list the servers to monitor, each with name, host and connections",
    ],
    "not_utf8": [
        "not_utf8.yaml:3: not UTF-8 text — save the file as UTF-8",
    ],
    "only_comments": [
        "only_comments.yaml:1: the file is empty — it needs version: 1 and a servers: list",
    ],
    "ping_string": [
        "ping_string.yaml:9: servers[0].connections[0].ping: must be true or false, not 'no'",
    ],
    "port_bool": [
        "port_bool.yaml:9: servers[0].connections[0].port: must be a whole number, not true",
    ],
    "port_in_defaults": [
        "port_in_defaults.yaml:4: defaults.port: not allowed here — it belongs on each entry under connections:",
    ],
    "port_out_of_range": [
        "port_out_of_range.yaml:9: servers[0].connections[0].port: 99500 is out of range — a port is between 1 and 65535",
    ],
    "port_string": [
        "port_string.yaml:9: servers[0].connections[0].port: must be a whole number, not '995'",
    ],
    "server_missing_name_host": [
        "server_missing_name_host.yaml:4: servers[0].host: required key is missing — the DNS name to connect to, also used for SNI and the certificate check",
        "server_missing_name_host.yaml:4: servers[0].name: required key is missing — give the server a short name; it starts every connection id",
    ],
    "recursive_alias": [
        "recursive_alias.yaml:6: servers[0].connections: recursive YAML alias",
    ],
    "servers_empty": [
        "servers_empty.yaml:3: servers: is empty — list at least one server with name, host and connections",
    ],
    "servers_null": [
        "servers_null.yaml:3: servers: must be a list, not null",
    ],
    "stat_bounds_inverted": [
        "stat_bounds_inverted.yaml:9: servers[0].connections[0].mailbox: stat_min (10) must not be greater than stat_max (2)",
    ],
    "syntax_tab_indent": [
        "syntax_tab_indent.yaml:4: YAML syntax error: found character '\\t' that cannot start any token (while scanning for the next token) — YAML does not allow tabs; indent with spaces",
    ],
    "syntax_two_documents": [
        "syntax_two_documents.yaml:3: YAML syntax error: found another document (expected a single document in the stream at line 2)",
    ],
    "syntax_unclosed_flow": [
        "syntax_unclosed_flow.yaml:5: YAML syntax error: expected ',' or '}', but got ':' (while parsing a flow mapping at line 4)",
    ],
    "timeout_with_unit": [
        "timeout_with_unit.yaml:4: defaults.timeout: must be a number, not '10s'",
    ],
    "timeout_zero": [
        "timeout_zero.yaml:9: servers[0].connections[0].timeout: must be greater than 0, not 0",
    ],
    "timeout_not_finite": [
        "timeout_not_finite.yaml:4: defaults.timeout: must be a finite number, not inf",
    ],
    "top_level_list": [
        "top_level_list.yaml:2: the top level must be a mapping with version, defaults and servers, not a list",
    ],
    "two_secret_refs": [
        "two_secret_refs.yaml:6: servers[0].account: gives password_env and password_file — use exactly one of password_env, password_file, token_env, token_file",
    ],
    "unknown_server_key": [
        "unknown_server_key.yaml:5: servers[0].hostname: unknown key — did you mean 'host'?",
    ],
    "unknown_top_key": [
        "unknown_top_key.yaml:3: server: unknown key — did you mean 'servers'?",
    ],
    "version_two": [
        "version_two.yaml:2: version: unsupported version 2 — this pop3mon reads version: 1",
    ],
    "xoauth2_with_password": [
        "xoauth2_with_password.yaml:9: servers[0].connections[0].auth: auth 'xoauth2' needs an OAuth token, but the account (line 6) gives password_env — use token_env or token_file",
    ],
    "yaml_python_tag": [
        "yaml_python_tag.yaml:4: servers[0]: unsupported YAML tag !!python/object:os.system",
    ],
}


# ---------------------------------------------------------------------------------------
# Golden bad configs
# ---------------------------------------------------------------------------------------


def test_golden_table_matches_directory() -> None:
    on_disk = {p.stem for p in BAD.glob("*.yaml")}
    assert on_disk == set(GOLDEN)
    assert len(GOLDEN) >= 30


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_bad_config(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # From inside the directory the file is shown by its bare name, which keeps the
    # expected lines independent of where the repository is checked out.
    monkeypatch.chdir(BAD)
    with pytest.raises(ConfigError) as info:
        load_targets(BAD / f"{name}.yaml")
    err = info.value
    assert err.problems == GOLDEN[name]
    assert str(err) == "\n".join(GOLDEN[name])
    for line in err.problems:
        assert "\n" not in line and "Traceback" not in line and "pydantic" not in line
        assert not any(secret in line for secret in PLANTED_SECRETS)
    # Problems come ordered by line number.
    numbers = [int(line.split(":")[1]) for line in err.problems]
    assert numbers == sorted(numbers)


def _typos(word: str) -> set[str]:
    """Misspellings of ``word`` past its leading letters: a character dropped, doubled or
    changed, a hyphen added, dropped or turned into '_', a digit changed."""
    head = len(re.match(r"[a-z]+", word).group(0))  # type: ignore[union-attr]
    out = {word.replace("-", "_"), word.replace("-", ""), word.upper()}
    for i in range(head, len(word)):
        out |= {word[:i] + word[i + 1 :], word[:i] + word[i] * 2 + word[i + 1 :]}
        out |= {word[:i] + "-" + word[i:], word[:i] + "x" + word[i + 1 :]}
        if word[i].isdigit():
            out.add(word[:i] + str((int(word[i]) + 1) % 10) + word[i + 1 :])
    return out - set(AUTH_SETTINGS)


@pytest.mark.parametrize("mechanism", sorted(MECHANISMS))
def test_auth_hint_stays_in_the_mechanism_family(mechanism: str) -> None:
    """A misspelt mechanism is never "corrected" to another family: cram-* to scram-*,
    scram-* to cram-*, xoauth2 to oauthbearer (the issue: cram-sha256 got scram-sha-256)."""
    family = re.match(r"[a-z]+", mechanism).group(0)  # type: ignore[union-attr]
    for typo in sorted(_typos(mechanism)):
        hint = _suggest(typo, AUTH_SETTINGS)
        if hint:
            suggested = hint.split("'")[1]
            assert suggested.startswith(family), f"{typo!r} got {hint!r}"
            assert not suggested.startswith("s" + family), f"{typo!r} got {hint!r}"


def test_every_mechanism_is_accepted(tmp_path: Path) -> None:
    for mechanism, spec in MECHANISMS.items():
        path = write(
            tmp_path,
            "version: 1\nservers:\n  - name: m\n    host: m.example\n"
            f"    account: {{username: u, {spec.secret}_env: PW}}\n"
            f"    connections:\n      - {{security: tls, auth: {mechanism}}}\n",
        )
        (ct,) = load_targets(path).connections
        assert ct.auth == mechanism


def test_bad_config_outside_cwd_shows_path_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = BAD / "bad_security.yaml"
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    assert info.value.problems[0].startswith(f"{path}:11: servers[0].connections[1].security:")


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_targets("nope.yaml")
    assert info.value.problems == [
        "nope.yaml: file not found — pass --targets PATH or set POP3MON_TARGETS"
    ]


def test_config_error_pickles() -> None:
    err = ConfigError(["a.yaml:1: x", "a.yaml:2: y"])
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == err.problems
    assert str(again) == "a.yaml:1: x\na.yaml:2: y"


# ---------------------------------------------------------------------------------------
# Good configs
# ---------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "targets.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


CASCADE = """\
version: 1
defaults:
  timeout: 8
  ping: true
  cert: {warn_days: 30, crit_days: 10}
  latency:
    connect: {warn: 0.5, crit: 2}
    greeting: {warn: 1, crit: 3}
  mailbox:
    count: {warn: 100, crit: 200}
    size: {warn: 1 KiB, crit: 2MB}
  tags: [prod, eu]
  account: {username: fleet, password_env: FLEET_PW}
servers:
  - name: mail1
    host: mail1.example
    timeout: 6
    cert: {warn_days: 14}
    tags: [eu, big]
    latency:
      greeting: null
    connections:
      - security: tls
      - security: starttls
        timeout: 4
        ping: false
        latency:
          connect: {crit: 1}
          total: {warn: 1}
        mailbox:
          count: null
          stat_min: 1
        tags: [canary]
        account: {username: other, password_file: pw.txt}
  - name: mail2
    host: 192.0.2.7
    address: 2001:db8::7
    latency: null
    connections:
      - security: none
        auth: none
      - security: starttls-optional
        port: 1110
        id: mail2-legacy
        auth: user
"""


@pytest.fixture()
def cascade(tmp_path: Path) -> Targets:
    return load_targets(write(tmp_path, CASCADE))


def test_ids_sorted_and_readable(cascade: Targets) -> None:
    assert cascade.ids == (
        "mail1:110-starttls",
        "mail1:995-tls",
        "mail2-legacy",
        "mail2:110-none",
    )


def test_port_defaults_from_security(cascade: Targets) -> None:
    ports = {c.id: c.port for c in cascade.connections}
    assert ports == {
        "mail1:995-tls": 995,
        "mail1:110-starttls": 110,
        "mail2:110-none": 110,
        "mail2-legacy": 1110,
    }


def test_cascade_connection_over_server_over_defaults(cascade: Targets) -> None:
    tls = cascade.by_id("mail1:995-tls")
    stls = cascade.by_id("mail1:110-starttls")
    assert tls.timeout == 6.0 and stls.timeout == 4.0  # server, then connection
    assert tls.ping is True and stls.ping is False  # defaults, then connection
    assert (tls.cert_warn_days, tls.cert_crit_days) == (14, 10)  # halves from two levels
    # greeting removed on the server; total is built-in; connect from defaults.
    assert dict(tls.latency) == {"connect": (0.5, 2.0), "total": (2.0, 5.0)}
    # connect crit from the connection with warn from defaults; total warn from the
    # connection with the built-in crit.
    assert dict(stls.latency) == {"connect": (0.5, 1.0), "total": (1.0, 5.0)}
    assert tls.mailbox_count == (100, 200) and stls.mailbox_count is None
    assert tls.mailbox_size == (1024, 2_000_000)
    assert (stls.stat_min, stls.stat_max) == (1, None)
    assert tls.tags == ("prod", "eu", "big")
    assert stls.tags == ("prod", "eu", "big", "canary")
    assert (tls.username, tls.secret_kind, tls.secret_source) == (
        "fleet",
        "password",
        "env:FLEET_PW",
    )


def test_builtins_when_nothing_set(cascade: Targets) -> None:
    legacy = cascade.by_id("mail2-legacy")
    assert legacy.latency == LatencyThresholds({})  # latency: null on the server
    assert legacy.min_tls_version == "TLSv1.2"
    assert legacy.verify_tls is True and legacy.allow_cleartext is False
    assert legacy.ca_file is None and legacy.ping_timeout == 1.0
    assert legacy.collect_uidl is False
    assert legacy.address == "2001:db8::7" and legacy.host == "192.0.2.7"


def test_minimal_file_gets_builtins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "servers:\n  - name: m\n    host: m.example\n    connections:\n"
        "      - {security: tls, auth: none}\n",
    )
    (conn,) = load_targets(path).connections
    assert conn.id == "m:995-tls"
    assert conn.timeout == 10.0 and conn.ping is False
    assert (conn.cert_warn_days, conn.cert_crit_days) == (21, 7)
    assert dict(conn.latency) == {"total": (2.0, 5.0)}
    assert conn.mailbox_count is None and conn.mailbox_size is None
    assert conn.tags == () and conn.username is None and conn.secret_source == ""
    assert conn.line == 5


def test_line_points_at_connection(cascade: Targets) -> None:
    lines = {c.id: c.line for c in cascade.connections}
    assert lines == {
        "mail1:995-tls": 23,
        "mail1:110-starttls": 24,
        "mail2:110-none": 40,
        "mail2-legacy": 42,
    }


def test_paths_relative_to_targets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lab_certs: LabCerts
) -> None:
    (tmp_path / "conf").mkdir()
    # A real CA file: ca_file is loaded when the targets file is.
    (tmp_path / "conf" / "ca.pem").write_bytes(lab_certs.ca_file.read_bytes())
    text = CASCADE.replace("  tags: [prod, eu]\n", "  tags: [prod, eu]\n  ca_file: ca.pem\n")
    path = write(tmp_path / "conf", text)
    monkeypatch.chdir(tmp_path)  # somewhere else: paths must not depend on the cwd
    targets = load_targets(path)
    stls = targets.by_id("mail1:110-starttls")
    assert stls.ca_file == str(tmp_path / "conf" / "ca.pem")
    assert stls.secret_source == f"file:{tmp_path / 'conf' / 'pw.txt'}"
    assert targets.path == path.resolve()


def test_sha256_of_file_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, CASCADE)
    assert load_targets(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    text = """\
version: 1
x-common: &common {security: tls, auth: none, timeout: 3}
servers:
  - name: a
    host: a.example
    connections:
      - <<: *common
      - <<: *common
        security: starttls
"""
    # x-common is not a known key: anchors must live inside known structure.
    with pytest.raises(ConfigError):
        load_targets(write(tmp_path, text))
    text = text.replace("x-common: &common {security: tls, auth: none, timeout: 3}\n", "")
    text = text.replace(
        "      - <<: *common\n      - <<: *common",
        "      - &common {security: tls, auth: none, timeout: 3}\n      - <<: *common",
    )
    targets = load_targets(write(tmp_path, text))
    assert targets.ids == ("a:110-starttls", "a:995-tls")
    assert all(c.timeout == 3.0 and c.auth == "none" for c in targets.connections)


def test_loading_is_deterministic(tmp_path: Path) -> None:
    path = write(tmp_path, CASCADE)
    assert load_targets(path) == load_targets(path)


def test_connection_type_is_frozen_hashable_picklable(cascade: Targets) -> None:
    conn = cascade.by_id("mail1:995-tls")
    with pytest.raises(AttributeError):
        conn.port = 1  # type: ignore[misc]
    assert hash(conn) == hash(pickle.loads(pickle.dumps(conn)))
    assert pickle.loads(pickle.dumps(conn)) == conn
    assert isinstance(conn, ConnectionType)
    json.dumps(conn.to_dict())  # JSON-ready for reports
    assert conn.to_dict()["latency"]["total"] == [2.0, 5.0]


# ---------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------


def test_secret_from_env(cascade: Targets, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_PW", "fleet-secret-value")
    spec = cascade.by_id("mail1:995-tls").to_probe_spec()
    assert isinstance(spec, ProbeSpec)
    assert isinstance(spec.secret, Secret)
    assert spec.secret.reveal() == "fleet-secret-value"
    assert spec.secret.source == "env:FLEET_PW"
    assert spec.secret_problem == ""
    assert "fleet-secret-value" not in repr(spec)
    assert (spec.id, spec.host, spec.port, spec.security, spec.auth, spec.username) == (
        "mail1:995-tls",
        "mail1.example",
        995,
        "tls",
        "auto",
        "fleet",
    )
    assert (spec.timeout, spec.ping, spec.ca_file, spec.address) == (6.0, True, "", "")


def test_missing_env_is_not_a_load_error(cascade: Targets, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_PW", raising=False)
    spec = cascade.by_id("mail1:995-tls").to_probe_spec()
    assert spec.secret is None
    assert spec.secret_problem == "environment variable FLEET_PW is not set"


def test_empty_env(cascade: Targets) -> None:
    spec = cascade.by_id("mail1:995-tls").to_probe_spec({"FLEET_PW": ""})
    assert spec.secret is None
    assert spec.secret_problem == "environment variable FLEET_PW is empty"


def test_secret_from_file_strips_one_newline(tmp_path: Path) -> None:
    targets = load_targets(write(tmp_path, CASCADE))
    conn = targets.by_id("mail1:110-starttls")
    for content, expected in (
        (b"pw-from-file\n", "pw-from-file"),
        (b"pw-from-file\r\n", "pw-from-file"),
        (b"pw-from-file", "pw-from-file"),
    ):
        (tmp_path / "pw.txt").write_bytes(content)
        spec = conn.to_probe_spec({})
        assert spec.secret is not None and spec.secret_problem == ""
        assert spec.secret.reveal() == expected
        assert spec.secret.source == f"file:{tmp_path / 'pw.txt'}"


def test_secret_file_problems(tmp_path: Path) -> None:
    conn = load_targets(write(tmp_path, CASCADE)).by_id("mail1:110-starttls")
    pw = tmp_path / "pw.txt"
    spec = conn.to_probe_spec({})
    assert spec.secret is None
    assert spec.secret_problem == f"password file {pw} does not exist"
    pw.write_bytes(b"\n")
    assert conn.to_probe_spec({}).secret_problem == f"password file {pw} is empty"
    pw.write_bytes(b"\xff\xfe\n")
    assert conn.to_probe_spec({}).secret_problem == f"password file {pw} is not UTF-8 text"
    pw.unlink()
    pw.mkdir()
    assert conn.to_probe_spec({}).secret_problem == (
        f"password file {pw} is a directory, not a regular file"
    )


def test_token_reference(tmp_path: Path) -> None:
    text = """\
servers:
  - name: g
    host: pop.g.example
    connections:
      - security: tls
        auth: xoauth2
        account: {username: me@g.example, token_file: tok}
"""
    (conn,) = load_targets(write(tmp_path, text)).connections
    assert conn.secret_kind == "token"
    spec = conn.to_probe_spec({})
    assert spec.secret_problem == f"token file {tmp_path / 'tok'} does not exist"
    (tmp_path / "tok").write_text("ya29.token-value\n")
    spec = conn.to_probe_spec({})
    assert spec.secret is not None and spec.secret.reveal() == "ya29.token-value"
    assert spec.auth == "xoauth2"


def test_auth_none_needs_no_secret(cascade: Targets) -> None:
    spec = cascade.by_id("mail2:110-none").to_probe_spec({})
    assert spec.secret is None and spec.secret_problem == ""
    # The fleet account from defaults is inherited but never resolved for auth: none.
    assert cascade.by_id("mail2:110-none").secret_source == ""


def test_secret_value_never_stored(cascade: Targets, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_PW", "do-not-store-me")
    conn = cascade.by_id("mail1:995-tls")
    conn.to_probe_spec()
    assert "do-not-store-me" not in repr(conn)
    assert "do-not-store-me" not in json.dumps(conn.to_dict())


# ---------------------------------------------------------------------------------------
# The documented example and the file lookup
# ---------------------------------------------------------------------------------------


def test_root_targets_yaml_loads() -> None:
    targets = load_targets(ROOT / "targets.yaml")
    assert len(targets.connections) >= 5
    assert len(set(targets.ids)) == len(targets.ids)
    for conn in targets.connections:
        assert conn.host.endswith((".example", ".invalid"))
        # The example must never make pytest send packets anywhere by accident.
        assert conn.address is None
        spec = conn.to_probe_spec({})
        # No secrets in the environment: loading still works, auth tiers will fail.
        assert spec.secret is None
        assert (spec.secret_problem == "") == (conn.auth == "none")
    mechanisms = {c.auth for c in targets.connections}
    securities = {c.security for c in targets.connections}
    assert securities == {"none", "starttls-optional", "starttls", "tls"}
    assert {"auto", "none", "xoauth2", "oauthbearer", "apop"} <= mechanisms


def test_root_targets_yaml_mentions_every_option() -> None:
    # Every key the schema accepts appears at least once in the documented example.
    from pop3mon import config
    from pop3mon.config import schema

    text = (ROOT / "targets.yaml").read_text()
    models = (
        schema._File,
        schema._Settings,
        schema._Server,
        schema._Connection,
        schema._Account,
        schema._Cert,
        schema._Drift,
        schema._Mailbox,
        schema._SecondsPair,
        schema._Notify,
        schema._NotifyTarget,
        schema._Coverage,
    )
    for model in models:
        for key in model.model_fields:
            assert f"{key}:" in text, f"{model.__name__}.{key} is not documented"
    for phase in config.LATENCY_PHASES:
        assert phase in text, phase


def test_targets_path_precedence(tmp_path: Path) -> None:
    assert targets_path("x.yaml", tmp_path, {ENV_VAR: "y.yaml"}) == Path("x.yaml")
    assert targets_path(None, tmp_path, {ENV_VAR: "y.yaml"}) == Path("y.yaml")
    assert targets_path(None, tmp_path, {}) == tmp_path / "targets.yaml"


def test_env_var_name_constant() -> None:
    assert ENV_VAR == "POP3MON_TARGETS"
    assert os.environ.get("POP3MON_TARGETS_UNUSED") is None


def _shape(node: object, seen: frozenset[int] = frozenset()) -> object:
    """A composed node tree as plain data with every node's tag and line (a recursive
    alias as ``"cycle"``)."""
    import yaml

    assert isinstance(node, yaml.Node)
    if id(node) in seen:
        return "cycle"
    inner = seen | {id(node)}
    if isinstance(node, yaml.ScalarNode):
        return (node.tag, node.start_mark.line, node.value)
    if isinstance(node, yaml.SequenceNode):
        return (node.tag, node.start_mark.line, [_shape(i, inner) for i in node.value])
    assert isinstance(node, yaml.MappingNode)
    pairs = [(_shape(k, inner), _shape(v, inner)) for k, v in node.value]
    return (node.tag, node.start_mark.line, pairs)


def test_fast_yaml_path_composes_what_the_careful_one_does() -> None:
    """libyaml composes the targets file (9x faster than PyYAML's Python parser) whenever
    it can; for every file here, good or bad, it gives the same nodes, tags and lines as the
    pure-Python loader, or steps aside so that one words the problem."""
    import yaml
    from pop3mon.config import yaml_lines

    assert yaml_lines._CLoader is not None, "PyYAML without libyaml: the fast path is off"
    repo = Path(__file__).resolve().parents[1]
    files = [repo / "targets.yaml", *sorted((repo / "tests" / "bad_configs").glob("*.yaml"))]
    fast_used = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        fast = yaml_lines._compose_fast(text)
        if fast is None:
            continue
        fast_used += 1
        careful = yaml.compose(text, Loader=yaml.SafeLoader)
        assert _shape(fast) == _shape(careful), path.name
    assert fast_used >= len(files) // 2
    deep = "a: " + "[" * 40 + "]" * 40 + "\n"
    assert yaml_lines._compose_fast(deep) is None
    assert yaml_lines._compose_fast("a: [1,\n") is None
