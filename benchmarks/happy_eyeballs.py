"""Connect time to a dual-stack target whose IPv6 address is silent (SYNs unanswered).

``::1`` gets a listener with a full accept queue, so a connect to it hangs like one to a
blackholed address; a fault server answers on 127.0.0.1, same port. ``dial`` (the probe's
connect stage) should reach 127.0.0.1 about one RFC 8305 attempt delay (250 ms) after it
started on ``::1``; before address racing it waited out half the deadline first.

    python benchmarks/happy_eyeballs.py [--runs 5] [--deadline 10]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

from pop3mon.engine.dial import ATTEMPT_DELAY, dial  # noqa: E402
from pop3mon.engine.wire import Deadline  # noqa: E402

from pop3mon_lab.faultserver import FaultServer  # noqa: E402


def main() -> None:
    """Print one Markdown table row per run and the median."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--deadline", type=float, default=10.0)
    args = parser.parse_args()
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.bind(("::1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        filler.setblocking(False)
        filler.connect_ex(("::1", port))
        fillers.append(filler)
    time.sleep(0.1)
    times: list[float] = []
    print(f"| run | winner | connect ms (attempt delay {ATTEMPT_DELAY * 1000:.0f} ms) |")
    print("|---|---|---|")
    with FaultServer("healthy", port=port):
        for run in range(1, args.runs + 1):
            start = time.perf_counter()
            dialed = dial(("::1", "127.0.0.1"), port, Deadline(args.deadline), "dual.example")
            elapsed = time.perf_counter() - start
            dialed.sock.close()
            times.append(elapsed)
            print(f"| {run} | {dialed.address} | {elapsed * 1000:.0f} |")
    print(f"| median | | {statistics.median(times) * 1000:.0f} |")
    for sock in (listener, *fillers):
        sock.close()


if __name__ == "__main__":
    main()
