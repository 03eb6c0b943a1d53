"""Quart-Trio's ASGI connections, with fewer tasks per connection.

Quart-Trio runs each request and each WebSocket in a nursery of two tasks: one reads the
ASGI messages (the body, a WebSocket's messages, the disconnect), the other runs the
handler, while the server's task that called the app waits for both. On a hub with ten
thousand idle subscribers, each task (its coroutines' frames, its cancel status) costs
about 2.3 KiB. Here the handler runs in the task that called the app, beside the one task
that reads: the same nursery, the same cancellation (the reader cancels the handler when
the peer goes; the handler, once done, the reader), one task fewer.

A WebSocket's messages are handed by Quart-Trio's reading task to the handler through a
channel, which a subscriber's handler needs a task of its own to read while it writes.
:func:`take_messages` lets a handler have them instead delivered to a plain function, in
the reading task: the hub's subscriber connections then need no reading task of their own.
Measured with ``tracemalloc`` over 300 idle connections of each kind: 42.4 KiB per
WebSocket subscriber and 32.9 KiB per SSE one with Quart-Trio's classes, 36.6 and 30.7 KiB
with these.

The app uses them through Quart's own extension points, ``asgi_http_class`` and
``asgi_websocket_class`` (see :func:`trio_stream.hub.app.create_app`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart.signals import websocket_received
from quart_trio.asgi import TrioASGIHTTPConnection, TrioASGIWebsocketConnection

Receiver = Callable[[Any], None]


class HubHTTPConnection(TrioASGIHTTPConnection):
    """A request whose handler runs in the task that called the app."""

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self._create_request_from_scope(send)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.handle_messages, nursery, request, receive)
            await self.handle_request(nursery, request, send)


class HubWebsocketConnection(TrioASGIWebsocketConnection):
    """A WebSocket whose handler runs in the task that called the app, and whose
    messages may go to a function rather than through a channel (:func:`take_messages`)."""

    def __init__(self, app: Any, scope: Any) -> None:
        super().__init__(app, scope)
        self.receiver: Receiver | None = None
        # Set by hand_over_messages: the reading task has delivered every message.
        self.handed_over: trio.Event | None = None

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        websocket = self._create_websocket_from_scope(send)
        # The handler runs in this task: it finds its connection here.
        _current.set(self)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.handle_messages, nursery, receive)
            await self.handle_websocket(nursery, websocket, send)

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, receive: ASGIReceiveCallable
    ) -> None:
        # Quart-Trio's loop, but for where a message goes.
        while True:
            event = await receive()
            if event["type"] == "websocket.receive":
                message = event.get("bytes") or event["text"]
                await websocket_received.send_async(
                    message,
                    _sync_wrapper=self.app.ensure_async,  # type: ignore[arg-type]
                )
                receiver = self.receiver
                if receiver is not None:
                    receiver(message)
                else:
                    await self.send_channel.send(message)
            elif event["type"] == "websocket.disconnect":
                break
            elif event["type"] == HANDED_OVER and self.handed_over is not None:
                # Every message before this marker is delivered; the connection is the
                # hub's now (hub.detach), and the handler returns by itself.
                self.handed_over.set()
                return
        nursery.cancel_scope.cancel()


# The type of the marker that hand_over_messages puts behind the last message.
HANDED_OVER: Final = "tstream.handed_over"

# The WebSocket connection whose handler runs in the current task.
_current: contextvars.ContextVar[HubWebsocketConnection | None] = contextvars.ContextVar(
    "tstream_websocket_connection", default=None
)


def take_messages(receiver: Receiver | None) -> None:
    """Have the WebSocket whose handler calls this hand each message it receives to
    ``receiver``, called in the connection's reading task (it must not block); None gives
    them back to ``websocket.receive()``. Set it before the handshake is accepted, so that
    no message comes before it.

    Raises:
        RuntimeError: not called from the handler of a :class:`HubWebsocketConnection`
            (the hub's app always uses it, see :func:`trio_stream.hub.app.create_app`).
    """
    connection = _current.get()
    if connection is None:
        raise RuntimeError("not in the handler of a HubWebsocketConnection")
    connection.receiver = receiver


async def hand_over_messages(put: Callable[[Any], Awaitable[None]]) -> None:
    """Deliver the messages the server already handed to this WebSocket, then stop
    reading them: ``put`` (the server's end of the connection's ASGI queue, which the
    server no longer feeds) places a marker behind the last of them, and this returns
    once the connection's reading task has delivered each one and reached it.

    Raises:
        RuntimeError: not called from the handler of a :class:`HubWebsocketConnection`.
    """
    connection = _current.get()
    if connection is None:
        raise RuntimeError("not in the handler of a HubWebsocketConnection")
    done = connection.handed_over = trio.Event()
    await put({"type": HANDED_OVER})
    await done.wait()
