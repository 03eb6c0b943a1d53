"""Following a session: ``tstream attach`` against websocketd streaming the same lines.

Generates its own input (1,000,000 lines of 20 to 150 bytes, fixed seed) and measures, in
the same run, lines per second delivered to one client:

* baseline: Debian's ``websocketd`` (``websocketd --port P cat FILE``) streaming the file,
  one WebSocket message per line, to one Python WebSocket client (trio-websocket) in a
  process of its own that counts the lines;
* ``tstream attach`` following a running ``tstream run`` session of those lines (served on
  its private Unix socket), its output counted as it arrives: once with the lines already
  in the session (the history, then live), once started with the session (following it
  live while it captures, so bounded by the capture rate).

Each figure is the best of R runs (``--repeat``), timed from the client's start to its
last line. Target: ``tstream attach`` at 10 times websocketd's lines per second or more.

Usage: ``python scripts/bench_attach.py [--lines N] [--repeat R]`` (needs ``websocketd``:
``apt-get install websocketd``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

# The same input as the capture benchmark (run from scripts/, which is on sys.path).
from bench_capture import generate

TSTREAM = [sys.executable, "-c", "from trio_stream.cli import main; main()"]

WS_CLIENT = r"""
import sys, time, trio
from trio_websocket import open_websocket_url

async def main(url, count):
    seen = 0
    async with open_websocket_url(url, max_message_size=1 << 24) as ws:
        while seen < count:
            message = await ws.get_message()
            seen += message.count("\n") or 1
    print(seen)

trio.run(main, sys.argv[1], int(sys.argv[2]))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_listening(port: int) -> None:
    with trio.fail_after(10):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


async def websocketd_rate(data: Path, count: int) -> float:
    """Lines per second from websocketd to one WebSocket client process."""
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
        done = await trio.run_process(
            [sys.executable, "-c", WS_CLIENT, f"ws://127.0.0.1:{port}/", str(count)],
            capture_stdout=True,
        )
        elapsed = time.perf_counter() - started
        assert int(done.stdout) == count, done.stdout
    finally:
        server.terminate()
        await server.wait()
    return count / elapsed


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
        best = {"websocketd": 0.0, "history": 0.0, "live": 0.0}
        for _ in range(repeat):
            best["websocketd"] = max(best["websocketd"], await websocketd_rate(data, lines))
            best["history"] = max(
                best["history"], await attach_rate(data, lines, history=True, env=env)
            )
            best["live"] = max(best["live"], await attach_rate(data, lines, history=False, env=env))
        base = best["websocketd"]
        rows = [
            ("websocketd cat FILE, one WebSocket client (baseline)", base),
            ("tstream attach, session already holding the lines", best["history"]),
            ("tstream attach, started with the session (live)", best["live"]),
        ]
        for label, rate in rows:
            print(f"{label:<55} {rate:>11,.0f} lines/s  {rate / base:6.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    trio.run(main, options.lines, options.repeat)
