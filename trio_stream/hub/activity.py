"""A stream's record of client activity, for ``GET /api/streams/{id}/stats`` over a time
range.

Each client connection is a :class:`ClientSession` (its transport, when it connected and
left, what it was sent, why it left), kept for the last :data:`SESSIONS_KEPT` connections
of the stream. What clients were sent is also counted per minute (the last
:data:`MINUTES_KEPT` minutes), so a window's ``eventsSent`` counts what was sent in it,
not what its clients were sent in all. The hub keeps these records for the
:data:`STREAMS_KEPT` streams most recently used (an ended stream leaves the hub's memory
once idle, its record stays), so they are bounded whatever the traffic.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from typing import TYPE_CHECKING, Any, Final, final

import attrs

if TYPE_CHECKING:
    from .clients import Client

STREAMS_KEPT: Final = 1000
SESSIONS_KEPT: Final = 1000
MINUTES_KEPT: Final = 24 * 60
# Why a client left when the hub did not end it: it closed or dropped the connection.
CLIENT_LEFT: Final = "client_left"


@attrs.define(slots=True)
class ClientSession:
    """One client connection of a stream."""

    client_id: str
    kind: str
    connected_at: float
    left_at: float | None = None
    events_sent: int = 0
    bytes_sent: int = 0
    reason: str | None = None

    def overlaps(self, start: float, end: float) -> bool:
        """Whether the connection was open at some time from ``start`` to ``end``."""
        return self.connected_at <= end and (self.left_at is None or self.left_at >= start)


@final
class ClientActivity:
    """The client sessions of one stream and what they were sent, minute by minute."""

    def __init__(self) -> None:
        self.sessions: deque[ClientSession] = deque(maxlen=SESSIONS_KEPT)
        self.open: dict[str, ClientSession] = {}
        # [minute, events, bytes], oldest first.
        self.minutes: deque[list[int]] = deque(maxlen=MINUTES_KEPT)

    def opened(self, client: Client) -> None:
        """``client`` connected."""
        session = ClientSession(client.id, client.kind.value, client.connected_at)
        self.sessions.append(session)
        self.open[client.id] = session

    def closed(self, client: Client, at: float) -> None:
        """``client`` is gone (at ``at``)."""
        session = self.open.pop(client.id, None)
        if session is None:
            return
        session.left_at = at
        session.events_sent = client.events_sent
        session.bytes_sent = client.bytes_sent
        session.reason = client.end_reason.value if client.end_reason else CLIENT_LEFT

    def sent(self, events: int, size: int, at: float) -> None:
        """A client was sent ``events`` events in ``size`` bytes at ``at``."""
        minute = int(at // 60)
        minutes = self.minutes
        if minutes and minutes[-1][0] == minute:
            last = minutes[-1]
            last[1] += events
            last[2] += size
        else:
            minutes.append([minute, events, size])

    def report(self, start: float | None, end: float | None) -> dict[str, Any]:
        """Client activity from ``start`` to ``end`` (epoch seconds; None: unbounded).

        ``connectionsOpened`` and ``disconnections`` (by reason) count what happened in
        the window; ``active`` the clients connected at some time in it; ``eventsSent``
        and ``bytesSent`` what clients were sent in the minutes the window touches.
        """
        low = -math.inf if start is None else start
        high = math.inf if end is None else end
        opened = 0
        active: Counter[str] = Counter()
        left: Counter[str] = Counter()
        for session in self.sessions:
            if low <= session.connected_at <= high:
                opened += 1
            if session.overlaps(low, high):
                active[session.kind] += 1
            if session.left_at is not None and low <= session.left_at <= high:
                left[session.reason or CLIENT_LEFT] += 1
        first = -math.inf if start is None else start // 60
        last = math.inf if end is None else end // 60
        events = size = 0
        for minute, sent_events, sent_bytes in self.minutes:
            if first <= minute <= last:
                events += sent_events
                size += sent_bytes
        oldest = self.sessions[0].connected_at if self.sessions else None
        return {
            "connectionsOpened": opened,
            "activeInWindow": sum(active.values()),
            "activeInWindowByType": dict(active),
            "disconnections": dict(left),
            "eventsSent": events,
            "bytesSent": size,
            # Sessions before this were forgotten (the record keeps the latest ones).
            "recordedSince": oldest,
        }


@final
class ActivityRecords:
    """The :class:`ClientActivity` of each stream, for the most recently used streams."""

    def __init__(self) -> None:
        self._records: OrderedDict[str, ClientActivity] = OrderedDict()

    def of(self, stream_id: str) -> ClientActivity:
        """The record of ``stream_id`` (a new one if none is kept)."""
        record = self._records.get(stream_id)
        if record is None:
            record = self._records[stream_id] = ClientActivity()
            if len(self._records) > STREAMS_KEPT:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(stream_id)
        return record

    def forget(self, stream_id: str) -> None:
        """Drop the record of a deleted stream."""
        self._records.pop(stream_id, None)
