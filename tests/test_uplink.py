"""The uplink: a session's log published to a real hub, through drops and restarts."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_stream.batches import EventRuns, OutputBatch
from trio_stream.client import HubPublisher
from trio_stream.events import Event, EventType, Output, SessionEnded, SessionStarted, event_to_json
from trio_stream.hub.config import HubConfig, Listen, TokenSpec
from trio_stream.hub.server import serve_hub
from trio_stream.lines import Lines
from trio_stream.log import SessionLog
from trio_stream.store.base import HistoryQuery
from trio_stream.store.memory import MemoryStore
from trio_stream.uplink import Backoff, Uplink, check_hub_url, encode, messages

FAST = Backoff(initial=0.01, cap=0.05)


def started() -> Event:
    return Event(EventType.SESSION_STARTED, SessionStarted(["make"], "/", 1, "pipes", "host"))


def lines(first: int, count: int) -> list[Event]:
    return [
        Event(EventType.OUTPUT, Output("stdout", f"line {i}", line=i))
        for i in range(first, first + count)
    ]


def ended(status: int = 0) -> Event:
    return Event(EventType.SESSION_ENDED, SessionEnded(status))


class Recorded:
    """A session's log, recorded into a local store as ``tstream run`` does."""

    def __init__(self, sid: str = "s1", history: int = 10_000, stored: int = 100_000) -> None:
        self.log = SessionLog(sid, history=history, record_backlog=None)
        self.store = MemoryStore(max_history=stored)

    async def append(self, events: list[Event]) -> list[Event]:
        if not self.log.next_offset:
            from trio_stream.store.base import SessionInfo

            await self.store.create_session(SessionInfo(self.log.session_id))
        placed = self.log.append(events)
        await self.store.append(self.log.session_id, placed)
        return placed

    async def append_lines(self, lines: Lines, source: str = "stdout") -> list[Event]:
        """Lines captured together, as one batch (kept as columns)."""
        log = self.log
        batch = OutputBatch(log.session_id, log.next_offset, 1795440000.5, source, 1, lines)  # type: ignore[arg-type]
        log.append_batch(batch)
        await self.store.append(log.session_id, batch)
        return list(batch)


@pytest.fixture
async def hub_store() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    yield store
    await store.aclose()


class RunningHub:
    """A hub served in the test's nursery; :meth:`stop` shuts it down and waits."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()

    async def serve(
        self, config: HubConfig, store: MemoryStore, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            with self.scope:
                served = await serve_hub(config, store, task_status=task_status)
                assert served is None
        finally:
            self.stopped.set()

    async def stop(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()


HubRunner = Callable[..., Awaitable[RunningHub]]


@pytest.fixture
def run_hub(nursery: trio.Nursery, tmp_path: Path, hub_store: MemoryStore) -> HubRunner:
    """Start a hub on ``tmp_path/hub.sock`` (over ``hub_store`` unless told)."""

    async def start(store: MemoryStore | None = None, **values: Any) -> RunningHub:
        config = HubConfig(listen=(Listen(path=str(tmp_path / "hub.sock")),), **values)
        hub = RunningHub()
        await nursery.start(hub.serve, config, store or hub_store)
        return hub

    return start


def hub_url(tmp_path: Path) -> str:
    return f"unix:{tmp_path / 'hub.sock'}"


async def hub_copy(store: MemoryStore, sid: str = "s1") -> list[Event]:
    return await store.read(sid, HistoryQuery())


def assert_same(copy: list[Event], log_events: list[Event]) -> None:
    assert [e.offset for e in copy] == list(range(len(log_events)))
    assert [e.id for e in copy] == [e.id for e in log_events]


async def test_every_event_of_a_session_reaches_the_hub_at_its_offset(
    nursery, tmp_path, run_hub, hub_store
):
    await run_hub()
    session = Recorded()
    uplink = Uplink(hub_url(tmp_path), session.log, store=session.store, backoff=FAST)
    nursery.start_soon(uplink.run)
    sent = await session.append([started(), *lines(0, 500)])
    sent += await session.append(lines(500, 500))
    sent += await session.append([ended()])
    session.log.close()
    with trio.fail_after(10):
        assert await uplink.finish(5)
    assert_same(await hub_copy(hub_store), sent)
    info = await hub_store.get_session("s1")
    assert info.status.value == "completed"
    assert info.command == ["make"]


async def test_a_hub_down_at_start_gets_everything_once_it_comes_up(
    nursery, tmp_path, run_hub, hub_store
):
    session = Recorded()
    notices: list[str] = []
    uplink = Uplink(
        hub_url(tmp_path), session.log, store=session.store, backoff=FAST, notify=notices.append
    )
    nursery.start_soon(uplink.run)
    sent = await session.append([started(), *lines(0, 100)])
    await trio.testing.wait_all_tasks_blocked()
    assert not uplink.connected
    await run_hub()
    with trio.fail_after(10):
        await uplink.wait_acked(sent[-1].offset)
    sent += await session.append([ended()])
    session.log.close()
    with trio.fail_after(10):
        assert await uplink.finish(5)
    assert_same(await hub_copy(hub_store), sent)
    assert "unreachable" in notices[0]
    assert (
        notices[1]
        == f"tstream: hub {hub_url(tmp_path)}: reached; publishing the session from its start"
    )


async def test_events_the_log_dropped_are_read_back_from_the_store(
    nursery, tmp_path, run_hub, hub_store
):
    session = Recorded(history=10)
    uplink = Uplink(hub_url(tmp_path), session.log, store=session.store, backoff=FAST)
    nursery.start_soon(uplink.run)
    sent = await session.append([started(), *lines(0, 3000), ended()])
    session.log.close()
    assert not session.log.since(-1).complete
    await run_hub()
    with trio.fail_after(10):
        assert await uplink.finish(5)
    assert_same(await hub_copy(hub_store), sent)


async def test_a_hub_restarted_on_the_same_store_continues_the_stream_without_gap_or_duplicate(
    nursery, tmp_path, run_hub, hub_store
):
    first_hub = await run_hub()
    session = Recorded()
    uplink = Uplink(hub_url(tmp_path), session.log, store=session.store, backoff=FAST)
    nursery.start_soon(uplink.run)
    sent = await session.append([started(), *lines(0, 50)])
    with trio.fail_after(10):
        await uplink.wait_acked(sent[-1].offset)
    await first_hub.stop()
    sent += await session.append(lines(50, 50))
    await run_hub()
    sent += await session.append([*lines(100, 50), ended()])
    session.log.close()
    with trio.fail_after(10):
        assert await uplink.finish(5)
    copy = await hub_copy(hub_store)
    assert_same(copy, sent)
    assert uplink.connections == 2


async def test_lines_go_as_columns_and_a_hub_restart_mid_stream_loses_none(
    nursery, tmp_path, run_hub, hub_store, monkeypatch
):
    runs: list[int] = []
    send_runs = HubPublisher.send_runs

    async def counted(self: HubPublisher, parts: Any) -> None:
        runs.append(len(parts))
        await send_runs(self, parts)

    monkeypatch.setattr(HubPublisher, "send_runs", counted)
    first_hub = await run_hub()
    session = Recorded()
    uplink = Uplink(hub_url(tmp_path), session.log, store=session.store, backoff=FAST)
    nursery.start_soon(uplink.run)
    texts = [f"line {i} " + "x" * 100 for i in range(3000)]
    sent = list(await session.append([started()]))
    sent += await session.append_lines(Lines(texts[:1000]))
    sent += await session.append_lines(
        Lines(
            ["bad \ufffd", "cr", "cut", "end"],
            ["\n", "\r", "", "\n"],
            frozenset({2}),
            {0: b"bad \xff\n"},
        ),
        "stderr",
    )
    with trio.fail_after(10):
        await uplink.wait_acked(sent[-1].offset)
    await first_hub.stop()
    sent += await session.append_lines(Lines(texts[1000:2000]))
    await run_hub()
    sent += await session.append_lines(Lines(texts[2000:]))
    sent += await session.append([ended()])
    session.log.close()
    with trio.fail_after(10):
        assert await uplink.finish(5)
    copy = await hub_copy(hub_store)
    assert copy == sent
    assert uplink.connections == 2
    assert runs


async def test_a_hub_that_lost_acknowledged_events_gets_them_again(
    nursery, tmp_path, run_hub, hub_store
):
    first_hub = await run_hub()
    session = Recorded(history=10)
    uplink = Uplink(hub_url(tmp_path), session.log, store=session.store, backoff=FAST)
    nursery.start_soon(uplink.run)
    sent = await session.append([started(), *lines(0, 200)])
    with trio.fail_after(10):
        await uplink.wait_acked(sent[-1].offset)
    await first_hub.stop()
    empty = MemoryStore()
    await run_hub(store=empty)
    sent += await session.append([ended()])
    session.log.close()
    with trio.fail_after(10):
        assert await uplink.finish(5)
    assert_same(await hub_copy(empty), sent)


async def test_a_rejected_token_is_named_and_the_uplink_stops(nursery, tmp_path, run_hub):
    await run_hub(tokens=(TokenSpec("right"),))
    session = Recorded()
    notices: list[str] = []
    uplink = Uplink(
        hub_url(tmp_path), session.log, token="wrong", backoff=FAST, notify=notices.append
    )
    await session.append([started()])
    with trio.fail_after(10):
        await uplink.run()
    assert uplink.refused is not None
    assert notices == [
        f"tstream: hub {hub_url(tmp_path)}: token rejected (unauthorized: unknown token); "
        "session s1 is not published there"
    ]


async def test_a_stream_of_the_same_id_on_the_hub_is_not_overwritten(
    nursery, tmp_path, run_hub, hub_store
):
    await run_hub()
    other = Recorded()
    await other.append([started(), *lines(0, 3)])
    other.log.close()
    first = Uplink(hub_url(tmp_path), other.log, backoff=FAST)
    with trio.fail_after(10):
        await first.run()
    session = Recorded()
    await session.append([started()])
    notices: list[str] = []
    second = Uplink(hub_url(tmp_path), session.log, backoff=FAST, notify=notices.append)
    with trio.fail_after(10):
        await second.run()
    assert "already has a stream s1 with 4 events" in notices[0]
    assert len(await hub_copy(hub_store)) == 4


async def test_an_event_too_large_for_one_message_is_replaced_by_a_stand_in(
    nursery, tmp_path, run_hub, hub_store
):
    await run_hub(max_message_size=4096)
    session = Recorded()
    uplink = Uplink(hub_url(tmp_path), session.log, store=session.store, backoff=FAST)
    nursery.start_soon(uplink.run)
    big = Event(EventType.OUTPUT, Output("stdout", "x" * 10_000))
    sent = await session.append([started(), big, *lines(0, 100), ended()])
    session.log.close()
    with trio.fail_after(10):
        assert await uplink.finish(5)
    copy = await hub_copy(hub_store)
    assert [e.offset for e in copy] == list(range(len(sent)))
    assert copy[1].type is EventType.ERROR
    assert copy[1].data.code == "event_too_large"
    assert [e.id for e in copy[2:]] == [e.id for e in sent[2:]]


async def test_finish_gives_up_after_its_timeout_with_a_notice(nursery, tmp_path):
    session = Recorded()
    notices: list[str] = []
    uplink = Uplink(
        hub_url(tmp_path),
        session.log,
        store=session.store,
        backoff=FAST,
        notify=notices.append,
        link_notices=False,
    )
    nursery.start_soon(uplink.run)
    await session.append([started(), *lines(0, 9), ended()])
    session.log.close()
    with trio.fail_after(5):
        assert not await uplink.finish(0.2)
    assert notices == [
        f"tstream: hub {hub_url(tmp_path)}: gave up after 0.2s: events 0 to 10 of session "
        "s1 were not sent"
    ]


def test_backoff_grows_to_its_cap_with_jitter():
    backoff = Backoff(initial=0.1, factor=2, cap=5)
    rng = random.Random(1)
    waits = [backoff.delay(n, rng) for n in range(1, 12)]
    assert 0.05 <= waits[0] <= 0.1
    assert 0.1 <= waits[1] <= 0.2
    assert all(2.5 <= w <= 5 for w in waits[7:])
    assert len(set(waits[7:])) == len(waits[7:])


def test_messages_respect_the_size_and_count_limits():
    parts = [b"x" * 100] * 50
    sizes = [len(m) for m in messages(parts, 1064, 1000)]
    assert sum(sizes) == 50
    assert max(sizes) == 9
    assert [len(m) for m in messages(parts, 1 << 20, 20)] == [20, 20, 10]
    assert list(messages([b"y" * 5000], 1000, 10)) == [[b"y" * 5000]]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:3001", "ws://hub:80", "https://hub", "unix:/run/hub.sock"]
)
def test_hub_addresses_that_are_accepted(url):
    assert check_hub_url(url) == url


@pytest.mark.parametrize(
    "url, problem",
    [
        ("127.0.0.1:3001", "use http://HOST:PORT"),
        ("ftp://hub", "use http://HOST:PORT"),
        ("http://hub:99999", "port"),
        ("unix:", "socket path is missing"),
    ],
)
def test_bad_hub_addresses_are_named(url, problem):
    with pytest.raises(ValueError, match=problem):
        check_hub_url(url)


async def test_a_hub_recording_into_the_sessions_own_store_is_refused(nursery, tmp_path, run_hub):
    session = Recorded()
    await run_hub(store=session.store)
    await session.append([started(), *lines(0, 3)])
    notices: list[str] = []
    uplink = Uplink(
        hub_url(tmp_path), session.log, store=session.store, backoff=FAST, notify=notices.append
    )
    with trio.fail_after(10):
        await uplink.run()
    assert "the hub records into this run's own store" in notices[0]
    assert (await session.store.get_session("s1")).last_offset == 3


async def test_messages_refused_for_the_rate_are_sent_again_in_order(
    nursery, tmp_path, run_hub, hub_store
):
    await run_hub(publish_per_second=1000.0)
    session = Recorded()
    uplink = Uplink(hub_url(tmp_path), session.log, store=session.store, backoff=FAST)
    nursery.start_soon(uplink.run)
    sent = await session.append([started(), *lines(0, 1500), ended()])
    session.log.close()
    with trio.fail_after(10):
        assert await uplink.finish(8)
    assert_same(await hub_copy(hub_store), sent)
    assert uplink.connections == 1


async def test_events_neither_the_log_nor_the_store_holds_stop_the_uplink_with_a_notice(
    nursery, tmp_path, run_hub, hub_store
):
    session = Recorded(history=10, stored=100)
    await session.append([started(), *lines(0, 500)])
    await run_hub()
    notices: list[str] = []
    uplink = Uplink(
        hub_url(tmp_path), session.log, store=session.store, backoff=FAST, notify=notices.append
    )
    with trio.fail_after(10):
        await uplink.run()
    assert "events 0 to 400 are no longer held" in notices[0]


def test_captured_lines_are_encoded_from_their_columns_as_event_to_json_does():
    lines = Lines(
        ["plain", 'quote " and \\ and é', "cut", "bad \ufffd", ""],
        ["\n", "\r\n", "", "\n", "\r"],
        frozenset({2}),
        {3: b"bad \xff"},
    )
    batch = OutputBatch("s1", 7, 1795440000.125, "stderr", 3, lines)
    whole = OutputBatch("s1", 20, 1795440001.5, "stdout", 8, Lines(["a", "b", "c"]))
    runs = EventRuns([batch, [started().with_offset("s1", 12)], whole.part(1, 3)])
    assert encode(runs) == [event_to_json(e) for e in runs]
