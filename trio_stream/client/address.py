"""Hub addresses, parsed once for every client: ``http[s]://HOST[:PORT][/PREFIX]``,
``ws[s]://HOST[:PORT][/PREFIX]`` (the same hub; a prefix where a reverse proxy serves it
under a path), ``unix:PATH`` and ``http+unix://PATH`` (a hub on a Unix socket, as
``tstream serve`` and ``tstream run`` print them)."""

from __future__ import annotations

from typing import Final, final
from urllib.parse import urlsplit

import attrs

_UNIX_PREFIXES: Final = ("unix:", "http+unix://")
_SECURE: Final = {"http": False, "ws": False, "https": True, "wss": True}


@final
@attrs.frozen
class HubAddress:
    """Where a hub listens.

    Attributes:
        text: the address as given (what messages show).
        secure: TLS (``https``/``wss``).
        netloc: ``HOST[:PORT]``, or ``localhost`` for a Unix socket (the ``Host`` header).
        unix_path: the socket's path, or None over TCP.
        prefix: the path a reverse proxy serves the hub under (``/tstream``), or ``""``.
    """

    text: str
    secure: bool
    netloc: str
    unix_path: str | None = None
    prefix: str = ""

    @property
    def http_url(self) -> str:
        """The base URL of the hub's HTTP API (``http://localhost`` over a Unix socket,
        whose transport carries the path)."""
        return f"{'https' if self.secure else 'http'}://{self.netloc}{self.prefix}"

    def ws_url(self, resource: str) -> str:
        """The WebSocket URL of ``resource`` (a path from the hub's root, with its query)."""
        return f"{'wss' if self.secure else 'ws'}://{self.netloc}{self.prefix}{resource}"


def unix_path(text: str) -> str | None:
    """The socket path of a ``unix:PATH`` or ``http+unix://PATH`` address, else None."""
    for prefix in _UNIX_PREFIXES:
        if text.startswith(prefix):
            return text[len(prefix) :]
    return None


def parse_hub_address(text: str) -> HubAddress:
    """Parse and check a hub address.

    Raises:
        ValueError: naming what is wrong with it.
    """
    path = unix_path(text)
    if path is not None:
        if not path:
            raise ValueError(f"hub {text!r}: the socket path is missing")
        return HubAddress(text, False, "localhost", path)
    parts = urlsplit(text)
    if parts.scheme not in _SECURE or not parts.hostname:
        raise ValueError(
            f"hub {text!r}: use http://HOST:PORT, https://HOST, ws://HOST:PORT or unix:PATH"
        )
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        raise ValueError(f"hub {text!r}: the port is not a number from 0 to 65535") from None
    if parts.query or parts.fragment:
        raise ValueError(f"hub {text!r}: give the hub's address without a query")
    return HubAddress(text, _SECURE[parts.scheme], parts.netloc, None, parts.path.rstrip("/"))
