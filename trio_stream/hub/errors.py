"""The hub's errors: each becomes ``{"error": {"code", "message", …}}`` with its status."""

from __future__ import annotations

from typing import Any


class ProtocolError(ValueError):
    """A client message or parameter the hub refuses: 400 over HTTP; on a WebSocket an
    ``error`` frame, and the connection stays up.

    Attributes:
        code: machine-readable (``bad_filter``), sent as the error's ``code``.
        message: for people, naming the parameter or field.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class HubError(Exception):
    """An error the REST layer turns into ``{"error": {"code", "message"}}``.

    Attributes:
        status: the HTTP status.
        code: machine-readable.
        extra: more fields for the error object (``lastOffset``).
    """

    status = 400
    code = "bad_request"

    def __init__(self, message: str, **extra: Any) -> None:
        self.message = message
        self.extra = extra
        super().__init__(message)


class ReadOnly(HubError):
    """The hub takes no writes (403): it serves a running session, whose events come
    from the session alone."""

    status = 403
    code = "read_only"

    def __init__(self) -> None:
        super().__init__(
            "this hub serves a running session read-only: nothing is published, created or "
            "deleted here"
        )


class NotFound(HubError):
    """No such stream or client (404)."""

    status = 404
    code = "not_found"


class Conflict(HubError):
    """The request conflicts with the stream (409)."""

    status = 409
    code = "conflict"


class OffsetGap(Conflict):
    """Published offsets would leave a gap (409, with ``lastOffset``)."""

    code = "offset_gap"


class StreamEndedError(Conflict):
    """The stream has ended (409, with ``lastOffset``)."""

    code = "stream_ended"


class TooManyClients(HubError):
    """A connection limit is reached (503)."""

    status = 503
    code = "too_many_clients"


class ShuttingDown(HubError):
    """The hub is shutting down (503): try again once it is back."""

    status = 503
    code = "shutting_down"


class StreamRestarting(HubError):
    """A stream whose task failed is being reopened; try again."""

    status = 503
    code = "stream_restarting"
