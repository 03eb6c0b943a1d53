"""The OpenAPI document at ``/api/openapi.json`` and the routes the app registers agree."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import trio

from trio_stream.hub.app import create_app
from trio_stream.hub.broker import Broker
from trio_stream.hub.config import HubConfig
from trio_stream.hub.context import Hub
from trio_stream.hub.openapi import openapi_document, payload_schema
from trio_stream.hub.server import ServedHub
from trio_stream.store.memory import MemoryStore

from .conftest import StartHub, base_url

# Quart answers HEAD wherever GET is and OPTIONS everywhere (CORS preflights): the
# document says so once instead of listing them.
IMPLICIT = frozenset({"HEAD", "OPTIONS"})
PUBLIC = frozenset(
    {"/healthz", "/api/openapi.json", "/", "/streams/{stream_id}", "/web/{name}", "/login"}
)
METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def app_routes(nursery: trio.Nursery) -> dict[tuple[str, str], list[str]]:
    """``(path, method)`` of every route the app registers, with its path arguments."""
    config = HubConfig()
    app = create_app(Hub(config, Broker(MemoryStore(), config, nursery)))
    routes = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        # A WebSocket route is opened by a GET with the upgrade headers.
        methods = {"GET"} if rule.websocket else set(rule.methods or ()) - IMPLICIT
        for method in methods:
            routes[(path, method.lower())] = sorted(rule.arguments)
    return routes


def document_routes(document: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """``(path, method)`` of every operation of the document, with its path parameters."""
    parameters = document["components"]["parameters"]
    routes = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            names = []
            for parameter in operation.get("parameters", []):
                if "$ref" in parameter:
                    parameter = parameters[parameter["$ref"].rsplit("/", 1)[1]]
                if parameter["in"] == "path":
                    names.append(parameter["name"])
            routes[(path, method)] = sorted(names)
    return routes


async def test_every_route_is_documented_and_every_operation_is_routed(
    nursery: trio.Nursery,
) -> None:
    routes = app_routes(nursery)
    documented = document_routes(openapi_document(HubConfig()))
    assert sorted(set(routes) - set(documented)) == [], "routes missing from the document"
    assert sorted(set(documented) - set(routes)) == [], "documented operations with no route"
    for key, arguments in routes.items():
        assert documented[key] == arguments, f"path parameters of {key}"


async def test_the_document_is_served_without_a_token(start_hub: StartHub) -> None:
    served: ServedHub = await start_hub(max_batch=7)
    async with httpx.AsyncClient(base_url=base_url(served), timeout=10) as http:
        answer = await http.get("/api/openapi.json")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        document = answer.json()
    assert document["openapi"] == "3.1.0"
    assert document == openapi_document(served.hub.config)
    batch = document["components"]["schemas"]["PublishRequest"]["oneOf"][1]
    assert batch["maxItems"] == 7


def test_every_reference_resolves() -> None:
    document = openapi_document(HubConfig())
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]


def test_auth_is_declared_as_security_schemes() -> None:
    document = openapi_document(HubConfig())
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
    assert schemes["accessToken"] == {"type": "apiKey", "in": "query", "name": "access_token"}
    assert schemes["cookie"] == {"type": "apiKey", "in": "cookie", "name": "tstream_token"}
    # Health, the document and the dashboard's pages need no token; everything else names
    # its scope.
    for path, item in document["paths"].items():
        for operation in item.values():
            if path in PUBLIC:
                assert operation["security"] == []
            else:
                assert operation["x-scope"] in ("read", "publish")


def test_payload_schemas_follow_the_event_model() -> None:
    from trio_stream.events import Output, SessionEnded

    output = payload_schema(Output)
    assert output["required"] == ["source", "text"]
    assert output["properties"]["source"] == {"type": "string", "enum": ["stdout", "stderr"]}
    assert output["properties"]["raw"] == {
        "anyOf": [{"type": "string", "contentEncoding": "base64"}, {"type": "null"}]
    }
    ended = payload_schema(SessionEnded)
    assert ended["properties"]["dropped"] == {
        "type": "object",
        "additionalProperties": {"type": "integer"},
    }
    assert ended["additionalProperties"] is False


def _query_schema(document: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    parameters = document["components"]["parameters"]
    for parameter in document["paths"][path]["get"]["parameters"]:
        if "$ref" in parameter:
            parameter = parameters[parameter["$ref"].rsplit("/", 1)[1]]
        if parameter["name"] == name:
            return parameter["schema"]  # type: ignore[no-any-return]
    raise AssertionError(f"{path} documents no {name}")


# Query parameters with a documented bound, and the code of a value past it.
BOUNDED_QUERIES = [
    ("/api/streams", "limit", "bad_request"),
    ("/api/streams", "offset", "bad_request"),
    ("/api/streams/{stream_id}/history", "limit", "bad_request"),
    ("/api/streams/{stream_id}/history", "offset", "bad_request"),
    ("/api/streams/{stream_id}/history", "lastN", "bad_replay"),
    ("/api/streams/{stream_id}/poll", "limit", "bad_request"),
    ("/api/streams/{stream_id}/poll", "timeout", "bad_request"),
    ("/api/streams/{stream_id}/poll", "epoch", "bad_replay"),
    ("/api/streams/{stream_id}/sse", "lastN", "bad_replay"),
    ("/api/streams/{stream_id}/sse", "epoch", "bad_replay"),
    ("/api/streams/{stream_id}/history", "searchText", "bad_filter"),
    ("/api/streams/{stream_id}/poll", "pattern", "bad_filter"),
]


@pytest.mark.parametrize(("path", "name", "code"), BOUNDED_QUERIES)
async def test_the_documented_bounds_are_the_routes_bounds(
    start_hub: StartHub, path: str, name: str, code: str
) -> None:
    served: ServedHub = await start_hub(max_poll_timeout=2.0)
    schema = _query_schema(openapi_document(served.hub.config), path, name)
    if "maximum" in schema:
        most, over = schema["maximum"], schema["maximum"] + 1
    else:
        most, over = "e" * schema["maxLength"], "e" * (schema["maxLength"] + 1)
    async with httpx.AsyncClient(base_url=base_url(served), timeout=10) as http:
        await http.post("/api/streams", json={"id": "s"})
        ended = {"type": "session_ended", "data": {"exit_status": 0}}
        await http.post("/api/streams/s/events", json=ended)
        url = path.format(stream_id="s")
        taken = await http.get(url, params={name: most})
        assert taken.status_code in (200, 204), taken.text
        refused = await http.get(url, params={name: over})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == code and f"{name}: " in error["message"], error


def test_the_documented_bodies_are_bounded_by_the_same_limits() -> None:
    from trio_stream.client import http
    from trio_stream.hub.params import LIMITS

    schemas = openapi_document(HubConfig())["components"]["schemas"]
    options = schemas["ReplayOptions"]["properties"]
    assert options["lastN"]["maximum"] == options["limit"]["maximum"] == LIMITS.replay
    assert schemas["ReplayRequest"]["properties"]["limit"]["maximum"] == LIMITS.replay
    assert options["epoch"]["maxLength"] == LIMITS.epoch
    one_filter = schemas["Filters"]["oneOf"][0]["properties"]
    assert one_filter["searchText"]["maxLength"] == LIMITS.search
    assert one_filter["pattern"]["maxLength"] == LIMITS.pattern
    assert one_filter["eventTypes"]["maxItems"] == LIMITS.values
    assert schemas["Filters"]["oneOf"][1]["maxItems"] == LIMITS.filters
    # The client asks for pages of streams as large as the hub gives.
    assert http.MAX_LIST == LIMITS.list_page


@pytest.mark.parametrize(
    "name", ["maxHistorySize", "bufferSize", "heartbeatInterval", "maxClients", "retentionPeriod"]
)
async def test_the_documented_stream_config_bounds_are_the_hubs(
    http: httpx.AsyncClient, name: str
) -> None:
    config = openapi_document(HubConfig())["components"]["schemas"]["StreamConfig"]["properties"]
    schema = (
        config["persistence"]["properties"][name] if name == "retentionPeriod" else config[name]
    )

    def body(value: int) -> dict[str, Any]:
        given = {"persistence": {name: value}} if name == "retentionPeriod" else {name: value}
        return {"config": given}

    for value in (schema["minimum"], schema["maximum"]):
        assert (await http.post("/api/streams", json=body(value))).status_code == 201
    for value in (schema["minimum"] - 1, schema["maximum"] + 1):
        refused = await http.post("/api/streams", json=body(value))
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_config"
