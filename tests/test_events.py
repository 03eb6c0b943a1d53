"""The event model: every type survives bytes and back; bad input names the field."""

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_stream.events import (
    PAYLOADS,
    Command,
    Custom,
    Error,
    Event,
    EventType,
    EventValidationError,
    Json,
    Match,
    Output,
    Reasoning,
    Screenshot,
    SessionEnded,
    SessionStarted,
    Status,
    VariableUpdate,
    converter,
    event_from_dict,
    event_from_json,
    event_to_dict,
    event_to_json,
    make_event,
    new_event_ids,
    placed_events,
    structure_data,
)

SAMPLES = {
    EventType.OUTPUT: Output("stderr", "warning: låg disk", "\r\n", 7, False, None),
    EventType.SESSION_STARTED: SessionStarted(
        ["make", "-j4"], "/src", 4242, "pty", "build-host", {"ci": True, "job": 17}
    ),
    EventType.SESSION_ENDED: SessionEnded(
        137, 9, True, 12.5, {"jsonl": 3}, True, 900, {"cost_usd": 0.12, "turns": 4}
    ),
    EventType.COMMAND_STARTED: Command(
        "Bash", "ls -l", {"command": "ls -l"}, "toolu_1", context={"message_id": "m1"}
    ),
    EventType.COMMAND_COMPLETED: Command(
        "Bash", "ls -l", {"command": "ls -l"}, "toolu_1", result="a\nb", duration=1.25
    ),
    EventType.COMMAND_FAILED: Command(
        "Edit", None, {}, "toolu_2", error={"code": 1}, context={"why": "no match"}, duration=0.5
    ),
    EventType.REASONING: Reasoning("check the tests first", 0.75, "thinking", {"step": 2}),
    EventType.SCREENSHOT: Screenshot(
        "shots/1.png", None, "image/png", 800, 600, b"\x89PNG\r\n\x1a\n\x00\xff", "login page"
    ),
    EventType.VARIABLE_UPDATE: VariableUpdate("progress", [0.5, {"of": 10}], None),
    EventType.STATUS: Status("deploying", "phase", "3 of 5 hosts"),
    EventType.ERROR: Error("disk full", "ENOSPC", {"path": "/var", "free": 0}),
    EventType.MATCH: Match(
        "error", {"message": "boom", "1": None}, "ERROR: boom", "stderr", 3, "error"
    ),
    EventType.JSON: Json({"a": [1, 2.5, None, True], "é": "ü"}, "yaml", "stdout", 11),
    EventType.CUSTOM: Custom("metrics", {"rps": 1200}),
}


def test_every_event_type_has_a_sample():
    assert set(SAMPLES) == set(EventType)


@pytest.mark.parametrize("etype", list(EventType), ids=lambda t: t.value)
def test_every_type_survives_bytes_and_back(etype):
    event = Event(etype, SAMPLES[etype], "build-1", 42, "abcdefghijklmnop", 1763857000.25)
    raw = event_to_json(event)
    assert isinstance(raw, bytes)
    assert event_from_json(raw) == event
    assert event_from_dict(event_to_dict(event)) == event


def test_output_with_raw_bytes_survives():
    event = Event(EventType.OUTPUT, Output("stdout", "caf\ufffd", "\n", 0, False, b"caf\xe9\n"))
    assert event_from_json(event_to_json(event)) == event


@pytest.mark.parametrize("etype", list(EventType), ids=lambda t: t.value)
def test_unknown_data_field_is_named(etype):
    obj = orjson.loads(event_to_json(Event(etype, SAMPLES[etype], "s", 0)))
    obj["data"]["surprise"] = 1
    with pytest.raises(EventValidationError) as caught:
        event_from_dict(obj)
    assert caught.value.errors == ["data.surprise: unknown field"]


@pytest.mark.parametrize(
    ("etype", "field", "value", "expected"),
    [
        (EventType.OUTPUT, "source", 3, "data.source"),
        (EventType.OUTPUT, "text", None, "data.text"),
        (EventType.SESSION_STARTED, "command", "make", "data.command"),
        (EventType.SESSION_ENDED, "exit_status", "0", "data.exit_status"),
        (EventType.SESSION_ENDED, "dropped", {"jsonl": "3"}, "data.dropped"),
        (EventType.COMMAND_STARTED, "parameters", [1], "data.parameters"),
        (EventType.COMMAND_COMPLETED, "duration", "1s", "data.duration"),
        (EventType.REASONING, "confidence", True, "data.confidence"),
        (EventType.SCREENSHOT, "thumbnail", "not base64!", "data.thumbnail"),
        (EventType.SCREENSHOT, "width", 1.5, "data.width"),
        (EventType.VARIABLE_UPDATE, "name", 5, "data.name"),
        (EventType.STATUS, "status", ["ok"], "data.status"),
        (EventType.ERROR, "context", "oops", "data.context"),
        (EventType.MATCH, "line", "3", "data.line"),
        (EventType.JSON, "format", "xml", "data.format"),
        (EventType.CUSTOM, "name", {}, "data.name"),
    ],
)
def test_wrong_type_is_named(etype, field, value, expected):
    obj = orjson.loads(event_to_json(Event(etype, SAMPLES[etype], "s", 0)))
    obj["data"][field] = value
    with pytest.raises(EventValidationError) as caught:
        event_from_dict(obj)
    assert any(e.startswith(f"{expected}:") for e in caught.value.errors), caught.value.errors


def test_missing_required_data_field_is_named():
    obj = orjson.loads(event_to_json(Event(EventType.STATUS, Status("ok"), "s", 0)))
    del obj["data"]["status"]
    with pytest.raises(EventValidationError, match=r"data\.status: required field missing"):
        event_from_dict(obj)


def test_envelope_problems_are_all_named():
    with pytest.raises(EventValidationError) as caught:
        event_from_dict({"type": "nope", "offset": "1", "extra": 0, "data": {}})
    errors = caught.value.errors
    assert "extra: unknown field" in errors
    assert "type: unknown event type 'nope'" in errors
    assert "offset: expected integer, got str" in errors
    assert "id: required field missing" in errors


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,2]", b"null", b"\xff"])
def test_garbage_is_a_validation_error_not_a_crash(raw):
    with pytest.raises(EventValidationError):
        event_from_json(raw)


def test_event_published_from_outside_may_leave_placement_to_the_hub():
    event = event_from_dict({"type": "status", "data": {"status": "ok"}}, require_placement=False)
    assert event.offset == -1 and event.data == Status("ok")


def test_make_event_refuses_the_wrong_payload():
    with pytest.raises(EventValidationError, match="takes Status, not Error"):
        make_event("status", Error("x"))


def test_placed_events_have_offsets_ids_and_one_timestamp():
    events = placed_events(EventType.JSON, [Json(i) for i in range(3)], "s", 10, 5.0)
    assert [(e.session, e.offset, e.ts) for e in events] == [
        ("s", 10, 5.0),
        ("s", 11, 5.0),
        ("s", 12, 5.0),
    ]
    assert len({e.id for e in events}) == 3


def test_new_event_ids_are_url_safe_and_distinct():
    ids = new_event_ids(1000)
    assert len(set(ids)) == 1000
    assert all(len(i) == 16 and i.replace("-", "").replace("_", "").isalnum() for i in ids)
    assert new_event_ids(0) == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(document=json_values, text=st.text())
def test_any_json_document_and_text_survive(document, text):
    for event in (
        Event(EventType.JSON, Json(document), "s", 1),
        Event(EventType.OUTPUT, Output("stdout", text), "s", 2),
    ):
        assert event_from_json(event_to_json(event)) == event


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner, max_size=2)
    ),
    max_leaves=4,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(PAYLOADS, key=str)), st.data())
def test_structuring_gives_what_the_converter_gives(etype, data):
    names = [f.name for f in attrs.fields(PAYLOADS[etype])] + ["extra"]
    fields = data.draw(
        st.dictionaries(
            st.sampled_from(names),
            json_values | st.sampled_from(["stdout", "json", "yaml", "pipes", "image/png"]),
            max_size=len(names),
        )
    )
    try:
        expected = converter.structure(fields, PAYLOADS[etype])
    except Exception:
        with pytest.raises(EventValidationError):
            structure_data(etype, fields)
    else:
        assert structure_data(etype, fields) == expected
