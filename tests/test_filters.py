"""The one filter model: a live filter and a store query pass the same events."""

from __future__ import annotations

import gc
import re
import weakref

import pytest

from trio_stream.events import Event, EventType, Output, Status, event_to_json, make_event
from trio_stream.filters import MAX_SEARCHED_TEXT, EventFilter, searched_text
from trio_stream.store import query as q
from trio_stream.store.base import HistoryQuery

LONG = "x" * MAX_SEARCHED_TEXT


def _events() -> list[Event]:
    texts = ["Compiling foo", "ERROR: boom", LONG + "needle", "needle" + LONG, "a Needle"]
    events = [
        make_event(
            EventType.OUTPUT,
            Output("stderr" if i % 2 else "stdout", text),
            session="s",
            offset=i,
            ts=10.0 + i,
        )
        for i, text in enumerate(texts)
    ]
    for i, text in enumerate(["needle done", LONG + "needle", "compiling done"], len(events)):
        status = make_event(EventType.STATUS, Status(text), session="s", offset=i, ts=10.0 + i)
        events.append(status)
    return events


FILTERS = [
    EventFilter(),
    EventFilter(types=frozenset({EventType.STATUS})),
    EventFilter(sources=frozenset({"stderr"})),
    EventFilter(start_time=11.0),
    EventFilter(end_time=12.0),
    EventFilter(start_time=11.0, end_time=14.0),
    EventFilter(search_text="needle"),
    EventFilter(search_text="compiling"),
    EventFilter(types=frozenset({EventType.OUTPUT}), search_text="needle"),
    EventFilter(
        types=frozenset({EventType.OUTPUT, EventType.STATUS}),
        sources=frozenset({"stdout"}),
        start_time=10.0,
        search_text="e",
    ),
]


@pytest.mark.parametrize("flt", FILTERS, ids=repr)
def test_a_live_filter_and_a_store_query_pass_the_same_events(flt: EventFilter) -> None:
    events = _events()
    live = [e.offset for e in events if flt.matches(e, event_to_json(e))]
    built = [e.offset for e in events if flt.matches(e)]
    stored = [e.offset for e in q.select(events, flt.to_query())]
    assert live == built == stored
    assert EventFilter.of_query(flt.to_query()) == flt


def test_search_looks_in_the_first_64_kib_of_a_line_or_of_the_data() -> None:
    events = _events()
    needle = EventFilter(search_text="needle")
    # The needle past the cut is not seen, in a line or in other events' data.
    assert [e.offset for e in events if needle.matches(e)] == [3, 4, 5]
    assert [e.offset for e in q.select(events, HistoryQuery(search_text="NEEDLE"))] == [3, 4, 5]
    pattern = EventFilter(pattern=re.compile("needle$"))
    assert [e.offset for e in events if pattern.matches(e, event_to_json(e))] == []
    for event in events:
        text = searched_text(event, event_to_json(event))
        assert text == searched_text(event) and len(text) <= MAX_SEARCHED_TEXT


def test_several_filters_pass_what_any_of_them_passes() -> None:
    events = _events()
    either = EventFilter(
        alternatives=(
            EventFilter(types=frozenset({EventType.STATUS}), search_text="compiling"),
            EventFilter(sources=frozenset({"stderr"}), end_time=12.0),
        )
    )
    assert [e.offset for e in events if either.matches(e)] == [1, 7]
    assert not either.exact and not either.empty


def test_a_store_query_without_filters_has_no_matcher() -> None:
    assert q.matcher(HistoryQuery(after=3, limit=2)) is None
    matches = q.matcher(HistoryQuery(search_text="Needle"))
    assert matches is not None and matches(_events()[4])


def test_equal_filters_in_use_are_one_instance_and_go_with_their_last_user() -> None:
    first = EventFilter(types=frozenset({EventType.OUTPUT}), sources=frozenset({"stdout"}))
    second = EventFilter(types=frozenset({EventType.OUTPUT}), sources=frozenset({"stdout"}))
    assert first is not second
    kept = first.interned()
    assert second.interned() is kept is first
    assert not kept.empty and EventFilter().empty
    gone = weakref.ref(kept)
    del first, second, kept
    gc.collect()
    assert gone() is None
