"""The SQLite store's segment files: chunks of large writes kept beside the database."""

import errno
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
import trio

from trio_stream.store import HistoryQuery, SessionInfo, StoreError, open_store, segments
from trio_stream.store import sqlite as sqlite_store

from .conftest import lines


@pytest.fixture
def db(tmp_path):
    return tmp_path / "store.db"


@pytest.fixture
def small(monkeypatch):
    """Writes of 1,000 bytes or more go to segments, of 10,000 bytes at most."""
    monkeypatch.setattr(segments, "EXTERNAL_BYTES", 1000)
    monkeypatch.setattr(segments, "SEGMENT_BYTES", 10_000)


def segment_files(db):
    directory = db.with_name(db.name + "-chunks")
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def rows(db, sid=None):
    conn = sqlite3.connect(db)
    sql = "SELECT body, segment, segment_offset, segment_length FROM chunks"
    if sid is not None:
        sql += " WHERE sid = (SELECT sid FROM sessions WHERE id = ?)"
    found = conn.execute(sql + " ORDER BY rowid", () if sid is None else (sid,)).fetchall()
    conn.close()
    return found


def texts_of(events):
    return [e.data.text for e in events]


async def test_a_burst_is_written_once_to_a_segment_and_read_back(db):
    # 2 MB in one write: the rows name the segment; the WAL holds none of the text.
    texts = [f"{n:>99}" for n in range(20_000)]
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        await store.append("s", lines("s", 0, texts))
        await store.append("s", lines("s", 20_000, ["small"]))
        assert texts_of(await store.read("s")) == [*texts, "small"]
        wal = db.with_name(db.name + "-wal")
        assert wal.stat().st_size < 500_000
    found = rows(db)
    assert all(body == b"" and segment == 1 for body, segment, _, _ in found[:-1])
    assert found[-1][1] is None and b"small" in found[-1][0]
    assert segment_files(db) == ["00000001"]
    assert sum(length for *_, length in found[:-1]) == os.path.getsize(
        db.with_name(db.name + "-chunks") / "00000001"
    )
    async with open_store(db) as store:
        assert texts_of(await store.read("s", HistoryQuery(after=19_997))) == [
            *texts[-2:],
            "small",
        ]
        assert texts_of(await store.read("s", HistoryQuery(last=2))) == [texts[-1], "small"]
        assert len(await store.read_runs("s", after=-1, limit=30_000)) == 20_001
        assert len(await store.read_rows("s", after=9_999, limit=30_000)) == 10_001


async def test_the_segment_is_synced_before_its_rows_commit(db, small, monkeypatch):
    # A row must never outlive the bytes it names, even across a power loss: the segment
    # is synced while the transaction adding the rows has not committed yet.
    synced = []
    fdatasync = os.fdatasync

    def watching(fd):
        fdatasync(fd)
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(db) + "-chunks"):
            conn = sqlite3.connect(db)
            visible = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
            conn.close()
            synced.append((os.fstat(fd).st_size, visible))

    monkeypatch.setattr(segments.os, "fdatasync", watching)
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        await store.append("s", lines("s", 0, ["x" * 500] * 4))
        assert len(rows(db)) == 1
    assert len(synced) == 1
    size, visible = synced[0]
    assert size >= 2000 and visible == 0


async def test_segments_roll_over_and_reads_cross_them(db, small):
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        expected = []
        for n in range(12):
            batch = [f"{n}-{i}-" + "y" * 300 for i in range(10)]
            await store.append("s", lines("s", n * 10, batch))
            expected += batch
        assert texts_of(await store.read("s")) == expected
        assert (
            texts_of(await store.read("s", HistoryQuery(after=54, limit=20))) == (expected[55:75])
        )
        assert texts_of(await store.read("s", HistoryQuery(last=25))) == expected[-25:]
    # About 4 KB a write, at most 10 KB a segment: two writes each.
    files = segment_files(db)
    assert files == [f"{n:08d}" for n in range(1, len(files) + 1)] and len(files) >= 4
    assert {segment for _, segment, _, _ in rows(db)} == set(range(1, len(files) + 1))
    directory = db.with_name(db.name + "-chunks")
    assert all((directory / name).stat().st_size <= 10_000 for name in files)


async def test_segments_no_row_names_are_removed(db, monkeypatch):
    # Every write in a segment of its own.
    monkeypatch.setattr(segments, "EXTERNAL_BYTES", 1000)
    monkeypatch.setattr(segments, "SEGMENT_BYTES", 1000)
    async with open_store(db) as store:
        for sid in ("a", "b"):
            await store.create_session(SessionInfo(sid))
        # a writes segments 1 to 3; then a and b take turns (a: 4, 6, 8; b: 5, 7, 9);
        # then b writes 10 to 12.
        for n in range(3):
            await store.append("a", lines("a", n * 10, ["a" * 300] * 10))
        for n in range(3):
            await store.append("a", lines("a", 30 + n * 10, ["a" * 300] * 10))
            await store.append("b", lines("b", n * 10, ["b" * 300] * 10))
        for n in range(3, 6):
            await store.append("b", lines("b", n * 10, ["b" * 300] * 10))
        assert segment_files(db) == [f"{n:08d}" for n in range(1, 13)]
        await store.destroy_session("a")
        assert segment_files(db) == [f"{n:08d}" for n in (5, 7, 9, 10, 11, 12)]
        assert texts_of(await store.read("b")) == ["b" * 300] * 60
        # Compaction keeps the last 25 events: segments 5, 7 and 9 go, and 10, whose
        # chunk was cut in two, what is left of it kept in its row.
        assert await store.compact("b", 25) == 35
        assert texts_of(await store.read("b")) == ["b" * 300] * 25
        assert segment_files(db) == ["00000011", "00000012"]
        assert [segment for _, segment, _, _ in rows(db, "b")] == [None, 11, 12]
        # Segment 12 is the one writers append to: once nothing names it, writers move
        # on to 13 and it goes too.
        await store.clear("b")
        assert segment_files(db) == []
        await store.append("b", lines("b", 60, ["c" * 300] * 10))
        assert texts_of(await store.read("b")) == ["c" * 300] * 10
        assert segment_files(db) == ["00000013"]


async def test_a_segment_that_cannot_be_removed_only_keeps_its_space(
    db, small, monkeypatch, caplog
):
    def refused(path):
        raise PermissionError(13, "Permission denied", path)

    async with open_store(db) as store:
        for sid in ("a", "b"):
            await store.create_session(SessionInfo(sid))
            for n in range(4):
                await store.append(sid, lines(sid, n * 10, [sid * 300] * 10))
        before = segment_files(db)
        monkeypatch.setattr(segments.os, "unlink", refused)
        await store.destroy_session("a")
        assert segment_files(db) == before
        assert "cannot remove" in caplog.text and "Permission denied" in caplog.text
        assert texts_of(await store.read("b")) == ["b" * 300] * 40
        assert await store.list_sessions() and await store.count("b") == 40


async def test_pruning_removes_the_segments_of_the_sessions_it_removes(db, small):
    async with open_store(db) as store:
        for sid in ("old", "new"):
            await store.create_session(SessionInfo(sid))
            for n in range(4):
                await store.append(sid, lines(sid, n * 10, [sid * 100] * 10))
            await store.update_session(sid, status="completed")
        await store.update_session("old", last_activity=1.0)
        before = segment_files(db)
        assert await store.prune(older_than=100.0) == ["old"]
        after = segment_files(db)
        assert len(after) < len(before)
        assert texts_of(await store.read("new")) == ["newnewnew" * 33 + "new"] * 40


async def test_a_missing_or_cut_segment_is_a_clear_error(db, small):
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        await store.append("s", lines("s", 0, ["x" * 300] * 10))
        segment = db.with_name(db.name + "-chunks") / "00000001"
        with open(segment, "r+b") as f:
            f.truncate(1000)
        with pytest.raises(StoreError, match="00000001 ends before the recorded events"):
            await store.read("s")
        segment.unlink()
        with pytest.raises(StoreError, match=r"cannot read recorded events from .*00000001"):
            await store.read_runs("s")


async def test_a_read_that_meets_a_segment_removed_meanwhile_reads_again(db, monkeypatch):
    monkeypatch.setattr(segments, "EXTERNAL_BYTES", 1000)
    monkeypatch.setattr(segments, "SEGMENT_BYTES", 1000)
    body = segments.SegmentReader.body
    raced = []

    def racing(self, inline, number, offset, length):
        if number == 1 and not raced:
            # Another process compacts the session now: the rows of segment 1 go, then
            # the segment, after the read selected them.
            raced.append(number)
            conn = sqlite3.connect(db)
            conn.execute("DELETE FROM chunks WHERE segment = 1")
            conn.execute("UPDATE sessions SET events = events - 10")
            conn.commit()
            conn.close()
            (db.with_name(db.name + "-chunks") / "00000001").unlink()
        return body(self, inline, number, offset, length)

    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        for n in range(3):
            await store.append("s", lines("s", n * 10, [f"{n}" * 300] * 10))
        monkeypatch.setattr(segments.SegmentReader, "body", racing)
        assert texts_of(await store.read("s")) == ["1" * 300] * 10 + ["2" * 300] * 10
        assert raced == [1]


async def test_bytes_a_dead_writer_left_past_the_last_row_are_never_read(db, small):
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        await store.append("s", lines("s", 0, ["x" * 300] * 5))
        # A writer that died between its write and its commit.
        with open(db.with_name(db.name + "-chunks") / "00000001", "ab") as f:
            f.write(b"\xff" * 700)
        await store.append("s", lines("s", 5, ["y" * 300] * 5))
        assert texts_of(await store.read("s")) == ["x" * 300] * 5 + ["y" * 300] * 5


async def test_a_segment_that_cannot_be_written_is_a_clear_error_and_commits_nothing(db, small):
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        # A file where the directory should be.
        db.with_name(db.name + "-chunks").write_text("in the way")
        with pytest.raises(StoreError, match="cannot write recorded events"):
            await store.append("s", lines("s", 0, ["x" * 300] * 5))
        assert await store.count("s") == 0
        db.with_name(db.name + "-chunks").unlink()
        await store.append("s", lines("s", 0, ["x" * 300] * 5))
        assert texts_of(await store.read("s")) == ["x" * 300] * 5


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EIO])
async def test_a_file_system_that_cannot_sync_a_directory(db, small, monkeypatch, code):
    # As for SQLite, a directory that cannot be synced (EINVAL: not supported there) is
    # let be; any other failure to sync it is an error.
    def fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(segments.os, "fsync", fsync)
    async with open_store(db) as store:
        await store.create_session(SessionInfo("s"))
        burst = lines("s", 0, ["x" * 300] * 5)
        if code == errno.EINVAL:
            await store.append("s", burst)
            assert texts_of(await store.read("s")) == ["x" * 300] * 5
        else:
            with pytest.raises(StoreError, match="cannot write recorded events"):
                await store.append("s", burst)
            assert await store.count("s") == 0


async def test_two_stores_write_bursts_into_one_file_at_once(db, small):
    async with open_store(db) as first, open_store(db) as second:

        async def fill(store, sid):
            await store.create_session(SessionInfo(sid))
            for batch in range(20):
                await store.append(sid, lines(sid, batch * 10, [sid * 150] * 10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fill, first, "one")
            nursery.start_soon(fill, second, "two")
        assert texts_of(await first.read("two")) == ["two" * 150] * 200
        assert texts_of(await second.read("one")) == ["one" * 150] * 200


RECORDER = """
import sys, trio
from trio_stream.events import EventType, Output, make_event
from trio_stream.store import SessionInfo, open_store

async def main():
    async with open_store(sys.argv[1]) as store:
        await store.create_session(SessionInfo("s"))
        events = [
            make_event(EventType.OUTPUT, Output("stdout", "z" * 99), session="s", offset=n)
            for n in range(20_000)
        ]
        await store.append("s", events)
        print("appended", flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


def test_a_killed_recorder_keeps_every_burst_it_committed(db):
    recorder = subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(db)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert recorder.stdout.readline() == "appended\n"
        recorder.send_signal(signal.SIGKILL)
        recorder.wait()
    finally:
        recorder.kill()
        recorder.stdout.close()
    assert segment_files(db) == ["00000001"]

    async def read():
        async with open_store(db) as store:
            return texts_of(await store.read("s"))

    assert trio.run(read) == ["z" * 99] * 20_000


def test_the_writer_keeps_bursts_under_the_default_size_in_its_rows():
    assert segments.EXTERNAL_BYTES == 1 << 20
    assert sqlite_store.SCHEMA_VERSION == 4
