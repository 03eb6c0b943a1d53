"""The dashboard: the pages a browser opens (``/``, ``/streams/{id}``), their static files
(``/web/…``), signing in with a token kept in a cookie, and the JSON-lines download.

The pages need no token; the data they show does. A page given ``?access_token=`` takes it
out of the address at once and signs in with it (``POST /login``), which keeps it in an
HttpOnly cookie that the read routes accept like the ``Authorization`` header.

The pages are the same HTML shell whatever the stream; everything they show comes from the
REST API and the SSE route, fetched by ``web/dashboard.js``. Every URL in the pages is
relative, so the dashboard works unchanged under a path prefix behind a reverse proxy that
strips it. A Content-Security-Policy forbids inline script: event text can only ever be
text.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import AsyncIterator
from importlib import resources
from typing import Final

import attrs
import orjson
import trio
from quart import Blueprint, Response, request

from .auth import COOKIE, AuthError
from .context import RateLimited, access, host_of, hub
from .errors import HubError, NotFound
from .params import query_filters

blueprint = Blueprint("dashboard", __name__)

EXPORT_PAGE: Final = 1000
CSP: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        # xterm.js sizes its cells with <style> elements it writes itself.
        "style-src 'self' 'unsafe-inline'",
        # Screenshots are shown from the URL or the data: thumbnail their event carries.
        "img-src 'self' data: https: http:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # Screenshot hosts must not learn which stream (or hub) showed their image.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@attrs.frozen
class Asset:
    """A static file of the dashboard, with its validator."""

    body: bytes
    content_type: str
    etag: str


def _load_assets() -> dict[str, Asset]:
    assets = {}
    for entry in resources.files("trio_stream").joinpath("web").iterdir():
        if not entry.is_file() or entry.name.startswith("."):
            continue
        body = entry.read_bytes()
        kind = mimetypes.guess_type(entry.name)[0] or "text/plain"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        etag = hashlib.sha256(body).hexdigest()[:32]
        assets[entry.name] = Asset(body, kind, f'"{etag}"')
    return assets


_assets: dict[str, Asset] = {}


def asset(name: str) -> Asset | None:
    """The static file ``name`` of the dashboard (read once from the package)."""
    if not _assets:
        _assets.update(_load_assets())
    return _assets.get(name)


def _page(root: str) -> Response:
    """The HTML shell, with ``root`` the relative way back to the hub's root."""
    shell = asset("dashboard.html")
    assert shell is not None, "trio_stream/web/dashboard.html is part of the package"
    body = shell.body.replace(b"%ROOT%", root.encode())
    return Response(
        body,
        content_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-store", **SECURITY_HEADERS},
    )


def _set_cookie(response: Response, token: str) -> None:
    # No Path: the browser takes the directory of ``login``'s address, which is the hub's
    # root as the browser sees it, with or without a proxy's prefix.
    response.set_cookie(
        COOKIE,
        token,
        path=None,
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
    )


@blueprint.route("/")
@access("public")
async def list_page() -> Response:
    """``GET /``: the list of streams."""
    return _page("./")


@blueprint.route("/streams/<stream_id>")
@access("public")
async def stream_page(stream_id: str) -> Response:
    """``GET /streams/{id}``: one stream (its id is read from the address by the page)."""
    return _page("../")


@blueprint.route("/web/<name>")
@access("public")
async def static_file(name: str) -> Response:
    """``GET /web/{name}``: a static file of the dashboard."""
    found = asset(name)
    if found is None:
        raise NotFound(f"no dashboard file named {name!r}")
    headers = {"ETag": found.etag, "Cache-Control": "no-cache", **SECURITY_HEADERS}
    if request.headers.get("If-None-Match") == found.etag:
        return Response(b"", status=304, headers=headers)
    return Response(found.body, content_type=found.content_type, headers=headers)


@blueprint.route("/login", methods=["POST"])
@access("public")
async def login() -> Response:
    """``POST /login`` with ``{"token": …}``: keep a token that may read in an HttpOnly,
    SameSite=Strict cookie, which the read routes accept like the header."""
    h = hub()
    wait = h.requests.take(host_of(request.scope), trio.current_time())
    if wait:
        raise RateLimited("too many requests from this address; retry later", wait)
    try:
        # orjson refuses invalid UTF-8 as malformed JSON; Quart's silent parsing raised.
        body = orjson.loads(await request.get_data(cache=False))
    except orjson.JSONDecodeError:
        body = None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise HubError('body: expected {"token": "…"}', field="token")
    token = token.strip()
    if h.auth.enabled and "read" not in h.auth.scopes(token):
        raise AuthError(401, "unauthorized", "this token may not read streams")
    response = Response(b"", status=204)
    if h.auth.enabled:
        _set_cookie(response, token)
    return response


@blueprint.route("/api/streams/<stream_id>/export")
@access("read")
async def export(stream_id: str) -> Response:
    """``GET /api/streams/{id}/export``: every event (that the filters pass) as JSON
    lines, read from the store a page at a time."""
    from .rest import _history

    h = hub()
    filters = query_filters(request.args)
    stream = await h.broker.get_stream(stream_id, revive=False)
    await stream.settle()

    async def lines() -> AsyncIterator[bytes]:
        after = -1
        while True:
            frames = await _history(
                stream, filters, after=after, limit=EXPORT_PAGE, skip=0, last=None
            )
            if not frames:
                return
            yield b"".join(f.raw + b"\n" for f in frames)
            if len(frames) < EXPORT_PAGE:
                return
            after = frames[-1].offset

    response = Response(
        lines(),
        content_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{stream.id}.jsonl"'},
    )
    response.timeout = None
    return response
