"""A client written from the Executor Streamer design document alone drives the hub.

The design's TypeScript interfaces are transcribed below as TypedDicts (nothing of
tstream's protocol code is used), and every message the hub sends is checked against
them: REST endpoints, ``StreamConfig``, ``HistoryFilter``, ``StreamFilter``, the WebSocket
``ClientMessage``/``ServerMessage``, the SSE format, ``StreamMetrics``/``StreamStats`` and
``ClientType``. The same client, in JavaScript, runs under Node at the end.
"""

from __future__ import annotations

import enum
import shutil
import socket
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypedDict

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

from trio_stream.hub.server import ServedHub

from .conftest import StartHub, base_url, ws_url

# -- the design's interfaces ------------------------------------------------------------

StreamEventType = Literal[
    "REASONING",
    "COMMAND_STARTED",
    "COMMAND_COMPLETED",
    "COMMAND_FAILED",
    "SCREENSHOT",
    "VARIABLE_UPDATE",
    "STATUS",
    "ERROR",
    # tstream's own kinds, in the same spelling.
    "OUTPUT",
    "SESSION_STARTED",
    "SESSION_ENDED",
    "MATCH",
    "JSON",
    "CUSTOM",
]


class ClientType(enum.StrEnum):
    WEBSOCKET = "WEBSOCKET"
    SERVER_SENT_EVENTS = "SERVER_SENT_EVENTS"
    HTTP_POLLING = "HTTP_POLLING"


class TimeRange(TypedDict):
    start: str
    end: str


class StreamFilter(TypedDict, total=False):
    eventTypes: list[StreamEventType]
    sessionIds: list[str]
    timeRange: TimeRange


class Persistence(TypedDict):
    enabled: bool
    storageType: Literal["memory", "file", "database"]
    retentionPeriod: float


class StreamConfig(TypedDict):
    maxHistorySize: int
    bufferSize: int
    enableReplay: bool
    compressionEnabled: bool
    heartbeatInterval: float
    maxClients: int
    eventFilters: list[StreamFilter]
    persistence: Persistence


class HistoryFilter(TypedDict, total=False):
    eventTypes: list[StreamEventType]
    limit: int
    offset: int
    startTime: str
    endTime: str
    searchText: str


class StreamEvent(TypedDict):
    id: str
    type: StreamEventType
    timestamp: str
    sessionId: str
    data: dict[str, Any]
    offset: int


class ClientMessage(TypedDict, total=False):
    type: Literal["subscribe", "unsubscribe", "replay", "ping", "filter"]
    streamId: str
    filters: list[StreamFilter]
    replayOptions: HistoryFilter


class ErrorBody(TypedDict):
    code: str
    message: str


class _ServerMessageType(TypedDict):
    type: Literal["event", "error", "pong", "connection_ack"]


class ServerMessage(_ServerMessageType, total=False):
    event: StreamEvent
    error: ErrorBody
    metadata: dict[str, Any]


class Heartbeat(TypedDict):
    timestamp: str
    active_clients: int


class StreamMetrics(TypedDict):
    totalStreams: int
    activeStreams: int
    totalClients: int
    eventsPerSecond: float
    averageEventSize: float
    memoryUsage: int
    errorRate: float
    uptime: float
    clientsByType: dict[ClientType, int]


class StreamStats(TypedDict):
    streamId: str
    clientCount: int
    totalEvents: int
    eventsInLastHour: int
    averageEventFrequency: float
    largestEventSize: int
    memoryUsage: int


DEFAULT_STREAM_CONFIG: StreamConfig = {
    "maxHistorySize": 10000,
    "bufferSize": 1000,
    "enableReplay": True,
    "compressionEnabled": True,
    "heartbeatInterval": 30000,
    "maxClients": 100,
    "eventFilters": [],
    "persistence": {"enabled": True, "storageType": "memory", "retentionPeriod": 86400000},
}
PROTOCOL = "protocol=executor-streamer"


def conforms(value: Any, kind: Any, where: str = "value") -> None:
    """Assert that a decoded JSON ``value`` has the shape of the TypeScript type ``kind``
    (extra keys of objects are allowed: the hub may send more than the design names)."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if kind is Any:
        return
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        assert value in [m.value for m in kind], f"{where}: {value!r} not a {kind.__name__}"
    elif typing.is_typeddict(kind):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        hints = typing.get_type_hints(kind)
        for key, hint in hints.items():
            if key in kind.__required_keys__:
                assert key in value, f"{where}.{key}: missing"
            if key in value:
                conforms(value[key], hint, f"{where}.{key}")
    elif origin is Literal:
        assert value in args, f"{where}: {value!r} not one of {args}"
    elif origin is list:
        assert isinstance(value, list), f"{where}: expected a list"
        for index, item in enumerate(value):
            conforms(item, args[0], f"{where}[{index}]")
    elif origin is dict:
        assert isinstance(value, dict), f"{where}: expected an object"
        for key, item in value.items():
            conforms(key, args[0], f"{where} key")
            conforms(item, args[1], f"{where}.{key}")
    elif origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                conforms(value, option, where)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(" / ".join(errors))
    elif kind is float:
        assert isinstance(value, int | float) and not isinstance(value, bool), where
    elif kind is str and where.endswith(("timestamp", ".start", ".end")):
        assert isinstance(value, str), where
        datetime.fromisoformat(value)
    else:
        assert (isinstance(value, kind) and not isinstance(value, bool)) or kind is bool, (
            f"{where}: expected {kind.__name__}, got {value!r}"
        )


def iso(year: int = 2026, hour: int = 10, minute: int = 0) -> str:
    return f"{year}-01-01T{hour:02d}:{minute:02d}:00Z"


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def published(event_type: str, minute: int, **data: Any) -> dict[str, Any]:
    """An event as the design's publisher sends it (``timestamp`` in ISO 8601)."""
    return {"type": event_type, "timestamp": iso(minute=minute), "data": data}


EVENTS = [
    published("STATUS", 0, status="starting", kind="status"),
    published("REASONING", 1, thought="open the page", confidence=0.9, kind="plan"),
    published("COMMAND_STARTED", 2, name="click", action="click", parameters={"x": 1}),
    published("COMMAND_COMPLETED", 3, name="click", result="ok", duration=0.5),
    published("VARIABLE_UPDATE", 4, name="total", value="3", previous="2"),
    published("SCREENSHOT", 5, path="/shots/1.png", width=800, height=600),
    published("COMMAND_FAILED", 6, name="type", error="no field", duration=1.0),
    published("ERROR", 7, message="page gone", code="E_GONE"),
]


async def create(
    http: httpx.AsyncClient, sid: str, config: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": sid}
    if config is not None:
        body["config"] = config
    answer = await http.post("/api/streams", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def publish(http: httpx.AsyncClient, sid: str, events: Any) -> None:
    answer = await http.post(f"/api/streams/{sid}/events", json=events)
    assert answer.status_code == 200, answer.text


async def end(http: httpx.AsyncClient, sid: str) -> None:
    await publish(http, sid, {"type": "SESSION_ENDED", "data": {"exit_status": 0}})


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(5):
        message = orjson.loads(await ws.get_message())
    conforms(message, ServerMessage, "message")
    return message  # type: ignore[no-any-return]


async def send(ws: WebSocketConnection, message: ClientMessage) -> None:
    await ws.send_message(orjson.dumps(message).decode())


async def events_until(ws: WebSocketConnection, count: int) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    while len(out) < count:
        message = await receive(ws)
        if message["type"] == "event":
            conforms(message["event"], StreamEvent, "event")
            out.append(message["event"])
    return out


# -- REST --------------------------------------------------------------------------------


async def test_a_stream_created_with_the_design_config_shows_it_in_force(
    http: httpx.AsyncClient,
) -> None:
    created = await create(http, "s", dict(DEFAULT_STREAM_CONFIG))
    conforms(created["config"], StreamConfig, "config")
    assert created["config"] == DEFAULT_STREAM_CONFIG
    partial = await create(http, "t", {"maxClients": 7, "persistence": {"retentionPeriod": 5000}})
    config = (await http.get("/api/streams/t")).json()["config"]
    conforms(config, StreamConfig, "config")
    assert config["maxClients"] == 7 and config["persistence"]["retentionPeriod"] == 5000
    assert partial["config"] == config
    listed = (await http.get("/api/streams")).json()["streams"]
    assert {s["id"] for s in listed} == {"s", "t"}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"maxClients": 0}, "config.maxClients"),
        ({"maxClients": "2"}, "config.maxClients"),
        ({"maxHistorySize": 1.5}, "config.maxHistorySize"),
        ({"bufferSize": -1}, "config.bufferSize"),
        ({"heartbeatInterval": 5}, "config.heartbeatInterval"),
        ({"enableReplay": "yes"}, "config.enableReplay"),
        ({"compressionEnabled": 1}, "config.compressionEnabled"),
        ({"eventFilters": [{"eventTypes": ["NOPE"]}]}, "config.eventFilters"),
        ({"eventFilters": [{"customFilter": "x => true"}]}, "customFilter"),
        ({"persistence": {"storageType": "tape"}}, "config.persistence.storageType"),
        ({"persistence": {"retentionPeriod": 0}}, "config.persistence.retentionPeriod"),
        ({"persistence": {"enabled": True, "extra": 1}}, "config.persistence.extra"),
        ({"persistence": []}, "config.persistence"),
        ({"colour": "red"}, "config.colour"),
    ],
)
async def test_a_wrong_config_field_is_refused_naming_it(
    http: httpx.AsyncClient, config: dict[str, Any], field: str
) -> None:
    answer = await http.post("/api/streams", json={"id": "s", "config": config})
    assert answer.status_code == 400
    assert field in answer.json()["error"]["message"]
    assert (await http.get("/api/streams/s")).status_code == 404


async def test_events_published_in_the_design_form_are_stored_with_their_time(
    http: httpx.AsyncClient,
) -> None:
    await create(http, "s")
    await publish(http, "s", EVENTS)
    await publish(http, "s", {"type": "Status", "timestamp": 1767261600.5, "data": {"status": "x"}})
    history = (await http.get("/api/streams/s/history")).json()["events"]
    assert [e["type"] for e in history] == [
        "status",
        "reasoning",
        "command_started",
        "command_completed",
        "variable_update",
        "screenshot",
        "command_failed",
        "error",
        "status",
    ]
    assert history[2]["ts"] == epoch(iso(minute=2))
    assert history[-1]["ts"] == 1767261600.5


@pytest.mark.parametrize(
    ("event", "names"),
    [
        ({"type": "NOPE", "data": {}}, "type"),
        ({"type": "STATUS", "timestamp": "yesterday", "data": {"status": "x"}}, "timestamp"),
        ({"type": "STATUS", "timestamp": "nan", "data": {"status": "x"}}, "timestamp"),
        ({"type": "STATUS", "timestamp": "inf", "data": {"status": "x"}}, "timestamp"),
        ({"type": "STATUS", "timestamp": True, "data": {"status": "x"}}, "ts"),
        ({"type": "STATUS", "timestamp": 1, "ts": 1, "data": {"status": "x"}}, "timestamp"),
    ],
)
async def test_bad_design_events_are_refused_naming_the_field(
    http: httpx.AsyncClient, event: dict[str, Any], names: str
) -> None:
    await create(http, "s")
    answer = await http.post("/api/streams/s/events", json=event)
    assert answer.status_code == 400 and names in answer.json()["error"]["message"]


async def test_history_takes_a_history_filter_with_iso_times(http: httpx.AsyncClient) -> None:
    await create(http, "s")
    await publish(http, "s", EVENTS)

    async def types(**query: Any) -> list[str]:
        answer = await http.get("/api/streams/s/history", params=query)
        assert answer.status_code == 200, answer.text
        return [e["type"] for e in answer.json()["events"]]

    assert await types(startTime=iso(minute=5)) == ["screenshot", "command_failed", "error"]
    assert await types(endTime=iso(minute=1)) == ["status", "reasoning"]
    assert await types(timeRange=f"{iso(minute=2)}/{iso(minute=3)}") == [
        "command_started",
        "command_completed",
    ]
    assert await types(eventTypes="COMMAND_STARTED,command_failed") == [
        "command_started",
        "command_failed",
    ]
    assert await types(eventTypes="STATUS,ERROR", limit=1, offset=1) == ["error"]
    assert await types(searchText="PAGE GONE") == ["error"]
    filters: list[StreamFilter] = [{"eventTypes": ["STATUS"]}, {"eventTypes": ["ERROR"]}]
    assert await types(filters=orjson.dumps(filters).decode()) == ["status", "error"]
    assert await types(sessionIds="other") == []
    for bad in ("nan", "inf", "2026-13-01T00:00:00Z", "soon"):
        answer = await http.get("/api/streams/s/history", params={"startTime": bad})
        assert answer.status_code == 400 and "startTime" in answer.json()["error"]["message"]


async def test_metrics_stats_and_clients_take_the_design_shapes(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    await publish(http, "s", EVENTS)
    url = ws_url(served, f"/api/streams/s/ws?{PROTOCOL}")
    async with open_websocket_url(url) as ws:
        await receive(ws)
        clients = (await http.get("/api/streams/s/clients")).json()["clients"]
        assert [c["type"] for c in clients] == [ClientType.WEBSOCKET]
        metrics = (await http.get("/api/streams/metrics")).json()
        conforms(metrics, StreamMetrics, "metrics")
        assert set(metrics["clientsByType"]) == set(ClientType)
        assert metrics["clientsByType"][ClientType.WEBSOCKET] == 1
        assert metrics["totalStreams"] == metrics["activeStreams"] == 1
        assert metrics["totalClients"] == 1
        stats = (await http.get("/api/streams/s/stats")).json()
        conforms(stats, StreamStats, "stats")
        assert stats["streamId"] == "s" and stats["clientCount"] == 1
        assert stats["totalEvents"] == len(EVENTS)
        assert stats["largestEventSize"] > 0 and stats["memoryUsage"] > 0
        assert stats["averageEventFrequency"] > 0


# -- WebSocket ---------------------------------------------------------------------------


async def test_websocket_messages_take_the_design_shapes(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    await publish(http, "s", EVENTS)
    url = ws_url(served, f"/api/streams/s/ws?{PROTOCOL}")
    async with open_websocket_url(url) as ws:
        ack = await receive(ws)
        assert ack["type"] == "connection_ack" and ack["metadata"]["streamId"] == "s"
        await send(
            ws,
            {
                "type": "subscribe",
                "streamId": "s",
                "filters": [{"eventTypes": ["STATUS"]}, {"eventTypes": ["ERROR"]}],
                "replayOptions": {"eventTypes": ["COMMAND_STARTED", "ERROR"], "limit": 5},
            },
        )
        assert (await receive(ws))["type"] == "connection_ack"
        replayed = await events_until(ws, 2)
        assert [e["type"] for e in replayed] == ["COMMAND_STARTED", "ERROR"]
        first = replayed[0]
        assert first["sessionId"] == "s" and first["offset"] == 2
        assert epoch(first["timestamp"]) == epoch(iso(minute=2))
        assert first["data"]["parameters"] == {"x": 1}
        await publish(
            http, "s", [published("STATUS", 9, status="late"), published("SCREENSHOT", 9)]
        )
        live = await events_until(ws, 1)
        assert live[0]["type"] == "STATUS" and live[0]["data"]["status"] == "late"

        await send(ws, {"type": "ping"})
        assert (await receive(ws))["type"] == "pong"
        await send(ws, {"type": "replay", "replayOptions": {"eventTypes": ["SCREENSHOT"]}})
        replay = await events_until(ws, 2)
        assert [e["offset"] for e in replay] == [5, 9]
        await send(ws, {"type": "filter", "filters": [{"eventTypes": ["REASONING"]}]})
        assert (await receive(ws))["type"] == "connection_ack"
        await send(ws, {"type": "replay", "replayOptions": {"offset": 1, "limit": 2}})
        assert [e["offset"] for e in await events_until(ws, 2)] == [1, 2]
        await send(ws, {"type": "unsubscribe"})
        assert (await receive(ws))["type"] == "connection_ack"

        for bad, code in (
            ({"type": "subscribe", "filters": {"eventTypes": ["NOPE"]}}, "BAD_FILTER"),
            ({"type": "replay", "replayOptions": {"startTime": "nan"}}, "BAD_REPLAY"),
            ({"type": "dance"}, "UNKNOWN_TYPE"),
        ):
            await ws.send_message(orjson.dumps(bad).decode())
            error = await receive(ws)
            assert error["type"] == "error" and error["error"]["code"] == code
            assert error["error"]["message"]


async def test_a_client_is_replayed_to_and_disconnected_and_a_stream_destroyed(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    await publish(http, "s", EVENTS)
    async with open_websocket_url(ws_url(served, f"/api/streams/s/ws?{PROTOCOL}")) as ws:
        client_id = (await receive(ws))["metadata"]["clientId"]
        history: HistoryFilter = {"eventTypes": ["ERROR", "STATUS"], "offset": 1}
        answer = await http.post(
            f"/api/streams/s/replay/{client_id}", json={"replayOptions": history}
        )
        assert answer.status_code == 202
        message = await receive(ws)
        assert message["event"]["type"] == "ERROR" and message["metadata"]["replay"] is True
        answer = await http.delete(f"/api/streams/s/clients/{client_id}")
        assert answer.status_code == 200
        error = await receive(ws)
        assert error["type"] == "error" and error["error"]["code"] == "DISCONNECTED"
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.reason.code == 4004
    assert (await http.delete("/api/streams/s")).status_code == 200
    assert (await http.get("/api/streams/s")).status_code == 404


async def test_several_stream_filters_pass_any_and_a_time_range_bounds_them(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    await publish(http, "s", EVENTS)
    async with open_websocket_url(ws_url(served, f"/api/streams/s/ws?{PROTOCOL}")) as ws:
        await receive(ws)
        filters: list[StreamFilter] = [
            {"eventTypes": ["COMMAND_STARTED", "COMMAND_FAILED"]},
            {"timeRange": {"start": iso(minute=7), "end": iso(minute=8)}},
            {"sessionIds": ["another"]},
        ]
        await send(ws, {"type": "filter", "filters": filters})
        await receive(ws)
        await send(
            ws, {"type": "replay", "filters": filters, "replayOptions": {"startTime": iso()}}
        )
        assert [e["type"] for e in await events_until(ws, 3)] == [
            "COMMAND_STARTED",
            "COMMAND_FAILED",
            "ERROR",
        ]


async def test_a_new_client_gets_the_streams_default_filters(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", {"eventFilters": [{"eventTypes": ["ERROR"]}]})
    async with open_websocket_url(ws_url(served, f"/api/streams/s/ws?{PROTOCOL}")) as ws:
        await receive(ws)
        await send(ws, {"type": "subscribe"})
        await receive(ws)
        await publish(http, "s", EVENTS)
        assert [e["type"] for e in await events_until(ws, 1)] == ["ERROR"]
        clients = (await http.get("/api/streams/s/clients")).json()["clients"]
        assert clients[0]["filters"] == {"eventTypes": ["error"]}


async def test_heartbeats_come_at_the_streams_interval(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", {"heartbeatInterval": 100})
    async with open_websocket_url(ws_url(served, f"/api/streams/s/ws?{PROTOCOL}")) as ws:
        ack = await receive(ws)
        assert ack["metadata"]["heartbeat"] == 0.1
        start = trio.current_time()
        beat = await receive(ws)
        assert beat["type"] == "pong" and beat["metadata"]["heartbeat"] is True
        assert trio.current_time() - start < 1


async def test_max_clients_refuses_one_more(served: ServedHub, http: httpx.AsyncClient) -> None:
    await create(http, "s", {"maxClients": 1})
    async with open_websocket_url(ws_url(served, f"/api/streams/s/ws?{PROTOCOL}")) as ws:
        await receive(ws)
        with pytest.raises(HandshakeError) as refused:
            async with open_websocket_url(ws_url(served, f"/api/streams/s/ws?{PROTOCOL}")):
                pass
        assert getattr(refused.value, "status_code", 503) == 503
        answer = await http.get(f"/api/streams/s/sse?{PROTOCOL}")
        assert answer.status_code == 503


async def test_replay_disabled_answers_replays_and_resumes_with_an_error(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", {"enableReplay": False})
    await publish(http, "s", EVENTS)
    async with open_websocket_url(ws_url(served, f"/api/streams/s/ws?{PROTOCOL}")) as ws:
        ack = await receive(ws)
        for message in (
            {"type": "replay", "replayOptions": {"limit": 3}},
            {"type": "subscribe", "replayOptions": {"startTime": iso()}},
        ):
            await send(ws, message)  # type: ignore[arg-type]
            error = await receive(ws)
            assert error["type"] == "error" and error["error"]["code"] == "REPLAY_DISABLED"
        answer = await http.post(
            f"/api/streams/s/replay/{ack['metadata']['clientId']}",
            json={"replayOptions": {"limit": 1}},
        )
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "replay_disabled"
    answer = await http.get("/api/streams/s/sse", headers={"Last-Event-ID": "3"})
    assert answer.status_code == 409


async def test_memory_only_streams_keep_max_history_size_events(
    http: httpx.AsyncClient,
) -> None:
    await create(
        http, "s", {"maxHistorySize": 3, "persistence": {"enabled": True, "storageType": "memory"}}
    )
    await publish(http, "s", EVENTS)
    history = (await http.get("/api/streams/s/history")).json()["events"]
    assert [e["offset"] for e in history] == [5, 6, 7]


async def test_the_config_holds_after_a_hub_restart(start_hub: StartHub) -> None:
    first = await start_hub()
    async with httpx.AsyncClient(base_url=base_url(first), timeout=10) as http:
        await create(http, "s", {"maxClients": 1, "heartbeatInterval": 2500})
    first.shutdown()
    second = await start_hub()
    async with httpx.AsyncClient(base_url=base_url(second), timeout=10) as http:
        config = (await http.get("/api/streams/s")).json()["config"]
        assert config["maxClients"] == 1 and config["heartbeatInterval"] == 2500
        async with open_websocket_url(ws_url(second, f"/api/streams/s/ws?{PROTOCOL}")) as ws:
            assert (await receive(ws))["metadata"]["heartbeat"] == 2.5
            assert (await http.get("/api/streams/s/sse")).status_code == 503


async def test_an_ended_stream_is_destroyed_after_its_retention_period(
    http: httpx.AsyncClient,
) -> None:
    await create(http, "s", {"persistence": {"retentionPeriod": 200}})
    await create(http, "kept")
    await end(http, "s")
    await end(http, "kept")
    with trio.fail_after(5):
        while (await http.get("/api/streams/s")).status_code != 404:
            await trio.sleep(0.05)
    assert (await http.get("/api/streams/kept")).status_code == 200


def _handshake(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk
            head += chunk
        return head.split(b"\r\n\r\n")[0].lower()


async def test_compression_follows_the_streams_config(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "plain", {"compressionEnabled": False})
    await create(http, "packed")
    port = served.addresses[0].port
    plain = await trio.to_thread.run_sync(_handshake, port, "/api/streams/plain/ws")
    packed = await trio.to_thread.run_sync(_handshake, port, "/api/streams/packed/ws")
    assert b" 101 " in plain and b"permessage-deflate" not in plain
    assert b" 101 " in packed and b"permessage-deflate" in packed


# -- SSE ---------------------------------------------------------------------------------


async def sse_messages(response: httpx.Response, count: int) -> list[tuple[str, str, Any]]:
    """``(event, id, data)`` of the first ``count`` SSE events, read as EventSource would."""
    out: list[tuple[str, str, Any]] = []
    fields: dict[str, str] = {}
    with trio.fail_after(5):
        async for line in response.aiter_lines():
            if not line:
                if "data" in fields:
                    data = orjson.loads(fields["data"])
                    out.append((fields.get("event", "message"), fields.get("id", ""), data))
                    if len(out) == count:
                        return out
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return out


async def test_sse_takes_the_design_format(served: ServedHub, http: httpx.AsyncClient) -> None:
    await create(http, "s", {"heartbeatInterval": 150})
    await publish(http, "s", EVENTS[:2])
    url = f"/api/streams/s/sse?{PROTOCOL}&lastEventId=0"
    async with http.stream("GET", url) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        await publish(http, "s", EVENTS[2:3])
        await end(http, "s")
        messages = await sse_messages(response, 5)
    kinds = [m[0] for m in messages if m[0] != "heartbeat"]
    assert kinds == ["stream_event", "stream_event", "stream_event", "error"]
    events = [m for m in messages if m[0] == "stream_event"]
    for _, event_id, data in events:
        conforms(data, StreamEvent, "event")
        assert event_id == str(data["offset"])
    assert [d["type"] for _, _, d in events] == ["REASONING", "COMMAND_STARTED", "SESSION_ENDED"]
    error = messages[-1][2]
    conforms(error, ErrorBody, "error")
    assert error["code"] == "STREAM_ENDED"


async def test_sse_heartbeats_at_the_streams_interval(http: httpx.AsyncClient) -> None:
    await create(http, "s", {"heartbeatInterval": 100})
    async with http.stream("GET", f"/api/streams/s/sse?{PROTOCOL}") as response:
        messages = await sse_messages(response, 2)
        clients = (await http.get("/api/streams/s/clients")).json()["clients"]
    for kind, _, data in messages:
        assert kind == "heartbeat"
        conforms(data, Heartbeat, "heartbeat")
        assert data["active_clients"] == 1
    assert [c["type"] for c in clients] == [ClientType.SERVER_SENT_EVENTS]


async def test_the_default_protocol_is_unchanged(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    await publish(http, "s", EVENTS[:2])
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws?after=-1")) as ws:
        with trio.fail_after(5):
            ack = orjson.loads(await ws.get_message())
            assert ack["type"] == "connection_ack" and "metadata" not in ack
            assert orjson.loads(await ws.get_message())["type"] == "subscribed"
            batch = orjson.loads(await ws.get_message())
        assert batch["type"] == "event" and len(batch["events"]) == 2
    answer = await http.get("/api/streams/s/ws?protocol=other")
    assert answer.status_code in (400, 404, 405)


# -- the same client in JavaScript -------------------------------------------------------

NODE = shutil.which("node")

NODE_CLIENT = """
const [base, ws_base] = process.argv.slice(2);
const post = (path, body) => fetch(base + path, {
  method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
}).then(async (r) => ({status: r.status, body: await r.json()}));
const get = (path) => fetch(base + path).then((r) => r.json());
const out = [];

const config = {maxClients: 5, heartbeatInterval: 60000};
const created = await post("/api/streams", {id: "js", config});
out.push(["created", created.status, created.body.config.maxClients]);
await post("/api/streams/js/events", [
  {type: "STATUS", timestamp: "2026-01-01T10:00:00Z", data: {status: "start"}},
  {type: "COMMAND_STARTED", timestamp: "2026-01-01T10:00:01Z", data: {name: "click"}},
]);
const ws = new WebSocket(ws_base + "/api/streams/js/ws?protocol=executor-streamer");
const messages = [];
let wake = null;
ws.onmessage = (m) => { messages.push(JSON.parse(m.data)); if (wake) wake(); };
const next = async () => {
  while (!messages.length) await new Promise((r) => { wake = r; });
  return messages.shift();
};
await new Promise((r) => { ws.onopen = r; });
out.push(["ack", (await next()).type]);
ws.send(JSON.stringify({
  type: "subscribe", streamId: "js",
  filters: [{eventTypes: ["COMMAND_STARTED"]}, {eventTypes: ["ERROR"]}],
  replayOptions: {startTime: "2026-01-01T09:00:00Z", limit: 10},
}));
out.push(["subscribed", (await next()).type]);
const replayed = await next();
out.push(["event", replayed.event.type, replayed.event.timestamp, replayed.event.sessionId]);
await post("/api/streams/js/events", {type: "ERROR", timestamp: 1767261602, data: {message: "x"}});
const live = await next();
out.push(["event", live.event.type, live.event.timestamp]);
ws.send(JSON.stringify({type: "ping"}));
out.push(["ping", (await next()).type]);
ws.send(JSON.stringify({type: "filter", filters: {eventTypes: ["NOPE"]}}));
const error = await next();
out.push(["error", error.type, error.error.code]);
const clients = await get("/api/streams/js/clients");
out.push(["clients", clients.clients.map((c) => c.type).join()]);
const metrics = await get("/api/streams/metrics");
out.push(["metrics", Object.keys(metrics.clientsByType).sort().join(), metrics.totalStreams]);
const stats = await get("/api/streams/js/stats");
out.push(["stats", stats.streamId, stats.totalEvents, stats.clientCount]);

const sseUrl = "/api/streams/js/sse?protocol=executor-streamer&lastEventId=1";
const source = new EventSource(base + sseUrl);
const sse = await new Promise((resolve) => {
  source.addEventListener("stream_event", (m) => {
    source.close();
    resolve([m.lastEventId, JSON.parse(m.data).type]);
  });
});
out.push(["sse", ...sse]);
ws.close();
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(NODE is None, reason="no Node")
async def test_a_javascript_client_written_from_the_design(
    served: ServedHub, tmp_path: Path
) -> None:
    assert NODE is not None
    script = tmp_path / "client.mjs"
    script.write_text(NODE_CLIENT)
    base = base_url(served)
    command = [
        NODE,
        "--no-warnings",
        "--experimental-websocket",
        "--experimental-eventsource",
        str(script),
        base,
        base.replace("http://", "ws://"),
    ]
    with trio.fail_after(20):
        done = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    assert orjson.loads(done.stdout) == [
        ["created", 201, 5],
        ["ack", "connection_ack"],
        ["subscribed", "connection_ack"],
        ["event", "COMMAND_STARTED", "2026-01-01T10:00:01.000000Z", "js"],
        ["event", "ERROR", "2026-01-01T10:00:02.000000Z"],
        ["ping", "pong"],
        ["error", "error", "BAD_FILTER"],
        ["clients", "WEBSOCKET"],
        ["metrics", "HTTP_POLLING,SERVER_SENT_EVENTS,WEBSOCKET", 1],
        ["stats", "js", 3, 1],
        ["sse", "2", "ERROR"],
    ]
