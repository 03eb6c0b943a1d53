"""What the hub benchmarks share: starting ``tstream serve`` as a process of its own (so
that its CPU time is its own) and reading its CPU time and memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import trio

TSTREAM: Final = str(Path(sys.executable).parent / "tstream")


async def start_hub(nursery: trio.Nursery, *options: str) -> tuple[trio.Process, str]:
    """``tstream serve --listen 127.0.0.1:0 --quiet OPTIONS`` in ``nursery``; returns the
    process and its URL once it listens. Its stderr is copied to ours from then on."""
    command = [TSTREAM, "serve", "--listen", "127.0.0.1:0", "--quiet", *options]
    process: trio.Process = await nursery.start(
        lambda task_status: trio.run_process(
            command, stderr=subprocess.PIPE, check=False, task_status=task_status
        )
    )
    assert process.stderr is not None
    seen = b""
    while b"listening on http" not in seen:
        chunk = await process.stderr.receive_some()
        if not chunk:
            raise RuntimeError(f"tstream serve did not start: {seen.decode()}")
        seen += chunk
    url = next(x for x in seen.decode().splitlines() if "listening on" in x).split()[-1]
    nursery.start_soon(_drain, process.stderr)
    return process, url


async def _drain(stream: Any) -> None:
    async for chunk in stream:
        sys.stderr.buffer.write(chunk)


def lifted_limits(path: Path, *, publish: bool = False) -> Path:
    """A hub configuration at ``path`` without the reconnect-storm limits, since every
    benchmark client connects from one address."""
    text = "serve:\n  connections_per_minute: 1000000\n  requests_per_minute: 1000000\n"
    if publish:
        text += "  publish_per_second: 1000000\n"
    path.write_text(text)
    return path


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_listening(port: int, timeout: float = 60) -> None:
    """Return once something accepts connections on loopback ``port``."""
    with trio.fail_after(timeout):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return
