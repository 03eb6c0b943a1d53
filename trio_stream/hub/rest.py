"""The REST API: streams, clients, history, replay, publishing, stats and metrics.

Every answer is JSON; every error is ``{"error": {"code", "message", …}}`` with its HTTP
status. Reading needs the ``read`` scope, changing anything the ``publish`` scope (when
tokens are configured).
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Sequence
from typing import Any, Final

import orjson
from quart import Blueprint, Response, request

from ..events import EventType
from ..filters import EventFilter
from ..store.base import HistoryQuery, SessionStatus
from . import ingest
from .context import access, host_of, hub, json_response
from .errors import HubError, ProtocolError
from .frames import Frame, frames_of
from .items import EndReason
from .metrics import metrics_json, prometheus
from .openapi import OPENAPI_PATH, openapi_document
from .params import LIMITS, parse_json, query_after, query_filters, query_int, query_last_n
from .protocol import parse_replay
from .sse import check_replay
from .streams import MAX_PATTERN_SCAN, Stream

blueprint = Blueprint("rest", __name__)

GZIP_TYPES: Final = "application/json"
PAGE: Final = 1000
# The events of a stream not in memory whose sizes give its largestEventSize.
LARGEST_SAMPLE: Final = 1000


def body_response(body: bytes, status: int = 200, *, compress: bool = True) -> Response:
    """A JSON answer, gzipped when it is over the threshold and the client accepts it
    (and ``compress``: the stream's ``compressionEnabled``)."""
    h = hub()
    headers = {"Vary": "Accept-Encoding"}
    if (
        compress
        and len(body) >= max(1, h.config.compression_threshold)
        and "gzip" in request.headers.get("Accept-Encoding", "")
    ):
        body = gzip.compress(body, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
    return Response(body, status=status, headers=headers, content_type=GZIP_TYPES)


def events_page(stream: Stream, frames: Sequence[Frame], fields: dict[str, Any]) -> Response:
    """``{"streamId", "events": […], **fields}`` (``fields`` not empty), the events' JSON
    spliced in as it is, gzipped as :func:`body_response` says."""
    tail = orjson.dumps(fields)
    body = b"".join(
        (
            b'{"streamId":',
            orjson.dumps(stream.id),
            b',"events":[',
            b",".join(f.raw for f in frames),
            b"],",
            tail[1:],
        )
    )
    return body_response(body, compress=stream.settings.compression)


async def _json_body() -> Any:
    return parse_json(await _body_bytes(), "body")


async def _body_bytes() -> bytes:
    if request.mimetype != "application/json":
        raise HubError("Content-Type must be application/json")
    return await request.get_data(cache=False)


@blueprint.route("/healthz")
@access("public")
async def healthz() -> Response:
    """``GET /healthz``; ``epoch`` tells a publisher whether the hub records into its own
    store."""
    h = hub()
    return json_response(
        {
            "status": "ok",
            "uptime": time.time() - h.started,
            "shuttingDown": h.broker.shutting_down,
            "epoch": h.broker.store.epoch,
        }
    )


@blueprint.route(OPENAPI_PATH)
@access("public")
async def openapi() -> Response:
    """``GET /api/openapi.json``: this API as an OpenAPI 3.1 document (no token needed)."""
    return json_response(openapi_document(hub().config))


@blueprint.route("/metrics")
@access("read")
async def metrics_text() -> Response:
    """``GET /metrics``: Prometheus text."""
    h = hub()
    return Response(prometheus(h), content_type="text/plain; version=0.0.4; charset=utf-8")


@blueprint.route("/api/streams/metrics")
@access("read")
async def metrics() -> Response:
    """``GET /api/streams/metrics``."""
    h = hub()
    return json_response(metrics_json(h))


@blueprint.route("/api/streams", methods=["GET"])
@access("read")
async def list_streams() -> Response:
    """``GET /api/streams``: newest first, ``limit`` at a time from ``offset``; ``q``
    keeps those whose id or command contains it, ``status`` those in that state."""
    h = hub()
    args = request.args
    limit = query_int(args, "limit", LIMITS.default_list_page, 1, LIMITS.list_page)
    status_text = args.get("status")
    status = None
    if status_text is not None:
        try:
            status = SessionStatus(status_text)
        except ValueError:
            names = ", ".join(s.value for s in SessionStatus)
            raise ProtocolError("bad_request", f"status: use one of {names}") from None
    skip = query_int(args, "offset", 0, 0, LIMITS.list_skip) or 0
    search = args.get("q", "").strip().casefold()
    if search:
        # The store lists, the hub matches: ids and commands are short, and a hub keeps
        # thousands of sessions, not millions.
        infos = [
            info
            for info in await h.broker.store.list_sessions(status=status)
            if search in info.id.casefold() or search in " ".join(info.command).casefold()
        ]
        total = len(infos)
        infos = infos[skip : skip + limit]
    else:
        infos = await h.broker.store.list_sessions(status=status, limit=skip + limit + 1)
        total = None if len(infos) > skip + limit else len(infos)
        infos = infos[skip : skip + limit]
    out = []
    for info in infos:
        live = h.broker.in_memory(info.id)
        if live is not None and not live.behind:
            out.append({**live.describe(), "events": info.events})
        else:
            # Not in memory, or a stream on a shared store that this hub has not read
            # since its last appends: the store's row is the newer.
            out.append(
                {
                    "id": info.id,
                    "status": info.status.value,
                    "live": live is not None and not live.finished,
                    "workflowSessionId": info.workflow_session_id,
                    "command": info.command,
                    "created": info.created,
                    "lastActivity": info.last_activity,
                    "ended": info.ended,
                    "exitStatus": info.exit_status,
                    "lastOffset": info.last_offset,
                    "events": info.events,
                    "clients": 0,
                }
            )
    # ``more`` says whether a next page exists; ``total`` is known when the list was read
    # to its end.
    more = total is None or skip + len(out) < total
    return json_response({"streams": out, "offset": skip, "more": more, "total": total})


@blueprint.route("/api/streams", methods=["POST"])
@access("publish")
async def create_stream() -> Response:
    """``POST /api/streams``."""
    h = hub()
    body = await _json_body()
    if not isinstance(body, dict):
        raise HubError("body: expected an object")
    unknown = sorted(set(body) - {"id", "workflowSessionId", "config"})
    if unknown:
        raise HubError(f"{unknown[0]}: unknown field", field=unknown[0])
    sid = body.get("id")
    if sid is not None and not isinstance(sid, str):
        raise HubError("id: expected a string", field="id")
    workflow = body.get("workflowSessionId")
    if workflow is not None and (
        not isinstance(workflow, str) or len(workflow) > LIMITS.workflow_id
    ):
        raise HubError(
            f"workflowSessionId: expected a string of at most {LIMITS.workflow_id} characters",
            field="workflowSessionId",
        )
    config = body.get("config")
    if config is not None and not isinstance(config, dict):
        raise HubError("config: expected an object", field="config")
    stream = await h.broker.create_stream(sid, workflow_session_id=workflow, config=config)
    return json_response(stream.describe(), 201, headers={"Location": f"/api/streams/{stream.id}"})


@blueprint.route("/api/streams/<stream_id>", methods=["GET"])
@access("read")
async def get_stream(stream_id: str) -> Response:
    """``GET /api/streams/{id}``."""
    h = hub()
    stream = await h.broker.get_stream(stream_id, revive=False)
    return json_response(stream.describe())


@blueprint.route("/api/streams/<stream_id>", methods=["DELETE"])
@access("publish")
async def delete_stream(stream_id: str) -> Response:
    """``DELETE /api/streams/{id}``: end it, then delete it."""
    h = hub()
    await h.broker.delete_stream(stream_id)
    return json_response({"deleted": stream_id})


@blueprint.route("/api/streams/<stream_id>/clients", methods=["GET"])
@access("read")
async def list_clients(stream_id: str) -> Response:
    """``GET /api/streams/{id}/clients``."""
    h = hub()
    stream = await h.broker.get_stream(stream_id, revive=False)
    return json_response(
        {"streamId": stream.id, "clients": [c.describe() for c in stream.clients.values()]}
    )


@blueprint.route("/api/streams/<stream_id>/clients/<client_id>", methods=["DELETE"])
@access("publish")
async def kick_client(stream_id: str, client_id: str) -> Response:
    """``DELETE /api/streams/{id}/clients/{client}``: close it with 4004."""
    h = hub()
    stream = await h.broker.get_stream(stream_id, revive=False)
    client = h.broker.find_client(stream, client_id)
    client.end(EndReason.DISCONNECTED)
    return json_response({"disconnected": client.id, "lastOffset": client.position})


async def _history(
    stream: Stream, filters: EventFilter, *, after: int, limit: int, skip: int, last: int | None
) -> list[Frame]:
    """Matching events from the store, then those still waiting for the recorder."""
    store = stream.broker.store
    if last is not None:
        frames = await stream.last_matching(filters, last, after=after)
        return frames[skip : skip + limit]
    if not stream.settings.persist:
        # Its config keeps its events in memory only.
        kept = [f for f in stream.frames if f.offset > after and filters.matches(f.event, f.raw)]
        return kept[skip : skip + limit]
    if filters.exact:
        query = filters.to_query(after=after, limit=limit, skip=skip)
        frames = [Frame.of(e) for e in await store.read(stream.id, query)]
        if skip or len(frames) >= limit:
            return frames
        cursor = frames[-1].offset if frames else after
    else:
        # The store cannot match a regular expression (nor sessions, nor several
        # filters): page through it, matching here.
        frames = []
        cursor = after
        scanned = 0
        while len(frames) < limit + skip and scanned < MAX_PATTERN_SCAN:
            page = await store.read(stream.id, filters.to_query(after=cursor, limit=PAGE))
            frames.extend(Frame.of(e) for e in page if filters.matches(e))
            scanned += len(page)
            if len(page) < PAGE:
                break
            cursor = page[-1].offset
        cursor = frames[-1].offset if len(frames) >= limit + skip else max(cursor, after)
        frames = frames[skip:]
        if len(frames) >= limit:
            return frames[:limit]
    seen = max(cursor, stream.recorded)
    extra = [f for f in stream.frames if f.offset > seen and filters.matches(f.event, f.raw)]
    return frames + extra[: limit - len(frames)]


@blueprint.route("/api/streams/<stream_id>/history")
@access("read")
async def history(stream_id: str) -> Response:
    """``GET /api/streams/{id}/history``: filtered, paged, gzipped when large."""
    h = hub()
    args = request.args
    filters = query_filters(args)
    limit = query_int(args, "limit", LIMITS.default_page, 1, LIMITS.page)
    skip = query_int(args, "offset", 0, 0, LIMITS.history_skip) or 0
    after = query_after(args)
    last = query_last_n(args)
    stream = await h.broker.get_stream(stream_id, revive=False)
    # Events already published but not yet taken by the fan-out would be in neither the
    # store nor memory: wait for the tick that takes them.
    await stream.settle()
    frames = await _history(stream, filters, after=after, limit=limit, skip=skip, last=last)
    return events_page(
        stream,
        frames,
        {"lastOffset": stream.last_offset, "epoch": h.broker.store.epoch, "count": len(frames)},
    )


@blueprint.route("/api/streams/<stream_id>/replay/<client_id>", methods=["POST"])
@access("publish")
async def replay(stream_id: str, client_id: str) -> Response:
    """``POST /api/streams/{id}/replay/{client}``: send a client history."""
    h = hub()
    body = await _json_body()
    if not isinstance(body, dict):
        raise HubError("body: expected an object")
    unknown = sorted(set(body) - {"replayOptions", "filters", "limit"})
    if unknown:
        raise HubError(f"{unknown[0]}: unknown field")
    # What a WebSocket's ``replay`` message asks, from the start of the stream by default.
    asked = parse_replay(body)
    stream = await h.broker.get_stream(stream_id, revive=False)
    check_replay(stream, asked.replay)
    client = h.broker.find_client(stream, client_id)
    client.request_replay(asked.replay, asked.filters, asked.limit)
    return json_response({"clientId": client.id, "queued": True}, 202)


@blueprint.route("/api/streams/<stream_id>/events", methods=["POST"])
@access("publish")
async def publish(stream_id: str) -> Response:
    """``POST /api/streams/{id}/events``: one event or a list."""
    result = await ingest.publish(hub(), stream_id, host_of(request.scope), await _body_bytes())
    return json_response(ingest.published(result))


def _held_since(stream: Stream, now: float) -> int:
    """Events of the last hour in memory (a stream that keeps its events there only)."""
    return sum(1 for f in stream.frames if f.event.ts >= now - 3600)


@blueprint.route("/api/streams/<stream_id>/stats")
@access("read")
async def stats(stream_id: str) -> Response:
    """``GET /api/streams/{id}/stats``: event types and client activity, both over the
    ``startTime``/``endTime`` window (``clients`` is who is connected now), and the
    design's ``StreamStats``."""
    h = hub()
    filters = query_filters(request.args)
    stream = await h.broker.get_stream(stream_id, revive=False)
    await stream.wait_recorded(stream.last_offset)
    distribution: dict[str, int] = {}
    for etype in EventType:
        if filters.types is not None and etype not in filters.types:
            continue
        query = HistoryQuery(
            types=frozenset({etype}), start_time=filters.start_time, end_time=filters.end_time
        )
        count = await h.broker.store.count(stream.id, query)
        if count:
            distribution[etype.value] = count
    clients = list(stream.clients.values())
    by_type: dict[str, int] = {}
    for client in clients:
        by_type[client.kind.value] = by_type.get(client.kind.value, 0) + 1
    now = time.time()
    total = stream.last_offset + 1
    last_hour = await h.broker.store.count(stream.id, HistoryQuery(start_time=now - 3600))
    held = sum(len(f.raw) for f in stream.frames)
    largest = max(stream.largest_event, max((len(f.raw) for f in stream.frames), default=0))
    if not largest and total:
        # Not in memory (an ended stream read from the store): its last events tell.
        recent = await h.broker.store.read(stream.id, HistoryQuery(last=LARGEST_SAMPLE))
        largest = max((len(f.raw) for f in frames_of(recent)), default=0)
    info = stream.info
    lifetime = max((info.ended or now) - info.created, 1.0)
    return json_response(
        {
            "streamId": stream.id,
            "clientCount": len(clients),
            "totalEvents": total,
            "eventsInLastHour": last_hour if stream.settings.persist else _held_since(stream, now),
            "averageEventFrequency": total / lifetime,
            "largestEventSize": largest,
            "memoryUsage": held,
            "window": {"startTime": filters.start_time, "endTime": filters.end_time},
            "eventTypes": distribution,
            "events": sum(distribution.values()),
            "lastOffset": stream.last_offset,
            "publishedHere": stream.events_published,
            "duplicatesSkipped": stream.duplicates,
            "clients": {
                "active": len(clients),
                "byType": by_type,
                "connections": stream.connections,
                "slowConsumers": stream.cut,
                "eventsSent": sum(c.events_sent for c in clients),
                "bytesSent": sum(c.bytes_sent for c in clients),
            },
            "clientActivity": stream.activity.report(filters.start_time, filters.end_time),
        }
    )
