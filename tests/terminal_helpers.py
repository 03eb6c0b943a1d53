"""What a terminal shows of events, for the tests of rows not built yet (store chunks,
hub messages)."""

from __future__ import annotations

from trio_stream.events import EventType


def terminal_bytes(events) -> list[tuple[str, bytes]]:
    """What a terminal shows of ``events``, one entry per line, from built events."""
    return [
        (
            e.data.source,
            e.data.raw if e.data.raw is not None else (e.data.text + e.data.eol).encode(),
        )
        for e in events
        if e.type is EventType.OUTPUT
    ]


def merged(parts: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """``parts`` with consecutive writes to one source joined."""
    out: list[tuple[str, bytes]] = []
    for source, data in parts:
        if out and out[-1][0] == source:
            out[-1] = (source, out[-1][1] + data)
        elif data:
            out.append((source, data))
    return out
