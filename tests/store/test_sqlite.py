import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import trio

from trio_stream.events import EventType, Output, make_event
from trio_stream.session import StreamConfig, run_session
from trio_stream.store import (
    HistoryQuery,
    SessionInfo,
    SessionStatus,
    StoreError,
    chunks,
    open_store,
    segments,
)
from trio_stream.store import sqlite as sqlite_store
from trio_stream.store.query import read_batches
from trio_stream.store.sqlite import APPLICATION_ID, PAGE_SIZE, SCHEMA_VERSION, SQLiteStore

from .conftest import lines


@pytest.fixture
def db(tmp_path):
    return tmp_path / "store.db"


async def test_history_and_epoch_survive_reopening(db):
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        await store.append("s", lines("s", 0, ["a", "b"]))
        epoch = store.epoch
    async with open_store(f"sqlite:{db}") as store:
        assert store.epoch == epoch
        assert [e.data.text for e in await store.read("s")] == ["a", "b"]


async def test_database_is_in_wal_mode_and_marked_as_a_tstream_store(db):
    async with open_store(db):
        pass
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_new_store_has_large_pages_and_an_older_one_keeps_its_own(tmp_path, monkeypatch):
    async with open_store(tmp_path / "new.db"):
        pass
    page_size = "PRAGMA page_size"
    assert sqlite3.connect(tmp_path / "new.db").execute(page_size).fetchone()[0] == PAGE_SIZE
    older = tmp_path / "older.db"
    with monkeypatch.context() as patched:
        patched.setattr(sqlite_store, "PAGE_SIZE", 4096)
        async with open_store(older) as store:
            await store.create_session(SessionInfo("s"))
            await store.append("s", lines("s", 0, ["a"]))
    async with open_store(older) as store:
        await store.append("s", lines("s", 1, ["b"]))
        assert [e.data.text for e in await store.read("s")] == ["a", "b"]
    assert sqlite3.connect(older).execute(page_size).fetchone()[0] == 4096


async def test_checkpoints_run_beside_the_writer_and_keep_the_wal_bounded(db, monkeypatch):
    # Small thresholds: a checkpoint every 64 KiB committed, the writer's own past 256 KiB.
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_BYTES", 64 * 1024)
    monkeypatch.setattr(sqlite_store, "WAL_LIMIT_BYTES", 256 * 1024)
    wal = db.with_name(db.name + "-wal")
    text = "x" * 1000
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        # SQLite's own checkpoint inside a commit is off on the writer.
        assert store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        size_before = db.stat().st_size
        offset = 0
        for _ in range(200):
            await store.append("s", lines("s", offset, [text] * 32))
            offset += 32
        # 6.4 MB were committed: checkpoints copied them into the database file while
        # the store stayed open, and the log was started over rather than grown.
        await trio.to_thread.run_sync(store._checkpoint_done.wait)
        assert db.stat().st_size > size_before + 4_000_000
        assert wal.stat().st_size < 2_000_000
        # A reader of another connection sees every commit meanwhile.
        events = await store.read("s")
        assert len(events) == offset and events[-1].data.text == text
    # Closing the last connection leaves no log behind, and nothing was lost.
    assert not wal.exists()
    async with open_store(db) as store:
        assert len(await store.read("s")) == offset


async def test_the_wal_starts_over_under_commits_larger_than_a_checkpoint(db, monkeypatch):
    # Each commit (100 KB) is larger than the background threshold and near the writer's,
    # and the disk is slow to sync what a background checkpoint copied. The writer counts
    # what it commits itself, so the log starts over at its limit; it used to wait for
    # checkpoints to report the log's size, and then grew to the whole recording.
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_BYTES", 64 * 1024)
    monkeypatch.setattr(sqlite_store, "WAL_LIMIT_BYTES", 256 * 1024)
    fdatasync = sqlite_store.os.fdatasync

    def slow_sync(fd):
        time.sleep(0.01)
        fdatasync(fd)

    monkeypatch.setattr(sqlite_store.os, "fdatasync", slow_sync)
    wal = db.with_name(db.name + "-wal")
    text = "x" * 1000
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        offset = 0
        largest = 0
        for _ in range(60):
            await store.append("s", lines("s", offset, [text] * 100))
            offset += 100
            largest = max(largest, wal.stat().st_size)
        # 6 MB committed; the log never held more than its limit and a few commits.
        assert largest < 1_000_000
        assert len(await store.read("s")) == offset


async def test_a_reader_holding_the_wal_does_not_make_every_commit_checkpoint(db, monkeypatch):
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_BYTES", 64 * 1024)
    monkeypatch.setattr(sqlite_store, "WAL_LIMIT_BYTES", 256 * 1024)
    text = "x" * 1000
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        await store.append("s", lines("s", 0, [text] * 100))
        # Another connection stays in a read transaction on the WAL as it is now.
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM chunks").fetchone()
        writer_checkpoints = 0
        original = sqlite_store.SQLiteStore._checkpoint_sync

        def counted(self, conn):
            nonlocal writer_checkpoints
            writer_checkpoints += conn is self._writer
            return original(self, conn)

        monkeypatch.setattr(sqlite_store.SQLiteStore, "_checkpoint_sync", counted)
        await store.append("s", lines("s", 100, [text] * 200))
        offset = 300
        for _ in range(300):
            await store.append("s", lines("s", offset, [text] * 10))
            offset += 10
        reader.close()
        # 300 commits of 10 KB past the limit: a try at each would be 300; the writer
        # retries once another background threshold (64 KiB) was committed.
        assert 1 <= writer_checkpoints <= 100
        assert len(await store.read("s")) == offset


async def test_another_process_closing_the_store_never_removes_the_wal_of_a_writer(db, monkeypatch):
    # The background checkpoints sync the database file through a descriptor of their own.
    # Closing such a descriptor drops every POSIX lock the process holds on the file,
    # SQLite's too: another process closing its connection then took itself for the last
    # one, checkpointed and removed the WAL, and what the writer committed next was lost.
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_BYTES", 64 * 1024)
    text = "x" * 1000
    offset = 0
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        for _ in range(20):
            await store.append("s", lines("s", offset, [text] * 32))
            offset += 32
        await trio.to_thread.run_sync(store._checkpoint_done.wait)
        other = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2])"
        query = "SELECT count(*) FROM sessions"
        await trio.run_process([sys.executable, "-c", other, str(db), query])
        assert db.with_name(db.name + "-wal").exists()
        await store.append("s", lines("s", offset, ["after"]))
        offset += 1
    async with open_store(db) as store:
        events = await store.read("s")
    assert len(events) == offset and events[-1].data.text == "after"


async def test_exact_bytes_and_line_endings_round_trip(db):
    odd = make_event(
        EventType.OUTPUT,
        Output("stderr", "caf\ufffd", "\r", 7, True, b"caf\xe9\r"),
        session="s",
        offset=0,
    )
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        await store.append("s", [odd])
        assert await store.read("s") == [odd]


async def test_newer_schema_is_refused_not_rewritten(db):
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        async with open_store(db):
            pass
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def stored_bodies(path):
    """Every chunk's body, read from its row or from the segment file the row names."""
    conn = sqlite3.connect(path)
    bodies = []
    for body, segment, offset, length in conn.execute(
        "SELECT body, segment, segment_offset, segment_length FROM chunks ORDER BY rowid"
    ):
        if segment is not None:
            data = (path.parent / f"{path.name}-chunks" / f"{segment:08d}").read_bytes()
            body = data[offset : offset + length]
            assert len(body) == length
        bodies.append(body)
    conn.close()
    return bodies


def older_store(path, version, texts):
    """A store as tstream wrote it at schema ``version``: its tables, marks and one
    session holding ``texts``, in a chunk of lines as arrays (the form every schema reads)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    for target in range(1, version + 1):
        for statement in sqlite_store.MIGRATIONS[target]:
            conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('epoch', 'e')")
    conn.execute(
        "INSERT INTO sessions (sid, id, command, cwd, status, created, last_activity, "
        "metadata, tags, events, last_offset, host) "
        "VALUES (1, 's', '[]', '/', 'completed', 1, 1, '{}', '[]', ?, ?, 'h')",
        (len(texts), len(texts) - 1),
    )
    events = list(lines("s", 0, texts))
    conn.execute(
        "INSERT INTO chunks (sid, first_offset, last_offset, events, min_ts, max_ts, body) "
        "VALUES (1, 0, ?, ?, 0, 0, ?)",
        (len(texts) - 1, len(texts), chunks.encode(events)),
    )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("COMMIT")
    conn.close()


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_an_older_store_is_upgraded_and_keeps_its_history(db, version, monkeypatch):
    # Schema 1 stores held every line as an array (what a list of events is still stored
    # as); schema 2 readers do not know lines held as one text, schema 3 readers chunks
    # kept in segment files, and the version they find after the upgrade stops them.
    monkeypatch.setattr(segments, "EXTERNAL_BYTES", 1000)
    older_store(db, version, ["a", "b"])
    async with open_store(db) as store:
        await store.append("s", lines("s", 2, ["c"]))
        await store.append("s", lines("s", 3, ["d" * 2000]))
        texts = [e.data.text for e in await store.read("s")]
        assert texts == ["a", "b", "c", "d" * 2000]
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # The last write went to a segment.
    assert [row[0] for row in sqlite3.connect(db).execute("SELECT segment FROM chunks")] == [
        None,
        None,
        1,
    ]


async def test_lines_read_together_are_recorded_as_one_text_and_read_back(db):
    # A command's output read in pieces of up to 256 KiB: each read's lines go to the
    # store as the one text they were read as, whole (a read holds up to about 3,200 of
    # these lines, more than a chunk's usual 1,000 events).
    program = "import sys; sys.stdout.write(''.join(f'{n:>80}\\n' for n in range(50000)))"
    async with open_store(db) as store:
        config = StreamConfig(store=store, session_id="many")
        await run_session([sys.executable, "-c", program], config)
        texts = [e.data.text for e in await store.read("many") if e.type is EventType.OUTPUT]
        assert texts == [f"{n:>80}" for n in range(50000)]
    bodies = stored_bodies(db)
    assert all(b'"x"' not in body for body in bodies)
    assert sum(body.count(b'"j"') for body in bodies) >= 50000 * 81 // (256 * 1024)


def test_stores_created_at_once_by_several_processes_all_open(tmp_path):
    # Two runs creating one store at once: SQLite does not call its busy handler when two
    # connections switch a new file to WAL together (each holds a shared lock and waits
    # for the other's), so the later failed at once with "database is locked"; and the
    # version, the mark and the tables read one by one could straddle the other's
    # creation ("not a tstream store"). Threads stand in for processes here.
    failures = []
    for round_ in range(40):
        path = str(tmp_path / f"new-{round_}.db")
        barrier = threading.Barrier(4)

        def create(path=path, barrier=barrier):
            store = SQLiteStore(path)
            barrier.wait()
            try:
                store._open_sync()
            except StoreError as exc:
                failures.append(str(exc))
            finally:
                if store._writer is not None:
                    store._writer.close()

        threads = [threading.Thread(target=create) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


async def test_other_sqlite_databases_are_refused(db):
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE mine (x)")
    conn.close()
    with pytest.raises(StoreError, match="not a tstream store"):
        async with open_store(db):
            pass


async def test_corrupt_file_gives_a_store_error(db):
    db.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StoreError, match="corrupt or not a tstream database"):
        async with open_store(db):
            pass


async def test_missing_directory_is_named(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        async with open_store(tmp_path / "no" / "such.db"):
            pass


async def test_locked_database_gives_a_store_error(db):
    async with open_store(db, busy_timeout=0.05) as store:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="is locked by another process"):
                await store.create_session(SessionInfo("s"))
        finally:
            holder.execute("ROLLBACK")
        await store.create_session(SessionInfo("s"))


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_sessions_of_dead_recorders_are_marked_interrupted_on_open(db):
    host = socket.gethostname()
    async with open_store(db) as store:
        await store.create_session(SessionInfo("dead", pid=dead_pid(), host=host))
        await store.create_session(SessionInfo("alive"))
        await store.create_session(SessionInfo("elsewhere", pid=dead_pid(), host="other-host"))
        await store.append("dead", lines("dead", 0, ["a"], ts=5000.0))
    async with open_store(db) as store:
        dead = await store.get_session("dead")
        assert dead.status is SessionStatus.INTERRUPTED
        assert dead.ended == dead.last_activity
        assert (await store.get_session("alive")).status is SessionStatus.RUNNING
        assert (await store.get_session("elsewhere")).status is SessionStatus.RUNNING


async def test_reused_pid_does_not_keep_a_session_running(db):
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
    conn = sqlite3.connect(db)
    conn.execute("UPDATE sessions SET pid_start = pid_start + 1")
    conn.commit()
    conn.close()
    async with open_store(db) as store:
        assert (await store.get_session("s")).status is SessionStatus.INTERRUPTED


async def test_a_recorder_that_ended_unwaited_does_not_keep_a_session_running(db):
    # A process that has exited but that its parent has not waited for yet (a zombie)
    # records nothing more: its sessions are interrupted, and attach does not wait on it.
    import os

    from trio_stream.store.sessions import process_alive, process_start_time

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert not process_alive(child.pid)
        assert not process_alive(child.pid, process_start_time(child.pid))
        async with open_store(db) as store:
            await store.create_session(SessionInfo("s"))
        conn = sqlite3.connect(db)
        conn.execute("UPDATE sessions SET pid = ?", (child.pid,))
        conn.commit()
        conn.close()
        async with open_store(db) as store:
            assert (await store.get_session("s")).status is SessionStatus.INTERRUPTED
    finally:
        child.wait()
    assert process_alive(os.getpid())


async def test_reader_sees_a_consistent_prefix_while_a_writer_appends(db):
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        seen = []

        async def writer():
            for batch in range(50):
                await store.append("s", lines("s", batch * 100, ["x"] * 100))
                await trio.sleep(0)

        async def reader():
            while len(seen) < 5000:
                events = await store.read("s", HistoryQuery(after=len(seen) - 1))
                assert [e.offset for e in events] == list(range(len(seen), len(seen) + len(events)))
                seen.extend(events)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(reader)
        assert len(seen) == 5000


async def test_two_stores_write_into_one_file_at_once(db):
    async with open_store(db) as first, open_store(db) as second:

        async def fill(store, sid):
            await store.create_session(SessionInfo(sid))
            for batch in range(20):
                await store.append(sid, lines(sid, batch * 50, ["y"] * 50))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fill, first, "one")
            nursery.start_soon(fill, second, "two")
        assert await first.count("two") == 1000
        assert await second.count("one") == 1000


async def test_read_batches_walks_a_session_in_pieces(db):
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        await store.append("s", lines("s", 0, [str(n) for n in range(25)]))
        batches = [b async for b in read_batches(store, "s", HistoryQuery(after=4), batch=10)]
        assert [len(b) for b in batches] == [10, 10]
        assert [e.offset for b in batches for e in b] == list(range(5, 25))


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(chunks, "MAX_CHUNK_EVENTS", 3)


async def test_queries_across_chunk_boundaries(db, small_chunks):
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        await store.append("s", lines("s", 0, [f"t{n}" for n in range(10)], ts=0.0))
        await store.append("s", lines("s", 10, ["u10", "u11"], ts=10.0))

        async def offsets(**kw):
            return [e.offset for e in await store.read("s", HistoryQuery(**kw))]

        assert await offsets(after=4, limit=4) == [5, 6, 7, 8]
        assert await offsets(last=5) == [7, 8, 9, 10, 11]
        assert await offsets(last=5, search_text="U1") == [10, 11]
        assert await offsets(start_time=4.0, end_time=6.0) == [4, 5, 6]
        assert await offsets(after=2, skip=2, limit=2) == [5, 6]
        assert await store.count("s", HistoryQuery(after=8)) == 3


async def test_compaction_cuts_inside_a_chunk(db, small_chunks):
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        await store.append("s", lines("s", 0, [str(n) for n in range(10)]))
        assert await store.compact("s", 5) == 5
        assert [e.offset for e in await store.read("s")] == [5, 6, 7, 8, 9]
        assert [e.offset for e in await store.read("s", HistoryQuery(start_time=1005.0))] == [
            5,
            6,
            7,
            8,
            9,
        ]
        assert await store.count("s") == 5
        assert await store.compact("s", 0) == 5
        assert await store.read("s") == []


async def test_a_damaged_chunk_is_a_store_error(db):
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        await store.append("s", lines("s", 0, ["a"]))
    conn = sqlite3.connect(db)
    conn.execute('UPDATE chunks SET body = \'[[0, "id", 1.0, "nope", {}]]\'')
    conn.commit()
    conn.close()
    async with open_store(db) as store:
        with pytest.raises(StoreError, match="holds an event this tstream cannot read"):
            await store.read("s")


async def test_rows_are_read_page_by_page_from_any_cursor(db):
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s", command=["x"]))
        await store.append("s", lines("s", 0, [f"line {i}" for i in range(2500)]))
        # The cursor falls inside a chunk: a page still holds ``limit`` events or more.
        page = await store.read_rows("s", 1500, limit=800)
        assert page.rows[0][0] == 1501
        assert len(page) >= 800
        seen: list[int] = []
        after = 99
        while rows := await store.read_rows("s", after, limit=333):
            seen += [event.offset for event in rows]
            after = rows.last_offset
        assert seen == list(range(100, 2500))
        assert list(await store.read_rows("s", 2000)) == await store.read(
            "s", HistoryQuery(after=2000)
        )
