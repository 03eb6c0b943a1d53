"""Hostile input and faults never stop the hub: documents over the limits are refused where
they enter, and a stream whose task fails cuts its own clients only."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from trio_stream.hub import streams as hub_streams
from trio_stream.hub.server import ServedHub
from trio_stream.hub.sse import SSEParser
from trio_stream.limits import MAX_DEPTH

from .conftest import create, output, receive, receive_until, ws_url


def nested(depth: int) -> Any:
    """An object nested ``depth`` levels deep (``{}`` is one level)."""
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def deep_custom(depth: int) -> dict[str, Any]:
    return {"type": "custom", "data": {"name": "deep", "payload": nested(depth)}}


def deep_json(depth: int) -> bytes:
    """``deep_custom`` as JSON, built as text (orjson refuses to write it)."""
    body = '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)
    return ('[{"type":"custom","data":{"name":"deep","payload":' + body + "}}]").encode()


async def subscribe(ws: Any, sid: str) -> None:
    await receive(ws)  # connection_ack
    await ws.send_message(orjson.dumps({"type": "subscribe", "streamId": sid}).decode())
    assert (await receive(ws))["type"] == "subscribed"


async def test_the_deep_document_of_the_crash_report_is_refused_and_the_hub_serves_on(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "d")
    async with open_websocket_url(ws_url(served, "/api/streams/d/ws")) as ws:
        await subscribe(ws, "d")
        answer = await http.post(
            "/api/streams/d/events",
            content=deep_json(400),
            headers={"content-type": "application/json"},
        )
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["code"] == "invalid_event"
        assert error["message"] == (
            f"events[0].data.payload: nested deeper than {MAX_DEPTH} levels"
        )
        # The subscriber of the same stream keeps receiving.
        answer = await http.post("/api/streams/d/events", json=[output("after")])
        assert answer.status_code == 200 and answer.json()["firstOffset"] == 0
        message = await receive(ws)
        assert [e["data"]["text"] for e in message["events"]] == ["after"]
    assert (await http.get("/healthz")).status_code == 200


async def test_a_document_at_the_nesting_limit_is_kept_and_served_whole(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "d")
    answer = await http.post(
        "/api/streams/d/events",
        content=deep_json(MAX_DEPTH),
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    history = (await http.get("/api/streams/d/history")).json()["events"]
    assert history[0]["data"]["payload"] == nested(MAX_DEPTH)


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        (
            {"name": "n", "value": nested(MAX_DEPTH + 1)},
            "value",
            f"nested deeper than {MAX_DEPTH} levels",
        ),
        ({"name": "n", "value": [0] * 1_000_001}, "value", "more than 1000000 values"),
    ],
)
async def test_variable_values_over_a_limit_are_refused_naming_the_field(
    served: ServedHub, http: httpx.AsyncClient, data: dict[str, Any], field: str, problem: str
) -> None:
    await create(http, "v")
    body = orjson.dumps([output("ok"), {"type": "variable_update", "data": data}])
    answer = await http.post(
        "/api/streams/v/events", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["errors"] == [f"events[1].data.{field}: {problem}"]
    # Nothing of a refused request is kept.
    assert (await http.get("/api/streams/v")).json()["lastOffset"] == -1


async def test_the_publishing_websocket_answers_a_deep_event_with_an_error_and_goes_on(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "p")
    async with open_websocket_url(ws_url(served, "/api/streams/p/publish")) as pub:
        await receive(pub)
        await pub.send_message(deep_json(MAX_DEPTH + 50).decode())
        refused = await receive(pub)
        assert refused["type"] == "error" and refused["code"] == "invalid_event"
        assert "nested deeper than 200 levels" in refused["message"]
        await pub.send_message(orjson.dumps([output("fine")]).decode())
        assert (await receive(pub))["lastOffset"] == 0


async def test_a_deep_client_message_gets_an_error_frame_and_the_connection_stays(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "m", 1)
    async with open_websocket_url(ws_url(served, "/api/streams/m/ws")) as ws:
        await receive(ws)
        deep = '{"type":"ping","id":' + "[" * 300 + "]" * 300 + "}"
        await ws.send_message(deep)
        refused = await receive(ws)
        assert refused["type"] == "error" and refused["code"] == "invalid_message"
        assert "nested deeper than 200 levels" in refused["message"]
        await ws.send_message(orjson.dumps({"type": "ping", "id": "p1"}).decode())
        assert (await receive(ws))["type"] == "pong"


async def test_a_failing_fan_out_cuts_its_own_clients_only_and_the_stream_reopens(
    served: ServedHub,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await create(http, "bad")
    await create(http, "good")
    real_frames_of = hub_streams.frames_of

    def frames_of(events: Any) -> Any:
        if any(e.session == "bad" and getattr(e.data, "text", "") == "boom" for e in events):
            raise RuntimeError("injected fan-out failure")
        return real_frames_of(events)

    monkeypatch.setattr(hub_streams, "frames_of", frames_of)
    async with (
        open_websocket_url(ws_url(served, "/api/streams/bad/ws")) as bad_ws,
        open_websocket_url(ws_url(served, "/api/streams/good/ws")) as good_ws,
        http.stream("GET", "/api/streams/bad/sse") as bad_sse,
    ):
        await subscribe(bad_ws, "bad")
        await subscribe(good_ws, "good")
        with caplog.at_level(logging.ERROR, logger="trio_stream.hub"):
            answer = await http.post("/api/streams/bad/events", json=[output("boom")])
            assert answer.status_code == 200
            # The WebSocket client of the failed stream gets an error frame, then the close.
            error = (await receive_until(bad_ws, "error"))[-1]
            assert error["code"] == "internal"
            with pytest.raises(ConnectionClosed) as closed:
                await receive(bad_ws)
            assert closed.value.reason.code == 1011
            # So does its SSE client, as an ``error`` event.
            parser = SSEParser()
            messages: list[Any] = []
            with trio.fail_after(5):
                async for chunk in bad_sse.aiter_bytes():
                    messages.extend(parser.feed(chunk))
                    if any(m.event == "error" for m in messages):
                        break
            sse_error = next(m for m in messages if m.event == "error")
            assert orjson.loads(sse_error.data)["code"] == "internal"
        failures = [r for r in caplog.records if "failed" in r.getMessage()]
        assert len(failures) == 1 and failures[0].exc_info is not None
        # Every other stream and the REST API go on.
        answer = await http.post("/api/streams/good/events", json=[output("still here")])
        assert answer.status_code == 200
        message = await receive(good_ws)
        assert [e["data"]["text"] for e in message["events"]] == ["still here"]
        assert (await http.get("/api/streams")).status_code == 200
    # The failed stream kept what it had accepted and reopens for its publisher.
    monkeypatch.setattr(hub_streams, "frames_of", real_frames_of)
    with trio.fail_after(5):
        while True:
            answer = await http.post("/api/streams/bad/events", json=[output("again", offset=1)])
            if answer.status_code != 503:
                break
            await trio.sleep(0.01)
    assert answer.status_code == 200, answer.text
    history = (await http.get("/api/streams/bad/history")).json()["events"]
    assert [(e["offset"], e["data"]["text"]) for e in history] == [(0, "boom"), (1, "again")]
    async with open_websocket_url(ws_url(served, "/api/streams/bad/ws?after=-1")) as ws:
        texts = []
        for message in await receive_until(ws, "event"):
            if message["type"] == "event":
                texts += [e["data"]["text"] for e in message["events"]]
        assert texts == ["boom", "again"]
