"""Chunk bodies kept outside the SQLite database, in append-only segment files beside it.

Through SQLite, a burst of output is written and synced twice: into the WAL at each commit,
then from the WAL into the database file at each checkpoint. The chunks of a large write
(at least :data:`EXTERNAL_BYTES`, a burst) go instead, in one write, to the end of the
current segment file of the directory ``<store>-chunks`` (``00000001``, ``00000002``, …);
the segment is synced before the transaction that adds their rows commits, and each row
names the segment, the offset and the length of its body. Each byte is written and synced
once, and a row never outlives the bytes it names, not even across a power loss. Smaller
writes (a command printing now and then) keep their chunks in the database, as before.

* Writers take turns through SQLite's write lock (each write is one ``BEGIN IMMEDIATE``
  transaction, several processes included): the current segment's number is kept in the
  ``meta`` table, read and moved on within that transaction. A segment that holds
  :data:`SEGMENT_BYTES` is left for a new one.
* Bytes past the last body that a row names (a writer that died between its write and
  its commit) are never read; the next write goes after them.
* A segment that no row names any more (its sessions destroyed, cleared, compacted or
  pruned) is removed once the transaction that deleted its last row has committed; when
  it is the current one, that transaction also moves writers on to the next.
* Each read opens the segments it needs and closes them when it ends: no descriptor is
  shared between threads.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from itertools import accumulate
from types import TracebackType
from typing import Final

from .base import StoreError

# A write whose chunks hold this many bytes or more keeps them in a segment.
EXTERNAL_BYTES: Final = 1 << 20
# A segment holding this many bytes is left for a new one (a single larger write goes
# to a segment of its own).
SEGMENT_BYTES: Final = 64 << 20

logger = logging.getLogger(__name__)


def directory_of(store_path: str) -> str:
    """The directory holding the segments of the store in ``store_path``."""
    return store_path + "-chunks"


def _path(directory: str, number: int) -> str:
    return os.path.join(directory, f"{number:08d}")


def current_segment(conn: sqlite3.Connection) -> int:
    """The number of the segment that writes go to (within the caller's transaction)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'segment'").fetchone()
    return 1 if row is None else int(row[0])


def _move_writers_to(conn: sqlite3.Connection, number: int) -> None:
    """Make ``number`` the current segment (within the caller's transaction)."""
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('segment', ?)", (str(number),))


def _sync_directory(path: str) -> None:
    """Make the entries of the directory ``path`` durable (a file created in it), where
    the file system can sync a directory (as SQLite, those that cannot are let be)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


class SegmentWriter:
    """Appends chunk bodies to a store's current segment; used by its writer only."""

    def __init__(self, store_path: str) -> None:
        self.store_path = store_path
        self.directory = directory_of(store_path)
        self._number = 0
        self._fd = -1

    def write(self, conn: sqlite3.Connection, bodies: Sequence[bytes]) -> tuple[int, list[int]]:
        """Append ``bodies`` to the current segment and sync them, within the write
        transaction on ``conn``.

        Returns:
            The segment's number and the offset of each body in it.

        Raises:
            StoreError: when the segment cannot be written or synced (a full disk).
        """
        data = b"".join(bodies)
        number = current_segment(conn)
        path = _path(self.directory, number)
        try:
            fd = self._open(number)
            end = os.fstat(fd).st_size
            if end and end + len(data) > SEGMENT_BYTES:
                number += 1
                path = _path(self.directory, number)
                fd = self._open(number)
                end = os.fstat(fd).st_size
                _move_writers_to(conn, number)
            view = memoryview(data)
            done = 0
            while done < len(data):
                done += os.pwrite(fd, view[done:], end + done)
            os.fdatasync(fd)
        except OSError as exc:
            raise StoreError(
                f"store {self.store_path}: cannot write recorded events to {path}: "
                f"{exc.strerror or exc}"
            ) from None
        return number, list(accumulate((len(body) for body in bodies[:-1]), initial=end))

    def _open(self, number: int) -> int:
        """The descriptor of segment ``number``, created (durably) if it is new."""
        if number == self._number:
            return self._fd
        self.close()
        if not os.path.isdir(self.directory):
            os.makedirs(self.directory, exist_ok=True)
            _sync_directory(os.path.dirname(os.path.abspath(self.directory)))
        path = _path(self.directory, number)
        flags = os.O_RDWR | os.O_CLOEXEC
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            fd = os.open(path, flags)
        else:
            _sync_directory(self.directory)
        self._number, self._fd = number, fd
        return fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._number, self._fd = 0, -1


class SegmentGone(StoreError):
    """A segment that a row named was removed: a compaction or prune committed after the
    read selected the row. Reading again sees the rows without it."""


class SegmentReader:
    """Reads chunk bodies, from the database's rows or from their segments, for one read.

    Use it as a context manager: the segments it opened are closed at the end.
    """

    def __init__(self, store_path: str) -> None:
        self.store_path = store_path
        self.directory = directory_of(store_path)
        self._fds: dict[int, int] = {}

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def body(self, inline: bytes, number: int | None, offset: int, length: int) -> bytes:
        """A chunk's body: ``inline`` for a row that holds it, else read from its segment.

        Raises:
            SegmentGone: when the segment is missing.
            StoreError: when it cannot be read, or is shorter than the row says.
        """
        if number is None:
            return inline
        path = _path(self.directory, number)
        fd = self._fds.get(number)
        try:
            if fd is None:
                fd = self._fds[number] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            data = os.pread(fd, length, offset)
        except FileNotFoundError as exc:
            raise SegmentGone(
                f"store {self.store_path}: cannot read recorded events from {path}: {exc.strerror}"
            ) from None
        except OSError as exc:
            raise StoreError(
                f"store {self.store_path}: cannot read recorded events from {path}: "
                f"{exc.strerror or exc}"
            ) from None
        if len(data) != length:
            raise StoreError(
                f"store {self.store_path}: {path} ends before the recorded events the "
                f"store names (at byte {offset + len(data)} of {offset + length})"
            )
        return data

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)


def unreferenced(conn: sqlite3.Connection, candidates: Iterable[int]) -> list[int]:
    """Those of ``candidates`` (segments whose rows the caller's transaction deleted)
    that no row names any more. When the current segment is one of them, writers are
    moved on to the next one within the transaction, so that it can go too."""
    current = current_segment(conn)
    freed = [
        number
        for number in sorted(set(candidates))
        if number <= current
        and conn.execute("SELECT 1 FROM chunks WHERE segment = ? LIMIT 1", (number,)).fetchone()
        is None
    ]
    if current in freed:
        _move_writers_to(conn, current + 1)
    return freed


def segments_of(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> set[int]:
    """The segments named by the rows of ``chunks`` that match ``where``."""
    sql = f"SELECT DISTINCT segment FROM chunks WHERE segment IS NOT NULL AND ({where})"
    return {number for (number,) in conn.execute(sql, params)}


def remove(store_path: str, numbers: Iterable[int]) -> None:
    """Remove the segments ``numbers`` (once the transaction that freed them committed).

    A segment that cannot be removed only keeps its space: no row names it any more.
    """
    directory = directory_of(store_path)
    for number in numbers:
        path = _path(directory, number)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("store %s: cannot remove %s: %s", store_path, path, exc.strerror)
