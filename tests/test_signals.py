"""Signal forwarding, as a program that embeds a session uses it."""

from __future__ import annotations

import os
import signal

import trio

from trio_stream import StreamConfig, open_session
from trio_stream.events import EventType
from trio_stream.signals import SignalQueue, forward_signals, handled_signals

READY_THEN_WAIT = "echo ready; while :; do sleep 0.02; done"


async def test_every_delivery_is_queued_in_order() -> None:
    with SignalQueue([signal.SIGUSR1, signal.SIGUSR2]) as signals:
        for sig in (signal.SIGUSR1, signal.SIGUSR1, signal.SIGUSR2):
            os.kill(os.getpid(), sig)
        with trio.fail_after(5):
            received = [await signals.receive() for _ in range(3)]
    assert received == [signal.SIGUSR1, signal.SIGUSR1, signal.SIGUSR2]


async def run_forwarding(script: str, *sent: int) -> tuple[int | None, int | None]:
    """Run ``script`` forwarding our signals to it; send ``sent`` to ourselves once it
    is ready; return its exit status and signal."""
    config = StreamConfig()
    with trio.fail_after(20):
        async with open_session(["sh", "-c", script], config) as session:
            with SignalQueue(handled_signals(config.mode)) as signals:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(forward_signals, signals, session)
                    async for events in session.events():
                        if any(e.type is EventType.OUTPUT for e in events):
                            break
                    for sig in sent:
                        os.kill(os.getpid(), sig)
                    await session.wait()
                    nursery.cancel_scope.cancel()
    assert session.result is not None
    return session.result.exit_status, session.result.signal


async def test_a_forwarded_sigterm_reaches_the_command() -> None:
    status, _ = await run_forwarding(f"trap 'exit 7' TERM; {READY_THEN_WAIT}", signal.SIGTERM)
    assert status == 7


async def test_a_second_sigint_kills_a_command_that_ignores_the_first() -> None:
    _, sig = await run_forwarding(f"trap '' INT; {READY_THEN_WAIT}", signal.SIGINT, signal.SIGINT)
    assert sig == signal.SIGKILL


def test_only_a_pty_session_handles_window_changes() -> None:
    assert signal.SIGWINCH in handled_signals("pty")
    assert signal.SIGWINCH not in handled_signals("pipes")
