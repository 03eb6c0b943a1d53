"""Hubs on one Redis: what one records, another serves; a Redis outage is a 503."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio
from redis_helpers import RedisServer, free_port, redis_cluster
from trio_websocket import open_websocket_url

from trio_stream.hub import feeds
from trio_stream.hub.config import HubConfig, Listen
from trio_stream.hub.server import ServedHub, serve_hub
from trio_stream.hub.sse import SSEParser
from trio_stream.store import open_store
from trio_stream.store.base import Store

from .conftest import output, receive, receive_until, texts_until_end

TSTREAM = [str(Path(sys.executable).parent / "tstream")]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", free_port()).start()
    yield server
    server.stop()


async def start_serve(
    store_url: str, nursery: trio.Nursery, keep: list[trio.Process] | None = None
) -> str:
    """Start ``tstream serve`` on a free loopback port; return its base URL (and put the
    process in ``keep``)."""
    process: trio.Process = await nursery.start(
        lambda task_status: trio.run_process(
            [*TSTREAM, "serve", "--listen", "127.0.0.1:0", "--store", store_url],
            stderr=subprocess.PIPE,
            check=False,
            task_status=task_status,
        )
    )
    assert process.stderr is not None
    if keep is not None:
        keep.append(process)
    seen = b""
    with trio.fail_after(15):
        while b"listening on http" not in seen:
            chunk = await process.stderr.receive_some()
            assert chunk, seen
            seen += chunk
    line = next(x for x in seen.decode().splitlines() if "tstream hub listening on" in x)
    return line.rsplit(" ", 1)[1]


@attrs.frozen
class TwoHubs:
    """Two hubs on one Redis, each with a store of its own, and an HTTP client of each."""

    store_a: Store
    a: httpx.AsyncClient
    b: httpx.AsyncClient
    ws_b: str  # hub B's base URL for WebSockets
    hub_b: ServedHub
    store_b: Store


@contextlib.asynccontextmanager
async def two_hubs(url: str, **settings: Any) -> AsyncIterator[TwoHubs]:
    """Two hubs on the store at ``url``; they shut down before their stores close."""
    async with open_store(url) as store_a, open_store(url) as store_b:
        config = HubConfig(listen=(Listen(port=0),), **settings)
        async with trio.open_nursery() as hubs:
            hub_a = await hubs.start(serve_hub, config, store_a)
            hub_b = await hubs.start(serve_hub, config, store_b)
            async with (
                httpx.AsyncClient(base_url=hub_a.urls[0], timeout=10) as a,
                httpx.AsyncClient(base_url=hub_b.urls[0], timeout=10) as b,
            ):
                ws_b = hub_b.urls[0].replace("http://", "ws://")
                yield TwoHubs(store_a, a, b, ws_b, hub_b, store_b)
            hubs.cancel_scope.cancel()


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


async def test_a_publish_while_redis_restarts_is_a_503_and_nothing_acknowledged_is_lost(
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
                # Acknowledged means stored in Redis: while it is down, the publisher is
                # told to try again, within the store's timeout.
                with trio.fail_after(5):
                    answer = await http.post("/api/streams/s/events", json=sent[3:])
                assert answer.status_code == 503
                assert answer.json()["error"]["code"] == "store_error"
                redis.start(*durable)
                with trio.fail_after(10):
                    while True:
                        answer = await http.post("/api/streams/s/events", json=sent[3:])
                        if answer.status_code == 200:
                            break
                        assert answer.status_code == 503
                        await trio.sleep(0.1)
                assert answer.json()["lastOffset"] == 4
                async with open_store(redis.url) as check:
                    texts = [e.data.text for e in await check.read("s")]
                assert texts == [f"line {i}" for i in range(5)]
            nursery.cancel_scope.cancel()
    finally:
        redis.stop()


async def test_two_hubs_publishing_into_one_session_take_turns_in_redis(
    redis: RedisServer,
) -> None:
    async with two_hubs(redis.url) as hubs:
        store_a, a, b = hubs.store_a, hubs.a, hubs.b
        assert (await b.post("/api/streams", json={"id": "s"})).status_code == 201

        async def publish(client: httpx.AsyncClient, name: str) -> list[int]:
            firsts = []
            for i in range(20):
                batch = [output(f"{name} {i}.{j}") for j in range(5)]
                answer = await client.post("/api/streams/s/events", json=batch)
                assert answer.status_code == 200, answer.text
                firsts.append(answer.json()["firstOffset"])
            return firsts

        taken: dict[str, list[int]] = {}

        async def run(client: httpx.AsyncClient, name: str) -> None:
            taken[name] = await publish(client, name)

        async with trio.open_nursery() as both:
            both.start_soon(run, a, "a")
            both.start_soon(run, b, "b")
        # Every batch got its own five offsets: none reused, none skipped.
        starts = sorted(taken["a"] + taken["b"])
        assert starts == list(range(0, 200, 5))
        events = await store_a.read("s")
        assert [e.offset for e in events] == list(range(200))
        for name in "ab":
            mine = [e.data.text for e in events if e.data.text.startswith(name)]
            assert mine == [f"{name} {i}.{j}" for i in range(20) for j in range(5)]
        # Both hubs serve the same history.
        for client in (a, b):
            history = await client.get("/api/streams/s/history", params={"limit": 500})
            assert [e["offset"] for e in history.json()["events"]] == list(range(200))


async def test_what_one_hub_takes_live_reaches_the_clients_of_another(
    redis: RedisServer,
) -> None:
    async with two_hubs(redis.url, tick=0.005) as hubs:
        a, b = hubs.a, hubs.b
        assert (await a.post("/api/streams", json={"id": "s"})).status_code == 201
        await a.post("/api/streams/s/events", json=[output("before")])
        ws_b = hubs.ws_b + "/api/streams/s/ws"
        sse_messages: list[str] = []
        sse_open = trio.Event()

        async def follow_sse() -> None:
            parser = SSEParser()
            async with b.stream("GET", "/api/streams/s/sse?lastN=1") as sse:
                sse_open.set()
                async for chunk in sse.aiter_bytes():
                    for message in parser.feed(chunk):
                        event = orjson.loads(message.data) if message.data else {}
                        if message.event == "stream_event" and event["type"] == "output":
                            sse_messages.append(event["data"]["text"])
                        if message.event == "end":
                            return

        async with open_websocket_url(ws_b) as ws, trio.open_nursery() as clients:
            await receive(ws)
            await ws.send_message(
                orjson.dumps({"type": "subscribe", "replayOptions": {"lastN": 1}}).decode()
            )
            assert (await receive(ws))["type"] == "subscribed"
            clients.start_soon(follow_sse)
            await sse_open.wait()
            # A long poll on B waits for what A takes next.
            poll = clients.start_soon
            polled: list[dict] = []

            async def long_poll() -> None:
                answer = await b.get("/api/streams/s/poll", params={"after": 0, "timeout": 10})
                polled.extend(answer.json()["events"])

            poll(long_poll)
            for i in range(3):
                answer = await a.post("/api/streams/s/events", json=[output(f"live {i}")])
                assert answer.status_code == 200
            await a.post(
                "/api/streams/s/events",
                json=[{"type": "session_ended", "data": {"exit_status": 0}}],
            )
            with trio.fail_after(10):
                texts = await texts_until_end(ws)
        assert texts == ["before", "live 0", "live 1", "live 2", "session_ended"]
        assert sse_messages == ["before", "live 0", "live 1", "live 2"]
        assert polled and polled[0]["offset"] == 1
        # B learns the end from the store: the stream is completed there too.
        with trio.fail_after(10):
            while (await b.get("/api/streams/s")).json()["status"] != "completed":
                await trio.sleep(0.05)


async def test_a_run_publishing_to_a_hub_killed_mid_stream_resumes_on_the_next(
    redis: RedisServer, tmp_path: Path
) -> None:
    """``run --hub A,B``: A is killed (-9) mid-stream, the run goes on into B, and a client
    of B that followed from the start sees every line once, in order."""
    lines = 3000
    script = f"for i in $(seq 1 {lines}); do echo line $i; [ $i = 1000 ] && sleep 1; done; true"
    async with trio.open_nursery() as nursery:
        process_a: list[trio.Process] = []

        async def serve_a(task_status: trio.TaskStatus[str]) -> None:
            url = await start_serve(redis.url, nursery, keep=process_a)
            task_status.started(url)

        hub_a = await nursery.start(serve_a)
        hub_b = await start_serve(redis.url, nursery)
        run = await trio.lowlevel.open_process(
            [
                *TSTREAM,
                "run",
                "--no-serve",
                "--quiet",
                "--id",
                "moving",
                "--hub",
                f"{hub_a},{hub_b}",
                "--hub-flush-timeout",
                "30",
                "--",
                "sh",
                "-c",
                script,
            ],
            env={**os.environ, "TSTREAM_STORE": f"sqlite://{tmp_path / 'run.db'}"},
        )
        async with httpx.AsyncClient(base_url=hub_b, timeout=10) as b:
            with trio.fail_after(20):
                while (await b.get("/api/streams/moving")).status_code != 200:
                    await trio.sleep(0.05)
            # A viewer on A first, then on B once A is gone, from the last line it printed.
            attach = await trio.lowlevel.open_process(
                [*TSTREAM, "attach", "--hub", f"{hub_a},{hub_b}", "moving"],
                stdout=subprocess.PIPE,
            )
            printed = bytearray()

            async def read_attach() -> None:
                assert attach.stdout is not None
                async for chunk in attach.stdout:
                    printed.extend(chunk)

            nursery.start_soon(read_attach)
            ws_b = hub_b.replace("http://", "ws://") + "/api/streams/moving/ws"
            async with open_websocket_url(ws_b) as ws:
                await receive(ws)
                subscribe = {"type": "subscribe", "replayOptions": {"fromOffset": -1}}
                await ws.send_message(orjson.dumps(subscribe).decode())
                assert (await receive(ws))["type"] == "subscribed"
                offsets: list[int] = []
                texts: list[str] = []
                killed = False
                with trio.fail_after(60):
                    while True:
                        message = await receive(ws)
                        if message["type"] == "end":
                            break
                        if message["type"] != "event":
                            continue
                        for event in message["events"]:
                            offsets.append(event["offset"])
                            if event["type"] == "output":
                                texts.append(event["data"]["text"])
                        if not killed and len(texts) >= 500:
                            process_a[0].send_signal(signal.SIGKILL)
                            killed = True
        with trio.fail_after(30):
            await run.wait()
            await attach.wait()
        assert killed and run.returncode == 0 and attach.returncode == 0
        assert printed.decode().splitlines() == [f"line {i}" for i in range(1, lines + 1)]
        assert offsets == list(range(len(offsets)))
        assert texts == [f"line {i}" for i in range(1, lines + 1)]
        nursery.cancel_scope.cancel()


async def test_hubs_on_a_redis_cluster_fan_out_live_between_them(tmp_path: Path) -> None:
    with redis_cluster(tmp_path / "cluster") as servers:
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in servers[:2])
        async with two_hubs(url, tick=0.005) as hubs:
            a = hubs.a
            # Several sessions, so that they spread over the masters.
            sids = [f"s{i}" for i in range(6)]
            for sid in sids:
                assert (await a.post("/api/streams", json={"id": sid})).status_code == 201
            base_b = hubs.ws_b
            for sid in sids:
                async with open_websocket_url(f"{base_b}/api/streams/{sid}/ws") as ws:
                    await receive(ws)
                    await ws.send_message(orjson.dumps({"type": "subscribe"}).decode())
                    assert (await receive(ws))["type"] == "subscribed"
                    events = [output(f"{sid} {i}") for i in range(3)]
                    events.append({"type": "session_ended", "data": {"exit_status": 0}})
                    answer = await a.post(f"/api/streams/{sid}/events", json=events)
                    assert answer.status_code == 200
                    with trio.fail_after(10):
                        texts = await texts_until_end(ws)
                    assert texts == [f"{sid} 0", f"{sid} 1", f"{sid} 2", "session_ended"]


async def test_a_hub_reads_a_session_only_while_someone_reads_it_there(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hub B holds a session it served once but has no client of: appends on hub A are
    noted, not read; the next request on B reads once and answers up to date."""
    # No read on a timer during the test (one comes every FEED_POLL seconds otherwise).
    monkeypatch.setattr(feeds, "FEED_POLL", 60.0)
    async with two_hubs(redis.url, tick=0.005) as hubs:
        assert (await hubs.a.post("/api/streams", json={"id": "s"})).status_code == 201
        (await hubs.a.post("/api/streams/s/events", json=output("line 0"))).raise_for_status()
        async with open_websocket_url(hubs.ws_b + "/api/streams/s/ws?after=-1") as ws:
            assert (await receive(ws))["type"] == "connection_ack"
            events = (await receive_until(ws, "event"))[-1]["events"]
            assert [e["offset"] for e in events] == [0]
        stream = hubs.hub_b.hub.broker.streams["s"]
        with trio.fail_after(5):
            while stream.clients:
                await trio.sleep(0.01)
        reads: list[int] = []
        read_rows = hubs.store_b.read_rows

        async def counted(session_id: str, after: int = -1, limit: int = 10_000) -> Any:
            reads.append(after)
            return await read_rows(session_id, after, limit)

        monkeypatch.setattr(hubs.store_b, "read_rows", counted)
        for i in range(1, 21):
            answer = await hubs.a.post("/api/streams/s/events", json=output(f"line {i}"))
            answer.raise_for_status()
        log = stream.log
        with trio.fail_after(5):
            while log.known_last < 20:
                await trio.sleep(0.01)
        assert reads == []
        assert log.last_offset == 0
        # Meanwhile its listing is the store's.
        listed = (await hubs.b.get("/api/streams")).json()["streams"]
        assert [(s["id"], s["lastOffset"], s["live"]) for s in listed] == [("s", 20, True)]
        # A request brings it up to date before it is answered.
        polled = (await hubs.b.get("/api/streams/s/poll", params={"after": 0})).json()
        assert [e["offset"] for e in polled["events"]] == list(range(1, 21))
        assert reads == [0]
        # A client resuming there with the newest offset it got elsewhere misses nothing.
        async with open_websocket_url(hubs.ws_b + "/api/streams/s/ws?after=20") as ws:
            ack = await receive(ws)
            assert ack["recovered"] is True
            assert ack["lastOffset"] == 20
            (await hubs.a.post("/api/streams/s/events", json=output("line 21"))).raise_for_status()
            events = (await receive_until(ws, "event"))[-1]["events"]
            assert [e["offset"] for e in events] == [21]


async def test_clients_of_another_hub_stay_connected_through_a_redis_restart(
    tmp_path: Path,
) -> None:
    """Redis restarts (with its append-only file) while a WebSocket and an SSE client of hub
    B follow a session published on hub A: they stay connected, and get what A takes once
    Redis is back, after what they had, without a gap or a duplicate."""
    redis = RedisServer(tmp_path / "redis", free_port())
    durable = ("--appendonly", "yes", "--appendfsync", "always")
    redis.start(*durable)
    try:
        async with two_hubs(redis.url + "?timeout=0.5", tick=0.005) as hubs:
            assert (await hubs.a.post("/api/streams", json={"id": "s"})).status_code == 201
            before = [output(f"line {i}") for i in range(3)]
            (await hubs.a.post("/api/streams/s/events", json=before)).raise_for_status()
            parser = SSEParser()
            async with (
                open_websocket_url(hubs.ws_b + "/api/streams/s/ws?after=-1") as ws,
                hubs.b.stream("GET", "/api/streams/s/sse?lastEventId=-1") as sse,
            ):
                assert (await receive(ws))["type"] == "connection_ack"
                chunks = sse.aiter_bytes()
                seen: list[str] = []
                with trio.fail_after(10):
                    while "2" not in seen:
                        messages = parser.feed(await anext(chunks))
                        seen += [m.id for m in messages if m.event == "stream_event"]
                redis.stop()
                redis.start(*durable)
                after = [output(f"line {i}") for i in range(3, 6)]
                after.append({"type": "session_ended", "data": {"exit_status": 0}})
                with trio.fail_after(15):
                    while True:
                        answer = await hubs.a.post("/api/streams/s/events", json=after)
                        if answer.status_code == 200:
                            break
                        assert answer.status_code == 503, answer.text
                        await trio.sleep(0.1)
                # Well within the 5 s after which a follower reads anyway: the hub learnt
                # that its subscription was back, and read what it had missed.
                with trio.fail_after(3):
                    texts = await texts_until_end(ws)
                with trio.fail_after(3):
                    while not seen or seen[-1] != "6":
                        messages = parser.feed(await anext(chunks))
                        seen += [m.id for m in messages if m.event == "stream_event"]
            assert texts == [f"line {i}" for i in range(6)] + ["session_ended"]
            assert seen == [str(i) for i in range(7)]
    finally:
        redis.stop()


async def test_a_session_nobody_reads_on_a_hub_leaves_it_once_it_ends_elsewhere(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While appends come, a hub reads a session nobody reads there every FEED_POLL
    seconds, not at each append: it learns that the session ended on another hub, and
    lets it go from memory."""
    monkeypatch.setattr(feeds, "FEED_POLL", 0.2)
    async with two_hubs(redis.url, tick=0.005) as hubs:
        assert (await hubs.a.post("/api/streams", json={"id": "s"})).status_code == 201
        (await hubs.a.post("/api/streams/s/events", json=output("line 0"))).raise_for_status()
        polled = (await hubs.b.get("/api/streams/s/poll", params={"after": -1})).json()
        assert [e["offset"] for e in polled["events"]] == [0]
        broker = hubs.hub_b.hub.broker
        assert "s" in broker.streams
        ended = {"type": "session_ended", "data": {"exit_status": 0}}
        (await hubs.a.post("/api/streams/s/events", json=ended)).raise_for_status()
        with trio.fail_after(5):
            while "s" in broker.streams:
                await trio.sleep(0.05)
        listed = (await hubs.b.get("/api/streams")).json()["streams"]
        assert [(s["id"], s["status"], s["live"]) for s in listed] == [("s", "completed", False)]
