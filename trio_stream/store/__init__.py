"""Session stores: where sessions and their events are kept after they end.

:func:`open_store` opens one from a URL:

* ``memory:`` — a :class:`~trio_stream.store.memory.MemoryStore`, in this process only;
* ``sqlite:PATH`` or a plain ``PATH`` — the embedded SQLite store in that file;
* ``redis://HOST:PORT/DB``, ``rediss://…``, ``unix:///PATH``, ``redis+cluster://HOST:PORT,…``
  — the Redis store, shared by several hubs (see :mod:`~trio_stream.store.redis_url`);
* nothing — ``$TSTREAM_STORE`` if set, else ``tstream.db`` in the XDG data directory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import attrs

from .base import (
    AmbiguousSessionError,
    HistoryQuery,
    InvalidSessionIdError,
    OffsetConflictError,
    SessionExistsError,
    SessionInfo,
    SessionStatus,
    Store,
    StoreError,
    UnknownSessionError,
    check_session_id,
)
from .memory import DEFAULT_MAX_HISTORY, MemoryStore

ENV_VAR: Final = "TSTREAM_STORE"

__all__ = [
    "DEFAULT_MAX_HISTORY",
    "ENV_VAR",
    "AmbiguousSessionError",
    "HistoryQuery",
    "InvalidSessionIdError",
    "MemoryStore",
    "OffsetConflictError",
    "SessionExistsError",
    "SessionInfo",
    "SessionStatus",
    "Store",
    "StoreError",
    "StoreLocation",
    "UnknownSessionError",
    "check_session_id",
    "open_store",
    "parse_store_url",
]


@attrs.frozen
class StoreLocation:
    """A parsed store URL: ``kind`` is ``"memory"``, ``"sqlite"`` or ``"redis"``; ``path``
    the file, or the whole URL for Redis."""

    kind: str
    path: str = ""
    default: bool = False


def parse_store_url(url: str | os.PathLike[str] | None = None) -> StoreLocation:
    """Where ``url`` points (see the module documentation for the forms).

    Raises:
        StoreError: for an unknown scheme or an empty path.
    """
    default = False
    if url is None or url == "":
        url = os.environ.get(ENV_VAR, "")
    if url == "":
        from ..paths import default_store_path

        url = str(default_store_path())
        default = True
    text = os.fspath(url)
    if text == "memory:":
        return StoreLocation("memory")
    if text.startswith("memory:"):
        raise StoreError(f"invalid store URL {text!r}: the memory store takes no path")
    if text.startswith("sqlite:"):
        text = text[len("sqlite:") :]
        if text.startswith("//"):
            text = text[2:]
    elif "://" in text:
        from .redis_url import is_redis_url, parse_redis_url

        if is_redis_url(text):
            parse_redis_url(text)
            return StoreLocation("redis", text)
        scheme = text.split("://", 1)[0]
        raise StoreError(
            f"unsupported store {scheme!r} in {text!r}: use memory:, sqlite:PATH or redis://"
        )
    if not text:
        raise StoreError("invalid store URL: the sqlite store needs a file path")
    return StoreLocation("sqlite", os.path.expanduser(text), default)


@asynccontextmanager
async def open_store(
    url: str | os.PathLike[str] | None = None,
    *,
    max_history: int = DEFAULT_MAX_HISTORY,
    busy_timeout: float = 15.0,
) -> AsyncIterator[Store]:
    """Open the store at ``url`` for the duration of the ``async with`` block.

    Args:
        url: ``memory:``, ``sqlite:PATH``, a path, a Redis URL, or None for the default.
        max_history: events kept per session by the memory store.
        busy_timeout: seconds the sqlite store waits for another process's lock before
            giving up with StoreError.

    Returns:
        An async context manager giving the open store; it is closed on exit.

    Raises:
        StoreError: when the store cannot be opened (bad URL, unreadable, locked, corrupt
            or newer database).
    """
    location = parse_store_url(url)
    store: Store
    if location.kind == "memory":
        store = MemoryStore(max_history=max_history)
    elif location.kind == "redis":
        try:
            from .redis import RedisStore
        except ImportError as exc:
            raise StoreError(
                f"the Redis store needs coredis ({exc}): pip install 'tstream[redis]'"
            ) from None
        store = await RedisStore.open(location.path)
    else:
        from .sqlite import SQLiteStore

        if location.default:
            from ..paths import ensure_dir

            try:
                ensure_dir(Path(location.path).parent)
            except OSError as exc:
                raise StoreError(f"cannot create the store directory: {exc}") from None
        store = await SQLiteStore.open(location.path, busy_timeout=busy_timeout)
    try:
        yield store
    finally:
        await store.aclose()
