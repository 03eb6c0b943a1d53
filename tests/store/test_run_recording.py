"""``tstream run`` records into the store: completeness, kill -9, concurrency, ids."""

import os
import signal
import subprocess
import sys

import pytest
import trio

from trio_stream.events import EventType
from trio_stream.store import HistoryQuery, SessionStatus, UnknownSessionError, open_store

TSTREAM = [sys.executable, "-c", "from trio_stream.cli import main; main()"]

# Numbered lines, one every millisecond, for far longer than any test waits.
ENDLESS = "import time\nfor n in range(10**6):\n    print(n, flush=True)\n    time.sleep(0.001)"


def run(db, *args):
    return subprocess.run(
        [*TSTREAM, "run", "--store", f"sqlite:{db}", *args],
        capture_output=True,
        timeout=60,
    )


def recording(db, session_id, script):
    """The command line of a quiet ``tstream run`` of a Python script into ``db``."""
    store = f"sqlite:{db}"
    return [
        *TSTREAM,
        "run",
        "--quiet",
        "--store",
        store,
        "--id",
        session_id,
        "--",
        sys.executable,
        "-c",
        script,
    ]


async def wait_for_lines(store, session_id, at_least):
    with trio.fail_after(20):
        while True:
            try:
                query = HistoryQuery(types=frozenset({EventType.OUTPUT}))
                if await store.count(session_id, query) >= at_least:
                    return
            except UnknownSessionError:
                pass
            await trio.sleep(0.01)


async def outputs(store, session_id):
    events = await store.read(session_id, HistoryQuery(types=frozenset({EventType.OUTPUT})))
    return [e.data.text for e in events]


async def test_every_line_is_recorded_when_run_returns(tmp_path):
    db = tmp_path / "store.db"
    script = "import sys\nfor n in range(20000):\n    print(n)\n    print('e', n, file=sys.stderr)"
    result = run(db, "--quiet", "--id", "all", "--", sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    async with open_store(db) as store:
        info = await store.get_session("all")
        events = await store.read("all")
    assert (info.status, info.exit_status) == (SessionStatus.COMPLETED, 0)
    lines = [e.data for e in events if e.type is EventType.OUTPUT]
    assert [d.text for d in lines if d.source == "stdout"] == [str(n) for n in range(20000)]
    assert [d.text for d in lines if d.source == "stderr"] == [f"e {n}" for n in range(20000)]
    assert [e.offset for e in events] == list(range(len(events)))
    assert events[-1].type is EventType.SESSION_ENDED
    assert events[-1].data.exit_status == 0


async def test_kill_9_of_run_keeps_the_flushed_lines_and_marks_it_interrupted(tmp_path):
    db = tmp_path / "store.db"
    process = await trio.lowlevel.open_process(
        recording(db, "victim", ENDLESS),
        stdin=subprocess.DEVNULL,
    )
    child = None
    try:
        async with open_store(db) as store:
            await wait_for_lines(store, "victim", 100)
            started = (await store.read("victim", HistoryQuery(limit=1)))[0]
            child = started.data.pid
            process.send_signal(signal.SIGKILL)
            await process.wait()
            seen = await outputs(store, "victim")
    finally:
        process.kill()
        if child is not None:
            # The command is in a process group of its own, which tstream can no longer end.
            try:
                os.killpg(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
    async with open_store(db) as store:
        info = await store.get_session("victim")
        kept = await outputs(store, "victim")
    assert info.status is SessionStatus.INTERRUPTED
    assert kept[: len(seen)] == seen
    assert kept == [str(n) for n in range(len(kept))]


async def test_two_runs_at_once_into_one_file_and_show_while_they_write(tmp_path):
    db = tmp_path / "store.db"
    script = "import time\nfor n in range(300):\n    print(n, flush=True)\n    time.sleep(0.002)"
    processes = [
        await trio.lowlevel.open_process(
            recording(db, name, script),
            stdin=subprocess.DEVNULL,
        )
        for name in ("one", "two")
    ]
    try:
        async with open_store(db) as store:
            await wait_for_lines(store, "one", 20)
            shown = await trio.run_process(
                [*TSTREAM, "show", "--store", f"sqlite:{db}", "one"], capture_stdout=True
            )
            printed = shown.stdout.decode().splitlines()
            assert printed == [str(n) for n in range(len(printed))]
            with trio.fail_after(30):
                for process in processes:
                    assert await process.wait() == 0
    finally:
        for process in processes:
            process.kill()
    async with open_store(db) as store:
        for name in ("one", "two"):
            assert await outputs(store, name) == [str(n) for n in range(300)]
            assert (await store.get_session(name)).status is SessionStatus.COMPLETED


def test_an_id_in_use_is_refused_before_the_command_runs(tmp_path):
    db = tmp_path / "store.db"
    assert run(db, "--id", "twice", "--", "true").returncode == 0
    marker = tmp_path / "ran"
    result = run(db, "--id", "twice", "--", "touch", str(marker))
    assert result.returncode == 2
    assert (
        result.stderr == b"tstream: session id already in use: twice (choose another with --id)\n"
    )
    assert not marker.exists()


@pytest.mark.parametrize("bad", ["../etc", "a b", "x" * 65])
def test_an_unsafe_id_is_a_usage_error(tmp_path, bad):
    result = run(tmp_path / "store.db", "--id", bad, "--", "true")
    assert result.returncode == 2
    assert b"invalid session id" in result.stderr


def test_a_store_that_cannot_be_opened_is_exit_125_in_one_line(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 500)
    result = run(bad, "--", "true")
    assert result.returncode == 125
    assert result.stderr.count(b"\n") == 1
    assert b"corrupt or not a tstream database" in result.stderr


def test_generated_ids_are_listed_latest_first(tmp_path):
    db = tmp_path / "store.db"
    assert run(db, "--quiet", "--", sys.executable, "-c", "print('hi')").returncode == 0
    shown = subprocess.run(
        [*TSTREAM, "show", "--store", f"sqlite:{db}", "latest"], capture_output=True, timeout=30
    )
    assert shown.stdout == b"hi\n"


async def test_the_record_is_complete_whatever_processors_drop(tmp_path):
    db = tmp_path / "store.db"
    script = "for n in range(10000):\n    print(n)"
    result = run(
        db,
        "--quiet",
        "--id",
        "dropping",
        "--overflow",
        "drop-newest",
        "--buffer",
        "1",
        "--match",
        r"num=^\d+$",
        "--",
        sys.executable,
        "-c",
        script,
    )
    assert result.returncode == 0, result.stderr
    async with open_store(db) as store:
        assert await outputs(store, "dropping") == [str(n) for n in range(10000)]
        (ended,) = await store.read("dropping", HistoryQuery(last=1))
    assert ended.type is EventType.SESSION_ENDED
    assert all(count >= 0 for count in ended.data.dropped.values())
