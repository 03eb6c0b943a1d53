"""Session bookkeeping shared by the back-ends: new sessions, updates, liveness."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..batches import EventBatch, EventRuns
from ..events import Event, SessionEnded
from .base import (
    OffsetConflictError,
    SessionInfo,
    SessionStatus,
    StoreError,
    check_session_id,
)

_FIELDS = frozenset(field.name for field in attrs.fields(SessionInfo)) - {"id"}


def check_batch(session_id: str, events: Sequence[Event], after: int) -> int:
    """Check that ``events`` belong to ``session_id`` with increasing offsets above ``after``.

    Returns:
        The last event's offset.

    Raises:
        StoreError: naming the first event that does not fit.
    """
    last = after
    if isinstance(events, EventRuns):
        for run in events.runs:
            if isinstance(run, EventBatch) and run.session == session_id:
                if run.first_offset <= last:
                    raise OffsetConflictError(session_id, run.first_offset, last)
                last = run.last_offset
            else:
                last = check_batch(session_id, run, last)
        return last
    for event in events:
        if event.session != session_id:
            raise StoreError(
                f"event {event.id} belongs to session {event.session!r}, not {session_id!r}"
            )
        if event.offset <= last:
            raise OffsetConflictError(session_id, event.offset, last)
        last = event.offset
    return last


def new_session(info: SessionInfo) -> SessionInfo:
    """A copy of ``info`` ready to be stored: id checked, times, pid and host filled in.

    An unset ``created`` becomes now; an unset ``pid``/``host`` become this process and
    this machine (the recording process, which is what tells a live session from an
    interrupted one).

    Raises:
        InvalidSessionIdError: for an id that is not URL-safe.
    """
    check_session_id(info.id)
    created = info.created or time.time()
    return attrs.evolve(
        info,
        status=SessionStatus(info.status),
        created=created,
        last_activity=max(info.last_activity, created),
        pid=os.getpid() if info.pid is None else info.pid,
        host=info.host or socket.gethostname(),
        command=list(info.command),
        metadata=dict(info.metadata),
        tags=list(info.tags),
    )


def apply_changes(info: SessionInfo, changes: Mapping[str, Any]) -> SessionInfo:
    """``info`` with ``changes`` applied.

    Raises:
        ValueError: naming an unknown field, or a status that does not exist.
    """
    unknown = sorted(set(changes) - _FIELDS)
    if unknown:
        raise ValueError(f"cannot update session field(s): {', '.join(unknown)}")
    if "status" in changes:
        try:
            changes = {**changes, "status": SessionStatus(changes["status"])}
        except ValueError:
            raise ValueError(f"unknown session status {changes['status']!r}") from None
    return attrs.evolve(info, **changes)


def _stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command's name (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux), or None.

    Used with the pid to tell the recording process from a later one that reused its pid.
    """
    return _start_time(_stat(pid))


def _start_time(fields: list[bytes] | None) -> int | None:
    try:
        return None if fields is None else int(fields[19])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether ``pid`` is a live process (and the same one, when ``start_time`` is known).

    A process that has ended but that its parent has not waited for yet (a zombie) is not
    alive: it records nothing more.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    fields = _stat(pid)
    if fields is not None and fields[:1] == [b"Z"]:
        return False
    if start_time is not None:
        current = _start_time(fields)
        if current is not None and current != start_time:
            return False
    return True


def status_of(
    exit_status: int | None,
    signal: int | None,
    *,
    timed_out: bool = False,
    interrupted: bool = False,
) -> SessionStatus:
    """The status a session ends in, from how its command ended: the one mapping every
    part of tstream uses (a run, a hub, the store's repair of killed runs)."""
    if interrupted:
        return SessionStatus.INTERRUPTED
    if timed_out:
        return SessionStatus.TIMED_OUT
    if signal is not None:
        return SessionStatus.KILLED
    if exit_status == 0:
        return SessionStatus.COMPLETED
    return SessionStatus.FAILED


def status_for_end(ended: SessionEnded) -> SessionStatus:
    """The status a session ends in, from its ``session_ended`` event."""
    return status_of(
        ended.exit_status, ended.signal, timed_out=ended.timed_out, interrupted=ended.interrupted
    )
