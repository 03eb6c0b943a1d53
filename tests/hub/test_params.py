"""What clients send is taken or refused the same way on every transport: ``lastN``'s
bound, times (no NaN, no infinity, years 1 to 9999), the store ``epoch`` sent back."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from trio_websocket import ConnectionRejected, open_websocket_url

from trio_stream.hub.params import LIMITS
from trio_stream.hub.server import ServedHub

from .conftest import create, receive, ws_url

Error = dict[str, Any] | None


@pytest.fixture
async def ended(http: httpx.AsyncClient) -> str:
    """A stream of three lines and its end: every answer about it ends."""
    await create(http, "s", 3)
    ended = {"type": "session_ended", "data": {"exit_status": 0}}
    assert (await http.post("/api/streams/s/events", json=ended)).status_code == 200
    return "s"


async def query_error(
    served: ServedHub, http: httpx.AsyncClient, route: str, params: dict[str, str]
) -> Error:
    """The error ``route`` of stream ``s`` answers a query with (None: it was taken)."""
    if route == "ws":
        url = ws_url(served, "/api/streams/s/ws?" + urlencode(params))
        try:
            async with open_websocket_url(url) as ws:
                assert (await receive(ws))["type"] == "connection_ack"
        except ConnectionRejected as refused:
            assert refused.status_code == 400 and refused.body is not None
            return orjson.loads(refused.body)["error"]  # type: ignore[no-any-return]
        return None
    answer = await http.get(f"/api/streams/s/{route}", params=params)
    if answer.status_code == 400:
        return answer.json()["error"]  # type: ignore[no-any-return]
    assert answer.status_code in (200, 204), answer.text
    return None


async def message_error(served: ServedHub, message: dict[str, Any]) -> Error:
    """The error frame a WebSocket client's ``message`` gets (None: it was taken)."""
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
        await receive(ws)
        await ws.send_message(orjson.dumps(message).decode())
        answer = await receive(ws)
    if answer["type"] == "error":
        return answer
    assert answer["type"] in ("subscribed", "replay"), answer
    return None


async def replay_error(http: httpx.AsyncClient, body: dict[str, Any]) -> Error:
    """The 400 error ``POST …/replay/{client}`` answers ``body`` with (None: it was
    taken, and the unknown client answered 404)."""
    answer = await http.post("/api/streams/s/replay/nobody", json=body)
    if answer.status_code == 400:
        return answer.json()["error"]  # type: ignore[no-any-return]
    assert answer.status_code == 404, answer.text
    return None


async def test_last_n_has_one_bound_on_every_transport(
    served: ServedHub, http: httpx.AsyncClient, ended: str
) -> None:
    most, over = LIMITS.replay, LIMITS.replay + 1
    for route in ("history", "sse"):
        assert await query_error(served, http, route, {"lastN": str(most)}) is None
        error = await query_error(served, http, route, {"lastN": str(over)})
        assert error == {"code": "bad_replay", "message": f"lastN: at most {most}"}
    for kind in ("subscribe", "replay"):
        taken = {"type": kind, "replayOptions": {"lastN": most}}
        assert await message_error(served, taken) is None
        refused = await message_error(served, {"type": kind, "replayOptions": {"lastN": over}})
        assert refused is not None and refused["code"] == "bad_replay"
        assert refused["message"] == f"replayOptions.lastN: at most {most}"
    assert await replay_error(http, {"replayOptions": {"lastN": most}}) is None
    refused = await replay_error(http, {"replayOptions": {"lastN": over}})
    assert refused == {"code": "bad_replay", "message": f"replayOptions.lastN: at most {most}"}


BAD_TIMES = ["nan", "NaN", "inf", "-Infinity", "1e300", "-1e300", "10000-01-01T00:00:00"]


@pytest.mark.parametrize("bad", BAD_TIMES)
async def test_times_are_refused_alike_on_every_transport(
    served: ServedHub, http: httpx.AsyncClient, ended: str, bad: str
) -> None:
    for route in ("history", "poll", "sse", "ws", "stats", "export"):
        for name in ("startTime", "endTime"):
            error = await query_error(served, http, route, {name: bad})
            assert error is not None and error["code"] == "bad_filter", (route, name)
            assert f"{name}: expected" in error["message"], error
        error = await query_error(served, http, route, {"timeRange": f"0/{bad}"})
        assert error is not None and "timeRange.end: expected" in error["message"], route
    error = await query_error(served, http, "sse", {"fromTimestamp": bad})
    assert error is not None and error["code"] == "bad_replay"
    assert error["message"].startswith("fromTimestamp: expected")
    refused = await message_error(served, {"type": "subscribe", "filters": {"startTime": bad}})
    assert refused is not None and refused["code"] == "bad_filter"
    for kind in ("subscribe", "replay"):
        options = {"fromTimestamp": bad}
        refused = await message_error(served, {"type": kind, "replayOptions": options})
        assert refused is not None and refused["code"] == "bad_replay"
        assert refused["message"].startswith("replayOptions.fromTimestamp: expected")
    refused = await replay_error(http, {"replayOptions": {"fromTimestamp": bad}})
    assert refused is not None and refused["code"] == "bad_replay"


async def test_good_times_are_taken_on_every_transport(
    served: ServedHub, http: httpx.AsyncClient, ended: str
) -> None:
    for route in ("history", "poll", "sse", "ws", "stats", "export"):
        for value in ("0", "1e9", "2026-01-01T00:00:00Z", "9999-12-31T23:59:59"):
            assert await query_error(served, http, route, {"startTime": value}) is None, route
    assert await query_error(served, http, "sse", {"fromTimestamp": "1e9"}) is None
    assert await replay_error(http, {"replayOptions": {"fromTimestamp": 1e9}}) is None


async def test_an_epoch_is_checked_on_every_transport_that_takes_one(
    served: ServedHub, http: httpx.AsyncClient, ended: str
) -> None:
    most, over = "e" * LIMITS.epoch, "e" * (LIMITS.epoch + 1)
    message = f"epoch: expected a string of at most {LIMITS.epoch} characters"
    for route, cursor in (("sse", "lastEventId"), ("poll", "after"), ("ws", "after")):
        # Another epoch than the store's is taken: what remains is sent, not recovered.
        assert await query_error(served, http, route, {cursor: "0", "epoch": most}) is None
        error = await query_error(served, http, route, {cursor: "0", "epoch": over})
        assert error == {"code": "bad_replay", "message": message}, route
    options = {"fromOffset": 0, "epoch": most}
    assert await message_error(served, {"type": "subscribe", "replayOptions": options}) is None
    assert await replay_error(http, {"replayOptions": options}) is None
    options = {"fromOffset": 0, "epoch": over}
    refused = await message_error(served, {"type": "subscribe", "replayOptions": options})
    assert refused is not None and refused["code"] == "bad_replay"
    assert refused["message"] == f"replayOptions.{message}"
    refused = await replay_error(http, {"replayOptions": options})
    assert refused == {"code": "bad_replay", "message": f"replayOptions.{message}"}


async def test_a_poll_from_another_epoch_starts_over(http: httpx.AsyncClient, ended: str) -> None:
    answer = (await http.get("/api/streams/s/poll", params={"after": "2", "epoch": "old"})).json()
    assert answer["recovered"] is False and [e["offset"] for e in answer["events"]] == [0, 1, 2, 3]


@pytest.mark.parametrize("text", ["x", "1.5", "--5", "²", "١٢", "9" * 5000])
async def test_integers_in_a_query_are_ascii_digits_everywhere(
    http: httpx.AsyncClient, ended: str, text: str
) -> None:
    for url, name in (
        ("/api/streams", "limit"),
        ("/api/streams", "offset"),
        ("/api/streams/s/history", "limit"),
        ("/api/streams/s/history", "offset"),
        ("/api/streams/s/history", "lastN"),
        ("/api/streams/s/poll", "limit"),
        ("/api/streams/s/sse", "lastN"),
    ):
        answer = await http.get(url, params={name: text})
        assert answer.status_code == 400, (url, name, answer.text)
        assert answer.json()["error"]["message"].startswith(f"{name}: expected an integer")
