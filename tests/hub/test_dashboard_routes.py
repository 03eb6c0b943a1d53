"""The dashboard's routes over HTTP: pages and static files with their Content-Security-
Policy, the token kept in a cookie, the JSON-lines download and the list's paging and
search (the browser tests are in test_dashboard.py)."""

from __future__ import annotations

import httpx
import orjson
import pytest

from trio_stream.events import EventType, Output, placed_events
from trio_stream.hub.config import TokenSpec
from trio_stream.hub.server import ServedHub
from trio_stream.store.base import SessionInfo, SessionStatus
from trio_stream.store.memory import MemoryStore

from .conftest import StartHub, base_url, create, create_mixed

READ = TokenSpec("reader-token", frozenset({"read"}))
PUBLISH_ONLY = TokenSpec("publisher-token", frozenset({"publish"}))


@pytest.mark.parametrize("path", ["/", "/streams/some-stream"])
async def test_pages_are_served_with_a_policy_forbidding_inline_script(
    http: httpx.AsyncClient, path: str
) -> None:
    answer = await http.get(path)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    assert "unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    # Every address in the page is relative, so that a proxy's path prefix is kept.
    root = "./" if path == "/" else "../"
    assert f'src="{root}web/dashboard.js"' in answer.text
    assert 'src="/' not in answer.text and 'href="/' not in answer.text
    assert "<script>" not in answer.text


async def test_static_files_come_from_the_package_with_a_validator(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.get("/web/xterm.js")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/javascript")
    again = await http.get("/web/xterm.js", headers={"If-None-Match": answer.headers["ETag"]})
    assert again.status_code == 304
    licence = await http.get("/web/xterm.LICENSE")
    assert "MIT" in licence.text or "Permission is hereby granted" in licence.text


@pytest.mark.parametrize("name", ["nothing.js", "..%2Fapp.py", "%2E%2E"])
async def test_an_unknown_static_file_is_a_404(http: httpx.AsyncClient, name: str) -> None:
    answer = await http.get(f"/web/{name}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


async def test_signing_in_keeps_a_token_that_may_read(start_hub: StartHub) -> None:
    served: ServedHub = await start_hub(tokens=(READ, PUBLISH_ONLY))
    async with httpx.AsyncClient(base_url=base_url(served), timeout=10) as http:
        refused = await http.post("/login", json={"token": PUBLISH_ONLY.token})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        malformed = await http.post("/login", json=["no"])
        assert malformed.status_code == 400
        assert (await http.get("/api/streams")).status_code == 401
        accepted = await http.post("/login", json={"token": READ.token})
        assert accepted.status_code == 204
        cookie = accepted.headers["Set-Cookie"]
        assert cookie.startswith(f"tstream_token={READ.token};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # No Path: the browser scopes the cookie to the directory of /login, the hub's
        # root as it sees it, with a proxy's prefix if any.
        assert "Path=" not in cookie
        assert (await http.get("/api/streams")).status_code == 200


async def test_signing_in_from_another_origin_is_refused(start_hub: StartHub) -> None:
    served: ServedHub = await start_hub(tokens=(READ,))
    async with httpx.AsyncClient(base_url=base_url(served), timeout=10) as http:
        answer = await http.post(
            "/login", json={"token": READ.token}, headers={"Origin": "https://evil.example"}
        )
        assert answer.status_code == 403
        assert "Set-Cookie" not in answer.headers


async def test_the_stream_downloads_as_json_lines(http: httpx.AsyncClient) -> None:
    await create_mixed(http, "s", 2500)
    answer = await http.get("/api/streams/s/export")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/x-ndjson"
    assert answer.headers["Content-Disposition"] == 'attachment; filename="s.jsonl"'
    events = [orjson.loads(line) for line in answer.content.splitlines()]
    assert [e["offset"] for e in events] == list(range(2500))
    only = await http.get("/api/streams/s/export", params={"eventTypes": "status"})
    statuses = [orjson.loads(line) for line in only.content.splitlines()]
    assert len(statuses) == 1250
    assert {e["type"] for e in statuses} == {"status"}


async def test_downloading_an_unknown_stream_is_a_404(http: httpx.AsyncClient) -> None:
    answer = await http.get("/api/streams/nope/export")
    assert answer.status_code == 404


async def test_the_list_pages_and_searches_newest_first(http: httpx.AsyncClient) -> None:
    for name in ("alpha", "beta", "gamma", "alphabet"):
        await create(http, name)
    first = (await http.get("/api/streams", params={"limit": 2})).json()
    assert [s["id"] for s in first["streams"]] == ["alphabet", "gamma"]
    assert first["more"] is True and first["total"] is None
    second = (await http.get("/api/streams", params={"limit": 2, "offset": 2})).json()
    assert [s["id"] for s in second["streams"]] == ["beta", "alpha"]
    assert second["more"] is False and second["total"] == 4
    found = (await http.get("/api/streams", params={"q": "ALPHA"})).json()
    assert [s["id"] for s in found["streams"]] == ["alphabet", "alpha"]
    assert found["total"] == 2 and found["more"] is False
    assert all("events" in s for s in found["streams"])


async def test_a_session_only_in_the_store_downloads_too(
    http: httpx.AsyncClient, store: MemoryStore
) -> None:
    await store.create_session(SessionInfo(id="old", status=SessionStatus.COMPLETED))
    payloads = [Output("stdout", f"line {i}", line=i) for i in range(3)]
    await store.append("old", placed_events(EventType.OUTPUT, payloads, "old", 0, 1.0))
    answer = await http.get("/api/streams/old/export")
    assert answer.status_code == 200
    texts = [orjson.loads(line)["data"]["text"] for line in answer.content.splitlines()]
    assert texts == ["line 0", "line 1", "line 2"]
