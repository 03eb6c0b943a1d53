"""One connected client of a stream, whatever its transport.

A :class:`Client` holds what a WebSocket or SSE connection owes its peer: control frames
(acknowledgements, pongs, errors), events queued by the stream's fan-out, history pages
while it catches up, heartbeats, and finally why it is closed. A transport asks
:meth:`Client.next_items` for everything due in one go and frames it: one WebSocket
message per item, or one SSE write for all of them. The client wakes once per tick, not
once per event.

A client falls behind when its transport cannot write fast enough: its queue grows, and
past ``client_queue`` events it is cut (:attr:`EndReason.SLOW_CONSUMER`) without slowing
the stream or other clients. It is told the last offset it was sent, so it can resume.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final, TypeAlias, final

import attrs
import trio

from ..events import Event
from .protocol import (
    EventFilter,
    Ping,
    Pong,
    Replay,
    ReplayOptions,
    SetFilter,
    Subscribe,
    Unsubscribe,
    error_frame,
    filter_set_frame,
    pong_frame,
    unsubscribed_frame,
)

if TYPE_CHECKING:
    from .streams import Stream

MAX_COMMANDS: Final = 64
PAGE: Final = 1000


class ClientKind(enum.StrEnum):
    """A client's transport."""

    WEBSOCKET = "websocket"
    SSE = "sse"


class EndReason(enum.StrEnum):
    """Why the hub closes a client; the value is the wire ``code``."""

    STREAM_ENDED = "stream_ended"
    SHUTDOWN = "shutdown"
    SLOW_CONSUMER = "slow_consumer"
    DISCONNECTED = "disconnected"
    IDLE_TIMEOUT = "idle_timeout"


END_MESSAGES: Final = {
    EndReason.STREAM_ENDED: "the stream ended",
    EndReason.SHUTDOWN: "the hub is shutting down",
    EndReason.SLOW_CONSUMER: "the client could not keep up; resume from lastOffset",
    EndReason.DISCONNECTED: "disconnected by an operator",
    EndReason.IDLE_TIMEOUT: "no message from the client since the last heartbeat",
}


@final
@attrs.frozen
class Frame:
    """An event and its JSON bytes, encoded once for every client."""

    event: Event
    raw: bytes

    @property
    def offset(self) -> int:
        """The event's offset."""
        return self.event.offset


@final
@attrs.frozen
class Control:
    """A protocol frame (acknowledgement, pong, error) for the WebSocket transport."""

    data: bytes


@final
@attrs.frozen
class Subscribed:
    """A subscription started after ``from_offset``; ``recovered`` is False if history
    the client asked for is gone (it gets what remains)."""

    from_offset: int
    last_offset: int
    recovered: bool


@final
@attrs.frozen
class Deliver:
    """Events for one frame. ``position`` is the client's cursor once it is written."""

    frames: list[Frame]
    position: int
    replay: bool = False
    done: bool = False


@final
@attrs.frozen
class Heartbeat:
    """A heartbeat due now."""

    clients: int
    time: float


@final
@attrs.frozen
class Closing:
    """The last item: why the client is closed and the last offset it was sent."""

    reason: EndReason
    last_offset: int

    @property
    def message(self) -> str:
        """Why, for people."""
        return END_MESSAGES[self.reason]


Item: TypeAlias = Control | Subscribed | Deliver | Heartbeat | Closing


@attrs.define
class _ReplayJob:
    options: ReplayOptions
    filters: EventFilter
    remaining: int | None
    cursor: int | None = None
    started: bool = False


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
        self.filters = EventFilter()
        self.subscribed = False
        # Offsets up to ``queued`` are either pending or sent; ``position`` is the cursor
        # of what was written.
        self.queued = -1
        self.position = -1
        self.catching_up: int | None = None
        self.recovered: bool | None = None
        self.pending: list[Frame] = []
        self.control: list[Item] = []
        self.commands: deque[Any] = deque()
        self.replays: deque[_ReplayJob] = deque()
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

    # -- called by the stream's fan-out and the broker (synchronous) --------------------

    def offer(self, frames: list[Frame], upto: int) -> None:
        """Queue the frames this client wants, up to offset ``upto``."""
        if self.end_reason is not None:
            return
        flt = self.filters
        if flt.empty:
            fresh = (
                frames
                if frames[0].offset > self.queued
                else [f for f in frames if f.offset > self.queued]
            )
            self.pending.extend(fresh)
        else:
            self.pending.extend(
                f for f in frames if f.offset > self.queued and flt.matches(f.event, f.raw)
            )
        self.queued = max(self.queued, upto)
        if len(self.pending) > self.queue_limit:
            self.end(EndReason.SLOW_CONSUMER)
            return
        self._wake.set()

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
        if isinstance(message, Pong):
            return
        if isinstance(message, Ping):
            self.control.append(Control(pong_frame(message.id)))
        elif len(self.commands) >= MAX_COMMANDS:
            self.control.append(
                Control(error_frame("rate_limited", "too many requests waiting; slow down"))
            )
        else:
            self.commands.append(message)
        self._wake.set()

    def push_error(self, code: str, message: str) -> None:
        """Queue an error frame answering a bad message; the connection stays up."""
        self._heard()
        self.control.append(Control(error_frame(code, message)))
        self._wake.set()

    def _heard(self) -> None:
        # Any message, even a bad one, shows the peer is alive.
        self.messages_received += 1
        self.heartbeat_sent = None

    def request_replay(
        self, options: ReplayOptions, filters: EventFilter, limit: int | None
    ) -> None:
        """Queue a one-off history replay (``replay`` frames)."""
        self.replays.append(_ReplayJob(options, filters, limit))
        self._wake.set()

    # -- called by the transport --------------------------------------------------------

    def delivered(self, item: Item, size: int) -> None:
        """The transport wrote ``item`` (``size`` bytes)."""
        self.frames_sent += 1
        self.bytes_sent += size
        if isinstance(item, Deliver):
            self.events_sent += len(item.frames)
            if not item.replay:
                self.position = max(self.position, item.position)

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
                items.extend(await self._run_command(self.commands.popleft()))
            if self.catching_up is not None:
                items.extend(await self._catch_up())
            elif self.replays:
                items.extend(await self._replay_page())
            if self.pending:
                frames, self.pending = self.pending, []
                items.append(Deliver(frames, self.queued))
            elif self.subscribed and self.catching_up is None and self.queued > self.position:
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
                and (self.catching_up is None)
            ):
                return self._closing(items)
            if items:
                return items
            self._wake = trio.Event()
            if self.pending or self.control or self.commands or self.end_reason is not None:
                continue
            with trio.move_on_at(self._deadline()):
                await self._wake.wait()

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
            return [Control(unsubscribed_frame())]
        if isinstance(message, SetFilter):
            self.filters = message.filters
            return [Control(filter_set_frame(message.filters))]
        if isinstance(message, Replay):
            self.request_replay(message.replay, message.filters, message.limit)
            return []
        raise TypeError(f"unexpected command {message!r}")

    async def subscribe(self, options: ReplayOptions | None, filters: EventFilter) -> list[Item]:
        """Start (or restart) the subscription; the answer is a :class:`Subscribed` item.

        History is sent from the resolved start (store, then memory) before live events,
        with no gap and no duplicate.
        """
        self.stream.unregister(self)
        self.pending = []
        self.filters = filters
        start, recovered = await self.stream.resolve_start(options)
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
            return [Deliver(live, self.queued)]
        frames, cursor = await self.stream.read_page(cursor, self.filters, PAGE)
        if self.catching_up is None:
            return []
        self.catching_up = cursor
        if not frames:
            return []
        return [Deliver(frames, cursor)]

    async def _replay_page(self) -> list[Item]:
        job = self.replays[0]
        if not job.started:
            job.started = True
            job.cursor, _ = await self.stream.resolve_start(job.options)
        assert job.cursor is not None
        size = PAGE if job.remaining is None else min(PAGE, job.remaining)
        frames, cursor, finished = await self.stream.read_history(job.cursor, job.filters, size)
        job.cursor = cursor
        if job.remaining is not None:
            job.remaining -= len(frames)
            finished = finished or job.remaining <= 0
        if finished:
            self.replays.popleft()
        return [Deliver(frames, cursor, replay=True, done=finished)]

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/streams/{id}/clients`` shows of this client."""
        return {
            "id": self.id,
            "type": self.kind.value,
            "remote": self.remote,
            "connectedAt": self.connected_at,
            "subscribed": self.subscribed,
            "lastOffset": self.position,
            "pending": len(self.pending),
            "eventsSent": self.events_sent,
            "framesSent": self.frames_sent,
            "bytesSent": self.bytes_sent,
            "messagesReceived": self.messages_received,
            "filters": self.filters.to_json(),
        }
