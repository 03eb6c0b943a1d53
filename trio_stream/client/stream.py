"""Clients of the hub's WebSocket protocol, over TCP or a Unix socket.

Following a stream, resuming after dropped connections with no gap and no duplicate::

    async with follow_stream("http://127.0.0.1:3001", "build-1", after=-1) as events:
        async for event in events:
            print(event.offset, event.type)

The iteration ends after the stream's ``session_ended`` event. A connection that drops,
or that the hub cuts as a slow consumer, is reopened after the last offset received;
heartbeats are answered. What cannot be resumed raises :class:`HubClientError`.

Publishing, idempotently: events placed at their offsets (as a session's log assigned
them) can be sent again after a reconnection, and the hub skips what it already has::

    async with open_publisher("unix:/run/user/1000/tstream/hub.sock", "build-1") as hub:
        todo = [e for e in placed_events if e.offset > hub.last_offset]
        ack = await hub.publish(todo)
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, final
from urllib.parse import quote, urlencode

import attrs
import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    connect_websocket_url,
    wrap_client_stream,
)

from ..batches import EventRuns, RowEvents
from ..events import SOURCES, Event, EventType, Output, event_from_dict, event_to_json
from ..groups import lone_leaf
from ..store.chunks import lines_batch
from .address import parse_hub_address

# A hub that shuts down is usually restarted, and a stream that failed on a hub is
# reopened from its store: followers come back after it, with backoff.
RESUMABLE: Final = frozenset(
    {"slow_consumer", "shutdown", "shutting_down", "idle_timeout", "internal", "stream_restarting"}
)
DEFAULT_RETRIES: Final = 5
MAX_MESSAGE: Final = 64 * 1024 * 1024
# Bytes read from the socket at once: a fast stream's messages are large, and each read
# costs a pass through trio and wsproto (4 KiB by default).
RECEIVE_BUFFER: Final = 1 << 20
# What tstream's own clients ask the hub for: its protocol with lines as columns.
COLUMNS_PROTOCOL: Final = "tstream-columns"


class HubClientError(Exception):
    """The hub refused a connection, a publish, or ended a subscription in a way that
    cannot be resumed.

    Attributes:
        code: the hub's error code (``unauthorized``, ``not_found``, ``disconnected``,
            ``offset_gap``…).
        message: the hub's message.
        last_offset: following: the last offset received; publishing: the hub's last
            offset, where to resume.
    """

    def __init__(self, code: str, message: str, last_offset: int) -> None:
        self.code = code
        self.message = message
        self.last_offset = last_offset
        super().__init__(f"{code}: {message}")


@final
class _Follower:
    def __init__(
        self,
        hub: str,
        stream_id: str,
        *,
        after: int,
        token: str | None,
        retries: int,
        send: trio.MemorySendChannel[Any],
        filters: Mapping[str, Any] | None = None,
        batched: bool = False,
    ) -> None:
        # Several hubs (separated by commas) share a store: a lost one is replaced by the next.
        self.hubs = hub.split(",")
        self._hub_index = 0
        self.stream_id = stream_id
        self.last = after
        self.token = token
        self.retries = retries
        self.send = send
        self.epoch: str | None = None
        self.filters = filter_query(filters or {})
        self.batched = batched

    @property
    def hub(self) -> str:
        """The hub in use (or tried next)."""
        return self.hubs[self._hub_index]

    def _resource(self) -> str:
        query = f"after={self.last}"
        if self.batched:
            # Lines come as columns, read without an event or a JSON object each.
            query += f"&protocol={COLUMNS_PROTOCOL}"
        if self.epoch is not None:
            query += f"&epoch={quote(self.epoch)}"
        if self.filters:
            query += f"&{self.filters}"
        return f"/api/streams/{quote(self.stream_id, safe='')}/ws?{query}"

    async def run(self) -> None:
        """Follow the stream, reconnecting, until it ends or cannot go on."""
        failures = 0
        async with self.send:
            while True:
                try:
                    async with _websocket(self.hub, self._resource(), self.token) as ws:
                        if await self._session(ws):
                            return
                        failures = 0
                except ConnectionRejected as exc:
                    refused = _rejected(exc, self.last)
                    if refused.code not in RESUMABLE:
                        raise refused from None
                    failures += 1
                except (ConnectionClosed, OSError, trio.BrokenResourceError):
                    failures += 1
                if len(self.hubs) > 1:
                    # The next hub at once; a wait only once each has been tried.
                    self._hub_index = (self._hub_index + 1) % len(self.hubs)
                    if failures % len(self.hubs) and failures <= self.retries * len(self.hubs):
                        continue
                if failures > self.retries * len(self.hubs):
                    raise HubClientError(
                        "unreachable", f"the hub at {self.hub} stopped answering", self.last
                    )
                rounds = failures // len(self.hubs)
                await trio.sleep(min(5.0, 0.1 * math.pow(2, rounds)))

    async def _session(self, ws: WebSocketConnection) -> bool:
        """Read one connection; True once the stream ended, False to reconnect."""
        while True:
            message: dict[str, Any] = orjson.loads(await ws.get_message())
            kind = message.get("type")
            if kind == "connection_ack":
                self.epoch = message.get("epoch")
            elif kind == "event":
                if "runs" in message:
                    runs = column_runs(self.stream_id, message["runs"]).after(self.last)
                    if len(runs):
                        await self.send.send(runs)
                        self.last = runs.last_offset
                    continue
                if self.batched:
                    rows = WireEvents(self.stream_id, message["events"]).after(self.last)
                    if rows.rows:
                        await self.send.send(rows)
                        self.last = rows.last_offset
                    continue
                fresh = [e for e in map(_hub_event, message["events"]) if e.offset > self.last]
                for event in fresh:
                    await self.send.send(event)
                if fresh:
                    self.last = fresh[-1].offset
            elif kind == "heartbeat":
                await ws.send_message('{"type":"pong"}')
            elif kind == "end":
                return True
            elif kind == "error":
                code = str(message.get("code"))
                if code in RESUMABLE:
                    return False
                if "lastOffset" in message:
                    raise HubClientError(code, str(message.get("message")), self.last)


def column_runs(session_id: str, runs: Any) -> EventRuns:
    """The events of a ``tstream-columns`` message's ``runs``: batches of lines as their
    columns, other events as the hub sent them, none of them built.

    Raises:
        HubClientError: ``bad_message`` for runs that are not what the hub sends.
    """
    out: list[Sequence[Event]] = []
    try:
        for run in runs:
            if type(run) is dict:
                out.append(lines_batch(session_id, run, check=True))
            elif type(run) is list and run:
                out.append(WireEvents(session_id, run))
            else:
                raise ValueError(f"a run is columns or a list of events, not {run!r:.60}")
    except (TypeError, ValueError) as exc:
        raise HubClientError("bad_message", f"runs: {exc}", -1) from None
    return EventRuns(out)


def _hub_event(raw: dict[str, Any]) -> Event:
    """An event as the hub sends it. The hub checked it when it was published, so output
    lines, most of any stream, are built directly rather than checked field by field."""
    data = raw.get("data")
    if (
        raw.get("type") == "output"
        and len(raw) == 6
        and isinstance(data, dict)
        and len(data) == 6
        and data.get("raw") is None
    ):
        try:
            line = Output(data["source"], data["text"], data["eol"], data["line"], data["partial"])
            return Event(
                EventType.OUTPUT, line, raw["session"], raw["offset"], raw["id"], raw["ts"]
            )
        except KeyError:
            pass
    return event_from_dict(raw)


class WireEvents(RowEvents):
    """Events as the hub sent them (decoded JSON objects), built only when read: see
    :class:`~trio_stream.batches.RowEvents`."""

    __slots__ = ()

    def build(self, row: Any) -> Event:
        return _hub_event(row)

    def offset(self, row: Any) -> int:
        return int(row["offset"])

    def line_sources(self, rows: list[Any]) -> list[str | None]:
        return [_line_source(r) for r in rows]

    def line_texts(self, rows: list[Any]) -> list[str]:
        return [r["data"]["text"] + r["data"]["eol"] for r in rows]


def _line_source(row: Any) -> str | None:
    """The source of a line whose text is its exact bytes, else None."""
    if row.get("type") != "output":
        return None
    data = row.get("data")
    if not isinstance(data, dict) or data.get("raw") is not None:
        return None
    text, eol, source = data.get("text"), data.get("eol"), data.get("source")
    if type(text) is not str or type(eol) is not str or source not in SOURCES:
        return None
    return source  # type: ignore[no-any-return]


def filter_query(filters: Mapping[str, Any]) -> str:
    """Filters in their wire form (:meth:`EventFilter.to_json`), and any other parameters,
    as a query string: lists are joined with commas."""
    return urlencode(
        {k: ",".join(v) if isinstance(v, list | tuple) else v for k, v in filters.items()}
    )


async def _open(
    hub: str, resource: str, token: str | None, nursery: trio.Nursery
) -> WebSocketConnection:
    """A WebSocket to ``resource`` on ``hub`` (any address :func:`parse_hub_address`
    takes), owned by ``nursery``.

    Raises:
        ValueError: for a bad address.
    """
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
    address = parse_hub_address(hub)
    if address.unix_path is not None:
        stream = await trio.open_unix_socket(address.unix_path)
        return await wrap_client_stream(
            nursery,
            stream,
            address.netloc,
            resource,
            extra_headers=headers,
            max_message_size=MAX_MESSAGE,
            receive_buffer_size=RECEIVE_BUFFER,
        )
    return await connect_websocket_url(
        nursery,
        address.ws_url(resource),
        extra_headers=headers,
        max_message_size=MAX_MESSAGE,
        receive_buffer_size=RECEIVE_BUFFER,
    )


@asynccontextmanager
async def _websocket(
    hub: str, resource: str, token: str | None
) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket with its own reader task. A lone error (the hub's rejection, an error
    of the caller's block) comes out as itself, not wrapped in an exception group."""
    try:
        async with trio.open_nursery() as nursery:
            ws = await _open(hub, resource, token, nursery)
            try:
                yield ws
            finally:
                await ws.aclose()
    except BaseExceptionGroup as group:
        lone = lone_leaf(group)
        if lone is None:
            raise
        raise lone from None


@final
@attrs.frozen
class PublishAck:
    """The hub's answer to one publish."""

    accepted: int
    duplicates: int
    first_offset: int | None
    last_offset: int


@final
class HubPublisher:
    """An open publishing connection (see :func:`open_publisher`).

    Attributes:
        last_offset: the stream's last offset on the hub, updated by every ack.
        epoch: the hub's store epoch.
        status: the stream's status when the connection opened (``running``…).
        max_message_size: the largest message the hub takes, in bytes.
        max_batch: the most events the hub takes in one message.
    """

    def __init__(self, ws: WebSocketConnection, stream_id: str, ack: dict[str, Any]) -> None:
        self._ws = ws
        self.stream_id = stream_id
        self.last_offset: int = ack["lastOffset"]
        self.epoch: str = ack["epoch"]
        self.status: str = ack.get("status", "running")
        # Hubs that do not announce their limits have these defaults.
        self.max_message_size: int = ack.get("maxMessageSize", 64 * 1024)
        self.max_batch: int = ack.get("maxBatch", 10_000)
        # Whether the hub takes lines as columns (it says so when asked).
        self.columns: bool = ack.get("protocol") == COLUMNS_PROTOCOL

    async def publish(self, events: Sequence[Event]) -> PublishAck:
        """Send ``events`` (one message) and wait for the hub's answer.

        Events with an offset of 0 or more are placed there (duplicates skipped); those
        with -1 are appended.

        Raises:
            HubClientError: the hub refused them (``offset_gap`` with the hub's
                ``last_offset``, ``stream_ended``, ``invalid_event``, ``rate_limited``…).
            trio_websocket.ConnectionClosed: the connection dropped; open another and
                send again what follows its ``last_offset``.
        """
        parts = []
        for event in events:
            raw = event_to_json(event)
            if event.offset < 0:
                # Unplaced: the hub appends it (the key's absence says so).
                raw = raw.replace(b',"offset":-1', b"", 1)
            parts.append(raw)
        return await self.publish_encoded(parts)

    async def publish_encoded(self, parts: Sequence[bytes]) -> PublishAck:
        """Like :meth:`publish`, for events already serialized (``event_to_json``).

        The message is ``[`` + the parts joined by commas + ``]``: keep it within
        :attr:`max_message_size` (the hub closes the connection with 1009 otherwise).
        """
        if not parts:
            return PublishAck(0, 0, None, self.last_offset)
        await self.send_encoded(parts)
        return await self.receive_ack()

    async def send_encoded(self, parts: Sequence[bytes]) -> None:
        """Send one message of serialized events without waiting for its answer.

        Several messages may be in flight: the hub answers each, in order, and
        :meth:`receive_ack` reads the next answer.
        """
        await self._ws.send_message((b"[" + b",".join(parts) + b"]").decode())

    async def send_runs(self, runs: Sequence[bytes]) -> None:
        """Send one ``tstream-columns`` message of serialized runs (each the columns of
        a batch of lines, :func:`~trio_stream.store.chunks.lines_item`, or a list of
        placed events) without waiting for its answer; only when :attr:`columns`."""
        await self._ws.send_message((b'{"runs":[%s]}' % b",".join(runs)).decode())

    async def receive_ack(self) -> PublishAck:
        """The hub's answer to the oldest message not yet answered.

        Raises:
            HubClientError: the hub refused that message (see :meth:`publish`).
            trio_websocket.ConnectionClosed: the connection dropped.
        """
        answer: dict[str, Any] = orjson.loads(await self._ws.get_message())
        if answer.get("type") != "ack":
            last = answer.get("lastOffset", self.last_offset)
            raise HubClientError(str(answer.get("code")), str(answer.get("message")), last)
        self.last_offset = answer["lastOffset"]
        return PublishAck(
            answer["accepted"], answer["duplicates"], answer["firstOffset"], answer["lastOffset"]
        )


@asynccontextmanager
async def open_publisher(
    hub: str, stream_id: str, *, token: str | None = None, create: bool = True
) -> AsyncIterator[HubPublisher]:
    """Open a publishing WebSocket to ``stream_id`` on ``hub``.

    Args:
        hub: ``http://host:port`` (or ``ws://``) or ``unix:PATH``.
        stream_id: the stream.
        token: a bearer token with the ``publish`` scope.
        create: create the stream if the hub does not have it.

    Yields:
        The publisher; its ``last_offset`` says where the hub's copy ends.

    Raises:
        HubClientError: the hub refused the connection (bad token, unknown stream).
    """
    # The hub's ack says whether it takes lines as columns (older hubs ignore this).
    resource = f"/api/streams/{quote(stream_id, safe='')}/publish?protocol={COLUMNS_PROTOCOL}"
    if create:
        resource += "&create=1"
    try:
        async with _websocket(hub, resource, token) as ws:
            ack = orjson.loads(await ws.get_message())
            yield HubPublisher(ws, stream_id, ack)
    except ConnectionRejected as exc:
        raise _rejected(exc, -1) from None


def _rejected(exc: ConnectionRejected, last: int) -> HubClientError:
    try:
        error = orjson.loads(exc.body or b"")["error"]
        return HubClientError(error["code"], error["message"], last)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return HubClientError("refused", f"the hub answered HTTP {exc.status_code}", last)


@asynccontextmanager
async def follow_stream(
    hub: str,
    stream_id: str,
    *,
    after: int = -1,
    token: str | None = None,
    retries: int = DEFAULT_RETRIES,
    buffer: int = 1000,
    filters: Mapping[str, Any] | None = None,
    batched: bool = False,
) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
    """Follow ``stream_id`` on ``hub`` from the event after offset ``after``.

    Args:
        hub: ``http://host:port`` (or ``https://``, ``ws://``) or ``unix:PATH``.
        stream_id: the stream.
        after: the last offset already seen (-1: from the start).
        token: a bearer token with the ``read`` scope.
        retries: reconnections tried in a row before giving up.
        buffer: events held for a slow reader of the channel.
        filters: only the events these filters pass, in their wire form
            (``{"eventTypes": ["output"], "sources": ["stderr"]}``, see
            :meth:`~trio_stream.filters.EventFilter.to_json`).
        batched: give lists of events (each what one message of the hub brought) rather
            than one event at a time, for readers that keep up with fast streams. The
            hub is asked for lines as columns (``tstream-columns``): a list is then
            :class:`~trio_stream.batches.EventRuns` whose lines are not built.

    Yields:
        A channel of events (or lists of them) in offset order; it closes after
        ``session_ended``.

    Raises:
        HubClientError: refused (unknown stream, bad token), disconnected by an
            operator, or unreachable after ``retries`` attempts.
    """
    send, receive = trio.open_memory_channel[Any](buffer)
    follower = _Follower(
        hub,
        stream_id,
        after=after,
        token=token,
        retries=retries,
        send=send,
        filters=filters,
        batched=batched,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower.run)
            async with receive:
                yield receive
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The follower's own error is the caller's: unwrap it from the nursery's group.
        lone = lone_leaf(group)
        if not isinstance(lone, HubClientError):
            raise
        raise lone from None
