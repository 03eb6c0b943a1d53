"""The JavaScript clients of the README, run by Node (its EventSource and WebSocket follow
the browser specifications). Skipped where Node lacks them (Node 20 has both behind
flags)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from trio_stream.hub.server import ServedHub

from .conftest import create, output

NODE = shutil.which("node")


def _node_has(flag: str, name: str) -> bool:
    if NODE is None:
        return False
    probe = subprocess.run(
        [NODE, flag, "-e", f"process.exit(typeof {name} === 'function' ? 0 : 1)"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


SSE_CLIENT = """
const source = new EventSource(process.argv[2]);
source.addEventListener("stream_event", (m) => console.log("event", m.lastEventId));
source.addEventListener("end", () => { console.log("end"); source.close(); });
"""

WS_CLIENT = """
const ws = new WebSocket(process.argv[2]);
ws.onopen = () => ws.send(JSON.stringify({type: "subscribe", replayOptions: {fromOffset: 0}}));
ws.onmessage = (m) => {
  const frame = JSON.parse(m.data);
  if (frame.type === "event") for (const e of frame.events) console.log("event", e.offset);
  else console.log(frame.type);
};
ws.onclose = (c) => console.log("closed", c.code, c.reason);
"""


async def _run_node(flag: str, script: str, url: str, tmp_path: Path) -> trio.Process:
    path = tmp_path / "client.mjs"
    path.write_text(script)
    assert NODE is not None
    return await trio.lowlevel.open_process(
        [NODE, "--no-warnings", flag, str(path), url], stdout=subprocess.PIPE
    )


async def _lines(process: trio.Process) -> list[str]:
    assert process.stdout is not None
    data = b""
    try:
        with trio.fail_after(10):
            while chunk := await process.stdout.receive_some():
                data += chunk
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    return data.decode().split()


@pytest.mark.skipif(
    not _node_has("--experimental-eventsource", "EventSource"), reason="no EventSource in Node"
)
async def test_eventsource_resumes_and_stops_after_the_end(
    served: ServedHub, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await create(http, "s", 2)
    url = served.urls[0] + "/api/streams/s/sse?lastEventId=0"
    process = await _run_node("--experimental-eventsource", SSE_CLIENT, url, tmp_path)
    await http.post("/api/streams/s/events", json=[output("live")])
    await http.post(
        "/api/streams/s/events", json={"type": "session_ended", "data": {"exit_status": 0}}
    )
    assert await _lines(process) == ["event", "1", "event", "2", "event", "3", "end"]


@pytest.mark.skipif(
    not _node_has("--experimental-websocket", "WebSocket"), reason="no WebSocket in Node"
)
async def test_websocket_subscribes_and_sees_the_close(
    served: ServedHub, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await create(http, "s", 2)
    url = served.urls[0].replace("http", "ws") + "/api/streams/s/ws"
    process = await _run_node("--experimental-websocket", WS_CLIENT, url, tmp_path)
    await http.post(
        "/api/streams/s/events", json={"type": "session_ended", "data": {"exit_status": 0}}
    )
    lines = await _lines(process)
    assert lines[:2] == ["connection_ack", "subscribed"]
    assert lines[2:] == ["event", "1", "event", "2", "end", "closed", "1000", "stream_ended"]
