"""Events kept as columns: batches whose events are built only when they are read.

A command that writes a million lines must not cost a million event objects when nobody
reads them one by one: the session's log keeps each chunk's lines as one
:class:`OutputBatch`, the JSON lines processor each batch's documents as one
:class:`DocumentBatch`, and hands followers :class:`EventRuns`. All three are sequences of
:class:`~trio_stream.events.Event`, so code that iterates events works unchanged; code
that can read columns (the runs, a batch's texts) skips building them.
"""

from __future__ import annotations

import base64
import os
import threading
import typing
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from itertools import groupby
from typing import final

import orjson

from .events import Event, EventType, Json, Output, Payload, Source, typed_data
from .lines import Lines

_B64: typing.Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# The two urlsafe base64 characters of every 12-bit number.
_ID_TAIL: typing.Final = [_B64[x >> 6] + _B64[x & 63] for x in range(4096)]


_ID_TAIL_BYTES: typing.Final = [tail.encode() for tail in _ID_TAIL]


def _id_spans(key: bytes, base: int, count: int) -> Iterator[tuple[int, bytes, int, int]]:
    """The ids of ``count`` events numbered from ``base`` under ``key``, in spans that
    share their first fourteen characters: for each, the index of its first event, those
    characters, and the slice ``low:stop`` of the 4096 tails that ends its ids."""
    number = base
    end = base + count
    while number < end:
        low = number & 4095
        stop = min(4096, low + end - number)
        head = base64.urlsafe_b64encode(key + number.to_bytes(4, "big"))[:12]
        yield number - base, head + _ID_TAIL_BYTES[(number >> 12) & 4095], low, stop
        number += stop - low


def batch_event_ids(key: bytes, base: int, count: int) -> list[str]:
    """The ids of ``count`` events numbered from ``base`` under the 8-byte ``key``: each the
    urlsafe base64 of ``key`` and its 4-byte number.

    Twelve bytes are sixteen characters and the last four only depend on the number's low
    24 bits, so ids are a shared head and one of 4096 two-character pairs twice.
    """
    ids: list[str] = []
    for _, head, low, stop in _id_spans(key, base, count):
        text = head.decode()
        ids += [text + tail for tail in _ID_TAIL[low:stop]]
    return ids


def batch_event_id_spans(key: bytes, base: int, count: int) -> list[tuple[int, bytes, list[bytes]]]:
    """:func:`batch_event_ids` in spans of ids that share their first fourteen
    characters: for each, the index of its first event, that head, and the two-character
    tails of its ids, as bytes. An encoder that writes ids into a larger text puts the
    head in its template once per span rather than joining it to every id."""
    return [
        (first, head, _ID_TAIL_BYTES[low:stop])
        for first, head, low, stop in _id_spans(key, base, count)
    ]


class _Keys:
    """Random 8-byte keys for batches' ids, drawn from the system 256 at a time: a system
    call per batch would hand the GIL to the store's thread each time."""

    def __init__(self) -> None:
        self._pool = b""
        self._used = 0
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        # A child must not reuse its parent's keys.
        self._pool = b""
        self._used = 0
        self._lock = threading.Lock()

    def take(self) -> bytes:
        with self._lock:
            if self._used >= len(self._pool):
                self._pool = os.urandom(8 * 256)
                self._used = 0
            start = self._used
            self._used = start + 8
            return self._pool[start : start + 8]


_keys: typing.Final = _Keys()


class EventSequence(Sequence[Event]):
    """A sequence of events built on demand: equal to any sequence of the same events."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"


class EventBatch(EventSequence):
    """Events at consecutive offsets of one session, sharing one timestamp, kept as columns.

    A batch is a :class:`~collections.abc.Sequence` of :class:`Event`: each event is built
    when it is indexed or iterated, so events nobody reads one by one (lines only recorded,
    or counted) cost no object each. Building the same event twice gives equal events:
    ids come from one random key per batch and the event's place in it.

    Attributes:
        session: the session id.
        first_offset: the offset of the first event.
        ts: the timestamp of every event.
    """

    __slots__ = ("_base", "_key", "first_offset", "session", "ts")

    def __init__(self, session: str, first_offset: int, ts: float) -> None:
        self.session = session
        self.first_offset = first_offset
        self.ts = ts
        # 8 random bytes and the event's index are the 12 bytes of a 16-character id.
        self._key = _keys.take()
        self._base = 0

    def _share_ids(self, whole: EventBatch, start: int) -> None:
        """Give this part of ``whole``, from its index ``start``, the same ids."""
        self._key = whole._key
        self._base = whole._base + start

    def adopt_ids(self, key: bytes, base: int) -> None:
        """Name the events as a batch whose :attr:`id_origin` is ``(key, base)`` did (a
        batch rebuilt from its columns keeps its events' ids).

        Raises:
            ValueError: for a key that is not 8 bytes or a negative base.
        """
        if len(key) != 8 or base < 0:
            raise ValueError(f"id origin: an 8-byte key and a number from 0, not {key!r}, {base}")
        self._key = key
        self._base = base

    def event_id(self, index: int) -> str:
        """The id of event ``index`` (not negative)."""
        return base64.urlsafe_b64encode(
            self._key + (self._base + index).to_bytes(4, "big")
        ).decode()

    def event_ids(self) -> list[str]:
        """The ids of every event, in order."""
        return batch_event_ids(self._key, self._base, len(self))

    @property
    def id_origin(self) -> tuple[bytes, int]:
        """The key and the number of the first event that its id is made of (see
        :func:`batch_event_ids`)."""
        return self._key, self._base

    @property
    def last_offset(self) -> int:
        return self.first_offset + len(self) - 1

    def event(self, index: int) -> Event:
        """Event ``index`` (not negative, in range)."""
        raise NotImplementedError

    def part(self, start: int, stop: int) -> typing.Self:
        """Events ``start`` to ``stop`` (not negative) as a batch of their own, with the
        ids they have here (this batch itself when that is all of it)."""
        stop = min(stop, len(self))
        if start == 0 and stop == len(self):
            return self
        out = self._part(start, stop)
        out._share_ids(self, start)
        return out

    def _part(self, start: int, stop: int) -> typing.Self:
        """Events ``start`` to ``stop`` (in range) as a new batch."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    @typing.overload
    def __getitem__(self, index: int) -> Event: ...

    @typing.overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        count = len(self)
        if isinstance(index, slice):
            return [self.event(i) for i in range(*index.indices(count))]
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("event index out of range")
        return self.event(index)

    def __iter__(self) -> typing.Iterator[Event]:
        return map(self.event, range(len(self)))


@final
class OutputBatch(EventBatch):
    """The ``OUTPUT`` events of lines read together from one source.

    Attributes:
        source: ``stdout`` or ``stderr``.
        first_line: the line number of the first line.
        lines: the lines (:class:`~trio_stream.lines.Lines` columns).
    """

    __slots__ = ("first_line", "lines", "source")

    def __init__(
        self,
        session: str,
        first_offset: int,
        ts: float,
        source: Source,
        first_line: int,
        lines: Lines,
    ) -> None:
        super().__init__(session, first_offset, ts)
        self.source = source
        self.first_line = first_line
        self.lines = lines

    def event(self, index: int) -> Event:
        lines = self.lines
        eols = lines.eols
        return Event(
            EventType.OUTPUT,
            Output(
                self.source,
                lines.texts[index],
                "\n" if eols is None else eols[index],
                self.first_line + index,
                index in lines.partial,
                lines.raw.get(index),
            ),
            self.session,
            self.first_offset + index,
            self.event_id(index),
            self.ts,
        )

    def _part(self, start: int, stop: int) -> OutputBatch:
        return OutputBatch(
            self.session,
            self.first_offset + start,
            self.ts,
            self.source,
            self.first_line + start,
            self.lines.part(start, stop),
        )

    def __len__(self) -> int:
        return len(self.lines)


@final
class DocumentBatch(EventBatch):
    """The events of JSON documents parsed from lines read together: ``JSON`` or typed.

    An event keeps its document's text, parsed again (and a typed payload built) when the
    event is read.

    Attributes:
        source: the source of the lines.
        texts: each event's JSON text.
        line_numbers: the line number of each event's line.
        typed: the type of each typed event, by index (the others are ``JSON``).
    """

    __slots__ = ("line_numbers", "source", "texts", "typed")

    def __init__(
        self,
        session: str,
        first_offset: int,
        ts: float,
        source: Source,
        texts: list[str],
        line_numbers: Sequence[int],
        typed: Mapping[int, EventType],
    ) -> None:
        super().__init__(session, first_offset, ts)
        self.source = source
        self.texts = texts
        self.line_numbers = line_numbers
        self.typed = typed

    def event(self, index: int) -> Event:
        document = orjson.loads(self.texts[index])
        etype = self.typed.get(index) if self.typed else None
        data: Payload
        if etype is None:
            etype = EventType.JSON
            data = Json(document, "json", self.source, self.line_numbers[index])
        else:
            data = typed_data(etype, document)
        return Event(
            etype, data, self.session, self.first_offset + index, self.event_id(index), self.ts
        )

    def _part(self, start: int, stop: int) -> DocumentBatch:
        return DocumentBatch(
            self.session,
            self.first_offset + start,
            self.ts,
            self.source,
            self.texts[start:stop],
            self.line_numbers[start:stop],
            {i - start: t for i, t in self.typed.items() if start <= i < stop},
        )

    def __len__(self) -> int:
        return len(self.texts)


@final
class EventRuns(EventSequence):
    """Events at consecutive offsets, held as the runs they were appended in.

    What a session's log hands its followers: a :class:`~collections.abc.Sequence` of
    :class:`Event` whose runs (:attr:`runs`, each a list of events or an
    :class:`EventBatch`) let a consumer that can read columns skip building events.
    """

    __slots__ = ("_count", "runs")

    def __init__(self, runs: list[Sequence[Event]]) -> None:
        self.runs = runs
        self._count = sum(map(len, runs))

    def __len__(self) -> int:
        return self._count

    @typing.overload
    def __getitem__(self, index: int) -> Event: ...

    @typing.overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            if step != 1:
                return list(self)[index]
            out: list[Event] = []
            for run in self.runs:
                size = len(run)
                if start < size and stop > 0:
                    out.extend(run[max(0, start) : min(size, stop)])
                start -= size
                stop -= size
            return out
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("event index out of range")
        if index < self._count // 2:
            for run in self.runs:
                if index < len(run):
                    return run[index]
                index -= len(run)
        else:
            # From the end: the newest events are the ones followers look at.
            index -= self._count
            for run in reversed(self.runs):
                if -index <= len(run):
                    return run[index]
                index += len(run)
        raise AssertionError("unreachable")

    def __iter__(self) -> typing.Iterator[Event]:
        for run in self.runs:
            yield from run

    @property
    def first_offset(self) -> int:
        """The offset of the first event (the log's runs are never empty)."""
        first = self.runs[0]
        if isinstance(first, EventBatch):
            return first.first_offset
        if isinstance(first, RowEvents):
            return first.offset(first.rows[0])
        return first[0].offset

    def after(self, offset: int) -> EventRuns:
        """The events after ``offset``, as runs still (none of them built)."""
        if not self._count or self.first_offset > offset:
            return self
        skip = offset - self.first_offset + 1
        runs: list[Sequence[Event]] = []
        for run in self.runs:
            if skip >= len(run):
                skip -= len(run)
                continue
            if skip:
                if isinstance(run, EventBatch):
                    run = run.part(skip, len(run))
                elif isinstance(run, RowEvents):
                    run = type(run)(run.session, run.rows[skip:])
                else:
                    run = run[skip:]
                skip = 0
            runs.append(run)
        return EventRuns(runs)

    def others(self) -> list[Event]:
        """The events that are not lines kept as columns or rows (session events...)."""
        out: list[Event] = []
        for run in self.runs:
            if isinstance(run, RowEvents):
                out += run.others()
            elif not isinstance(run, EventBatch):
                out += run
        return out

    @property
    def last_offset(self) -> int:
        return self.first_offset + self._count - 1

    def terminal(self) -> list[tuple[str, bytes] | Event]:
        """What a terminal showed (see :meth:`RowEvents.terminal`): batches of lines
        are written from their columns, without an event each."""
        out: list[tuple[str, bytes] | Event] = []
        for run in self.runs:
            if isinstance(run, OutputBatch):
                out.append((run.source, run.lines.written()))
            elif isinstance(run, RowEvents):
                out += run.terminal()
            else:
                out += run
        return out

    def __add__(self, other: Sequence[Event]) -> list[Event]:
        return [*self, *other]

    def __radd__(self, other: Sequence[Event]) -> list[Event]:
        return [*other, *self]


class RowEvents(EventSequence):
    """Events kept in the form they were read in, built only when read.

    A follower that prints a million lines (``tstream attach``) must not build a million
    events it only writes out: a store chunk's arrays and a hub message's objects stay as
    they were decoded, and :meth:`terminal` writes their lines straight from them. Offsets
    are increasing. Subclasses say how rows are read.

    Attributes:
        session: the session id.
        rows: the decoded rows, one per event.
    """

    __slots__ = ("_sources", "rows", "session")

    def __init__(self, session: str, rows: list[typing.Any]) -> None:
        self.session = session
        self.rows = rows
        self._sources: list[str | None] | None = None

    def build(self, row: typing.Any) -> Event:
        """The event of ``row``."""
        raise NotImplementedError

    def offset(self, row: typing.Any) -> int:
        """The offset of ``row``."""
        raise NotImplementedError

    def line_sources(self, rows: list[typing.Any]) -> list[str | None]:
        """For each row, its source when it is a line whose text is its exact bytes, else
        None (other events, lines kept as raw bytes)."""
        raise NotImplementedError

    def line_texts(self, rows: list[typing.Any]) -> list[str]:
        """The text and end of line of each of ``rows``, all such lines."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.rows)

    @typing.overload
    def __getitem__(self, index: int) -> Event: ...

    @typing.overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            return list(map(self.build, self.rows[index]))
        return self.build(self.rows[index])

    def __iter__(self) -> typing.Iterator[Event]:
        return map(self.build, self.rows)

    @property
    def last_offset(self) -> int:
        """The offset of the last event (-1 when empty)."""
        return self.offset(self.rows[-1]) if self.rows else -1

    def after(self, offset: int) -> typing.Self:
        """The events after ``offset``."""
        rows = self.rows
        if not rows or self.offset(rows[0]) > offset:
            return self
        return type(self)(self.session, rows[bisect_right(rows, offset, key=self.offset) :])

    def _line_sources(self) -> list[str | None]:
        # Each row is looked at once, however many of the methods below are called.
        if self._sources is None:
            self._sources = self.line_sources(self.rows)
        return self._sources

    def others(self) -> list[Event]:
        """The events that are not plain lines (session events, lines with raw bytes)."""
        sources = self._line_sources()
        if None not in sources:
            return []
        return [
            self.build(row)
            for row, source in zip(self.rows, sources, strict=True)
            if source is None
        ]

    def terminal(self) -> list[tuple[str, bytes] | Event]:
        """What a terminal showed: each run of lines of one source as its bytes, and every
        other event as itself, in order."""
        rows = self.rows
        sources = self._line_sources()
        if rows and sources[0] is not None and sources.count(sources[0]) == len(sources):
            # Most often: lines of one source only, written at once.
            return [(sources[0], "".join(self.line_texts(rows)).encode())]
        out: list[tuple[str, bytes] | Event] = []
        start = 0
        for source, group in groupby(sources):
            stop = start + sum(1 for _ in group)
            if source is None:
                out.extend(map(self.build, rows[start:stop]))
            else:
                out.append((source, "".join(self.line_texts(rows[start:stop])).encode()))
            start = stop
        return out
