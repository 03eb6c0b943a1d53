"""``tstream serve``: run the hub until SIGINT or SIGTERM.

Exit statuses: 0 after a clean shutdown (every client told, the store flushed), 2 for a
usage or configuration error (including an address that cannot be bound, or exposure
beyond loopback without a token), 125 when the store fails.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from typing import Any

import click
import trio

from ..config import ConfigError, load_config
from ..durations import Duration
from ..hub.config import (
    PROXY_HEADERS,
    HubConfig,
    HubConfigError,
    Listen,
    check_origin,
    parse_token,
    parse_trusted_proxy,
)
from .common import run_with_store, store_option

EXIT_USAGE = 2
GC_THRESHOLD = 20_000


def _config(options: dict[str, Any]) -> HubConfig:
    """The hub's settings: the file's ``serve:`` section, then the command line."""
    values: dict[str, Any] = {}
    config_file = load_config(options["config"])
    if config_file is not None:
        values = dict(config_file.section("serve").values)
    overrides: dict[str, Any] = {
        "heartbeat": options["heartbeat"],
        "idle_timeout": options["idle_timeout"],
        "max_clients_per_stream": options["max_clients_per_stream"],
        "max_connections": options["max_connections"],
        "header_timeout": options["header_timeout"],
        "max_pending": options["max_pending"],
        "proxy_headers": options["proxy_headers"],
        "history": options["history"],
        "retention": options["retention"],
        "max_events": options["max_events"],
        "prune_every": options["prune_every"],
    }
    if options["listen"]:
        overrides["listen"] = tuple(Listen.parse(text) for text in options["listen"])
    tokens = [parse_token(t) for t in options["token"]]
    tokens += [parse_token({"token": t, "scopes": ["read"]}) for t in options["read_token"]]
    if tokens:
        overrides["tokens"] = tuple(tokens)
    if options["trusted_proxy"]:
        overrides["trusted_proxies"] = tuple(
            parse_trusted_proxy(text) for text in options["trusted_proxy"]
        )
    if options["cors_origin"]:
        overrides["cors_origins"] = tuple(check_origin(o) for o in options["cors_origin"])
    if options["insecure"]:
        overrides["insecure"] = True
    if options["no_compression"]:
        overrides["compression"] = False
    config = HubConfig.from_mapping(values, **overrides)
    config.check_exposure()
    return config


def tune_collector() -> None:
    """Make the garbage collector fit a long-running hub.

    The hub holds thousands of events in memory and allocates a few objects per event;
    with the default thresholds the collector walks all of them many times a second, and
    a full collection stalls every client at once. What start-up built is frozen out of
    collection, and collections run less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 100)


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    short_help="Serve live and recorded streams over WebSocket, SSE and REST.",
)
@click.option(
    "--listen",
    "-l",
    multiple=True,
    metavar="HOST:PORT|unix:PATH",
    help="Where to listen (repeatable; default 127.0.0.1:3001).",
)
@store_option
@click.option(
    "--token",
    multiple=True,
    metavar="TOKEN",
    envvar="TSTREAM_HUB_TOKEN",
    show_envvar=True,
    help="A bearer token with read and publish scopes (repeatable).",
)
@click.option(
    "--read-token",
    multiple=True,
    metavar="TOKEN",
    envvar="TSTREAM_HUB_READ_TOKEN",
    show_envvar=True,
    help="A bearer token that may only read (repeatable).",
)
@click.option(
    "--cors-origin",
    multiple=True,
    metavar="ORIGIN",
    help="An origin (https://host[:port]) allowed to use the API from a browser (repeatable).",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    help="A configuration file (its serve: section); default: the XDG config file.",
)
@click.option("--insecure", is_flag=True, help="Allow listening beyond loopback without any token.")
@click.option("--heartbeat", type=Duration(), help="Heartbeat interval (default 30s).")
@click.option(
    "--idle-timeout",
    type=Duration(),
    help="Close WebSocket clients silent this long after a heartbeat (default 30s; 0: never).",
)
@click.option("--max-clients-per-stream", type=click.IntRange(1), help="Default 100.")
@click.option("--max-connections", type=click.IntRange(1), help="Default 1000.")
@click.option(
    "--header-timeout",
    type=Duration(),
    help="Close connections that send no complete request head this long after "
    "connecting or after their previous answer (default 10s).",
)
@click.option(
    "--max-pending",
    type=click.IntRange(1),
    help="Connections waiting for a request head; beyond it the longest waiting is "
    "closed (default 1000).",
)
@click.option(
    "--trusted-proxy",
    multiple=True,
    metavar="ADDRESS|CIDR|unix",
    help="A reverse proxy whose forwarding headers tell the client's address, scheme and "
    "host (repeatable); from any other peer they are ignored.",
)
@click.option(
    "--proxy-headers",
    type=click.Choice(PROXY_HEADERS),
    help="The headers the trusted proxies set: x-forwarded (X-Forwarded-For, -Proto, "
    "-Host; the default) or forwarded (RFC 7239).",
)
@click.option("--history", type=click.IntRange(1), help="Events kept in memory per stream.")
@click.option(
    "--retention",
    type=Duration(),
    help="Prune finished sessions idle for longer than this (default 7d).",
)
@click.option(
    "--max-events",
    type=click.IntRange(0),
    help="Trim each session to its last N events (default 1000000; 0: no limit).",
)
@click.option(
    "--prune-every",
    type=Duration(),
    help="Time between retention passes (default 1h; 0: never prune).",
)
@click.option("--no-compression", is_flag=True, help="Do not offer permessage-deflate.")
@click.option("--quiet", "-q", is_flag=True, help="Log warnings and errors only.")
def serve(**options: Any) -> None:
    """Serve live and recorded streams over WebSocket, SSE, long polling and REST.

    Logs one line per connection event on stderr. SIGINT or SIGTERM closes every client
    (close frame or SSE error event), flushes the store and exits 0.
    """
    try:
        config = _config(options)
    except (ConfigError, HubConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=logging.WARNING if options["quiet"] else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # Hypercorn's own error log repeats what the hub logs; keep only its errors.
    logging.getLogger("trio_stream.hub.hypercorn").setLevel(logging.WARNING)

    async def main(store: Any) -> None:
        from ..hub.server import serve_hub

        tune_collector()

        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                served = await nursery.start(serve_hub, config, store)
                for url in served.urls:
                    click.echo(f"tstream hub listening on {url}", err=True)
                async for signum in signals:
                    logging.getLogger("trio_stream.hub").info(
                        "%s received: shutting down", signal.Signals(signum).name
                    )
                    served.shutdown()
                    break

    try:
        run_with_store(options["store_url"] or config.store, main)
    except HubConfigError as exc:
        click.echo(f"tstream serve: {exc}", err=True)
        sys.exit(EXIT_USAGE)
