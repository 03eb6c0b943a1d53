import time

import pytest
import trio

from trio_stream.store import MemoryStore, SessionInfo, SessionStatus
from trio_stream.store.retention import prune_once, retention_task

from .conftest import lines


async def old_and_new(store):
    now = time.time()
    await store.create_session(SessionInfo("old", created=now - 8 * 86400))
    await store.update_session("old", status=SessionStatus.COMPLETED)
    await store.create_session(SessionInfo("new", created=now))
    await store.append("new", lines("new", 0, list("abc"), ts=now))


async def test_prune_once_uses_a_period_and_a_size(store):
    await old_and_new(store)
    assert await prune_once(store, older_than=7 * 86400, max_events=2, dry_run=True) == ["old"]
    assert await prune_once(store, older_than=7 * 86400, max_events=2) == ["old"]
    assert [s.id for s in await store.list_sessions()] == ["new"]
    assert await store.count("new") == 2


async def test_prune_once_refuses_negative_values(store):
    with pytest.raises(ValueError, match="older_than"):
        await prune_once(store, older_than=-1)


async def test_retention_task_prunes_at_start_and_then_periodically(autojump_clock):
    store = MemoryStore()
    await old_and_new(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(retention_task, store)
        assert [s.id for s in await store.list_sessions()] == ["new"]
        await store.update_session("new", status=SessionStatus.COMPLETED, last_activity=0.0)
        await trio.sleep(3601)
        assert await store.list_sessions() == []
        nursery.cancel_scope.cancel()
