"""Self-tests of the suite itself: the real ``pytest`` run a user starts in the repository root.

Every test here runs ``python -m pytest`` in a subprocess with the repository root as working
directory (so the root ``pytest.ini``, ``conftest.py`` and ``tests_targets/`` are exactly what
a user gets), a generated targets file (``--targets=PATH``), ``--no-reports`` (nothing is
written into the repository) and ``--junitxml`` into a temporary directory. Outcomes are read
per test id from that JUnit file: pytest's outcome, its message, and the ``pop3mon_*``
properties the ``check`` fixture attaches (``pop3mon_verdict`` = OK/WARN/CRIT/SKIP).

The servers are real: the session's Dovecot lab (``tests/conftest.py``, one Dovecot per
certificate variant) for everything a real server does, and the fault server for what
Dovecot will not do on demand (no STLS; slow answers to show that probes overlap). What the
servers saw is asserted too: Dovecot's login log per (user, port) and the fault server's
login counter and command log, for "exactly one login per connection type per run", for
``-k``/``-m`` deselection and for ``--collect-only``.

Runs are module-scoped fixtures shared by the tests that read them, so each subprocess run
happens once (about 1-2 s each).
"""

from __future__ import annotations

import collections
import itertools
import os
import re
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dovecot import DovecotLab
from pop3mon_lab.faultserver import FaultServer

#: The repository root: the suite runs here, as a user runs it (`pop3mon_lab` is importable
#: because tests/pytest.ini puts this directory on sys.path).
ROOT = Path(__file__).resolve().parents[1]
#: Environment variables that would change what the subprocess suite does; never inherited.
_SCRUBBED_ENV = (
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "PYTEST_CURRENT_TEST",
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
    "POP3MON_TARGETS",
    "POP3MON_PING_UNPRIVILEGED",
)
RUN_TIMEOUT = 180.0

# Names of the secret variables the generated targets files reference.
PW_ENV = "POP3MON_SUITE_PASSWORD"
WRONG_PW_ENV = "POP3MON_SUITE_WRONG_PASSWORD"
UNSET_PW_ENV = "POP3MON_SUITE_UNSET_PASSWORD"
# Planted so that any echo of a secret into output, ids or reports is detectable.
WRONG_PASSWORD = "wrong-SENTINEL-4c1e9b"
FAULT_PASSWORD = "fault-SENTINEL-77d2aa"

# Latency thresholds generous enough for any machine; the phases a healthy type must show.
GENEROUS = {"warn": 20.0, "crit": 30.0}
LATENCY_PHASES = ("total", "connect", "greeting", "tls", "tls_handshake", "auth", "stat")
EXPECTED_PHASES = {
    "tls": ["total", "connect", "tls", "greeting", "auth", "stat"],
    "starttls": ["total", "connect", "greeting", "tls_handshake", "auth", "stat"],
    "none": ["total", "connect", "greeting", "auth", "stat"],
}
DEPENDENT_TIER_MODULES = ("test_tls", "test_auth", "test_mailbox", "test_latency")

# The id shape the config derives when no explicit id: is given.
DERIVED_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*:\d{1,5}-(none|starttls-optional|starttls|tls)")


# --------------------------------------------------------------------------- running the suite


@dataclass(frozen=True)
class Case:
    """One test of the suite run, as the JUnit file recorded it."""

    nodeid: str
    outcome: str  # passed failed skipped error
    message: str
    props: Mapping[str, str]

    @property
    def verdict(self) -> str:
        """pop3mon's verdict (OK WARN CRIT SKIP), or "" when the check never ran."""
        return self.props.get("pop3mon_verdict", "")

    @property
    def reason(self) -> str:
        """The reason pop3mon gave for its verdict."""
        return self.props.get("pop3mon_reason", "")

    @property
    def ct(self) -> str:
        """The connection type id the check fixture recorded."""
        return self.props.get("pop3mon_ct", "")


@dataclass
class SuiteRun:
    """The result of one subprocess run of the suite."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    wall: float
    junit_text: str
    cases: dict[str, Case] = field(default_factory=dict)

    def describe(self) -> str:
        """Command and output tail, for assertion messages."""
        return (
            f"pytest {' '.join(self.args)} -> exit {self.returncode}\n"
            f"--- stdout (tail) ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-3000:]}"
        )

    def case(self, test: str, param: str) -> Case:
        """The case ``test_<test>[<param>]`` (``param`` = connection id, or id-phase)."""
        name = f"test_{test}[{param}]"
        found = [c for c in self.cases.values() if c.nodeid.endswith("::" + name)]
        assert len(found) == 1, f"{name}: {len(found)} matching cases\n{self.describe()}"
        return found[0]

    def for_ct(self, ct: str) -> list[Case]:
        """Every case of connection type ``ct``."""
        return [c for c in self.cases.values() if c.ct == ct or _param(c.nodeid) == ct]

    def latency_params(self, ct: str) -> list[str]:
        """The ``<id>-<phase>`` parameters of the latency tests collected for ``ct``."""
        out = []
        for case in self.cases.values():
            if "::test_latency[" in case.nodeid and case.ct == ct:
                out.append(_param(case.nodeid))
        return out

    def outcomes(self) -> dict[str, str]:
        """Test id -> pytest outcome."""
        return {nodeid: c.outcome for nodeid, c in self.cases.items()}

    def verdicts(self) -> dict[str, str]:
        """Test id -> pop3mon verdict."""
        return {nodeid: c.verdict for nodeid, c in self.cases.items()}

    def collected_ids(self) -> list[str]:
        """Test ids printed by ``--collect-only -q``."""
        return [line for line in self.stdout.splitlines() if "::" in line]


def _param(nodeid: str) -> str:
    return nodeid.rsplit("[", 1)[-1].rstrip("]") if nodeid.endswith("]") else ""


def _parse_junit(text: str) -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for tc in ET.fromstring(text).iter("testcase"):
        # A WARN testcase's name ends in " [WARN]" (pop3mon.report.junit.WARN_SUFFIX).
        name = tc.get("name", "").removesuffix(" [WARN]")
        nodeid = tc.get("classname", "").replace(".", "/") + ".py::" + name
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = tc.find(tag)
            if element is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                # pytest prefixes pytest.fail() messages with the exception name.
                message = element.get("message", "").removeprefix("Failed: ")
                break
        props = {p.get("name", ""): p.get("value", "") for p in tc.iter("property")}
        cases[nodeid] = Case(nodeid, outcome, message, props)
    return cases


def run_suite(
    targets: Path,
    *args: str,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    unset: Sequence[str] = (),
    cache_dir: Path | None = None,
) -> SuiteRun:
    """Run the suite like a user does (``python -m pytest`` in the repository root).

    ``env`` adds variables (secrets, switches); ``unset`` removes inherited ones. Each run
    gets its own JUnit file in ``workdir``. Runs have no pytest cache (so nothing carries
    over between them) unless ``cache_dir`` gives them one.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    junit = workdir / f"junit-{time.monotonic_ns()}.xml"
    cache = ("-o", f"cache_dir={cache_dir}") if cache_dir else ("-p", "no:cacheprovider")
    full = (
        f"--targets={targets}",
        *cache,
        # Hypothesis (a self-test dependency, not a runtime one) costs ~0.9 s of imports.
        "-p",
        "no:hypothesispytest",
        "--no-reports",
        f"--junitxml={junit}",
        *args,
    )
    environ = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV and k not in unset}
    environ.update(env or {})
    environ["COLUMNS"] = "160"
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *full],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    wall = time.monotonic() - began
    text = junit.read_text(encoding="utf-8") if junit.exists() else ""
    run = SuiteRun(full, proc.returncode, proc.stdout, proc.stderr, wall, text)
    if text:
        run.cases = _parse_junit(text)
    return run


def write_targets(path: Path, data: Mapping[str, Any]) -> Path:
    """Write a targets file (YAML) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")
    return path


def login_delta(
    lab: DovecotLab,
    before: collections.Counter[tuple[str, int]],
    expected: Mapping[tuple[str, int], int],
) -> collections.Counter[tuple[str, int]]:
    """Logins Dovecot logged since ``before``.

    Dovecot writes the log line a moment after the client saw ``+OK``: wait (bounded) until
    the expected logins are there, then a little longer so that an extra one would show.
    """
    deadline = time.monotonic() + 5.0
    while True:
        delta = lab.login_counts() - before
        if all(delta[k] >= n for k, n in expected.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    time.sleep(0.3)
    return lab.login_counts() - before


def _assert_ok(case: Case, allowed_skips: Sequence[str] = ()) -> None:
    """``case`` passed, or was skipped for one of ``allowed_skips`` (reason prefixes)."""
    if case.outcome == "skipped" and any(case.message.startswith(p) for p in allowed_skips):
        return
    assert case.outcome == "passed", f"{case.nodeid}: {case.outcome} {case.message}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Targets files and JUnit files of this module."""
    return tmp_path_factory.mktemp("suite")


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound (so nobody else takes it), never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@dataclass(frozen=True)
class Mixed:
    """The healthy + broken connection types against Dovecot, and what to expect."""

    targets: Path
    env: Mapping[str, str]
    tls_id: str
    starttls_id: str
    healthy: Mapping[str, str]  # id -> security
    expected_logins: Mapping[tuple[str, int], int]
    expired_date: str


@pytest.fixture(scope="module")
def mixed(dovecot: DovecotLab, closed_port: int, workdir: Path) -> Mixed:
    """Healthy types (implicit TLS, STLS, plaintext APOP/USER/auto) and broken ones (closed
    port, expired certificate, wrong password, unset password variable), all on Dovecot.

    Every healthy type uses its own Dovecot listener, so the login log tells them apart.
    """
    user = dovecot.demo_user
    tls_port = dovecot.port("pop3s")
    starttls_port = dovecot.port("pop3")
    apop_port = dovecot.port("pop3", "chain")
    user_port = dovecot.port("pop3", "incomplete_chain")
    auto_port = dovecot.port("pop3", "self_signed")

    def pw(var: str) -> dict[str, str]:
        return {"username": user, "password_env": var}

    data = {
        "version": 1,
        "defaults": {
            "ca_file": str(dovecot.ca_file),
            "account": pw(PW_ENV),
            # The lab's Dovecot answers refusals at once, without the address penalty, and
            # does not lock mailboxes; the default (serial) is test_pacing.py's subject.
            "login_pacing": "parallel",
            "latency": {phase: GENEROUS for phase in LATENCY_PHASES},
            "mailbox": {"count": {"warn": 100, "crit": 200}},
        },
        "servers": [
            {
                "name": "lab",
                "host": dovecot.hostname,
                "connections": [
                    {"port": tls_port, "security": "tls", "ping": True},
                    {"port": starttls_port, "security": "starttls"},
                    {"id": "plain-apop", "port": apop_port, "security": "none", "auth": "apop"},
                    {
                        "id": "plain-user",
                        "port": user_port,
                        "security": "none",
                        "auth": "user",
                        "allow_cleartext": True,
                    },
                    {"id": "plain-auto", "port": auto_port, "security": "none"},
                    {"id": "closed", "port": closed_port, "security": "tls"},
                    {
                        "id": "expired",
                        "port": dovecot.port("pop3s", "expired"),
                        "security": "tls",
                    },
                    {
                        "id": "wrong-password",
                        "port": tls_port,
                        "security": "tls",
                        "account": pw(WRONG_PW_ENV),
                    },
                    {
                        "id": "no-password",
                        "port": starttls_port,
                        "security": "starttls",
                        "account": pw(UNSET_PW_ENV),
                    },
                ],
            }
        ],
    }
    tls_id, starttls_id = f"lab:{tls_port}-tls", f"lab:{starttls_port}-starttls"
    healthy = {
        tls_id: "tls",
        starttls_id: "starttls",
        "plain-apop": "none",
        "plain-user": "none",
        "plain-auto": "none",
    }
    ports = (tls_port, starttls_port, apop_port, user_port, auto_port)
    cert = x509.load_pem_x509_certificate(dovecot.certs.variant("expired").cert.read_bytes())
    return Mixed(
        targets=write_targets(workdir / "mixed.yaml", data),
        env={PW_ENV: dovecot.demo_password, WRONG_PW_ENV: WRONG_PASSWORD},
        tls_id=tls_id,
        starttls_id=starttls_id,
        healthy=healthy,
        expected_logins={(user, port): 1 for port in ports},
        expired_date=cert.not_valid_after_utc.date().isoformat(),
    )


@dataclass
class LabRun:
    """A suite run against Dovecot and the logins Dovecot saw during it."""

    run: SuiteRun
    logins: collections.Counter[tuple[str, int]]


def _lab_run(
    lab: DovecotLab,
    mixed: Mixed,
    workdir: Path,
    *args: str,
    expected: Mapping[tuple[str, int], int],
) -> LabRun:
    before = lab.login_counts()
    run = run_suite(mixed.targets, *args, workdir=workdir, env=mixed.env, unset=[UNSET_PW_ENV])
    assert run.cases or "--collect-only" in args, run.describe()
    return LabRun(run, login_delta(lab, before, expected))


@pytest.fixture(scope="module")
def mixed_run(dovecot: DovecotLab, mixed: Mixed, workdir: Path) -> LabRun:
    """The mixed targets, run once without xdist."""
    return _lab_run(dovecot, mixed, workdir, "-rA", expected=mixed.expected_logins)


@pytest.fixture(scope="module")
def mixed_run_xdist(dovecot: DovecotLab, mixed: Mixed, workdir: Path) -> LabRun:
    """The mixed targets, run once with ``-n 2``."""
    pytest.importorskip("xdist")
    return _lab_run(dovecot, mixed, workdir, "-n", "2", expected=mixed.expected_logins)


# --------------------------------------------------------------------------- healthy types


def test_healthy_types_pass_every_tier(mixed_run: LabRun, mixed: Mixed) -> None:
    """Implicit TLS, STLS and plaintext (APOP, USER with allow_cleartext, auto) pass every
    tier against Dovecot; the only skips are "not applicable", "PING disabled" and the
    drift checks' "no baseline" (this run keeps no history)."""
    run = mixed_run.run
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.describe()  # the broken ones
    for ct, security in mixed.healthy.items():
        cases = run.for_ct(ct)
        assert len(cases) >= 15 + len(EXPECTED_PHASES[security]), (ct, len(cases))
        for case in cases:
            _assert_ok(
                case, ("not applicable", "PING disabled", "this runner may not", "no baseline")
            )
        for test in ("tcp", "greeting", "capa", "login", "policy", "stat", "thresholds", "logout"):
            assert run.case(test, ct).outcome == "passed", run.case(test, ct)
        tls_checks = ("handshake", "certificate", "expiry", "protocol")
        for test in tls_checks:
            want = "skipped" if security == "none" else "passed"
            assert run.case(test, ct).outcome == want, run.case(test, ct)
        stls = run.case("stls", ct)
        assert stls.outcome == ("passed" if security == "starttls" else "skipped"), stls


def test_auth_auto_picks_a_strong_mechanism(mixed_run: LabRun, mixed: Mixed) -> None:
    """``auth: auto`` logs in with a SASL mechanism Dovecot offers, over TLS where there is
    TLS; plaintext APOP and USER are flagged WARN by the policy check but pass."""
    run = mixed_run.run
    for ct in (mixed.tls_id, mixed.starttls_id):
        login = run.case("login", ct)
        assert login.verdict == "OK", login
        assert "over TLS" in login.reason, login
        assert run.case("policy", ct).verdict == "OK", run.case("policy", ct)
    assert "unencrypted" in run.case("login", "plain-auto").reason
    apop = run.case("policy", "plain-apop")
    assert (apop.verdict, apop.outcome) == ("WARN", "passed"), apop
    assert "APOP" in apop.reason
    user = run.case("policy", "plain-user")
    assert (user.verdict, user.outcome) == ("WARN", "passed"), user
    assert "allow_cleartext" in user.reason


def test_capa_shows_the_capabilities_the_login_used(mixed_run: LabRun, mixed: Mixed) -> None:
    """Dovecot over STLS: the capa check lists the capabilities asked over TLS (those the
    login chose from) and says what STLS changed; the other modes say where they asked."""
    run = mixed_run.run
    stls = run.case("capa", mixed.starttls_id)
    assert stls.verdict == "OK", stls
    assert " capabilities over TLS (after STLS: " in stls.reason, stls
    assert "\u2212STLS" in stls.reason.split("):", 1)[0], stls
    assert "STLS" not in stls.reason.split("): ", 1)[1].split(", "), stls
    assert " capabilities over TLS: " in run.case("capa", mixed.tls_id).reason
    assert " capabilities in plaintext: " in run.case("capa", "plain-apop").reason


def test_latency_tests_exist_per_configured_phase(mixed_run: LabRun, mixed: Mixed) -> None:
    """One latency test per configured phase that the security mode can run, all passing."""
    run = mixed_run.run
    for ct, security in mixed.healthy.items():
        got = run.latency_params(ct)
        assert got == [f"{ct}-{p}" for p in EXPECTED_PHASES[security]], (ct, got)
        for param in got:
            case = run.case("latency", param)
            assert case.verdict == "OK" and case.outcome == "passed", case
            assert "< warning 20000 ms" in case.reason, case


def test_dovecot_sees_one_login_per_connection_type(mixed_run: LabRun, mixed: Mixed) -> None:
    """Exactly one login per healthy connection type (each has its own listener), and none
    for the broken ones (closed port, expired certificate, wrong and missing password)."""
    assert mixed_run.logins == collections.Counter(mixed.expected_logins)


def test_secrets_never_appear_in_output_or_junit(mixed_run: LabRun, dovecot: DovecotLab) -> None:
    """Neither the real nor the wrong password reaches the terminal or the JUnit file."""
    run = mixed_run.run
    for secret in (dovecot.demo_password, WRONG_PASSWORD):
        for where, text in (
            ("stdout", run.stdout),
            ("stderr", run.stderr),
            ("junit", run.junit_text),
        ):
            assert secret not in text, f"secret found in {where}"


# --------------------------------------------------------------------------- broken types


def test_closed_port_fails_tcp_and_skips_dependent_tiers(mixed_run: LabRun) -> None:
    """Closed port: TCP is CRIT; greeting, CAPA and every dependent tier skip naming TCP."""
    run = mixed_run.run
    tcp = run.case("tcp", "closed")
    assert (tcp.outcome, tcp.verdict) == ("failed", "CRIT"), tcp
    assert "connection refused" in tcp.reason
    assert tcp.message.startswith("CRIT closed tcp: TCP connect to localhost port"), tcp
    dependent = [
        c
        for c in run.for_ct("closed")
        if c.nodeid.split("::")[0].endswith(tuple(f"{m}.py" for m in DEPENDENT_TIER_MODULES))
    ]
    assert len(dependent) >= 10
    for case in [*dependent, run.case("greeting", "closed"), run.case("capa", "closed")]:
        assert case.outcome == "skipped", case
        if case is run.case("stls", "closed"):  # implicit TLS has no STLS step at all
            assert case.message == "not applicable: implicit TLS (no STLS)", case
            continue
        assert case.message.startswith("skipped: TCP connect failed: "), case
    assert run.case("dns", "closed").outcome == "passed"


def test_expired_certificate_is_crit_with_the_date(mixed_run: LabRun, mixed: Mixed) -> None:
    """Expired certificate: certificate and expiry CRIT with the date; auth and mailbox skip
    naming TLS (no fallback to plaintext, no login)."""
    run = mixed_run.run
    for test in ("certificate", "expiry"):
        case = run.case(test, "expired")
        assert (case.outcome, case.verdict) == ("failed", "CRIT"), case
        assert f"certificate expired {mixed.expired_date} (" in case.reason, case
        assert re.search(r"\(\d+ days ago\)", case.reason), case
    for test in ("login", "policy", "stat", "thresholds"):
        case = run.case(test, "expired")
        assert case.outcome == "skipped", case
        assert case.message.startswith("skipped: TLS handshake failed: certificate expired"), case


def test_wrong_password_fails_login_with_auth_code(mixed_run: LabRun) -> None:
    """Wrong password: login CRIT with ``[AUTH]``; STAT and thresholds skipped."""
    run = mixed_run.run
    login = run.case("login", "wrong-password")
    assert (login.outcome, login.verdict) == ("failed", "CRIT"), login
    assert "[AUTH]" in login.message, login
    for test in ("stat", "thresholds"):
        case = run.case(test, "wrong-password")
        assert case.outcome == "skipped", case
        assert case.message.startswith("skipped: authentication failed:"), case
    for test in ("tcp", "handshake", "certificate", "expiry"):
        assert run.case(test, "wrong-password").outcome == "passed"


def test_missing_password_variable_fails_only_that_auth_tier(
    mixed_run: LabRun, mixed: Mixed
) -> None:
    """An unset password variable fails that type's login, saying which variable; its
    connectivity and TLS tiers pass, and every other type is unaffected."""
    run = mixed_run.run
    login = run.case("login", "no-password")
    assert (login.outcome, login.verdict) == ("failed", "CRIT"), login
    assert f"environment variable {UNSET_PW_ENV} is not set" in login.reason, login
    for test in ("tcp", "greeting", "capa", "stls", "handshake", "certificate", "expiry"):
        assert run.case(test, "no-password").outcome == "passed", run.case(test, "no-password")
    for case in run.for_ct("no-password"):
        if case.outcome == "failed":
            assert case.nodeid.startswith("tests_targets/test_auth.py::test_login["), case
    failed_cts = {c.ct for c in run.cases.values() if c.outcome == "failed"}
    assert failed_cts == {"closed", "expired", "wrong-password", "no-password"}


# --------------------------------------------------------------------------- xdist


def test_xdist_gives_the_same_outcomes_per_test_id(
    mixed_run: LabRun, mixed_run_xdist: LabRun
) -> None:
    """``-n 2`` yields the same test ids with the same outcomes and verdicts."""
    serial, parallel = mixed_run.run, mixed_run_xdist.run
    assert parallel.returncode == serial.returncode, parallel.describe()
    assert parallel.outcomes() == serial.outcomes()
    assert parallel.verdicts() == serial.verdicts()
    assert "created: 2/2 workers" in parallel.stdout, parallel.describe()


def test_xdist_still_logs_in_once_per_connection_type(
    mixed_run_xdist: LabRun, mixed: Mixed
) -> None:
    """Two workers share one probe per connection type: Dovecot sees one login each."""
    assert mixed_run_xdist.logins == collections.Counter(mixed.expected_logins)


# --------------------------------------------------------------------------- PING


def _unprivileged_icmp_allowed() -> bool:
    try:
        low, high = Path("/proc/sys/net/ipv4/ping_group_range").read_text().split()
    except (OSError, ValueError):
        return False
    return any(int(low) <= gid <= int(high) for gid in (os.getgid(), *os.getgroups()))


def test_ping_as_root_is_ok(mixed_run: LabRun, mixed: Mixed) -> None:
    """``ping: true`` to 127.0.0.1 gets an echo reply when the runner may send ICMP."""
    if os.geteuid() != 0 and not _unprivileged_icmp_allowed():
        pytest.skip("this runner may not send ICMP (not root, ping_group_range excludes us)")
    case = mixed_run.run.case("ping", mixed.tls_id)
    assert (case.outcome, case.verdict) == ("passed", "OK"), case
    assert case.reason.startswith("echo reply in "), case


def test_ping_without_permission_skips_only_ping(dovecot: DovecotLab, workdir: Path) -> None:
    """Forced unprivileged ICMP where the kernel forbids it: PING skips saying so, nothing
    else is skipped (PING gates nothing when it could not run)."""
    if _unprivileged_icmp_allowed():
        pytest.skip("unprivileged ICMP is allowed here; no permission problem to provoke")
    targets = write_targets(
        workdir / "ping.yaml",
        {
            "version": 1,
            "servers": [
                {
                    "name": "lab",
                    "host": dovecot.hostname,
                    "ca_file": str(dovecot.ca_file),
                    "ping": True,
                    "mailbox": {"count": {"warn": 100, "crit": 200}},
                    "account": {"username": dovecot.demo_user, "password_env": PW_ENV},
                    "connections": [{"port": dovecot.port("pop3s"), "security": "tls"}],
                }
            ],
        },
    )
    run = run_suite(
        targets,
        workdir=workdir,
        env={PW_ENV: dovecot.demo_password, "POP3MON_PING_UNPRIVILEGED": "1"},
    )
    assert run.returncode == pytest.ExitCode.OK, run.describe()
    ping = run.case("ping", f"lab:{dovecot.port('pop3s')}-tls")
    assert (ping.outcome, ping.verdict) == ("skipped", "SKIP"), ping
    assert ping.message.startswith("this runner may not send ICMP echo"), ping
    # The drift checks SKIP too, without a history (no baseline), and block nothing.
    skipped = [
        c for c in run.cases.values() if c.outcome == "skipped" and "test_drift" not in c.nodeid
    ]
    # ping: true gives the server a host check; its PING SKIPs the same way, once, and the
    # connection type's ping check reads that one echo's result.
    assert {c.nodeid.split("::")[1].split("[")[0] for c in skipped} == {
        "test_host_ping",
        "test_ping",
        "test_stls",
    }
    host_ping = run.case("host_ping", "host:lab")
    assert host_ping.message.startswith("this runner may not send ICMP echo"), host_ping
    assert run.case("stls", f"lab:{dovecot.port('pop3s')}-tls").message.startswith("not applicable")
    # A POP3 connection type has no relay check (SMTP's), not even a SKIP row.
    assert not [c for c in run.cases.values() if "test_relay[" in c.nodeid]


# --------------------------------------------------------------------------- thresholds


@pytest.fixture(scope="module")
def thresholds_targets(dovecot: DovecotLab, workdir: Path) -> Path:
    """Connection types on the healthy implicit-TLS listener whose thresholds trip.

    The lab's valid certificate has about a year left; the demo mailbox holds 3 messages.
    """
    port = dovecot.port("pop3s")

    def conn(ct_id: str, **extra: Any) -> dict[str, Any]:
        return {"id": ct_id, "port": port, "security": "tls", **extra}

    return write_targets(
        workdir / "thresholds.yaml",
        {
            "version": 1,
            "defaults": {
                "ca_file": str(dovecot.ca_file),
                "account": {"username": dovecot.demo_user, "password_env": PW_ENV},
            },
            "servers": [
                {
                    "name": "lab",
                    "host": dovecot.hostname,
                    "connections": [
                        conn("cert-warn", cert={"warn_days": 3000, "crit_days": 7}),
                        conn("cert-crit", cert={"warn_days": 3650, "crit_days": 3000}),
                        conn("latency-warn", latency={"total": {"warn": 1e-6, "crit": 60}}),
                        conn("latency-crit", latency={"total": {"warn": 1e-6, "crit": 2e-6}}),
                        conn("count-warn", mailbox={"count": {"warn": 2, "crit": 10}}),
                        conn("count-crit", mailbox={"count": {"warn": 1, "crit": 3}}),
                        conn("size-warn", mailbox={"size": {"warn": 100, "crit": "1GB"}}),
                        conn("stat-min", mailbox={"stat_min": 5}),
                        conn("stat-max", mailbox={"stat_max": 2}),
                        conn("stat-exact", mailbox={"stat_min": 3, "stat_max": 3}),
                    ],
                }
            ],
        },
    )


@pytest.fixture(scope="module")
def thresholds_run(dovecot: DovecotLab, thresholds_targets: Path, workdir: Path) -> LabRun:
    """The thresholds targets, run once."""
    before = dovecot.login_counts()
    run = run_suite(thresholds_targets, workdir=workdir, env={PW_ENV: dovecot.demo_password})
    expected = {(dovecot.demo_user, dovecot.port("pop3s")): 10}
    return LabRun(run, login_delta(dovecot, before, expected))


# (connection id, test, verdict, a piece of the reason)
THRESHOLD_CASES = [
    ("cert-warn", "expiry", "WARN", "; warning below 3000 days"),
    ("cert-crit", "expiry", "CRIT", "; critical below 3000 days"),
    ("latency-warn", "latency", "WARN", "≥ warning 0.001 ms"),
    ("latency-crit", "latency", "CRIT", "≥ critical 0.002 ms"),
    ("count-warn", "thresholds", "WARN", "3 messages ≥ warning 2"),
    ("count-crit", "thresholds", "CRIT", "3 messages ≥ critical 3"),
    ("size-warn", "thresholds", "WARN", "octets ≥ warning 100"),
    ("stat-min", "stat", "CRIT", "3 messages, "),
    ("stat-max", "stat", "CRIT", "; expected at most 2"),
    ("stat-exact", "stat", "OK", "3 messages, "),
]


def _threshold_case(run: SuiteRun, ct: str, test: str) -> Case:
    return run.case(test, f"{ct}-total" if test == "latency" else ct)


@pytest.mark.parametrize(("ct", "test", "verdict", "text"), THRESHOLD_CASES)
def test_thresholds_give_warn_and_crit(
    thresholds_run: LabRun, ct: str, test: str, verdict: str, text: str
) -> None:
    """Certificate days, latency, message count/size and stat_min/stat_max thresholds give
    the expected verdict; WARN passes, CRIT fails."""
    case = _threshold_case(thresholds_run.run, ct, test)
    assert case.verdict == verdict, case
    assert case.outcome == ("failed" if verdict == "CRIT" else "passed"), case
    assert text in case.reason, case
    if ct == "stat-min":
        assert case.reason.endswith("; expected at least 5"), case


def test_only_the_thresholds_fail(thresholds_run: LabRun) -> None:
    """Nothing else fails: every failure is one of the CRIT threshold cases."""
    run = thresholds_run.run
    failed = {c.nodeid for c in run.cases.values() if c.outcome == "failed"}
    crits = {
        _threshold_case(run, ct, test).nodeid
        for ct, test, verdict, _ in THRESHOLD_CASES
        if verdict == "CRIT"
    }
    assert failed == crits, run.describe()


def test_warn_shows_in_the_terminal_summary(thresholds_run: LabRun) -> None:
    """Every WARN is listed in the summary's WARN section with its reason."""
    run = thresholds_run.run
    assert "pop3mon summary" in run.stdout, run.describe()
    section = run.stdout.split("\nWARN (", 1)[1]
    warns = [c for c in run.cases.values() if c.verdict == "WARN"]
    assert section.startswith(f"{len(warns)}):"), section
    for case in warns:
        assert f"  {case.ct} {case.props['pop3mon_tier']}/" in section, case
    assert re.search(
        r"  cert-warn tls/expiry: certificate expires \S+ \(in \d+ days\); "
        r"warning below 3000 days",
        section,
    ), section
    assert "  count-warn mailbox/thresholds: 3 messages ≥ warning 2" in section
    assert "  latency-warn latency/latency-total: total " in section


def test_strict_warn_turns_warn_into_failure(
    thresholds_run: LabRun, thresholds_targets: Path, dovecot: DovecotLab, workdir: Path
) -> None:
    """``--strict-warn``: every WARN case fails (saying so); all other outcomes stay."""
    base = thresholds_run.run
    strict = run_suite(
        thresholds_targets, "--strict-warn", workdir=workdir, env={PW_ENV: dovecot.demo_password}
    )
    assert strict.returncode == pytest.ExitCode.TESTS_FAILED, strict.describe()
    assert set(strict.cases) == set(base.cases)
    for nodeid, case in base.cases.items():
        now = strict.cases[nodeid]
        assert now.verdict == case.verdict, (case, now)
        if case.verdict == "WARN":
            assert now.outcome == "failed", now
            assert now.message.startswith(f"WARN {case.ct} "), now
            assert now.message.endswith("(--strict-warn)"), now
        else:
            assert now.outcome == case.outcome, (case, now)


def test_thresholds_run_logs_in_once_per_type(thresholds_run: LabRun, dovecot: DovecotLab) -> None:
    """Ten connection types on one listener: exactly ten logins."""
    assert thresholds_run.logins == collections.Counter(
        {(dovecot.demo_user, dovecot.port("pop3s")): 10}
    )


# --------------------------------------------------------------------------- deselection


def test_k_deselection_logs_in_to_nothing_deselected(
    dovecot: DovecotLab, mixed: Mixed, workdir: Path
) -> None:
    """``-k <one id>`` runs that connection type's tests only and logs in only there."""
    port = dovecot.port("pop3s")
    expected = {(dovecot.demo_user, port): 1}
    got = _lab_run(dovecot, mixed, workdir, "-k", mixed.tls_id, expected=expected)
    run = got.run
    assert run.returncode == pytest.ExitCode.OK, run.describe()
    assert {c.ct for c in run.cases.values()} == {mixed.tls_id}
    assert all(c.outcome in ("passed", "skipped") for c in run.cases.values())
    assert got.logins == collections.Counter(expected)


def test_m_tls_logs_in_to_nothing(
    dovecot: DovecotLab, mixed: Mixed, mixed_run: LabRun, workdir: Path
) -> None:
    """``-m tls`` deselects the auth, mailbox and latency tiers: the TLS verdicts are those
    of the full run, and no connection type is logged in to."""
    got = _lab_run(dovecot, mixed, workdir, "-m", "tls", expected={})
    run = got.run
    assert run.cases, run.describe()
    assert all("/test_tls.py::" in nodeid for nodeid in run.cases), run.describe()
    full = mixed_run.run
    promoted = []
    for nodeid, case in run.cases.items():
        if "reported here" in case.reason:
            # The closed port's root cause (the tcp check) is deselected: the first TLS check
            # it blocks reports it instead of the run passing over a dead server.
            promoted.append(case)
            assert full.cases[nodeid].verdict == "SKIP", case
            continue
        assert (case.outcome, case.verdict) == (
            full.cases[nodeid].outcome,
            full.cases[nodeid].verdict,
        ), case
    assert [(c.ct, c.verdict) for c in promoted] == [("closed", "CRIT")], run.describe()
    assert "TCP connect failed" in promoted[0].reason
    assert run.returncode == 1, run.describe()
    assert got.logins == collections.Counter()


def test_deselected_root_cause_still_fails_the_run(
    dovecot: DovecotLab, mixed: Mixed, workdir: Path
) -> None:
    """``-m "auth or mailbox"`` deselects connectivity and TLS: each broken connection type
    still fails exactly once, in its first selected check that its failure blocks, naming
    the failure and the deselected check that owns it; healthy ones pass."""
    got = _lab_run(dovecot, mixed, workdir, "-m", "auth or mailbox", expected=mixed.expected_logins)
    run = got.run
    crit = collections.Counter(c.ct for c in run.cases.values() if c.verdict == "CRIT")
    assert crit == {
        "closed": 1,
        "expired": 1,
        "wrong-password": 1,
        "no-password": 1,
    }, run.describe()
    closed = next(c for c in run.cases.values() if c.ct == "closed" and c.verdict == "CRIT")
    assert closed.nodeid.endswith("test_login[closed]"), closed
    assert "TCP connect failed" in closed.reason and "'tcp' check" in closed.reason
    expired = next(c for c in run.cases.values() if c.ct == "expired" and c.verdict == "CRIT")
    assert "certificate expired" in expired.reason and "'certificate'" in expired.reason
    # The wrong password's owner (login) is selected: no promotion there.
    wrong = run.case("login", "wrong-password")
    assert "reported here" not in wrong.reason and "[AUTH]" in wrong.reason
    assert run.returncode == 1, run.describe()


# --------------------------------------------------------------------------- fault server


@dataclass
class FaultLab:
    """Fault servers for one run: one without STLS, one healthy but slow."""

    nostls: FaultServer
    slow: FaultServer
    targets: Path
    slow_ids: tuple[str, ...]


SLOW_TYPES = 3
#: Connections the fault lab's host check (server "fault": four connection types) opens to
#: each of its two ports: one TCP connect, closed without a byte.
HOST_CONNECTS = 1
RESPONSE_DELAY = 0.1  # seconds before every response line: a probe takes ~0.8 s


def _fault_lab(stack: ExitStack, certs: LabCerts, workdir: Path, name: str) -> FaultLab:
    users = {"alice": FAULT_PASSWORD}
    pair = certs.valid
    nostls = stack.enter_context(
        FaultServer("no-stls", users=users, certfile=pair.cert, keyfile=pair.key)
    )
    slow = stack.enter_context(
        FaultServer(
            "healthy",
            users=users,
            certfile=pair.cert,
            keyfile=pair.key,
            response_delay=RESPONSE_DELAY,
        )
    )
    slow_ids = tuple(f"slow-{i}" for i in range(1, SLOW_TYPES + 1))
    connections: list[dict[str, Any]] = [{"port": nostls.port, "security": "starttls"}]
    connections += [{"id": i, "port": slow.port, "security": "starttls"} for i in slow_ids]
    targets = write_targets(
        workdir / f"{name}.yaml",
        {
            "version": 1,
            "defaults": {
                "ca_file": str(certs.ca_file),
                "account": {"username": "alice", "password_env": PW_ENV},
            },
            "servers": [{"name": "fault", "host": certs.hostname, "connections": connections}],
        },
    )
    return FaultLab(nostls, slow, targets, slow_ids)


@dataclass
class FaultRun:
    """A suite run against fresh fault servers."""

    lab: FaultLab
    run: SuiteRun


@contextmanager
def _fault_run(certs: LabCerts, workdir: Path, name: str, *args: str) -> Iterator[FaultRun]:
    """Fresh fault servers, one suite run against them; the servers stop on exit."""
    with ExitStack() as stack:
        lab = _fault_lab(stack, certs, workdir, name)
        run = run_suite(lab.targets, *args, workdir=workdir, env={PW_ENV: FAULT_PASSWORD})
        lab.slow.wait_idle(5.0)
        lab.nostls.wait_idle(5.0)
        yield FaultRun(lab, run)


@pytest.fixture(scope="module")
def fault_run(lab_certs: LabCerts, workdir: Path) -> Iterator[FaultRun]:
    """One run against the fault servers, default concurrency."""
    with _fault_run(lab_certs, workdir, "fault") as got:
        yield got


@pytest.fixture(scope="module")
def fault_run_xdist(lab_certs: LabCerts, workdir: Path) -> Iterator[FaultRun]:
    """The same with ``-n 2``."""
    pytest.importorskip("xdist")
    with _fault_run(lab_certs, workdir, "fault-xdist", "-n", "2") as got:
        yield got


def test_stls_required_without_stls_sends_no_credentials(fault_run: FaultRun) -> None:
    """STLS required, server offers none: STLS CRIT, auth skipped, and the server received
    no USER, PASS, APOP or AUTH at all (nor the password in any form)."""
    run, lab = fault_run.run, fault_run.lab
    ct = f"fault:{lab.nostls.port}-starttls"
    stls = run.case("stls", ct)
    assert (stls.outcome, stls.verdict) == ("failed", "CRIT"), stls
    assert "did not offer STLS" in stls.reason, stls
    for test in ("login", "policy", "stat"):
        case = run.case(test, ct)
        assert case.outcome == "skipped", case
        assert case.message.startswith("skipped: STLS failed: server did not offer STLS"), case
    commands = lab.nostls.commands()
    assert commands and commands[0] == "CAPA", commands
    assert not {"USER", "PASS", "APOP", "AUTH"} & set(commands), commands
    assert FAULT_PASSWORD.encode() not in lab.nostls.plaintext_bytes()
    assert lab.nostls.logins == 0


def test_probes_overlap(fault_run: FaultRun) -> None:
    """All slow connection types are probed at once: every connection reached the server
    before the first of them sent QUIT (each probe takes several delayed answers)."""
    run, slow = fault_run.run, fault_run.lab.slow
    for ct in fault_run.lab.slow_ids:
        assert run.case("login", ct).outcome == "passed", run.case("login", ct)
    connects = slow.log.events("connect")
    quits = [e for e in slow.log.entries() if e.verb == "QUIT"]
    # One more connect than connection types: the host check's TCP connect to the port
    # (four connection types on one server share one host check), which sends nothing.
    assert len(connects) == SLOW_TYPES + HOST_CONNECTS and len(quits) == SLOW_TYPES
    assert max(e.time for e in connects) < min(e.time for e in quits)
    assert slow.logins == SLOW_TYPES


def test_probe_concurrency_one_is_serial(lab_certs: LabCerts, workdir: Path) -> None:
    """The contrast that shows the overlap check means something: with
    ``--probe-concurrency=1`` each connection starts after the previous one sent QUIT."""
    with _fault_run(lab_certs, workdir, "fault-serial", "--probe-concurrency=1") as got:
        slow = got.lab.slow
        quit_at = {e.conn: e.time for e in slow.log.entries() if e.verb == "QUIT"}
        every = sorted(slow.log.events("connect"), key=lambda e: e.time)
        # The host check's TCP connect (no command, no QUIT) comes before every probe.
        host_check = [e for e in every if e.conn not in quit_at]
        assert len(host_check) == HOST_CONNECTS and host_check[0] == every[0]
        connects = [e for e in every if e.conn in quit_at]
        assert len(connects) == SLOW_TYPES == len(quit_at)
        for earlier, later in itertools.pairwise(connects):
            assert later.time > quit_at[earlier.conn]
        assert slow.logins == SLOW_TYPES


def test_fault_server_sees_one_login_per_type_with_xdist(
    fault_run: FaultRun, fault_run_xdist: FaultRun
) -> None:
    """Under ``-n 2`` the fault server also sees exactly one login per connection type,
    and the outcomes per test id equal those without xdist."""
    # Plus the host check's one TCP connect per port: once per run, not once per worker.
    assert fault_run_xdist.lab.slow.logins == SLOW_TYPES
    assert fault_run_xdist.lab.slow.connections == SLOW_TYPES + HOST_CONNECTS
    assert fault_run_xdist.lab.nostls.connections == 1 + HOST_CONNECTS
    assert fault_run.lab.nostls.connections == 1 + HOST_CONNECTS
    assert _portless(fault_run_xdist) == _portless(fault_run)


def _portless(got: FaultRun) -> dict[str, tuple[str, str]]:
    """Outcome and verdict per test id, with the fault server's port replaced (each run
    has its own servers, so derived ids differ in the port only)."""
    port = str(got.lab.nostls.port)
    return {
        nodeid.replace(port, "PORT"): (c.outcome, c.verdict) for nodeid, c in got.run.cases.items()
    }


# --------------------------------------------------------------------------- collection, ids


def test_collect_only_probes_nothing_and_ids_are_stable(
    fault_run: FaultRun, lab_certs: LabCerts, workdir: Path
) -> None:
    """``--collect-only`` connects to no server; the ids it lists are those of a real run
    (readable ``<server>:<port>-<security>`` or the explicit id, never a secret)."""
    with ExitStack() as stack:
        lab = _fault_lab(stack, lab_certs, workdir, "collect")
        run = run_suite(
            lab.targets, "--collect-only", "-q", workdir=workdir, env={PW_ENV: FAULT_PASSWORD}
        )
        time.sleep(0.2)
        assert lab.nostls.connections == 0 and lab.slow.connections == 0
    assert run.returncode == pytest.ExitCode.OK, run.describe()
    ids = run.collected_ids()
    assert ids
    params = {_param(i) for i in ids if "::test_latency[" not in i}
    derived = f"fault:{lab.nostls.port}-starttls"
    # The server's host check (host:<server name>) besides its connection types.
    assert params == {derived, *lab.slow_ids, "host:fault"}
    assert DERIVED_ID.fullmatch(derived)
    assert FAULT_PASSWORD not in run.stdout + run.stderr
    # The same targets (but other server ports) in a real run gave the same ids.
    assert {i.replace(str(lab.nostls.port), "PORT") for i in ids} == set(_portless(fault_run))


def test_ids_are_readable_for_dovecot_types(mixed_run: LabRun, mixed: Mixed) -> None:
    """Derived ids are ``lab:<port>-<security>``; explicit ids are used verbatim."""
    params = {c.ct for c in mixed_run.run.cases.values()}
    assert params == {
        mixed.tls_id,
        mixed.starttls_id,
        "plain-apop",
        "plain-user",
        "plain-auto",
        "closed",
        "expired",
        "wrong-password",
        "no-password",
        "host:lab",  # the server's host check (PING, TCP), shared by these
    }
    assert DERIVED_ID.fullmatch(mixed.tls_id) and DERIVED_ID.fullmatch(mixed.starttls_id)


# --------------------------------------------------------------------------- bad config

BAD_CONFIGS = {
    "several-problems": (
        "version: 1\n"
        "servers:\n"
        "  - name: mail1\n"
        "    hostname: mail1.example\n"
        "    connections:\n"
        "      - port: 995\n"
        "        security: startls\n"
        "        account: {username: u, password: hunter2}\n",
        [
            (4, "servers[0].hostname: unknown key — did you mean 'host'?"),
            (7, "servers[0].connections[0].security: 'startls' is not one of none,"),
            (8, "servers[0].connections[0].account.password: literal passwords are not allowed"),
        ],
    ),
    "bad-port": (
        "version: 1\n"
        "servers:\n"
        "  - name: mail1\n"
        "    host: mail1.example\n"
        "    connections:\n"
        "      - {port: 99999, security: tls, auth: none}\n",
        [(6, "servers[0].connections[0].port: 99999 is out of range")],
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_is_a_usage_error_with_file_and_line(name: str, workdir: Path) -> None:
    """A bad targets file stops the run before any test with exit code 4 and one line per
    problem, each ``<file>:<line>: <field>: <what is wrong>``; secrets are not echoed."""
    text, problems = BAD_CONFIGS[name]
    path = workdir / f"bad-{name}.yaml"
    path.write_text(text, encoding="utf-8")
    run = run_suite(path, workdir=workdir)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.describe()
    assert not run.cases
    lines = [line for line in run.stderr.splitlines() if line.startswith(f"{path}:")]
    assert len(lines) == len(problems), run.describe()
    for line, (number, start) in zip(lines, problems, strict=True):
        assert line.startswith(f"{path}:{number}: {start}"), line
    assert "pop3mon: invalid targets file" in run.stderr
    assert "hunter2" not in run.stdout + run.stderr


# --------------------------------------------------------------------------- deselected roots

#: Runs that select some tiers/checks only, and whether they make the probes log in.
DESELECTIONS: Mapping[str, tuple[tuple[str, ...], bool]] = {
    "connectivity": (("-m", "connectivity"), False),
    "tls": (("-m", "tls"), False),
    "auth": (("-m", "auth"), True),
    "mailbox": (("-m", "mailbox"), True),
    "latency": (("-m", "latency"), True),
    "tls-or-mailbox": (("-m", "tls or mailbox"), True),
    "k-expiry": (("-k", "expiry"), False),
    "k-stat-or-capa": (("-k", "test_stat or test_capa"), True),
    "tls-k-protocol": (("-m", "tls", "-k", "protocol"), False),
    "tls-xdist": (("-m", "tls", "-n", "2"), False),
}
SECURITY = ("none", "starttls-optional", "starttls", "tls")


@dataclass
class DeadLab:
    """Dead, half-dead and healthy connection types of every security mode, and what each
    dead one's root cause says (``(text, needs_login)``: a login failure only exists in a
    run that logs in)."""

    targets: Path
    roots: Mapping[str, tuple[str, bool]]
    security: Mapping[str, str]
    runs: dict[str, SuiteRun] = field(default_factory=dict)

    def run(self, selection: str, workdir: Path) -> SuiteRun:
        """The suite run for one of :data:`DESELECTIONS` (each runs once per module)."""
        if selection not in self.runs:
            args = DESELECTIONS[selection][0]
            self.runs[selection] = run_suite(
                self.targets, *args, workdir=workdir, env={PW_ENV: FAULT_PASSWORD}
            )
        return self.runs[selection]


@pytest.fixture(scope="module")
def dead_lab(lab_certs: LabCerts, closed_port: int, workdir: Path) -> Iterator[DeadLab]:
    """A closed port in every security mode, with and without a login; a greeting -ERR, a
    plain-text server behind ``security: tls``, a server without STLS and one refusing
    every login; healthy fault servers in every mode as the control."""
    users = {"alice": FAULT_PASSWORD}
    pair = lab_certs.valid
    with ExitStack() as stack:

        def server(scenario: str, **kw: Any) -> int:
            srv = stack.enter_context(FaultServer(scenario, users=users, **kw))
            return int(srv.port)

        cert = {"certfile": pair.cert, "keyfile": pair.key}
        plain, implicit = server("healthy", **cert), server("healthy", **cert, implicit_tls=True)
        connections: list[dict[str, Any]] = []
        roots: dict[str, tuple[str, bool]] = {}
        security: dict[str, str] = {}

        def add(
            ct: str, port: int, mode: str, root: str = "", *, login: bool = False, **kw: Any
        ) -> None:
            connections.append({"id": ct, "port": port, "security": mode, **kw})
            security[ct] = mode
            if root:
                roots[ct] = (root, login)

        for mode in SECURITY:
            add(f"refused-{mode}", closed_port, mode, "connection refused")
            add(f"refused-{mode}-noacct", closed_port, mode, "connection refused", auth="none")
            add(f"fine-{mode}", implicit if mode == "tls" else plain, mode)
        add("greeting-none", server("err-greeting"), "none", "go away")
        add("greeting-starttls", server("err-greeting"), "starttls", "go away")
        add("handshake-tls", server("healthy"), "tls", "did not speak TLS")
        add("nostls-starttls", server("no-stls", **cert), "starttls", "did not offer STLS")
        add(
            "badlogin-starttls", server("auth-code", **cert), "starttls", "bad password", login=True
        )
        targets = write_targets(
            workdir / "dead.yaml",
            {
                "version": 1,
                "defaults": {
                    "ca_file": str(lab_certs.ca_file),
                    "account": {"username": "alice", "password_env": PW_ENV},
                    "timeout": 5,
                    # Fault servers: no address penalty to wait out (test_pacing.py's subject).
                    "login_pacing": "parallel",
                },
                "servers": [
                    {"name": "dead", "host": lab_certs.hostname, "connections": connections}
                ],
            },
        )
        yield DeadLab(targets, roots, security)


@pytest.mark.parametrize("mode", SECURITY)
@pytest.mark.parametrize("selection", sorted(DESELECTIONS))
def test_every_selection_fails_on_a_dead_connection_type(
    dead_lab: DeadLab, workdir: Path, selection: str, mode: str
) -> None:
    """Whatever tiers or checks a run selects, a connection type whose root cause (TCP,
    greeting, TLS, STLS, login) lies in a deselected check still fails the run, in exactly
    one test that names the cause; TLS checks "not applicable" to plain text and mailbox
    checks without a login do not hide it. Healthy types of the same mode never fail."""
    if "-n" in DESELECTIONS[selection][0]:
        pytest.importorskip("xdist")
    run = dead_lab.run(selection, workdir)
    logs_in = DESELECTIONS[selection][1]
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.describe()
    for ct, ct_mode in dead_lab.security.items():
        if ct_mode != mode:
            continue
        cases = run.for_ct(ct)
        assert cases, f"{ct}: nothing selected\n{run.describe()}"
        failed = [c for c in cases if c.outcome == "failed"]
        root, needs_login = dead_lab.roots.get(ct, ("", False))
        if not root or (needs_login and not logs_in):
            assert not failed, f"{ct}: {failed}"
            continue
        assert len(failed) == 1, f"{ct}: {failed}\n{run.describe()}"
        assert failed[0].verdict == "CRIT" and root in failed[0].reason, failed[0]
