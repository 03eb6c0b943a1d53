"""The WebSocket transports: ``/api/streams/{id}/ws`` (subscribers) and
``/api/streams/{id}/publish`` (publishers).

The protocol itself (messages, frames, close codes) is described in
:mod:`trio_stream.hub.protocol`. Each connection runs two tasks: a reader that parses
client messages into commands (bad ones get an ``error`` frame and the connection stays
up) and a writer that sends whatever :meth:`Client.next_items` hands it, one message per
item. The Origin is checked before the handshake is accepted, so a page on another site
cannot open a WebSocket with the user's cookie.

``?protocol=executor-streamer`` asks for the Executor Streamer design's messages
(:mod:`trio_stream.hub.design`): one ``event`` message per event (a tick's messages
still go out in one socket write), and the other messages reshaped. The connection's
encoding is chosen once (:func:`~trio_stream.hub.encodings.choose`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
import trio
from quart import Blueprint, Response, websocket

from . import patches
from .asgi import take_messages
from .clients import Client
from .context import Hub, access, host_of, hub, remote_of
from .detach import (
    CLOSE_WAIT,
    DetachedWebSocket,
    adopt,
    detach_websocket,
    failed,
    finish,
    guard_writes,
)
from .encodings import COLUMNS_PROTOCOL, NATIVE_PROTOCOL, Encoding, choose
from .errors import HubError, NotFound, ProtocolError
from .ingest import publish, published
from .items import ClientKind, Closing, ConnectionAck, EndReason, Item
from .params import ReplayOptions, has_filters, parse_offset, query_epoch, query_filters
from .protocol import (
    CloseCode,
    Replay,
    Subscribe,
    error_frame,
    parse_client_message,
)
from .sse import check_replay
from .streams import Stream
from .wire import RawWriter, websocket_raw_send, ws_frame

logger = logging.getLogger("trio_stream.hub")
blueprint = Blueprint("websocket", __name__)

CLOSE_CODES = {
    EndReason.STREAM_ENDED: CloseCode.NORMAL,
    EndReason.SHUTDOWN: CloseCode.GOING_AWAY,
    EndReason.SLOW_CONSUMER: CloseCode.SLOW_CONSUMER,
    EndReason.DISCONNECTED: CloseCode.DISCONNECTED,
    EndReason.IDLE_TIMEOUT: CloseCode.IDLE_TIMEOUT,
    EndReason.INTERNAL: CloseCode.INTERNAL,
}


def _raw_sender(h: Hub, stream: Stream | None = None) -> RawWriter | None:
    """The writer of whole frames for this connection, unless its client may have
    negotiated permessage-deflate (then wsproto compresses each message)."""
    offered = websocket.headers.get("Sec-WebSocket-Extensions", "")
    compression = h.config.compression if stream is None else stream.settings.compression
    deflate = compression and "permessage-deflate" in offered.lower()
    return websocket_raw_send(websocket, deflate)


@blueprint.websocket("/api/streams/<stream_id>/ws")
@access("read", connection=True)
async def ws(stream_id: str) -> Response | None:
    """``/api/streams/{id}/ws``: a subscriber."""
    h = hub()
    args = websocket.args
    options: ReplayOptions | None = None
    after = args.get("after")
    epoch = query_epoch(args)
    if after is not None:
        options = ReplayOptions(from_offset=parse_offset(after, "after"), epoch=epoch)
    filters = query_filters(args) if has_filters(args) else None
    encoding = choose(ClientKind.WEBSOCKET, args)
    stream = await h.broker.get_stream(stream_id)
    check_replay(stream, options)
    client = h.broker.attach(stream, ClientKind.WEBSOCKET, remote_of(websocket.scope))
    client.protocol = encoding.protocol
    client.page = encoding.history_page
    reason: str | None = "disconnected by the client"
    # The client's messages are taken in the connection's reading task, as they come:
    # no task of this connection's own waits for them (see hub.asgi).
    take = partial(_take, h, client, host_of(websocket.scope))
    take_messages(take)
    try:
        if not stream.settings.compression:
            # Read when the handshake is accepted, in this task: no permessage-deflate.
            patches.deflate_settings.set(patches.DeflateSettings(enabled=False))
        await websocket.accept()
        logger.info("ws %s connected to %s from %s", client.id, stream.id, client.remote)
        with trio.CancelScope() as aborting:
            client.abort_scope = aborting
            reason = await _writer(h, client, options, filters, after is not None, encoding, take)
        if aborting.cancelled_caught and client.end_reason is not None:
            reason = f"{client.end_reason.value} (dropped: its writes were stuck)"
    finally:
        take_messages(None)
        if reason is not None:
            stream.detach(client)
            logger.info("ws %s left %s: %s", client.id, stream.id, reason)
        # else the hub took the connection over and serves it (_serve_detached).
    return None


def _take(h: Hub, client: Client, host: str, data: str | bytes) -> None:
    """Parse one message from the client into a command (or an error frame for it)."""
    wait = h.requests.take(host, trio.current_time())
    if wait:
        client.push_error("rate_limited", f"too many messages; retry in {wait:.1f}s")
        return
    if isinstance(data, bytes):
        client.push_error("invalid_message", "send JSON as text messages, not binary")
        return
    try:
        message = parse_client_message(data, stream_id=client.stream.id)
    except ProtocolError as exc:
        client.push_error(exc.code, exc.message)
        return
    replays = isinstance(message, Replay) or (
        isinstance(message, Subscribe) and message.replay is not None
    )
    if replays and not client.stream.settings.replay:
        client.push_error(
            "replay_disabled",
            f"stream {client.stream.id} does not replay history (enableReplay: false)",
        )
    else:
        client.push_command(message)


async def _writer(
    h: Hub,
    client: Client,
    options: ReplayOptions | None,
    filters: Any,
    subscribe: bool,
    encoding: Encoding,
    take: Callable[[str | bytes], None],
) -> str | None:
    """Serve the client until it is closed: why, or None when the hub took the
    connection over (:mod:`~trio_stream.hub.detach`) and serves it from now on."""
    stream = client.stream
    first: list[Item] = []
    recovered: bool | None = None
    if subscribe:
        first = await client.subscribe(options, filters)
        recovered = client.recovered
    ack = ConnectionAck(
        client_id=client.id,
        stream_id=stream.id,
        status=stream.status,
        last_offset=stream.last_offset,
        epoch=h.broker.store.epoch,
        recovered=recovered,
        heartbeat=client.heartbeat,
    )
    await _send(encoding, stream.id, ack)
    # Events go out as frames shared by every client of the tick, written straight to
    # the connection, and so do heartbeats, pongs and the other small messages (ten
    # thousand clients' heartbeats fall due together); the close goes through Quart.
    raw = _raw_sender(h, stream)
    detached = await detach_websocket(websocket)
    if detached is not None:
        # With permessage-deflate, wsproto still frames (and compresses) each message.
        whole_frames = raw is not None
        serve = partial(_serve_detached, client, encoding, first, detached, take, whole_frames)
        if adopt(h.broker.nursery, serve):
            return None
        await detached.aclose()
        return "hub shutting down"
    if raw is not None:
        client.express(raw, encoding)
    return await _deliver(
        client, encoding, raw, first, partial(_send, encoding, stream.id), websocket.close
    )


async def _deliver(
    client: Client,
    encoding: Encoding,
    raw: RawWriter | None,
    items: list[Item],
    send: Callable[[Item], Awaitable[int]],
    close: Callable[[int, str], Awaitable[None]],
) -> str:
    """Write ``items``, then whatever the client has next, until its :class:`Closing`:
    events and small messages as whole frames with ``raw`` (when there is one), the rest
    with ``send`` (which returns the bytes sent), then ``close``; returns why."""
    stream_id = client.stream.id
    while True:
        if client.unsent:
            await raw.send_rest(client.take_unsent())  # type: ignore[union-attr]
        for item in items:
            if raw is not None and not isinstance(item, Closing):
                frame = encoding.written(stream_id, item)
                if frame:
                    await raw(frame)
                client.delivered(item, len(frame))
                continue
            client.delivered(item, await send(item))
            if isinstance(item, Closing):
                await close(CLOSE_CODES[item.reason], item.reason.value)
                return item.reason.value
        items = await client.next_items()


async def _serve_detached(
    client: Client,
    encoding: Encoding,
    items: list[Item],
    detached: DetachedWebSocket,
    take: Callable[[str | bytes], None],
    whole_frames: bool,
) -> None:
    """A subscriber's WebSocket once the hub took it over: this task writes, a second
    one reads the client's messages; either ending ends the connection (after our close
    frame, the client has :data:`~trio_stream.hub.detach.CLOSE_WAIT` to answer it).
    With ``whole_frames``, events go out as the frames every client shares, written by
    the fan-out itself while this task sleeps; without (permessage-deflate), each message
    goes through wsproto."""
    stream = client.stream
    finished = hung_up = False

    async def read(connection: trio.CancelScope) -> None:
        nonlocal hung_up
        try:
            await detached.read(take)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        hung_up = True
        connection.cancel()

    raw = detached.writer if whole_frames else None
    reason = "disconnected by the client"
    try:
        if raw is not None:
            client.express(raw, encoding)
        async with trio.open_nursery() as nursery:
            guard_writes(client, nursery.cancel_scope)
            nursery.start_soon(read, nursery.cancel_scope)
            try:
                reason = await _deliver(
                    client,
                    encoding,
                    raw,
                    items,
                    partial(_send_detached, detached, encoding, stream.id, whole_frames),
                    detached.close,
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                nursery.cancel_scope.cancel()
            else:
                finished = True
                scope = nursery.cancel_scope
                scope.deadline = min(scope.deadline, trio.current_time() + CLOSE_WAIT)
        if nursery.cancel_scope.cancelled_caught and not (finished or hung_up):
            if client.end_reason is not None:
                reason = f"{client.end_reason.value} (dropped: its writes were stuck)"
    except Exception:
        reason = failed("ws", client)
    finally:
        await finish("ws", client, detached, reason)


async def _send_detached(
    detached: DetachedWebSocket, encoding: Encoding, stream_id: str, whole_frames: bool, item: Item
) -> int:
    """:func:`_send` for a connection the hub took over."""
    size = 0
    for message in encoding.messages(stream_id, item):
        if whole_frames:
            await detached.writer(ws_frame(message))
        else:
            await detached.send_message(message)
        size += len(message)
    return size


async def _send(encoding: Encoding, stream_id: str, item: Item) -> int:
    """Send ``item``'s messages; return their size. A function of its own so that the
    messages are not held while the client waits for its next items: orjson's bytes take
    4 KiB each, however short, and an idle connection would keep its last one."""
    size = 0
    for message in encoding.messages(stream_id, item):
        await websocket.send(message.decode())
        size += len(message)
    return size


@blueprint.websocket("/api/streams/<stream_id>/publish")
@access("publish", connection=True)
async def publish_ws(stream_id: str) -> Response | None:
    """Publishing over one WebSocket (``?create=1`` creates a missing stream).

    The first message is ``connection_ack`` (``streamId``, ``status``, ``lastOffset``,
    ``epoch``, and the limits ``maxMessageSize`` in bytes and ``maxBatch`` in events): a
    resuming publisher sends what follows ``lastOffset``. Then each message
    is what ``POST …/events`` takes (an event or a list), answered in order by an ``ack``
    (``accepted``, ``duplicates``, ``firstOffset``, ``lastOffset``) or an ``error`` frame
    (``offset_gap`` and ``stream_ended`` carry ``lastOffset``); the connection stays up
    after errors and is closed with 1000 once the stream ends.
    ``?protocol=tstream-columns`` also takes ``{"runs": […]}``, lines as columns (see
    :mod:`~trio_stream.hub.protocol`); the ``connection_ack`` then says so.
    """
    h = hub()
    try:
        stream = await h.broker.get_stream(stream_id, reopen=True)
    except NotFound:
        if websocket.args.get("create") not in ("1", "true"):
            raise
        stream = await h.broker.create_stream(stream_id)
    host = host_of(websocket.scope)
    protocol = websocket.args.get("protocol")
    if protocol not in (None, NATIVE_PROTOCOL, COLUMNS_PROTOCOL):
        raise ProtocolError(
            "bad_request",
            f"protocol: use {NATIVE_PROTOCOL} or {COLUMNS_PROTOCOL} to publish, "
            f"not {protocol[:64]!r}",
        )
    await websocket.accept()
    logger.info("publisher connected to %s from %s", stream.id, remote_of(websocket.scope))
    ack = {
        "type": "connection_ack",
        "streamId": stream.id,
        "status": stream.status,
        "lastOffset": stream.last_offset,
        "epoch": h.broker.store.epoch,
        "maxMessageSize": h.config.max_message_size,
        "maxBatch": h.config.max_batch,
    }
    if protocol == COLUMNS_PROTOCOL:
        # Said only to a publisher that asked: it sends runs only once it reads this.
        ack["protocol"] = COLUMNS_PROTOCOL
    await websocket.send(orjson.dumps(ack).decode())
    reason = "disconnected by the client"
    raw = _raw_sender(h)
    try:
        while not h.broker.shutting_down:
            # The hub's shutdown cuts the wait for the next message (never a publish
            # under way), so that Hypercorn need not wait out its grace period.
            with trio.CancelScope() as waiting:
                h.broker.publishers.add(waiting)
                try:
                    data = await websocket.receive()
                finally:
                    h.broker.publishers.discard(waiting)
            if waiting.cancelled_caught:
                break
            answer = await _publish_one(h, stream_id, host, data)
            if raw is not None:
                await raw(ws_frame(answer))
            else:
                await websocket.send(answer.decode())
            if not stream.accepting:
                break
        if h.broker.shutting_down:
            reason = "hub shutting down"
            await websocket.close(CloseCode.GOING_AWAY, "shutdown")
        else:
            reason = "stream ended"
            await websocket.close(CloseCode.NORMAL, "stream_ended")
        return None
    finally:
        logger.info("publisher left %s: %s", stream.id, reason)


async def _publish_one(h: Hub, stream_id: str, host: str, data: str | bytes) -> bytes:
    """The answer to one message: what ``POST …/events`` answers the same body, as an
    ``ack`` or an ``error`` frame."""
    try:
        result = await publish(h, stream_id, host, data)
    except ProtocolError as exc:
        return error_frame(exc.code, exc.message)
    except HubError as exc:
        return error_frame(exc.code, exc.message, **exc.extra)
    return orjson.dumps({"type": "ack", **published(result)})
