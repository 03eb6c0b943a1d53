"""The broker and its clients without sockets: heartbeats, idle clients, history from the
store, under the autojump clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_stream.batches import OutputBatch
from trio_stream.events import Event, EventType, Output, SessionEnded
from trio_stream.hub.broker import Broker
from trio_stream.hub.config import HubConfig
from trio_stream.hub.errors import OffsetGap
from trio_stream.hub.items import ClientKind, Closing, Deliver, EndReason, Heartbeat
from trio_stream.hub.params import ReplayOptions, parse_filters
from trio_stream.hub.protocol import Ping
from trio_stream.lines import Lines
from trio_stream.log import SessionLog
from trio_stream.publisher import Publisher
from trio_stream.store.memory import MemoryStore


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def line(text: str) -> Event:
    return Event(EventType.OUTPUT, Output("stdout", text))


async def test_heartbeats_then_idle_websocket_client_is_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    broker = Broker(MemoryStore(), HubConfig(heartbeat=30, idle_timeout=30), nursery)
    stream = await broker.create_stream("s")
    client = broker.attach(stream, ClientKind.WEBSOCKET, "test")
    start = trio.current_time()
    items = await client.next_items()
    assert isinstance(items[0], Heartbeat) and trio.current_time() - start == 30
    client.push_command(Ping(1))  # the client answers: it stays
    await client.next_items()
    items = await client.next_items()
    assert isinstance(items[0], Heartbeat) and trio.current_time() - start == 60
    items = await client.next_items()
    assert isinstance(items[-1], Closing) and items[-1].reason is EndReason.IDLE_TIMEOUT
    assert trio.current_time() - start == 90
    assert broker.connections == 0


async def test_sse_clients_are_never_idle(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    broker = Broker(MemoryStore(), HubConfig(heartbeat=10, idle_timeout=5), nursery)
    stream = await broker.create_stream("s")
    client = broker.attach(stream, ClientKind.SSE, "test")
    for _ in range(5):
        items = await client.next_items()
        assert [type(i) for i in items] == [Heartbeat]


async def test_catch_up_reads_the_store_then_memory_without_gap(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    store = MemoryStore()
    broker = Broker(store, HubConfig(history=5, tick=0.001), nursery)
    stream = await broker.create_stream("s")
    assert stream.log is not None
    stream.log.append([line(f"l{i}") for i in range(2500)])
    await stream.settle()
    while stream.recorded < 2499:
        await trio.sleep(0.01)
    client = broker.attach(stream, ClientKind.WEBSOCKET, "test")
    await client.subscribe(ReplayOptions(from_offset=10), parse_filters(None))
    offsets: list[int] = []
    while len(offsets) < 2489:
        for item in await client.next_items():
            if isinstance(item, Deliver):
                offsets.extend(f.offset for f in item.frames)
                client.delivered(item, 0)
    stream.log.append([line("live")])
    for item in await client.next_items():
        if isinstance(item, Deliver):
            offsets.extend(f.offset for f in item.frames)
    assert offsets == list(range(11, 2501))


async def test_shutdown_closes_clients_and_flushes_the_recorder(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    store = MemoryStore()
    broker = Broker(store, HubConfig(), nursery)
    stream = await broker.create_stream("s")
    client = broker.attach(stream, ClientKind.SSE, "test")
    assert stream.log is not None
    stream.log.append([line("a"), line("b")])
    await broker.shutdown()
    assert await store.last_offset("s") == 1
    items = await client.next_items()
    assert isinstance(items[-1], Closing) and items[-1].reason is EndReason.SHUTDOWN


async def test_runs_are_published_as_they_are_skipping_what_the_stream_has(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    session = SessionLog("s", record_backlog=None)
    Publisher(session).publish_status("start")
    session.append_batch(OutputBatch("s", 1, 5.0, "stdout", 0, Lines(["a", "b", "c"])))
    store = MemoryStore()
    broker = Broker(store, HubConfig(), nursery)
    stream = await broker.create_stream("s")
    assert stream.log is not None
    first = await broker.publish_runs("s", session.since(-1).events)
    assert (first.accepted, first.duplicates, first.last_offset) == (4, 0, 3)
    assert isinstance(stream.log.since(0).events.runs[-1], OutputBatch)
    # Again, with two more: the first four are duplicates.
    session.append_batch(OutputBatch("s", 4, 6.0, "stderr", 3, Lines(["d", "e"])))
    again = await broker.publish_runs("s", session.since(-1).events)
    assert (again.accepted, again.duplicates, again.last_offset) == (2, 4, 5)
    assert list(stream.log.since(-1).events) == list(session.since(-1).events)


async def test_published_runs_leave_no_gap_and_end_the_stream_at_session_ended(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    session = SessionLog("s", record_backlog=None)
    Publisher(session).publish_status("start")
    session.append_batch(OutputBatch("s", 1, 5.0, "stdout", 0, Lines(["a"])))
    session.append([Event(EventType.SESSION_ENDED, SessionEnded(exit_status=3))])
    broker = Broker(MemoryStore(), HubConfig(), nursery)
    stream = await broker.create_stream("s")
    with pytest.raises(OffsetGap):
        await broker.publish_runs("s", session.since(0).events)
    await broker.publish_runs("s", session.since(-1).events)
    assert stream.finished
    info = await broker.store.get_session("s")
    assert info.exit_status == 3
