"""Two report writers at once (``report/parallel.py``): the fork, its fall-backs, its clean-up.

Each case runs in a fresh single-threaded interpreter: an xdist worker (this suite's) has
execnet's threads, and ``in_parallel`` rightly never forks there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PLUGINS = REPO / "plugins"

PRELUDE = """
import json, os, sys, threading, time
from pathlib import Path
sys.path.insert(0, {plugins!r})
from pop3mon.report.parallel import in_parallel
out = Path(sys.argv[1])
parent = os.getpid()

def write(name):
    def part():
        (out / name).write_text(str(os.getpid()))
    return part
"""


def run(tmp_path: Path, body: str) -> dict[str, Any]:
    """Run PRELUDE + ``body`` (which prints one JSON object) in a new interpreter."""
    script = textwrap.dedent(PRELUDE).format(plugins=str(PLUGINS)) + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        start_new_session=True,  # a case may signal its own process group
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # the child printed nothing, no traceback
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # nothing printed twice by the child
    result: dict[str, Any] = json.loads(lines[0])
    return result


def test_the_child_part_is_written_by_another_process(tmp_path: Path) -> None:
    got = run(
        tmp_path,
        """
        ok = in_parallel(write("child"), write("here"), worth_it=True)
        print(json.dumps({"ok": ok, "parent": parent}))
        """,
    )
    assert got["ok"] is True
    assert int((tmp_path / "here").read_text()) == got["parent"]
    assert int((tmp_path / "child").read_text()) != got["parent"]


def test_no_fork_when_not_worth_it_or_another_thread_lives(tmp_path: Path) -> None:
    got = run(
        tmp_path,
        """
        small = in_parallel(write("a"), write("b"), worth_it=False)
        stop = threading.Event()
        worker = threading.Thread(target=stop.wait)
        worker.start()
        threaded = in_parallel(write("c"), write("d"), worth_it=True)
        stop.set()
        worker.join()
        print(json.dumps({"small": small, "threaded": threaded, "parent": parent}))
        """,
    )
    assert got["small"] is False and got["threaded"] is False
    for name in "abcd":
        assert int((tmp_path / name).read_text()) == got["parent"], name


def test_a_failing_child_is_redone_here_and_its_error_reaches_the_caller(tmp_path: Path) -> None:
    got = run(
        tmp_path,
        """
        def flaky():
            if os.getpid() != parent:
                os.kill(os.getpid(), 9)  # the child dies mid-write
            write("child")()

        ok = in_parallel(flaky, write("here"), worth_it=True)

        def broken():
            raise OSError(28, "No space left on device")

        try:
            in_parallel(broken, write("here2"), worth_it=True)
            error = ""
        except OSError as exc:
            error = exc.strerror
        print(json.dumps({"ok": ok, "parent": parent, "error": error}))
        """,
    )
    assert got["ok"] is False
    assert int((tmp_path / "child").read_text()) == got["parent"]  # redone here
    assert got["error"] == "No space left on device"  # raised here, where it is reported


def test_when_this_side_fails_the_child_is_killed_and_reaped(tmp_path: Path) -> None:
    got = run(
        tmp_path,
        """
        def slow():
            time.sleep(30)
            write("late")()

        def fails():
            time.sleep(0.2)
            raise RuntimeError("boom")

        started = time.monotonic()
        try:
            in_parallel(slow, fails, worth_it=True)
        except RuntimeError as exc:
            why = str(exc)
        try:
            os.waitpid(-1, os.WNOHANG)
            left = True
        except ChildProcessError:
            left = False
        print(json.dumps({"why": why, "left": left, "took": time.monotonic() - started}))
        """,
    )
    assert got["why"] == "boom"
    assert got["left"] is False  # no child left, not even a zombie
    assert not (tmp_path / "late").exists()
    assert got["took"] < 20  # not the child's 30 s


def test_a_ctrl_c_while_writing_is_heard_once_and_the_child_finishes(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group; pop3mon's handler (here: one that notes
    who heard it) runs in the writing run only, and the child keeps writing its part."""
    got = run(
        tmp_path,
        """
        import signal

        def heard(signum, frame):
            (out / f"heard-{os.getpid()}").touch()

        signal.signal(signal.SIGINT, heard)

        def slow():
            time.sleep(0.5)
            write("child")()

        def interrupted():
            time.sleep(0.1)
            os.killpg(0, signal.SIGINT)
            time.sleep(0.1)
            write("here")()

        ok = in_parallel(slow, interrupted, worth_it=True)
        print(json.dumps({"ok": ok, "parent": parent}))
        """,
    )
    assert got["ok"] is True
    assert sorted(p.name for p in tmp_path.glob("heard-*")) == [f"heard-{got['parent']}"]
    assert int((tmp_path / "child").read_text()) != got["parent"]
