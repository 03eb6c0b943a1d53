"""``tstream attach``: follow a session from another terminal, history then live.

Exit statuses: the session's own exit status once it ends; 130 after Ctrl-C (the session
goes on); 1 for an unknown or ambiguous session; 125 when the session was interrupted (its
run was killed, so it has no exit status) or the store or hub fails; 2 for bad options.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Final

import click
import trio

from ..attach import Feed, Target, locate
from ..client import HubClientError
from ..events import Event
from ..filters import EventFilter
from ..groups import single
from ..process import EXIT_FAILURE
from ..registry import RegistryError
from ..store import (
    AmbiguousSessionError,
    HistoryQuery,
    Store,
    StoreError,
    UnknownSessionError,
    open_store,
)
from .common import (
    EXIT_NOT_FOUND,
    EventPrinter,
    color_option,
    complete_sessions,
    fail,
    filter_options,
    hub_addresses,
    quiet_broken_pipe,
    store_option,
)

EXIT_DETACHED: Final = 130


def _status_of(feed: Feed, session_id: str) -> int:
    """The exit status for attach: the session's own, or 125 with a message."""
    ended = feed.ended
    if ended is not None and not ended.interrupted and ended.exit_status is not None:
        return ended.exit_status
    if ended is None and not feed.interrupted:
        # --no-follow on a session still running.
        return 0
    click.echo(
        f"tstream: session {session_id} was interrupted: the process running it was killed "
        "before it ended, so it has no exit status (its history is shown)",
        err=True,
    )
    return EXIT_FAILURE


@click.command(short_help="Follow a session: its history, then its output live.")
@store_option
@click.argument("session", default="latest", shell_complete=complete_sessions)
@click.option(
    "--hub",
    metavar="URL",
    envvar="TSTREAM_HUB",
    show_envvar=True,
    callback=hub_addresses,
    help="Follow the session on this hub (http://HOST:PORT, https://HOST or unix:PATH); "
    "several separated by commas (hubs sharing one Redis store) are tried in turn, and a "
    "lost connection resumes on the next from the last line shown.",
)
@click.option(
    "--token",
    metavar="TOKEN",
    envvar="TSTREAM_TOKEN",
    show_envvar=True,
    help="The bearer token the hub (or a session served with --token) asks for.",
)
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines.")
@click.option("--no-follow", is_flag=True, help="Print the history held now and stop.")
@filter_options
@color_option
def attach(
    store_url: str | None,
    session: str,
    hub: str | None,
    token: str | None,
    as_json: bool,
    no_follow: bool,
    query: HistoryQuery,
    color: str,
) -> None:
    """Follow a session: its history, then its output live, until it ends.

    SESSION is a session id, a unique prefix of one, or latest (the default): a
    session running on this machine, else one in the store, or one on --hub. A hub named
    by $TSTREAM_HUB only is asked first: a session it does not have, or a hub that does
    not answer, is looked for on this machine. Exits with the session's exit status;
    Ctrl-C detaches and leaves the session running.
    """
    grep = query.search_text.casefold() if query.search_text else None
    filters = EventFilter(query.types, query.sources, query.start_time, query.end_time, grep)
    printer = EventPrinter(as_json, color)

    hub_from_env = (
        hub is not None
        and click.get_current_context().get_parameter_source("hub")
        is click.core.ParameterSource.ENVIRONMENT
    )

    async def main(store: Store | None, target: Target) -> int:
        send, receive = trio.open_memory_channel[Sequence[Event]](16)
        feed = Feed(
            target,
            send,
            filters=filters,
            last=query.last,
            follow=not no_follow,
            store=store,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed.run)
            async with receive:
                async for events in receive:
                    printer.write(events)
        return _status_of(feed, target.session_id)

    async def opened() -> int:
        if hub is None:
            async with open_store(store_url) as store:
                return await main(store, await locate(session, token=token, store=store))
        try:
            target = await locate(session, hub=hub, token=token)
        except (UnknownSessionError, HubClientError, OSError) as exc:
            refused = isinstance(exc, HubClientError) and exc.code != "not_found"
            if not hub_from_env or refused:
                raise
            # $TSTREAM_HUB names the usual hub, not the only place: a session of this
            # machine that the hub does not have is followed here.
            async with open_store(store_url) as store:
                try:
                    target = await locate(session, token=token, store=store)
                except UnknownSessionError:
                    raise exc from None
                return await main(store, target)
        return await main(None, target)

    try:
        status = trio.run(opened)
    except KeyboardInterrupt:
        sys.exit(EXIT_DETACHED)
    except BaseException as raised:
        _fail(raised)
    sys.exit(status)


def _fail(raised: BaseException) -> Any:
    exc = single(raised)
    if isinstance(exc, UnknownSessionError | AmbiguousSessionError):
        fail(str(exc), EXIT_NOT_FOUND)
    if isinstance(exc, KeyboardInterrupt):
        sys.exit(EXIT_DETACHED)
    if isinstance(exc, BrokenPipeError):
        quiet_broken_pipe()
    if isinstance(exc, HubClientError):
        if exc.code == "not_found":
            fail(str(exc).split(": ", 1)[-1], EXIT_NOT_FOUND)
        fail(f"hub: {exc}", EXIT_FAILURE)
    if isinstance(exc, StoreError | RegistryError | OSError):
        fail(str(exc), EXIT_FAILURE)
    if exc is not raised:
        raise exc from None
    raise raised
