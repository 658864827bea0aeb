"""A per-study lock that serialises "count, then ask" across drivers.

Several ``hpsearch run`` processes may work on one study. Without a lock two
of them can both see "one trial missing" and both ask, or pick the same grid
point. Holding this lock while reading the counts and creating the trial
makes the total exact and grid points unique. SQLite (one host by nature)
uses an flock'ed file beside the database, which also records the last
holder so a lone driver never re-reads; PostgreSQL uses an advisory lock.

The lock file lives only while drivers use it: :meth:`StudyLock.close` removes
it, and does so while holding the lock. A driver that was waiting on the
removed file wins a lock on a file nobody else can open any more, so after
each flock the holder checks that the path still names the file it locked
(same device and inode) and starts again if not. Removal is only ever done
under the lock, so once that check passes nobody can remove the file until
the holder lets go. A driver still running re-creates the file (empty: it
then re-reads once, as it would after another driver's write). The file
stays beside the database rather than in a temp folder: every process that
can write the database finds it there, whatever its TMPDIR or user, so no
two drivers can ever lock different files for one study.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hpsearch.storage._urls import sqlite_path

__all__ = ["StudyLock"]

#: Give up re-acquiring a lost PostgreSQL lock connection after this long.
_RECONNECT_S = 60.0


class StudyLock:
    """``with lock.hold() as stale:`` — ``stale`` is True when another driver
    may have written since this one last held the lock (so re-read first)."""

    def __init__(self, url: str, study_name: str, holder: str) -> None:
        self.url = url
        self.study_name = study_name
        self.holder = holder
        self._path = sqlite_path(url)
        self._pg = url.startswith("postgresql")
        self._engine: Any = None
        self._conn: Any = None
        self._used_file = False
        self._key = int.from_bytes(hashlib.sha256(f"hpsearch:{study_name}".encode()).digest()[:8], "big", signed=True)

    @contextlib.contextmanager
    def hold(self) -> Iterator[bool]:
        if self._path is not None:
            with self._file_lock() as stale:
                yield stale
        elif self._pg:
            with self._pg_lock():
                yield True
        else:
            yield True

    def _lock_path(self) -> Path:
        assert self._path is not None
        return Path(f"{self._path}.{hashlib.sha1(self.study_name.encode()).hexdigest()[:12]}.lock")

    def _acquire_file(self) -> int:
        """Open and flock the lock file; return its descriptor, locked, still at its path."""
        lock_path = self._lock_path()
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # close() may have removed the file while we waited for it: a lock on a
                # removed file excludes nobody, so take the one now at the path instead.
                try:
                    on_disk = os.stat(lock_path)
                    mine = os.fstat(fd)
                    current = (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)
                except FileNotFoundError:
                    current = False
            except BaseException:
                os.close(fd)
                raise
            if current:
                self._used_file = True
                return fd
            os.close(fd)  # closing drops the flock on the removed file

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[bool]:
        fd = self._acquire_file()
        try:
            last = os.pread(fd, 512, 0).decode(errors="replace")
            if last != self.holder:
                os.ftruncate(fd, 0)
                os.pwrite(fd, self.holder.encode(), 0)
            yield last != self.holder
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _remove_file(self) -> None:
        """Remove the lock file, under the lock (see the module docstring)."""
        fd = self._acquire_file()
        try:
            os.unlink(self._lock_path())
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def _pg_lock(self) -> Iterator[None]:
        import sqlalchemy

        deadline = time.monotonic() + _RECONNECT_S
        delay = 0.2
        while True:
            try:
                if self._conn is None:
                    if self._engine is None:
                        self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
                    self._conn = self._engine.connect()
                self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
                break
            except sqlalchemy.exc.DBAPIError:
                self._drop()
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        try:
            yield
        finally:
            try:
                self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                self._conn.commit()
            except sqlalchemy.exc.DBAPIError:
                self._drop()  # a closed session releases its advisory locks

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        """Release the lock's resources; a SQLite lock file this driver used is removed."""
        if self._used_file:
            with contextlib.suppress(OSError):  # e.g. a read-only folder: the file merely stays
                self._remove_file()
            self._used_file = False
        self._drop()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
