"""Filters and redaction: what is kept, and what is hidden, before anything is recorded.

Filters are written ``ACTION:FIELD=VALUE`` (see :func:`parse_filter`)::

    drop:regex=^DEBUG            leave out lines that match
    keep:regex=ERROR|WARN        keep only lines that match
    drop:source=stderr           leave out a source's lines
    keep:source=stdout
    drop:type=reasoning,json     leave out derived events of these types
    keep:type=command_started,command_completed,command_failed

Line filters (``source``, ``regex``) and redaction are
:class:`~trio_stream.processors.base.LineTransform` objects: the session applies them to
every batch before anything records, serves or processes the lines, so a line a filter
leaves out is never recorded, and a redacted secret never reaches the history. Type
filters apply to the events processors derive (never to lines, nor to the session's own
start and end): see :class:`TypeFiltered`.

Redaction (``--redact REGEX``) replaces each match with :data:`REDACTED`; when the regex
has groups, only what the groups matched is replaced, so ``token=(\\S+)`` keeps
``token=`` and hides the value. A redacted line that was not valid UTF-8 keeps only its
decoded text, since its exact bytes hold the secret. A line longer than the maximum line
length reaches the transforms in pieces, and a secret cut across two pieces is not seen
whole: keep the maximum line length above the longest line that may hold one.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any, Final, final

import attrs

from ..events import SOURCES, EventType, Source
from ..lines import Line
from ..publisher import Publisher
from .base import Completion, LineBatch, StreamProcessor
from .patterns import JoinedText, LineLocator, PatternError, compile_regex

REDACTED: Final = "[REDACTED]"

FILTERABLE_TYPES: Final[tuple[str, ...]] = tuple(
    t.value
    for t in EventType
    if t not in (EventType.OUTPUT, EventType.SESSION_STARTED, EventType.SESSION_ENDED)
)
"""Event types a type filter may name: the ones processors derive."""

_FILTER_RE: Final = re.compile(r"(?P<action>keep|drop):(?P<field>source|regex|type)=(?P<value>.*)")


@final
class LineFilter:
    """Keep or leave out lines by source or by regex (a LineTransform).

    Args:
        keep: True to keep only what matches, False to leave out what matches.
        sources: the sources this filter selects (a source filter), or
        regex: the regex this filter selects lines by (a regex filter).
        name: how the filter is reported (its spec).
    """

    def __init__(
        self,
        keep: bool,
        *,
        sources: Collection[Source] | None = None,
        regex: re.Pattern[str] | None = None,
        name: str | None = None,
    ) -> None:
        if (sources is None) == (regex is None):
            raise ValueError("a line filter selects by sources or by regex, not both")
        self.keep = keep
        self.sources = frozenset(sources) if sources is not None else None
        self.regex = regex
        self._locator = LineLocator(regex) if regex is not None else None
        action = "keep" if keep else "drop"
        if name is None:
            name = (
                f"{action}:source={','.join(sorted(self.sources))}"
                if self.sources is not None
                else f"{action}:regex={regex.pattern if regex else ''}"
            )
        self.name = name
        self.filtered = 0

    def apply(self, source: Source, lines: list[Line]) -> list[Line]:
        """The lines this filter keeps, in order."""
        if not lines:
            return lines
        if self.sources is not None:
            if (source in self.sources) == self.keep:
                return lines
            self.filtered += len(lines)
            return []
        assert self._locator is not None
        texts = [line.text for line in lines]
        hits = self._locator.matching(texts, JoinedText(texts))
        if self.keep:
            kept = [lines[index] for index, _ in hits]
        elif not hits:
            kept = lines
        else:
            selected = {index for index, _ in hits}
            kept = [line for index, line in enumerate(lines) if index not in selected]
        self.filtered += len(lines) - len(kept)
        return kept


@final
class Redactor:
    """Replace secrets matched by regexes (a LineTransform).

    Args:
        patterns: the regexes; with groups, only the groups' text is replaced.
        replacement: what a secret becomes.
    """

    name = "redact"

    def __init__(self, patterns: Sequence[re.Pattern[str]], replacement: str = REDACTED) -> None:
        self.patterns = list(patterns)
        self.replacement = replacement
        self.redacted = 0
        self._locators = [LineLocator(p) for p in self.patterns]

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for pattern in self.patterns:
            text = pattern.sub(self._replace, text)
        return text

    def _replace(self, found: re.Match[str]) -> str:
        whole = found.group(0)
        if found.re.groups == 0:
            return self.replacement
        start = found.start()
        pieces: list[str] = []
        position = 0
        for index in range(1, found.re.groups + 1):
            begin, end = found.span(index)
            if begin < 0 or begin - start < position:
                # A group that did not take part, or one nested in a group already hidden.
                continue
            pieces.append(whole[position : begin - start])
            pieces.append(self.replacement)
            position = end - start
        pieces.append(whole[position:])
        return "".join(pieces)

    def apply(self, source: Source, lines: list[Line]) -> list[Line]:
        """The lines with secrets replaced; lines without one are the same objects."""
        if not lines or not self.patterns:
            return lines
        texts = [line.text for line in lines]
        joined = JoinedText(texts)
        suspects: set[int] = set()
        for locator in self._locators:
            suspects.update(index for index, _ in locator.matching(texts, joined))
        if not suspects:
            return lines
        out = list(lines)
        for index in sorted(suspects):
            line = lines[index]
            text = self.redact(line.text)
            if text != line.text:
                self.redacted += 1
                out[index] = Line(text, line.eol, line.partial, None)
        return out


@final
@attrs.frozen
class TypeFilter:
    """Which derived event types to leave out."""

    drop: frozenset[EventType]
    name: str


def parse_filter(spec: str) -> LineFilter | TypeFilter:
    """Read an ``ACTION:FIELD=VALUE`` filter.

    Raises:
        PatternError: naming the filter and what is wrong with it.
    """
    parts = _FILTER_RE.fullmatch(spec)
    if parts is None:
        raise PatternError(
            f"invalid filter {spec!r}: write keep:FIELD=VALUE or drop:FIELD=VALUE, "
            "FIELD one of source, regex, type"
        )
    keep = parts["action"] == "keep"
    field, value = parts["field"], parts["value"]
    if field == "regex":
        return LineFilter(keep, regex=compile_regex(value, f"filter {spec!r}"), name=spec)
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    if not names:
        raise PatternError(f"invalid filter {spec!r}: no {field} given")
    if field == "source":
        unknown = [n for n in names if n not in SOURCES]
        if unknown:
            raise PatternError(
                f"invalid filter {spec!r}: unknown source {unknown[0]!r} (stdout or stderr)"
            )
        return LineFilter(keep, sources=names, name=spec)  # type: ignore[arg-type]
    unknown = [n for n in names if n not in FILTERABLE_TYPES]
    if unknown:
        hint = " (lines are filtered by source or regex)" if unknown[0] == "output" else ""
        raise PatternError(
            f"invalid filter {spec!r}: {unknown[0]!r} is not a type a filter can select{hint}; "
            f"choose from {', '.join(FILTERABLE_TYPES)}"
        )
    selected = {EventType(n) for n in names}
    every = {EventType(n) for n in FILTERABLE_TYPES}
    return TypeFilter(frozenset(every - selected if keep else selected), spec)


@final
class TypeFiltered:
    """A processor whose events of some types are left out (``--filter drop:type=…``).

    Args:
        processor: the processor to wrap.
        drop: the event types to leave out.
    """

    def __init__(self, processor: StreamProcessor, drop: Collection[EventType]) -> None:
        self.processor = processor
        self.drop = frozenset(drop)
        self.name = processor.name

    def _publisher(self, publish: Publisher) -> Publisher:
        return Publisher(publish.log, drop_types=publish.drop_types | self.drop)

    async def process(self, batch: LineBatch, publish: Publisher) -> None:
        await self.processor.process(batch, self._publisher(publish))

    async def on_complete(self, completion: Completion, publish: Publisher) -> None:
        await self.processor.on_complete(completion, self._publisher(publish))

    async def on_error(self, error: BaseException, publish: Publisher) -> None:
        await self.processor.on_error(error, self._publisher(publish))

    def session_details(self) -> dict[str, Any]:
        """What the wrapped processor reports, if it reports anything."""
        details = getattr(self.processor, "session_details", None)
        return details() if details is not None else {}
