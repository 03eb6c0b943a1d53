"""``tstream run``: run a command as if bare, while its output is captured and processed."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import click
import trio

from ..batches import OutputBatch
from ..channels import Overflow
from ..durations import DURATION
from ..events import EventType, event_to_json
from ..groups import single
from ..lines import DEFAULT_MAX_LINE_LENGTH
from ..process import EXIT_FAILURE, SpawnError
from ..session import (
    DEFAULT_BUFFER,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_KILL_AFTER,
    Session,
    StreamConfig,
    open_session,
)
from ..signals import FORWARDED, SignalQueue, forward_signals, handled_signals
from ..store import (
    SessionExistsError,
    StoreError,
    open_store,
)
from ..terminal import TerminalWriter
from . import exit_now
from .common import color_option, echo_error, stderr_color, valid_session_id
from .processing import build_pipeline, processor_options

if TYPE_CHECKING:
    from ..local import ServeOptions
    from ..log import SessionLog
    from ..uplink import Uplink, UplinkOptions

# A session id already in use is a usage error: the command line named it.
EXIT_ID_IN_USE: Final = 2


class SignalName(click.ParamType):
    """A signal by name (``TERM``, ``SIGTERM``, ``term``) or number (``15``)."""

    name = "signal"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper()
        if text.isdigit():
            number = int(text)
            if number in signal.valid_signals():
                return number
        else:
            name = text if text.startswith("SIG") else f"SIG{text}"
            found = getattr(signal.Signals, name, None)
            if found is not None:
                return int(found)
        self.fail(f"unknown signal {value!r} (use a name such as TERM or INT, or a number)")


@click.command(
    context_settings={"allow_interspersed_args": False},
    short_help="Run a command as if bare, capturing and recording every line.",
)
@click.option(
    "--timeout",
    type=DURATION,
    default=None,
    help="Terminate the command after this long (1.5, 500ms, 30s, 5m); exit status 124.",
)
@click.option(
    "--kill-after",
    type=DURATION,
    default=DEFAULT_KILL_AFTER,
    show_default=True,
    help="Grace period between the --signal and SIGKILL.",
)
@click.option(
    "-s",
    "--signal",
    "kill_signal",
    type=SignalName(),
    default="TERM",
    show_default=True,
    help="Signal sent to the command's process group on timeout.",
)
@click.option(
    "--preserve-status",
    is_flag=True,
    help="On timeout, exit with the command's status rather than 124.",
)
@click.option(
    "--merge-stderr",
    is_flag=True,
    help="Capture stderr and stdout through one pipe (exact interleaving, all as stdout).",
)
@click.option(
    "--pty",
    is_flag=True,
    help="Run the command on a pseudo-terminal (line-buffered output, colours; one stream).",
)
@click.option(
    "--max-line-length",
    type=click.IntRange(min=4),
    default=DEFAULT_MAX_LINE_LENGTH,
    show_default=True,
    help="Longest line kept whole, in bytes; longer lines are cut into marked pieces.",
)
@click.option(
    "--buffer",
    type=click.IntRange(min=1),
    default=DEFAULT_BUFFER,
    show_default=True,
    help="Capacity of each processor's channel, in batches of lines.",
)
@click.option(
    "--overflow",
    type=click.Choice([o.value for o in Overflow]),
    default=Overflow.BLOCK.value,
    show_default=True,
    help="What a full processor channel does: block (slow the command), drop-oldest, "
    "drop-newest, or fail (stop that processor).",
)
@click.option(
    "--json",
    "json_output",
    is_flag=True,
    help="Print every event of the session as one JSON object per line on stdout, "
    "instead of the command's output.",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not show the command's output.")
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    envvar="TSTREAM_STORE",
    show_envvar=True,
    help="Record the session in this store: sqlite:PATH, a path, or memory: (kept only "
    "while tstream runs). Default: tstream.db in the XDG data directory.",
)
@click.option(
    "--id",
    "session_id",
    metavar="NAME",
    callback=valid_session_id,
    help="Name the session: 1 to 64 of A-Z a-z 0-9 . _ - (default: generated from the "
    "time). An id already in use is refused with exit status 2.",
)
@click.option(
    "--listen",
    multiple=True,
    metavar="HOST:PORT",
    help="Also serve the session over TCP here (repeatable); beyond loopback it needs --token.",
)
@click.option(
    "--token",
    "tokens",
    multiple=True,
    metavar="TOKEN",
    envvar="TSTREAM_TOKEN",
    show_envvar=True,
    help="A bearer token clients of the served session must present (repeatable); "
    "--hub publishes with the first.",
)
@click.option(
    "--no-serve",
    is_flag=True,
    help="Do not serve the session on a private Unix socket for tstream attach.",
)
@click.option(
    "--hub",
    metavar="URL",
    envvar="TSTREAM_HUB",
    show_envvar=True,
    help="Also publish the session to the tstream serve at URL (http://HOST:PORT or "
    "unix:PATH). A hub that is down or drops never stops the run: events are sent when "
    "it is back. Several URLs separated by commas (hubs sharing one Redis store) are "
    "tried in turn, and publishing resumes on the next one.",
)
@click.option(
    "--hub-flush-timeout",
    type=DURATION,
    help="At the end of the run, how long to wait for the hub to have every event (default: 5s).",
)
@click.option(
    "--hub-notices",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Notices on stderr about the hub: auto prints problems, and the link being lost "
    "and back only when stderr is a terminal; always prints all; never prints none.",
)
@color_option
@processor_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    command: tuple[str, ...],
    timeout: float | None,
    kill_after: float,
    kill_signal: int,
    preserve_status: bool,
    merge_stderr: bool,
    pty: bool,
    max_line_length: int,
    buffer: int,
    overflow: str,
    json_output: bool,
    quiet: bool,
    store_url: str | None,
    session_id: str | None,
    listen: tuple[str, ...],
    tokens: tuple[str, ...],
    no_serve: bool,
    hub: str | None,
    hub_flush_timeout: float | None,
    hub_notices: str,
    color: str,
    **processing: Any,
) -> None:
    """Run COMMAND, showing its output as if it ran bare, while capturing every line.

    Put -- before the command so that its own options are not read as tstream's:

    \b
        tstream run --timeout 5m -- make -j8
    """
    if merge_stderr and pty:
        raise click.UsageError("--merge-stderr and --pty cannot be used together")
    if timeout is not None and timeout <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--timeout")
    serving = _serve_options(listen, tokens, no_serve)
    uplink = _uplink_options(hub, tokens, hub_flush_timeout, hub_notices)
    pipeline = build_pipeline(**processing)
    config = StreamConfig(
        mode="pty" if pty else "merge" if merge_stderr else "pipes",
        max_line_length=max_line_length,
        buffer=buffer,
        overflow=Overflow(overflow),
        processors=pipeline.processors,
        transforms=pipeline.transforms,
        timeout=timeout,
        kill_signal=kill_signal,
        kill_after=kill_after,
        drain_timeout=DEFAULT_DRAIN_TIMEOUT,
        preserve_status=preserve_status,
        passthrough=not (quiet or json_output),
        session_id=session_id,
    )
    status = execute(
        list(command),
        config,
        json_output=json_output,
        record=True,
        store_url=store_url,
        serving=serving,
        uplink=uplink,
        color=stderr_color(color),
    )
    local = sys.modules.get("trio_stream.local")
    if local is not None and local.web_stack_loading():
        # The command ended before its session was served: do not wait for the import.
        exit_now(status)
    sys.exit(status)


def _serve_options(
    listen: tuple[str, ...], tokens: tuple[str, ...], no_serve: bool
) -> ServeOptions:
    """Check ``--listen`` and ``--token`` before the command starts: a bad one is a usage
    error, not a warning in the middle of the run."""
    from ..hub.config import HubConfig, HubConfigError, Listen, parse_token
    from ..local import ServeOptions

    try:
        addresses = tuple(Listen.parse(text) for text in listen)
        for address in addresses:
            if address.path is not None:
                raise HubConfigError(
                    f"listen {address}: use HOST:PORT (the Unix socket is already served)"
                )
        specs = tuple(parse_token(t) for t in tokens)
        HubConfig(listen=addresses, tokens=specs).check_exposure()
    except HubConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen/--token") from None
    return ServeOptions(local=not no_serve, listen=addresses, tokens=tokens)


def _uplink_options(
    hub: str | None, tokens: tuple[str, ...], flush_timeout: float | None, notices: str
) -> UplinkOptions | None:
    if not hub:
        return None
    # Imported only when publishing: the WebSocket client costs every run startup time.
    from ..uplink import DEFAULT_FLUSH_TIMEOUT, UplinkOptions

    try:
        return UplinkOptions(
            hub,
            tokens[0] if tokens else None,
            DEFAULT_FLUSH_TIMEOUT if flush_timeout is None else flush_timeout,
            notices,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--hub") from None


def execute(
    command: Sequence[str],
    config: StreamConfig,
    *,
    json_output: bool = False,
    record: bool = False,
    store_url: str | None = None,
    serving: ServeOptions | None = None,
    uplink: UplinkOptions | None = None,
    color: bool = False,
) -> int:
    """Run ``command`` as ``tstream run`` does and return the exit status for it.

    Args:
        command: the program and its arguments.
        config: the session's configuration.
        json_output: print every event as JSON lines on stdout.
        record: open the store at ``store_url`` for the run and record the session there
            (else ``config.store``, if any, is used as it is).
        store_url: the store (None: ``$TSTREAM_STORE``, else the XDG default).
        serving: how to serve the session (a :class:`~trio_stream.local.ServeOptions`;
            None: not served).
        uplink: where to publish the session (None: nowhere).
        color: colour the lines shown on stderr (see :func:`~trio_stream.render.color_wanted`).

    Returns:
        The command's status as a shell reports it, or 125, 126, 127 for tstream's own
        failures (a message has then been printed on stderr): 125 when the store fails,
        2 when the session id is already in use.
    """
    try:
        if record:
            return trio.run(
                _recorded, command, config, json_output, store_url, serving, uplink, color
            )
        return trio.run(_main, command, config, json_output, serving, uplink, color)
    except Exception as exc:
        error = single(exc)
        if isinstance(error, SpawnError):
            echo_error(str(error))
            return error.exit_status
        if isinstance(error, SessionExistsError):
            echo_error(f"{error} (choose another with --id)")
            return EXIT_ID_IN_USE
        if isinstance(error, StoreError):
            echo_error(str(error))
            return EXIT_FAILURE
        if isinstance(error, BaseExceptionGroup):
            raise
        echo_error(f"error: {error}")
        return EXIT_FAILURE


async def _recorded(
    command: Sequence[str],
    config: StreamConfig,
    json_output: bool,
    store_url: str | None,
    serving: ServeOptions | None = None,
    uplink: UplinkOptions | None = None,
    color: bool = False,
) -> int:
    """Run the session with the store at ``store_url`` open (and recording) throughout."""
    async with open_store(store_url) as store:
        config.store = store
        return await _main(command, config, json_output, serving, uplink, color)


async def _main(
    command: Sequence[str],
    config: StreamConfig,
    json_output: bool,
    serving: ServeOptions | None = None,
    uplink_options: UplinkOptions | None = None,
    color: bool = False,
) -> int:
    writer = TerminalWriter()
    config.terminal = writer
    compact = not json_output and os.isatty(2)
    uplink: Uplink | None = None
    async with trio.open_nursery() as nursery:

        def publish(log: SessionLog) -> Uplink | None:
            """Start sending ``log`` to the hub, when the run has one."""
            if uplink_options is None:
                return None
            started = uplink_options.uplink(log, config.store)
            nursery.start_soon(started.run)
            return started

        nursery.start_soon(writer.run)
        try:
            with SignalQueue(handled_signals(config.mode)) as signals:
                try:
                    async with open_session(command, config) as session:
                        uplink = publish(session.log)
                        if serving is not None and serving.enabled:
                            from ..local import serve_quietly

                            nursery.start_soon(serve_quietly, session, serving)
                        if json_output or compact:
                            nursery.start_soon(_print_events, session, writer, json_output, color)
                        async with trio.open_nursery() as forwarding:
                            forwarding.start_soon(forward_signals, signals, session)
                            await session.wait()
                            forwarding.cancel_scope.cancel()
                except SpawnError as exc:
                    # A command that could not start is a session too: the hub gets it.
                    if exc.session_log is not None:
                        uplink = publish(exc.session_log)
                        if uplink is not None:
                            await _flush(uplink, signals)
                    raise
                if uplink is not None:
                    await _flush(uplink, signals)
        finally:
            writer.close()
    assert session.result is not None
    return session.result.exit_status


async def _flush(uplink: Uplink, signals: SignalQueue) -> None:
    """Give the hub its flush timeout to receive the rest; Ctrl-C (or a signal that
    would end the run) cuts the wait short."""

    async def cut_short_on_signal() -> None:
        while await signals.receive() not in (signal.SIGINT, *FORWARDED):
            pass
        uplink.cut_short()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cut_short_on_signal)
        await uplink.finish()
        nursery.cancel_scope.cancel()


async def _print_events(
    session: Session, writer: TerminalWriter, json_output: bool, color: bool = False
) -> None:
    """Print the session's events: all as JSON on stdout, or non-output ones on stderr
    (coloured with ``color``)."""
    from ..render import compact_line

    async for events in session.events():
        if json_output:
            await writer.write(1, b"".join([event_to_json(e) + b"\n" for e in events]))
            continue
        shown = []
        for run in events.runs:
            if isinstance(run, OutputBatch):
                # Captured lines, already shown by passthrough: no event built for them.
                continue
            for event in run:
                if event.type is EventType.OUTPUT:
                    continue
                line = compact_line(event, color=color)
                if line is not None:
                    shown.append(line + "\n")
        if shown:
            await writer.write(2, "".join(shown).encode(errors="replace"))
