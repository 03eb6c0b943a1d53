"""Serving the hub inside the caller's nursery, on TCP and Unix sockets.

:func:`serve_hub` is the embeddable entry point::

    async with trio.open_nursery() as nursery:
        served = await nursery.start(serve_hub, HubConfig(listen=(Listen(port=0),)), store)
        print(served.urls)          # the real ports
        ...
        served.shutdown()           # or cancel the nursery

Shutting down (by :meth:`ServedHub.shutdown` or by cancellation) is graceful and bounded:
every client gets its close frame or SSE ``error`` event, every recorder flushes into the
store, Hypercorn stops, and the Unix sockets are removed, within a couple of seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Final, final

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from ..store.base import Store
from ..store.retention import retention_task
from . import patches
from .app import create_app
from .broker import Broker
from .config import HubConfig, Listen
from .context import Hub
from .feeds import StreamPolicy
from .proxy import TrustedProxies
from .sockets import Bound, bind, listen_urls

logger = logging.getLogger("trio_stream.hub")

SHUTDOWN_GRACE: Final = 1.5


@final
@attrs.frozen
class ServedHub:
    """What :func:`serve_hub` reports once it accepts connections.

    Attributes:
        addresses: the bound addresses (a port of 0 replaced by the real one).
        hub: the hub's state (broker, config), for embedding callers and tests.
        shutdown: call to stop the hub gracefully.
    """

    addresses: tuple[Listen, ...]
    hub: Hub
    shutdown: Callable[[], None]

    @property
    def urls(self) -> list[str]:
        """The addresses as URLs (``http+unix://`` for Unix sockets)."""
        return listen_urls(self.addresses)


def hypercorn_config(config: HubConfig) -> HypercornConfig:
    """Hypercorn's settings for the hub (no access log: query strings may hold tokens).

    A request head is at most Hypercorn's ``h11_max_incomplete_size`` (16 KiB) and must be
    complete within ``config.header_timeout``; Hypercorn's ``read_timeout`` stays off, as
    it would also cut SSE and WebSocket clients that rightly send nothing.
    """
    hc = HypercornConfig()
    hc.accesslog = None
    hc.errorlog = logging.getLogger("trio_stream.hub.hypercorn")
    hc.websocket_max_message_size = config.max_message_size
    hc.graceful_timeout = SHUTDOWN_GRACE
    # Hypercorn's idle timer closes a connection that has not completed a request head
    # this long after connecting or after its previous answer, however it trickles bytes.
    hc.keep_alive_timeout = config.header_timeout
    hc.include_server_header = False
    return hc


async def serve_hub(
    config: HubConfig,
    store: Store,
    *,
    policy: StreamPolicy | None = None,
    bound: Bound | None = None,
    task_status: trio.TaskStatus[ServedHub] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the hub until cancelled or shut down; meant for ``nursery.start``.

    Args:
        config: the hub's settings (``config.store`` is not used: ``store`` is).
        store: where streams are recorded; the caller opens and closes it.
        policy: how streams are opened and recorded (see :class:`~.feeds.StreamPolicy`;
            default: owned streams, or streams fed by a store several hubs share).
        bound: sockets bound already to the addresses of ``config.listen``
            (:func:`~trio_stream.hub.sockets.bind`), which the hub takes over: it closes
            them, and removes the Unix ones, when it stops. Default: bound here.
        task_status: receives a :class:`ServedHub` once every address accepts.

    Raises:
        HubConfigError: for an address that cannot be bound or an exposure without a
            token.
    """
    try:
        config.check_exposure()
        patches.install()
        patches.deflate_settings.set(
            patches.DeflateSettings(config.compression, config.compression_threshold)
        )
        if bound is None:
            bound = bind(config.listen)
    except BaseException:
        if bound is not None:
            bound.close()
        raise
    stop = trio.Event()
    try:
        async with trio.open_nursery() as guard:
            guard.start_soon(_stop_on_cancel, stop)
            # The hub runs shielded so that a cancelled caller still gets a graceful,
            # bounded shutdown: close frames out, recorders flushed.
            with trio.CancelScope(shield=True) as serving:
                await _serve(config, store, policy, bound, stop, serving, task_status)
            guard.cancel_scope.cancel()
    finally:
        bound.close()
        logger.info("hub stopped")


async def _stop_on_cancel(stop: trio.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        stop.set()


async def _serve(
    config: HubConfig,
    store: Store,
    policy: StreamPolicy | None,
    bound: Bound,
    stop: trio.Event,
    serving: trio.CancelScope,
    task_status: trio.TaskStatus[ServedHub],
) -> None:
    hc = hypercorn_config(config)
    stop_server = trio.Event()
    async with trio.open_nursery() as nursery:
        if config.prune_every > 0:
            nursery.start_soon(
                partial(
                    retention_task,
                    store,
                    every=config.prune_every,
                    older_than=config.retention,
                    max_events=config.max_events or None,
                )
            )
        broker = Broker(store, config, nursery, policy=policy)
        hub = Hub(config, broker)
        app = create_app(hub)
        asgi = (
            TrustedProxies(app, config.trusted_proxies, config.proxy_headers)
            if config.trusted_proxies
            else app
        )
        patches.pending_connections.set(hub.pending)
        async with trio.open_nursery() as server_nursery:
            await server_nursery.start(
                partial(
                    worker_serve,
                    wrap_app(asgi, hc.wsgi_max_body_size, "asgi"),
                    hc,
                    sockets=Sockets([], bound.sockets, []),
                    shutdown_trigger=stop_server.wait,
                )
            )
            for listen in bound.addresses:
                logger.info("hub listening on %s", listen)
            task_status.started(ServedHub(bound.addresses, hub, stop.set))
            await stop.wait()
            logger.info("hub shutting down: closing %d clients", broker.connections)
            serving.deadline = trio.current_time() + 3 * SHUTDOWN_GRACE
            await broker.shutdown()
            with trio.move_on_after(SHUTDOWN_GRACE):
                await broker.wait_no_clients()
            # Hypercorn returns once its connections close, at most after its grace.
            stop_server.set()
        nursery.cancel_scope.cancel()
