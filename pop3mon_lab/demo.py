"""The built-in demo: a lab of POP3 servers on 127.0.0.1, a targets file, one monitoring run.

Run it with ``./ci/demo`` (which prepares ``.venv`` and Dovecot first) or directly::

    python -m pop3mon_lab.demo [--reports DIR] [--backend auto|dovecot|faultserver]
                                       [--serve] [--verbose] [-- PYTEST ARGS]

What it does:

1. Generates a private CA and certificates (:mod:`.certs`) and starts the lab: real Dovecot
   (:class:`.dovecot.DovecotLab`) with one master per certificate variant (``valid``,
   ``expired``, ``wrong_host``), listening on free ports of 127.0.0.1 only. Where Dovecot is
   not installed (or does not start) it says so and uses the project's reference server
   (:class:`.faultserver.FaultServer`, scenario ``healthy``) with the same certificates.
2. Writes ``DIR/demo-targets.yaml``: seven connection types, three healthy (implicit TLS, STLS
   with SCRAM-SHA-256, plaintext with APOP) and four broken on purpose (expired certificate,
   wrong host name, closed port, wrong password). The demo account's password is random per
   run and reaches pytest through the environment variable ``POP3MON_DEMO_PASSWORD``; the
   wrong password is read from a file (``password_file``). Neither is in the YAML.
3. Runs ``ci/run-monitor --targets=DIR/demo-targets.yaml --reports=DIR``, the same entry point
   scheduled runs use; pytest's output goes to ``DIR/demo-pytest.log`` (``--verbose`` shows it).
4. Reads the verdicts back from ``DIR/junit.xml``, prints a one-screen summary and where the
   reports are, and stops everything it started, also on Ctrl-C, SIGTERM or an error.

Exit status:

* 0 - the run behaved as the demo expects: every healthy connection type has no CRIT/ERROR
  and logged in; every broken one failed with CRIT in the check it is broken for, and nothing
  before that check failed. (pytest itself exits 1 here, because broken servers fail checks.)
* 1 - some verdict differs from that expectation (the summary says which): a bug in pop3mon,
  in the lab, or something odd about this machine.
* 2 - the demo could not run: no lab could be started, bad arguments, pytest did not produce
  verdicts.
* 130 - interrupted.

``--serve`` starts the lab, writes the targets file and waits for Ctrl-C instead of running
the suite, for trying ``pytest --targets=...`` options by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final, Literal

from .certs import LabCerts, generate_lab_certs
from .dovecot import DEFAULT_MAILBOXES, DovecotLab, LabError, LabUnavailable, free_port
from .faultserver import FaultServer

__all__ = [
    "DEMO_CONNECTIONS",
    "DemoConnection",
    "DemoLab",
    "Outcome",
    "evaluate",
    "main",
    "read_junit",
    "targets_yaml",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
PASSWORD_ENV: Final = "POP3MON_DEMO_PASSWORD"
DEMO_USER: Final = "demo"
HOST: Final = "127.0.0.1"
SNI: Final = "localhost"
TIERS: Final[tuple[str, ...]] = ("connectivity", "tls", "auth", "mailbox", "latency")
_RANK: Final = {"SKIP": 0, "OK": 1, "WARN": 2, "CRIT": 3, "ERROR": 4}

EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1
EXIT_ERROR: Final = 2
EXIT_INTERRUPTED: Final = 130

Endpoint = Literal["tls", "stls", "expired", "wrong_host", "closed"]


@dataclass(frozen=True)
class DemoConnection:
    """One connection type of the demo and what the monitor must say about it.

    ``expect_crit`` is ``(tier, check)`` for a broken connection type: that check must be
    CRIT and no check of an earlier tier may be CRIT/ERROR. ``None`` means healthy: no
    CRIT/ERROR at all and a successful login.
    """

    id: str
    what: str
    endpoint: Endpoint
    security: str
    auth: str
    expect_crit: tuple[str, str] | None = None
    wrong_password: bool = False

    @property
    def healthy(self) -> bool:
        """True for the connection types that must pass."""
        return self.expect_crit is None


DEMO_CONNECTIONS: Final[tuple[DemoConnection, ...]] = (
    DemoConnection("healthy-tls", "implicit TLS, valid certificate", "tls", "tls", "auto"),
    DemoConnection(
        "healthy-starttls", "STLS required, SCRAM-SHA-256", "stls", "starttls", "scram-sha-256"
    ),
    DemoConnection("healthy-apop", "plaintext port, APOP login", "stls", "none", "apop"),
    DemoConnection(
        "broken-expired-cert",
        "certificate expired 2021",
        "expired",
        "tls",
        "auto",
        expect_crit=("tls", "certificate"),
    ),
    DemoConnection(
        "broken-wrong-host",
        "certificate for wrong.example",
        "wrong_host",
        "tls",
        "auto",
        expect_crit=("tls", "certificate"),
    ),
    DemoConnection(
        "broken-closed-port",
        "nothing listens there",
        "closed",
        "tls",
        "auto",
        expect_crit=("connectivity", "tcp"),
    ),
    DemoConnection(
        "broken-wrong-password",
        "valid server, wrong password",
        "tls",
        "tls",
        "auto",
        expect_crit=("auth", "login"),
        wrong_password=True,
    ),
)


# --------------------------------------------------------------------------- the lab


@dataclass(frozen=True)
class DemoLab:
    """What a started lab offers: its ports on 127.0.0.1 and the certificates it uses."""

    backend: Literal["dovecot", "faultserver"]
    description: str
    certs: LabCerts
    ports: dict[str, int]
    logs: tuple[Path, ...] = ()


def _dovecot_version(binary: Path) -> str:
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.split()[0] if out else ""


def start_dovecot_lab(
    stack: contextlib.ExitStack, certs: LabCerts, workdir: Path, password: str
) -> DemoLab:
    """Real Dovecot: one master per certificate variant; raises :class:`LabError`."""
    lab = DovecotLab(
        certs,
        variants=("expired", "wrong_host"),
        users={DEMO_USER: password},
        mailboxes={DEMO_USER: DEFAULT_MAILBOXES["demo"]},
        workdir=workdir,
    )
    stack.enter_context(lab)
    version = _dovecot_version(lab.binary)
    return DemoLab(
        backend="dovecot",
        description=f"Dovecot {version or '(version unknown)'} ({lab.binary})",
        certs=certs,
        ports={
            "tls": lab.port("pop3s"),
            "stls": lab.port("pop3"),
            "expired": lab.port("pop3s", "expired"),
            "wrong_host": lab.port("pop3s", "wrong_host"),
        },
        logs=tuple(lab.instance(v).log_path for v in lab.variants),
    )


def start_fault_lab(stack: contextlib.ExitStack, certs: LabCerts, password: str) -> DemoLab:
    """The project's reference server (FaultServer ``healthy``) in this process."""
    users = {DEMO_USER: password}

    def server(variant: str, implicit_tls: bool) -> int:
        pair = certs.variant(variant)
        srv = FaultServer(
            "healthy",
            users=users,
            certfile=pair.cert,
            keyfile=pair.key,
            implicit_tls=implicit_tls,
            messages=3,
            hostname=SNI,
        )
        stack.enter_context(srv)
        return srv.port

    return DemoLab(
        backend="faultserver",
        description="pop3mon reference server (FaultServer, scenario 'healthy')",
        certs=certs,
        ports={
            "tls": server("valid", True),
            "stls": server("valid", False),
            "expired": server("expired", True),
            "wrong_host": server("wrong_host", True),
        },
    )


def start_lab(
    stack: contextlib.ExitStack,
    backend: str,
    workdir: Path,
    password: str,
    say: _Say,
) -> DemoLab:
    """Start the lab for ``backend`` (``auto`` prefers Dovecot and falls back)."""
    certs = generate_lab_certs(workdir / "certs")
    if backend in ("auto", "dovecot"):
        try:
            return start_dovecot_lab(stack, certs, workdir / "dovecot", password)
        except LabUnavailable as exc:
            if backend == "dovecot":
                raise
            say.note(
                f"Dovecot is not available: {exc}.\n"
                "Falling back to pop3mon's own reference POP3 server (FaultServer, 'healthy').\n"
                "For real Dovecot run ./ci/demo as root on Debian/Ubuntu (it installs "
                "dovecot-pop3d without starting its service)."
            )
        except LabError as exc:
            if backend == "dovecot":
                raise
            tail = "\n".join(str(exc).splitlines()[:12])
            say.note(
                f"Dovecot is installed but did not start:\n{tail}\n"
                "Falling back to pop3mon's own reference POP3 server (FaultServer, 'healthy')."
            )
    return start_fault_lab(stack, certs, password)


# --------------------------------------------------------------------------- targets


def targets_yaml(lab: DemoLab, ca_file: str, wrong_password_file: str) -> str:
    """The demo's targets file; secrets are references only (env var and file)."""
    lines = [
        "# pop3mon demo targets, written by `python -m pop3mon_lab.demo`.",
        f"# The lab ({lab.backend}) listens on 127.0.0.1 only and is gone after the demo.",
        f"# The demo password is in the environment variable {PASSWORD_ENV}; the wrong",
        "# password of broken-wrong-password is read from a file. Neither is in this file.",
        "version: 1",
        "defaults:",
        "  timeout: 5",
        f"  ca_file: {ca_file}  # the demo's own CA",
        "  tags: [demo]",
        "  # The lab's Dovecot answers a wrong password at once and keeps no address penalty:",
        "  # logins need not take turns (production servers keep the default, serial).",
        "  login_pacing: parallel",
        f"  account: {{username: {DEMO_USER}, password_env: {PASSWORD_ENV}}}",
        "  mailbox: {stat_min: 1}  # the demo mailbox holds seeded messages",
        "servers:",
    ]
    for server, healthy in (("healthy", True), ("broken", False)):
        lines += [
            f"  - name: {server}",
            f"    host: {SNI}  # SNI and certificate name",
            f"    address: {HOST}  # connect here; never resolve or leave loopback",
            f"    tags: [{server}]",
            "    connections:",
        ]
        for conn in DEMO_CONNECTIONS:
            if conn.healthy != healthy:
                continue
            port = lab.ports[conn.endpoint]
            lines += [
                f"      - id: {conn.id}  # {conn.what}",
                f"        port: {port}",
                f"        security: {conn.security}",
                f"        auth: {conn.auth}",
            ]
            if conn.wrong_password:
                lines.append(
                    f"        account: {{username: {DEMO_USER}, "
                    f"password_file: {wrong_password_file}}}"
                )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- verdicts


@dataclass
class Outcome:
    """What the run said about one demo connection type, and whether that was expected."""

    conn: DemoConnection
    tiers: dict[str, str] = dataclasses.field(default_factory=dict)
    checks: dict[tuple[str, str], tuple[str, str]] = dataclasses.field(default_factory=dict)
    expected: bool = False
    why: str = ""

    @property
    def worst(self) -> str:
        """The worst verdict of all checks (SKIP when nothing ran)."""
        verdicts = [v for v, _ in self.checks.values()]
        return max(verdicts, key=lambda v: _RANK.get(v, 4)) if verdicts else "SKIP"

    def first(self, verdicts: Sequence[str]) -> tuple[str, str, str] | None:
        """``(tier/check, verdict, reason)`` of the first check (tier order) in ``verdicts``."""
        for tier in TIERS:
            for (t, check), (verdict, reason) in self.checks.items():
                if t == tier and verdict in verdicts:
                    return f"{t}/{check}", verdict, reason
        return None


def read_junit(path: Path) -> dict[str, dict[tuple[str, str], tuple[str, str]]]:
    """``{connection id: {(tier, check): (verdict, reason)}}`` from pytest's JUnit XML."""
    root = ET.parse(path).getroot()
    out: dict[str, dict[tuple[str, str], tuple[str, str]]] = {}
    for case in root.iter("testcase"):
        props = {
            p.get("name", ""): p.get("value", "")
            for p in case.iter("property")
            if p.get("name", "").startswith("pop3mon_")
        }
        ct = props.get("pop3mon_ct")
        if not ct:
            continue
        key = (props.get("pop3mon_tier", ""), props.get("pop3mon_check", ""))
        verdict = props.get("pop3mon_verdict", "ERROR")
        if case.find("error") is not None:
            verdict = "ERROR"  # the test broke after recording its verdict
        out.setdefault(ct, {})[key] = (verdict, props.get("pop3mon_reason", ""))
    return out


def evaluate(
    conn: DemoConnection, checks: dict[tuple[str, str], tuple[str, str]] | None
) -> Outcome:
    """Compare one connection type's verdicts with what the demo expects."""
    outcome = Outcome(conn, checks=dict(checks or {}))
    for tier in TIERS:
        mine = [v for (t, _), (v, _) in outcome.checks.items() if t == tier]
        outcome.tiers[tier] = max(mine, key=lambda v: _RANK.get(v, 4)) if mine else "-"
    if not outcome.checks:
        outcome.why = "no verdicts in the report (was it selected? did pytest run?)"
        return outcome
    bad = outcome.first(("CRIT", "ERROR"))
    if conn.expect_crit is None:
        login = outcome.checks.get(("auth", "login"), ("missing", ""))[0]
        if bad is not None:
            outcome.why = f"expected no CRIT, got {bad[1]} {bad[0]}: {bad[2]}"
        elif login not in ("OK", "WARN"):
            outcome.why = f"expected a successful login, auth/login is {login}"
        else:
            outcome.expected = True
            warn = outcome.first(("WARN",))
            outcome.why = f"WARN {warn[0]}: {warn[2]}" if warn else "all checks OK"
        return outcome
    tier, check = conn.expect_crit
    verdict, reason = outcome.checks.get((tier, check), ("missing", ""))
    earlier = TIERS[: TIERS.index(tier)]
    early_bad = [
        f"{t}/{c} {v}"
        for (t, c), (v, _) in outcome.checks.items()
        if t in earlier and v in ("CRIT", "ERROR")
    ]
    if verdict != "CRIT":
        outcome.why = f"expected CRIT in {tier}/{check}, got {verdict}"
    elif early_bad:
        outcome.why = f"failed too early: {', '.join(early_bad)}"
    else:
        outcome.expected = True
        outcome.why = f"CRIT {tier}/{check}: {reason}"
    return outcome


# --------------------------------------------------------------------------- output


class _Say:
    """Terminal output: plain when not a terminal or NO_COLOR is set."""

    def __init__(self) -> None:
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def line(self, text: str = "") -> None:
        print(text, flush=True)

    def note(self, text: str) -> None:
        for i, part in enumerate(text.splitlines()):
            print(self.paint(("NOTE: " if i == 0 else "      ") + part, "33"), flush=True)


def _verdict_cell(verdict: str, say: _Say, width: int) -> str:
    code = {"OK": "32", "WARN": "33", "CRIT": "31", "ERROR": "31;1"}.get(verdict, "2")
    return say.paint(verdict.ljust(width), code)


def _summary(outcomes: list[Outcome], say: _Say) -> None:
    width = max(len(o.conn.id) for o in outcomes) + 2
    head = "connection type".ljust(width) + "".join(
        t[:5].ljust(6) for t in ("conn", "tls", "auth", "mbox", "lat")
    )
    say.line(head + "demo verdict")
    for out in outcomes:
        cells = "".join(_verdict_cell(out.tiers[t], say, 6) for t in TIERS)
        mark = say.paint("as expected", "32") if out.expected else say.paint("UNEXPECTED", "31;1")
        say.line(f"{out.conn.id.ljust(width)}{cells}{mark}")
        detail = out.why
        room = max(60, shutil.get_terminal_size((120, 24)).columns) - 5
        if len(detail) > room:
            detail = detail[: room - 3] + "..."
        say.line(" " * 4 + say.paint(detail, "2" if out.expected else "31"))


# --------------------------------------------------------------------------- running


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM/SIGHUP so cleanup runs like on Ctrl-C."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(signum)


def _run_child(cmd: list[str], env: dict[str, str], log: Path | None) -> int:
    """Run ``cmd`` in its own process group; on interruption stop the whole group."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("wb")) if log is not None else None
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
        )
        try:
            return proc.wait()
        except BaseException:
            # Ctrl-C / SIGTERM: let pytest finish its reports, then make sure it is gone.
            for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            raise


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pop3mon_lab.demo",
        description="Start a demo lab of POP3 servers on 127.0.0.1, monitor it with pop3mon "
        "and summarise the verdicts. Exit 0 when healthy servers pass and broken ones fail as "
        "designed.",
    )
    parser.add_argument("--reports", default="reports", help="reports directory (default: reports)")
    parser.add_argument(
        "--backend",
        choices=("auto", "dovecot", "faultserver"),
        default=os.environ.get("POP3MON_DEMO_BACKEND", "auto"),
        help="auto (default): Dovecot if it is installed and starts, else the reference server",
    )
    parser.add_argument(
        "--workdir",
        help="keep the lab's configs, logs and maildirs here (default: a temporary directory "
        "that is removed at the end)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="start the lab, write the targets file and wait for Ctrl-C instead of running",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    parser.add_argument(
        "pytest_args",
        nargs="*",
        metavar="PYTEST_ARGS",
        help="extra arguments for ci/run-monitor / pytest (after --), e.g. -- -n 2",
    )
    args = parser.parse_args(argv)
    if args.backend not in ("auto", "dovecot", "faultserver"):
        parser.error(f"invalid POP3MON_DEMO_BACKEND {args.backend!r}")
    return args


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status documented in the module docstring."""
    args = _parse_args(argv)
    say = _Say()
    try:
        with _signals():
            return _demo(args, say)
    except (KeyboardInterrupt, _Terminated):
        say.line()
        say.note("interrupted; everything the demo started has been stopped")
        return EXIT_INTERRUPTED
    except LabError as exc:
        say.line(say.paint(f"error: the demo lab did not start: {exc}", "31"))
        return EXIT_ERROR


def _demo(args: argparse.Namespace, say: _Say) -> int:
    reports = Path(args.reports).resolve()
    demo_dir = reports / "demo"
    targets = reports / "demo-targets.yaml"
    pytest_log = reports / "demo-pytest.log"
    demo_dir.mkdir(parents=True, exist_ok=True)
    for stale in (*demo_dir.glob("dovecot-*.log"), pytest_log):
        stale.unlink(missing_ok=True)
    password = secrets.token_urlsafe(18)
    wrong = demo_dir / "wrong-password"
    wrong.write_text("not-the-" + secrets.token_urlsafe(6) + "\n", encoding="utf-8")
    wrong.chmod(0o600)

    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = Path(args.workdir).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="pop3mon-demo-"))
            stack.callback(shutil.rmtree, workdir, True)
        say.line(say.paint("pop3mon demo", "1") + ": starting the lab on 127.0.0.1 ...")
        lab = start_lab(stack, args.backend, workdir, password, say)
        # Runs before the lab stops (ExitStack is LIFO): keep the server logs for reading.
        stack.callback(_keep_logs, lab, demo_dir)
        closed = free_port()  # bound a moment ago, now closed: nothing listens there
        lab.ports["closed"] = closed
        shutil.copyfile(lab.certs.ca_file, demo_dir / "ca.crt")
        targets.write_text(
            targets_yaml(lab, "demo/ca.crt", "demo/wrong-password"), encoding="utf-8"
        )
        say.line(f"lab: {lab.description}, up in {time.monotonic() - started:.1f} s")
        say.line(
            "  ports: "
            + ", ".join(f"{name} {port}" for name, port in lab.ports.items())
            + f"  (CA: {_rel(demo_dir / 'ca.crt')})"
        )
        env = dict(os.environ)
        env[PASSWORD_ENV] = password
        env["POP3MON_PYTHON"] = sys.executable
        env["POP3MON_NO_INSTALL"] = "1"
        if args.serve:
            return _serve(targets, password, demo_dir, say)
        cmd = [
            str(REPO_ROOT / "ci" / "run-monitor"),
            f"--targets={targets}",
            f"--reports={reports}",
            *args.pytest_args,
        ]
        say.line(f"running: ci/run-monitor --targets={_rel(targets)} --reports={_rel(reports)}")
        rc = _run_child(cmd, env, None if args.verbose else pytest_log)
    say.line(f"lab stopped; demo took {time.monotonic() - started:.1f} s")
    return _report(rc, reports, pytest_log if not args.verbose else None, say)


def _keep_logs(lab: DemoLab, demo_dir: Path) -> None:
    for log in lab.logs:
        with contextlib.suppress(OSError):
            shutil.copyfile(log, demo_dir / f"dovecot-{log.parent.name}.log")


def _serve(targets: Path, password: str, demo_dir: Path, say: _Say) -> int:
    secret = demo_dir / "password"
    secret.write_text(password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    try:
        say.line(f"targets file: {_rel(targets)}")
        say.line("The lab runs until Ctrl-C. Monitor it from another terminal, e.g.:")
        say.line(
            f'  {PASSWORD_ENV}="$(cat {_rel(secret)})" pytest --targets={_rel(targets)} -k healthy'
        )
        while True:
            time.sleep(3600)
    finally:
        secret.unlink(missing_ok=True)


def _report(rc: int, reports: Path, pytest_log: Path | None, say: _Say) -> int:
    junit = reports / "junit.xml"
    log_hint = f" (pytest output: {_rel(pytest_log)})" if pytest_log else ""
    if rc not in (0, 1) or not junit.exists():
        say.line(
            say.paint(f"error: the monitoring run gave no verdicts (status {rc}){log_hint}", "31")
        )
        if pytest_log is not None and pytest_log.exists():
            tail = pytest_log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            for line in tail:
                say.line("  | " + line)
        return EXIT_ERROR
    try:
        verdicts = read_junit(junit)
    except ET.ParseError as exc:
        say.line(say.paint(f"error: {_rel(junit)} is not valid XML: {exc}", "31"))
        return EXIT_ERROR
    outcomes = [evaluate(conn, verdicts.get(conn.id)) for conn in DEMO_CONNECTIONS]
    say.line()
    _summary(outcomes, say)
    say.line()
    say.line("reports:")
    for name, what in (
        ("report.html", "HTML report for people"),
        ("junit.xml", "JUnit XML for CI test views"),
        ("results.json", "machine-readable results"),
        ("metrics.prom", "Prometheus/OpenMetrics textfile"),
        ("demo-targets.yaml", "the demo's targets file"),
        ("demo-pytest.log", "pytest's full output"),
    ):
        path = reports / name
        if path.exists():
            say.line(f"  {_rel(path):34} {what}")
    unexpected = [o for o in outcomes if not o.expected]
    say.line()
    if unexpected:
        say.line(
            say.paint(
                f"demo result: {len(unexpected)} of {len(outcomes)} connection types did NOT "
                f"behave as designed: {', '.join(o.conn.id for o in unexpected)}",
                "31;1",
            )
        )
        return EXIT_UNEXPECTED
    say.line(
        say.paint("demo result: as designed", "32;1")
        + f" ({sum(o.conn.healthy for o in outcomes)} healthy pass, "
        f"{sum(not o.conn.healthy for o in outcomes)} broken fail with the expected CRIT)"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
