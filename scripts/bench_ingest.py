"""What publishing costs the hub: events/s through its publishing WebSocket, and the cost
of checking each published event.

Two figures, measured in the same run:

* **parse**: microseconds per event to check a message of published output events and
  build them (:func:`trio_stream.hub.ingest.parse_events`), against the baseline of
  building each through the event model's converter path
  (:func:`trio_stream.events.event_from_dict`), which the hub used before.
* **publish**: events/s from :func:`trio_stream.client.open_publisher` into a hub
  served in this process (memory store), with several messages in flight as the uplink
  keeps them. The publisher and the hub share one process, so this is a floor.
* **columns**: the same for lines of 60 bytes published as columns
  (``tstream-columns``, :func:`trio_stream.uplink.column_messages`, messages of at most
  the hub's 64 KiB), as ``tstream run --hub`` publishes them, and the hub's cost to check
  them (:func:`trio_stream.hub.ingest.parse_runs`) per line.
* **a hub of its own**: events/s from this process into a ``tstream serve`` process (its
  SQLite store and default publish limit; the per-address request limit lifted, since
  every request comes from here), through the publishing WebSocket and through ``POST
  …/events`` (one connection, each request answered before the next), as JSON events and
  as lines as columns.

Usage::

    .venv/bin/python scripts/bench_ingest.py --events 50000
    .venv/bin/python scripts/bench_ingest.py --events 1000000
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

import benchhub
import httpx
import orjson
import trio

from trio_stream.batches import EventRuns, OutputBatch
from trio_stream.client import open_publisher
from trio_stream.events import Event, event_from_dict
from trio_stream.hub.config import HubConfig, Listen
from trio_stream.hub.ingest import parse_events, parse_runs
from trio_stream.hub.server import serve_hub
from trio_stream.lines import Lines
from trio_stream.store.memory import MemoryStore
from trio_stream.uplink import column_messages

BATCH: Final = 250
WINDOW: Final = 4


def _event(n: int, ts: float) -> dict[str, Any]:
    return {
        "type": "output",
        "data": {"source": "stdout", "text": f"request {n} ok", "eol": "\n", "line": n},
        "offset": n,
        "id": f"{n:016d}",
        "ts": ts,
    }


def _messages(count: int) -> list[bytes]:
    ts = time.time()
    return [
        orjson.dumps([_event(n, ts) for n in range(first, min(count, first + BATCH))])
        for first in range(0, count, BATCH)
    ]


def parse_cost(count: int) -> tuple[float, float]:
    """Microseconds per event: the hub's parse, and the converter baseline."""
    bodies = [orjson.loads(m) for m in _messages(count)]
    start = time.perf_counter()
    for body in bodies:
        parse_events(body, "bench")
    hub = time.perf_counter() - start
    start = time.perf_counter()
    for body in bodies:
        for item in body:
            event_from_dict(item, require_placement=False)
    baseline = time.perf_counter() - start
    return hub / count * 1e6, baseline / count * 1e6


def _column_messages(count: int, size: int = 64 * 1024) -> list[list[bytes]]:
    """``count`` lines of 60 bytes as ``tstream-columns`` messages' runs, messages of at
    most ``size`` bytes."""
    ts = time.time()
    runs: list[Sequence[Event]] = []
    for first in range(0, count, 1000):
        texts = [f"{n:08d} ".ljust(59, "x") for n in range(first, min(count, first + 1000))]
        runs.append(OutputBatch("bench", first, ts, "stdout", first + 1, Lines(texts)))
    return [parts for _, parts in column_messages(EventRuns(runs), size, 10_000)]


def columns_parse_cost(count: int) -> float:
    """Microseconds per line for the hub to check a ``runs`` message's lines."""
    bodies = [
        orjson.loads(b'{"runs":[%s]}' % b",".join(m))["runs"] for m in _column_messages(count)
    ]
    start = time.perf_counter()
    for runs in bodies:
        parse_runs(runs, "bench")
    return (time.perf_counter() - start) / count * 1e6


async def publish_rate(count: int, *, columns: bool = False, hub: str | None = None) -> float:
    """Events/s published through the WebSocket into a hub in this process (or the one
    at ``hub``)."""
    if hub is not None:
        return await _publish(hub, f"ws-{columns}-{time.time_ns()}", count, columns)
    config = HubConfig(listen=(Listen(port=0),), publish_per_second=10**9)
    store = MemoryStore()
    async with trio.open_nursery() as nursery:
        served = await nursery.start(serve_hub, config, store)
        rate = await _publish(served.urls[0], "bench", count, columns)
        served.shutdown()
    await store.aclose()
    return rate


async def _publish(url: str, stream_id: str, count: int, columns: bool) -> float:
    messages: list[Any] = _column_messages(count) if columns else _messages(count)
    async with open_publisher(url, stream_id) as publisher:
        in_flight: deque[None] = deque()
        start = time.perf_counter()
        for message in messages:
            if len(in_flight) >= WINDOW:
                await publisher.receive_ack()
                in_flight.popleft()
            if columns:
                await publisher.send_runs(message)
            else:
                await publisher.send_encoded([message[1:-1]])
            in_flight.append(None)
        while in_flight:
            await publisher.receive_ack()
            in_flight.popleft()
        took = time.perf_counter() - start
    return count / took


async def rest_rate(url: str, count: int, *, columns: bool) -> float:
    """Events/s published with ``POST /api/streams/{id}/events`` by one client on one
    connection, each request answered before the next: JSON events (250 a request) or
    ``{"runs": [...]}`` of lines as columns (requests of up to 1 MiB, 10,000 lines)."""
    stream_id = f"rest-{columns}-{time.time_ns()}"
    if columns:
        bodies = [b'{"runs":[%s]}' % b",".join(m) for m in _column_messages(count, 1 << 20)]
    else:
        bodies = _messages(count)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        (await http.post("/api/streams", json={"id": stream_id})).raise_for_status()
        start = time.perf_counter()
        for body in bodies:
            answer = await http.post(
                f"/api/streams/{stream_id}/events", content=body, headers=headers
            )
            answer.raise_for_status()
        took = time.perf_counter() - start
    return count / took


async def separate_hub(count: int) -> dict[str, float]:
    """Each way of publishing into a ``tstream serve`` process of its own (a SQLite
    store, its default publish limit), from this process."""
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as root:
        async with trio.open_nursery() as nursery:
            # Every request comes from one address: the per-address request limit
            # (6,000 a minute) is lifted, not the publish limit.
            config = benchhub.lifted_limits(Path(root) / "hub.yaml")
            store = str(Path(root) / "hub.db")
            hub, url = await benchhub.start_hub(nursery, "--store", store, "--config", str(config))
            rates["WebSocket, JSON events"] = await publish_rate(count, hub=url)
            rates["WebSocket, lines as columns"] = await publish_rate(count, columns=True, hub=url)
            rates["REST, JSON events"] = await rest_rate(url, count, columns=False)
            rates["REST, lines as columns"] = await rest_rate(url, count, columns=True)
            hub.send_signal(signal.SIGINT)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    hub, baseline = parse_cost(args.events)
    print(
        f"parse: {hub:.2f} µs/event (converter path {baseline:.2f} µs/event, {baseline / hub:.1f}x)"
    )
    rate = trio.run(publish_rate, args.events)
    print(f"publish: {rate:,.0f} events/s over one WebSocket ({args.events:,} events)")
    cost = columns_parse_cost(args.events)
    rate = trio.run(partial(publish_rate, columns=True), args.events)
    print(
        f"columns: {rate:,.0f} lines/s over one WebSocket ({args.events:,} lines of 60 "
        f"bytes), {cost:.2f} µs/line to check"
    )
    print("into a tstream serve process of its own (SQLite store), from this one:")
    for way, rate in trio.run(separate_hub, args.events).items():
        print(f"  {way:30} {rate:>10,.0f} events/s")


if __name__ == "__main__":
    main()
