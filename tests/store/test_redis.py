"""What the Redis store adds to the contract: its URLs, several writers, outages, the epoch."""

import os
import signal
import subprocess
import sys

import coredis
import pytest
import trio
from redis_helpers import RedisServer, free_port

from trio_stream.store import (
    HistoryQuery,
    SessionInfo,
    StoreError,
    UnknownSessionError,
    open_store,
    parse_store_url,
)
from trio_stream.store.base import RowStore
from trio_stream.store.redis_url import parse_redis_url

from .conftest import flush_redis, lines


@pytest.fixture
async def redis_url(redis_server):
    await flush_redis(redis_server)
    return redis_server.unix_url


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of the test's own, which it may stop and start again."""
    server = RedisServer(tmp_path / "redis", free_port()).start()
    yield server
    server.stop()


def test_redis_urls_name_server_database_socket_and_cluster(monkeypatch):
    monkeypatch.delenv("TSTREAM_REDIS_PASSWORD", raising=False)
    target = parse_redis_url("redis://db.example:6380/2")
    assert (target.nodes, target.db, target.ssl, target.cluster) == (
        (("db.example", 6380),),
        2,
        False,
        False,
    )
    assert parse_redis_url("rediss://db.example").ssl
    assert parse_redis_url("redis://db.example").nodes == (("db.example", 6379),)
    unix = parse_redis_url("unix:///run/redis/redis.sock?db=3")
    assert (unix.unix_path, unix.db) == ("/run/redis/redis.sock", 3)
    assert parse_redis_url("redis+unix:///run/r.sock").unix_path == "/run/r.sock"
    cluster = parse_redis_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
    assert cluster.cluster
    assert cluster.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    tuned = parse_redis_url("redis://h/0?prefix=ci.build&timeout=0.5")
    assert (tuned.prefix, tuned.timeout) == ("ci.build", 0.5)
    assert parse_store_url("redis://h:1/0").kind == "redis"


def test_password_comes_from_the_url_or_the_environment_and_is_never_shown(monkeypatch):
    monkeypatch.setenv("TSTREAM_REDIS_PASSWORD", "from-env")
    assert parse_redis_url("redis://h").password == "from-env"
    target = parse_redis_url("redis://app:s%40cret@h/1")
    assert (target.username, target.password) == ("app", "s@cret")
    assert "cret" not in target.shown and "cret" not in repr(target)
    assert target.shown == "redis://app:***@h/1"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://", "missing host"),
        ("redis://h:99999", "bad port"),
        ("redis://h:x", "bad port"),
        ("redis://h/x", "bad database"),
        ("redis://a:1,b:2", "several hosts need redis\\+cluster"),
        ("redis+cluster://a:1/3", "only database 0"),
        ("unix://", "missing socket path"),
        ("redis://h?colour=red", "unknown parameter"),
        ("redis://h?prefix={x}", "prefix must be"),
        ("redis://h?timeout=0", "timeout must be"),
        ("redis://h?ca=/etc/ca.pem", "ca= needs TLS"),
    ],
)
def test_bad_redis_urls_are_named(url, message):
    with pytest.raises(StoreError, match=message):
        parse_store_url(url)


async def test_every_key_of_a_session_shares_its_hash_tag(redis_url, redis_server):
    async with open_store(redis_url) as store:
        await store.create_session(SessionInfo("build-1"))
        await store.append("build-1", lines("build-1", 0, ["a", "b"]))
    async with coredis.Redis(unix_socket_path=redis_server.socket_path) as client:
        keys = sorted(k.decode() for k in await client.keys("*"))
    assert keys == [
        "tstream:epoch",
        "tstream:ids",
        "tstream:sessions",
        "tstream:{build-1}:e",
        "tstream:{build-1}:m",
    ]


async def test_two_writers_never_reuse_an_offset(redis_url):
    async with open_store(redis_url) as one, open_store(redis_url) as two:
        await one.create_session(SessionInfo("s"))
        outcomes: list[str] = []

        async def write(store, text):
            try:
                await store.append("s", lines("s", 0, [f"{text} {i}" for i in range(500)]))
                outcomes.append("ok")
            except StoreError as exc:
                outcomes.append(str(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, one, "one")
            nursery.start_soon(write, two, "two")
        assert sorted(outcomes) == ["ok", "session s: offset 0 does not follow 499"]
        # The loser places its batch after what is there, as a publisher resuming does.
        last = await two.last_offset("s")
        await two.append("s", lines("s", last + 1, ["late"]))
        events = await one.read("s")
        assert [e.offset for e in events] == list(range(501))
        assert len({e.data.text.split()[0] for e in events[:500]}) == 1


async def test_a_batch_stored_already_may_be_appended_again(redis_url):
    async with open_store(redis_url) as store:
        await store.create_session(SessionInfo("s"))
        batch = lines("s", 0, [f"line {i}" for i in range(1500)])
        await store.append("s", batch)
        # A writer whose reply was lost to a timeout tries again: nothing is added twice.
        await store.append("s", batch)
        assert await store.count("s") == 1500
        with pytest.raises(StoreError, match="offset 0 does not follow 1499"):
            await store.append("s", lines("s", 0, [f"other {i}" for i in range(1500)]))


async def test_a_gap_is_refused_unless_the_session_holds_nothing(redis_url):
    async with open_store(redis_url) as store:
        await store.create_session(SessionInfo("imported"))
        # A trimmed session's events start late: its first offsets are simply gone.
        await store.append("imported", lines("imported", 10, ["k", "l"]))
        assert (await store.get_session("imported")).events == 2
        with pytest.raises(StoreError, match="offset 13 does not follow 11"):
            await store.append("imported", lines("imported", 13, ["n"]))
        assert [e.offset for e in await store.read("imported")] == [10, 11]


async def test_rows_are_read_from_the_chunks_above_the_floor(redis_url):
    async with open_store(redis_url) as store:
        assert isinstance(store, RowStore)
        await store.create_session(SessionInfo("s"))
        await store.append("s", lines("s", 0, [f"line {i}" for i in range(2500)]))
        await store.compact("s", 1200)
        rows = await store.read_rows("s", after=-1, limit=100)
        assert rows[0].offset == 1300 and rows[0].data.text == "line 1300"
        rows = await store.read_rows("s", after=2000)
        assert [e.offset for e in rows] == list(range(2001, 2500))
        page = await store.read("s", HistoryQuery(after=1999, limit=3))
        assert [e.offset for e in page] == [2000, 2001, 2002]
        assert [e.offset for e in await store.read("s", HistoryQuery(last=2))] == [2498, 2499]


async def test_prefixes_keep_deployments_apart(redis_url):
    async with open_store(redis_url) as default, open_store(redis_url + "?prefix=ci") as ci:
        await default.create_session(SessionInfo("s"))
        assert await ci.list_sessions() == []
        with pytest.raises(UnknownSessionError):
            await ci.get_session("s")


async def test_an_unreachable_redis_fails_at_once(tmp_path):
    with trio.fail_after(5):
        with pytest.raises(StoreError, match="Redis store unix://"):
            async with open_store(f"unix://{tmp_path}/none.sock"):
                pass


async def test_a_stopped_redis_fails_each_call_within_the_timeout(own_redis):
    async with open_store(own_redis.url + "?timeout=0.5") as store:
        await store.create_session(SessionInfo("s"))
        own_redis.stop()
        with trio.fail_after(3):
            with pytest.raises(StoreError, match=r"Redis store redis://127\.0\.0\.1"):
                await store.get_session("s")
        with trio.fail_after(3):
            with pytest.raises(StoreError):
                await store.append("s", lines("s", 0, ["a"]))


async def test_a_stalled_redis_fails_within_the_timeout(own_redis):
    async with open_store(own_redis.unix_url + "?timeout=0.3") as store:
        await store.create_session(SessionInfo("s"))
        own_redis.pause()
        try:
            with trio.fail_after(3):
                with pytest.raises(StoreError, match=r"did not answer within 0\.3s"):
                    await store.list_sessions()
        finally:
            own_redis.resume()
        # The store works again once Redis answers.
        assert [s.id for s in await store.list_sessions()] == ["s"]


async def test_opening_a_stalled_redis_fails_within_the_timeout(own_redis):
    own_redis.pause()
    try:
        with trio.fail_after(3):
            with pytest.raises(StoreError, match=r"did not answer within 0\.3s"):
                async with open_store(own_redis.url + "?timeout=0.3"):
                    pass
    finally:
        own_redis.resume()


async def test_a_restarted_redis_is_reconnected_and_a_lost_history_changes_the_epoch(own_redis):
    async with open_store(own_redis.url + "?timeout=2") as store:
        store.epoch_check_interval = 0
        await store.create_session(SessionInfo("s"))
        await store.append("s", lines("s", 0, ["a"]))
        before = store.epoch
        own_redis.stop(signal.SIGKILL)
        own_redis.start()
        # Without persistence the session is gone, and the epoch says so.
        with pytest.raises(UnknownSessionError):
            await store.get_session("s")
        assert store.epoch != before
        await store.create_session(SessionInfo("s"))
        assert await store.last_offset("s") == -1


def test_every_session_command_takes_a_redis_url(redis_server, tmp_path):
    trio.run(flush_redis, redis_server)
    tstream = [sys.executable, "-c", "from trio_stream.cli import main; main()"]
    env = {**os.environ, "TSTREAM_STORE": redis_server.url}

    def cli(*args, input=None):
        done = subprocess.run(
            [*tstream, *args], env=env, capture_output=True, text=True, timeout=60, input=input
        )
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    assert cli("run", "--id", "r-1", "--", "sh", "-c", "echo one; echo two") == "one\ntwo\n"
    assert "r-1" in cli("ls")
    assert cli("show", "r-1") == "one\ntwo\n"
    assert cli("attach", "r-1") == "one\ntwo\n"
    exported = cli("export", "r-1")
    assert len(exported.splitlines()) == 4
    assert cli("import", "--id", "r-2", "-", input=exported).strip() == "r-2"
    assert cli("show", "--store", redis_server.unix_url, "r-2") == "one\ntwo\n"
    assert cli("replay", "--max-idle", "0", "r-2") == "one\ntwo\n"
    assert "would remove 0 session(s)" in cli("prune", "--dry-run")
    down = subprocess.run(
        [*tstream, "ls", "--store", "redis://127.0.0.1:1/0?timeout=1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 125
    assert "Redis store redis://127.0.0.1:1/0" in down.stderr


async def test_a_password_from_the_url_or_the_environment_opens_the_store(tmp_path, monkeypatch):
    server = RedisServer(tmp_path / "redis", free_port()).start("--requirepass", "s3cret")
    try:
        async with open_store(f"redis://:s3cret@127.0.0.1:{server.port}/0") as store:
            await store.create_session(SessionInfo("s"))
        monkeypatch.setenv("TSTREAM_REDIS_PASSWORD", "s3cret")
        async with open_store(server.unix_url) as store:
            assert [s.id for s in await store.list_sessions()] == ["s"]
        monkeypatch.setenv("TSTREAM_REDIS_PASSWORD", "wrong")
        with pytest.raises(StoreError) as refused:
            async with open_store(server.url):
                pass
        assert "wrong" not in str(refused.value)
    finally:
        server.stop()


def _certificates(directory):
    """A certificate authority and a certificate for 127.0.0.1 signed by it."""
    directory.mkdir()

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key"),
        *("-out", "ca.crt", "-days", "2", "-subj", "/CN=tstream test CA"),
    )
    openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key"),
        *("-out", "server.csr", "-subj", "/CN=127.0.0.1"),
    )
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf"),
    )
    return directory


async def test_rediss_checks_the_server_certificate(tmp_path):
    certs = _certificates(tmp_path / "certs")
    port = free_port()
    server = RedisServer(tmp_path / "redis", free_port()).start(
        *("--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"),
        *("--tls-cert-file", str(certs / "server.crt")),
        *("--tls-key-file", str(certs / "server.key")),
        *("--tls-ca-cert-file", str(certs / "ca.crt")),
    )
    try:
        url = f"rediss://127.0.0.1:{port}/0?timeout=2"
        async with open_store(f"{url}&ca={certs / 'ca.crt'}") as store:
            await store.create_session(SessionInfo("s"))
            assert [s.id for s in await store.list_sessions()] == ["s"]
        # Not signed by an authority the system knows: refused.
        with pytest.raises(StoreError, match="rediss://127"):
            async with open_store(url):
                pass
    finally:
        server.stop()
