"""The WebSocket client helper against a real hub, over TCP and a Unix socket."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import orjson
import pytest
import trio
from terminal_helpers import merged, terminal_bytes
from trio_websocket import ConnectionClosed

from trio_stream.client import HubClientError, WireEvents, follow_stream, open_publisher
from trio_stream.events import Event, EventType, Output, SessionEnded, Status, event_to_json
from trio_stream.hub.config import Listen
from trio_stream.hub.server import ServedHub
from trio_stream.store.base import SessionInfo, SessionStatus
from trio_stream.store.memory import MemoryStore

from .conftest import StartHub, create, output


@pytest.mark.parametrize("seed", range(30))
def test_rows_from_the_hub_read_and_print_as_their_events(seed: int) -> None:
    rng = random.Random(seed)
    events = []
    for offset in range(rng.randint(1, 30)):
        if rng.random() < 0.8:
            raw = b"\xff\n" if rng.random() < 0.15 else None
            data = Output(
                rng.choice(["stdout", "stderr"]),
                "x" * rng.randint(0, 5),
                rng.choice(["\n", "\r\n", ""]),
                offset,
                rng.random() < 0.1,
                raw,
            )
            events.append(Event(EventType.OUTPUT, data, "s", offset, f"e{offset}", 1.5))
        else:
            events.append(Event(EventType.STATUS, Status("ok"), "s", offset, f"e{offset}", 2.0))
    rows = WireEvents("s", [orjson.loads(event_to_json(e)) for e in events])
    assert list(rows) == events
    plain = [e for e in events if e.type is EventType.OUTPUT and e.data.raw is None]
    assert rows.others() == [e for e in events if e not in plain]
    shown: list[tuple[str, bytes]] = []
    for part in rows.terminal():
        assert isinstance(part, tuple) or part not in plain
        shown.extend([part] if isinstance(part, tuple) else terminal_bytes([part]))
    assert merged(shown) == merged(terminal_bytes(events))


async def test_follow_gets_history_live_and_stops_at_the_end(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 2)
    texts = []
    async with follow_stream(served.urls[0], "s", after=0) as events:
        await http.post("/api/streams/s/events", json=[output("live")])
        await http.post(
            "/api/streams/s/events", json={"type": "session_ended", "data": {"exit_status": 0}}
        )
        with trio.fail_after(5):
            async for event in events:
                texts.append(getattr(event.data, "text", event.type.value))
    assert texts == ["line 1", "live", "session_ended"]


async def test_follow_over_a_unix_socket(start_hub: StartHub, tmp_path: Path) -> None:
    path = tmp_path / "hub.sock"
    served = await start_hub(listen=(Listen(path=str(path)),))
    transport = httpx.AsyncHTTPTransport(uds=str(path))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
        await create(http, "u", 3)
        await http.post(
            "/api/streams/u/events", json={"type": "session_ended", "data": {"exit_status": 0}}
        )
    async with follow_stream(f"unix:{path}", "u") as events:
        offsets = [event.offset async for event in events]
    assert offsets == [0, 1, 2, 3]
    del served


async def test_follow_resumes_after_a_slow_consumer_cut_without_gap(
    start_hub: StartHub,
) -> None:
    served = await start_hub(client_queue=150)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        await create(http, "s")
        offsets = []
        async with follow_stream(served.urls[0], "s", buffer=1) as events:
            # 8 MB while the follower reads nothing: more than the kernel's buffers of
            # the connection take, so the hub has to queue, and cut it.
            for _ in range(40):
                await http.post("/api/streams/s/events", json=[output("x" * 2000)] * 100)
            await http.post(
                "/api/streams/s/events",
                json={"type": "session_ended", "data": {"exit_status": 0}},
            )
            with trio.fail_after(10):
                async for event in events:
                    offsets.append(event.offset)
                    await trio.sleep(0)
        assert offsets == list(range(4001))
        assert served.hub.broker.slow_consumers >= 1


async def test_unknown_stream_and_bad_token_raise_hub_client_errors(
    start_hub: StartHub,
) -> None:
    from trio_stream.hub.config import TokenSpec

    served = await start_hub(tokens=(TokenSpec("good-token-1"),))
    with pytest.raises(HubClientError) as refused:
        async with follow_stream(served.urls[0], "nope", token="good-token-1") as events:
            async for _ in events:
                pass
    assert refused.value.code == "not_found"
    with pytest.raises(HubClientError) as refused:
        async with follow_stream(served.urls[0], "nope", token="bad-token-1") as events:
            async for _ in events:
                pass
    assert refused.value.code == "unauthorized"


def _placed(texts: list[str], first: int) -> list:
    from trio_stream.events import Event, EventType, Output

    return [
        Event(EventType.OUTPUT, Output("stdout", text)).with_offset("p", first + i)
        for i, text in enumerate(texts)
    ]


async def test_publisher_creates_the_stream_and_resumes_without_duplicates(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    from trio_stream.client import open_publisher
    from trio_stream.events import Event, EventType, Status

    sent = _placed(["a", "b", "c"], 0)
    async with open_publisher(served.urls[0], "p") as hub:
        assert hub.last_offset == -1
        ack = await hub.publish(sent[:2])
        assert (ack.accepted, ack.first_offset, ack.last_offset) == (2, 0, 1)
    # A reconnecting publisher learns where the hub is, and a resend is harmless.
    async with open_publisher(served.urls[0], "p", create=False) as hub:
        assert hub.last_offset == 1
        ack = await hub.publish(sent)
        assert (ack.accepted, ack.duplicates, hub.last_offset) == (1, 2, 2)
        with pytest.raises(HubClientError) as refused:
            await hub.publish(_placed(["z"], 9))
        assert refused.value.code == "offset_gap" and refused.value.last_offset == 2
        ack = await hub.publish([Event(EventType.STATUS, Status("appended"))])
        assert ack.first_offset == 3
    history = (await http.get("/api/streams/p/history")).json()["events"]
    assert [e["offset"] for e in history] == [0, 1, 2, 3]


async def test_publisher_without_create_needs_the_stream(served: ServedHub) -> None:
    from trio_stream.client import open_publisher

    with pytest.raises(HubClientError) as refused:
        async with open_publisher(served.urls[0], "missing", create=False):
            pass
    assert refused.value.code == "not_found"


async def test_a_hub_shutting_down_closes_its_publishers_with_1001(served: ServedHub) -> None:
    with trio.fail_after(5):
        async with open_publisher(served.urls[0], "p") as hub:
            served.shutdown()
            with pytest.raises(ConnectionClosed) as closed:
                # Until the shutdown reaches the broker, publishing still works.
                while True:
                    await hub.publish_encoded([b'{"type":"status","data":{"status":"s"}}'])
                    await trio.sleep(0.01)
    assert closed.value.reason is not None
    assert (closed.value.reason.code, closed.value.reason.reason) == (1001, "shutdown")


async def test_a_publisher_back_at_a_stream_whose_end_was_not_noted_gets_it_noted(
    served: ServedHub, store: MemoryStore
) -> None:
    await store.create_session(SessionInfo("cut", status=SessionStatus.INTERRUPTED))
    events = [
        Event(EventType.OUTPUT, Output("stdout", "done")),
        Event(EventType.SESSION_ENDED, SessionEnded(3)),
    ]
    await store.append("cut", [e.with_offset("cut", i) for i, e in enumerate(events)])
    async with open_publisher(served.urls[0], "cut") as hub:
        assert (hub.last_offset, hub.status) == (1, "failed")
    info = await store.get_session("cut")
    assert (info.status, info.exit_status) == (SessionStatus.FAILED, 3)
