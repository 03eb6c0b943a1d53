"""History commands: ``tstream ls``, ``show``, ``replay``, ``export``, ``import``, ``prune``.

Exit statuses shared by these commands: 0 on success, 1 for an unknown or ambiguous
session or an invalid session file, 2 for a usage error (including a session id already in
use), 125 when the store itself fails (unreadable, locked, corrupt, newer), with one line
on stderr and no traceback.
"""

from __future__ import annotations

import datetime
import functools
import shlex
import sys
import time
from collections.abc import AsyncIterator, Iterable
from typing import IO, Any, Final

import attrs
import click
import orjson
import trio

from ..durations import DURATION
from ..events import Event, EventType, converter
from ..store import (
    HistoryQuery,
    SessionInfo,
    SessionStatus,
    Store,
)
from ..store.base import RunStore
from ..store.file import export_session, import_session
from ..store.query import read_batches, read_pages
from ..store.retention import DEFAULT_MAX_EVENTS, DEFAULT_RETENTION, prune_once
from .common import (
    EXIT_STORE,
    EventPrinter,
    OutputWriter,
    Progress,
    color_option,
    complete_sessions,
    counted_lines,
    counting_writer,
    fail,
    filter_options,
    progress_option,
    run_with_store,
    store_option,
    valid_session_id,
)

# Events ``tstream show`` reads from the store at a time.
SHOW_PAGE: Final = 10_000

# -- formatting --------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``0.4s``, ``12s``, ``3m04s``, ``2h05m``, ``3d04h``."""
    if seconds < 10:
        return f"{max(0.0, seconds):.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def session_row(info: SessionInfo, now: float) -> list[str]:
    """The ``ls`` table cells for one session."""
    end = info.ended if info.ended is not None else now
    started = datetime.datetime.fromtimestamp(info.created).strftime("%Y-%m-%d %H:%M:%S")
    return [
        info.id,
        info.status.value,
        _shorten(shlex.join(info.command), 40),
        started,
        format_duration(end - info.created),
        "-" if info.exit_status is None else str(info.exit_status),
        str(info.events),
    ]


def table(header: list[str], rows: Iterable[list[str]]) -> str:
    """Left-aligned columns (numbers right-aligned) separated by two spaces."""
    rows = [header, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = {i for i, name in enumerate(header) if name in {"EXIT", "EVENTS"}}
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    )


def session_dict(info: SessionInfo) -> dict[str, Any]:
    return converter.unstructure(info)  # type: ignore[no-any-return]


async def replay_events(
    batches: AsyncIterator[list[Event]],
    writer: OutputWriter,
    *,
    speed: float = 1.0,
    max_idle: float | None = None,
) -> None:
    """Write output events with the pauses between them as recorded.

    Each pause is first capped at ``max_idle`` seconds (as asciinema's idle time limit),
    then divided by ``speed``. Lines less than a millisecond apart are written together.

    Raises:
        ValueError: for a ``speed`` that is not positive or a negative ``max_idle``.
    """
    if speed <= 0:
        raise ValueError(f"speed must be positive, not {speed}")
    if max_idle is not None and max_idle < 0:
        raise ValueError(f"max_idle must be 0 or more, not {max_idle}")
    previous: float | None = None
    async for events in batches:
        for event in events:
            if event.type is not EventType.OUTPUT:
                continue
            if previous is not None:
                pause = max(0.0, event.ts - previous)
                if max_idle is not None:
                    pause = min(pause, max_idle)
                pause /= speed
                if pause >= 0.001:
                    writer.flush()
                    await trio.sleep(pause)
            previous = event.ts
            writer.add(event)
    writer.flush()


# -- commands ----------------------------------------------------------------------


@click.command()
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the sessions as a JSON array.")
@click.option(
    "--status",
    type=click.Choice([s.value for s in SessionStatus]),
    help="Only sessions with this status.",
)
@click.option("--limit", type=click.IntRange(min=0), help="At most this many (newest first).")
@click.option(
    "--hub",
    metavar="URL",
    help="List the sessions of the tstream serve at URL (http://HOST:PORT or unix:PATH) "
    "instead of the local store.",
)
@click.option(
    "--token",
    metavar="TOKEN",
    envvar="TSTREAM_TOKEN",
    show_envvar=True,
    help="The bearer token --hub asks with.",
)
def ls(
    store_url: str | None,
    as_json: bool,
    status: str | None,
    limit: int | None,
    hub: str | None,
    token: str | None,
) -> None:
    """List recorded sessions, newest first."""
    wanted = None if status is None else SessionStatus(status)
    if hub is not None:
        sessions = _hub_sessions(hub, token, wanted, limit)
    else:

        async def main(store: Store) -> list[SessionInfo]:
            return await store.list_sessions(status=wanted, limit=limit)

        sessions = run_with_store(store_url, main)
    if as_json:
        sys.stdout.buffer.write(
            orjson.dumps([session_dict(s) for s in sessions], option=orjson.OPT_INDENT_2) + b"\n"
        )
        return
    if not sessions:
        click.echo("no sessions", err=True)
        return
    now = time.time()
    header = ["ID", "STATUS", "COMMAND", "STARTED", "DURATION", "EXIT", "EVENTS"]
    click.echo(table(header, (session_row(s, now) for s in sessions)))


def _hub_sessions(
    hub: str, token: str | None, status: SessionStatus | None, limit: int | None
) -> list[SessionInfo]:
    from ..client import HubClientError, hub_sessions, parse_hub_address

    try:
        address = parse_hub_address(hub)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--hub") from None
    try:
        return trio.run(
            functools.partial(hub_sessions, address, token=token, status=status, limit=limit)
        )
    except HubClientError as exc:
        what = "token rejected" if exc.code in ("unauthorized", "forbidden") else "refused"
        fail(f"hub {hub}: {what} ({exc.code}: {exc.message})", EXIT_STORE)
    except OSError as exc:
        fail(str(exc), EXIT_STORE)


@click.command(short_help="Show a session's history as the terminal saw it, or as JSON.")
@store_option
@click.argument("session", shell_complete=complete_sessions)
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines.")
@filter_options
@color_option
def show(
    store_url: str | None,
    session: str,
    as_json: bool,
    query: HistoryQuery,
    color: str,
) -> None:
    """Show a session's history as the terminal saw it, or as JSON events.

    SESSION is a session id, a unique prefix of one, or latest.
    """
    printer = EventPrinter(as_json, color)
    if query.last is not None and not (as_json or query.types):
        # The last lines: not the end of the session, which shows as nothing or one line.
        query = attrs.evolve(query, types=frozenset({EventType.OUTPUT}))

    async def main(store: Store) -> None:
        info = await store.resolve(session)
        if query == HistoryQuery() and isinstance(store, RunStore):
            # All of it: lines go from the chunks' text to stdout, without an event each.
            recorded = await store.last_offset(info.id)
            async for runs in read_pages(store, info.id, -1, recorded, page=SHOW_PAGE):
                printer.write(runs)
            return
        async for events in read_batches(store, info.id, query):
            printer.write(events)

    run_with_store(store_url, main)


@click.command()
@store_option
@click.argument("session", shell_complete=complete_sessions)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Play this many times faster.",
)
@click.option(
    "--max-idle",
    type=DURATION,
    help="Shorten every pause to at most this long (1s, 500ms) before --speed applies.",
)
def replay(store_url: str | None, session: str, speed: float, max_idle: float | None) -> None:
    """Replay a session's output with its original timing.

    SESSION is a session id, a unique prefix of one, or latest.
    """
    writer = OutputWriter(sys.stdout.buffer, sys.stderr.buffer)

    async def main(store: Store) -> None:
        info = await store.resolve(session)
        query = HistoryQuery(types=frozenset({EventType.OUTPUT}))
        await replay_events(
            read_batches(store, info.id, query), writer, speed=speed, max_idle=max_idle
        )

    run_with_store(store_url, main)


@click.command()
@store_option
@click.argument("session", shell_complete=complete_sessions)
@click.option(
    "-o",
    "--output",
    type=click.File("wb"),
    default="-",
    help="Write to this file instead of stdout.",
)
@progress_option
def export(store_url: str | None, session: str, output: IO[bytes], progress: bool | None) -> None:
    """Write a session's events as JSON lines (one event per line).

    SESSION is a session id, a unique prefix of one, or latest.
    """
    shown = Progress.for_option(progress, result=output)

    async def main(store: Store) -> None:
        info = await store.resolve(session)
        write = counting_writer(output.write, shown, f"exporting {info.id}", info.events)
        try:
            await export_session(store, info.id, write)
        finally:
            shown.close()
        output.flush()

    run_with_store(store_url, main)


@click.command("import", short_help="Record a session from a file written by tstream export.")
@store_option
@click.argument("file", type=click.File("rb"))
@click.option(
    "--id",
    "session_id",
    metavar="NAME",
    callback=valid_session_id,
    help="Import under this session id.",
)
@progress_option
def import_(
    store_url: str | None, file: IO[bytes], session_id: str | None, progress: bool | None
) -> None:
    """Record a session from a JSON lines FILE written by tstream export (- reads stdin).

    Every line is checked; the first bad one is named by its number and nothing is kept.
    """
    shown = Progress.for_option(progress)

    async def main(store: Store) -> SessionInfo:
        lines = counted_lines(file, shown, "importing")
        try:
            return await import_session(store, lines, session_id=session_id)
        finally:
            shown.close()

    info = run_with_store(store_url, main)
    click.echo(info.id)


@click.command()
@store_option
@click.option(
    "--older-than",
    type=DURATION,
    default=f"{int(DEFAULT_RETENTION // 86400)}d",
    show_default=True,
    help="Remove finished sessions idle for longer than this.",
)
@click.option(
    "--max-events",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_EVENTS,
    show_default=True,
    help="Keep at most this many events of each session (the newest).",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@progress_option
def prune(
    store_url: str | None,
    older_than: float,
    max_events: int,
    dry_run: bool,
    progress: bool | None,
) -> None:
    """Remove old sessions and trim long ones."""

    async def main(store: Store) -> tuple[list[str], list[SessionInfo]]:
        # Looked at first: what a pass trims is what each session holds over the limit.
        sessions = await store.list_sessions()
        removed = await prune_once(
            store, older_than=older_than, max_events=max_events, dry_run=dry_run
        )
        over = [s for s in sessions if s.id not in removed and s.events > max_events]
        return removed, over

    removed, trimmed = run_with_store(
        store_url, Progress.for_option(progress).wrap("pruning", main)
    )
    for session_id in removed:
        click.echo(session_id)
    trim = "would trim" if dry_run else "trimmed"
    for info in trimmed:
        cut = info.events - max_events
        click.echo(f"{trim} {info.id}: its {cut} oldest event(s) of {info.events}", err=True)
    remove = "would remove" if dry_run else "removed"
    click.echo(f"{remove} {len(removed)} session(s)", err=True)
