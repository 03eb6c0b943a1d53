"""Authorization is declared per route and denied by default."""

from __future__ import annotations

import httpx
import pytest
import trio

from trio_stream.hub import rest
from trio_stream.hub.app import create_app
from trio_stream.hub.broker import Broker
from trio_stream.hub.config import HubConfig, TokenSpec
from trio_stream.hub.context import Hub, access_of
from trio_stream.store.memory import MemoryStore

from .conftest import StartHub, base_url

PUBLIC = {"/healthz", "/api/openapi.json", "/", "/streams/<stream_id>", "/web/<name>", "/login"}


def app_of(nursery: trio.Nursery):
    config = HubConfig()
    return create_app(Hub(config, Broker(MemoryStore(), config, nursery)))


async def test_every_route_declares_what_it_needs_and_few_are_public(
    nursery: trio.Nursery,
) -> None:
    app = app_of(nursery)
    declared = {
        rule.rule: access_of(app.view_functions[rule.endpoint]) for rule in app.url_map.iter_rules()
    }
    assert all(access is not None for access in declared.values())
    public = {path for path, access in declared.items() if access.needs == "public"}
    assert public == PUBLIC
    assert declared["/api/streams/<stream_id>/events"].needs == "publish"
    assert declared["/api/streams/<stream_id>/ws"].connection


async def test_a_route_that_declares_nothing_stops_the_hub_from_starting(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(rest.stats, "tstream_access")
    with pytest.raises(RuntimeError, match="/api/streams/<stream_id>/stats declares no access"):
        app_of(nursery)


async def test_declared_scopes_are_enforced(start_hub: StartHub) -> None:
    served = await start_hub(
        tokens=(
            TokenSpec("r" * 24, frozenset({"read"})),
            TokenSpec("p" * 24, frozenset({"read", "publish"})),
        )
    )
    async with httpx.AsyncClient(base_url=base_url(served), timeout=10) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/api/streams")).status_code == 401
        read = {"Authorization": "Bearer " + "r" * 24}
        publish = {"Authorization": "Bearer " + "p" * 24}
        assert (await http.get("/api/streams", headers=read)).status_code == 200
        refused = await http.post("/api/streams", json={"id": "a"}, headers=read)
        assert refused.status_code == 403
        created = await http.post("/api/streams", json={"id": "a"}, headers=publish)
        assert created.status_code == 201
