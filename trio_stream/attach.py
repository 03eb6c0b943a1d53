"""Following a session from outside the process that runs it: what ``tstream attach`` does.

A session is found, in this order, among the running sessions of this machine (the
registry of :mod:`trio_stream.registry`), then in the local store (a finished session, or
one whose run was killed: ``interrupted``), or on a hub given by URL. Its events come
from the first event (or after a given offset), history then live, with no gap and no
duplicate: a dropped connection is reopened after the last offset delivered, and a local
run that dies while followed is finished from the store.

From Python::

    async with subscribe("latest") as events:
        async for event in events:
            print(event.offset, event.type.value)

The iteration ends after the session's ``session_ended`` event.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, final
from urllib.parse import quote

import attrs
import trio

from .batches import EventRuns, RowEvents
from .client import HubClientError, filter_query, follow_stream, get_json
from .events import Event, EventType, SessionEnded, event_from_dict
from .filters import EventFilter
from .registry import LiveSession, find_live, forget, match_ref
from .store import HistoryQuery, SessionInfo, SessionStatus, Store, UnknownSessionError
from .store.base import RowStore, RunStore
from .store.query import read_pages
from .store.sessions import process_alive

# Reconnections in a row before a hub counts as gone (about 30 s with the backoff).
RETRIES: Final = 10
# Events read from a store at once.
PAGE: Final = 10_000
# Pauses between looks at a stream that ended without session_ended (about 3 s in all).
REVIVE_PAUSES: Final = (0.2, 0.4, 0.8, 1.6)
# How often a followed local run is checked for being alive, and the store polled for a
# running session that is not served.
WATCH_INTERVAL: Final = 0.25
# A running local session is followed in its store while it records at least
# STORE_FOLLOW_MIN events every STORE_FOLLOW_INTERVAL seconds (100,000 a second).
STORE_FOLLOW_INTERVAL: Final = 0.1
STORE_FOLLOW_MIN: Final = 10_000
# How long a hub may stay silent while connecting or answering a request.
HTTP_TIMEOUT: Final = 30.0


@final
@attrs.frozen
class Target:
    """A session found by :func:`locate`, and where to follow it from.

    Attributes:
        session_id: the session.
        hub: the hub serving it live (``unix:PATH`` or ``http://…``), None if none does.
        token: the bearer token for that hub.
        live: its registration, when it runs on this machine.
        info: the store's view of it, when it was found in the local store.
    """

    session_id: str
    hub: str | None = None
    token: str | None = None
    live: LiveSession | None = None
    info: SessionInfo | None = None


async def http_get(hub: str, path: str, token: str | None = None) -> Any:
    """GET ``path`` from ``hub`` as JSON, waiting at most :data:`HTTP_TIMEOUT` seconds.

    Raises:
        HubClientError, OSError, ValueError: as :func:`trio_stream.client.get_json`.
    """
    return await get_json(hub, path, token, timeout=HTTP_TIMEOUT)


async def resolve_on_hub(hub: str, ref: str, token: str | None = None) -> str:
    """The id of the stream ``ref`` (an id, a unique prefix or ``latest``) on ``hub``.

    Raises:
        UnknownSessionError, AmbiguousSessionError, HubClientError, OSError.
    """
    if ref != "latest":
        try:
            answer = await http_get(hub, f"/api/streams/{quote(ref, safe='')}", token)
            return str(answer["id"])
        except HubClientError as exc:
            if exc.code != "not_found":
                raise
    listing = await http_get(hub, "/api/streams?limit=1000", token)
    return match_ref(ref, [str(s["id"]) for s in listing.get("streams", [])])


async def locate(
    ref: str,
    *,
    hub: str | None = None,
    token: str | None = None,
    store: Store | None = None,
) -> Target:
    """Find the session ``ref`` names (an id, a unique prefix, or ``latest``).

    Args:
        ref: the session.
        hub: look on this hub only.
        token: the hub's bearer token.
        store: the local store, looked in after the running sessions.

    Raises:
        UnknownSessionError, AmbiguousSessionError: as ``tstream show`` reports them.
        HubClientError, OSError: the hub refused or cannot be reached.
    """
    if hub is not None:
        # Several hubs (separated by commas) share a store: the first that answers.
        hubs = hub.split(",")
        for index, one in enumerate(hubs):
            try:
                return Target(await resolve_on_hub(one, ref, token), hub=hub, token=token)
            except (OSError, HubClientError) as exc:
                if index == len(hubs) - 1 or (
                    isinstance(exc, HubClientError) and exc.code != "unreachable"
                ):
                    raise
        raise AssertionError("unreachable")
    try:
        live = find_live(ref)
    except UnknownSessionError:
        if store is None:
            raise
        return Target((info := await store.resolve(ref)).id, info=info)
    return Target(live.id, hub=live.hub, token=token, live=live)


def server_filter(user: EventFilter) -> dict[str, Any]:
    """What to ask the hub for: the user's filters, widened so that ``session_ended`` (and
    with it the exit status) always arrives; the rest is filtered on arrival."""
    wire = attrs.evolve(user, search_text=None, pattern=None, end_time=None).to_json()
    if user.types is not None:
        wire["eventTypes"] = sorted({*wire["eventTypes"], EventType.SESSION_ENDED.value})
    return wire


@final
class Feed:
    """The events of one session, in offset order, from every place they may be.

    Args:
        target: the session (from :func:`locate`).
        send: where the batches go; closed at the end.
        filters: the events wanted (``session_ended`` is always delivered).
        last: start with the last ``last`` matching events of the history.
        after: the last offset already had (-1: from the start).
        follow: go on with live events once the history is out.
        store: the local store, to finish a local run that died.
    """

    def __init__(
        self,
        target: Target,
        send: trio.MemorySendChannel[Sequence[Event]],
        *,
        filters: EventFilter = EventFilter(),
        last: int | None = None,
        after: int = -1,
        follow: bool = True,
        store: Store | None = None,
    ) -> None:
        self.target = target
        self.send = send
        self.filters = filters
        self.last = last
        self.after = after
        self.follow = follow
        self.store = store
        self.ended: SessionEnded | None = None
        self.interrupted = False
        self.info: SessionInfo | None = target.info

    async def _deliver(self, events: Sequence[Event]) -> None:
        if isinstance(events, RowEvents | EventRuns) and self.filters.empty:
            await self._deliver_rows(events)
            return
        kept = []
        after = self.after
        ended = self.ended
        flt = None if self.filters.empty else self.filters
        for event in events:
            if event.offset <= after:
                continue
            after = event.offset
            if type(event.data) is SessionEnded:
                ended = event.data
            if flt is None or flt.matches(event):
                kept.append(event)
        if kept:
            # A cancelled send sent nothing: the cursor moves only once the events are out.
            await self.send.send(kept)
        self.after, self.ended = after, ended

    async def _deliver_rows(self, events: RowEvents | EventRuns) -> None:
        """:meth:`_deliver` without filters, for events not built yet (rows, or lines
        as columns)."""
        fresh = events.after(self.after)
        if not len(fresh):
            return
        ended = self.ended
        for event in fresh.others():
            if type(event.data) is SessionEnded:
                ended = event.data
        await self.send.send(fresh)
        self.after, self.ended = fresh.last_offset, ended

    async def run(self) -> None:
        """Deliver the events, then close the channel."""
        async with self.send:
            target = self.target
            if target.hub is None:
                await self._from_store(target.session_id)
                return
            if not await self._from_hub(target.hub):
                # The local run died (or its socket refuses): the store has the rest.
                if target.live is not None:
                    forget(target.live)
                await self._from_store(target.session_id)

    async def _from_hub(self, hub: str) -> bool:
        """Follow on the hub; False when a local run turned out to be gone."""
        target = self.target
        wire = server_filter(self.filters)
        if target.live is not None and await self._local_history():
            if not self.follow or self.ended is not None:
                return True
        elif self.last is not None or not self.follow:
            try:
                await self._history(hub)
            except OSError:
                if target.live is None:
                    raise
                return False
            if not self.follow or self.ended is not None:
                return True
        if target.live is not None:
            return await self._follow(hub, wire)
        # A stream the hub ended without session_ended was cut short (its hub restarted,
        # its publisher went away): its publisher may resume it, so look again a few times.
        for pause in REVIVE_PAUSES:
            await self._follow(hub, wire)
            if self.ended is not None:
                return True
            sid = quote(target.session_id, safe="")
            stream = await http_get(hub, f"/api/streams/{sid}", target.token)
            if stream.get("status") != SessionStatus.RUNNING.value:
                await trio.sleep(pause)
        self.interrupted = True
        return True

    async def _follow(self, hub: str, wire: dict[str, Any]) -> bool:
        """Follow live until the hub ends the stream; False when a local run is gone."""
        target = self.target
        async with trio.open_nursery() as nursery:
            if target.live is not None:
                nursery.start_soon(self._watch, target.live, nursery.cancel_scope)
            try:
                async with follow_stream(
                    hub,
                    target.session_id,
                    after=self.after,
                    token=target.token,
                    # A local socket drops only when its run ends: the store has the rest.
                    retries=1 if target.live is not None else RETRIES,
                    filters=wire,
                    batched=True,
                ) as batches:
                    async for batch in batches:
                        await self._deliver(batch)
            except HubClientError:
                if target.live is None:
                    raise
                nursery.cancel_scope.cancel()
                return False
            nursery.cancel_scope.cancel()
        return self.ended is not None or target.live is None

    async def _local_history(self) -> bool:
        """The history of a local run from the store it records into, when this is that
        store: read in this process, much faster than through the run's hub. The hub
        then gives what follows (the last tenth of a second, and the live events)."""
        live = self.target.live
        if self.store is None or live is None:
            return False
        try:
            info = await self.store.get_session(live.id)
            if info.pid != live.pid:
                return False
            await self._store_pass(self.store, live.id, self._query())
            self.last = None
            # While the run records lines faster than a hub carries them to one client,
            # the store is the faster way to follow it: it is read again each time the
            # run records, until it records little (then the hub's latency is better).
            while self.follow and self.ended is None:
                await trio.sleep(STORE_FOLLOW_INTERVAL)
                before = self.after
                await self._store_pass(self.store, live.id, self._query())
                if self.after - before < STORE_FOLLOW_MIN:
                    break
        except UnknownSessionError:
            return False
        return True

    async def _watch(self, live: LiveSession, scope: trio.CancelScope) -> None:
        # Only the death of the run counts: its socket goes as it ends normally too, and
        # then the hub still sends the end of the session.
        while process_alive(live.pid):
            await trio.sleep(WATCH_INTERVAL)
        scope.cancel()

    async def _history(self, hub: str) -> None:
        """The history the hub holds now (``--last``, ``--no-follow``)."""
        wire = self.filters.to_json()
        path = f"/api/streams/{quote(self.target.session_id, safe='')}/history"
        if self.last is not None:
            query = filter_query({**wire, "lastN": self.last})
            answer = await http_get(hub, f"{path}?{query}", self.target.token)
            await self._deliver([event_from_dict(e) for e in answer["events"]])
            return
        while True:
            query = filter_query({**wire, "after": self.after, "limit": PAGE})
            answer = await http_get(hub, f"{path}?{query}", self.target.token)
            events = [event_from_dict(e) for e in answer["events"]]
            await self._deliver(events)
            if len(events) < PAGE:
                self.after = max(self.after, int(answer["lastOffset"]))
                return

    def _query(self) -> HistoryQuery:
        flt = self.filters
        return HistoryQuery(
            types=flt.types, sources=flt.sources, start_time=flt.start_time, last=self.last
        )

    async def _store_pass(self, store: Store, session_id: str, query: HistoryQuery) -> None:
        """Deliver what the store holds after the cursor, and move the cursor past it."""
        recorded = await store.last_offset(session_id)
        if isinstance(store, RunStore | RowStore) and query == HistoryQuery():
            # Lines as the chunks hold them (their text, or their columns, or rows),
            # written out without an event each.
            async for rows in read_pages(store, session_id, self.after, recorded, page=PAGE):
                await self._deliver(rows)
        elif query.last is not None:
            await self._deliver(await store.read(session_id, attrs.evolve(query, after=self.after)))
        else:
            after = self.after
            while True:
                page = await store.read(session_id, attrs.evolve(query, after=after, limit=PAGE))
                await self._deliver(page)
                if len(page) < PAGE:
                    break
                after = page[-1].offset
        self.after = max(self.after, recorded)

    async def _from_store(self, session_id: str) -> None:
        """History from the local store, then what a running session records next."""
        store = self.store
        if store is None:
            raise UnknownSessionError(session_id)
        query = self._query()
        info = await store.get_session(session_id)
        while True:
            await self._store_pass(store, session_id, query)
            query = attrs.evolve(query, last=None)
            self.info = info
            if self.ended is None:
                # The filters may leave it out; the exit status is in it all the same.
                final = await store.read(session_id, HistoryQuery(last=1))
                if final and isinstance(final[0].data, SessionEnded):
                    if final[0].offset > self.after:
                        # It ended after this pass began: what it recorded meanwhile
                        # comes first.
                        continue
                    self.ended = final[0].data
            if self.ended is not None:
                return
            if info.status is not SessionStatus.RUNNING or not _running(info):
                self.interrupted = True
                return
            if not self.follow:
                return
            await trio.sleep(WATCH_INTERVAL)
            # Read again even if it stopped meanwhile: what it recorded before it did.
            info = await store.get_session(session_id)


def _running(info: SessionInfo) -> bool:
    """Whether the process recording ``info`` still runs (as far as this host can tell)."""
    if info.pid is None or (info.host and info.host != socket.gethostname()):
        return True
    return process_alive(info.pid)


@asynccontextmanager
async def subscribe(
    session: str = "latest",
    *,
    hub: str | None = None,
    token: str | None = None,
    store: Store | None = None,
    after: int = -1,
    filters: Mapping[str, Any] | EventFilter | None = None,
    follow: bool = True,
) -> AsyncIterator[trio.MemoryReceiveChannel[Event]]:
    """Follow a session's events, history then live, until it ends.

    Args:
        session: an id, a unique id prefix, or ``latest``.
        hub: follow it on this hub (``http://host:port`` or ``unix:PATH``) rather than
            among this machine's running sessions and ``store``.
        token: the hub's bearer token.
        store: the local store, for sessions that no longer run.
        after: the last offset already had (-1: from the first event).
        filters: only the events these filters pass (an :class:`EventFilter` or its wire
            form, ``{"eventTypes": ["output"]}``).
        follow: False to stop after the history held now.

    Yields:
        A channel of events in offset order; it closes after ``session_ended``.

    Raises:
        UnknownSessionError, AmbiguousSessionError: no such session, or several.
        HubClientError: the hub refused the subscription or stopped answering.
    """
    from .hub.params import parse_filters

    flt = filters if isinstance(filters, EventFilter) else parse_filters(filters)
    target = await locate(session, hub=hub, token=token, store=store)
    batches_send, batches = trio.open_memory_channel[Sequence[Event]](16)
    send, receive = trio.open_memory_channel[Event](1000)
    feed = Feed(target, batches_send, filters=flt, after=after, follow=follow, store=store)

    async def flatten() -> None:
        async with send, batches:
            async for batch in batches:
                for event in batch:
                    await send.send(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed.run)
        nursery.start_soon(flatten)
        async with receive:
            yield receive
        nursery.cancel_scope.cancel()
