"""Query evaluation shared by the back-ends that filter events in Python.

Every back-end matches events with :func:`matcher`, the matcher of the query's
:class:`~trio_stream.filters.EventFilter` (SQLite and Redis after skipping the chunks
outside the time range), and :func:`select` applies a whole :class:`HistoryQuery` to
events in offset order.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import AsyncIterator, Callable, Sequence

import attrs

from ..batches import EventRuns, RowEvents
from ..events import Event
from ..filters import EventFilter
from .base import HistoryQuery, RowStore, RunStore, Store


def check_query(query: HistoryQuery) -> HistoryQuery:
    """Return ``query`` if its numbers make sense.

    Raises:
        ValueError: naming the field, for a negative ``limit``, ``skip`` or ``last``.
    """
    for name in ("limit", "skip", "last"):
        value = getattr(query, name)
        if value is not None and value < 0:
            raise ValueError(f"{name} must be 0 or more, not {value}")
    return query


def matcher(query: HistoryQuery) -> Callable[[Event], bool] | None:
    """A predicate for the filters of ``query`` (all but the paging), None if none apply:
    the matcher of its :class:`~trio_stream.filters.EventFilter`, the one a hub's live
    fan-out uses."""
    flt = EventFilter.of_query(query)
    return None if flt.empty else flt.matches


def select(events: Sequence[Event], query: HistoryQuery) -> list[Event]:
    """Apply ``query`` to ``events`` (in increasing offset order).

    The order of operations is: events after ``query.after`` that pass every filter, then
    the ``last`` N of those, then ``skip``, then ``limit``.
    """
    check_query(query)
    start = bisect.bisect_right(events, query.after, key=lambda e: e.offset)
    predicate = matcher(query)
    if predicate is None and query.last is None:
        # Stop as soon as enough are found, instead of filtering everything.
        stop = len(events) if query.limit is None else start + query.skip + query.limit
        return list(itertools.islice(events, start + query.skip, stop))
    chosen = list(itertools.islice(events, start, None))
    if predicate is not None:
        chosen = [e for e in chosen if predicate(e)]
    if query.last is not None:
        chosen = chosen[max(0, len(chosen) - query.last) :] if query.last else []
    chosen = chosen[query.skip :]
    if query.limit is not None:
        chosen = chosen[: query.limit]
    return chosen


def count(events: Sequence[Event], query: HistoryQuery) -> int:
    """How many events :func:`select` would return."""
    return len(select(events, query))


async def read_batches(
    store: Store, session_id: str, query: HistoryQuery = HistoryQuery(), *, batch: int = 10_000
) -> AsyncIterator[list[Event]]:
    """The events :meth:`Store.read` would return, as lists of at most ``batch`` events,
    so that a long session is never in memory whole.

    Each list is one read continuing after the last offset of the previous one, so events
    recorded meanwhile are included. ``last``, ``skip`` and ``limit`` are applied by one
    plain read instead (they need the whole selection).

    Raises:
        UnknownSessionError: for an unknown session.
        ValueError: for a ``batch`` below 1.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    if query.last is not None or query.skip or query.limit is not None:
        yield await store.read(session_id, query)
        return
    after = query.after
    while True:
        events = await store.read(session_id, attrs.evolve(query, after=after, limit=batch))
        if events:
            yield events
            after = events[-1].offset
        if len(events) < batch:
            return


async def read_pages(
    store: RunStore | RowStore, session_id: str, after: int, until: int, *, page: int = 10_000
) -> AsyncIterator[EventRuns | RowEvents]:
    """The events after ``after`` up to ``until`` (a last offset the store holds), about
    ``page`` at a time, as the store's chunks hold them: lines not built into events
    (:meth:`RunStore.read_runs` where the store has it, else
    :meth:`RowStore.read_rows`). A page may end past ``until``.

    Raises:
        UnknownSessionError: for an unknown session.
    """
    while after < until:
        if isinstance(store, RunStore):
            events: EventRuns | RowEvents = await store.read_runs(session_id, after, page)
        else:
            events = await store.read_rows(session_id, after, page)
        if not events:
            return
        yield events
        after = events.last_offset
