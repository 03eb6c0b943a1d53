"""Fan-out through a real hub: one publisher, N subscribers, latency from publish to receipt.

Starts ``tstream serve`` (SQLite store, a token, so auth is on) as its own process, creates
one stream, connects N subscribers (half WebSocket, half SSE) spread over several
subscriber processes, each reading its clients with one ``epoll`` loop, and then a publisher process
that publishes R events/s through the hub's publishing WebSocket
(:func:`trio_stream.client.open_publisher`, one message per tick with the events due,
two messages awaiting their ack at most) for S seconds and ends the stream. Every
subscriber asks for ``eventTypes=output`` (a filter that every published event passes).
With ``--protocol executor-streamer`` the subscribers ask for the Executor Streamer
design's shapes: one WebSocket message per event, an ISO 8601 ``timestamp``.

Each event carries the time it was sent in its ``ts``; a subscriber takes the difference
with the time the frame carrying it arrived. Subscribers check that offsets arrive dense
(no gap, no duplicate) and count them; the run fails unless every subscriber received
every event.

Printed: events delivered against expected, p50/p99/max latency, frames per client per
second (how much the hub coalesced), the hub's CPU (utime + stime from ``/proc``) and RSS.

Usage::

    .venv/bin/python scripts/bench_fanout.py --clients 100 --rate 1000 --duration 10
    .venv/bin/python scripts/bench_fanout.py --targets            # the three targets, 60 s each
    .venv/bin/python scripts/bench_fanout.py --soak [--soak-minutes 10]
    .venv/bin/python scripts/bench_fanout.py --protocol executor-streamer --duration 10
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import benchhub
import httpx
import trio

STREAM: Final = "bench"
# Latencies are counted in buckets of 0.1 ms.
BUCKETS_PER_SECOND: Final = 10_000
TARGETS: Final = (
    # clients, events/s, p99 bar in seconds
    (100, 1_000, 0.050),
    (100, 10_000, 0.100),
    (1_000, 1_000, 0.250),
)
PUBLISH_TICK: Final = 0.002
# Publish messages sent and not yet acknowledged, at most. Two hide the round trip; more
# only queue messages at the hub when it is the slower side (8 doubled p99 at R=10,000).
WINDOW: Final = 2
EVENT_ROOM: Final = 256
# A subscriber process gives up after this long without a byte on any connection.
SUBSCRIBER_SILENCE: Final = 120.0
# Reads of at most 64 KiB: CPython allocates the whole size for each recv, and a larger
# allocation is an mmap and munmap per read, which cost more than the read itself.
RECV_SIZE: Final = 1 << 16
# Up to this many events a frame, each stamp is read in turn; more are counted at once.
FEW_EVENTS: Final = 8


def _client_frame(payload: bytes) -> bytes:
    """A short text frame as a client sends it (masked, RFC 6455 5.3)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + mask + masked


PING: Final = _client_frame(b'{"type":"ping"}')
TS_KEY: Final = b'"ts":'
# A stamp's first 15 characters: whole seconds and four decimals, the 0.1 ms of a bucket.
TS_CHARS: Final = 15
DESIGN: Final = "executor-streamer"
# The design's ISO 8601 timestamp, to the 0.1 ms: 2026-01-01T10:00:00.1234
ISO_KEY: Final = b'"timestamp":"'
ISO_CHARS: Final = 24


def _epoch_seconds(stamp: bytes) -> float:
    # A short stamp runs into the next field: cut it at the comma.
    return float(stamp.partition(b",")[0])


@lru_cache(maxsize=1 << 16)
def _iso_seconds(stamp: bytes) -> float:
    return datetime.fromisoformat(stamp.decode().rstrip('Z"') + "+00:00").timestamp()


# -- measuring -------------------------------------------------------------------------


class Tally:
    """What one subscriber received: a count, the offsets' continuity and latencies.

    The work per frame is a few C-level scans and, per event, a stamp parsed and a
    bucket counted (a frame of many events counts its stamps' first characters at once
    instead: the events of a publisher's message share their ``ts``). The subscribers
    share the hub's two cores, and every microsecond they spend on a frame is taken from
    the hub: a regular expression per frame once made them the slower side.
    """

    def __init__(self, design: bool = False) -> None:
        self.events = 0
        self.last = -1
        self.broken = ""
        self.frames = 0
        # A plain dict: a Counter calls a Python method for each bucket not seen before.
        self.latency: dict[int, int] = {}
        self.design = design

    def frame(self, count: int, first: int, last: int, data: bytes, now: float) -> None:
        """A frame of ``count`` events, ``first`` to ``last``, whose stamps are in ``data``."""
        if not count:
            return
        self.frames += 1
        if first != self.last + 1 or last - first + 1 != count:
            self.broken = self.broken or f"offsets {first}..{last} ({count}) after {self.last}"
        self.last = last
        self.events += count
        design = self.design
        seconds = _iso_seconds if design else _epoch_seconds
        latency = self.latency
        if count > FEW_EVENTS:
            for stamp, times in stamp_counts(data, design).items():
                bucket = max(0, int((now - seconds(stamp)) * BUCKETS_PER_SECOND))
                latency[bucket] = latency.get(bucket, 0) + times
            return
        if count == 1 and not design:
            # The common case, one event: its stamp read inline.
            at = data.find(TS_KEY) + len(TS_KEY)
            stamp = float(data[at : at + TS_CHARS].partition(b",")[0])
            bucket = max(0, int((now - stamp) * BUCKETS_PER_SECOND))
            latency[bucket] = latency.get(bucket, 0) + 1
            return
        key, chars = (ISO_KEY, ISO_CHARS) if design else (TS_KEY, TS_CHARS)
        at = data.find(key)
        while at >= 0:
            at += len(key)
            bucket = max(0, int((now - seconds(data[at : at + chars])) * BUCKETS_PER_SECOND))
            latency[bucket] = latency.get(bucket, 0) + 1
            at = data.find(key, at)


def stamp_counts(data: bytes, design: bool = False) -> Counter[bytes]:
    """The events of ``data`` by the first characters of their ``ts`` (of their
    ``timestamp`` in the design's shapes)."""
    parts = data.split(ISO_KEY if design else TS_KEY)
    del parts[0]
    chars = ISO_CHARS if design else TS_CHARS
    return Counter([part[:chars] for part in parts])


def _offsets(data: bytes, key: bytes, end: bytes) -> tuple[int, int]:
    """The first and last offsets in ``data``, each following ``key`` up to ``end``."""
    start = data.index(key) + len(key)
    first = int(data[start : data.index(end, start)])
    last = data.rindex(key) + len(key)
    if last == start:
        return first, first
    return first, int(data[last : data.index(end, last)])


# -- the subscriber processes ----------------------------------------------------------


def _request(kind: str, host: str, port: int, token: str, design: bool) -> bytes:
    query = f"&protocol={DESIGN}" if design else ""
    if kind == "ws":
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            f"GET /api/streams/{STREAM}/ws?after=-1&eventTypes=output{query} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    return (
        f"GET /api/streams/{STREAM}/sse?lastEventId=-1&eventTypes=output{query} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()


class Finished(Exception):
    """The connection is done with (its end arrived, or it broke: see the tally)."""


class Subscriber:
    """One subscriber's parser: the response head, then WebSocket frames or SSE events,
    scanned from the bytes as they come. :meth:`feed` returns what to send back (a ping
    after a heartbeat) and raises :class:`Finished` at the end."""

    def __init__(self, kind: str, tally: Tally) -> None:
        self.kind = kind
        self.tally = tally
        self.buffer = b""
        self.head = True

    def feed(self, chunk: bytes, now: float) -> bytes:
        tally = self.tally
        if not chunk:
            ending = "an end frame" if self.kind == "ws" else "an end event"
            tally.broken = tally.broken or f"connection closed without {ending}"
            raise Finished
        self.buffer += chunk
        if self.head:
            if b"\r\n\r\n" not in self.buffer:
                return b""
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            if not head.startswith((b"HTTP/1.1 101", b"HTTP/1.1 200")):
                tally.broken = f"{self.kind} request refused: {head[:60]!r}"
                raise Finished
            self.head = False
        return self._frames(now) if self.kind == "ws" else self._events(now)

    def _frames(self, now: float) -> bytes:
        # The hub's frames are unmasked and never fragmented; no deflate is offered. The
        # design's messages (one per event) that arrived together are counted together.
        tally = self.tally
        design = tally.design
        buffer = self.buffer
        reply = b""
        # Frames are read at a moving position: slicing the rest of the buffer off after
        # each frame would copy it once per frame.
        at = 0
        end = len(buffer)
        # The design's event messages in a row: counted together, without a slice each.
        run: list[int] = []
        try:
            while end - at >= 2:
                size = buffer[at + 1] & 0x7F
                start = at + 2
                if size == 126:
                    size, start = int.from_bytes(buffer[at + 2 : at + 4], "big"), at + 4
                elif size == 127:
                    size, start = int.from_bytes(buffer[at + 2 : at + 10], "big"), at + 10
                if end < start + size:
                    break
                opcode = buffer[at] & 0x0F
                if design and opcode == 0x1 and buffer.startswith(b'{"type":"event"', start):
                    if not run:
                        run.append(at)
                    run.append(start + size)
                    at = start + size
                    continue
                _count(tally, buffer, run, now)
                payload = buffer[start : start + size]
                at = start + size
                if opcode == 0x8:
                    if design and payload.startswith(b"\x03\xe8stream_ended"):
                        # The design has no end message: the stream's end is the close.
                        raise Finished
                    tally.broken = tally.broken or f"closed {payload[:2].hex()} {payload[2:]!r}"
                    raise Finished
                if opcode != 0x1:
                    continue
                if payload.startswith(b'{"type":"event"'):
                    first, last = _offsets(payload, b'"offset":', b",")
                    tally.frame(payload.count(TS_KEY), first, last, payload, now)
                elif payload.startswith(b'{"type":"heartbeat"'):
                    # The hub drops a WebSocket client that stays silent after a heartbeat
                    # (a ping answers it; the hub's pong needs no answer).
                    reply = PING
                elif payload.startswith(b'{"type":"end"'):
                    raise Finished
                elif payload.startswith(b'{"type":"error"'):
                    tally.broken = tally.broken or payload.decode()
        finally:
            _count(tally, buffer, run, now)
            self.buffer = buffer[at:]
        return reply

    def _events(self, now: float) -> bytes:
        # Only whole SSE events are scanned (the chunked framing sits between them).
        tally = self.tally
        design = tally.design
        cut = self.buffer.rfind(b"\n\n")
        if cut < 0:
            return b""
        done, self.buffer = self.buffer[: cut + 2], self.buffer[cut + 2 :]
        count = done.count(b"\nevent: stream_event\n")
        if count:
            first, last = _offsets(done, b"id: ", b"\n")
            tally.frame(count, first, last, done, now)
        if b"event: end\n" in done or (design and b'"code":"STREAM_ENDED"' in done):
            raise Finished
        if b"event: error\n" in done:
            tally.broken = tally.broken or done.decode(errors="replace")[-300:]
            raise Finished
        return b""


def _count(tally: Tally, buffer: bytes, run: list[int], now: float) -> None:
    """Count the design's ``event`` messages that arrived together: ``run`` is where the
    first starts, then where each ends (emptied once counted)."""
    if run:
        data = buffer[run[0] : run[-1]]
        first, last = _offsets(data, b'"offset":', b",")
        tally.frame(len(run) - 1, first, last, data, now)
        run.clear()


def run_subscribers(
    host: str, port: int, token: str, ws: int, sse: int, design: bool, hub: int = 0
) -> None:
    """The subscribers of one process, read with one ``epoll`` loop.

    A plain readiness loop, not trio (nor :mod:`selectors`, which builds a key object per
    ready socket): the subscriber processes share the machine's cores with the hub, and
    an event loop's own cost per wake-up (thousands a second) would be taken from the
    hub being measured.
    """
    tallies = [Tally(design) for _ in range(ws + sse)]
    poller = select.epoll()
    readers: dict[int, tuple[socket.socket, Subscriber]] = {}
    for index, tally in enumerate(tallies):
        kind = "ws" if index < ws else "sse"
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(_request(kind, host, port, token, design))
        sock.setblocking(False)
        readers[sock.fileno()] = (sock, Subscriber(kind, tally))
        poller.register(sock.fileno(), select.EPOLLIN)
        if index % 50 == 49:
            # Connect in waves so the hub's accept queue never overflows.
            time.sleep(0.05)
    # One buffer received into: a recv of RECV_SIZE would allocate that much per read,
    # for frames of a few hundred bytes.
    received = bytearray(RECV_SIZE)
    view = memoryview(received)
    while readers:
        ready = poller.poll(SUBSCRIBER_SILENCE)
        if not ready:
            for _, subscriber in readers.values():
                tally = subscriber.tally
                tally.broken = tally.broken or "nothing came for a long time"
            break
        for fd, _ in ready:
            sock, subscriber = readers[fd]
            try:
                chunk = bytes(view[: sock.recv_into(received)])
            except BlockingIOError:
                continue
            except OSError as exc:
                chunk = b""
                subscriber.tally.broken = subscriber.tally.broken or f"read failed: {exc}"
            try:
                reply = subscriber.feed(chunk, time.time())
                if reply:
                    sock.sendall(reply)
            except (Finished, OSError):
                poller.unregister(fd)
                del readers[fd]
                sock.close()
    latency: Counter[int] = Counter()
    for tally in tallies:
        latency.update(tally.latency)
    report = {
        "events": [t.events for t in tallies],
        "frames": sum(t.frames for t in tallies),
        "broken": [t.broken for t in tallies if t.broken][:5],
        "latency": list(latency.items()),
        "cpu": time.process_time(),
        "hub": hub,
    }
    sys.stdout.write(json.dumps(report) + "\n")


# -- the publisher process -------------------------------------------------------------


async def run_publisher(url: str, token: str, rate: float, duration: float) -> None:
    from trio_stream.client import open_publisher
    from trio_stream.events import Event, EventType, Output, event_to_json

    sent = 0
    lag = 0.0
    async with open_publisher(url, STREAM, token=token, create=False) as publisher:
        # An event is under 256 bytes of JSON: fill messages up to the hub's limit.
        most = max(1, getattr(publisher, "max_message_size", 64 * 1024) // EVENT_ROOM)
        # Up to WINDOW messages await their ack (the hub answers in order, as the uplink
        # relies on), so the publisher does not wait a round trip per message; what falls
        # due while the window is full goes in the next tick's (larger) messages.
        slots = trio.Semaphore(WINDOW)
        sent_messages, answered = trio.open_memory_channel[None](WINDOW)

        async def read_acks() -> None:
            async with answered:
                async for _ in answered:
                    await publisher.receive_ack()
                    slots.release()

        async def send(events: list[Event]) -> None:
            await publisher.send_encoded([event_to_json(e) for e in events])
            sent_messages.send_nowait(None)

        async with trio.open_nursery() as acks:
            acks.start_soon(read_acks)
            start = trio.current_time()
            end = start + duration
            while True:
                now = trio.current_time()
                due = int(min(now - start, duration) * rate) - sent
                if due > 0:
                    # How late the oldest event of this round leaves, against the schedule.
                    lag = max(lag, now - (start + sent / rate))
                while due > 0:
                    await slots.acquire()
                    # Each message is stamped as it is sent; its events are placed at
                    # their offsets (the stream starts empty).
                    ts = time.time()
                    count = min(due, most)
                    await send(
                        [
                            Event(
                                EventType.OUTPUT,
                                Output("stdout", f"request {n} ok", line=n),
                                offset=n,
                                ts=ts,
                            )
                            for n in range(sent, sent + count)
                        ]
                    )
                    sent += count
                    due -= count
                if now >= end:
                    break
                await trio.sleep_until(min(end, trio.current_time() + PUBLISH_TICK))
            await slots.acquire()
            await send([Event(EventType.SESSION_ENDED, _ended(), offset=sent)])
            await sent_messages.aclose()
    took = trio.current_time() - start
    report = {"published": sent, "cpu": time.process_time(), "lag": lag, "took": took}
    sys.stdout.write(json.dumps(report) + "\n")


def _ended() -> Any:
    from trio_stream.events import SessionEnded

    return SessionEnded(exit_status=0)


# -- the run ---------------------------------------------------------------------------


def percentile(latency: Counter[int], fraction: float) -> float:
    """The latency (seconds) under which ``fraction`` of the events arrived."""
    total = sum(latency.values())
    if not total:
        return math.nan
    rank = fraction * total
    seen = 0
    for bucket in sorted(latency):
        seen += latency[bucket]
        if seen >= rank:
            return (bucket + 1) / BUCKETS_PER_SECOND
    return max(latency) / BUCKETS_PER_SECOND


async def start_hub(
    nursery: trio.Nursery,
    workdir: Path,
    token: str,
    clients: int,
    store: str | None = None,
    *options: str,
) -> tuple[trio.Process, str]:
    """The hub for ``clients`` subscribers, with further ``options`` of ``tstream serve``."""
    return await benchhub.start_hub(
        nursery,
        "--store",
        store or f"sqlite:{workdir / 'hub.db'}",
        "--token",
        token,
        "--max-clients-per-stream",
        str(clients + 10),
        "--max-connections",
        str(clients + 20),
        "--config",
        str(benchhub.lifted_limits(workdir / "config.yaml", publish=True)),
        *options,
    )


async def start_redis(nursery: trio.Nursery, workdir: Path) -> tuple[trio.Process, str]:
    """A redis-server of its own (no persistence) on a free port: its CPU time is measured."""
    port = benchhub.free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(workdir)]
    process: trio.Process = await nursery.start(
        lambda task_status: trio.run_process(
            command, stdout=subprocess.DEVNULL, check=False, task_status=task_status
        )
    )
    await benchhub.wait_listening(port, timeout=10)
    return process, f"redis://127.0.0.1:{port}/0"


async def _collect(command: list[str], out: list[str]) -> None:
    result = await trio.run_process(command, capture_stdout=True, check=False)
    if result.returncode:
        raise RuntimeError(f"{command[2]} process exited with {result.returncode}")
    out.append(result.stdout.decode())


async def wait_subscribed(https: list[httpx.AsyncClient], clients: int, timeout: float) -> None:
    with trio.fail_after(timeout):
        while True:
            subscribed = 0
            for http in https:
                listing = (await http.get(f"/api/streams/{STREAM}/clients")).json()
                rows = listing.get("clients", listing) if isinstance(listing, dict) else listing
                subscribed += sum(1 for row in rows if row.get("subscribed"))
            if subscribed >= clients:
                return
            await trio.sleep(0.2)


async def run_once(
    clients: int,
    rate: float,
    duration: float,
    processes: int,
    rss_every: float | None,
    profile: str | None = None,
    protocol: str = "tstream",
    store: str | None = None,
    hubs: int = 1,
) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    workdir = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    script = str(Path(__file__).resolve())
    results: dict[str, Any] = {"rss_samples": []}
    async with trio.open_nursery() as nursery:
        redis = None
        if store == "redis":
            redis, store = await start_redis(nursery, workdir)
        started_hubs = [
            await start_hub(nursery, workdir, token, clients, store) for _ in range(hubs)
        ]
        hub, url = started_hubs[0]
        auth = {"Authorization": f"Bearer {token}"}
        async with contextlib.AsyncExitStack() as stack:
            https = [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=u, headers=auth, timeout=60)
                )
                for _, u in started_hubs
            ]
            (await https[0].post("/api/streams", json={"id": STREAM})).raise_for_status()
            outputs: list[str] = []
            async with trio.open_nursery() as runs:
                share = [clients // processes + (i < clients % processes) for i in range(processes)]
                ws_left = clients // 2
                for index, count in enumerate(share):
                    ws = min(ws_left, (count + 1) // 2)
                    ws_left -= ws
                    # Subscriber processes are spread over the hubs; the publisher uses the first.
                    sub_url = started_hubs[index % hubs][1]
                    host, port = sub_url.removeprefix("http://").rsplit(":", 1)
                    command = [sys.executable, script, "--role", "subscribers"]
                    command += [host, port, token, str(ws), str(count - ws), protocol]
                    command.append(str(index % hubs))
                    runs.start_soon(_collect, command, outputs)
                await wait_subscribed(https, clients, 60 + clients / 10)
                pids = [h.pid for h, _ in started_hubs]
                cpu_before = sum(benchhub.cpu_seconds(pid) for pid in pids)
                redis_before = benchhub.cpu_seconds(redis.pid) if redis else 0.0
                rss_before = benchhub.rss_mib(hub.pid)
                started = time.perf_counter()
                command = [sys.executable, script, "--role", "publisher", url, token]
                command += [str(rate), str(duration)]
                runs.start_soon(_collect, command, outputs)
                if profile:
                    runs.start_soon(_profile, hub.pid, duration, profile)
                if rss_every:
                    runs.start_soon(_sample_rss, hub.pid, rss_every, duration, results)
            elapsed = time.perf_counter() - started
            cpu = sum(benchhub.cpu_seconds(pid) for pid in pids) - cpu_before
            redis_cpu = benchhub.cpu_seconds(redis.pid) - redis_before if redis else None
            rss_after = benchhub.rss_mib(hub.pid)
        for process, _ in started_hubs:
            process.send_signal(signal.SIGINT)
        for process, _ in started_hubs:
            await process.wait()
        if redis is not None:
            redis.terminate()
    publisher, subscribers, tallied = tally_reports(outputs, clients)
    published = publisher["published"]
    received = [n for r in subscribers for n in r["events"]]
    results.update(
        tallied,
        protocol=protocol,
        clients=clients,
        rate=rate,
        duration=duration,
        complete=sum(1 for n in received if n == published),
        frames=sum(r["frames"] for r in subscribers),
        elapsed=elapsed,
        cpu=cpu,
        publisher_lag=publisher["lag"],
        publish_took=publisher["took"],
        rss_before=rss_before,
        rss_after=rss_after,
        hubs=hubs,
        store="SQLite store" if store is None else f"store {store}",
        redis_cpu=redis_cpu,
    )
    return results


def tally_reports(
    outputs: list[str], clients: int
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """The publisher's report, the subscribers' reports, and what they add up to
    (events published, expected and delivered, broken streams, latency percentiles and the
    processes' CPU), from the JSON lines the role processes printed."""
    reports = [json.loads(line) for text in outputs for line in text.splitlines() if line]
    publisher = next(r for r in reports if "published" in r)
    subscribers = [r for r in reports if "events" in r]
    latency: Counter[int] = Counter()
    by_hub: dict[int, Counter[int]] = {}
    for report in subscribers:
        counts = {int(k): v for k, v in report["latency"]}
        latency.update(counts)
        by_hub.setdefault(report.get("hub", 0), Counter()).update(counts)
    tallied = {
        "published": publisher["published"],
        "expected": publisher["published"] * clients,
        "delivered": sum(n for r in subscribers for n in r["events"]),
        "broken": [b for r in subscribers for b in r["broken"]][:5],
        "p50": percentile(latency, 0.50),
        "p99": percentile(latency, 0.99),
        "max": max(latency) / BUCKETS_PER_SECOND if latency else math.nan,
        "client_cpu": sum(r["cpu"] for r in subscribers),
        "publisher_cpu": publisher["cpu"],
        "by_hub": {
            hub: (percentile(counts, 0.50), percentile(counts, 0.99))
            for hub, counts in sorted(by_hub.items())
        },
    }
    return publisher, subscribers, tallied


async def _profile(pid: int, duration: float, path: str) -> None:
    # py-spy is not a dependency: install it to profile (pip install py-spy).
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(duration))]
    command += ["--format", "raw", "--output", path, "--rate", "200"]
    await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)


async def _sample_rss(pid: int, every: float, duration: float, results: dict[str, Any]) -> None:
    start = trio.current_time()
    minute = 0
    while trio.current_time() - start < duration:
        await trio.sleep_until(start + (minute + 1) * every)
        minute += 1
        try:
            rss = benchhub.rss_mib(pid)
        except FileNotFoundError:
            return
        results["rss_samples"].append(rss)
        print(f"  after {minute * every:5.0f} s: hub RSS {rss:7.1f} MiB", flush=True)


def show(result: dict[str, Any], bar: float | None = None) -> bool:
    lost = result["expected"] - result["delivered"]
    ok = lost == 0 and not result["broken"]
    print(
        f"N={result['clients']} R={result['rate']:,.0f}/s for {result['duration']:g} s "
        f"({result['hubs']} hub(s) on 2 cores, {result['store']}, auth and filters on, "
        f"{result['protocol']} protocol)"
    )
    print(
        f"  delivered   {result['delivered']:,} of {result['expected']:,} "
        f"({result['published']:,} events x {result['clients']} clients; "
        f"{result['complete']} clients complete, lost {lost:,})"
    )
    for broken in result["broken"]:
        print(f"  BROKEN      {broken}")
    verdict = ""
    if bar is not None:
        passed = result["p99"] < bar
        ok = ok and passed
        verdict = f"   (bar {bar * 1000:.0f} ms: {'pass' if passed else 'FAIL'})"
    print(
        f"  latency     p50 {result['p50'] * 1000:.1f} ms, p99 {result['p99'] * 1000:.1f} ms, "
        f"max {result['max'] * 1000:.1f} ms{verdict}"
    )
    if len(result["by_hub"]) > 1:
        parts = [
            f"hub {hub + 1}{' (publisher)' if hub == 0 else ''} p50 {p50 * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms"
            for hub, (p50, p99) in result["by_hub"].items()
        ]
        print(f"  by hub      {'; '.join(parts)}")
    per_client = result["frames"] / max(1, result["clients"]) / max(result["elapsed"], 1e-9)
    print(
        f"  frames      {per_client:.0f} per client per second "
        f"({result['delivered'] / max(1, result['frames']):.1f} events each)"
    )
    print(
        f"  hub CPU     {result['cpu']:.1f} s over {result['elapsed']:.1f} s "
        f"({100 * result['cpu'] / result['elapsed']:.0f}% of one core); "
        f"subscriber processes {result['client_cpu']:.1f} s, "
        f"publisher {result['publisher_cpu']:.1f} s"
    )
    if result["redis_cpu"] is not None:
        print(f"  Redis CPU   {result['redis_cpu']:.1f} s")
    print(f"  hub RSS     {result['rss_before']:.1f} MiB before, {result['rss_after']:.1f} after")
    print(
        f"  publisher   {result['published'] / result['publish_took']:,.0f} events/s achieved, "
        f"at most {result['publisher_lag'] * 1000:.0f} ms behind its schedule"
    )
    return ok


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        role, args = sys.argv[2], sys.argv[3:]
        if role == "subscribers":
            host, port, token, ws, sse, protocol, *hub = args
            design = protocol == DESIGN
            run_subscribers(host, int(port), token, int(ws), int(sse), design, int(*hub or [0]))
        else:
            url, token, rate, duration = args
            trio.run(run_publisher, url, token, float(rate), float(duration))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="subscribers (default 100)")
    parser.add_argument("--rate", type=float, default=1000, help="events per second")
    parser.add_argument("--duration", type=float, default=60, help="seconds of publishing")
    parser.add_argument("--processes", type=int, default=4, help="subscriber processes (default 4)")
    parser.add_argument(
        "--profile", metavar="FILE", help="record the hub with py-spy (collapsed stacks)"
    )
    parser.add_argument("--targets", action="store_true", help="run the three targets in turn")
    parser.add_argument(
        "--store",
        metavar="URL",
        help="the hubs' store (default: SQLite in a temporary directory); 'redis' starts a "
        "redis-server of its own and measures its CPU too",
    )
    parser.add_argument(
        "--hubs",
        type=int,
        default=1,
        help="hub processes sharing the store (needs a Redis store when more than one); "
        "the publisher uses the first, subscriber processes are spread over them",
    )
    parser.add_argument("--soak", action="store_true", help="R=1000 for --soak-minutes")
    parser.add_argument("--soak-minutes", type=float, default=10)
    parser.add_argument(
        "--protocol",
        choices=("tstream", DESIGN),
        default="tstream",
        help="what the subscribers ask for: tstream's batches (default) or the design's shapes",
    )
    args = parser.parse_args()
    processes = max(1, min(args.processes, args.clients))
    if args.hubs > 1 and (args.store is None or not args.store.startswith("redis")):
        parser.error("--hubs above 1 needs --store redis (or a redis:// URL)")
    processes = max(processes, args.hubs)
    ok = True
    if args.targets:
        for clients, rate, bar in TARGETS:
            result = trio.run(
                run_once,
                clients,
                rate,
                args.duration,
                processes,
                None,
                None,
                args.protocol,
                args.store,
                args.hubs,
            )
            ok = show(result, bar) and ok
    elif args.soak:
        duration = args.soak_minutes * 60
        print(f"soak: N={args.clients} R=1,000/s for {args.soak_minutes:g} min; hub RSS:")
        result = trio.run(
            run_once,
            args.clients,
            1000.0,
            duration,
            processes,
            60.0,
            None,
            args.protocol,
            args.store,
            args.hubs,
        )
        ok = show(result)
        samples = result["rss_samples"]
        if samples:
            print(f"  RSS growth  {samples[-1] - samples[0]:+.1f} MiB from minute 1 to the last")
    else:
        result = trio.run(
            run_once,
            args.clients,
            args.rate,
            args.duration,
            processes,
            None,
            args.profile,
            args.protocol,
            args.store,
            args.hubs,
        )
        ok = show(result)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
