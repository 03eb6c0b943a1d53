"""Tokens and scopes, Origin checks, CORS and rate limits, against a real hub."""

from __future__ import annotations

import httpx
import pytest
from trio_websocket import HandshakeError, open_websocket_url

from trio_stream.hub.auth import Auth, AuthError, origin_allowed, token_from
from trio_stream.hub.config import TokenSpec

from .conftest import StartHub, create, output, receive, ws_url

READ = TokenSpec("reader-token", frozenset({"read"}))
ALL = TokenSpec("admin-token-123")


def test_token_sources_in_order() -> None:
    assert token_from({"Authorization": "Bearer abc"}, {"access_token": "q"}, {}) == "abc"
    assert token_from({}, {"access_token": "q"}, {"tstream_token": "c"}) == "c"
    assert token_from({}, {"access_token": "q"}, {}) == "q"
    assert token_from({}, {}, {}) is None
    with pytest.raises(AuthError) as refused:
        token_from({"Authorization": "Basic xyz"}, {}, {})
    assert refused.value.status == 401


def test_scopes() -> None:
    auth = Auth([READ, ALL])
    assert auth.scopes("reader-token") == {"read"}
    assert auth.scopes("admin-token-123") == {"read", "publish"}
    assert auth.scopes("reader-tokeN") == frozenset()
    auth.require("reader-token", "read")
    with pytest.raises(AuthError) as refused:
        auth.require("reader-token", "publish")
    assert refused.value.status == 403
    Auth([]).require(None, "publish")


def test_hosts_of_a_hub_without_tokens() -> None:
    from trio_stream.hub.auth import host_allowed

    for host in ("127.0.0.1:3001", "localhost", "[::1]:80", "::1", "app.localhost:1"):
        assert host_allowed(host, auth_enabled=False, insecure=False), host
    for host in ("evil.example", "evil.example:3001", "10.0.0.1:3001"):
        assert not host_allowed(host, auth_enabled=False, insecure=False), host
    assert host_allowed("evil.example", auth_enabled=True, insecure=False)
    assert host_allowed("evil.example", auth_enabled=False, insecure=True)


async def test_dns_rebinding_is_refused(served, http: httpx.AsyncClient) -> None:
    answer = await http.get("/api/streams", headers={"Host": "evil.example:3001"})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden_host"
    assert (await http.get("/api/streams")).status_code == 200


def test_origins() -> None:
    allow = ("https://app.example",)
    assert origin_allowed(None, "hub:1", allow)
    assert origin_allowed("https://app.example", "hub:1", allow)
    assert origin_allowed("http://hub:1", "hub:1", allow)
    assert not origin_allowed("https://evil.example", "hub:1", allow)
    assert origin_allowed("https://evil.example", "hub:1", ("*",))


@pytest.fixture
async def secured(start_hub: StartHub):
    return await start_hub(tokens=(READ, ALL), cors_origins=("https://app.example",))


async def test_every_auth_path(secured) -> None:
    async with httpx.AsyncClient(base_url=secured.urls[0]) as http:
        admin = {"Authorization": "Bearer admin-token-123"}
        assert (await http.post("/api/streams", json={"id": "s"}, headers=admin)).status_code == 201
        none = await http.get("/api/streams/s")
        assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
        assert (
            await http.get("/api/streams/s", headers={"Authorization": "Bearer nope"})
        ).status_code == 401
        assert (await http.get("/api/streams/s?access_token=reader-token")).status_code == 200
        assert (
            await http.get("/api/streams/s", headers={"Cookie": "tstream_token=reader-token"})
        ).status_code == 200
        answer = await http.post(
            "/api/streams/s/events",
            json=output("x"),
            headers={"Authorization": "Bearer reader-token"},
        )
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"
        assert (
            await http.post("/api/streams/s/events", json=output("x"), headers=admin)
        ).status_code == 200
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 401


async def test_websocket_needs_a_token_and_an_allowed_origin(secured) -> None:
    async with httpx.AsyncClient(base_url=secured.urls[0]) as http:
        admin = {"Authorization": "Bearer admin-token-123"}
        await http.post("/api/streams", json={"id": "s"}, headers=admin)
    with pytest.raises(HandshakeError) as refused:
        async with open_websocket_url(ws_url(secured, "/api/streams/s/ws")):
            pass
    assert refused.value.status_code == 401
    url = ws_url(secured, "/api/streams/s/ws?access_token=reader-token")
    with pytest.raises(HandshakeError) as refused:
        async with open_websocket_url(url, extra_headers=[(b"Origin", b"https://evil.example")]):
            pass
    assert refused.value.status_code == 403
    async with open_websocket_url(url, extra_headers=[(b"Origin", b"https://app.example")]) as ws:
        assert (await receive(ws))["type"] == "connection_ack"


async def test_cors_preflight_and_headers(secured) -> None:
    async with httpx.AsyncClient(base_url=secured.urls[0]) as http:
        ok = await http.options(
            "/api/streams",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert ok.status_code == 204
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        assert "Authorization" in ok.headers["access-control-allow-headers"]
        bad = await http.options("/api/streams", headers={"Origin": "https://evil.example"})
        assert bad.status_code == 403
        answer = await http.get("/healthz", headers={"Origin": "https://app.example"})
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
        answer = await http.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in answer.headers
        forged = await http.post(
            "/api/streams",
            json={},
            headers={"Origin": "https://evil.example", "Authorization": "Bearer admin-token-123"},
        )
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "forbidden_origin"


async def test_request_rate_limit_answers_429_with_retry_after(start_hub: StartHub) -> None:
    served = await start_hub(requests_per_minute=60)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        statuses = [(await http.get("/api/streams")).status_code for _ in range(8)]
        assert statuses[:6] == [200] * 6 and statuses[-1] == 429
        answer = await http.get("/api/streams")
        assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1
        assert answer.json()["error"]["code"] == "rate_limited"
        assert (await http.get("/healthz")).status_code == 200


async def test_publisher_rate_limit(start_hub: StartHub) -> None:
    served = await start_hub(publish_per_second=50)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        await create(http, "s")
        assert (
            await http.post("/api/streams/s/events", json=[output("x")] * 40)
        ).status_code == 200
        answer = await http.post("/api/streams/s/events", json=[output("x")] * 40)
        assert answer.status_code == 429 and answer.headers["retry-after"] == "1"


async def test_connection_rate_limit_stops_reconnect_storms(start_hub: StartHub) -> None:
    served = await start_hub(connections_per_minute=60)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        await create(http, "s")
        refused = 0
        for _ in range(8):
            try:
                async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
                    await receive(ws)
            except HandshakeError as exc:
                assert exc.status_code == 429
                refused += 1
        assert refused >= 2
        answer = await http.get("/api/streams/s/sse")
        assert answer.status_code == 429


async def test_websocket_message_flood_gets_rate_limited_error_frames(
    start_hub: StartHub,
) -> None:
    served = await start_hub(requests_per_minute=60)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        await create(http, "s")
    async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
        await receive(ws)
        for i in range(12):
            await ws.send_message(f'{{"type": "ping", "id": {i}}}')
        codes = [(await receive(ws)).get("code", "pong") for _ in range(12)]
        assert "rate_limited" in codes and codes[0] == "pong"
        assert ws.closed is None


async def test_too_many_clients_per_stream(start_hub: StartHub) -> None:
    served = await start_hub(max_clients_per_stream=1)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        await create(http, "s")
        async with open_websocket_url(ws_url(served, "/api/streams/s/ws")) as ws:
            await receive(ws)
            answer = await http.get("/api/streams/s/sse")
            assert answer.status_code == 503
            assert answer.json()["error"]["code"] == "too_many_clients"
