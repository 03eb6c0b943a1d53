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

import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path
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
from .config import HubConfig, HubConfigError, Listen
from .context import Hub
from .feeds import StreamPolicy
from .proxy import TrustedProxies

logger = logging.getLogger("trio_stream.hub")

SHUTDOWN_GRACE: Final = 1.5
BACKLOG: Final = 1024


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
        return [
            f"http+unix://{a.path}" if a.path is not None else f"http://{a}" for a in self.addresses
        ]


def _bind_unix(path: str) -> socket.socket:
    target = Path(path)
    parent = target.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True)
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise HubConfigError(f"listen unix:{path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            target.unlink()  # a stale socket left by a hub that died
        else:
            raise HubConfigError(f"listen unix:{path}: another server is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes the socket 0600 from its creation: no window where others connect.
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return sock


def _bind_tcp(listen: Listen) -> tuple[socket.socket, Listen]:
    try:
        infos = socket.getaddrinfo(
            listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise HubConfigError(f"listen {listen}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise HubConfigError(f"listen {listen}: {reason}") from None
    return sock, attrs.evolve(listen, port=sock.getsockname()[1])


def bind(listens: tuple[Listen, ...]) -> tuple[list[socket.socket], tuple[Listen, ...]]:
    """Open and listen on every address.

    Raises:
        HubConfigError: naming the address that could not be bound.
    """
    sockets: list[socket.socket] = []
    bound: list[Listen] = []
    try:
        for listen in listens:
            if listen.path is not None:
                sock = _bind_unix(listen.path)
                bound.append(listen)
            else:
                sock, real = _bind_tcp(listen)
                bound.append(real)
            sockets.append(sock)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        _unlink(bound)
        raise
    return sockets, tuple(bound)


def _unlink(bound: list[Listen] | tuple[Listen, ...]) -> None:
    for listen in bound:
        if listen.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(listen.path)


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
    task_status: trio.TaskStatus[ServedHub] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the hub until cancelled or shut down; meant for ``nursery.start``.

    Args:
        config: the hub's settings (``config.store`` is not used: ``store`` is).
        store: where streams are recorded; the caller opens and closes it.
        policy: how streams are opened and recorded (see :class:`~.feeds.StreamPolicy`;
            default: owned streams, or streams fed by a store several hubs share).
        task_status: receives a :class:`ServedHub` once every address accepts.

    Raises:
        HubConfigError: for an address that cannot be bound or an exposure without a
            token.
    """
    config.check_exposure()
    patches.install()
    patches.deflate_settings.set(
        patches.DeflateSettings(config.compression, config.compression_threshold)
    )
    sockets, bound = bind(config.listen)
    stop = trio.Event()
    try:
        async with trio.open_nursery() as guard:
            guard.start_soon(_stop_on_cancel, stop)
            # The hub runs shielded so that a cancelled caller still gets a graceful,
            # bounded shutdown: close frames out, recorders flushed.
            with trio.CancelScope(shield=True) as serving:
                await _serve(config, store, policy, sockets, bound, stop, serving, task_status)
            guard.cancel_scope.cancel()
    finally:
        _unlink(bound)
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
    sockets: list[socket.socket],
    bound: tuple[Listen, ...],
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
                    sockets=Sockets([], sockets, []),
                    shutdown_trigger=stop_server.wait,
                )
            )
            for listen in bound:
                logger.info("hub listening on %s", listen)
            task_status.started(ServedHub(bound, hub, stop.set))
            await stop.wait()
            logger.info("hub shutting down: closing %d clients", broker.connections)
            serving.deadline = trio.current_time() + 3 * SHUTDOWN_GRACE
            await broker.shutdown()
            with trio.move_on_after(SHUTDOWN_GRACE):
                await broker.wait_no_clients()
            # Hypercorn returns once its connections close, at most after its grace.
            stop_server.set()
        nursery.cancel_scope.cancel()
