"""tstream: run commands with live, structured, replayable output streams.

The public API is what this package exports (``from trio_stream import …``) and the
modules it names: :mod:`trio_stream.events` (the event model), :mod:`trio_stream.store`
(session stores), :mod:`trio_stream.processors`, :mod:`trio_stream.hub` with
:mod:`trio_stream.hub.server`, :mod:`trio_stream.client` (following and publishing to
a hub) and :mod:`trio_stream.publisher`. Other modules are the implementation and may change.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .events import Event, EventType, EventValidationError
from .filters import EventFilter
from .process import (
    CommandNotExecutableError,
    CommandNotFoundError,
    CompletedRun,
    SpawnError,
    run,
)
from .session import (
    Session,
    SessionResult,
    StreamConfig,
    open_session,
    run_session,
)
from .store import Store, open_store

if TYPE_CHECKING:
    from .attach import subscribe
    from .hub.config import HubConfig
    from .hub.server import serve_hub
    from .local import serve_session

__version__ = "0.1.0"

# Serving and following pull in the web stack and the WebSocket client: loaded on first
# use, so that ``import trio_stream`` (and ``tstream run --no-serve``) does not pay for them.
_LAZY = {
    "serve_session": "local",
    "subscribe": "attach",
    "serve_hub": "hub.server",
    "HubConfig": "hub.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CommandNotExecutableError",
    "CommandNotFoundError",
    "CompletedRun",
    "Event",
    "EventFilter",
    "EventType",
    "EventValidationError",
    "HubConfig",
    "Session",
    "SessionResult",
    "SpawnError",
    "Store",
    "StreamConfig",
    "__version__",
    "open_session",
    "open_store",
    "run",
    "run_session",
    "serve_hub",
    "serve_session",
    "subscribe",
]
