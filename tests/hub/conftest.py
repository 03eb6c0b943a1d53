"""Fixtures: a real hub on loopback (port 0) over a memory store, and clients for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import WebSocketConnection

from trio_stream.events import Event, EventType, Output
from trio_stream.hub.broker import Broker
from trio_stream.hub.clients import Client
from trio_stream.hub.config import HubConfig, Listen
from trio_stream.hub.frames import Frame
from trio_stream.hub.items import ClientKind
from trio_stream.hub.params import parse_filters
from trio_stream.hub.server import ServedHub, serve_hub
from trio_stream.hub.streams import Stream
from trio_stream.store.memory import MemoryStore

StartHub = Callable[..., Awaitable[ServedHub]]


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    yield store
    await store.aclose()


@pytest.fixture
def start_hub(nursery: trio.Nursery, store: MemoryStore) -> StartHub:
    """Start a hub with these config values (listening on a free loopback port)."""

    async def start(**values: Any) -> ServedHub:
        values.setdefault("listen", (Listen(port=0),))
        served: ServedHub = await nursery.start(serve_hub, HubConfig(**values), store)
        return served

    return start


@pytest.fixture
async def served(start_hub: StartHub) -> ServedHub:
    return await start_hub()


def base_url(served: ServedHub) -> str:
    return served.urls[0]


def ws_url(served: ServedHub, path: str) -> str:
    return base_url(served).replace("http://", "ws://") + path


@pytest.fixture
async def http(served: ServedHub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url(served), timeout=10) as client:
        yield client


def output(text: str, **extra: Any) -> dict[str, Any]:
    """A publishable output event."""
    return {"type": "output", "data": {"source": "stdout", "text": text}, **extra}


async def create(http: httpx.AsyncClient, sid: str, n: int = 0) -> None:
    """Create stream ``sid`` with ``n`` output events ``line 0``…"""
    answer = await http.post("/api/streams", json={"id": sid})
    assert answer.status_code == 201, answer.text
    if n:
        answer = await http.post(
            f"/api/streams/{sid}/events", json=[output(f"line {i}") for i in range(n)]
        )
        assert answer.status_code == 200, answer.text


async def create_mixed(http: httpx.AsyncClient, sid: str, n: int) -> None:
    """Create stream ``sid`` with ``n`` events alternating output ``line I`` (even
    offsets) and status ``step I`` (odd offsets)."""
    await create(http, sid)
    events = [
        output(f"line {i}") if i % 2 == 0 else {"type": "status", "data": {"status": f"step {i}"}}
        for i in range(n)
    ]
    answer = await http.post(f"/api/streams/{sid}/events", json=events)
    assert answer.status_code == 200, answer.text


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(5):
        message = await ws.get_message()
    return orjson.loads(message)  # type: ignore[no-any-return]


async def receive_until(ws: WebSocketConnection, kind: str) -> list[dict[str, Any]]:
    """Messages up to and including the first of type ``kind``."""
    out = []
    for _ in range(10_000):
        message = await receive(ws)
        out.append(message)
        if message["type"] == kind:
            return out
    raise AssertionError(f"no {kind} message")


async def texts_until_end(ws: WebSocketConnection) -> list[str]:
    """Texts of every event received until the stream's ``end`` frame."""
    texts = []
    for message in await receive_until(ws, "end"):
        if message["type"] == "event":
            texts.extend(e["data"].get("text", e["type"]) for e in message["events"])
    return texts


async def subscribed(
    nursery: trio.Nursery, tick: float, count: int = 1, filters: dict[str, Any] | None = None
) -> tuple[Stream, list[Client]]:
    """A live stream of a hub with this tick, and ``count`` WebSocket clients subscribed to
    it with ``filters`` (their acknowledgements taken)."""
    broker = Broker(MemoryStore(), HubConfig(tick=tick), nursery)
    stream = await broker.create_stream("s")
    clients = [broker.attach(stream, ClientKind.WEBSOCKET, "test") for _ in range(count)]
    for client in clients:
        await client.subscribe(None, parse_filters(filters))
        await client.next_items()
    assert stream.log is not None
    return stream, clients


def frames(*texts: str, first: int = 0, source: str = "stdout") -> list[Frame]:
    """The frames of output lines of stream ``s``, from offset ``first``."""
    events = [
        Event(EventType.OUTPUT, Output(source, text)).with_offset("s", first + i)
        for i, text in enumerate(texts)
    ]
    return [Frame.of(e) for e in events]
