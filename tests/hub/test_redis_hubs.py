"""Hubs on one Redis: what one records, another serves; a Redis outage is a 503."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import trio
from redis_helpers import RedisServer, free_port
from trio_websocket import open_websocket_url

from trio_stream.hub.config import HubConfig, Listen
from trio_stream.hub.server import serve_hub
from trio_stream.hub.sse import SSEParser
from trio_stream.store import open_store

from .conftest import output, receive, texts_until_end

TSTREAM = [str(Path(sys.executable).parent / "tstream")]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", free_port()).start()
    yield server
    server.stop()


async def start_serve(store_url: str, nursery: trio.Nursery) -> str:
    """Start ``tstream serve`` on a free loopback port; return its base URL."""
    process: trio.Process = await nursery.start(
        lambda task_status: trio.run_process(
            [*TSTREAM, "serve", "--listen", "127.0.0.1:0", "--store", store_url],
            stderr=subprocess.PIPE,
            check=False,
            task_status=task_status,
        )
    )
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(15):
        while b"listening on http" not in seen:
            chunk = await process.stderr.receive_some()
            assert chunk, seen
            seen += chunk
    line = next(x for x in seen.decode().splitlines() if "tstream hub listening on" in x)
    return line.rsplit(" ", 1)[1]


async def test_what_one_hub_records_another_serves_from_any_offset(redis: RedisServer) -> None:
    async with trio.open_nursery() as nursery:
        hub_a = await start_serve(redis.url, nursery)
        hub_b = await start_serve(redis.unix_url, nursery)
        async with httpx.AsyncClient(base_url=hub_a, timeout=10) as a:
            assert (await a.post("/api/streams", json={"id": "s"})).status_code == 201
            events = [output(f"line {i}") for i in range(5)]
            events.append({"type": "session_ended", "data": {"exit_status": 0}})
            answer = await a.post("/api/streams/s/events", json=events)
            assert answer.status_code == 200, answer.text
            epoch = (await a.get("/api/streams/metrics")).json()["epoch"]
        async with httpx.AsyncClient(base_url=hub_b, timeout=10) as b:
            listed = (await b.get("/api/streams")).json()
            assert [(s["id"], s["status"]) for s in listed["streams"]] == [("s", "completed")]
            history = (await b.get("/api/streams/s/history", params={"after": 2})).json()
            assert [e["offset"] for e in history["events"]] == [3, 4, 5]
            polled = (await b.get("/api/streams/s/poll", params={"after": 3})).json()
            assert [e["offset"] for e in polled["events"]] == [4, 5]
            assert (await b.get("/api/streams/metrics")).json()["epoch"] == epoch
            parser = SSEParser()
            messages = []
            async with b.stream("GET", "/api/streams/s/sse", headers={"Last-Event-ID": "1"}) as sse:
                async for chunk in sse.aiter_bytes():
                    messages.extend(parser.feed(chunk))
            offsets = [m.id for m in messages if m.event == "stream_event"]
            assert offsets == ["2", "3", "4", "5"]
            assert messages[-1].event == "end"
        ws_b = hub_b.replace("http://", "ws://") + "/api/streams/s/ws"
        async with open_websocket_url(ws_b) as ws:
            assert (await receive(ws))["epoch"] == epoch
            replay = {"fromOffset": 2, "epoch": epoch}
            await ws.send_message(
                orjson.dumps({"type": "subscribe", "replayOptions": replay}).decode()
            )
            assert (await receive(ws))["recovered"] is True
            assert await texts_until_end(ws) == ["line 3", "line 4", "session_ended"]
        nursery.cancel_scope.cancel()


async def test_a_redis_outage_is_a_503_and_the_hub_serves_again_after_it(
    redis: RedisServer, nursery: trio.Nursery
) -> None:
    async with open_store(redis.url + "?timeout=0.5") as store:
        served = await nursery.start(serve_hub, HubConfig(listen=(Listen(port=0),)), store)
        async with httpx.AsyncClient(base_url=served.urls[0], timeout=10) as http:
            assert (await http.post("/api/streams", json={"id": "s"})).status_code == 201
            redis.pause()
            try:
                with trio.fail_after(5):
                    answer = await http.get("/api/streams")
                assert answer.status_code == 503
                error = orjson.loads(answer.content)["error"]
                assert error["code"] == "store_error"
                assert "did not answer within 0.5s" in error["message"]
            finally:
                redis.resume()
            redis.stop()
            with trio.fail_after(5):
                answer = await http.get("/api/streams/s/history")
            assert answer.status_code == 503
            assert "Redis store redis://127.0.0.1" in answer.json()["error"]["message"]
            redis.start()
            answer = await http.get("/api/streams")
            # A Redis without persistence came back empty: no error, no session.
            assert answer.status_code == 200 and answer.json()["streams"] == []
        nursery.cancel_scope.cancel()


async def test_events_acknowledged_while_redis_restarts_are_recorded_when_it_is_back(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    redis = RedisServer(tmp_path / "redis", free_port())
    durable = ("--appendonly", "yes", "--appendfsync", "always")
    redis.start(*durable)
    try:
        async with open_store(redis.url + "?timeout=0.5") as store:
            served = await nursery.start(serve_hub, HubConfig(listen=(Listen(port=0),)), store)
            async with httpx.AsyncClient(base_url=served.urls[0], timeout=10) as http:
                await http.post("/api/streams", json={"id": "s"})
                sent = [output(f"line {i}") for i in range(5)]
                assert (await http.post("/api/streams/s/events", json=sent[:3])).status_code == 200
                redis.stop()
                # The hub holds what it acknowledged and keeps trying to record it.
                answer = await http.post("/api/streams/s/events", json=sent[3:])
                assert answer.json()["lastOffset"] == 4
                redis.start(*durable)
                async with open_store(redis.url) as check:
                    with trio.fail_after(10):
                        while await check.last_offset("s") < 4:
                            await trio.sleep(0.05)
                    texts = [e.data.text for e in await check.read("s")]
                assert texts == [f"line {i}" for i in range(5)]
            nursery.cancel_scope.cancel()
    finally:
        redis.stop()


async def test_a_hub_whose_offsets_another_hub_took_reopens_the_stream_from_redis(
    redis: RedisServer, nursery: trio.Nursery
) -> None:
    async with open_store(redis.url) as store_a, open_store(redis.url) as store_b:
        config = HubConfig(listen=(Listen(port=0),))
        hub_a = await nursery.start(serve_hub, config, store_a)
        hub_b = await nursery.start(serve_hub, config, store_b)
        async with (
            httpx.AsyncClient(base_url=hub_a.urls[0], timeout=10) as a,
            httpx.AsyncClient(base_url=hub_b.urls[0], timeout=10) as b,
        ):
            # B holds the stream live; A reopens it from Redis and records offset 0 first.
            assert (await b.post("/api/streams", json={"id": "s"})).status_code == 201
            await a.post("/api/streams/s/events", json=[output("from a")])
            with trio.fail_after(10):
                while await store_a.last_offset("s") < 0:
                    await trio.sleep(0.05)
            # B places its event at offset 0 too: Redis refuses it, and B lets the stream go
            # instead of retrying for ever.
            await b.post("/api/streams/s/events", json=[output("from b")])
            with trio.fail_after(10):
                while (await b.get("/api/streams/s")).json()["live"]:
                    await trio.sleep(0.05)
            answer = await b.post("/api/streams/s/events", json=[output("from b again")])
            assert answer.json()["firstOffset"] == 1
            with trio.fail_after(10):
                while await store_b.last_offset("s") < 1:
                    await trio.sleep(0.05)
            texts = [e.data.text for e in await store_b.read("s")]
            assert texts == ["from a", "from b again"]
        nursery.cancel_scope.cancel()
