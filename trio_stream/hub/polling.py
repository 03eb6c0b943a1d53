"""Long polling: ``GET /api/streams/{id}/poll?after=N&timeout=25``.

Answers at once with the events after ``N`` (up to ``limit``), or waits up to ``timeout``
seconds for one and answers an empty list with the same cursor. The answer's ``cursor``
is the ``after`` of the next poll; it moves past events a filter skipped, so a filtered
poll does not scan them again. ``recovered: false`` says events after ``N`` are gone (or
``N`` is from another history): the answer starts at what remains.
"""

from __future__ import annotations

import orjson
import trio
from quart import Blueprint, Response, request

from .context import access, hub
from .frames import Frame
from .protocol import ProtocolError
from .rest import body_response
from .sse import parse_offset, query_filters

blueprint = Blueprint("polling", __name__)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ProtocolError("bad_request", f"limit: expected 1 to {MAX_LIMIT}, got {text!r}")
    return int(text)


def _timeout(text: str | None, maximum: float) -> float:
    if text is None:
        return min(25.0, maximum)
    try:
        value = float(text)
    except ValueError:
        raise ProtocolError("bad_request", f"timeout: expected seconds, got {text!r}") from None
    if not 0 <= value <= maximum:
        raise ProtocolError("bad_request", f"timeout: must be 0 to {maximum:g} seconds")
    return value


@blueprint.route("/api/streams/<stream_id>/poll")
@access("read")
async def poll(stream_id: str) -> Response:
    """``GET /api/streams/{id}/poll``: the events after a cursor, at once or after a wait."""
    h = hub()
    after = parse_offset(request.args.get("after", "-1"), "after")
    timeout = _timeout(request.args.get("timeout"), h.config.max_poll_timeout)
    limit = _limit(request.args.get("limit"))
    filters = query_filters(request.args)
    epoch = request.args.get("epoch")
    stream = await h.broker.get_stream(stream_id)
    await stream.settle()
    recovered = True
    if (epoch is not None and epoch != h.broker.store.epoch) or after > stream.last_offset:
        after, recovered = -1, False
    else:
        recovered = await stream.available_after(after)
    cursor = after
    frames: list[Frame] = []
    h.polls += 1
    try:
        with trio.move_on_after(timeout):
            while True:
                frames, cursor, _ = await stream.read_history(cursor, filters, limit)
                if frames or (stream.finished and cursor >= stream.last_offset):
                    break
                if cursor < stream.pumped:
                    continue
                await stream.wait_advanced()
    finally:
        h.polls -= 1
    ended = stream.finished and cursor >= stream.last_offset
    tail = orjson.dumps(
        {
            "cursor": cursor,
            "lastOffset": stream.last_offset,
            "ended": ended,
            "recovered": recovered,
            "epoch": h.broker.store.epoch,
        }
    )
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
