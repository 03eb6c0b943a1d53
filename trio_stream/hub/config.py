"""The hub's settings: listen addresses, tokens, origins and every limit, with defaults.

:class:`HubConfig` is built from keyword arguments, from the ``serve:`` mapping of a
configuration file (:meth:`HubConfig.from_mapping`, which names each bad key) and from the
``tstream serve`` options, which override the file.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from typing import Any, Final, final

import attrs

from ..durations import parse_duration
from ..store.retention import DEFAULT_MAX_EVENTS, DEFAULT_PRUNE_EVERY, DEFAULT_RETENTION

DEFAULT_LISTEN: Final = "127.0.0.1:3001"
SCOPES: Final = frozenset({"read", "publish"})
PROXY_HEADERS: Final = ("x-forwarded", "forwarded")
UNIX_PEERS: Final = "unix"


class HubConfigError(ValueError):
    """A hub setting is invalid; the message names it."""


@final
@attrs.frozen
class TokenSpec:
    """A bearer token and what it may do (``read``, ``publish``)."""

    token: str = attrs.field(repr=False)
    scopes: frozenset[str] = SCOPES


@final
@attrs.frozen
class Listen:
    """One address to bind: TCP ``host:port`` or a Unix socket path."""

    host: str = "127.0.0.1"
    port: int = 3001
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> Listen:
        """Parse ``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``unix:PATH``.

        Raises:
            HubConfigError: naming the text.
        """
        if text.startswith("unix:"):
            path = text[5:]
            if not path:
                raise HubConfigError(f"listen {text!r}: unix: needs a socket path")
            return cls(path=path)
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit():
            raise HubConfigError(
                f"listen {text!r}: use HOST:PORT (for example 127.0.0.1:3001) or unix:PATH"
            )
        port = int(port_text)
        if port > 65535:
            raise HubConfigError(f"listen {text!r}: port must be 0 to 65535")
        host = host.strip("[]") or "127.0.0.1"
        return cls(host=host, port=port)

    @property
    def is_loopback(self) -> bool:
        """True for a Unix socket or a loopback host (reachable from this machine only)."""
        if self.path is not None:
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise HubConfigError(f"{attribute.name}: must be a positive number, not {value!r}")


def _non_negative(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise HubConfigError(f"{attribute.name}: must be zero or more, not {value!r}")


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in choices:
            raise HubConfigError(f"{attribute.name}: use {' or '.join(choices)}, not {value!r}")

    return check


@final
@attrs.frozen(kw_only=True)
class HubConfig:
    """Everything the hub needs to know.

    Attributes:
        listen: addresses to bind.
        store: the store URL (``tstream serve`` opens it; an embedding caller passes its own).
        tokens: accepted bearer tokens; none means no authentication (loopback only,
            unless ``insecure``).
        cors_origins: origins allowed to call the API from a browser and to open WebSockets.
        insecure: allow binding beyond loopback without any token.
        max_clients_per_stream: subscribers of one stream (WebSocket and SSE).
        max_connections: open WebSocket and SSE connections in all.
        header_timeout: a connection that sends no complete request head within this
            long of connecting (or of its previous answer) is closed (seconds).
        max_pending: connections waiting for a request head; beyond it, the one that has
            waited longest is closed.
        trusted_proxies: addresses, networks (CIDR) or ``unix`` (the Unix sockets) whose
            forwarding headers tell the client's address, scheme and host.
        proxy_headers: which forwarding headers the trusted proxies set:
            ``x-forwarded`` (``X-Forwarded-For``/``-Proto``/``-Host``) or ``forwarded``.
        heartbeat: seconds between heartbeats (WebSocket ``heartbeat`` frame, SSE event).
        idle_timeout: a WebSocket client that sends nothing for this long after a heartbeat
            is dropped (0: never).
        history: events kept in memory per live stream.
        client_queue: events waiting for one client before it is cut as a slow consumer.
        write_timeout: seconds a cut client's last frame may take before it is dropped.
        tick: seconds a woken client waits so that one frame carries the whole tick.
        max_message_size: largest WebSocket message a client may send (bytes).
        max_body_size: largest HTTP request body (bytes).
        max_batch: most events in one publish request.
        max_poll_timeout: longest wait of a long poll (seconds).
        requests_per_minute: HTTP requests and WebSocket messages per client address.
        connections_per_minute: new WebSocket/SSE connections per client address.
        publish_per_second: events per second one publisher address may publish.
        sse_retry: the reconnection delay sent to EventSource clients (milliseconds).
        compression_threshold: WebSocket messages and history responses smaller than this
            are sent uncompressed (bytes).
        compression: offer permessage-deflate to WebSocket clients that ask for it.
        retention: finished sessions idle for longer than this are pruned (seconds).
        max_events: sessions are trimmed to their last this many events (0: no limit).
        prune_every: seconds between retention passes (0: never prune).
        read_only: refuse every request that would change anything (publish, create,
            delete, replay to a client) with 403 ``read_only``, whatever the token: the
            hub ``tstream run`` serves its session with, whose events come from the
            session alone.
    """

    listen: tuple[Listen, ...] = (Listen(),)
    store: str | None = None
    tokens: tuple[TokenSpec, ...] = ()
    cors_origins: tuple[str, ...] = ()
    insecure: bool = False
    max_clients_per_stream: int = attrs.field(default=100, validator=_positive)
    max_connections: int = attrs.field(default=1000, validator=_positive)
    header_timeout: float = attrs.field(default=10.0, validator=_positive)
    max_pending: int = attrs.field(default=1000, validator=_positive)
    trusted_proxies: tuple[str, ...] = attrs.field(
        default=(), converter=lambda values: tuple(parse_trusted_proxy(v) for v in values)
    )
    proxy_headers: str = attrs.field(default="x-forwarded", validator=_one_of(PROXY_HEADERS))
    heartbeat: float = attrs.field(default=30.0, validator=_positive)
    idle_timeout: float = attrs.field(default=30.0, validator=_non_negative)
    history: int = attrs.field(default=10_000, validator=_positive)
    client_queue: int = attrs.field(default=10_000, validator=_positive)
    write_timeout: float = attrs.field(default=10.0, validator=_positive)
    tick: float = attrs.field(default=0.005, validator=_non_negative)
    max_message_size: int = attrs.field(default=64 * 1024, validator=_positive)
    max_body_size: int = attrs.field(default=4 * 1024 * 1024, validator=_positive)
    max_batch: int = attrs.field(default=10_000, validator=_positive)
    max_poll_timeout: float = attrs.field(default=60.0, validator=_positive)
    requests_per_minute: float = attrs.field(default=6000.0, validator=_positive)
    connections_per_minute: float = attrs.field(default=600.0, validator=_positive)
    publish_per_second: float = attrs.field(default=1_000_000.0, validator=_positive)
    sse_retry: int = attrs.field(default=2000, validator=_non_negative)
    compression_threshold: int = attrs.field(default=1024, validator=_non_negative)
    compression: bool = True
    retention: float = attrs.field(default=DEFAULT_RETENTION, validator=_non_negative)
    max_events: int = attrs.field(default=DEFAULT_MAX_EVENTS, validator=_non_negative)
    prune_every: float = attrs.field(default=DEFAULT_PRUNE_EVERY, validator=_non_negative)
    read_only: bool = False

    @property
    def auth_required(self) -> bool:
        """Whether clients must present a token."""
        return bool(self.tokens)

    def check_exposure(self) -> None:
        """Refuse binding beyond loopback with no token unless ``insecure`` is set.

        Raises:
            HubConfigError: naming the exposed address.
        """
        if self.tokens or self.insecure:
            return
        for listen in self.listen:
            if not listen.is_loopback:
                raise HubConfigError(
                    f"listen {listen}: binding beyond loopback needs --token "
                    "(or --insecure to serve without authentication)"
                )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], **overrides: Any) -> HubConfig:
        """Build a config from a ``serve:`` mapping (YAML keys use ``-`` or ``_``).

        Durations accept ``30s``/``500ms`` forms; ``listen`` and ``cors_origins`` take a
        string or a list; ``tokens`` takes strings (all scopes) or
        ``{token, scopes}`` mappings.

        Args:
            values: the mapping.
            overrides: keyword values that win over the mapping (CLI options).

        Raises:
            HubConfigError: naming each unknown or bad key.
        """
        if not isinstance(values, Mapping):
            raise HubConfigError(f"serve: expected a mapping, got {type(values).__name__}")
        fields = {f.name: f for f in attrs.fields(cls)}
        kwargs: dict[str, Any] = {}
        errors: list[str] = []
        for raw_key, value in values.items():
            key = str(raw_key).replace("-", "_")
            if key not in fields:
                errors.append(f"serve.{raw_key}: unknown setting")
                continue
            try:
                kwargs[key] = _coerce(key, value, fields[key])
            except HubConfigError as exc:
                errors.append(f"serve.{raw_key}: {exc}")
        if errors:
            raise HubConfigError("; ".join(errors))
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)


_DURATIONS: Final = frozenset(
    {
        "heartbeat",
        "idle_timeout",
        "header_timeout",
        "write_timeout",
        "tick",
        "max_poll_timeout",
        "retention",
        "prune_every",
    }
)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return list(value)
    raise HubConfigError(f"expected a string or a list, got {type(value).__name__}")


def parse_token(value: Any) -> TokenSpec:
    """A token from a string (all scopes) or a ``{token, scopes}`` mapping.

    Raises:
        HubConfigError: for an empty token or an unknown scope.
    """
    if isinstance(value, str):
        token, scopes = value, list(SCOPES)
    elif isinstance(value, Mapping) and isinstance(value.get("token"), str):
        token, scopes = value["token"], _as_list(value.get("scopes", list(SCOPES)))
    else:
        raise HubConfigError("a token is a string or a mapping with a 'token' string")
    if len(token) < 8:
        raise HubConfigError("a token must be at least 8 characters long")
    bad = sorted(str(s) for s in scopes if s not in SCOPES)
    if bad:
        raise HubConfigError(f"unknown scope {bad[0]!r} (use read, publish)")
    return TokenSpec(token, frozenset(scopes))


def _coerce(key: str, value: Any, field: attrs.Attribute[Any]) -> Any:
    if key == "listen":
        return tuple(Listen.parse(str(v)) for v in _as_list(value))
    if key == "tokens":
        return tuple(parse_token(v) for v in _as_list(value))
    if key == "cors_origins":
        return tuple(check_origin(str(v)) for v in _as_list(value))
    if key == "trusted_proxies":
        return tuple(parse_trusted_proxy(str(v)) for v in _as_list(value))
    if key == "proxy_headers":
        if value not in PROXY_HEADERS:
            raise HubConfigError(f"use {' or '.join(PROXY_HEADERS)}, not {value!r}")
        return value
    if key in ("insecure", "compression", "read_only"):
        if not isinstance(value, bool):
            raise HubConfigError(f"expected true or false, got {value!r}")
        return value
    if key == "store":
        if not isinstance(value, str):
            raise HubConfigError(f"expected a store URL, got {value!r}")
        return value
    if key in _DURATIONS and isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise HubConfigError(str(exc)) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HubConfigError(f"expected a number, got {value!r}")
    return int(value) if field.type in ("int", int) else float(value)


def parse_trusted_proxy(text: str) -> str:
    """``text`` (an address, a network in CIDR form, or ``unix``) in canonical form.

    Raises:
        HubConfigError: naming the text.
    """
    if text == UNIX_PEERS:
        return text
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise HubConfigError(
            f"trusted proxy {text!r}: use an address (10.0.0.2), a network (10.0.0.0/24) or unix"
        ) from None


def check_origin(origin: str) -> str:
    """Return ``origin`` (``scheme://host[:port]`` or ``*``) or raise HubConfigError."""
    if origin == "*":
        return origin
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        raise HubConfigError(
            f"CORS origin {origin!r}: use scheme://host[:port], such as https://example.com"
        )
    return origin.lower()
