"""The session log: offsets, history and batches of events built on demand."""

import operator

import pytest
import trio
import trio.testing

from trio_stream.batches import EventRuns, OutputBatch
from trio_stream.events import EventType, Output, Status
from trio_stream.lines import Lines
from trio_stream.log import SessionLog
from trio_stream.publisher import Publisher
from trio_stream.store import chunks


def output_batch(log: SessionLog, texts: list[str], first_line: int = 0) -> OutputBatch:
    return OutputBatch(log.session_id, log.next_offset, 5.0, "stdout", first_line, Lines(texts))


def test_a_batch_is_placed_at_the_next_offsets_among_other_events():
    log = SessionLog("s", record_backlog=None)
    Publisher(log).publish_status("first")
    log.append_batch(output_batch(log, ["a", "b"]))
    Publisher(log).publish_status("last")
    events = log.since(-1).events
    assert [e.offset for e in events] == [0, 1, 2, 3]
    assert [e.type for e in events] == [
        EventType.STATUS,
        EventType.OUTPUT,
        EventType.OUTPUT,
        EventType.STATUS,
    ]
    assert events[2].data == Output("stdout", "b", "\n", 1)
    assert events[3].data == Status("last")


def test_since_an_offset_inside_a_batch_gives_the_rest_of_it():
    log = SessionLog("s", record_backlog=None)
    log.append_batch(output_batch(log, ["a", "b", "c", "d"]))
    assert [e.data.text for e in log.since(1).events] == ["c", "d"]
    assert log.since(1).events.first_offset == 2


def test_events_of_a_batch_are_the_same_each_time_they_are_read():
    log = SessionLog("s", record_backlog=None)
    log.append_batch(output_batch(log, ["a", "b", "c"]))
    whole = list(log.since(-1).events)
    assert list(log.since(0).events) == whole[1:]
    assert len({e.id for e in whole}) == 3


def test_history_is_counted_in_events_across_batches():
    log = SessionLog("s", history=3, record_backlog=None)
    log.append_batch(output_batch(log, ["a", "b"]))
    log.append_batch(output_batch(log, ["c", "d"], 2))
    held = log.since(-1)
    assert not held.complete
    assert [e.offset for e in held.events] == [1, 2, 3]
    assert log.since(0).complete


def test_a_batch_placed_elsewhere_is_refused():
    log = SessionLog("s", record_backlog=None)
    batch = OutputBatch("s", 4, 1.0, "stdout", 0, Lines(["x"]))
    with pytest.raises(ValueError, match="cannot follow"):
        log.append_batch(batch)


def test_the_recorder_takes_batches_as_events():
    log = SessionLog("s")
    log.append_batch(output_batch(log, ["a", "b"]))
    taken = log.take_unrecorded()
    assert [e.offset for e in taken] == [0, 1]
    assert taken[0:1] == [log.since(-1).events[0]]
    assert len(log.take_unrecorded()) == 0


def test_events_of_several_runs_index_and_slice_like_a_list():
    log = SessionLog("s", record_backlog=None)
    Publisher(log).publish_status("first")
    log.append_batch(output_batch(log, ["a", "b", "c"]))
    Publisher(log).publish_status("last")
    events = log.since(-1).events
    whole = list(events)
    assert [events[i] for i in range(-5, 5)] == whole + whole
    assert events[1:4] == whole[1:4]
    # Code that joins what it holds to a batch with + keeps working.
    assert operator.add(whole[:1], events) == [whole[0], *whole]


def runs_of_a_session() -> tuple[SessionLog, list]:
    """A session's log: a status, a batch of lines, a status, another batch."""
    log = SessionLog("s", record_backlog=None)
    Publisher(log).publish_status("first")
    log.append_batch(output_batch(log, ["a", "b", "c"]))
    Publisher(log).publish_status("mid")
    log.append_batch(output_batch(log, ["d", "e"], first_line=3))
    return log, list(log.since(-1).events)


@pytest.mark.parametrize("after", range(-1, 8))
def test_runs_after_an_offset_keep_their_batches(after):
    log, events = runs_of_a_session()
    runs = log.since(-1).events.after(after)
    assert list(runs) == [e for e in events if e.offset > after]
    assert all(isinstance(r, OutputBatch) for r in runs.runs if r and r[0].type is EventType.OUTPUT)


def test_another_log_takes_runs_as_they_are():
    source, events = runs_of_a_session()
    copy = SessionLog("s", record_backlog=None)
    copy.append_runs(source.since(-1).events)
    assert list(copy.since(-1).events) == events
    assert [type(r) for r in copy.since(-1).events.runs] == [
        type(r) for r in source.since(-1).events.runs
    ]


def test_stored_rows_are_taken_at_the_next_offset_only():
    _, events = runs_of_a_session()
    rows = chunks.decode_rows("s", [chunks.encode(events)])
    copy = SessionLog("s", record_backlog=None)
    with pytest.raises(ValueError, match="cannot follow"):
        copy.append_runs(EventRuns([rows.after(1)]))
    copy.append_runs(EventRuns([rows]))
    assert list(copy.since(-1).events) == events
    assert copy.since(3).events.runs[0].rows == rows.after(3).rows


async def test_the_recorder_is_woken_by_a_full_backlog_not_by_each_append():
    log = SessionLog("s", record_backlog=3)
    woken = []

    async def recorder() -> None:
        await log.wait_backlog_full()
        woken.append(log.next_offset)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder)
        for _ in range(2):
            log.append_batch(output_batch(log, ["a"]))
            await trio.testing.wait_all_tasks_blocked()
            assert woken == []
        log.append_batch(output_batch(log, ["b"]))
    assert woken == [3]
    # Taken by the recorder, the backlog is empty again: waiting waits again, until the
    # log closes.
    log.take_unrecorded()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == [3]
        log.close()
    assert woken == [3, 3]


def placed_at(offset: int, text: str):
    from trio_stream.events import Event

    return Event(EventType.OUTPUT, Output("stdout", text), "s", offset)


async def test_place_skips_given_offsets_the_log_holds_and_refuses_a_gap():
    from trio_stream.events import Event, SessionEnded
    from trio_stream.log import OffsetGapError, PlacementError

    log = SessionLog("s", record_backlog=None)
    first = await log.place([placed_at(0, "a"), placed_at(1, "b")], [True, True])
    assert (first.first_offset, first.last_offset, first.duplicates) == (0, 1, 0)
    # A retry of offset 1 with a new event: the duplicate is skipped, the new one placed.
    again = await log.place([placed_at(1, "b"), placed_at(0, "new")], [True, False])
    assert again.duplicates == 1 and [e.offset for e in again.events] == [2]
    with pytest.raises(OffsetGapError) as gap:
        await log.place([placed_at(5, "x")], [True])
    assert gap.value.last_offset == 2 and "leaves a gap after 2" in str(gap.value)
    ended = Event(EventType.SESSION_ENDED, SessionEnded(0))
    with pytest.raises(PlacementError, match=r"events\[1\]: no event may follow"):
        await log.place([ended, placed_at(0, "late")], [False, False])
    assert log.last_offset == 2
    done = await log.place([ended], [False])
    assert done.ended is not None and done.ended.offset == 3


async def test_place_runs_keeps_what_follows_and_builds_no_event_for_it():
    from trio_stream.log import OffsetGapError

    source = SessionLog("s", record_backlog=None)
    source.append_built(lambda sid, first: OutputBatch(sid, first, 1.0, "stdout", 0, Lines("abcd")))
    log = SessionLog("s", record_backlog=None)
    runs = source.since(-1).events
    placed = await log.place_runs(runs)
    assert (placed.first_offset, placed.last_offset, placed.duplicates) == (0, 3, 0)
    assert isinstance(log.since(-1).events.runs[0], OutputBatch)
    again = await log.place_runs(runs)
    assert again.first_offset is None and again.duplicates == 4
    source.append_built(lambda sid, first: OutputBatch(sid, first, 1.0, "stdout", 4, Lines("ef")))
    with pytest.raises(OffsetGapError):
        await log.place_runs(source.since(4).events)


def test_append_built_gives_the_builder_the_next_offset():
    log = SessionLog("s", record_backlog=None)
    Publisher(log).publish_status("first")
    seen = []

    def build(sid, first):
        seen.append((sid, first))
        return OutputBatch(sid, first, 1.0, "stdout", 0, Lines(["x"]))

    batch = log.append_built(build)
    assert seen == [("s", 1)] and batch.first_offset == 1 and log.last_offset == 1
