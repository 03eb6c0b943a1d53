"""Property-based tests of the parsers that read outside bytes outside the hub: the line
splitter, event validation and ``tstream import``.

Each property holds for any input: the parser returns, or raises its documented error
and nothing else; what can round-trip does; memory stays bounded.
"""

from __future__ import annotations

from typing import Any

import orjson
import trio
from fuzzing import FUZZ, FUZZ_OBJECTS
from fuzzing import json_values as fuzzing_json_values
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_stream.events import (
    PAYLOADS,
    Event,
    EventType,
    EventValidationError,
    event_from_dict,
    event_from_json,
    event_to_json,
)
from trio_stream.limits import MAX_DEPTH
from trio_stream.lines import LineSplitter
from trio_stream.store.base import InvalidSessionIdError, SessionExistsError
from trio_stream.store.file import SessionFileError, export_session, import_session
from trio_stream.store.memory import MemoryStore

json_values = fuzzing_json_values()
event_names = st.sampled_from([t.value for t in EventType]) | st.text(max_size=12)
field_names = st.sampled_from(
    ["source", "text", "eol", "line", "partial", "raw", "command", "exit_status", "name",
     "status", "message", "document", "payload", "thought", "pattern", "value", "x"]
)  # fmt: skip
# Objects shaped like events: the right keys most of the time, any values.
event_like = st.fixed_dictionaries(
    {"type": event_names, "data": st.dictionaries(field_names, json_values, max_size=5)},
    optional={
        "id": st.text(max_size=8) | json_values,
        "session": st.text(max_size=8) | json_values,
        "offset": st.integers(-2, 2**64 - 1) | json_values,
        "ts": st.floats(allow_nan=False, allow_infinity=False) | json_values,
        "extra": json_values,
    },
)


# -- the line splitter -------------------------------------------------------------------


def split(data: bytes, cuts: list[int], max_line_length: int) -> list[Any]:
    splitter = LineSplitter(max_line_length)
    lines: list[Any] = []
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        lines.extend(splitter.feed(data[start:cut]))
        start = cut
    lines.extend(splitter.feed(data[start:]))
    lines.extend(splitter.close())
    return lines


@FUZZ
@given(
    st.binary(max_size=400) | st.text(alphabet="ab\r\n\xe9\u20ac", max_size=200).map(str.encode),
    st.lists(st.integers(0, 400), max_size=8),
    st.integers(4, 64),
)
def test_any_bytes_cut_anywhere_split_into_the_same_lines_that_give_the_bytes_back(
    data: bytes, cuts: list[int], max_line_length: int
) -> None:
    lines = split(data, cuts, max_line_length)
    assert lines == split(data, [], max_line_length)
    assert b"".join(line.data for line in lines) == data
    for line in lines:
        # Bounded: no piece is longer than the maximum (its ending aside).
        assert len(line.data) - len(line.eol.encode()) <= max_line_length
        assert line.eol in ("\n", "\r\n", "\r", "")
        assert line.partial is False or line.eol == ""


# -- event validation --------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_are_an_event_or_an_event_validation_error(raw: bytes | str) -> None:
    try:
        event = event_from_json(raw)
    except EventValidationError as exc:
        assert exc.errors and all(isinstance(e, str) and e for e in exc.errors)
    else:
        assert isinstance(event, Event)


@FUZZ_OBJECTS
@given(event_like | json_values, st.booleans())
def test_any_json_is_an_event_that_round_trips_or_names_its_bad_fields(
    obj: Any, placement: bool
) -> None:
    try:
        event = event_from_dict(obj, require_placement=placement)
    except EventValidationError as exc:
        assert exc.errors
        return
    assert isinstance(event.data, PAYLOADS[event.type])
    again = event_from_json(event_to_json(event))
    assert again == event


@settings(FUZZ, max_examples=20)
@given(st.integers(1, 3 * MAX_DEPTH), st.sampled_from(["[", '{"a":']))
def test_nesting_of_any_depth_is_an_event_or_an_event_validation_error(
    depth: int, opener: str
) -> None:
    closer = "]" if opener == "[" else "}"
    document = opener * depth + "1" + closer * depth
    raw = '{"type":"custom","data":{"name":"deep","payload":' + document + "}}"
    try:
        event = event_from_json(raw, require_placement=False)
    except EventValidationError as exc:
        assert depth >= MAX_DEPTH - 1
        assert "payload" in str(exc)
    else:
        assert orjson.loads(event_to_json(event))["data"]["payload"] is not None


# -- tstream import ---------------------------------------------------------------------


def exported_line(offset: int, session: str = "fuzz") -> bytes:
    event = Event(EventType.CUSTOM, PAYLOADS[EventType.CUSTOM](name="n"), session, offset)
    return event_to_json(event)


lines_of_a_file = st.lists(
    st.one_of(
        st.integers(0, 6).map(exported_line),
        st.binary(max_size=40),
        json_values.map(orjson.dumps),
        event_like.map(orjson.dumps),
    ),
    max_size=6,
)


@FUZZ_OBJECTS
@given(lines_of_a_file)
def test_an_import_of_any_lines_records_all_or_nothing(lines: list[bytes]) -> None:
    async def main() -> None:
        store = MemoryStore()
        try:
            info = await import_session(store, lines)
        except (SessionFileError, InvalidSessionIdError, SessionExistsError):
            # All or nothing: a refused file leaves no session behind.
            assert await store.list_sessions() == []
            return
        written: list[bytes] = []
        count = await export_session(store, info.id, written.append)
        kept = [line for line in lines if line.strip()]
        assert count == len(kept)
        exported = b"".join(written).splitlines()
        assert [event_from_json(e) for e in exported] == [event_from_json(k) for k in kept]

    trio.run(main)
