"""Forwarding the signals a wrapper receives to the command it runs, as ``tstream run``
does, for programs that embed a session and stand in for its command.

::

    async with open_session(command, config) as session:
        with SignalQueue(handled_signals(config.mode)) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward_signals, signals, session)
                await session.wait()
                nursery.cancel_scope.cancel()

``SIGINT``, ``SIGTERM``, ``SIGHUP``, ``SIGQUIT``, ``SIGUSR1`` and ``SIGUSR2`` reach the
command's process group; a second ``SIGINT`` sends ``SIGKILL``. ``SIGTSTP`` stops the
group and then this process, like ``dumb-init``, and ``SIGCONT`` resumes both;
``SIGWINCH`` resizes a pseudo-terminal to this process's terminal.

Signal handlers are process-wide: a :class:`SignalQueue` replaces the handlers of its
signals while it is entered, from the thread that runs trio.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, final

import trio

from .process import terminal_size

if TYPE_CHECKING:
    from .session import Session

FORWARDED: Final = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
"""Forwarded to the command's group as they are; SIGINT, SIGTSTP, SIGCONT and SIGWINCH
get their own handling."""


def handled_signals(mode: str) -> list[int]:
    """The signals :func:`forward_signals` handles for a session in ``mode``
    (``pipes``, ``merged`` or ``pty``: only a pty is resized)."""
    handled = [signal.SIGINT, *FORWARDED, signal.SIGTSTP, signal.SIGCONT]
    if mode == "pty":
        handled.append(signal.SIGWINCH)
    return handled


@final
class SignalQueue:
    """Every delivery of some signals, in order, for a trio task to receive.

    ``trio.open_signal_receiver`` reports a signal once however many times it arrived
    before it was read; a second Ctrl-C must not be lost that way, so each delivery is
    queued here by our own handler.

    Args:
        signals: the signals to catch while entered.
    """

    def __init__(self, signals: Sequence[int]) -> None:
        self._signals = list(signals)
        self._pending: deque[int] = deque()
        self._arrived = trio.Event()
        self._previous: dict[int, Any] = {}
        self._token: trio.lowlevel.TrioToken | None = None

    def __enter__(self) -> SignalQueue:
        self._token = trio.lowlevel.current_trio_token()
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._pending.append(signum)
        assert self._token is not None
        # Signal handlers must not touch trio's state directly; this is safe from them.
        self._token.run_sync_soon(self._wake, idempotent=True)

    def _wake(self) -> None:
        self._arrived.set()

    async def receive(self) -> int:
        """The next signal delivered, waiting for one."""
        while not self._pending:
            if self._arrived.is_set():
                self._arrived = trio.Event()
            await self._arrived.wait()
        return self._pending.popleft()


async def forward_signals(signals: SignalQueue, session: Session) -> None:
    """Pass the signals ``signals`` receives on to the session's command, as if it
    received them itself; runs until cancelled."""
    interrupts = 0
    while True:
        sig = await signals.receive()
        if sig == signal.SIGINT:
            interrupts += 1
            session.send_signal(signal.SIGINT if interrupts == 1 else signal.SIGKILL)
        elif sig == signal.SIGTSTP:
            session.send_signal(signal.SIGSTOP)
            os.kill(os.getpid(), signal.SIGSTOP)
        elif sig == signal.SIGCONT:
            session.send_signal(signal.SIGCONT)
        elif sig == signal.SIGWINCH:
            size = terminal_size()
            if size is not None:
                session.resize(*size)
        else:
            session.send_signal(sig)
