"""Fan-out: a tick's events are one batch, filtered and framed once for every client, and
written as one WebSocket message or one SSE write per client."""

from __future__ import annotations

import gc
import weakref

import h11
import httpx
import orjson
import pytest
import trio
import trio.testing
import wsproto
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.handshake import H11Handshake

from trio_stream.events import Event, EventType, Output, Status
from trio_stream.hub import streams
from trio_stream.hub.broker import Broker
from trio_stream.hub.clients import Client
from trio_stream.hub.config import HubConfig
from trio_stream.hub.encodings import DESIGN, DESIGN_SSE
from trio_stream.hub.items import Batch, ClientKind, Deliver
from trio_stream.hub.params import parse_filters
from trio_stream.hub.server import ServedHub
from trio_stream.hub.sse import SSEParser, frame_items, sse_event
from trio_stream.hub.wire import http_chunk, ws_frame
from trio_stream.store.memory import MemoryStore

from .conftest import create, frames, output, subscribed


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


# -- batches ---------------------------------------------------------------------------


def test_a_batch_is_filtered_once_per_distinct_filter() -> None:
    batch = Batch(frames("a", "b") + frames("c", first=2, source="stderr"))
    stdout = batch.select(parse_filters({"sources": ["stdout"]}))
    assert stdout is not None and [f.offset for f in stdout.frames] == [0, 1]
    assert batch.select(parse_filters({"sources": ["stdout"]})) is stdout
    assert batch.select(parse_filters({"eventTypes": ["output"]})) is batch
    assert batch.select(parse_filters({"eventTypes": ["error"]})) is None
    assert batch.select(parse_filters(None)) is batch


def test_a_batch_that_a_filter_passes_whole_is_freed_without_the_cycle_collector() -> None:
    """A tick's batch, its frames and events must go when its clients are done with it:
    left to the cycle collector, every tick's garbage is walked at once, stalling every
    client of the hub for tens of milliseconds."""
    batch = Batch(frames("a", "b"))
    assert batch.select(parse_filters({"eventTypes": ["output"]})) is batch
    gone = weakref.ref(batch)
    gc.disable()
    try:
        del batch
        assert gone() is None
    finally:
        gc.enable()


def test_a_batch_after_an_offset_keeps_only_what_follows_it() -> None:
    batch = Batch(frames("a", "b", "c", first=5))
    assert batch.after(4) is batch
    rest = batch.after(5)
    assert rest is not None and [f.offset for f in rest.frames] == [6, 7]
    assert batch.after(7) is None


def test_sse_of_several_batches_is_each_event_with_its_offset() -> None:
    one, two = Batch(frames("a", "b")), Batch(frames("c", first=2))
    data = frame_items([Deliver([one, two], 2)])
    expected = b"".join(
        sse_event(f.raw, event="stream_event", id=f.offset) for f in one.frames + two.frames
    )
    assert data == expected
    parsed = SSEParser().feed(data)
    assert [(m.id, m.event) for m in parsed] == [
        ("0", "stream_event"),
        ("1", "stream_event"),
        ("2", "stream_event"),
    ]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 100_000])
def test_a_websocket_frame_is_what_a_client_reads_as_one_text_message(size: int) -> None:
    payload = b"x" * size
    client = H11Handshake(wsproto.ConnectionType.CLIENT)
    server = H11Handshake(wsproto.ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="h", target="/")))
    request = next(server.events())
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(request, Request)
    assert isinstance(next(client.events()), AcceptConnection)
    connection = client.connection
    assert connection is not None
    connection.receive_data(ws_frame(payload))
    messages = list(connection.events())
    assert len(messages) == 1 and isinstance(messages[0], TextMessage)
    assert messages[0].data == payload.decode() and messages[0].message_finished


@pytest.mark.parametrize("size", [1, 15, 16, 4096, 100_000])
def test_an_http_chunk_is_what_a_client_reads_as_the_body(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
    client.send(h11.EndOfMessage())
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    client.receive_data(head + http_chunk(body) + b"0\r\n\r\n")
    received = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            received += bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            break
    assert received == body


# -- coalescing ------------------------------------------------------------------------


def line(text: str) -> Event:
    return Event(EventType.OUTPUT, Output("stdout", text))


async def test_events_appended_within_a_tick_reach_a_client_as_one_delivery(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    stream, [client] = await subscribed(nursery, 0.05)
    assert stream.log is not None
    for text in ("a", "b", "c"):
        stream.log.append([line(text)])
        await trio.sleep(0.01)
    items = await client.next_items()
    assert len(items) == 1 and isinstance(items[0], Deliver)
    assert [f.offset for f in items[0].frames] == [0, 1, 2]


async def test_events_taken_during_a_round_reach_the_clients_not_yet_visited_in_it(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A round visits the clients a step at a time; what the log takes meanwhile joins the
    round for those not yet visited, and reaches the others first thing in the next."""
    monkeypatch.setattr(streams, "FANOUT_STEP", 2)
    stream, clients = await subscribed(nursery, 0.001, 5)
    assert stream.log is not None
    log = stream.log
    offer = Client.offer

    def offer_then_publish(client: Client, batch: Batch) -> None:
        # The second client's turn in the first round: a publisher's next event arrives.
        offer(client, batch)
        if client is clients[1] and log.last_offset == 0:
            log.append([line("b")])

    monkeypatch.setattr(Client, "offer", offer_then_publish)
    log.append([line("a")])
    await stream.settle()
    await stream.wait_advanced()
    delivered = [[[f.offset for f in batch.frames] for batch in c.pending] for c in clients]
    assert delivered == [[[0], [1]], [[0], [1]], [[0, 1]], [[0, 1]], [[0, 1]]]
    # The later clients share one batch, and the earlier ones the one that follows.
    assert clients[2].pending[0] is clients[4].pending[0]
    assert clients[0].pending[1] is clients[1].pending[1]


def test_what_follows_an_offset_in_a_batch_is_made_once() -> None:
    batch = Batch(frames("a", "b", "c"))
    rest = batch.after(0)
    assert rest is not None and [f.offset for f in rest.frames] == [1, 2]
    assert batch.after(0) is rest
    assert batch.after(-1) is batch and batch.after(2) is None


async def test_clients_with_equal_filters_are_queued_the_same_batch(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    broker = Broker(MemoryStore(), HubConfig(tick=0.01), nursery)
    stream = await broker.create_stream("s")
    clients = [broker.attach(stream, ClientKind.SSE, "test") for _ in range(3)]
    for client in clients:
        await client.subscribe(None, parse_filters({"eventTypes": ["output"]}))
        await client.next_items()
    assert stream.log is not None
    stream.log.append([line("a"), Event(EventType.STATUS, Status("working")), line("b")])
    await stream.settle()
    first = clients[0].pending
    assert len(first) == 1 and [f.offset for f in first[0].frames] == [0, 2]
    assert all(c.pending[0] is first[0] for c in clients)


def _frames(data: bytes) -> list[bytes]:
    """The payloads of consecutive unmasked WebSocket text frames (under 64 KiB each)."""
    out = []
    while data:
        assert data[0] == 0x81 and data[1] <= 126
        size, start = (data[1], 2) if data[1] < 126 else (int.from_bytes(data[2:4]), 4)
        out.append(data[start : start + size])
        data = data[start + size :]
    return out


async def test_the_design_encoding_of_a_tick_is_made_once_and_written_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    stream, clients = await subscribed(nursery, 0.01, 2)
    assert stream.log is not None
    stream.log.append([line("a"), Event(EventType.STATUS, Status("working"))])
    await stream.settle()
    batch = clients[0].pending[0]
    assert clients[1].pending[0] is batch
    tick = Deliver([batch], batch.last)
    data = DESIGN.wire("s", tick)
    assert DESIGN.wire("s", Deliver([clients[1].pending[0]], batch.last)) is data
    messages = [orjson.loads(m) for m in _frames(data)]
    assert [m["type"] for m in messages] == ["event", "event"]
    assert [(m["event"]["offset"], m["event"]["type"]) for m in messages] == [
        (0, "OUTPUT"),
        (1, "STATUS"),
    ]
    assert messages[1]["event"]["data"] == {"status": "working", "kind": "status", "message": None}
    assert DESIGN_SSE.wire("s", tick).count(b"event: stream_event\n") == 2


async def test_a_lagging_client_gets_every_pending_tick_in_one_delivery(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    stream, [client] = await subscribed(nursery, 0.01)
    assert stream.log is not None
    for text in ("a", "b", "c"):
        stream.log.append([line(text)])
        await stream.settle()
    assert len(client.pending) == 3
    items = await client.next_items()
    assert len(items) == 1 and isinstance(items[0], Deliver)
    assert [f.offset for f in items[0].frames] == [0, 1, 2]
    assert items[0].count == 3 and items[0].position == 2


# -- over sockets ----------------------------------------------------------------------


async def test_sse_to_an_http_1_0_client_is_not_chunked(served: ServedHub) -> None:
    async with httpx.AsyncClient(base_url=served.urls[0], timeout=10) as http:
        await create(http, "s")
        address = served.addresses[0]
        stream = await trio.open_tcp_stream(address.host, address.port)
        request = b"GET /api/streams/s/sse?lastEventId=-1 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        await stream.send_all(request)
        answer = await http.post("/api/streams/s/events", json=[output("a"), output("b")])
        assert answer.status_code == 200
        received = b""
        with trio.fail_after(5):
            while received.count(b"event: stream_event") < 2:
                received += await stream.receive_some(1 << 16)
        await stream.aclose()
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"\r\n" not in body  # no chunk framing
    messages = [m for m in SSEParser().feed(body) if m.event == "stream_event"]
    assert [m.id for m in messages] == ["0", "1"]
    assert [orjson.loads(m.data)["data"]["text"] for m in messages] == ["a", "b"]
