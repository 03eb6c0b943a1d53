"""Reading a hub's sessions over its REST API (``tstream ls --hub``)."""

from __future__ import annotations

from typing import Any, Final

import httpx

from ..store.base import SessionInfo, SessionStatus
from .client import unix_path

TIMEOUT: Final = 10.0
# The most streams the hub lists in one answer.
MAX_LIST: Final = 1000


class HubUnavailableError(Exception):
    """The hub could not be reached, or refused the request (the message says which)."""


def _base(hub: str) -> str:
    if unix_path(hub) is not None:
        return "http://localhost"
    return hub.replace("ws://", "http://", 1).replace("wss://", "https://", 1)


def _client(hub: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    path = unix_path(hub)
    transport = None if path is None else httpx.HTTPTransport(uds=path)
    return httpx.Client(base_url=_base(hub), transport=transport, headers=headers, timeout=TIMEOUT)


async def hub_epoch(hub: str) -> str | None:
    """The epoch of the hub's store (``GET /healthz``), None when the hub does not say.

    Raises:
        httpx.HTTPError: the hub could not be reached.
    """
    path = unix_path(hub)
    transport = None if path is None else httpx.AsyncHTTPTransport(uds=path)
    async with httpx.AsyncClient(base_url=_base(hub), transport=transport, timeout=TIMEOUT) as c:
        answer = await c.get("/healthz")
    try:
        epoch = answer.json().get("epoch")
    except (ValueError, AttributeError):
        return None
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


def hub_sessions(
    hub: str,
    *,
    token: str | None = None,
    status: SessionStatus | None = None,
    limit: int | None = None,
) -> list[SessionInfo]:
    """The sessions a hub holds (``GET /api/streams``), newest first.

    ``events`` counts offsets (``lastOffset + 1``): the hub's streams are dense. At most
    :data:`MAX_LIST` sessions come back.

    Raises:
        HubUnavailableError: naming the problem (unreachable, token rejected, …).
    """
    if limit == 0:
        return []
    params: dict[str, Any] = {"limit": MAX_LIST if limit is None else min(limit, MAX_LIST)}
    if status is not None:
        params["status"] = status.value
    try:
        with _client(hub, token) as client:
            answer = client.get("/api/streams", params=params)
    except httpx.HTTPError as exc:
        raise HubUnavailableError(f"hub {hub}: unreachable ({exc})") from None
    if answer.status_code != 200:
        try:
            error = answer.json()["error"]
            detail = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            detail = f"HTTP {answer.status_code}"
        what = "token rejected" if answer.status_code in (401, 403) else "refused"
        raise HubUnavailableError(f"hub {hub}: {what} ({detail})")
    try:
        streams = answer.json()["streams"]
        sessions = [_session(s) for s in streams]
    except (ValueError, KeyError, TypeError) as exc:
        raise HubUnavailableError(f"hub {hub}: unexpected answer ({exc!r})") from None
    return sessions
