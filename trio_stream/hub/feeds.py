"""Where a hub's streams get their events, and who records them: the broker's policy.

A stream is in one of two modes:

* **owned** (the default): publishers' events are placed by the stream's own
  :class:`~trio_stream.log.SessionLog` and the stream's recorder writes them to the store.
  One hub owns the session while it runs.
* **fed**: the stream's log (a :class:`FedLog`) is filled by a follower of a
  :class:`FeedSource` that places and records events itself; the hub records nothing.
  Publishing into a fed stream goes to the source, and reaches the stream's clients
  through the follower like everything else. Two sources exist: a running session served
  by ``tstream run`` (:mod:`trio_stream.local`: the session's log, its store for what the
  log no longer holds) and a store shared by several hubs (:class:`StoreFeed`: Redis, where
  a script assigns offsets and a notification wakes every hub's follower).

:class:`StreamPolicy` gathers what the broker does: the mode of new streams (its log
factory), whether a stream the store marks running is reopened when a client asks for it,
and how recording is retried.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, final, runtime_checkable

import attrs
import trio

from ..batches import EventRuns
from ..events import Event
from ..log import (
    DEFAULT_HISTORY,
    OffsetGapError,
    Placement,
    SessionLog,
    plan_placement,
    plan_runs,
)
from ..store.base import OffsetConflictError, StoreError, UnknownSessionError

if TYPE_CHECKING:
    from ..store.base import SessionInfo, Store

logger = logging.getLogger("trio_stream.hub")

# Seconds between two attempts to record into a failing store.
RECORD_RETRY: Final = 1.0
# A follower of a shared store looks again this often even when no notification came
# (one lost while the notification channel reconnected).
FEED_POLL: Final = 5.0
# Events read from a shared store per request.
FEED_PAGE: Final = 10_000
# How long a follower of a failing store waits before it tries again, at the most.
FEED_BACKOFF: Final = 2.0
# Placements tried against a shared store that other hubs write too, before giving up.
MAX_PLACE_ATTEMPTS: Final = 100
# How long a request waits for the follower of a stream nobody followed to bring what the
# store's notifications told of, at the most, before it is answered from what is there.
CATCH_UP_WAIT: Final = 5.0


def _always() -> bool:
    return True


@runtime_checkable
class FeedSource(Protocol):
    """Where a fed stream's events come from (see the module's description)."""

    def follow(self, log: SessionLog) -> AsyncIterator[EventRuns]:
        """The events of ``log``'s session after ``log.last_offset`` (looked up before
        each read: events placed through the hub may be there already), in order and
        placed, as they come; it ends when the source has nothing more to give."""
        ...

    async def wait_stored(self, stream_id: str, offset: int) -> None:
        """Return once the store the hub reads history from holds ``offset``."""
        ...

    async def place(
        self, log: SessionLog, events: Sequence[Event], given: Sequence[bool]
    ) -> Placement:
        """Place a publisher's events (as :meth:`SessionLog.place`); ``log`` is the
        stream's log, whose last offset is the source's as far as this hub knows."""
        ...

    async def place_runs(self, log: SessionLog, events: EventRuns) -> Placement:
        """:meth:`place` for events placed already."""
        ...


class FedLog(SessionLog):
    """The log of a fed stream: filled by :meth:`feed` from ``source``; publishing into
    it goes to the source, and returns once the follower has brought the events here.

    Args:
        session_id: the session.
        source: where its events come from.
        first_offset: the offset the follower starts at.
        history: events kept in memory for followers.
    """

    def __init__(
        self,
        session_id: str,
        source: FeedSource,
        *,
        first_offset: int = 0,
        history: int = DEFAULT_HISTORY,
    ) -> None:
        super().__init__(session_id, first_offset=first_offset, history=history)
        self.source = source
        #: The ``session_ended`` event the follower brought, once it did.
        self.ended: Event | None = None
        #: Whether anyone on this hub reads the stream now (clients, requests waiting for
        #: events): a source may leave a stream nobody reads unfollowed and bring it up to
        #: date on :meth:`demand`. The broker sets it.
        self.wanted: Callable[[], bool] = _always
        #: The newest offset the source is known to hold (its notifications tell).
        self.known_last = first_offset - 1

    @property
    def behind(self) -> bool:
        """Whether the source is known to hold events this log has not brought yet."""
        return self.known_last > self.last_offset and not self.closed

    def demand(self) -> None:
        """Someone reads the stream now: a source that left it unfollowed brings it up to
        date (a no-op when it is)."""
        if self.behind:
            wake = getattr(self.source, "wake", None)
            if wake is not None:
                wake(self.session_id)

    async def catch_up(self) -> None:
        """Return once the log holds what the source is known to hold (or after
        :data:`CATCH_UP_WAIT` seconds, or once it closes): a request answered from a log
        left unfollowed would not know of the newest events."""
        if not self.behind:
            return
        self.demand()
        with trio.move_on_after(CATCH_UP_WAIT):
            await self.wait_after(self.known_last - 1)

    async def place(self, events: Sequence[Event], given: Sequence[bool]) -> Placement:
        if self.closed:
            raise trio.ClosedResourceError(f"session {self.session_id} has ended")
        placement = await self.source.place(self, events, given)
        await self._arrived(placement)
        return placement

    async def place_runs(self, events: EventRuns) -> Placement:
        if self.closed:
            raise trio.ClosedResourceError(f"session {self.session_id} has ended")
        placement = await self.source.place_runs(self, events)
        await self._arrived(placement)
        return placement

    async def _arrived(self, placement: Placement) -> None:
        """Hold what was placed here at once when it follows what the log holds (the
        follower then skips it), else wait until the follower has brought it: either way
        a publisher reads its own writes, and this hub's clients need not wait for the
        source's round trip."""
        if placement.first_offset is None:
            return
        self.known_last = max(self.known_last, placement.last_offset)
        if placement.first_offset == self.next_offset and not self.closed:
            placed = placement.events
            self.place_runs_now(placed if isinstance(placed, EventRuns) else EventRuns([placed]))
            if placement.ended is not None:
                self.ended = placement.ended
        self.demand()
        await self.wait_after(placement.last_offset - 1)

    async def feed(self) -> None:
        """Follow the source until the session ends, then close the log."""
        try:
            async for runs in self.source.follow(self):
                if self.closed:
                    return
                placement = self.place_runs_now(runs)
                if placement.ended is not None:
                    self.ended = placement.ended
                if self.ended is not None:
                    return
        finally:
            self.close()

    async def wait_stored(self, offset: int) -> None:
        """Return once the source's store holds ``offset``."""
        await self.source.wait_stored(self.session_id, offset)


LogFactory = Callable[["SessionInfo", int], SessionLog]


def owned_logs(info: SessionInfo, history: int) -> SessionLog:
    """The log of an owned stream: offsets placed here, after the store's newest."""
    return SessionLog(info.id, first_offset=info.last_offset + 1, history=history)


@final
@attrs.frozen
class StreamPolicy:
    """How a broker opens its streams and records them.

    Attributes:
        logs: makes the log of each stream the broker starts (``owned_logs``, or the
            :class:`FedLog` of a source).
        revive: reopen a stream that the store marks running when a client asks for it
            (a hub restarted under a running publisher serves it live again); False
            serves it from the store as it stands.
        record_retry: seconds between two attempts to record into a failing store;
            recording is retried for as long as the hub runs, producers waiting behind
            the recorder's backlog meanwhile (nothing accepted is dropped).
        source: the source of fed streams, whose follower the broker runs (None: every
            stream is owned).
    """

    logs: LogFactory = owned_logs
    revive: bool = True
    record_retry: float = RECORD_RETRY
    source: FeedSource | None = None

    @classmethod
    def fed_by(cls, source: FeedSource, *, revive: bool = True) -> StreamPolicy:
        """Every stream fed by ``source``."""

        def logs(info: SessionInfo, history: int) -> SessionLog:
            return FedLog(info.id, source, first_offset=info.last_offset + 1, history=history)

        return cls(logs=logs, revive=revive, source=source)

    @classmethod
    def for_store(cls, store: Store, nursery: trio.Nursery) -> StreamPolicy:
        """Owned streams, or streams fed by the store when several hubs share it (a store
        that tells of appends: :class:`~trio_stream.store.redis.RedisStore`)."""
        if callable(getattr(store, "appends", None)):
            feed = StoreFeed(store)
            nursery.start_soon(feed.run)
            return cls.fed_by(feed)
        return cls()


@final
class StoreFeed:
    """The source of streams in a store shared by several hubs.

    Offsets are placed by the store (its append refuses a batch that does not follow the
    session's newest offset, atomically, so hubs placing into one session take turns and
    never reuse or skip one); every hub follows each session it serves from the store,
    woken by the store's notification of each append (:meth:`run`), and reading again
    every :data:`FEED_POLL` seconds in case a notification was lost. A stream that nobody
    on this hub reads (no client, no request waiting: :attr:`FedLog.wanted`) is not read
    on each notification: its log notes what the store holds (:attr:`FedLog.known_last`)
    and reads what it missed once someone asks (:meth:`FedLog.demand`), or every
    :data:`FEED_POLL` seconds while appends come (so that it learns its session ended,
    and leaves the hub's memory).

    Args:
        store: a store with ``appends()`` (an async iterator of ``(session id, last
            offset)``, and ``("", -1)`` after it reconnected).
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._wake: dict[str, trio.Event] = {}
        # The log each follower fills: a notification of what a log holds already (the
        # hub's own publish, placed into it at once) wakes nobody, nor does one of a
        # stream nobody reads.
        self._logs: dict[str, SessionLog] = {}

    async def run(self) -> None:
        """Wake the followers the store's notifications concern (a task of the hub). It
        never fails the hub: should listening fail, every follower reads again and it
        listens anew, until the store is closed."""
        while not getattr(self.store, "closed", False):
            try:
                async for session_id, last in self.store.appends():
                    if session_id:
                        log = self._logs.get(session_id)
                        if isinstance(log, FedLog):
                            log.known_last = max(log.known_last, last)
                            if last <= log.last_offset or not log.wanted():
                                continue
                        elif log is not None and last <= log.last_offset:
                            continue
                        self.wake(session_id)
                    else:
                        self._wake_all()
            except Exception:
                if getattr(self.store, "closed", False):
                    return
                logger.exception("listening to the store's appends failed; listening again")
            self._wake_all()
            await trio.sleep(FEED_BACKOFF)

    def wake(self, session_id: str) -> None:
        """Have the follower of ``session_id`` read now."""
        event = self._wake.pop(session_id, None)
        if event is not None:
            event.set()

    def _wake_all(self) -> None:
        for event in self._wake.values():
            event.set()
        self._wake.clear()

    async def follow(self, log: SessionLog) -> AsyncIterator[EventRuns]:
        stream_id = log.session_id
        self._logs[stream_id] = log
        try:
            async for runs in self._follow(log):
                yield runs
        finally:
            if self._logs.get(stream_id) is log:
                del self._logs[stream_id]

    async def _follow(self, log: SessionLog) -> AsyncIterator[EventRuns]:
        stream_id = log.session_id
        wanted = log.wanted if isinstance(log, FedLog) else _always
        backoff = 0.05
        read = True
        wake = trio.Event()
        while not log.closed and log.ended is None:
            if not read:
                with trio.move_on_after(FEED_POLL):
                    await wake.wait()
                # Woken, or nothing heard for a while: read if someone reads the stream
                # here (a notification may have been lost), or if appends were noted
                # since the last read (so a stream nobody reads is read at most every
                # FEED_POLL seconds, and learns that its session ended).
                behind = isinstance(log, FedLog) and log.behind
                read = wake.is_set() or wanted() or behind
                continue
            # Registered before reading: an append noted meanwhile sets it, and the wait
            # after this read then returns at once.
            wake = self._wake.setdefault(stream_id, trio.Event())
            after = log.last_offset
            try:
                rows = await self.store.read_rows(stream_id, after, FEED_PAGE)
            except UnknownSessionError:
                return
            except StoreError as exc:
                logger.warning("stream %s: following the store: %s", stream_id, exc)
                await trio.sleep(backoff)
                backoff = min(FEED_BACKOFF, backoff * 2)
                continue
            backoff = 0.05
            if len(rows):
                yield EventRuns([rows])
                if len(rows) >= FEED_PAGE:
                    continue  # more may be stored than one page held
            # One read per notification: what was appended since is told by another.
            read = False

    async def wait_stored(self, stream_id: str, offset: int) -> None:
        # What a follower brings was read from the store.
        return None

    async def place(
        self, log: SessionLog, events: Sequence[Event], given: Sequence[bool]
    ) -> Placement:
        sid = log.session_id

        async def attempt(last: int) -> Placement:
            keep, duplicates, ended = plan_placement(events, given, last + 1)
            if not keep:
                return Placement([], duplicates, None, last)
            placed = [e.with_offset(sid, last + 1 + i) for i, e in enumerate(keep)]
            await self.store.append(sid, placed)
            return Placement(placed, duplicates, last + 1, placed[-1].offset, ended)

        return await self._placing(log, attempt)

    async def place_runs(self, log: SessionLog, events: EventRuns) -> Placement:
        async def attempt(last: int) -> Placement:
            fresh, duplicates, ended = plan_runs(events, last + 1)
            if not len(fresh):
                return Placement([], duplicates, None, last)
            await self.store.append(log.session_id, fresh)
            return Placement(fresh, duplicates, fresh.first_offset, fresh.last_offset, ended)

        return await self._placing(log, attempt)

    async def _placing(
        self, log: SessionLog, attempt: Callable[[int], Awaitable[Placement]]
    ) -> Placement:
        """Try ``attempt(last offset)`` until the store takes it: the log may not have
        brought the newest events yet, and other hubs may place into the session too."""
        last = log.last_offset
        checked = False
        for _ in range(MAX_PLACE_ATTEMPTS):
            try:
                return await attempt(last)
            except OffsetConflictError as exc:
                last, checked = exc.last, True
            except OffsetGapError:
                # A gap after what this hub has seen may be none after what the store holds.
                if checked:
                    raise
                last, checked = await self.store.last_offset(log.session_id), True
        raise StoreError(f"session {log.session_id}: too many hubs placing events at once")


__all__ = [
    "FedLog",
    "FeedSource",
    "StoreFeed",
    "StreamPolicy",
    "owned_logs",
]
