"""The Quart-Trio application: routes, JSON errors, CORS and request accounting."""

from __future__ import annotations

import logging
from typing import Any

from quart import Response, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..store.base import StoreError, UnknownSessionError
from .asgi import HubHTTPConnection, HubWebsocketConnection
from .auth import AuthError, cors_headers, origin_allowed, preflight_headers
from .context import Hub, access_of, authorize, error_response, host_of, response_for
from .errors import HubError, ProtocolError, ReadOnly

logger = logging.getLogger("trio_stream.hub")


def create_app(hub: Hub) -> QuartTrio:
    """The hub's ASGI app, serving ``hub``.

    Args:
        hub: the shared state (broker, config, auth, limits).

    Returns:
        The app, ready for :func:`hypercorn.trio.serve`.
    """
    from . import dashboard, polling, rest, sse
    from . import websocket as websocket_routes

    # No static folder: the dashboard's files have a route of their own, and the API
    # document lists every route.
    app = QuartTrio(__name__, static_folder=None)
    # One task fewer per request and per WebSocket (see hub.asgi).
    app.asgi_http_class = HubHTTPConnection
    app.asgi_websocket_class = HubWebsocketConnection
    app.config["TSTREAM_HUB"] = hub
    app.config["MAX_CONTENT_LENGTH"] = hub.config.max_body_size
    app.config["BODY_TIMEOUT"] = 30
    app.config["RESPONSE_TIMEOUT"] = 60
    for module in (rest, sse, polling, websocket_routes, dashboard):
        app.register_blueprint(module.blueprint)
    # Deny by default: a route that does not declare what it needs is a bug, caught here.
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        if view is None or access_of(view) is None:
            raise RuntimeError(f"route {rule.rule} declares no access (hub.context.access)")

    origins = list(hub.config.cors_origins)

    @app.before_request
    async def check_origin() -> Response | None:
        """Answer CORS preflights; refuse state changes from foreign origins."""
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin is not None:
            headers = preflight_headers(origin, origins)
            if not headers:
                return error_response(403, "forbidden_origin", f"origin {origin!r} is not allowed")
            return Response(b"", status=204, headers=headers)
        if request.method not in ("GET", "HEAD") and not origin_allowed(
            origin, request.headers.get("Host"), origins, request.scheme
        ):
            # A form on another site could POST without a preflight: refuse it outright.
            return error_response(403, "forbidden_origin", f"origin {origin!r} is not allowed")
        return None

    @app.before_request
    async def check_read_only() -> Response | None:
        """Refuse every request but a read on a read-only hub, whatever route it is for
        (the publishing WebSocket, a GET, is refused by its scope check)."""
        if hub.config.read_only and request.method not in ("GET", "HEAD", "OPTIONS"):
            # Answering before the body is read leaves some keep-alive connections
            # waiting for an answer that never comes: read it (it is capped) first.
            await request.get_data()
            return response_for(ReadOnly())
        return None

    def enforce_access(connection: Any) -> None:
        """What the route of ``connection`` (Quart's ``request`` or ``websocket``)
        declares: its token scope and rate limits, or a 403 when it declares nothing."""
        view = app.view_functions.get(connection.endpoint or "")
        declared = None if view is None else access_of(view)
        if declared is None:
            raise AuthError(403, "forbidden", "this route declares no access")
        if declared.needs != "public":
            authorize(
                hub,
                connection.headers,
                connection.args,
                connection.cookies,
                connection.scope,
                declared.needs,
                connection=declared.connection,
            )

    @app.before_request
    async def check_access() -> None:
        """Check the token and the rate limits that the route declares (after the origin
        and read-only checks above)."""
        if request.endpoint is None or request.method == "OPTIONS":
            return  # routing answers it (404, 405, the automatic OPTIONS)
        enforce_access(request)

    @app.before_websocket
    async def check_websocket() -> Response | None:
        """A WebSocket's origin (no cross-site WebSocket hijacking), then its token and
        rate limits, before the handshake is answered."""
        origin = websocket.headers.get("Origin")
        if not origin_allowed(origin, websocket.headers.get("Host"), origins, websocket.scheme):
            logger.warning(
                "%s refused from %s: origin %s not allowed",
                websocket.path,
                host_of(websocket.scope),
                origin,
            )
            return error_response(403, "forbidden_origin", f"origin {origin!r} is not allowed")
        enforce_access(websocket)
        return None

    @app.after_request
    async def account(response: Response) -> Response:
        """Count the answer for the metrics and add the CORS headers."""
        hub.count_response(response.status_code)
        response.headers.update(cors_headers(request.headers.get("Origin"), origins))
        return response

    @app.errorhandler(HubError)
    async def hub_error(exc: HubError) -> Response:
        """A hub error as its JSON error answer."""
        return response_for(exc)

    @app.errorhandler(AuthError)
    async def auth_error(exc: AuthError) -> Response:
        """An authentication error as its JSON error answer (401/403)."""
        return response_for(exc)

    @app.errorhandler(ProtocolError)
    async def protocol_error(exc: ProtocolError) -> Response:
        """A bad parameter as a 400 JSON error answer."""
        return error_response(400, exc.code, exc.message)

    @app.errorhandler(UnknownSessionError)
    async def unknown(exc: UnknownSessionError) -> Response:
        """An unknown session as a 404 JSON error answer."""
        return error_response(404, "not_found", str(exc))

    @app.errorhandler(StoreError)
    async def store_error(exc: StoreError) -> Response:
        """A failing store as a 503 JSON error answer."""
        logger.error("store error: %s", exc)
        return error_response(503, "store_error", str(exc))

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        """Werkzeug's errors (404, 405, 413…) as JSON error answers."""
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    return app
