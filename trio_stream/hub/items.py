"""What the hub owes one client, as typed items: a tick's events, answers, notices.

A :class:`~trio_stream.hub.clients.Client` hands its transport a list of items; the
connection's :class:`~trio_stream.hub.encodings.Encoding` turns each into bytes. Items say
what is sent, never how: the same :class:`Heartbeat` is a ``heartbeat`` message for
tstream's WebSocket clients, a ``pong`` for the Executor Streamer design's, an
``event: heartbeat`` for SSE.

Events travel in a :class:`Batch`, the events of one tick (or one page of history),
shared by every client that is sent them: what an encoding makes of a batch is kept in
the batch (:meth:`Batch.cached`), so each encoding serializes a tick once however many
clients receive it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias, final

import attrs
import orjson

from ..batches import EventRuns, OutputBatch
from ..store.chunks import lines_item
from .frames import Frame, LazyFrames, frames_of
from .protocol import EventFilter

if TYPE_CHECKING:
    from .encodings import Encoding


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
    INTERNAL = "internal"


END_MESSAGES: Final = {
    EndReason.STREAM_ENDED: "the stream ended",
    EndReason.SHUTDOWN: "the hub is shutting down",
    EndReason.SLOW_CONSUMER: "the client could not keep up; resume from lastOffset",
    EndReason.DISCONNECTED: "disconnected by an operator",
    EndReason.IDLE_TIMEOUT: "no message from the client since the last heartbeat",
    EndReason.INTERNAL: "the stream failed on the hub (logged there); resume from lastOffset",
}


# What :meth:`Batch.select` keeps for a filter that passes every frame.
_ALL: Final = object()


@final
class Batch:
    """Events fanned out together (one tick's events, or one page of history).

    Everything an encoding makes of them is computed once and shared by every client
    that is sent the same batch (:meth:`cached`), and so is the filtered batch for each
    distinct filter. So the work per client per tick does not grow with the events in
    the tick.

    Attributes:
        frames: the events' frames, in offset order (not empty).
        events: the same events as the runs they were read in (the log's, a store's),
            for encodings that write lines from their columns; None when the frames
            were chosen among others (filtered, cut).
    """

    __slots__ = (
        "__weakref__",
        "_cache",
        "_selected",
        "count",
        "events",
        "first",
        "frames",
        "last",
    )

    def __init__(self, frames: Sequence[Frame], events: EventRuns | None = None) -> None:
        self.frames = frames
        if events is None and isinstance(frames, LazyFrames):
            events = frames.events
        self.events = events
        #: The offsets of its first and last frames (read for every client of a tick).
        if events is not None:
            self.first: int = events.first_offset
            self.last: int = events.last_offset
        else:
            self.first = frames[0].offset
            self.last = frames[-1].offset
        # A filter that passes every frame maps to _ALL, not to the batch itself: a batch
        # that refers to itself is freed by the cycle collector only, which then walks
        # every tick's frames and events at once (tens of milliseconds, all clients
        # waiting).
        #: ``len(self)``, read for every client of a tick.
        self.count = len(frames)
        self._selected: dict[EventFilter, Batch | object | None] = {}
        self._cache: dict[Hashable, Any] = {}

    def __len__(self) -> int:
        return self.count

    def cached(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """What ``make`` returns, computed once per batch for each ``key``."""
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = make()
            return value

    def wire_frame(self, encoding: Encoding, stream_id: str, last: int) -> bytes:
        """This batch alone as the bytes of one write to a client of ``encoding`` (whose
        events up to ``last`` it carries): what :meth:`Encoding.wire` made of it once for
        all of them, read from the cache without a delivery built first."""
        try:
            frame: bytes = self._cache[encoding]
        except KeyError:
            frame = encoding.wire(stream_id, Deliver([self], last))
        return frame

    def select(self, flt: EventFilter) -> Batch | None:
        """The frames ``flt`` passes (None if none), computed once per distinct filter."""
        if flt.empty:
            return self
        try:
            found = self._selected[flt]
        except KeyError:
            kept = [f for f in self.frames if flt.matches(f.event, f.raw)]
            if len(kept) == len(self.frames):
                found = _ALL
            else:
                found = Batch(kept) if kept else None
            self._selected[flt] = found
        return self if found is _ALL else found  # type: ignore[return-value]

    def after(self, offset: int) -> Batch | None:
        """The frames after ``offset`` (self when that is all of them), made once per
        offset: the clients that have the same part of a batch share what follows it."""
        if self.first > offset:
            return self
        if offset >= self.last:
            return None
        return self.cached(("after", offset), lambda: self._after(offset))  # type: ignore[no-any-return]

    def _after(self, offset: int) -> Batch:
        rest = None if self.events is None else self.events.after(offset)
        if isinstance(self.frames, LazyFrames) and rest is not None:
            return Batch(LazyFrames(rest))
        return Batch([f for f in self.frames if f.offset > offset], rest)

    def column_runs(self) -> list[bytes]:
        """The events as the runs of a ``tstream-columns`` message: each batch of lines
        its columns (as a store chunk holds them), the other events lists of their JSON.
        Lines are written from their columns when the batch has them."""
        events = self.events
        if events is None:
            return [b"[%s]" % self.json()]
        out: list[bytes] = []
        held: list[bytes] = []
        for run in events.runs:
            if isinstance(run, OutputBatch):
                if held:
                    out.append(b"[%s]" % b",".join(held))
                    held = []
                out.append(orjson.dumps(lines_item(run)))
            else:
                held += [f.raw for f in frames_of(run)]
        if held:
            out.append(b"[%s]" % b",".join(held))
        return out

    def json(self) -> bytes:
        """The events' JSON joined by commas (what an ``events`` array splices in)."""
        joined: bytes = self.cached(Batch.json, lambda: b",".join([f.raw for f in self.frames]))
        return joined


# -- the items -------------------------------------------------------------------------


@final
@attrs.frozen
class ConnectionAck:
    """The first message of a WebSocket connection. ``recovered`` is None unless the
    connection asked to resume."""

    client_id: str
    stream_id: str
    status: str
    last_offset: int
    epoch: str
    recovered: bool | None
    heartbeat: float


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
class Unsubscribed:
    """The answer to ``unsubscribe``."""


@final
@attrs.frozen
class FilterSet:
    """The answer to ``filter``: the filters now in force."""

    filters: EventFilter


@final
@attrs.frozen
class Pong:
    """The answer to a client's ``ping`` (``id`` is the ping's), sent at ``time``."""

    id: Any
    time: float


@final
@attrs.frozen
class Refusal:
    """A client message the hub refuses (``code`` names why); the connection stays up."""

    code: str
    message: str


@final
@attrs.frozen
class Deliver:
    """Events for one frame. ``position`` is the client's cursor once it is written;
    ``replay`` marks history asked for apart from the subscription, ``done`` its last
    page."""

    batches: list[Batch]
    position: int
    replay: bool = False
    done: bool = False

    @property
    def frames(self) -> list[Frame]:
        """Every frame, in order."""
        if len(self.batches) == 1:
            return self.batches[0].frames
        return [f for b in self.batches for f in b.frames]

    @property
    def count(self) -> int:
        """How many events it carries."""
        batches = self.batches
        if len(batches) == 1:
            return len(batches[0])
        return sum([len(b) for b in batches])

    @property
    def shared(self) -> Batch | None:
        """The one live batch it carries, whose encoding every client of the tick
        shares; None for several batches or a replay."""
        if len(self.batches) == 1 and not self.replay:
            return self.batches[0]
        return None


@final
@attrs.frozen
class Heartbeat:
    """A heartbeat due now: the stream's clients, the time."""

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


Item: TypeAlias = (
    ConnectionAck
    | Subscribed
    | Unsubscribed
    | FilterSet
    | Pong
    | Refusal
    | Deliver
    | Heartbeat
    | Closing
)
