"""JSON lines: every line of stdout that holds a JSON object or array becomes an event.

A line that parses gives a ``JSON`` event (:class:`~trio_stream.events.Json`) *in addition*
to its ``OUTPUT`` event, or a typed event when its shape names one: an object whose
``"type"`` is one of :data:`TYPED_NAMES` and whose other keys are that event's payload
fields, for example::

    {"type": "status", "status": "deploying", "message": "3 of 5 hosts"}
    {"type": "error", "message": "disk full", "code": "ENOSPC"}
    {"type": "command_completed", "name": "migrate", "duration": 1.5}
    {"type": "variable_update", "name": "progress", "value": 0.4}

An object that names a type but does not fit it (a missing or unknown field, a wrong
type) stays a ``JSON`` event and is counted as ``invalid``. Lines that are not JSON
documents (plain text, a bare number, malformed JSON) stay ``OUTPUT`` only and are counted
as ``unparsed``; they are never fatal.

Pieces of a line cut at the maximum line length are joined again before parsing. A
document over the limits on documents (:mod:`trio_stream.limits`: nested deeper than
200 levels, more than 1,000,000 values) gives an ``error`` event instead and is counted
as unparsed; its line stays an ``OUTPUT`` event like any other.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Collection, Sequence
from typing import Any, Final, final

import orjson

from ..events import (
    PAYLOADS,
    EventType,
    EventValidationError,
    Json,
    Payload,
    Source,
    plain_fields,
    typed_data,
)
from ..limits import MAX_DEPTH, MAX_STRING, MAX_VALUES, over_limits
from ..publisher import Publisher
from .base import Completion, LineBatch

TYPED_NAMES: Final[frozenset[str]] = frozenset(
    t.value
    for t in EventType
    if t
    not in (
        EventType.OUTPUT,
        EventType.SESSION_STARTED,
        EventType.SESSION_ENDED,
        EventType.JSON,
    )
)
"""Event types a document may name with its ``"type"`` key; the session's own kinds and
``output`` are not among them, since a child must not forge them."""
_TYPED: Final = {name: EventType(name) for name in TYPED_NAMES}

DEFAULT_MAX_DOCUMENT: Final = MAX_STRING
_OPENERS: Final = frozenset("{[")
_STDOUT: Final[tuple[Source, ...]] = ("stdout",)


def typed_payload(document: Any) -> tuple[EventType, Payload] | None:
    """The typed event a document names by its shape, if any.

    Returns:
        ``(type, payload)`` when ``document`` is an object whose ``"type"`` is one of
        :data:`TYPED_NAMES`, else None.

    Raises:
        EventValidationError: when the document names a type but does not fit it.
    """
    if document.__class__ is not dict:
        return None
    name = document.get("type")
    if name.__class__ is not str or name not in TYPED_NAMES:
        return None
    etype = _TYPED[name]
    return etype, typed_data(etype, document)


def typed_type(document: dict[str, Any], name: str) -> EventType:
    """The type of a document whose ``"type"`` is ``name``, one of :data:`TYPED_NAMES`,
    once its other keys are checked (its payload is built when its event is read).

    Raises:
        EventValidationError: when the document does not fit the type.
    """
    etype = _TYPED[name]
    if plain_fields(PAYLOADS[etype], document, ignore="type") is None:
        typed_data(etype, document)
    return etype


def jsonable(value: Any, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_VALUES) -> Any:
    """``value`` with what JSON cannot hold made plain (YAML dates, binary, sets, keys).

    Raises:
        ValueError: when the value is nested deeper than ``max_depth`` (events could not be
            serialized) or holds more than ``max_nodes`` values once YAML aliases are
            expanded (a document that refers to itself, or an alias bomb).
    """
    budget = [max_nodes]

    def plain(item: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"holds more than {max_nodes} values once aliases are expanded")
        if isinstance(item, dict | list | tuple | set | frozenset):
            if depth >= max_depth:
                raise ValueError(f"is nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                return {_key(k): plain(v, depth + 1) for k, v in item.items()}
            return [plain(v, depth + 1) for v in item]
        if isinstance(item, datetime.date | datetime.time):
            return item.isoformat()
        if isinstance(item, bytes):
            return base64.b64encode(item).decode()
        return item

    return plain(value, 0)


def limit_error(line: int, problem: str) -> dict[str, Any]:
    """The fields of the ``error`` event that stands for a line whose document is over a
    limit (the line itself stays an ``output`` event)."""
    return {
        "message": f"output line {line + 1}: JSON document {problem}; kept as output only",
        "code": "document_too_large",
        "context": {"line": line},
    }


# Every byte but the brackets that open a level, and the line break between two texts.
_NOT_OPENERS: Final = bytes(b for b in range(256) if b not in b"{[\n")
# More openers than the deepest nesting allowed, in one text.
_TOO_MANY_OPENERS: Final = re.compile(rb"[^\n]{%d}" % (MAX_DEPTH + 1))
# Characters of texts whose openers are counted at once: the bytes of a few dozen lines,
# not a whole batch (a large block at a time cost as much again in page faults).
_COUNTED_AT_ONCE: Final = 32 * 1024


def _batch_may_exceed(texts: list[str]) -> bool:
    """Whether the document of one of ``texts`` may be over a limit: the test of
    :func:`~trio_stream.limits.text_may_exceed` for a whole batch, its loops in C.

    The texts' UTF-8 bytes (kept by each text once parsed), a few dozen texts joined by
    line breaks at a time, lose every byte but ``{``, ``[`` and the breaks in one pass of
    ``bytes.translate``: a text with more openers than :data:`MAX_DEPTH` leaves a run of
    more than that many bytes without a break. Counting both brackets in each text took
    two passes over its characters, which cost a third of parsing it.
    """
    longest = max(map(len, texts), default=0)
    if longest <= 2 * MAX_DEPTH:
        return False
    if longest > MAX_VALUES:
        return True
    step = max(1, _COUNTED_AT_ONCE // longest)
    for start in range(0, len(texts), step):
        group = texts[start : start + step]
        try:
            openers = b"\n".join(map(str.encode, group)).translate(None, _NOT_OPENERS)
        except UnicodeEncodeError:
            return True
        # A text holding a line break itself would have its count cut in two.
        if openers.count(b"\n") != len(group) - 1 or _TOO_MANY_OPENERS.search(openers):
            return True
    return False


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return orjson.dumps(key).decode()
    if isinstance(key, datetime.date | datetime.time):
        return key.isoformat()
    return str(key)


@final
class DocumentCounts:
    """What a document processor saw: parsed documents, invalid typed ones, unparsed lines."""

    __slots__ = ("documents", "invalid", "typed", "unparsed")

    def __init__(self) -> None:
        self.documents = 0
        self.typed = 0
        self.invalid = 0
        self.unparsed = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "documents": self.documents,
            "typed": self.typed,
            "invalid": self.invalid,
            "unparsed": self.unparsed,
        }


@final
class Documents:
    """What a batch of lines gave, as columns.

    Attributes:
        texts: the JSON text of each event's document. The text is what is kept: the
            line is already held, and its document is parsed again (and a typed
            payload built) only when the event is read.
        line_numbers: the line number of each event's line.
        typed: the type of each typed event, by index (the others are ``JSON``).
    """

    __slots__ = ("line_numbers", "texts", "typed")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.line_numbers: Sequence[int] = []
        self.typed: dict[int, EventType] = {}


@final
class _Pieces:
    """The pieces of one line cut at the maximum line length, held until its last piece."""

    __slots__ = ("first_line", "parts", "size", "too_long")

    def __init__(self, first_line: int) -> None:
        self.first_line = first_line
        self.parts: list[str] = []
        self.size = 0
        self.too_long = False


@final
class JsonLinesProcessor:
    """Parse JSON lines into ``JSON`` or typed events.

    Args:
        sources: the sources whose lines are parsed (stdout by default).
        typed: whether documents may name a typed event by their shape.
        max_document: the longest document, in characters, joined from pieces of a cut
            line; a longer one is counted as unparsed.
        name: the processor's name in drop counts and reports.
    """

    def __init__(
        self,
        *,
        sources: Collection[Source] = _STDOUT,
        typed: bool = True,
        max_document: int = DEFAULT_MAX_DOCUMENT,
        name: str = "jsonl",
    ) -> None:
        self.name = name
        self.sources = frozenset(sources)
        self.typed = typed
        self.max_document = max_document
        self.counts = DocumentCounts()
        self._pieces: dict[str, _Pieces] = {}
        # Whether the next batch is tried on the fast path (the last one was all documents).
        self._whole = True

    def parse_documents(self, batch: LineBatch) -> Documents:
        """The events a batch gives, as columns, in line order (no I/O)."""
        found = Documents()
        if batch.source not in self.sources:
            return found
        lines = batch.lines
        texts = lines.texts
        numbers: Sequence[int]
        if lines.partial or self._pieces:
            texts, numbers = self._joined(batch)
        else:
            numbers = range(batch.first_line, batch.first_line + len(texts))
            if self._whole and self._parse_whole(texts, numbers, found):
                return found
        counts = self.counts
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        typed_names = TYPED_NAMES if self.typed else frozenset()
        found_texts = found.texts
        add_text = found_texts.append
        numbers_found: list[int] = []
        found.line_numbers = numbers_found
        add_number = numbers_found.append
        typed = found.typed
        long_text = 2 * MAX_DEPTH
        unparsed = 0
        refused = 0
        for text, number in zip(texts, numbers, strict=True):
            first = text[:1]
            if first != "{" and first != "[" and (not first or not self._is_document(text)):
                unparsed += first != ""
                continue
            try:
                document = loads(text)
            except decode_error:
                unparsed += 1
                continue
            if len(text) > long_text:
                problem = over_limits(text, document)
                if problem is not None:
                    refused += 1
                    typed[len(found_texts)] = EventType.ERROR
                    add_text(
                        orjson.dumps({"type": "error", **limit_error(number, problem)}).decode()
                    )
                    add_number(number)
                    continue
            if document.__class__ is dict:
                # The shape's dispatch: one dict lookup, then one set lookup.
                name = document.get("type")
                if name.__class__ is str and name in typed_names:
                    try:
                        typed[len(found_texts)] = typed_type(document, name)
                    except EventValidationError:
                        counts.invalid += 1
                    else:
                        counts.typed += 1
            add_text(text)
            add_number(number)
        counts.documents += len(found_texts) - refused
        counts.unparsed += unparsed + refused
        # The next batch tries the fast path again once a batch was all documents.
        self._whole = len(found_texts) == len(texts)
        return found

    def _parse_whole(self, texts: list[str], numbers: Sequence[int], found: Documents) -> bool:
        """The fast path for a batch whose every line is a document (an object or an
        array). Returns False, having changed nothing, when one is not, or when one may be
        over a limit (checked once the texts are parsed: see :func:`_batch_may_exceed`)."""
        loads = orjson.loads
        typed_names = TYPED_NAMES if self.typed else frozenset()
        typed = found.typed
        invalid = 0
        try:
            for index, text in enumerate(texts):
                document = loads(text)
                kind = document.__class__
                if kind is not dict:
                    if kind is not list:
                        typed.clear()
                        self._whole = False
                        return False
                elif "type" in document:
                    name = document["type"]
                    if name.__class__ is str and name in typed_names:
                        try:
                            typed[index] = typed_type(document, name)
                        except EventValidationError:
                            invalid += 1
                # Only the text is kept: freeing the document now lets the next one
                # reuse its memory while it is still in the cache.
                document = None
        except orjson.JSONDecodeError:
            typed.clear()
            self._whole = False
            return False
        if _batch_may_exceed(texts):
            # The careful path checks each line and gives an error event for those over.
            typed.clear()
            return False
        found.texts = found_texts = list(texts)
        counts = self.counts
        counts.documents += len(found_texts)
        counts.typed += len(typed)
        counts.invalid += invalid
        found.line_numbers = numbers
        return True

    def parse_batch(self, batch: LineBatch) -> tuple[list[EventType], list[Payload]]:
        """The events a batch gives, as their types and payloads, in line order (no I/O)."""
        found = self.parse_documents(batch)
        types: list[EventType] = []
        payloads: list[Payload] = []
        for index, (text, number) in enumerate(zip(found.texts, found.line_numbers, strict=True)):
            etype = found.typed.get(index)
            if etype is None:
                types.append(EventType.JSON)
                payloads.append(Json(orjson.loads(text), "json", batch.source, number))
            else:
                types.append(etype)
                payloads.append(typed_data(etype, orjson.loads(text)))
        return types, payloads

    def _joined(self, batch: LineBatch) -> tuple[list[str], list[int]]:
        """The texts of whole lines and their numbers, pieces of cut lines joined."""
        texts: list[str] = []
        numbers: list[int] = []
        partial = batch.lines.partial
        for index, text in enumerate(batch.lines.texts):
            number = batch.first_line + index
            is_partial = index in partial
            if is_partial or self._pieces:
                joined = self._join(batch.source, number, text, is_partial)
                if joined is None:
                    continue
                number, text = joined
            texts.append(text)
            numbers.append(number)
        return texts, numbers

    @staticmethod
    def _is_document(text: str) -> bool:
        """Whether ``text``, after leading blanks, opens an object or an array."""
        first = text.lstrip()[:1]
        return first == "{" or first == "["

    def _join(self, source: str, line_no: int, text: str, partial: bool) -> tuple[int, str] | None:
        """Collect the pieces of a cut line; the whole line once its last piece arrives."""
        held = self._pieces.get(source)
        if held is None:
            held = self._pieces[source] = _Pieces(line_no)
        if not held.too_long:
            held.size += len(text)
            if held.size > self.max_document:
                held.too_long = True
                held.parts.clear()
            else:
                held.parts.append(text)
        if partial:
            return None
        del self._pieces[source]
        if held.too_long:
            self.counts.unparsed += 1
            return None
        return held.first_line, "".join(held.parts)

    async def process(self, batch: LineBatch, publish: Publisher) -> None:
        """Publish the events of one batch, stamped with the time it was read."""
        found = self.parse_documents(batch)
        if found.texts:
            publish.publish_documents(
                batch.source, found.texts, found.line_numbers, found.typed, ts=batch.ts
            )

    async def on_complete(self, completion: Completion, publish: Publisher) -> None:
        """Nothing is held back at the end but pieces of an unfinished line, counted."""
        if self._pieces:
            self.counts.unparsed += len(self._pieces)
            self._pieces.clear()

    async def on_error(self, error: BaseException, publish: Publisher) -> None:
        """Forget what was held: the session reports the failure, and no batch follows."""
        self._pieces.clear()

    def session_details(self) -> dict[str, Any]:
        """The counts, under ``jsonl`` (or the processor's name)."""
        return {self.name: self.counts.as_dict()}
