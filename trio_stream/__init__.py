"""tstream: run commands with live, structured, replayable output streams."""

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
]
