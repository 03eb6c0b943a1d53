"""The fast path of fan-out (frames written straight to Hypercorn's connections) is on
under the pinned releases, and the hub behaves the same with it off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from trio_websocket import open_websocket_url

from trio_stream.hub import patches, wire
from trio_stream.hub.server import ServedHub

from .conftest import create, receive, ws_url

HERE = Path(__file__).parent


def test_the_installed_releases_are_the_checked_ones() -> None:
    assert patches.unchecked_releases() == []


@pytest.mark.skipif(
    not wire.fast_path["enabled"], reason="this run checks the hub with the fast path off"
)
async def test_websocket_and_sse_clients_take_the_fast_path(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "f", 1)
    before = wire.paths_taken.copy()
    async with open_websocket_url(ws_url(served, "/api/streams/f/ws")) as ws:
        await receive(ws)
        await ws.send_message(orjson.dumps({"type": "subscribe", "streamId": "f"}).decode())
        await receive(ws)
    async with http.stream("GET", "/api/streams/f/sse?lastEventId=-1") as response:
        async for _ in response.aiter_bytes():
            break
    taken = wire.paths_taken - before
    assert taken == {("websocket", "fast"): 1, ("sse", "fast"): 1}


def test_the_hub_tests_pass_with_the_fast_path_off() -> None:
    if os.environ.get(wire.FAST_PATH_ENV) == "off":
        pytest.skip("already running with the fast path off")
    env = {**os.environ, wire.FAST_PATH_ENV: "off"}
    tests = [
        str(HERE / name)
        for name in ("test_websocket.py", "test_sse.py", "test_fanout.py", "test_hostile.py")
    ]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
