"""``tstream serve`` as a real process, and serve_hub's shutdown inside a nursery."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from trio_stream.hub.config import HubConfig, HubConfigError, Listen
from trio_stream.hub.server import serve_hub
from trio_stream.hub.sse import SSEParser
from trio_stream.store import open_store
from trio_stream.store.memory import MemoryStore

from .conftest import create, output, receive

TSTREAM = (
    [sys.executable, "-m", "trio_stream.cli"]
    if False
    else [str(Path(sys.executable).parent / "tstream")]
)


async def _start(args: list[str], nursery: trio.Nursery) -> tuple[trio.Process, str]:
    process: trio.Process = await nursery.start(
        lambda task_status: trio.run_process(
            [*TSTREAM, "serve", *args],
            stderr=subprocess.PIPE,
            check=False,
            task_status=task_status,
        )
    )
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(10):
        while b"listening on http" not in seen:
            chunk = await process.stderr.receive_some()
            assert chunk, seen
            seen += chunk
    line = next(x for x in seen.decode().splitlines() if "tstream hub listening on" in x)
    return process, line.rsplit(" ", 1)[1]


async def test_sigint_closes_clients_flushes_the_store_and_exits_0(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    async with trio.open_nursery() as nursery:
        process, url = await _start(["--listen", "127.0.0.1:0", "--store", str(db)], nursery)
        async with httpx.AsyncClient(base_url=url) as http:
            await create(http, "s", 3)
            async with open_websocket_url(
                url.replace("http", "ws") + "/api/streams/s/ws?after=-1"
            ) as ws:
                await receive(ws)
                async with http.stream("GET", "/api/streams/s/sse") as sse:
                    parser = SSEParser()
                    chunks = sse.aiter_bytes()
                    parser.feed(await chunks.__anext__())
                    started = time.monotonic()
                    process.send_signal(signal.SIGINT)
                    messages = []
                    with trio.fail_after(5):
                        async for chunk in chunks:
                            messages.extend(parser.feed(chunk))
                    errors = [orjson.loads(m.data) for m in messages if m.event == "error"]
                    assert errors and errors[0]["code"] == "shutdown"
                codes = []
                with trio.fail_after(5):
                    try:
                        while True:
                            message = await receive(ws)
                            codes.append(message.get("code"))
                    except ConnectionClosed as closed:
                        assert closed.reason.code == 1001
                assert "shutdown" in codes
        with trio.fail_after(5):
            await process.wait()
        assert process.returncode == 0
        assert time.monotonic() - started < 3
    async with open_store(str(db)) as store:
        assert await store.last_offset("s") == 2
    # A hub restarted on the same store takes the publisher back where it was.
    async with trio.open_nursery() as nursery:
        process, url = await _start(["--listen", "127.0.0.1:0", "--store", str(db)], nursery)
        async with httpx.AsyncClient(base_url=url) as http:
            resumed = await http.post("/api/streams/s/events", json=[output("d", offset=3)])
            assert resumed.json()["firstOffset"] == 3, resumed.text
            history = (await http.get("/api/streams/s/history")).json()["events"]
            assert [e["offset"] for e in history] == [0, 1, 2, 3]
        process.send_signal(signal.SIGTERM)
        await process.wait()
        assert process.returncode == 0


async def test_serve_refuses_exposure_without_a_token() -> None:
    result = await trio.run_process(
        [*TSTREAM, "serve", "--listen", "0.0.0.0:0", "--store", "memory:"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    assert b"needs --token" in result.stderr


async def test_serve_takes_its_store_and_address_from_the_config(tmp_path: Path) -> None:
    db = tmp_path / "from-config.db"
    config = tmp_path / "config.yaml"
    config.write_text(f"serve:\n  listen: 127.0.0.1:0\n  store: sqlite:{db}\n")
    async with trio.open_nursery() as nursery:
        process, url = await _start(["--config", str(config)], nursery)
        async with httpx.AsyncClient(base_url=url) as http:
            await create(http, "c", 1)
        process.send_signal(signal.SIGTERM)
        await process.wait()
    async with open_store(str(db)) as store:
        assert await store.last_offset("c") == 0


async def test_serve_reads_its_config_section(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("serve:\n  heartbeat: nope\n")
    result = await trio.run_process(
        [*TSTREAM, "serve", "--config", str(config), "--store", "memory:"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2 and b"serve.heartbeat" in result.stderr


async def test_cancelling_the_nursery_shuts_the_hub_down_gracefully(tmp_path: Path) -> None:
    store = MemoryStore()
    path = tmp_path / "hub.sock"
    config = HubConfig(listen=(Listen(port=0), Listen(path=str(path))))
    hub_scope = trio.CancelScope()

    async def run_hub(task_status: trio.TaskStatus) -> None:
        with hub_scope:
            await serve_hub(config, store, task_status=task_status)

    async with trio.open_nursery() as nursery:
        served = await nursery.start(run_hub)
        assert path.exists() and served.addresses[0].port != 0
        async with httpx.AsyncClient(base_url=served.urls[0]) as http:
            await create(http, "s")
            await http.post("/api/streams/s/events", json=[output("a")])
        url = served.urls[0].replace("http", "ws") + "/api/streams/s/ws"
        async with open_websocket_url(url) as ws:
            await receive(ws)
            started = trio.current_time()
            hub_scope.cancel()
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(5):
                while True:
                    await ws.get_message()
            assert closed.value.reason.code == 1001
    assert trio.current_time() - started < 3
    assert not path.exists()
    assert await store.last_offset("s") == 0


async def test_a_taken_port_is_a_clear_error(served) -> None:
    taken = served.addresses[0]
    with pytest.raises(HubConfigError, match="already in use"):
        await serve_hub(HubConfig(listen=(taken,)), MemoryStore())
