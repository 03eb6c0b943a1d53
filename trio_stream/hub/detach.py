"""Idle subscribers served below Hypercorn and Quart.

A subscriber's connection comes in like any request: Hypercorn parses its head, the app
checks its token, origin and limits, accepts the WebSocket (or sends the SSE response's
head), and the route writes its first answer and the history it asked for. From then on
the connection needs two things only: its client's frames written to the socket (most of
them by the stream's fan-out itself, see :meth:`~trio_stream.hub.clients.Client.express`)
and the peer's few messages, or its hang-up, read. Left in Hypercorn and Quart, an idle
subscriber keeps their objects for as long as it stays: Hypercorn's connection and
application tasks, its protocol objects, h11's, Quart's request or WebSocket and its
headers, the handler's suspended frames. So once its first answer is out, the hub takes
the connection over:

1. Hypercorn's reading task stops between two reads and ends without closing the socket
   (:func:`take_over`, with :func:`trio_stream.hub.patches._read_data`);
2. a WebSocket's messages that Hypercorn already handed to the app are delivered to the
   client first, in order (:func:`trio_stream.hub.asgi.hand_over_messages`);
3. whatever the app still sends on that connection is ignored, and its handler returns,
   which frees everything above;
4. the connection goes on in the hub's nursery, in a context of its own: the route's
   writer loop in one task, and a task that reads (wsproto's connection and Hypercorn's
   message buffer carried over for a WebSocket, so a frame half received is not lost).

Connections served by Hypercorn over HTTP/1.1 are taken over: every subscriber's
WebSocket (one that negotiated permessage-deflate still has each message framed and
compressed by wsproto, as before), and an SSE response sent chunked (not HTTP/1.0, not
``HEAD``). Over HTTP/2, or with another server, a connection stays where it is.
:data:`taken_over` counts them.
"""

from __future__ import annotations

import contextvars
import logging
import math
import socket as stdlib_socket
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, final

import h11
import trio
from hypercorn.events import RawData
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.protocol.ws_stream import FrameTooLargeError, WebsocketBuffer, WSStream
from hypercorn.trio.tcp_server import TCPServer
from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Event, Message, Ping, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from .asgi import hand_over_messages
from .wire import (
    RawWriter,
    fast_path,
    h11_connection,
    http_chunk,
    http_stream,
    plain_socket_of,
    websocket_stream,
)

if TYPE_CHECKING:
    from .clients import Client

logger = logging.getLogger("trio_stream.hub")

MAX_RECV: Final = 1 << 16
# Seconds a peer has to answer the hub's close frame before its socket is closed.
CLOSE_WAIT: Final = 2.0
# Seconds Hypercorn's reading task may take to stop before the takeover is called off.
TAKEOVER_WAIT: Final = 1.0
# The last chunk of a response sent chunked (RFC 9112 7.1).
LAST_CHUNK: Final = b"0\r\n\r\n"

# Connections taken over, by transport ("websocket", "sse").
taken_over: Final[Counter[str]] = Counter()


async def _ignored(_event: Any) -> None:
    """A Hypercorn stream's ``send`` once the hub has its connection."""


def _server_of(stream: WSStream | HTTPStream) -> TCPServer | None:
    """The Hypercorn connection serving ``stream`` over HTTP/1.1 and a plain socket."""
    found = h11_connection(stream)
    if found is None or not isinstance(found[1], TCPServer):
        return None
    return found[1] if plain_socket_of(found[1]) is not None else None


async def take_over(server: TCPServer) -> stdlib_socket.socket | None:
    """Stop Hypercorn reading ``server``'s connection and take its socket: None when the
    connection ended first (Hypercorn then closes it as usual).

    Hypercorn's reading task stops between two reads: every byte it read was handed to
    the protocol, every later byte is left in the socket for the new reader. The socket
    returned is a duplicate: the one Hypercorn was given is closed when its connection
    task ends (by trio's ``serve_listeners``), which then sends nothing. If the reading
    task has not stopped within :data:`TAKEOVER_WAIT`, the takeover is called off; if
    this is cancelled while waiting, too (or, when the reading task has already stopped,
    the socket nobody reads any more is closed).
    """
    if not server._tstream_reading:  # type: ignore[attr-defined]
        return None
    stopped = trio.Event()
    server._tstream_takeover = stopped  # type: ignore[attr-defined]
    reading = server._tstream_read  # type: ignore[attr-defined]
    if reading is not None:
        reading.cancel()
    try:
        with trio.move_on_after(TAKEOVER_WAIT):
            await stopped.wait()
    except BaseException:
        if server._tstream_parked:  # type: ignore[attr-defined]
            await trio.aclose_forcefully(server.stream)
        else:
            server._tstream_takeover = None  # type: ignore[attr-defined]
        raise
    if not server._tstream_parked:  # type: ignore[attr-defined]
        # Ended, or still busy with what it read (say, a request pipelined behind this
        # one, which h11 holds until the response is done): it goes on as before.
        server._tstream_takeover = None  # type: ignore[attr-defined]
        return None
    # Hypercorn's connection task now ends, and trio closes its socket: the hub goes on
    # with a duplicate of it, so the connection stays open (nothing is sent at close).
    # The duplicate is the standard library's socket, whose own send the fan-out calls.
    sock = server.stream.socket
    return stdlib_socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)


async def _take_over_stream(stream: WSStream | HTTPStream) -> stdlib_socket.socket | None:
    """:func:`take_over` the connection serving ``stream``, if Hypercorn serves it over
    HTTP/1.1 and a plain socket."""
    server = _server_of(stream)
    return None if server is None else await take_over(server)


class _Detached:
    """A connection taken over: its socket and a writer of whole frames to it.

    Args:
        raw: the connection's socket (non-blocking from here on).
    """

    __slots__ = ("lock", "socket", "writer")

    def __init__(self, raw: stdlib_socket.socket) -> None:
        self.socket = trio.SocketStream(trio.socket.from_stdlib_socket(raw))
        self.lock = trio.Lock()
        # Its ``busy`` is kept by :meth:`write`, its ``open`` by the WebSocket's state.
        self.writer = RawWriter(self._send_raw, self.lock, self.socket, None, raw)

    async def _send_raw(self, event: RawData) -> None:
        await self.write(event.data)

    async def write(self, data: bytes) -> None:
        """Write ``data`` whole, after any write under way. Cancelled before it is all
        written, the connection is dropped: a frame cut short leaves the byte stream
        unusable.

        Raises:
            trio.BrokenResourceError: the peer is gone.
            trio.ClosedResourceError: the connection was closed.
        """
        async with self.lock:
            # While part of ``data`` may be on the wire, the fan-out writes nothing.
            self.writer.busy = True
            try:
                # A frame the fan-out could only begin is finished first: a pong or a
                # close of the reader must not land inside it.
                await self.socket.send_all(self.writer.after_rest(data))
            except trio.Cancelled:
                await trio.aclose_forcefully(self.socket)
                raise
            finally:
                self.writer.busy = False

    async def aclose(self) -> None:
        """Close the socket at once."""
        await trio.aclose_forcefully(self.socket)


@final
class DetachedWebSocket(_Detached):
    """A subscriber's WebSocket taken over from Hypercorn, in the open state.

    Args:
        raw: the connection's socket.
        connection: wsproto's server side of it (what it holds of a frame half received
            included).
        buffer: Hypercorn's buffer of a message received in fragments, with its size limit.
    """

    __slots__ = ("buffer", "connection")

    def __init__(
        self, raw: stdlib_socket.socket, connection: Connection, buffer: WebsocketBuffer
    ) -> None:
        super().__init__(raw)
        self.connection = connection
        self.buffer = buffer

    def _state_changed(self) -> None:
        """Tell the writer whether data frames may still be sent (neither side has sent
        its close), after wsproto was given an event to send or bytes received (nothing
        else changes its state)."""
        self.writer.open = self.connection.state is ConnectionState.OPEN

    async def send_event(self, event: Event) -> None:
        """Send a control frame (a pong, a close) through wsproto, which follows the
        closing handshake; nothing when its state no longer allows it."""
        try:
            data = self.connection.send(event)
        except LocalProtocolError:
            return
        finally:
            self._state_changed()
        await self.write(data)

    async def send_message(self, message: bytes) -> None:
        """Send a text message through wsproto (compressed when permessage-deflate was
        negotiated and it is over the threshold); nothing once a close was sent."""
        await self.send_event(TextMessage(data=message.decode()))

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame (``reason`` cut to fit a control frame)."""
        await self.send_event(CloseConnection(code=code, reason=reason[:120]))

    async def read(self, take: Callable[[str | bytes], None]) -> None:
        """Hand each message of the peer to ``take``, answer its pings and its close, as
        Hypercorn does (with the hub's own answer to a frame that breaks the protocol:
        its close code, 1007 for invalid UTF-8), until the peer has closed or is gone.

        Raises:
            trio.BrokenResourceError: the connection broke.
            trio.ClosedResourceError: the connection was closed.
        """
        closing_at = math.inf
        while True:
            if closing_at == math.inf:
                # No cancel scope for each read of an idle connection: its objects would
                # be made again each time the client speaks (a ping after each heartbeat
                # of thousands of clients), and the collector walks what they leave.
                data = await self.socket.receive_some(MAX_RECV)
            else:
                # After a close of ours the peer has CLOSE_WAIT to answer it.
                with trio.move_on_at(closing_at) as waiting:
                    data = await self.socket.receive_some(MAX_RECV)
                if waiting.cancelled_caught:
                    return
            self.connection.receive_data(data or None)
            self._state_changed()
            for event in self.connection.events():
                # A close received is a change of state, made as it is read.
                self._state_changed()
                if isinstance(event, Message):
                    if self.connection.state is not ConnectionState.OPEN:
                        continue
                    try:
                        self.buffer.extend(event)
                    except FrameTooLargeError:
                        self.buffer.clear()
                        await self.close(CloseReason.MESSAGE_TOO_BIG, "")
                        closing_at = trio.current_time() + CLOSE_WAIT
                        continue
                    if event.message_finished:
                        message = self.buffer.to_message()
                        self.buffer.clear()
                        text = message["text"]
                        take(message["bytes"] if text is None else text)
                elif isinstance(event, Ping):
                    await self.send_event(event.response())
                elif isinstance(event, CloseConnection):
                    if self.connection.state is ConnectionState.REMOTE_CLOSING:
                        await self.send_event(event.response())
                    elif self.connection.state is ConnectionState.OPEN:
                        await self.close(event.code, event.reason or "")
                    return
            if not data:
                return


@final
class DetachedResponse(_Detached):
    """An SSE response taken over from Hypercorn, its head sent, its body sent chunked."""

    __slots__ = ()

    async def finish(self, data: bytes) -> None:
        """Write ``data``'s chunk (if any) and the last chunk, which ends the response."""
        chunk = http_chunk(data) if data else b""
        await self.write(chunk + LAST_CHUNK)

    async def until_hangup(self) -> None:
        """Wait for the peer to close its side; whatever it sends meanwhile (it has no
        reason to) is read and dropped."""
        try:
            while await self.socket.receive_some(MAX_RECV):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def detach_websocket(websocket: Any) -> DetachedWebSocket | None:
    """Take Quart's ``websocket`` (accepted, served by Hypercorn over HTTP/1.1) over from
    Hypercorn and Quart; None when it cannot be (it is then served as before). Called
    from the handler, which must then return without using ``websocket`` again."""
    if not fast_path["enabled"]:
        return None
    stream = websocket_stream(websocket)
    if stream is None or stream.closed or stream.app_put is None:
        return None
    if stream.connection.state is not ConnectionState.OPEN:
        return None
    raw = await _take_over_stream(stream)
    if raw is None:
        return None
    try:
        await hand_over_messages(stream.app_put)
    except BaseException:
        raw.close()
        raise
    # From here Hypercorn ignores what the app sends (Quart's close, the end of the app).
    stream.closed = True
    taken_over["websocket"] += 1
    return DetachedWebSocket(raw, stream.connection, stream.buffer)


async def detach_response() -> DetachedResponse | None:
    """Take the SSE response being sent (its head sent, its body chunked over HTTP/1.1)
    over from Hypercorn; None when it cannot be. Called from the response's body, which
    must then end without sending anything more."""
    stream = http_stream()
    if stream is None or stream.closed:
        return None
    raw = await _take_over_stream(stream)
    if raw is None:
        return None
    # The end of the body Quart sends next, and the end of the app, go nowhere.
    stream.closed = True
    stream.send = _ignored  # type: ignore[method-assign]
    taken_over["sse"] += 1
    return DetachedResponse(raw)


def pipelined() -> bool:
    """Whether the client of the HTTP/1.1 request being answered has already sent bytes
    behind it (a request pipelined), which h11 holds until the answer is done."""
    stream = http_stream()
    found = None if stream is None else h11_connection(stream)
    if found is None:
        return False
    connection = found[0].connection
    return isinstance(connection, h11.Connection) and bool(connection.trailing_data[0])


def adopt(nursery: trio.Nursery, serve: Callable[[], Awaitable[None]]) -> bool:
    """Run ``serve`` (a connection taken over) in ``nursery``, in an empty context: one
    copied from the handler would keep its request and its framework objects alive.
    False when the nursery takes no more tasks (the hub is stopping): the caller then
    closes the connection."""
    try:
        contextvars.Context().run(nursery.start_soon, serve)
    except RuntimeError:
        return False
    return True


def failed(kind: str, client: Client) -> str:
    """Log the error a connection taken over raised (in an ``except`` block), which goes
    no further: one connection's failure must not stop the hub's nursery. Returns the
    reason it ended."""
    logger.exception("%s %s of %s failed", kind, client.id, client.stream.id)
    return "failed"


async def finish(kind: str, client: Client, detached: _Detached, reason: str) -> None:
    """The end of a connection taken over: its client leaves the stream, its socket is
    closed."""
    client.stream.detach(client)
    await detached.aclose()
    logger.info("%s %s left %s: %s", kind, client.id, client.stream.id, reason)


def guard_writes(client: Client, scope: trio.CancelScope) -> None:
    """Make ``scope`` the one :meth:`Client.end` cuts short after ``write_timeout``, for a
    connection taken over; a client ended while it was handed over is given its
    ``write_timeout`` from now."""
    client.abort_scope = scope
    if client.end_reason is not None:
        scope.deadline = min(scope.deadline, trio.current_time() + client.write_timeout)
