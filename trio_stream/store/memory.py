"""The memory store: a bounded ring of events per session, for embedding and tests."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any, Final, final

import attrs

from ..events import Event
from . import chunks
from . import query as q
from .base import (
    AmbiguousSessionError,
    HistoryQuery,
    SessionExistsError,
    SessionInfo,
    SessionStatus,
    StoreError,
    UnknownSessionError,
)
from .retention import SessionPruning
from .sessions import apply_changes, check_batch, new_session

DEFAULT_MAX_HISTORY: Final = 10_000


@attrs.define
class _Held:
    """A session and its ring of newest events.

    Appended events wait as the runs they came in (``pending``), built into the ring only
    when something reads it: a recorder appending a million lines in batches of columns
    builds none of them, and runs the ring would drop whole are dropped unbuilt.
    """

    info: SessionInfo
    ring: deque[Event]
    pending: deque[Sequence[Event]] = attrs.Factory(deque)
    pending_count: int = 0

    @property
    def events(self) -> deque[Event]:
        """The ring, every appended event in it (the newest ``maxlen``)."""
        if self.pending:
            self._settle()
        return self.ring

    def count(self) -> int:
        """The events the ring holds, without building them."""
        assert self.ring.maxlen is not None
        return min(self.ring.maxlen, len(self.ring) + self.pending_count)

    def add(self, events: Sequence[Event]) -> None:
        maxlen = self.ring.maxlen
        assert maxlen is not None
        pending = self.pending
        pending.append(events)
        self.pending_count += len(events)
        while self.pending_count - len(pending[0]) >= maxlen:
            self.pending_count -= len(pending.popleft())

    def clear(self) -> None:
        self.ring.clear()
        self.pending.clear()
        self.pending_count = 0

    def _settle(self) -> None:
        assert self.ring.maxlen is not None
        # Only the first run can hold events that fall off the ring at once.
        skip = max(0, self.pending_count - self.ring.maxlen)
        for run in self.pending:
            self.ring.extend(run[skip:] if skip else run)
            skip = 0
        self.pending.clear()
        self.pending_count = 0


@final
class MemoryStore(SessionPruning):
    """Sessions and their newest events, in this process only.

    Each session keeps its last ``max_history`` events; older ones fall off the ring (the
    session's ``last_offset`` still counts them, so offsets never repeat).

    Args:
        max_history: events kept per session (at least 1).

    Raises:
        ValueError: for a ``max_history`` below 1.
    """

    def __init__(self, *, max_history: int = DEFAULT_MAX_HISTORY) -> None:
        if max_history < 1:
            raise ValueError(f"max_history must be at least 1, not {max_history}")
        self.max_history = max_history
        self._sessions: dict[str, _Held] = {}
        self._epoch = uuid.uuid4().hex
        self._closed = False

    @property
    def epoch(self) -> str:
        return self._epoch

    def _held(self, session_id: str) -> _Held:
        if self._closed:
            raise StoreError("the memory store is closed")
        try:
            return self._sessions[session_id]
        except KeyError:
            raise UnknownSessionError(session_id) from None

    def _snapshot(self, held: _Held) -> SessionInfo:
        return attrs.evolve(
            held.info,
            events=held.count(),
            command=list(held.info.command),
            metadata=dict(held.info.metadata),
            tags=list(held.info.tags),
        )

    async def create_session(self, info: SessionInfo) -> SessionInfo:
        if self._closed:
            raise StoreError("the memory store is closed")
        info = new_session(info)
        if info.id in self._sessions:
            raise SessionExistsError(info.id)
        self._sessions[info.id] = _Held(info, deque(maxlen=self.max_history))
        return self._snapshot(self._sessions[info.id])

    async def get_session(self, session_id: str) -> SessionInfo:
        return self._snapshot(self._held(session_id))

    async def resolve(self, ref: str) -> SessionInfo:
        if self._closed:
            raise StoreError("the memory store is closed")
        if ref == "latest":
            if not self._sessions:
                raise UnknownSessionError(ref)
            newest = max(self._sessions.values(), key=lambda h: (h.info.created, h.info.id))
            return self._snapshot(newest)
        if ref in self._sessions:
            return self._snapshot(self._sessions[ref])
        matches = sorted(sid for sid in self._sessions if sid.startswith(ref))
        if not matches or not ref:
            raise UnknownSessionError(ref)
        if len(matches) > 1:
            raise AmbiguousSessionError(ref, matches)
        return self._snapshot(self._sessions[matches[0]])

    async def list_sessions(
        self, *, status: SessionStatus | None = None, limit: int | None = None
    ) -> list[SessionInfo]:
        if self._closed:
            raise StoreError("the memory store is closed")
        held = sorted(
            self._sessions.values(), key=lambda h: (h.info.created, h.info.id), reverse=True
        )
        if status is not None:
            held = [h for h in held if h.info.status == status]
        if limit is not None:
            held = held[: max(0, limit)]
        return [self._snapshot(h) for h in held]

    async def update_session(self, session_id: str, **changes: Any) -> SessionInfo:
        held = self._held(session_id)
        held.info = apply_changes(held.info, changes)
        return self._snapshot(held)

    async def destroy_session(self, session_id: str) -> None:
        self._held(session_id)
        del self._sessions[session_id]

    async def append(self, session_id: str, events: Sequence[Event]) -> None:
        held = self._held(session_id)
        if not events:
            return
        last = check_batch(session_id, events, held.info.last_offset)
        # Only the newest events stay in the ring, built when it is read (a batch of lines
        # holds its lines as columns until an event is asked for).
        # A list may change once appended: the ring keeps a copy of it.
        held.add(list(events) if isinstance(events, list) else events)
        held.info.last_offset = last
        newest = chunks.last_stamp(events)
        held.info.last_activity = max(held.info.last_activity, newest, time.time())

    async def read(self, session_id: str, query: HistoryQuery = HistoryQuery()) -> list[Event]:
        return q.select(self._held(session_id).events, query)

    async def count(self, session_id: str, query: HistoryQuery = HistoryQuery()) -> int:
        return q.count(self._held(session_id).events, query)

    async def last_offset(self, session_id: str) -> int:
        return self._held(session_id).info.last_offset

    async def clear(self, session_id: str) -> None:
        self._held(session_id).clear()

    async def compact(self, session_id: str, keep_last: int) -> int:
        if keep_last < 0:
            raise ValueError(f"keep_last must be 0 or more, not {keep_last}")
        events = self._held(session_id).events
        removed = max(0, len(events) - keep_last)
        for _ in range(removed):
            events.popleft()
        return removed

    async def aclose(self) -> None:
        self._closed = True
        self._sessions.clear()
