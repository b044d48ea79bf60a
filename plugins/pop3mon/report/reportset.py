"""The report files of one run, replaced as a set: all of the new run's, or the previous ones.

Every writer (pytest-html, junitxml, :mod:`.json_report`, :mod:`.metrics`) writes to a
temporary name next to its final file (``.report.html.<run id>.<pid>-<token>.tmp``: same
directory, so the same file system, and a name no consumer globs for — node_exporter reads
``*.prom`` only). The name is the writer's own (process id and a random token): two writers
of one directory at once (two ``pop3mon merge`` of one run, the Kubernetes template's last
pods finishing together) never write or rename each other's files. Only when *every* file
of the set was written completely are they flushed to disk and renamed into place, one
``rename(2)`` each; if any writer failed (a full disk, a second signal, a bug) the temporary
files are removed and the previous set stays as it was.

A writer killed mid-write (SIGKILL, power loss) leaves its temporary files; a later commit
removes those older than :data:`STALE_AFTER` (a writer's files are that old only when it
is gone: it renames them within seconds of writing them), never a running writer's.

What a reader sees:

* every file, at every moment, is complete: the previous run's or the new run's;
* during the swap (four renames, microseconds apart) some files may already be the new
  run's and others still the previous run's. The renames go in a fixed order with
  ``results.json`` last, and every file names its run (``results.json`` ``run.id`` and
  ``run.started_epoch``; the JUnit suite property ``pop3mon_run_id``; the HTML environment
  table's "Run id"; ``pop3mon_run_start_timestamp_seconds`` in ``metrics.prom``). A reader
  that needs one consistent set reads ``results.json`` first and then the others: each is
  from that run or a newer one, and it re-reads when a run id differs.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["HTML_NAME", "JSON_NAME", "JUNIT_NAME", "ReportSet", "ReportSetError"]

#: The set's file names in a reports directory (``metrics.prom``: :mod:`.metrics`).
HTML_NAME: Final = "report.html"
JUNIT_NAME: Final = "junit.xml"
JSON_NAME: Final = "results.json"

#: Suffix of the temporary names (also how stale ones of a killed run are recognised).
TEMP_SUFFIX = ".tmp"
#: Seconds after its last write from which another writer's temporary file is a killed
#: writer's leftover (removed at the next commit); a live writer commits long before.
STALE_AFTER: Final = 3600.0


class ReportSetError(Exception):
    """Some file of the set could not be written; the previous set is in place."""


@dataclass(frozen=True)
class _Member:
    label: str
    final: Path
    temp: Path


class ReportSet:
    """The files one run writes, each staged under a temporary name until :meth:`commit`."""

    def __init__(self, run_id: str) -> None:
        # Part of a file name: a run id that would leave the directory or not be a name
        # (``a/b``, ``..``; ids are checked where they come in, this is the last guard).
        self.run_id = re.sub(r"[^A-Za-z0-9._:+-]", "_", run_id).lstrip(".") or "run"
        #: This writer's part of the temporary names: unique per process and set, since
        #: the run id is shared (the shards of a run, two merges of it).
        self.writer = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._members: dict[str, _Member] = {}

    def stage(self, label: str, final: Path) -> Path:
        """Register ``final`` under ``label``; returns the temporary path to write instead."""
        temp = final.with_name(f".{final.name}.{self.run_id}.{self.writer}{TEMP_SUFFIX}")
        self._members[label] = _Member(label, final, temp)
        return temp

    def temp(self, label: str) -> Path | None:
        """The temporary path of ``label`` (None when it is not part of the set)."""
        member = self._members.get(label)
        return member.temp if member is not None else None

    def finals(self) -> list[tuple[str, Path]]:
        """(label, final path) of every member, in commit order."""
        return [(m.label, m.final) for m in self._members.values()]

    def commit(self, last: str = "") -> list[tuple[str, Path]]:
        """Flush every staged file and rename it into place (``last`` goes last).

        Raises :class:`ReportSetError` (after :meth:`discard`) when a staged file is missing
        or cannot be flushed: nothing was replaced then.
        """
        members = sorted(self._members.values(), key=lambda m: m.label == last)
        try:
            for member in members:
                if not member.temp.is_file():
                    raise ReportSetError(f"{member.label} was not written ({member.final})")
                _fsync_file(member.temp)
        except OSError as exc:
            self.discard()
            raise ReportSetError(_describe(exc)) from None
        except ReportSetError:
            self.discard()
            raise
        done: list[tuple[str, Path]] = []
        for member in members:
            try:
                os.replace(member.temp, member.final)
            except OSError as exc:
                self.discard()
                new = ", ".join(str(p) for _, p in done) or "none"
                raise ReportSetError(
                    f"{_describe(exc)}; already replaced by this run: {new}"
                ) from None
            done.append((member.label, member.final))
        for directory in {m.final.parent for m in members}:
            _fsync_dir(directory)
        self._remove_stale()
        return done

    def discard(self) -> None:
        """Remove every temporary file of this run (the previous set stays as it was)."""
        for member in self._members.values():
            with contextlib.suppress(OSError):
                member.temp.unlink(missing_ok=True)

    def _remove_stale(self) -> None:
        """Temporary files left by a writer that was killed (SIGKILL, power loss) mid-write:
        another writer's older than :data:`STALE_AFTER` (a younger one may be at work)."""
        before = time.time() - STALE_AFTER
        for member in self._members.values():
            pattern = f".{member.final.name}.*{TEMP_SUFFIX}"
            for stale in member.final.parent.glob(pattern):
                with contextlib.suppress(OSError):
                    if stale.stat().st_mtime < before:
                        stale.unlink()


def _describe(exc: OSError) -> str:
    """One line for an OS error: what failed and where (no traceback)."""
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # The renames are durable only once the directory is; not every file system lets a
    # directory be opened or synced, and by now the swap itself has happened.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
