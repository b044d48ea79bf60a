# ruff: noqa: E501
# (Expected error messages are single lines by design; wrapping them would hide what users see.)
"""Hostile targets files: whatever the bytes, loading ends in one line per problem.

Every case here once ended in a traceback (RecursionError, ValueError from Python's int/str
limit, RuntimeError from ``~user``, OverflowError, UnicodeEncodeError while writing the
reports), a hang (a FIFO) or minutes of parsing (a 50 MB file). Each must be a
:class:`ConfigError` whose lines are ``FILE[:LINE]: field: what — fix``, printable and
encodable as UTF-8. The files are built here rather than kept in ``bad_configs/`` because
most are large or binary by design.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pop3mon.config import ConfigError, Targets, load_targets
from pop3mon.config.files import MAX_FILE_BYTES

from pop3mon_lab.certs import LabCerts

ROOT = Path(__file__).resolve().parents[1]

HEAD = "version: 1\nservers:\n  - name: m\n    host: m.example\n    connections:\n"
ONE = HEAD + "      - {security: tls, auth: none}\n"


def conn(extra: str) -> str:
    """A file with one connection whose mapping also holds ``extra`` (indented lines)."""
    return HEAD + "      - security: tls\n        auth: none\n" + extra


def bomb(levels: int, fan: int, leaf: str) -> str:
    """A "billion laughs" document: each level refers to the one below ``fan`` times."""
    lines = [f"l0: &l0 {leaf}"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int, fan: int) -> str:
    """Merge keys of empty mappings: no value is produced, only work."""
    lines = ["version: 1", "x0: &x0 {}"]
    for i in range(1, levels):
        lines.append(f"x{i}: &x{i} {{<<: [{', '.join([f'*x{i - 1}'] * fan)}]}}")
    return "\n".join(lines) + "\nservers: []\n"


def merge_chain(levels: int) -> str:
    """Each mapping merges the previous one: deep recursion with a shallow path."""
    lines = ["version: 1", "c0: &c0 {a: 1}"]
    lines += [f"c{i}: &c{i} {{<<: *c{i - 1}}}" for i in range(1, levels)]
    return "\n".join(lines) + "\nservers: []\n"


def alias_chain(levels: int) -> str:
    """Each sequence holds the previous one: a shallow text, a deep value."""
    lines = ["version: 1", "a0: &a0 [1]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, levels)]
    return "\n".join(lines) + "\nservers: []\n"


#: name -> (file text, the exact problem lines). The file is ``<name>.yaml`` in the cwd.
CASES: dict[str, tuple[str, list[str]]] = {
    "surrogate_username": (
        ONE.replace(
            "auth: none}", 'auth: plain, account: {username: "mon\\udc80", password_env: PW}}'
        ),
        [
            "surrogate_username.yaml:6: servers[0].connections[0].account.username: the text contains '\\udc80', a lone UTF-16 surrogate from a \\u escape, which is not a character — write the character itself, or one \\U escape of 8 hex digits"
        ],
    ),
    "surrogate_key": (
        conn('        "\\ud83d": 1\n'),
        [
            "surrogate_key.yaml:8: servers[0].connections[0].'\\ud83d': the key contains a lone UTF-16 surrogate from a \\u escape, which is not a character — write the character itself, or one \\U escape of 8 hex digits"
        ],
    ),
    "surrogate_pair_is_fine_as_one_escape": (
        conn('        id: "x\\U0001F600"\n'),
        [
            "surrogate_pair_is_fine_as_one_escape.yaml:8: servers[0].connections[0].id: 'x😀' is not a valid connection id — use letters, digits and '.', '_', '-', ':', '@', '+', starting with a letter or digit"
        ],
    ),
    "tilde_unknown_user_ca": (
        conn("        ca_file: ~no-such-user-p3m/ca.pem\n"),
        [
            "tilde_unknown_user_ca.yaml:8: servers[0].connections[0].ca_file: ~no-such-user-p3m: there is no user 'no-such-user-p3m' on this system to expand it — write the full path"
        ],
    ),
    "tilde_unknown_user_password_file": (
        ONE.replace(
            "auth: none}",
            "auth: plain, account: {username: mon, password_file: ~no-such-user-p3m/pw}}",
        ),
        [
            "tilde_unknown_user_password_file.yaml:6: servers[0].connections[0].account.password_file: ~no-such-user-p3m: there is no user 'no-such-user-p3m' on this system to expand it — write the full path"
        ],
    ),
    "nul_in_password_file": (
        ONE.replace(
            "auth: none}", 'auth: plain, account: {username: mon, password_file: "pw\\0.txt"}}'
        ),
        [
            "nul_in_password_file.yaml:6: servers[0].connections[0].account.password_file: contains a NUL character (\\0), which no path can — remove it"
        ],
    ),
    "deep_flow_20000": (
        "version: 1\nservers: " + "[" * 20_000 + "]" * 20_000 + "\n",
        [
            "deep_flow_20000.yaml:2: nested deeper than 32 levels — a targets file needs about 6; is this the right file?"
        ],
    ),
    "deep_block_500": (
        "version: 1\nservers:\n" + "".join(" " * i + "-\n" for i in range(1, 500)),
        [
            "deep_block_500.yaml:34: nested deeper than 32 levels — a targets file needs about 6; is this the right file?"
        ],
    ),
    "deep_alias_chain": (
        alias_chain(2000),
        [
            "deep_alias_chain.yaml:33: a31: nested deeper than 32 levels — a targets file needs about 6; is this the right file?"
        ],
    ),
    "deep_merge_chain": (
        merge_chain(2000),
        [
            "deep_merge_chain.yaml:33: c31: nested deeper than 32 levels — a targets file needs about 6; is this the right file?"
        ],
    ),
    "billion_laughs": (
        bomb(9, 10, "[lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"),
        ["billion_laughs.yaml:1: the file expands to too many values (aliases nested too deep?)"],
    ),
    "merge_bomb_of_empty_mappings": (
        merge_bomb(9, 10),
        [
            "merge_bomb_of_empty_mappings.yaml:2: the file expands to too many values (aliases nested too deep?)"
        ],
    ),
    "int_5000_digits": (
        conn("        port: " + "9" * 5000 + "\n"),
        [
            "int_5000_digits.yaml:8: servers[0].connections[0].port: a number with 5000 digits is too large for any setting"
        ],
    ),
    "int_hex_5000_digits": (
        "version: 1\ndefaults:\n  timeout: 0x" + "f" * 5000 + "\n" + ONE.split("\n", 1)[1],
        [
            "int_hex_5000_digits.yaml:3: defaults.timeout: a number with 6021 digits is too large for any setting"
        ],
    ),
    "int_4000_digits": (
        conn("        port: 1" + "0" * 3999 + "\n"),
        [
            "int_4000_digits.yaml:8: servers[0].connections[0].port: a number with 4000 digits is too large for any setting"
        ],
    ),
    "impossible_date": (
        "version: 2001-02-30\n" + ONE.split("\n", 1)[1],
        ["impossible_date.yaml:1: version: cannot read value: day is out of range for month"],
    ),
    "sexagesimal_float_overflow": (
        conn("        timeout: 1" + ":0" * 400 + ".5\n"),
        [
            "sexagesimal_float_overflow.yaml:8: servers[0].connections[0].timeout: a number with 402 digits is too large for any setting"
        ],
    ),
    "size_400_digits": (
        conn("        mailbox: {size: {warn: " + "9" * 400 + " B, crit: 2 GB}}\n"),
        [
            "size_400_digits.yaml:8: servers[0].connections[0].mailbox.size.warn: '9999999999999999999999999999999999999...' is too large — a mailbox size is below 1 EB"
        ],
    ),
    "control_characters_in_keys": (
        conn('        "ti\\x1bmeout\\n": 1\n        "\\x1b]0;pwn\\x07": 2\n'),
        [
            "control_characters_in_keys.yaml:8: servers[0].connections[0].'ti\\x1bmeout\\n': unknown key — did you mean 'timeout'?",
            "control_characters_in_keys.yaml:9: servers[0].connections[0].'\\x1b]0;pwn\\x07': unknown key — allowed here: account, address_family, allow_cleartext, auth, ca_file, cert, collect_uidl, confirm, drift, id, latency, login_pacing, mailbox, min_tls_version, ping, ping_timeout, port, retries, retry_backoff, round_trip, security, tags, timeout, verify_tls",
        ],
    ),
    "bidi_override_in_key_and_duplicate": (
        conn('        "\\u202etimeout": 1\n        "\\u202etimeout": 2\n'),
        [
            "bidi_override_in_key_and_duplicate.yaml:8: servers[0].connections[0].'\\u202etimeout': unknown key — did you mean 'timeout'?",
            "bidi_override_in_key_and_duplicate.yaml:9: servers[0].connections[0].'\\u202etimeout': duplicate key (first at line 8)",
        ],
    ),
    "long_explicit_key": (
        conn("        ? " + "k" * 100_000 + "\n        : 1\n"),
        [
            "long_explicit_key.yaml:8: servers[0].connections[0].'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...': unknown key — allowed here: account, address_family, allow_cleartext, auth, ca_file, cert, collect_uidl, confirm, drift, id, latency, login_pacing, mailbox, min_tls_version, ping, ping_timeout, port, retries, retry_backoff, round_trip, security, tags, timeout, verify_tls"
        ],
    ),
    "python_object_tag_on_a_value": (
        conn("        port: !!python/object/apply:os.system [echo pwned]\n"),
        [
            "python_object_tag_on_a_value.yaml:8: servers[0].connections[0].port: unsupported YAML tag !!python/object/apply:os.system"
        ],
    ),
    "python_name_tag_on_a_scalar": (
        conn("        port: !!python/name:os.system ''\n"),
        [
            "python_name_tag_on_a_scalar.yaml:8: servers[0].connections[0].port: cannot read value: could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'"
        ],
    ),
    "nul_byte_binary": (
        "version: 1\n\x00\x01\x02ELF",
        [
            "nul_byte_binary.yaml:2: the file contains the character U+0000, which YAML does not allow — a targets file is UTF-8 text; is this the right file?"
        ],
    ),
}


def write_case(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    # surrogatepass: nothing here writes a lone surrogate, but a mistake must not hide one.
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return path


def assert_clean(err: ConfigError) -> None:
    """Every line printable, one line, encodable: what a terminal and a report can take."""
    assert err.problems
    for line in err.problems:
        assert line.isprintable(), line
        line.encode("utf-8")
        assert "Traceback" not in line and "pydantic" not in line


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file_is_one_clean_line(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, expected = CASES[name]
    monkeypatch.chdir(tmp_path)
    path = write_case(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    assert info.value.problems == expected
    assert_clean(info.value)


def test_bom_and_crlf_load(tmp_path: Path) -> None:
    """A UTF-8 byte order mark and Windows line ends are ordinary, not hostile."""
    path = tmp_path / "t.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + ONE.replace("\n", "\r\n").encode())
    assert load_targets(path).ids == ("m:995-tls",)


def test_utf16_file_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text(ONE, encoding="utf-16")
    with pytest.raises(ConfigError) as info:
        load_targets("t.yaml")
    assert info.value.problems == [
        "t.yaml:1: not UTF-8 text (it is UTF-16) — save the file as UTF-8"
    ]


# --------------------------------------------------------------------------- file size and type


def test_50_mb_file_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        # Sparse: 50 MB by size; reading it would take the whole 50 MB of memory.
        handle.write(ONE.encode())
        handle.truncate(50 * 10**6)
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    assert info.value.problems == [
        "huge.yaml: the file is 47.7 MiB, over the 1 MiB limit for a targets file (10,000 connection types fit in less) — is this the right file?"
    ]


def test_file_just_over_the_limit_is_refused_and_at_the_limit_is_read(tmp_path: Path) -> None:
    at = tmp_path / "at.yaml"
    over = tmp_path / "over.yaml"
    body = ONE.encode()
    padding = MAX_FILE_BYTES - len(body)
    # Comments: valid YAML that costs the parser as much as any other text.
    comment = (b"#" + b"x" * 98 + b"\n") * (padding // 100)
    at.write_bytes(body + comment + b"#" * (padding - len(comment)))
    assert at.stat().st_size == MAX_FILE_BYTES
    assert load_targets(at).ids == ("m:995-tls",)
    over.write_bytes(at.read_bytes() + b"#")
    with pytest.raises(ConfigError, match="over the 1 MiB limit"):
        load_targets(over)


def run_bounded(call: Callable[[], object], seconds: float) -> BaseException | None:
    """Run ``call`` in a thread; fail the test if it is still running after ``seconds``."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    return outcome[0]


def test_fifo_is_refused_without_blocking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "targets.yaml")
    err = run_bounded(lambda: load_targets("targets.yaml"), 10)
    assert isinstance(err, ConfigError)
    assert err.problems == [
        "targets.yaml: is not a regular file — --targets needs the YAML targets file"
    ]


@pytest.mark.parametrize(
    ("path", "what"), [("/dev/zero", "not a regular file"), ("/", "a directory")]
)
def test_device_or_directory_is_refused(path: str, what: str) -> None:
    err = run_bounded(lambda: load_targets(path), 10)
    assert isinstance(err, ConfigError)
    assert err.problems == [f"{path}: is {what} — --targets needs the YAML targets file"]


def test_undecodable_file_name_is_refused(tmp_path: Path) -> None:
    """The name goes into every report; bytes that are not UTF-8 could not be written."""
    name = os.fsdecode(b"t\xff.yaml")
    path = tmp_path / name
    path.write_text(ONE, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    (line,) = info.value.problems
    assert line.endswith(
        "t\\udcff.yaml': the path is not valid UTF-8 — rename the file or its directory"
    )
    assert_clean(info.value)


# --------------------------------------------------------------------------- ca_file


def der_of(lab_certs: LabCerts) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = x509.load_pem_x509_certificate(lab_certs.ca_file.read_bytes())
    return cert.public_bytes(Encoding.DER)


def damaged_pem(lab_certs: LabCerts) -> bytes:
    lines = lab_certs.ca_file.read_bytes().splitlines(keepends=True)
    lines[3] = b"Q" * (len(lines[3]) - 1) + b"\n"
    return b"".join(lines)


#: name -> (what to put at ca_file, the message after "'<name>' ").
CA_CASES: dict[str, tuple[Callable[[LabCerts], bytes] | str, str]] = {
    "ca.der": (
        der_of,
        "is DER (binary), not PEM — convert it: openssl x509 -inform der -in ca.der -out ca.der.pem",
    ),
    "notes.txt": (
        lambda _: b"our CA is the one from IT\n",
        "is not a PEM file — give the CA certificates as PEM (-----BEGIN CERTIFICATE----- blocks)",
    ),
    "empty.pem": (
        lambda _: b"",
        "is empty — give the CA certificates as PEM (-----BEGIN CERTIFICATE----- blocks)",
    ),
    "key.pem": (
        lambda c: c.valid.key.read_bytes(),
        "holds PEM blocks but no certificate (a key?) — give the CA certificates as PEM (-----BEGIN CERTIFICATE----- blocks)",
    ),
    "damaged.pem": (
        damaged_pem,
        "has a damaged certificate block — check it with openssl x509 -in damaged.pem -noout",
    ),
    "cadir": ("dir", "is not a file — give a PEM file with the CA certificates"),
    "ca.fifo": ("fifo", "is not a file — give a PEM file with the CA certificates"),
}


@pytest.mark.parametrize("name", sorted(CA_CASES))
def test_ca_file_that_is_not_pem_is_a_config_error(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lab_certs: LabCerts
) -> None:
    """Caught at load with the file named, not a TLS CRIT blaming every server using it."""
    make, message = CA_CASES[name]
    target = tmp_path / name
    if make == "dir":
        target.mkdir()
    elif make == "fifo":
        os.mkfifo(target)
    else:
        assert callable(make)
        target.write_bytes(make(lab_certs))
    monkeypatch.chdir(tmp_path)
    text = "version: 1\ndefaults:\n  ca_file: " + name + "\n" + ONE.split("\n", 1)[1]
    path = write_case(tmp_path, "t", text)
    err = run_bounded(lambda: load_targets(path), 10)
    assert isinstance(err, ConfigError)
    assert err.problems == [f"t.yaml:3: defaults.ca_file: '{name}' {message}"]


def test_ca_file_pem_bundle_loads(tmp_path: Path, lab_certs: LabCerts) -> None:
    """A real bundle (several certificates, text between them) is accepted."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        b"# internal CA\n"
        + lab_certs.ca_file.read_bytes()
        + b"\n# again\n"
        + lab_certs.ca_file.read_bytes()
    )
    path = write_case(
        tmp_path,
        "t",
        ONE.replace("host: m.example\n", "host: m.example\n    ca_file: bundle.pem\n"),
    )
    assert load_targets(path).connections[0].ca_file == str(bundle)


# --------------------------------------------------------------------------- property


_TEMPLATE = conn(
    "        port: 995\n        timeout: 3\n        tags: [a]\n"
    "        mailbox: {size: {warn: 1 GB, crit: 2 GB}}\n"
)
_NASTY = st.sampled_from(
    [
        "\\ud800",
        "\\udfff",
        "\\x00",
        "\\x1b",
        "\\u202e",
        "\\U0001F600",
        "\\n",
        "~nouser/",
        "9" * 4400,
        "0x" + "f" * 4000,
        "[" * 40,
        "{" * 40,
        "&a ",
        "*a",
        "<<: *a",
        "!!python/object:x",
        "!!binary",
        "!!set",
        "? ",
        "- ",
        ": ",
        "'",
        '"',
        "#",
        "\t",
        "\ufeff",
        "1e400",
        ".inf",
        "\x85",
        "\u2028",
        "%YAML 1.1\n---\n",
        "...\n",
        "--- ",
    ]
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    cuts=st.lists(
        st.tuples(st.integers(0, len(_TEMPLATE)), st.one_of(_NASTY, st.text(max_size=8))),
        min_size=1,
        max_size=4,
    )
)
def test_any_mutation_loads_or_is_clean_config_error(
    cuts: list[tuple[int, str]], tmp_path: Path
) -> None:
    """Insert hostile fragments anywhere in a valid file: never anything but a Targets or
    a ConfigError with clean lines."""
    text = _TEMPLATE
    for at, piece in sorted(cuts, reverse=True):
        text = text[:at] + piece + text[at:]
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        result = load_targets(path)
    except ConfigError as err:
        assert_clean(err)
    else:
        assert isinstance(result, Targets)
        for ct in result.connections:
            repr(ct).encode("utf-8")


# --------------------------------------------------------------------------- through pytest


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "surrogate_username",
            "surrogate_username.yaml:6: servers[0].connections[0].account.username: the text contains '\\udc80'",
        ),
        ("deep_flow_20000", "deep_flow_20000.yaml:2: nested deeper than 32 levels"),
        (
            "int_5000_digits",
            "int_5000_digits.yaml:8: servers[0].connections[0].port: a number with 5000 digits",
        ),
    ],
)
def test_hostile_file_stops_pytest_with_a_usage_error(
    name: str, expected: str, tmp_path: Path
) -> None:
    """Through a real pytest run: exit code 4 and the one line, no traceback, and the
    reports directory holds nothing but metrics.prom saying the configuration is invalid
    (the surrogate once crashed the JSON writer after the whole run, leaving a half-written
    results.json.tmp and no report)."""
    text, _ = CASES[name]
    path = write_case(tmp_path, name, text)
    reports = tmp_path / "reports"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POP3MON_")}
    env["PW"] = "hostile-SENTINEL-3f1a"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:hypothesispytest",
            f"--targets={path}",
            f"--reports-dir={reports}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    stderr = proc.stderr.decode("utf-8")
    stdout = proc.stdout.decode("utf-8")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, stdout + stderr
    assert "pop3mon: invalid targets file" in stderr
    assert f"{path.parent}/{expected}" in stderr, stderr
    assert "Traceback" not in stdout + stderr
    assert sorted(p.name for p in reports.iterdir()) == ["metrics.prom"]
    metrics = (reports / "metrics.prom").read_text(encoding="utf-8")
    assert "pop3mon_config_valid 0.0" in metrics
    assert env["PW"] not in metrics
