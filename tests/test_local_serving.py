"""``tstream run`` serves its own session: the private socket, its registration, its end."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import trio
from live_helpers import ECHO, TSTREAM, finish, private_dirs, start_run

from trio_stream.events import EventType
from trio_stream.publisher import publisher_for
from trio_stream.registry import RegistryError, find_live, private_dir, running_sessions
from trio_stream.session import StreamConfig, open_session
from trio_stream.store import UnknownSessionError

__all__ = ["private_dirs"]


async def test_run_registers_its_session_on_a_private_socket(private_dirs: Path) -> None:
    async with trio.open_nursery() as nursery:
        process = await start_run(nursery, "--id", "served-1")
        (live,) = running_sessions(private_dirs)
        assert (live.id, live.pid) == ("served-1", process.pid)
        assert live.command == ["sh", "-c", ECHO]
        assert stat.S_IMODE(private_dirs.stat().st_mode) == 0o700
        assert stat.S_IMODE(os.stat(live.socket).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(live.entry).st_mode) == 0o600
        entry = orjson.loads(Path(live.entry).read_bytes())
        assert entry["socket"] == live.socket
        transport = httpx.AsyncHTTPTransport(uds=live.socket)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            answer = await http.get("/api/streams/served-1")
        assert answer.json()["status"] == "running"
        status, _ = await finish(process)
    assert status == 0
    assert list(private_dirs.iterdir()) == []


async def test_sigterm_ends_the_session_and_removes_the_socket(private_dirs: Path) -> None:
    async with trio.open_nursery() as nursery:
        process = await start_run(nursery)
        (live,) = running_sessions(private_dirs)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert not os.path.exists(live.socket)
    assert list(private_dirs.iterdir()) == []


async def test_a_killed_run_leaves_nothing_that_is_connected_to(private_dirs: Path) -> None:
    async with trio.open_nursery() as nursery:
        process = await start_run(nursery, "--id", "killed-1")
        (live,) = running_sessions(private_dirs)
        process.kill()
        await process.wait()
        assert os.path.exists(live.socket)
        with pytest.raises(UnknownSessionError):
            find_live("killed-1", private_dirs)
        assert list(private_dirs.iterdir()) == []


async def test_no_serve_registers_nothing(private_dirs: Path) -> None:
    done = await trio.run_process(
        [*TSTREAM, "run", "--no-serve", "--", "sh", "-c", 'ls "$XDG_RUNTIME_DIR"'],
        capture_stdout=True,
    )
    assert done.stdout == b""


async def test_an_unusable_runtime_directory_is_a_warning_not_a_failure(
    private_dirs: Path,
) -> None:
    private_dirs.mkdir(mode=0o755)
    private_dirs.chmod(0o755)
    done = await trio.run_process(
        [*TSTREAM, "run", "--", "sh", "-c", "echo still runs; exit 4"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (4, b"still runs\n")
    assert b"warning: not serving the session" in done.stderr
    assert b"mode must be 0700" in done.stderr


# The web stack's import, made slow: it notes its start and its end in a file (argv[1]).
SLOW_IMPORT = """
import sys, time
from pathlib import Path
import trio_stream.local as local
marker = Path(sys.argv.pop(1))
real = local._import_server
def slow():
    marker.write_text("started")
    time.sleep(30)
    real()
    marker.write_text("imported")
local._import_server = slow
from trio_stream.cli import main
main()
"""

# Waits until tstream registered the session, connects to its socket, then ends.
CONNECT_AND_END = """
import glob, os, socket, sys, time
import orjson
pattern = os.path.join(os.environ["XDG_RUNTIME_DIR"], "tstream", "*.json")
while not glob.glob(pattern):
    time.sleep(0.01)
entry = orjson.loads(open(glob.glob(pattern)[0], "rb").read())
client = socket.socket(socket.AF_UNIX)
client.connect(entry["socket"])
print("out")
print("err", file=sys.stderr)
sys.exit(3)
"""


async def run_with_slow_import(marker: Path, *command: str) -> subprocess.CompletedProcess[bytes]:
    """``tstream run -- COMMAND`` whose web stack import is slow and noted in ``marker``."""
    with trio.fail_after(20):
        return await trio.run_process(
            [TSTREAM[0], "-c", SLOW_IMPORT, str(marker), "run", "--", *command],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_a_command_shorter_than_the_web_stack_import_is_not_kept_waiting(
    private_dirs: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "imported"
    done = await run_with_slow_import(marker, sys.executable, "-c", CONNECT_AND_END)
    # The client made the import start; the run ended with its command (the import was
    # left behind), all output out.
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
    assert marker.read_text() == "started"
    assert not private_dirs.exists() or list(private_dirs.iterdir()) == []


async def test_a_session_nobody_connects_to_never_imports_the_web_stack(
    private_dirs: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "imported"
    wait_for_registration = (
        'until [ -n "$(ls "$XDG_RUNTIME_DIR"/tstream/*.json 2>/dev/null)" ]; '
        "do sleep 0.01; done; echo registered"
    )
    done = await run_with_slow_import(marker, "sh", "-c", wait_for_registration)
    # Served (registered on its socket) all along, without the web stack.
    assert (done.returncode, done.stdout) == (0, b"registered\n")
    assert not marker.exists()
    assert list(private_dirs.iterdir()) == []


def test_the_runtime_directory_must_be_private(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(RegistryError, match="open to other users"):
        private_dir(shared)


def test_a_missing_runtime_directory_is_created_private(tmp_path: Path) -> None:
    created = private_dir(tmp_path / "new" / "tstream")
    assert stat.S_IMODE(created.stat().st_mode) == 0o700


async def test_listen_serves_over_tcp_with_the_token(private_dirs: Path) -> None:
    async with trio.open_nursery() as nursery:
        process = await start_run(
            nursery,
            "--id",
            "tcp-1",
            "--listen",
            "127.0.0.1:0",
            env={"TSTREAM_TOKEN": "s3cret-token"},
        )
        (live,) = running_sessions(private_dirs)
        url = next(u for u in live.urls if u.startswith("http://"))
        async with httpx.AsyncClient(base_url=url) as http:
            refused = await http.get("/api/streams/tcp-1")
            answer = await http.get(
                "/api/streams/tcp-1", headers={"Authorization": "Bearer s3cret-token"}
            )
            publish = await http.post(
                "/api/streams/tcp-1/events",
                json={"type": "status", "data": {"status": "x"}},
                headers={"Authorization": "Bearer s3cret-token"},
            )
        assert refused.status_code == 401
        assert answer.json()["id"] == "tcp-1"
        assert publish.status_code == 403
        await finish(process)


def test_listen_beyond_loopback_without_a_token_is_a_usage_error() -> None:
    done = subprocess.run(
        [*TSTREAM, "run", "--listen", "0.0.0.0:0", "--", "true"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert b"needs --token" in done.stderr


async def test_publisher_for_reaches_a_running_session() -> None:
    config = StreamConfig(session_id="reach-1")
    async with open_session(["sh", "-c", "sleep 0.2"], config) as session:
        publisher_for("reach-1").publish_status("deploying")
        events = [e async for batch in session.events() for e in batch]
    assert EventType.STATUS in [e.type for e in events]
    with pytest.raises(UnknownSessionError):
        publisher_for("reach-1")


async def test_an_sse_client_on_the_socket_gets_history_then_live_lines(
    private_dirs: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        process = await start_run(nursery, "--id", "sse-1")
        (live,) = running_sessions(private_dirs)
        await process.stdin.send_all(b"before\n")
        transport = httpx.AsyncHTTPTransport(uds=live.socket)
        texts: list[str] = []
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://localhost") as http,
            http.stream("GET", "/api/streams/sse-1/sse?lastEventId=-1") as answer,
        ):
            with trio.fail_after(20):
                async for line in answer.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = orjson.loads(line[6:])
                    if event.get("type") == "output":
                        texts.append(event["data"]["text"])
                        if texts == ["ready", "before"]:
                            await process.stdin.send_all(b"after\n")
                    if event.get("type") == "session_ended" or texts[-1:] == ["after"]:
                        break
        await finish(process)
    assert texts == ["ready", "before", "after"]


@pytest.mark.parametrize("script", ["true", "sleep 1"])
async def test_a_busy_listen_address_is_a_warning_however_short_the_command(
    private_dirs: Path, script: str
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = await trio.run_process(
            [*TSTREAM, "run", "--listen", f"127.0.0.1:{port}", "--", "sh", "-c", script],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0
    assert done.stderr.decode() == (
        f"tstream: warning: not serving the session: listen 127.0.0.1:{port}: "
        "address already in use\n"
    )
