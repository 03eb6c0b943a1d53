"""The live, ordered event log of one session: the single place offsets are assigned.

Everything that produces events for a session (the line readers, processors, the publisher
API) calls :meth:`SessionLog.append`, which is synchronous: offsets are dense and their
order is the order of the calls. Everything that consumes events (the recorder, the
terminal printer, the hub's subscribers, ``tstream attach``) follows the log from an offset.

The log keeps the last ``history`` events in memory for live subscribers. A subscriber that
asks for an offset the log no longer holds is told so (:attr:`Since.complete` is False) and
must read the rest from the store; nothing is ever skipped silently.

The recorder is different from other followers: it must never miss an event, so the log
keeps everything not yet recorded (see :meth:`take_unrecorded`) and producers wait in
:meth:`wait_recorded_room` while that backlog is over its bound.

The log holds events as the runs they were appended in: lists of events, or
:class:`~trio_stream.events.EventBatch` columns (:meth:`SessionLog.append_batch`, the path
of captured lines) whose events are built only when someone reads them one by one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Final, final

import attrs
import trio

from .batches import EventBatch, EventRuns, RowEvents
from .events import Event

DEFAULT_HISTORY: Final = 10_000
DEFAULT_RECORD_BACKLOG: Final = 100_000


@final
@attrs.frozen
class Since:
    """Events after an offset, and whether they are all that followed it."""

    events: EventRuns
    complete: bool


@final
class SessionLog:
    """The ordered, in-memory event log of one session.

    Args:
        session_id: the session the events belong to.
        first_offset: the offset the next event gets (a resumed session continues).
        history: events kept in memory for followers.
        record_backlog: events allowed to wait for the recorder before producers wait;
            None when nothing records this log.
    """

    def __init__(
        self,
        session_id: str,
        *,
        first_offset: int = 0,
        history: int = DEFAULT_HISTORY,
        record_backlog: int | None = DEFAULT_RECORD_BACKLOG,
    ) -> None:
        self.session_id = session_id
        self.next_offset = first_offset
        self._history = max(1, history)
        # (first offset, run) of the held runs, oldest first; _held counts their events.
        self._runs: deque[tuple[int, Sequence[Event]]] = deque()
        self._held = 0
        self._changed = trio.Event()
        self._closed = False
        self._record_backlog = record_backlog
        self._unrecorded: list[Sequence[Event]] = []
        self._unrecorded_count = 0
        self._recorded_room = trio.Event()
        self._recorded_room.set()
        # Set when the backlog reaches its bound or the log closes: the recorder waits
        # for that alone, not for every append.
        self._backlog_full = trio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_offset(self) -> int:
        """Offset of the newest event, or ``first_offset - 1`` when none yet."""
        return self.next_offset - 1

    def append(self, events: Iterable[Event]) -> list[Event]:
        """Place ``events`` at the next offsets and wake every follower.

        Returns:
            The placed events (with session and offset set).
        """
        if self._closed:
            raise trio.ClosedResourceError(f"session {self.session_id} has ended")
        placed = []
        offset = self.next_offset
        sid = self.session_id
        for event in events:
            # Events built already placed (events.placed_events) are kept, not copied.
            if event.offset != offset or event.session != sid:
                event = event.with_offset(sid, offset)
            placed.append(event)
            offset += 1
        if placed:
            self._add(placed)
        return placed

    def append_batch(self, batch: EventBatch) -> None:
        """Add a batch built already placed at the next offset, and wake every follower.

        Raises:
            ValueError: when the batch is placed elsewhere (another session or offset).
        """
        if self._closed:
            raise trio.ClosedResourceError(f"session {self.session_id} has ended")
        if batch.session != self.session_id or batch.first_offset != self.next_offset:
            raise ValueError(
                f"a batch placed at {batch.session}:{batch.first_offset} cannot follow "
                f"{self.session_id}:{self.next_offset - 1}"
            )
        if len(batch):
            self._add(batch)

    def append_runs(self, events: EventRuns) -> None:
        """Add runs built already placed at the next offsets (another log's, handed on),
        keeping batches and rows as they are, and wake every follower.

        Raises:
            ValueError: when a run is placed elsewhere (another session or offset).
        """
        for run in events.runs:
            if isinstance(run, EventBatch):
                self.append_batch(run)
            elif isinstance(run, RowEvents):
                if not run.rows:
                    continue
                first, last = run.offset(run.rows[0]), run.last_offset
                if run.session != self.session_id or first != self.next_offset:
                    raise ValueError(
                        f"rows placed at {run.session}:{first} cannot follow "
                        f"{self.session_id}:{self.next_offset - 1}"
                    )
                if last - first + 1 != len(run):
                    raise ValueError(f"rows {first} to {last} are not at consecutive offsets")
                if self._closed:
                    raise trio.ClosedResourceError(f"session {self.session_id} has ended")
                self._add(run)
            else:
                self.append(run)

    def _add(self, run: Sequence[Event]) -> None:
        count = len(run)
        runs = self._runs
        runs.append((self.next_offset, run))
        self.next_offset += count
        self._held += count
        while self._held - len(runs[0][1]) >= self._history:
            self._held -= len(runs.popleft()[1])
        if self._record_backlog is not None:
            self._unrecorded.append(run)
            self._unrecorded_count += count
            if self._unrecorded_count >= self._record_backlog:
                self._recorded_room = trio.Event()
                self._backlog_full.set()
        self._changed.set()

    def close(self) -> None:
        """The session ended: followers get what is left, then stop."""
        self._closed = True
        self._changed.set()
        self._backlog_full.set()

    def since(self, after: int) -> Since:
        """The held events with an offset greater than ``after``."""
        runs = self._runs
        end = self.next_offset
        if not runs:
            return Since(EventRuns([]), after >= end - 1)
        first = max(runs[0][0], end - self._history)
        start = max(after + 1, first)
        if start >= end:
            return Since(EventRuns([]), True)
        picked: list[Sequence[Event]] = []
        for run_first, run in reversed(runs):
            if run_first + len(run) <= start:
                break
            if run_first < start:
                run = _part(run, start - run_first)
            picked.append(run)
        picked.reverse()
        return Since(EventRuns(picked), after + 1 >= first)

    async def _next_change(self) -> None:
        """Return at the next append or close."""
        changed = self._changed
        if changed.is_set():
            self._changed = changed = trio.Event()
        await changed.wait()

    async def wait_after(self, after: int) -> None:
        """Return once an event after ``after`` exists or the log is closed."""
        while self.next_offset - 1 <= after and not self._closed:
            await self._next_change()

    async def follow(self, after: int = -1, *, tick: float = 0.0) -> AsyncIterator[Since]:
        """Yield batches of events after ``after`` until the log closes.

        Args:
            after: the last offset the follower already has.
            tick: after a wake-up, wait this long so that one batch carries every event
                of the tick (a follower wakes once per tick, not once per event).
        """
        while True:
            await self.wait_after(after)
            if tick > 0 and not self._closed:
                await trio.sleep(tick)
            batch = self.since(after)
            if batch.events:
                after = self.next_offset - 1
                yield batch
            elif self._closed:
                return

    # -- the recorder's side -----------------------------------------------------------

    def take_unrecorded(self) -> EventRuns:
        """Every event not yet handed to the recorder (the recorder calls this)."""
        runs, self._unrecorded = self._unrecorded, []
        self._unrecorded_count = 0
        self._recorded_room.set()
        return EventRuns(runs)

    async def wait_unrecorded(self) -> None:
        """Return once events wait for the recorder or the log is closed."""
        while not self._unrecorded and not self._closed:
            await self._next_change()

    async def wait_backlog_full(self) -> None:
        """Return once producers wait for the recorder (the backlog reached its bound) or the
        log is closed: the recorder must not keep them waiting for its interval."""
        backlog = self._record_backlog
        while not self._closed and (backlog is None or self._unrecorded_count < backlog):
            full = self._backlog_full
            if full.is_set():
                self._backlog_full = full = trio.Event()
            await full.wait()

    async def wait_recorded_room(self) -> None:
        """Producers call this after appending: flow control behind a slow recorder."""
        await self._recorded_room.wait()


def _part(run: Sequence[Event], start: int) -> Sequence[Event]:
    """The events of ``run`` from index ``start`` on."""
    if isinstance(run, EventBatch):
        return run.part(start, len(run))
    if isinstance(run, RowEvents):
        return type(run)(run.session, run.rows[start:])
    return run[start:]
