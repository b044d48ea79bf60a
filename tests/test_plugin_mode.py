"""``pop3mon check`` / ``pop3mon-check``, tested as a monitoring plugin is tested.

The console scripts come from the wheel installed into a fresh virtual environment and run
as processes against the real Dovecot lab (healthy, weak mechanism, expired certificate,
wrong password) and the fault server (hostile answers, an echoed secret, a silent server).
Each exit code 0/1/2/3 is produced for real; the output is parsed back: the first line by
regex, the perfdata with pynag's parser (every metric valid) and the warn/crit ranges with
nagiosplugin's ``Range``, the long output line by line. The README's commands and the
command lines its Icinga 2 and Nagios definitions build (macros substituted) are run too.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nagiosplugin
import pytest
from pynag.Utils import PerfData

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dovecot import DovecotLab
from pop3mon_lab.faultserver import FaultServer

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = "plugin-SENTINEL-5e1b"
PW_ENV = "PLUGIN_MODE_PW"
BAD_ENV = "PLUGIN_MODE_BAD_PW"
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "reports", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)
FIRST = re.compile(r"^(?:POP3|SMTP) (OK|WARNING|CRITICAL|UNKNOWN) - (\S.*?)(?: \| (.+))?$")
LONG = re.compile(r"^\[(OK|WARNING|CRITICAL|UNKNOWN|SKIP)\] (?:(\S+) )?(\w+)/([\w-]+): \S.*$")
EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
#: The plugin's validated-targets cache for this test process (checks after the first one
#: of a targets file are answered from it, as on a monitoring server).
_CACHE = Path(tempfile.gettempdir()) / f"pop3mon-plugin-cache-{os.getpid()}"
#: The first line's text (before the perfdata) stays readable in a list of services.
MAX_TEXT = 250


@dataclass
class Installed:
    bin: Path

    def run(
        self, *args: str, script: str = "pop3mon-check", env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            [str(self.bin / script), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
            env=_env(**(env or {})),
        )  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POP3MON_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    # The validated-targets cache in the test's own directory, not the user's home.
    env["POP3MON_CACHE_DIR"] = str(_CACHE)
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel of this checkout installed into a fresh venv (third-party packages borrowed
    from the dev environment through a .pth, as tests/test_install.py does)."""
    base = tmp_path_factory.mktemp("plugin-venv")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(base / "dist"), str(src)],
        capture_output=True, text=True, timeout=300, check=False, env=_env(),
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (base / "dist").glob("pop3mon-*.whl")
    root = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    dev = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(site, "_dev_packages.pth").write_text("\n".join(sorted(dev)) + "\n", encoding="utf-8")
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
         "-q", str(wheel)],
        capture_output=True, text=True, timeout=300, check=False, env=_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return Installed(root / "bin")


@pytest.fixture(scope="module")
def targets(dovecot: DovecotLab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One connection type per outcome, against the real Dovecot lab."""
    path = tmp_path_factory.mktemp("plugin-targets") / "targets.yaml"
    valid, expired = dovecot.port("pop3s"), dovecot.port("pop3s", "expired")
    path.write_text(
        f"""
servers:
  - name: mail1
    host: {dovecot.hostname}
    address: 127.0.0.1
    ca_file: {dovecot.ca_file}
    account: {{username: {dovecot.demo_user}, password_env: {PW_ENV}}}
    latency: {{total: {{warn: 2, crit: 5}}, auth: {{warn: 2, crit: 5}}}}
    cert: {{warn_days: 30, crit_days: 14}}
    mailbox: {{count: {{warn: 1000, crit: 2000}}}}
    connections:
      - {{id: "mail1:995-tls", port: {valid}, security: tls, auth: scram-sha-256, tags: [eu]}}
      - {{id: "mail1:110-starttls", port: {dovecot.port("pop3")}, security: starttls,
          auth: user, tags: [eu]}}
      - {{id: weak, port: {dovecot.port("pop3")}, security: none, auth: cram-md5}}
      - {{id: expired, port: {expired}, security: tls, auth: scram-sha-256}}
      - {{id: wrongpw, port: {valid}, security: tls, auth: user,
          account: {{username: {dovecot.demo_user}, password_env: {BAD_ENV}}}}}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def lab_env(dovecot: DovecotLab) -> dict[str, str]:
    return {PW_ENV: dovecot.demo_password, BAD_ENV: SENTINEL}


@dataclass
class Parsed:
    status: str
    text: str
    perf: dict[str, object]
    long: list[re.Match[str]]


def parse(proc: subprocess.CompletedProcess[str]) -> Parsed:
    """The plugin output as Nagios reads it; asserts the format on the way."""
    assert "Traceback" not in proc.stdout + proc.stderr, proc
    assert SENTINEL not in proc.stdout + proc.stderr, proc.stdout
    lines = proc.stdout.splitlines()
    assert lines, proc
    first = FIRST.match(lines[0])
    assert first, lines[0]
    status, text, perfdata = first[1], first[2], first[3] or ""
    assert proc.returncode == EXIT[status], proc
    assert len(text) <= MAX_TEXT and "|" not in text, text
    perf: dict[str, object] = {}
    for metric in PerfData(perfdata).metrics if perfdata else []:
        assert metric.is_valid(), (metric.label, perfdata)
        for bound in (metric.warn, metric.crit):
            if bound:
                nagiosplugin.Range(bound)  # raises on a malformed range
        perf[metric.label] = metric
    if perfdata:
        assert len(perf) == len(perfdata.split(" ")), perfdata
    long = []
    for line in lines[1:]:
        match = LONG.match(line)
        assert match, line
        long.append(match)
    return Parsed(status, text, perf, long)


def test_healthy_is_ok_with_perfdata(
    installed: Installed, targets: Path, lab_env: dict[str, str]
) -> None:
    proc = installed.run(f"--targets={targets}", "--id=mail1:995-tls", env=lab_env)
    out = parse(proc)
    assert out.status == "OK" and proc.returncode == 0, proc.stdout
    assert out.text.startswith("mail1:995-tls: ") and "checks OK" in out.text
    assert out.long == []  # no problem, no long output without -v
    for phase in ("connect", "tls", "greeting", "capa", "auth", "stat", "quit", "total"):
        assert phase in out.perf, out.perf
    auth = out.perf["auth"]
    assert (auth.uom, auth.warn, auth.crit, auth.min) == ("s", "2", "5", "0")  # type: ignore[attr-defined]
    days = out.perf["cert_days_left"]
    assert (days.warn, days.crit) == ("30:", "14:")  # type: ignore[attr-defined]
    assert nagiosplugin.Range("30:").match(float(days.value))  # type: ignore[attr-defined]
    messages = out.perf["messages"]
    assert (messages.warn, messages.crit) == ("999", "1999")  # type: ignore[attr-defined]
    assert nagiosplugin.Range(messages.warn).match(float(messages.value))  # type: ignore[attr-defined]
    assert out.perf["mailbox_size"].uom == "B"  # type: ignore[attr-defined]


def test_verbose_has_one_line_per_check(
    installed: Installed, targets: Path, lab_env: dict[str, str]
) -> None:
    out = parse(
        installed.run("--targets", str(targets), "--id", "mail1:995-tls", "-v", env=lab_env)
    )
    checks = [(m[3], m[4]) for m in out.long]
    assert len(checks) == len(set(checks)) and ("tls", "certificate") in checks
    assert ("latency", "latency-total") in checks and ("drift", "mailbox_changed") in checks
    assert {m[1] for m in out.long} <= {"OK", "SKIP"}


def test_weak_mechanism_is_warning(
    installed: Installed, targets: Path, lab_env: dict[str, str]
) -> None:
    out = parse(installed.run(f"--targets={targets}", "--id=weak", env=lab_env))
    assert out.status == "WARNING", out
    assert out.text.startswith("weak policy: "), out.text
    assert [(m[1], m[3], m[4]) for m in out.long] == [("WARNING", "auth", "policy")]


def test_expired_certificate_is_critical(
    installed: Installed, targets: Path, lab_env: dict[str, str]
) -> None:
    out = parse(installed.run(f"--targets={targets}", "--id=expired", env=lab_env))
    assert out.status == "CRITICAL", out
    assert re.match(r"expired certificate: .*expired", out.text), out.text
    days = out.perf["cert_days_left"]
    assert float(days.value) < 0  # type: ignore[attr-defined]
    assert not nagiosplugin.Range(days.crit).match(float(days.value))  # type: ignore[attr-defined]
    assert ("CRITICAL", "tls", "certificate") in [(m[1], m[3], m[4]) for m in out.long]


def test_wrong_password_is_critical_and_never_shown(
    installed: Installed, targets: Path, lab_env: dict[str, str]
) -> None:
    proc = installed.run(f"--targets={targets}", "--id=wrongpw", "-v", env=lab_env)
    out = parse(proc)  # asserts the sentinel password is nowhere
    assert out.status == "CRITICAL" and out.text.startswith("wrongpw login: "), out.text


def test_several_ids_prefix_labels_and_name_the_worst(
    installed: Installed, targets: Path, lab_env: dict[str, str]
) -> None:
    proc = installed.run(
        f"--targets={targets}", "--id=weak,expired", "--id=mail1:995-tls", env=lab_env
    )
    out = parse(proc)
    assert out.status == "CRITICAL" and out.text.startswith("expired certificate: "), out.text
    assert re.search(r"\(\+\d+ more: .*1 WARNING\)$", out.text), out.text
    for ct in ("weak", "expired", "mail1:995-tls"):
        assert f"{ct}:total" in out.perf
    assert all(m[2] in ("weak", "expired") for m in out.long)
    by_tag = parse(installed.run(f"--targets={targets}", "--tag=eu", env=lab_env))
    assert by_tag.status == "OK", by_tag
    assert {"mail1:995-tls:total", "mail1:110-starttls:total"} <= set(by_tag.perf)
    assert not any(k.startswith(("weak:", "expired:")) for k in by_tag.perf)


def _unknown(proc: subprocess.CompletedProcess[str], said: str) -> None:
    assert proc.returncode == 3, proc
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith("POP3 UNKNOWN - "), proc
    assert said in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr and SENTINEL not in proc.stdout


def test_unknown_for_what_cannot_be_checked(
    installed: Installed, targets: Path, tmp_path: Path, lab_env: dict[str, str]
) -> None:
    _unknown(installed.run(f"--targets={targets}", "--id=mail1:995-tsl"),
             "no connection type 'mail1:995-tsl'")  # fmt: skip
    _unknown(installed.run(f"--targets={targets}", "--tag=nowhere"), "tag 'nowhere'")
    _unknown(installed.run(f"--targets={tmp_path / 'missing.yaml'}"), "invalid targets file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers: [\n  - {name: x\n", encoding="utf-8")
    _unknown(installed.run(f"--targets={bad}"), "invalid targets file")
    _unknown(installed.run("--bogus"), "unrecognized arguments: --bogus")
    _unknown(installed.run("--timeout=soon"), "not a number of seconds")
    # the same through `pop3mon check`; the other subcommands keep their exit status 2
    _unknown(installed.run("check", "--id", script="pop3mon"), "expected one argument")
    assert installed.run("nope", script="pop3mon").returncode == 2
    helped = installed.run("--help")
    assert helped.returncode == 0 and "--targets" in helped.stdout, helped


def test_an_internal_error_is_unknown_not_a_traceback(
    installed: Installed, targets: Path, lab_env: dict[str, str]
) -> None:
    """A bug inside pop3mon (injected: the check registry raises) is one UNKNOWN line."""
    code = (
        "import sys, pop3mon.checks as c\n"
        "def boom(*a, **k):\n"
        f"    raise RuntimeError('injected bug {SENTINEL}\\nsecond line')\n"
        "c.evaluate = boom\n"
        "from pop3mon.secrets import REDACTOR\n"
        f"REDACTOR.register({SENTINEL!r})\n"
        "import pop3mon.plugin_mode as m\n"
        "sys.exit(m.main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [str(installed.bin / "python"), "-c", code, f"--targets={targets}", "--id=weak"],
        capture_output=True, text=True, timeout=60, check=False, env=_env(**lab_env),
    )  # fmt: skip
    _unknown(proc, "internal error: RuntimeError: injected bug [REDACTED]")


def test_hostile_server_text_and_an_echoed_secret(
    installed: Installed, lab_certs: LabCerts, tmp_path: Path
) -> None:
    """A server that echoes the password and one that answers with markup and escape
    sequences: the output keeps its format, and the secret is redacted."""
    for scenario in ("echo-credentials", "html-ansi-err"):
        with FaultServer(scenario, users={"alice": SENTINEL}) as server:
            path = tmp_path / f"{scenario}.yaml"
            path.write_text(
                "servers:\n  - name: fs\n    host: 127.0.0.1\n    allow_cleartext: true\n"
                f"    account: {{username: alice, password_env: {PW_ENV}}}\n"
                f"    connections:\n      - {{id: fs, port: {server.port}, security: none, "
                "auth: user}\n",
                encoding="utf-8",
            )
            proc = installed.run(f"--targets={path}", "-v", env={PW_ENV: SENTINEL})
        out = parse(proc)
        assert out.status == "CRITICAL", out
        assert "\x1b" not in proc.stdout


def test_smtp_connection_types_are_an_smtp_service(installed: Installed, tmp_path: Path) -> None:
    """An SMTP connection type is checked by the same command and named SMTP on the
    status line (an open relay is CRITICAL); a mixed selection stays POP3."""
    with FaultServer("smtp-open-relay") as relay, FaultServer("healthy") as pop:
        path = tmp_path / "smtp.yaml"
        path.write_text(
            "servers:\n  - name: mx\n    host: 127.0.0.1\n"
            f"    connections:\n      - {{id: pop, port: {pop.port}, security: none, "
            "auth: none}\n"
            f"    smtp:\n      - {{id: relay, port: {relay.port}, security: none, "
            "relay_check: relay-test@pop3mon.invalid}\n",
            encoding="utf-8",
        )
        proc = installed.run(f"--targets={path}", "--id=relay", "-v")
        both = installed.run(f"--targets={path}", "--id=relay,pop")
    out = parse(proc)
    assert proc.stdout.startswith("SMTP CRITICAL - relay relay: open relay"), proc.stdout
    assert out.status == "CRITICAL"
    assert any(m[3] == "auth" and m[4] == "relay" and m[1] == "CRITICAL" for m in out.long)
    assert both.stdout.startswith("POP3 CRITICAL - relay relay: open relay"), both.stdout


def test_timeout_bounds_the_run(installed: Installed, tmp_path: Path) -> None:
    with FaultServer("no-greeting") as server:
        path = tmp_path / "silent.yaml"
        path.write_text(
            "servers:\n  - name: fs\n    host: 127.0.0.1\n    timeout: 30\n    connections:\n"
            f"      - {{id: silent, port: {server.port}, security: none, auth: none}}\n",
            encoding="utf-8",
        )
        start = time.monotonic()
        proc = installed.run(f"--targets={path}", "--timeout=1")
        took = time.monotonic() - start
    out = parse(proc)
    assert out.status == "CRITICAL" and out.text.startswith("silent greeting: "), out.text
    assert took < 1 + 1 + 5, took  # the deadline, the grace, the interpreter's start


def test_the_check_path_loads_no_pytest_and_no_reports(
    installed: Installed, targets: Path, lab_env: dict[str, str]
) -> None:
    code = (
        "import sys, pop3mon.plugin_mode as m\n"
        "rc = m.main(sys.argv[1:])\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('pytest', '_pytest')\n"
        "             or n.startswith(('pop3mon.report', 'pop3mon.notify', 'pop3mon.plugin.')))\n"
        "print('LOADED', ','.join(bad))\n"
    )
    proc = subprocess.run(
        [str(installed.bin / "python"), "-c", code, f"--targets={targets}", "--id=weak"],
        capture_output=True, text=True, timeout=60, check=False, env=_env(**lab_env),
    )  # fmt: skip
    assert proc.stdout.splitlines()[-1] == "LOADED ", proc.stdout


# --------------------------------------------------------------------------- the README


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Nagios / Icinga / Checkmk plugin mode")
    return text[start : text.index("\n## ", start + 1)]


def _block(section: str, lang: str) -> str:
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", section, re.S | re.M)
    found = [body for kind, body in blocks if kind == lang]
    assert found, lang
    return str(found[0])


def _as_tested(words: list[str], installed: Installed, targets: Path) -> list[str]:
    """A documented command line, run here: the lab's targets file for /etc/pop3mon's."""
    out = [w.replace("/etc/pop3mon/targets.yaml", str(targets)) for w in words]
    script = out[0].rsplit("/", 1)[-1]
    assert script in ("pop3mon", "pop3mon-check"), out
    return [str(installed.bin / script), *out[1:]]


def test_readme_commands_run_as_documented(
    installed: Installed, targets: Path, lab_env: dict[str, str]
) -> None:
    section = _section()
    commands = [line for line in _block(section, "sh").splitlines() if line.strip()]
    assert len(commands) == 3
    for line in commands:
        argv = _as_tested(shlex.split(line), installed, targets)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                              env=_env(**lab_env))  # fmt: skip
        out = parse(proc)
        assert out.status == "OK", (line, proc.stdout)
    # The sample output: its first line is what the expired certificate gives here.
    sample = _block(section, "").splitlines()
    example = FIRST.match(sample[0])
    assert example and example[1] == "CRITICAL", sample[0]
    assert LONG.match(sample[1]), sample[1]
    targets_text = targets.read_text(encoding="utf-8").replace('"mail1:995-tls"', "m").replace(
        "id: expired", 'id: "mail1:995-tls"')  # fmt: skip
    expired = targets.with_name("expired-as-mail1.yaml")
    expired.write_text(targets_text, encoding="utf-8")
    out = parse(installed.run(f"--targets={expired}", "--id=mail1:995-tls", env=lab_env))
    assert out.status == "CRITICAL", out
    assert out.text.startswith("mail1:995-tls certificate: certificate expired ")
    documented = {m.label for m in PerfData(example[3]).metrics}
    assert documented <= set(out.perf), (documented, out.perf)


def test_icinga2_check_command_runs(
    installed: Installed, targets: Path, lab_env: dict[str, str]
) -> None:
    """The CheckCommand's command line, built as Icinga 2 builds it (each argument with its
    value, macros from the vars; the apply rule's id) gives the documented output."""
    block = _block(_section(), "icinga2")
    command = re.search(r'command = \[ "([^"]+)" \]', block)
    assert command
    variables = dict(re.findall(r'vars\.(\w+) = "?([^"\n]+)"?', block))
    env_vars = dict(re.findall(r'env\.(\w+) = "\$(\w+)\$"', block))
    argv = [command[1]]
    for option, macro in re.findall(r'"(--\w+)" = "\$(\w+)\$"', block):
        argv += [option, variables[macro]]
    assert variables["pop3mon_id"] == "mail1:995-tls" and env_vars, variables
    proc = subprocess.run(_as_tested(argv, installed, targets), capture_output=True, text=True,
                          timeout=60, check=False, env=_env(**lab_env))  # fmt: skip
    out = parse(proc)
    assert out.status == "OK" and out.text.startswith("mail1:995-tls: "), proc.stdout


def test_nagios_command_definition_runs(
    installed: Installed, targets: Path, lab_env: dict[str, str]
) -> None:
    block = _block(_section(), "nagios")
    line = re.search(r"command_line\s+(.+)", block)
    check = re.search(r"check_command\s+check_pop3mon!(.+)", block)
    assert line and check
    args = check[1].strip().split("!")
    text = line[1].strip().replace("$USER1$", str(installed.bin))
    for number, value in enumerate(args, 1):
        text = text.replace(f"${f'ARG{number}'}$", value)
    assert "$" not in text, text
    proc = subprocess.run(_as_tested(shlex.split(text), installed, targets), capture_output=True,
                          text=True, timeout=60, check=False, env=_env(**lab_env))  # fmt: skip
    out = parse(proc)
    assert out.status == "OK" and out.text.startswith("mail1:995-tls: "), proc.stdout


def test_a_dead_host_is_one_critical_naming_it(installed: Installed, tmp_path: Path) -> None:
    """Three connection types on a host none of whose ports accepts: the host check is the
    one CRITICAL (as in a pytest run), the connection types SKIP naming it, never probed."""
    from test_hosts import closed_port

    with closed_port() as a, closed_port() as b, closed_port() as c:
        path = tmp_path / "dead.yaml"
        conns = "".join(
            f"      - {{id: {name}, port: {port}, security: none, auth: none}}\n"
            for name, port in (("d1", a), ("d2", b), ("d3", c))
        )
        path.write_text(
            f"servers:\n  - name: dead\n    host: 127.0.0.1\n    connections:\n{conns}",
            encoding="utf-8",
        )
        proc = installed.run(f"--targets={path}", "--id=d1", "--id=d2", "--id=d3")
    out = parse(proc)
    assert out.status == "CRITICAL", proc.stdout
    assert out.text.startswith("d1 tcp: host dead is down: none of the 3 ports"), out.text
    assert "more" not in out.text, out.text  # one problem, not three
    crits = [m for m in out.long if m[1] == "CRITICAL"]
    assert [(m[2], m[3], m[4]) for m in crits] == [("d1", "host", "tcp")], proc.stdout
