"""How a connection's items become bytes: one :class:`Encoding` per connection.

A client's transport asks its :class:`~trio_stream.hub.clients.Client` for items
(:mod:`~trio_stream.hub.items`) and its encoding for their bytes:
:meth:`Encoding.messages` gives an item's payloads (WebSocket messages, or SSE events),
:meth:`Encoding.wire` the bytes of a delivery framed for the connection, written
straight to it on the fast path (:mod:`~trio_stream.hub.wire`).

The encodings:

* :data:`NATIVE` — tstream's WebSocket messages (:mod:`~trio_stream.hub.protocol`):
  a tick's events in one ``event`` message;
* :data:`NATIVE_SSE` — tstream's SSE events (:mod:`~trio_stream.hub.sse`);
* :data:`DESIGN` and :data:`DESIGN_SSE` — the Executor Streamer design's shapes
  (:mod:`~trio_stream.hub.design`), asked for with ``?protocol=executor-streamer``;
* :data:`COLUMNS` — tstream's WebSocket messages with lines as columns, asked for with
  ``?protocol=tstream-columns`` (tstream's own clients do).

A connection's encoding is chosen once, from its URL (:func:`choose`). A tick's events
are encoded once per encoding, however many clients receive them: what an encoding
makes of a live :class:`~trio_stream.hub.items.Batch` is kept in the batch and shared
by every client of that encoding.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import ClassVar, Final, final

import orjson

from . import design, items
from .clients import PAGE
from .items import Batch, ClientKind, Deliver, EndReason, Item
from .protocol import (
    ProtocolError,
    connection_ack_frame,
    end_frame,
    error_frame,
    events_frame,
    filter_set_frame,
    heartbeat_frame,
    pong_frame,
    runs_frame,
    subscribed_frame,
    unsubscribed_frame,
)
from .wire import http_chunk, sse_event, ws_frame

NATIVE_PROTOCOL: Final = "tstream"


class Encoding(abc.ABC):
    """How items become bytes for one kind of connection.

    Attributes:
        protocol: the name a client asks for it by (``?protocol=``), shown in listings.
        transport: the connections it serves.
        history_page: events a client catching up is sent at once, at most.
    """

    protocol: ClassVar[str]
    transport: ClassVar[ClientKind]
    history_page: ClassVar[int] = PAGE

    def messages(self, stream_id: str, item: Item) -> list[bytes]:
        """``item``'s payloads: WebSocket text messages, or SSE events (none when this
        encoding says nothing of it)."""
        if isinstance(item, Deliver):
            shared = item.shared
            if shared is None:
                return self.events(stream_id, item)
            found: list[bytes] = shared.cached(
                (self, "messages"), lambda: self.events(stream_id, item)
            )
            return found
        return self.control(stream_id, item)

    def written(self, stream_id: str, item: Item) -> bytes:
        """``item`` as the bytes of one write to the connection: a tick's events framed
        once for every client (:meth:`wire`), any other item framed for this client."""
        if isinstance(item, Deliver):
            return self.wire(stream_id, item)
        return self.frame(self.control(stream_id, item))

    def wire(self, stream_id: str, item: Deliver) -> bytes:
        """``item``'s events framed for the connection, for one write (shared by every
        client of this encoding when the item is one tick's batch alone)."""
        shared = item.shared
        if shared is None:
            return self.frame(self.events(stream_id, item))
        # Kept under the encoding itself, where :meth:`Batch.wire_frame` finds it.
        framed: bytes = shared.cached(self, lambda: self.frame(self.messages(stream_id, item)))
        return framed

    @abc.abstractmethod
    def events(self, stream_id: str, item: Deliver) -> list[bytes]:
        """The payloads of a delivery."""

    @abc.abstractmethod
    def control(self, stream_id: str, item: Item) -> list[bytes]:
        """The payloads of any other item."""

    @abc.abstractmethod
    def frame(self, payloads: list[bytes]) -> bytes:
        """Payloads as the bytes written to the connection (nothing for none)."""


# The events of one WebSocket message, at most (unless one part alone is larger): a reader
# that fell behind gets the ticks it missed in several messages, not one that outgrows
# what clients take (1 MiB is the default of common WebSocket libraries).
MESSAGE_PARTS_BYTES: Final = 512 * 1024


def split_parts(parts: list[bytes]) -> list[tuple[list[bytes], bool]]:
    """``parts`` (serialized events or runs) in groups of at most
    :data:`MESSAGE_PARTS_BYTES` each, every group with whether it is the last."""
    groups: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for part in parts:
        if current and size + len(part) > MESSAGE_PARTS_BYTES:
            groups.append(current)
            current, size = [], 0
        current.append(part)
        size += len(part)
    groups.append(current)
    return [(group, index == len(groups) - 1) for index, group in enumerate(groups)]


class WebSocketEncoding(Encoding):
    """An encoding whose payloads are WebSocket text messages."""

    transport = ClientKind.WEBSOCKET

    def frame(self, payloads: list[bytes]) -> bytes:
        return b"".join([ws_frame(m) for m in payloads])


class SSEEncoding(Encoding):
    """An encoding whose payloads are SSE events, written together as one HTTP chunk."""

    transport = ClientKind.SSE

    def frame(self, payloads: list[bytes]) -> bytes:
        data = b"".join(payloads)
        # An empty chunk would end the response: nothing is written then.
        return http_chunk(data) if data else b""


@final
class NativeWebSocket(WebSocketEncoding):
    """tstream's messages: a tick's events in one ``event`` message."""

    protocol = NATIVE_PROTOCOL

    def events(self, stream_id: str, item: Deliver) -> list[bytes]:
        groups = split_parts([b.json() for b in item.batches])
        return [
            events_frame(stream_id, group, replay=item.replay, done=item.done and last)
            for group, last in groups
        ]

    def control(self, stream_id: str, item: Item) -> list[bytes]:
        return [native_message(stream_id, item)]


def native_message(stream_id: str, item: Item) -> bytes:
    """tstream's WebSocket message for an item other than events."""
    if isinstance(item, items.ConnectionAck):
        return connection_ack_frame(
            client_id=item.client_id,
            stream_id=item.stream_id,
            status=item.status,
            last_offset=item.last_offset,
            epoch=item.epoch,
            recovered=item.recovered,
            heartbeat=item.heartbeat,
        )
    if isinstance(item, items.Subscribed):
        return subscribed_frame(
            stream_id=stream_id,
            from_offset=item.from_offset,
            last_offset=item.last_offset,
            recovered=item.recovered,
        )
    if isinstance(item, items.Unsubscribed):
        return unsubscribed_frame()
    if isinstance(item, items.FilterSet):
        return filter_set_frame(item.filters)
    if isinstance(item, items.Pong):
        return pong_frame(item.id, item.time)
    if isinstance(item, items.Refusal):
        return error_frame(item.code, item.message)
    if isinstance(item, items.Heartbeat):
        return heartbeat_frame(item.clients, item.time)
    if isinstance(item, items.Closing):
        if item.reason is EndReason.STREAM_ENDED:
            return end_frame(stream_id, item.last_offset)
        return error_frame(item.reason.value, item.message, lastOffset=item.last_offset)
    raise TypeError(f"not a message: {item!r}")


def _design_events(batch: Batch) -> list[bytes]:
    """The design's ``StreamEvent`` of each event of ``batch``, made once per batch for
    both of the design's encodings."""
    found: list[bytes] = batch.cached(
        _design_events, lambda: design.stream_events([f.raw for f in batch.frames])
    )
    return found


@final
class DesignWebSocket(WebSocketEncoding):
    """The Executor Streamer design's ``ServerMessage``: one ``event`` per event (a
    tick's messages still go out in one socket write), the other messages reshaped."""

    protocol = design.PROTOCOL

    def events(self, stream_id: str, item: Deliver) -> list[bytes]:
        if item.replay:
            events = design.stream_events([f.raw for f in item.frames])
            return design.event_messages(events, replay=True)
        return [m for b in item.batches for m in design.event_messages(_design_events(b))]

    def control(self, stream_id: str, item: Item) -> list[bytes]:
        if isinstance(item, items.Closing) and item.reason is EndReason.STREAM_ENDED:
            # The close that follows says it.
            return []
        message = design.ws_message(native_message(stream_id, item))
        return [] if message is None else [message]


@final
class NativeSSE(SSEEncoding):
    """tstream's SSE events: ``stream_event`` (``id`` carrying each offset), ``replay``,
    ``heartbeat``, ``notice`` of history that is gone, ``end`` and ``error``."""

    protocol = NATIVE_PROTOCOL

    def events(self, stream_id: str, item: Deliver) -> list[bytes]:
        if not item.replay:
            return [b.cached(NativeSSE, lambda b=b: self._stream_events(b)) for b in item.batches]
        out = [sse_event(f.raw, event="replay") for f in item.frames]
        if item.done:
            out.append(sse_event(b'{"done":true}', event="replay_done"))
        return out

    @staticmethod
    def _stream_events(batch: Batch) -> bytes:
        return b"".join([sse_event(f.raw, event="stream_event", id=f.offset) for f in batch.frames])

    def control(self, stream_id: str, item: Item) -> list[bytes]:
        if isinstance(item, items.Heartbeat):
            data = orjson.dumps({"time": item.time, "clients": item.clients})
            return [sse_event(data, event="heartbeat")]
        if isinstance(item, items.Subscribed) and not item.recovered:
            notice = {
                "code": "history_lost",
                "message": "history you asked for is gone; sending what remains",
                "fromOffset": item.from_offset,
                "lastOffset": item.last_offset,
            }
            return [sse_event(orjson.dumps(notice), event="notice")]
        if isinstance(item, items.Closing):
            body = {
                "code": item.reason.value,
                "message": item.message,
                "lastOffset": item.last_offset,
            }
            kind = "end" if item.reason is EndReason.STREAM_ENDED else "error"
            return [sse_event(orjson.dumps(body), event=kind)]
        return []


@final
class DesignSSE(SSEEncoding):
    """The design's SSE events: ``stream_event`` carrying a ``StreamEvent``, ``heartbeat``
    ``{timestamp, active_clients}``, and every close an ``error`` ``{code, message}``
    (the end of the stream too, as ``STREAM_ENDED``)."""

    protocol = design.PROTOCOL

    def events(self, stream_id: str, item: Deliver) -> list[bytes]:
        if item.replay:
            # Replayed events carry no id: they must not move ``Last-Event-ID``.
            events = design.stream_events([f.raw for f in item.frames])
            return [sse_event(e, event="stream_event") for e in events]
        return [b.cached(DesignSSE, lambda b=b: self._stream_events(b)) for b in item.batches]

    @staticmethod
    def _stream_events(batch: Batch) -> bytes:
        events = _design_events(batch)
        return b"".join(
            [
                sse_event(e, event="stream_event", id=f.offset)
                for f, e in zip(batch.frames, events, strict=True)
            ]
        )

    def control(self, stream_id: str, item: Item) -> list[bytes]:
        if isinstance(item, items.Heartbeat):
            data = {"timestamp": design.iso_time(item.time), "active_clients": item.clients}
            return [sse_event(orjson.dumps(data), event="heartbeat")]
        if isinstance(item, items.Closing):
            body = design.error_body(item.reason.value, item.message, lastOffset=item.last_offset)
            return [sse_event(orjson.dumps(body), event="error")]
        return []


COLUMNS_PROTOCOL: Final = "tstream-columns"
COLUMNS_PAGE: Final = 10_000


@final
class ColumnsWebSocket(WebSocketEncoding):
    """tstream's messages with lines as columns (``?protocol=tstream-columns``): an
    ``event`` or ``replay`` message carries ``runs`` instead of ``events``, each either a
    list of events as ``events`` holds them or the columns of a batch of lines, written
    from the columns they are held in (the log's, a store chunk's) without an event or
    a JSON object each. See :mod:`~trio_stream.hub.protocol`."""

    protocol = COLUMNS_PROTOCOL
    history_page = COLUMNS_PAGE

    def events(self, stream_id: str, item: Deliver) -> list[bytes]:
        runs = [run for b in item.batches for run in b.cached(ColumnsWebSocket, b.column_runs)]
        return [
            runs_frame(stream_id, group, replay=item.replay, done=item.done and last)
            for group, last in split_parts(runs)
        ]

    def control(self, stream_id: str, item: Item) -> list[bytes]:
        return [native_message(stream_id, item)]


NATIVE: Final = NativeWebSocket()
NATIVE_SSE: Final = NativeSSE()
DESIGN: Final = DesignWebSocket()
DESIGN_SSE: Final = DesignSSE()
COLUMNS: Final = ColumnsWebSocket()
_CHOICES: Final = {
    (ClientKind.WEBSOCKET, COLUMNS_PROTOCOL): COLUMNS,
    (ClientKind.WEBSOCKET, NATIVE_PROTOCOL): NATIVE,
    (ClientKind.SSE, NATIVE_PROTOCOL): NATIVE_SSE,
    (ClientKind.WEBSOCKET, design.PROTOCOL): DESIGN,
    (ClientKind.SSE, design.PROTOCOL): DESIGN_SSE,
}


def choose(transport: ClientKind, args: Mapping[str, str]) -> Encoding:
    """The encoding a connection's query asks for (``protocol``: ``tstream``, the
    default, ``executor-streamer``, or on a WebSocket ``tstream-columns``).

    Raises:
        ProtocolError: ``bad_request`` for another protocol.
    """
    name = args.get("protocol")
    found = _CHOICES.get((transport, NATIVE_PROTOCOL if name is None else name))
    if found is None:
        assert name is not None
        offered = " or ".join(p for t, p in _CHOICES if t is transport)
        raise ProtocolError(
            "bad_request", f"protocol: use {offered} on {transport.value}, not {name[:64]!r}"
        )
    return found
