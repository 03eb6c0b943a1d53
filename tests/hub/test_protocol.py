"""The sans-IO WebSocket message protocol: parsing, filters, replay options, frames."""

from __future__ import annotations

import orjson
import pytest

from trio_stream.events import Event, EventType, Output, Status, event_to_json
from trio_stream.filters import EventFilter
from trio_stream.hub.errors import ProtocolError
from trio_stream.hub.params import (
    ReplayOptions,
    event_type,
    parse_filters,
    parse_replay_options,
    parse_time,
)
from trio_stream.hub.protocol import (
    Ping,
    Pong,
    Replay,
    SetFilter,
    Subscribe,
    Unsubscribe,
    connection_ack_frame,
    error_frame,
    events_frame,
    parse_client_message,
)


def parse(obj: object) -> object:
    return parse_client_message(orjson.dumps(obj), stream_id="s")


def test_every_message_type_parses() -> None:
    assert parse({"type": "subscribe"}) == Subscribe()
    sub = parse(
        {
            "type": "subscribe",
            "streamId": "s",
            "filters": {"eventTypes": ["output"]},
            "replayOptions": {"fromOffset": 4, "epoch": "e"},
        }
    )
    assert isinstance(sub, Subscribe)
    assert sub.filters.types == frozenset({EventType.OUTPUT})
    assert sub.replay == ReplayOptions(from_offset=4, epoch="e")
    assert parse({"type": "unsubscribe"}) == Unsubscribe()
    assert parse({"type": "replay", "replayOptions": {"lastN": 5}, "limit": 3}) == Replay(
        ReplayOptions(last_n=5), EventFilter(), 3
    )
    assert isinstance(parse({"type": "filter", "filters": {}}), SetFilter)
    assert parse({"type": "ping", "id": 9}) == Ping(9)
    assert parse({"type": "pong"}) == Pong()


@pytest.mark.parametrize(
    ("raw", "code", "names"),
    [
        (b"{", "malformed_json", "JSON"),
        (b'"text"', "invalid_message", "message"),
        (b"{}", "invalid_message", "type"),
        (b'{"type": 3}', "invalid_message", "type"),
        (b'{"type": "fly"}', "unknown_type", "fly"),
        (b'{"type": "ping", "x": 1}', "invalid_message", "x"),
        (b'{"type": "ping", "id": [1]}', "invalid_message", "id"),
        (b'{"type": "subscribe", "streamId": "t"}', "wrong_stream", "streamId"),
        (b'{"type": "replay"}', "bad_replay", "replayOptions"),
        (b'{"type": "replay", "replayOptions": {}, "limit": 0}', "bad_replay", "limit"),
        (b'{"type": "filter"}', "bad_filter", "filters"),
    ],
)
def test_bad_messages_name_the_problem(raw: bytes, code: str, names: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_client_message(raw, stream_id="s")
    assert refused.value.code == code
    assert names in refused.value.message


@pytest.mark.parametrize(
    ("filters", "names"),
    [
        ("x", "filters"),
        ({"colour": "red"}, "filters.colour"),
        ({"eventTypes": ["output", "nope"]}, "'nope'"),
        ({"eventTypes": "output,x"}, "'x'"),
        ({"eventTypes": [1]}, "filters.eventTypes"),
        ({"sources": ["stdin"]}, "'stdin'"),
        ({"startTime": "yesterday"}, "filters.startTime"),
        ({"startTime": 5, "endTime": 4}, "filters.endTime"),
        ({"searchText": ""}, "filters.searchText"),
        ({"searchText": "x" * 2000}, "filters.searchText"),
        ({"pattern": "x" * 300}, "filters.pattern"),
        ({"pattern": "(unclosed"}, "filters.pattern"),
        ({"pattern": "(a+)+b"}, "nested repetition"),
        ({"pattern": "(a|b*)*"}, "nested repetition"),
        ({"pattern": "((ab)*c)+"}, "nested repetition"),
    ],
)
def test_bad_filters_are_refused_naming_the_field(filters: object, names: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_filters(filters)
    assert refused.value.code == "bad_filter"
    assert names in refused.value.message


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ("x", "replayOptions"),
        ({"fromOffset": -2}, "fromOffset"),
        ({"fromOffset": True}, "fromOffset"),
        ({"lastN": 0}, "lastN"),
        ({"lastN": 10**9}, "lastN"),
        ({"fromOffset": 1, "lastN": 2}, "one of"),
        ({"epoch": 5}, "epoch"),
        ({"since": 1}, "since"),
    ],
)
def test_bad_replay_options_are_refused(options: object, names: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_replay_options(options)
    assert refused.value.code == "bad_replay" and names in refused.value.message


def _event(text: str, source: str = "stdout", ts: float = 100.0) -> Event:
    return Event(EventType.OUTPUT, Output(source, text), "s", 0, "id", ts)  # type: ignore[arg-type]


def test_filter_matching() -> None:
    everything = parse_filters(None)
    assert everything.empty and everything.matches(_event("x"))
    flt = parse_filters(
        {
            "eventTypes": ["output"],
            "sources": ["stderr"],
            "searchText": "FAIL",
            "startTime": 50,
            "endTime": 150,
            "pattern": r"\d+",
        }
    )
    assert flt.matches(_event("test 3 failed", "stderr"))
    assert not flt.matches(_event("test 3 failed", "stdout"))
    assert not flt.matches(_event("test failed", "stderr"))
    assert not flt.matches(_event("test 3 failed", "stderr", ts=200))
    status = Event(EventType.STATUS, Status("failing 1"), "s", 1, "id", 100.0)
    assert not flt.matches(status)
    by_json = parse_filters({"searchText": "failing"})
    assert by_json.matches(status) and by_json.matches(status, event_to_json(status))
    # Only the data is searched, as the store does: not the event's id or type.
    by_type = parse_filters({"searchText": "status"})
    assert by_type.matches(status, event_to_json(status))  # the payload's "status" key
    by_session = parse_filters({"searchText": '"session"'})
    assert not by_session.matches(status, event_to_json(status))
    assert not by_session.matches(status)


def test_filter_round_trips_through_its_wire_form() -> None:
    wire = {
        "eventTypes": ["output", "status"],
        "sources": ["stdout"],
        "startTime": 1.0,
        "endTime": 2.0,
        "searchText": "abc",
        "pattern": "a.c",
    }
    assert parse_filters(wire).to_json() == wire
    query = parse_filters(wire).to_query(after=3, limit=10)
    assert query.after == 3 and query.limit == 10 and query.search_text == "abc"


def test_events_frame_splices_serialized_events() -> None:
    raws = [event_to_json(_event("a")), event_to_json(_event("b"))]
    frame = orjson.loads(events_frame("s", raws))
    assert frame["type"] == "event" and frame["streamId"] == "s"
    assert [e["data"]["text"] for e in frame["events"]] == ["a", "b"]
    replay = orjson.loads(events_frame("s", raws[:1], replay=True, done=True))
    assert replay["type"] == "replay" and replay["done"] is True
    assert orjson.loads(events_frame("s", []))["events"] == []


def test_control_frames() -> None:
    ack = orjson.loads(
        connection_ack_frame(
            client_id="c",
            stream_id="s",
            status="running",
            last_offset=3,
            epoch="e",
            recovered=None,
            heartbeat=30.0,
        )
    )
    assert ack["type"] == "connection_ack" and ack["lastOffset"] == 3
    assert orjson.loads(error_frame("slow_consumer", "m", lastOffset=2)) == {
        "type": "error",
        "code": "slow_consumer",
        "message": "m",
        "lastOffset": 2,
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2026-01-01T10:00:00Z", 1767261600.0),
        ("2026-01-01T10:00:00.5+00:00", 1767261600.5),
        ("2026-01-01T11:00:00+01:00", 1767261600.0),
        ("2026-01-01T10:00:00", 1767261600.0),
        ("1767261600.25", 1767261600.25),
        (1767261600, 1767261600.0),
    ],
)
def test_times_are_epoch_seconds_or_iso_8601(text: object, seconds: float) -> None:
    assert parse_time(text, "startTime") == seconds


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity", "soon", "", "1e300", True, [1]])
def test_times_that_name_no_moment_are_refused(bad: object) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_time(bad, "filters.startTime")
    assert refused.value.code == "bad_filter"
    assert refused.value.message.startswith("filters.startTime: ")


def test_event_types_are_named_as_tstream_or_the_design_does() -> None:
    assert event_type("command_started") is EventType.COMMAND_STARTED
    assert event_type("COMMAND_STARTED") is EventType.COMMAND_STARTED
    assert event_type("Variable_Update") is EventType.VARIABLE_UPDATE
    assert event_type("NOPE") is None


def test_several_filters_pass_what_any_of_them_passes() -> None:
    flt = parse_filters(
        [{"eventTypes": ["STATUS"]}, {"timeRange": {"start": 50, "end": "1970-01-01T00:02:30Z"}}]
    )
    status = Event(EventType.STATUS, Status("x"), "s", 0, "id", 10.0)
    assert flt.matches(status) and flt.matches(_event("x", ts=100.0))
    assert not flt.matches(_event("x", ts=200.0))
    assert not flt.exact
    query = flt.to_query()
    assert query.types is None and query.start_time is None
    assert flt.to_json() == [{"eventTypes": ["status"]}, {"startTime": 50.0, "endTime": 150.0}]
    assert parse_filters([]).empty and parse_filters([{}, {"eventTypes": ["ERROR"]}]).empty
    sessions = parse_filters({"sessionIds": ["other"]})
    assert not sessions.matches(_event("x")) and not sessions.exact


@pytest.mark.parametrize(
    ("filters", "names"),
    [
        ([{"customFilter": "e => true"}], "filters[0].customFilter"),
        ([{}, "x"], "filters[1]"),
        ([{"eventTypes": ["STATUS"]}] * 17, "at most 16"),
        ({"timeRange": {"start": 1}, "startTime": 1}, "not both"),
        ({"timeRange": {"from": 1}}, "filters.timeRange"),
        ({"timeRange": {"start": "nan"}}, "filters.timeRange.start"),
        ({"sessionIds": [1]}, "filters.sessionIds"),
    ],
)
def test_bad_stream_filters_are_refused_naming_the_field(filters: object, names: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_filters(filters)
    assert names in refused.value.message


def test_replay_options_may_be_a_history_filter() -> None:
    options = parse_replay_options(
        {"eventTypes": ["ERROR"], "startTime": "2026-01-01T10:00:00Z", "limit": 5, "offset": 2}
    )
    assert options.from_timestamp == 1767261600.0 and options.selects
    assert options.limit == 5 and options.skip == 2
    assert options.filters == parse_filters({"eventTypes": ["error"]})
    whole = parse_replay_options({"limit": 3})
    assert whole.from_offset == -1 and whole.filters is None and whole.selects
    assert not parse_replay_options({"lastN": 3}).selects
    with pytest.raises(ProtocolError, match=r"not \['fromOffset', 'startTime'\]"):
        parse_replay_options({"fromOffset": 1, "startTime": 5})
    with pytest.raises(ProtocolError, match=r"replayOptions\.eventTypes"):
        parse_replay_options({"eventTypes": ["NOPE"]})
    with pytest.raises(ProtocolError, match="choose events in filters or in replayOptions"):
        parse({"type": "replay", "filters": {}, "replayOptions": {"searchText": "x"}})
