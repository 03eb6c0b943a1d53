"""Writing events straight to a connection: framed once, the same bytes for every client.

Fan-out cost is dominated by the layers each write goes through (Quart's wrappers, the
ASGI message, Hypercorn's stream, wsproto or h11 framing the bytes again for each
client) rather than by the bytes. A tick's events are the same for every client, and so
is their framing: a WebSocket text frame from the server is unmasked, and an HTTP/1.1
chunk is its length, the data and CRLF. So each encoding frames a tick's events once
(:meth:`~trio_stream.hub.encodings.Encoding.wire`, with :func:`ws_frame` or
:func:`http_chunk`), keeps the bytes in the tick's
:class:`~trio_stream.hub.items.Batch`, and each client's write hands those bytes to
Hypercorn's connection (its send lock, its cancellable write, its handling of a broken
connection), skipping everything above. The bytes themselves are made here: WebSocket
frames, HTTP chunks, and Server-Sent Events (:func:`sse_event`, the one formatter of
every SSE event the hub sends).

That is only done where the bytes on the wire are exactly what the layers would produce:
a WebSocket without permessage-deflate, an HTTP/1.1 response sent chunked. Anything else
(deflate, HTTP/1.0, HTTP/2, another server) takes the ordinary path, and so does every
connection when ``TSTREAM_HUB_FAST_PATH=off`` is set (the test suite runs the hub's tests
that way too) or when :func:`trio_stream.hub.patches.install` found a Hypercorn or Quart
it was not written for. :data:`paths_taken` counts which path each connection took, so a
fast path that silently stopped applying is seen.
"""

from __future__ import annotations

import contextvars
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias, final

import trio
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.protocol.ws_stream import WSStream
from wsproto.connection import ConnectionState

RawSend: TypeAlias = Callable[[bytes], Awaitable[None]]

FAST_PATH_ENV: Final = "TSTREAM_HUB_FAST_PATH"

# Connections served by each path: ("websocket" | "sse", "fast" | "layers").
paths_taken: Final[Counter[tuple[str, str]]] = Counter()


def _enabled_by_environment() -> bool:
    return os.environ.get(FAST_PATH_ENV, "on").strip().lower() not in ("0", "off", "no", "false")


# Turned off by the environment, or by :func:`trio_stream.hub.patches.install` when the
# installed Hypercorn or Quart is not one whose internals these writers were checked against.
fast_path: dict[str, bool] = {"enabled": _enabled_by_environment()}


def _counted(transport: str, writer: RawWriter | None) -> None:
    paths_taken[transport, "layers" if writer is None else "fast"] += 1


# The ASGI ``send`` of the HTTP request being handled, for SSE responses (the route's
# body generator has no other way to reach the connection).
http_send: Final[contextvars.ContextVar[Any]] = contextvars.ContextVar("http_send", default=None)


def ws_frame(payload: bytes) -> bytes:
    """One final, unmasked WebSocket text frame carrying ``payload`` (RFC 6455 5.2)."""
    size = len(payload)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 1 << 16:
        head = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return head + payload


def http_chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk carrying ``data`` (RFC 9112 7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_event(data: bytes, *, event: str | None = None, id: str | int | None = None) -> bytes:
    """One Server-Sent Event. ``data`` may hold newlines (each line becomes a ``data:``
    field); an event's JSON holds none, and is one field."""
    out = b"data: %s\n\n" % data.replace(b"\n", b"\ndata: ")
    if event is not None:
        out = b"event: %s\n%s" % (event.encode(), out)
    if id is not None:
        out = b"id: %s\n%s" % (str(id).encode(), out)
    return out


def sse_comment(text: str) -> bytes:
    """An SSE comment (ignored by clients; flushes headers and keeps proxies open)."""
    return b"".join(b": %s\n" % line.encode() for line in text.split("\n")) + b"\n"


def sse_retry(milliseconds: int) -> bytes:
    """Tell ``EventSource`` how long to wait before reconnecting."""
    return b"retry: %d\n\n" % milliseconds


@final
class RawWriter:
    """Whole frames written straight to one connection, the same bytes for every client.

    Awaited (``await writer(data)``), it writes ``data`` as Hypercorn's connection would:
    under its send lock, cancellable, a broken connection reported as Hypercorn expects.
    :meth:`write_now` writes without waiting at all, for the fan-out to hand a tick's
    frame to a client whose writer task sleeps (see :meth:`~trio_stream.hub.clients.
    Client.express`).
    """

    __slots__ = (
        "_lock",
        "_now",
        "_open",
        "_send",
        "_sock",
        "_socket_stream",
        "busy",
        "open",
        "rest",
    )

    def __init__(
        self,
        send: Callable[[Any], Awaitable[None]],
        lock: trio.Lock | None,
        socket_stream: trio.SocketStream | None,
        is_open: Callable[[], bool] | None = None,
        raw: socket.socket | None = None,
    ) -> None:
        self._send = send
        self._lock = lock
        self._socket_stream = socket_stream
        self._sock = socket_stream.socket if socket_stream is not None else None
        self._open = is_open
        # A connection taken over (see :mod:`~trio_stream.hub.detach`) gives the standard
        # library's socket under ``socket_stream``: its own non-blocking ``send`` is
        # called, and its owner keeps ``busy`` (a write of its own under way) and
        # ``open`` (data frames may still be written) instead of ``lock`` and
        # ``is_open``. The fan-out calls :meth:`write_now` for each of thousands of
        # clients per tick: a few attributes of this one object, rather than a lock's, a
        # trio socket's and a protocol's, are most of what it then reads.
        self._now = raw.send if raw is not None else None
        self.busy = False
        self.open = True
        # What takes the rest of a frame the fan-out began with :meth:`write_now` and
        # left to the connection's writer task (its client's ``take_unsent``): the
        # connection's own locked write sends it first, so that a control frame written
        # by another task (a pong, a close) never lands inside that frame.
        self.rest: Callable[[], bytes] | None = None

    def after_rest(self, data: bytes) -> bytes:
        """``data`` behind the rest of a frame the fan-out began (see :attr:`rest`): what
        the connection's own locked write sends."""
        rest = self.rest
        return data if rest is None else rest() + data

    def write_now(self, data: bytes) -> int:
        """Write what the socket takes of ``data`` at once: the count of bytes written, or
        -1 when nothing may be written now (a write under way, the connection closing,
        closed or broken), which the connection's own writer then sends or reports."""
        now = self._now
        if now is not None:
            if self.busy or not self.open:
                return -1
            # A closed socket raises OSError (EBADF): its descriptor is never reused.
            try:
                return now(data)  # type: ignore[no-any-return]
            except BlockingIOError:
                return 0
            except OSError:
                return -1
        if self._sock is None or self._lock is None or self._lock.locked():
            return -1
        if self._open is not None and not self._open():
            return -1
        fd = self._sock.fileno()
        if fd < 0:
            return -1
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            return -1

    async def __call__(self, data: bytes) -> None:
        if not self.open or (self._open is not None and not self._open()):
            # Once either side has sent its close frame, no data frame may follow (the
            # peer may be gone too).
            return
        if self._sock is None or self._lock is None:
            await self._send(RawData(data=data))
            return
        # With nobody writing, the bytes usually fit in the socket's buffer: write them
        # at once, without the lock's and the socket's checkpoints (each of which waits
        # for every other runnable task, a thousand clients' writers among them). What
        # does not fit follows through the connection's own locked, cancellable write;
        # nothing can run in between, so no other frame lands inside this one.
        sent = self.write_now(data)
        if sent == len(data):
            return
        if sent > 0:
            await self.send_rest(data[sent:])
            return
        # Full, or broken: the connection's write reports a broken one as Hypercorn
        # expects.
        await self._send(RawData(data=data))

    async def send_rest(self, rest: bytes) -> None:
        """Send the rest of a frame whose start :meth:`write_now` wrote.

        Part of the frame is on the wire. Cancelled before the rest follows (the lock's
        checkpoint comes before the connection's own cancellable write), the byte stream
        is unusable: the connection is dropped, so that no other frame lands inside this
        one.
        """
        try:
            await self._send(RawData(data=rest))
        except trio.Cancelled:
            if self._socket_stream is not None:
                await trio.aclose_forcefully(self._socket_stream)
            raise


def h11_connection(stream: Any) -> tuple[H11Protocol, Any] | None:
    """Hypercorn's HTTP/1.1 protocol serving ``stream`` (a ``WSStream`` or an
    ``HTTPStream``) and the server connection under it (a trio ``TCPServer``, or
    whatever sends for the protocol), or None when not served over HTTP/1.1."""
    protocol = getattr(stream.send, "__self__", None)
    if not isinstance(protocol, H11Protocol):
        return None
    return protocol, getattr(protocol.send, "__self__", None)


def plain_socket_of(server: Any) -> trio.SocketStream | None:
    """The socket of a Hypercorn connection with a send lock and a plain (not TLS)
    socket, or None."""
    socket_stream = getattr(server, "stream", None)
    if not isinstance(getattr(server, "send_lock", None), trio.Lock):
        return None
    return socket_stream if isinstance(socket_stream, trio.SocketStream) else None


def websocket_stream(websocket: Any) -> WSStream | None:
    """Hypercorn's stream serving Quart's ``websocket``, or None (another server)."""
    # Quart keeps the ASGI send as the first argument of a partial.
    args = getattr(getattr(websocket, "_send", None), "args", ())
    stream = getattr(args[0], "__self__", None) if args else None
    return stream if isinstance(stream, WSStream) else None


def http_stream() -> HTTPStream | None:
    """Hypercorn's stream serving the HTTP request being handled, or None."""
    stream = getattr(http_send.get(), "__self__", None)
    return stream if isinstance(stream, HTTPStream) else None


def _connection_send(stream: Any, is_open: Callable[[], bool] | None = None) -> RawWriter | None:
    found = h11_connection(stream)
    if found is None:
        return None
    protocol, server = found
    socket_stream = plain_socket_of(server)
    if socket_stream is None:
        return RawWriter(protocol.send, None, None, is_open)
    writer = RawWriter(protocol.send, server.send_lock, socket_stream, is_open)
    # The connection's locked write (patches._protocol_send) sends its rest first.
    server._tstream_writer = writer
    return writer


def websocket_raw_send(websocket: Any, deflate: bool) -> RawWriter | None:
    """A writer of whole frames for Quart's ``websocket``, or None
    when its frames must go through wsproto (``deflate`` may be negotiated, or it is not
    served by Hypercorn over HTTP/1.1)."""
    writer = _websocket_raw_send(websocket, deflate)
    _counted("websocket", writer)
    return writer


def _websocket_raw_send(websocket: Any, deflate: bool) -> RawWriter | None:
    if deflate or not fast_path["enabled"]:
        return None
    stream = websocket_stream(websocket)
    if stream is None:
        return None

    def is_open() -> bool:
        # These bytes bypass wsproto, so its state is checked here.
        return not stream.closed and stream.connection.state is ConnectionState.OPEN

    return _connection_send(stream, is_open)


def sse_raw_send(http_version: str, method: str) -> RawWriter | None:
    """A writer of whole chunks for the SSE response being sent, or None when the body
    is not sent chunked over Hypercorn's HTTP/1.1 (or not at all: ``HEAD``)."""
    writer = None
    if http_version == "1.1" and method == "GET" and fast_path["enabled"]:
        stream = http_stream()
        if stream is not None:
            writer = _connection_send(stream)
    _counted("sse", writer)
    return writer


def remember_http_send(app: Any) -> None:
    """Wrap ``app`` (a Quart app) so that each HTTP request's handler can find its
    ASGI ``send``."""
    inner = app.asgi_app

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            http_send.set(send)
        await inner(scope, receive, send)

    app.asgi_app = asgi_app  # type: ignore[method-assign]
