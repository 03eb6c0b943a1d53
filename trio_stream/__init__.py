"""tstream: run commands with live, structured, replayable output streams."""

import importlib
from typing import Any

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
    run_stream,
)

__version__ = "0.1.0"

# Serving and following pull in the hub and the WebSocket client: loaded on first use, so
# that ``import trio_stream`` (and ``tstream run --no-serve``) does not pay for them.
_LAZY = {"serve_session": "local", "subscribe": "attach"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "CommandNotExecutableError",
    "CommandNotFoundError",
    "CompletedRun",
    "Session",
    "SessionResult",
    "SpawnError",
    "StreamConfig",
    "__version__",
    "open_session",
    "run",
    "run_session",
    "run_stream",
    "serve_session",
    "subscribe",
]
