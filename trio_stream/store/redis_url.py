"""Where a Redis store lives: the forms of its URL.

* ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`` (``rediss://`` for TLS);
* ``unix:///PATH/redis.sock[?db=N]`` or ``redis+unix:///PATH``;
* ``redis+cluster://HOST:PORT[,HOST:PORT…]`` (``rediss+cluster://`` for TLS): any
  masters of a Redis Cluster, the client learns the others from them.

Every form takes ``?prefix=NAME`` (the start of every key, default ``tstream``: several
deployments can share one Redis) and ``?timeout=SECONDS`` (how long one store call may
wait for Redis before it fails, default 5); the TLS forms take ``?ca=PATH``, the
certificate authorities to check the server's certificate against (default: the
system's). A password missing from the URL is taken from ``$TSTREAM_REDIS_PASSWORD``.
"""

from __future__ import annotations

import os
import re
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

from .base import StoreError

PASSWORD_ENV: Final = "TSTREAM_REDIS_PASSWORD"
DEFAULT_PORT: Final = 6379
DEFAULT_PREFIX: Final = "tstream"
DEFAULT_TIMEOUT: Final = 5.0
SCHEMES: Final = frozenset(
    {"redis", "rediss", "unix", "redis+unix", "redis+cluster", "rediss+cluster"}
)
_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@attrs.frozen
class RedisTarget:
    """A parsed Redis store URL.

    Attributes:
        shown: the URL without its password, for messages.
        nodes: ``(host, port)`` pairs: one for a single server, the seeds of a cluster.
        unix_path: the server's Unix socket, instead of ``nodes``.
        cluster: whether ``nodes`` are masters of a Redis Cluster.
        prefix: the start of every key.
        timeout: seconds one store call may wait for Redis.
        ca_file: the certificate authorities a TLS server's certificate is checked
            against (None: the system's).
    """

    shown: str
    nodes: tuple[tuple[str, int], ...] = ()
    unix_path: str | None = None
    db: int = 0
    ssl: bool = False
    cluster: bool = False
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT
    ca_file: str | None = None


def is_redis_url(text: str) -> bool:
    """Whether ``text`` names a Redis store (by its scheme)."""
    return text.split("://", 1)[0].lower() in SCHEMES and "://" in text


def _split_netloc(netloc: str) -> tuple[str, str]:
    """``netloc`` as its user part (may be empty) and its host part."""
    if "@" in netloc:
        user, _, hosts = netloc.rpartition("@")
        return user, hosts
    return "", netloc


def _host_port(text: str, url: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise StoreError(f"invalid Redis URL {url}: missing host")
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        raise StoreError(f"invalid Redis URL {url}: bad port {port_text!r}") from None
    if not 0 < port < 65536:
        raise StoreError(f"invalid Redis URL {url}: bad port {port}")
    return host, port


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a Redis store URL (see the module documentation for the forms).

    Raises:
        StoreError: naming what is wrong (scheme, host, port, database, parameter).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise StoreError(f"invalid Redis URL: unknown scheme {scheme!r}")
    user, hosts = _split_netloc(parts.netloc)
    username, _, password = user.partition(":")
    shown = url.replace(f"{user}@", f"{username}:***@" if password else f"{username}@", 1)
    try:
        params = {k: v[-1] for k, v in parse_qs(parts.query, strict_parsing=True).items()}
    except ValueError:
        params = {} if not parts.query else {"": parts.query}
    unknown = sorted(set(params) - {"db", "prefix", "timeout", "ca"})
    if unknown:
        raise StoreError(f"invalid Redis URL {shown}: unknown parameter(s) {', '.join(unknown)}")
    target: dict[str, object] = {
        "shown": shown,
        "ssl": scheme.startswith("rediss"),
        "username": unquote(username) or None,
        "password": unquote(password) if password else os.environ.get(PASSWORD_ENV) or None,
    }
    prefix = params.get("prefix", DEFAULT_PREFIX)
    if not _PREFIX_RE.fullmatch(prefix):
        raise StoreError(
            f"invalid Redis URL {shown}: prefix must be 1 to 64 of A-Z a-z 0-9 . _ : -"
        )
    target["prefix"] = prefix
    try:
        timeout = float(params.get("timeout", DEFAULT_TIMEOUT))
    except ValueError:
        timeout = -1.0
    if not 0 < timeout < 3600:
        raise StoreError(f"invalid Redis URL {shown}: timeout must be a number of seconds")
    target["timeout"] = timeout
    if "ca" in params:
        if not target["ssl"]:
            raise StoreError(f"invalid Redis URL {shown}: ca= needs TLS (rediss://)")
        target["ca_file"] = params["ca"]
    db_text = params.get("db", "")
    if scheme in {"unix", "redis+unix"}:
        path = unquote(parts.path)
        if not path:
            raise StoreError(f"invalid Redis URL {shown}: missing socket path")
        target["unix_path"] = path
    else:
        if not hosts:
            raise StoreError(f"invalid Redis URL {shown}: missing host")
        nodes = tuple(_host_port(h, shown) for h in hosts.split(","))
        cluster = scheme.endswith("+cluster")
        if len(nodes) > 1 and not cluster:
            raise StoreError(f"invalid Redis URL {shown}: several hosts need redis+cluster://")
        target["nodes"] = nodes
        target["cluster"] = cluster
        path = parts.path.strip("/")
        if path:
            db_text = path
    if db_text:
        try:
            db = int(db_text)
        except ValueError:
            db = -1
        if db < 0:
            raise StoreError(f"invalid Redis URL {shown}: bad database {db_text!r}")
        if db and target.get("cluster"):
            raise StoreError(f"invalid Redis URL {shown}: a cluster has only database 0")
        target["db"] = db
    return RedisTarget(**target)  # type: ignore[arg-type]
