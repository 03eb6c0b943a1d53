import functools
import itertools

import pytest
import trio

from trio_stream.events import EventType, Output, make_event
from trio_stream.log import SessionLog
from trio_stream.store import MemoryStore, SessionInfo
from trio_stream.store.recorder import record


class TimedStore:
    """A memory store that notes when each batch arrives and how big it is."""

    def __init__(self):
        self.inner = MemoryStore(max_history=100_000)
        self.writes = []

    async def append(self, session_id, events):
        self.writes.append((trio.current_time(), len(events)))
        await self.inner.append(session_id, events)


def line(text):
    return make_event(EventType.OUTPUT, Output("stdout", text))


@pytest.fixture
async def timed():
    store = TimedStore()
    await store.inner.create_session(SessionInfo("s"))
    return store


async def test_writes_batches_at_most_every_interval_and_everything_at_close(timed, autojump_clock):
    log = SessionLog("s")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record, timed, log)
        for n in range(100):
            log.append([line(str(n))])
            await trio.sleep(0.01)
        log.close()
    times = [t for t, _ in timed.writes]
    # The last write is the flush at close, which does not wait for the interval.
    gaps = [b - a for a, b in itertools.pairwise(times[:-1])]
    assert all(gap >= 0.1 - 1e-9 for gap in gaps)
    assert len(timed.writes) <= 12
    assert [e.data.text for e in await timed.inner.read("s")] == [str(n) for n in range(100)]


async def test_first_events_are_written_at_once(timed, autojump_clock):
    log = SessionLog("s")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record, timed, log)
        start = trio.current_time()
        log.append([line("a")])
        await trio.sleep(0.001)
        assert timed.writes and timed.writes[0][0] - start < 0.001
        log.close()


async def test_close_flushes_without_waiting_for_the_interval(timed, autojump_clock):
    log = SessionLog("s")
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(record, timed, log, flush_interval=60))
        log.append([line("a")])
        await trio.sleep(1)
        log.append([line("b")])
        log.close()
    assert trio.current_time() - start < 2
    assert await timed.inner.count("s") == 2


async def test_a_full_backlog_is_written_without_waiting_for_the_interval(timed, autojump_clock):
    # A producer held back by the backlog must not wait out the recorder's interval: a
    # fast command would be slowed to a backlog per interval.
    log = SessionLog("s", record_backlog=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(record, timed, log, flush_interval=60))
        start = trio.current_time()
        for n in range(50):
            log.append([line(str(n))])
            await log.wait_recorded_room()
        assert trio.current_time() - start < 1
        log.close()
    assert [e.data.text for e in await timed.inner.read("s")] == [str(n) for n in range(50)]
    # Below the bound the interval still holds: a few lines wait for it.
    timed.writes.clear()
    log = SessionLog("s", first_offset=50, record_backlog=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(record, timed, log, flush_interval=60))
        log.append([line("a")])
        await trio.sleep(1)
        log.append([line("b")])
        await trio.sleep(1)
        assert len(timed.writes) == 1
        log.close()
    assert len(timed.writes) == 2


async def test_cancelled_recorder_still_writes_what_is_pending(timed, autojump_clock):
    log = SessionLog("s")
    with trio.move_on_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(record, timed, log, flush_interval=60))
            log.append([line("a")])
            await trio.sleep(0.5)
            log.append([line("b"), line("c")])
            await trio.sleep(10)
    assert [e.data.text for e in await timed.inner.read("s")] == ["a", "b", "c"]


async def test_negative_interval_is_refused(timed, autojump_clock):
    with pytest.raises(ValueError, match="flush_interval"):
        await record(timed, SessionLog("s"), flush_interval=-1)


def test_one_mapping_gives_every_ending_its_status() -> None:
    from trio_stream.events import SessionEnded
    from trio_stream.store.base import SessionStatus
    from trio_stream.store.sessions import status_for_end, status_of

    cases = [
        ((0, None, False, False), SessionStatus.COMPLETED),
        ((3, None, False, False), SessionStatus.FAILED),
        ((None, 9, False, False), SessionStatus.KILLED),
        ((124, 15, True, False), SessionStatus.TIMED_OUT),
        ((None, None, False, True), SessionStatus.INTERRUPTED),
    ]
    for (exit_status, signal, timed_out, interrupted), status in cases:
        assert (
            status_of(exit_status, signal, timed_out=timed_out, interrupted=interrupted) == status
        )
        ended = SessionEnded(exit_status, signal, timed_out, interrupted=interrupted)
        assert status_for_end(ended) == status
