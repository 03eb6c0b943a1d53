"""The store protocol that every back-end (memory, sqlite, later redis) implements.

A store keeps sessions (:class:`SessionInfo`) and their events, keyed by the dense offsets
the session's log assigned. Reads take a :class:`HistoryQuery`. Every store has an
``epoch``: an id that changes when the store's history was reset, so that a client resuming
from an offset can tell "nothing new" from "the history I knew is gone".
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import attrs

from ..events import Event, EventType

if TYPE_CHECKING:
    from ..batches import EventRuns
    from .chunks import StoredEvents

SESSION_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


class StoreError(Exception):
    """Base of the store's errors; the CLI turns these into exit status 125."""


class UnknownSessionError(StoreError, LookupError):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"unknown session: {session_id}")


class OffsetConflictError(StoreError):
    """A batch whose first offset does not follow the session's newest one: another
    writer (a second hub on a shared store) placed those offsets already."""

    def __init__(self, session_id: str, offset: int, last: int) -> None:
        self.session_id = session_id
        self.offset = offset
        self.last = last
        super().__init__(f"session {session_id}: offset {offset} does not follow {last}")


class SessionExistsError(StoreError):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"session id already in use: {session_id}")


class AmbiguousSessionError(StoreError, LookupError):
    def __init__(self, prefix: str, matches: Sequence[str]) -> None:
        self.prefix = prefix
        self.matches = list(matches)
        shown = ", ".join(self.matches[:5]) + (", …" if len(self.matches) > 5 else "")
        super().__init__(f"session prefix {prefix!r} is ambiguous: {shown}")


class InvalidSessionIdError(StoreError, ValueError):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(
            f"invalid session id {session_id!r}: use 1 to 64 characters of A-Z a-z 0-9 . _ -"
        )


def check_session_id(session_id: str) -> str:
    """Return ``session_id`` if it is URL-safe, else raise InvalidSessionIdError."""
    if not isinstance(session_id, str) or not SESSION_ID_RE.fullmatch(session_id):
        raise InvalidSessionIdError(str(session_id))
    if session_id in {".", ".."}:
        raise InvalidSessionIdError(session_id)
    return session_id


class SessionStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # exit status 0
    FAILED = "failed"  # non-zero exit, or the command could not start
    KILLED = "killed"  # the child died of a signal
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"  # the recording process died before the session ended


@attrs.define
class SessionInfo:
    """What the store knows of one session (times are UTC epoch seconds)."""

    id: str
    command: list[str] = attrs.Factory(list)
    cwd: str = ""
    status: SessionStatus = SessionStatus.RUNNING
    created: float = 0.0
    last_activity: float = 0.0
    ended: float | None = None
    exit_status: int | None = None
    workflow_session_id: str | None = None
    metadata: dict[str, Any] = attrs.Factory(dict)
    tags: list[str] = attrs.Factory(list)
    events: int = 0
    last_offset: int = -1
    pid: int | None = None
    host: str = ""


@attrs.frozen
class HistoryQuery:
    """Which events to read.

    Attributes:
        after: only events with an offset greater than this (the resume cursor).
        types: only these event types (None: all).
        sources: only OUTPUT events from these sources, plus every non-output event.
        start_time, end_time: UTC epoch seconds, inclusive.
        search_text: only events whose text (or serialized data) contains this,
            case-insensitively, in its first 64 KiB
            (:data:`~trio_stream.filters.MAX_SEARCHED_TEXT` characters).
        limit: at most this many events (None: all).
        skip: skip this many matching events first (paging).
        last: only the last N matching events (applied before ``limit``).
    """

    after: int = -1
    types: frozenset[EventType] | None = None
    sources: frozenset[str] | None = None
    start_time: float | None = None
    end_time: float | None = None
    search_text: str | None = None
    limit: int | None = None
    skip: int = 0
    last: int | None = None


@runtime_checkable
class Store(Protocol):
    """What every store back-end offers. All methods are async and trio-safe."""

    @property
    def epoch(self) -> str:
        """Changes whenever this store's history is reset."""
        ...

    async def create_session(self, info: SessionInfo) -> SessionInfo:
        """Raises SessionExistsError if the id is taken, InvalidSessionIdError if bad."""
        ...

    async def get_session(self, session_id: str) -> SessionInfo:
        """Raises UnknownSessionError."""
        ...

    async def resolve(self, ref: str) -> SessionInfo:
        """``latest``, a full id or a unique id prefix. Raises Unknown/AmbiguousSessionError."""
        ...

    async def list_sessions(
        self, *, status: SessionStatus | None = None, limit: int | None = None
    ) -> list[SessionInfo]:
        """Newest first."""
        ...

    async def update_session(self, session_id: str, **changes: Any) -> SessionInfo: ...

    async def destroy_session(self, session_id: str) -> None: ...

    async def append(self, session_id: str, events: Sequence[Event]) -> None:
        """Record a batch of placed events (offsets already assigned, increasing)."""
        ...

    async def read(self, session_id: str, query: HistoryQuery = HistoryQuery()) -> list[Event]:
        """Events in offset order."""
        ...

    async def count(self, session_id: str, query: HistoryQuery = HistoryQuery()) -> int: ...

    async def last_offset(self, session_id: str) -> int:
        """The newest recorded offset, -1 when none."""
        ...

    async def clear(self, session_id: str) -> None:
        """Forget a session's events (its offsets go on from where they were)."""
        ...

    async def compact(self, session_id: str, keep_last: int) -> int:
        """Keep only the last ``keep_last`` events; return how many were removed."""
        ...

    async def prune(
        self,
        *,
        older_than: float | None = None,
        max_events: int | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Destroy sessions last active before ``older_than`` (epoch seconds) and compact
        the others to ``max_events``; return the ids destroyed."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class RowStore(Protocol):
    """A store that also reads events as its chunks hold them, not built yet."""

    async def read_rows(
        self, session_id: str, after: int = -1, limit: int = 10_000
    ) -> StoredEvents:
        """About ``limit`` events after ``after`` (whole chunks: a few more at most)."""
        ...


@runtime_checkable
class RunStore(Protocol):
    """A store that reads events with lines kept as its chunks' columns."""

    async def read_runs(self, session_id: str, after: int = -1, limit: int = 10_000) -> EventRuns:
        """About ``limit`` events after ``after`` (whole chunks: a few more at most), each
        batch of lines as one :class:`~trio_stream.batches.OutputBatch`."""
        ...
