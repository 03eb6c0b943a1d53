"""The live, ordered event log of one session: the single place offsets are assigned.

Everything that produces events for a session goes through the log's placement: the line
readers, processors and the publisher API call :meth:`SessionLog.append` (or
:meth:`SessionLog.append_built` for a batch built at the offset the log gives it), and
publishers from outside, which may give offsets of their own, call :meth:`SessionLog.place`
or :meth:`SessionLog.place_runs`, where duplicates are skipped and gaps refused. Placement is
synchronous in this log (offsets are dense and their order is the order of the calls); the
``place`` operations are awaitable so that a log kept elsewhere (a shared store that assigns
offsets itself, see :mod:`trio_stream.hub.feeds`) can serve in its place. Nobody outside the
log reads :attr:`SessionLog.next_offset` to place events. Everything that consumes events
(the recorder, the terminal printer, the hub's subscribers, ``tstream attach``) follows the
log from an offset.

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
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Final, TypeVar, final

import attrs
import trio

from .batches import EventBatch, EventRuns, RowEvents
from .events import Event, EventType

_B = TypeVar("_B", bound=Sequence[Event])

DEFAULT_HISTORY: Final = 10_000
DEFAULT_RECORD_BACKLOG: Final = 100_000


@final
@attrs.frozen
class Since:
    """Events after an offset, and whether they are all that followed it."""

    events: EventRuns
    complete: bool


class PlacementError(ValueError):
    """Events that cannot be placed: an event after ``session_ended``, runs placed
    elsewhere. The message names the event (``events[3]``) or offset."""


@final
class OffsetGapError(PlacementError):
    """Given offsets would leave a gap after :attr:`last_offset`; the publisher resumes
    after it."""

    def __init__(self, message: str, last_offset: int) -> None:
        super().__init__(message)
        self.last_offset = last_offset


@final
@attrs.frozen
class Placement:
    """What a placement did.

    Attributes:
        events: the events placed (with session and offset set).
        duplicates: given offsets the log already held, skipped.
        first_offset: the offset of the first event placed (None when none was).
        last_offset: the log's newest offset after the placement.
        ended: the ``session_ended`` event placed, if one was.
    """

    events: Sequence[Event]
    duplicates: int
    first_offset: int | None
    last_offset: int
    ended: Event | None = None


class SessionLog:
    """The ordered, in-memory event log of one session.

    The hub's streams fed from elsewhere subclass it (:class:`trio_stream.hub.feeds.FedLog`).

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

    def append_built(self, build: Callable[[str, int], _B]) -> _B:
        """Append what ``build(session_id, first_offset)`` makes at the next offset (a
        producer building its events, or a batch of columns, for the offset the log gives
        them), and wake every follower.

        Returns:
            What ``build`` made.
        """
        built = build(self.session_id, self.next_offset)
        if isinstance(built, EventBatch):
            self.append_batch(built)
        else:
            self.append(built)
        return built

    async def place(self, events: Sequence[Event], given: Sequence[bool]) -> Placement:
        """Place events from a publisher that may give their offsets.

        An event whose offset is given (``given[i]``) and already in the log is a
        duplicate and skipped; one beyond the next offset is a gap. Nothing may follow
        ``session_ended``.

        Raises:
            OffsetGapError: for a gap (nothing is placed).
            PlacementError: for an event after ``session_ended``.
            trio.ClosedResourceError: when the log has closed.
        """
        if self._closed:
            raise trio.ClosedResourceError(f"session {self.session_id} has ended")
        keep, duplicates, ended = plan_placement(events, given, self.next_offset)
        first = self.next_offset if keep else None
        placed = self.append(keep) if keep else []
        return Placement(placed, duplicates, first, self.last_offset, placed[-1] if ended else None)

    async def place_runs(self, events: EventRuns) -> Placement:
        """:meth:`place` for events all placed already (another log's, handed on):
        batches of lines and stored rows are kept as they are, not built one by one.

        Raises:
            As :meth:`place`.
        """
        return self.place_runs_now(events)

    def place_runs_now(self, events: EventRuns) -> Placement:
        """:meth:`place_runs`, synchronously (for a follower that feeds this log)."""
        if self._closed:
            raise trio.ClosedResourceError(f"session {self.session_id} has ended")
        fresh, duplicates, ended = plan_runs(events, self.next_offset)
        if not len(fresh):
            return Placement([], duplicates, None, self.last_offset)
        first = self.next_offset
        try:
            self.append_runs(fresh)
        except ValueError as exc:
            raise PlacementError(str(exc)) from None
        return Placement(fresh, duplicates, first, self.last_offset, ended)

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


def plan_placement(
    events: Sequence[Event], given: Sequence[bool], next_offset: int
) -> tuple[list[Event], int, Event | None]:
    """Which of a publisher's events a log whose next offset is ``next_offset`` takes.

    Returns:
        The events to place, the duplicates skipped, and the ``session_ended`` among them.

    Raises:
        OffsetGapError, PlacementError: as :meth:`SessionLog.place`.
    """
    keep: list[Event] = []
    duplicates = 0
    ended: Event | None = None
    for index, (event, has_offset) in enumerate(zip(events, given, strict=True)):
        if has_offset:
            if event.offset < next_offset:
                duplicates += 1
                continue
            if event.offset > next_offset:
                raise OffsetGapError(
                    f"events[{index}].offset: {event.offset} leaves a gap after "
                    f"{next_offset - 1}; resume after lastOffset",
                    next_offset - 1 - len(keep),
                )
        if ended is not None:
            raise PlacementError(f"events[{index}]: no event may follow session_ended")
        if event.type is EventType.SESSION_ENDED:
            ended = event
        keep.append(event)
        next_offset += 1
    return keep, duplicates, ended


def plan_runs(events: EventRuns, next_offset: int) -> tuple[EventRuns, int, Event | None]:
    """:func:`plan_placement` for runs all placed already.

    Returns:
        The runs to place, the duplicates skipped, and the ``session_ended`` among them.
    """
    last = next_offset - 1
    if not len(events):
        return events, 0, None
    if events.first_offset > next_offset:
        raise OffsetGapError(
            f"offset {events.first_offset} leaves a gap after {last}; resume after lastOffset",
            last,
        )
    fresh = events.after(last)
    duplicates = len(events) - len(fresh)
    if not len(fresh):
        return fresh, duplicates, None
    ended = next((e for e in fresh.others() if e.type is EventType.SESSION_ENDED), None)
    if ended is not None and ended.offset != fresh.last_offset:
        raise PlacementError(f"offset {ended.offset + 1}: no event may follow session_ended")
    return fresh, duplicates, ended


def _part(run: Sequence[Event], start: int) -> Sequence[Event]:
    """The events of ``run`` from index ``start`` on."""
    if isinstance(run, EventBatch):
        return run.part(start, len(run))
    if isinstance(run, RowEvents):
        return type(run)(run.session, run.rows[start:])
    return run[start:]
