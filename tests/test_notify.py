"""Notifications on state change (issue 11, item 4), delivered to REAL receivers on
127.0.0.1: an HTTP server taking Apprise's ``json://`` webhook and an aiosmtpd SMTP sink
taking its ``mailto://`` mail. The changes are built by hand (the history computes them in
a run); one end-to-end test waits for the history to be merged.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pop3mon
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from pop3mon.config import ConfigError, NotifySettings, NotifyTarget, load_targets
from pop3mon.config.model import DEFAULT_NOTIFY_ON
from pop3mon.history.model import Change, CheckState
from pop3mon.notify import RunSummary, compose, deliver, rule_of, select
from pop3mon.notify.send import _load_apprise
from pop3mon.secrets import REDACTED, Secret
from pop3mon.verdict import Verdict

OK, WARN, CRIT = Verdict.OK, Verdict.WARN, Verdict.CRIT
# The account password of the monitored server; a change's reason that quotes it (a server
# echoing it back) must reach no receiver.
ACCOUNT_SENTINEL = "acct-SENTINEL-9d2f-pw"
# The webhook URL's token and the SMTP account's password: in the URLs only.
HOOK_TOKEN = "HookT0ken-SENTINEL-51c7"
SMTP_PASSWORD = "smtpPw-SENTINEL-77ab"
SENTINELS = (ACCOUNT_SENTINEL, HOOK_TOKEN, SMTP_PASSWORD)
T0 = 1_796_000_000.0  # 2026-11-30 (any fixed instant)


# -- real receivers ---------------------------------------------------------------------


@dataclass
class Webhook:
    """A real HTTP server on 127.0.0.1 recording every request it gets."""

    port: int
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = f"hook/{HOOK_TOKEN}") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body in self.requests]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hook.requests.append((self.path, dict(self.headers), body))
            hook.arrived.set()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Sink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, plain SMTP with AUTH."""

    port: int
    user: str
    password: str
    mails: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    logins: list[tuple[bytes, bool]] = field(default_factory=list)

    def url(self) -> str:
        # mailto:// (not mailtos://) is Apprise's plain SMTP; mode=insecure says so
        # explicitly: no STARTTLS to the sink.
        return (
            f"mailto://{self.user}:{self.password}@127.0.0.1:{self.port}"
            "?mode=insecure&from=pop3mon@lab.example&to=admin@lab.example"
        )


@pytest.fixture
def smtp_sink() -> Iterator[Sink]:
    sink = Sink(port=_free_port(), user="notifier", password=SMTP_PASSWORD)

    class Handler:
        async def handle_DATA(
            self, server: SMTPServer, session: Session, envelope: Envelope
        ) -> str:
            data = envelope.original_content or b""
            sink.mails.append((str(envelope.mail_from), list(envelope.rcpt_tos), data))
            return "250 OK"

    def authenticator(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == sink.user.encode()
            and data.password == sink.password.encode()
        )
        sink.logins.append((data.login if isinstance(data, LoginPassword) else b"", ok))
        return AuthResult(success=ok)

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=sink.port,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@dataclass
class Hanging:
    """A port that accepts connections and never says a word."""

    port: int
    held: list[socket.socket]


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield Hanging(port=listener.getsockname()[1], held=held)
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


# -- changes and settings built by hand -----------------------------------------------------


def _changes() -> list[Change]:
    return [
        Change(
            kind="recovered",
            ct="mail2:995-tls",
            check="certificate",
            before=CRIT,
            after=OK,
            reason="certificate valid for 80 more days",
            since=T0 - 7200,
        ),
        Change(
            kind="new",
            ct="mail1:995-tls",
            check="login",
            before=OK,
            after=CRIT,
            # A server that echoed the password back: scrubbed by the history already,
            # and once more on the way out.
            reason=f"credentials rejected: -ERR [AUTH] bad password {ACCOUNT_SENTINEL}",
            since=T0 - 86400,
        ),
        Change(
            kind="drift",
            ct="mail1:110-starttls",
            check="capa",
            before=OK,
            after=WARN,
            reason="capabilities changed",
            since=T0 - 3600,
            detail="STLS → (none)",
        ),
        # To WARN: not told under the default rules.
        Change(
            kind="new",
            ct="mail1:995-tls",
            check="latency-total",
            before=OK,
            after=WARN,
            reason="total 2100 ms ≥ warning 2000 ms",
            since=T0 - 600,
        ),
    ]


def _target(
    source: str,
    name: str = "",
    on: tuple[str, ...] = DEFAULT_NOTIFY_ON,
    tags: tuple[str, ...] = (),
    connections: tuple[str, ...] = (),
) -> NotifyTarget:
    return NotifyTarget(
        name=name,
        url_source=source,
        on=frozenset(on),  # type: ignore[arg-type]
        tags=tags,
        connections=connections,
        line=1,
    )


RUN = RunSummary(targets_name="targets.yaml", report="/srv/pop3mon/reports/report.html")


@pytest.fixture(autouse=True)
def _account_secret() -> None:
    # The run's account password, registered as loading it would.
    Secret(ACCOUNT_SENTINEL, source="env:POP3_PW")


def _assert_no_sentinel(*texts: str) -> None:
    for text in texts:
        for sentinel in SENTINELS:
            assert sentinel not in text, (sentinel, text[:500])


def _capture_all(caplog: pytest.LogCaptureFixture) -> None:
    # Every logger at DEBUG: Apprise and urllib3 spell the URL there.
    caplog.set_level(logging.DEBUG)
    for name in ("apprise", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)


# -- delivery to real receivers ---------------------------------------------------------


def test_webhook_gets_one_message_grouping_every_change(
    webhook: Webhook,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _capture_all(caplog)
    # Through the targets file: the URL only by reference.
    (tmp_path / "hook.url").write_text(webhook.url() + "\n")
    (tmp_path / "targets.yaml").write_text(
        "version: 1\n"
        "servers:\n"
        "  - {name: mail1, host: mail1.example, connections: [{security: tls, auth: none}]}\n"
        "notify:\n"
        "  report_url: https://monitor.example/pop3mon/report.html\n"
        "  targets:\n"
        "    - {name: ops-hook, url_file: hook.url}\n"
    )
    settings = load_targets(tmp_path / "targets.yaml").notify
    assert settings is not None

    warnings = deliver(settings, _changes(), RUN)

    assert warnings == []
    assert len(webhook.requests) == 1, "one message per run"
    payload = webhook.payloads()[0]
    assert payload["title"] == "pop3mon: 1 problem, 1 recovered, 1 drift on targets.yaml"
    message = payload["message"]
    lines = message.splitlines()
    problems = lines.index("Problems (1):")
    recovered = lines.index("Recovered (1):")
    drift = lines.index("Drift (1):")
    assert problems < recovered < drift, message
    assert (
        "- mail1:995-tls login: OK → CRIT — credentials rejected: -ERR [AUTH] bad password "
        f"{REDACTED} — OK since 2026-11-29 00:53 UTC" in lines
    ), message
    assert any(
        line.startswith("- mail2:995-tls certificate: CRIT → OK — certificate valid")
        and line.endswith("— was CRIT since 2026-11-29 22:53 UTC")
        for line in lines
    ), message
    assert "- mail1:110-starttls capa: OK → WARN — capabilities changed (STLS → (none))" in (
        message
    )
    assert "latency-total" not in message, "a WARN is not told under the default rules"
    assert lines[-1] == "Report: https://monitor.example/pop3mon/report.html"
    _assert_no_sentinel(json.dumps(payload), *(json.dumps(h) for _, h, _ in webhook.requests))
    out, err = capfd.readouterr()
    _assert_no_sentinel(out, err, caplog.text, *warnings)


def test_mail_arrives_at_a_real_smtp_sink_without_any_secret(
    smtp_sink: Sink, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    _capture_all(caplog)
    settings = NotifySettings(targets=(_target("env:NOTIFY_MAIL", name="admins"),))
    warnings = deliver(settings, _changes(), RUN, environ={"NOTIFY_MAIL": smtp_sink.url()})

    assert warnings == []
    assert smtp_sink.logins == [(b"notifier", True)], "Apprise logged in to the sink"
    assert len(smtp_sink.mails) == 1
    sender, recipients, raw = smtp_sink.mails[0]
    assert sender == "pop3mon@lab.example"
    assert recipients == ["admin@lab.example"]
    mail = message_from_bytes(raw, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    assert mail["Subject"] == "pop3mon: 1 problem, 1 recovered, 1 drift on targets.yaml"
    part = mail.get_body(("plain", "html"))
    assert part is not None
    text = part.get_content()
    assert "Problems (1):" in text
    assert "mail1:995-tls login: OK → CRIT" in text
    assert "Report: /srv/pop3mon/reports/report.html" in text
    _assert_no_sentinel(raw.decode("utf-8", "replace"), text)
    out, err = capfd.readouterr()
    _assert_no_sentinel(out, err, caplog.text)


def test_failing_endpoints_are_warnings_within_the_deadline_and_others_still_get_theirs(
    webhook: Webhook,
    hanging: Hanging,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _capture_all(caplog)
    closed = _free_port()  # nothing listens there: connection refused
    env = {
        "REFUSED": f"json://127.0.0.1:{closed}/hook/{HOOK_TOKEN}",
        # Its own read timeout is long: the deadline bounds it.
        "HANGS": f"json://127.0.0.1:{hanging.port}/hook/{HOOK_TOKEN}?rto=300&cto=300",
        "WORKS": webhook.url(),
        "MAIL": (
            f"mailto://u:{SMTP_PASSWORD}@127.0.0.1:{closed}"
            "?mode=insecure&from=pop3mon@lab.example&to=a@lab.example"
        ),
    }
    deadline = 2.0
    settings = NotifySettings(
        targets=(
            _target("env:REFUSED"),
            _target("env:HANGS", name="hangs"),
            _target("env:WORKS", name="works"),
            _target("env:MAIL", name="mail"),
            _target("env:UNSET_NOTIFY_URL", name="unset"),
        ),
        timeout=deadline,
    )
    # The deadline bounds the network; loading Apprise's plugins (CPU, once per process,
    # seconds on a loaded machine) happens before it starts and is not what is measured.
    _load_apprise()
    start = time.monotonic()
    warnings = deliver(settings, _changes(), RUN, environ=env)
    elapsed = time.monotonic() - start

    # Margin for a loaded 2-core CI box (threads start late); hanging would take 300 s.
    assert elapsed < deadline + 2.0, elapsed
    assert len(webhook.requests) == 1, "the working endpoint still got its message"
    by_name = {w.split(" failed: ")[0]: w for w in warnings}
    assert sorted(by_name) == [
        "notification to hangs",
        "notification to json://127.0.0.1",
        "notification to mail",
        "notification to unset",
    ], warnings
    # Our deadline or Apprise's own socket timeout (capped at the deadline) ends it first,
    # depending on the machine's load: either way a warning, within the deadline.
    hangs = by_name["notification to hangs"]
    assert "no answer within 2 s" in hangs or "Connection error" in hangs, hangs
    assert "environment variable UNSET_NOTIFY_URL is not set" in by_name["notification to unset"]
    assert "failed: " in by_name["notification to json://127.0.0.1"]
    out, err = capfd.readouterr()
    _assert_no_sentinel(out, err, caplog.text, *warnings)


_EXIT_SCRIPT = """
import sys, time
from pop3mon.config import NotifySettings, NotifyTarget
from pop3mon.history.model import Change
from pop3mon.notify import RunSummary, deliver
from pop3mon.verdict import Verdict
target = NotifyTarget("hangs", "env:HANGS", frozenset({"hard"}), (), (), 1)
change = Change("new", "a:995-tls", "login", Verdict.OK, Verdict.CRIT, "refused", 0.0)
url = f"json://127.0.0.1:{sys.argv[1]}/hook/x?rto=300&cto=300"
print(deliver(NotifySettings((target,), timeout=2), [change], RunSummary("t"), {"HANGS": url}))
"""


def test_a_hanging_endpoint_does_not_hold_the_process_at_exit(hanging: Hanging) -> None:
    # Apprise sends from a thread pool whose threads the interpreter joins at exit: with
    # the URL's own read timeout (300 s) the process would outlive the run by minutes.
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, str(hanging.port)],
        env={**os.environ, "PYTHONPATH": str(Path(pop3mon.__file__).parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert time.monotonic() - start < 2 + 5, "ends soon after the 2 s deadline"
    assert "notification to hangs failed: no answer within 2 s" in out.stdout, out


def test_no_change_sends_nothing(webhook: Webhook, smtp_sink: Sink) -> None:
    settings = NotifySettings(
        targets=(_target("env:HOOK", on=("hard", "warn")), _target("env:MAIL")),
        timeout=5,
    )
    env = {"HOOK": webhook.url(), "MAIL": smtp_sink.url()}
    assert deliver(settings, [], RUN, environ=env) == []
    # Changes no rule selects are no news either: a WARN under the default rules, a SKIP.
    quiet = [c for c in _changes() if c.after == WARN and c.kind == "new"]
    quiet.append(Change("new", "mail1:995-tls", "stat", OK, Verdict.SKIP, "not run", T0))
    assert deliver(NotifySettings(targets=(_target("env:MAIL"),)), quiet, RUN, env) == []
    assert deliver(None, _changes(), RUN, environ=env) == []
    time.sleep(0.3)  # anything sent would have arrived by now on loopback
    assert webhook.requests == []
    assert smtp_sink.mails == []


def test_a_url_apprise_refuses_is_a_warning_without_any_form_of_the_url() -> None:
    settings = NotifySettings(targets=(_target("env:BAD"), _target("env:MAIL")), timeout=5)
    env = {
        "BAD": f"nosuchservice://{HOOK_TOKEN}@example.invalid/x",
        # No from= and a user that is no address: Apprise refuses it and logs the URL in
        # its "privacy" form, which keeps the password's first and last characters.
        "MAIL": f"mailto://u:{SMTP_PASSWORD}@127.0.0.1:25?to=a@b.example",
    }
    warnings = deliver(settings, _changes(), RUN, environ=env)
    assert len(warnings) == 2, warnings
    assert all("Apprise does not understand the URL" in w for w in warnings), warnings
    _assert_no_sentinel(*warnings)
    masked = f"{SMTP_PASSWORD[0]}...{SMTP_PASSWORD[-1]}"
    assert not any(masked in w or "://u" in w for w in warnings), warnings


# -- rules and wording ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "before", "after", "soft", "rule"),
    [
        ("new", OK, CRIT, False, "hard"),
        ("new", OK, CRIT, True, "soft"),
        ("worse", WARN, CRIT, False, "hard"),
        ("hard", CRIT, CRIT, False, "hard"),
        ("new", OK, WARN, False, "warn"),
        ("better", CRIT, WARN, False, "warn"),
        ("recovered", CRIT, OK, False, "recovered"),
        ("recovered", WARN, OK, False, "warn"),
        ("drift", OK, WARN, False, "drift"),
        ("flapping", OK, CRIT, False, "flapping"),
        ("settled", CRIT, OK, False, "flapping"),
        ("new", OK, Verdict.SKIP, False, None),
        ("new", OK, Verdict.ERROR, False, None),
    ],
)
def test_rule_of_each_change(
    kind: Any, before: Verdict, after: Verdict, soft: bool, rule: str | None
) -> None:
    change = Change(kind, "a:995-tls", "login", before, after, "why", T0)
    assert rule_of(change, frozenset({("a:995-tls", "login")}) if soft else frozenset()) == rule


def test_flapping_holds_a_connection_types_changes_and_tags_select() -> None:
    changes = [
        Change("flapping", "a:995-tls", "", OK, CRIT, "5 changes in the last 10 runs", T0),
        Change("new", "a:995-tls", "login", OK, CRIT, "refused", T0),
        Change("new", "b:995-tls", "login", OK, CRIT, "refused", T0),
        Change("new", "c:110-starttls", "login", OK, CRIT, "refused", T0),
    ]
    run = RunSummary(
        targets_name="t.yaml",
        flapping=frozenset({"c:110-starttls"}),
        tags={"a:995-tls": ("eu",), "b:995-tls": ("us",), "c:110-starttls": ("eu",)},
    )
    everything = _target("env:X", on=("hard", "flapping"))
    assert [(c.kind, c.ct) for c in select(everything, changes, run)] == [
        ("flapping", "a:995-tls"),
        ("new", "b:995-tls"),
    ]
    assert [c.ct for c in select(_target("env:X", tags=("us",)), changes, run)] == ["b:995-tls"]
    # a's login change is held; the default rules hear of the flapping itself.
    assert [c.kind for c in select(_target("env:X", connections=("a:*",)), changes, run)] == [
        "flapping"
    ]
    assert [c.ct for c in select(_target("env:X", connections=("b:*",)), changes, run)] == [
        "b:995-tls"
    ]


def test_a_recovery_from_a_soft_crit_is_not_told() -> None:
    soft = Change("recovered", "a:995-tls", "login", CRIT, OK, "ok", T0, was_hard=False)
    assert rule_of(soft) is None
    assert select(_target("env:X", on=("hard", "recovered", "soft")), [soft], RUN) == []
    assert rule_of(Change("recovered", "a:995-tls", "login", CRIT, OK, "ok", T0)) == "recovered"


def test_flapping_and_settled_reach_a_default_target() -> None:
    changes = [
        Change("flapping", "a:995-tls", "", OK, CRIT, "5 changes", T0),
        Change("settled", "b:995-tls", "", CRIT, CRIT, "2 changes", T0),
        Change("new", "b:995-tls", "login", OK, CRIT, "refused", 0.0, "after flapping settled"),
    ]
    assert [c.kind for c in select(_target("env:X"), changes, RUN)] == [
        "flapping",
        "settled",
        "new",
    ]


def test_lines_say_since_only_of_a_previous_state() -> None:
    changes = [
        Change("new", "a:995-tls", "login", None, CRIT, "refused", T0),
        Change("drift", "a:995-tls", "cert", Verdict.SKIP, WARN, "changed", T0),
        Change("recovered", "b:995-tls", "login", CRIT, OK, "accepted", T0 - 3600),
        Change("new", "c:995-tls", "login", OK, CRIT, "refused", T0 - 60),
    ]
    message = compose(changes, NotifySettings(targets=()), RUN)
    assert message is not None
    lines = message.body.splitlines()
    assert "- a:995-tls login: none → CRIT — refused" in lines
    assert "- a:995-tls cert: SKIP → WARN — changed" in lines
    assert "- b:995-tls login: CRIT → OK — accepted — was CRIT since 2026-11-29 23:53 UTC" in lines
    assert "- c:995-tls login: OK → CRIT — refused — OK since 2026-11-30 00:52 UTC" in lines


def test_a_long_run_lists_fifty_lines_and_counts_the_rest() -> None:
    changes = [Change("new", f"s{i}:995-tls", "login", OK, CRIT, "refused", T0) for i in range(80)]
    message = compose(changes, NotifySettings(targets=()), RUN)
    assert message is not None
    assert message.title == "pop3mon: 80 problems on targets.yaml"
    assert message.body.count("\n- s") == 50
    assert "- … and 30 more (see the report)" in message.body


def test_a_url_file_follows_the_secret_file_rules(tmp_path: Path) -> None:
    fifo = tmp_path / "url.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.url"
    big.write_text("json://x.example/" + "a" * 20000)
    settings = NotifySettings(
        targets=(
            _target(f"file:{fifo}", name="fifo"),
            _target(f"file:{big}", name="big"),
            _target(f"file:{tmp_path / 'none.url'}", name="none"),
        ),
        timeout=5,
    )
    warnings = deliver(settings, _changes(), RUN, environ={})
    assert warnings == [
        f"notification to fifo failed: notification URL file {fifo} is a FIFO (named pipe), "
        "not a regular file",
        f"notification to big failed: notification URL file {big} is larger than 16384 bytes "
        "(a secret file holds one line)",
        f"notification to none failed: notification URL file {tmp_path / 'none.url'} does "
        "not exist",
    ]


def test_run_summary_from_targets_and_states(tmp_path: Path) -> None:
    (tmp_path / "targets.yaml").write_text(
        "version: 1\n"
        "servers:\n"
        "  - {name: mail1, host: mail1.example, tags: [eu],"
        " connections: [{security: tls, auth: none}]}\n"
    )
    targets = load_targets(tmp_path / "targets.yaml")
    states = [
        CheckState("mail1:995-tls", "login", CRIT, "soft", T0, 1, OK),
        CheckState("mail1:995-tls", "capa", OK, "hard", T0, 3, WARN, flapping=True),
    ]
    run = RunSummary.build(targets, states, tmp_path / "report.html")
    assert run.targets_name == "targets.yaml"
    assert run.report == str(tmp_path / "report.html")
    assert run.soft == frozenset({("mail1:995-tls", "login")})
    assert run.flapping == frozenset({"mail1:995-tls"})
    assert run.tags["mail1:995-tls"] == ("eu",)


# -- the notify: section ------------------------------------------------------------------


def _load(tmp_path: Path, notify: str) -> list[str]:
    path = tmp_path / "targets.yaml"
    path.write_text(
        "version: 1\n"
        "servers:\n"
        "  - {name: mail1, host: mail1.example, connections: [{security: tls, auth: none}]}\n"
        f"notify:\n{notify}"
    )
    try:
        load_targets(path)
    except ConfigError as exc:
        return [p.split(": ", 1)[1] for p in exc.problems]
    return []


def test_the_notify_section_loads_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "targets.yaml").write_text(
        "version: 1\n"
        "servers:\n"
        "  - {name: mail1, host: mail1.example, tags: [eu],"
        " connections: [{security: tls, auth: none}]}\n"
        "notify:\n"
        "  targets:\n"
        "    - {url_env: NOTIFY_OPS}\n"
        "    - {name: eu-team, url_file: secrets/eu.url, on: [warn, drift], tags: [eu]}\n"
    )
    targets = load_targets(tmp_path / "targets.yaml")
    assert targets.notify is not None
    first, second = targets.notify.targets
    assert first.on == frozenset({"hard", "recovered", "drift", "flapping"})
    assert first.url_source == "env:NOTIFY_OPS"
    assert second.url_source == f"file:{tmp_path / 'secrets' / 'eu.url'}"
    assert second.on == frozenset({"warn", "drift"})
    assert second.tags == ("eu",)
    assert targets.notify.title == "pop3mon"
    assert targets.notify.timeout == 20.0


def test_notify_section_problems_are_one_line_each_and_never_echo_a_url(tmp_path: Path) -> None:
    url = f"json://hooks.example/{HOOK_TOKEN}"
    assert _load(tmp_path, "  on: [hard, recovery]\n  targets: [{url_env: X}]\n") == [
        "notify.on[1]: 'recovery' is not a notification rule — rules are hard, recovered, "
        "drift, warn, soft, flapping — did you mean 'recovered'?"
    ]
    assert _load(tmp_path, "  targets: [{url_env: X, on: [critical]}]\n") == [
        "notify.targets[0].on[0]: 'critical' is not a notification rule — rules are hard, "
        "recovered, drift, warn, soft, flapping — did you mean 'hard'?"
    ]
    problems = _load(tmp_path, f"  targets: [{{url: '{url}'}}]\n")
    assert problems[0].startswith("notify.targets[0].url: notification URLs are not allowed")
    problems += _load(tmp_path, f"  targets: [{{url_env: '{url}'}}]\n")
    problems += _load(tmp_path, f"  targets: [{{url_env: X, name: {{u: '{url}'}}}}]\n")
    problems += _load(tmp_path, f"  report_url: '{url}'\n  targets: [{{url_env: X}}]\n")
    assert len(problems) == 4, problems
    _assert_no_sentinel(*problems)
    assert _load(tmp_path, "  targets: [{url_env: X, url_file: y}]\n") == [
        "notify.targets[0]: gives url_env and url_file — give exactly one of url_env: VAR or "
        "url_file: PATH (an Apprise URL holds credentials, so it is never written in this file)"
    ]
    assert _load(tmp_path, "  targets: []\n") == [
        "notify.targets: is empty — list at least one target with url_env or url_file"
    ]
    dup = "  targets: [{name: a, url_env: X}, {name: a, url_env: Y}]\n"
    assert _load(tmp_path, dup)[0].startswith("notify.targets[1].name: duplicate target name")


# -- end to end, once the history is merged -------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("pop3mon.history.store") is None, reason="history not merged"
)
def test_two_runs_notify_the_change_once(webhook: Webhook, tmp_path: Path) -> None:
    """Three real runs of the suite with a history: the first starts the baseline (nothing
    to tell), the second's login is refused (the credentials changed) and one webhook
    message names the new CRIT and its reason, the third changes nothing and sends
    nothing. No secret (account password, webhook token) reaches what arrived."""
    from test_reports import run_suite as run_reported

    from pop3mon_lab.faultserver import FaultServer

    good, changed = "notify-good-9a1c2e", "notify-changed-4b7d10"
    (tmp_path / "hook.url").write_text(webhook.url() + "\n", encoding="utf-8")
    with FaultServer("healthy", users={"alice": good}) as srv:
        targets = tmp_path / "targets.yaml"
        targets.write_text(
            "version: 1\n"
            "defaults:\n"
            "  allow_cleartext: true\n"
            "  account: {username: alice, password_env: NOTIFY_E2E_PASSWORD}\n"
            "notify:\n"
            "  targets: [{name: hook, url_file: hook.url}]\n"
            "servers:\n"
            f"  - {{name: lab, host: 127.0.0.1, connections: [{{id: pop, port: {srv.port}, "
            "security: none, auth: user}]}\n",
            encoding="utf-8",
        )
        reports = tmp_path / "reports"
        sent: list[int] = []
        for password in (good, changed, changed):
            run = run_reported(targets, reports, env={"NOTIFY_E2E_PASSWORD": password})
            assert "notify: WARN" not in run.proc.stdout, run.proc.stdout[-3000:]
            sent.append(len(webhook.requests))
    assert sent == [0, 1, 1], "only the run that changed something notified"
    (message,) = webhook.payloads()
    text = json.dumps(message)
    assert "pop login" in message["message"] and "CRIT" in message["message"]
    assert "[AUTH]" in message["message"]
    for secret in (good, changed, HOOK_TOKEN):
        assert secret not in text
    assert HOOK_TOKEN not in run.proc.stdout + run.proc.stderr


def test_a_host_going_down_is_one_change_and_one_notification(
    webhook: Webhook, tmp_path: Path
) -> None:
    """Three real runs with a history and a webhook: a healthy host (the baseline), the
    same host with its port closed (one change, host:lab tcp CRIT, in one message; its two
    connection types' checks SKIP, which carries their last finding forward: no change of
    theirs), then the host back (one recovery). The target selects the connection types
    by pattern only, and hears of their host."""
    from test_hosts import closed_port
    from test_reports import run_suite as run_reported
    from test_suite import write_targets

    from pop3mon_lab.faultserver import FaultServer

    (tmp_path / "hook.url").write_text(webhook.url() + "\n", encoding="utf-8")
    reports = tmp_path / "reports"
    sent: list[int] = []
    for up in (True, False, True):
        with ExitStack() as stack:
            if up:
                srv = stack.enter_context(FaultServer("healthy", users={"alice": "pw"}))
                port = srv.port
            else:
                port = stack.enter_context(closed_port())
            targets = write_targets(
                tmp_path / "targets.yaml",
                {
                    "version": 1,
                    "defaults": {"allow_cleartext": True, "auth": "none"},
                    "notify": {
                        "targets": [
                            {"name": "hook", "url_file": "hook.url", "connections": ["pop*"]}
                        ]
                    },
                    "servers": [
                        {
                            "name": "lab",
                            "host": "127.0.0.1",
                            "connections": [
                                {"id": "pop1", "port": port, "security": "none"},
                                {"id": "pop2", "port": port, "security": "none"},
                            ],
                        }
                    ],
                },
            )
            run = run_reported(targets, reports)
        assert "notify: WARN" not in run.proc.stdout, run.proc.stdout[-3000:]
        sent.append(len(webhook.payloads()))
    doc = run.json()
    assert sent == [0, 1, 2], sent
    down, back = (p["message"] for p in webhook.payloads())
    assert "host:lab tcp" in down and "CRIT" in down, down
    assert "pop1" not in down and "pop2" not in down, down
    assert "host:lab tcp" in back and "pop1" not in back, back
    # The history tracks the host check like a connection type.
    (host,) = doc["hosts"]
    assert host["status"] == "up"
    assert {c["check"]: c["state"]["verdict"] for c in host["checks"]} == {"tcp": "OK"}


def test_the_commented_notify_example_in_targets_yaml_loads(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1] / "targets.yaml"
    text = root.read_text(encoding="utf-8")
    start = text.index("# notify:\n")
    example = "".join(line[2:] + "\n" for line in text[start:].splitlines())
    (tmp_path / "targets.yaml").write_text(text[:start] + example)
    notify = load_targets(tmp_path / "targets.yaml").notify
    assert notify is not None
    assert [t.name for t in notify.targets] == ["admins", ""]
    assert notify.targets[1].on == frozenset({"hard", "recovered", "drift", "flapping", "warn"})
    assert notify.report_url == "https://monitor.example/pop3mon/report.html"
