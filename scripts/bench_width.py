"""Width: many idle clients on one hub, what each costs it, and a stream fanned out to them.

Starts ``tstream serve`` (SQLite store, a token, so auth is on) as its own process with
its connection limits raised, creates one stream and connects N subscribers (half
WebSocket, half SSE, or all of one with ``--transport``) spread over several subscriber
processes (those of ``bench_fanout.py``: raw sockets, a few KiB each), started one after
the other. Once every client is subscribed and
the hub has settled, the hub's resident memory is read again: the growth over N is what
an idle client costs it. With ``--rate``, a publisher process then publishes R events/s
for D seconds; each subscriber checks that offsets arrive dense and takes each event's
latency from the time stamped in it. Without, the stream is ended at once.

Every process raises its open-files limit (``RLIMIT_NOFILE``) to its hard limit; the hub
inherits ours. The subscriber processes share the machine's cores with the hub: the CPU
each side used is printed, and a run where the hub fell behind (p99 over 250 ms) without
a core of its own says that the machine, rather than the hub, was the limit.

With ``--floor``, the same number of idle connections (the same transports) is first made
to Hypercorn alone, serving a trivial ASGI app in a process of its own (a WebSocket that is
accepted and then only waits; an SSE response whose head is sent and then only waits): the
least any application served by Hypercorn's trio worker costs a connection, against which
the hub's figure is compared.

Usage::

    .venv/bin/python scripts/bench_width.py --clients 1000
    .venv/bin/python scripts/bench_width.py --clients 10000 --floor
    .venv/bin/python scripts/bench_width.py --clients 10000 --processes 8 --rate 10 --duration 30
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, Final

import bench_fanout
import benchhub
import httpx
import trio

STREAM: Final = bench_fanout.STREAM
# The target's p99 latency at 10,000 clients x 10 events/s, in seconds.
P99_BAR: Final = 0.250


def raise_open_files(wanted: int | None = None) -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to ``wanted`` (its hard limit when
    None, or when ``wanted`` is above it); return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = (
        hard if wanted is None or (hard != resource.RLIM_INFINITY and wanted > hard) else wanted
    )
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


async def trivial_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor's ASGI app: accept and wait; for HTTP, an SSE head and then nothing."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    await receive()
    head = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": b": idle\n\n", "more_body": True})
    await trio.sleep_forever()


def floor_server(port: int) -> None:
    """The floor's server: Hypercorn's trio worker, as the hub configures it, serving
    :func:`trivial_app` on ``port`` until interrupted."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.backlog = 4096
    config.accesslog = None
    config.loglevel = "WARNING"
    config.keep_alive_timeout = 600
    config.include_server_header = False

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(serve, trivial_app, config))
                sys.stdout.write("ready\n")
                sys.stdout.flush()
                async for _ in signals:
                    nursery.cancel_scope.cancel()

    trio.run(main)


async def _idle_connections(port: int, websockets: int, sse: int, keep: trio.Event) -> None:
    """Open idle connections to the floor's server (their heads answered) and hold them
    until ``keep`` is set; a few at a time, so that the accept queue never overflows."""
    held: list[trio.SocketStream] = []
    limit = trio.Semaphore(64)

    async def one(kind: str) -> None:
        async with limit:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            # The subscribers' own request heads, which the server keeps as the hub does.
            await stream.send_all(bench_fanout._request(kind, "127.0.0.1", port, "floor", False))
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some(4096)
            expected = b"HTTP/1.1 101" if kind == "ws" else b"HTTP/1.1 200"
            if not answer.startswith(expected):
                raise SystemExit(f"the floor's server answered {answer[:40]!r}")
            held.append(stream)

    try:
        async with trio.open_nursery() as nursery:
            for kind in ["ws"] * websockets + ["sse"] * sse:
                nursery.start_soon(one, kind)
        await keep.wait()
    finally:
        for stream in held:
            await stream.aclose()


async def floor(clients: int, websockets: int, settle: float) -> dict[str, float]:
    """The RSS growth of Hypercorn alone over ``clients`` idle connections."""
    port = benchhub.free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--role", "floor", str(port)]
    server = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        with trio.fail_after(30):
            ready = b""
            while b"ready" not in ready:
                chunk = await server.stdout.receive_some(100)
                if not chunk:
                    raise SystemExit("the floor's server did not start")
                ready += chunk
        await trio.sleep(settle)
        empty = benchhub.rss_mib(server.pid)
        keep = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_idle_connections, port, websockets, clients - websockets, keep)
            while len(_established(server.pid)) < clients:
                await trio.sleep(0.5)
            await trio.sleep(settle)
            idle = benchhub.rss_mib(server.pid)
            keep.set()
    finally:
        server.send_signal(signal.SIGINT)
        with trio.move_on_after(10):
            await server.wait()
        if server.returncode is None:
            server.kill()
    return {"floor_empty": empty, "floor_idle": idle}


def _established(pid: int) -> list[str]:
    """The descriptors of ``pid`` that are sockets (its listener among them)."""
    fds = Path(f"/proc/{pid}/fd")
    found = []
    for fd in fds.iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                found.append(fd.name)
        except OSError:
            continue
    return found


async def _subscribers(
    nursery: trio.Nursery,
    http: httpx.AsyncClient,
    url: str,
    token: str,
    clients: int,
    processes: int,
    websockets: int,
    outputs: list[str],
) -> None:
    """Start the subscriber processes (``bench_fanout``'s role, under our limits) one
    after the other, each once the clients of the previous ones are subscribed: all at
    once, their connections overflow the hub's accept queue, and the kernel resets some."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    script = str(Path(__file__).resolve())
    share = [clients // processes + (i < clients % processes) for i in range(processes)]
    ws_left = websockets
    started = 0
    for count in share:
        # This process's share of the WebSocket clients, rounded up.
        ws = min(ws_left, -(-count * websockets // clients))
        ws_left -= ws
        command = [sys.executable, script, "--role", "subscribers"]
        command += [host, port, token, str(ws), str(count - ws), "tstream"]
        nursery.start_soon(bench_fanout._collect, command, outputs)
        started += count
        await _connected(http, started, 60 + count / 10)


async def _connected(http: httpx.AsyncClient, clients: int, timeout: float) -> None:
    """Wait until the stream has ``clients`` clients (its description counts them: a
    listing of thousands of clients, asked for again and again, would load the hub)."""
    with trio.fail_after(timeout):
        while (await http.get(f"/api/streams/{STREAM}")).json()["clients"] < clients:
            await trio.sleep(0.5)


async def _subscribed(http: httpx.AsyncClient) -> Counter[str]:
    listing = (await http.get(f"/api/streams/{STREAM}/clients")).json()
    rows = listing.get("clients", listing) if isinstance(listing, dict) else listing
    return Counter(row["transport"] for row in rows if row.get("subscribed"))


async def run(
    clients: int,
    processes: int,
    rate: float,
    duration: float,
    settle: float,
    transport: str = "both",
    with_floor: bool = False,
) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    workdir = Path(tempfile.mkdtemp(prefix="bench-width-"))
    script = str(Path(__file__).resolve())
    outputs: list[str] = []
    result: dict[str, Any] = {"clients": clients, "rate": rate, "duration": duration}
    websockets = {"both": clients // 2, "websocket": clients, "sse": 0}[transport]
    if with_floor:
        result.update(await floor(clients, websockets, settle))
    async with trio.open_nursery() as nursery:
        # Thousands of clients connecting at once wait for their request head to be
        # read: the hub must neither drop the longest waiting nor time them out.
        pending = ("--max-pending", str(clients + 10), "--header-timeout", "10m")
        hub, url = await bench_fanout.start_hub(nursery, workdir, token, clients, None, *pending)
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=120) as http:
            (await http.post("/api/streams", json={"id": STREAM})).raise_for_status()
            await trio.sleep(settle)
            result["rss_empty"] = benchhub.rss_mib(hub.pid)
            async with trio.open_nursery() as runs:
                started = time.perf_counter()
                await _subscribers(runs, http, url, token, clients, processes, websockets, outputs)
                await bench_fanout.wait_subscribed([http], clients, 60)
                result["connect_seconds"] = time.perf_counter() - started
                result["transports"] = dict(await _subscribed(http))
                await trio.sleep(settle)
                result["rss_idle"] = benchhub.rss_mib(hub.pid)
                cpu_before = benchhub.cpu_seconds(hub.pid)
                started = time.perf_counter()
                command = [sys.executable, script, "--role", "publisher", url, token]
                command += [str(rate), str(duration if rate else 0)]
                runs.start_soon(bench_fanout._collect, command, outputs)
            result["elapsed"] = time.perf_counter() - started
            result["cpu"] = benchhub.cpu_seconds(hub.pid) - cpu_before
            result["rss_after"] = benchhub.rss_mib(hub.pid)
        hub.send_signal(signal.SIGINT)
        await hub.wait()
    result.update(bench_fanout.tally_reports(outputs, clients)[2])
    return result


def show(result: dict[str, Any]) -> bool:
    clients = result["clients"]
    grown = result["rss_idle"] - result["rss_empty"]
    transports = ", ".join(f"{n} {kind}" for kind, n in sorted(result["transports"].items()))
    print(
        f"N={clients} idle clients ({transports}) on one hub, connected in "
        f"{result['connect_seconds']:.1f} s"
    )
    print(
        f"  hub RSS     {result['rss_empty']:.1f} MiB with no client, {result['rss_idle']:.1f} "
        f"with them: {grown * 1024 / clients:.1f} KiB per client"
    )
    if "floor_idle" in result:
        floor_grown = result["floor_idle"] - result["floor_empty"]
        print(
            f"  Hypercorn alone, trivial ASGI app, the same connections: "
            f"{floor_grown * 1024 / clients:.1f} KiB per client "
            f"({result['floor_empty']:.1f} MiB with none, {result['floor_idle']:.1f} with "
            f"them); the hub's own share {(grown - floor_grown) * 1024 / clients:.1f} KiB"
        )
    lost = result["expected"] - result["delivered"]
    ok = lost == 0 and not result["broken"]
    for broken in result["broken"]:
        print(f"  BROKEN      {broken}")
    if not result["rate"]:
        return ok
    elapsed = max(result["elapsed"], 1e-9)
    cores = os.cpu_count() or 1
    print(f"R={result['rate']:,.0f} events/s for {result['duration']:g} s to all of them")
    print(
        f"  delivered   {result['delivered']:,} of {result['expected']:,} "
        f"({result['published']:,} events x {clients} clients; lost {lost:,})"
    )
    print(
        f"  latency     p50 {result['p50'] * 1000:.1f} ms, p99 {result['p99'] * 1000:.1f} ms, "
        f"max {result['max'] * 1000:.1f} ms (bar {P99_BAR * 1000:.0f} ms)"
    )
    print(
        f"  CPU         hub {result['cpu']:.1f} s over {elapsed:.1f} s "
        f"({100 * result['cpu'] / elapsed:.0f}% of one core); subscriber processes "
        f"{result['client_cpu']:.1f} s in all, publisher {result['publisher_cpu']:.1f} s "
        f"({cores} cores)"
    )
    print(f"  hub RSS     {result['rss_after']:.1f} MiB at the end")
    load = os.getloadavg()[0]
    busy = (result["cpu"] + result["client_cpu"] + result["publisher_cpu"]) / elapsed
    # The hub fell behind (p99 over the bar) without a core of its own: the cores were
    # busy with the run's other processes or other work.
    behind = result["p99"] > P99_BAR
    if behind and result["cpu"] / elapsed < 0.95 and max(busy, load) > 0.9 * cores:
        print(
            f"  the machine is the limit: the hub had {result['cpu'] / elapsed:.2f} of a core, "
            f"every process of the run {busy:.2f}, load average {load:.1f} on {cores} cores"
        )
    return ok


def main() -> None:
    raise_open_files()
    if len(sys.argv) > 2 and sys.argv[1:3] == ["--role", "floor"]:
        floor_server(int(sys.argv[3]))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        # A subscriber or publisher process: bench_fanout's, under our raised limit.
        bench_fanout.main()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="idle clients (default 1000)")
    parser.add_argument("--processes", type=int, default=4, help="subscriber processes (default 4)")
    parser.add_argument(
        "--rate", type=float, default=0, help="events per second afterwards (default: none)"
    )
    parser.add_argument("--duration", type=float, default=30, help="seconds of publishing")
    parser.add_argument(
        "--transport",
        choices=("both", "websocket", "sse"),
        default="both",
        help="the clients' transport (default: half WebSocket, half SSE)",
    )
    parser.add_argument(
        "--settle", type=float, default=3, help="seconds to wait before reading the RSS"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="first measure Hypercorn alone (a trivial ASGI app) with the same connections",
    )
    args = parser.parse_args()
    soft = raise_open_files()
    per_process = math.ceil(args.clients / max(1, args.processes))
    if soft != resource.RLIM_INFINITY and (args.clients + 100 > soft or per_process + 100 > soft):
        parser.error(f"open files limited to {soft}: too few for {args.clients} clients")
    gc.collect()
    result = trio.run(
        run,
        args.clients,
        max(1, args.processes),
        args.rate,
        args.duration,
        args.settle,
        args.transport,
        args.floor,
    )
    sys.exit(0 if show(result) else 1)


if __name__ == "__main__":
    main()
