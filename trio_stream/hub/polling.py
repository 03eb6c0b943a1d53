"""Long polling: ``GET /api/streams/{id}/poll?after=N&timeout=25``.

Answers at once with the events after ``N`` (up to ``limit``), or waits up to ``timeout``
seconds for one and answers an empty list with the same cursor. The answer's ``cursor``
is the ``after`` of the next poll; it moves past events a filter skipped, so a filtered
poll does not scan them again. ``recovered: false`` says events after ``N`` are gone (or
``N`` is from another history): the answer starts at what remains.
"""

from __future__ import annotations

import trio
from quart import Blueprint, Response, request

from .context import access, hub
from .frames import Frame
from .params import LIMITS, query_after, query_epoch, query_filters, query_int, query_seconds
from .rest import events_page

blueprint = Blueprint("polling", __name__)


@blueprint.route("/api/streams/<stream_id>/poll")
@access("read")
async def poll(stream_id: str) -> Response:
    """``GET /api/streams/{id}/poll``: the events after a cursor, at once or after a wait."""
    h = hub()
    args = request.args
    after = query_after(args)
    timeout = query_seconds(args, "timeout", LIMITS.default_poll_wait, h.config.max_poll_timeout)
    limit = query_int(args, "limit", LIMITS.default_page, 1, LIMITS.page)
    filters = query_filters(args)
    epoch = query_epoch(args)
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
    return events_page(
        stream,
        frames,
        {
            "cursor": cursor,
            "lastOffset": stream.last_offset,
            "ended": ended,
            "recovered": recovered,
            "epoch": h.broker.store.epoch,
        },
    )
