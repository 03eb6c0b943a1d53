"""Behind a reverse proxy: forwarding headers believed from trusted peers only, and the
README's nginx configuration run for real (SSE unbuffered, WebSocket upgrades, limits per
forwarded client)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from trio_stream.hub.config import HubConfig, HubConfigError, Listen, TokenSpec
from trio_stream.hub.proxy import TrustedProxies, client_address
from trio_stream.hub.server import ServedHub

from .conftest import StartHub, base_url, create, output, receive_until
from .test_serve import TSTREAM, _start

README = Path(__file__).resolve().parents[2] / "README.rst"
StartNginx = Callable[[ServedHub], Awaitable[str]]
TOKEN = "proxy-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Requests per minute for the limit tests: a burst of 6 (see KeyedLimiter.per_minute).
RATE = 60
BURST = 6


def readme_nginx_config() -> str:
    """The README's nginx configuration (the literal block after "nginx (")."""
    text = README.read_text()
    start = text.index("\nnginx (")
    block = re.search(r"::\n\n((?:    .*\n|\n)+)", text[start:])
    assert block, "no nginx configuration in the README"
    return "\n".join(line[4:] for line in block.group(1).splitlines())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def nginx_for(tmp_path: Path) -> Iterator[StartNginx]:
    """Start nginx with the README's configuration in front of a hub; yields a function
    taking the hub and returning nginx's base URL."""
    processes: list[subprocess.Popen[bytes]] = []

    async def start(served: ServedHub) -> str:
        executable = shutil.which("nginx") or "/usr/sbin/nginx"
        assert os.path.exists(executable), "nginx is not installed (apt-get install nginx)"
        port = free_port()
        site = readme_nginx_config()
        site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
        site = site.replace("127.0.0.1:3001", str(served.addresses[0]))
        temp = "\n".join(
            f"    {kind}_temp_path {tmp_path}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root;\n" if os.geteuid() == 0 else ""
        (tmp_path / "nginx.conf").write_text(
            f"{user}pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
            "worker_processes 1;\nevents { worker_connections 512; }\n"
            f"http {{\n    access_log off;\n{temp}\n{site}\n}}\n"
        )
        process = subprocess.Popen(
            [
                executable,
                "-p",
                str(tmp_path),
                "-e",
                str(tmp_path / "error.log"),
                "-c",
                str(tmp_path / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            stderr=subprocess.PIPE,
        )
        processes.append(process)
        with trio.fail_after(10):
            while True:
                assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.02)
                else:
                    await stream.aclose()
                    return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


def client_from(address: str, base: str, **kwargs: object) -> httpx.AsyncClient:
    """An HTTP client whose connections come from ``address`` (any 127.x.y.z is loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=base, transport=transport, timeout=10, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def proxied(
    start_hub: StartHub, nginx_for: StartNginx
) -> AsyncIterator[tuple[ServedHub, str]]:
    served = await start_hub(trusted_proxies=("127.0.0.1",), requests_per_minute=RATE)
    url = await nginx_for(served)
    yield served, url


async def until_limited(client: httpx.AsyncClient, **kwargs: object) -> int:
    """Requests ``client`` gets answered before a 429."""
    for count in range(BURST + 5):
        answer = await client.get("/api/streams", **kwargs)  # type: ignore[arg-type]
        if answer.status_code == 429:
            return count
        assert answer.status_code == 200, answer.text
    raise AssertionError("never limited")


# -- through nginx -----------------------------------------------------------------------


async def test_sse_through_nginx_arrives_before_the_stream_ends(
    proxied: tuple[ServedHub, str],
) -> None:
    served, url = proxied
    async with httpx.AsyncClient(base_url=base_url(served), timeout=10) as direct:
        await create(direct, "s")
        async with (
            client_from("127.0.0.2", url) as client,
            client.stream("GET", "/api/streams/s/sse") as answer,
        ):
            assert answer.status_code == 200
            lines = answer.aiter_lines()
            with trio.fail_after(5):
                async for line in lines:
                    if line.startswith("retry:"):
                        break
                published = await direct.post("/api/streams/s/events", json=[output("hello")])
                assert published.status_code == 200
                async for line in lines:
                    if line.startswith("data:") and "hello" in line:
                        break
            listing = (await direct.get("/api/streams/s/clients")).json()
    assert [c["remote"] for c in listing["clients"]] == ["127.0.0.2"]


async def test_websocket_upgrade_through_nginx(proxied: tuple[ServedHub, str]) -> None:
    served, url = proxied
    async with httpx.AsyncClient(base_url=base_url(served), timeout=10) as direct:
        await create(direct, "w", 1)
        ws_url = url.replace("http://", "ws://") + "/api/streams/w/ws?after=-1"
        async with open_websocket_url(ws_url) as ws:
            frames = await receive_until(ws, "event")
            assert frames[0]["type"] == "connection_ack"
            assert frames[-1]["events"][0]["data"]["text"] == "line 0"
            await ws.send_message(orjson.dumps({"type": "ping"}).decode())
            assert (await receive_until(ws, "pong"))[-1]["type"] == "pong"


async def test_limits_apply_per_forwarded_client(proxied: tuple[ServedHub, str]) -> None:
    _, url = proxied
    async with client_from("127.0.0.2", url) as first, client_from("127.0.0.3", url) as second:
        assert await until_limited(first) == BURST
        # A header naming someone else only adds to what nginx forwards: still limited.
        spoofed = await first.get("/api/streams", headers={"X-Forwarded-For": "127.0.0.9"})
        assert spoofed.status_code == 429
        assert await until_limited(second) == BURST


async def test_forwarding_headers_from_an_untrusted_peer_are_ignored(
    proxied: tuple[ServedHub, str],
) -> None:
    served, _ = proxied
    async with client_from("127.0.0.4", base_url(served)) as direct:
        assert await until_limited(direct) == BURST
        for n in range(3):
            answer = await direct.get(
                "/api/streams",
                headers={"X-Forwarded-For": f"127.0.1.{n}", "Forwarded": f"for=127.0.2.{n}"},
            )
            assert answer.status_code == 429


# -- what a trusted peer's headers change ------------------------------------------------


async def test_a_hub_without_tokens_refuses_a_client_forwarded_from_elsewhere(
    start_hub: StartHub,
) -> None:
    served = await start_hub(trusted_proxies=("127.0.0.1",))
    async with client_from("127.0.0.1", base_url(served)) as proxy:
        far = await proxy.get("/api/streams", headers={"X-Forwarded-For": "203.0.113.5"})
        near = await proxy.get("/api/streams", headers={"X-Forwarded-For": "127.0.0.7"})
    async with client_from("127.0.0.2", base_url(served)) as untrusted:
        ignored = await untrusted.get("/api/streams", headers={"X-Forwarded-For": "203.0.113.5"})
    assert far.status_code == 403 and far.json()["error"]["code"] == "forbidden_client"
    assert near.status_code == 200
    assert ignored.status_code == 200


async def test_forwarded_proto_and_host_decide_what_is_same_origin(start_hub: StartHub) -> None:
    served = await start_hub(tokens=(TokenSpec(TOKEN),), trusted_proxies=("127.0.0.1",))
    site = {"Origin": "https://hub.example.com", **AUTH}
    tls = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hub.example.com"}
    async with client_from("127.0.0.1", base_url(served)) as proxy:
        same = await proxy.post("/api/streams", json={"id": "a"}, headers={**site, **tls})
        plain = await proxy.post(
            "/api/streams",
            json={"id": "b"},
            headers={**site, **tls, "X-Forwarded-Proto": "http"},
        )
    async with client_from("127.0.0.2", base_url(served)) as untrusted:
        spoofed = await untrusted.post("/api/streams", json={"id": "c"}, headers={**site, **tls})
    assert same.status_code == 201, same.text
    assert plain.status_code == 403 and plain.json()["error"]["code"] == "forbidden_origin"
    assert spoofed.status_code == 403 and spoofed.json()["error"]["code"] == "forbidden_origin"


async def test_forwarded_mode_reads_rfc_7239_and_ignores_x_forwarded_for(
    start_hub: StartHub,
) -> None:
    served = await start_hub(trusted_proxies=("127.0.0.0/8",), proxy_headers="forwarded")
    async with client_from("127.0.0.1", base_url(served)) as proxy:
        far = await proxy.get(
            "/api/streams", headers={"Forwarded": 'for="[2001:db8::1]:4711";proto=https'}
        )
        dodged = await proxy.get("/api/streams", headers={"X-Forwarded-For": "203.0.113.5"})
    assert far.status_code == 403 and far.json()["error"]["code"] == "forbidden_client"
    # Without a Forwarded header Hypercorn falls back to X-Forwarded-For: a proxy that
    # sets Forwarded always sends one, so a client cannot get this far with its own.
    assert dodged.status_code == 403


async def test_a_trusted_unix_socket_peer_is_believed(start_hub: StartHub, tmp_path: Path) -> None:

    path = str(tmp_path / "hub.sock")
    await start_hub(listen=(Listen(path=path),), trusted_proxies=("unix",))
    transport = httpx.AsyncHTTPTransport(uds=path)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        far = await client.get("/api/streams", headers={"X-Forwarded-For": "203.0.113.5"})
        near = await client.get("/api/streams")
    assert far.status_code == 403 and near.status_code == 200


# -- sans-IO pieces ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded", "address"),
    [
        ("203.0.113.5", "203.0.113.5"),
        (" 203.0.113.5:8080 ", "203.0.113.5"),
        ('"[2001:DB8::1]:4711"', "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("unknown", "unknown"),
    ],
)
def test_forwarded_clients_become_bare_addresses(forwarded: str, address: str) -> None:
    assert client_address(forwarded) == address


def test_trusted_peers_are_matched_by_address_network_or_unix() -> None:
    async def app(*_: object) -> None:
        pass

    proxies = TrustedProxies(app, HubConfig(trusted_proxies=("10.0.0.0/24", "::1")).trusted_proxies)
    assert proxies.trusts(("10.0.0.7", 5000)) and proxies.trusts(("::ffff:10.0.0.7", 1))
    assert proxies.trusts(("::1", 5000))
    assert not proxies.trusts(("10.0.1.7", 5000)) and not proxies.trusts(None)
    assert TrustedProxies(app, ("unix",)).trusts(None)


def test_trusted_proxies_and_timeouts_come_from_the_config_file() -> None:
    config = HubConfig.from_mapping(
        {
            "trusted-proxies": ["10.0.0.2", "10.1.0.0/16", "unix"],
            "proxy-headers": "forwarded",
            "header-timeout": "3s",
            "max-pending": 20,
        }
    )
    assert config.trusted_proxies == ("10.0.0.2/32", "10.1.0.0/16", "unix")
    assert (config.proxy_headers, config.header_timeout, config.max_pending) == (
        "forwarded",
        3.0,
        20,
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trusted-proxies": "nginx"}, "trusted proxy 'nginx'"),
        ({"proxy-headers": "x-real-ip"}, "serve.proxy-headers"),
        ({"header-timeout": 0}, "header_timeout"),
        ({"max-pending": 0}, "max_pending"),
    ],
)
def test_bad_proxy_settings_are_named(values: dict[str, object], message: str) -> None:
    with pytest.raises(HubConfigError, match=re.escape(message)):
        HubConfig.from_mapping(values)


# -- the command line --------------------------------------------------------------------


async def test_tstream_serve_takes_trusted_proxies_and_the_header_timeout() -> None:
    async with trio.open_nursery() as nursery:
        process, url = await _start(
            [
                "--listen",
                "127.0.0.1:0",
                "--store",
                "memory:",
                "--trusted-proxy",
                "127.0.0.1",
                "--header-timeout",
                "500ms",
            ],
            nursery,
        )
        async with client_from("127.0.0.1", url) as proxy:
            far = await proxy.get("/api/streams", headers={"X-Forwarded-For": "203.0.113.5"})
        assert far.status_code == 403
        stalled = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
        await stalled.send_all(b"GET / HTTP/1.1\r\n")
        with trio.fail_after(5):
            assert await stalled.receive_some() == b""
        await stalled.aclose()
        process.send_signal(signal.SIGTERM)
        await process.wait()


async def test_tstream_serve_names_a_bad_trusted_proxy() -> None:
    result = await trio.run_process(
        [*TSTREAM, "serve", "--store", "memory:", "--trusted-proxy", "proxy.local"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    assert b"trusted proxy 'proxy.local'" in result.stderr
