"""The hub prunes its store periodically, as ``tstream prune`` does."""

from __future__ import annotations

import time

import pytest
import trio

from trio_stream.hub.config import HubConfig, HubConfigError
from trio_stream.store.base import SessionInfo, SessionStatus, UnknownSessionError
from trio_stream.store.memory import MemoryStore

from .conftest import StartHub


async def finished(store: MemoryStore, sid: str, age: float) -> None:
    then = time.time() - age
    await store.create_session(
        SessionInfo(sid, status=SessionStatus.COMPLETED, created=then, last_activity=then)
    )


async def gone(store: MemoryStore, sid: str) -> bool:
    try:
        await store.get_session(sid)
    except UnknownSessionError:
        return True
    return False


async def test_the_hub_prunes_sessions_older_than_its_retention(
    start_hub: StartHub, store: MemoryStore
) -> None:
    await finished(store, "old", age=3 * 86400)
    await finished(store, "recent", age=60)
    await start_hub(retention=86400.0)
    with trio.fail_after(5):
        while not await gone(store, "old"):
            await trio.sleep(0.01)
    assert not await gone(store, "recent")


async def test_a_hub_with_pruning_off_keeps_everything(
    start_hub: StartHub, store: MemoryStore
) -> None:
    await finished(store, "old", age=3 * 86400)
    served = await start_hub(retention=86400.0, prune_every=0.0)
    await trio.sleep(0.05)
    assert not await gone(store, "old")
    served.shutdown()


def test_retention_settings_come_from_the_config_file_with_durations() -> None:
    config = HubConfig.from_mapping({"retention": "2d", "max-events": 500, "prune-every": "10m"})
    assert (config.retention, config.max_events, config.prune_every) == (172800.0, 500, 600.0)
    with pytest.raises(HubConfigError, match="retention"):
        HubConfig.from_mapping({"retention": "soon"})
