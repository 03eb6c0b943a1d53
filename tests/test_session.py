import signal
import sys
from contextlib import aclosing

import attrs
import pytest
import trio

from trio_stream.events import EventType
from trio_stream.process import CommandNotFoundError
from trio_stream.session import StreamConfig, open_session, run_session
from trio_stream.store.base import SessionStatus, StoreError
from trio_stream.store.memory import MemoryStore


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (it may linger as a zombie of an idle init)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] == b"Z"
    except FileNotFoundError:
        return True


async def collect(command, config=None):
    events = []
    async with open_session(command, config) as session:
        async for batch in session.events():
            events.extend(batch)
    return session.result, events


def outputs(events):
    return [(e.data.source, e.data.text) for e in events if e.type is EventType.OUTPUT]


@attrs.define
class Recording:
    name: str = "recording"
    seen: list = attrs.Factory(list)
    completion: object = None
    delay: float = 0.0
    fail_at: int | None = None
    errors: list = attrs.Factory(list)

    async def process(self, batch, publish):
        if self.delay:
            await trio.sleep(self.delay)
        for line in batch.lines:
            if self.fail_at is not None and line.text == str(self.fail_at):
                raise RuntimeError("bad line")
            self.seen.append(line.text)

    async def on_complete(self, completion, publish):
        self.completion = completion
        publish.publish_status("done", message=str(len(self.seen)))

    async def on_error(self, error, publish):
        self.errors.append(error)


async def test_a_session_starts_and_ends_with_its_events_at_dense_offsets():
    result, events = await collect(["sh", "-c", "echo out; echo err >&2; printf tail; exit 3"])
    assert events[0].type is EventType.SESSION_STARTED
    assert events[-1].type is EventType.SESSION_ENDED
    assert [e.offset for e in events] == list(range(len(events)))
    assert sorted(outputs(events)) == [("stderr", "err"), ("stdout", "out"), ("stdout", "tail")]
    tail = next(e.data for e in events if e.type is EventType.OUTPUT and e.data.text == "tail")
    assert tail.eol == ""
    assert [e.data.line for e in events if e.type is EventType.OUTPUT] == [0, 1, 2]
    assert result.exit_status == 3 and events[-1].data.exit_status == 3
    assert events[-1].data.lines == 3 == result.lines


async def test_merge_mode_keeps_the_exact_order():
    script = "for i in 1 2 3 4 5; do echo o$i; echo e$i >&2; done"
    _, events = await collect(["sh", "-c", script], StreamConfig(mode="merge"))
    texts = [text for _, text in outputs(events)]
    assert texts == [f"{s}{i}" for i in range(1, 6) for s in "oe"]


async def test_pty_mode_gives_the_child_a_terminal():
    _, events = await collect(
        ["sh", "-c", "test -t 1 && echo tty-out; test -t 2 && echo tty-err >&2"],
        StreamConfig(mode="pty", window_size=(30, 100)),
    )
    assert [t for _, t in outputs(events)] == ["tty-out", "tty-err"]
    assert events[1].data.eol == "\r\n"


async def test_pty_window_size_reaches_the_child():
    _, events = await collect(
        [sys.executable, "-c", "import os; print(os.get_terminal_size(1))"],
        StreamConfig(mode="pty", window_size=(33, 111)),
    )
    assert "columns=111, lines=33" in outputs(events)[0][1]


async def test_invalid_utf8_keeps_raw_bytes_and_long_lines_are_cut():
    _, events = await collect(
        ["printf", "\\377ok\\nabcdefghij\\n"], StreamConfig(max_line_length=4)
    )
    data = [e.data for e in events if e.type is EventType.OUTPUT]
    assert data[0].raw == b"\xffok\n" and data[0].text == "\ufffdok"
    assert [(d.text, d.partial) for d in data[1:]] == [
        ("abcd", True),
        ("efgh", True),
        ("ij", False),
    ]


async def test_processors_get_every_line_and_complete_with_the_status():
    first, second = Recording("first"), Recording("second")
    result, events = await collect(
        ["seq", "5000"], StreamConfig(processors=[first, second], buffer=1)
    )
    assert first.seen == second.seen == [str(i) for i in range(1, 5001)]
    assert first.completion.exit_status == 0
    statuses = [e for e in events if e.type is EventType.STATUS]
    assert len(statuses) == 2 and events[-1].type is EventType.SESSION_ENDED
    assert result.dropped == {"first": 0, "second": 0}


async def test_a_processor_that_raises_is_isolated_and_reported():
    bad, good = Recording("bad", fail_at=3), Recording("good")
    result, events = await collect(["seq", "2000"], StreamConfig(processors=[bad, good]))
    assert result.exit_status == 0
    assert len(good.seen) == 2000 and len(outputs(events)) == 2000
    assert isinstance(bad.errors[0], RuntimeError)
    errors = [e.data for e in events if e.type is EventType.ERROR]
    assert errors[0].context == {"processor": "bad"} and "bad line" in errors[0].message
    assert result.dropped["bad"] > 0 and "bad" in result.processor_errors


@pytest.mark.parametrize("policy", ["drop-newest", "drop-oldest", "fail"])
async def test_a_slow_processor_loses_lines_under_a_dropping_policy_never_the_record(policy):
    slow = Recording("slow", delay=0.05)
    script = "for i in $(seq 30); do echo $i; sleep 0.005; done"
    result, events = await collect(
        ["sh", "-c", script], StreamConfig(processors=[slow], buffer=1, overflow=policy)
    )
    assert len(outputs(events)) == 30
    assert 0 < result.dropped["slow"] == 30 - len(slow.seen)
    assert events[-1].data.dropped == {"slow": result.dropped["slow"]}
    if policy == "fail":
        assert "slow" in result.processor_errors
        assert any(e.type is EventType.ERROR for e in events)


async def test_block_policy_slows_the_child_instead_of_dropping():
    slow = Recording("slow", delay=0.002)
    result, _ = await collect(
        ["seq", "200000"], StreamConfig(processors=[slow], buffer=1, overflow="block")
    )
    assert result.dropped == {"slow": 0} and len(slow.seen) == 200000


@attrs.define
class DropOdd:
    name: str = "drop-odd"

    def apply(self, source, lines):
        return [line for line in lines if int(line.text) % 2 == 0]


async def test_transforms_leave_lines_out_and_count_them():
    result, events = await collect(["seq", "10"], StreamConfig(transforms=[DropOdd()]))
    assert [t for _, t in outputs(events)] == ["2", "4", "6", "8", "10"]
    assert result.filtered == 5 and result.lines == 5


async def test_timeout_terminates_the_group_and_reports_124():
    with trio.fail_after(5):
        result, events = await collect(
            ["sh", "-c", "echo started; exec sleep 30"], StreamConfig(timeout=0.2)
        )
    assert result.timed_out and result.exit_status == 124 and result.signal == signal.SIGTERM
    assert outputs(events) == [("stdout", "started")]
    assert events[-1].data.timed_out


async def test_cancelling_the_owner_terminates_the_child_and_ends_the_session():
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            session = await nursery.start(run_session, ["sleep", "30"], StreamConfig())
            nursery.cancel_scope.cancel()
    assert session.result.signal == signal.SIGTERM
    assert session.log.closed
    assert session.log.since(-1).events[-1].type is EventType.SESSION_ENDED


async def test_an_error_in_the_block_cancels_the_session():
    with trio.fail_after(5), pytest.raises(KeyError):
        async with open_session(["sleep", "30"]) as session:
            raise KeyError("boom")
    assert session.result.cancelled and session.result.signal == signal.SIGTERM


async def test_a_session_is_recorded_in_its_store():
    store = MemoryStore()
    result = await run_session(
        ["sh", "-c", "seq 3; exit 4"], StreamConfig(store=store, session_id="rec-1")
    )
    events = await store.read("rec-1")
    assert next(e.type for e in events) is EventType.SESSION_STARTED
    assert len([e for e in events if e.type is EventType.OUTPUT]) == 3
    info = await store.get_session("rec-1")
    assert info.status is SessionStatus.FAILED and info.exit_status == 4 == result.exit_status


async def test_a_command_that_cannot_start_is_recorded_as_failed():
    store = MemoryStore()
    with pytest.raises(CommandNotFoundError):
        await run_session(["nosuch-tstream-cmd"], StreamConfig(store=store, session_id="nf"))
    info = await store.get_session("nf")
    assert info.status is SessionStatus.FAILED and info.exit_status == 127


async def test_invalid_configuration_is_refused_with_the_field_named():
    with pytest.raises(ValueError, match="buffer must be at least 1"):
        StreamConfig(buffer=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        StreamConfig(mode="tty")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be more than 0"):
        StreamConfig(timeout=0)
    with pytest.raises(ValueError, match="two processors are named"):
        await run_session(["true"], StreamConfig(processors=[Recording(), Recording()]))


class FailingStore:
    """A memory store whose writes of events fail, as a full disk would."""

    def __init__(self):
        self._store = MemoryStore()

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def append(self, session_id, events):
        raise StoreError("disk full")


async def test_a_failing_store_ends_the_session_and_its_command():
    with trio.fail_after(5), pytest.RaisesGroup(StoreError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            session = await nursery.start(
                run_session, ["sleep", "30"], StreamConfig(store=FailingStore(), session_id="f")
            )
    assert session.child.process.returncode == -signal.SIGTERM


@attrs.define
class Stuck:
    name: str = "stuck"

    async def process(self, batch, publish):
        await trio.sleep_forever()

    async def on_complete(self, completion, publish):
        await trio.sleep_forever()

    async def on_error(self, error, publish):
        pass


async def test_a_stuck_processor_does_not_hold_a_cancelled_session():
    config = StreamConfig(processors=[Stuck()], drain_timeout=0.2)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            session = await nursery.start(run_session, ["sh", "-c", "echo x; sleep 30"], config)
            await session.log.wait_after(0)
            session.cancel()
    assert session.result.cancelled and session.log.closed


async def test_a_slow_follower_gets_every_event_even_with_a_short_history():
    offsets = []
    async with open_session(["seq", "20000"], StreamConfig(history=100)) as session:
        async for batch in session.events():
            offsets.extend(e.offset for e in batch)
            await trio.sleep(0)
    assert offsets == list(range(20002))


async def test_a_follower_that_stops_early_does_not_hold_the_readers():
    with trio.fail_after(5):
        async with open_session(["seq", "100000"], StreamConfig(history=100)) as session:
            async with aclosing(session.events()) as events:
                async for _ in events:
                    break
    assert session.result.lines == 100000


async def test_timeout_leaves_no_grandchild_that_ignores_sigterm():
    script = "sh -c 'trap \"\" TERM; echo $$; exec sleep 30' & wait"
    config = StreamConfig(timeout=0.3, kill_after=0.3)
    with trio.fail_after(5):
        result, events = await collect(["sh", "-c", script], config)
    grandchild = int(outputs(events)[0][1])
    assert result.exit_status == 124
    assert gone(grandchild)


async def test_a_background_grandchild_holding_the_pipes_cannot_hang_the_session():
    config = StreamConfig(drain_timeout=0.2, kill_after=0.5)
    with trio.fail_after(5):
        result, events = await collect(["sh", "-c", "echo $$; sleep 30 &"], config)
    assert result.exit_status == 0 and len(outputs(events)) == 1
