"""Believing a reverse proxy: the client's address, scheme and host, from trusted peers only.

Behind nginx or Caddy every connection comes from the proxy, which tells who its client
was in ``X-Forwarded-For`` / ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` (or in one
``Forwarded`` header). Anyone can send those headers, so :class:`TrustedProxies` believes
them only on a connection from a configured proxy address, network or (``unix``) Unix
socket, and then only the value that proxy added itself (the last one): a client cannot
put itself in another's rate-limit bucket or pass for loopback by sending them. From any
other peer the headers are ignored.

The headers are read by Hypercorn's :class:`~hypercorn.middleware.ProxyFixMiddleware`,
which rewrites the ASGI scope's ``client``, ``scheme`` and ``Host``; everything that
reads a client's address (limits, logs, the loopback-only rule, the Origin and Host
checks) reads that scope, so it sees the real client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any, Final, Literal, final

from hypercorn.middleware import ProxyFixMiddleware
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

from .config import UNIX_PEERS

_WEBSOCKET_SCHEMES: Final = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(text: str) -> str:
    """A forwarded client in the form the hub keys limits by: a bare IP address.

    ``Forwarded`` quotes IPv6 addresses and may add a port (``"[2001:db8::1]:4711"``);
    a value that is no address at all (``unknown``, an obfuscated ``_name``) is kept
    as it is.
    """
    value = text.strip().strip('"')
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return text.strip()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


@final
class TrustedProxies:
    """An ASGI middleware that believes forwarding headers from trusted peers only.

    Args:
        app: the application.
        proxies: trusted peers, as :func:`parse_trusted_proxy` returns them.
        headers: ``x-forwarded`` (``X-Forwarded-For``/``-Proto``/``-Host``, what nginx,
            Caddy and most proxies set) or ``forwarded`` (RFC 7239). Only the kind the
            proxy sets may be believed: a proxy passes the other kind on from its client
            untouched.
    """

    def __init__(
        self, app: ASGIFramework, proxies: Sequence[str], headers: str = "x-forwarded"
    ) -> None:
        self._app = app
        self._unix = UNIX_PEERS in proxies
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(p) for p in proxies if p != UNIX_PEERS
        )
        mode: Literal["legacy", "modern"] = "modern" if headers == "forwarded" else "legacy"
        # One hop: only the value the trusted peer added itself is believed.
        self._fix = ProxyFixMiddleware(self._normalized, mode=mode, trusted_hops=1)

    def trusts(self, client: Any) -> bool:
        """Whether a connection from ``client`` (the ASGI scope's) is a trusted proxy's."""
        if not client:
            return self._unix
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] in ("http", "websocket") and self.trusts(scope.get("client")):
            await self._fix(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    async def _normalized(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        client = scope.get("client")
        if client and client[1] == 0:  # set from a header, which carries no usable port
            scope["client"] = (client_address(client[0]), 0)  # type: ignore[typeddict-item]
        scheme = scope["scheme"].lower()  # type: ignore[typeddict-item]
        if scope["type"] == "websocket":
            scheme = _WEBSOCKET_SCHEMES.get(scheme, "ws")
        elif scheme not in ("http", "https"):
            scheme = "http"
        scope["scheme"] = scheme  # type: ignore[typeddict-item]
        await self._app(scope, receive, send)
