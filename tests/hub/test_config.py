"""Hub settings: parsing listen addresses, tokens, origins and the ``serve:`` mapping."""

from __future__ import annotations

import pytest

from trio_stream.hub.config import HubConfig, HubConfigError, Listen, TokenSpec


@pytest.mark.parametrize(
    ("text", "listen"),
    [
        ("127.0.0.1:3001", Listen("127.0.0.1", 3001)),
        (":0", Listen("127.0.0.1", 0)),
        ("[::1]:80", Listen("::1", 80)),
        ("0.0.0.0:8080", Listen("0.0.0.0", 8080)),
        ("unix:/run/hub.sock", Listen(path="/run/hub.sock")),
    ],
)
def test_listen_parses(text: str, listen: Listen) -> None:
    assert Listen.parse(text) == listen


@pytest.mark.parametrize("text", ["localhost", "host:port", "unix:", "1.2.3.4:70000"])
def test_bad_listen_is_refused_naming_it(text: str) -> None:
    with pytest.raises(HubConfigError, match="listen"):
        Listen.parse(text)


def test_loopback_detection() -> None:
    assert Listen.parse("127.0.0.2:1").is_loopback and Listen.parse("[::1]:1").is_loopback
    assert Listen.parse("unix:/x").is_loopback and Listen("localhost", 1).is_loopback
    assert not Listen.parse("0.0.0.0:1").is_loopback


def test_binding_beyond_loopback_needs_a_token_or_insecure() -> None:
    exposed = (Listen("0.0.0.0", 3001),)
    with pytest.raises(HubConfigError, match="--token"):
        HubConfig(listen=exposed).check_exposure()
    HubConfig(listen=exposed, insecure=True).check_exposure()
    HubConfig(listen=exposed, tokens=(TokenSpec("long-enough"),)).check_exposure()


def test_from_mapping_reads_every_kind_of_value() -> None:
    config = HubConfig.from_mapping(
        {
            "listen": ["127.0.0.1:0", "unix:/run/tstream/hub.sock"],
            "tokens": ["secret-token", {"token": "reader-1234", "scopes": ["read"]}],
            "cors-origins": "https://App.example",
            "heartbeat": "15s",
            "idle_timeout": 0,
            "max-clients-per-stream": 5,
            "compression": False,
            "read-only": True,
        },
        insecure=True,
        heartbeat=None,
    )
    assert [str(x) for x in config.listen] == ["127.0.0.1:0", "unix:/run/tstream/hub.sock"]
    assert config.tokens[1].scopes == {"read"}
    assert config.cors_origins == ("https://app.example",)
    assert config.heartbeat == 15.0 and config.idle_timeout == 0
    assert config.max_clients_per_stream == 5 and config.compression is False
    assert config.insecure is True and config.read_only is True


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"colour": 1}, "serve.colour: unknown setting"),
        ({"heartbeat": "soon"}, "serve.heartbeat"),
        ({"heartbeat": -1}, "heartbeat"),
        ({"max_connections": "many"}, "serve.max_connections"),
        ({"tokens": ["short"]}, "at least 8"),
        ({"tokens": [{"token": "long-enough", "scopes": ["admin"]}]}, "'admin'"),
        ({"cors_origins": ["example.com"]}, "scheme://host"),
        ({"insecure": "yes"}, "serve.insecure"),
        ({"read_only": 1}, "serve.read_only: expected true or false"),
        ({"tick": float("nan")}, "tick"),
    ],
)
def test_from_mapping_names_bad_settings(values: dict, names: str) -> None:
    with pytest.raises(HubConfigError) as refused:
        HubConfig.from_mapping(values)
    assert names in str(refused.value)


def test_from_mapping_needs_a_mapping() -> None:
    with pytest.raises(HubConfigError, match="mapping"):
        HubConfig.from_mapping(["x"])  # type: ignore[arg-type]
