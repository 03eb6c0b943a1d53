"""Publishing typed events into a session, from any trio task.

:class:`Publisher` wraps a session's :class:`~trio_stream.log.SessionLog` with one method
per event kind. Each call places the event at once (the offset is assigned synchronously)
and returns the placed event.

Code outside a session reaches it by id through a :class:`SessionRegistry`: the session
registers its log for as long as it runs (:meth:`SessionRegistry.register`), and any task of
the same process gets a publisher with :meth:`SessionRegistry.publisher`. The process-wide
:data:`live_sessions` is the registry ``tstream`` sessions use.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final, final

from .batches import DocumentBatch
from .events import (
    PAYLOADS,
    Command,
    Custom,
    Error,
    Event,
    EventType,
    EventValidationError,
    Json,
    Match,
    Payload,
    Reasoning,
    Screenshot,
    Source,
    Status,
    VariableUpdate,
    make_event,
    placed_events,
    type_name,
)
from .log import SessionLog
from .store.base import UnknownSessionError


@final
class Publisher:
    """Typed publishing into one session's log.

    Args:
        log: the session's log.
        drop_types: event types this publisher leaves out (``--filter drop:type=…``); a
            left-out event is returned unplaced (offset -1) and counted in :attr:`dropped`.
    """

    def __init__(self, log: SessionLog, *, drop_types: Collection[EventType] = ()) -> None:
        self.log = log
        self.drop_types = frozenset(drop_types)
        self.dropped = 0

    @property
    def session_id(self) -> str:
        return self.log.session_id

    def publish_event(
        self, type: EventType | str, data: Payload, *, ts: float | None = None
    ) -> Event:
        """Publish any event; ``data`` must be the payload class of ``type``."""
        extra = {} if ts is None else {"ts": ts}
        event = make_event(type, data, **extra)
        if event.type in self.drop_types:
            self.dropped += 1
            return event
        (placed,) = self.log.append([event])
        return placed

    def publish_events(self, events: list[Event]) -> list[Event]:
        """Publish several events at consecutive offsets."""
        if self.drop_types:
            kept = [e for e in events if e.type not in self.drop_types]
            self.dropped += len(events) - len(kept)
            events = kept
        return self.log.append(events)

    def publish_payloads(
        self,
        type: EventType | Sequence[EventType],
        payloads: Sequence[Payload],
        *,
        ts: float | None = None,
    ) -> list[Event]:
        """Publish one event per payload, all stamped ``ts`` (default: now).

        The fast path for processors that turn a batch of lines into many events.

        Args:
            type: the type of every event, or one type per payload.
            payloads: the payloads, in order.
            ts: the timestamp of every event.

        Raises:
            EventValidationError: when a payload is not its type's payload class, or
                ``type`` is a sequence of another length than ``payloads``.
        """
        if not payloads:
            return []
        types = [type] * len(payloads) if isinstance(type, EventType) else list(type)
        if len(types) != len(payloads):
            raise EventValidationError([f"type: {len(types)} types for {len(payloads)} payloads"])
        for etype, data in zip(types, payloads, strict=True):
            if data.__class__ is not PAYLOADS[etype]:
                raise EventValidationError(
                    [
                        f"data: a {etype.value} event takes {PAYLOADS[etype].__name__}, "
                        f"not {type_name(data)}"
                    ]
                )
        if self.drop_types:
            kept = [
                (t, p) for t, p in zip(types, payloads, strict=True) if t not in self.drop_types
            ]
            self.dropped += len(types) - len(kept)
            if not kept:
                return []
            types = [t for t, _ in kept]
            payloads = [p for _, p in kept]
        stamp = time.time() if ts is None else ts
        return self.log.append_built(
            lambda sid, first: placed_events(types, payloads, sid, first, stamp)
        )

    def publish_documents(
        self,
        source: Source,
        texts: list[str],
        line_numbers: Sequence[int],
        typed: Mapping[int, EventType],
        *,
        ts: float | None = None,
    ) -> Sequence[Event]:
        """Publish the events of parsed JSON lines, all stamped ``ts`` (default: now).

        The fast path for the JSON lines processor: a ``JSON`` event per JSON text, or an
        event of the type ``typed`` holds at its index. The events are kept as one
        :class:`~trio_stream.batches.DocumentBatch` and built when read.

        Args:
            source: the source of the lines.
            texts: the JSON text of each document.
            line_numbers: the line number of each document.
            typed: the type of each typed event, by index; the caller vouches that the
                text parses and fits the type (the processor checked it).
            ts: the timestamp of every event.
        """
        if len(line_numbers) != len(texts):
            raise ValueError(f"{len(line_numbers)} line numbers for {len(texts)} texts")
        if not texts:
            return []
        stamp = time.time() if ts is None else ts
        if self.drop_types:
            events = list(DocumentBatch("", 0, stamp, source, texts, line_numbers, typed))
            return self.publish_payloads(
                [e.type for e in events], [e.data for e in events], ts=stamp
            )
        return self.log.append_built(
            lambda sid, first: DocumentBatch(sid, first, stamp, source, texts, line_numbers, typed)
        )

    def publish_status(
        self, status: str, *, kind: str = "status", message: str | None = None
    ) -> Event:
        return self.publish_event(EventType.STATUS, Status(status, kind, message))

    def publish_error(
        self, message: str, *, code: str = "error", context: dict[str, Any] | None = None
    ) -> Event:
        return self.publish_event(EventType.ERROR, Error(message, code, context or {}))

    def publish_reasoning(
        self,
        thought: str,
        *,
        confidence: float | None = None,
        kind: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Event:
        return self.publish_event(
            EventType.REASONING, Reasoning(thought, confidence, kind, context or {})
        )

    def publish_command_started(
        self,
        name: str,
        *,
        action: str | None = None,
        parameters: dict[str, Any] | None = None,
        call_id: str | None = None,
    ) -> Event:
        return self.publish_event(
            EventType.COMMAND_STARTED, Command(name, action, parameters or {}, call_id)
        )

    def publish_command_completed(
        self,
        name: str,
        *,
        result: Any = None,
        action: str | None = None,
        parameters: dict[str, Any] | None = None,
        call_id: str | None = None,
        duration: float | None = None,
    ) -> Event:
        return self.publish_event(
            EventType.COMMAND_COMPLETED,
            Command(name, action, parameters or {}, call_id, result=result, duration=duration),
        )

    def publish_command_failed(
        self,
        name: str,
        *,
        error: Any = None,
        context: dict[str, Any] | None = None,
        action: str | None = None,
        parameters: dict[str, Any] | None = None,
        call_id: str | None = None,
        duration: float | None = None,
    ) -> Event:
        return self.publish_event(
            EventType.COMMAND_FAILED,
            Command(
                name,
                action,
                parameters or {},
                call_id,
                error=error,
                context=context or {},
                duration=duration,
            ),
        )

    def publish_screenshot(
        self,
        *,
        path: str | None = None,
        url: str | None = None,
        mime_type: str = "image/png",
        width: int | None = None,
        height: int | None = None,
        thumbnail: bytes | None = None,
        caption: str | None = None,
    ) -> Event:
        if path is None and url is None:
            raise ValueError("a screenshot needs a path or a url")
        return self.publish_event(
            EventType.SCREENSHOT,
            Screenshot(path, url, mime_type, width, height, thumbnail, caption),
        )

    def publish_variable_update(self, name: str, value: Any, previous: Any = None) -> Event:
        return self.publish_event(EventType.VARIABLE_UPDATE, VariableUpdate(name, value, previous))

    def publish_match(self, match: Match) -> Event:
        return self.publish_event(EventType.MATCH, match)

    def publish_json(self, document: Any, **fields: Any) -> Event:
        return self.publish_event(EventType.JSON, Json(document, **fields))

    def publish_custom(self, name: str, payload: Any = None) -> Event:
        return self.publish_event(EventType.CUSTOM, Custom(name, payload))


@final
class SessionRegistry:
    """The live sessions of a process, by id, for publishing from outside a session."""

    def __init__(self) -> None:
        self._logs: dict[str, SessionLog] = {}

    @contextmanager
    def register(self, log: SessionLog) -> Iterator[Publisher]:
        """Make ``log``'s session reachable by id while the ``with`` block runs.

        Yields:
            A publisher for the session.

        Raises:
            ValueError: when a live session already has that id.
        """
        sid = log.session_id
        if sid in self._logs:
            raise ValueError(f"a live session already has the id {sid!r}")
        self._logs[sid] = log
        try:
            yield Publisher(log)
        finally:
            del self._logs[sid]

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._logs

    def session_ids(self) -> list[str]:
        """The ids of the registered sessions, in registration order."""
        return list(self._logs)

    def publisher(self, session_id: str) -> Publisher:
        """A publisher into the live session ``session_id``.

        Raises:
            UnknownSessionError: when no live session of this process has that id.
        """
        log = self._logs.get(session_id)
        if log is None or log.closed:
            raise UnknownSessionError(session_id)
        return Publisher(log)


live_sessions: Final = SessionRegistry()
"""The registry the sessions ``tstream`` runs register in."""


def publisher_for(session_id: str) -> Publisher:
    """A publisher into the live session ``session_id`` of this process.

    Raises:
        UnknownSessionError: when no live session has that id.
    """
    return live_sessions.publisher(session_id)
