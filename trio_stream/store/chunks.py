"""Events packed in chunks: how the SQLite store keeps them.

A database row per line costs a few microseconds of SQLite's time per line, more than
running and capturing the command costs; a row per chunk of up to
:data:`MAX_CHUNK_EVENTS` consecutive events costs almost nothing per line. A chunk is
one JSON array (orjson) of items:

* lines read together (an :class:`~trio_stream.batches.OutputBatch`): one object holding
  them as columns, ``{"o": first offset, "k": id key (hex), "b": first id number,
  "t": ts, "s": source, "l": first line number, "x": [texts]}`` with ``"e": [eols]`` when
  some line does not end with ``"\n"``, ``"p": [indexes]`` of partial pieces and
  ``"r": [[index, raw in base64], ...]`` of lines that are not valid UTF-8. Ids are not
  stored: they are made from the key and the numbers (see
  :func:`~trio_stream.batches.batch_event_ids`);
* lines read together as one text (:meth:`~trio_stream.lines.Lines.joined`: whole, valid
  lines that all end with ``"\n"``, or all with ``"\r\n"``), in the SQLite store from
  schema 3: the same object with that text instead of a list, ``"j": text`` (the lines
  joined by their ending), ``"n": count`` and ``"d": "\r\n"`` when that is the ending.
  Such a batch goes to its chunk whole (up to :data:`MAX_JOINED_CHUNK_EVENTS` lines), so
  recording it makes no string per line;
* any other line: ``[offset, id, ts, source, text, eol, line, partial, raw]`` (``raw`` in
  base64 or null), the only form of schema 1 stores;
* any other event: ``[offset, id, ts, type, data]``.

Readers see every item as its events' arrays (:func:`rows`). Columns make a chunk of
lines about a third of the bytes of arrays and a hundred times cheaper to encode.
Chunks are small enough (at most :data:`MAX_CHUNK_EVENTS` events, or one batch of
joined lines, and about :data:`MAX_CHUNK_BYTES` of text) that decoding the one holding a
given offset takes about a millisecond at most.
"""

from __future__ import annotations

import base64
import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, repeat
from typing import Any, Final

import orjson

from ..batches import EventBatch, EventRuns, OutputBatch, RowEvents, batch_event_ids
from ..events import (
    SOURCES,
    Event,
    EventType,
    EventValidationError,
    Output,
    converter,
    structure_data,
)
from ..lines import Lines

MAX_CHUNK_EVENTS: Final = 1000
# A batch of lines read as one text is kept whole in a chunk up to this many lines (a
# read of 256 KiB holds about 4,000 lines of 60 bytes).
MAX_JOINED_CHUNK_EVENTS: Final = 16_384
MAX_CHUNK_BYTES: Final = 1 << 20

_TYPES: Final = {t.value: t for t in EventType}
_OUTPUT: Final = EventType.OUTPUT


def split(events: Sequence[Event]) -> Iterator[Sequence[Event]]:
    """Cut ``events`` into runs of at most MAX_CHUNK_EVENTS events and about
    MAX_CHUNK_BYTES of line text (a single longer event is a chunk of its own).

    A batch of lines read as one text (:meth:`~trio_stream.lines.Lines.joined`) of at most
    :data:`MAX_JOINED_CHUNK_EVENTS` lines and MAX_CHUNK_BYTES is never cut, so that its
    text is stored as it is, without a string per line: its chunk may hold up to that
    many events."""
    if isinstance(events, EventRuns):
        yield from _split_runs(events)
        return
    start = 0
    size = 0
    for index, event in enumerate(events):
        data = event.data
        size += len(data.text) if type(data) is Output else 256
        if index + 1 - start >= MAX_CHUNK_EVENTS or size >= MAX_CHUNK_BYTES:
            yield events[start : index + 1]
            start = index + 1
            size = 0
    if start < len(events):
        yield events[start:]


def _split_runs(events: EventRuns) -> Iterator[EventRuns]:
    """:func:`split` for runs, without building the events of batches of lines.

    The lines a chunk can still take by count are measured in one sum; their running
    sizes are only worked out when they would reach the size limit (long lines).
    """
    pieces: list[Sequence[Event]] = []
    count = 0
    size = 0
    for run in events.runs:
        joined = run.lines.joined_text() if isinstance(run, OutputBatch) else None
        grown = -1 if joined is None else len(joined[0])
        if 0 <= grown <= MAX_CHUNK_BYTES and len(run) <= MAX_JOINED_CHUNK_EVENTS:
            # Lines read as one text go to a chunk whole: their texts are never split.
            if pieces and (
                count + len(run) > MAX_JOINED_CHUNK_EVENTS or size + grown > MAX_CHUNK_BYTES
            ):
                yield EventRuns(pieces)
                pieces, count, size = [], 0, 0
            pieces.append(run)
            count += len(run)
            size += grown
            if count >= MAX_CHUNK_EVENTS or size >= MAX_CHUNK_BYTES:
                yield EventRuns(pieces)
                pieces, count, size = [], 0, 0
            continue
        texts = run.lines.texts if isinstance(run, OutputBatch) else None
        sizes: Sequence[int] | None = None
        start = 0
        while start < len(run):
            fit = min(len(run), start + MAX_CHUNK_EVENTS - count)
            grown = -1
            if texts is not None and sizes is None:
                grown = sum(map(len, texts[start:fit]))
                if size + grown >= MAX_CHUNK_BYTES:
                    grown = -1
            if grown < 0:
                if sizes is None:
                    sizes = _running_sizes(run)
                done = sizes[start - 1] if start else 0
                # Events of this run that fit the chunk: by count, then by text size.
                limit = MAX_CHUNK_BYTES - size + done
                fit = min(fit, max(start + 1, bisect_left(sizes, limit, start, fit) + 1))
                grown = sizes[fit - 1] - done
            part = run.part(start, fit) if isinstance(run, EventBatch) else run[start:fit]
            pieces.append(part)
            count += fit - start
            size += grown
            start = fit
            if count >= MAX_CHUNK_EVENTS or size >= MAX_CHUNK_BYTES:
                yield EventRuns(pieces)
                pieces, count, size = [], 0, 0
    if pieces:
        yield EventRuns(pieces)


def _running_sizes(run: Sequence[Event]) -> Sequence[int]:
    """The sizes :func:`split` counts for the events of ``run``, added up from its first."""
    if isinstance(run, OutputBatch):
        return list(accumulate(map(len, run.lines.texts)))
    if isinstance(run, EventBatch):
        # Only batches of lines hold output events.
        return range(256, 256 * (len(run) + 1), 256)
    return list(accumulate(len(e.data.text) if type(e.data) is Output else 256 for e in run))


def span(events: Sequence[Event]) -> tuple[int, int]:
    """The first and last offsets of ``events`` (not empty), without building the events
    of runs."""
    if isinstance(events, EventRuns):
        return events.first_offset, events.last_offset
    return events[0].offset, events[-1].offset


def last_stamp(events: Sequence[Event]) -> float:
    """The timestamp of the last of ``events`` (not empty), without building the events of
    runs."""
    if isinstance(events, EventRuns):
        run = next(run for run in reversed(events.runs) if len(run))
        return run.ts if isinstance(run, EventBatch) else run[-1].ts
    return events[-1].ts


def stamps(events: Sequence[Event]) -> tuple[float, float]:
    """The lowest and highest timestamps of ``events`` (not empty)."""
    if isinstance(events, EventRuns):
        found = [
            s
            for run in events.runs
            for s in ((run.ts,) if isinstance(run, EventBatch) else (e.ts for e in run))
        ]
    else:
        found = [e.ts for e in events]
    return min(found), max(found)


def _lines_head(run: OutputBatch) -> dict[str, Any]:
    """What a chunk item of a batch of lines says of it besides its lines."""
    key, base = run.id_origin
    return {
        "o": run.first_offset,
        "k": key.hex(),
        "b": base,
        "t": run.ts,
        "s": run.source,
        "l": run.first_line,
    }


def lines_item(run: OutputBatch) -> dict[str, Any]:
    """The chunk item of a batch of lines: its columns."""
    lines = run.lines
    item = _lines_head(run)
    item["x"] = lines.texts
    if lines.eols is not None:
        item["e"] = lines.eols
    if lines.partial:
        item["p"] = sorted(lines.partial)
    if lines.raw:
        item["r"] = [[i, base64.b64encode(raw).decode()] for i, raw in sorted(lines.raw.items())]
    return item


def _stored_lines_item(run: OutputBatch) -> dict[str, Any]:
    """A chunk's item of a batch of lines: :func:`lines_item`, or, for lines read as one
    text (:meth:`~trio_stream.lines.Lines.joined`), that text (``"j"``), the ending that
    joins them (``"d"``, when not ``"\\n"``) and their count (``"n"``)."""
    joined = run.lines.joined_text()
    if joined is None:
        return lines_item(run)
    item = _lines_head(run)
    item["n"] = len(run)
    item["j"] = joined[0]
    if joined[1] != "\n":
        item["d"] = joined[1]
    return item


def _joined_lines(item: Any) -> Lines:
    """The lines of a stored item of joined text (see :func:`_stored_lines_item`)."""
    text, sep, count = item["j"], item.get("d", "\n"), item["n"]
    if type(text) is not str or sep not in ("\n", "\r\n") or type(count) is not int:
        raise ValueError("lines: joined text, ending or count of the wrong type")
    if text.count(sep) + 1 != count:
        raise ValueError(f"lines: {text.count(sep) + 1} joined lines, not {count}")
    return Lines.joined(text, sep, count)


_EOL_TEXTS: Final = frozenset({"\n", "\r\n", "\r", ""})


def lines_batch(session_id: str, item: Any, *, check: bool = False) -> OutputBatch:
    """The batch of lines whose columns ``item`` holds (see :func:`lines_item`): the
    same lines, offsets and ids, without an event or a row each.

    Args:
        session_id: their session.
        item: the decoded columns.
        check: check every field, line by line, as what comes from outside must be.

    Raises:
        ValueError: naming what does not fit (also without ``check``, for a missing
            field or columns of different lengths).
    """
    if not check and "j" in item:
        try:
            lines = _joined_lines(item)
            batch = OutputBatch(
                session_id, item["o"], float(item["t"]), item["s"], item["l"], lines
            )
            batch.adopt_ids(bytes.fromhex(item["k"]), item["b"])
        except (TypeError, ValueError, LookupError, AttributeError) as exc:
            raise ValueError(f"lines: {exc}") from None
        return batch
    try:
        texts = item["x"]
        count = len(texts)
        first, first_line, ts, source = item["o"], item["l"], item["t"], item["s"]
        key, base = bytes.fromhex(item["k"]), item["b"]
        eols = item.get("e")
        partial = frozenset(item.get("p") or ())
        raw = {i: base64.b64decode(data, validate=True) for i, data in item.get("r") or ()}
    except (TypeError, ValueError, LookupError, AttributeError) as exc:
        raise ValueError(f"lines: {exc}") from None
    if eols is not None and len(eols) != count:
        raise ValueError(f"lines: {len(eols)} line endings for {count} lines")
    if check:
        _check_lines(item, texts, eols, partial, raw)
    batch = OutputBatch(
        session_id, first, float(ts), source, first_line, Lines(texts, eols, partial, raw)
    )
    batch.adopt_ids(key, base)
    return batch


def _check_lines(
    item: Any, texts: Any, eols: Any, partial: frozenset[Any], raw: dict[Any, bytes]
) -> None:
    for name, value in (("o", item["o"]), ("l", item["l"]), ("b", item["b"])):
        if type(value) is not int or value < 0:
            raise ValueError(f"lines.{name}: expected an integer from 0, not {value!r}")
    ts = item["t"]
    if type(ts) not in (int, float) or not math.isfinite(ts):
        raise ValueError(f"lines.t: expected a number, not {ts!r}")
    if item["s"] not in SOURCES:
        raise ValueError(f"lines.s: expected stdout or stderr, not {item['s']!r}")
    if type(texts) is not list or not texts:
        raise ValueError("lines.x: expected a list of texts, at least one")
    try:
        # Every text a string, checked in one pass in C.
        "".join(texts)
    except TypeError:
        raise ValueError("lines.x: every text must be a string") from None
    if eols is not None and (type(eols) is not list or not _EOL_TEXTS.issuperset(eols)):
        raise ValueError("lines.e: line endings are \\n, \\r\\n, \\r or empty")
    count = len(texts)
    for index in (*partial, *raw):
        if type(index) is not int or not 0 <= index < count:
            raise ValueError(f"lines: index {index!r} is not one of the {count} lines")
    extra = set(item) - _LINES_KEYS
    if extra:
        raise ValueError(f"lines: unknown field {sorted(extra)[0]!r}")


_LINES_KEYS: Final = frozenset("oktbslxepr")


def decode_runs(session_id: str, bodies: Iterable[bytes], after: int = -1) -> EventRuns:
    """The events of chunks (in offset order) after ``after`` as runs: each item of
    lines a batch (:func:`lines_batch`, its columns as they are), the other items rows.

    Raises:
        EventValidationError: when a chunk is not one this module wrote.
    """
    runs: list[Sequence[Event]] = []
    others: list[Any] = []
    try:
        for body in bodies:
            for item in orjson.loads(body):
                if type(item) is not dict:
                    others.append(item)
                    continue
                if others:
                    runs.append(StoredEvents(session_id, others))
                    others = []
                runs.append(lines_batch(session_id, item))
    except (TypeError, ValueError, LookupError) as exc:
        raise EventValidationError([f"stored chunk: {exc}"]) from None
    if others:
        runs.append(StoredEvents(session_id, others))
    return EventRuns(runs).after(after)


def _lines_rows(item: dict[str, Any]) -> Iterable[tuple[Any, ...]]:
    """The event arrays of a chunk item of lines (see :func:`lines_item`)."""
    if "j" in item:
        lines = _joined_lines(item)
        texts, eols = lines.texts, lines.eols
    else:
        texts = item["x"]
        eols = item.get("e")
    count = len(texts)
    offset = item["o"]
    first_line = item["l"]
    if eols is not None and len(eols) != count:
        raise ValueError(f"{len(eols)} line endings for {count} lines")
    partial: Iterable[bool] = repeat(False)
    if item.get("p"):
        flags = [False] * count
        for index in item["p"]:
            flags[index] = True
        partial = flags
    raw: Iterable[str | None] = repeat(None)
    if item.get("r"):
        texts_raw: list[str | None] = [None] * count
        for index, data in item["r"]:
            texts_raw[index] = data
        raw = texts_raw
    return zip(
        range(offset, offset + count),
        batch_event_ids(bytes.fromhex(item["k"]), item["b"], count),
        repeat(item["t"]),
        repeat(item["s"]),
        texts,
        repeat("\n") if eols is None else eols,
        range(first_line, first_line + count),
        partial,
        raw,
    )


def rows(body: bytes) -> list[Any]:
    """A chunk's events as arrays (``[offset, id, ts, ...]``, see the module's text), in
    offset order.

    Raises:
        EventValidationError: when the chunk is not one this module wrote.
    """
    try:
        items = orjson.loads(body)
        if not any(type(item) is dict for item in items):
            return items  # type: ignore[no-any-return]
        found: list[Any] = []
        for item in items:
            if type(item) is dict:
                found += _lines_rows(item)
            else:
                found.append(item)
    except (TypeError, ValueError, LookupError) as exc:
        raise EventValidationError([f"stored chunk: {exc}"]) from None
    return found


def encode(events: Sequence[Event], *, joined: bool = False) -> bytes:
    """One chunk's bytes for ``events``.

    Args:
        joined: keep lines read as one text as that text (``"j"``, see
            :func:`_stored_lines_item`), which readers of schema 3 understand; else as a
            list of texts (``"x"``).
    """
    items: list[Any] = []
    append = items.append
    if isinstance(events, EventRuns):
        for run in events.runs:
            if isinstance(run, OutputBatch):
                append(_stored_lines_item(run) if joined else lines_item(run))
            else:
                _encode_events(run, append)
    else:
        _encode_events(events, append)
    return orjson.dumps(items, default=converter.unstructure)


def _encode_events(events: Iterable[Event], append: Any) -> None:
    for event in events:
        data = event.data
        if type(data) is Output:
            raw = None if data.raw is None else base64.b64encode(data.raw).decode()
            append(
                (
                    event.offset,
                    event.id,
                    event.ts,
                    data.source,
                    data.text,
                    data.eol,
                    data.line,
                    data.partial,
                    raw,
                )
            )
        else:
            append(
                (event.offset, event.id, event.ts, event.type.value, converter.unstructure(data))
            )


def decode(session_id: str, body: bytes, after: int = -1, limit: int | None = None) -> list[Event]:
    """The events of a chunk with an offset greater than ``after``, at most ``limit``.

    Raises:
        EventValidationError: when a stored event no longer fits the model.
    """
    items = rows(body)
    if limit is not None:
        start = next((i for i, item in enumerate(items) if item[0] > after), len(items))
        items = items[start : start + limit]
    return [_item_event(session_id, item) for item in items if item[0] > after]


def _item_event(session_id: str, item: list[Any]) -> Event:
    try:
        if len(item) == 9:
            offset, event_id, ts, source, text, eol, line, partial, raw = item
            data: Any = Output(
                source, text, eol, line, partial, None if raw is None else base64.b64decode(raw)
            )
            return Event(_OUTPUT, data, session_id, offset, event_id, ts)
        offset, event_id, ts, type_name, payload = item
        etype = _TYPES.get(type_name)
        if etype is None:
            raise EventValidationError([f"type: unknown event type {type_name!r}"])
        return Event(etype, structure_data(etype, payload), session_id, offset, event_id, ts)
    except EventValidationError:
        raise
    except (TypeError, ValueError, LookupError) as exc:
        raise EventValidationError([f"stored event: {exc}"]) from None


class StoredEvents(RowEvents):
    """Events as chunks hold them (one array each), built only when read: see
    :class:`~trio_stream.batches.RowEvents`. Building one raises
    :class:`EventValidationError` when it no longer fits the model."""

    __slots__ = ()

    def build(self, row: Any) -> Event:
        return _item_event(self.session, row)

    def offset(self, row: Any) -> int:
        return int(row[0])

    def line_sources(self, rows: list[Any]) -> list[str | None]:
        return [r[3] if len(r) == 9 and r[8] is None else None for r in rows]

    def line_texts(self, rows: list[Any]) -> list[str]:
        return [r[4] + r[5] for r in rows]


def decode_rows(session_id: str, bodies: Iterable[bytes], after: int = -1) -> StoredEvents:
    """The events of chunks (in offset order) after ``after``, not built yet."""
    found: list[Any] = []
    for body in bodies:
        found += rows(body)
    return StoredEvents(session_id, found).after(after)


def offsets(body: bytes) -> list[int]:
    """The offsets of a chunk's events, without building them."""
    return [item[0] for item in rows(body)]


def trim(body: bytes, drop: int) -> tuple[bytes, int, int, float, float]:
    """A chunk without its first ``drop`` events.

    Returns:
        The new body, its first offset, its event count and its lowest and highest
        timestamps.

    Raises:
        ValueError: when nothing would be left.
    """
    items = rows(body)[drop:]
    if not items:
        raise ValueError("trim() would leave an empty chunk")
    stamps = [item[2] for item in items]
    return orjson.dumps(items), items[0][0], len(items), min(stamps), max(stamps)
