"""Fan-out through the hub with and without permessage-deflate.

Starts ``tstream serve`` (a separate process, so its CPU time is its own), connects N
WebSocket subscribers to one stream, publishes E log-like output events in batches, and
measures until every subscriber has received the stream's end. It runs twice: the
baseline with clients that do not offer permessage-deflate, then with clients that do.

Printed per run: wall time, events delivered per second (all clients together), the
hub's CPU seconds, bytes on the wire, and the ratios of the deflate run to the baseline.

Usage::

    .venv/bin/python scripts/bench_hub_deflate.py [--clients 200] [--events 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import benchhub
import httpx
import orjson
import trio
import wsproto
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate


async def subscriber(
    host: str, port: int, path: str, deflate: bool, ready: trio.Semaphore, totals: dict[str, Any]
) -> None:
    stream = await trio.open_tcp_stream(host, port)
    conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    extensions = [PerMessageDeflate()] if deflate else []
    await stream.send_all(conn.send(Request(host=host, target=path, extensions=extensions)))
    accepted = False
    done = False
    received = 0
    while not done:
        data = await stream.receive_some(1 << 16)
        if not data:
            break
        received += len(data)
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, AcceptConnection):
                accepted = True
                totals["negotiated"] += bool(event.extensions)
            elif isinstance(event, TextMessage) and event.message_finished:
                if event.data.startswith('{"type":"subscribed"'):
                    ready.release()
                elif event.data.startswith('{"type":"end"'):
                    done = True
            elif isinstance(event, CloseConnection):
                done = True
    assert accepted
    totals["bytes"] += received
    totals["finished"] += 1
    await stream.aclose()


async def run_once(clients: int, events: int, batch: int, deflate: bool) -> dict[str, Any]:
    config = benchhub.lifted_limits(Path(tempfile.mkdtemp()) / "config.yaml")
    async with trio.open_nursery() as nursery:
        process, url = await benchhub.start_hub(
            nursery,
            "--store",
            "memory:",
            "--max-clients-per-stream",
            str(clients + 1),
            "--max-connections",
            str(clients + 10),
            "--config",
            str(config),
        )
        host, port = url.removeprefix("http://").rsplit(":", 1)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            await http.post("/api/streams", json={"id": "bench"})
            totals = {"bytes": 0, "finished": 0, "negotiated": 0}
            ready = trio.Semaphore(0, max_value=clients)
            async with trio.open_nursery() as clients_nursery:
                for _ in range(clients):
                    clients_nursery.start_soon(
                        subscriber,
                        host,
                        int(port),
                        "/api/streams/bench/ws?after=-1",
                        deflate,
                        ready,
                        totals,
                    )
                for _ in range(clients):
                    await ready.acquire()
                cpu_before = benchhub.cpu_seconds(process.pid)
                started = time.perf_counter()
                for first in range(0, events, batch):
                    lines = [
                        {
                            "type": "output",
                            "data": {
                                "source": "stdout",
                                "line": i,
                                "text": f"2026-11-23T01:{i % 60:02d}:00Z INFO worker-{i % 8} "
                                f"processed request {i} in {i % 97} ms status=200",
                            },
                        }
                        for i in range(first, min(events, first + batch))
                    ]
                    answer = await http.post(
                        "/api/streams/bench/events",
                        content=orjson.dumps(lines),
                        headers={"Content-Type": "application/json"},
                    )
                    answer.raise_for_status()
                await http.post(
                    "/api/streams/bench/events",
                    json={"type": "session_ended", "data": {"exit_status": 0}},
                )
            elapsed = time.perf_counter() - started
            cpu = benchhub.cpu_seconds(process.pid) - cpu_before
        process.send_signal(2)
        await process.wait()
    return {
        "deflate": deflate,
        "negotiated": totals["negotiated"],
        "seconds": elapsed,
        "delivered_per_second": clients * (events + 1) / elapsed,
        "hub_cpu_seconds": cpu,
        "wire_bytes": totals["bytes"],
    }


def show(result: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    name = "deflate" if result["deflate"] else "baseline (no deflate)"
    print(f"{name}: {result['negotiated']} clients negotiated permessage-deflate")
    print(f"  wall time          {result['seconds']:8.2f} s")
    print(f"  delivered          {result['delivered_per_second']:12,.0f} events/s")
    print(f"  hub CPU            {result['hub_cpu_seconds']:8.2f} s")
    print(f"  bytes on the wire  {result['wire_bytes'] / 1e6:8.1f} MB")
    if baseline is not None:
        for key, label in (
            ("seconds", "wall time"),
            ("hub_cpu_seconds", "hub CPU"),
            ("wire_bytes", "bytes"),
        ):
            print(f"  {label} vs baseline: {result[key] / baseline[key]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    print(f"{args.clients} subscribers, {args.events} events in batches of {args.batch}")
    baseline = trio.run(run_once, args.clients, args.events, args.batch, False)
    show(baseline, None)
    deflated = trio.run(run_once, args.clients, args.events, args.batch, True)
    show(deflated, baseline)


if __name__ == "__main__":
    main()
