"""Property-based tests of the hub's parsers of outside bytes: WebSocket client messages,
the SSE parser, query and filter parameters, replay options and published events.

Each property holds for any input: the parser returns, or raises its documented error
(:class:`ProtocolError`, :class:`HubError`, ``ValueError`` for an endless SSE line) and
nothing else; what has a wire form round-trips through it.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from fuzzing import FUZZ, FUZZ_OBJECTS
from fuzzing import json_values as fuzzing_json_values
from hypothesis import example, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from trio_stream.events import PAYLOADS, Event, EventType
from trio_stream.filters import EventFilter
from trio_stream.hub.errors import HubError, ProtocolError
from trio_stream.hub.ingest import parse_events
from trio_stream.hub.params import (
    FILTER_KEYS,
    LIMITS,
    REPLAY_KEYS,
    parse_filters,
    parse_offset,
    parse_replay_options,
    query_filters,
    query_int,
    query_last_n,
    query_seconds,
)
from trio_stream.hub.protocol import ClientMessage, parse_client_message
from trio_stream.hub.sse import MAX_LINE, SSEParser, sse_event

json_values = fuzzing_json_values(st.text(max_size=20), st.text(max_size=8))
event_types = st.sampled_from([t.value for t in EventType])
# Filter values as clients get them wrong: the right kinds most of the time.
filter_values = st.fixed_dictionaries(
    {},
    optional={
        "eventTypes": st.lists(event_types | st.text(max_size=8), max_size=3) | json_values,
        "sources": st.lists(st.sampled_from(["stdout", "stderr", "x"]), max_size=3) | json_values,
        "startTime": st.floats(allow_nan=False, allow_infinity=False) | json_values,
        "endTime": st.floats(allow_nan=False, allow_infinity=False) | json_values,
        "searchText": st.text(max_size=30) | json_values,
        "pattern": st.text(alphabet="a.*+?()[]|\\^$b{}", max_size=12) | json_values,
        "sessionIds": st.lists(st.text(max_size=8), max_size=3) | json_values,
        "timeRange": st.fixed_dictionaries(
            {"start": st.floats(allow_nan=False), "end": st.floats(allow_nan=False)}
        )
        | json_values,
        "bogus": json_values,
    },
)
replay_values = st.fixed_dictionaries(
    {},
    optional={
        "fromOffset": st.integers(-3, 100) | json_values,
        "fromTimestamp": st.floats(allow_nan=False) | json_values,
        "lastN": st.integers(-1, 200_000) | json_values,
        "epoch": st.text(max_size=10) | json_values,
        "bogus": json_values,
    },
)
client_messages = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["subscribe", "unsubscribe", "replay", "filter", "ping", "pong"])
        | st.text(max_size=10)
        | json_values
    },
    optional={
        "streamId": st.sampled_from(["s", "t"]) | json_values,
        "filters": filter_values | json_values,
        "replayOptions": replay_values | json_values,
        "limit": st.integers(-2, 200_000) | json_values,
        "id": json_values,
        "extra": json_values,
    },
)


# -- WebSocket client messages ------------------------------------------------------------


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_any_text_is_a_client_message_or_a_protocol_error(data: str | bytes) -> None:
    try:
        message = parse_client_message(data, stream_id="s")
    except ProtocolError as exc:
        assert exc.code and exc.message
    else:
        assert isinstance(message, ClientMessage)


@FUZZ_OBJECTS
@given(client_messages)
def test_any_message_shaped_object_is_a_client_message_or_a_protocol_error(obj: Any) -> None:
    try:
        message = parse_client_message(orjson.dumps(obj), stream_id="s")
    except ProtocolError as exc:
        assert exc.code in {
            "malformed_json",
            "invalid_message",
            "unknown_type",
            "wrong_stream",
            "bad_filter",
            "bad_replay",
        }, exc
    else:
        assert isinstance(message, ClientMessage)


# -- filters and replay options -----------------------------------------------------------


@FUZZ_OBJECTS
@given(filter_values | json_values)
def test_any_filter_object_is_a_filter_that_round_trips_or_a_bad_filter(obj: Any) -> None:
    try:
        parsed = parse_filters(obj)
    except ProtocolError as exc:
        assert exc.code == "bad_filter", exc
        return
    assert isinstance(parsed, EventFilter)
    assert parse_filters(parsed.to_json()) == parsed


@FUZZ_OBJECTS
@given(filter_values, st.sampled_from(["output", "status"]), st.text(max_size=30))
def test_a_filter_matches_any_event_without_raising(obj: Any, kind: str, text: str) -> None:
    try:
        parsed = parse_filters(obj)
    except ProtocolError:
        return
    if kind == "output":
        data: Any = PAYLOADS[EventType.OUTPUT](source="stdout", text=text)
    else:
        data = PAYLOADS[EventType.STATUS](status=text)
    assert parsed.matches(Event(EventType(kind), data, "s", 0)) in (True, False)


@FUZZ_OBJECTS
@given(
    st.dictionaries(
        st.sampled_from([*FILTER_KEYS, "filters"]),
        st.text(max_size=30) | json_values.map(lambda v: orjson.dumps(v).decode()),
        max_size=4,
    )
)
def test_any_query_parameters_are_a_filter_or_a_bad_filter(args: dict[str, str]) -> None:
    try:
        parsed = query_filters(MultiDict(args))
    except ProtocolError as exc:
        assert exc.code == "bad_filter", exc
    else:
        assert isinstance(parsed, EventFilter)


@FUZZ_OBJECTS
@given(replay_values | json_values)
def test_any_replay_options_are_options_or_a_bad_replay(obj: Any) -> None:
    try:
        parse_replay_options(obj)
    except ProtocolError as exc:
        assert exc.code == "bad_replay", exc
        assert any(key in exc.message for key in ("replayOptions", *REPLAY_KEYS)), exc


@FUZZ
@given(st.text(max_size=24))
def test_any_cursor_text_is_an_offset_or_a_bad_offset(text: str) -> None:
    try:
        offset = parse_offset(text, "after")
    except ProtocolError as exc:
        assert exc.code == "bad_offset" and "after" in exc.message
    else:
        assert offset >= -1
        assert parse_offset(str(offset), "after") == offset


@FUZZ
@given(st.text(max_size=12), st.floats(0.1, 120))
def test_any_poll_limit_and_timeout_are_bounded_or_a_bad_request(text: str, most: float) -> None:
    limit = MultiDict({"limit": text})
    timeout = MultiDict({"timeout": text})
    for parse in (
        lambda: query_int(limit, "limit", LIMITS.default_page, 1, LIMITS.page),
        lambda: query_seconds(timeout, "timeout", LIMITS.default_poll_wait, most),
    ):
        try:
            value = parse()
        except ProtocolError as exc:
            assert exc.code == "bad_request" and exc.message.startswith(("limit: ", "timeout: "))
        else:
            assert 0 <= value <= max(LIMITS.page, most)


@FUZZ
@given(st.text(max_size=12) | st.integers(-5, 2 * LIMITS.replay).map(str))
def test_any_last_n_text_is_a_bounded_count_or_a_bad_replay(text: str) -> None:
    try:
        last_n = query_last_n(MultiDict({"lastN": text}))
    except ProtocolError as exc:
        assert exc.code == "bad_replay" and exc.message.startswith("lastN: ")
    else:
        assert last_n is None if text == "" else 1 <= last_n <= LIMITS.replay


# -- published events ---------------------------------------------------------------------

published = st.fixed_dictionaries(
    {"type": event_types | json_values, "data": st.dictionaries(st.text(max_size=8), json_values)},
    optional={"offset": st.integers(-1, 5) | json_values, "id": json_values, "ts": json_values},
)


@FUZZ_OBJECTS
@given(published | st.lists(published, max_size=4) | json_values)
# A type that is a list or an object once raised TypeError (a 500 over REST).
@example({"type": [], "data": {}})
@example([{"type": {"a": 1}, "data": {}}])
def test_any_published_body_is_events_of_the_stream_or_a_hub_error(body: Any) -> None:
    try:
        events, placed = parse_events(body, "s")
    except HubError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    assert len(events) == len(placed) >= 1
    # The broker places each event in the stream (an empty session is filled in there).
    assert all(e.session in ("", "s") and isinstance(e.data, PAYLOADS[e.type]) for e in events)


# -- the SSE parser -----------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6))
def test_any_bytes_cut_anywhere_parse_into_the_same_sse_events(
    data: bytes, cuts: list[int]
) -> None:
    def parse(pieces: list[bytes]) -> tuple[list[Any], str | None]:
        parser = SSEParser()
        out = []
        for piece in pieces:
            out.extend(parser.feed(piece))
        return out, parser.last_id

    whole = parse([data])
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    # A CR held at a cut may turn out to be the start of CRLF: same events either way.
    assert parse(pieces) == whole


@FUZZ
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"),
        max_size=40,
    ),
    st.text(alphabet="abcdefgh_", min_size=1, max_size=12),
    st.integers(0, 2**62),
)
def test_an_sse_event_reads_back_as_written(data: str, name: str, offset: int) -> None:
    parser = SSEParser()
    messages = parser.feed(sse_event(data.encode(), event=name, id=offset))
    assert [(m.event, m.data, m.id) for m in messages] == [(name, data, str(offset))]
    assert parser.last_id == str(offset)


@settings(FUZZ, max_examples=10)
@given(st.integers(1, 8), st.sampled_from([b"data: ", b": ", b""]))
def test_an_sse_line_without_end_is_refused_once_over_the_bound(pieces: int, head: bytes) -> None:
    parser = SSEParser()
    chunk = b"x" * ((MAX_LINE // pieces) + 1)
    fed = [head]
    try:
        for _ in range(pieces + 1):
            parser.feed(b"".join(fed))
            fed = [chunk]
    except ValueError as exc:
        assert "1 MiB" in str(exc)
    else:
        raise AssertionError("a line over 1 MiB was kept")
