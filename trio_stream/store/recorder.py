"""The recorder: the task that writes a session's log into a store, in batches.

Writing each line as it comes would cost one database transaction per line; the recorder
instead gathers what the log receives during ``flush_interval`` (default 100 ms) and
writes it as one batch. The interval bounds what a crash of the recording process can
lose: at most the events of the last unflushed interval.
"""

from __future__ import annotations

from typing import Final

import trio

from ..log import SessionLog
from .base import Store

DEFAULT_FLUSH_INTERVAL: Final = 0.1


async def record(
    store: Store, log: SessionLog, *, flush_interval: float = DEFAULT_FLUSH_INTERVAL
) -> None:
    """Write every event of ``log`` to ``store`` until the log closes, then flush and return.

    Runs in the session's nursery. The first events are written at once; after each write
    the recorder waits until ``flush_interval`` has passed and then writes everything that
    arrived meanwhile as one batch. When the log closes, or when so much waits that the
    log holds its producers back (its record backlog), what is pending is written without
    waiting for the interval. If the task is cancelled, it still writes what is pending
    (shielded) before the cancellation goes on, so nothing appended to the log is lost.

    Args:
        store: where to write.
        log: the session's log (its session must exist in ``store``).
        flush_interval: the shortest time between two writes, in seconds.

    Raises:
        ValueError: for a negative ``flush_interval``.
        StoreError: when the store refuses a batch.
    """
    if flush_interval < 0:
        raise ValueError(f"flush_interval must be 0 or more, not {flush_interval}")
    next_flush = trio.current_time()
    try:
        while True:
            await log.wait_unrecorded()
            if not log.closed:
                with trio.move_on_at(next_flush):
                    # A full backlog holds the command's output back: no waiting then.
                    await log.wait_backlog_full()
            events = log.take_unrecorded()
            if events:
                with trio.CancelScope(shield=True):
                    await store.append(log.session_id, events)
                next_flush = trio.current_time() + flush_interval
            elif log.closed:
                return
    except trio.Cancelled:
        with trio.CancelScope(shield=True):
            events = log.take_unrecorded()
            if events:
                await store.append(log.session_id, events)
        raise
