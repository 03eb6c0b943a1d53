"""One connected client of a stream, whatever its transport.

A :class:`Client` holds what a WebSocket or SSE connection owes its peer, as typed items
(:mod:`~trio_stream.hub.items`): answers (pongs, refusals, acknowledgements), events
queued by the stream's fan-out, history pages while it catches up, heartbeats, and
finally why it is closed. A transport asks :meth:`Client.next_items` for everything due
in one go, and its connection's encoding (:mod:`~trio_stream.hub.encodings`) turns the
items into bytes: one WebSocket write, or one SSE write, for all of them. The client
wakes once per tick, not once per event.

A client falls behind when its transport cannot write fast enough: its queue grows, and
past ``client_queue`` events it is cut (:attr:`EndReason.SLOW_CONSUMER`) without slowing
the stream or other clients. It is told the last offset it was sent, so it can resume.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import trio

from ..filters import EventFilter
from . import design
from .items import (
    Batch,
    ClientKind,
    Closing,
    Deliver,
    EndReason,
    FilterSet,
    Heartbeat,
    Item,
    Pong,
    Refusal,
    Subscribed,
    Unsubscribed,
)
from .params import ReplayOptions
from .protocol import (
    Ping,
    Replay,
    SetFilter,
    Subscribe,
    Unsubscribe,
)
from .protocol import Pong as ClientPong

if TYPE_CHECKING:
    from .encodings import Encoding
    from .streams import Stream
    from .wire import RawWriter

MAX_COMMANDS: Final = 64
# Frames the fan-out wrote itself (:meth:`Client.express`): "whole", "part" (the rest left
# to the writer task), "left" (nothing written: the writer task sends it).
express_writes: Final[Counter[str]] = Counter()
PAGE: Final = 1000


@attrs.define
class _ReplayJob:
    options: ReplayOptions
    filters: EventFilter
    remaining: int | None
    cursor: int | None = None
    started: bool = False
    # Matching events skipped before the first one sent (a HistoryFilter's ``offset``).
    skip: int = 0
    # The history of a subscription: it ends at the offset live events follow, and those
    # wait until it is sent.
    until: int | None = None


@final
class Client:
    """A subscriber of one stream.

    Args:
        stream: the stream.
        client_id: unique within the hub.
        kind: its transport.
        remote: its address, for listings and logs.
        queue_limit: queued events beyond which it is cut as a slow consumer.
        heartbeat: seconds between heartbeats.
        idle_timeout: seconds without a message after a heartbeat before it is closed
            (WebSocket only; 0 disables).
        write_timeout: seconds a cut client's transport may still write before its
            connection is dropped.
    """

    # A hub holds thousands of idle clients: slots, not a dict each (about 0.8 KiB).
    __slots__ = (
        "_wake",
        "abort_scope",
        "bytes_sent",
        "catching_up",
        "closed",
        "commands",
        "connected_at",
        "control",
        "end_reason",
        "events_sent",
        "express_encoding",
        "express_writer",
        "filters",
        "frames_sent",
        "heartbeat",
        "heartbeat_sent",
        "id",
        "idle_timeout",
        "kind",
        "last_heard",
        "messages_received",
        "next_heartbeat",
        "page",
        "parked",
        "pending",
        "pending_count",
        "position",
        "protocol",
        "queue_limit",
        "queued",
        "recovered",
        "remote",
        "replays",
        "stream",
        "subscribed",
        "unsent",
        "write_timeout",
    )

    def __init__(
        self,
        stream: Stream,
        client_id: str,
        kind: ClientKind,
        remote: str,
        *,
        queue_limit: int,
        heartbeat: float,
        idle_timeout: float = 0.0,
        write_timeout: float = 10.0,
    ) -> None:
        self.stream = stream
        self.id = client_id
        self.kind = kind
        self.remote = remote
        self.queue_limit = queue_limit
        self.heartbeat = heartbeat
        self.idle_timeout = idle_timeout
        self.connected_at = time.time()
        self.filters = stream.settings.filters.interned()
        # The encoding its transport chose (its ``protocol``): tstream's, or the
        # Executor Streamer design's.
        self.protocol = "tstream"
        # Events read from the store at once while it catches up.
        self.page = PAGE
        self.last_heard: float | None = None
        self.subscribed = False
        # Offsets up to ``queued`` are either pending or sent; ``position`` is the cursor
        # of what was written.
        self.queued = -1
        self.position = -1
        self.catching_up: int | None = None
        self.recovered: bool | None = None
        self.pending: list[Batch] = []
        self.pending_count = 0
        self.control: list[Item] = []
        # Lists, not deques: an empty deque holds a block of 64 slots (0.6 KiB), and
        # these hold a few items at most, mostly none.
        self.commands: list[Any] = []
        self.replays: list[_ReplayJob] = []
        self.end_reason: EndReason | None = None
        self.closed = False
        self.events_sent = 0
        self.frames_sent = 0
        self.bytes_sent = 0
        self.messages_received = 0
        self.abort_scope: trio.CancelScope | None = None
        self.write_timeout = write_timeout
        self.next_heartbeat = trio.current_time() + heartbeat
        self.heartbeat_sent: float | None = None
        self._wake = trio.Event()
        # Set by :meth:`express`; ``parked`` while its writer sleeps in :meth:`next_items`
        # with nothing to do, ``unsent`` the rest of a frame the fan-out began to write.
        self.express_writer: RawWriter | None = None
        self.express_encoding: Encoding | None = None
        self.parked = False
        self.unsent = b""

    def express(self, writer: RawWriter, encoding: Encoding) -> None:
        """Let the stream's fan-out write this client's live events itself.

        While the transport's writer task sleeps with nothing else to send, a tick's frame
        (the bytes every client of ``encoding`` shares) goes straight from
        :meth:`offer` to the connection with ``writer.write_now``, and the writer task is
        not woken at all: with thousands of clients, waking one task per client per tick
        is most of the fan-out's cost. Whatever cannot be written at once is left to the
        writer task as before (the whole frame, or :attr:`unsent`, the rest of it, which
        it sends before anything else).
        """
        self.express_writer = writer
        self.express_encoding = encoding
        writer.rest = self.take_unsent

    def take_unsent(self) -> bytes:
        """The rest of a frame the fan-out began to write (to be sent first)."""
        rest, self.unsent = self.unsent, b""
        return rest

    # -- called by the stream's fan-out and the broker (synchronous) --------------------

    def offer(self, batch: Batch) -> None:
        """Queue what this client wants of ``batch`` (a tick's events, shared by every
        client): no per-event work unless the batch overlaps what it already has, and
        nothing at all when it has every event of it (a fan-out round offers the clients
        it visited late what the others still lacked)."""
        queued = self.queued
        if batch.last <= queued or self.end_reason is not None:
            return
        fresh = batch if batch.first > queued else batch.after(queued)
        selected = fresh.select(self.filters) if fresh is not None else None
        if self.parked and not self.pending:
            # Nothing queued and the writer task asleep: the fan-out writes it itself.
            if self._express(selected, batch.last):
                return
            self._queue(selected, batch.last)
        else:
            self._queue(selected, batch.last)
            if self.parked and self._write_now():
                return
        self._wake.set()

    def _queue(self, selected: Batch | None, last: int) -> None:
        if selected is not None:
            self.pending.append(selected)
            self.pending_count += len(selected)
            if self.pending_count > self.queue_limit:
                self.end(EndReason.SLOW_CONSUMER)
                return
        self.queued = last

    def _direct(self) -> tuple[RawWriter, Encoding] | None:
        """The connection's direct writer and encoding, when the writer task has nothing
        to send before a tick's events (no rest of a frame, no answer, command or replay
        waiting, no catching up); None when it has, or there is no direct writer."""
        writer, encoding = self.express_writer, self.express_encoding
        if writer is None or encoding is None or self._held_back():
            return None
        return writer, encoding

    def _held_back(self) -> bool:
        """Whether the writer task has something to send before a tick's events."""
        return bool(
            self.unsent
            or self.control
            or self.commands
            or self.replays
            or self.catching_up is not None
        )

    def _write_direct(self, writer: RawWriter, frame: bytes) -> bool:
        """Write what the socket takes of ``frame`` at once; False when nothing could be
        (the writer task sends it), the rest of a frame cut short left in :attr:`unsent`."""
        written = writer.write_now(frame)
        if written < 0 or (written == 0 and frame):
            express_writes["left"] += 1
            return False
        if written < len(frame):
            express_writes["part"] += 1
            self.unsent = frame[written:]
        else:
            express_writes["whole"] += 1
        return True

    def _express(self, selected: Batch | None, last: int) -> bool:
        """Write a tick's shared frame from the fan-out, for a client with nothing queued
        whose writer task sleeps; whether it is done with (on the wire, the rest of it
        left in :attr:`unsent` with the writer woken, or nothing of the batch is for this
        client). When not, the writer task takes it.

        The common case of a fan-out to thousands of clients, kept to a few attribute
        reads and one ``write``: the frame is the one every client of the same encoding
        and filter shares, found in the batch's cache, and what was sent is added to the
        stream's tally, which the fan-out hands to the activity record once per step
        rather than with a clock reading per client.
        """
        # What _direct and _write_direct do, inline: this runs once per client per tick.
        writer, encoding = self.express_writer, self.express_encoding
        if writer is None or encoding is None or self._held_back():
            return False
        if selected is None:
            self.queued = last
            return True
        frame = selected.wire_frame(encoding, self.stream.id, last)
        size = len(frame)
        written = writer.write_now(frame)
        if written != size:
            if written <= 0:
                express_writes["left"] += 1
                return False
            express_writes["part"] += 1
            self.unsent = frame[written:]
            self._wake.set()
        else:
            express_writes["whole"] += 1
        self.queued = last
        events = selected.count
        self.frames_sent += 1
        self.bytes_sent += size
        self.events_sent += events
        if last > self.position:
            self.position = last
        stream = self.stream
        stream.tally_events += events
        stream.tally_bytes += size
        return True

    def _write_now(self) -> bool:
        """Write the pending events from the fan-out, if the writer task has nothing else
        to send before them; whether they are all on the wire (else it is woken)."""
        direct = self._direct()
        if direct is None or not self.pending or self.end_reason is not None:
            return False
        writer, encoding = direct
        item = Deliver(self.pending, self.queued)
        frame = encoding.wire(self.stream.id, item)
        if not self._write_direct(writer, frame):
            return False
        self.pending = []
        self.pending_count = 0
        self.delivered(item, len(frame))
        return not self.unsent

    def end(self, reason: EndReason) -> None:
        """Close this client for ``reason`` (the first reason wins).

        A client cut for any reason but the end of its stream gets no more events; the
        transport has ``write_timeout`` seconds to tell it before the connection is
        dropped.
        """
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self.stream.unregister(self)
        if reason is not EndReason.STREAM_ENDED:
            self.pending = []
            self.pending_count = 0
            self.catching_up = None
            self.replays.clear()
            self.commands.clear()
        if self.abort_scope is not None:
            self.abort_scope.deadline = min(
                self.abort_scope.deadline, trio.current_time() + self.write_timeout
            )
        self._wake.set()

    def push_command(self, message: Any) -> None:
        """Queue a parsed client message for the writer, or answer it at once."""
        self._heard()
        if isinstance(message, ClientPong):
            return
        if isinstance(message, Ping):
            self.control.append(Pong(message.id, time.time()))
        elif len(self.commands) >= MAX_COMMANDS:
            self.control.append(Refusal("rate_limited", "too many requests waiting; slow down"))
        else:
            self.commands.append(message)
        self._wake.set()

    def push_error(self, code: str, message: str) -> None:
        """Queue an error answering a bad message; the connection stays up."""
        self._heard()
        self.control.append(Refusal(code, message))
        self._wake.set()

    def _heard(self) -> None:
        # Any message, even a bad one, shows the peer is alive.
        self.messages_received += 1
        self.last_heard = time.time()
        self.heartbeat_sent = None

    def request_replay(
        self,
        options: ReplayOptions,
        filters: EventFilter,
        limit: int | None,
        *,
        until: int | None = None,
    ) -> None:
        """Queue a one-off history replay (``replay`` frames); the options' own filters
        (a ``HistoryFilter``) win over ``filters``, the smaller limit wins."""
        if options.limit is not None:
            limit = options.limit if limit is None else min(limit, options.limit)
        chosen = options.filters if options.filters is not None else filters
        self.replays.append(_ReplayJob(options, chosen, limit, skip=options.skip, until=until))
        self._wake.set()

    # -- called by the transport --------------------------------------------------------

    def delivered(self, item: Item, size: int) -> None:
        """The transport wrote ``item`` (``size`` bytes)."""
        if isinstance(item, Deliver):
            self._counted(item.count, size, -1 if item.replay else item.position)
        else:
            self._counted(0, size, -1)

    def _counted(self, events: int, size: int, position: int) -> None:
        """A write of ``events`` events in ``size`` bytes, live ones up to ``position``."""
        self._count_sent(events, size, position)
        self.stream.activity.sent(events, size, time.time())

    def _count_sent(self, events: int, size: int, position: int) -> None:
        """This client's own count of a write (see :meth:`_counted`)."""
        self.frames_sent += 1
        self.bytes_sent += size
        self.events_sent += events
        if position > self.position:
            self.position = position

    async def next_items(self) -> list[Item]:
        """Everything due now, waiting until something is.

        After a :class:`Closing` item, the transport closes the connection.
        """
        while True:
            if self.closed:
                raise trio.ClosedResourceError("client already closed")
            items: list[Item] = []
            if self.end_reason is not None and self.end_reason is not EndReason.STREAM_ENDED:
                items.extend(self.control)
                self.control = []
                return self._closing(items)
            items.extend(self.control)
            self.control = []
            while self.commands and self.end_reason is None:
                items.extend(await self._run_command(self.commands.pop(0)))
            if self.catching_up is not None:
                items.extend(await self._catch_up())
            elif self.replays:
                items.extend(await self._replay_page())
            # Live events wait while the history of the subscription is replayed.
            held = bool(self.replays) and self.replays[0].until is not None
            if self.pending and not held:
                batches, self.pending = self.pending, []
                self.pending_count = 0
                items.append(Deliver(batches, self.queued))
            elif (
                not self.pending
                and self.subscribed
                and self.catching_up is None
                and self.queued > self.position
            ):
                # Everything new was filtered out: the cursor still moves on.
                self.position = self.queued
            now = trio.current_time()
            if self._idle(now):
                self.end(EndReason.IDLE_TIMEOUT)
                return self._closing(items)
            if now >= self.next_heartbeat:
                items.append(Heartbeat(len(self.stream.clients), time.time()))
                self.next_heartbeat = now + self.heartbeat
                if self.heartbeat_sent is None:
                    self.heartbeat_sent = now
            if (
                self.end_reason is EndReason.STREAM_ENDED
                and not self.pending
                and self.catching_up is None
                and not held
            ):
                return self._closing(items)
            if items or self.unsent:
                return items
            self._wake = trio.Event()
            if (
                self.pending
                or self.replays
                or self.control
                or self.commands
                or self.end_reason is not None
            ):
                continue
            # Woken by new items, or by the alarm at the next heartbeat or idle limit.
            self.stream.broker.alarms.set(self, self._deadline())
            self.parked = True
            try:
                await self._wake.wait()
            finally:
                self.parked = False

    def _closing(self, items: list[Item]) -> list[Item]:
        assert self.end_reason is not None
        self.closed = True
        self.stream.detach(self)
        last = max(
            [self.position] + [i.position for i in items if isinstance(i, Deliver) and not i.replay]
        )
        items.append(Closing(self.end_reason, last))
        return items

    def _idle(self, now: float) -> bool:
        if self.idle_timeout <= 0 or self.heartbeat_sent is None:
            return False
        return now - self.heartbeat_sent >= self.idle_timeout

    def alarm(self) -> None:
        """Its deadline has come (see :class:`~trio_stream.hub.alarms.Alarms`)."""
        self._wake.set()

    def _deadline(self) -> float:
        deadline = self.next_heartbeat
        if self.idle_timeout > 0 and self.heartbeat_sent is not None:
            deadline = min(deadline, self.heartbeat_sent + self.idle_timeout)
        return deadline

    # -- commands -----------------------------------------------------------------------

    async def _run_command(self, message: Any) -> list[Item]:
        if isinstance(message, Subscribe):
            return await self.subscribe(message.replay, message.filters)
        if isinstance(message, Unsubscribe):
            self.stream.unregister(self)
            self.subscribed = False
            self.catching_up = None
            self.pending = []
            self.pending_count = 0
            return [Unsubscribed()]
        if isinstance(message, SetFilter):
            self.filters = message.filters.interned()
            return [FilterSet(message.filters)]
        if isinstance(message, Replay):
            self.request_replay(message.replay, message.filters, message.limit)
            return []
        raise TypeError(f"unexpected command {message!r}")

    async def subscribe(
        self, options: ReplayOptions | None, filters: EventFilter | None
    ) -> list[Item]:
        """Start (or restart) the subscription; the answer is a :class:`Subscribed` item.

        History is sent from the resolved start (store, then memory) before live events,
        with no gap and no duplicate. Options that choose events themselves (a
        ``HistoryFilter``) send that history as a replay, then live events from where
        it ends. ``filters`` None: the stream's default filters.
        """
        self.stream.unregister(self)
        self.pending = []
        self.pending_count = 0
        self.filters = (self.stream.settings.filters if filters is None else filters).interned()
        if options is not None and options.selects:
            start, recovered = await self.stream.resolve_start(None)
            self.request_replay(options, self.filters, None, until=start)
        else:
            start, recovered = await self.stream.resolve_start(options, self.filters)
        self.subscribed = True
        self.recovered = recovered
        self.position = self.queued = start
        self.catching_up = start
        return [Subscribed(start, self.stream.last_offset, recovered)]

    async def _catch_up(self) -> list[Item]:
        """One page of history, or the switch to live events once memory holds the rest."""
        assert self.catching_up is not None
        cursor = self.catching_up
        live = self.stream.register_from(self, cursor)
        if live is not None:
            self.catching_up = None
            if not live:
                return []
            return [Deliver([Batch(live)], self.queued)]
        frames, cursor = await self.stream.read_page(cursor, self.filters, self.page, exact=False)
        if self.catching_up is None:
            return []
        self.catching_up = cursor
        if not frames:
            return []
        return [Deliver([Batch(frames)], cursor)]

    async def _replay_page(self) -> list[Item]:
        job = self.replays[0]
        if not job.started:
            job.started = True
            job.cursor, _ = await self.stream.resolve_start(job.options, job.filters)
        assert job.cursor is not None
        size = PAGE if job.remaining is None else min(PAGE, job.remaining)
        frames, cursor, finished = await self.stream.read_history(
            job.cursor, job.filters, size + job.skip
        )
        if job.until is not None and cursor >= job.until:
            frames = [f for f in frames if f.offset <= job.until]
            cursor, finished = job.until, True
        if job.skip:
            skipped = min(job.skip, len(frames))
            frames = frames[skipped:]
            job.skip -= skipped
        job.cursor = cursor
        if job.remaining is not None:
            job.remaining -= len(frames)
            finished = finished or job.remaining <= 0
        if finished:
            self.replays.pop(0)
        return [Deliver([Batch(frames)] if frames else [], cursor, replay=True, done=finished)]

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/streams/{id}/clients`` shows of this client."""
        return {
            "id": self.id,
            "type": design.CLIENT_TYPES[self.kind.value],
            "transport": self.kind.value,
            "protocol": self.protocol,
            "isActive": not self.closed and self.end_reason is None,
            "remote": self.remote,
            "connectedAt": self.connected_at,
            "lastPing": self.last_heard,
            "subscribed": self.subscribed,
            "lastOffset": self.position,
            "pending": self.pending_count,
            "eventsSent": self.events_sent,
            "framesSent": self.frames_sent,
            "bytesSent": self.bytes_sent,
            "messagesReceived": self.messages_received,
            "filters": self.filters.to_json(),
        }
