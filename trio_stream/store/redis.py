"""The Redis store: sessions shared by any number of hubs, in Redis or a Redis Cluster.

Layout (``P`` is the URL's prefix, ``tstream`` by default):

* ``P:{ID}:m`` — a hash per session: its :class:`SessionInfo` fields (each as JSON),
  ``last`` (its newest offset) and ``floor`` (offsets up to it were forgotten by
  :meth:`RedisStore.clear` or :meth:`RedisStore.compact`).
* ``P:{ID}:e`` — a Redis Stream per session: one entry per chunk of up to a thousand
  consecutive events (:mod:`.chunks`, as the SQLite store keeps them), with the id
  ``<last offset + 1>-0`` and the fields ``f`` (first offset), ``n`` (events), ``lo``,
  ``hi`` (lowest and highest timestamps) and ``b`` (the chunk). Reading "what follows
  offset N" is one ``XRANGE`` from ``<N + 2>-0``.
* ``P:sessions`` (scored by creation time) and ``P:ids`` (same score, for prefix look-up):
  the session list. ``P:epoch``: the store's epoch.

A session's two keys share the hash tag ``{ID}``, so that they live on one master of a
cluster and a Lua script can change both at once. Writes that must be atomic are scripts:
an append checks, in Redis, that the batch's first offset follows the session's newest one
(it refuses a reused offset and a gap, so several writers can never interleave a
session), adds its chunks and moves ``last``, all in one step. The same batch appended
again (a retry after its reply was lost to a timeout) is recognised and not an error.
The session list is updated after the session's hash; a list entry whose session is gone
is skipped and removed.

The epoch lives in Redis (``P:epoch``): a Redis restarted without persistence has lost it
with the history, and the store, which checks it at most every
:data:`EPOCH_CHECK_INTERVAL` seconds while in use, then picks the new one, so that clients
resuming with offsets of the lost history learn that it is gone.

Every call gives up after the URL's ``timeout`` (5 s by default) with :class:`StoreError`:
Redis being down never hangs a caller.
"""

from __future__ import annotations

import logging
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from typing import Any, Final, final

import attrs
import coredis
import orjson
import trio
from coredis.retry import (
    CompositeRetryPolicy,
    ConstantRetryPolicy,
    ExponentialBackoffRetryPolicy,
)
from coredis.tokens import PureToken

from ..events import Event, EventValidationError, converter
from . import chunks
from . import query as q
from .base import (
    AmbiguousSessionError,
    HistoryQuery,
    OffsetConflictError,
    SessionExistsError,
    SessionInfo,
    SessionStatus,
    StoreError,
    UnknownSessionError,
)
from .redis_lua import SCRIPTS
from .redis_url import RedisTarget, parse_redis_url
from .retention import SessionPruning
from .sessions import apply_changes, check_batch, new_session, process_alive, process_start_time

logger = logging.getLogger("trio_stream.store")

EPOCH_CHECK_INTERVAL: Final = 1.0
# The longest wait before the notifications of appends are subscribed again.
APPENDS_BACKOFF: Final = 2.0
# Chunks read per XRANGE: a first page of two (a reader near the end wants a few
# events), each next page twice the last, up to PAGE_CHUNKS.
FIRST_PAGE: Final = 2
PAGE_CHUNKS: Final = 64
_INFO_FIELDS: Final = (
    "command",
    "cwd",
    "status",
    "created",
    "last_activity",
    "ended",
    "exit_status",
    "workflow_session_id",
    "metadata",
    "tags",
    "pid",
    "host",
)


def _dump(name: str, value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=converter.unstructure)
    except TypeError as exc:
        raise ValueError(f"session {name} cannot be stored as JSON: {exc}") from None


def _info_fields(info: SessionInfo) -> dict[str, bytes]:
    fields = {name: _dump(name, getattr(info, name)) for name in _INFO_FIELDS}
    fields["status"] = _dump("status", SessionStatus(info.status).value)
    return fields


def _pairs(fields: Mapping[str, bytes | str | int]) -> list[bytes | str | int]:
    return [item for pair in fields.items() for item in pair]


def _info(session_id: str, raw: Mapping[bytes, bytes]) -> SessionInfo:
    """A session's hash as its SessionInfo.

    Raises:
        StoreError: when the hash is not one this store wrote.
    """
    try:
        values = {name: orjson.loads(raw[name.encode()]) for name in _INFO_FIELDS}
        last = int(raw[b"last"])
        floor = int(raw[b"floor"])
        return SessionInfo(
            id=session_id,
            **{**values, "status": SessionStatus(values["status"])},
            events=last - floor,
            last_offset=last,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"session {session_id}: Redis holds a malformed session: {exc}") from None


@attrs.frozen
class _Entry:
    """One stream entry: a chunk of events."""

    first: int
    last: int
    lo: float
    hi: float
    body: bytes


def _entry(entry: Any) -> _Entry:
    fields = entry.field_values
    return _Entry(
        first=int(fields[b"f"]),
        last=int(entry.identifier.split(b"-", 1)[0]) - 1,
        lo=float(fields[b"lo"]),
        hi=float(fields[b"hi"]),
        body=fields[b"b"],
    )


@final
class RedisStore(SessionPruning):
    """Sessions and events in Redis (one server or a cluster).

    Open it with :meth:`open` (or :func:`trio_stream.store.open_store`) in the task that
    will close it with :meth:`aclose`.
    """

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self._client: Any = None
        self._stack = AsyncExitStack()
        self._epoch = ""
        self._epoch_checked = -math.inf
        #: Seconds between two reads of the epoch from Redis.
        self.epoch_check_interval = EPOCH_CHECK_INTERVAL
        self._closed = False
        self._scripts: dict[str, Any] = {}
        p = target.prefix
        self._sessions_key = f"{p}:sessions"
        self._ids_key = f"{p}:ids"
        self._epoch_key = f"{p}:epoch"

    @classmethod
    async def open(cls, url: str | RedisTarget) -> RedisStore:
        """Connect to the Redis store at ``url`` (see :mod:`.redis_url` for its forms).

        Raises:
            StoreError: for a bad URL, or when Redis cannot be reached within the URL's
                timeout or refuses the credentials.
        """
        target = parse_redis_url(url) if isinstance(url, str) else url
        store = cls(target)
        common: dict[str, Any] = {
            "username": target.username,
            "password": target.password,
            "stream_timeout": target.timeout,
            "connect_timeout": target.timeout,
            "decode_responses": False,
            "ssl": target.ssl,
        }
        if target.ca_file is not None:
            common["ssl_ca_certs"] = target.ca_file
        client: Any
        if target.cluster:
            client = coredis.RedisCluster(
                startup_nodes=[{"host": h, "port": p} for h, p in target.nodes],
                **common,
            )
        elif target.unix_path is not None:
            del common["ssl"]
            client = coredis.Redis(unix_socket_path=target.unix_path, db=target.db, **common)
        else:
            host, port = target.nodes[0]
            client = coredis.Redis(host=host, port=port, db=target.db, **common)
        try:
            # Not within _guard's cancel scope: the client opens a task group of its own
            # that lives until aclose().
            try:
                store._client = await store._stack.enter_async_context(client)
            except (coredis.exceptions.RedisError, OSError) as exc:
                raise StoreError(f"Redis store {target.shown}: {exc}") from None
            for name, text in SCRIPTS.items():
                store._scripts[name] = store._client.register_script(text)
            await store._check_epoch(force=True)
            await store.recover_interrupted()
        except BaseException:
            await store.aclose()
            raise
        return store

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    # -- keys, errors and the epoch ----------------------------------------------------

    def _meta(self, session_id: str) -> str:
        return f"{self.target.prefix}:{{{session_id}}}:m"

    def _events(self, session_id: str) -> str:
        return f"{self.target.prefix}:{{{session_id}}}:e"

    def _appended(self, session_id: str) -> str:
        """The channel that hears of each append to the session."""
        return f"{self.target.prefix}:appended:{session_id}"

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Bound a call by the timeout and turn Redis's failures into StoreError."""
        if self._closed:
            raise StoreError(f"store {self.target.shown} is closed")
        try:
            with trio.fail_after(self.target.timeout):
                yield
        except trio.TooSlowError:
            raise StoreError(
                f"Redis store {self.target.shown} did not answer within {self.target.timeout:g}s"
            ) from None
        except (coredis.exceptions.RedisError, OSError) as exc:
            raise StoreError(f"Redis store {self.target.shown}: {exc}") from None
        except (EventValidationError, orjson.JSONDecodeError) as exc:
            raise StoreError(
                f"Redis store {self.target.shown} holds an event this tstream cannot read: {exc}"
            ) from None

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        with self._guard():
            return await self._scripts[name](keys=keys, args=args)

    async def _check_epoch(self, *, force: bool = False) -> None:
        """Read the epoch from Redis (making one if Redis has none), at most every
        :attr:`epoch_check_interval` seconds unless ``force``."""
        now = time.monotonic()
        if not force and now - self._epoch_checked < self.epoch_check_interval:
            return
        epoch = await self._script("epoch", [self._epoch_key], [uuid.uuid4().hex])
        self._epoch = epoch.decode()
        self._epoch_checked = now

    async def _call(self, command: Any) -> Any:
        """Await ``command`` (a coredis request) within the timeout, as StoreError."""
        await self._check_epoch()
        with self._guard():
            return await command

    # -- sessions ----------------------------------------------------------------------

    async def create_session(self, info: SessionInfo) -> SessionInfo:
        info = new_session(info)
        fields: dict[str, bytes | str | int] = {
            **_info_fields(info),
            "last": info.last_offset,
            "floor": info.last_offset,
        }
        if info.pid is not None and info.host == socket.gethostname():
            fields["pid_start"] = process_start_time(info.pid) or 0
        await self._check_epoch()
        created = await self._script(
            "create", [self._meta(info.id), self._events(info.id)], _pairs(fields)
        )
        if not created:
            raise SessionExistsError(info.id)
        await self._index(info.id, info.created)
        return await self.get_session(info.id)

    async def _index(self, session_id: str, created: float) -> None:
        await self._call(self._client.zadd(self._sessions_key, {session_id: created}))
        await self._call(self._client.zadd(self._ids_key, {session_id: 0}))

    async def _unindex(self, session_ids: Sequence[str]) -> None:
        if session_ids:
            await self._call(self._client.zrem(self._sessions_key, session_ids))
            await self._call(self._client.zrem(self._ids_key, session_ids))

    async def get_session(self, session_id: str) -> SessionInfo:
        raw = await self._call(self._client.hgetall(self._meta(session_id)))
        if not raw:
            raise UnknownSessionError(session_id)
        return _info(session_id, raw)

    async def _sessions(self, session_ids: Sequence[str]) -> list[SessionInfo]:
        """The sessions of ``session_ids`` that still exist, in that order (the others are
        taken off the list)."""
        if not session_ids:
            return []
        await self._check_epoch()
        with self._guard():
            async with self._client.pipeline(transaction=False) as pipe:
                requests = [pipe.hgetall(self._meta(sid)) for sid in session_ids]
            raws = [await request for request in requests]
        found = [_info(sid, raw) for sid, raw in zip(session_ids, raws, strict=True) if raw]
        await self._unindex([sid for sid, raw in zip(session_ids, raws, strict=True) if not raw])
        return found

    async def _newest_ids(self, start: int, stop: int) -> list[str]:
        ids = await self._call(self._client.zrange(self._sessions_key, start, stop, rev=True))
        return [sid.decode() for sid in ids]

    async def resolve(self, ref: str) -> SessionInfo:
        if ref == "latest":
            # Each pass takes the list entries of sessions that are gone off the list.
            while True:
                ids = await self._newest_ids(0, 9)
                if not ids:
                    raise UnknownSessionError(ref)
                found = await self._sessions(ids)
                if found:
                    return found[0]
        try:
            return await self.get_session(ref)
        except UnknownSessionError:
            if not ref:
                raise
        ids = await self._call(
            self._client.zrange(
                self._ids_key,
                f"[{ref}",
                f"[{ref}\xff",
                sortby=PureToken.BYLEX,
                offset=0,
                count=6,
            )
        )
        found = await self._sessions([sid.decode() for sid in ids])
        if not found:
            raise UnknownSessionError(ref)
        if len(found) > 1:
            raise AmbiguousSessionError(ref, [s.id for s in found])
        return found[0]

    async def list_sessions(
        self, *, status: SessionStatus | None = None, limit: int | None = None
    ) -> list[SessionInfo]:
        wanted = None if limit is None else max(0, limit)
        found: list[SessionInfo] = []
        start = 0
        page = 200
        while wanted is None or len(found) < wanted:
            ids = await self._newest_ids(start, start + page - 1)
            if not ids:
                break
            start += len(ids)
            sessions = await self._sessions(ids)
            # Sessions taken off the list moved the later ones up.
            start -= len(ids) - len(sessions)
            if status is not None:
                sessions = [s for s in sessions if s.status == status]
            found += sessions
        return found if wanted is None else found[:wanted]

    async def update_session(self, session_id: str, **changes: Any) -> SessionInfo:
        current = await self.get_session(session_id)
        info = apply_changes(current, changes)
        stored = _info_fields(info)
        fields: dict[str, bytes | str | int] = {
            name: stored[name] for name in changes if name in stored
        }
        if "last_offset" in changes:
            fields["last"] = info.last_offset
        if not fields:
            return current
        raw = await self._script("update", [self._meta(session_id)], _pairs(fields))
        if raw is None:
            raise UnknownSessionError(session_id)
        if "created" in changes:
            await self._index(session_id, info.created)
        return _info(session_id, dict(zip(raw[::2], raw[1::2], strict=True)))

    async def destroy_session(self, session_id: str) -> None:
        await self._check_epoch()
        removed = await self._script(
            "destroy", [self._meta(session_id), self._events(session_id)], []
        )
        await self._unindex([session_id])
        if not removed:
            raise UnknownSessionError(session_id)

    async def recover_interrupted(self) -> list[str]:
        """Mark ``interrupted`` the running sessions of this host whose recorder is gone.

        Returns:
            The ids marked.
        """
        host = socket.gethostname()
        dead = []
        for info in await self.list_sessions(status=SessionStatus.RUNNING):
            if info.host != host:
                continue
            start = await self._call(self._client.hget(self._meta(info.id), "pid_start"))
            pid_start = int(start) if start else None
            if info.pid is None or not process_alive(info.pid, pid_start):
                dead.append(info)
        for info in dead:
            await self.update_session(
                info.id, status=SessionStatus.INTERRUPTED, ended=info.last_activity
            )
        return [info.id for info in dead]

    # -- events ------------------------------------------------------------------------

    async def append(self, session_id: str, events: Sequence[Event]) -> None:
        if not events:
            if self._closed:
                raise StoreError(f"store {self.target.shown} is closed")
            return
        first = chunks.span(events)[0]
        last = check_batch(session_id, events, first - 1)
        args: list[Any] = [
            first,
            last,
            repr(max(chunks.last_stamp(events), time.time())),
            self._appended(session_id),
        ]
        for piece in chunks.split(events):
            oldest, newest = chunks.stamps(piece)
            piece_first, piece_last = chunks.span(piece)
            args += [
                f"{piece_last + 1}-0",
                piece_first,
                piece_last - piece_first + 1,
                repr(oldest),
                repr(newest),
                chunks.encode(piece),
            ]
        await self._check_epoch()
        result = await self._script(
            "append", [self._meta(session_id), self._events(session_id)], args
        )
        if result[0] == -1:
            raise UnknownSessionError(session_id)
        if result[0] == -2:
            raise OffsetConflictError(session_id, first, int(result[1]))

    async def appends(self) -> AsyncIterator[tuple[str, int]]:
        """``(session id, newest offset)`` after each append to any session, from any
        writer, as Redis publishes them; ``("", -1)`` after the subscription was lost and
        is back (appends may have been missed meanwhile). Reconnects with a backoff up to
        :data:`APPENDS_BACKOFF` seconds; runs until cancelled."""
        pattern = f"{self.target.prefix}:appended:*"
        prefix = len(pattern) - 1
        backoff = 0.05
        lost = False
        # coredis reconnects a lost subscription by itself (and subscribes again, which
        # is how it is seen here), with this backoff.
        retry = CompositeRetryPolicy(
            ExponentialBackoffRetryPolicy(
                (coredis.exceptions.ConnectionError,),
                retries=None,
                base_delay=0.05,
                max_delay=APPENDS_BACKOFF,
                jitter=True,
            ),
            ConstantRetryPolicy((TimeoutError,), retries=2, delay=0.1),
        )
        while not self._closed:
            try:
                async with self._client.pubsub(patterns=[pattern], retry_policy=retry) as pubsub:
                    subscribed = False
                    async for message in pubsub:
                        if message["type"] == "psubscribe":
                            backoff = 0.05
                            if lost or subscribed:
                                # Subscribed again: appends may have been missed meanwhile.
                                lost = False
                                yield "", -1
                            subscribed = True
                            continue
                        if message["type"] != "pmessage":
                            continue
                        channel = message["channel"]
                        if isinstance(channel, bytes):
                            channel = channel.decode("utf-8", "replace")
                        try:
                            last = int(message["data"])
                        except (TypeError, ValueError):
                            continue
                        yield channel[prefix:], last
            except (coredis.exceptions.RedisError, OSError) as exc:
                logger.warning(
                    "Redis store %s: notifications lost, reconnecting: %s", self.target.shown, exc
                )
            lost = True
            await trio.sleep(backoff)
            backoff = min(APPENDS_BACKOFF, backoff * 2)

    async def _bounds(self, session_id: str) -> tuple[int, int]:
        """The session's floor and newest offset."""
        floor, last = await self._call(
            self._client.hmget(self._meta(session_id), ["floor", "last"])
        )
        if floor is None or last is None:
            raise UnknownSessionError(session_id)
        return int(floor), int(last)

    async def _page(
        self, session_id: str, cursor: str, newest_first: bool, count: int
    ) -> list[_Entry]:
        """Up to ``count`` chunks from ``cursor`` (an entry id, ``(`` for exclusive)."""
        key = self._events(session_id)
        if newest_first:
            request = self._client.xrevrange(key, end=cursor, start="-", count=count)
        else:
            request = self._client.xrange(key, start=cursor, end="+", count=count)
        entries = await self._call(request)
        with self._guard():
            return [_entry(entry) for entry in entries]

    async def _scan(
        self,
        session_id: str,
        query: HistoryQuery,
        after: int,
        *,
        newest_first: bool,
        wanted: int | None,
    ) -> list[Event]:
        """The events after ``after`` that pass ``query``'s filters, in scan order,
        stopping once ``wanted`` are found (None: all)."""
        predicate = q.matcher(query)
        found: list[Event] = []
        cursor = "+" if newest_first else f"{after + 2}-0"
        size = FIRST_PAGE
        while wanted is None or len(found) < wanted:
            page = await self._page(session_id, cursor, newest_first, size)
            for entry in page:
                if entry.last <= after:
                    continue
                if query.start_time is not None and entry.hi < query.start_time:
                    continue
                if query.end_time is not None and entry.lo > query.end_time:
                    continue
                limit = None
                if predicate is None and not newest_first and wanted is not None:
                    limit = wanted - len(found)
                with self._guard():
                    events = chunks.decode(session_id, entry.body, after, limit)
                if newest_first:
                    events.reverse()
                found += events if predicate is None else [e for e in events if predicate(e)]
                if wanted is not None and len(found) >= wanted:
                    break
            if len(page) < size or (newest_first and page[-1].first <= after + 1):
                break
            cursor = f"({page[-1].last + 1}-0"
            size = min(size * 2, PAGE_CHUNKS)
        return found

    async def read(self, session_id: str, query: HistoryQuery = HistoryQuery()) -> list[Event]:
        q.check_query(query)
        floor, _ = await self._bounds(session_id)
        after = max(query.after, floor)
        if query.last is None:
            wanted = None if query.limit is None else query.skip + query.limit
            found = (
                await self._scan(session_id, query, after, newest_first=False, wanted=wanted)
                if wanted != 0
                else []
            )
        else:
            found = []
            if query.last > 0:
                found = await self._scan(
                    session_id, query, after, newest_first=True, wanted=query.last
                )
            found = found[: query.last]
            found.reverse()
        found = found[query.skip :]
        return found if query.limit is None else found[: query.limit]

    async def read_rows(
        self, session_id: str, after: int = -1, limit: int = 10_000
    ) -> chunks.StoredEvents:
        """Up to about ``limit`` events after ``after``, unfiltered and not built yet (a
        whole chunk more than ``limit`` at most)."""
        cursor = f"{after + 2}-0"
        size = FIRST_PAGE
        # The session's bounds and the first page in one round trip: a hub following a
        # session reads after each append, and most reads are this one page.
        await self._check_epoch()
        with self._guard():
            async with self._client.pipeline(transaction=False) as pipe:
                bounds = pipe.hmget(self._meta(session_id), ["floor", "last"])
                first = pipe.xrange(self._events(session_id), start=cursor, end="+", count=size)
            floor, last = await bounds
            page = [_entry(entry) for entry in await first]
        if floor is None or last is None:
            raise UnknownSessionError(session_id)
        # Under a trimmed floor the page also holds events at or below it: decoding cuts them.
        after = max(after, int(floor))
        bodies: list[bytes] = []
        count = 0
        while True:
            for entry in page:
                if entry.last <= after:
                    continue
                bodies.append(entry.body)
                count += entry.last - max(entry.first, after + 1) + 1
                if count >= limit:
                    break
            if count >= limit or len(page) < size:
                break
            cursor = f"({page[-1].last + 1}-0"
            size = min(size * 2, PAGE_CHUNKS)
            page = await self._page(session_id, cursor, False, size)
        with self._guard():
            try:
                return chunks.decode_rows(session_id, bodies, after)
            except (TypeError, ValueError, LookupError) as exc:
                raise EventValidationError([f"stored event: {exc}"]) from None

    async def count(self, session_id: str, query: HistoryQuery = HistoryQuery()) -> int:
        q.check_query(query)
        if query == HistoryQuery():
            floor, last = await self._bounds(session_id)
            return last - floor
        return len(await self.read(session_id, query))

    async def last_offset(self, session_id: str) -> int:
        return (await self._bounds(session_id))[1]

    async def _trim(self, session_id: str, keep: int) -> int:
        await self._check_epoch()
        removed = await self._script(
            "trim", [self._meta(session_id), self._events(session_id)], [keep]
        )
        if removed < 0:
            raise UnknownSessionError(session_id)
        return int(removed)

    async def clear(self, session_id: str) -> None:
        await self._trim(session_id, -1)

    async def compact(self, session_id: str, keep_last: int) -> int:
        if keep_last < 0:
            raise ValueError(f"keep_last must be 0 or more, not {keep_last}")
        return await self._trim(session_id, keep_last)

    async def memory_usage(self) -> int:
        """Bytes Redis uses in all (``used_memory`` of every master)."""
        info = await self._call(self._client.info("memory"))
        if "used_memory" in info:
            return int(info["used_memory"])
        return sum(int(node["used_memory"]) for node in info.values())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # No cancel scope of its own here: the client's task group was opened outside it.
        await self._stack.aclose()
