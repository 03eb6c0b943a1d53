"""Slow clients: a request head not completed in time is closed, half-sent requests are
bounded in number, and a client that sends its request at once is served meanwhile."""

from __future__ import annotations

import httpx
import trio

from trio_stream.hub.config import HubConfig
from trio_stream.hub.server import ServedHub

from .conftest import StartHub, base_url

HALF_SENT = 300
HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"


async def half_send(served: ServedHub, count: int) -> list[tuple[trio.SocketStream, float]]:
    """``count`` connections that each send part of a request head and stall, with the
    time each was opened."""
    port = served.addresses[0].port
    opened = []
    for _ in range(count):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        opened.append((stream, trio.current_time()))
        await stream.send_all(HEAD)
    return opened


async def all_waiting(served: ServedHub, count: int) -> None:
    """Return once the hub has taken ``count`` connections waiting for a request head."""
    with trio.fail_after(10):
        while len(served.hub.pending) + served.hub.pending.evicted < count:
            await trio.sleep(0.01)


async def closed_by_hub(stream: trio.SocketStream) -> bool:
    """Whether the hub has closed ``stream`` (waiting for it up to 10 s)."""
    with trio.move_on_after(10):
        try:
            return await stream.receive_some() == b""
        except trio.BrokenResourceError:
            return True
    return False


async def healthy_latency(served: ServedHub) -> float:
    """Seconds a fresh client takes to get an answer from ``/healthz``."""
    async with httpx.AsyncClient(base_url=base_url(served), timeout=10) as client:
        start = trio.current_time()
        answer = await client.get("/healthz")
        elapsed = trio.current_time() - start
    assert answer.status_code == 200
    return elapsed


def test_the_default_header_timeout_is_ten_seconds() -> None:
    assert HubConfig().header_timeout == 10.0


async def test_a_healthy_client_is_served_while_half_sent_requests_wait(
    start_hub: StartHub,
) -> None:
    served = await start_hub(header_timeout=30)
    stalled = await half_send(served, HALF_SENT)
    await all_waiting(served, HALF_SENT)

    latency = await healthy_latency(served)

    assert len(served.hub.pending) >= HALF_SENT  # all still held while it was served
    assert latency < 2
    for stream, _ in stalled:
        await stream.aclose()


async def test_half_sent_request_heads_are_closed_after_the_header_timeout(
    start_hub: StartHub,
) -> None:
    timeout = 1.0
    served = await start_hub(header_timeout=timeout)
    stalled = await half_send(served, HALF_SENT)
    lifetimes: list[float] = []

    async def watch(stream: trio.SocketStream, opened: float) -> None:
        assert await closed_by_hub(stream)
        lifetimes.append(trio.current_time() - opened)

    async with trio.open_nursery() as nursery:
        for stream, opened in stalled:
            nursery.start_soon(watch, stream, opened)

    assert len(lifetimes) == HALF_SENT
    assert min(lifetimes) >= timeout * 0.9
    assert max(lifetimes) < timeout + 5
    assert len(served.hub.pending) == 0
    for stream, _ in stalled:
        await stream.aclose()


async def test_a_head_trickled_byte_by_byte_is_closed_all_the_same(start_hub: StartHub) -> None:
    timeout = 0.5
    served = await start_hub(header_timeout=timeout)
    stream = await trio.open_tcp_stream("127.0.0.1", served.addresses[0].port)
    opened = trio.current_time()
    with trio.fail_after(5):
        try:
            for byte in HEAD:
                await stream.send_all(bytes([byte]))
                await trio.sleep(0.05)
        except trio.BrokenResourceError:
            pass
    assert await closed_by_hub(stream)
    assert timeout * 0.9 <= trio.current_time() - opened < timeout + 2
    await stream.aclose()


async def test_beyond_max_pending_the_longest_waiting_are_closed_first(
    start_hub: StartHub,
) -> None:
    bound = 50
    served = await start_hub(header_timeout=30, max_pending=bound)
    stalled = await half_send(served, HALF_SENT)
    await all_waiting(served, HALF_SENT)

    latency = await healthy_latency(served)

    assert latency < 2
    assert len(served.hub.pending) <= bound
    oldest = [stream for stream, _ in stalled[: HALF_SENT - bound - 1]]
    async with trio.open_nursery() as nursery:
        closed: list[bool] = []

        async def watch(stream: trio.SocketStream) -> None:
            closed.append(await closed_by_hub(stream))

        for stream in oldest:
            nursery.start_soon(watch, stream)
    assert closed == [True] * len(oldest)
    for stream, _ in stalled:
        await stream.aclose()
