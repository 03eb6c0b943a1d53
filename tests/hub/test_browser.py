"""A real browser (headless Chromium) follows a stream with its own EventSource and
WebSocket, from a page of another origin, and resumes after the hub cuts it."""

from __future__ import annotations

import shutil
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import h11
import httpx
import orjson
import pytest
import trio

from trio_stream.hub.config import Listen

from .conftest import StartHub, create, output

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# CI installs Debian's chromium, so this runs there; elsewhere it needs chromium too.
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>tstream follower</title>
<script>
const params = new URLSearchParams(location.search);
const hub = params.get("hub"), stream = params.get("stream");
const report = (path, body) => fetch(path, {method: "POST", body: JSON.stringify(body)});
const seen = {sse: [], ws: [], sseErrors: [], wsFrames: [], closeCode: null, text: []};
let ready = false;

const source = new EventSource(`${hub}/api/streams/${stream}/sse?lastEventId=0`);
source.addEventListener("stream_event", (m) => {
  const event = JSON.parse(m.data);
  seen.sse.push(Number(m.lastEventId));
  if (event.type === "output") seen.text.push(event.data.text);
  if (seen.sse.length === 2 && !ready) { ready = true; report("/ready", {}); }
});
source.addEventListener("error", (m) => {
  if (m.data) seen.sseErrors.push(JSON.parse(m.data).code);
});
source.addEventListener("end", () => { source.close(); follow(); });

function follow() {
  const ws = new WebSocket(`${hub.replace("http", "ws")}/api/streams/${stream}/ws`);
  ws.onopen = () => ws.send(JSON.stringify({type: "subscribe", replayOptions: {fromOffset: 0}}));
  ws.onmessage = (m) => {
    const frame = JSON.parse(m.data);
    seen.wsFrames.push(frame.type);
    if (frame.type === "event") for (const e of frame.events) seen.ws.push(e.offset);
  };
  ws.onclose = (c) => { seen.closeCode = c.code; report("/result", seen); };
}
</script>
"""


class PageServer:
    """Serves the page and takes what it reports (``/ready``, ``/result``)."""

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.done = trio.Event()
        self.result: dict[str, Any] = {}

    async def handle(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if request is None:
            return
        target = request.target.decode()
        content, kind = b"", b"text/plain"
        if target.startswith("/?"):
            content, kind = PAGE, b"text/html; charset=utf-8"
        elif target == "/ready":
            self.ready.set()
        elif target == "/result":
            self.result = orjson.loads(body)
            self.done.set()
        headers = [("Content-Type", kind), ("Content-Length", str(len(content)))]
        headers.append(("Connection", "close"))
        await stream.send_all(connection.send(h11.Response(status_code=200, headers=headers)))
        await stream.send_all(connection.send(h11.Data(data=content)))
        await stream.send_all(connection.send(h11.EndOfMessage()))
        await stream.aclose()


async def test_chromium_follows_resumes_after_a_cut_and_stops_at_the_end(
    nursery: trio.Nursery, start_hub: StartHub, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    page = PageServer()
    listeners = await nursery.start(partial(trio.serve_tcp, page.handle, 0, host="127.0.0.1"))
    origin = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    served = await start_hub(listen=(Listen(port=0),), cors_origins=(origin,), sse_retry=100)
    hub = served.urls[0]
    async with httpx.AsyncClient(base_url=hub, timeout=10) as http:
        await create(http, "s", 3)
        browser = await trio.lowlevel.open_process(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                f"{origin}/?hub={hub}&stream=s",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with trio.fail_after(30):
                await page.ready.wait()
                clients = (await http.get("/api/streams/s/clients")).json()["clients"]
                (follower,) = [c for c in clients if c["transport"] == "sse"]
                cut = await http.delete(f"/api/streams/s/clients/{follower['id']}")
                assert cut.status_code == 200, cut.text
                await http.post(
                    "/api/streams/s/events", json=[output(f"live {i}") for i in range(3)]
                )
                await http.post(
                    "/api/streams/s/events",
                    json={"type": "session_ended", "data": {"exit_status": 0}},
                )
                await page.done.wait()
        finally:
            browser.kill()
            with trio.move_on_after(5):
                await browser.wait()
    seen = page.result
    # The cut reached the page as an error event; EventSource reconnected by itself with
    # Last-Event-ID: no gap, no duplicate.
    assert seen["sseErrors"] == ["disconnected"]
    assert seen["sse"] == [1, 2, 3, 4, 5, 6]
    assert seen["text"] == ["line 1", "line 2", "live 0", "live 1", "live 2"]
    assert seen["ws"] == [1, 2, 3, 4, 5, 6]
    assert seen["wsFrames"][:2] == ["connection_ack", "subscribed"]
    assert seen["closeCode"] == 1000
