"""Seven adjustments to Hypercorn that the hub needs.

* **permessage-deflate with a threshold.** Hypercorn accepts permessage-deflate from every
  client that offers it and wsproto then compresses every message. Compressing a small
  frame costs CPU per client and saves nothing, so :class:`ThresholdDeflate` sends
  messages under the threshold uncompressed (RFC 7692 lets a sender choose per message)
  and declines the extension altogether when compression is off.
* **Close code 1007.** When wsproto finds invalid UTF-8 in a text message it reports a
  close with code 1007, but Hypercorn then drops the TCP connection without sending that
  close frame. :func:`_handle_events` sends it first, so the client learns why.
* **Writes that can be abandoned.** Hypercorn shields every socket write from
  cancellation, so a client that stops reading blocks its connection (and the hub's
  shutdown) forever. :func:`_protocol_send` lets a write be cancelled and then drops the
  connection, since a frame cut short leaves the byte stream unusable. That is how a
  slow consumer that never drains is dropped after ``write_timeout``.
* **Closing without clashing with a write.** Hypercorn closes a connection (``send_eof``,
  then ``aclose``) without its send lock, from whichever task saw the end: the reader
  answering a peer's close frame, say, while the handler is sending its own close or a
  last frame. A write that starts during ``send_eof`` raised ``trio.BusyResourceError``
  in the handler. :func:`_close` takes the send lock for ``send_eof``, or, when a write
  holds it, closes the socket under that write (which then ends as a closed connection,
  as Hypercorn expects). It also finishes when its task is being cancelled, so that a
  connection whose answer went out before the request's body arrived is closed rather
  than left open and deaf.
* **A bound on connections waiting for a request head.** Hypercorn's idle timer runs while
  a connection has no request under way (from its start, and after each answer) and
  closes it after ``keep_alive_timeout``: a request head sent slowly, byte by byte, does
  not restart it. But nothing bounds how many connections wait at once.
  :func:`_idle_timeout` counts them in a :class:`PendingConnections`, which closes the one
  that has waited longest when there are too many, so that half-sent requests cannot
  crowd out the clients that send theirs at once.

* **Frames sent before the handshake's answer.** Hypercorn answers them 400 but closes
  the stream only after that answer is written; an accept from the app in between sent a
  101 behind it, and h11's error ended the whole server. :func:`_ws_handle` closes the
  stream first and tells the app that the connection is gone.
* **A connection the hub can take over.** :func:`_read_data` reads as Hypercorn does, but
  stops at a message boundary, leaving the socket open, when
  :func:`trio_stream.hub.detach.take_over` asks; :func:`_close` and :func:`_idle_timeout`
  then leave that socket alone. That is how an idle subscriber's connection leaves
  Hypercorn and Quart for the hub's own, far smaller, handling.

All seven are installed once per process by :func:`install`; the settings come from
:data:`deflate_settings` and :data:`pending_connections`, context variables that
:func:`trio_stream.hub.server.serve_hub` sets for the connections it serves (trio tasks
inherit them from the task that starts them).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.metadata
import logging
import math
import re
from collections.abc import Iterator
from typing import Any, Final, final

import attrs
import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import Body, Data
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from . import wire

logger = logging.getLogger("trio_stream.hub")
# What install() found: None before its first call, else the unchecked releases.
_checked: list[str] | None = None


@attrs.frozen
class DeflateSettings:
    """Whether permessage-deflate is offered, and from what size messages are compressed."""

    enabled: bool = True
    threshold: int = 1024


deflate_settings: Final[contextvars.ContextVar[DeflateSettings | None]] = contextvars.ContextVar(
    "deflate_settings", default=None
)


@final
class PendingConnections:
    """Connections waiting for a request head, at most ``limit`` of them.

    Args:
        limit: waiting connections kept; a new one beyond it closes the oldest.

    Attributes:
        evicted: connections closed to make room.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Insertion-ordered: the first key is the connection that has waited longest.
        self._waiting: dict[trio.CancelScope, None] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._waiting)

    @contextlib.contextmanager
    def waiting(self, timeout: float) -> Iterator[None]:
        """Wait for a request head: the block is cancelled after ``timeout`` seconds or
        when ``limit`` newer connections are waiting too."""
        scope = trio.CancelScope(deadline=trio.current_time() + timeout)
        self._waiting[scope] = None
        while len(self._waiting) > self.limit:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.cancel()
            self.evicted += 1
        try:
            with scope:
                yield
        finally:
            self._waiting.pop(scope, None)


pending_connections: Final[contextvars.ContextVar[PendingConnections | None]] = (
    contextvars.ContextVar("pending_connections", default=None)
)


class ThresholdDeflate(PerMessageDeflate):
    """permessage-deflate that leaves small messages uncompressed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = deflate_settings.get() or DeflateSettings()

    def accept(self, offer: str) -> bool | str | None:
        """Accept the client's offer unless compression is off."""
        if not self.settings.enabled:
            return None
        return super().accept(offer)

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        """Compress a message unless it is under the threshold."""
        if fin and opcode in (Opcode.TEXT, Opcode.BINARY) and len(data) < self.settings.threshold:
            return (rsv, data)
        return super().frame_outbound(proto, opcode, rsv, data, fin)


async def _handle_events(self: ws_stream.WSStream) -> None:
    """Hypercorn's ``WSStream._handle_events``, also sending the close of a parse failure.

    Hypercorn answers a close only in the REMOTE_CLOSING state; a parse failure (invalid
    UTF-8: 1007, a bad frame: 1002) leaves wsproto OPEN, so that close is sent here.
    """
    for event in self.connection.events():
        if isinstance(event, Message):
            try:
                self.buffer.extend(event)
            except ws_stream.FrameTooLargeError:
                await self._send_wsproto_event(CloseConnection(code=CloseReason.MESSAGE_TOO_BIG))
                break
            if event.message_finished:
                assert self.app_put is not None
                await self.app_put(self.buffer.to_message())
                self.buffer.clear()
        elif isinstance(event, Ping):
            await self._send_wsproto_event(event.response())
        elif isinstance(event, CloseConnection):
            if self.connection.state is ConnectionState.REMOTE_CLOSING:
                await self._send_wsproto_event(event.response())
            elif self.connection.state is ConnectionState.OPEN:
                reason = (event.reason or "")[:120]
                await self._send_wsproto_event(CloseConnection(code=event.code, reason=reason))
            await self.send(ws_stream.StreamClosed(stream_id=self.stream_id))


_original_ws_handle: Final = ws_stream.WSStream.handle


async def _ws_handle(self: ws_stream.WSStream, event: StreamEvent) -> None:
    """Hypercorn's ``WSStream.handle``, refusing data sent before the handshake's answer
    without a race with the app's accept.

    A client must wait for the answer to its handshake before it sends frames (RFC 6455
    4.1); Hypercorn answers one that does not with 400, but marks the stream closed only
    once that answer is written. An accept from the app meanwhile then sent a 101 behind
    the 400, which h11 refused with an error that ended the whole server; and the app was
    never told that the connection was gone. Here the stream is closed before the 400 is
    sent, and the app is told.
    """
    handshake = getattr(self, "handshake", None)
    if (
        isinstance(event, (Body, Data))
        and not self.closed
        and handshake is not None
        and not handshake.accepted
    ):
        self.closed = True
        await self._send_error_response(400)
        if self.app_put is not None:
            await self.app_put({"type": "websocket.disconnect", "code": CloseReason.PROTOCOL_ERROR})
        return
    await _original_ws_handle(self, event)


_original_protocol_send: Final = TCPServer.protocol_send


async def _protocol_send(self: TCPServer, event: Event) -> None:
    """Hypercorn's ``TCPServer.protocol_send``, with a cancellable write."""
    if not isinstance(event, RawData):
        await _original_protocol_send(self, event)
        return
    async with self.send_lock:
        data = event.data
        writer = self._tstream_writer  # type: ignore[attr-defined]
        if writer is not None:
            # The rest of a frame the fan-out began goes first (see RawWriter.rest).
            data = writer.after_rest(data)
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())
        except trio.Cancelled:
            await trio.aclose_forcefully(self.stream)
            raise


_original_close: Final = TCPServer._close


async def _close(self: TCPServer) -> None:
    """Hypercorn's ``TCPServer._close``, never concurrent with a write, and carried out
    even in a task being cancelled; nothing for a connection the hub took over."""
    if self._tstream_parked:  # type: ignore[attr-defined]
        return
    lock = self.send_lock
    if lock.locked():
        # Waiting for the write could take up to the write timeout (a peer that stopped
        # reading); the connection is going anyway.
        await self.stream.aclose()
        return
    lock.acquire_nowait()
    try:
        # An answer sent before the request's body arrived closes the connection from the
        # app's task, which Quart-Trio cancels at that moment: cut short there, the socket
        # stayed open and the next request on it was never read. Neither step blocks.
        with trio.CancelScope(shield=True):
            await _original_close(self)
    finally:
        lock.release()


_original_idle_timeout: Final = TCPServer._idle_timeout


async def _idle_timeout(self: TCPServer) -> None:
    """Hypercorn's ``TCPServer._idle_timeout``, counted in :data:`pending_connections`.

    The task is cancelled as soon as a request head is complete; otherwise the
    connection is closed once the wait ends (timeout, eviction or the hub stopping).
    """
    pending = pending_connections.get()
    if pending is None:
        await _original_idle_timeout(self)
        return
    with pending.waiting(self.config.keep_alive_timeout):
        await self.context.terminated.wait()
    if self._tstream_parked:  # type: ignore[attr-defined]
        return
    with trio.CancelScope(shield=True):
        await self._initiate_server_close()


async def _read_data(self: TCPServer) -> None:
    """Hypercorn's ``TCPServer._read_data``, which stops between two reads when the hub
    takes the connection over (:func:`trio_stream.hub.detach.take_over`).

    A read is cancelled only while it waits, before any byte is taken from the socket
    (trio's sockets), and what was read is always handed to the protocol whole: the
    connection leaves Hypercorn at a boundary, its bytes all delivered or all unread.
    """
    self._tstream_reading = True  # type: ignore[attr-defined]
    try:
        while True:
            if self._tstream_takeover is not None:  # type: ignore[attr-defined]
                self._tstream_parked = True  # type: ignore[attr-defined]
                return
            timeout = self.config.read_timeout
            deadline = trio.current_time() + timeout if timeout else math.inf
            with trio.CancelScope(deadline=deadline) as reading:
                self._tstream_read = reading  # type: ignore[attr-defined]
                try:
                    data = await self.stream.receive_some(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                finally:
                    self._tstream_read = None  # type: ignore[attr-defined]
            if reading.cancelled_caught:
                if self._tstream_takeover is not None:  # type: ignore[attr-defined]
                    continue
                # Hypercorn's read timeout (off on the hub).
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())
    finally:
        self._tstream_reading = False  # type: ignore[attr-defined]
        taking = self._tstream_takeover  # type: ignore[attr-defined]
        if taking is not None:
            taking.set()


# The releases whose internals these adjustments and the writers of
# :mod:`trio_stream.hub.wire` were checked against: (lowest, first one not checked).
CHECKED_RELEASES: Final = {
    "hypercorn": ((0, 17), (0, 19)),
    "quart": ((0, 19), (0, 24)),
    "h11": ((0, 14), (0, 17)),
    "wsproto": ((1, 2), (1, 4)),
}


def unchecked_releases() -> list[str]:
    """The installed packages among :data:`CHECKED_RELEASES` outside their checked range."""
    out = []
    for name, (lowest, beyond) in CHECKED_RELEASES.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
            continue
        release = tuple(int(part) for part in re.findall(r"\d+", installed)[:2])
        if not lowest <= release < beyond:
            out.append(f"{name} {installed}")
    return out


def install() -> None:
    """Install the adjustments (idempotent), unless the installed Hypercorn, Quart, h11 or
    wsproto is a release they were not checked against: then the hub serves through the
    libraries' own layers (slower fan-out, no deflate threshold), says so once, and
    :data:`trio_stream.hub.wire.fast_path` is off."""
    global _checked
    if _checked is None:
        _checked = unchecked_releases()
        if _checked:
            logger.warning(
                "serving without the fast path: not checked against %s", ", ".join(_checked)
            )
    if _checked:
        wire.fast_path["enabled"] = False
        return
    ws_stream.PerMessageDeflate = ThresholdDeflate  # type: ignore[misc]
    ws_stream.WSStream._handle_events = _handle_events  # type: ignore[method-assign]
    ws_stream.WSStream.handle = _ws_handle  # type: ignore[method-assign]
    TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]
    TCPServer._close = _close  # type: ignore[method-assign]
    TCPServer._idle_timeout = _idle_timeout  # type: ignore[method-assign]
    TCPServer._read_data = _read_data  # type: ignore[method-assign]
    # What _read_data and detach.take_over share: whether the connection is being read,
    # the read under way, the takeover asked for (an Event), and whether it took place.
    TCPServer._tstream_reading = False  # type: ignore[attr-defined]
    TCPServer._tstream_read = None  # type: ignore[attr-defined]
    TCPServer._tstream_takeover = None  # type: ignore[attr-defined]
    TCPServer._tstream_parked = False  # type: ignore[attr-defined]
    # The fan-out's writer of the connection, whose rest of a frame goes first.
    TCPServer._tstream_writer = None  # type: ignore[attr-defined]
