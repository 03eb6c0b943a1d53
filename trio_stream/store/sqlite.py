"""The embedded SQLite store: one database file, WAL mode, batched writes.

Layout and rules:

* One write connection, used by one write at a time (a :class:`trio.Lock`), each write one
  transaction (``BEGIN IMMEDIATE``) run behind :func:`trio.to_thread.run_sync`. A batch of
  events becomes a few rows of up to 1000 events each (:mod:`.chunks`) and one commit, so a
  session costs one transaction per recorder flush and one row per thousand lines.
* The chunks of a large write (a burst of output, at least
  :data:`~trio_stream.store.segments.EXTERNAL_BYTES`) are not written into the database:
  they are appended to a segment file beside it, synced before the transaction that adds
  their rows commits, and each row names where its body is (:mod:`.segments`). Through the
  WAL they were written, and synced, twice.
* Reads use their own connections (a small pool), so they run while a write is in
  progress: WAL lets readers see the last committed state without waiting.
* Connections are created with ``check_same_thread=False`` because trio's worker threads
  differ from call to call; the lock and the pool guarantee that a connection is only
  ever used by one thread at a time.
* A new store has pages of 16 KiB (:data:`PAGE_SIZE`; SQLite's default is 4 KiB): chunks
  are tens of KB, and each page of their overflow chains cost its own write to the WAL.
  A store created before keeps its pages.
* ``synchronous=NORMAL`` in WAL mode: a committed batch survives the death of the process
  (``kill -9``); only a power loss may lose the last commits.
* Checkpoints (copying the WAL back into the database file, and the ``fsync`` that makes
  the copy durable) run in a thread of their own, with a connection of their own, once
  :data:`CHECKPOINT_BYTES` were committed since the last one: SQLite's own automatic
  checkpoint ran inside the commit that crossed its threshold, and held the writer (and so
  a recording command) for a third of the time of a large recording. A WAL that the
  background checkpoints never catch up with is checkpointed by the writer itself before
  its next transaction once :data:`WAL_LIMIT_BYTES` were committed since the log last
  started over (after the background one in progress), so that the log starts over: a
  smaller file, quicker to remove at the end. The writer counts those bytes itself; a
  checkpoint can only say how large the log was when it ran, and with background ones
  slower than the commits the log grew to the size of the whole recording.
  What a background checkpoint copied is synced through one descriptor of the database
  file, opened once and closed after every connection: closing a descriptor of a file
  drops all the POSIX locks the process holds on it, SQLite's included.
* The schema is versioned (``PRAGMA user_version``) and migrated forward on open; a file
  written by a newer tstream, or a database that is not a tstream store, is refused with
  :class:`StoreError`, never rewritten.
* Sessions still ``running`` whose recording process (pid and host) is gone are marked
  ``interrupted`` when the store is opened (:meth:`SQLiteStore.recover_interrupted`).
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar, final

import orjson
import trio

from ..batches import EventRuns
from ..events import Event, EventValidationError, converter
from . import chunks, segments
from . import query as q
from .base import (
    AmbiguousSessionError,
    HistoryQuery,
    OffsetConflictError,
    SessionExistsError,
    SessionInfo,
    SessionStatus,
    StoreError,
    UnknownSessionError,
)
from .retention import SessionPruning
from .sessions import apply_changes, check_batch, new_session, process_alive, process_start_time

SCHEMA_VERSION: Final = 4
APPLICATION_ID: Final = 0x74737472  # "tstr": marks a database as a tstream store
DEFAULT_BUSY_TIMEOUT: Final = 15.0
READ_CONNECTIONS: Final = 4
# A new store's pages: a chunk of a thousand lines (about 100 KB) takes a few pages rather
# than a chain of two dozen, each written to the WAL, checksummed and copied back on its
# own. A commit of a few lines writes a few pages too, 16 KiB each rather than 4 KiB.
PAGE_SIZE: Final = 16384
# Bytes committed after which a background checkpoint starts (SQLite's own threshold is
# 1000 pages: 16 MiB with the pages above).
CHECKPOINT_BYTES: Final = 16 << 20
# A WAL this large is checkpointed by the writer before its next transaction.
WAL_LIMIT_BYTES: Final = 32 << 20

_T = TypeVar("_T")
logger = logging.getLogger(__name__)

# Each entry upgrades the schema from version N-1 to N; applied in order, in one transaction.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE sessions (
            sid INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            command TEXT NOT NULL,
            cwd TEXT NOT NULL,
            status TEXT NOT NULL,
            created REAL NOT NULL,
            last_activity REAL NOT NULL,
            ended REAL,
            exit_status INTEGER,
            workflow_session_id TEXT,
            metadata TEXT NOT NULL,
            tags TEXT NOT NULL,
            events INTEGER NOT NULL DEFAULT 0,
            last_offset INTEGER NOT NULL DEFAULT -1,
            pid INTEGER,
            host TEXT NOT NULL,
            pid_start INTEGER
        )""",
        """CREATE INDEX sessions_by_created ON sessions (created)""",
        # A session's events, in chunks of consecutive offsets (see chunks.py). Reading
        # "what follows offset N" is one index seek on (sid, last_offset), however long
        # the session.
        """CREATE TABLE chunks (
            sid INTEGER NOT NULL,
            first_offset INTEGER NOT NULL,
            last_offset INTEGER NOT NULL,
            events INTEGER NOT NULL,
            min_ts REAL NOT NULL,
            max_ts REAL NOT NULL,
            body BLOB NOT NULL
        )""",
        """CREATE UNIQUE INDEX chunks_by_offset ON chunks (sid, last_offset)""",
    ),
    # Chunks may hold lines as columns (see chunks.py), which schema 1 readers cannot read:
    # the version stops them with a clear error instead.
    2: (),
    # Chunks may hold lines read together as one text (see chunks.py), which schema 2
    # readers cannot read.
    3: (),
    # A chunk's body may be kept in a segment file beside the database (see segments.py):
    # the row names the segment, the offset and the length, and its body is empty.
    4: (
        "ALTER TABLE chunks ADD COLUMN segment INTEGER",
        "ALTER TABLE chunks ADD COLUMN segment_offset INTEGER",
        "ALTER TABLE chunks ADD COLUMN segment_length INTEGER",
        "CREATE INDEX chunks_by_segment ON chunks (segment) WHERE segment IS NOT NULL",
    ),
}

_SESSION_COLUMNS: Final = (
    "id, command, cwd, status, created, last_activity, ended, exit_status, "
    "workflow_session_id, metadata, tags, events, last_offset, pid, host"
)
_INSERT_CHUNK: Final = (
    "INSERT INTO chunks (sid, first_offset, last_offset, events, min_ts, max_ts, body, "
    "segment, segment_offset, segment_length) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A chunk's body as SegmentReader.body takes it.
_BODY: Final = "body, segment, segment_offset, segment_length"


def _row_session(row: tuple[Any, ...]) -> SessionInfo:
    (sid, command, cwd, status, created, last_activity, ended, exit_status, workflow) = row[:9]
    metadata, tags, events, last_offset, pid, host = row[9:]
    return SessionInfo(
        id=sid,
        command=orjson.loads(command),
        cwd=cwd,
        status=SessionStatus(status),
        created=created,
        last_activity=last_activity,
        ended=ended,
        exit_status=exit_status,
        workflow_session_id=workflow,
        metadata=orjson.loads(metadata),
        tags=orjson.loads(tags),
        events=events,
        last_offset=last_offset,
        pid=pid,
        host=host,
    )


def _dumps(name: str, value: Any) -> str:
    try:
        return orjson.dumps(value, default=converter.unstructure).decode()
    except TypeError as exc:
        raise ValueError(f"session {name} cannot be stored as JSON: {exc}") from None


def _session_values(info: SessionInfo) -> tuple[Any, ...]:
    return (
        _dumps("command", list(info.command)),
        info.cwd,
        SessionStatus(info.status).value,
        info.created,
        info.last_activity,
        info.ended,
        info.exit_status,
        info.workflow_session_id,
        _dumps("metadata", info.metadata),
        _dumps("tags", list(info.tags)),
        info.last_offset,
        info.pid,
        info.host,
    )


@final
class SQLiteStore(SessionPruning):
    """Sessions and events in one SQLite database file.

    Open it with :meth:`open` (or :func:`trio_stream.store.open_store`), close it with
    :meth:`aclose`.
    """

    def __init__(self, path: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._epoch = ""
        self._writer: sqlite3.Connection | None = None
        self._write_lock = trio.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._all_readers: list[sqlite3.Connection] = []
        self._read_limiter = trio.CapacityLimiter(READ_CONNECTIONS)
        self._closed = False
        self._page_size = PAGE_SIZE
        # Bytes committed since the last checkpoint started (an estimate: what was written).
        self._committed = 0
        # Bytes committed since the WAL last started over (an estimate, as above).
        self._wal_bytes = 0
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_done: threading.Event | None = None
        # The database file, opened once to sync what checkpoints copy (None: not yet; -1:
        # not a file of its own). Closed only after every connection: closing any
        # descriptor of a file drops all the POSIX locks this process holds on it,
        # SQLite's included, and another process would then take the database for its own
        # and remove the WAL this one still writes to.
        self._sync_fd: int | None = None
        # Large writes keep their chunks in segment files (see segments.py), once the
        # database is known to be a file of its own.
        self._external = False
        self._segments = segments.SegmentWriter(path)
        # Segments that the running write transaction freed: removed once it commits.
        self._freed: list[int] = []

    @classmethod
    async def open(cls, path: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> SQLiteStore:
        """Open (creating or migrating if needed) the store in ``path``.

        Raises:
            StoreError: when the file cannot be opened, is locked, corrupt, not a tstream
                store, or written by a newer tstream.
        """
        store = cls(path, busy_timeout=busy_timeout)
        try:
            await trio.to_thread.run_sync(store._open_sync)
            await store.recover_interrupted()
        except BaseException:
            await store.aclose()
            raise
        return store

    @property
    def epoch(self) -> str:
        return self._epoch

    # -- connections and errors ----------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = self._guard(
            lambda: sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        )
        try:
            self._guard(lambda: self._setup(conn))
        except StoreError:
            conn.close()
            raise
        return conn

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA synchronous = NORMAL")

    def _guard(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn``, turning SQLite's errors into StoreError with a clear message."""
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise StoreError(
                    f"store {self.path} is locked by another process "
                    f"(waited {self.busy_timeout:g}s): {text}"
                ) from None
            if "unable to open" in text:
                raise StoreError(f"cannot open store {self.path}: {text}") from None
            raise StoreError(f"store {self.path}: {text}") from None
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"store {self.path} is corrupt or not a tstream database: {exc}"
            ) from None
        except (EventValidationError, orjson.JSONDecodeError) as exc:
            raise StoreError(
                f"store {self.path} holds an event this tstream cannot read: {exc}"
            ) from None

    def _open_sync(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreError(f"cannot open store {self.path}: directory {directory} does not exist")
        self._writer = conn = self._connect()
        self._guard(lambda: self._migrate(conn))
        # Checkpoints are this store's to start (see the module's notes).
        self._guard(lambda: conn.execute("PRAGMA wal_autocheckpoint = 0"))
        self._page_size = self._guard(lambda: conn.execute("PRAGMA page_size").fetchone()[0])
        row = self._guard(
            lambda: conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        )
        self._epoch = row[0]
        self._external = os.path.isfile(self.path)

    def _switch_to_wal(self, conn: sqlite3.Connection) -> str:
        """``PRAGMA journal_mode = WAL``, tried again while another process holds the file.

        SQLite does not call its busy handler for this switch: two processes creating one
        store at once made the later one fail at once with "database is locked".
        """
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # One read transaction, so that the version, the mark and the tables come from one
        # snapshot: read one by one, a store another process was creating meanwhile could
        # show its tables without its mark, and be called "not a tstream store".
        conn.execute("BEGIN")
        try:
            version = self._check_version(conn)
        finally:
            conn.execute("COMMIT")
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            # Before the file's first page is written: the size of a new store's pages.
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        if self._switch_to_wal(conn).lower() != "wal":
            raise StoreError(f"store {self.path}: cannot switch the database to WAL mode")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while this one waited for the lock.
            version = self._check_version(conn)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
            if version == 0:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('epoch', ?)", (uuid.uuid4().hex,)
                )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk); the first error is the news.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_version(self, conn: sqlite3.Connection) -> int:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise StoreError(f"store {self.path} is an SQLite database but not a tstream store")
        elif app_id != APPLICATION_ID:
            raise StoreError(f"store {self.path} is an SQLite database but not a tstream store")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than this tstream "
                f"understands ({SCHEMA_VERSION}); upgrade tstream to use it"
            )
        return int(version)

    def _check_open(self) -> None:
        if self._closed or self._writer is None:
            raise StoreError(f"store {self.path} is closed")

    async def _write(
        self, fn: Callable[[sqlite3.Connection], _T], size: Callable[[], int] | None = None
    ) -> _T:
        """Run ``fn(conn)`` in one write transaction, in a worker thread.

        ``size``, once the transaction is done, tells about how many bytes it wrote (at
        least a page is counted): what decides when the next checkpoint starts.
        """
        self._check_open()
        conn = self._writer
        assert conn is not None

        def transaction() -> _T:
            if self._wal_bytes >= WAL_LIMIT_BYTES:
                # The WAL starts over only after a checkpoint that copied all of it, which
                # one running beside this writer never does: this one, after it.
                running = self._checkpoint_done
                if running is not None:
                    running.wait()
                # Copied whole, the WAL starts over with this transaction. A reader still
                # in its older part keeps it: the next try is a threshold's worth later,
                # not at every transaction.
                whole = self._checkpoint_sync(conn)
                self._wal_bytes = 0 if whole else WAL_LIMIT_BYTES - CHECKPOINT_BYTES
            self._freed = []
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if self._freed:
                segments.remove(self.path, self._freed)
            return result

        async with self._write_lock:
            result = await trio.to_thread.run_sync(self._guard, transaction)
            written = max(size() if size else 0, self._page_size)
            self._committed += written
            self._wal_bytes += written
            if self._committed >= CHECKPOINT_BYTES:
                self._start_checkpoint()
            return result

    def _checkpoint_sync(self, conn: sqlite3.Connection) -> bool:
        """A passive checkpoint on ``conn``: it copies what no reader still needs and
        waits for nobody. True when it copied the whole WAL."""
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return not busy and frames == copied

    def _start_checkpoint(self) -> None:
        """Start a checkpoint in a thread of its own, unless one is still running."""
        if self._checkpoint_done is not None and not self._checkpoint_done.is_set():
            return
        self._committed = 0
        done = self._checkpoint_done = threading.Event()

        def checkpoint() -> None:
            if self._checkpointer is None:
                self._checkpointer = self._connect()
            self._checkpoint_sync(self._checkpointer)
            # SQLite syncs the database file only after a checkpoint that copied the whole
            # WAL, which one running beside a busy writer rarely does: what it copied would
            # otherwise be synced all at once when the store closes.
            if self._sync_fd is None:
                try:
                    self._sync_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    # Not a file of its own (an in-memory database): nothing to sync.
                    self._sync_fd = -1
            if self._sync_fd >= 0:
                os.fdatasync(self._sync_fd)

        def finished(result: Any) -> None:
            # A failed checkpoint loses nothing: the WAL keeps every commit, and the next
            # checkpoint (or the writer's) copies it.
            if hasattr(result, "error"):
                logger.warning("store %s: checkpoint failed: %r", self.path, result.error)
            done.set()

        trio.lowlevel.start_thread_soon(checkpoint, finished)

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn(conn)`` on a read connection, in a worker thread."""
        self._check_open()
        async with self._read_limiter:
            conn = self._readers.pop() if self._readers else None

            def run() -> _T:
                nonlocal conn
                if conn is None:
                    conn = self._connect()
                    self._all_readers.append(conn)
                try:
                    return self._guard(lambda: fn(conn))  # type: ignore[arg-type]
                except segments.SegmentGone:
                    # Its rows were deleted meanwhile (a compaction or a prune): read
                    # again, from what is committed now. Missing again, it is an error.
                    return self._guard(lambda: fn(conn))  # type: ignore[arg-type]

            try:
                return await trio.to_thread.run_sync(run)
            finally:
                if conn is not None:
                    self._readers.append(conn)

    @staticmethod
    def _sid(conn: sqlite3.Connection, session_id: str) -> int:
        row = conn.execute("SELECT sid FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise UnknownSessionError(session_id)
        return int(row[0])

    @staticmethod
    def _session(conn: sqlite3.Connection, session_id: str) -> SessionInfo:
        row = conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        if row is None:
            raise UnknownSessionError(session_id)
        return _row_session(row)

    # -- sessions --------------------------------------------------------------------

    async def create_session(self, info: SessionInfo) -> SessionInfo:
        info = new_session(info)
        values = _session_values(info)
        pid_start = (
            process_start_time(info.pid)
            if info.pid is not None and info.host == socket.gethostname()
            else None
        )

        def create(conn: sqlite3.Connection) -> SessionInfo:
            try:
                conn.execute(
                    "INSERT INTO sessions (id, command, cwd, status, created, last_activity, "
                    "ended, exit_status, workflow_session_id, metadata, tags, last_offset, "
                    "pid, host, pid_start) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (info.id, *values, pid_start),
                )
            except sqlite3.IntegrityError:
                raise SessionExistsError(info.id) from None
            return self._session(conn, info.id)

        return await self._write(create)

    async def get_session(self, session_id: str) -> SessionInfo:
        return await self._read(lambda conn: self._session(conn, session_id))

    async def resolve(self, ref: str) -> SessionInfo:
        def resolve(conn: sqlite3.Connection) -> SessionInfo:
            if ref == "latest":
                row = conn.execute(
                    f"SELECT {_SESSION_COLUMNS} FROM sessions "
                    "ORDER BY created DESC, id DESC LIMIT 1"
                ).fetchone()
                if row is None:
                    raise UnknownSessionError(ref)
                return _row_session(row)
            row = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (ref,)
            ).fetchone()
            if row is not None:
                return _row_session(row)
            if not ref:
                raise UnknownSessionError(ref)
            rows = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE substr(id, 1, ?) = ? "
                "ORDER BY id LIMIT 6",
                (len(ref), ref),
            ).fetchall()
            if not rows:
                raise UnknownSessionError(ref)
            if len(rows) > 1:
                raise AmbiguousSessionError(ref, [r[0] for r in rows])
            return _row_session(rows[0])

        return await self._read(resolve)

    async def list_sessions(
        self, *, status: SessionStatus | None = None, limit: int | None = None
    ) -> list[SessionInfo]:
        sql = f"SELECT {_SESSION_COLUMNS} FROM sessions"
        params: list[Any] = []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(SessionStatus(status).value)
        sql += " ORDER BY created DESC, id DESC LIMIT ?"
        params.append(-1 if limit is None else max(0, limit))
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [_row_session(row) for row in rows]

    async def update_session(self, session_id: str, **changes: Any) -> SessionInfo:
        def update(conn: sqlite3.Connection) -> SessionInfo:
            info = apply_changes(self._session(conn, session_id), changes)
            values = _session_values(info)
            conn.execute(
                "UPDATE sessions SET command = ?, cwd = ?, status = ?, created = ?, "
                "last_activity = ?, ended = ?, exit_status = ?, workflow_session_id = ?, "
                "metadata = ?, tags = ?, last_offset = ?, pid = ?, host = ? WHERE id = ?",
                (*values, session_id),
            )
            return self._session(conn, session_id)

        return await self._write(update)

    def _destroy(self, conn: sqlite3.Connection, sids: list[int]) -> None:
        """Delete the sessions ``sids`` and their events."""
        self._delete_chunks(conn, "sid = ?", [(sid,) for sid in sids])
        conn.executemany("DELETE FROM sessions WHERE sid = ?", [(sid,) for sid in sids])

    def _delete_chunks(self, conn: sqlite3.Connection, where: str, params: list[Any]) -> None:
        """Delete the chunks matching ``where`` for each of ``params``; the segments that
        no row names any more are removed once the transaction commits."""
        named: set[int] = set()
        for values in params:
            named |= segments.segments_of(conn, where, values)
        conn.executemany(f"DELETE FROM chunks WHERE {where}", params)
        if named:
            self._freed += segments.unreferenced(conn, named)

    async def destroy_session(self, session_id: str) -> None:
        await self._write(lambda conn: self._destroy(conn, [self._sid(conn, session_id)]))

    async def recover_interrupted(self) -> list[str]:
        """Mark ``interrupted`` the running sessions of this host whose recorder is gone.

        Returns:
            The ids marked.
        """
        host = socket.gethostname()
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT id, pid, pid_start FROM sessions WHERE status = 'running' AND host = ?",
                (host,),
            ).fetchall()
        )
        dead = [sid for sid, pid, start in rows if pid is None or not process_alive(pid, start)]
        if not dead:
            return []

        def mark(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE sessions SET status = 'interrupted', ended = last_activity "
                "WHERE id = ? AND status = 'running'",
                [(sid,) for sid in dead],
            )

        await self._write(mark)
        return dead

    # -- events ----------------------------------------------------------------------

    async def append(self, session_id: str, events: Sequence[Event]) -> None:
        if not events:
            self._check_open()
            return
        first = chunks.span(events)[0]
        last = check_batch(session_id, events, first - 1)
        newest = max(chunks.last_stamp(events), time.time())
        written = 0

        def append(conn: sqlite3.Connection) -> None:
            nonlocal written
            row = conn.execute(
                "SELECT sid, last_offset FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                raise UnknownSessionError(session_id)
            sid, stored = row
            if first <= stored:
                raise OffsetConflictError(session_id, first, stored)
            rows = []
            bodies = []
            for piece in chunks.split(events):
                oldest, newest_ts = chunks.stamps(piece)
                rows.append((sid, *chunks.span(piece), len(piece), oldest, newest_ts))
                bodies.append(chunks.encode(piece, joined=True))
            size = sum(map(len, bodies))
            if self._external and size >= segments.EXTERNAL_BYTES:
                # A burst: its chunks go to a segment, synced before the rows commit.
                number, offsets = self._segments.write(conn, bodies)
                conn.executemany(
                    _INSERT_CHUNK,
                    [
                        (*row, b"", number, offset, len(body))
                        for row, body, offset in zip(rows, bodies, offsets, strict=True)
                    ],
                )
            else:
                conn.executemany(
                    _INSERT_CHUNK,
                    [
                        (*row, body, None, None, None)
                        for row, body in zip(rows, bodies, strict=True)
                    ],
                )
                written = size
            conn.execute(
                "UPDATE sessions SET events = events + ?, last_offset = ?, "
                "last_activity = max(last_activity, ?) WHERE sid = ?",
                (len(events), last, newest, sid),
            )

        await self._write(append, lambda: written)

    @staticmethod
    def _scan(
        conn: sqlite3.Connection,
        reader: segments.SegmentReader,
        session_id: str,
        query: HistoryQuery,
        *,
        newest_first: bool = False,
        wanted: int | None = None,
    ) -> Iterator[list[Event]]:
        """The events after ``query.after`` that pass its filters, chunk by chunk.

        Without filters, at most ``wanted`` events of a chunk are built (the rest would be
        thrown away).
        """
        sid = SQLiteStore._sid(conn, session_id)
        sql = f"SELECT {_BODY} FROM chunks WHERE sid = ? AND last_offset > ?"
        params: list[Any] = [sid, query.after]
        # Chunks entirely outside the time range are skipped without decoding them.
        if query.start_time is not None:
            sql += " AND max_ts >= ?"
            params.append(query.start_time)
        if query.end_time is not None:
            sql += " AND min_ts <= ?"
            params.append(query.end_time)
        sql += " ORDER BY last_offset DESC" if newest_first else " ORDER BY last_offset"
        predicate = q.matcher(query)
        for row in conn.execute(sql, params):
            limit = wanted if predicate is None and not newest_first else None
            events = chunks.decode(session_id, reader.body(*row), query.after, limit)
            if newest_first:
                events.reverse()
            yield events if predicate is None else [e for e in events if predicate(e)]

    def _read_sync(
        self, conn: sqlite3.Connection, session_id: str, query: HistoryQuery
    ) -> list[Event]:
        with segments.SegmentReader(self.path) as reader:
            return self._select(conn, reader, session_id, query)

    @staticmethod
    def _select(
        conn: sqlite3.Connection,
        reader: segments.SegmentReader,
        session_id: str,
        query: HistoryQuery,
    ) -> list[Event]:
        if query.last is None:
            wanted = None if query.limit is None else query.skip + query.limit
            found: list[Event] = []
            if wanted != 0:
                for events in SQLiteStore._scan(conn, reader, session_id, query, wanted=wanted):
                    found.extend(events)
                    if wanted is not None and len(found) >= wanted:
                        break
        else:
            found = []
            if query.last > 0:
                scan = SQLiteStore._scan(conn, reader, session_id, query, newest_first=True)
                for events in scan:
                    found.extend(events)
                    if len(found) >= query.last:
                        break
            found = found[: query.last]
            found.reverse()
        found = found[query.skip :]
        return found if query.limit is None else found[: query.limit]

    async def read(self, session_id: str, query: HistoryQuery = HistoryQuery()) -> list[Event]:
        q.check_query(query)
        return await self._read(lambda conn: self._read_sync(conn, session_id, query))

    async def read_rows(
        self, session_id: str, after: int = -1, limit: int = 10_000
    ) -> chunks.StoredEvents:
        """Up to about ``limit`` events after ``after``, unfiltered and not built yet: what
        a follower that writes lines out reads (a whole chunk more than ``limit`` at most).
        """

        def read(conn: sqlite3.Connection) -> chunks.StoredEvents:
            bodies = self._bodies(conn, session_id, after, limit)
            try:
                return chunks.decode_rows(session_id, bodies, after)
            except (TypeError, ValueError, LookupError) as exc:
                raise EventValidationError([f"stored event: {exc}"]) from None

        return await self._read(read)

    async def read_runs(self, session_id: str, after: int = -1, limit: int = 10_000) -> EventRuns:
        """:meth:`read_rows` with lines kept as the columns their chunks hold (batches of
        lines, :func:`~trio_stream.store.chunks.decode_runs`)."""
        return await self._read(
            lambda conn: chunks.decode_runs(
                session_id, self._bodies(conn, session_id, after, limit), after
            )
        )

    def _bodies(
        self, conn: sqlite3.Connection, session_id: str, after: int, limit: int
    ) -> list[bytes]:
        """The chunks holding about ``limit`` events after ``after``, in order."""
        sid = self._sid(conn, session_id)
        rows = conn.execute(
            f"SELECT {_BODY}, first_offset, last_offset FROM chunks "
            "WHERE sid = ? AND last_offset > ? ORDER BY last_offset",
            (sid, after),
        )
        bodies: list[bytes] = []
        count = 0
        with segments.SegmentReader(self.path) as reader:
            for *body, first, last in rows:
                bodies.append(reader.body(*body))
                # A chunk's offsets are consecutive; the first one may start before after.
                count += last - max(first, after + 1) + 1
                if count >= limit:
                    break
        return bodies

    async def count(self, session_id: str, query: HistoryQuery = HistoryQuery()) -> int:
        q.check_query(query)

        def count(conn: sqlite3.Connection) -> int:
            if query == HistoryQuery():
                row = conn.execute(
                    "SELECT events FROM sessions WHERE id = ?", (session_id,)
                ).fetchone()
                if row is None:
                    raise UnknownSessionError(session_id)
                return int(row[0])
            return len(self._read_sync(conn, session_id, query))

        return await self._read(count)

    async def last_offset(self, session_id: str) -> int:
        return (await self.get_session(session_id)).last_offset

    async def clear(self, session_id: str) -> None:
        def clear(conn: sqlite3.Connection) -> None:
            sid = self._sid(conn, session_id)
            self._delete_chunks(conn, "sid = ?", [(sid,)])
            conn.execute("UPDATE sessions SET events = 0 WHERE sid = ?", (sid,))

        await self._write(clear)

    def _compact(self, conn: sqlite3.Connection, sid: int, keep_last: int) -> int:
        total = conn.execute("SELECT events FROM sessions WHERE sid = ?", (sid,)).fetchone()[0]
        excess = total - keep_last
        if excess <= 0:
            return 0
        # The chunks that go are the oldest: those up to the last offset of the last one.
        doomed_through: int | None = None
        removed = 0
        boundary: tuple[int, int] | None = None
        for rowid, count, last in conn.execute(
            "SELECT rowid, events, last_offset FROM chunks WHERE sid = ? ORDER BY last_offset",
            (sid,),
        ).fetchall():
            if removed + count <= excess:
                doomed_through = last
                removed += count
                if removed == excess:
                    break
            else:
                boundary = (rowid, excess - removed)
                break
        if doomed_through is not None:
            self._delete_chunks(conn, "sid = ? AND last_offset <= ?", [(sid, doomed_through)])
        if boundary is not None:
            rowid, drop = boundary
            row = conn.execute(f"SELECT {_BODY} FROM chunks WHERE rowid = ?", (rowid,)).fetchone()
            with segments.SegmentReader(self.path) as reader:
                body = reader.body(*row)
            body, first, count, min_ts, max_ts = chunks.trim(body, drop)
            # What is left of the chunk is kept in its row.
            conn.execute(
                "UPDATE chunks SET body = ?, first_offset = ?, events = ?, min_ts = ?, "
                "max_ts = ?, segment = NULL, segment_offset = NULL, segment_length = NULL "
                "WHERE rowid = ?",
                (body, first, count, min_ts, max_ts, rowid),
            )
            if row[1] is not None:
                self._freed += segments.unreferenced(conn, [row[1]])
            removed += drop
        conn.execute("UPDATE sessions SET events = events - ? WHERE sid = ?", (removed, sid))
        return removed

    async def compact(self, session_id: str, keep_last: int) -> int:
        if keep_last < 0:
            raise ValueError(f"keep_last must be 0 or more, not {keep_last}")
        return await self._write(
            lambda conn: self._compact(conn, self._sid(conn, session_id), keep_last)
        )

    async def _prune(
        self, older_than: float | None, max_events: int | None, dry_run: bool
    ) -> list[str]:
        # In one transaction: the doomed sessions go, then the others are compacted.
        def doomed(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            if older_than is None:
                return []
            return conn.execute(
                "SELECT sid, id FROM sessions WHERE status != 'running' AND last_activity < ? "
                "ORDER BY id",
                (older_than,),
            ).fetchall()

        if dry_run:
            return [sid for _, sid in await self._read(doomed)]

        def prune(conn: sqlite3.Connection) -> list[str]:
            rows = doomed(conn)
            self._destroy(conn, [sid for sid, _ in rows])
            if max_events is not None:
                over = conn.execute(
                    "SELECT sid FROM sessions WHERE events > ?", (max_events,)
                ).fetchall()
                for (sid,) in over:
                    self._compact(conn, sid, max_events)
            return [name for _, name in rows]

        return await self._write(prune)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            done = self._checkpoint_done
            if done is not None and not done.is_set():
                # Its connection is closed below: the checkpoint finishes first (it copies
                # what one threshold's worth of commits wrote).
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(done.wait)
            self._segments.close()
            connections = [self._checkpointer] if self._checkpointer else []
            connections += self._all_readers
            # The writer last: closing the last connection checkpoints what is left.
            connections += [self._writer] if self._writer else []
            try:
                for conn in connections:
                    conn.close()
            finally:
                # After every connection (see _sync_fd).
                if self._sync_fd is not None and self._sync_fd >= 0:
                    os.close(self._sync_fd)
                self._sync_fd = None
        self._checkpointer = None
        self._readers.clear()
        self._all_readers.clear()
        self._writer = None
