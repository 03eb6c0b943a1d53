"""Serving one running session with the hub: what ``tstream run`` does by itself.

:func:`serve_session` runs a hub (:func:`~trio_stream.hub.server.serve_hub`, the same
protocol and transports as ``tstream serve``) in the caller's nursery, on a private Unix
socket and on any ``listen`` addresses, with one stream: the session, fed by the session's
own log (:class:`RunFeed`, a fed stream of :mod:`trio_stream.hub.feeds`), so that every
client sees the session's own offsets. The session is
registered (:mod:`trio_stream.registry`) for ``tstream attach`` to find, and the socket
and registration are removed when it ends. The sockets are bound when serving starts; the
hub of a session with a store starts (and the web server is imported) when the first
client connects, whose connection waits in the socket's backlog meanwhile: a session
nobody follows never pays for the web server.

The hub reads history from the session's own store through :class:`SessionView`, which
answers for that one session and never changes the store; recording is the session's (the
hub only waits until the session has recorded what its clients may ask the store for).

Serving is the session's guest: it never slows the command (the hub's follower reads the
log without flow control and, should it fall behind the log's memory, reads the rest from
the store) and its failures are its own.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, final

import attrs
import trio

from .batches import EventRuns
from .events import Event
from .groups import single
from .hub.config import HubConfig, Listen, TokenSpec
from .hub.errors import HubError
from .hub.sockets import Bound, bind
from .log import SessionLog
from .registry import LiveSession, new_socket_path, private_dir, registered, running_sessions
from .session import Session
from .store.base import (
    HistoryQuery,
    RowStore,
    SessionInfo,
    SessionStatus,
    Store,
    UnknownSessionError,
)
from .store.chunks import StoredEvents, decode_rows, encode
from .store.memory import MemoryStore
from .store.retention import SessionPruning
from .store.sessions import apply_changes

logger = logging.getLogger("trio_stream.local")

# How often the hub's recorder looks whether the session has recorded what it holds.
RECORDED_POLL: Final = 0.05
# Events one client of a served session may have waiting before it is cut.
LOCAL_CLIENT_QUEUE: Final = 200_000
LOCAL_HISTORY: Final = 50_000
# How long clients get to read the end of the session before the hub shuts down.
FAREWELL: Final = 1.0


@final
class SessionView(SessionPruning):
    """The store as the hub serving one session sees it.

    Reads go to the session's store; recording is the session's: :meth:`append` only
    waits until the session's recorder has written the events, so that the hub never
    believes the store holds what it does not yet. Changes are kept here, never written.

    Args:
        store: the session's store.
        session_id: the session.
    """

    def __init__(self, store: Store, session_id: str) -> None:
        self._store = store
        self._id = session_id
        self._changes: dict[str, Any] = {}

    @property
    def epoch(self) -> str:
        return self._store.epoch

    def _check(self, session_id: str) -> None:
        if session_id != self._id:
            raise UnknownSessionError(session_id)

    async def create_session(self, info: SessionInfo) -> SessionInfo:
        # The session exists already: the hub only follows it (and refuses to create).
        raise HubError(f"session {self._id} is created by its run only")

    async def get_session(self, session_id: str) -> SessionInfo:
        self._check(session_id)
        return apply_changes(await self._store.get_session(session_id), dict(self._changes))

    async def resolve(self, ref: str) -> SessionInfo:
        if ref in ("latest", self._id) or (ref and self._id.startswith(ref)):
            return await self.get_session(self._id)
        raise UnknownSessionError(ref)

    async def list_sessions(
        self, *, status: SessionStatus | None = None, limit: int | None = None
    ) -> list[SessionInfo]:
        info = await self.get_session(self._id)
        if (status is not None and info.status != status) or limit == 0:
            return []
        return [info]

    async def update_session(self, session_id: str, **changes: Any) -> SessionInfo:
        self._check(session_id)
        self._changes.update(changes)
        return await self.get_session(session_id)

    async def destroy_session(self, session_id: str) -> None:
        raise HubError(f"session {session_id} is running: it cannot be deleted here")

    async def append(self, session_id: str, events: Sequence[Event]) -> None:
        raise HubError(f"session {self._id} is recorded by its run only")

    async def read(self, session_id: str, query: HistoryQuery = HistoryQuery()) -> list[Event]:
        self._check(session_id)
        return await self._store.read(session_id, query)

    async def read_rows(
        self, session_id: str, after: int = -1, limit: int = 10_000
    ) -> StoredEvents:
        self._check(session_id)
        if isinstance(self._store, RowStore):
            return await self._store.read_rows(session_id, after, limit)
        events = await self._store.read(session_id, HistoryQuery(after=after, limit=limit))
        return decode_rows(session_id, [encode(events)] if events else [])

    async def count(self, session_id: str, query: HistoryQuery = HistoryQuery()) -> int:
        self._check(session_id)
        return await self._store.count(session_id, query)

    async def last_offset(self, session_id: str) -> int:
        self._check(session_id)
        return await self._store.last_offset(session_id)

    async def clear(self, session_id: str) -> None:
        self._check(session_id)

    async def compact(self, session_id: str, keep_last: int) -> int:
        self._check(session_id)
        return 0

    async def _prune(
        self, older_than: float | None, max_events: int | None, dry_run: bool
    ) -> list[str]:
        return []

    async def aclose(self) -> None:
        return None


@final
@attrs.frozen
class ServedSession:
    """Where :func:`serve_session` serves a session.

    Attributes:
        session_id: the session.
        socket: the Unix socket (None when not registered locally).
        urls: every address, as hub URLs (``http+unix://…``, ``http://host:port``).
        live: the registration ``tstream attach`` finds (None when not registered).
    """

    session_id: str
    socket: str | None
    urls: list[str]
    live: LiveSession | None


async def serve_session(
    session: Session,
    *,
    listen: Sequence[Listen] = (),
    tokens: Sequence[str] = (),
    local: bool = True,
    directory: Path | None = None,
    task_status: trio.TaskStatus[ServedSession] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``session`` until it ends; meant for ``nursery.start``.

    The addresses are bound and the session registered at once; a session with a store
    starts its hub (and imports the web server, in a thread) only when the first client
    connects, whose connection waits in the socket's backlog meanwhile: a session nobody
    follows costs nothing more than its recording. The hub reads what came before from
    the store. A session without a store is served from its start.

    Args:
        session: a running session (from :func:`~trio_stream.session.run_session` or
            :func:`~trio_stream.session.open_session`).
        listen: TCP addresses to serve on besides the Unix socket.
        tokens: bearer tokens clients must present (read-only: nobody publishes into a
            session this way). Without one, ``listen`` must be loopback.
        local: serve on a private Unix socket and register the session there.
        directory: the runtime directory (default: ``$XDG_RUNTIME_DIR/tstream``).
        task_status: receives a :class:`ServedSession` once clients can connect.

    Raises:
        HubConfigError: an address cannot be bound, or is exposed without a token.
        RegistryError: the runtime directory is not private.
    """
    await _serve_session(session, listen, tokens, local, directory, task_status, patient=True)


async def _serve_session(
    session: Session,
    listen: Sequence[Listen],
    tokens: Sequence[str],
    local: bool,
    directory: Path | None,
    task_status: trio.TaskStatus[ServedSession],
    *,
    patient: bool,
) -> None:
    """:func:`serve_session`; unless ``patient``, a session that ends while the web server
    is imported is not served, and the import is left to finish on its own."""
    addresses = list(listen)
    sock: Path | None = None
    if local:
        directory = private_dir(directory)
        running_sessions(directory)  # sweeps what killed runs left behind
        sock = new_socket_path(directory)
        addresses.insert(0, Listen(path=str(sock)))
    if not addresses:
        raise ValueError("nothing to serve on: give listen addresses or local=True")
    config = HubConfig(
        listen=tuple(addresses),
        tokens=tuple(TokenSpec(t, frozenset({"read"})) for t in tokens),
        prune_every=0,
        # The session is the only publisher: an event published from outside would take
        # an offset the session gives to its own next event.
        read_only=True,
        # One stream, followed by a few clients: one that lags (a terminal) lags rather
        # than being cut and resuming from the store.
        client_queue=LOCAL_CLIENT_QUEUE,
        # The follower hands over what the session made meanwhile at once: the fan-out's
        # memory must hold it, or it would cut its clients as having fallen behind.
        history=LOCAL_HISTORY,
    )
    config.check_exposure()
    bound = bind(config.listen)
    serve = partial(_serve_bound, session, config, bound, patient=patient)
    try:
        if sock is None:
            task_status.started(ServedSession(session.session_id, None, bound.urls, None))
            await serve()
        else:
            live = LiveSession(
                id=session.session_id,
                pid=os.getpid(),
                command=list(session.command),
                started=time.time(),
                socket=str(sock),
                host=socket.gethostname(),
                urls=bound.urls,
            )
            with registered(live, sock.parent) as entry:
                task_status.started(ServedSession(session.session_id, str(sock), bound.urls, entry))
                await serve()
    finally:
        bound.close()


async def _serve_bound(session: Session, config: HubConfig, bound: Bound, *, patient: bool) -> None:
    """Run the hub of ``session`` on ``bound`` until the session ends and its clients
    have gone (see :func:`serve_session`)."""
    own = session.config.store
    if own is not None and not await _first_client(session, bound):
        return
    if not await _import_web_stack(None if patient else session):
        return
    from .hub.feeds import StreamPolicy
    from .hub.server import serve_hub

    view = SessionView(own, session.session_id) if own is not None else None
    store: Any = view if view is not None else MemoryStore()
    async with trio.open_nursery() as nursery:
        # With a store, the hub's stream is fed by the session (started when a client first
        # follows it); without one, the hub records what a bridge publishes into it.
        policy = StreamPolicy.fed_by(RunFeed(session.log, own)) if own is not None else None
        served = await nursery.start(partial(serve_hub, config, store, policy=policy, bound=bound))
        broker = served.hub.broker
        try:
            if view is None:
                await broker.create_stream(session.session_id)
                await _bridge(session.log, broker)
            else:
                await _until_closed(session.log)
            with trio.move_on_after(FAREWELL):
                await broker.wait_no_clients()
        finally:
            served.shutdown()


async def _first_client(session: Session, bound: Bound) -> bool:
    """Wait until a client connects to one of ``bound``'s sockets (True), or until the
    session has ended (False)."""
    came = False
    async with trio.open_nursery() as nursery:

        async def watch(sock: socket.socket) -> None:
            nonlocal came
            # A listening socket is readable once a connection waits to be accepted.
            await trio.lowlevel.wait_readable(sock)
            came = True
            nursery.cancel_scope.cancel()

        for sock in bound.sockets:
            nursery.start_soon(watch, sock)
        # A session that failed (tstream's own error, reported by its runner) ended too.
        with contextlib.suppress(RuntimeError):
            await session.wait()
        nursery.cancel_scope.cancel()
    return came


@final
@attrs.frozen
class ServeOptions:
    """How ``tstream run`` serves its session (see :func:`serve_session`)."""

    local: bool = True
    listen: tuple[Listen, ...] = ()
    tokens: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.local or bool(self.listen)


_web_stack_done = threading.Event()
_web_stack_started = False


def web_stack_loading() -> bool:
    """Whether a thread is still importing the web stack for a session that has ended
    (see :func:`serve_quietly`): the process should then end with :func:`os._exit`, as
    an interpreter that finalizes while a thread imports may hang on the import lock."""
    return _web_stack_started and not _web_stack_done.is_set()


def _import_server() -> None:
    try:
        importlib.import_module("trio_stream.hub.server")
    finally:
        _web_stack_done.set()


async def _import_web_stack(until_end_of: Session | None) -> bool:
    """Import the web stack in a thread, so that the session's readers keep reading
    meanwhile (it takes a few tenths of a second); False when ``until_end_of`` (a
    session) ended first.

    A session that ends during the import is not kept waiting for it: the thread is left
    to finish on its own, and the session is not served.
    """
    global _web_stack_started
    if "trio_stream.hub.server" in sys.modules:
        return True
    if until_end_of is None:
        await trio.to_thread.run_sync(importlib.import_module, "trio_stream.hub.server")
        return True
    _web_stack_started = True
    async with trio.open_nursery() as nursery:

        async def cut_at_end(session: Session) -> None:
            # A session that failed (tstream's own error, reported by its runner) ended too.
            with contextlib.suppress(RuntimeError):
                await session.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(cut_at_end, until_end_of)
        await trio.to_thread.run_sync(_import_server, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()
        return True
    return False


async def serve_quietly(session: Session, options: ServeOptions) -> None:
    """:func:`serve_session`, whose failure is a warning on stderr and nothing more: the
    command goes on whatever happens to its serving. A session that ends while the web
    server is imported for its first client is not kept waiting for it."""
    try:
        await _serve_session(
            session,
            options.listen,
            options.tokens,
            options.local,
            None,
            trio.TASK_STATUS_IGNORED,
            patient=False,
        )
    except Exception as exc:
        reason = single(exc)
        if not isinstance(reason, OSError | ValueError | HubError):
            logger.error("serving session %s failed", session.session_id, exc_info=exc)
        print(f"tstream: warning: not serving the session: {reason}", file=sys.stderr)


async def _bridge(log: SessionLog, broker: Any) -> None:
    """Publish every event of ``log`` into the hub's stream of the same id, at its offset."""
    async for batch in log.follow(-1):
        if not batch.complete:
            raise HubError(f"session {log.session_id}: the hub fell behind the session's memory")
        await broker.publish_runs(log.session_id, batch.events)


@final
class RunFeed:
    """The source of the hub's stream of a running session (a fed stream, see
    :mod:`trio_stream.hub.feeds`): the session's log, and its store for what the log no
    longer holds. The session records; nobody publishes into it through the hub.

    The hub starts the stream when a client first follows the session, at the offset after
    what the store holds (older events are history, read from the store), so a session
    nobody follows costs nothing more than its recording.

    Args:
        log: the session's log.
        store: the session's store.
    """

    def __init__(self, log: SessionLog, store: Store) -> None:
        self.log = log
        self.store = store

    async def follow(self, target: SessionLog) -> AsyncIterator[EventRuns]:
        log = self.log
        while True:
            after = target.last_offset
            if log.last_offset > after:
                held = log.since(after)
                events = held.events
                if not held.complete:
                    # Fell behind the log's memory: the store has (or soon has) the rest.
                    sid = log.session_id
                    missing = await _from_store(self.store, sid, after, events.first_offset)
                    events = EventRuns([missing, *events.runs])
                yield events
            elif log.closed:
                return
            else:
                await log.wait_after(after)

    async def wait_stored(self, stream_id: str, offset: int) -> None:
        # Once the session has ended, its recorder has written what it could.
        while not self.log.closed and await self.store.last_offset(stream_id) < offset:
            await trio.sleep(RECORDED_POLL)

    async def place(self, log: SessionLog, events: Sequence[Event], given: Sequence[bool]) -> Any:
        raise HubError(f"session {self.log.session_id} is published by its run only")

    async def place_runs(self, log: SessionLog, events: EventRuns) -> Any:
        raise HubError(f"session {self.log.session_id} is published by its run only")


async def _until_closed(log: SessionLog) -> None:
    while not log.closed:
        await log.wait_after(log.last_offset)


async def _from_store(store: Store, session_id: str, after: int, before: int) -> Sequence[Event]:
    """The events between ``after`` and ``before`` (both excluded), once recorded."""
    while await store.last_offset(session_id) < before - 1:
        await trio.sleep(RECORDED_POLL)
    wanted = before - after - 1
    if isinstance(store, RowStore):
        rows = await store.read_rows(session_id, after, wanted)
        return StoredEvents(session_id, rows.rows[:wanted])
    return await store.read(session_id, HistoryQuery(after=after, limit=wanted))
