"""The hub's WebSocket message protocol, sans-IO: parse client messages, build server frames.

Nothing here does I/O. :func:`parse_client_message` turns one text message into a typed
message or raises :class:`ProtocolError` (its ``code`` goes into an ``error`` frame and the
connection stays up); the ``*_frame`` functions build the server's messages as bytes.
Events arrive already serialized (``events.event_to_json``) and are spliced into frames
as they are, so each event is encoded once however many clients receive it.

The protocol
============

A client connects to ``/api/streams/{id}/ws`` (optionally ``?after=N&epoch=E`` to
subscribe at once, resuming after offset ``N``; ``?protocol=executor-streamer`` for
the Executor Streamer design's server messages, :mod:`trio_stream.hub.design`;
``?protocol=tstream-columns`` for lines as columns, below). Every
message is one JSON object with a ``type``.

Client to server:

``{"type": "subscribe", "streamId": "…", "filters": {…}, "replayOptions": {…}}``
    Start receiving events. ``streamId`` may be left out (it must match the URL).
    Without ``replayOptions`` the subscription starts at the live end; with
    ``{"fromOffset": N}`` it resumes after offset N (no gap, no duplicate),
    ``{"fromTimestamp": T}`` starts at the first event at or after T (epoch seconds),
    ``{"lastN": N}`` starts with the last N events the filters pass (at most 100,000, as
    on every transport: :mod:`trio_stream.hub.params`). ``"epoch"`` may
    carry the store epoch the client saw: if it differs, the offsets are from a history
    that is gone and the client gets everything that remains, with ``recovered: false``.
``{"type": "unsubscribe"}``
    Stop receiving events (the connection stays open).
``{"type": "replay", "replayOptions": {…}, "filters": {…}, "limit": N}``
    Send matching history in ``replay`` frames, without touching the live subscription.
``{"type": "filter", "filters": {…}}``
    Replace the live subscription's filters.
``{"type": "ping", "id": …}``
    Answered by ``pong`` with the same ``id``.
``{"type": "pong"}``
    The answer to a server ``heartbeat``. Any message counts as activity; a client that
    sends nothing for ``idle_timeout`` after a heartbeat is closed with 4009.

Filters (also the query parameters of ``/history``, ``/sse`` and ``/poll``):
``eventTypes`` (list of event types, named as tstream does, ``command_started``, or as the
Executor Streamer design does, ``COMMAND_STARTED``, in any case), ``sources``
(``stdout``/``stderr``; non-output events always pass), ``startTime``/``endTime`` (epoch
seconds or ISO 8601, inclusive), ``timeRange`` (``{"start", "end"}``, the same),
``sessionIds`` (the sessions whose events pass), ``searchText`` (case-insensitive
substring of the line, or of the event's JSON for other events, in its first 64 KiB, for
live events and history alike) and ``pattern`` (a regular expression searched the same
way, at most 256 characters, no nested repetition).
``filters`` may also be a list of such objects (the design's ``StreamFilter[]``): an event
passes when any of them passes it.

``replayOptions`` may also be the design's ``HistoryFilter``: the events replayed start
at ``startTime`` (or at the start of the stream); ``eventTypes``, ``endTime`` and
``searchText`` choose among them (instead of ``filters``: the request's, or for
``subscribe`` the subscription's); ``offset`` skips that many of them and ``limit`` sends
at most that many. In a ``subscribe``, that history comes first, then live events.

Server to client:

``{"type": "connection_ack", "clientId", "streamId", "status", "lastOffset", "epoch",
"recovered", "heartbeat"}``
    First message. ``recovered`` is null unless the URL asked to resume.
``{"type": "subscribed", "streamId", "fromOffset", "lastOffset", "recovered"}``
    Answer to ``subscribe``; events after ``fromOffset`` follow.
``{"type": "event", "streamId", "events": [event, …]}``
    Every event of one tick, in offset order. The last event of an ended stream is its
    ``session_ended``.
``{"type": "end", "streamId", "lastOffset"}``
    The stream ended and everything was sent; the hub then closes with 1000
    ``stream_ended``.
``{"type": "replay", "streamId", "events": [event, …], "done": bool}``
    History asked for with ``replay`` (or ``POST …/replay/{clientId}``).
``{"type": "unsubscribed"}``, ``{"type": "filter_set", "filters": {…}}``
    Answers to ``unsubscribe`` and ``filter``.
``{"type": "heartbeat", "time", "clients"}``
    Every heartbeat interval.
``{"type": "pong", "id", "time"}``
    Answer to ``ping``.
``{"type": "error", "code", "message", …}``
    ``malformed_json``, ``invalid_message``, ``unknown_type``, ``bad_filter``,
    ``bad_replay``, ``wrong_stream``, ``not_subscribed``, ``rate_limited``,
    ``replay_disabled`` (the stream's config says ``enableReplay: false``): the
    connection stays up. ``slow_consumer``, ``idle_timeout``, ``disconnected`` and ``shutdown`` come
    with ``lastOffset`` (the last offset this client was sent) just before the close.

Close codes: 1000 stream ended, 1001 hub shutting down, 1007 invalid UTF-8, 1009 message
too big, 4004 disconnected by an operator, 4008 slow consumer, 4009 idle timeout.

Lines as columns (``tstream-columns``)
=======================================

An extension that tstream's own clients ask for, so that a million lines cost neither
side an object per line; a client that does not ask never sees it. The events are the
same events: only their wire form differs.

Subscribing, ``/api/streams/{id}/ws?protocol=tstream-columns`` (WebSocket only; SSE
refuses it with 400 ``bad_request``). Every message is as above, except that ``event``
and ``replay`` messages carry ``"runs": [run, …]`` instead of ``"events"``; the runs
follow each other at consecutive offsets. A run is either

* a list of events, exactly as ``events`` holds them (every event that is not a line
  kept as columns: the session's own events, typed events, lines of a stream the hub
  holds as events), or
* an object, the columns of lines captured together from one source:
  ``{"o": first offset, "k": id key (16 hex digits), "b": first id number,
  "t": ts (every line's), "s": "stdout" | "stderr", "l": first line number,
  "x": [text, …]}``, with ``"e": [eol, …]`` when some line does not end with ``"\n"``
  (each ``"\n"``, ``"\r\n"``, ``"\r"`` or ``""``), ``"p": [index, …]`` of the pieces of
  a cut line that are not its last, ``"r": [[index, base64], …]`` of the exact bytes of
  lines that are not valid UTF-8. Line ``i`` is the event ``{"id", "session": streamId,
  "offset": o + i, "type": "output", "ts": t, "data": {"source": s, "text": x[i], "eol",
  "line": l + i, "partial", "raw"}}``; its ``id`` is the urlsafe base64 of the key's 8
  bytes and the 4 bytes of ``b + i`` (:func:`trio_stream.batches.batch_event_ids`). This
  is the form a store chunk keeps them in (:mod:`trio_stream.store.chunks`), so the hub
  sends history from its chunks without decoding a line.

A client catching up is sent up to 10,000 events a message (1,000 otherwise).

Publishing, ``/api/streams/{id}/publish?protocol=tstream-columns``: the ``connection_ack``
then carries ``"protocol": "tstream-columns"`` (a hub that does not know the extension
leaves it out, and the publisher sends events as above). A message may then also be
``{"runs": [run, …]}``, runs as above, every event placed (with its ``offset``), at
consecutive offsets: answered by an ``ack`` like any other, duplicates skipped, a gap
refused (``offset_gap``), each column checked (``invalid_event`` names the run and the
field). ``maxBatch`` counts the lines.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeAlias, final

import attrs
import orjson

from ..filters import EventFilter
from ..limits import over_limits
from .errors import ProtocolError
from .params import (
    ReplayOptions,
    kind_of,
    parse_filters,
    parse_json,
    parse_replay_limit,
    parse_replay_options,
)


class CloseCode(enum.IntEnum):
    """WebSocket close codes the hub uses."""

    NORMAL = 1000  # the stream ended
    GOING_AWAY = 1001  # the hub is shutting down
    INVALID_PAYLOAD = 1007  # invalid UTF-8 (sent by the WebSocket layer)
    TOO_BIG = 1009  # oversize message (sent by the WebSocket layer)
    INTERNAL = 1011  # the stream failed on the hub
    DISCONNECTED = 4004
    SLOW_CONSUMER = 4008
    IDLE_TIMEOUT = 4009


# -- client messages -------------------------------------------------------------------


@final
@attrs.frozen
class Subscribe:
    """Start receiving events, from where ``replay`` says (the live end if None);
    ``filters`` None: the stream's default filters."""

    filters: EventFilter | None = None
    replay: ReplayOptions | None = None


@final
@attrs.frozen
class Unsubscribe:
    """Stop receiving events."""


@final
@attrs.frozen
class Replay:
    """Send history in ``replay`` frames."""

    replay: ReplayOptions
    filters: EventFilter = attrs.field(factory=EventFilter)
    limit: int | None = None


@final
@attrs.frozen
class SetFilter:
    """Replace the subscription's filters."""

    filters: EventFilter


@final
@attrs.frozen
class Ping:
    """Ask for a ``pong``."""

    id: Any = None


@final
@attrs.frozen
class Pong:
    """The answer to a heartbeat."""


ClientMessage: TypeAlias = Subscribe | Unsubscribe | Replay | SetFilter | Ping | Pong

_ALLOWED: Final[Mapping[str, frozenset[str]]] = {
    "subscribe": frozenset({"type", "streamId", "filters", "replayOptions"}),
    "unsubscribe": frozenset({"type", "streamId"}),
    "replay": frozenset({"type", "streamId", "filters", "replayOptions", "limit"}),
    "filter": frozenset({"type", "streamId", "filters"}),
    "ping": frozenset({"type", "id"}),
    "pong": frozenset({"type", "id"}),
}


def parse_replay(obj: Mapping[str, Any]) -> Replay:
    """The history a ``replay`` message or ``POST …/replay/{client}`` asks for:
    ``replayOptions`` (from the start of the stream if left out), ``filters`` (or the
    options' own, a ``HistoryFilter``'s), at most ``limit`` events.

    Raises:
        ProtocolError: ``bad_replay``, ``bad_filter``.
    """
    limit = parse_replay_limit(obj.get("limit"), "limit")
    options = parse_replay_options(obj.get("replayOptions", {"fromOffset": -1}))
    if options.filters is not None and obj.get("filters") is not None:
        raise ProtocolError(
            "bad_replay", "replayOptions: choose events in filters or in replayOptions"
        )
    filters = parse_filters(obj.get("filters")) if options.filters is None else options.filters
    return Replay(options, filters, limit)


def parse_client_message(data: str | bytes, *, stream_id: str) -> ClientMessage:
    """Parse one message a client sent on the stream ``stream_id``.

    Raises:
        ProtocolError: ``malformed_json``, ``invalid_message``, ``unknown_type``,
            ``wrong_stream``, ``bad_filter`` or ``bad_replay``.
    """
    obj = parse_json(data, "message")
    if not isinstance(obj, dict):
        raise ProtocolError("invalid_message", f"message: expected an object, got {kind_of(obj)}")
    problem = over_limits(data if isinstance(data, str) else data.decode(), obj)
    if problem is not None:
        raise ProtocolError("invalid_message", f"message: {problem}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", "type: required string field missing")
    allowed = _ALLOWED.get(kind)
    if allowed is None:
        raise ProtocolError(
            "unknown_type",
            f"type: unknown message type {kind[:64]!r} (use {', '.join(sorted(_ALLOWED))})",
        )
    extra = sorted(set(obj) - allowed)
    if extra:
        raise ProtocolError("invalid_message", f"{extra[0]}: unknown field for {kind}")
    if "streamId" in obj and obj["streamId"] != stream_id:
        raise ProtocolError(
            "wrong_stream", f"streamId: this connection serves stream {stream_id!r}"
        )
    if kind == "subscribe":
        replay = obj.get("replayOptions")
        filters = obj.get("filters")
        return Subscribe(
            None if filters is None else parse_filters(filters),
            None if replay is None else parse_replay_options(replay),
        )
    if kind == "unsubscribe":
        return Unsubscribe()
    if kind == "replay":
        if "replayOptions" not in obj:
            raise ProtocolError("bad_replay", "replayOptions: required for replay")
        return parse_replay(obj)
    if kind == "filter":
        if "filters" not in obj:
            raise ProtocolError("bad_filter", "filters: required for filter")
        return SetFilter(parse_filters(obj["filters"]))
    if kind == "ping":
        ping_id = obj.get("id")
        if ping_id is not None and not isinstance(ping_id, str | int):
            raise ProtocolError("invalid_message", "id: expected a string or an integer")
        return Ping(ping_id)
    return Pong()


# -- server frames ---------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def connection_ack_frame(
    *,
    client_id: str,
    stream_id: str,
    status: str,
    last_offset: int,
    epoch: str,
    recovered: bool | None,
    heartbeat: float,
) -> bytes:
    """The first message of a connection."""
    return _dumps(
        {
            "type": "connection_ack",
            "clientId": client_id,
            "streamId": stream_id,
            "status": status,
            "lastOffset": last_offset,
            "epoch": epoch,
            "recovered": recovered,
            "heartbeat": heartbeat,
        }
    )


def subscribed_frame(
    *, stream_id: str, from_offset: int, last_offset: int, recovered: bool
) -> bytes:
    """The answer to ``subscribe``."""
    return _dumps(
        {
            "type": "subscribed",
            "streamId": stream_id,
            "fromOffset": from_offset,
            "lastOffset": last_offset,
            "recovered": recovered,
        }
    )


def events_frame(
    stream_id: str, raws: Iterable[bytes], *, replay: bool = False, done: bool = False
) -> bytes:
    """One frame carrying already serialized events, spliced in without re-encoding."""
    return _spliced(b"events", stream_id, raws, replay, done)


def runs_frame(
    stream_id: str, runs: Iterable[bytes], *, replay: bool = False, done: bool = False
) -> bytes:
    """:func:`events_frame` with ``runs`` (``tstream-columns``): each already serialized,
    a list of events or the columns of a batch of lines."""
    return _spliced(b"runs", stream_id, runs, replay, done)


def _spliced(key: bytes, stream_id: str, parts: Iterable[bytes], replay: bool, done: bool) -> bytes:
    head = b'{"type":"replay","streamId":' if replay else b'{"type":"event","streamId":'
    tail = (b'],"done":true}' if done else b'],"done":false}') if replay else b"]}"
    return b"".join((head, _dumps(stream_id), b',"%s":[' % key, b",".join(parts), tail))


def error_frame(code: str, message: str, **extra: Any) -> bytes:
    """An error; ``extra`` adds fields such as ``lastOffset``."""
    return _dumps({"type": "error", "code": code, "message": message, **extra})


def pong_frame(ping_id: Any, now: float | None = None) -> bytes:
    """The answer to ``ping``."""
    return _dumps({"type": "pong", "id": ping_id, "time": time.time() if now is None else now})


def heartbeat_frame(clients: int, now: float | None = None) -> bytes:
    """A heartbeat."""
    return _dumps(
        {"type": "heartbeat", "time": time.time() if now is None else now, "clients": clients}
    )


def end_frame(stream_id: str, last_offset: int) -> bytes:
    """The stream ended and everything was sent."""
    return _dumps({"type": "end", "streamId": stream_id, "lastOffset": last_offset})


def unsubscribed_frame() -> bytes:
    """The answer to ``unsubscribe``."""
    return b'{"type":"unsubscribed"}'


def filter_set_frame(filters: EventFilter) -> bytes:
    """The answer to ``filter``."""
    return _dumps({"type": "filter_set", "filters": filters.to_json()})
