"""The OpenAPI document at ``/api/openapi.json`` and the routes the app registers agree."""

from __future__ import annotations

import re
from typing import Any

import httpx
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


def test_the_documented_limits_are_the_routes_limits() -> None:
    from trio_stream.hub import openapi, polling, rest

    assert openapi.MAX_LIST == rest.MAX_LIST
    assert openapi.MAX_HISTORY_LIMIT == rest.MAX_HISTORY_LIMIT == polling.MAX_LIMIT
