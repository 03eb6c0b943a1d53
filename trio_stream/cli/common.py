"""What several commands share: exit statuses and one-line errors, the ``--store`` option
and running against a store, event filters, writing events as the terminal showed them,
``--color``, progress on a terminal, ``--type`` lists and the completion of session ids."""

from __future__ import annotations

import datetime
import functools
import os
import shlex
import stat
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final, NoReturn, TypeVar, final

import click
import trio
from click.shell_completion import CompletionItem

from ..batches import EventRuns, RowEvents
from ..durations import parse_duration
from ..events import SOURCES, Event, EventType, Output
from ..groups import single
from ..render import COLOR_WHEN, color_wanted, compact_line, paint
from ..store import (
    AmbiguousSessionError,
    HistoryQuery,
    SessionExistsError,
    Store,
    StoreError,
    UnknownSessionError,
    open_store,
)

_T = TypeVar("_T")
_S = TypeVar("_S")
_F = TypeVar("_F", bound=Callable[..., Any])

# Sessions offered when completing an id: the newest are the ones asked for.
COMPLETION_LIMIT: Final = 500
# A quick operation leaves no trace on the terminal: progress shows after this long.
PROGRESS_DELAY: Final = 0.5
PROGRESS_INTERVAL: Final = 0.1


# -- colour ----------------------------------------------------------------------------


def color_option(command: _F) -> _F:
    """The ``--color WHEN`` option of the commands that print tstream's own lines."""
    return click.option(
        "--color",
        type=click.Choice(COLOR_WHEN),
        default="auto",
        show_default=True,
        help="Colour tstream's own lines on stderr (the start and end lines, tool calls, "
        "reasoning, errors): auto colours a terminal that supports it unless NO_COLOR is "
        "set. The command's output is never changed.",
    )(command)


def stderr_color(when: str) -> bool:
    """Whether to colour what is written on our stderr, for ``--color WHEN``."""
    return color_wanted(when, isatty=_isatty(sys.stderr))


def _isatty(stream: IO[Any]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- progress --------------------------------------------------------------------------


def progress_option(command: _F) -> _F:
    """The ``--progress/--no-progress`` option of long store operations."""
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Show how far the work is on stderr (default: when stderr is a terminal, "
        "the result does not go to it, and the work takes more than half a second).",
    )(command)


@final
class Progress:
    """One line on stderr, redrawn in place, saying how far a long operation is.

    Nothing is drawn for the first ``delay`` seconds, so that a quick operation leaves no
    trace, nor more than once per ``interval``; :meth:`close` erases the line. Only a
    carriage return and spaces are used, which every terminal understands.

    Args:
        enabled: draw at all.
        stream: where to draw (default: stderr).
        delay: seconds before the first drawing.
        interval: seconds between drawings at least.
        clock: the time, in seconds.
    """

    def __init__(
        self,
        enabled: bool,
        *,
        stream: IO[str] | None = None,
        delay: float = PROGRESS_DELAY,
        interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self._stream = stream
        self._delay = delay
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._drawn_at: float | None = None
        self._width = 0

    @classmethod
    def for_option(cls, asked: bool | None, *, result: IO[Any] | None = None) -> Progress:
        """The progress ``--progress/--no-progress`` asks for (None: neither given).

        Unasked, progress is drawn when stderr is a terminal and ``result`` (where the
        command writes what it produced), if given, is not one: on one terminal the two
        would be mixed. Asked for, it is drawn from the start.
        """
        if asked is not None:
            return cls(asked, delay=0.0)
        wanted = _isatty(sys.stderr) and not (result is not None and _isatty(result))
        return cls(wanted)

    @property
    def elapsed(self) -> float:
        """Seconds since the operation began."""
        return self._clock() - self._started

    def due(self) -> bool:
        """Whether :meth:`show` would draw now (worth formatting its text)."""
        if not self.enabled:
            return False
        now = self._clock()
        if now - self._started < self._delay:
            return False
        return self._drawn_at is None or now - self._drawn_at >= self._interval

    def show(self, text: str) -> None:
        """Draw ``text`` over the previous line, if :meth:`due`."""
        if not self.due():
            return
        self._drawn_at = self._clock()
        self._width = max(self._width, len(text))
        self._write("\r" + text.ljust(self._width))

    def close(self) -> None:
        """Erase the line, if one was drawn."""
        if self._drawn_at is not None:
            self._write("\r" + " " * self._width + "\r")
            self._drawn_at = None

    def _write(self, text: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except OSError:
            # Progress is a courtesy: a terminal that went away must not fail the work.
            self.enabled = False

    def wrap(
        self, label: str, main: Callable[[_S], Awaitable[_T]]
    ) -> Callable[[_S], Awaitable[_T]]:
        """``main``, showing ``label`` and the time spent while it runs, for work that
        cannot tell how far it is; the line is erased when it ends."""

        async def tick() -> None:
            while True:
                self.show(f"{label}… {self.elapsed:.1f}s")
                await trio.sleep(self._interval)

        async def wrapped(arg: _S) -> _T:
            try:
                async with trio.open_nursery() as nursery:
                    if self.enabled:
                        nursery.start_soon(tick)
                    result = await main(arg)
                    nursery.cancel_scope.cancel()
                return result
            finally:
                self.close()

        return wrapped


def counted_lines(file: IO[bytes], progress: Progress, label: str) -> Iterator[bytes]:
    """The lines of ``file``, showing on ``progress`` how many were read (and what share
    of the file, when its size is known)."""
    total = _regular_size(file)
    done = 0
    for number, line in enumerate(file, 1):
        done += len(line)
        if progress.due():
            share = f"{done * 100 // total}%, " if total else ""
            progress.show(f"{label}: {share}{number:,} lines")
        yield line


def _regular_size(file: IO[bytes]) -> int:
    try:
        status = os.fstat(file.fileno())
    except (OSError, ValueError, AttributeError):
        return 0
    return status.st_size if stat.S_ISREG(status.st_mode) else 0


def counting_writer(
    write: Callable[[bytes], Any], progress: Progress, label: str, total: int
) -> Callable[[bytes], None]:
    """``write``, showing on ``progress`` how many of ``total`` JSON lines went through
    (a running session may give more than it had)."""
    done = 0

    def counting(chunk: bytes) -> None:
        nonlocal done
        write(chunk)
        done += chunk.count(b"\n")
        if not progress.due():
            return
        if done <= total:
            progress.show(f"{label}: {done:,}/{total:,} events ({done * 100 // total}%)")
        else:
            progress.show(f"{label}: {done:,} events")

    return counting


# -- event types -----------------------------------------------------------------------


class EventTypes(click.ParamType):
    """One event type or several separated by commas (``status,session_ended``), as the
    hub's ``eventTypes`` takes them."""

    name = "type"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "TYPE[,TYPE...]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        names = [name.strip() for name in str(value).split(",") if name.strip()]
        if not names:
            self.fail("no event type given", param, ctx)
        known = {t.value for t in EventType}
        for name in names:
            if name not in known:
                self.fail(
                    f"unknown event type {name!r} (one of {', '.join(sorted(known))})",
                    param,
                    ctx,
                )
        return tuple(names)

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        done, _, last = incomplete.rpartition(",")
        prefix = f"{done}," if done else ""
        return [
            CompletionItem(prefix + t.value)
            for t in EventType
            if t.value.startswith(last) and t.value not in done.split(",")
        ]


def flatten_types(
    ctx: click.Context, param: click.Parameter, value: Iterable[tuple[str, ...]]
) -> tuple[str, ...]:
    """The types of every ``--type``, in order, each once."""
    return tuple(dict.fromkeys(name for names in value for name in names))


# -- session ids -----------------------------------------------------------------------


def complete_sessions(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Session ids for the shell to complete: those running on this machine, then those in
    the store (``--store``, else ``$TSTREAM_STORE``, else the default), newest first.

    Completion must never fail, create anything nor keep the shell waiting: a store that
    does not exist or cannot be read offers nothing, and a Redis store is not asked (one
    that is down would hold the shell for its timeout).
    """
    found: dict[str, str] = {}
    if "latest".startswith(incomplete):
        found["latest"] = "the newest session"
    from ..registry import running_sessions

    try:
        running = running_sessions()
    except OSError:
        running = []
    for live in running:
        found.setdefault(live.id, f"running: {_shown(live.command)}")
    try:
        stored = trio.run(_stored_sessions, ctx.params.get("store_url"))
    except Exception:
        stored = []
    for session_id, status, command in stored:
        found.setdefault(session_id, f"{status}: {_shown(command)}")
    return [
        CompletionItem(session_id, help=about)
        for session_id, about in found.items()
        if session_id.startswith(incomplete)
    ]


async def _stored_sessions(url: str | None) -> list[tuple[str, str, list[str]]]:
    from ..store import open_store, parse_store_url

    location = parse_store_url(url)
    if location.kind != "sqlite" or not Path(location.path).is_file():
        return []
    async with open_store(location.path, busy_timeout=0.5) as store:
        sessions = await store.list_sessions(limit=COMPLETION_LIMIT)
    return [(s.id, s.status.value, s.command) for s in sessions]


def _shown(command: list[str]) -> str:
    text = shlex.join(command)
    return text if len(text) <= 50 else text[:49] + "…"


def hub_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check a ``--hub`` address (a click callback): every command takes the same forms."""
    if value is None:
        return None
    from ..client.address import parse_hub_address

    try:
        parse_hub_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def hub_addresses(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check a ``--hub`` that takes several addresses separated by commas (hubs sharing
    one store, tried in turn)."""
    if value is None:
        return None
    for part in value.split(","):
        hub_address(ctx, param, part.strip())
    return ",".join(part.strip() for part in value.split(",") if part.strip())


# -- exit statuses, the store, filters ----------------------------------------------

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_STORE = 125
EXIT_BROKEN_PIPE = 141


def echo_error(message: str) -> None:
    """Print ``tstream: message`` on stderr, in red where tstream's lines are coloured (by
    the running command's ``--color``, if it has one, else as ``auto`` decides)."""
    ctx = click.get_current_context(silent=True)
    when = ctx.params.get("color") if ctx is not None else None
    colored = stderr_color(when if isinstance(when, str) else "auto")
    text = f"tstream: {message}"
    click.echo(paint(text, "fail") if colored else text, err=True, color=colored)


def fail(message: str, status: int) -> NoReturn:
    """Print ``tstream: message`` on stderr (see :func:`echo_error`) and exit with
    ``status``."""
    echo_error(message)
    sys.exit(status)


def run_with_store(url: str | None, main: Callable[[Store], Awaitable[_T]]) -> _T:
    """Open the store at ``url``, run ``main(store)`` under trio, map errors to exit statuses.

    Returns:
        What ``main`` returned.
    """

    async def opened() -> _T:
        async with open_store(url) as store:
            return await main(store)

    # Imported here: ``tstream run`` shares this module and needs neither.
    from ..store.file import SessionFileError

    try:
        return trio.run(opened)
    except BaseException as raised:
        exc = single(raised)
        if isinstance(exc, UnknownSessionError | AmbiguousSessionError | SessionFileError):
            fail(str(exc), EXIT_NOT_FOUND)
        if isinstance(exc, SessionExistsError):
            fail(f"{exc} (choose another with --id)", EXIT_USAGE)
        if isinstance(exc, StoreError):
            fail(str(exc), EXIT_STORE)
        if isinstance(exc, BrokenPipeError):
            quiet_broken_pipe()
        if exc is not raised:
            raise exc from None
        raise


def quiet_broken_pipe() -> NoReturn:
    # The reader went away (``tstream show x | head``): stop quietly, as a shell tool would.
    # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_BROKEN_PIPE)


def store_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--store URL`` option every history command takes."""
    return click.option(
        "--store",
        "store_url",
        metavar="URL",
        envvar="TSTREAM_STORE",
        show_envvar=True,
        help="The store: sqlite:PATH, a path, or memory: (default: tstream.db in the XDG "
        "data directory).",
    )(command)


class TimeParam(click.ParamType):
    """A point in time: a duration ago (``10m``), an ISO 8601 time, or epoch seconds."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip()
        try:
            return time.time() - parse_duration(text)
        except ValueError:
            pass
        if text.startswith("@"):
            try:
                return float(text[1:])
            except ValueError:
                pass
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"invalid time {text!r}: use a duration ago (10m, 2h), an ISO 8601 time "
                "(2026-11-23T00:45:00) or @EPOCH_SECONDS",
                param,
                ctx,
            )
        return moment.timestamp()


TIME = TimeParam()


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The event filters ``show`` and ``attach`` offer, given to the command as one
    ``query`` (a :class:`~trio_stream.store.HistoryQuery`: the store's queries filter the
    same way)."""

    @functools.wraps(command)
    def with_query(
        *args: Any,
        types: tuple[str, ...],
        sources: tuple[str, ...],
        since: float | None,
        until: float | None,
        grep: str | None,
        last: int | None,
        **kwargs: Any,
    ) -> Any:
        query = HistoryQuery(
            types=frozenset(EventType(t) for t in types) or None,
            sources=frozenset(sources) or None,
            start_time=since,
            end_time=until,
            search_text=grep,
            last=last,
        )
        return command(*args, query=query, **kwargs)

    options = [
        click.option(
            "--type",
            "types",
            multiple=True,
            type=EventTypes(),
            callback=flatten_types,
            help="Only events of these types: one, or several separated by commas (repeatable).",
        ),
        click.option(
            "--source",
            "sources",
            multiple=True,
            type=click.Choice(SOURCES),
            help="Only output lines from this stream (repeatable); other events stay.",
        ),
        click.option("--since", type=TIME, help="Only events at or after this time."),
        click.option("--until", type=TIME, help="Only events at or before this time."),
        click.option("--grep", metavar="TEXT", help="Only events containing TEXT (any case)."),
        click.option("--last", type=click.IntRange(min=0), help="Only the last N events."),
    ]
    for option in reversed(options):
        with_query = option(with_query)
    return with_query


# -- writing output as the terminal saw it -----------------------------------------


def line_bytes(data: Output) -> bytes:
    """The exact bytes the child wrote for a captured line."""
    return data.raw if data.raw is not None else (data.text + data.eol).encode()


class OutputWriter:
    """Writes events as a terminal showed them: stdout lines to stdout, stderr lines to
    stderr and, with ``compact``, other events as their compact line on stderr (as
    ``tstream run`` shows them when stderr is a terminal), coloured with ``color``.
    Consecutive lines of one stream are joined into one write."""

    def __init__(
        self, stdout: IO[bytes], stderr: IO[bytes], *, compact: bool = False, color: bool = False
    ) -> None:
        self._streams = {"stdout": stdout, "stderr": stderr}
        self._compact = compact
        self._color = color
        self._pending: list[bytes] = []
        self._source = "stdout"

    def add(self, event: Event) -> None:
        data = event.data
        if type(data) is Output:
            self.add_bytes(data.source, line_bytes(data))
            return
        text = compact_line(event, color=self._color) if self._compact else None
        if text is not None:
            self.add_bytes("stderr", (text + "\n").encode())

    def add_all(self, events: Sequence[Event]) -> None:
        """:meth:`add` each event; lines not built yet are written from their rows or
        columns."""
        if not isinstance(events, RowEvents | EventRuns):
            for event in events:
                self.add(event)
            return
        for part in events.terminal():
            if isinstance(part, tuple):
                self.add_bytes(*part)
            else:
                self.add(part)

    def add_bytes(self, source: str, chunk: bytes) -> None:
        """Bytes ``source`` (``stdout`` or ``stderr``) wrote."""
        if source != self._source:
            self.flush()
            self._source = source
        self._pending.append(chunk)

    def flush(self) -> None:
        if self._pending:
            stream = self._streams[self._source]
            stream.write(b"".join(self._pending))
            stream.flush()
            self._pending = []


class EventPrinter:
    """Writes batches of events on stdout as they come: as the terminal showed them (see
    :class:`OutputWriter`), or as JSON lines. Each batch is out when :meth:`write`
    returns. ``color`` is ``--color``'s value."""

    def __init__(self, as_json: bool, color: str = "auto") -> None:
        self.as_json = as_json
        self.stdout = sys.stdout.buffer
        self.writer = OutputWriter(
            sys.stdout.buffer,
            sys.stderr.buffer,
            compact=sys.stderr.isatty(),
            color=stderr_color(color),
        )

    def write(self, events: Sequence[Event]) -> None:
        if self.as_json:
            from ..hub.frames import json_lines

            self.stdout.write(json_lines(events))
            self.stdout.flush()
            return
        self.writer.add_all(events)
        self.writer.flush()


def valid_session_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check an ``--id`` (a click callback) before anything is opened: a bad one is a usage
    error (status 2) in every command."""
    if value is None:
        return None
    from ..store import InvalidSessionIdError, check_session_id

    try:
        return check_session_id(value)
    except InvalidSessionIdError as exc:
        raise click.BadParameter(str(exc)) from None
