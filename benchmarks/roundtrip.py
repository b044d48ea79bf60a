"""Mail round trip delivery time on the local lab: Dovecot submission (STARTTLS + AUTH)
relays to Postfix, whose ``virtual`` agent delivers into the Dovecot lab's maildir; the
round trip polls it over POP3 (implicit TLS) until the message is there.

Usage: ``python benchmarks/roundtrip.py [--count 20]`` (as root: Postfix's master starts as
root). Prints the machine and the median/min/max delivery time, polls and logins per round
trip (cleanup on, so the mailbox does not grow while measuring).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _common import REPO, print_machine

sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from pop3mon.engine.result import ProbeSpec, RoundTripSpec  # noqa: E402
from pop3mon.engine.runner import run_probes  # noqa: E402
from pop3mon.secrets import Secret  # noqa: E402

from pop3mon_lab.certs import generate_lab_certs  # noqa: E402
from pop3mon_lab.dovecot import DovecotLab, free_port  # noqa: E402
from pop3mon_lab.postfix import PostfixLab, submission_config  # noqa: E402

ADDRESS = "demo@pop3mon.test"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure ``--count`` round trips and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args(argv)
    print_machine()
    with tempfile.TemporaryDirectory(prefix="pop3mon-rt-bench-") as tmp:
        certs = generate_lab_certs(Path(tmp) / "certs")
        relay, sub = free_port(), free_port()
        dovecot = DovecotLab(
            certs,
            workdir=Path(tmp) / "dovecot",
            mailboxes={},
            extra_config=submission_config(sub, relay),
        )
        with dovecot:
            postfix = PostfixLab(
                certs,
                deliver={ADDRESS: dovecot.maildir("demo")},
                mail_owner=dovecot.mail_owner,
                smtp_port=relay,
            )
            with postfix:
                password = Secret(dovecot.demo_password, source="bench")
                common = {
                    "host": "localhost",
                    "address": "127.0.0.1",
                    "ca_file": str(certs.ca_file),
                }
                via = ProbeSpec(
                    id="submission",
                    port=sub,
                    security="starttls",
                    username="demo",
                    secret=password,
                    **common,  # type: ignore[arg-type]
                )
                spec = ProbeSpec(
                    id="mailbox",
                    port=dovecot.port("pop3s"),
                    security="tls",
                    username="demo",
                    secret=password,
                    round_trip=RoundTripSpec(
                        via=via,
                        recipient=ADDRESS,
                        sender=ADDRESS,
                        cleanup="own-probe-messages",
                        hmac_key=Secret("bench-hmac-key-0123456789", source="bench"),
                    ),
                    **common,  # type: ignore[arg-type]
                )
                times: list[float] = []
                polls: list[int] = []
                logins: list[int] = []
                for _ in range(args.count):
                    rt = run_probes([spec])["mailbox"].round_trip
                    assert rt is not None and rt.delivery is not None, rt
                    times.append(rt.delivery)
                    polls.append(rt.polls)
                    logins.append(rt.logins)
    ms = [t * 1000 for t in times]
    print(f"round trips: {args.count}")
    print(f"delivery ms: median {statistics.median(ms):.0f}, min {min(ms):.0f}, max {max(ms):.0f}")
    print(f"polls per round trip: median {statistics.median(polls):g}, max {max(polls)}")
    print(f"logins per round trip: median {statistics.median(logins):g}, max {max(logins)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
