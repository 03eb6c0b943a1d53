"""Sessions as files: export to and import from JSON lines, one event per line.

The file holds the session's events exactly as :func:`~trio_stream.events.event_to_json`
writes them, nothing else; what the store knows of the session (command, status, times)
is rebuilt on import from its ``session_started`` and ``session_ended`` events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import trio

from ..events import (
    Event,
    EventType,
    EventValidationError,
    SessionEnded,
    SessionStarted,
    event_from_json,
    event_to_json,
)
from .base import (
    HistoryQuery,
    RunStore,
    SessionInfo,
    SessionStatus,
    Store,
    StoreError,
    check_session_id,
)
from .query import read_batches, read_pages
from .sessions import status_for_end

IMPORT_BATCH: Final = 10_000


class SessionFileError(ValueError):
    """A line of a session file is not a valid event of the session.

    Attributes:
        line: the 1-based line number, None for a problem of the whole file.
    """

    def __init__(self, line: int | None, message: str) -> None:
        self.line = line
        super().__init__(message if line is None else f"line {line}: {message}")


async def export_session(
    store: Store, session_id: str, write: Callable[[bytes], Any], *, batch: int = IMPORT_BATCH
) -> int:
    """Write every stored event of ``session_id`` as JSON lines through ``write``.

    Returns:
        How many events were written.

    Raises:
        UnknownSessionError: for an unknown session.
    """
    written = 0
    if isinstance(store, RunStore):
        # Lines go from the chunks' columns or text to their JSON, without an event each
        # (the same bytes as event_to_json's).
        from ..hub.frames import json_lines

        recorded = await store.last_offset(session_id)
        async for runs in read_pages(store, session_id, -1, recorded, page=batch):
            write(json_lines(runs))
            written += len(runs)
        return written
    async for events in read_batches(store, session_id, HistoryQuery(), batch=batch):
        write(b"".join([event_to_json(e) + b"\n" for e in events]))
        written += len(events)
    return written


def _parsed(lines: Iterable[bytes | str], session_id: str | None) -> Iterator[tuple[int, Event]]:
    first_session: str | None = None
    last_offset = -1
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            event = event_from_json(raw)
        except EventValidationError as exc:
            raise SessionFileError(number, str(exc)) from None
        if first_session is None:
            first_session = event.session
        elif event.session != first_session:
            raise SessionFileError(
                number,
                f"session: {event.session!r} differs from {first_session!r} "
                "(a file holds one session)",
            )
        if event.offset <= last_offset:
            raise SessionFileError(number, f"offset: {event.offset} does not follow {last_offset}")
        last_offset = event.offset
        if session_id is not None:
            event = event.with_offset(session_id, event.offset)
        yield number, event


async def import_session(
    store: Store, lines: Iterable[bytes | str], *, session_id: str | None = None
) -> SessionInfo:
    """Record the session in ``lines`` (JSON lines, one event each) into ``store``.

    Every line is checked with :func:`~trio_stream.events.event_from_json`; the session is
    created at the first event and destroyed again if a later line is bad, so an import
    is all or nothing.

    Args:
        store: where to record it.
        lines: the file's lines.
        session_id: record under this id instead of the one in the file.

    Returns:
        The imported session.

    Raises:
        SessionFileError: naming the line number of the first bad line, or for a file
            without events.
        SessionExistsError: when the id is taken.
        InvalidSessionIdError: for a bad id.
    """
    if session_id is not None:
        check_session_id(session_id)
    created: SessionInfo | None = None
    pending: list[Event] = []
    started: SessionStarted | None = None
    ended: tuple[Event, SessionEnded] | None = None
    last: Event | None = None
    try:
        for number, event in _parsed(lines, session_id):
            if created is None:
                try:
                    sid = check_session_id(event.session)
                except StoreError as exc:
                    raise SessionFileError(number, f"session: {exc}") from None
                # Recorded as interrupted until its end proves otherwise, so that a failed
                # import never leaves a session that looks like it is still running.
                created = await store.create_session(
                    SessionInfo(sid, status=SessionStatus.INTERRUPTED, created=event.ts)
                )
            if event.type is EventType.SESSION_STARTED and started is None:
                assert isinstance(event.data, SessionStarted)
                started = event.data
            elif event.type is EventType.SESSION_ENDED:
                assert isinstance(event.data, SessionEnded)
                ended = (event, event.data)
            pending.append(event)
            last = event
            if len(pending) >= IMPORT_BATCH:
                await store.append(created.id, pending)
                pending = []
        if created is None or last is None:
            raise SessionFileError(None, "the file holds no events")
        if pending:
            await store.append(created.id, pending)
        changes: dict[str, Any] = {"last_activity": last.ts}
        if started is not None:
            changes.update(
                command=list(started.command),
                cwd=started.cwd,
                metadata=dict(started.metadata),
                host=started.hostname,
            )
        if ended is not None:
            event, end = ended
            changes.update(status=status_for_end(end), exit_status=end.exit_status, ended=event.ts)
        else:
            changes.update(ended=last.ts)
        return await store.update_session(created.id, **changes)
    except BaseException:
        if created is not None:
            with trio.CancelScope(shield=True):
                await store.destroy_session(created.id)
        raise
