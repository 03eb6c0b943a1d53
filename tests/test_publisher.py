"""Publishing into a session's log: by kind, in bulk, filtered, and by id."""

import pytest

from trio_stream.events import EventType, EventValidationError, Json, Status
from trio_stream.log import SessionLog
from trio_stream.publisher import Publisher, SessionRegistry
from trio_stream.store.base import UnknownSessionError


def test_publish_places_events_at_consecutive_offsets():
    log = SessionLog("s1", record_backlog=None)
    pub = Publisher(log)
    first = pub.publish_status("running")
    second = pub.publish_reasoning("look first", kind="thinking")
    assert (first.offset, second.offset) == (0, 1)
    assert first.session == second.session == "s1"


def test_publish_payloads_shares_ts_and_keeps_ids_unique():
    log = SessionLog("s1", first_offset=5, record_backlog=None)
    events = Publisher(log).publish_payloads(
        EventType.JSON, [Json({"n": i}) for i in range(50)], ts=12.5
    )
    assert [e.offset for e in events] == list(range(5, 55))
    assert {e.ts for e in events} == {12.5}
    assert len({e.id for e in events}) == 50
    assert log.since(4).events == events


def test_publish_payloads_refuses_the_wrong_payload_class():
    pub = Publisher(SessionLog("s1", record_backlog=None))
    with pytest.raises(EventValidationError, match="takes Json, not Status"):
        pub.publish_payloads(EventType.JSON, [Status("ok")])


def test_dropped_types_are_counted_not_placed():
    log = SessionLog("s1", record_backlog=None)
    pub = Publisher(log, drop_types={EventType.REASONING})
    assert pub.publish_reasoning("hidden").offset == -1
    pub.publish_status("shown")
    assert [e.type for e in log.since(-1).events] == [EventType.STATUS]
    assert pub.dropped == 1


def test_registry_reaches_a_live_session_by_id_and_forgets_it_after():
    registry = SessionRegistry()
    log = SessionLog("build-1", record_backlog=None)
    with registry.register(log):
        assert "build-1" in registry
        registry.publisher("build-1").publish_status("from outside")
        assert log.since(-1).events[0].data == Status("from outside")
    with pytest.raises(UnknownSessionError, match="build-1"):
        registry.publisher("build-1")


def test_registry_refuses_two_live_sessions_with_one_id():
    registry = SessionRegistry()
    with registry.register(SessionLog("x", record_backlog=None)):
        with pytest.raises(ValueError, match="already has the id 'x'"):
            with registry.register(SessionLog("x", record_backlog=None)):
                pass


def test_published_documents_are_json_or_typed_events_in_order():
    log = SessionLog("s", record_backlog=None)
    texts = ['{"a": 1}', '{"type": "status", "status": "up"}']
    Publisher(log).publish_documents("stdout", texts, [3, 4], {1: EventType.STATUS}, ts=2.0)
    events = log.since(-1).events
    assert [e.data for e in events] == [Json({"a": 1}, line=3), Status("up")]
    assert [(e.offset, e.ts) for e in events] == [(0, 2.0), (1, 2.0)]
    assert list(events) == list(log.since(-1).events)


def test_published_documents_pass_the_drop_filter():
    log = SessionLog("s", record_backlog=None)
    pub = Publisher(log, drop_types=[EventType.JSON])
    texts = ['{"a": 1}', '{"type": "status", "status": "up"}']
    pub.publish_documents("stdout", texts, [3, 4], {1: EventType.STATUS})
    assert [e.data for e in log.since(-1).events] == [Status("up")]
    assert pub.dropped == 1
