"""The broker: the hub's streams, publishing into them, and their clients.

Each live stream (:mod:`trio_stream.hub.streams`) has one
:class:`~trio_stream.log.SessionLog` (the single place offsets are assigned), a recorder
task writing it into the store, and a fan-out task that wakes once per tick, serializes
the tick's events once and queues the bytes for every client. The broker owns those
tasks (in the nursery it is given), creates, reopens, ends and deletes streams, and keeps
the connection limits.

Publishing from outside may place events at explicit offsets (:meth:`Broker.publish`):
an offset already in the log is a duplicate and is skipped, an offset beyond the next one
is a gap and is refused with the stream's last offset, so a remote publisher can resume
from the hub's last acknowledged offset.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Sequence
from functools import partial
from typing import Any, Final, final

import attrs
import trio

from ..batches import EventRuns
from ..events import Event, EventType, SessionEnded, SessionStarted
from ..ids import new_session_id
from ..log import OffsetGapError, Placement, PlacementError, SessionLog
from ..store.base import (
    HistoryQuery,
    SessionExistsError,
    SessionInfo,
    SessionStatus,
    Store,
    StoreError,
    check_session_id,
)
from ..store.sessions import status_for_end
from .activity import ActivityRecords
from .alarms import Alarms
from .clients import Client
from .config import HubConfig
from .design import StreamSettings, check_config
from .errors import (
    Conflict,
    HubError,
    NotFound,
    OffsetGap,
    ShuttingDown,
    StreamEndedError,
    StreamRestarting,
    TooManyClients,
)
from .feeds import FedLog, StreamPolicy
from .items import ClientKind, EndReason
from .streams import Stream

logger = logging.getLogger("trio_stream.hub")

RESERVED_IDS: Final = frozenset({"metrics"})
# A client stuck in a write when the hub shuts down is dropped after this long.
SHUTDOWN_WRITE_TIMEOUT: Final = 1.0
# How long a stream whose task failed waits for its recorder before it may be reopened.
FAILED_FLUSH_TIMEOUT: Final = 10.0
# The longest wait between looks for streams whose own retention period has passed.
EXPIRY_CHECK: Final = 3600.0


@final
@attrs.frozen
class PublishResult:
    """What a publish did: events placed, duplicates skipped, the stream's last offset."""

    accepted: int
    duplicates: int
    last_offset: int
    first_offset: int | None


@final
class Broker:
    """The hub's streams. Its tasks (recorders, fan-outs) run in ``nursery``.

    Args:
        store: where sessions are recorded.
        config: limits and defaults.
        nursery: owns every stream's tasks.
        policy: how streams are opened and recorded (default: owned streams, or streams
            fed by the store when it is shared by several hubs; see
            :meth:`~trio_stream.hub.feeds.StreamPolicy.for_store`).
    """

    def __init__(
        self,
        store: Store,
        config: HubConfig,
        nursery: trio.Nursery,
        *,
        policy: StreamPolicy | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.nursery = nursery
        self.policy = StreamPolicy.for_store(store, nursery) if policy is None else policy
        self.streams: dict[str, Stream] = {}
        self.connections = 0
        self.clients_by_kind: Counter[str] = Counter()
        self.shutting_down = False
        self.events_total = 0
        self.bytes_total = 0
        self.slow_consumers = 0
        self.event_times: deque[tuple[float, int]] = deque()
        self._ids = itertools.count(1)
        # Loading or creating a stream awaits the store; one at a time, so that two
        # requests never start two logs for one stream.
        self._loading = trio.Lock()
        self._no_clients = trio.Event()
        self._no_clients.set()
        # The publisher connections' waits for their next message, cut at shutdown.
        self.publishers: set[trio.CancelScope] = set()
        self.activity = ActivityRecords()
        # Clients' heartbeats and idle limits.
        self.alarms = Alarms(nursery)
        # The hub's memory store keeps nothing once the hub stops.
        self.store_kind = "memory" if type(store).__name__ == "MemoryStore" else "database"
        self._expiry = trio.Event()
        if not config.read_only:
            nursery.start_soon(self._expire_streams)

    # -- metrics hooks -------------------------------------------------------------------

    def metrics_events(self, count: int, size: int) -> None:
        """Count ``count`` events of ``size`` bytes fanned out."""
        self.events_total += count
        self.bytes_total += size
        now = time.monotonic()
        self.event_times.append((now, count))
        while self.event_times and self.event_times[0][0] < now - 10:
            self.event_times.popleft()

    def events_per_second(self) -> float:
        """Events fanned out per second over the last ten seconds."""
        now = time.monotonic()
        return sum(c for t, c in self.event_times if t >= now - 10) / 10.0

    # -- streams -------------------------------------------------------------------------

    def settings_of(self, info: SessionInfo) -> StreamSettings:
        """The config in force of the stream of ``info``: the ``StreamConfig`` it was
        created with (kept in its metadata), the hub's settings for the rest."""
        given = info.metadata.get("config")
        try:
            return StreamSettings.of(
                check_config(given) if given else None, self.config, self.store_kind
            )
        except HubError as exc:
            logger.warning("stream %s: its config is ignored: %s", info.id, exc.message)
            return StreamSettings.of(None, self.config, self.store_kind)

    async def _expire_streams(self) -> None:
        """Destroy the ended streams idle for longer than their own retention period
        (``persistence.retentionPeriod``), looking again when one is due or a stream with
        one ends."""
        while True:
            due = EXPIRY_CHECK
            try:
                now = time.time()
                for info in await self.store.list_sessions():
                    retention = self.settings_of(info).retention
                    if retention is None or info.status is SessionStatus.RUNNING:
                        continue
                    idle = now - max(info.ended or 0.0, info.last_activity)
                    if idle < retention:
                        due = min(due, retention - idle)
                    elif info.id not in self.streams or not self.streams[info.id].clients:
                        logger.info("stream %s: its retention period is over", info.id)
                        self.streams.pop(info.id, None)
                        self.activity.forget(info.id)
                        await self.store.destroy_session(info.id)
            except (StoreError, LookupError) as exc:
                logger.warning("could not expire streams: %s", exc)
            except Exception:
                # This task serves every stream: a failure here must not end the hub.
                logger.exception("could not expire streams")
            with trio.move_on_after(max(due, 0.001)):
                await self._expiry.wait()
            self._expiry = trio.Event()

    def in_memory(self, stream_id: str) -> Stream | None:
        """The stream ``stream_id`` if the hub holds it in memory (live, or ended with
        clients still reading), without asking the store."""
        return self.streams.get(stream_id)

    def streams_in_memory(self) -> list[Stream]:
        """Every stream the hub holds in memory."""
        return list(self.streams.values())

    def forget_if_idle(self, stream: Stream) -> None:
        """Drop an ended stream without clients from memory (the store serves it)."""
        if (
            stream.finished
            and stream.end_stored
            and not stream.clients
            and self.streams.get(stream.id) is stream
        ):
            del self.streams[stream.id]

    async def create_stream(
        self,
        stream_id: str | None = None,
        *,
        workflow_session_id: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> Stream:
        """Create a live stream (and its session in the store) with the design's
        ``StreamConfig`` (some or all of its fields), kept in the session's metadata so
        that it holds after a restart.

        Raises:
            HubError: for a bad or reserved id or a bad config field (naming it);
                Conflict when the id is taken.
        """
        sid = new_session_id() if stream_id is None else stream_id
        try:
            check_session_id(sid)
        except ValueError as exc:
            raise HubError(str(exc), field="id") from None
        if sid in RESERVED_IDS:
            raise HubError(f"stream id {sid!r} is reserved", field="id")
        if config is not None:
            config = check_config(config)
        self._check_open()
        async with self._loading:
            if sid in self.streams:
                raise Conflict(f"stream {sid} already exists")
            info = SessionInfo(
                sid,
                created=time.time(),
                last_activity=time.time(),
                workflow_session_id=workflow_session_id,
                metadata={"config": config} if config else {},
            )
            try:
                info = await self.store.create_session(info)
            except SessionExistsError:
                raise Conflict(f"stream {sid} already exists") from None
            return self._start(info)

    def _start(self, info: SessionInfo) -> Stream:
        log = self.policy.logs(info, self.settings_of(info).history)
        stream = Stream(self, info, log)
        self.streams[info.id] = stream
        self.nursery.start_soon(self._guarded, stream, stream.record, "recorder")
        self.nursery.start_soon(self._guarded, stream, stream.pump, "fan-out")
        if isinstance(log, FedLog):
            log.wanted = stream.wanted
            self.nursery.start_soon(self._guarded, stream, partial(self._feed, stream, log), "feed")
        return stream

    async def _feed(self, stream: Stream, log: FedLog) -> None:
        """Fill a fed stream from its source; once the session ended there, take the
        store's view of it (whoever ended it noted the end in the store)."""
        await log.feed()
        if self.shutting_down or stream.failed:
            return
        with trio.CancelScope(shield=True):
            await stream.recorder_done.wait()
            try:
                info = await self.store.get_session(stream.id)
            except (StoreError, LookupError):
                info = stream.info
            ended = log.ended
            if info.status is SessionStatus.RUNNING:
                status = SessionStatus.INTERRUPTED
                if ended is not None and isinstance(ended.data, SessionEnded):
                    status = status_for_end(ended.data)
                info = attrs.evolve(info, status=status, ended=time.time())
            stream.info = info
            stream.end_stored = True
            self.forget_if_idle(stream)

    async def _guarded(self, stream: Stream, task: Any, name: str) -> None:
        """Run one of ``stream``'s tasks so that its failure stops that stream only:
        the broker's nursery serves every stream, and an exception escaping into it
        would end the hub for all its clients."""
        try:
            await task()
        except Exception:
            logger.exception("stream %s: its %s failed; its clients are cut", stream.id, name)
            await self._stream_failed(stream)

    async def _stream_failed(self, stream: Stream) -> None:
        """Cut a failed stream's clients (``internal``) and drop it from memory, as a
        hub restart would: what its recorder holds is stored first, the store still
        says the session runs, and the next request (a publisher resuming, a client
        reconnecting from its last offset) opens it again from the store."""
        stream.failed = True
        for client in list(stream.clients.values()):
            client.end(EndReason.INTERNAL)
        async with self._loading:
            if self.streams.get(stream.id) is stream:
                del self.streams[stream.id]
            log = stream.log
            if log is not None and not log.closed:
                log.close()
            # Reopening before the recorder has stored what it holds would place new
            # events at offsets already given.
            with trio.CancelScope(shield=True), trio.move_on_after(FAILED_FLUSH_TIMEOUT):
                await stream.recorder_done.wait()
        stream.finished = True
        stream.wake()

    async def get_stream(
        self, stream_id: str, *, revive: bool = True, reopen: bool = False
    ) -> Stream:
        """The live stream ``stream_id``, reopened if the store says it still runs
        (a hub restarted under a running publisher), else a read-only ended view.

        Args:
            stream_id: the stream.
            revive: reopen a stream the store says is running.
            reopen: also reopen a stream the store marked interrupted (its recording hub
                died); a publisher resuming after a hub restart does this.

        Raises:
            NotFound: for an unknown or invalid id.
        """
        stream = self.streams.get(stream_id)
        if stream is not None:
            if isinstance(stream.log, FedLog):
                # Left unfollowed while nobody read it here: brought up to date first.
                await stream.log.catch_up()
            return stream
        try:
            check_session_id(stream_id)
        except ValueError as exc:
            raise NotFound(str(exc)) from None
        async with self._loading:
            stream = self.streams.get(stream_id)
            if stream is not None:
                return stream
            try:
                info = await self.store.get_session(stream_id)
            except LookupError:
                raise NotFound(f"unknown stream: {stream_id}") from None
            if self.shutting_down:
                return Stream(self, info, None)
            if info.status is SessionStatus.RUNNING and revive and self.policy.revive:
                return self._start(info)
            if info.status is SessionStatus.INTERRUPTED and reopen:
                last = await self.store.read(stream_id, HistoryQuery(last=1))
                if not last or last[0].type is not EventType.SESSION_ENDED:
                    info = await self.store.update_session(
                        stream_id, status=SessionStatus.RUNNING, ended=None, pid=os.getpid()
                    )
                    return self._start(info)
                ended = last[0].data
                if isinstance(ended, SessionEnded) and not ended.interrupted:
                    # The hub died after recording the end but before noting it.
                    info = await self.store.update_session(
                        stream_id,
                        status=status_for_end(ended),
                        exit_status=ended.exit_status,
                        ended=last[0].ts,
                    )
            return Stream(self, info, None)

    @staticmethod
    def _check_not_failed(stream: Stream) -> None:
        if stream.failed:
            raise StreamRestarting(f"stream {stream.id} failed on the hub and is reopening")

    def _check_open(self) -> None:
        if self.shutting_down:
            raise ShuttingDown("the hub is shutting down")

    async def publish(
        self, stream_id: str, events: Sequence[Event], placed: Sequence[bool]
    ) -> PublishResult:
        """Append events to a live stream; its log places them
        (:meth:`~trio_stream.log.SessionLog.place`).

        Args:
            stream_id: the stream.
            events: the events; their ``offset`` counts where ``placed`` is True.
            placed: per event, whether the publisher gave its offset.

        Returns:
            What was placed and the stream's last offset.

        Raises:
            NotFound, StreamEndedError, OffsetGap (with ``lastOffset``), HubError;
            ShuttingDown, rather than StreamEndedError, for a stream the hub's shutdown
            closed (its publisher resumes on the next hub).
        """
        stream, log = await self._publishing(stream_id)
        return await self._placed(stream, log, log.place(events, placed))

    async def publish_runs(self, stream_id: str, events: EventRuns) -> PublishResult:
        """:meth:`publish` for events all placed already, as a session's log placed them:
        batches of lines and stored rows are kept as they are, not built event by event.

        Raises:
            As :meth:`publish`.
        """
        stream, log = await self._publishing(stream_id)
        return await self._placed(stream, log, log.place_runs(events))

    async def _publishing(self, stream_id: str) -> tuple[Stream, SessionLog]:
        """The live stream ``stream_id`` and its log, for a publisher."""
        self._check_open()
        stream = await self.get_stream(stream_id, reopen=True)
        log = stream.log
        self._check_not_failed(stream)
        if log is None or log.closed:
            raise StreamEndedError(f"stream {stream_id} has ended", lastOffset=stream.last_offset)
        return stream, log

    async def _placed(
        self, stream: Stream, log: SessionLog, placing: Awaitable[Placement]
    ) -> PublishResult:
        """Await a placement into ``stream``'s log; note and end the session as it says."""
        try:
            placement = await placing
        except OffsetGapError as exc:
            raise OffsetGap(str(exc), lastOffset=exc.last_offset) from None
        except PlacementError as exc:
            raise HubError(str(exc)) from None
        except trio.ClosedResourceError:
            raise StreamEndedError(
                f"stream {stream.id} has ended", lastOffset=stream.last_offset
            ) from None
        placed = placement.events
        stream.events_published += len(placed)
        stream.duplicates += placement.duplicates
        if placed:
            await self._note_session(
                stream, placed.others() if isinstance(placed, EventRuns) else placed
            )
        ended = placement.ended
        if ended is not None:
            assert isinstance(ended.data, SessionEnded)
            await self.end_stream(stream, ended.data, at=ended.ts)
        elif placed:
            await log.wait_recorded_room()
        return PublishResult(
            len(placed), placement.duplicates, placement.last_offset, placement.first_offset
        )

    async def _note_session(self, stream: Stream, events: Sequence[Event]) -> None:
        for event in events:
            data = event.data
            if isinstance(data, SessionStarted):
                # The session began when it says, not when the hub first heard of it (a
                # publisher that was cut off from the hub sends its start late).
                changes = {
                    "created": event.ts,
                    "command": list(data.command),
                    "cwd": data.cwd,
                    "pid": data.pid,
                    "host": data.hostname,
                }
                try:
                    stream.info = await self.store.update_session(stream.id, **changes)
                except (StoreError, LookupError) as exc:
                    logger.warning("stream %s: could not note its start: %s", stream.id, exc)

    async def end_stream(
        self, stream: Stream, ended: SessionEnded | None = None, *, at: float | None = None
    ) -> None:
        """End a live stream: close its log (after appending an ``interrupted``
        SESSION_ENDED when ``ended`` is None, the stream being cut short), wait for the
        recorder, and mark the session ended in the store.

        Args:
            stream: the stream.
            ended: the SESSION_ENDED payload already appended, if any.
            at: when the session ended (default: now).
        """
        log = stream.log
        if log is None or stream.end_noted:
            return
        if ended is None:
            if log.closed:
                return
            ended = SessionEnded(exit_status=None, interrupted=True)
            try:
                await log.place([Event(EventType.SESSION_ENDED, ended)], [False])
            except trio.ClosedResourceError:
                return
        stream.end_noted = True
        log.close()
        with trio.CancelScope(shield=True):
            await stream.recorder_done.wait()
            try:
                stream.info = await self.store.update_session(
                    stream.id,
                    status=status_for_end(ended),
                    ended=time.time() if at is None else at,
                    exit_status=ended.exit_status,
                )
            except (StoreError, LookupError) as exc:
                logger.warning("stream %s: could not mark it ended: %s", stream.id, exc)
            stream.end_stored = True
            self.forget_if_idle(stream)
            if stream.settings.retention is not None:
                self._expiry.set()

    async def delete_stream(self, stream_id: str) -> None:
        """End the stream (clients get the final event and are closed), then destroy it.

        Raises:
            NotFound.
        """
        stream = await self.get_stream(stream_id, revive=False)
        if stream.log is not None:
            await self.end_stream(stream)
            with trio.move_on_after(self.config.write_timeout):
                while stream.clients:
                    await stream.wait_advanced()
                    await trio.sleep(self.config.tick or 0.001)
        self.streams.pop(stream_id, None)
        self.activity.forget(stream_id)
        try:
            await self.store.destroy_session(stream_id)
        except LookupError:
            raise NotFound(f"unknown stream: {stream_id}") from None

    # -- clients -------------------------------------------------------------------------

    def attach(self, stream: Stream, kind: ClientKind, remote: str) -> Client:
        """A new client of ``stream``, within the connection limits.

        Raises:
            TooManyClients: over ``max_clients_per_stream`` or ``max_connections``.
            HubError: when shutting down.
        """
        self.check_capacity(stream)
        client_id = f"c{next(self._ids)}-{secrets.token_hex(3)}"
        client = Client(
            stream,
            client_id,
            kind,
            remote,
            queue_limit=stream.settings.client_queue,
            heartbeat=stream.settings.heartbeat,
            idle_timeout=self.config.idle_timeout if kind is ClientKind.WEBSOCKET else 0.0,
            write_timeout=self.config.write_timeout,
        )
        stream.clients[client_id] = client
        if isinstance(stream.log, FedLog):
            stream.log.demand()
        stream.activity.opened(client)
        stream.connections += 1
        self.connections += 1
        if self._no_clients.is_set():
            self._no_clients = trio.Event()
        self.clients_by_kind[kind.value] += 1
        return client

    def check_capacity(self, stream: Stream) -> None:
        """Raise TooManyClients (or HubError when shutting down) if ``stream`` may not
        take one more client."""
        self._check_open()
        self._check_not_failed(stream)
        if len(stream.clients) >= stream.settings.max_clients:
            raise TooManyClients(
                f"stream {stream.id} has {len(stream.clients)} clients, the most allowed"
            )
        if self.connections >= self.config.max_connections:
            raise TooManyClients(f"the hub has {self.connections} connections, the most allowed")

    def client_left(self, client: Client) -> None:
        """Account for a client that is gone."""
        self.connections -= 1
        if not self.connections:
            self._no_clients.set()
        self.clients_by_kind[client.kind.value] -= 1
        client.stream.activity.closed(client, time.time())
        if client.end_reason is EndReason.SLOW_CONSUMER:
            self.slow_consumers += 1
            client.stream.cut += 1

    def find_client(self, stream: Stream, client_id: str) -> Client:
        """Raises NotFound."""
        client = stream.clients.get(client_id)
        if client is None:
            raise NotFound(f"stream {stream.id} has no client {client_id!r}")
        return client

    async def wait_no_clients(self) -> None:
        """Return once no client is connected."""
        await self._no_clients.wait()

    async def shutdown(self) -> None:
        """Close every client (``shutdown``) and flush every recorder into the store."""
        self.shutting_down = True
        for waiting in self.publishers:
            waiting.cancel()
        for stream in list(self.streams.values()):
            for client in list(stream.clients.values()):
                client.write_timeout = min(client.write_timeout, SHUTDOWN_WRITE_TIMEOUT)
                client.end(EndReason.SHUTDOWN)
        for stream in list(self.streams.values()):
            if stream.log is not None and not stream.log.closed:
                stream.log.close()
        with trio.CancelScope(shield=True):
            for stream in list(self.streams.values()):
                await stream.recorder_done.wait()
