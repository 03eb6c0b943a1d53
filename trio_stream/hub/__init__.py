"""The hub: serves streams over WebSocket, Server-Sent Events, long polling and REST.

Start it with :func:`trio_stream.hub.server.serve_hub` (``await nursery.start(serve_hub,
config, store)``) or ``tstream serve``. The WebSocket protocol is described in
:mod:`trio_stream.hub.protocol`; its clients are in :mod:`trio_stream.client`. This
package imports nothing heavy itself, so that its clients stay cheap to import.
"""

from .config import HubConfig, HubConfigError, Listen, TokenSpec

__all__ = ["HubConfig", "HubConfigError", "Listen", "TokenSpec"]
