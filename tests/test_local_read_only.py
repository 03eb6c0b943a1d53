"""The hub ``tstream run`` serves its session with takes no writes: the session is the only
publisher of its offsets, and what a follower sees is what the store records."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
import trio
from live_helpers import TSTREAM, finish, private_dirs, start_run
from test_attach import attach, outcome, read_until

from trio_stream.registry import running_sessions

__all__ = ["private_dirs"]

TOKEN = "run-token-1234"
INJECTED = {"type": "status", "data": {"status": "injected"}}

# Every request that would change something on a hub, by method and path.
WRITES = [
    ("POST", "/api/streams/ro-1/events", INJECTED),
    ("POST", "/api/streams/ro-1/events", {**INJECTED, "offset": 99}),
    ("POST", "/api/streams", {"id": "other-1"}),
    ("POST", "/api/streams", {"id": "ro-1"}),
    ("DELETE", "/api/streams/ro-1", None),
    ("DELETE", "/api/streams/ro-1/clients/some-client", None),
    ("POST", "/api/streams/ro-1/replay/some-client", {}),
    ("PUT", "/api/streams/ro-1", {}),
    ("PATCH", "/api/streams/ro-1", {}),
]


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
async def test_the_runs_socket_refuses_every_write(private_dirs: Path, token: str | None) -> None:
    env = {"TSTREAM_TOKEN": token} if token else {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with trio.open_nursery() as nursery:
        process = await start_run(nursery, "--id", "ro-1", env=env)
        (live,) = running_sessions(private_dirs)
        transport = httpx.AsyncHTTPTransport(uds=live.socket)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=headers
        ) as http:
            answers = [await http.request(method, path, json=body) for method, path, body in WRITES]
            after = await http.get("/api/streams/ro-1")
            # The publishing WebSocket's handshake, refused before it is accepted.
            handshake = await http.get(
                "/api/streams/ro-1/publish?create=1",
                headers={
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-WebSocket-Version": "13",
                },
            )
        await finish(process)
    for answer in [*answers, handshake]:
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "read_only"
    assert after.json()["status"] == "running"


async def test_a_follower_sees_exactly_what_the_store_records(private_dirs: Path) -> None:
    async with trio.open_nursery() as nursery:
        run = await start_run(nursery, "--id", "ro-2")
        (live,) = running_sessions(private_dirs)
        follower = await attach("ro-2", "--json")
        seen = await read_until(follower.stdout, b'"text":"ready"')
        transport = httpx.AsyncHTTPTransport(uds=live.socket)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            refused = await http.post("/api/streams/ro-2/events", json=INJECTED)
        await run.stdin.send_all(b"linked\n")
        seen = await read_until(follower.stdout, b'"text":"linked"', seen)
        await finish(run)
        code, rest, _ = await outcome(follower)
    assert refused.status_code == 403
    assert code == 0
    shown = await trio.run_process([*TSTREAM, "show", "ro-2", "--json"], capture_stdout=True)
    followed = [orjson.loads(line) for line in (seen + rest).splitlines()]
    stored = [orjson.loads(line) for line in shown.stdout.splitlines()]
    assert followed == stored
    assert [e["offset"] for e in stored] == list(range(len(stored)))
    assert [e["type"] for e in stored] == ["session_started", "output", "output", "session_ended"]
    assert "injected" not in shown.stdout.decode()
