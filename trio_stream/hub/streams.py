"""One stream as the hub serves it: its log, its memory of serialized events, its fan-out
and recorder tasks, its clients, and reading its history for clients that resume.

A client resuming from an offset gets the store's part, then memory, then live events,
with no gap and no duplicate; :meth:`Stream.register_from` is the synchronous step that
hands a client over from history to the live fan-out.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, final

import trio

from ..batches import EventRuns
from ..events import Event
from ..log import SessionLog
from ..store.base import (
    HistoryQuery,
    OffsetConflictError,
    RowStore,
    RunStore,
    SessionInfo,
    SessionStatus,
    StoreError,
)
from ..store.chunks import StoredEvents
from .clients import Client
from .feeds import FedLog
from .frames import Frame, LazyFrames, frames_of
from .items import Batch, EndReason
from .protocol import EventFilter, ReplayOptions

if TYPE_CHECKING:
    from .broker import Broker

logger = logging.getLogger("trio_stream.hub")

RECORD_TICK: Final = 0.02
# Clients written between two looks at the log in a fan-out round (see Stream.pump).
FANOUT_STEP: Final = 512
# A pattern is matched by the hub, not the store; at most this many events are scanned.
MAX_PATTERN_SCAN: Final = 1_000_000


@final
class Stream:
    """One stream as the hub serves it: live (with a log) or ended (store only).

    Args:
        broker: the broker.
        info: the store's view of the session.
        log: the live log, or None for an ended stream read from the store.
    """

    def __init__(self, broker: Broker, info: SessionInfo, log: SessionLog | None) -> None:
        self.broker = broker
        self.id = info.id
        self.info = info
        self.log = log
        self.settings = broker.settings_of(info)
        self.frames: deque[Frame] = deque(maxlen=self.settings.history)
        self.largest_event = 0
        start = info.last_offset if log is None else log.last_offset
        self.pumped = start
        self.recorded = start
        self.finished = log is None
        self.clients: dict[str, Client] = {}
        self.live: dict[str, Client] = {}
        self.events_published = 0
        self.duplicates = 0
        self.connections = 0
        self.cut = 0
        self.activity = broker.activity.of(info.id)
        # What the fan-out wrote to clients itself since it last told :attr:`activity`.
        self.tally_events = 0
        self.tally_bytes = 0
        self.recorder_done = trio.Event()
        # True once one of its tasks failed: its clients were cut and the broker
        # dropped it (see Broker._stream_failed).
        self.failed = False
        # True once the store knows the stream ended: only then may it leave memory.
        self.end_stored = log is None
        # True once the broker took the stream's end (Broker.end_stream).
        self.end_noted = False
        if log is None:
            self.recorder_done.set()
        self._advanced = trio.Event()
        self._stored = trio.Event()
        # Tasks in :meth:`wait_advanced`.
        self.waiters = 0

    @property
    def last_offset(self) -> int:
        """The offset of the newest event."""
        return self.log.last_offset if self.log is not None else self.pumped

    @property
    def accepting(self) -> bool:
        """Whether publishers may still append to it (it is live and its log open)."""
        return self.log is not None and not self.log.closed

    @property
    def status(self) -> str:
        """The stream's status (``running`` while live)."""
        return SessionStatus.RUNNING.value if not self.finished else self.info.status.value

    def first_held(self) -> int:
        """The oldest offset in memory (``pumped + 1`` when memory is empty)."""
        return self.frames[0].offset if self.frames else self.pumped + 1

    # -- the fan-out ---------------------------------------------------------------------

    async def pump(self) -> None:
        """Follow the log: serialize each tick's events once and hand them to clients.

        The clients are visited in rounds, :data:`FANOUT_STEP` at a time; between two
        steps the hub's other tasks run (a publisher's next events among them), and what
        the log took meanwhile joins the round for the clients not yet visited. Those
        visited before get it at the start of the next round, at once. With thousands
        of clients a round takes long (one write to each): an event then waits for at
        most one round, not for the rest of the round in progress and then its own
        place in the next.
        """
        log = self.log
        assert log is not None
        tick = self.broker.config.tick
        # What the clients visited early in the last round have not been given yet.
        owed: Batch | None = None
        while True:
            if owed is None:
                await log.wait_after(self.pumped)
                if tick > 0 and not log.closed:
                    await trio.sleep(tick)
            taken, whole = self._take()
            batch = _joined(owed, taken) if whole else taken
            owed = None
            if batch is None:
                if log.closed:
                    break
                continue
            clients = list(self.live.values())
            for start in range(0, len(clients), FANOUT_STEP):
                if start:
                    await trio.lowlevel.checkpoint()
                    more, whole = self._take()
                    if not whole:
                        # Every live client was cut: nothing before it is owed to anyone.
                        batch, owed = more, None
                    elif more is not None:
                        batch = _joined(batch, more)
                        owed = _joined(owed, more)
                for client in clients[start : start + FANOUT_STEP]:
                    client.offer(batch)
                if self.tally_events or self.tally_bytes:
                    self.activity.sent(self.tally_events, self.tally_bytes, time.time())
                    self.tally_events = self.tally_bytes = 0
            self._advance()
        self.finished = True
        for client in list(self.live.values()):
            client.end(EndReason.STREAM_ENDED)
        self._advance()
        self.broker.forget_if_idle(self)

    def _take(self) -> tuple[Batch | None, bool]:
        """The log's events after :attr:`pumped` as one batch, framed once and kept in
        memory for replays (None when there is none), and whether they follow it at once
        (when not, the log no longer held what the fan-out had not taken, and every live
        client was cut)."""
        assert self.log is not None
        since = self.log.since(self.pumped)
        if not since.events:
            return None, True
        frames = frames_of(since.events)
        if not since.complete:
            # The fan-out fell behind the log's memory: live clients would miss
            # events, so they are cut and resume from the store.
            self.frames.clear()
            for client in list(self.live.values()):
                client.end(EndReason.SLOW_CONSUMER)
        self.frames.extend(frames)
        self.pumped = frames[-1].offset
        self.largest_event = max(self.largest_event, max(len(f.raw) for f in frames))
        batch = Batch(frames, since.events)
        self.broker.metrics_events(len(frames), len(batch.json()) - len(frames) + 1)
        return batch, since.complete

    def wake(self) -> None:
        """Wake whoever waits for the next fan-out tick."""
        self._advance()

    def _advance(self) -> None:
        self._advanced.set()
        self._advanced = trio.Event()

    async def wait_advanced(self) -> None:
        """Return after the next fan-out tick (or the end of the stream)."""
        if self.finished:
            return
        self.waiters += 1
        try:
            if isinstance(self.log, FedLog):
                self.log.demand()
            await self._advanced.wait()
        finally:
            self.waiters -= 1

    @property
    def behind(self) -> bool:
        """Whether the store holds events this hub has not read yet (a stream on a shared
        store that nobody here reads): what it describes of itself may be out of date."""
        return isinstance(self.log, FedLog) and self.log.behind

    def wanted(self) -> bool:
        """Whether anyone on this hub reads the stream now: a client, or a request
        waiting for its next events (a fed stream is followed only then)."""
        return bool(self.clients) or self.waiters > 0

    async def record(self) -> None:
        """Write the log into the store in batches until it closes; retry store errors."""
        log = self.log
        assert log is not None
        store = self.broker.store
        # Kept as the log's runs: batches of lines are stored from their columns.
        held: list[Sequence[Event]] = []
        try:
            while True:
                if not held:
                    await log.wait_unrecorded()
                held += log.take_unrecorded().runs
                if not held:
                    if self.log.closed:
                        return
                    continue
                events = EventRuns(held)
                if not self.settings.persist:
                    # Kept in memory only (its config's persistence): the store keeps
                    # the session, not its events.
                    self.recorded = events.last_offset
                    held = []
                    self._stored.set()
                    self._stored = trio.Event()
                    continue
                try:
                    if isinstance(log, FedLog):
                        # Its source records it: wait until the store holds it.
                        await log.wait_stored(events.last_offset)
                    else:
                        await store.append(self.id, events)
                except OffsetConflictError:
                    # Another hub on a shared store recorded these offsets: retrying can
                    # never succeed. The stream fails here and reopens from the store.
                    raise
                except StoreError as exc:
                    logger.error("stream %s: recording failed, retrying: %s", self.id, exc)
                    await trio.sleep(self.broker.policy.record_retry)
                    continue
                self.recorded = events.last_offset
                held = []
                self._stored.set()
                self._stored = trio.Event()
                if not self.log.closed:
                    # Fan-out serves live clients from memory, so the store can take
                    # events in fewer, larger transactions at the cost of a short delay.
                    await trio.sleep(RECORD_TICK)
        finally:
            self.recorder_done.set()

    # -- clients -------------------------------------------------------------------------

    def register_from(self, client: Client, cursor: int) -> list[Frame] | None:
        """Hand ``client`` the frames after ``cursor`` from memory and make it live.

        Returns:
            The frames it wants (filtered), or None when memory no longer holds the
            offset after ``cursor`` (the client must read the store first).
        """
        if cursor + 1 < self.first_held():
            return None
        flt = client.filters
        start = cursor + 1 - self.first_held()
        frames = [
            f
            for f in itertools.islice(self.frames, max(0, start), None)
            if flt.empty or flt.matches(f.event, f.raw)
        ]
        client.queued = max(cursor, self.pumped)
        if self.finished:
            client.end(EndReason.STREAM_ENDED)
        else:
            self.live[client.id] = client
        return frames

    def unregister(self, client: Client) -> None:
        """Stop queuing events for ``client``."""
        self.live.pop(client.id, None)

    def detach(self, client: Client) -> None:
        """``client`` is gone."""
        if client.express_writer is not None:
            # It and its writer refer to each other: freed without the cycle collector.
            client.express_writer.rest = None
        self.broker.alarms.cancel(client)
        self.live.pop(client.id, None)
        if self.clients.pop(client.id, None) is not None:
            self.broker.client_left(client)
        self.broker.forget_if_idle(self)

    # -- history -------------------------------------------------------------------------

    async def wait_recorded(self, offset: int, *, timeout: float = 5.0) -> None:
        """Return once the store holds every event up to ``offset`` (or after ``timeout``
        seconds, or at once for a stream that is not live)."""
        with trio.move_on_after(timeout):
            while (
                self.log is not None and self.recorded < offset and not self.recorder_done.is_set()
            ):
                await self._stored.wait()

    async def settle(self) -> None:
        """Return once the fan-out has taken every event appended so far (a tick)."""
        while self.log is not None and not self.finished and self.pumped < self.log.last_offset:
            await self.wait_advanced()

    async def resolve_start(
        self, options: ReplayOptions | None, filters: EventFilter | None = None
    ) -> tuple[int, bool]:
        """Where a subscription or replay starts (the offset it follows) and whether
        everything the client asked for is still there. ``lastN`` counts the events that
        ``filters`` pass."""
        await self.settle()
        last = self.last_offset
        if options is None:
            return last, True
        if options.epoch is not None and options.epoch != self.broker.store.epoch:
            return -1, False
        if options.from_offset is not None:
            after = options.from_offset
            if after > last:
                # An offset this stream never reached: the history the client knew is gone.
                return -1, False
            return after, await self.available_after(after)
        if options.from_timestamp is not None:
            return await self._offset_before_time(options.from_timestamp), True
        if options.last_n is not None:
            if filters is None or filters.empty:
                return max(-1, last - options.last_n), True
            frames = await self.last_matching(filters, options.last_n)
            return (frames[0].offset - 1 if frames else last), True
        return last, True

    async def last_matching(
        self, filters: EventFilter, count: int, *, after: int = -1
    ) -> list[Frame]:
        """The last ``count`` events after ``after`` that ``filters`` pass, oldest first:
        from the store, and from memory for what the recorder has not stored yet (or
        all of it, for a stream kept in memory only)."""
        recorded = self.recorded if self.settings.persist else -1
        newer = max(recorded, after)
        fresh = [f for f in self.frames if f.offset > newer and filters.matches(f.event, f.raw)]
        want = count - len(fresh)
        if want <= 0:
            return fresh[len(fresh) - count :]
        # The store finds the last events of most filters; with one it cannot ask for (a
        # pattern, sessions, several filters), ask for more until enough match.
        ask = want
        while True:
            events = await self.broker.store.read(self.id, filters.to_query(after=after, last=ask))
            kept = [
                e for e in events if e.offset <= recorded and (filters.exact or filters.matches(e))
            ]
            if len(kept) >= want or len(events) < ask or ask >= MAX_PATTERN_SCAN:
                break
            ask *= 2
        return [Frame.of(e) for e in kept[max(0, len(kept) - want) :]] + fresh

    async def available_after(self, after: int) -> bool:
        """Whether every event after ``after`` is still held (memory or store)."""
        if after + 1 >= self.first_held():
            return True
        events = await self.broker.store.read(self.id, HistoryQuery(after=-1, limit=1))
        first = events[0].offset if events else self.first_held()
        return after + 1 >= first

    async def _offset_before_time(self, ts: float) -> int:
        for frame in self.frames:
            if frame.event.ts >= ts:
                if frame is self.frames[0]:
                    break
                return frame.offset - 1
        else:
            if self.frames:
                return self.pumped
        events = await self.broker.store.read(self.id, HistoryQuery(start_time=ts, limit=1))
        return events[0].offset - 1 if events else self.pumped

    async def read_page(
        self, cursor: int, filters: EventFilter, size: int, *, exact: bool = True
    ) -> tuple[Sequence[Frame], int]:
        """Up to ``size`` matching events after ``cursor`` from the store, and the cursor
        after them (moved past events the filter skipped). Not ``exact``: a few more when
        they come with the same read (the rest of a store chunk)."""
        recorded = self.recorded
        first_held = self.first_held()
        store = self.broker.store
        events: Sequence[Event]
        if filters.empty and not exact and isinstance(store, RunStore):
            # Most followers want everything: lines stay the columns the store's chunks
            # hold, encoded from them for each client's encoding (LazyFrames).
            events: Sequence[Event] = await store.read_runs(self.id, cursor, size)
        elif filters.empty and isinstance(store, RowStore):
            # Lines go from the store's chunks to their JSON without an event each.
            rows = await store.read_rows(self.id, cursor, size)
            events = StoredEvents(rows.session, rows.rows[:size]) if exact else rows
        else:
            events = await store.read(self.id, filters.to_query(after=cursor, limit=size))
        if not filters.exact:
            kept: Sequence[Event] = [e for e in events if filters.matches(e)]
        else:
            kept = events
        frames = LazyFrames(kept) if isinstance(kept, EventRuns) else frames_of(kept)
        if len(events) >= size:
            return frames, events[-1].offset
        # Fewer than asked: the store holds no more matches up to what was recorded
        # before the read.
        new_cursor = max(cursor, events[-1].offset if events else cursor)
        if self.finished and self.log is None:
            new_cursor = max(new_cursor, self.pumped)
        else:
            new_cursor = max(new_cursor, min(first_held - 1, recorded))
        if new_cursor == cursor and cursor + 1 < self.first_held():
            # The recorder has not yet stored what memory dropped: wait for it.
            with trio.move_on_after(self.broker.policy.record_retry):
                await self.wait_advanced()
        return frames, new_cursor

    async def read_history(
        self, cursor: int, filters: EventFilter, size: int
    ) -> tuple[list[Frame], int, bool]:
        """A replay page: matching events after ``cursor`` from the store or memory.

        Returns:
            The frames, the cursor after them, and whether the history is exhausted.
        """
        if cursor + 1 >= self.first_held():
            start = cursor + 1 - self.first_held()
            frames: list[Frame] = []
            new_cursor = cursor
            for frame in itertools.islice(self.frames, max(0, start), None):
                new_cursor = frame.offset
                if filters.empty or filters.matches(frame.event, frame.raw):
                    frames.append(frame)
                    if len(frames) >= size:
                        break
            done = new_cursor >= self.pumped
            return frames, new_cursor, done
        frames, new_cursor = await self.read_page(cursor, filters, size)
        return frames, new_cursor, new_cursor >= self.pumped and self.finished

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/streams/{id}`` shows."""
        info = self.info
        return {
            "id": self.id,
            "status": self.status,
            "live": self.log is not None and not self.finished,
            "workflowSessionId": info.workflow_session_id,
            "config": self.settings.to_json(self.broker.config),
            "command": info.command,
            "created": info.created,
            "lastActivity": info.last_activity,
            "ended": info.ended,
            "exitStatus": info.exit_status,
            "lastOffset": self.last_offset,
            "clients": len(self.clients),
            "epoch": self.broker.store.epoch,
        }


def _joined(first: Batch | None, then: Batch | None) -> Batch | None:
    """The events of two batches of consecutive offsets as one (either may be None)."""
    if first is None:
        return then
    if then is None:
        return first
    assert first.events is not None and then.events is not None
    return Batch(
        list(first.frames) + list(then.frames), EventRuns(first.events.runs + then.events.runs)
    )
