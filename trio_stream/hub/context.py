"""What every route shares: the :class:`Hub` (broker, auth, limits, counters) and the
helpers that check a request and turn errors into ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar, final

import attrs
import orjson
import trio
from quart import Response, current_app

from .auth import Auth, AuthError, client_allowed, host_allowed, token_from
from .broker import Broker
from .config import HubConfig
from .errors import HubError, ReadOnly
from .limits import KeyedLimiter, retry_after
from .patches import PendingConnections

logger = logging.getLogger("trio_stream.hub")


class RateLimited(HubError):
    """Too many requests: 429 with ``Retry-After``."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after(wait)


@final
class Hub:
    """The state behind the app's routes.

    Args:
        config: the hub's settings.
        broker: the streams.
    """

    def __init__(self, config: HubConfig, broker: Broker) -> None:
        self.config = config
        self.broker = broker
        self.auth = Auth(config.tokens)
        self.requests = KeyedLimiter.per_minute(config.requests_per_minute)
        self.connects = KeyedLimiter.per_minute(config.connections_per_minute)
        self.publishers = KeyedLimiter(config.publish_per_second, config.publish_per_second)
        self.pending = PendingConnections(config.max_pending)
        self.started = time.time()
        self.requests_total = 0
        self.statuses: Counter[int] = Counter()
        self.polls = 0

    def count_response(self, status: int) -> None:
        """Count an answer of ``status`` for the metrics."""
        self.requests_total += 1
        self.statuses[status] += 1

    @property
    def error_rate(self) -> float:
        """The share of answers that were errors (status 400 and up)."""
        if not self.requests_total:
            return 0.0
        errors = sum(n for status, n in self.statuses.items() if status >= 400)
        return errors / self.requests_total


def hub() -> Hub:
    """The hub of the app serving the current request."""
    return current_app.config["TSTREAM_HUB"]  # type: ignore[no-any-return]


def remote_of(scope: Mapping[str, Any]) -> str:
    """A client's address for the logs (``unix`` on a Unix socket); a client forwarded by
    a trusted proxy has no port."""
    client = scope.get("client")
    if not client:
        return "unix"
    return f"{client[0]}:{client[1]}" if client[1] else str(client[0])


def host_of(scope: Mapping[str, Any]) -> str:
    """A client's host (its address without the port), the key of its limits."""
    client = scope.get("client")
    return str(client[0]) if client else "unix"


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``obj`` as a JSON answer."""
    return Response(
        orjson.dumps(obj), status=status, headers=headers, content_type="application/json"
    )


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    """An error answer: ``{"error": {"code", "message", …}}``."""
    return json_response(
        {"error": {"code": code, "message": message, **extra}}, status, headers=headers
    )


def response_for(exc: HubError | AuthError) -> Response:
    """The JSON error answer for ``exc``."""
    if isinstance(exc, AuthError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, headers)
    headers = {"Retry-After": exc.retry_after} if isinstance(exc, RateLimited) else None
    return error_response(exc.status, exc.code, exc.message, headers, **exc.extra)


_View = TypeVar("_View", bound=Callable[..., Any])
Needs = Literal["public", "read", "publish"]
_ACCESS: Final = "tstream_access"


@final
@attrs.frozen
class Access:
    """What a route needs: ``public`` (anyone), ``read`` or ``publish`` (a token of that
    scope, when the hub has tokens), and whether it opens a long-lived connection (counted
    by the new-connection rate limit)."""

    needs: Needs
    connection: bool = False


def access(needs: Needs, *, connection: bool = False) -> Callable[[_View], _View]:
    """Declare what a route needs (put it under the route's decorator). The app checks it
    before the route runs, and refuses to start with a route that declares nothing: the
    hub denies by default."""
    if needs not in ("public", "read", "publish"):
        raise ValueError(f"unknown access {needs!r}")

    def declare(view: _View) -> _View:
        setattr(view, _ACCESS, Access(needs, connection))
        return view

    return declare


def access_of(view: Callable[..., Any]) -> Access | None:
    """What ``view`` declared with :func:`access`, or None."""
    declared = getattr(view, _ACCESS, None)
    return declared if isinstance(declared, Access) else None


def authorize(
    h: Hub,
    headers: Any,
    args: Any,
    cookies: Any,
    scope: Mapping[str, Any],
    needs: str,
    *,
    connection: bool = False,
) -> None:
    """Check the token and the caller's request (or connection) rate.

    Raises:
        ReadOnly: 403 for a write (``needs`` is ``publish``) to a read-only hub.
        AuthError: 401/403.
        RateLimited: 429 with the seconds to wait.
    """
    if needs == "publish" and h.config.read_only:
        # Before the token: no token, however privileged, may write over a session's
        # own offsets.
        raise ReadOnly()
    # Over a Unix socket the Host header means nothing, and no web page can connect.
    if scope.get("client") and not host_allowed(
        headers.get("Host"), auth_enabled=h.auth.enabled, insecure=h.config.insecure
    ):
        raise AuthError(403, "forbidden_host", "this hub answers loopback names only")
    host = host_of(scope)
    if not client_allowed(host, auth_enabled=h.auth.enabled, insecure=h.config.insecure):
        raise AuthError(403, "forbidden_client", "this hub answers loopback clients only")
    h.auth.require(token_from(headers, args, cookies), needs)
    now = trio.current_time()
    wait = h.requests.take(host, now)
    if wait:
        raise RateLimited("too many requests from this address; retry later", wait)
    if connection:
        wait = h.connects.take(host, now)
        if wait:
            raise RateLimited("too many new connections from this address; retry later", wait)
