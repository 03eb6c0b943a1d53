"""The REST API over a real Hypercorn: streams, publishing, history, stats, metrics."""

from __future__ import annotations

import gzip
import time
from collections.abc import Awaitable

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from trio_stream.hub.server import ServedHub

from .conftest import create, create_mixed, output, receive_until, ws_url


async def test_healthz(http: httpx.AsyncClient) -> None:
    answer = await http.get("/healthz")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"


async def test_create_get_list_and_delete_a_stream(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/api/streams",
        json={"id": "build-1", "workflowSessionId": "wf", "config": {"maxClients": 2}},
    )
    assert answer.status_code == 201
    assert answer.headers["location"] == "/api/streams/build-1"
    body = answer.json()
    assert body["id"] == "build-1" and body["status"] == "running" and body["live"] is True
    assert body["workflowSessionId"] == "wf" and body["config"]["maxClients"] == 2
    generated = (await http.post("/api/streams", json={})).json()["id"]
    listed = (await http.get("/api/streams")).json()["streams"]
    assert {s["id"] for s in listed} == {"build-1", generated}
    assert (await http.get("/api/streams/build-1")).json()["lastOffset"] == -1
    assert (await http.post("/api/streams", json={"id": "build-1"})).status_code == 409
    deleted = await http.delete("/api/streams/build-1")
    assert deleted.json() == {"deleted": "build-1"}
    assert (await http.get("/api/streams/build-1")).status_code == 404
    assert (await http.delete("/api/streams/build-1")).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"id": "has space"}, 400, "invalid session id"),
        ({"id": "metrics"}, 400, "reserved"),
        ({"id": 5}, 400, "id"),
        ({"colour": "red"}, 400, "colour"),
        ({"config": []}, 400, "config"),
        ({"config": {"a": 1}}, 400, "config.a"),
        ({"workflowSessionId": 1}, 400, "workflowSessionId"),
        ([], 400, "object"),
    ],
)
async def test_create_refuses_bad_bodies(
    http: httpx.AsyncClient, body: object, status: int, names: str
) -> None:
    answer = await http.post("/api/streams", json=body)
    assert answer.status_code == status
    assert names in answer.json()["error"]["message"]


async def test_bad_json_and_content_type_are_refused(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/api/streams", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "malformed_json"
    answer = await http.post("/api/streams", content=b"{}", headers={"Content-Type": "text/plain"})
    assert answer.status_code == 400 and "Content-Type" in answer.json()["error"]["message"]


async def test_body_over_the_limit_is_413(start_hub) -> None:
    served = await start_hub(max_body_size=1000)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        await create(http, "s")
        answer = await http.post("/api/streams/s/events", json=[output("x" * 2000)])
    assert answer.status_code == 413 and answer.json()["error"]["code"]


async def test_publish_one_or_a_batch(http: httpx.AsyncClient) -> None:
    await create(http, "s")
    one = await http.post("/api/streams/s/events", json=output("a"))
    assert one.json() == {"accepted": 1, "duplicates": 0, "firstOffset": 0, "lastOffset": 0}
    many = await http.post("/api/streams/s/events", json=[output("b"), output("c")])
    assert many.json() == {"accepted": 2, "duplicates": 0, "firstOffset": 1, "lastOffset": 2}


async def test_publish_validates_every_event_and_names_the_field(http: httpx.AsyncClient) -> None:
    await create(http, "s")
    answer = await http.post(
        "/api/streams/s/events",
        json=[
            output("ok"),
            {"type": "output", "data": {"source": "stdin", "text": 1}},
            {"type": "warp"},
            {"type": "status", "data": {}, "session": "other"},
        ],
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_event"
    joined = " ".join(error["errors"])
    assert "events[1].data.source" in joined and "events[1].data.text" in joined
    assert "events[2].type" in joined and "events[3].data.status" in joined
    # Nothing of a refused batch is published.
    assert (await http.get("/api/streams/s")).json()["lastOffset"] == -1
    assert (await http.post("/api/streams/s/events", json=[])).status_code == 400
    assert (await http.post("/api/streams/nope/events", json=output("x"))).status_code == 404


async def test_publishing_with_offsets_is_idempotent(http: httpx.AsyncClient) -> None:
    await create(http, "s")
    first = [output(f"e{i}", offset=i) for i in range(3)]
    assert (await http.post("/api/streams/s/events", json=first)).json()["accepted"] == 3
    # A retry of the same batch plus one new event: duplicates skipped, the new one placed.
    retry = [*first, output("e3", offset=3)]
    answer = (await http.post("/api/streams/s/events", json=retry)).json()
    assert answer == {"accepted": 1, "duplicates": 3, "firstOffset": 3, "lastOffset": 3}
    gap = await http.post("/api/streams/s/events", json=[output("e9", offset=9)])
    assert gap.status_code == 409
    assert gap.json()["error"]["code"] == "offset_gap"
    assert gap.json()["error"]["lastOffset"] == 3
    history = (await http.get("/api/streams/s/history")).json()["events"]
    assert [e["data"]["text"] for e in history] == ["e0", "e1", "e2", "e3"]


async def test_session_ended_ends_the_stream(served: ServedHub, http: httpx.AsyncClient) -> None:
    await create(http, "s", 1)
    ended = {"type": "session_ended", "data": {"exit_status": 3}}
    follow = await http.post("/api/streams/s/events", json=[ended, output("after")])
    assert follow.status_code == 400 and "session_ended" in follow.json()["error"]["message"]
    assert (await http.post("/api/streams/s/events", json=ended)).status_code == 200
    info = (await http.get("/api/streams/s")).json()
    assert info["status"] == "failed" and info["exitStatus"] == 3 and info["live"] is False
    late = await http.post("/api/streams/s/events", json=output("late"))
    assert late.status_code == 409 and late.json()["error"]["code"] == "stream_ended"
    # Ended and without clients, it left the hub's memory; the store still serves it.
    assert "s" not in served.hub.broker.streams
    assert len((await http.get("/api/streams/s/history")).json()["events"]) == 2


async def test_history_filters_paging_and_gzip(http: httpx.AsyncClient) -> None:
    await create(http, "s")
    await http.post(
        "/api/streams/s/events",
        json=[output(f"line {i}") for i in range(10)]
        + [
            {"type": "output", "data": {"source": "stderr", "text": "oops"}},
            {"type": "status", "data": {"status": "done"}},
        ],
    )
    get = http.get
    texts = lambda answer: [e["data"].get("text") for e in answer.json()["events"]]  # noqa: E731
    assert texts(await get("/api/streams/s/history?limit=2&offset=3")) == ["line 3", "line 4"]
    assert texts(await get("/api/streams/s/history?after=8&limit=2")) == ["line 9", "oops"]
    assert texts(await get("/api/streams/s/history?sources=stderr&eventTypes=output")) == ["oops"]
    assert texts(await get("/api/streams/s/history?searchText=LINE%201")) == ["line 1"]
    assert texts(await get("/api/streams/s/history?pattern=%5E(line%20[12])$")) == [
        "line 1",
        "line 2",
    ]
    answer = await get("/api/streams/s/history?eventTypes=status")
    assert answer.json()["events"][0]["data"]["status"] == "done"
    assert (await get("/api/streams/s/history?limit=0")).status_code == 400
    assert (await get("/api/streams/s/history?startTime=x")).status_code == 400
    raw = await get("/api/streams/s/history", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert len(raw.json()["events"]) == 12
    async with http.stream(
        "GET", "/api/streams/s/history", headers={"Accept-Encoding": "gzip"}
    ) as stream:
        compressed = b"".join([chunk async for chunk in stream.aiter_raw()])
    assert gzip.decompress(compressed).startswith(b'{"streamId":"s"')


async def test_stats_metrics_and_prometheus(served: ServedHub, http: httpx.AsyncClient) -> None:
    await create(http, "s", 4)
    await http.post("/api/streams/s/events", json={"type": "status", "data": {"status": "x"}})
    await http.get("/api/streams/nope")
    stats = (await http.get("/api/streams/s/stats")).json()
    assert stats["eventTypes"] == {"output": 4, "status": 1} and stats["events"] == 5
    assert stats["clients"]["active"] == 0
    metrics = (await http.get("/api/streams/metrics")).json()
    assert metrics["activeStreams"] == 1 and metrics["eventsTotal"] == 5
    assert metrics["averageEventSize"] > 50 and metrics["memoryBytes"] > 1_000_000
    assert 0 < metrics["errorRate"] < 1 and metrics["uptime"] >= 0
    text = (await http.get("/metrics")).text
    assert "# TYPE tstream_hub_events_total counter" in text
    assert "tstream_hub_events_total 5" in text
    assert 'tstream_hub_responses_total{status="404"} 1' in text


async def test_unknown_routes_and_methods_are_json_errors(http: httpx.AsyncClient) -> None:
    answer = await http.get("/api/nothing")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    answer = await http.put("/api/streams")
    assert answer.status_code == 405 and "error" in answer.json()


async def test_history_pattern_pages_through_the_store(http: httpx.AsyncClient) -> None:
    await create(http, "s")
    lines = [output(f"tick {i}" if i % 1000 else f"boom {i}") for i in range(2500)]
    await http.post("/api/streams/s/events", json=lines)
    found = await http.get("/api/streams/s/history?pattern=%5Eboom&limit=5")
    assert [e["data"]["text"] for e in found.json()["events"]] == [
        "boom 0",
        "boom 1000",
        "boom 2000",
    ]
    paged = await http.get("/api/streams/s/history?pattern=%5Eboom&limit=1&offset=1")
    assert [e["data"]["text"] for e in paged.json()["events"]] == ["boom 1000"]


async def test_history_and_a_live_subscriber_search_the_same_first_64_kib(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    long = "x" * (64 * 1024)
    url = ws_url(served, "/api/streams/s/ws?after=-1&searchText=needle")
    async with open_websocket_url(url, max_message_size=1 << 20) as ws:
        await receive_until(ws, "subscribed")
        published = [
            output(long + "needle"),
            output("needle" + long),
            {"type": "status", "data": {"status": long + "needle"}},
            {"type": "status", "data": {"status": "needle " + long}},
            output("done"),
        ]
        answer = await http.post("/api/streams/s/events", json=published)
        assert answer.status_code == 200, answer.text
        live = [e["offset"] for e in (await receive_until(ws, "event"))[-1]["events"]]
    stream = served.hub.broker.streams["s"]
    await stream.wait_recorded(stream.last_offset)
    # Read back from the store: the store's matcher decides, not the fan-out's.
    history = (await http.get("/api/streams/s/history?searchText=NEEDLE")).json()
    assert [e["offset"] for e in history["events"]] == live == [1, 3]


@pytest.mark.parametrize(
    ("query", "offsets"),
    [
        ("lastN=2&eventTypes=status", [7, 9]),
        ("lastN=2&pattern=%5Eline", [6, 8]),
        ("lastN=3&pattern=line%20%5B0-3%5D&eventTypes=output", [0, 2]),
        ("lastN=3&pattern=line&offset=1&limit=1", [6]),
        ("lastN=2&after=5&eventTypes=output", [6, 8]),
    ],
)
async def test_history_last_n_counts_only_the_events_the_filters_pass(
    http: httpx.AsyncClient, query: str, offsets: list[int]
) -> None:
    await create_mixed(http, "s", 10)
    history = (await http.get(f"/api/streams/s/history?{query}")).json()
    assert [e["offset"] for e in history["events"]] == offsets


async def test_stats_report_client_activity_over_the_time_window(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 3)
    before = time.time()
    url = ws_url(served, "/api/streams/s/ws?after=-1")
    async with open_websocket_url(url) as ws:
        await receive_until(ws, "event")
    async with open_websocket_url(url) as ws:
        ack = await receive_until(ws, "event")
        await http.delete(f"/api/streams/s/clients/{ack[0]['clientId']}")
        await receive_until(ws, "error")
    with trio.fail_after(5):
        await served.hub.broker.wait_no_clients()
    between = time.time()
    async with open_websocket_url(url) as ws:
        await receive_until(ws, "event")

        def activity(query: str) -> Awaitable[httpx.Response]:
            return http.get(f"/api/streams/s/stats?{query}")

        everything = (await activity(f"startTime={before}")).json()["clientActivity"]
        assert everything["connectionsOpened"] == 3
        assert everything["activeInWindow"] == 3
        assert everything["activeInWindowByType"] == {"websocket": 3}
        assert everything["disconnections"] == {"client_left": 1, "disconnected": 1}
        assert everything["eventsSent"] == 9 and everything["bytesSent"] > 9 * 50
        later = (await activity(f"startTime={between}")).json()["clientActivity"]
        assert (later["connectionsOpened"], later["activeInWindow"]) == (1, 1)
        assert later["disconnections"] == {}
        earlier = (await activity(f"endTime={before}")).json()["clientActivity"]
        assert (earlier["connectionsOpened"], earlier["activeInWindow"]) == (0, 0)
        assert (await activity("")).json()["clientActivity"]["connectionsOpened"] == 3


async def test_client_activity_outlives_an_ended_stream_and_goes_with_a_deleted_one(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 1)
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws?after=-1")) as ws:
        await receive_until(ws, "event")
        ended = {"type": "session_ended", "data": {"exit_status": 0}}
        await http.post("/api/streams/s/events", json=ended)
        await receive_until(ws, "end")
    with trio.fail_after(5):
        await served.hub.broker.wait_no_clients()
    activity = (await http.get("/api/streams/s/stats")).json()["clientActivity"]
    assert activity["connectionsOpened"] == 1
    assert activity["disconnections"] == {"stream_ended": 1}
    assert (await http.delete("/api/streams/s")).status_code == 200
    await create(http, "s")
    activity = (await http.get("/api/streams/s/stats")).json()["clientActivity"]
    assert activity["connectionsOpened"] == 0 and activity["recordedSince"] is None
