"""Events as the hub sends them: each one's JSON, encoded once for every client.

A stream's fan-out and its history pages turn every event into its JSON
(:func:`~trio_stream.events.event_to_json`) once, whatever the number of clients. Lines,
most of any stream, are encoded straight from the columns they are kept in (a batch of
captured lines, a store chunk's arrays): the same bytes, without building an event
object per line first. The event itself is built only when a client's filter asks for it.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any, Final, final

import orjson

from ..batches import EventRuns, OutputBatch, batch_event_id_spans
from ..events import Event, event_to_json
from ..store.chunks import StoredEvents

# event_to_json's bytes for a line with no raw bytes, with its fields in the same order.
_LINE: Final = (
    b'{"id":%s,"session":%s,"offset":%d,"type":"output","ts":%s,'
    b'"data":{"source":%s,"text":%s,"eol":%s,"line":%d,"partial":%s,"raw":null}}'
)
_BOOL: Final = (b"false", b"true")
_NEWLINE: Final = orjson.dumps("\n")
# The JSON of the sources and line endings that nearly every line has.
_WORDS: Final = {w: orjson.dumps(w) for w in ("stdout", "stderr", "\n", "\r\n", "\r", "")}


@final
class Frame:
    """An event's offset and JSON bytes, and the event, built when first asked for.

    Attributes:
        offset: the event's offset.
        raw: its JSON (:func:`~trio_stream.events.event_to_json`).
    """

    __slots__ = ("_event", "_index", "_source", "offset", "raw")

    def __init__(
        self,
        offset: int,
        raw: bytes,
        event: Event | None = None,
        source: Sequence[Event] = (),
        index: int = 0,
    ) -> None:
        self.offset = offset
        self.raw = raw
        self._event = event
        self._source = source
        self._index = index

    @classmethod
    def of(cls, event: Event) -> Frame:
        """The frame of an event at hand."""
        return cls(event.offset, event_to_json(event), event)

    @property
    def event(self) -> Event:
        """The event (built from the batch it came in, once)."""
        if self._event is None:
            self._event = self._source[self._index]
            self._source = ()
        return self._event

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Frame):
            return (self.offset, self.raw) == (other.offset, other.raw)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Frame({self.offset}, {self.raw!r})"


@final
class LazyFrames(Sequence[Frame]):
    """The frames of runs of events (a store's batches of lines), made when first read:
    an encoding that writes lines from their columns never makes them.

    Attributes:
        events: the runs.
    """

    __slots__ = ("_frames", "events")

    def __init__(self, events: EventRuns) -> None:
        self.events = events
        self._frames: list[Frame] | None = None

    def built(self) -> list[Frame]:
        """The frames, made once."""
        if self._frames is None:
            self._frames = frames_of(self.events)
        return self._frames

    def __len__(self) -> int:
        return len(self.events)

    @typing.overload
    def __getitem__(self, index: int) -> Frame: ...

    @typing.overload
    def __getitem__(self, index: slice) -> list[Frame]: ...

    def __getitem__(self, index: int | slice) -> Frame | list[Frame]:
        return self.built()[index]

    def __iter__(self) -> typing.Iterator[Frame]:
        return iter(self.built())


def json_lines(events: Sequence[Event]) -> bytes:
    """``events`` as JSON lines (:func:`~trio_stream.events.event_to_json`, a newline
    after each), lines encoded from their columns or stored rows where they have some."""
    if isinstance(events, EventRuns):
        # Batches of lines straight from their columns, without a frame each.
        raws: list[bytes] = []
        for run in events.runs:
            raws += _batch_raws(run) if isinstance(run, OutputBatch) else _raws(run)
    else:
        raws = _raws(events)
    raws.append(b"")
    return b"\n".join(raws)


def _raws(events: Sequence[Event]) -> list[bytes]:
    return [frame.raw for frame in frames_of(events)]


def frames_of(events: Sequence[Event]) -> list[Frame]:
    """The frames of ``events``, lines encoded from their columns where they have some."""
    if isinstance(events, StoredEvents):
        return _row_frames(events)
    if not isinstance(events, EventRuns):
        return [Frame.of(e) for e in events]
    out: list[Frame] = []
    for run in events.runs:
        if isinstance(run, OutputBatch):
            out += _batch_frames(run)
        elif isinstance(run, StoredEvents):
            out += _row_frames(run)
        else:
            out += [Frame.of(e) for e in run]
    return out


def _batch_frames(run: OutputBatch) -> list[Frame]:
    first = run.first_offset
    out = [
        Frame(first + index, raw, None, run, index) for index, raw in enumerate(_batch_raws(run))
    ]
    for index in run.lines.raw:
        # Its JSON has its bytes in base64: the event, built already, comes with it.
        out[index] = Frame.of(run.event(index))
    return out


def _batch_raws(run: OutputBatch) -> list[bytes]:
    """Each line's JSON, from the columns (through its event for a line that is not
    valid UTF-8, rare)."""
    lines = run.lines
    dumps = orjson.dumps
    texts = lines.texts
    first = run.first_offset
    number = run.first_line
    # What every line of the batch shares is formatted once, the first fourteen
    # characters of the ids with it for each span of ids that share them (ids are base64,
    # session ids and sources plain words: nothing to escape, no % in any of them).
    shared = b'","session":' + dumps(run.session) + b',"offset":%d,"type":"output",'
    shared += b'"ts":' + dumps(run.ts) + b',"data":{"source":' + dumps(run.source)
    simple = lines.eols is None and not lines.partial
    if simple:
        shared += b',"text":%s,"eol":"\\n","line":%d,"partial":false,"raw":null}}'
    else:
        shared += b',"text":%s,"eol":%s,"line":%d,"partial":%s,"raw":null}}'
        eols = [_NEWLINE] * len(texts) if lines.eols is None else list(map(dumps, lines.eols))
        partial = lines.partial
    raws: list[bytes] = []
    for start, head, tails in batch_event_id_spans(*run.id_origin, len(texts)):
        template = b'{"id":"' + head + b"%s" + shared
        stop = start + len(tails)
        offsets = range(first + start, first + stop)
        numbers = range(number + start, number + stop)
        if simple:
            raws += [
                template % (tail, offset, dumps(text), line)
                for tail, offset, text, line in zip(
                    tails, offsets, texts[start:stop], numbers, strict=True
                )
            ]
        else:
            raws += [
                template % (tail, offset, dumps(text), eol, line, _BOOL[index in partial])
                for index, tail, offset, text, eol, line in zip(
                    range(start, stop),
                    tails,
                    offsets,
                    texts[start:stop],
                    eols[start:stop],
                    numbers,
                    strict=True,
                )
            ]
    for index in lines.raw:
        raws[index] = event_to_json(run.event(index))
    return raws


def _row_frames(events: StoredEvents) -> list[Frame]:
    """Frames of a store chunk's rows (see :mod:`trio_stream.store.chunks`)."""
    dumps = orjson.dumps
    session = dumps(events.session)
    out: list[Frame] = []
    append = out.append
    last_ts: Any = None
    ts_json = b""
    for index, row in enumerate(events.rows):
        if len(row) != 9 or row[8] is not None or type(row[7]) is not bool:
            append(Frame.of(events.build(row)))
            continue
        offset, event_id, ts, source, text, eol, line, partial, _ = row
        if ts != last_ts:
            last_ts, ts_json = ts, dumps(ts)
        try:
            raw = _LINE % (
                dumps(event_id),
                session,
                offset,
                ts_json,
                _WORDS.get(source) or dumps(source),
                dumps(text),
                _WORDS.get(eol) or dumps(eol),
                line,
                _BOOL[partial],
            )
        except TypeError:
            # Not the types a line has: the event says what is wrong with it.
            append(Frame.of(events.build(row)))
            continue
        append(Frame(offset, raw, source=events, index=index))
    return out
