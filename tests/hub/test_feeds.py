"""Fed streams: a hub stream filled from a source that places and records events itself,
and the broker's policy (revive, recording retries)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
import trio
import trio.testing

from trio_stream.batches import EventRuns
from trio_stream.events import Event, EventType, Output, SessionEnded
from trio_stream.hub.broker import Broker
from trio_stream.hub.clients import ClientKind, Deliver
from trio_stream.hub.config import HubConfig
from trio_stream.hub.errors import OffsetGap
from trio_stream.hub.feeds import FedLog, StreamPolicy
from trio_stream.log import Placement, SessionLog
from trio_stream.store.base import SessionInfo, SessionStatus, StoreError
from trio_stream.store.memory import MemoryStore


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def line(text: str) -> Event:
    return Event(EventType.OUTPUT, Output("stdout", text))


class LogSource:
    """A source whose events are those of a log kept "elsewhere" (and recorded there)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.origin: dict[str, SessionLog] = {}

    def log(self, sid: str) -> SessionLog:
        return self.origin.setdefault(sid, SessionLog(sid, record_backlog=None))

    async def record(self, sid: str) -> None:
        """Store what the origin holds beyond the store (the source records, not the hub)."""
        fresh = self.log(sid).since(await self.store.last_offset(sid)).events
        if len(fresh):
            await self.store.append(sid, list(fresh))

    async def follow(self, target: SessionLog) -> AsyncIterator[EventRuns]:
        sid = target.session_id
        log = self.log(sid)
        while not log.closed or log.last_offset > target.last_offset:
            await log.wait_after(target.last_offset)
            batch = log.since(target.last_offset)
            if batch.events:
                yield batch.events

    async def wait_stored(self, stream_id: str, offset: int) -> None:
        await self.record(stream_id)

    async def place(
        self, log: SessionLog, events: Sequence[Event], given: Sequence[bool]
    ) -> Placement:
        placement = await self.log(log.session_id).place(events, given)
        if placement.ended is not None:
            self.log(log.session_id).close()
        await self.record(log.session_id)
        return placement

    async def place_runs(self, log: SessionLog, events: EventRuns) -> Placement:
        placement = await self.log(log.session_id).place_runs(events)
        await self.record(log.session_id)
        return placement


async def fed_broker(nursery: trio.Nursery) -> tuple[Broker, LogSource, MemoryStore]:
    store = MemoryStore()
    source = LogSource(store)
    broker = Broker(store, HubConfig(tick=0.01), nursery, policy=StreamPolicy.fed_by(source))
    return broker, source, store


async def test_a_fed_stream_serves_what_its_source_places_and_records_nothing_itself(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    broker, source, store = await fed_broker(nursery)
    stream = await broker.create_stream("s")
    assert isinstance(stream.log, FedLog)
    client = broker.attach(stream, ClientKind.WEBSOCKET, "test")
    assert stream.register_from(client, -1) == []
    # Placed elsewhere (another hub, the run itself): the follower brings it.
    source.log("s").append([line("from elsewhere")])
    # Placed through this hub: it goes to the source and comes back through the follower.
    result = await broker.publish("s", [line("from here")], [False])
    assert (result.first_offset, result.last_offset) == (1, 1)
    assert stream.log.last_offset == 1
    texts = []
    while len(texts) < 2:
        for item in await client.next_items():
            if isinstance(item, Deliver):
                texts += [f.event.data.text for f in item.frames]
    assert texts == ["from elsewhere", "from here"]
    # A gap is judged by the source's log.
    with pytest.raises(OffsetGap):
        await broker.publish("s", [Event(EventType.OUTPUT, Output("stdout", "x"), "s", 9)], [True])
    await broker.publish("s", [Event(EventType.SESSION_ENDED, SessionEnded(0))], [False])
    with trio.fail_after(5):
        while not stream.finished:
            await stream.wait_advanced()
    assert [e.offset for e in await store.read("s")] == [0, 1, 2]
    assert (await store.get_session("s")).status is SessionStatus.COMPLETED


async def test_the_end_another_hub_placed_ends_the_fed_stream_here(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    broker, source, _store = await fed_broker(nursery)
    stream = await broker.create_stream("s")
    source.log("s").append([line("a"), Event(EventType.SESSION_ENDED, SessionEnded(3))])
    source.log("s").close()
    with trio.fail_after(5):
        while not stream.end_stored:
            await trio.sleep(0.01)
    # Nobody here noted the end in the store: the hub says it ended as the event says.
    assert stream.status == "failed"
    assert stream.info.status is SessionStatus.FAILED


async def test_without_revive_a_stream_the_store_marks_running_is_served_from_the_store(
    nursery: trio.Nursery,
) -> None:
    store = MemoryStore()
    await store.create_session(SessionInfo("s", status=SessionStatus.RUNNING))
    await store.append("s", [line("kept").with_offset("s", 0)])
    broker = Broker(store, HubConfig(), nursery, policy=StreamPolicy(revive=False))
    stream = await broker.get_stream("s")
    assert stream.log is None and stream.last_offset == 0
    reviving = Broker(store, HubConfig(), nursery)
    assert (await reviving.get_stream("s")).log is not None


class FailingStore(MemoryStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts: list[float] = []

    async def append(self, session_id: str, events: Sequence[Event]) -> None:
        self.attempts.append(trio.current_time())
        if self.failures:
            self.failures -= 1
            raise StoreError("down")
        await super().append(session_id, events)


async def test_recording_is_retried_at_the_policys_interval_until_the_store_takes_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    store = FailingStore(failures=3)
    broker = Broker(store, HubConfig(), nursery, policy=StreamPolicy(record_retry=7.0))
    stream = await broker.create_stream("s")
    await broker.publish("s", [line("a")], [False])
    await stream.wait_recorded(0, timeout=60)
    gaps = [b - a for a, b in zip(store.attempts, store.attempts[1:], strict=False)]
    assert gaps == [7.0, 7.0, 7.0]
    assert [e.data.text for e in await store.read("s")] == ["a"]
