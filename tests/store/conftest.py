import contextlib

import coredis
import pytest
from redis_helpers import RedisServer, free_port, redis_cluster

from trio_stream.events import EventType, Output, Status, make_event
from trio_stream.store import SessionInfo, open_store, segments


def lines(session, first, texts, *, source="stdout", ts=1000.0):
    """Placed output events for ``texts`` starting at offset ``first``."""
    return [
        make_event(
            EventType.OUTPUT,
            Output(source, text, line=first + i),
            session=session,
            offset=first + i,
            ts=ts + i,
        )
        for i, text in enumerate(texts)
    ]


def status(session, offset, text, ts=2000.0):
    return make_event(EventType.STATUS, Status(text), session=session, offset=offset, ts=ts)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One Redis for the whole run (each test empties it first)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster_nodes(tmp_path_factory):
    """A Redis Cluster of three masters for the whole run (each test empties it first)."""
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as servers:
        yield servers


async def flush_redis(*servers):
    for server in servers:
        async with coredis.Redis(unix_socket_path=server.socket_path) as client:
            await client.flushall()


@contextlib.asynccontextmanager
async def open_test_store(request, kind, tmp_path):
    """A fresh, empty store of ``kind``: memory, sqlite, sqlite-segments (every write's
    chunks in segment files of at most 4 KB), redis or redis-cluster."""
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        await flush_redis(server)
        url = server.unix_url
    elif kind == "redis-cluster":
        servers = request.getfixturevalue("redis_cluster_nodes")
        await flush_redis(*servers)
        # Two seeds of three: the client learns the third from them.
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in servers[:2])
    else:
        if kind == "sqlite-segments":
            monkeypatch = request.getfixturevalue("monkeypatch")
            monkeypatch.setattr(segments, "EXTERNAL_BYTES", 1)
            monkeypatch.setattr(segments, "SEGMENT_BYTES", 4096)
        url = "memory:" if kind == "memory" else f"sqlite:{tmp_path / 'store.db'}"
    async with open_store(url) as opened:
        yield opened


@pytest.fixture(params=["memory", "sqlite", "sqlite-segments", "redis"])
async def store(request, tmp_path):
    async with open_test_store(request, request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
def info():
    return SessionInfo("build-1", command=["make", "-j4"], cwd="/src", created=1000.0)
