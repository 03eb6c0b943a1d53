"""Following a session: ``tstream attach`` against websocketd streaming the same lines.

Generates its own input (1,000,000 lines of 20 to 150 bytes, fixed seed) and measures, in
the same run, lines per second delivered to one client:

* baseline: Debian's ``websocketd`` (``websocketd --port P cat FILE``) streaming the file,
  one WebSocket message per line, to a raw socket reader in a process of its own that
  parses the frames and counts them. The reader is not the bottleneck: its CPU time is
  printed beside the figure (a fraction of the wall time; websocketd's own process is the
  limit). For comparison, the same with a trio-websocket client, which is the bottleneck
  there (it counts a fifth of what websocketd sends);
* ``tstream attach`` following a running ``tstream run`` session of those lines (served on
  its private Unix socket), its output counted as it arrives: once with the lines already
  in the session (the history, then live), once started with the session (following it
  live while it captures, so bounded by the capture rate);
* ``tstream attach --hub URL`` of the ended session through a ``tstream serve`` on the
  same store, as text and with ``--json``.

Each figure is the best of R runs (``--repeat``), timed from the client's start to its
last line. Targets: ``tstream attach`` of a local session at 10 times websocketd's lines
per second, through a hub at 5 times.

Usage: ``python scripts/bench_attach.py [--lines N] [--repeat R]`` (needs ``websocketd``:
``apt-get install websocketd``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchhub
import trio

# The same input as the capture benchmark (run from scripts/, which is on sys.path).
from bench_capture import generate

TSTREAM = [sys.executable, "-c", "from trio_stream.cli import main; main()"]

WS_CLIENT = r"""
import resource, sys, time, trio
from trio_websocket import open_websocket_url

async def main(url, count):
    seen = 0
    async with open_websocket_url(url, max_message_size=1 << 24) as ws:
        while seen < count:
            message = await ws.get_message()
            seen += message.count("\n") or 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(seen, usage.ru_utime + usage.ru_stime)

trio.run(main, sys.argv[1], int(sys.argv[2]))
"""


RAW_CLIENT = r"""
import base64, os, resource, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = socket.create_connection((host, port))
key = base64.b64encode(os.urandom(16)).decode()
sock.sendall(
    f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
)
data = b""
while b"\r\n\r\n" not in data:
    data += sock.recv(65536)
head, _, data = data.partition(b"\r\n\r\n")
assert b" 101 " in head.split(b"\r\n")[0], head
seen = 0
pos = 0
end = len(data)
recv = sock.recv
while seen < count:
    # One frame: 2 bytes, then 2 or 8 bytes of length for long ones (servers do not mask).
    if end - pos >= 2:
        second = data[pos + 1] & 0x7F
        if second < 126:
            size = 2 + second
        elif second == 126:
            size = 4 + int.from_bytes(data[pos + 2 : pos + 4], "big") if end - pos >= 4 else -1
        else:
            size = 10 + int.from_bytes(data[pos + 2 : pos + 10], "big") if end - pos >= 10 else -1
        if size >= 0 and end - pos >= size:
            opcode = data[pos] & 0x0F
            if opcode == 8:
                break
            if opcode in (1, 2):
                seen += 1
            pos += size
            continue
    chunk = recv(1 << 20)
    if not chunk:
        break
    data = data[pos:] + chunk
    pos = 0
    end = len(data)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(seen, usage.ru_utime + usage.ru_stime)
"""


free_port = benchhub.free_port
wait_listening = benchhub.wait_listening


async def websocketd_rate(data: Path, count: int, *, raw: bool) -> tuple[float, float]:
    """Lines per second from websocketd to one client process (a raw frame reader, or a
    trio-websocket client), and the client's CPU seconds per wall second."""
    port = free_port()
    server = await trio.lowlevel.open_process(
        [
            "websocketd",
            f"--port={port}",
            "--address=127.0.0.1",
            "--loglevel=error",
            "cat",
            str(data),
        ],
    )
    try:
        await wait_listening(port)
        started = time.perf_counter()
        if raw:
            args = [RAW_CLIENT, "127.0.0.1", str(port), str(count)]
        else:
            args = [WS_CLIENT, f"ws://127.0.0.1:{port}/", str(count)]
        done = await trio.run_process([sys.executable, "-c", *args], capture_stdout=True)
        elapsed = time.perf_counter() - started
        seen, *cpu = done.stdout.split()
        assert int(seen) == count, done.stdout
    finally:
        server.terminate()
        await server.wait()
    return count / elapsed, (float(cpu[0]) / elapsed if cpu else float("nan"))


async def count_lines(stream: trio.abc.ReceiveStream, count: int) -> None:
    seen = 0
    while seen < count:
        chunk = await stream.receive_some(1 << 20)
        assert chunk, f"attach stopped after {seen} lines"
        seen += chunk.count(b"\n")


async def attach_rate(data: Path, count: int, *, history: bool, env: dict[str, str]) -> float:
    """Lines per second from ``tstream attach`` following a ``tstream run`` of the file."""
    from trio_stream.store import open_store

    session = f"bench-{time.monotonic_ns()}"
    run = await trio.lowlevel.open_process(
        [*TSTREAM, "run", "--quiet", "--id", session, "--", "sh", "-c", f"cat {data}; read x"],
        stdin=subprocess.PIPE,
        env=env,
    )
    runtime = Path(env["XDG_RUNTIME_DIR"]) / "tstream"
    try:
        with trio.fail_after(120):
            # The session serves itself once registered; with history, also once recorded.
            while not any(p.suffix == ".json" for p in runtime.glob("*.json")):
                await trio.sleep(0.05)
            if history:
                async with open_store(env["TSTREAM_STORE"]) as store:
                    while await store.last_offset(session) < count:
                        await trio.sleep(0.1)
        started = time.perf_counter()
        attach = await trio.lowlevel.open_process(
            [*TSTREAM, "attach", session], stdout=subprocess.PIPE, env=env
        )
        assert attach.stdout is not None
        with trio.fail_after(600):
            await count_lines(attach.stdout, count)
        elapsed = time.perf_counter() - started
        assert run.stdin is not None
        await run.stdin.aclose()
        await attach.wait()
    finally:
        run.kill()
        await run.wait()
    return count / elapsed


async def hub_rate(data: Path, count: int, env: dict[str, str], *, as_json: bool) -> float:
    """Lines per second from ``tstream attach --hub`` of an ended session of the file,
    through a ``tstream serve`` on the run's store."""
    session = f"bench-hub-{time.monotonic_ns()}"
    await trio.run_process(
        [*TSTREAM, "run", "--quiet", "--id", session, "--", "cat", str(data)], env=env
    )
    port = free_port()
    hub = await trio.lowlevel.open_process(
        [
            *TSTREAM,
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--store",
            env["TSTREAM_STORE"],
            # A million lines and the session's own events: none trimmed.
            "--max-events",
            "0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_listening(port)
        started = time.perf_counter()
        args = ["--json"] if as_json else []
        attach = await trio.lowlevel.open_process(
            [*TSTREAM, "attach", "--hub", f"http://127.0.0.1:{port}", session, *args],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert attach.stdout is not None
        # --json also prints session_started and session_ended.
        with trio.fail_after(600):
            await count_lines(attach.stdout, count + (2 if as_json else 0))
        elapsed = time.perf_counter() - started
        await attach.wait()
    finally:
        hub.terminate()
        await hub.wait()
    return count / elapsed


async def main(lines: int, repeat: int) -> None:
    if shutil.which("websocketd") is None:
        sys.exit("websocketd is needed: apt-get install websocketd")
    with tempfile.TemporaryDirectory(prefix="bench-attach-") as tmp:
        root = Path(tmp)
        data = root / "lines.txt"
        size = generate(data, lines)
        runtime = root / "run"
        runtime.mkdir(mode=0o700)
        env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(runtime),
            "TSTREAM_STORE": str(root / "tstream.db"),
        }
        print(f"{lines:,} lines, {size / 1e6:.0f} MB; best of {repeat} runs")
        best = dict.fromkeys(("raw", "trio-websocket", "history", "live", "hub", "hub-json"), 0.0)
        reader_cpu = {"raw": 0.0, "trio-websocket": 0.0}
        for _ in range(repeat):
            for kind in ("raw", "trio-websocket"):
                rate, cpu = await websocketd_rate(data, lines, raw=kind == "raw")
                if rate > best[kind]:
                    best[kind], reader_cpu[kind] = rate, cpu
            best["history"] = max(
                best["history"], await attach_rate(data, lines, history=True, env=env)
            )
            best["live"] = max(best["live"], await attach_rate(data, lines, history=False, env=env))
            best["hub"] = max(best["hub"], await hub_rate(data, lines, env, as_json=False))
            best["hub-json"] = max(best["hub-json"], await hub_rate(data, lines, env, as_json=True))
        base = best["raw"]
        rows = [
            ("websocketd cat FILE, raw frame reader (baseline)", base),
            ("websocketd cat FILE, trio-websocket client", best["trio-websocket"]),
            ("tstream attach, session already holding the lines", best["history"]),
            ("tstream attach, started with the session (live)", best["live"]),
            ("tstream attach --hub, ended session", best["hub"]),
            ("tstream attach --hub --json, ended session", best["hub-json"]),
        ]
        for label, rate in rows:
            print(f"{label:<55} {rate:>11,.0f} lines/s  {rate / base:6.1f}x")
        for kind, cpu in reader_cpu.items():
            print(f"websocketd's {kind} client used {cpu:.0%} of a core while reading")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    trio.run(main, options.lines, options.repeat)
