"""Server-Sent Events: sans-IO parsing, and the ``/sse`` route.

The bytes of the ``text/event-stream`` format are built by
:func:`~trio_stream.hub.wire.sse_event` (in the connection's encoding,
:mod:`~trio_stream.hub.encodings`); the :class:`SSEParser` reads them back, as
``EventSource`` does (the tests and the client use it). The route serves a stream:

* ``id:`` is the event's offset, so the browser's automatic reconnection resumes with
  ``Last-Event-ID: <offset>``; the header wins over the ``lastEventId`` query parameter
  (``EventSource`` sends no header on its first connect).
* ``event: stream_event`` carries the event JSON; a tick's events are one write.
* ``event: heartbeat`` (time, clients) every heartbeat interval.
* ``event: notice`` says history the client asked for is gone (``history_lost``).
* ``event: end`` follows the stream's ``session_ended``, then the response ends; a
  reconnect after the end is answered 204, which stops ``EventSource`` for good.
* ``event: error`` (``code``, ``message``, ``lastOffset``) comes before the hub closes the
  response for any other reason (``slow_consumer``, ``shutdown``, ``disconnected``).

With ``?protocol=executor-streamer`` the events take the Executor Streamer design's
shapes (:mod:`trio_stream.hub.design`): ``stream_event`` carries a ``StreamEvent``,
``heartbeat`` ``{timestamp, active_clients}`` (at the stream's ``heartbeatInterval``), and
every close, the end of the stream included, is an ``error`` ``{code, message}`` with the
code in upper case (``STREAM_ENDED``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, Final, final

import attrs
import trio
from quart import Blueprint, Response, request

from ..filters import EventFilter
from .context import Hub, access, hub, remote_of
from .detach import (
    DetachedResponse,
    adopt,
    detach_response,
    failed,
    finish,
    guard_writes,
    pipelined,
)
from .encodings import NATIVE_SSE, Encoding, choose
from .errors import Conflict
from .items import ClientKind, Closing, Item
from .params import ReplayOptions, has_filters, query_filters, query_replay
from .streams import Stream
from .wire import (
    RawWriter,
    remember_http_send,
    sse_comment,
    sse_event,
    sse_raw_send,
    sse_retry,
)

if TYPE_CHECKING:
    from .clients import Client

__all__ = ["SSEMessage", "SSEParser", "frame_items", "sse_comment", "sse_event", "sse_retry"]

logger = logging.getLogger("trio_stream.hub")
blueprint = Blueprint("sse", __name__)
blueprint.record_once(lambda state: remember_http_send(state.app))

MAX_LINE: Final = 1 << 20
_EOL: Final = re.compile(rb"\r\n|\r|\n")


# -- framing ---------------------------------------------------------------------------


@final
@attrs.frozen
class SSEMessage:
    """One dispatched event, as ``EventSource`` would see it."""

    event: str
    data: str
    id: str | None
    retry: int | None = None


@final
class SSEParser:
    """Incremental ``text/event-stream`` parser (WHATWG rules): feed bytes, get events.

    ``last_id`` is what ``EventSource`` would send as ``Last-Event-ID``.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry: int | None = None
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Parse ``chunk``; return the events it completed.

        Raises:
            ValueError: for a line longer than 1 MiB without an end.
        """
        self._buffer += chunk
        out: list[SSEMessage] = []
        pos = 0
        while True:
            match = _EOL.search(self._buffer, pos)
            if match is None or (match.group() == b"\r" and match.end() == len(self._buffer)):
                # No end of line yet (a CR at the very end may be the start of CRLF).
                self._buffer = self._buffer[pos:]
                if len(self._buffer) > MAX_LINE:
                    raise ValueError("SSE line longer than 1 MiB")
                return out
            message = self._line(self._buffer[pos : match.start()].decode("utf-8", "replace"))
            pos = match.end()
            if message is not None:
                out.append(message)

    def _line(self, line: str) -> SSEMessage | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            message = SSEMessage(
                self._event or "message", "\n".join(self._data), self._id, self.retry
            )
            self._data = []
            self._event = ""
            return message
        if line.startswith(":"):
            self.comments.append(line[1:].lstrip(" "))
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None


# -- the route -------------------------------------------------------------------------


def frame_items(items: list[Item], encoding: Encoding = NATIVE_SSE) -> bytes:
    """The bytes of one SSE write carrying ``items``."""
    return b"".join([m for item in items for m in encoding.messages("", item)])


def check_replay(stream: Stream, options: ReplayOptions | None) -> None:
    """Refuse a replay or resume on a stream whose config says ``enableReplay: false``.

    Raises:
        Conflict: ``replay_disabled``.
    """
    if options is not None and not stream.settings.replay:
        raise ReplayDisabled(f"stream {stream.id} does not replay history (enableReplay: false)")


class ReplayDisabled(Conflict):
    """A replay or resume asked of a stream created with ``enableReplay: false`` (409)."""

    code = "replay_disabled"


@blueprint.route("/api/streams/<stream_id>/sse")
@access("read", connection=True)
async def sse(stream_id: str) -> Response:
    """``GET /api/streams/{id}/sse``."""
    h = hub()
    filters = query_filters(request.args) if has_filters(request.args) else None
    options = query_replay(request.args, request.headers.get("Last-Event-ID"))
    encoding = choose(ClientKind.SSE, request.args)
    stream = await h.broker.get_stream(stream_id)
    check_replay(stream, options)
    caught_up = options is None or (
        options.from_offset is not None
        and options.from_offset >= stream.last_offset
        and (options.epoch is None or options.epoch == h.broker.store.epoch)
    )
    if stream.finished and caught_up:
        # Nothing will ever follow: 204 tells EventSource not to reconnect.
        return Response(b"", status=204)
    h.broker.check_capacity(stream)
    response = Response(
        _body(
            h,
            stream,
            remote_of(request.scope),
            options,
            filters,
            (request.http_version, request.method),
            encoding,
        ),
        status=200,
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },
    )
    if request.http_version == "1.1" and not pipelined():
        # The connection ends with the response: once its first answer is out, the hub
        # serves it below Hypercorn (hub.detach), which then reads no further request.
        # (Not said to a client that pipelined a request behind this one: h11 would take
        # that request for an error and drop the connection. Hypercorn keeps serving it.)
        response.headers["Connection"] = "close"
    response.timeout = None
    return response


async def _body(
    h: Hub,
    stream: Stream,
    remote: str,
    options: ReplayOptions | None,
    filters: EventFilter | None,
    request_line: tuple[str, str],
    encoding: Encoding,
) -> AsyncIterator[bytes]:
    # The client is attached only once the response is being sent, so that a request
    # dropped before that leaves nothing behind.
    client = h.broker.attach(stream, ClientKind.SSE, remote)
    client.protocol = encoding.protocol
    raw = sse_raw_send(*request_line)
    logger.info("sse %s connected to %s from %s", client.id, stream.id, client.remote)
    reason: str | None = "disconnected by the client"
    try:
        # Cancelling the request's own nursery is the only way to drop a connection
        # whose writes are stuck; a cut client gets ``write_timeout`` to drain first.
        parent = trio.lowlevel.current_task().parent_nursery
        if parent is not None:
            client.abort_scope = parent.cancel_scope
        hello = sse_comment(f"stream {client.stream.id} client {client.id}")
        yield hello + sse_retry(h.config.sse_retry)
        first = await client.subscribe(options, filters)
        if data := frame_items(first, encoding):
            yield data
        if raw is not None:
            detached = await detach_response()
            if detached is not None:
                # The hub serves the connection from now on (hub.detach).
                serve = partial(_serve_detached, client, encoding, detached)
                if adopt(h.broker.nursery, serve):
                    reason = None
                else:
                    await detached.aclose()
                    reason = "hub shutting down"
                return
            client.express(raw, encoding)
        while True:
            items = await _next_items(client, encoding, raw)
            data = frame_items(items, encoding)
            if data:
                yield data
            for index, item in enumerate(items):
                client.delivered(item, len(data) if index == 0 else 0)
                if isinstance(item, Closing):
                    reason = item.reason.value
                    return
    finally:
        if reason is not None:
            client.stream.detach(client)
            logger.info("sse %s left %s: %s", client.id, client.stream.id, reason)


async def _next_items(client: Client, encoding: Encoding, raw: RawWriter | None) -> list[Item]:
    """The client's next items for the response to send. With ``raw``, a tick's events
    (one chunk shared by every client), heartbeats and notices go straight to the
    connection here, and only the last items, with the :class:`Closing` that ends the
    response, are returned."""
    while True:
        items = await client.next_items()
        if client.unsent:
            await raw.send_rest(client.take_unsent())  # type: ignore[union-attr]
        if raw is None or any(isinstance(item, Closing) for item in items):
            return items
        for item in items:
            chunk = encoding.written(client.stream.id, item)
            if chunk:
                await raw(chunk)
            client.delivered(item, len(chunk))


async def _serve_detached(client: Client, encoding: Encoding, detached: DetachedResponse) -> None:
    """An SSE response once the hub took its connection over: this task writes until the
    client is closed, then ends the response and closes the connection; a second one
    waits for the client to hang up, which ends it sooner."""
    finished = hung_up = False

    async def wait_hangup(connection: trio.CancelScope) -> None:
        nonlocal hung_up
        await detached.until_hangup()
        hung_up = True
        connection.cancel()

    reason = "disconnected by the client"
    try:
        client.express(detached.writer, encoding)
        async with trio.open_nursery() as nursery:
            guard_writes(client, nursery.cancel_scope)
            nursery.start_soon(wait_hangup, nursery.cancel_scope)
            try:
                items = await _next_items(client, encoding, detached.writer)
                data = frame_items(items, encoding)
                await detached.finish(data)
                for index, item in enumerate(items):
                    client.delivered(item, len(data) if index == 0 else 0)
                    if isinstance(item, Closing):
                        reason = item.reason.value
                finished = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()
        if not (finished or hung_up) and client.end_reason is not None:
            reason = f"{client.end_reason.value} (dropped: its writes were stuck)"
    except Exception:
        reason = failed("sse", client)
    finally:
        await finish("sse", client, detached, reason)
