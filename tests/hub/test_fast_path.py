"""The fast path of fan-out (frames written straight to Hypercorn's connections) is on
under the pinned releases, and the hub behaves the same with it off."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url

from trio_stream.hub import clients, detach, patches, wire
from trio_stream.hub.clients import Client
from trio_stream.hub.encodings import NATIVE
from trio_stream.hub.items import Batch, Deliver, Item
from trio_stream.hub.server import ServedHub
from trio_stream.hub.streams import Stream

from .conftest import create, frames, output, receive, subscribed, texts_until_end, ws_url

HERE = Path(__file__).parent


def test_the_installed_releases_are_the_checked_ones() -> None:
    assert patches.unchecked_releases() == []


@pytest.mark.skipif(
    not wire.fast_path["enabled"], reason="this run checks the hub with the fast path off"
)
async def test_websocket_and_sse_clients_take_the_fast_path(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "f", 1)
    before = wire.paths_taken.copy()
    detached = detach.taken_over.copy()
    async with open_websocket_url(ws_url(served, "/api/streams/f/ws")) as ws:
        await receive(ws)
        await ws.send_message(orjson.dumps({"type": "subscribe", "streamId": "f"}).decode())
        await receive(ws)
        # Once its first answers are out, it leaves Hypercorn and Quart for the hub's own
        # handling (hub.detach); so does the SSE response, once its history is sent.
        with trio.fail_after(5):
            while detach.taken_over["websocket"] == detached["websocket"]:
                await trio.sleep(0.01)
    async with http.stream("GET", "/api/streams/f/sse?lastEventId=-1") as response:
        seen = b""
        async for chunk in response.aiter_bytes():
            seen += chunk
            if b"line 0" in seen:
                break
        with trio.fail_after(5):
            while detach.taken_over["sse"] == detached["sse"]:
                await trio.sleep(0.01)
    taken = wire.paths_taken - before
    assert taken == {("websocket", "fast"): 1, ("sse", "fast"): 1}
    assert detach.taken_over - detached == {"websocket": 1, "sse": 1}


def test_the_hub_tests_pass_with_the_fast_path_off() -> None:
    if os.environ.get(wire.FAST_PATH_ENV) == "off":
        pytest.skip("already running with the fast path off")
    env = {**os.environ, wire.FAST_PATH_ENV: "off"}
    tests = [
        str(HERE / name)
        for name in ("test_websocket.py", "test_sse.py", "test_fanout.py", "test_hostile.py")
    ]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


async def _publish_big(http: httpx.AsyncClient, sid: str, batches: int, size: int) -> None:
    for b in range(batches):
        events = [output(f"{b}:{i}:" + "x" * size) for i in range(20)]
        answer = await http.post(f"/api/streams/{sid}/events", json=events)
        assert answer.status_code == 200, answer.text


@pytest.mark.skipif(
    not wire.fast_path["enabled"], reason="this run checks the hub with the fast path off"
)
async def test_frames_the_fan_out_writes_itself_arrive_whole_when_the_reader_stalls(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    """A tick's frame goes from the fan-out straight to the socket while the client's
    writer sleeps; once the socket is full, the rest of a frame cut short is sent by the
    writer before anything else. A WebSocket and an SSE reader that stop reading while
    about 8 MiB arrive get every event, in order, in whole frames (and the WebSocket
    reader, whose library takes messages up to 1 MiB, gets the backlog in several)."""
    await create(http, "big", 0)
    before = clients.express_writes.copy()
    # One message held at a time: the WebSocket reader stops reading from its socket.
    async with (
        open_websocket_url(
            ws_url(served, "/api/streams/big/ws?after=-1"), message_queue_size=1
        ) as ws,
        http.stream("GET", "/api/streams/big/sse?lastEventId=-1") as sse,
    ):
        assert (await receive(ws))["type"] == "connection_ack"
        lines = sse.aiter_lines()
        # The SSE response is open once its first comment arrives.
        assert (await anext(lines)).startswith(":")
        # A small tick first, read at once: both frames are written whole.
        await _publish_big(http, "big", batches=1, size=10)
        assert (await receive(ws))["type"] == "subscribed"
        texts = [e["data"]["text"] for e in (await receive(ws))["events"]]
        offsets: list[int] = []
        while not offsets:
            line = await anext(lines)
            if line.startswith("id: "):
                offsets.append(int(line[4:]))
        await _publish_big(http, "big", batches=100, size=4000)
        ended = {"type": "session_ended", "data": {"exit_status": 0}}
        (await http.post("/api/streams/big/events", json=ended)).raise_for_status()
        texts += await texts_until_end(ws)
        with trio.fail_after(20):
            async for line in lines:
                if line.startswith("id: "):
                    offsets.append(int(line[4:]))
                elif line == "event: end":
                    break
    small = [f"0:{i}:" + "x" * 10 for i in range(20)]
    big = [f"{b}:{i}:" + "x" * 4000 for b in range(100) for i in range(20)]
    assert texts == [*small, *big, "session_ended"]
    assert offsets == list(range(2021))  # 20 small outputs, 2,000 big ones and the end
    taken = clients.express_writes - before
    assert taken["whole"] >= 2, taken
    assert taken["part"] > 0, taken


async def _parked_clients(
    nursery: trio.Nursery, count: int, filters: dict[str, object] | None = None
) -> tuple[Stream, list[Client], list[socket.socket], list[list[Item]]]:
    """A live stream and ``count`` WebSocket clients whose writer tasks sleep with
    nothing to send, each with a direct writer to one end of a socket pair (the other
    end returned); what their writer tasks were handed is collected."""
    stream, parked = await subscribed(nursery, 0.001, count, filters)
    peers, handed = [], []
    for client in parked:
        ours, peer = socket.socketpair()
        ours.setblocking(False)
        peer.setblocking(False)
        sock = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        client.express(wire.RawWriter(_never_sent, trio.Lock(), sock), NATIVE)
        items: list[Item] = []

        async def writer(client: Client = client, items: list[Item] = items) -> None:
            while True:
                items += await client.next_items()

        nursery.start_soon(writer)
        peers.append(peer)
        handed.append(items)
    await trio.testing.wait_all_tasks_blocked()
    assert all(c.parked and c.catching_up is None for c in parked)
    return stream, parked, peers, handed


async def _never_sent(data: object) -> None:
    raise AssertionError("the writer task was not to send anything")


def _received(peer: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            data += peer.recv(1 << 20)
        except BlockingIOError:
            return data


async def test_the_fan_out_writes_the_shared_frame_to_sleeping_clients_itself(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Clients with nothing queued and their writer asleep are written the batch's one
    frame by the fan-out (their writers never wake); a client whose socket is full gets
    it queued for its writer after one try; one whose filter passes nothing, nothing."""
    _, parked, peers, handed = await _parked_clients(nursery, 3)
    # The first client's peer reads nothing: its side of the pair fills up.
    writer = parked[0].express_writer
    assert writer is not None
    while writer.write_now(b"x" * 65536) > 0:
        pass
    before = clients.express_writes.copy()
    batch = Batch(frames("a", "b"))
    for client in parked:
        client.offer(batch)
    frame = batch.wire_frame(NATIVE, "s", 1)
    assert _received(peers[1]) == frame and _received(peers[2]) == frame
    taken = clients.express_writes - before
    assert taken == {"whole": 2, "left": 1}
    for client in parked[1:]:
        assert (client.events_sent, client.frames_sent, client.position) == (2, 1, 1)
        assert not client.pending and client.queued == 1
    # The full one: queued once for its writer, which is woken.
    assert parked[0].pending == [batch] and parked[0].events_sent == 0
    await trio.testing.wait_all_tasks_blocked()
    assert [type(i) for i in handed[0]] == [Deliver] and handed[1:] == [[], []]


async def test_a_sleeping_client_whose_filter_passes_nothing_is_not_woken(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    _, [client], [peer], [handed] = await _parked_clients(nursery, 1, {"eventTypes": ["status"]})
    client.offer(Batch(frames("a")))
    assert client.queued == 0 and not client.pending and not client._wake.is_set()
    await trio.testing.wait_all_tasks_blocked()
    assert handed == [] and _received(peer) == b""


async def test_what_the_fan_out_writes_itself_is_counted_once_per_client(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Frames the fan-out writes to sleeping clients count, per client and in the
    stream's activity record (added up over a step and recorded once)."""
    stream, parked, peers, handed = await _parked_clients(nursery, 3)
    assert stream.log is not None
    before = clients.express_writes.copy()
    stream.log.append([e.event for e in frames("a", "b")])
    await stream.settle()
    frame = _received(peers[0])
    assert frame and all(_received(peer) == frame for peer in peers[1:])
    assert (clients.express_writes - before)["whole"] == 3
    for client in parked:
        assert (client.events_sent, client.frames_sent, client.bytes_sent) == (2, 1, len(frame))
    minutes = stream.activity.minutes
    assert sum(m[1] for m in minutes) == 3 * 2
    assert sum(m[2] for m in minutes) == 3 * len(frame)
    assert (stream.tally_events, stream.tally_bytes) == (0, 0)
    await trio.testing.wait_all_tasks_blocked()
    assert handed == [[], [], []]
