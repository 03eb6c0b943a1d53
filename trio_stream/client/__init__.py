"""Clients of a tstream hub: one address parser, one HTTP stack (httpx, over TCP, TLS or
a Unix socket) and the WebSocket protocol (trio-websocket).

- :func:`parse_hub_address`: ``http[s]://…``, ``ws[s]://…``, ``unix:PATH``.
- :func:`follow_stream`: a stream's events, resuming after drops with no gap and no
  duplicate; :func:`open_publisher`: publishing at offsets, idempotently.
- :func:`get_json`, :func:`hub_sessions`, :func:`hub_epoch`: the REST API.
"""

from .address import HubAddress, parse_hub_address, unix_path
from .http import get_json, hub_epoch, hub_sessions, open_http
from .stream import (
    HubClientError,
    HubPublisher,
    PublishAck,
    WireEvents,
    filter_query,
    follow_stream,
    open_publisher,
)

__all__ = [
    "HubAddress",
    "HubClientError",
    "HubPublisher",
    "PublishAck",
    "WireEvents",
    "filter_query",
    "follow_stream",
    "get_json",
    "hub_epoch",
    "hub_sessions",
    "open_http",
    "open_publisher",
    "parse_hub_address",
    "unix_path",
]
