"""Benchmark of the Redis store: append throughput into one session, and memory in Redis.

Prints:

* append throughput from one publisher into one session through the recorder (what a hub
  does with a stream's log), batched as the recorder batches, into Redis and, for
  comparison, into SQLite in a temporary file: lines read together (columns, as
  ``tstream run`` records them) and single events (as a publisher's JSON events arrive).
  Target: at least 100,000 events/s into Redis;
* the store alone taking single events built beforehand (what the recorder costs when
  the events exist already);
* Redis's memory (``used_memory``) per 1,000,000 output events, and per event;
* reading the session back from Redis (events/s) and an offset query near its end.

Without ``--url`` the script starts a ``redis-server`` of its own (no persistence) in a
temporary directory, and stops it at the end.

Usage: ``python scripts/bench_redis.py [--events N] [--url redis://HOST:PORT/DB]``
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import trio

from trio_stream.batches import OutputBatch
from trio_stream.events import output_event
from trio_stream.lines import Line, Lines
from trio_stream.log import SessionLog
from trio_stream.store import HistoryQuery, SessionInfo, Store, open_store
from trio_stream.store.recorder import record

BATCH = 1000  # lines per publisher batch, as a pipe read of ~64 KiB of short lines gives
TEXTS = [f"line {n:08d} of the benchmark output, some typical width" for n in range(BATCH)]


async def publish(store: Store, session_id: str, events: int, *, columns: bool) -> float:
    """Seconds to append ``events`` lines to a log and have the recorder store them."""
    await store.create_session(SessionInfo(session_id, command=["bench"]))
    log = SessionLog(session_id, history=BATCH)
    lines = Lines(TEXTS)
    single = [Line(text) for text in TEXTS]
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record, store, log)
        done = 0
        while done < events:
            count = min(BATCH, events - done)
            now = time.time()
            if columns:
                part = lines if count == BATCH else lines.part(0, count)
                log.append_batch(
                    OutputBatch(session_id, log.next_offset, now, "stdout", done, part)
                )
            else:
                log.append(
                    [
                        output_event(session_id, -1, done + i, "stdout", single[i], now)
                        for i in range(count)
                    ]
                )
            done += count
            await log.wait_recorded_room()
            await trio.sleep(0)
        log.close()
    return time.perf_counter() - start


async def append_built(store: Store, session_id: str, events: int) -> float:
    """Seconds for the store alone to take ``events`` single events built beforehand, in
    batches of 5,000 (what a recorder flush holds at this rate)."""
    await store.create_session(SessionInfo(session_id, command=["bench"]))
    built = [
        output_event(session_id, n, n, "stdout", Line(TEXTS[n % BATCH]), time.time())
        for n in range(events)
    ]
    start = time.perf_counter()
    for first in range(0, events, 5000):
        await store.append(session_id, built[first : first + 5000])
    return time.perf_counter() - start


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server without persistence on a Unix socket in ``directory``."""
    sock = directory / "redis.sock"
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert server.stdout is not None
    for line in server.stdout:
        if b"eady to accept connections" in line:
            break
    else:
        raise SystemExit("redis-server did not start")
    return server, f"unix://{sock}"


def report(name: str, value: float, unit: str) -> None:
    print(f"{name:<58} {value:>14,.1f} {unit}")


async def bench(url: str, events: int, directory: Path) -> None:
    async with open_store(url) as store:
        memory_usage = store.memory_usage  # type: ignore[attr-defined]
        for columns in (True, False):
            kind = "lines (columns)" if columns else "single events"
            sid = f"bench-{'columns' if columns else 'events'}-{os.getpid()}"
            before = await memory_usage()
            elapsed = await publish(store, sid, events, columns=columns)
            used = await memory_usage() - before
            report(f"append into Redis, {kind}", events / elapsed, "events/s")
            report(f"Redis memory per 1,000,000 events, {kind}", used / events * 1e6 / 2**20, "MiB")
            report(f"Redis memory per event, {kind}", used / events, "bytes")
            if columns:
                start = time.perf_counter()
                total = 0
                after = -1
                while True:
                    rows = await store.read_rows(sid, after=after, limit=10_000)  # type: ignore[attr-defined]
                    if not rows:
                        break
                    total += len(rows)
                    after = rows[-1].offset
                report(
                    "read back from Redis (rows)", total / (time.perf_counter() - start), "events/s"
                )
                start = time.perf_counter()
                for _ in range(100):
                    await store.read(sid, HistoryQuery(after=events - 20, limit=10))
                report("offset query near the end", (time.perf_counter() - start) * 10, "ms")
            await store.destroy_session(sid)
        built = min(events, 200_000)
        elapsed = await append_built(store, f"bench-built-{os.getpid()}", built)
        report("store.append of single events built beforehand", built / elapsed, "events/s")
        await store.destroy_session(f"bench-built-{os.getpid()}")
    async with open_store(f"sqlite:{directory / 'bench.db'}") as sqlite:
        for columns in (True, False):
            kind = "lines (columns)" if columns else "single events"
            elapsed = await publish(sqlite, f"bench-{columns}", events, columns=columns)
            report(f"append into SQLite, {kind}, for comparison", events / elapsed, "events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--url", help="a Redis store URL (default: a redis-server of its own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        server = None
        url = args.url
        if url is None:
            server, url = start_redis(Path(tmp))
        try:
            trio.run(bench, url, args.events, Path(tmp))
        finally:
            if server is not None:
                server.send_signal(signal.SIGTERM)
                server.wait()


if __name__ == "__main__":
    main()
