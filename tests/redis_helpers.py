"""Redis servers of the tests' own: started in a temporary directory, stopped at the end.

A server is started through ``sh -c 'redis-server … &'`` so that it is not a child of the
test process: the suite kills every child left at the end of each test, and one server
serves a whole module or session. Its log comes through a pipe, which tells when it is
ready (no sleeping) and is drained by a thread so that Redis never blocks on it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.define
class RedisServer:
    """One ``redis-server`` without persistence, on a Unix socket and a TCP port."""

    directory: Path
    port: int
    pid: int = 0
    log: list[str] = attrs.Factory(list)
    _ready: threading.Event = attrs.Factory(threading.Event)
    _done: threading.Event = attrs.Factory(threading.Event)

    @property
    def socket_path(self) -> str:
        return str(self.directory / "redis.sock")

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ready.clear()
        self._done.clear()
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            self.socket_path,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            *extra,
        ]
        shell = subprocess.Popen(
            ["sh", "-c", 'exec 2>&1; "$@" & echo $!', "sh", *args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert shell.stdout is not None
        self.pid = int(shell.stdout.readline())
        shell.wait()
        threading.Thread(target=self._drain, args=(shell.stdout,), daemon=True).start()
        if not self._ready.wait(START_TIMEOUT) or self._done.is_set():
            self.stop()
            raise RuntimeError("redis-server did not start:\n" + "\n".join(self.log[-20:]))
        return self

    def _drain(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.log.append(line.rstrip())
            if "eady to accept connections" in line:
                self._ready.set()
        self._done.set()
        self._ready.set()

    def pause(self) -> None:
        """Freeze the server (``SIGSTOP``): it keeps its connections but answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (``SIGKILL``: at once, as a crash) and wait until it is gone."""
        if self._done.is_set():
            return  # stopped already: its pid may be another process's by now
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
            os.kill(self.pid, signal.SIGCONT)
        if not self._done.wait(START_TIMEOUT):
            os.kill(self.pid, signal.SIGKILL)
            self._done.wait(START_TIMEOUT)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


def cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=START_TIMEOUT,
    ).stdout


@contextlib.contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[list[RedisServer]]:
    """A Redis Cluster of ``masters`` masters (no replicas) on loopback."""
    servers: list[RedisServer] = []
    try:
        for n in range(masters):
            server = RedisServer(directory / f"node{n}", free_port())
            servers.append(server)
            server.start(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                # The bus port defaults to port + 10000, out of range for high free ports.
                "--cluster-port",
                str(free_port()),
            )
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{s.port}" for s in servers),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
            timeout=START_TIMEOUT,
        )
        # The masters agree on the slots a moment after they were given them.
        deadline = time.monotonic() + START_TIMEOUT
        while not all("cluster_state:ok" in cli(s.port, "cluster", "info") for s in servers):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become ready")
            time.sleep(0.05)
        yield servers
    finally:
        for server in servers:
            server.stop()
