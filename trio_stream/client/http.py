"""The hub's REST API from a client: one httpx stack, over TCP, TLS or a Unix socket.

Errors come in two kinds, as callers need them: the hub answered and refused
(:class:`~trio_stream.client.stream.HubClientError` with the hub's code and message), or
it could not be asked (an :class:`OSError`: :class:`ConnectionError` when it cannot be
reached or broke the connection, :class:`TimeoutError` when it stayed silent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
import orjson

from ..store.base import SessionInfo, SessionStatus
from .address import HubAddress, parse_hub_address
from .stream import HubClientError

HTTP_TIMEOUT: Final = 10.0
# The largest answer read (a page of history, a listing).
HTTP_LIMIT: Final = 256 * 1024 * 1024
# The most streams the hub lists in one answer.
MAX_LIST: Final = 1000


def _address(hub: HubAddress | str) -> HubAddress:
    return hub if isinstance(hub, HubAddress) else parse_hub_address(hub)


@asynccontextmanager
async def open_http(
    hub: HubAddress | str, token: str | None = None, *, timeout: float = HTTP_TIMEOUT
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``hub`` (its base URL set, its token sent), closed on exit.

    Raises:
        ValueError: for a bad address.
    """
    address = _address(hub)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    transport = (
        None if address.unix_path is None else httpx.AsyncHTTPTransport(uds=address.unix_path)
    )
    async with httpx.AsyncClient(
        base_url=address.http_url, transport=transport, headers=headers, timeout=timeout
    ) as client:
        yield client


async def get_json(
    hub: HubAddress | str,
    path: str,
    token: str | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    client: httpx.AsyncClient | None = None,
    timeout: float = HTTP_TIMEOUT,
) -> Any:
    """GET ``path`` (from the hub's root, with its query) as JSON.

    Args:
        hub: the hub.
        path: the resource.
        token: the bearer token (not used when ``client`` is given: it has its own).
        params: more query parameters.
        client: a client from :func:`open_http` to reuse, else one for this request.
        timeout: how long the hub may stay silent (connecting, or between two reads).

    Raises:
        HubClientError: the hub answered with an error (its code and message), an answer
            that is not JSON, or one over :data:`HTTP_LIMIT` bytes.
        ConnectionError: the hub cannot be reached, or broke the connection before
            answering.
        TimeoutError: the hub stayed silent for ``timeout`` seconds.
        ValueError: for a bad address.
    """
    address = _address(hub)
    if client is None:
        async with open_http(address, token, timeout=timeout) as own:
            return await get_json(address, path, params=params, client=own, timeout=timeout)
    try:
        async with client.stream("GET", path, params=params) as answer:
            body = bytearray()
            async for chunk in answer.aiter_bytes():
                body += chunk
                if len(body) > HTTP_LIMIT:
                    raise HubClientError("too_large", f"the answer to {path} is too large", -1)
            status = answer.status_code
    except httpx.TimeoutException:
        raise TimeoutError(f"hub {address.text}: no answer within {timeout:g}s") from None
    except httpx.ConnectError as exc:
        raise ConnectionError(f"hub {address.text}: unreachable ({exc})") from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise ConnectionError(
            f"hub {address.text}: the connection broke before the answer to {path} ({exc})"
        ) from None
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HubClientError("bad_answer", f"{path}: HTTP {status}, not JSON", -1) from None
    if status >= 400:
        error = decoded.get("error", {}) if isinstance(decoded, dict) else {}
        if not isinstance(error, dict):
            error = {}
        raise HubClientError(
            str(error.get("code", "error")), str(error.get("message", f"HTTP {status}")), -1
        )
    return decoded


async def hub_epoch(hub: HubAddress | str) -> str | None:
    """The epoch of the hub's store (``GET /healthz``), None when the hub does not say.

    Raises:
        OSError: the hub could not be reached.
    """
    try:
        answer = await get_json(hub, "/healthz")
    except HubClientError:
        # Not a tstream hub, or one too old to say: nothing to compare.
        return None
    epoch = answer.get("epoch") if isinstance(answer, dict) else None
    return epoch if isinstance(epoch, str) else None


def _session(stream: dict[str, Any]) -> SessionInfo:
    """A hub's stream description as the session it records."""
    last = stream.get("lastOffset", -1)
    created = stream.get("created") or 0.0
    return SessionInfo(
        stream["id"],
        command=list(stream.get("command") or []),
        status=SessionStatus(stream.get("status", "running")),
        created=created,
        last_activity=stream.get("lastActivity") or created,
        ended=stream.get("ended"),
        exit_status=stream.get("exitStatus"),
        workflow_session_id=stream.get("workflowSessionId"),
        events=last + 1,
        last_offset=last,
    )


async def hub_sessions(
    hub: HubAddress | str,
    *,
    token: str | None = None,
    status: SessionStatus | None = None,
    limit: int | None = None,
) -> list[SessionInfo]:
    """The sessions a hub holds (``GET /api/streams``), newest first.

    ``events`` counts offsets (``lastOffset + 1``): the hub's streams are dense. At most
    :data:`MAX_LIST` sessions come back.

    Raises:
        HubClientError: the hub refused (``unauthorized``…) or answered something else
            than a listing (``bad_answer``).
        OSError: it could not be reached.
    """
    if limit == 0:
        return []
    params: dict[str, Any] = {"limit": MAX_LIST if limit is None else min(limit, MAX_LIST)}
    if status is not None:
        params["status"] = status.value
    answer = await get_json(hub, "/api/streams", token, params=params)
    try:
        return [_session(s) for s in answer["streams"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise HubClientError("bad_answer", f"unexpected answer ({exc!r})", -1) from None
