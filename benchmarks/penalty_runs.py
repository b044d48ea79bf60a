"""One wrong password among ten healthy connection types, runs back to back (issue 10 item 1).

A Dovecot with its stock failure timing (a refused login is answered after ~2 s and puts the
client address under Dovecot's authentication penalty) and ``pop3_lock_session = yes`` (a
second session of one account gets ``[IN-USE]``). Ten healthy connection types of one account
(implicit TLS and STLS, five mechanisms each) and one with a wrong password, run as a user runs
the suite, ``--repeat`` times with no pause and one pytest cache (the login ledger lives there).

Per run: wall, how many of the ten healthy ones had every check OK (or not applicable), the
worst verdict among them, the longest login wait and its reason.

    python benchmarks/penalty_runs.py [--repeat 3] [--pacing serial|parallel]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import REPO, DovecotLab, print_machine

PW_ENV = "POP3MON_BENCH_PASSWORD"
WRONG_ENV = "POP3MON_BENCH_WRONG"
MECHS = {
    "tls": ("plain", "scram-sha-256", "scram-sha-1", "cram-md5", "login"),
    "starttls": ("plain", "scram-sha-256", "cram-md5", "login", "auto"),
}


def targets(lab: DovecotLab, pacing: str) -> dict[str, Any]:
    """Ten healthy connection types and, fourth in the file, one with a wrong password."""
    conns: list[dict[str, Any]] = []
    for security, mechs in MECHS.items():
        port = lab.port("pop3s" if security == "tls" else "pop3")
        for mech in mechs:
            conns.append({"id": f"{security}-{mech}", "port": port, "security": security})
            conns[-1]["auth"] = mech
    wrong = {"username": lab.demo_user, "password_env": WRONG_ENV}
    conns.insert(3, {"id": "wrong-password", "port": lab.port("pop3s"), "security": "tls"})
    conns[3].update(auth="plain", account=wrong)
    return {
        "version": 1,
        "defaults": {
            "ca_file": str(lab.ca_file),
            "login_pacing": pacing,
            "account": {"username": lab.demo_user, "password_env": PW_ENV},
        },
        "servers": [{"name": "lab", "host": lab.hostname, "connections": conns}],
    }


def main() -> int:
    """Run the runs and print one line per run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pacing", choices=("serial", "parallel"), default="serial")
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory(prefix="pop3mon-penalty-") as tmp:
        work = Path(tmp)
        lab = DovecotLab(
            workdir=work / "lab", fast_auth_failures=False, extra_config="pop3_lock_session = yes\n"
        )
        with lab:
            path = work / "targets.yaml"
            path.write_text(yaml.safe_dump(targets(lab, args.pacing)), encoding="utf-8")
            env = {**os.environ, PW_ENV: lab.demo_password, WRONG_ENV: "wrong-bench-3c9d1e"}
            for run in range(1, args.repeat + 1):
                reports = work / f"reports{run}"
                began = time.monotonic()
                cmd = [sys.executable, "-m", "pytest", f"--targets={path}", "-q"]
                cmd += [f"--reports-dir={reports}", "-o", f"cache_dir={work / 'cache'}"]
                subprocess.run(
                    cmd,
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    check=False,
                )
                wall = time.monotonic() - began
                print(f"run {run}: {summarize(reports / 'results.json')}; wall {wall:.1f} s")
    return 0


def summarize(results: Path) -> str:
    """Healthy connection types with every check OK/SKIP, their worst verdict, longest wait."""
    data = json.loads(results.read_text(encoding="utf-8"))
    rank = {"OK": 0, "SKIP": 0, "WARN": 1, "CRIT": 2, "ERROR": 3}
    good, worst, wait, why = 0, "OK", 0.0, ""
    for ct in data["connections"]:
        if ct["id"] == "wrong-password":
            continue
        verdicts = [c["verdict"] for c in ct["checks"]]
        bad = max(verdicts, key=lambda v: rank.get(v, 3))
        good += rank.get(bad, 3) == 0
        worst = max(worst, bad, key=lambda v: rank.get(v, 3))
        probe = ct.get("probe") or {}
        if probe.get("login_wait", 0.0) > wait:
            wait, why = probe["login_wait"], probe.get("login_wait_reason", "")
    return f"healthy all OK {good}/10 (worst {worst}); longest login wait {wait:.1f} s ({why})"


if __name__ == "__main__":
    raise SystemExit(main())
