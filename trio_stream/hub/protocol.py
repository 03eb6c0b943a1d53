"""The hub's WebSocket message protocol, sans-IO: parse client messages, build server frames.

Nothing here does I/O. :func:`parse_client_message` turns one text message into a typed
message or raises :class:`ProtocolError` (its ``code`` goes into an ``error`` frame and the
connection stays up); the ``*_frame`` functions build the server's messages as bytes.
Events arrive already serialized (``events.event_to_json``) and are spliced into frames
as they are, so each event is encoded once however many clients receive it.

The protocol
============

A client connects to ``/api/streams/{id}/ws`` (optionally ``?after=N&epoch=E`` to
subscribe at once, resuming after offset ``N``). Every message is one JSON object with a
``type``.

Client to server:

``{"type": "subscribe", "streamId": "…", "filters": {…}, "replayOptions": {…}}``
    Start receiving events. ``streamId`` may be left out (it must match the URL).
    Without ``replayOptions`` the subscription starts at the live end; with
    ``{"fromOffset": N}`` it resumes after offset N (no gap, no duplicate),
    ``{"fromTimestamp": T}`` starts at the first event at or after T (epoch seconds),
    ``{"lastN": N}`` starts with the last N events the filters pass. ``"epoch"`` may
    carry the store epoch the client saw: if it differs, the offsets are from a history
    that is gone and the client gets everything that remains, with ``recovered: false``.
``{"type": "unsubscribe"}``
    Stop receiving events (the connection stays open).
``{"type": "replay", "replayOptions": {…}, "filters": {…}, "limit": N}``
    Send matching history in ``replay`` frames, without touching the live subscription.
``{"type": "filter", "filters": {…}}``
    Replace the live subscription's filters.
``{"type": "ping", "id": …}``
    Answered by ``pong`` with the same ``id``.
``{"type": "pong"}``
    The answer to a server ``heartbeat``. Any message counts as activity; a client that
    sends nothing for ``idle_timeout`` after a heartbeat is closed with 4009.

Filters (also the query parameters of ``/history``, ``/sse`` and ``/poll``):
``eventTypes`` (list of event types), ``sources`` (``stdout``/``stderr``; non-output events
always pass), ``startTime``/``endTime`` (epoch seconds, inclusive), ``searchText``
(case-insensitive substring of the line, or of the event's JSON for other events) and
``pattern`` (a regular expression searched the same way, at most 256 characters, no
nested repetition).

Server to client:

``{"type": "connection_ack", "clientId", "streamId", "status", "lastOffset", "epoch",
"recovered", "heartbeat"}``
    First message. ``recovered`` is null unless the URL asked to resume.
``{"type": "subscribed", "streamId", "fromOffset", "lastOffset", "recovered"}``
    Answer to ``subscribe``; events after ``fromOffset`` follow.
``{"type": "event", "streamId", "events": [event, …]}``
    Every event of one tick, in offset order. The last event of an ended stream is its
    ``session_ended``.
``{"type": "end", "streamId", "lastOffset"}``
    The stream ended and everything was sent; the hub then closes with 1000
    ``stream_ended``.
``{"type": "replay", "streamId", "events": [event, …], "done": bool}``
    History asked for with ``replay`` (or ``POST …/replay/{clientId}``).
``{"type": "unsubscribed"}``, ``{"type": "filter_set", "filters": {…}}``
    Answers to ``unsubscribe`` and ``filter``.
``{"type": "heartbeat", "time", "clients"}``
    Every heartbeat interval.
``{"type": "pong", "id", "time"}``
    Answer to ``ping``.
``{"type": "error", "code", "message", …}``
    ``malformed_json``, ``invalid_message``, ``unknown_type``, ``bad_filter``,
    ``bad_replay``, ``wrong_stream``, ``not_subscribed``, ``rate_limited``: the connection
    stays up. ``slow_consumer``, ``idle_timeout``, ``disconnected`` and ``shutdown`` come
    with ``lastOffset`` (the last offset this client was sent) just before the close.

Close codes: 1000 stream ended, 1001 hub shutting down, 1007 invalid UTF-8, 1009 message
too big, 4004 disconnected by an operator, 4008 slow consumer, 4009 idle timeout.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Iterable, Mapping

# The parsed form of a pattern, to look for nested repetition; public in all but name.
from re import _parser as _sre_parser  # type: ignore[attr-defined]
from typing import Any, Final, TypeAlias, final

import attrs
import orjson

from ..events import SOURCES, Event, EventType, Output, converter
from ..limits import over_limits
from ..store.base import HistoryQuery

MAX_PATTERN_LENGTH: Final = 256
MAX_SEARCH_LENGTH: Final = 1024
MAX_SEARCHED_TEXT: Final = 64 * 1024
MAX_REPLAY: Final = 100_000


class CloseCode(enum.IntEnum):
    """WebSocket close codes the hub uses."""

    NORMAL = 1000  # the stream ended
    GOING_AWAY = 1001  # the hub is shutting down
    INVALID_PAYLOAD = 1007  # invalid UTF-8 (sent by the WebSocket layer)
    TOO_BIG = 1009  # oversize message (sent by the WebSocket layer)
    INTERNAL = 1011  # the stream failed on the hub
    DISCONNECTED = 4004
    SLOW_CONSUMER = 4008
    IDLE_TIMEOUT = 4009


class ProtocolError(ValueError):
    """A client message or parameter the hub refuses; the connection stays up.

    Attributes:
        code: machine-readable (``bad_filter``), sent as the error frame's ``code``.
        message: for people, naming the field.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


# -- filters ---------------------------------------------------------------------------


def _check_pattern(text: str) -> re.Pattern[str]:
    """Compile a client's regular expression, refusing what could run for ages.

    Python's ``re`` has no timeout, so the pattern is bounded in length, searched over a
    bounded text, and refused when a repetition contains another repetition (``(a+)+``),
    the shape behind catastrophic backtracking.
    """
    if len(text) > MAX_PATTERN_LENGTH:
        raise ProtocolError(
            "bad_filter", f"filters.pattern: longer than {MAX_PATTERN_LENGTH} characters"
        )
    try:
        compiled = re.compile(text)
    except re.error as exc:
        raise ProtocolError("bad_filter", f"filters.pattern: {exc}") from None

    def walk(items: Any, inside_repeat: bool) -> None:
        for op, arg in items:
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                low, high, sub = arg
                if inside_repeat and high != low:
                    raise ProtocolError(
                        "bad_filter", "filters.pattern: nested repetition is not allowed"
                    )
                walk(sub, inside_repeat or high != low)
            elif name == "SUBPATTERN":
                walk(arg[-1], inside_repeat)
            elif name == "BRANCH":
                for branch in arg[1]:
                    walk(branch, inside_repeat)
            elif name in ("ASSERT", "ASSERT_NOT"):
                walk(arg[1], inside_repeat)

    walk(_sre_parser.parse(text), False)
    return compiled


def _number(obj: Mapping[str, Any], key: str, where: str, code: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(code, f"{where}.{key}: expected a number, got {value!r}")
    return float(value)


def _int(obj: Mapping[str, Any], key: str, where: str, code: str, minimum: int) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(code, f"{where}.{key}: expected an integer, got {value!r}")
    if value < minimum:
        raise ProtocolError(code, f"{where}.{key}: must be at least {minimum}, not {value}")
    return value


def _string_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError("bad_filter", f"{where}: expected a list of strings")
    if len(value) > 64:
        raise ProtocolError("bad_filter", f"{where}: at most 64 values")
    return value


@final
@attrs.frozen
class EventFilter:
    """Which events a client wants; the empty filter passes everything."""

    types: frozenset[EventType] | None = None
    sources: frozenset[str] | None = None
    start_time: float | None = None
    end_time: float | None = None
    search_text: str | None = None
    pattern: re.Pattern[str] | None = None

    @property
    def empty(self) -> bool:
        """Whether this filter passes everything."""
        return self == _EMPTY

    def matches(self, event: Event, raw: bytes | None = None) -> bool:
        """Whether ``event`` (serialized as ``raw``, when at hand) passes."""
        if self.types is not None and event.type not in self.types:
            return False
        data = event.data
        if self.sources is not None and type(data) is Output and data.source not in self.sources:
            return False
        if self.start_time is not None and event.ts < self.start_time:
            return False
        if self.end_time is not None and event.ts > self.end_time:
            return False
        if self.search_text is None and self.pattern is None:
            return True
        if type(data) is Output:
            text = data.text
        elif raw is not None:
            # The serialized data, as the store searches it: ``data`` is the event's last
            # key, and no field before it can contain the marker.
            text = raw[raw.index(b',"data":') + 8 : -1].decode()
        else:
            text = orjson.dumps(_data_of(event)).decode()
        text = text[:MAX_SEARCHED_TEXT]
        if self.search_text is not None and self.search_text not in text.casefold():
            return False
        return self.pattern is None or self.pattern.search(text) is not None

    def to_query(
        self,
        *,
        after: int = -1,
        limit: int | None = None,
        skip: int = 0,
        last: int | None = None,
    ) -> HistoryQuery:
        """The store query for this filter (``pattern`` is applied by the caller)."""
        return HistoryQuery(
            after=after,
            types=self.types,
            sources=self.sources,
            start_time=self.start_time,
            end_time=self.end_time,
            search_text=self.search_text,
            limit=limit,
            skip=skip,
            last=last,
        )

    def to_json(self) -> dict[str, Any]:
        """The wire form (what :func:`parse_filters` reads back)."""
        out: dict[str, Any] = {}
        if self.types is not None:
            out["eventTypes"] = sorted(t.value for t in self.types)
        if self.sources is not None:
            out["sources"] = sorted(self.sources)
        if self.start_time is not None:
            out["startTime"] = self.start_time
        if self.end_time is not None:
            out["endTime"] = self.end_time
        if self.search_text is not None:
            out["searchText"] = self.search_text
        if self.pattern is not None:
            out["pattern"] = self.pattern.pattern
        return out


_EMPTY: Final = EventFilter()
FILTER_KEYS: Final = ("eventTypes", "sources", "startTime", "endTime", "searchText", "pattern")


def _data_of(event: Event) -> Any:
    return converter.unstructure(event.data)


def parse_filters(obj: Any) -> EventFilter:
    """Check and build a filter from its wire form (a JSON object or query parameters).

    Raises:
        ProtocolError: ``bad_filter``, naming the field.
    """
    if obj is None:
        return _EMPTY
    if not isinstance(obj, Mapping):
        raise ProtocolError("bad_filter", f"filters: expected an object, got {_kind(obj)}")
    unknown = sorted(set(obj) - set(FILTER_KEYS))
    if unknown:
        raise ProtocolError("bad_filter", f"filters.{unknown[0]}: unknown filter")
    types = None
    if obj.get("eventTypes") is not None:
        names = _string_list(obj["eventTypes"], "filters.eventTypes")
        try:
            types = frozenset(EventType(n) for n in names)
        except ValueError:
            bad = next(n for n in names if n not in EventType._value2member_map_)
            raise ProtocolError(
                "bad_filter", f"filters.eventTypes: unknown event type {bad!r}"
            ) from None
    sources = None
    if obj.get("sources") is not None:
        names = _string_list(obj["sources"], "filters.sources")
        bad_sources = [n for n in names if n not in SOURCES]
        if bad_sources:
            raise ProtocolError("bad_filter", f"filters.sources: unknown source {bad_sources[0]!r}")
        sources = frozenset(names)
    start = _number(obj, "startTime", "filters", "bad_filter")
    end = _number(obj, "endTime", "filters", "bad_filter")
    if start is not None and end is not None and end < start:
        raise ProtocolError("bad_filter", "filters.endTime: before startTime")
    search = obj.get("searchText")
    if search is not None:
        if not isinstance(search, str) or not search:
            raise ProtocolError("bad_filter", "filters.searchText: expected a non-empty string")
        if len(search) > MAX_SEARCH_LENGTH:
            raise ProtocolError(
                "bad_filter", f"filters.searchText: longer than {MAX_SEARCH_LENGTH} characters"
            )
        search = search.casefold()
    pattern = None
    if obj.get("pattern") is not None:
        if not isinstance(obj["pattern"], str) or not obj["pattern"]:
            raise ProtocolError("bad_filter", "filters.pattern: expected a non-empty string")
        pattern = _check_pattern(obj["pattern"])
    return EventFilter(types, sources, start, end, search, pattern)


# -- replay options --------------------------------------------------------------------


@final
@attrs.frozen
class ReplayOptions:
    """Where history starts: after an offset, at a time, or the last N events."""

    from_offset: int | None = None
    from_timestamp: float | None = None
    last_n: int | None = None
    epoch: str | None = None


REPLAY_KEYS: Final = ("fromOffset", "fromTimestamp", "lastN", "epoch")


def parse_replay_options(obj: Any) -> ReplayOptions:
    """Check and build replay options.

    Raises:
        ProtocolError: ``bad_replay``, naming the field.
    """
    if not isinstance(obj, Mapping):
        raise ProtocolError("bad_replay", f"replayOptions: expected an object, got {_kind(obj)}")
    unknown = sorted(set(obj) - set(REPLAY_KEYS))
    if unknown:
        raise ProtocolError("bad_replay", f"replayOptions.{unknown[0]}: unknown option")
    from_offset = _int(obj, "fromOffset", "replayOptions", "bad_replay", -1)
    from_ts = _number(obj, "fromTimestamp", "replayOptions", "bad_replay")
    last_n = _int(obj, "lastN", "replayOptions", "bad_replay", 1)
    given = [
        k
        for k, v in (("fromOffset", from_offset), ("fromTimestamp", from_ts), ("lastN", last_n))
        if v is not None
    ]
    if len(given) > 1:
        raise ProtocolError(
            "bad_replay",
            f"replayOptions: give one of fromOffset, fromTimestamp, lastN, not {given}",
        )
    if last_n is not None and last_n > MAX_REPLAY:
        raise ProtocolError("bad_replay", f"replayOptions.lastN: at most {MAX_REPLAY}")
    epoch = obj.get("epoch")
    if epoch is not None and (not isinstance(epoch, str) or len(epoch) > 128):
        raise ProtocolError("bad_replay", "replayOptions.epoch: expected a string")
    return ReplayOptions(from_offset, from_ts, last_n, epoch)


# -- client messages -------------------------------------------------------------------


@final
@attrs.frozen
class Subscribe:
    """Start receiving events, from where ``replay`` says (the live end if None)."""

    filters: EventFilter = _EMPTY
    replay: ReplayOptions | None = None


@final
@attrs.frozen
class Unsubscribe:
    """Stop receiving events."""


@final
@attrs.frozen
class Replay:
    """Send history in ``replay`` frames."""

    replay: ReplayOptions
    filters: EventFilter = _EMPTY
    limit: int | None = None


@final
@attrs.frozen
class SetFilter:
    """Replace the subscription's filters."""

    filters: EventFilter


@final
@attrs.frozen
class Ping:
    """Ask for a ``pong``."""

    id: Any = None


@final
@attrs.frozen
class Pong:
    """The answer to a heartbeat."""


ClientMessage: TypeAlias = Subscribe | Unsubscribe | Replay | SetFilter | Ping | Pong

_ALLOWED: Final[Mapping[str, frozenset[str]]] = {
    "subscribe": frozenset({"type", "streamId", "filters", "replayOptions"}),
    "unsubscribe": frozenset({"type", "streamId"}),
    "replay": frozenset({"type", "streamId", "filters", "replayOptions", "limit"}),
    "filter": frozenset({"type", "streamId", "filters"}),
    "ping": frozenset({"type", "id"}),
    "pong": frozenset({"type", "id"}),
}


def parse_client_message(data: str | bytes, *, stream_id: str) -> ClientMessage:
    """Parse one message a client sent on the stream ``stream_id``.

    Raises:
        ProtocolError: ``malformed_json``, ``invalid_message``, ``unknown_type``,
            ``wrong_stream``, ``bad_filter`` or ``bad_replay``.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("malformed_json", f"message is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ProtocolError("invalid_message", f"message: expected an object, got {_kind(obj)}")
    problem = over_limits(data if isinstance(data, str) else data.decode(), obj)
    if problem is not None:
        raise ProtocolError("invalid_message", f"message: {problem}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", "type: required string field missing")
    allowed = _ALLOWED.get(kind)
    if allowed is None:
        raise ProtocolError(
            "unknown_type",
            f"type: unknown message type {kind[:64]!r} (use {', '.join(sorted(_ALLOWED))})",
        )
    extra = sorted(set(obj) - allowed)
    if extra:
        raise ProtocolError("invalid_message", f"{extra[0]}: unknown field for {kind}")
    if "streamId" in obj and obj["streamId"] != stream_id:
        raise ProtocolError(
            "wrong_stream", f"streamId: this connection serves stream {stream_id!r}"
        )
    if kind == "subscribe":
        replay = obj.get("replayOptions")
        return Subscribe(
            parse_filters(obj.get("filters")),
            None if replay is None else parse_replay_options(replay),
        )
    if kind == "unsubscribe":
        return Unsubscribe()
    if kind == "replay":
        if "replayOptions" not in obj:
            raise ProtocolError("bad_replay", "replayOptions: required for replay")
        limit = _int(obj, "limit", "replay", "bad_replay", 1)
        if limit is not None and limit > MAX_REPLAY:
            raise ProtocolError("bad_replay", f"replay.limit: at most {MAX_REPLAY}")
        return Replay(
            parse_replay_options(obj["replayOptions"]), parse_filters(obj.get("filters")), limit
        )
    if kind == "filter":
        if "filters" not in obj:
            raise ProtocolError("bad_filter", "filters: required for filter")
        return SetFilter(parse_filters(obj["filters"]))
    if kind == "ping":
        ping_id = obj.get("id")
        if ping_id is not None and not isinstance(ping_id, str | int):
            raise ProtocolError("invalid_message", "id: expected a string or an integer")
        return Ping(ping_id)
    return Pong()


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


# -- server frames ---------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def connection_ack_frame(
    *,
    client_id: str,
    stream_id: str,
    status: str,
    last_offset: int,
    epoch: str,
    recovered: bool | None,
    heartbeat: float,
) -> bytes:
    """The first message of a connection."""
    return _dumps(
        {
            "type": "connection_ack",
            "clientId": client_id,
            "streamId": stream_id,
            "status": status,
            "lastOffset": last_offset,
            "epoch": epoch,
            "recovered": recovered,
            "heartbeat": heartbeat,
        }
    )


def subscribed_frame(
    *, stream_id: str, from_offset: int, last_offset: int, recovered: bool
) -> bytes:
    """The answer to ``subscribe``."""
    return _dumps(
        {
            "type": "subscribed",
            "streamId": stream_id,
            "fromOffset": from_offset,
            "lastOffset": last_offset,
            "recovered": recovered,
        }
    )


def events_frame(
    stream_id: str, raws: Iterable[bytes], *, replay: bool = False, done: bool = False
) -> bytes:
    """One frame carrying already serialized events, spliced in without re-encoding."""
    head = b'{"type":"replay","streamId":' if replay else b'{"type":"event","streamId":'
    tail = (b'],"done":true}' if done else b'],"done":false}') if replay else b"]}"
    return b"".join((head, _dumps(stream_id), b',"events":[', b",".join(raws), tail))


def error_frame(code: str, message: str, **extra: Any) -> bytes:
    """An error; ``extra`` adds fields such as ``lastOffset``."""
    return _dumps({"type": "error", "code": code, "message": message, **extra})


def pong_frame(ping_id: Any, now: float | None = None) -> bytes:
    """The answer to ``ping``."""
    return _dumps({"type": "pong", "id": ping_id, "time": time.time() if now is None else now})


def heartbeat_frame(clients: int, now: float | None = None) -> bytes:
    """A heartbeat."""
    return _dumps(
        {"type": "heartbeat", "time": time.time() if now is None else now, "clients": clients}
    )


def end_frame(stream_id: str, last_offset: int) -> bytes:
    """The stream ended and everything was sent."""
    return _dumps({"type": "end", "streamId": stream_id, "lastOffset": last_offset})


def unsubscribed_frame() -> bytes:
    """The answer to ``unsubscribe``."""
    return b'{"type":"unsubscribed"}'


def filter_set_frame(filters: EventFilter) -> bytes:
    """The answer to ``filter``."""
    return _dumps({"type": "filter_set", "filters": filters.to_json()})
