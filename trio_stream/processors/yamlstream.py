"""YAML streams: documents separated by ``---``, one event per document.

A document is parsed when it is complete: when the next ``---`` line (or a ``...`` end
marker) arrives, or when the stream ends. Loading is ruamel.yaml's safe loading only: no
tag builds an object. A document gives a ``JSON`` event with ``format="yaml"``, or a typed
event when its shape names one (the same rule as for JSON lines, see
:func:`~trio_stream.processors.jsonlines.typed_payload`). Dates, binary values and sets
become JSON text, strings and lists.

A malformed document gives an ``ERROR`` event (code ``yaml``) naming the problem and its
line, and parsing resumes at the next ``---``. Documents that hold only comments or blank
lines give nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final, final

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ..events import Error, EventType, EventValidationError, Json, Payload, Source
from ..limits import MAX_VALUES
from ..publisher import Publisher
from .base import Completion, LineBatch, publish_all
from .jsonlines import DocumentCounts, jsonable, typed_payload

DEFAULT_MAX_DOCUMENT: Final = 16 * 1024 * 1024


def _is_start(text: str) -> bool:
    return text.startswith("---") and (len(text) == 3 or text[3] in " \t")


@final
class _Document:
    """The lines of the document being read from one source."""

    __slots__ = ("first_line", "has_content", "lines", "size", "too_long")

    def __init__(self, first_line: int) -> None:
        self.first_line = first_line
        self.lines: list[str] = []
        self.size = 0
        self.has_content = False
        self.too_long = False


@final
class YamlStreamProcessor:
    """Parse a YAML stream into one event per document.

    Args:
        sources: the sources whose lines are parsed (stdout by default).
        typed: whether documents may name a typed event by their shape.
        max_document: the longest document, in characters; a longer one gives an
            ``ERROR`` event and is skipped up to the next ``---``.
        max_values: the most values a document may hold once its aliases are expanded
            (an alias bomb is small text); a larger one gives an ``ERROR`` event.
        name: the processor's name in drop counts and reports.
    """

    def __init__(
        self,
        *,
        sources: Collection[Source] = ("stdout",),
        typed: bool = True,
        max_document: int = DEFAULT_MAX_DOCUMENT,
        max_values: int = MAX_VALUES,
        name: str = "yaml",
    ) -> None:
        self.name = name
        self.sources = frozenset(sources)
        self.typed = typed
        self.max_document = max_document
        self.max_values = max_values
        self.counts = DocumentCounts()
        self._yaml = YAML(typ="safe")
        self._docs: dict[str, _Document] = {}

    def parse_batch(self, batch: LineBatch) -> list[tuple[EventType, Payload]]:
        """The events of the documents this batch completes, in order (no I/O)."""
        if batch.source not in self.sources:
            return []
        source = batch.source
        out: list[tuple[EventType, Payload]] = []
        line_no = batch.first_line - 1
        for line in batch.lines:
            line_no += 1
            text = line.text
            doc = self._docs.get(source)
            if _is_start(text) and not line.partial:
                if doc is not None:
                    self._finish(source, doc, out)
                doc = self._docs[source] = _Document(line_no)
                doc.has_content = bool(text[3:].strip())
            elif text == "..." and not line.partial:
                if doc is not None:
                    self._finish(source, doc, out)
                    del self._docs[source]
                continue
            elif doc is None:
                doc = self._docs[source] = _Document(line_no)
            if doc.too_long:
                continue
            doc.size += len(text) + 1
            if doc.size > self.max_document:
                doc.too_long = True
                doc.lines.clear()
                continue
            doc.lines.append(text + ("" if line.partial else "\n"))
            if not doc.has_content:
                stripped = text.strip()
                doc.has_content = bool(stripped) and not stripped.startswith(("#", "---"))
        return out

    def finish(self) -> list[tuple[EventType, Payload]]:
        """End of stream: the events of the documents still open."""
        out: list[tuple[EventType, Payload]] = []
        for source, doc in self._docs.items():
            self._finish(source, doc, out)
        self._docs.clear()
        return out

    def _finish(self, source: str, doc: _Document, out: list[tuple[EventType, Payload]]) -> None:
        if doc.too_long:
            out.append(
                (
                    EventType.ERROR,
                    Error(
                        f"YAML document longer than {self.max_document} characters, skipped",
                        "yaml",
                        {"source": source, "line": doc.first_line},
                    ),
                )
            )
            return
        if not doc.has_content:
            return
        text = "".join(doc.lines)
        try:
            document = jsonable(self._yaml.load(text), max_nodes=self.max_values)
        except YAMLError as exc:
            out.append((EventType.ERROR, self._error(exc, source, doc)))
            self.counts.unparsed += 1
            return
        except (ValueError, RecursionError) as exc:
            message = f"YAML document at output line {doc.first_line + 1} {exc}"
            context = {"source": source, "document_line": doc.first_line}
            out.append((EventType.ERROR, Error(message, "yaml", context)))
            self.counts.unparsed += 1
            return
        self.counts.documents += 1
        if self.typed:
            try:
                found = typed_payload(document)
            except EventValidationError:
                self.counts.invalid += 1
                found = None
            if found is not None:
                self.counts.typed += 1
                out.append(found)
                return
        out.append((EventType.JSON, Json(document, "yaml", source, doc.first_line)))

    @staticmethod
    def _error(exc: YAMLError, source: str, doc: _Document) -> Error:
        # Context lines are session line numbers (from 0, like OUTPUT events); the message
        # counts from 1 within the document, as an editor would show it.
        context: dict[str, Any] = {"source": source, "document_line": doc.first_line}
        where = f"YAML document at output line {doc.first_line + 1}"
        if not isinstance(exc, MarkedYAMLError):
            return Error(f"malformed {where}: {exc}", "yaml", context)
        problem = exc.problem or exc.context or "malformed document"
        mark = exc.problem_mark or exc.context_mark
        if mark is None:
            return Error(f"malformed {where}: {problem}", "yaml", context)
        context["line"] = doc.first_line + mark.line
        context["column"] = mark.column + 1
        return Error(
            f"malformed {where}: {problem} (line {mark.line + 1}, column {mark.column + 1})",
            "yaml",
            context,
        )

    async def process(self, batch: LineBatch, publish: Publisher) -> None:
        """Publish an event for each document this batch completes."""
        publish_all(publish, self.parse_batch(batch), batch.ts)

    async def on_complete(self, completion: Completion, publish: Publisher) -> None:
        """Publish the documents still open when the stream ended."""
        publish_all(publish, self.finish())

    async def on_error(self, error: BaseException, publish: Publisher) -> None:
        """Forget the open documents: the session reports the failure, and no batch follows."""
        self._docs.clear()

    def session_details(self) -> dict[str, Any]:
        """The counts, under ``yaml`` (or the processor's name)."""
        return {self.name: self.counts.as_dict()}
