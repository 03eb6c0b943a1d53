"""Four adjustments to Hypercorn that the hub needs.

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
  as Hypercorn expects).

All four are installed once per process by :func:`install`; the settings come from
:data:`deflate_settings`, a context variable that :func:`trio_stream.hub.server.serve_hub`
sets for the connections it serves (trio tasks inherit it from the task that starts them).
"""

from __future__ import annotations

import contextvars
from typing import Any, Final

import attrs
import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol import ws_stream
from hypercorn.trio.tcp_server import TCPServer
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits


@attrs.frozen
class DeflateSettings:
    """Whether permessage-deflate is offered, and from what size messages are compressed."""

    enabled: bool = True
    threshold: int = 1024


deflate_settings: Final[contextvars.ContextVar[DeflateSettings | None]] = contextvars.ContextVar(
    "deflate_settings", default=None
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


_original_protocol_send: Final = TCPServer.protocol_send


async def _protocol_send(self: TCPServer, event: Event) -> None:
    """Hypercorn's ``TCPServer.protocol_send``, with a cancellable write."""
    if not isinstance(event, RawData):
        await _original_protocol_send(self, event)
        return
    async with self.send_lock:
        try:
            await self.stream.send_all(event.data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())
        except trio.Cancelled:
            await trio.aclose_forcefully(self.stream)
            raise


_original_close: Final = TCPServer._close


async def _close(self: TCPServer) -> None:
    """Hypercorn's ``TCPServer._close``, never concurrent with a write."""
    lock = self.send_lock
    if lock.locked():
        # Waiting for the write could take up to the write timeout (a peer that stopped
        # reading); the connection is going anyway.
        await self.stream.aclose()
        return
    lock.acquire_nowait()
    try:
        await _original_close(self)
    finally:
        lock.release()


def install() -> None:
    """Install the adjustments (idempotent)."""
    ws_stream.PerMessageDeflate = ThresholdDeflate  # type: ignore[misc]
    ws_stream.WSStream._handle_events = _handle_events  # type: ignore[method-assign]
    TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]
    TCPServer._close = _close  # type: ignore[method-assign]
