"""One parser of hub addresses for every client and command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trio_stream.client import HubAddress, parse_hub_address


@pytest.mark.parametrize(
    ("text", "http_url", "ws_url"),
    [
        ("http://127.0.0.1:3001", "http://127.0.0.1:3001", "ws://127.0.0.1:3001/r"),
        ("ws://hub:80", "http://hub:80", "ws://hub:80/r"),
        ("https://hub.example", "https://hub.example", "wss://hub.example/r"),
        ("wss://hub.example:8443/", "https://hub.example:8443", "wss://hub.example:8443/r"),
        (
            "https://example.org/tstream/",
            "https://example.org/tstream",
            "wss://example.org/tstream/r",
        ),
        ("unix:/run/hub.sock", "http://localhost", "ws://localhost/r"),
        ("http+unix:///run/hub.sock", "http://localhost", "ws://localhost/r"),
    ],
)
def test_every_address_form_gives_the_same_urls_to_every_client(
    text: str, http_url: str, ws_url: str
) -> None:
    address = parse_hub_address(text)
    assert (address.text, address.http_url, address.ws_url("/r")) == (text, http_url, ws_url)


def test_a_unix_address_keeps_its_socket_path() -> None:
    assert parse_hub_address("unix:/run/hub.sock") == HubAddress(
        "unix:/run/hub.sock", False, "localhost", "/run/hub.sock"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("127.0.0.1:3001", "use http://HOST:PORT"),
        ("ftp://hub", "use http://HOST:PORT"),
        ("http://hub:99999", "port"),
        ("unix:", "socket path is missing"),
        ("http://hub/?a=1", "without a query"),
    ],
)
def test_bad_addresses_are_named(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_hub_address(text)


@pytest.mark.parametrize("command", ["attach", "ls", "run"])
def test_every_command_takes_https_and_refuses_the_same_bad_address(command: str) -> None:
    args = {"attach": ["attach", "x"], "ls": ["ls"], "run": ["run", "--", "true"]}[command]
    tstream = [sys.executable, "-c", "from trio_stream.cli import main; main()"]
    bad = subprocess.run(
        [*tstream, *args[:1], "--hub", "ftp://hub", *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "Invalid value for '--hub'" in bad.stderr or "Invalid value for --hub" in bad.stderr
    assert "use http://HOST:PORT, https://HOST" in bad.stderr
