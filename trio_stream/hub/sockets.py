"""The hub's listening sockets, bound without the web stack.

:func:`bind` opens every address a hub listens on; :func:`~trio_stream.hub.server.serve_hub`
binds its own or takes sockets bound already. ``tstream run`` binds its session's socket
as the session starts and imports the web server only once a client connects: the
connection waits in the socket's backlog meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from pathlib import Path
from typing import Final, final

import attrs

from .config import HubConfigError, Listen

BACKLOG: Final = 1024


def listen_urls(addresses: tuple[Listen, ...]) -> list[str]:
    """``addresses`` as URLs (``http+unix://`` for Unix sockets)."""
    return [f"http+unix://{a.path}" if a.path is not None else f"http://{a}" for a in addresses]


@final
@attrs.frozen(eq=False)
class Bound:
    """Listening, non-blocking sockets and the addresses they are bound to.

    Attributes:
        sockets: the sockets, in the order of ``addresses``.
        addresses: the bound addresses (a port of 0 replaced by the real one).
    """

    sockets: list[socket.socket]
    addresses: tuple[Listen, ...]

    @property
    def urls(self) -> list[str]:
        return listen_urls(self.addresses)

    def close(self) -> None:
        """Close every socket and remove the Unix ones' files (again is harmless)."""
        for sock in self.sockets:
            sock.close()
        _unlink(self.addresses)


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


def bind(listens: tuple[Listen, ...]) -> Bound:
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
        Bound(sockets, tuple(bound)).close()
        raise
    return Bound(sockets, tuple(bound))


def _unlink(addresses: tuple[Listen, ...]) -> None:
    for listen in addresses:
        if listen.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(listen.path)
