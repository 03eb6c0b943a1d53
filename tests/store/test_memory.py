import pytest

from trio_stream.batches import EventRuns, OutputBatch
from trio_stream.lines import Lines
from trio_stream.store import HistoryQuery, MemoryStore, SessionInfo, StoreError

from .conftest import lines


async def test_ring_keeps_the_newest_events_and_counts_offsets_on():
    store = MemoryStore(max_history=3)
    await store.create_session(SessionInfo("s"))
    await store.append("s", lines("s", 0, list("abcde")))
    assert [e.data.text for e in await store.read("s")] == ["c", "d", "e"]
    assert await store.last_offset("s") == 4
    assert [e.offset for e in await store.read("s", HistoryQuery(after=3))] == [4]


@pytest.fixture
def built(monkeypatch):
    """The indexes of the events built from batches of lines, in turn."""
    indexes: list[int] = []
    event = OutputBatch.event
    monkeypatch.setattr(OutputBatch, "event", lambda self, i: indexes.append(i) or event(self, i))
    return indexes


async def test_a_batch_larger_than_the_ring_builds_only_the_events_it_keeps(built):
    store = MemoryStore(max_history=3)
    await store.create_session(SessionInfo("s"))
    texts = [str(i) for i in range(100_000)]
    first = OutputBatch("s", 0, 1000.0, "stdout", 0, Lines(texts[:60_000]))
    second = OutputBatch("s", 60_000, 1001.0, "stderr", 60_000, Lines(texts[60_000:]))
    await store.append("s", EventRuns([first, second]))
    kept = await store.read("s")
    assert [(e.offset, e.data.text, e.data.source) for e in kept] == [
        (99_997, "99997", "stderr"),
        (99_998, "99998", "stderr"),
        (99_999, "99999", "stderr"),
    ]
    assert await store.last_offset("s") == 99_999
    # Only the kept three.
    assert len(built) == 3


async def test_batches_are_built_into_the_ring_only_when_it_is_read(built):
    store = MemoryStore(max_history=5)
    await store.create_session(SessionInfo("s"))
    offset = 0
    # A recorder's appends: many batches, far more events than the ring keeps.
    for size in (3, 4, 2, 1000, 3, 1, 2):
        texts = [f"{offset + i}" for i in range(size)]
        batch = OutputBatch("s", offset, 1000.0, "stdout", offset, Lines(texts))
        await store.append("s", EventRuns([batch]))
        offset += size
    assert (await store.get_session("s")).events == 5
    assert await store.last_offset("s") == offset - 1
    assert built == []
    assert [e.data.text for e in await store.read("s")] == [str(n) for n in range(1010, 1015)]
    assert len(built) == 5
    # Events appended as a list are kept as they were when appended.
    more = lines("s", offset, ["x", "y"])
    await store.append("s", more)
    more.clear()
    assert [e.data.text for e in await store.read("s")] == ["1012", "1013", "1014", "x", "y"]
    await store.clear("s")
    assert await store.read("s") == [] and (await store.get_session("s")).events == 0


def test_ring_size_must_be_positive():
    with pytest.raises(ValueError, match="max_history"):
        MemoryStore(max_history=0)


async def test_closed_store_refuses_use():
    store = MemoryStore()
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.list_sessions()
