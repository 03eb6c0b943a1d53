"""The WebSocket transport against a real Hypercorn, with trio-websocket clients."""

from __future__ import annotations

import logging
import socket

import httpx
import orjson
import pytest
import trio
import wsproto
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from trio_stream.hub.server import ServedHub

from .conftest import (
    StartHub,
    create,
    create_mixed,
    output,
    receive,
    receive_until,
    texts_until_end,
    ws_url,
)


async def test_subscribe_from_start_gets_history_then_live_then_end(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 3)
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
        ack = await receive(ws)
        assert ack["type"] == "connection_ack" and ack["lastOffset"] == 2
        assert ack["recovered"] is None and ack["epoch"] and ack["clientId"]
        await ws.send_message(
            orjson.dumps(
                {"type": "subscribe", "streamId": "s", "replayOptions": {"fromOffset": -1}}
            ).decode()
        )
        subscribed = await receive(ws)
        assert subscribed == {
            "type": "subscribed",
            "streamId": "s",
            "fromOffset": -1,
            "lastOffset": 2,
            "recovered": True,
        }
        await http.post("/api/streams/s/events", json=[output("line 3")])
        await http.post(
            "/api/streams/s/events", json={"type": "session_ended", "data": {"exit_status": 0}}
        )
        texts = await texts_until_end(ws)
        assert texts == ["line 0", "line 1", "line 2", "line 3", "session_ended"]
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason.code == 1000
        assert closed.value.reason.reason == "stream_ended"


async def test_subscribe_without_replay_starts_at_the_live_end(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 3)
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
        await receive(ws)
        await ws.send_message('{"type": "subscribe"}')
        assert (await receive(ws))["fromOffset"] == 2
        await http.post("/api/streams/s/events", json=[output("new")])
        message = await receive(ws)
        assert [e["offset"] for e in message["events"]] == [3]


async def test_resume_after_a_dropped_connection_has_no_gap_and_no_duplicate(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    seen: list[int] = []
    last = -1
    for round_ in range(3):
        await http.post("/api/streams/s/events", json=[output(f"r{round_} {i}") for i in range(7)])
        async with open_websocket_url(ws_url(served, f"/api/streams/s/ws?after={last}")) as ws:
            ack = await receive(ws)
            assert ack["recovered"] is True
            assert (await receive(ws))["type"] == "subscribed"
            while last < ack["lastOffset"]:
                message = await receive(ws)
                assert message["type"] == "event"
                seen.extend(e["offset"] for e in message["events"])
                last = seen[-1]
    assert seen == list(range(21))


async def test_filters_pass_only_matching_events(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
        await receive(ws)
        await ws.send_message(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "filters": {"eventTypes": ["output", "status"], "searchText": "ERROR"},
                }
            ).decode()
        )
        await receive(ws)
        await http.post(
            "/api/streams/s/events",
            json=[
                output("all good"),
                output("an error here"),
                {"type": "status", "data": {"status": "error-prone"}},
                {"type": "custom", "data": {"name": "error"}},
            ],
        )
        message = await receive(ws)
        assert [e["offset"] for e in message["events"]] == [1, 2]
        await ws.send_message('{"type": "filter", "filters": {"pattern": "^all"}}')
        assert (await receive(ws))["type"] == "filter_set"
        await http.post("/api/streams/s/events", json=[output("x"), output("all again")])
        message = await receive(ws)
        assert [e["data"]["text"] for e in message["events"]] == ["all again"]


async def test_replay_sends_history_frames_without_touching_the_subscription(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 5)
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
        await receive(ws)
        await ws.send_message(
            '{"type": "replay", "replayOptions": {"lastN": 2}, "filters": {"sources": ["stdout"]}}'
        )
        message = await receive(ws)
        assert message["type"] == "replay" and message["done"] is True
        assert [e["offset"] for e in message["events"]] == [3, 4]
        await ws.send_message('{"type": "replay", "replayOptions": {"fromOffset": 0}, "limit": 2}')
        message = await receive(ws)
        assert [e["offset"] for e in message["events"]] == [1, 2] and message["done"]


def replay(last_n: int, filters: dict[str, object]) -> str:
    message = {"type": "replay", "replayOptions": {"lastN": last_n}, "filters": filters}
    return orjson.dumps(message).decode()


async def replayed(ws: WebSocketConnection) -> list[int]:
    """The offsets of a replay's events, up to its ``done`` message."""
    offsets: list[int] = []
    while True:
        message = await receive(ws)
        assert message["type"] == "replay"
        offsets.extend(e["offset"] for e in message.get("events", []))
        if message["done"]:
            return offsets


@pytest.mark.parametrize("history", [10_000, 2], ids=["in-memory", "from-the-store"])
async def test_replay_last_n_counts_only_the_events_the_filters_pass(
    start_hub: StartHub, history: int
) -> None:
    served = await start_hub(history=history)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        await create_mixed(http, "s", 10)
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
        await receive(ws)
        await ws.send_message(replay(2, {"eventTypes": ["status"]}))
        assert await replayed(ws) == [7, 9]
        await ws.send_message(replay(3, {"pattern": "line [0-5]"}))
        assert await replayed(ws) == [0, 2, 4]


async def test_subscribe_with_last_n_starts_at_the_last_n_events_the_filters_pass(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create_mixed(http, "s", 10)
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
        await receive(ws)
        subscribe = {
            "type": "subscribe",
            "replayOptions": {"lastN": 3},
            "filters": {"eventTypes": ["status"]},
        }
        await ws.send_message(orjson.dumps(subscribe).decode())
        assert (await receive(ws))["fromOffset"] == 4
        await http.post("/api/streams/s/events", json={"type": "status", "data": {"status": "x"}})
        offsets: list[int] = []
        while len(offsets) < 4:
            offsets.extend(e["offset"] for e in (await receive(ws))["events"])
        assert offsets == [5, 7, 9, 10]


async def test_bad_messages_get_error_frames_and_the_connection_stays_up(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    cases = {
        "{not json": "malformed_json",
        "[1, 2]": "invalid_message",
        '{"type": "dance"}': "unknown_type",
        '{"type": "subscribe", "filters": {"eventTypes": ["nope"]}}': "bad_filter",
        '{"type": "subscribe", "filters": {"pattern": "(a+)+$"}}': "bad_filter",
        '{"type": "subscribe", "filters": {"pattern": "("}}': "bad_filter",
        '{"type": "subscribe", "replayOptions": {"fromOffset": "x"}}': "bad_replay",
        '{"type": "subscribe", "streamId": "other"}': "wrong_stream",
        '{"type": "ping", "extra": 1}': "invalid_message",
    }
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
        await receive(ws)
        for text, code in cases.items():
            await ws.send_message(text)
            message = await receive(ws)
            assert message["type"] == "error" and message["code"] == code, (text, message)
        await ws.send_message(b"\x00binary")
        assert (await receive(ws))["code"] == "invalid_message"
        await ws.send_message('{"type": "ping", "id": "still-here"}')
        pong = await receive(ws)
        assert pong["type"] == "pong" and pong["id"] == "still-here"


async def test_oversize_message_is_closed_with_1009(start_hub: StartHub) -> None:
    served = await start_hub(max_message_size=1024)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        await create(http, "s")
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
        await receive(ws)
        await ws.send_message('{"type": "ping", "id": "' + "x" * 2000 + '"}')
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.reason.code == 1009


async def _raw_ws(served: ServedHub, path: str) -> tuple[trio.SocketStream, wsproto.WSConnection]:
    """A bare WebSocket (wsproto over a socket), for what real clients refuse to send."""
    host, port = served.addresses[0].host, served.addresses[0].port
    stream = await trio.open_tcp_stream(host, port)
    conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(conn.send(Request(host="localhost", target=path)))
    for _ in range(100):
        conn.receive_data(await stream.receive_some())
        if any(isinstance(e, AcceptConnection) for e in conn.events()):
            return stream, conn
    raise AssertionError("no handshake")


async def test_invalid_utf8_is_closed_with_1007(served: ServedHub, http: httpx.AsyncClient) -> None:
    await create(http, "s")
    stream, conn = await _raw_ws(served, "/api/streams/s/ws")
    # A text frame (FIN, opcode 1), masked, carrying bytes that are not UTF-8.
    payload = b"\xff\xfe\xfd"
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    await stream.send_all(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    codes = []
    with trio.fail_after(5):
        while not codes:
            data = await stream.receive_some()
            if not data:
                break
            conn.receive_data(data)
            codes.extend(e.code for e in conn.events() if isinstance(e, CloseConnection))
    assert codes == [1007]
    await stream.aclose()


async def test_slow_consumer_is_cut_while_a_fast_one_gets_everything(
    start_hub: StartHub,
) -> None:
    served = await start_hub(client_queue=300, write_timeout=30)
    async with httpx.AsyncClient(base_url=served.urls[0], timeout=10) as http:
        await create(http, "s")
        # The slow client: a tiny receive buffer, and it does not read.
        host, port = served.addresses[0].host, served.addresses[0].port
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((host, port))
        slow = trio.SocketStream(sock)
        conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        request = Request(host="localhost", target="/api/streams/s/ws?after=-1")
        await slow.send_all(conn.send(request))
        fast_offsets: list[int] = []
        async with open_websocket_url(
            ws_url(served, "/api/streams/s/ws?after=-1"),
            max_message_size=1 << 24,
            receive_buffer_size=1 << 20,
        ) as fast:
            await receive(fast)
            await receive(fast)

            async def read_fast() -> None:
                while len(fast_offsets) < 2000:
                    message = await receive(fast)
                    fast_offsets.extend(e["offset"] for e in message["events"])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_fast)
                text = "x" * 4000
                for _ in range(20):
                    answer = await http.post(
                        "/api/streams/s/events", json=[output(text) for _ in range(100)]
                    )
                    assert answer.status_code == 200
            assert fast_offsets == list(range(2000))
        # Now the slow client reads: what it was sent, then the reason, then 4008.
        offsets: list[int] = []
        error = None
        close = None
        parts: list[str] = []
        with trio.fail_after(10):
            while close is None:
                data = await slow.receive_some(1 << 16)
                assert data
                conn.receive_data(data)
                for event in conn.events():
                    if isinstance(event, TextMessage):
                        parts.append(event.data)
                        if not event.message_finished:
                            continue
                        message = orjson.loads("".join(parts))
                        parts = []
                        if message["type"] == "event":
                            offsets.extend(e["offset"] for e in message["events"])
                        elif message["type"] == "error":
                            error = message
                    elif isinstance(event, CloseConnection):
                        close = event.code
        assert close == 4008
        assert error is not None and error["code"] == "slow_consumer"
        assert offsets == list(range(len(offsets))) and len(offsets) < 2000
        assert error["lastOffset"] == (offsets[-1] if offsets else -1)
        metrics = (await http.get("/api/streams/metrics")).json()
        assert metrics["slowConsumers"] == 1
        await slow.aclose()


async def test_operator_disconnects_a_client_with_4004(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 2)
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws?after=-1")) as ws:
        ack = await receive(ws)
        await receive_until(ws, "event")
        answer = await http.delete(f"/api/streams/s/clients/{ack['clientId']}")
        assert answer.json() == {"disconnected": ack["clientId"], "lastOffset": 1}
        error = await receive(ws)
        assert error["code"] == "disconnected" and error["lastOffset"] == 1
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.reason.code == 4004
    assert (await http.delete("/api/streams/s/clients/nobody")).status_code == 404


async def test_rest_replay_to_a_connected_client(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 4)
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
        ack = await receive(ws)
        answer = await http.post(
            f"/api/streams/s/replay/{ack['clientId']}", json={"replayOptions": {"fromOffset": 1}}
        )
        assert answer.status_code == 202
        message = await receive(ws)
        assert message["type"] == "replay" and [e["offset"] for e in message["events"]] == [2, 3]


async def test_unknown_stream_is_refused_before_the_handshake(served: ServedHub) -> None:
    with pytest.raises(Exception) as refused:
        async with open_websocket_url(ws_url(served, "/api/streams/nope/ws")):
            pass
    assert "404" in str(refused.value)


async def test_resume_from_a_lost_epoch_says_not_recovered_and_sends_what_remains(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 3)
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws?after=1&epoch=old")) as ws:
        ack = await receive(ws)
        assert ack["recovered"] is False
        subscribed = await receive(ws)
        assert subscribed["recovered"] is False and subscribed["fromOffset"] == -1
        message = await receive(ws)
        assert [e["offset"] for e in message["events"]] == [0, 1, 2]
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws?after=99")) as ws:
        assert (await receive(ws))["recovered"] is False


async def test_unix_socket_serves_websocket_and_rest(start_hub: StartHub, tmp_path) -> None:
    from trio_websocket import wrap_client_stream

    from trio_stream.hub.config import Listen

    path = tmp_path / "run" / "hub.sock"
    served = await start_hub(listen=(Listen(path=str(path)),))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    transport = httpx.AsyncHTTPTransport(uds=str(path))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
        await create(http, "u", 2)
    async with trio.open_nursery() as nursery:
        stream = await trio.open_unix_socket(str(path))
        ws = await wrap_client_stream(nursery, stream, "hub", "/api/streams/u/ws?after=-1")
        assert (await receive(ws))["lastOffset"] == 1
        await receive(ws)
        message = await receive(ws)
        assert [e["data"]["text"] for e in message["events"]] == ["line 0", "line 1"]
        await ws.aclose()
    del served


async def test_publisher_websocket_acks_in_order_and_is_idempotent(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    async with open_websocket_url(ws_url(served, "/api/streams/s/publish")) as pub:
        ack = await receive(pub)
        assert ack["type"] == "connection_ack" and ack["lastOffset"] == -1
        await pub.send_message(orjson.dumps([output("a", offset=0), output("b", offset=1)]))
        assert (await receive(pub)) == {
            "type": "ack",
            "accepted": 2,
            "duplicates": 0,
            "firstOffset": 0,
            "lastOffset": 1,
        }
        await pub.send_message(orjson.dumps([output("b", offset=1), output("c", offset=2)]))
        ack = await receive(pub)
        assert ack["accepted"] == 1 and ack["duplicates"] == 1 and ack["lastOffset"] == 2
        await pub.send_message(orjson.dumps(output("z", offset=7)))
        gap = await receive(pub)
        assert gap["code"] == "offset_gap" and gap["lastOffset"] == 2
        await pub.send_message("{oops")
        assert (await receive(pub))["code"] == "malformed_json"
        await pub.send_message(orjson.dumps({"type": "output", "data": {}}))
        assert (await receive(pub))["code"] == "invalid_event"
        ended = {"type": "session_ended", "data": {"exit_status": 0}}
        await pub.send_message(orjson.dumps(ended))
        assert (await receive(pub))["lastOffset"] == 3
        with pytest.raises(ConnectionClosed) as closed:
            await receive(pub)
        assert closed.value.reason.code == 1000
    texts = [
        e["data"].get("text") for e in (await http.get("/api/streams/s/history")).json()["events"]
    ]
    assert texts == ["a", "b", "c", None]


async def test_publishers_closing_as_their_streams_end_leave_no_error_in_the_log(
    served: ServedHub, caplog: pytest.LogCaptureFixture
) -> None:
    # Each publisher closes its side as soon as the last event is sent, so its close
    # frame reaches the hub while the hub answers and closes: the reader task shuts the
    # socket down while the handler writes.
    ended = orjson.dumps([output("x"), {"type": "session_ended", "data": {"exit_status": 0}}])

    async def publish_and_leave(sid: str) -> None:
        async with open_websocket_url(
            ws_url(served, f"/api/streams/{sid}/publish?create=1")
        ) as pub:
            await receive(pub)
            await pub.send_message(ended)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(publish_and_leave, f"p{i}")
        async with open_websocket_url(ws_url(served, "/api/streams/last/publish?create=1")) as pub:
            await receive(pub)
            await pub.send_message(ended)
            assert (await receive(pub))["type"] == "ack"
            with pytest.raises(ConnectionClosed) as closed:
                await receive(pub)
    assert (closed.value.reason.code, closed.value.reason.reason) == (1000, "stream_ended")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


PUBLISHED_BODIES = [
    b"{oops",
    b"[]",
    b"3",
    orjson.dumps({"type": "output", "data": {}}),
    orjson.dumps({"type": "nope", "data": {"x": 1}}),
    orjson.dumps([output(str(i)) for i in range(4)]),
    orjson.dumps(output("placed", offset=9)),
    orjson.dumps({"type": "STATUS", "timestamp": "nan", "data": {"status": "x"}}),
    orjson.dumps([output("a"), output("b")]),
    orjson.dumps(output("b", offset=1)),
]


async def test_publishing_over_rest_and_a_websocket_answers_alike(start_hub: StartHub) -> None:
    served = await start_hub(max_batch=3)
    async with httpx.AsyncClient(base_url=served.urls[0], timeout=10) as http:
        await create(http, "r")
        await create(http, "w")
        async with open_websocket_url(ws_url(served, "/api/streams/w/publish")) as pub:
            await receive(pub)
            for body in PUBLISHED_BODIES:
                answer = await http.post(
                    "/api/streams/r/events",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                await pub.send_message(body.decode())
                message = await receive(pub)
                kind = message.pop("type")
                if answer.status_code == 200:
                    assert (kind, message) == ("ack", answer.json()), body
                else:
                    assert (kind, message) == ("error", answer.json()["error"]), body
                    assert answer.status_code in (400, 409), body


async def test_publishing_too_fast_is_refused_alike_over_rest_and_a_websocket(
    start_hub: StartHub,
) -> None:
    served = await start_hub(publish_per_second=2)
    async with httpx.AsyncClient(base_url=served.urls[0], timeout=10) as http:
        await create(http, "s")
        answer = await http.post("/api/streams/s/events", json=[output("a"), output("b")])
        assert answer.status_code == 200
        refused = await http.post("/api/streams/s/events", json=output("c"))
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        async with open_websocket_url(ws_url(served, "/api/streams/s/publish")) as pub:
            await receive(pub)
            await pub.send_message(orjson.dumps(output("c")).decode())
            error = await receive(pub)
    too_fast = "publishing faster than 2 events/s; retry in "
    assert refused.json()["error"]["code"] == error["code"] == "rate_limited"
    assert refused.json()["error"]["message"].startswith(too_fast)
    assert error["message"].startswith(too_fast)


async def test_one_client_sending_garbage_does_not_disturb_another(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    good_url = ws_url(served, "/api/streams/s/ws?after=-1")
    async with (
        open_websocket_url(good_url) as good,
        open_websocket_url(ws_url(served, "/api/streams/s/ws")) as bad,
    ):
        await receive_until(good, "subscribed")
        await receive(bad)
        for junk in ("{", "[]", '{"type": 1}', '{"type": "subscribe", "filters": 3}'):
            await bad.send_message(junk)
        await http.post("/api/streams/s/events", json=[output("still fine")])
        message = await receive(good)
        assert [e["data"]["text"] for e in message["events"]] == ["still fine"]
        assert [(await receive(bad))["type"] for _ in range(4)] == ["error"] * 4
        assert (await http.get("/healthz")).status_code == 200


async def test_silent_client_is_closed_after_heartbeats_and_a_pong_keeps_it(
    start_hub: StartHub,
) -> None:
    served = await start_hub(heartbeat=0.05, idle_timeout=0.4)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        await create(http, "s")
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as chatty:
        await receive(chatty)
        for _ in range(4):
            beat = await receive(chatty)
            assert beat["type"] == "heartbeat" and beat["clients"] == 1
            await chatty.send_message('{"type": "pong"}')
        assert chatty.closed is None
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as silent:
        messages = await receive_until(silent, "error")
        assert messages[-1]["code"] == "idle_timeout"
        with pytest.raises(ConnectionClosed) as closed:
            await receive(silent)
        assert closed.value.reason.code == 4009
