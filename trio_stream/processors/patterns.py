"""Named patterns: regular expressions that turn matching lines into events.

A pattern is written ``NAME[:TYPE][@LEVEL]=REGEX`` (see :func:`parse_match`)::

    error=^ERROR: (?P<message>.*)             a MATCH event with the groups
    slow@warning=took (?P<ms>\\d+)ms           a MATCH event at level "warning"
    oom:error@critical=Out of memory           an ERROR event (code "oom")
    phase:status=^== (?P<status>\\w+) ==        a STATUS event (kind "phase")

Each pattern is compiled once, when the options are read. A line gives at most one event
per pattern (its first match); the events of a batch come in line order, and for one line
in the order the patterns were given.

Speed: a batch's lines are joined once and each pattern searches the joined text, so lines
that match nothing cost no Python work. Only the lines where a pattern may match are
searched again alone, which gives exactly the per-line semantics.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import Any, Final, final

import attrs

from ..events import Custom, Error, EventType, Match, Payload, Reasoning, Source, Status
from ..publisher import Publisher
from .base import Completion, LineBatch, publish_all

MATCH_TYPES: Final[tuple[str, ...]] = ("match", "status", "error", "reasoning", "custom")
"""The event types a pattern can emit."""

LEVELS: Final[tuple[str, ...]] = ("debug", "info", "notice", "warning", "error", "critical")

_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_HEAD_RE: Final = re.compile(
    r"(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?::(?P<type>[A-Za-z_]+))?(?:@(?P<level>[A-Za-z]+))?"
)
# Constructs whose meaning changes when a line is searched inside the joined batch text
# (anchors to the whole string, lookarounds that could see the neighbouring line, flags
# turned off inline): patterns using them are searched line by line.
_UNSAFE_IN_JOINED: Final = re.compile(r"\\[AZz]|\(\?<[=!]|\(\?[=!]|\(\?[a-zA-Z]*-")


class PatternError(ValueError):
    """A pattern, filter or redaction that cannot be used; the message names it."""


def compile_regex(regex: str, what: str) -> re.Pattern[str]:
    """Compile ``regex``, naming ``what`` it belongs to when it does not compile.

    Raises:
        PatternError: ``invalid regex for {what}: …``.
    """
    if not regex:
        raise PatternError(f"empty regex for {what}")
    try:
        return re.compile(regex)
    except re.error as exc:
        raise PatternError(f"invalid regex for {what} {regex!r}: {exc}") from None


@final
class LineLocator:
    """Finds which of a batch's lines a regex matches, without a Python loop per line.

    Args:
        pattern: the compiled regex, with its per-line meaning.
    """

    __slots__ = ("joined", "pattern")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.joined: re.Pattern[str] | None = None
        source = pattern.pattern
        if not _UNSAFE_IN_JOINED.search(source):
            if source.startswith("^") and "|" not in source:
                # A leading ^ stops re from looking for the literal that follows, which is
                # slow over a long text; without it the search finds a superset of the
                # lines, and every line found is checked alone anyway.
                source = source[1:]
            # MULTILINE makes ^ and $ hold at every line, as they do for a line alone.
            self.joined = re.compile(source, pattern.flags | re.MULTILINE)

    def matching(self, texts: Sequence[str], joined: JoinedText) -> list[tuple[int, re.Match[str]]]:
        """The indices of ``texts`` the pattern matches, in order, with each line's match."""
        out: list[tuple[int, re.Match[str]]] = []
        if self.joined is None:
            search = self.pattern.search
            for index, text in enumerate(texts):
                alone = search(text)
                if alone is not None:
                    out.append((index, alone))
            return out
        search_joined = self.joined.search
        found = search_joined(joined.text)
        if found is None:
            return out
        search = self.pattern.search
        starts = joined.starts
        count = len(texts)
        while found is not None:
            # A match in the joined text may span lines: check where it starts alone,
            # then go on from the next line, so that no line with a match is skipped.
            index = bisect_right(starts, found.start()) - 1
            alone = search(texts[index])
            if alone is not None:
                out.append((index, alone))
            if index + 1 >= count:
                break
            found = search_joined(joined.text, starts[index + 1])
        return out


@final
class JoinedText:
    """A batch's texts joined by newlines (once, lazily), with where each line starts."""

    __slots__ = ("_starts", "text", "texts")

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = texts
        self.text = "\n".join(texts)
        self._starts: list[int] | None = None

    @property
    def starts(self) -> list[int]:
        if self._starts is None:
            starts = [0]
            starts.extend(accumulate(len(t) + 1 for t in self.texts))
            self._starts = starts
        return self._starts


@final
@attrs.frozen
class NamedPattern:
    """A pattern: what it is called, what it looks for, and the event it makes."""

    name: str
    regex: re.Pattern[str]
    type: EventType = EventType.MATCH
    level: str | None = None

    def payload(self, found: re.Match[str], text: str, source: Source, line: int) -> Payload:
        """The event data for a line the pattern matched."""
        groups: dict[str, str | None] = {}
        names = {index: name for name, index in self.regex.groupindex.items()}
        for index, value in enumerate(found.groups(), 1):
            groups[names.get(index, str(index))] = value
        etype = self.type
        if etype is EventType.MATCH:
            return Match(self.name, groups, text, source, line, self.level)
        context: dict[str, Any] = {"groups": groups, "text": text, "source": source, "line": line}
        if self.level is not None:
            context["level"] = self.level
        message = groups.get("message") or groups.get("msg") or text
        if etype is EventType.ERROR:
            return Error(message, self.name, context)
        if etype is EventType.STATUS:
            return Status(groups.get("status") or self.name, self.name, message)
        if etype is EventType.REASONING:
            return Reasoning(groups.get("thought") or message, None, self.name, context)
        return Custom(self.name, context)


def parse_match(spec: str) -> NamedPattern:
    """Read a ``NAME[:TYPE][@LEVEL]=REGEX`` pattern.

    Raises:
        PatternError: naming the pattern and what is wrong with it.
    """
    head, sep, regex = spec.partition("=")
    parts = _HEAD_RE.fullmatch(head)
    if not sep or parts is None:
        raise PatternError(
            f"invalid pattern {spec!r}: write NAME=REGEX, NAME:TYPE=REGEX or "
            "NAME:TYPE@LEVEL=REGEX (NAME: letters, digits, _ . -)"
        )
    name = parts["name"]
    return make_pattern(name, regex, parts["type"], parts["level"])


def make_pattern(
    name: str, regex: str, type: str | None = None, level: str | None = None
) -> NamedPattern:
    """Build a pattern from its parts (from the command line or a config file).

    Raises:
        PatternError: naming the pattern and what is wrong with it.
    """
    if not _NAME_RE.fullmatch(name):
        raise PatternError(f"invalid pattern name {name!r}: use letters, digits, _ . -")
    etype = (type or "match").lower()
    if etype not in MATCH_TYPES:
        raise PatternError(
            f"pattern {name!r}: unknown event type {type!r} (choose from {', '.join(MATCH_TYPES)})"
        )
    if level is not None and level.lower() not in LEVELS:
        raise PatternError(
            f"pattern {name!r}: unknown level {level!r} (choose from {', '.join(LEVELS)})"
        )
    compiled = compile_regex(regex, f"pattern {name!r}")
    return NamedPattern(name, compiled, EventType(etype), level.lower() if level else None)


@final
class PatternMatcher:
    """Emit an event for each line a named pattern matches.

    Args:
        patterns: the patterns, in the order their events are given for one line.
        sources: the sources whose lines are matched (both by default).
        name: the processor's name in drop counts and reports.

    Raises:
        PatternError: when two patterns share a name.
    """

    def __init__(
        self,
        patterns: Sequence[NamedPattern],
        *,
        sources: Iterable[Source] = ("stdout", "stderr"),
        name: str = "patterns",
    ) -> None:
        seen: set[str] = set()
        for pattern in patterns:
            if pattern.name in seen:
                raise PatternError(f"two patterns are named {pattern.name!r}")
            seen.add(pattern.name)
        self.name = name
        self.patterns = list(patterns)
        self.sources = frozenset(sources)
        self.matched = 0
        self._locators = [LineLocator(p.regex) for p in self.patterns]

    def match_batch(self, batch: LineBatch) -> list[tuple[EventType, Payload]]:
        """The events of one batch, in line order (no I/O)."""
        if batch.source not in self.sources or not batch.lines:
            return []
        texts = batch.lines.texts
        joined = JoinedText(texts)
        hits: list[tuple[int, int, re.Match[str]]] = []
        for number, locator in enumerate(self._locators):
            hits.extend((index, number, found) for index, found in locator.matching(texts, joined))
        if not hits:
            return []
        hits.sort(key=lambda hit: (hit[0], hit[1]))
        out: list[tuple[EventType, Payload]] = []
        for index, number, found in hits:
            pattern = self.patterns[number]
            payload = pattern.payload(found, texts[index], batch.source, batch.first_line + index)
            out.append((pattern.type, payload))
        self.matched += len(out)
        return out

    async def process(self, batch: LineBatch, publish: Publisher) -> None:
        """Publish the events of one batch, stamped with the time it was read."""
        publish_all(publish, self.match_batch(batch), batch.ts)

    async def on_complete(self, completion: Completion, publish: Publisher) -> None:
        """Patterns hold nothing across batches: nothing to do at the end."""

    async def on_error(self, error: BaseException, publish: Publisher) -> None:
        """Nothing to release: the session reports the failure."""
