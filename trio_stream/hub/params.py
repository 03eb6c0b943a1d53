"""What clients send the hub, checked: the bounds of every value (:class:`Limits`, one
object, :data:`LIMITS`) and the one parser of each value, whichever transport it comes
by (REST, WebSocket, Server-Sent Events, long polling).

A value has one parser, so the same input is taken or refused the same way everywhere:
a time (``startTime``, ``endTime``, ``timeRange``, ``fromTimestamp``) is epoch seconds or
ISO 8601 from year 1 to 9999, never NaN or an infinity; ``lastN`` is 1 to
``LIMITS.replay`` on a WebSocket, SSE and ``GET …/history`` alike; a store ``epoch``
sent back is a string of at most ``LIMITS.epoch`` characters wherever it is taken. A
refused value raises :class:`~trio_stream.hub.errors.ProtocolError` naming the parameter
or field (400 ``{"error": {"code", "message"}}`` over HTTP, an ``error`` frame on a
WebSocket).

JSON values (WebSocket messages, request bodies) are parsed by the functions named for
the value (:func:`parse_filters`, :func:`parse_replay_options`, :func:`parse_time`);
query parameters by the ``query_*`` functions, which take the query's text to the same
checks. The API description (:mod:`trio_stream.hub.openapi`) states the bounds from
:data:`LIMITS` too. What the hub's operator sets (the largest batch, message and body,
the longest poll) is in :class:`~trio_stream.hub.config.HubConfig`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime

# The parsed form of a pattern, to look for nested repetition; public in all but name.
from re import _parser as _sre_parser  # type: ignore[attr-defined]
from types import MappingProxyType
from typing import Any, Final, final

import attrs
import orjson

from ..events import SOURCES, EventType
from ..filters import EventFilter
from ..limits import over_limits
from .errors import ProtocolError

# -- the bounds --------------------------------------------------------------------------


@final
@attrs.frozen
class Limits:
    """The bounds of the values clients send, each inclusive (one object, so that the
    routes, their messages and the API description cannot disagree)."""

    replay: int = 100_000
    """The most events one replay may ask for: ``lastN`` on every transport (a
    WebSocket's ``replayOptions``, SSE, ``GET …/history``), and the ``limit`` of a replay
    (``replayOptions.limit``, a ``replay`` message's, ``POST …/replay/{client}``'s)."""
    page: int = 10_000
    """The largest page of ``GET …/history`` and ``GET …/poll`` (``limit``)."""
    default_page: int = 1000
    """Their page when ``limit`` is not given."""
    default_poll_wait: float = 25.0
    """How long a poll waits without ``timeout`` (seconds; at most the hub's
    ``max_poll_timeout``)."""
    history_skip: int = 1 << 62
    """The largest ``offset`` of ``GET …/history``."""
    list_page: int = 1000
    """The largest page of ``GET /api/streams`` (``limit``)."""
    default_list_page: int = 100
    """Its page when ``limit`` is not given."""
    list_skip: int = 1 << 31
    """The largest ``offset`` of ``GET /api/streams``."""
    workflow_id: int = 256
    """The longest ``workflowSessionId`` of a new stream (characters)."""
    offset_digits: int = 18
    """The most digits of an offset cursor sent as text (``after``, ``lastEventId``,
    ``Last-Event-ID``)."""
    epoch: int = 128
    """The longest store ``epoch`` a client sends back (characters)."""
    time_text: int = 64
    """The longest time given as text (characters)."""
    times: tuple[float, float] = (-62_135_596_800.0, 253_402_300_799.0)
    """The first and last time a time may name (epoch seconds): the years 1 to 9999,
    what ISO 8601 dates can name."""
    search: int = 1024
    """The longest ``searchText`` (characters)."""
    pattern: int = 256
    """The longest ``pattern`` (characters)."""
    values: int = 64
    """The most values of one list filter (``eventTypes``, ``sources``, ``sessionIds``)."""
    filters: int = 16
    """The most filters of a ``StreamFilter[]``."""
    stream_config: Mapping[str, tuple[int, int]] = attrs.field(
        factory=lambda: MappingProxyType(
            {
                "maxHistorySize": (1, 1_000_000),
                "bufferSize": (1, 1_000_000),
                "heartbeatInterval": (100, 86_400_000),
                "maxClients": (1, 100_000),
                "retentionPeriod": (1, 100 * 365 * 86_400_000),
            }
        ),
        hash=False,
    )
    """(lowest, highest) of each number of a ``StreamConfig`` (``retentionPeriod`` and
    ``heartbeatInterval`` in milliseconds)."""


LIMITS: Final = Limits()
"""The bounds the hub applies (and documents)."""


# -- single values -------------------------------------------------------------------------


def kind_of(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages (``object``, ``list``…)."""
    return {dict: "object", list: "list", str: "string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def parse_json(data: str | bytes, where: str) -> Any:
    """A JSON document a client sent (``where``: ``body``, ``message``).

    Raises:
        ProtocolError: ``malformed_json``.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("malformed_json", f"{where} is not valid JSON ({exc})") from None


def parse_int(value: Any, where: str, code: str, low: int, high: int | None = None) -> int:
    """A JSON integer from ``low`` to ``high`` (None: no upper bound).

    Raises:
        ProtocolError: ``code``, naming ``where``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(code, f"{where}: expected an integer, got {value!r}")
    if value < low:
        raise ProtocolError(code, f"{where}: must be at least {low}, not {value}")
    if high is not None and value > high:
        raise ProtocolError(code, f"{where}: at most {high}")
    return value


def parse_last_n(value: Any, where: str) -> int:
    """``lastN``: 1 to ``LIMITS.replay`` events.

    Raises:
        ProtocolError: ``bad_replay``.
    """
    return parse_int(value, where, "bad_replay", 1, LIMITS.replay)


def parse_epoch(value: Any, where: str) -> str:
    """A store epoch a client sends back (any string it was given, at most
    ``LIMITS.epoch`` characters).

    Raises:
        ProtocolError: ``bad_replay``.
    """
    if not isinstance(value, str) or len(value) > LIMITS.epoch:
        raise ProtocolError(
            "bad_replay", f"{where}: expected a string of at most {LIMITS.epoch} characters"
        )
    return value


def parse_time(value: Any, where: str, code: str = "bad_filter") -> float:
    """A time from outside: epoch seconds, or an ISO 8601 date and time (UTC unless it
    says otherwise), as epoch seconds.

    Raises:
        ProtocolError: ``code``, naming ``where``, for anything else (NaN, infinities and
            times outside the years 1 to 9999 among them).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and 0 < len(value) <= LIMITS.time_text:
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
            code, f"{where}: expected epoch seconds or an ISO 8601 time, got {kind_of(value)}"
        )
    earliest, latest = LIMITS.times
    if not math.isfinite(number) or not earliest <= number <= latest:
        raise ProtocolError(code, f"{where}: expected a time from year 1 to 9999, got {value!r}")
    return number


def parse_offset(text: str, where: str) -> int:
    """An offset cursor as clients send it back (``Last-Event-ID``, ``after``): -1 or
    more.

    Raises:
        ProtocolError: ``bad_offset``, naming ``where``.
    """
    value = text.strip()
    digits = value.removeprefix("-")
    if not _DIGITS.fullmatch(digits) or len(digits) > LIMITS.offset_digits:
        raise ProtocolError("bad_offset", f"{where}: expected an offset (an integer), got {text!r}")
    offset = int(value)
    if offset < -1:
        raise ProtocolError("bad_offset", f"{where}: must be -1 or more, not {offset}")
    return offset


_DIGITS: Final = re.compile(r"[0-9]+")
_TYPE_NAMES: Final = {etype.value: etype for etype in EventType}


def event_type(name: str) -> EventType | None:
    """The event type named ``name`` as tstream does (``command_started``) or as the
    Executor Streamer design does (``COMMAND_STARTED``), in any case; None if unknown."""
    return _TYPE_NAMES.get(name) or _TYPE_NAMES.get(name.lower())


# -- filters -------------------------------------------------------------------------------

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
_EMPTY: Final = EventFilter()


def parse_filters(obj: Any) -> EventFilter:
    """Check and build a filter from its wire form (a JSON object, or a list of them:
    the design's ``StreamFilter[]``).

    Raises:
        ProtocolError: ``bad_filter``, naming the field.
    """
    if obj is None:
        return _EMPTY
    if isinstance(obj, list):
        if len(obj) > LIMITS.filters:
            raise ProtocolError("bad_filter", f"filters: at most {LIMITS.filters} filters")
        each = tuple(_one_filter(item, f"filters[{i}]") for i, item in enumerate(obj))
        if not each or any(f.empty for f in each):
            return _EMPTY
        return each[0] if len(each) == 1 else EventFilter(alternatives=each)
    return _one_filter(obj, "filters")


def _check_pattern(text: str, where: str) -> re.Pattern[str]:
    """Compile a client's regular expression, refusing what could run for ages.

    Python's ``re`` has no timeout, so the pattern is bounded in length, searched over a
    bounded text (:data:`~trio_stream.filters.MAX_SEARCHED_TEXT`), and refused when a
    repetition contains another repetition (``(a+)+``), the shape behind catastrophic
    backtracking.
    """
    if len(text) > LIMITS.pattern:
        raise ProtocolError("bad_filter", f"{where}: longer than {LIMITS.pattern} characters")
    try:
        compiled = re.compile(text)
    except re.error as exc:
        raise ProtocolError("bad_filter", f"{where}: {exc}") from None

    def walk(items: Any, inside_repeat: bool) -> None:
        for op, arg in items:
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                low, high, sub = arg
                if inside_repeat and high != low:
                    raise ProtocolError("bad_filter", f"{where}: nested repetition is not allowed")
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


def _string_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError("bad_filter", f"{where}: expected a list of strings")
    if len(value) > LIMITS.values:
        raise ProtocolError("bad_filter", f"{where}: at most {LIMITS.values} values")
    return value


def _time_field(obj: Mapping[str, Any], key: str, where: str, code: str) -> float | None:
    value = obj.get(key)
    return None if value is None else parse_time(value, f"{where}.{key}", code)


def _one_filter(obj: Any, where: str) -> EventFilter:
    if not isinstance(obj, Mapping):
        raise ProtocolError("bad_filter", f"{where}: expected an object, got {kind_of(obj)}")
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
    start = _time_field(obj, "startTime", where, "bad_filter")
    end = _time_field(obj, "endTime", where, "bad_filter")
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
        start = _time_field(time_range, "start", f"{where}.timeRange", "bad_filter")
        end = _time_field(time_range, "end", f"{where}.timeRange", "bad_filter")
    if start is not None and end is not None and end < start:
        raise ProtocolError("bad_filter", f"{where}.endTime: before startTime")
    search = obj.get("searchText")
    if search is not None:
        if not isinstance(search, str) or not search:
            raise ProtocolError("bad_filter", f"{where}.searchText: expected a non-empty string")
        if len(search) > LIMITS.search:
            raise ProtocolError(
                "bad_filter", f"{where}.searchText: longer than {LIMITS.search} characters"
            )
        search = search.casefold()
    pattern = None
    if obj.get("pattern") is not None:
        if not isinstance(obj["pattern"], str) or not obj["pattern"]:
            raise ProtocolError("bad_filter", f"{where}.pattern: expected a non-empty string")
        pattern = _check_pattern(obj["pattern"], f"{where}.pattern")
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


def _int_field(obj: Mapping[str, Any], key: str, low: int, high: int | None = None) -> int | None:
    value = obj.get(key)
    where = f"replayOptions.{key}"
    return None if value is None else parse_int(value, where, "bad_replay", low, high)


def parse_replay_options(obj: Any) -> ReplayOptions:
    """Check and build replay options (tstream's, or the design's ``HistoryFilter``).

    Raises:
        ProtocolError: ``bad_replay``, naming the field.
    """
    if not isinstance(obj, Mapping):
        raise ProtocolError("bad_replay", f"replayOptions: expected an object, got {kind_of(obj)}")
    unknown = sorted(set(obj) - set(REPLAY_KEYS) - set(HISTORY_FILTER_KEYS))
    if unknown:
        raise ProtocolError("bad_replay", f"replayOptions.{unknown[0]}: unknown option")
    from_offset = _int_field(obj, "fromOffset", -1)
    from_ts = _time_field(obj, "fromTimestamp", "replayOptions", "bad_replay")
    last_n = None if obj.get("lastN") is None else parse_last_n(obj["lastN"], "replayOptions.lastN")
    start_time = _time_field(obj, "startTime", "replayOptions", "bad_replay")
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
    epoch = obj.get("epoch")
    if epoch is not None:
        epoch = parse_epoch(epoch, "replayOptions.epoch")
    limit = _int_field(obj, "limit", 1, LIMITS.replay)
    skip = _int_field(obj, "offset", 0) or 0
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


def parse_replay_limit(value: Any, where: str) -> int | None:
    """The ``limit`` of a replay request (1 to ``LIMITS.replay``; None if not given).

    Raises:
        ProtocolError: ``bad_replay``.
    """
    return None if value is None else parse_int(value, where, "bad_replay", 1, LIMITS.replay)


# -- query parameters ----------------------------------------------------------------------


def query_int(
    args: Mapping[str, str], name: str, default: int, low: int, high: int, code: str = "bad_request"
) -> int:
    """The integer query parameter ``name``, ``low`` to ``high`` (``default`` if it is
    not given or empty).

    Raises:
        ProtocolError: ``code``, naming the parameter.
    """
    text = args.get(name)
    if text is None or text == "":
        return default
    digits = text.removeprefix("-")
    if not _DIGITS.fullmatch(digits) or len(digits) > 64:
        raise ProtocolError(code, f"{name}: expected an integer {low} to {high}, got {text[:64]!r}")
    return parse_int(int(text), name, code, low, high)


def query_last_n(args: Mapping[str, str]) -> int | None:
    """``lastN`` (1 to ``LIMITS.replay``), None if not given.

    Raises:
        ProtocolError: ``bad_replay``.
    """
    if args.get("lastN") in (None, ""):
        return None
    return query_int(args, "lastN", 0, 1, LIMITS.replay, "bad_replay")


def query_after(args: Mapping[str, str]) -> int:
    """``after``, the offset cursor (-1, the start, if not given).

    Raises:
        ProtocolError: ``bad_offset``.
    """
    return parse_offset(args.get("after", "-1"), "after")


def query_epoch(args: Mapping[str, str]) -> str | None:
    """``epoch``, the store epoch the client saw (None if not given).

    Raises:
        ProtocolError: ``bad_replay``.
    """
    epoch = args.get("epoch")
    return None if epoch is None else parse_epoch(epoch, "epoch")


def query_seconds(args: Mapping[str, str], name: str, default: float, maximum: float) -> float:
    """A duration in seconds, 0 to ``maximum`` (``default``, but at most ``maximum``, if
    not given).

    Raises:
        ProtocolError: ``bad_request``.
    """
    text = args.get(name)
    if text is None:
        return min(default, maximum)
    try:
        value = float(text)
    except ValueError:
        raise ProtocolError("bad_request", f"{name}: expected seconds, got {text[:64]!r}") from None
    if not math.isfinite(value) or not 0 <= value <= maximum:
        raise ProtocolError("bad_request", f"{name}: must be 0 to {maximum:g} seconds")
    return value


def has_filters(args: Mapping[str, str]) -> bool:
    """Whether the query names filters (else a client gets its stream's default ones)."""
    return "filters" in args or any(key in args for key in FILTER_KEYS)


def query_filters(args: Mapping[str, str]) -> EventFilter:
    """Filters from query parameters (``eventTypes=a,b&searchText=…``; times as epoch
    seconds or ISO 8601; ``timeRange=START/END``; ``sessionIds=a,b``), or from
    ``filters``, the JSON of a filter object or of a list of them (``StreamFilter[]``):
    what :func:`parse_filters` takes.

    Raises:
        ProtocolError: ``bad_filter``, naming the parameter.
    """
    if "filters" in args:
        if any(key in args for key in FILTER_KEYS):
            raise ProtocolError("bad_filter", "filters: give filters or filter parameters")
        text = args["filters"]
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ProtocolError("bad_filter", "filters: expected JSON") from None
        problem = over_limits(text, document)
        if problem is not None:
            raise ProtocolError("bad_filter", f"filters: {problem}")
        return parse_filters(document)
    values: dict[str, Any] = {}
    for key in FILTER_KEYS:
        if key in args:
            raw = args[key]
            if key in ("startTime", "endTime"):
                values[key] = parse_time(raw, key)
            elif key == "timeRange":
                start, sep, end = raw.replace(",", "/").partition("/")
                if not sep:
                    raise ProtocolError("bad_filter", "timeRange: expected START/END")
                values[key] = {
                    "start": parse_time(start, "timeRange.start"),
                    "end": parse_time(end, "timeRange.end"),
                }
            else:
                values[key] = raw
    return parse_filters(values)


def query_replay(args: Mapping[str, str], last_event_id: str | None) -> ReplayOptions | None:
    """Where an SSE subscription starts: after ``Last-Event-ID`` (the header, which wins)
    or ``lastEventId`` (with the ``epoch`` it came from), else the ``lastN`` last events,
    else from ``fromTimestamp``; None: at the live end.

    Raises:
        ProtocolError: ``bad_offset``, ``bad_replay``.
    """
    epoch = query_epoch(args)
    if last_event_id is not None:
        raw, where = last_event_id, "Last-Event-ID"
    else:
        raw, where = args.get("lastEventId"), "lastEventId"
    if raw is not None and raw != "":
        return ReplayOptions(from_offset=parse_offset(raw, where), epoch=epoch)
    last_n = query_last_n(args)
    if last_n is not None:
        return ReplayOptions(last_n=last_n)
    if args.get("fromTimestamp") is not None:
        return ReplayOptions(
            from_timestamp=parse_time(args["fromTimestamp"], "fromTimestamp", "bad_replay")
        )
    return None
