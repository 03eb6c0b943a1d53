"""The processor protocol: what the session feeds, and how a processor reports back.

A session runs each processor in its own task, fed through its own
:class:`~trio_stream.channels.PolicyChannel` of :class:`LineBatch` objects, so a slow or
failing processor never slows the others or the recording. A processor reports what it
finds through the :class:`~trio_stream.publisher.Publisher` it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from ..events import EventType, Payload, Source
from ..lines import Line, Lines

if TYPE_CHECKING:
    from ..publisher import Publisher


def _as_lines(lines: Iterable[Line]) -> Lines:
    return Lines.of(lines)


@attrs.frozen
class LineBatch:
    """Lines read together from one source.

    Attributes:
        source: ``stdout`` or ``stderr`` (``stdout`` for merged and pty output).
        first_line: the per-session line number of ``lines[0]``; numbers are dense
            across both sources, in the order the lines were read.
        lines: the lines (after redaction), a sequence of :class:`~trio_stream.lines.Line`
            held as :class:`~trio_stream.lines.Lines` columns (a list of lines given is
            turned into columns); ``lines.texts`` is the list of their texts.
        ts: when the chunk was read (UTC epoch seconds).
        offsets: the event offset of each line's OUTPUT event (-1 for a line a filter
            kept out of the record).
    """

    source: Source
    first_line: int
    lines: Lines = attrs.field(converter=_as_lines)
    ts: float
    offsets: Sequence[int] = attrs.Factory(list)


@attrs.frozen
class Completion:
    """How the command ended, as processors see it."""

    exit_status: int | None
    signal: int | None = None
    timed_out: bool = False
    duration: float = 0.0


@runtime_checkable
class StreamProcessor(Protocol):
    """A consumer of a session's lines that may publish events.

    ``name`` identifies the processor in drop counts and error reports. ``process`` is
    called with each batch in order; ``on_complete`` once after the last batch;
    ``on_error`` when the processor's own channel failed (``fail`` overflow policy) or
    ``process`` raised, after which the processor gets no more batches.
    """

    name: str

    async def process(self, batch: LineBatch, publish: Publisher) -> None: ...

    async def on_complete(self, completion: Completion, publish: Publisher) -> None: ...

    async def on_error(self, error: BaseException, publish: Publisher) -> None: ...


@runtime_checkable
class ReportsSessionDetails(Protocol):
    """A processor that contributes to the session's ``SESSION_ENDED`` details.

    The session calls :meth:`session_details` on every processor that has it, after
    ``on_complete``, and merges the dictionaries (each keyed by what it describes: the
    ``claude`` profile gives ``cost_usd``, ``turns``, ``usage``…; the JSON lines
    processor gives ``jsonl``) into :attr:`~trio_stream.events.SessionEnded.details`.
    """

    def session_details(self) -> dict[str, Any]: ...


@runtime_checkable
class LineTransform(Protocol):
    """A change applied to lines before anything records or serves them (redaction, filters).

    Called by the reader with each batch's lines; returns the lines to keep, changed or not,
    in order. Lines left out are counted as ``filtered``, never recorded.
    """

    name: str

    def apply(self, source: Source, lines: list[Line]) -> list[Line]: ...


def publish_all(
    publish: Publisher, events: list[tuple[EventType, Payload]], ts: float | None = None
) -> None:
    """Publish ``(type, payload)`` pairs in order, at consecutive offsets, in one append."""
    if events:
        publish.publish_payloads([t for t, _ in events], [p for _, p in events], ts=ts)
