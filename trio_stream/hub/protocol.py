"""The hub's WebSocket message protocol, sans-IO: parse client messages, build server frames.

Nothing here does I/O. :func:`parse_client_message` turns one text message into a typed
message or raises :class:`ProtocolError` (its ``code`` goes into an ``error`` frame and the
connection stays up); the ``*_frame`` functions build the server's messages as bytes.
Events arrive already serialized (``events.event_to_json``) and are spliced into frames
as they are, so each event is encoded once however many clients receive it.

The protocol
============

A client connects to ``/api/streams/{id}/ws`` (optionally ``?after=N&epoch=E`` to
subscribe at once, resuming after offset ``N``; ``?protocol=executor-streamer`` for
the Executor Streamer design's server messages, :mod:`trio_stream.hub.design`;
``?protocol=tstream-columns`` for lines as columns, below). Every
message is one JSON object with a ``type``.

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
``eventTypes`` (list of event types, named as tstream does, ``command_started``, or as the
Executor Streamer design does, ``COMMAND_STARTED``, in any case), ``sources``
(``stdout``/``stderr``; non-output events always pass), ``startTime``/``endTime`` (epoch
seconds or ISO 8601, inclusive), ``timeRange`` (``{"start", "end"}``, the same),
``sessionIds`` (the sessions whose events pass), ``searchText`` (case-insensitive
substring of the line, or of the event's JSON for other events) and ``pattern`` (a
regular expression searched the same way, at most 256 characters, no nested repetition).
``filters`` may also be a list of such objects (the design's ``StreamFilter[]``): an event
passes when any of them passes it.

``replayOptions`` may also be the design's ``HistoryFilter``: the events replayed start
at ``startTime`` (or at the start of the stream); ``eventTypes``, ``endTime`` and
``searchText`` choose among them (instead of ``filters``: the request's, or for
``subscribe`` the subscription's); ``offset`` skips that many of them and ``limit`` sends
at most that many. In a ``subscribe``, that history comes first, then live events.

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
    ``bad_replay``, ``wrong_stream``, ``not_subscribed``, ``rate_limited``,
    ``replay_disabled`` (the stream's config says ``enableReplay: false``): the
    connection stays up. ``slow_consumer``, ``idle_timeout``, ``disconnected`` and ``shutdown`` come
    with ``lastOffset`` (the last offset this client was sent) just before the close.

Close codes: 1000 stream ended, 1001 hub shutting down, 1007 invalid UTF-8, 1009 message
too big, 4004 disconnected by an operator, 4008 slow consumer, 4009 idle timeout.

Lines as columns (``tstream-columns``)
=======================================

An extension that tstream's own clients ask for, so that a million lines cost neither
side an object per line; a client that does not ask never sees it. The events are the
same events: only their wire form differs.

Subscribing, ``/api/streams/{id}/ws?protocol=tstream-columns`` (WebSocket only; SSE
refuses it with 400 ``bad_request``). Every message is as above, except that ``event``
and ``replay`` messages carry ``"runs": [run, …]`` instead of ``"events"``; the runs
follow each other at consecutive offsets. A run is either

* a list of events, exactly as ``events`` holds them (every event that is not a line
  kept as columns: the session's own events, typed events, lines of a stream the hub
  holds as events), or
* an object, the columns of lines captured together from one source:
  ``{"o": first offset, "k": id key (16 hex digits), "b": first id number,
  "t": ts (every line's), "s": "stdout" | "stderr", "l": first line number,
  "x": [text, …]}``, with ``"e": [eol, …]`` when some line does not end with ``"\n"``
  (each ``"\n"``, ``"\r\n"``, ``"\r"`` or ``""``), ``"p": [index, …]`` of the pieces of
  a cut line that are not its last, ``"r": [[index, base64], …]`` of the exact bytes of
  lines that are not valid UTF-8. Line ``i`` is the event ``{"id", "session": streamId,
  "offset": o + i, "type": "output", "ts": t, "data": {"source": s, "text": x[i], "eol",
  "line": l + i, "partial", "raw"}}``; its ``id`` is the urlsafe base64 of the key's 8
  bytes and the 4 bytes of ``b + i`` (:func:`trio_stream.batches.batch_event_ids`). This
  is the form a store chunk keeps them in (:mod:`trio_stream.store.chunks`), so the hub
  sends history from its chunks without decoding a line.

A client catching up is sent up to 10,000 events a message (1,000 otherwise).

Publishing, ``/api/streams/{id}/publish?protocol=tstream-columns``: the ``connection_ack``
then carries ``"protocol": "tstream-columns"`` (a hub that does not know the extension
leaves it out, and the publisher sends events as above). A message may then also be
``{"runs": [run, …]}``, runs as above, every event placed (with its ``offset``), at
consecutive offsets: answered by an ``ack`` like any other, duplicates skipped, a gap
refused (``offset_gap``), each column checked (``invalid_event`` names the run and the
field). ``maxBatch`` counts the lines.
"""

from __future__ import annotations

import enum
import math
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

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


_TYPE_NAMES: Final = {etype.value: etype for etype in EventType}
# The times an ISO 8601 date can name (years 1 to 9999), in epoch seconds.
_EARLIEST: Final = -62_135_596_800.0
_LATEST: Final = 253_402_300_799.0


def event_type(name: str) -> EventType | None:
    """The event type named ``name`` as tstream does (``command_started``) or as the
    Executor Streamer design does (``COMMAND_STARTED``), in any case; None if unknown."""
    return _TYPE_NAMES.get(name) or _TYPE_NAMES.get(name.lower())


def parse_time(value: Any, where: str, code: str = "bad_filter") -> float:
    """A time from outside: epoch seconds, or an ISO 8601 date and time (UTC unless it
    says otherwise), as epoch seconds.

    Raises:
        ProtocolError: ``code``, naming ``where``, for anything else (NaN and infinities
            among them).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and 0 < len(value) <= 64:
        try:
            number = float(value)
        except ValueError:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise ProtocolError(
                    code, f"{where}: expected epoch seconds or an ISO 8601 time, got {value!r}"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            number = moment.timestamp()
    else:
        raise ProtocolError(
            code, f"{where}: expected epoch seconds or an ISO 8601 time, got {_kind(value)}"
        )
    if not math.isfinite(number) or not _EARLIEST <= number <= _LATEST:
        raise ProtocolError(code, f"{where}: expected a time from year 1 to 9999, got {value!r}")
    return number


def _number(obj: Mapping[str, Any], key: str, where: str, code: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    return parse_time(value, f"{where}.{key}", code)


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
    sessions: frozenset[str] | None = None
    # Several filters (the design's StreamFilter[]): an event passes if any passes it.
    alternatives: tuple[EventFilter, ...] | None = None

    @property
    def empty(self) -> bool:
        """Whether this filter passes everything."""
        return self == _EMPTY

    @property
    def exact(self) -> bool:
        """Whether the store's query (:meth:`to_query`) finds exactly the events this
        filter passes; if not, the caller matches what the query finds."""
        return self.pattern is None and self.sessions is None and self.alternatives is None

    def matches(self, event: Event, raw: bytes | None = None) -> bool:
        """Whether ``event`` (serialized as ``raw``, when at hand) passes."""
        if self.alternatives is not None:
            return any(f.matches(event, raw) for f in self.alternatives)
        if self.types is not None and event.type not in self.types:
            return False
        if self.sessions is not None and event.session not in self.sessions:
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
        """The store query for this filter: exact unless :attr:`exact` is False (then
        the caller matches what it finds)."""
        if self.alternatives is not None:
            return _loosest(self.alternatives).to_query(
                after=after, limit=limit, skip=skip, last=last
            )
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

    def to_json(self) -> Any:
        """The wire form (what :func:`parse_filters` reads back): an object, or a list
        of them for several filters."""
        if self.alternatives is not None:
            return [f.to_json() for f in self.alternatives]
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
        if self.sessions is not None:
            out["sessionIds"] = sorted(self.sessions)
        return out


def _loosest(filters: tuple[EventFilter, ...]) -> EventFilter:
    """A filter passing whatever any of ``filters`` passes, as far as the store can ask."""

    def union(values: list[Any]) -> Any:
        return None if any(v is None for v in values) else frozenset().union(*values)

    starts = [f.start_time for f in filters]
    ends = [f.end_time for f in filters]
    return EventFilter(
        union([f.types for f in filters]),
        union([f.sources for f in filters]),
        None if None in starts else min(starts),  # type: ignore[type-var]
        None if None in ends else max(ends),  # type: ignore[type-var]
    )


_EMPTY: Final = EventFilter()
FILTER_KEYS: Final = (
    "eventTypes",
    "sources",
    "startTime",
    "endTime",
    "searchText",
    "pattern",
    "sessionIds",
    "timeRange",
)
MAX_FILTERS: Final = 16


def _data_of(event: Event) -> Any:
    return converter.unstructure(event.data)


def parse_filters(obj: Any) -> EventFilter:
    """Check and build a filter from its wire form (a JSON object or query parameters).

    Raises:
        ProtocolError: ``bad_filter``, naming the field.
    """
    if obj is None:
        return _EMPTY
    if isinstance(obj, list):
        if len(obj) > MAX_FILTERS:
            raise ProtocolError("bad_filter", f"filters: at most {MAX_FILTERS} filters")
        each = tuple(_one_filter(item, f"filters[{i}]") for i, item in enumerate(obj))
        if not each or any(f.empty for f in each):
            return _EMPTY
        return each[0] if len(each) == 1 else EventFilter(alternatives=each)
    return _one_filter(obj, "filters")


def _one_filter(obj: Any, where: str) -> EventFilter:
    if not isinstance(obj, Mapping):
        raise ProtocolError("bad_filter", f"{where}: expected an object, got {_kind(obj)}")
    if "customFilter" in obj:
        raise ProtocolError(
            "bad_filter", f"{where}.customFilter: a function cannot be sent; use the other filters"
        )
    unknown = sorted(set(obj) - set(FILTER_KEYS))
    if unknown:
        raise ProtocolError("bad_filter", f"{where}.{unknown[0]}: unknown filter")
    types = None
    if obj.get("eventTypes") is not None:
        names = _string_list(obj["eventTypes"], f"{where}.eventTypes")
        found = [event_type(n) for n in names]
        if None in found:
            bad = names[found.index(None)]
            raise ProtocolError(
                "bad_filter", f"{where}.eventTypes: unknown event type {bad[:64]!r}"
            )
        types = frozenset(t for t in found if t is not None)
    sources = None
    if obj.get("sources") is not None:
        names = _string_list(obj["sources"], f"{where}.sources")
        bad_sources = [n for n in names if n not in SOURCES]
        if bad_sources:
            raise ProtocolError(
                "bad_filter", f"{where}.sources: unknown source {bad_sources[0][:64]!r}"
            )
        sources = frozenset(names)
    start = _number(obj, "startTime", where, "bad_filter")
    end = _number(obj, "endTime", where, "bad_filter")
    time_range = obj.get("timeRange")
    if time_range is not None:
        if start is not None or end is not None:
            raise ProtocolError(
                "bad_filter", f"{where}.timeRange: give timeRange or startTime/endTime, not both"
            )
        if not isinstance(time_range, Mapping) or not set(time_range) <= {"start", "end"}:
            raise ProtocolError(
                "bad_filter", f"{where}.timeRange: expected an object with start and end"
            )
        start = _number(time_range, "start", f"{where}.timeRange", "bad_filter")
        end = _number(time_range, "end", f"{where}.timeRange", "bad_filter")
    if start is not None and end is not None and end < start:
        raise ProtocolError("bad_filter", f"{where}.endTime: before startTime")
    search = obj.get("searchText")
    if search is not None:
        if not isinstance(search, str) or not search:
            raise ProtocolError("bad_filter", f"{where}.searchText: expected a non-empty string")
        if len(search) > MAX_SEARCH_LENGTH:
            raise ProtocolError(
                "bad_filter", f"{where}.searchText: longer than {MAX_SEARCH_LENGTH} characters"
            )
        search = search.casefold()
    pattern = None
    if obj.get("pattern") is not None:
        if not isinstance(obj["pattern"], str) or not obj["pattern"]:
            raise ProtocolError("bad_filter", f"{where}.pattern: expected a non-empty string")
        pattern = _check_pattern(obj["pattern"])
    sessions = None
    if obj.get("sessionIds") is not None:
        sessions = frozenset(_string_list(obj["sessionIds"], f"{where}.sessionIds"))
    return EventFilter(types, sources, start, end, search, pattern, sessions)


# -- replay options --------------------------------------------------------------------


@final
@attrs.frozen
class ReplayOptions:
    """Where history starts (after an offset, at a time, the last N events) and, for the
    design's ``HistoryFilter``, which events of it are sent: ``filters`` (None: those of
    the request), ``skip`` of them skipped, at most ``limit``."""

    from_offset: int | None = None
    from_timestamp: float | None = None
    last_n: int | None = None
    epoch: str | None = None
    filters: EventFilter | None = None
    limit: int | None = None
    skip: int = 0

    @property
    def selects(self) -> bool:
        """Whether these options choose events themselves (a ``HistoryFilter``)."""
        return self.filters is not None or self.limit is not None or self.skip > 0


REPLAY_KEYS: Final = ("fromOffset", "fromTimestamp", "lastN", "epoch")
HISTORY_FILTER_KEYS: Final = ("eventTypes", "limit", "offset", "startTime", "endTime", "searchText")


def parse_replay_options(obj: Any) -> ReplayOptions:
    """Check and build replay options (tstream's, or the design's ``HistoryFilter``).

    Raises:
        ProtocolError: ``bad_replay``, naming the field.
    """
    if not isinstance(obj, Mapping):
        raise ProtocolError("bad_replay", f"replayOptions: expected an object, got {_kind(obj)}")
    unknown = sorted(set(obj) - set(REPLAY_KEYS) - set(HISTORY_FILTER_KEYS))
    if unknown:
        raise ProtocolError("bad_replay", f"replayOptions.{unknown[0]}: unknown option")
    from_offset = _int(obj, "fromOffset", "replayOptions", "bad_replay", -1)
    from_ts = _number(obj, "fromTimestamp", "replayOptions", "bad_replay")
    last_n = _int(obj, "lastN", "replayOptions", "bad_replay", 1)
    start_time = _number(obj, "startTime", "replayOptions", "bad_replay")
    given = [
        k
        for k, v in (
            ("fromOffset", from_offset),
            ("fromTimestamp", from_ts),
            ("lastN", last_n),
            ("startTime", start_time),
        )
        if v is not None
    ]
    if len(given) > 1:
        raise ProtocolError(
            "bad_replay",
            f"replayOptions: give one of fromOffset, fromTimestamp, lastN, startTime, not {given}",
        )
    if last_n is not None and last_n > MAX_REPLAY:
        raise ProtocolError("bad_replay", f"replayOptions.lastN: at most {MAX_REPLAY}")
    epoch = obj.get("epoch")
    if epoch is not None and (not isinstance(epoch, str) or len(epoch) > 128):
        raise ProtocolError("bad_replay", "replayOptions.epoch: expected a string")
    limit = _int(obj, "limit", "replayOptions", "bad_replay", 1)
    if limit is not None and limit > MAX_REPLAY:
        raise ProtocolError("bad_replay", f"replayOptions.limit: at most {MAX_REPLAY}")
    skip = _int(obj, "offset", "replayOptions", "bad_replay", 0) or 0
    # startTime is where the history starts; these choose events within it.
    chosen = {k: obj[k] for k in ("eventTypes", "endTime", "searchText") if k in obj}
    filters = None
    if chosen:
        try:
            filters = parse_filters(chosen)
        except ProtocolError as exc:
            raise ProtocolError(
                "bad_replay", exc.message.replace("filters.", "replayOptions.", 1)
            ) from None
    if start_time is not None:
        from_ts = start_time
    elif not given and (filters is not None or limit is not None or skip):
        # A HistoryFilter without a start replays the stream from its beginning.
        from_offset = -1
    return ReplayOptions(from_offset, from_ts, last_n, epoch, filters, limit, skip)


# -- client messages -------------------------------------------------------------------


@final
@attrs.frozen
class Subscribe:
    """Start receiving events, from where ``replay`` says (the live end if None);
    ``filters`` None: the stream's default filters."""

    filters: EventFilter | None = None
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
        filters = obj.get("filters")
        return Subscribe(
            None if filters is None else parse_filters(filters),
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
        options = parse_replay_options(obj["replayOptions"])
        if options.filters is not None and obj.get("filters") is not None:
            raise ProtocolError(
                "bad_replay", "replayOptions: choose events in filters or in replayOptions"
            )
        filters = parse_filters(obj.get("filters")) if options.filters is None else options.filters
        return Replay(options, filters, limit)
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
    return _spliced(b"events", stream_id, raws, replay, done)


def runs_frame(
    stream_id: str, runs: Iterable[bytes], *, replay: bool = False, done: bool = False
) -> bytes:
    """:func:`events_frame` with ``runs`` (``tstream-columns``): each already serialized,
    a list of events or the columns of a batch of lines."""
    return _spliced(b"runs", stream_id, runs, replay, done)


def _spliced(key: bytes, stream_id: str, parts: Iterable[bytes], replay: bool, done: bool) -> bytes:
    head = b'{"type":"replay","streamId":' if replay else b'{"type":"event","streamId":'
    tail = (b'],"done":true}' if done else b'],"done":false}') if replay else b"]}"
    return b"".join((head, _dumps(stream_id), b',"%s":[' % key, b",".join(parts), tail))


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
