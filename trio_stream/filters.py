"""Which events pass: the one filter model, :class:`EventFilter`, and its matcher.

The same rules decide everywhere: a hub's live fan-out and history pages, ``tstream
attach`` and every store's queries (:func:`trio_stream.store.query.matcher` matches a
:class:`~trio_stream.store.base.HistoryQuery` with the filter of its fields), so a live
subscription and a history query pass the same events.

A filter builds its matcher once, from the fields it has: an event is tested only
against what was asked for. ``searchText`` and ``pattern`` look in
:func:`searched_text`, a line's text or the event's data as JSON, cut at
:data:`MAX_SEARCHED_TEXT` characters: a bound on the work one regular expression may do
per event, the same for events on their way to clients and events read back.
"""

from __future__ import annotations

import re
import weakref
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import attrs
import orjson

from .events import Event, EventType, Output, converter

if TYPE_CHECKING:
    # The store's queries use this module's matcher: imported where a query is built.
    from .store.base import HistoryQuery

MAX_SEARCHED_TEXT: Final = 64 * 1024
"""How much of an event's text ``searchText`` and ``pattern`` look in (characters)."""


class Matcher(Protocol):
    """Whether an event (serialized as ``raw``, when at hand) passes."""

    def __call__(self, event: Event, raw: bytes | None = None, /) -> bool: ...


def searched_text(event: Event, raw: bytes | None = None) -> str:
    """The text a search looks in: a line's text, else the event's data as JSON (taken
    from ``raw``, the event's JSON, when at hand), at most :data:`MAX_SEARCHED_TEXT`
    characters of it."""
    data = event.data
    if type(data) is Output:
        text = data.text
    elif raw is not None:
        # ``data`` is the event's last key, and no field before it can contain the marker.
        text = raw[raw.index(b',"data":') + 8 : -1].decode()
    else:
        text = orjson.dumps(converter.unstructure(data)).decode()
    return text[:MAX_SEARCHED_TEXT]


def fold(text: str) -> str:
    """The case-insensitive form both sides of a search are compared in."""
    return text.casefold()


def _always(event: Event, raw: bytes | None = None) -> bool:
    return True


@final
@attrs.frozen(cache_hash=True)
class EventFilter:
    """Which events a client wants; the empty filter passes everything.

    ``search_text`` is kept folded (:func:`fold`). ``matches(event, raw=None)`` says
    whether ``event`` (serialized as ``raw``, when at hand) passes; it is built once, from
    the fields this filter has.
    """

    types: frozenset[EventType] | None = None
    sources: frozenset[str] | None = None
    start_time: float | None = None
    end_time: float | None = None
    search_text: str | None = None
    pattern: re.Pattern[str] | None = None
    sessions: frozenset[str] | None = None
    # Several filters (the design's StreamFilter[]): an event passes if any passes it.
    alternatives: tuple[EventFilter, ...] | None = None
    matches: Matcher = attrs.field(init=False, eq=False, repr=False)
    #: Whether this filter passes everything (read for every client of every tick).
    empty: bool = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "matches", _matcher(self))
        object.__setattr__(self, "empty", all(field is None for field in self._fields()))

    def _fields(self) -> tuple[Any, ...]:
        """What it compares equal by."""
        return (
            self.types,
            self.sources,
            self.start_time,
            self.end_time,
            self.search_text,
            self.pattern,
            self.sessions,
            self.alternatives,
        )

    def interned(self) -> EventFilter:
        """The one instance of the filters equal to this one that are in use: a tick's
        batch keeps what each distinct filter selects, and finding it by identity spares
        a comparison of every field for every client of every tick."""
        return _INTERNED.setdefault(self._fields(), self)

    @classmethod
    def of_query(cls, query: HistoryQuery) -> EventFilter:
        """The filter of a store query's fields (its paging aside)."""
        search = query.search_text
        return cls(
            query.types,
            query.sources,
            query.start_time,
            query.end_time,
            None if search is None else fold(search),
        )

    @property
    def exact(self) -> bool:
        """Whether the store's query (:meth:`to_query`) finds exactly the events this
        filter passes; if not, the caller matches what the query finds."""
        return self.pattern is None and self.sessions is None and self.alternatives is None

    def to_query(
        self,
        *,
        after: int = -1,
        limit: int | None = None,
        skip: int = 0,
        last: int | None = None,
    ) -> HistoryQuery:
        """The store query for this filter: exact unless :attr:`exact` is False (then
        the caller matches what it finds)."""
        from .store.base import HistoryQuery

        if self.alternatives is not None:
            return _loosest(self.alternatives).to_query(
                after=after, limit=limit, skip=skip, last=last
            )
        return HistoryQuery(
            after=after,
            types=self.types,
            sources=self.sources,
            start_time=self.start_time,
            end_time=self.end_time,
            search_text=self.search_text,
            limit=limit,
            skip=skip,
            last=last,
        )

    def to_json(self) -> Any:
        """The wire form (what :func:`trio_stream.hub.params.parse_filters` reads back):
        an object, or a list of them for several filters."""
        if self.alternatives is not None:
            return [f.to_json() for f in self.alternatives]
        out: dict[str, Any] = {}
        if self.types is not None:
            out["eventTypes"] = sorted(t.value for t in self.types)
        if self.sources is not None:
            out["sources"] = sorted(self.sources)
        if self.start_time is not None:
            out["startTime"] = self.start_time
        if self.end_time is not None:
            out["endTime"] = self.end_time
        if self.search_text is not None:
            out["searchText"] = self.search_text
        if self.pattern is not None:
            out["pattern"] = self.pattern.pattern
        if self.sessions is not None:
            out["sessionIds"] = sorted(self.sessions)
        return out


def _matcher(flt: EventFilter) -> Matcher:
    """The test of ``flt``: one check per field it has, the cheapest first."""
    if flt.alternatives is not None:
        each = tuple(f.matches for f in flt.alternatives)

        def any_of(event: Event, raw: bytes | None = None) -> bool:
            for matches in each:
                if matches(event, raw):
                    return True
            return False

        return any_of
    checks: list[Matcher] = []
    types, sessions, sources = flt.types, flt.sessions, flt.sources
    start, end = flt.start_time, flt.end_time
    if types is not None:
        checks.append(lambda event, raw=None: event.type in types)
    if sessions is not None:
        checks.append(lambda event, raw=None: event.session in sessions)
    if sources is not None:
        checks.append(
            lambda event, raw=None: type(event.data) is not Output or event.data.source in sources  # type: ignore[union-attr]
        )
    if start is not None and end is not None:
        checks.append(lambda event, raw=None: start <= event.ts <= end)
    elif start is not None:
        checks.append(lambda event, raw=None: event.ts >= start)
    elif end is not None:
        checks.append(lambda event, raw=None: event.ts <= end)
    if flt.search_text is not None or flt.pattern is not None:
        checks.append(_text_matcher(flt.search_text, flt.pattern))
    return _all_of(checks)


def _text_matcher(search: str | None, pattern: re.Pattern[str] | None) -> Matcher:
    """The check of ``searchText`` and ``pattern`` in :func:`searched_text`."""
    cut = MAX_SEARCHED_TEXT
    find = None if pattern is None else pattern.search

    def matches(event: Event, raw: bytes | None = None) -> bool:
        data = event.data
        # A line's text, the common case, without a call.
        text = data.text[:cut] if type(data) is Output else searched_text(event, raw)
        if search is not None and search not in text.casefold():
            return False
        return find is None or find(text) is not None

    return matches


def _all_of(checks: list[Matcher]) -> Matcher:
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda event, raw=None: first(event, raw) and second(event, raw)
    each = tuple(checks)

    def all_of(event: Event, raw: bytes | None = None) -> bool:
        for matches in each:
            if not matches(event, raw):
                return False
        return True

    return all_of


def _loosest(filters: tuple[EventFilter, ...]) -> EventFilter:
    """A filter passing whatever any of ``filters`` passes, as far as the store can ask."""

    def union(values: list[Any]) -> Any:
        return None if any(v is None for v in values) else frozenset().union(*values)

    starts = [f.start_time for f in filters]
    ends = [f.end_time for f in filters]
    return EventFilter(
        union([f.types for f in filters]),
        union([f.sources for f in filters]),
        None if None in starts else min(starts),  # type: ignore[type-var]
        None if None in ends else max(ends),  # type: ignore[type-var]
    )


# Filters in use, each once (:meth:`EventFilter.interned`), by their fields (a key that
# held the filter itself would keep it forever); gone with their last user.
_INTERNED: Final[weakref.WeakValueDictionary[tuple[Any, ...], EventFilter]] = (
    weakref.WeakValueDictionary()
)
