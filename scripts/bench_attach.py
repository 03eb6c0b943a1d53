"""Following a session: ``tstream attach`` against websocketd streaming the same lines.

Generates its own input (1,000,000 lines of 20 to 150 bytes, fixed seed) and measures, in
the same run, lines per second delivered to one client:

* baseline: Debian's ``websocketd`` (``websocketd --port P cat FILE``) streaming the file,
  one WebSocket message per line, to a client in a process of its own, at its best of two
  clients: one that only receives into a buffer of the size the frames will take (8 MiB
  of socket buffer, a pause of 2 ms after a short read so that it wakes for many frames at
  a time) and counts and checks the frames once they are all in, so it does nothing per
  frame while websocketd sends; and a raw frame reader that parses each frame's header as
  it comes. Their CPU is printed beside the figures: the first uses a few per cent of a
  core, so websocketd itself is the limit. For comparison, the same with a trio-websocket
  client, which is the bottleneck there (it counts a fourth of what websocketd sends);
* ``tstream attach`` following a running ``tstream run`` session of those lines (served on
  its private Unix socket), its output counted as it arrives: once with the lines already
  in the session (the history, then live), once started with the session (following it
  live while it captures, so bounded by the capture rate);
* ``tstream attach --hub URL`` of the ended session through a ``tstream serve`` on the
  same store, as text and with ``--json``.

Each figure is the best of R runs (``--repeat``), timed from the client's start to its
last line; tstream's output is read as ``wc -l`` would (blocking reads of 1 MiB from a
pipe of 1 MiB, in a thread). Targets: ``tstream attach`` of a local session at 10 times
websocketd's lines per second, through a hub at 5 times.

Usage: ``python scripts/bench_attach.py [--lines N] [--repeat R]`` (needs ``websocketd``:
``apt-get install websocketd``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
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


# A client's opening handshake with websocketd on ``sock`` (connected to host:port), the
# bytes after the answer's head left in ``data``.
HANDSHAKE = r"""
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
"""

RAW_CLIENT = (
    r"""
import base64, os, resource, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = socket.create_connection((host, port))
"""
    + HANDSHAKE
    + r"""
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
)


# The frames only counted once they are all in: while it reads, this client does nothing
# per frame (``recv_into`` a buffer of the known size), so it cannot be what limits
# websocketd. It then checks that it got exactly the frames expected.
COUNTING_CLIENT = (
    r"""
import base64, os, resource, socket, sys, time
host, port, total, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
sock.connect((host, port))
"""
    + HANDSHAKE
    + r"""
buf = bytearray(max(total, len(data)))
view = memoryview(buf)
have = len(data)
buf[:have] = data
while have < total:
    got = sock.recv_into(view[have:])
    if not got:
        break
    have += got
    if got < 65536:
        # Let the socket's buffer fill rather than wake for every few frames.
        time.sleep(0.002)
ended = time.time()
usage = resource.getrusage(resource.RUSAGE_SELF)
seen = pos = 0
while pos < have:
    second = buf[pos + 1] & 0x7F
    if second < 126:
        pos += 2 + second
    elif second == 126:
        pos += 4 + int.from_bytes(buf[pos + 2 : pos + 4], "big")
    else:
        pos += 10 + int.from_bytes(buf[pos + 2 : pos + 10], "big")
    seen += 1
assert pos == have == total, (pos, have, total)
print(seen, usage.ru_utime + usage.ru_stime, ended)
"""
)


def frame_bytes(data: Path) -> int:
    """The bytes of websocketd's frames for the lines of ``data``: a text message per
    line, without its newline, as a server sends it (unmasked)."""
    total = 0
    with data.open("rb") as file:
        for line in file:
            size = len(line.rstrip(b"\n"))
            total += size + (2 if size < 126 else 4 if size < 65536 else 10)
    return total


free_port = benchhub.free_port
wait_listening = benchhub.wait_listening


async def websocketd_rate(
    data: Path, count: int, *, client: str, total: int = 0
) -> tuple[float, float]:
    """Lines per second from websocketd to one client process (``counting``: the frames
    counted once all are in; ``raw``: a frame reader; ``trio-websocket``), and the
    client's CPU seconds per wall second."""
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
        wall = time.time()
        if client == "counting":
            args = [COUNTING_CLIENT, "127.0.0.1", str(port), str(total), str(count)]
        elif client == "raw":
            args = [RAW_CLIENT, "127.0.0.1", str(port), str(count)]
        else:
            args = [WS_CLIENT, f"ws://127.0.0.1:{port}/", str(count)]
        done = await trio.run_process([sys.executable, "-c", *args], capture_stdout=True)
        elapsed = time.perf_counter() - started
        seen, *rest = done.stdout.split()
        assert int(seen) == count, done.stdout
        if len(rest) > 1:
            # The counting client's last byte, not its check afterwards.
            elapsed = float(rest[1]) - wall
    finally:
        server.terminate()
        await server.wait()
    return count / elapsed, (float(rest[0]) / elapsed if rest else float("nan"))


async def count_lines(stream: trio.abc.ReceiveStream, count: int) -> None:
    """Read ``stream`` until ``count`` lines came, as cheaply as ``wc -l`` would: blocking
    reads of up to 1 MiB in a thread, from a pipe of 1 MiB, rather than a trip through
    trio's scheduler for every read (with three busy processes on two cores, that reader
    was the slowest of them for ``--json``)."""
    assert isinstance(stream, trio.lowlevel.FdStream)
    fd = stream.fileno()
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    os.set_blocking(fd, True)

    def read() -> int:
        seen = 0
        while seen < count:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            seen += chunk.count(b"\n")
        return seen

    seen = await trio.to_thread.run_sync(read, abandon_on_cancel=True)
    assert seen >= count, f"attach stopped after {seen} lines"


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
        total = frame_bytes(data)
        clients = ("counting", "raw", "trio-websocket")
        best = dict.fromkeys((*clients, "history", "live", "hub", "hub-json"), 0.0)
        reader_cpu = dict.fromkeys(clients, 0.0)
        for _ in range(repeat):
            for kind in clients:
                rate, cpu = await websocketd_rate(data, lines, client=kind, total=total)
                if rate > best[kind]:
                    best[kind], reader_cpu[kind] = rate, cpu
            best["history"] = max(
                best["history"], await attach_rate(data, lines, history=True, env=env)
            )
            best["live"] = max(best["live"], await attach_rate(data, lines, history=False, env=env))
            best["hub"] = max(best["hub"], await hub_rate(data, lines, env, as_json=False))
            best["hub-json"] = max(best["hub-json"], await hub_rate(data, lines, env, as_json=True))
        # The baseline at its best: whichever client let websocketd send the most.
        base = max(best["counting"], best["raw"])
        rows = [
            ("websocketd cat FILE, frames counted at the end", best["counting"]),
            ("websocketd cat FILE, raw frame reader", best["raw"]),
            ("websocketd cat FILE, trio-websocket client", best["trio-websocket"]),
            ("tstream attach, session already holding the lines", best["history"]),
            ("tstream attach, started with the session (live)", best["live"]),
            ("tstream attach --hub, ended session", best["hub"]),
            ("tstream attach --hub --json, ended session", best["hub-json"]),
        ]
        print(f"baseline: websocketd at its best, {base:,.0f} lines/s")
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
