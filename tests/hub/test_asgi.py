"""The hub's ASGI connections: the handler in the task that called the app, and a
subscriber's messages taken without a task of its own."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url

from trio_stream.hub import asgi
from trio_stream.hub.server import ServedHub

from .conftest import create, receive, ws_url

HANDSHAKES = {
    "ws": (
        b"GET /api/streams/s/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    ),
    "sse": (
        b"GET /api/streams/s/sse HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
    ),
}


def task_count() -> int:
    count = 0

    def walk(task: Any) -> None:
        nonlocal count
        count += 1
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return count


@pytest.mark.parametrize("kind", ["ws", "sse"])
async def test_an_idle_subscriber_costs_the_hub_two_tasks(
    kind: str, served: ServedHub, http: httpx.AsyncClient
) -> None:
    # Once its first answer is out, the hub takes the connection over from Hypercorn
    # and Quart (hub.detach): one task writes, one reads the peer. Served by them, it
    # took three (Hypercorn's connection task, the app's call running the handler,
    # Quart-Trio's reader); with Quart-Trio's own classes, four, and a WebSocket five.
    await create(http, "s")
    stream = await served.hub.broker.get_stream("s")
    address = served.addresses[0]
    # Raw sockets: the clients themselves run no task.
    sockets = []

    async def connect(count: int) -> None:
        for _ in range(count):
            sock = await trio.open_tcp_stream(address.host, address.port)
            sockets.append(sock)
            await sock.send_all(HANDSHAKES[kind])
        with trio.fail_after(10):
            while len(stream.clients) < len(sockets):
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()

    try:
        # The first subscriber also starts the stream's own tasks.
        await connect(1)
        before = task_count()
        await connect(4)
        assert task_count() - before == 4 * 2
    finally:
        for sock in sockets:
            await sock.aclose()


async def test_a_subscribers_messages_are_answered_from_the_reading_task(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 3)
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
        assert (await receive(ws))["type"] == "connection_ack"
        await ws.send_message('{"type": "fly"}')
        refused = await receive(ws)
        assert refused["type"] == "error" and refused["code"] == "unknown_type"
        await ws.send_message(
            '{"type": "subscribe", "streamId": "s", "replayOptions": {"fromOffset": -1}}'
        )
        assert (await receive(ws))["type"] == "subscribed"
        texts: list[str] = []
        while len(texts) < 3:
            message = await receive(ws)
            assert message["type"] == "event", message
            texts += [event["data"]["text"] for event in message["events"]]
        assert texts == ["line 0", "line 1", "line 2"]


def test_only_the_hubs_connections_take_a_receiver() -> None:
    # Not in the task of a HubWebsocketConnection.
    with pytest.raises(RuntimeError, match="HubWebsocketConnection"):
        asgi.take_messages(print)
