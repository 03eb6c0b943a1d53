"""The Executor Streamer design's own shapes: its ``StreamConfig`` applied per stream,
and its ``StreamEvent``, WebSocket ``ServerMessage`` and SSE events as a second encoding
of what the hub sends.

What a client written from the design sends is accepted everywhere, always (event types
as ``COMMAND_STARTED``, ISO 8601 times, ``StreamFilter[]``, ``HistoryFilter``: see
:mod:`trio_stream.hub.protocol` and :mod:`trio_stream.hub.ingest`). What the hub sends
takes the design's shapes only when the client asks with ``?protocol=executor-streamer``
on the WebSocket or SSE URL; tstream's own clients keep the batched protocol.

The encodings that send these shapes are :class:`~trio_stream.hub.encodings.DesignWebSocket`
and :class:`~trio_stream.hub.encodings.DesignSSE`. Events are encoded once per tick
however many clients receive them, as the native encoding's are: a ``StreamEvent`` is
spliced from the event's JSON (its ``data`` is not encoded again), and the WebSocket
messages of a tick are framed together, so that one socket write carries them.

The other messages are the native ones reshaped (:func:`ws_message`): an ``error`` gets
its ``{code, message}`` under ``error`` (codes in upper case, ``BAD_FILTER``) and the
rest under ``metadata``; ``connection_ack`` and ``pong`` keep their fields under
``metadata``; the answers to ``subscribe``, ``unsubscribe`` and ``filter`` are a
``connection_ack`` whose ``metadata.request`` names the request; a heartbeat is a
``pong`` with ``metadata.heartbeat``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, final

import attrs
import orjson

from ..filters import EventFilter
from .config import HubConfig
from .errors import HubError, ProtocolError
from .params import LIMITS, parse_filters

PROTOCOL: Final = "executor-streamer"
"""The ``protocol`` query parameter that asks for the design's shapes."""

CONFIG_KEYS: Final = (
    "maxHistorySize",
    "bufferSize",
    "enableReplay",
    "compressionEnabled",
    "heartbeatInterval",
    "maxClients",
    "eventFilters",
    "persistence",
)
PERSISTENCE_KEYS: Final = ("enabled", "storageType", "retentionPeriod")
STORAGE_TYPES: Final = ("memory", "file", "database")
CLIENT_TYPES: Final = {
    "websocket": "WEBSOCKET",
    "sse": "SERVER_SENT_EVENTS",
    "poll": "HTTP_POLLING",
}
"""tstream's transports and the design's ``ClientType``."""


class ConfigError(HubError):
    """A ``StreamConfig`` field the hub refuses (400, naming it in ``field``)."""

    code = "bad_config"


def _number(value: Any, where: str, integer: bool) -> float:
    # Bounded, so that one stream cannot take the hub's memory or wake it constantly.
    low, high = LIMITS.stream_config[where.rsplit(".", 1)[-1]]
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = "an integer" if integer else "a number"
        raise ConfigError(f"{where}: expected {what}, got {value!r}", field=where)
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{where}: must be {low} to {high}, not {value!r}", field=where)
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}", field=where)
    return value


def check_config(given: Any) -> dict[str, Any]:
    """Check a ``StreamConfig`` (all of it or some fields) from outside.

    Returns:
        The fields given, as the hub keeps them (in the session's metadata).

    Raises:
        ConfigError: naming the first bad or unknown field (``config.maxClients``).
    """
    if not isinstance(given, Mapping):
        raise ConfigError("config: expected an object", field="config")
    unknown = sorted(set(given) - set(CONFIG_KEYS))
    if unknown:
        where = f"config.{unknown[0]}"
        raise ConfigError(f"{where}: unknown field", field=where)
    out: dict[str, Any] = {}
    for key in ("maxHistorySize", "bufferSize", "maxClients"):
        if key in given:
            out[key] = _number(given[key], f"config.{key}", integer=True)
    if "heartbeatInterval" in given:
        out["heartbeatInterval"] = _number(
            given["heartbeatInterval"], "config.heartbeatInterval", integer=False
        )
    for key in ("enableReplay", "compressionEnabled"):
        if key in given:
            out[key] = _bool(given[key], f"config.{key}")
    if "eventFilters" in given:
        try:
            parse_filters(given["eventFilters"])
        except ProtocolError as exc:
            where = "config.eventFilters"
            message = exc.message.replace("filters", where, 1)
            raise ConfigError(message, field=where) from None
        out["eventFilters"] = given["eventFilters"]
    if "persistence" in given:
        persistence = given["persistence"]
        if not isinstance(persistence, Mapping):
            where = "config.persistence"
            raise ConfigError(f"{where}: expected an object", field=where)
        unknown = sorted(set(persistence) - set(PERSISTENCE_KEYS))
        if unknown:
            where = f"config.persistence.{unknown[0]}"
            raise ConfigError(f"{where}: unknown field", field=where)
        kept: dict[str, Any] = {}
        if "enabled" in persistence:
            kept["enabled"] = _bool(persistence["enabled"], "config.persistence.enabled")
        if "storageType" in persistence:
            kind = persistence["storageType"]
            if kind not in STORAGE_TYPES:
                where = "config.persistence.storageType"
                raise ConfigError(
                    f"{where}: use {', '.join(STORAGE_TYPES)}, not {kind!r}", field=where
                )
            kept["storageType"] = kind
        if "retentionPeriod" in persistence:
            kept["retentionPeriod"] = _number(
                persistence["retentionPeriod"], "config.persistence.retentionPeriod", False
            )
        out["persistence"] = kept
    return out


@final
@attrs.frozen
class StreamSettings:
    """A stream's ``StreamConfig`` in force: what was given, the hub's settings for the
    rest.

    Attributes:
        history: events kept in memory (``maxHistorySize``).
        client_queue: events waiting for one client before it is cut (``bufferSize``).
        replay: whether clients may replay or resume (``enableReplay``).
        compression: whether WebSocket messages and history may be compressed.
        heartbeat: seconds between heartbeats (``heartbeatInterval`` is in ms).
        max_clients: subscribers at once (``maxClients``).
        filters: the filters of a client that gives none (``eventFilters``).
        filters_json: those as given.
        enabled: ``persistence.enabled``.
        persist: whether events are written to the hub's store (enabled, and not
            ``memory``).
        storage_type: ``memory`` (the hub's memory only), ``file`` or ``database`` (its
            store).
        retention: seconds after which the ended stream is destroyed, when given.
    """

    history: int
    client_queue: int
    replay: bool
    compression: bool
    heartbeat: float
    max_clients: int
    filters: EventFilter
    filters_json: Any
    enabled: bool
    persist: bool
    storage_type: str
    retention: float | None

    @classmethod
    def of(cls, given: Mapping[str, Any] | None, hub: HubConfig, store_kind: str) -> StreamSettings:
        """The settings of a stream created with ``given`` (checked by
        :func:`check_config`) on a hub with ``hub`` settings and a ``store_kind`` store."""
        given = given or {}
        persistence = given.get("persistence", {})
        enabled = persistence.get("enabled", True)
        storage = persistence.get("storageType", store_kind)
        retention = persistence.get("retentionPeriod")
        filters_json = given.get("eventFilters", [])
        return cls(
            history=given.get("maxHistorySize", hub.history),
            client_queue=given.get("bufferSize", hub.client_queue),
            replay=given.get("enableReplay", True),
            compression=given.get("compressionEnabled", hub.compression) and hub.compression,
            heartbeat=given.get("heartbeatInterval", hub.heartbeat * 1000) / 1000,
            max_clients=given.get("maxClients", hub.max_clients_per_stream),
            filters=parse_filters(filters_json),
            filters_json=filters_json,
            enabled=enabled,
            # ``memory`` asked for keeps the events in the hub's memory only; the hub's
            # own store (which may be a memory store) otherwise.
            persist=enabled and persistence.get("storageType") != "memory",
            storage_type=storage,
            retention=None if retention is None else retention / 1000,
        )

    def to_json(self, hub: HubConfig) -> dict[str, Any]:
        """The design's ``StreamConfig`` of these settings."""
        retention = self.retention if self.retention is not None else hub.retention
        return {
            "maxHistorySize": self.history,
            "bufferSize": self.client_queue,
            "enableReplay": self.replay,
            "compressionEnabled": self.compression,
            "heartbeatInterval": _milliseconds(self.heartbeat),
            "maxClients": self.max_clients,
            "eventFilters": self.filters_json,
            "persistence": {
                "enabled": self.enabled,
                "storageType": self.storage_type,
                "retentionPeriod": _milliseconds(retention),
            },
        }


def _milliseconds(seconds: float) -> float | int:
    value = round(seconds * 1000, 3)
    return int(value) if value.is_integer() else value


# -- what is sent ----------------------------------------------------------------------


def iso_time(ts: float) -> str:
    """Epoch seconds as ISO 8601 in UTC (``2026-01-01T10:00:00.250000Z``)."""
    try:
        moment = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        # Published by tstream's own form with a time no date can name.
        moment = datetime.max.replace(tzinfo=UTC) if ts > 0 else datetime.min.replace(tzinfo=UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def stream_events(raws: Sequence[bytes]) -> list[bytes]:
    """The design's ``StreamEvent`` of each event JSON (``event_to_json``'s bytes):
    ``{id, type, timestamp, sessionId, offset, data}``, the data spliced in as it is."""
    out: list[bytes] = []
    last_ts: Any = None
    stamp = b""
    for raw in raws:
        # ``data`` is the event's last key, and no field before it can hold the marker.
        cut = raw.index(b',"data":')
        head = orjson.loads(raw[:cut] + b"}")
        ts = head["ts"]
        if ts != last_ts:
            last_ts, stamp = ts, iso_time(ts).encode()
        out.append(
            b'{"id":%s,"type":"%s","timestamp":"%s","sessionId":%s,"offset":%d,%s'
            % (
                orjson.dumps(head["id"]),
                head["type"].upper().encode(),
                stamp,
                orjson.dumps(head["session"]),
                head["offset"],
                raw[cut + 1 :],
            )
        )
    return out


def event_messages(events: Sequence[bytes], *, replay: bool = False) -> list[bytes]:
    """One ``{"type": "event", "event": StreamEvent}`` message per event; a replay's
    carry ``metadata.replay``."""
    tail = b',"metadata":{"replay":true}}' if replay else b"}"
    return [b'{"type":"event","event":%s%s' % (event, tail) for event in events]


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The design's ``{code, message}`` (codes in upper case), with ``extra`` fields."""
    return {"code": code.upper(), "message": message, **extra}


_REQUESTS: Final = {
    "subscribed": "subscribe",
    "unsubscribed": "unsubscribe",
    "filter_set": "filter",
}


def ws_message(native: bytes) -> bytes | None:
    """The design's ``ServerMessage`` for a native message other than events (None for
    ``end``: the close that follows says it)."""
    fields = orjson.loads(native)
    kind = fields.pop("type")
    if kind == "error":
        code = fields.pop("code")
        message = fields.pop("message")
        out: dict[str, Any] = {"type": "error", "error": error_body(code, message)}
    elif kind in ("connection_ack", "pong"):
        out = {"type": kind}
    elif kind in _REQUESTS:
        out = {"type": "connection_ack"}
        fields = {"request": _REQUESTS[kind], **fields}
    elif kind == "heartbeat":
        out = {"type": "pong"}
        fields = {"heartbeat": True, **fields}
    else:
        return None
    if fields:
        out["metadata"] = fields
    return orjson.dumps(out)
