"""Checking published events: the direct path for well-formed events builds what the
event model's full check builds, and everything else still gets named errors."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from trio_stream.events import EventType, Output, Status, event_from_dict
from trio_stream.hub.errors import HubError
from trio_stream.hub.ingest import EventsInvalid, parse_events

PLACED = {"id": "abcdefghijklmnop", "ts": 1700000000.5}


@pytest.mark.parametrize(
    "item",
    [
        {"type": "output", "data": {"source": "stdout", "text": "a"}},
        {
            "type": "output",
            "data": {"source": "stderr", "text": "b", "eol": "", "line": 4, "partial": True},
            "offset": 3,
        },
        {"type": "status", "data": {"status": "building", "message": "step 2"}, "offset": 0},
        {"type": "session_ended", "data": {"exit_status": 2}, "session": "s", "ts": 7},
        {"type": "output", "data": {"source": "stdout", "text": "r", "raw": "/w=="}},
    ],
)
def test_published_events_are_what_the_event_model_builds(item: dict[str, Any]) -> None:
    item = {**PLACED, **item}
    events, placed = parse_events([item], "s")
    expected = event_from_dict(item, require_placement=False)
    assert events[0].with_offset("", 0) == expected.with_offset("", 0)
    assert events[0].offset == expected.offset
    assert placed == ["offset" in item]


def test_events_without_id_or_time_get_distinct_ids_and_the_time_of_arrival() -> None:
    item = {"type": "output", "data": {"source": "stdout", "text": "a"}}
    events, placed = parse_events([item] * 3, "s")
    assert len({e.id for e in events}) == 3 and all(len(e.id) == 16 for e in events)
    assert all(e.ts > 0 and e.offset == -1 for e in events) and placed == [False] * 3
    assert events[0].data == Output("stdout", "a")


def test_raw_bytes_are_decoded_by_the_full_check() -> None:
    item = {"type": "output", "data": {"source": "stdout", "text": "?", "raw": "/w=="}}
    (event,), _ = parse_events(item, "s")
    assert isinstance(event.data, Output) and event.data.raw == base64.b64decode("/w==")


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ({"type": "output", "data": {"source": "stdin", "text": "a"}}, "events[1].data.source"),
        ({"type": "output", "data": {"source": "stdout", "text": 5}}, "events[1].data.text"),
        ({"type": "output", "data": {"source": "stdout", "text": "a", "line": True}}, "line"),
        ({"type": "output", "data": {"source": "stdout", "text": "a", "x": 1}}, "data.x"),
        ({"type": "output", "data": {"source": "stdout", "text": "a"}, "offset": -2}, "offset"),
        ({"type": "output", "data": {"source": "stdout", "text": "a"}, "offset": 1.0}, "offset"),
        ({"type": "output", "data": {"source": "stdout", "text": "a"}, "ts": "now"}, "ts"),
        ({"type": "output", "data": {"source": "stdout", "text": "a"}, "id": 7}, "events[1].id"),
        ({"type": "output", "data": {"source": "stdout", "text": "a"}, "session": "t"}, "t"),
        ({"type": "outptu", "data": {}}, "events[1].type"),
        ({"type": "status", "data": {"status": 1}}, "events[1].data.status"),
        ({"type": "status", "data": []}, "events[1].data"),
        ({"type": "status"}, "events[1].data"),
        (["not", "an", "event"], "events[1]"),
    ],
)
def test_a_bad_event_among_good_ones_is_named(item: Any, error: str) -> None:
    good = {"type": "status", "data": {"status": "ok"}}
    with pytest.raises(EventsInvalid) as refused:
        parse_events([good, item, good], "s")
    assert len(refused.value.extra["errors"]) >= 1
    assert all(e.startswith("events[1]") for e in refused.value.extra["errors"])
    assert error in str(refused.value)


def test_an_empty_list_is_refused() -> None:
    with pytest.raises(HubError, match="empty list"):
        parse_events([], "s")


def test_one_event_object_is_one_event() -> None:
    (event,), placed = parse_events({"type": "status", "data": {"status": "x"}}, "s")
    assert event.type is EventType.STATUS and event.data == Status("x") and placed == [False]
