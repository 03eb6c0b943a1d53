"""The fast path of fan-out (frames written straight to Hypercorn's connections) is on
under the pinned releases, and the hub behaves the same with it off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from trio_stream.hub import clients, patches, wire
from trio_stream.hub.server import ServedHub

from .conftest import create, output, receive, texts_until_end, ws_url

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
    async with open_websocket_url(ws_url(served, "/api/streams/f/ws")) as ws:
        await receive(ws)
        await ws.send_message(orjson.dumps({"type": "subscribe", "streamId": "f"}).decode())
        await receive(ws)
    async with http.stream("GET", "/api/streams/f/sse?lastEventId=-1") as response:
        async for _ in response.aiter_bytes():
            break
    taken = wire.paths_taken - before
    assert taken == {("websocket", "fast"): 1, ("sse", "fast"): 1}


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
