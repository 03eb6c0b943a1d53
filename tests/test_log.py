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
