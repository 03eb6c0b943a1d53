"""The running sessions of this user on this machine, for ``tstream attach`` to find.

Each ``tstream run`` serves its session on a private Unix socket in the runtime directory
(``$XDG_RUNTIME_DIR/tstream``, else ``tstream-UID`` under the temp directory, which must be
the user's own and mode 0700) and registers it there: ``NAME.json`` beside ``NAME.sock``
holds the session id, the serving process's pid, the command, the start time and the
socket path. Both files go when the session ends.

A process killed with ``kill -9`` leaves its files behind. Every listing checks each entry
(is its process still there, on this host?) and removes the stale ones, so a dead
session is never connected to; a client that finds the socket refusing connections treats
the entry as gone too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, final

import attrs
import orjson

from .paths import runtime_dir
from .store.base import AmbiguousSessionError, UnknownSessionError

SUFFIX: Final = ".json"


class RegistryError(OSError):
    """The runtime directory cannot be used safely (not ours, or open to others)."""


@final
@attrs.frozen
class LiveSession:
    """A registered, running session.

    Attributes:
        id: the session id.
        pid: the process serving it.
        command: the command line.
        started: when it started (UTC epoch seconds).
        socket: the Unix socket its hub listens on.
        host: the machine's name.
        urls: every address it is served on (the socket first, then ``--listen`` ones).
        entry: the registration file.
    """

    id: str
    pid: int
    command: list[str]
    started: float
    socket: str
    host: str = ""
    urls: list[str] = attrs.Factory(list)
    entry: str = ""

    @property
    def hub(self) -> str:
        """The socket as a hub address (``unix:PATH``)."""
        return f"unix:{self.socket}"

    def to_json(self) -> bytes:
        data = attrs.asdict(self)
        del data["entry"]
        return orjson.dumps(data)


def private_dir(path: Path | None = None) -> Path:
    """The runtime directory, created 0700 if missing and checked otherwise.

    Raises:
        RegistryError: when it belongs to someone else or others may enter it.
    """
    path = runtime_dir() if path is None else path
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise RegistryError(f"cannot create {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise RegistryError(f"{path} is not a directory")
    if info.st_uid != os.getuid():
        raise RegistryError(f"{path} belongs to another user")
    if info.st_mode & 0o077:
        raise RegistryError(f"{path} is open to other users (mode must be 0700)")
    return path


def new_socket_path(directory: Path) -> Path:
    """A fresh, short socket path in ``directory`` (Unix socket paths are short)."""
    return directory / f"{secrets.token_hex(4)}.sock"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(live: LiveSession) -> bool:
    """Whether ``live``'s process is gone (or its socket is)."""
    if live.host and live.host != socket.gethostname():
        return False
    return not pid_alive(live.pid) or not os.path.exists(live.socket)


def _remove(paths: Sequence[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def forget(live: LiveSession) -> None:
    """Remove ``live``'s registration and socket."""
    _remove([live.entry, live.socket])


def _read_entry(path: Path) -> LiveSession | None:
    try:
        data: Any = orjson.loads(path.read_bytes())
        return LiveSession(
            id=str(data["id"]),
            pid=int(data["pid"]),
            command=[str(c) for c in data.get("command", [])],
            started=float(data.get("started", 0.0)),
            socket=str(data["socket"]),
            host=str(data.get("host", "")),
            urls=[str(u) for u in data.get("urls", [])],
            entry=str(path),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_sessions(directory: Path | None = None) -> list[LiveSession]:
    """The registered sessions still running, newest first; stale entries are removed.

    A missing or unusable runtime directory has no sessions.
    """
    directory = runtime_dir() if directory is None else directory
    try:
        names = sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))
    except OSError:
        return []
    found = []
    for path in names:
        live = _read_entry(path)
        if live is None:
            # Half-written by a process that died, or not ours: only an old one is removed.
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > 60:
                    path.unlink()
            continue
        if is_stale(live):
            forget(live)
            continue
        found.append(live)
    found.sort(key=lambda s: (s.started, s.id), reverse=True)
    return found


def find_live(ref: str, directory: Path | None = None) -> LiveSession:
    """The running session ``ref`` names: ``latest``, an id, or a unique id prefix.

    Raises:
        UnknownSessionError: no running session matches.
        AmbiguousSessionError: several running sessions start with ``ref``.
    """
    sessions = running_sessions(directory)
    wanted = match_ref(ref, [s.id for s in sessions])
    return next(s for s in sessions if s.id == wanted)


def match_ref(ref: str, ids: Sequence[str]) -> str:
    """The id ``ref`` names among ``ids`` (newest first): ``latest`` (the first), an id,
    or a unique prefix of one.

    Raises:
        UnknownSessionError: none matches.
        AmbiguousSessionError: several start with ``ref``.
    """
    if ref == "latest":
        if not ids:
            raise UnknownSessionError(ref)
        return ids[0]
    if ref in ids:
        return ref
    matches = sorted({i for i in ids if i.startswith(ref)}) if ref else []
    if not matches:
        raise UnknownSessionError(ref)
    if len(matches) > 1:
        raise AmbiguousSessionError(ref, matches)
    return matches[0]


@contextlib.contextmanager
def registered(live: LiveSession, directory: Path) -> Iterator[LiveSession]:
    """Register ``live`` in ``directory`` for the duration of the block.

    The file is written whole (a temporary file renamed into place, mode 0600), so a
    reader never sees half of it. It and the socket are removed on the way out.
    """
    stem = Path(live.socket).stem
    entry = directory / f"{stem}{SUFFIX}"
    live = attrs.evolve(live, entry=str(entry))
    partial = directory / f".{stem}.tmp"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(live.to_json())
        os.replace(partial, entry)
    except BaseException:
        _remove([str(partial)])
        raise
    try:
        yield live
    finally:
        forget(live)
