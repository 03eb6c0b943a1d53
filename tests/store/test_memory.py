import pytest

from trio_stream.store import HistoryQuery, MemoryStore, SessionInfo, StoreError

from .conftest import lines


async def test_ring_keeps_the_newest_events_and_counts_offsets_on():
    store = MemoryStore(max_history=3)
    await store.create_session(SessionInfo("s"))
    await store.append("s", lines("s", 0, list("abcde")))
    assert [e.data.text for e in await store.read("s")] == ["c", "d", "e"]
    assert await store.last_offset("s") == 4
    assert [e.offset for e in await store.read("s", HistoryQuery(after=3))] == [4]


def test_ring_size_must_be_positive():
    with pytest.raises(ValueError, match="max_history"):
        MemoryStore(max_history=0)


async def test_closed_store_refuses_use():
    store = MemoryStore()
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.list_sessions()
