"""SSE: the sans-IO framing and parser, and the route with httpx and ``curl -N``."""

from __future__ import annotations

import shutil

import httpx
import orjson
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_stream.hub.errors import ProtocolError
from trio_stream.hub.params import parse_offset
from trio_stream.hub.server import ServedHub
from trio_stream.hub.sse import SSEParser, sse_comment, sse_event, sse_retry

from .conftest import StartHub, create, create_mixed, output

# -- framing and parsing -----------------------------------------------------------------


def test_event_frames_id_event_and_each_data_line() -> None:
    assert sse_event(b"a\nb", event="x", id=7) == b"id: 7\nevent: x\ndata: a\ndata: b\n\n"
    assert sse_event(b"{}") == b"data: {}\n\n"


def test_comment_and_retry() -> None:
    assert sse_comment("hello\nthere") == b": hello\n: there\n\n"
    assert sse_retry(1500) == b"retry: 1500\n\n"


def test_parser_reads_what_the_framer_writes() -> None:
    parser = SSEParser()
    data = sse_comment("hi") + sse_retry(10) + sse_event(b"x\ny", event="e", id="3")
    (message,) = parser.feed(data)
    assert (message.event, message.data, message.id) == ("e", "x\ny", "3")
    assert parser.retry == 10 and parser.comments == ["hi"] and parser.last_id == "3"


def test_parser_follows_the_whatwg_rules() -> None:
    parser = SSEParser()
    messages = parser.feed(b"data:no space\r\nid\r\n\r\nevent: only\n\ndata: last\rdata: x\r\r\n")
    assert [(m.event, m.data, m.id) for m in messages] == [
        ("message", "no space", ""),
        ("message", "last\nx", ""),
    ]


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_parser_gives_the_same_events_however_bytes_are_chunked(cuts: list[int]) -> None:
    data = (
        b"".join(sse_event(orjson.dumps({"n": i}), event="stream_event", id=i) for i in range(5))
        + b": c\r\n\r\ndata: crlf\r\n\r\n"
    )
    expected = SSEParser().feed(data)
    parser = SSEParser()
    got = []
    position = 0
    for cut in cuts:
        got.extend(parser.feed(data[position : position + cut]))
        position += cut
    got.extend(parser.feed(data[position:]))
    assert got == expected and len(expected) == 6


@pytest.mark.parametrize(("text", "offset"), [("0", 0), (" 42 ", 42), ("-1", -1)])
def test_parse_offset_accepts_bare_offsets(text: str, offset: int) -> None:
    assert parse_offset(text, "Last-Event-ID") == offset


@pytest.mark.parametrize("text", ["", "x", "-2", "1.5", "١٢", "9" * 30])
def test_parse_offset_refuses_the_rest_naming_the_field(text: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_offset(text, "Last-Event-ID")
    assert refused.value.code == "bad_offset" and "Last-Event-ID" in refused.value.message


# -- the route ---------------------------------------------------------------------------


async def _read_sse(response: httpx.Response, until: str) -> list:
    parser = SSEParser()
    messages = []
    with trio.fail_after(5):
        async for chunk in response.aiter_bytes():
            messages.extend(parser.feed(chunk))
            if any(m.event == until for m in messages):
                return messages
    return messages


async def test_sse_headers_history_live_and_end(served: ServedHub, http: httpx.AsyncClient) -> None:
    await create(http, "s", 3)
    async with http.stream("GET", "/api/streams/s/sse?lastEventId=0") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        await http.post("/api/streams/s/events", json=[output("line 3")])
        await http.post(
            "/api/streams/s/events", json={"type": "session_ended", "data": {"exit_status": 0}}
        )
        messages = await _read_sse(response, "end")
    events = [m for m in messages if m.event == "stream_event"]
    assert [m.id for m in events] == ["1", "2", "3", "4"]
    assert orjson.loads(events[0].data)["data"]["text"] == "line 1"
    assert orjson.loads(messages[-1].data) == {
        "code": "stream_ended",
        "message": "the stream ended",
        "lastOffset": 4,
    }
    # Reconnecting after the end is answered 204, so EventSource stops for good.
    answer = await http.get("/api/streams/s/sse", headers={"Last-Event-ID": "4"})
    assert answer.status_code == 204
    # So is a first connection to an ended stream that asks for no history.
    assert (await http.get("/api/streams/s/sse")).status_code == 204


async def test_last_n_counts_only_the_events_the_filters_pass(http: httpx.AsyncClient) -> None:
    await create_mixed(http, "s", 10)
    await http.post(
        "/api/streams/s/events", json={"type": "session_ended", "data": {"exit_status": 0}}
    )
    answer = await http.get("/api/streams/s/sse?lastN=2&eventTypes=output")
    ids = [m.id for m in SSEParser().feed(answer.content) if m.event == "stream_event"]
    assert ids == ["6", "8"]


async def test_last_event_id_header_wins_over_the_query(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 4)
    await http.post(
        "/api/streams/s/events", json={"type": "session_ended", "data": {"exit_status": 0}}
    )
    answer = await http.get("/api/streams/s/sse?lastEventId=0", headers={"Last-Event-ID": "2"})
    parser = SSEParser()
    ids = [m.id for m in parser.feed(answer.content) if m.event == "stream_event"]
    assert ids == ["3", "4"]


async def test_lost_history_sends_a_notice_then_what_remains(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 2)
    await http.post(
        "/api/streams/s/events", json={"type": "session_ended", "data": {"exit_status": 1}}
    )
    answer = await http.get("/api/streams/s/sse?lastEventId=1&epoch=gone")
    messages = SSEParser().feed(answer.content)
    assert messages[0].event == "notice"
    assert orjson.loads(messages[0].data)["code"] == "history_lost"
    assert [m.id for m in messages if m.event == "stream_event"] == ["0", "1", "2"]


async def test_heartbeat_carries_time_and_clients(start_hub: StartHub) -> None:
    served = await start_hub(heartbeat=0.05)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        await create(http, "s")
        async with http.stream("GET", "/api/streams/s/sse") as response:
            messages = await _read_sse(response, "heartbeat")
    beat = orjson.loads(next(m for m in messages if m.event == "heartbeat").data)
    assert beat["clients"] == 1 and beat["time"] > 0


async def test_bad_cursor_and_filters_are_400(served: ServedHub, http: httpx.AsyncClient) -> None:
    await create(http, "s")
    answer = await http.get("/api/streams/s/sse", headers={"Last-Event-ID": "abc"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_offset"
    answer = await http.get("/api/streams/s/sse?eventTypes=bogus")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_filter"
    assert (await http.get("/api/streams/none/sse")).status_code == 404


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_follows_a_stream_live(served: ServedHub, http: httpx.AsyncClient) -> None:
    await create(http, "s", 1)
    url = served.urls[0] + "/api/streams/s/sse?lastEventId=-1"
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            lambda task_status: trio.run_process(
                ["curl", "-sN", url],
                stdout=subprocess_pipe(),
                task_status=task_status,
                check=False,
            )
        )
        parser = SSEParser()
        messages = []
        with trio.fail_after(5):
            while not any(m.event == "stream_event" for m in messages):
                messages.extend(parser.feed(await process.stdout.receive_some()))
            assert parser.comments and parser.comments[0].startswith("stream s client")
            await http.post("/api/streams/s/events", json=[output("live!")])
            await http.post(
                "/api/streams/s/events", json={"type": "session_ended", "data": {"exit_status": 0}}
            )
            while not any(m.event == "end" for m in messages):
                chunk = await process.stdout.receive_some()
                assert chunk
                messages.extend(parser.feed(chunk))
            await process.wait()
    texts = [
        orjson.loads(m.data)["data"].get("text") for m in messages if m.event == "stream_event"
    ]
    assert texts == ["line 0", "live!", None]
    assert process.returncode == 0


def subprocess_pipe() -> int:
    import subprocess

    return subprocess.PIPE


async def test_slow_sse_client_is_cut_with_an_error_naming_its_last_offset(
    start_hub: StartHub,
) -> None:
    import socket

    served = await start_hub(client_queue=300, write_timeout=30)
    async with httpx.AsyncClient(base_url=served.urls[0], timeout=10) as http:
        await create(http, "s")
        address = served.addresses[0]
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((address.host, address.port))
        slow = trio.SocketStream(sock)
        await slow.send_all(
            b"GET /api/streams/s/sse?lastEventId=-1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        with trio.fail_after(5):
            while not (await http.get("/api/streams/s/clients")).json()["clients"]:
                await trio.sleep(0.01)
        for _ in range(20):
            await http.post("/api/streams/s/events", json=[output("x" * 4000)] * 100)
        data = b""
        with trio.fail_after(10):
            # Everything it was sent, then the error, then the end of the chunked body.
            while not data.endswith(b"\r\n0\r\n\r\n"):
                chunk = await slow.receive_some(1 << 16)
                assert chunk
                data += chunk
        await slow.aclose()
    body = data.partition(b"\r\n\r\n")[2]
    # The body is chunked: SSEParser skips the chunk-size lines, which are not fields.
    messages = SSEParser().feed(body)
    ids = [int(m.id) for m in messages if m.event == "stream_event"]
    error = orjson.loads(next(m.data for m in messages if m.event == "error"))
    assert error["code"] == "slow_consumer"
    assert ids == list(range(len(ids))) and len(ids) < 2000
    assert error["lastOffset"] == ids[-1]


async def test_last_n_has_the_websocket_bound(served: ServedHub, http: httpx.AsyncClient) -> None:
    await create(http, "s", 1)
    answer = await http.get("/api/streams/s/sse?lastN=100001")
    assert answer.status_code == 400
    assert answer.json()["error"] == {"code": "bad_replay", "message": "lastN: at most 100000"}
