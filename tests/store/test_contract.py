"""Behaviour every store back-end shares (run against each of them)."""

import time

import pytest

from trio_stream.events import EventType
from trio_stream.filters import MAX_SEARCHED_TEXT, EventFilter
from trio_stream.store import (
    AmbiguousSessionError,
    HistoryQuery,
    InvalidSessionIdError,
    SessionExistsError,
    SessionInfo,
    SessionStatus,
    StoreError,
    UnknownSessionError,
)

from .conftest import lines, open_test_store, status


@pytest.fixture(params=["memory", "sqlite", "sqlite-segments", "redis", "redis-cluster"])
async def store(request, tmp_path):
    """The contract runs against a Redis Cluster too (the other store tests need not)."""
    async with open_test_store(request, request.param, tmp_path) as opened:
        yield opened


async def test_created_session_reads_back_with_pid_and_host(store, info):
    created = await store.create_session(info)
    got = await store.get_session("build-1")
    assert got == created
    assert got.command == ["make", "-j4"]
    assert got.cwd == "/src"
    assert got.status is SessionStatus.RUNNING
    assert got.pid is not None and got.host
    assert got.events == 0 and got.last_offset == -1


async def test_second_session_with_same_id_is_refused(store, info):
    await store.create_session(info)
    with pytest.raises(SessionExistsError, match="build-1"):
        await store.create_session(info)


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "..", "x" * 65, "a b", "é"])
async def test_unsafe_ids_are_rejected(store, bad):
    with pytest.raises(InvalidSessionIdError):
        await store.create_session(SessionInfo(bad))


async def test_unknown_session_is_named(store):
    with pytest.raises(UnknownSessionError, match="nope"):
        await store.get_session("nope")
    with pytest.raises(UnknownSessionError):
        await store.read("nope")


async def test_events_read_back_in_offset_order_after_a_cursor(store, info):
    await store.create_session(info)
    await store.append("build-1", lines("build-1", 0, ["a", "b"]))
    await store.append("build-1", lines("build-1", 2, ["c", "d"]))
    events = await store.read("build-1", HistoryQuery(after=1))
    assert [e.data.text for e in events] == ["c", "d"]
    assert [e.offset for e in events] == [2, 3]
    assert await store.last_offset("build-1") == 3
    assert (await store.get_session("build-1")).events == 4


async def test_events_come_back_equal(store, info):
    await store.create_session(info)
    sent = [*lines("build-1", 0, ["x"]), status("build-1", 1, "ok")]
    await store.append("build-1", sent)
    assert await store.read("build-1") == sent


async def test_append_refuses_offsets_that_do_not_follow(store, info):
    await store.create_session(info)
    await store.append("build-1", lines("build-1", 0, ["a", "b"]))
    with pytest.raises(StoreError, match="offset 1"):
        await store.append("build-1", lines("build-1", 1, ["again"]))


async def test_filters_by_type_source_time_and_text(store, info):
    await store.create_session(info)
    await store.append(
        "build-1",
        [
            *lines("build-1", 0, ["Compiling foo", "warning: x"], ts=10.0),
            *lines("build-1", 2, ["ERROR: boom"], source="stderr", ts=20.0),
            status("build-1", 3, "compiling done", ts=30.0),
        ],
    )

    async def offsets(**kw):
        return [e.offset for e in await store.read("build-1", HistoryQuery(**kw))]

    assert await offsets(types=frozenset({EventType.STATUS})) == [3]
    assert await offsets(sources=frozenset({"stderr"})) == [2, 3]
    assert await offsets(start_time=11.0, end_time=20.0) == [1, 2]
    assert await offsets(search_text="COMPILING") == [0, 3]
    assert await offsets(last=2) == [2, 3]
    assert await offsets(skip=1, limit=2) == [1, 2]
    assert await offsets(last=3, skip=1, limit=1) == [2]
    # Asking for more of the last events than match gives every match.
    assert await offsets(types=frozenset({EventType.STATUS}), last=5) == [3]
    assert await offsets(search_text="COMPILING", last=3) == [0, 3]
    assert await store.count("build-1", HistoryQuery(search_text="error")) == 1


async def test_search_looks_in_the_first_64_kib_as_a_live_filter_does(store, info):
    await store.create_session(info)
    long = "x" * MAX_SEARCHED_TEXT
    sent = [
        *lines("build-1", 0, [long + "needle", "needle" + long, "a Needle"]),
        status("build-1", 3, long + "needle"),
        status("build-1", 4, "needle " + long),
    ]
    await store.append("build-1", sent)
    found = await store.read("build-1", HistoryQuery(search_text="NEEDLE"))
    live = EventFilter(search_text="needle")
    assert [e.offset for e in found] == [e.offset for e in sent if live.matches(e)] == [1, 2, 4]


async def test_negative_paging_is_refused(store, info):
    await store.create_session(info)
    with pytest.raises(ValueError, match="limit"):
        await store.read("build-1", HistoryQuery(limit=-1))


async def test_resolve_latest_full_id_and_unique_prefix(store):
    for n, sid in enumerate(["alpha-1", "alpha-2", "beta"]):
        await store.create_session(SessionInfo(sid, created=100.0 + n))
    assert (await store.resolve("latest")).id == "beta"
    assert (await store.resolve("alpha-1")).id == "alpha-1"
    assert (await store.resolve("be")).id == "beta"
    with pytest.raises(AmbiguousSessionError, match="alpha-1, alpha-2"):
        await store.resolve("alpha")
    with pytest.raises(UnknownSessionError):
        await store.resolve("gamma")
    with pytest.raises(UnknownSessionError):
        await store.resolve("a%")


async def test_list_is_newest_first_with_status_and_limit(store):
    for n, sid in enumerate(["s1", "s2", "s3"]):
        await store.create_session(SessionInfo(sid, created=100.0 + n))
    await store.update_session("s2", status=SessionStatus.COMPLETED, exit_status=0)
    assert [s.id for s in await store.list_sessions()] == ["s3", "s2", "s1"]
    assert [s.id for s in await store.list_sessions(limit=2)] == ["s3", "s2"]
    done = await store.list_sessions(status=SessionStatus.COMPLETED)
    assert [(s.id, s.exit_status) for s in done] == [("s2", 0)]


async def test_update_refuses_unknown_fields(store, info):
    await store.create_session(info)
    with pytest.raises(ValueError, match="colour"):
        await store.update_session("build-1", colour="red")


async def test_clear_keeps_offsets_going(store, info):
    await store.create_session(info)
    await store.append("build-1", lines("build-1", 0, ["a", "b"]))
    await store.clear("build-1")
    assert await store.read("build-1") == []
    assert await store.last_offset("build-1") == 1
    await store.append("build-1", lines("build-1", 2, ["c"]))
    assert [e.offset for e in await store.read("build-1")] == [2]


async def test_compact_keeps_the_last_n(store, info):
    await store.create_session(info)
    await store.append("build-1", lines("build-1", 0, list("abcde")))
    assert await store.compact("build-1", 2) == 3
    assert [e.data.text for e in await store.read("build-1")] == ["d", "e"]
    assert (await store.get_session("build-1")).events == 2


async def test_destroy_forgets_the_session(store, info):
    await store.create_session(info)
    await store.append("build-1", lines("build-1", 0, ["a"]))
    await store.destroy_session("build-1")
    with pytest.raises(UnknownSessionError):
        await store.get_session("build-1")
    await store.create_session(info)
    assert await store.read("build-1") == []


async def test_prune_destroys_old_finished_sessions_and_compacts_the_rest(store):
    now = time.time()
    await store.create_session(SessionInfo("old", created=now - 9 * 86400))
    await store.update_session("old", status=SessionStatus.COMPLETED)
    await store.create_session(SessionInfo("old-running", created=now - 9 * 86400))
    await store.create_session(SessionInfo("new", created=now))
    await store.append("new", lines("new", 0, list("abcd"), ts=now))
    cutoff = now - 7 * 86400
    assert await store.prune(older_than=cutoff, max_events=1, dry_run=True) == ["old"]
    assert (await store.get_session("old")).id == "old"
    assert await store.count("new") == 4
    assert await store.prune(older_than=cutoff, max_events=1) == ["old"]
    with pytest.raises(UnknownSessionError):
        await store.get_session("old")
    assert [e.data.text for e in await store.read("new")] == ["d"]
    assert (await store.get_session("old-running")).status is SessionStatus.RUNNING


async def test_prune_refuses_a_negative_max_events_and_changes_nothing(store):
    await store.create_session(SessionInfo("done", created=time.time() - 9 * 86400))
    await store.update_session("done", status=SessionStatus.COMPLETED)
    with pytest.raises(ValueError, match="max_events must be 0 or more, not -1"):
        await store.prune(older_than=time.time(), max_events=-1)
    assert (await store.get_session("done")).id == "done"


async def test_epoch_is_a_stable_string(store):
    assert store.epoch and store.epoch == store.epoch
