"""Recording survives the death of the recording process (real processes, real SIGKILL)."""

import signal
import subprocess
import sys

import trio

from trio_stream.store import SessionStatus, UnknownSessionError, open_store

# A recording process: the recorder writes an endless stream of numbered lines, as
# ``tstream run`` records a command's output.
RECORDER = r"""
import sys, time, trio
from trio_stream.events import EventType, Output, make_event
from trio_stream.log import SessionLog
from trio_stream.store import SessionInfo, open_store
from trio_stream.store.recorder import record

async def main():
    async with open_store(sys.argv[1]) as store:
        await store.create_session(SessionInfo(sys.argv[2], command=["numbers"]))
        log = SessionLog(sys.argv[2])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(record, store, log)
            n = 0
            while True:
                log.append([make_event(EventType.OUTPUT, Output("stdout", str(n + i), line=n + i))
                            for i in range(10)])
                n += 10
                await trio.sleep(0.001)

trio.run(main)
"""


async def wait_for_lines(store, session_id, at_least):
    with trio.fail_after(20):
        while True:
            try:
                if await store.count(session_id) >= at_least:
                    return
            except UnknownSessionError:
                pass
            await trio.sleep(0.01)


async def test_kill_9_keeps_every_flushed_line_and_marks_the_session_interrupted(tmp_path):
    db = f"sqlite:{tmp_path / 'store.db'}"
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", RECORDER, db, "victim"], stdin=subprocess.DEVNULL
    )
    try:
        async with open_store(db) as store:
            await wait_for_lines(store, "victim", 500)
            process.send_signal(signal.SIGKILL)
            await process.wait()
            seen = await store.count("victim")
    finally:
        process.kill()
    async with open_store(db) as store:
        info = await store.get_session("victim")
        assert info.status is SessionStatus.INTERRUPTED
        texts = [e.data.text for e in await store.read("victim")]
    assert len(texts) >= seen
    assert texts == [str(n) for n in range(len(texts))]
    assert info.last_offset == len(texts) - 1


async def test_two_recording_processes_and_a_reader_share_one_file(tmp_path):
    db = f"sqlite:{tmp_path / 'store.db'}"
    processes = [
        await trio.lowlevel.open_process(
            [sys.executable, "-c", RECORDER, db, name], stdin=subprocess.DEVNULL
        )
        for name in ("one", "two")
    ]
    try:
        async with open_store(db) as store:
            for name in ("one", "two"):
                await wait_for_lines(store, name, 1000)
            # Read while both keep writing: every read is a dense prefix.
            for _ in range(5):
                for name in ("one", "two"):
                    events = await store.read(name)
                    assert [e.offset for e in events] == list(range(len(events)))
            for process in processes:
                process.send_signal(signal.SIGKILL)
                await process.wait()
    finally:
        for process in processes:
            process.kill()
    async with open_store(db) as store:
        statuses = {s.id: s.status for s in await store.list_sessions()}
    assert statuses == {"one": SessionStatus.INTERRUPTED, "two": SessionStatus.INTERRUPTED}
