"""The results folder: ``runs.jsonl``, one verified record per line, and the writer's lock.

Each finished run is appended as one line, in one write, under an exclusive file lock (fsync'd):
a kill loses at most the runs in progress, and a line torn by a kill is skipped when read (the next
record always starts on a new line). Reading verifies every record
(:meth:`~marl_kstep.experiments.run.RunRecord.from_dict`): a record whose ``spec_hash`` does not match
its spec is refused with its line number; a second record of the same spec is reported (in
:attr:`Scan.duplicates`) and never counted twice. :meth:`RunStore.writer` holds ``folder/.lock`` for
the whole of a sweep, so a second process writing into the same folder is refused by name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .run import RunRecord

__all__ = ["FolderLockedError", "RunStore", "Scan"]


#: Folders whose writer lock this process holds (resolved path -> depth).
_HELD: dict[str, int] = {}


class FolderLockedError(ValueError):
    """Another process is writing into the results folder."""


@dataclass
class Scan:
    """What :meth:`RunStore.scan` read: the records (first of each spec), duplicates and torn lines."""

    records: list[RunRecord] = field(default_factory=list)
    duplicates: list[tuple[int, str]] = field(default_factory=list)  # (line number, spec hash)
    torn: list[int] = field(default_factory=list)  # line numbers

    def notes(self, path) -> list[str]:
        """One line per thing worth telling the user (duplicates, torn lines)."""
        out = []
        if self.duplicates:
            lines = ", ".join(str(n) for n, _ in self.duplicates[:10])
            out.append(f"{path}: {len(self.duplicates)} duplicate record(s) of specs already there (lines {lines}"
                       f"{', ...' if len(self.duplicates) > 10 else ''}) are ignored")
        if self.torn:
            out.append(f"{path}: {len(self.torn)} line(s) cut by an interruption (line {self.torn[0]}"
                       f"{', ...' if len(self.torn) > 1 else ''}) are ignored")
        return out


class RunStore:
    """``folder/runs.jsonl``: one finished run per line (see the module docstring)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / "runs.jsonl"
        self.lock_path = self.folder / ".lock"

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def scan(self) -> Scan:
        """Every complete record, verified, first occurrence of each spec (see the module docstring)."""
        scan = Scan()
        if not self.path.exists():
            return scan
        seen = set()
        with open(self.path, "rb") as fh:
            lines = fh.read().split(b"\n")
        for n, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                d = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                scan.torn.append(n)  # a line cut by a kill
                continue
            rec = RunRecord.from_dict(d, where=f"{self.path}:{n}")
            if rec.spec_hash in seen:
                scan.duplicates.append((n, rec.spec_hash))
                continue
            seen.add(rec.spec_hash)
            scan.records.append(rec)
        return scan

    def records(self) -> list[RunRecord]:
        """:meth:`scan`'s records."""
        return self.scan().records

    def hashes(self) -> set[str]:
        return {r.spec_hash for r in self.records()}

    def append(self, record) -> None:
        """Append one record as one line, in one write, under an exclusive lock (fsync'd; mode 0644)."""
        if isinstance(record, RunRecord):
            record = record.to_dict()
        self.folder.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # a line torn by an earlier kill must not swallow this record: start on a new line
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        data = b"\n" + data
            os.write(fd, data)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def writer(self):
        """Hold the folder's writer lock (``folder/.lock``, released when this process ends in any way);
        a second writer gets :class:`FolderLockedError` naming the folder and the holder's pid. Re-entrant
        within one process (the command line holds it around ``run_specs``, which takes it too)."""
        key = str(self.folder.resolve())
        if _HELD.get(key):
            _HELD[key] += 1
            try:
                yield self
            finally:
                _HELD[key] -= 1
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise FolderLockedError(f"another marl-kstep process (pid {holder}) is writing into {self.folder}; "
                                        "wait for it to finish or choose another folder") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _HELD[key] = 1
            try:
                yield self
            finally:
                _HELD.pop(key, None)
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
