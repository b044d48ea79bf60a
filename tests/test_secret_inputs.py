"""Secret references that are broken or hostile: paths that are no paths, files that are no
regular files (a FIFO, ``/dev/stdin``, a device, a directory), files of more than one line
(``/etc/shadow`` behind a symlink), values with control characters or too short.

Each must fail only its own connection type's auth checks, with a reason that names the
variable or file and never shows the value, without blocking and for every mechanism: the
rule lives in one place (:func:`pop3mon.secrets.secret_problem`), so no mechanism can send
what another refuses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pop3mon.config import ConnectionType, Targets, load_targets
from pop3mon.engine import ProbeSpec, probe
from pop3mon.engine.mechanisms import MECHANISMS
from pop3mon.probestore import ProbeStore
from pop3mon.secrets import MIN_SECRET_CHARS, Secret, secret_problem

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.faultserver import DEFAULT_SASL, FaultServer

ROOT = Path(__file__).resolve().parents[1]
USER = "alice"
PASSWORD = "inputs-SENTINEL-3f9a"
# What sits after the first line of the file a symlink points at (/etc/shadow-like).
SHADOW_TAIL = "root:$6$shadow-SENTINEL-77aa$hash:19000:0:99999:7:::"
BLOCK_LIMIT = 5.0  # seconds a resolution may take before it counts as blocked


# --------------------------------------------------------------------------- helpers
def _conn(tmp_path: Path, account: str = "password_file: pw") -> ConnectionType:
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "servers:\n"
        "  - name: lab\n"
        "    host: localhost\n"
        "    connections:\n"
        f"      - {{id: one, port: 995, security: tls,"
        f" account: {{username: {USER}, {account}}}}}\n",
        encoding="utf-8",
    )
    (conn,) = load_targets(targets).connections
    return conn


def _resolve(conn: ConnectionType, environ: dict[str, str]) -> tuple[Secret | None, str]:
    """resolve_secret in a thread: a blocked read fails the test instead of hanging it."""
    out: list[tuple[Secret | None, str]] = []
    thread = threading.Thread(target=lambda: out.append(conn.resolve_secret(environ)), daemon=True)
    thread.start()
    thread.join(BLOCK_LIMIT)
    assert not thread.is_alive(), f"resolving {conn.secret_source!r} blocked"
    assert out, "resolve_secret raised"
    return out[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe nobody writes to; released at the end so no thread stays blocked."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    yield path
    try:  # a reader blocked in open() (today's bug) gets EOF and ends
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


# --------------------------------------------------------------------------- the rule
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("first-line-ok\nroot:x:0:0", "contains a line break"),
        ("first-line-ok\rsecond", "contains a line break"),
        ("sep\u2028arator-xyz", "contains a line break"),
        ("nul\0inside-the-value", "contains a NUL character"),
        ("tab\tinside-the-value", "contains a control character"),
        ("esc\x1b[31m-red-value", "contains a control character"),
        ("c1\x9b-control-value", "contains a control character"),
        ("lone\udcffsurrogate", "is not valid UTF-8 text"),
        ("abc", f"is shorter than {MIN_SECRET_CHARS} characters"),
        ("seven77", f"is shorter than {MIN_SECRET_CHARS} characters"),
        ("x" * 4097, "is longer than 4096 bytes"),
        ("", "is empty"),
    ],
)
def test_secret_rule_refuses_with_a_reason_that_shows_nothing(value: str, problem: str) -> None:
    reason = secret_problem(value)
    assert reason.startswith(problem), reason
    for part in value.replace("\0", " ").split():
        if len(part) >= 4:
            assert part not in reason


def test_secret_rule_accepts_ordinary_secrets() -> None:
    for value in (PASSWORD, "pässwörd-😀", "with spaces inside", "x" * 4096, "12345678"):
        assert secret_problem(value) == ""
    assert secret_problem("t" * 10_000, "token") == ""  # OAuth tokens may run to KiB


# --------------------------------------------------------------------------- config resolution
@pytest.mark.parametrize("source", ["env", "file"])
@pytest.mark.parametrize(
    "value",
    [f"{PASSWORD}\n{SHADOW_TAIL}", f"{PASSWORD}\t", "short", f"{PASSWORD}\x1b[2J"],
    ids=["multi-line", "tab", "short", "escape"],
)
def test_every_source_gets_the_same_rule(tmp_path: Path, source: str, value: str) -> None:
    if source == "env":
        conn = _conn(tmp_path, "password_env: POP3MON_INPUTS_PW")
        subject = "environment variable POP3MON_INPUTS_PW is refused: it "
    else:
        (tmp_path / "pw").write_text(value + "\n", encoding="utf-8")
        conn = _conn(tmp_path)
        subject = f"password file {tmp_path / 'pw'} is refused: it "
    spec = conn.to_probe_spec({"POP3MON_INPUTS_PW": value})
    assert spec.secret is None
    assert spec.secret_problem.startswith(subject), spec.secret_problem
    assert PASSWORD not in spec.secret_problem and "shadow" not in spec.secret_problem


def test_secret_file_behind_a_symlink_holds_one_line(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.write_text(f"{PASSWORD}\n{SHADOW_TAIL}\n", encoding="utf-8")
    (tmp_path / "pw").symlink_to(shadow)
    secret, problem = _resolve(_conn(tmp_path), {})
    assert secret is None
    assert problem == (
        f"password file {tmp_path / 'pw'} is refused: it contains a line break "
        "(a secret is one line)"
    )


def _unix_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    return sock


@pytest.mark.parametrize(
    ("make", "what"),
    [
        ("fifo", "a FIFO (named pipe)"),
        ("fifo-symlink", "a FIFO (named pipe)"),
        ("dev-zero", "a character device"),
        ("directory", "a directory"),
        ("socket", "a socket"),
    ],
)
def test_secret_file_must_be_a_regular_file_and_is_never_waited_for(
    tmp_path: Path, fifo: Path, make: str, what: str
) -> None:
    pw = tmp_path / "pw"
    keep: list[socket.socket] = []
    if make == "fifo":
        os.rename(fifo, pw)
        os.mkfifo(fifo)  # the fixture releases the one it made; pw is released below
    elif make == "fifo-symlink":
        pw.symlink_to(fifo)
    elif make == "dev-zero":
        pw.symlink_to("/dev/zero")
    elif make == "directory":
        pw.mkdir()
    else:
        keep.append(_unix_socket(pw))
    try:
        secret, problem = _resolve(_conn(tmp_path), {})
    finally:
        if make == "fifo":
            try:
                os.close(os.open(pw, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        for sock in keep:
            sock.close()
    assert secret is None
    assert problem == f"password file {pw} is {what}, not a regular file"


def test_dev_stdin_is_refused_without_reading_it(tmp_path: Path) -> None:
    """``/dev/stdin`` as the secret file of a run whose stdin is a pipe nobody closes."""
    code = (
        "import sys, pathlib\n"
        "from pop3mon.config import load_targets\n"
        "(c,) = load_targets(pathlib.Path(sys.argv[1])).connections\n"
        "print(c.resolve_secret({})[1])\n"
    )
    targets = tmp_path / "targets.yaml"
    _conn(tmp_path, "password_file: /dev/stdin")
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(targets)],
            stdin=read_end,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout.strip() == "password file /dev/stdin is a FIFO (named pipe), not a regular file"
    )


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("file:/tmp/pop3mon\0nul", "/tmp/pop3mon\\x00nul"),
        ("file:/tmp/pop3mon-\ud800-surrogate", "/tmp/pop3mon-\\ud800-surrogate"),
        ("env:BAD\ud800NAME", "BAD\\ud800NAME"),
    ],
    ids=["nul-path", "surrogate-path", "surrogate-env-name"],
)
def test_reference_that_is_no_valid_path_or_name_fails_alone(
    tmp_path: Path, source: str, shown: str
) -> None:
    conn = dataclasses.replace(_conn(tmp_path), secret_source=source)
    secret, problem = _resolve(conn, dict(os.environ) if source.startswith("env") else {})
    assert secret is None
    assert shown in problem, problem
    assert problem.isprintable()


def test_secret_file_read_is_bounded(tmp_path: Path) -> None:
    big = tmp_path / "pw"
    with big.open("wb") as handle:
        handle.truncate(1 << 30)  # sparse: a 1 GiB file costs nothing unless read whole
    secret, problem = _resolve(_conn(tmp_path), {})
    assert secret is None
    assert (
        problem == f"password file {big} is larger than 4096 bytes (a secret file holds one line)"
    )


# --------------------------------------------------------------------------- every mechanism
@pytest.mark.parametrize("mechanism", sorted(MECHANISMS))
def test_no_mechanism_sends_a_refused_secret(lab_certs: LabCerts, mechanism: str) -> None:
    """A two-line secret whose first line is the right password: today USER/PASS refuses
    it but SASL PLAIN and LOGIN send it whole. Now no mechanism sends a byte of it."""
    with FaultServer(
        "healthy",
        users={USER: PASSWORD},
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
        implicit_tls=True,
        sasl_mechanisms=(*DEFAULT_SASL, "XOAUTH2", "OAUTHBEARER"),
    ) as srv:
        spec = ProbeSpec(
            id=mechanism,
            host="localhost",
            port=srv.port,
            security="tls",
            auth=mechanism,
            username=USER,
            secret=Secret(f"{PASSWORD}\n{SHADOW_TAIL}", "test"),
            ca_file=str(lab_certs.ca_file),
            timeout=5.0,
        )
        result = probe(spec)
        srv.wait_idle(2.0)
        sent = srv.log.entries()
    assert spec.secret is None
    assert "refused: it contains a line break" in spec.secret_problem
    assert result.error_kind == "secret-missing" and result.error_stage == "auth", result
    assert "contains a line break" in result.error_reason
    verbs = {e.verb for e in sent}
    assert not verbs & {"USER", "PASS", "APOP", "AUTH"}, verbs
    assert not [e for e in sent if e.kind == "sasl"]


# --------------------------------------------------------------------------- the run goes on
def _targets(directory: Path, port: int, ca_file: Path, extra: dict[str, str]) -> Targets:
    lines = [
        "version: 1",
        "defaults:",
        f"  ca_file: {ca_file}",
        "  timeout: 5",
        "servers:",
        "  - name: lab",
        "    host: localhost",
        "    connections:",
        f"      - {{id: good, port: {port}, security: tls,"
        f" account: {{username: {USER}, password_env: POP3MON_INPUTS_PW}}}}",
    ]
    for ct_id, account in extra.items():
        lines.append(
            f"      - {{id: {ct_id}, port: {port}, security: tls, auth: plain,"
            f" account: {{username: {USER}, {account}}}}}"
        )
    path = directory / "targets.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_targets(path)


def test_probe_store_survives_secrets_that_cannot_be_read(
    tmp_path: Path, lab_certs: LabCerts, fifo: Path
) -> None:
    """In one process: a NUL path and a FIFO no longer stop the batch (today the first
    raises out of the batch and every other connection type waits forever)."""
    with FaultServer(
        "healthy",
        users={USER: PASSWORD},
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
        implicit_tls=True,
    ) as srv:
        targets = _targets(
            tmp_path, srv.port, lab_certs.ca_file, {"fifo": f"password_file: {fifo}"}
        )
        good, bad_fifo = targets.by_id("good"), targets.by_id("fifo")
        nul = dataclasses.replace(bad_fifo, id="nul", secret_source="file:/tmp/x\0y")
        targets = dataclasses.replace(targets, connections=(bad_fifo, good, nul))
        os.environ["POP3MON_INPUTS_PW"] = PASSWORD
        try:
            store = ProbeStore(targets, tmp_path, shared=False, concurrency=3)
            selection = {"fifo": True, "good": True, "nul": True}
            results: dict[str, object] = {}

            def ask(ct_id: str) -> None:
                try:
                    results[ct_id] = store.result_for(ct_id, lambda: selection)
                except Exception as exc:  # the test reports what escaped
                    results[ct_id] = exc

            threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in selection]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)
            assert not any(t.is_alive() for t in threads), f"waiting forever: {results}"
        finally:
            del os.environ["POP3MON_INPUTS_PW"]
    assert good.id in results
    ok = results["good"]
    assert getattr(ok, "ok", False), ok
    for ct_id, expected in (("fifo", "is a FIFO (named pipe)"), ("nul", "not a usable path")):
        res = results[ct_id]
        assert getattr(res, "error_kind", None) == "secret-missing", res
        assert expected in getattr(res, "error_reason", ""), res


def test_bad_secrets_fail_only_their_own_auth_checks(tmp_path: Path, lab_certs: LabCerts) -> None:
    """The whole suite, run like a user runs it, with /dev/stdin a pipe nobody closes: it
    ends, the good connection type is all OK, each bad one fails its login check naming its
    problem, and the server never sees a login attempt from any of them."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    shadow = tmp_path / "shadow"
    shadow.write_text(f"{PASSWORD}\n{SHADOW_TAIL}\n", encoding="utf-8")
    (tmp_path / "shadow-link").symlink_to(shadow)
    (tmp_path / "a-directory").mkdir()
    bad = {
        "fifo": (f"password_file: {fifo}", "is a FIFO (named pipe), not a regular file"),
        "stdin": ("password_file: /dev/stdin", "not a regular file"),
        "shadow": (f"password_file: {tmp_path / 'shadow-link'}", "contains a line break"),
        "directory": (f"password_file: {tmp_path / 'a-directory'}", "is a directory"),
        "control": ("password_env: POP3MON_INPUTS_CTRL", "contains a control character"),
        "short": ("password_env: POP3MON_INPUTS_SHORT", "is shorter than 8 characters"),
    }
    reports = tmp_path / "reports"
    with FaultServer(
        "healthy",
        users={USER: PASSWORD},
        certfile=lab_certs.valid.cert,
        keyfile=lab_certs.valid.key,
        implicit_tls=True,
    ) as srv:
        targets = _targets(tmp_path, srv.port, lab_certs.ca_file, {k: v[0] for k, v in bad.items()})
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS",)},
            "POP3MON_INPUTS_PW": PASSWORD,
            "POP3MON_INPUTS_CTRL": PASSWORD + "\x1b[2J",
            "POP3MON_INPUTS_SHORT": "abc",
        }
        read_end, write_end = os.pipe()
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    f"--targets={targets.path}",
                    f"--reports-dir={reports}",
                    "-p",
                    "no:cacheprovider",
                    "-p",
                    "no:hypothesispytest",
                    "-q",
                ],
                cwd=ROOT,
                env=env,
                stdin=read_end,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            os.close(read_end)
            os.close(write_end)
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        srv.wait_idle(2.0)
        logins = srv.log.events("login")
        failed = srv.log.events("login-failed")
        received = b"".join(e.raw for e in srv.log.entries())
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-4000:]
    doc = json.loads((reports / "results.json").read_text(encoding="utf-8"))
    checks = {
        c["id"]: {k["check"]: (k["verdict"], k["reason"]) for k in c["checks"]}
        for c in doc["connections"]
    }
    # (ping, stls and mailbox thresholds are not configured: SKIP)
    good = {name: v for name, (v, _) in checks["good"].items() if v not in ("OK", "SKIP")}
    assert good == {} and checks["good"]["login"][0] == "OK", checks["good"]
    for ct_id, (_, problem) in bad.items():
        verdict, reason = checks[ct_id]["login"]
        assert verdict == "CRIT" and problem in reason, (ct_id, reason)
        # Everything before the login is judged as usual.
        assert checks[ct_id]["tcp"][0] == "OK" and checks[ct_id]["handshake"][0] == "OK"
    assert len(logins) == 1 and not failed, (logins, failed)
    assert b"shadow-SENTINEL" not in received
    assert "shadow-SENTINEL" not in output
