"""Retention: forgetting old sessions and trimming long ones.

``tstream prune`` calls :func:`prune_once`; long-running processes (the hub) start
:func:`retention_task` in their nursery to do the same periodically. The back-ends'
``prune`` is :class:`SessionPruning`'s.
"""

from __future__ import annotations

import logging
import time
from typing import Final, NoReturn

import trio

from .base import SessionStatus, Store, StoreError, UnknownSessionError

DEFAULT_RETENTION: Final = 7 * 86400.0
DEFAULT_MAX_EVENTS: Final = 1_000_000
DEFAULT_PRUNE_EVERY: Final = 3600.0

logger = logging.getLogger(__name__)


class SessionPruning:
    """The store's ``prune``, made of its own session methods.

    The finished sessions last active before ``older_than`` are destroyed one by one, then
    every other session holding more than ``max_events`` events is compacted; a session
    another writer removed meanwhile is passed over. A back-end that prunes in one step of
    its own (a transaction) overrides :meth:`_prune`.
    """

    async def prune(
        self,
        *,
        older_than: float | None = None,
        max_events: int | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """See :meth:`Store.prune`.

        Raises:
            ValueError: for a negative ``max_events``.
        """
        if max_events is not None and max_events < 0:
            raise ValueError(f"max_events must be 0 or more, not {max_events}")
        return await self._prune(older_than, max_events, dry_run)

    async def _prune(
        self: Store, older_than: float | None, max_events: int | None, dry_run: bool
    ) -> list[str]:
        sessions = await self.list_sessions()
        doomed = sorted(
            s.id
            for s in sessions
            if older_than is not None
            and s.status != SessionStatus.RUNNING
            and s.last_activity < older_than
        )
        if dry_run:
            return doomed
        for sid in doomed:
            try:
                await self.destroy_session(sid)
            except UnknownSessionError:
                pass  # another hub pruned it meanwhile
        if max_events is not None:
            for info in sessions:
                if info.id not in doomed and info.events > max_events:
                    try:
                        await self.compact(info.id, max_events)
                    except UnknownSessionError:
                        pass
        return doomed


async def prune_once(
    store: Store,
    *,
    older_than: float = DEFAULT_RETENTION,
    max_events: int | None = DEFAULT_MAX_EVENTS,
    dry_run: bool = False,
) -> list[str]:
    """Destroy the finished sessions idle for more than ``older_than`` seconds and trim
    every other session to its last ``max_events`` events.

    Sessions whose recording process has died are first marked ``interrupted`` (when the
    store can tell), so that they age out like any finished session.

    Returns:
        The ids destroyed (or that would be, with ``dry_run``).

    Raises:
        ValueError: for a negative ``older_than`` or ``max_events``.
        StoreError: when the store fails.
    """
    if older_than < 0:
        raise ValueError(f"older_than must be 0 or more, not {older_than}")
    if max_events is not None and max_events < 0:
        raise ValueError(f"max_events must be 0 or more, not {max_events}")
    recover = getattr(store, "recover_interrupted", None)
    if recover is not None and not dry_run:
        await recover()
    return await store.prune(
        older_than=time.time() - older_than, max_events=max_events, dry_run=dry_run
    )


async def retention_task(
    store: Store,
    *,
    every: float = DEFAULT_PRUNE_EVERY,
    older_than: float = DEFAULT_RETENTION,
    max_events: int | None = DEFAULT_MAX_EVENTS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Prune ``store`` now and then every ``every`` seconds, until cancelled.

    Start it with ``await nursery.start(retention_task, store)``: it reports started after
    the first pass. A failing pass (a locked database) is logged and retried at the next
    period rather than bringing the process down.

    Raises:
        ValueError: for a period that is not positive, or bad retention values.
    """
    if every <= 0:
        raise ValueError(f"every must be positive, not {every}")
    if older_than < 0 or (max_events is not None and max_events < 0):
        raise ValueError("older_than and max_events must be 0 or more")
    started = False
    while True:
        try:
            removed = await prune_once(store, older_than=older_than, max_events=max_events)
        except StoreError as exc:
            logger.warning("pruning the store failed, retrying in %gs: %s", every, exc)
        else:
            if removed:
                logger.info("pruned %d session(s): %s", len(removed), ", ".join(removed))
        if not started:
            task_status.started()
            started = True
        await trio.sleep(every)
