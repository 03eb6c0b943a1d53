"""The hub's HTTP API as an OpenAPI 3.1 document, served at ``GET /api/openapi.json``.

The document is data built here, not guessed from the routes: every path and method the
app registers is in it (a test compares it with the app's URL map both ways), with its
parameters, request body, answers and error shape. The event payload schemas are made
from the attrs classes of :mod:`trio_stream.events`, so the document cannot drift from
the event model. The bounds of what clients send come from
:data:`~trio_stream.hub.params.LIMITS`, the ones the routes apply, and the hub's own
limits (largest batch, longest poll) from its configuration.

WebSocket routes are described as the ``GET`` that opens them (``101`` on success); their
messages are described in :mod:`trio_stream.hub.protocol`. ``HEAD`` is answered wherever
``GET`` is, and ``OPTIONS`` answers CORS preflights on every path: neither is listed.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Final, Literal

import attrs

from .. import __version__
from ..events import PAYLOADS, EventType
from ..store.base import SessionStatus
from .config import HubConfig
from .design import CLIENT_TYPES, PROTOCOL, STORAGE_TYPES
from .encodings import COLUMNS_PROTOCOL
from .params import LIMITS

OPENAPI_PATH: Final = "/api/openapi.json"
STREAM_ID_PATTERN: Final = "^[A-Za-z0-9._-]{1,64}$"
# lastN on every transport, and the limit of a replay.
_LAST_N: Final = {"type": "integer", "minimum": 1, "maximum": LIMITS.replay}

_REF: Final = "#/components/schemas/"
SSE_EVENTS: Final = (
    "stream_event",
    "replay",
    "replay_done",
    "heartbeat",
    "notice",
    "end",
    "error",
)


def _bounded(kind: str, name: str, description: str | None = None) -> dict[str, Any]:
    """The schema of the ``StreamConfig`` number ``name``, with its bounds."""
    low, high = LIMITS.stream_config[name]
    schema: dict[str, Any] = {"type": kind, "minimum": low, "maximum": high}
    if description is not None:
        schema["description"] = description
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


# -- schemas of the event model ---------------------------------------------------------


def _type_schema(kind: Any) -> dict[str, Any]:
    """The JSON Schema of a payload field's type annotation."""
    if kind is Any:
        return {}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if kind in simple:
        return {"type": simple[kind]}
    if kind is bytes:
        return {"type": "string", "contentEncoding": "base64"}
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin is Literal:
        return {"type": "string", "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        inner = [_type_schema(a) for a in args if a is not type(None)]
        schema = inner[0] if len(inner) == 1 else {"anyOf": inner}
        if type(None) in args:
            return {"anyOf": [schema, {"type": "null"}]}
        return schema
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1]) if args else {}}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0]) if args else {}}
    raise TypeError(f"no JSON Schema for {kind!r}")


def payload_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of a payload class (what an event's ``data`` holds).

    Args:
        cls: an attrs payload class of :data:`trio_stream.events.PAYLOADS`.

    Returns:
        An object schema: each field typed, those without a default required, no other key.
    """
    fields = attrs.fields(attrs.resolve_types(cls))
    return {
        "type": "object",
        "properties": {f.name: _type_schema(f.type) for f in fields},
        "required": [f.name for f in fields if f.default is attrs.NOTHING],
        "additionalProperties": False,
    }


def _payload_name(etype: EventType) -> str:
    return PAYLOADS[etype].__name__ + "Data"


def _event_variants() -> list[dict[str, Any]]:
    """One schema per payload class: the event types it serves and its ``data``."""
    by_class: dict[type, list[str]] = {}
    for etype, cls in PAYLOADS.items():
        by_class.setdefault(cls, []).append(etype.value)
    return [
        {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": names},
                "data": _ref(cls.__name__ + "Data"),
            },
            "required": ["type", "data"],
        }
        for cls, names in by_class.items()
    ]


def _event_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        _payload_name(etype): payload_schema(PAYLOADS[etype]) for etype in EventType
    }
    schemas["Event"] = {
        "description": "An event as the hub stores and sends it.",
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "session": {"type": "string"},
            "offset": {"type": "integer", "minimum": 0},
            "type": {"type": "string", "enum": [t.value for t in EventType]},
            "ts": {"type": "number", "description": "UTC seconds since the Unix epoch"},
            "data": {"type": "object"},
        },
        "required": ["id", "session", "offset", "type", "ts", "data"],
        "additionalProperties": False,
        "oneOf": _event_variants(),
    }
    schemas["PublishedEvent"] = {
        "description": (
            "An event to publish. The hub gives it an ``id``, the stream's ``session``, the "
            "next ``offset`` and the current ``ts`` unless they are given; a given ``offset`` "
            "places it (an event already at that offset with the same ``id`` is a duplicate). "
            "The type may also be named as the Executor Streamer design does "
            "(``COMMAND_STARTED``, in any case)."
        ),
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "session": {"type": "string", "description": "empty or the stream's id"},
            "offset": {"type": "integer", "minimum": 0},
            "type": {"type": "string", "enum": [t.value for t in EventType]},
            "ts": {"type": "number"},
            "timestamp": {
                "type": ["number", "string"],
                "description": "the Executor Streamer design's name of ts: epoch seconds or "
                "ISO 8601",
            },
            "sessionId": {"type": "string", "description": "the design's name of session"},
            "data": {"type": "object"},
        },
        "required": ["type", "data"],
        "additionalProperties": False,
        "oneOf": _event_variants(),
    }
    return schemas


# -- schemas of the answers -------------------------------------------------------------

_NULLABLE_NUMBER: Final = {"type": ["number", "null"]}
_COUNTS: Final = {"type": "object", "additionalProperties": {"type": "integer"}}


def _object(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }


def _answer_schemas(config: HubConfig) -> dict[str, Any]:
    stream = _object(
        {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in SessionStatus]},
            "live": {"type": "boolean"},
            "workflowSessionId": {"type": ["string", "null"]},
            "config": {"type": "object"},
            "command": {"type": "array", "items": {"type": "string"}},
            "created": {"type": "number"},
            "lastActivity": {"type": "number"},
            "ended": _NULLABLE_NUMBER,
            "exitStatus": {"type": ["integer", "null"]},
            "lastOffset": {"type": "integer", "minimum": -1},
            "clients": {"type": "integer", "minimum": 0},
            "epoch": {"type": "string"},
        },
        # A stream that is not loaded is listed from the store, without these.
        optional=("config", "epoch"),
    )
    time = {
        "type": ["number", "string"],
        "description": "epoch seconds or an ISO 8601 time",
    }
    one_filter = {
        "type": "object",
        "description": "The filters of query parameters, as a JSON object (lists as lists); "
        "the Executor Streamer design's StreamFilter is one.",
        "properties": {
            "eventTypes": {
                "type": "array",
                "items": {
                    "type": "string",
                    "description": f"of {', '.join(t.value for t in EventType)}, in any case",
                },
                "maxItems": LIMITS.values,
            },
            "sources": {
                "type": "array",
                "items": {"type": "string", "enum": ["stdout", "stderr"]},
                "maxItems": LIMITS.values,
            },
            "startTime": time,
            "endTime": time,
            "timeRange": {
                "type": "object",
                "properties": {"start": time, "end": time},
                "additionalProperties": False,
            },
            "sessionIds": {
                "type": "array",
                "items": {"type": "string"},
                "maxItems": LIMITS.values,
            },
            "searchText": {"type": "string", "minLength": 1, "maxLength": LIMITS.search},
            "pattern": {"type": "string", "minLength": 1, "maxLength": LIMITS.pattern},
        },
        "additionalProperties": False,
    }
    filters = {
        "description": "One filter, or several (the design's StreamFilter[]): an event passes "
        "when any of them passes it.",
        "oneOf": [one_filter, {"type": "array", "items": one_filter, "maxItems": LIMITS.filters}],
    }
    stream_config = {
        "type": "object",
        "description": "The Executor Streamer design's StreamConfig (any of its fields; the "
        "hub's settings for the rest).",
        "properties": {
            "maxHistorySize": _bounded("integer", "maxHistorySize"),
            "bufferSize": _bounded("integer", "bufferSize"),
            "enableReplay": {"type": "boolean"},
            "compressionEnabled": {"type": "boolean"},
            "heartbeatInterval": _bounded("number", "heartbeatInterval", "milliseconds"),
            "maxClients": _bounded("integer", "maxClients"),
            "eventFilters": filters,
            "persistence": {
                "type": "object",
                "properties": {
                    "enabled": {"type": "boolean"},
                    "storageType": {"type": "string", "enum": list(STORAGE_TYPES)},
                    "retentionPeriod": _bounded("number", "retentionPeriod", "milliseconds"),
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    }
    client = _object(
        {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": list(CLIENT_TYPES.values())},
            "transport": {"type": "string", "enum": ["websocket", "sse"]},
            "protocol": {"type": "string", "enum": ["tstream", PROTOCOL, COLUMNS_PROTOCOL]},
            "isActive": {"type": "boolean"},
            "remote": {"type": "string"},
            "connectedAt": {"type": "number"},
            "lastPing": {"type": ["number", "null"]},
            "subscribed": {"type": "boolean"},
            "lastOffset": {"type": "integer"},
            "pending": {"type": "integer"},
            "eventsSent": {"type": "integer"},
            "framesSent": {"type": "integer"},
            "bytesSent": {"type": "integer"},
            "messagesReceived": {"type": "integer"},
            "filters": _ref("Filters"),
        }
    )
    events_page = {
        "streamId": {"type": "string"},
        "events": {"type": "array", "items": _ref("Event")},
        "lastOffset": {"type": "integer", "minimum": -1},
        "epoch": {"type": "string"},
    }
    return {
        "Error": _object(
            {
                "error": {
                    **_object(
                        {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "field": {"type": "string"},
                            "lastOffset": {"type": "integer"},
                            "errors": {"type": "array", "items": {"type": "string"}},
                        },
                        optional=("field", "lastOffset", "errors"),
                    ),
                    "description": (
                        "``code`` is machine-readable; ``field`` names a bad field, "
                        "``errors`` every bad field of published events, ``lastOffset`` "
                        "the stream's last offset (``offset_gap``, ``stream_ended``)."
                    ),
                }
            }
        ),
        "SseEvent": {
            **_object(
                {
                    "event": {"type": "string", "enum": list(SSE_EVENTS)},
                    "data": {"type": "string", "contentMediaType": "application/json"},
                    "id": {"type": "string", "description": "the event's offset"},
                    "retry": {"type": "integer", "minimum": 0},
                },
                optional=("id", "retry"),
            ),
            "description": "One event of the stream (``data`` is JSON).",
        },
        "Health": _object(
            {
                "status": {"type": "string", "enum": ["ok"]},
                "uptime": {"type": "number"},
                "shuttingDown": {"type": "boolean"},
                "epoch": {"type": "string"},
            }
        ),
        "Metrics": _object(
            {
                "totalStreams": {"type": "integer"},
                "activeStreams": {"type": "integer"},
                "totalClients": {"type": "integer"},
                "eventsPerSecond": {"type": "number"},
                "averageEventSize": {"type": "number"},
                "memoryUsage": {"type": "integer"},
                "errorRate": {"type": "number"},
                "uptime": {"type": "number"},
                "clientsByType": _object(
                    {name: {"type": "integer"} for name in CLIENT_TYPES.values()}
                ),
                "streams": {"type": "integer"},
                "clients": {"type": "integer"},
                "clientsByTransport": _COUNTS,
                "eventsTotal": {"type": "integer"},
                "slowConsumers": {"type": "integer"},
                "memoryBytes": {"type": "integer"},
                "requests": {"type": "integer"},
                "rateLimited": {"type": "integer"},
                "epoch": {"type": "string"},
            }
        ),
        "Stream": stream,
        "StreamList": _object(
            {
                "streams": {"type": "array", "items": _ref("Stream")},
                "offset": {"type": "integer", "minimum": 0},
                "more": {"type": "boolean", "description": "whether a next page exists"},
                "total": {
                    "type": ["integer", "null"],
                    "description": "known when the list was read to its end",
                },
            }
        ),
        "Login": {
            "type": "object",
            "properties": {"token": {"type": "string", "minLength": 1}},
            "required": ["token"],
        },
        "NewStream": {
            "type": "object",
            "properties": {
                "id": {
                    "type": "string",
                    "pattern": STREAM_ID_PATTERN,
                    "description": "a new id is made when left out ('metrics' is reserved)",
                },
                "workflowSessionId": {"type": "string", "maxLength": LIMITS.workflow_id},
                "config": stream_config,
            },
            "additionalProperties": False,
        },
        "StreamConfig": stream_config,
        "Filters": filters,
        "Client": client,
        "ClientList": _object(
            {"streamId": {"type": "string"}, "clients": {"type": "array", "items": _ref("Client")}}
        ),
        "Deleted": _object({"deleted": {"type": "string"}}),
        "Disconnected": _object(
            {"disconnected": {"type": "string"}, "lastOffset": {"type": "integer"}}
        ),
        "History": _object({**events_page, "count": {"type": "integer", "minimum": 0}}),
        "Poll": _object(
            {
                **events_page,
                "cursor": {
                    "type": "integer",
                    "description": "the ``after`` of the next poll",
                },
                "ended": {"type": "boolean"},
                "recovered": {
                    "type": "boolean",
                    "description": "false when events after ``after`` are gone",
                },
            }
        ),
        "ReplayOptions": {
            "type": "object",
            "description": "Give at most one of fromOffset, fromTimestamp, lastN, startTime. "
            "The Executor Streamer design's HistoryFilter (eventTypes, limit, offset, startTime, "
            "endTime, searchText) is one.",
            "properties": {
                "fromOffset": {"type": "integer", "minimum": -1},
                "fromTimestamp": time,
                "lastN": _LAST_N,
                "epoch": {"type": "string", "maxLength": LIMITS.epoch},
                "eventTypes": one_filter["properties"]["eventTypes"],
                "limit": _LAST_N,
                "offset": {"type": "integer", "minimum": 0},
                "startTime": time,
                "endTime": time,
                "searchText": one_filter["properties"]["searchText"],
            },
            "additionalProperties": False,
        },
        "ReplayRequest": {
            "type": "object",
            "properties": {
                "replayOptions": _ref("ReplayOptions"),
                "filters": _ref("Filters"),
                "limit": _LAST_N,
            },
            "additionalProperties": False,
        },
        "ReplayQueued": _object(
            {"clientId": {"type": "string"}, "queued": {"type": "boolean", "const": True}}
        ),
        "PublishRequest": {
            "oneOf": [
                _ref("PublishedEvent"),
                {
                    "type": "array",
                    "items": _ref("PublishedEvent"),
                    "minItems": 1,
                    "maxItems": config.max_batch,
                },
            ]
        },
        "PublishResult": _object(
            {
                "accepted": {"type": "integer", "minimum": 0},
                "duplicates": {"type": "integer", "minimum": 0},
                "firstOffset": {"type": ["integer", "null"]},
                "lastOffset": {"type": "integer", "minimum": -1},
            }
        ),
        "Stats": _object(
            {
                "streamId": {"type": "string"},
                "clientCount": {"type": "integer"},
                "totalEvents": {"type": "integer"},
                "eventsInLastHour": {"type": "integer"},
                "averageEventFrequency": {"type": "number"},
                "largestEventSize": {"type": "integer"},
                "memoryUsage": {"type": "integer"},
                "window": _object({"startTime": _NULLABLE_NUMBER, "endTime": _NULLABLE_NUMBER}),
                "eventTypes": _COUNTS,
                "events": {"type": "integer"},
                "lastOffset": {"type": "integer"},
                "publishedHere": {"type": "integer"},
                "duplicatesSkipped": {"type": "integer"},
                "clients": _object(
                    {
                        "active": {"type": "integer"},
                        "byType": _COUNTS,
                        "connections": {"type": "integer"},
                        "slowConsumers": {"type": "integer"},
                        "eventsSent": {"type": "integer"},
                        "bytesSent": {"type": "integer"},
                    }
                ),
                "clientActivity": _object(
                    {
                        "connectionsOpened": {"type": "integer"},
                        "activeInWindow": {"type": "integer"},
                        "activeInWindowByType": _COUNTS,
                        "disconnections": _COUNTS,
                        "eventsSent": {"type": "integer"},
                        "bytesSent": {"type": "integer"},
                        "recordedSince": _NULLABLE_NUMBER,
                    }
                ),
            }
        ),
    }


# -- parameters and answers -------------------------------------------------------------


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _parameters(config: HubConfig) -> dict[str, Any]:
    types_list = ",".join(t.value for t in EventType)
    return {
        "streamId": {
            "name": "stream_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": STREAM_ID_PATTERN},
            "description": "the stream (session) id",
        },
        "clientId": {
            "name": "client_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "a connected client's id (see ``/clients``)",
        },
        "eventTypes": _query(
            "eventTypes",
            {"type": "string"},
            f"comma-separated event types (of {types_list})",
        ),
        "sources": _query("sources", {"type": "string"}, "comma-separated: stdout, stderr"),
        "startTime": _query(
            "startTime", {"type": "string"}, "epoch seconds or ISO 8601, inclusive"
        ),
        "endTime": _query("endTime", {"type": "string"}, "epoch seconds or ISO 8601, inclusive"),
        "timeRange": _query(
            "timeRange", {"type": "string"}, "START/END, epoch seconds or ISO 8601, inclusive"
        ),
        "sessionIds": _query("sessionIds", {"type": "string"}, "comma-separated session ids"),
        "filters": _query(
            "filters",
            {"type": "string"},
            "the JSON of a filter object or of a list of them (StreamFilter[]), instead of "
            "the other filter parameters",
        ),
        "protocol": _query(
            "protocol",
            {"type": "string", "enum": ["tstream", PROTOCOL]},
            f"``{PROTOCOL}``: messages in the Executor Streamer design's shapes",
        ),
        "searchText": _query(
            "searchText",
            {"type": "string", "minLength": 1, "maxLength": LIMITS.search},
            "case-insensitive substring of the line (of the JSON data for other events)",
        ),
        "pattern": _query(
            "pattern",
            {"type": "string", "minLength": 1, "maxLength": LIMITS.pattern},
            "a regular expression searched like searchText (no nested repetition)",
        ),
        "after": _query(
            "after", {"type": "integer", "minimum": -1}, "only events after this offset"
        ),
        "epoch": _query(
            "epoch",
            {"type": "string", "maxLength": LIMITS.epoch},
            "the store epoch the client saw; another epoch means its offsets are stale",
        ),
    }


_FILTERS: Final = (
    "eventTypes",
    "sources",
    "startTime",
    "endTime",
    "timeRange",
    "sessionIds",
    "searchText",
    "pattern",
    "filters",
)

_ERRORS: Final = {
    "400": "a bad parameter or body (``code`` and ``message`` say which)",
    "401": "no token, an unknown token or a malformed ``Authorization`` header",
    "403": "the token lacks the scope, the origin or host is not allowed, or the hub is read-only",
    "404": "no such stream or client (or no such path)",
    "405": "the path takes other methods",
    "409": "the stream exists, has ended, or the offsets leave a gap; or it does not replay "
    "history (``replay_disabled``: its config says enableReplay false)",
    "413": "the body is larger than the hub takes",
    "429": "too many requests from this address (``Retry-After`` says when to retry)",
    "503": "the hub is shutting down, a connection limit is reached or the store fails",
}


def _responses() -> dict[str, Any]:
    out = {}
    for status, description in _ERRORS.items():
        headers: dict[str, Any] = {}
        if status == "401":
            headers["WWW-Authenticate"] = {"schema": {"type": "string"}}
        if status == "429":
            headers["Retry-After"] = {
                "schema": {"type": "string"},
                "description": "seconds to wait",
            }
        answer = _json(_ref("Error"), description)
        if headers:
            answer["headers"] = headers
        out[status] = answer
    return out


def _errors(*statuses: int) -> dict[str, Any]:
    # Every route can meet a path of no route (404/405) and a bad request (400).
    wanted = sorted({400, 404, 405, *statuses})
    return {str(s): {"$ref": f"#/components/responses/{s}"} for s in wanted}


_READ: Final = (401, 403, 429)
_WRITE: Final = (401, 403, 413, 429, 503)


def _op(
    operation_id: str,
    summary: str,
    ok: dict[str, Any],
    *,
    errors: tuple[int, ...] = _READ,
    parameters: tuple[str, ...] = (),
    extra: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
    scope: str | None = "read",
    tags: tuple[str, ...] = ("streams",),
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": list(tags),
        "parameters": [{"$ref": f"#/components/parameters/{p}"} for p in parameters] + list(extra),
        "responses": {**ok, **_errors(*errors)},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if scope is None:
        operation["security"] = []
    else:
        operation["x-scope"] = scope
    return operation


def _stream_op(*args: Any, parameters: tuple[str, ...] = (), **kwargs: Any) -> dict[str, Any]:
    return _op(*args, parameters=("streamId", *parameters), **kwargs)


def _paths(config: HubConfig) -> dict[str, Any]:
    limit = LIMITS.page
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "/": {
            "get": _op(
                "dashboardList",
                "The dashboard: the list of streams (a page for browsers)",
                {"200": {"description": "the page", "content": html}},
                errors=(),
                scope=None,
                tags=("dashboard",),
            )
        },
        "/streams/{stream_id}": {
            "get": _op(
                "dashboardStream",
                "The dashboard: one stream (a page for browsers)",
                {"200": {"description": "the page", "content": html}},
                parameters=("streamId",),
                errors=(),
                scope=None,
                tags=("dashboard",),
            )
        },
        "/web/{name}": {
            "get": _op(
                "dashboardFile",
                "A static file of the dashboard (scripts, styles, licences)",
                {
                    "200": {
                        "description": "the file, with its ``ETag``",
                        "content": {"*/*": {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "``If-None-Match`` names the current file"},
                },
                extra=(
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                ),
                errors=(),
                scope=None,
                tags=("dashboard",),
            )
        },
        "/login": {
            "post": _op(
                "login",
                "Keep a token that may read in an HttpOnly, SameSite=Strict cookie",
                {"204": {"description": "kept (the cookie is set when the hub has tokens)"}},
                errors=(401, 403, 413, 429),
                body=_ref("Login"),
                scope=None,
                tags=("dashboard",),
            )
        },
        "/api/streams/{stream_id}/export": {
            "get": _stream_op(
                "exportEvents",
                "Every event the filters pass, as JSON lines (a download)",
                {
                    "200": {
                        "description": "one event (see Event) per line",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                    }
                },
                parameters=_FILTERS,
            )
        },
        "/healthz": {
            "get": _op(
                "getHealth",
                "Whether the hub is up, and its store's epoch",
                {"200": _json(_ref("Health"), "the hub is up")},
                errors=(),
                scope=None,
                tags=("hub",),
            )
        },
        OPENAPI_PATH: {
            "get": _op(
                "getOpenApi",
                "This document",
                {"200": _json({"type": "object"}, "the OpenAPI 3.1 document")},
                errors=(),
                scope=None,
                tags=("hub",),
            )
        },
        "/metrics": {
            "get": _op(
                "getPrometheusMetrics",
                "The hub's figures in the Prometheus text format",
                {
                    "200": {
                        "description": "the Prometheus text exposition format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                tags=("hub",),
            )
        },
        "/api/streams/metrics": {
            "get": _op(
                "getMetrics",
                "The hub's figures as JSON",
                {"200": _json(_ref("Metrics"), "streams, clients, rates, memory, errors")},
                tags=("hub",),
            )
        },
        "/api/streams": {
            "get": _op(
                "listStreams",
                "Streams, newest first",
                {"200": _json(_ref("StreamList"), "the streams")},
                extra=(
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": LIMITS.list_page},
                        "at most",
                    ),
                    _query(
                        "status",
                        {"type": "string", "enum": [s.value for s in SessionStatus]},
                        "only streams with this status",
                    ),
                    _query(
                        "offset",
                        {"type": "integer", "minimum": 0, "maximum": LIMITS.list_skip},
                        "streams to skip",
                    ),
                    _query("q", {"type": "string"}, "only streams whose id or command has it"),
                ),
            ),
            "post": _op(
                "createStream",
                "Create a live stream",
                {
                    "201": _json(
                        _ref("Stream"),
                        "the stream, created",
                        headers={"Location": {"schema": {"type": "string"}}},
                    )
                },
                errors=(*_WRITE, 409),
                body=_ref("NewStream"),
                scope="publish",
            ),
        },
        "/api/streams/{stream_id}": {
            "get": _stream_op("getStream", "A stream", {"200": _json(_ref("Stream"), "it")}),
            "delete": _stream_op(
                "deleteStream",
                "End a stream and delete it with its history",
                {"200": _json(_ref("Deleted"), "deleted")},
                errors=_WRITE,
                scope="publish",
            ),
        },
        "/api/streams/{stream_id}/clients": {
            "get": _stream_op(
                "listClients",
                "The stream's connected WebSocket and SSE clients",
                {"200": _json(_ref("ClientList"), "the clients")},
            )
        },
        "/api/streams/{stream_id}/clients/{client_id}": {
            "delete": _stream_op(
                "disconnectClient",
                "Disconnect a client (WebSocket close code 4004)",
                {"200": _json(_ref("Disconnected"), "it is being disconnected")},
                parameters=("clientId",),
                errors=_WRITE,
                scope="publish",
            )
        },
        "/api/streams/{stream_id}/history": {
            "get": _stream_op(
                "getHistory",
                "Recorded events, filtered and paged (gzipped when large and accepted)",
                {"200": _json(_ref("History"), "the events")},
                parameters=("after", *_FILTERS),
                extra=(
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": limit}, "at most"),
                    _query(
                        "offset",
                        {"type": "integer", "minimum": 0, "maximum": LIMITS.history_skip},
                        "matching events to skip",
                    ),
                    _query("lastN", _LAST_N, "the last N matching events"),
                ),
            )
        },
        "/api/streams/{stream_id}/replay/{client_id}": {
            "post": _stream_op(
                "replayToClient",
                "Send a connected WebSocket client history in replay frames",
                {"202": _json(_ref("ReplayQueued"), "queued")},
                parameters=("clientId",),
                errors=(*_WRITE, 409),
                body=_ref("ReplayRequest"),
                scope="publish",
            )
        },
        "/api/streams/{stream_id}/events": {
            "post": _stream_op(
                "publishEvents",
                f"Publish one event or a list of at most {config.max_batch}",
                {"200": _json(_ref("PublishResult"), "placed")},
                errors=(*_WRITE, 409),
                body=_ref("PublishRequest"),
                scope="publish",
            )
        },
        "/api/streams/{stream_id}/stats": {
            "get": _stream_op(
                "getStats",
                "Event types and client activity over a time window",
                {"200": _json(_ref("Stats"), "the figures")},
                parameters=_FILTERS,
            )
        },
        "/api/streams/{stream_id}/sse": {
            "get": _stream_op(
                "subscribeSse",
                "Follow the stream as Server-Sent Events",
                {
                    "200": {
                        "description": (
                            "``stream_event`` events (``id`` is the offset), ``heartbeat``, "
                            "``notice`` (history_lost), ``replay``, then ``end`` or ``error``"
                        ),
                        "content": {"text/event-stream": {"schema": _ref("SseEvent")}},
                    },
                    "204": {"description": "the stream has ended and nothing follows"},
                },
                parameters=("epoch", "protocol", *_FILTERS),
                errors=(*_READ, 409, 503),
                extra=(
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "schema": {"type": "string"},
                        "description": "resume after this offset (wins over lastEventId)",
                    },
                    _query("lastEventId", {"type": "string"}, "resume after this offset"),
                    _query("lastN", _LAST_N, "start with the last N events"),
                    _query(
                        "fromTimestamp",
                        {"type": "string"},
                        "start at this time (epoch seconds or ISO 8601)",
                    ),
                ),
            )
        },
        "/api/streams/{stream_id}/poll": {
            "get": _stream_op(
                "pollEvents",
                "Long polling: the events after a cursor, at once or after a wait",
                {"200": _json(_ref("Poll"), "the events (none when the wait ran out)")},
                parameters=("after", "epoch", *_FILTERS),
                extra=(
                    _query(
                        "timeout",
                        {"type": "number", "minimum": 0, "maximum": config.max_poll_timeout},
                        "seconds to wait for an event (default 25)",
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": limit},
                        "at most",
                    ),
                ),
            )
        },
        "/api/streams/{stream_id}/ws": {
            "get": _stream_op(
                "subscribeWebSocket",
                "Open a subscriber WebSocket (messages: see the protocol documentation)",
                {"101": {"description": "the WebSocket is open"}},
                parameters=("after", "epoch", *_FILTERS),
                errors=(*_READ, 409, 503),
                extra=(
                    _query(
                        "protocol",
                        {"type": "string", "enum": ["tstream", PROTOCOL, COLUMNS_PROTOCOL]},
                        f"``{PROTOCOL}``: messages in the Executor Streamer design's shapes; "
                        f"``{COLUMNS_PROTOCOL}``: lines as columns (tstream's own clients)",
                    ),
                ),
            )
        },
        "/api/streams/{stream_id}/publish": {
            "get": _stream_op(
                "publishWebSocket",
                "Open a publishing WebSocket: each message is what publishEvents takes",
                {"101": {"description": "the WebSocket is open"}},
                errors=(*_READ, 503),
                extra=(
                    _query(
                        "create",
                        {"type": "string", "enum": ["1", "true"]},
                        "create the stream if it does not exist",
                    ),
                    _query(
                        "protocol",
                        {"type": "string", "enum": ["tstream", COLUMNS_PROTOCOL]},
                        f"``{COLUMNS_PROTOCOL}``: messages may also carry lines as columns",
                    ),
                ),
                scope="publish",
            )
        },
    }


def openapi_document(config: HubConfig) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a hub configured by ``config``.

    Args:
        config: the hub's settings (limits appear in the schemas).

    Returns:
        The document, as plain JSON data.
    """
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tstream hub",
            "version": __version__,
            "description": (
                "Live and recorded streams of events over REST, WebSocket, Server-Sent Events "
                'and long polling. Every error is ``{"error": {"code", "message", …}}``. '
                "When the hub has tokens, reading needs the ``read`` scope and changing "
                "anything the ``publish`` scope (``x-scope`` of each operation); a token is "
                "taken from the Authorization header, the tstream_token cookie or the "
                "access_token query parameter, in that order."
            ),
        },
        "tags": [{"name": "hub"}, {"name": "streams"}, {"name": "dashboard"}],
        "security": [{}, {"bearer": []}, {"accessToken": []}, {"cookie": []}],
        "paths": _paths(config),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "accessToken": {"type": "apiKey", "in": "query", "name": "access_token"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "tstream_token"},
            },
            "schemas": {**_event_schemas(), **_answer_schemas(config)},
            "parameters": _parameters(config),
            "responses": _responses(),
        },
    }
