"""Writing to our own standard output and error without touching their file status flags.

Wrapping fd 1 or 2 in ``trio.lowlevel.FdStream`` would set ``O_NONBLOCK`` on them, and a
terminal's open file description is shared with the shell and every other program on it,
which then see ``EAGAIN`` (trio issues 174 and 1707). :class:`TerminalWriter` instead makes
ordinary blocking writes in a worker thread, one thread call for everything pending, so a
chatty command costs one write per burst rather than one per chunk.

A reader that went away (``tstream run -- cmd | head -1``) is not an error: the writer
stops writing to that descriptor, quietly, and keeps accepting data, so the session goes on
and is recorded whole.
"""

from __future__ import annotations

import errno
import os
import select
from typing import Final, final

import trio

DEFAULT_MAX_PENDING: Final = 1024 * 1024


def write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data`` to ``fd`` with blocking writes.

    Waits for the descriptor when someone else left it non-blocking.

    Returns:
        False when the reader is gone (EPIPE), else True.

    Raises:
        OSError: for any other write error.
    """
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        except BrokenPipeError:
            return False
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                return False
            raise
        view = view[written:]
    return True


@final
class TerminalWriter:
    """An ordered queue of writes to file descriptors, drained by :meth:`run`.

    :meth:`write` waits while more than ``max_pending`` bytes are queued: that is the
    ``block`` flow control of passthrough, through which a slow terminal slows the reader
    and so the child, as if it wrote to the terminal itself.

    Args:
        max_pending: bytes queued at most before :meth:`write` waits.
    """

    def __init__(self, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        self.max_pending = max_pending
        self.broken: set[int] = set()
        self._queue: list[tuple[int, bytes]] = []
        self._pending = 0
        self._closed = False
        self._has_data = trio.Event()
        self._room = trio.Event()
        self._room.set()

    async def write(self, fd: int, data: bytes) -> None:
        """Queue ``data`` for ``fd``, waiting while too much is queued already.

        Data for a descriptor whose reader went away is discarded.

        Raises:
            trio.ClosedResourceError: after :meth:`close`.
        """
        if self._closed:
            raise trio.ClosedResourceError("write() after close()")
        if not data or fd in self.broken:
            return
        while self._pending >= self.max_pending:
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()
        self._queue.append((fd, data))
        self._pending += len(data)
        self._has_data.set()

    def close(self) -> None:
        """No more writes: :meth:`run` writes what is queued, then returns."""
        self._closed = True
        self._has_data.set()

    async def run(self) -> None:
        """Write everything queued until :meth:`close`; run this in a nursery."""
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._has_data = trio.Event()
                await self._has_data.wait()
                continue
            queue, self._queue = self._queue, []
            self._pending = 0
            self._room.set()
            await trio.to_thread.run_sync(self._write_queue, _coalesce(queue))

    def _write_queue(self, writes: list[tuple[int, bytes]]) -> None:
        for fd, data in writes:
            if fd not in self.broken and not write_all(fd, data):
                self.broken.add(fd)


def _coalesce(queue: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Join consecutive writes to the same descriptor, keeping the order across them."""
    out: list[tuple[int, bytes]] = []
    run: list[bytes] = []
    current = -1
    for fd, data in queue:
        if fd != current and run:
            out.append((current, b"".join(run)))
            run = []
        current = fd
        run.append(data)
    if run:
        out.append((current, b"".join(run)))
    return out
