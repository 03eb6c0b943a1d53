"""Publishing: what ``POST /api/streams/{id}/events`` and the publishing WebSocket take,
checked and turned into events for the broker by one handler, :func:`publish`, so that
both answer the same body alike.

Events may also come in the Executor Streamer design's form: a ``type`` such as
``COMMAND_STARTED`` (any case), a ``timestamp`` (ISO 8601 or epoch seconds) for ``ts``,
a ``sessionId`` for ``session``.

Most of what a hub ingests is output lines from ``tstream run --hub``, all well formed.
Each event is checked by plain class tests and built directly; anything that does not
fit exactly (a missing or unknown field, a wrong type, base64 ``raw`` bytes, another
session) goes through :func:`trio_stream.events.event_from_dict`, which builds the same
event or names each bad field.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

import trio

from ..batches import EventRuns, OutputBatch
from ..events import (
    PAYLOADS,
    Event,
    EventType,
    EventValidationError,
    Output,
    event_from_dict,
    new_event_ids,
    plain_fields,
)
from ..store.chunks import lines_batch
from .broker import PublishResult
from .context import Hub, RateLimited
from .errors import HubError, ProtocolError
from .params import event_type, parse_json, parse_time

_EVENT_KEYS: Final = frozenset({"type", "data", "id", "session", "offset", "ts"})
_OUTPUT_KEYS: Final = frozenset({"source", "text", "eol", "line", "partial", "raw"})
_SOURCES: Final = frozenset({"stdout", "stderr"})
_TYPES: Final = {etype.value: etype for etype in EventType}
_MISSING: Final = object()


class EventsInvalid(HubError):
    """Published events that do not fit the event model (``errors`` names each field)."""

    code = "invalid_event"


def _output(data: dict[str, Any]) -> Output | None:
    """The payload of plain, well-formed output data, else None."""
    if not data.keys() <= _OUTPUT_KEYS:
        return None
    source = data.get("source")
    text = data.get("text")
    eol = data.get("eol", "\n")
    line = data.get("line", -1)
    partial = data.get("partial", False)
    if data.get("raw") is not None:
        # Bytes in base64: the full check decodes them.
        return None
    if (
        source.__class__ is not str
        or source not in _SOURCES
        or text.__class__ is not str
        or eol.__class__ is not str
        or line.__class__ is not int
        or partial.__class__ is not bool
    ):
        return None
    return Output(source, text, eol, line, partial)  # type: ignore[arg-type]


def _plain_event(item: Any, stream_id: str, ids: list[str], now: float) -> Event | None:
    """The event of a well-formed published object, else None (the full check decides)."""
    if item.__class__ is not dict or not item.keys() <= _EVENT_KEYS:
        return None
    name = item.get("type")
    data = item.get("data")
    if name.__class__ is not str or data.__class__ is not dict:
        return None
    etype = _TYPES.get(name)
    if etype is None:
        return None
    if etype is EventType.OUTPUT:
        payload: Any = _output(data)
    else:
        cls = PAYLOADS[etype]
        values = plain_fields(cls, data)
        payload = None if values is None else cls(**values)
    if payload is None:
        return None
    session = item.get("session", stream_id)
    offset = item.get("offset", -1)
    event_id = item.get("id", _MISSING)
    ts = item.get("ts", now)
    if (
        session.__class__ is not str
        or session not in ("", stream_id)
        or offset.__class__ is not int
        or ("offset" in item and offset < 0)
        or (ts.__class__ is not float and ts.__class__ is not int)
    ):
        return None
    if event_id is _MISSING:
        event_id = ids.pop() if ids else new_event_ids(1)[0]
    elif event_id.__class__ is not str:
        return None
    return Event(etype, payload, stream_id, offset, event_id, float(ts))


def _from_design(item: dict[str, Any]) -> dict[str, Any]:
    """A published object with the design's names (``timestamp``, ``sessionId``, an upper
    case ``type``) in tstream's.

    Raises:
        ProtocolError: for a bad ``timestamp`` or a field given under both names.
    """
    out = dict(item)
    for design_name, name in (("timestamp", "ts"), ("sessionId", "session")):
        if design_name in out:
            if name in out:
                raise ProtocolError(
                    "invalid_event", f"{design_name}: give {name} or {design_name}, not both"
                )
            out[name] = out.pop(design_name)
    if "ts" in out and out["ts"].__class__ is str:
        out["ts"] = parse_time(out["ts"], "timestamp", "invalid_event")
    name = out.get("type")
    if name.__class__ is str:
        etype = event_type(name)
        if etype is not None:
            out["type"] = etype.value
    return out


def parse_events(body: Any, stream_id: str) -> tuple[list[Event], list[bool]]:
    """Check published events: one event object or a list of them.

    Returns:
        The events (of ``stream_id``), and for each whether the publisher placed it at
        an ``offset``.

    Raises:
        HubError: for an empty list; EventsInvalid naming every bad field.
    """
    items = body if isinstance(body, list) else [body]
    if not items:
        raise HubError("body: an empty list publishes nothing")
    # Ids for the events that come without one, from one read of the entropy source.
    unnamed = sum(1 for item in items if item.__class__ is dict and "id" not in item)
    ids = new_event_ids(unnamed)
    now = time.time()
    events: list[Event] = []
    placed: list[bool] = []
    errors: list[str] = []
    for index, item in enumerate(items):
        where = f"events[{index}]" if isinstance(body, list) else "event"
        # ``type`` may be any JSON value: a list or an object is no key of _TYPES.
        kind = item.get("type") if item.__class__ is dict else None
        if item.__class__ is dict and (
            not item.keys() <= _EVENT_KEYS or kind.__class__ is not str or kind not in _TYPES
        ):
            try:
                item = _from_design(item)
            except ProtocolError as exc:
                errors.append(f"{where}.{exc.message}")
                continue
        event = _plain_event(item, stream_id, ids, now)
        if event is None:
            try:
                event = event_from_dict(item, require_placement=False)
            except EventValidationError as exc:
                errors.extend(f"{where}.{e}" for e in exc.errors)
                continue
            if event.session not in ("", stream_id):
                errors.append(f"{where}.session: belongs to {event.session!r}, not {stream_id!r}")
                continue
            if "offset" in item and event.offset < 0:
                errors.append(f"{where}.offset: must be 0 or more")
                continue
        events.append(event)
        placed.append("offset" in item)
    if errors:
        raise EventsInvalid("; ".join(errors[:20]), errors=errors[:100])
    return events, placed


async def publish(h: Hub, stream_id: str, host: str, data: str | bytes) -> PublishResult:
    """Publish what a client sent to stream ``stream_id`` (a request's body, or one
    message of the publishing WebSocket): the JSON of one event, of a list of at most
    ``max_batch``, or ``{"runs": […]}`` (:func:`parse_runs`), within the rate its address
    ``host`` may publish at.

    Raises:
        ProtocolError: ``malformed_json``.
        HubError: ``bad_request`` for too many events, :class:`RateLimited`,
            :class:`EventsInvalid` naming every bad field, and what
            :meth:`~trio_stream.hub.broker.Broker.publish` refuses (``offset_gap``,
            ``stream_ended``, ``not_found``…).
    """
    body = parse_json(data, "body")
    # {"runs": [...]}: runs placed already, lines as columns (the tstream-columns form).
    runs = body.get("runs") if body.__class__ is dict and len(body) == 1 else None
    count = run_count(runs) if runs is not None else len(body) if isinstance(body, list) else 1
    if count > h.config.max_batch:
        raise HubError(f"body: at most {h.config.max_batch} events at once")
    wait = h.publishers.take(host, trio.current_time(), count)
    if wait:
        raise RateLimited(
            f"publishing faster than {h.config.publish_per_second:g} events/s; "
            f"retry in {wait:.1f}s",
            wait,
        )
    if runs is not None:
        return await h.broker.publish_runs(stream_id, parse_runs(runs, stream_id))
    events, placed = parse_events(body, stream_id)
    return await h.broker.publish(stream_id, events, placed)


def published(result: PublishResult) -> dict[str, Any]:
    """The answer to a publish (the WebSocket's ``ack`` adds its ``type``)."""
    return {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "firstOffset": result.first_offset,
        "lastOffset": result.last_offset,
    }


def run_count(runs: Any) -> int:
    """The events of a ``runs`` message, as far as its shape tells (for the limits,
    before it is checked)."""
    if runs.__class__ is not list:
        return 1
    count = 0
    for run in runs:
        texts = run.get("x") if run.__class__ is dict else run
        count += len(texts) if texts.__class__ is list else 1
    return count


def parse_runs(runs: Any, stream_id: str) -> EventRuns:
    """Check a ``tstream-columns`` publish message's ``runs``: each the columns of a
    batch of lines (as :func:`~trio_stream.store.chunks.lines_item` writes them) or a
    list of events, every one placed, at consecutive offsets throughout.

    Returns:
        The runs, batches of lines kept as their columns (no event each).

    Raises:
        HubError: for an empty message; EventsInvalid naming the run and what is wrong.
    """
    if runs.__class__ is not list or not runs:
        raise EventsInvalid("runs: expected a list of runs, at least one")
    out: list[Sequence[Event]] = []
    expected: int | None = None
    for index, run in enumerate(runs):
        where = f"runs[{index}]"
        part: Sequence[Event]
        if run.__class__ is dict:
            try:
                part = lines_batch(stream_id, run, check=True)
            except ValueError as exc:
                raise EventsInvalid(f"{where}.{exc}") from None
        elif run.__class__ is list and run:
            try:
                part, placed = parse_events(run, stream_id)
            except EventsInvalid as exc:
                errors = [f"{where}.{e}" for e in exc.extra.get("errors", [])]
                raise EventsInvalid("; ".join(errors[:20]), errors=errors[:100]) from None
            if not all(placed):
                raise EventsInvalid(f"{where}: every event of a run is placed (has an offset)")
            offsets = [e.offset for e in part]
            if offsets != list(range(offsets[0], offsets[0] + len(offsets))):
                raise EventsInvalid(f"{where}: offsets must be consecutive")
        else:
            raise EventsInvalid(f"{where}: expected the columns of lines or a list of events")
        first = part.first_offset if isinstance(part, OutputBatch) else part[0].offset
        if expected is not None and first != expected:
            raise EventsInvalid(f"{where}: starts at offset {first}, not {expected}")
        expected = first + len(part)
        out.append(part)
    return EventRuns(out)
