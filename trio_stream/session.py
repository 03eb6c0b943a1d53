"""The streaming session: one command, its readers, processors, recorder and log.

A session owns, in one nursery, everything a run of a command needs: the child (in its own
process group, see :mod:`trio_stream.process`), one reader task per output stream, one task
per processor fed through its own overflow channel, the recorder when a store is set, and
the terminal passthrough. Its :class:`~trio_stream.log.SessionLog` is where every event goes;
the first is ``session_started``, the last ``session_ended``.

Readers read everything already readable, up to 256 KiB at once (a pseudo-terminal hands
over a few KiB per read: see :class:`~trio_stream.process.OutputStream`), split it into
lines, apply the line transforms, and append the lines' ``output`` events to the log
synchronously, right after the read: with two pipes the order of lines across stdout and
stderr is **the order in which tstream read them**, which can differ from the order the
child wrote them when both pipes had data waiting; ``merge`` and ``pty`` modes have one
stream and so the exact order.

Cancelling a session (its timeout, :meth:`Session.cancel`, or the cancellation of the
nursery that owns it) terminates the child's group (the configured signal, then
``SIGCONT``, the grace period, ``SIGKILL`` once), lets the readers drain what the child
wrote, flushes the recorder, and only then returns. After the child exits, pipes still held
open by a background grandchild are drained for at most ``drain_timeout`` seconds; what is
left of the group is then terminated the same way, so nothing outlives the session.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, final

import attrs
import trio

from .batches import EventRuns, OutputBatch
from .channels import ChannelOverflowError, Overflow, PolicyChannel
from .events import (
    Error,
    Event,
    EventType,
    SessionEnded,
    SessionStarted,
)
from .groups import single
from .ids import new_session_id
from .lines import DEFAULT_MAX_LINE_LENGTH, Lines, LineSplitter
from .log import DEFAULT_HISTORY, SessionLog
from .process import (
    EXIT_TIMEOUT,
    MODES,
    Child,
    Mode,
    SpawnError,
    exit_status_of,
    spawn,
    terminate_group,
)
from .processors.base import (
    Completion,
    LineBatch,
    LineTransform,
    ReportsSessionDetails,
    StreamProcessor,
)
from .processors.filters import Redactor
from .publisher import Publisher, live_sessions
from .store.base import SessionInfo, Store, check_session_id
from .store.recorder import record
from .store.sessions import status_for_end, status_of
from .terminal import TerminalWriter

logger = logging.getLogger(__name__)

CHUNK_SIZE: Final = 256 * 1024
DEFAULT_BUFFER: Final = 64
DEFAULT_DRAIN_TIMEOUT: Final = 2.0
DEFAULT_KILL_AFTER: Final = 5.0
# Lines appended to the log at once at most.
_MAX_APPEND: Final = 1000


def _positive_or_none(_: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be more than 0, not {value}")


def _not_negative(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be 0 or more, not {value}")


def _at_least(minimum: int) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
        if value < minimum:
            raise ValueError(f"{attribute.name} must be at least {minimum}, not {value}")

    return check


def _mode(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {value!r}")


@final
@attrs.define(kw_only=True)
class StreamConfig:
    """How to run a command as a streaming session.

    Attributes:
        mode: ``pipes`` (stdout and stderr apart), ``merge`` (one pipe) or ``pty``.
        max_line_length: longest line kept whole, in bytes; longer lines are cut.
        buffer: capacity of each processor's channel, in batches.
        overflow: what a full processor channel does (:class:`~trio_stream.channels.Overflow`).
        processors: the processors, each in its own task.
        transforms: line transforms applied, in order, before anything is recorded.
        timeout: seconds before the command is terminated (None: no limit).
        kill_signal: the first signal sent on timeout or cancellation.
        kill_after: grace period between that signal and ``SIGKILL``, in seconds.
        drain_timeout: how long pipes still open after the child exited are read.
        preserve_status: on timeout, report the child's status rather than 124.
        passthrough: write the child's output, byte for byte, to our stdout and stderr.
        terminal: the writer passthrough uses (default: one the session owns).
        store: where to record the session (None: not recorded).
        session_id: the session's id (default: a generated one).
        metadata: free-form data kept with the session.
        history: events the log keeps in memory for live followers.
        cwd: the child's working directory.
        env: the child's environment.
        window_size: ``(rows, columns)`` of the pty (default: our terminal's).
    """

    mode: Mode = attrs.field(default="pipes", validator=_mode)
    max_line_length: int = attrs.field(default=DEFAULT_MAX_LINE_LENGTH, validator=_at_least(4))
    buffer: int = attrs.field(default=DEFAULT_BUFFER, validator=_at_least(1))
    overflow: Overflow = attrs.field(default=Overflow.BLOCK, converter=Overflow)
    processors: list[StreamProcessor] = attrs.field(factory=list)
    transforms: list[LineTransform] = attrs.field(factory=list)
    timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    kill_signal: int = signal.SIGTERM
    kill_after: float = attrs.field(default=DEFAULT_KILL_AFTER, validator=_not_negative)
    drain_timeout: float = attrs.field(default=DEFAULT_DRAIN_TIMEOUT, validator=_not_negative)
    preserve_status: bool = False
    passthrough: bool = False
    terminal: TerminalWriter | None = None
    store: Store | None = None
    session_id: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    history: int = attrs.field(default=DEFAULT_HISTORY, validator=_at_least(1))
    cwd: str | None = None
    env: Mapping[str, str] | None = None
    window_size: tuple[int, int] | None = None


@final
@attrs.frozen
class SessionResult:
    """How a session ended.

    Attributes:
        session_id: the session's id.
        exit_status: as a shell reports it: the child's status, 128+N for death by signal
            N, 124 on timeout (unless ``preserve_status``).
        signal: the signal that killed the child, if one did.
        timed_out: the timeout expired.
        cancelled: the session was cancelled (not by its timeout).
        duration: seconds from start to the child's end.
        lines: lines recorded.
        filtered: lines the transforms left out.
        dropped: lines each processor did not get (by processor name).
        processor_errors: the error of each processor that stopped (by name).
    """

    session_id: str
    exit_status: int
    signal: int | None = None
    timed_out: bool = False
    cancelled: bool = False
    duration: float = 0.0
    lines: int = 0
    filtered: int = 0
    dropped: dict[str, int] = attrs.Factory(dict)
    processor_errors: dict[str, str] = attrs.Factory(dict)


@attrs.define(eq=False)
class _Feed:
    """One processor, its channel and what it was offered and given."""

    processor: StreamProcessor
    channel: PolicyChannel[LineBatch]
    publisher: Publisher
    offered: int = 0
    received: int = 0
    error: BaseException | None = None


@attrs.define(eq=False)
class _Cursor:
    after: int
    moved: trio.Event = attrs.Factory(trio.Event)


@final
class Session:
    """A running command. Get one from :func:`open_session` or :func:`run_session`.

    Attributes:
        command: the command line.
        config: its configuration.
        log: the session's event log.
        child: the started child (None until started).
        result: how it ended (None until it has).
    """

    def __init__(self, command: Sequence[str], config: StreamConfig) -> None:
        self.command = list(command)
        self.config = config
        self._recorded_command = _redacted(self.command, config.transforms)
        session_id = config.session_id or new_session_id()
        check_session_id(session_id)
        self.log = SessionLog(
            session_id,
            history=config.history,
            record_backlog=None if config.store is None else 100_000,
        )
        self.child: Child | None = None
        self.result: SessionResult | None = None
        self._feeds = [
            _Feed(p, PolicyChannel(config.buffer, config.overflow), Publisher(self.log))
            for p in config.processors
        ]
        names = [f.processor.name for f in self._feeds]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two processors are named {name!r}")
        self._terminal = config.terminal
        self._cursors: list[_Cursor] = []
        self._wait_scope = trio.CancelScope()
        self._cancel_requested = False
        self._done = trio.Event()
        self._readers_left = 0
        self._readers_done = trio.Event()
        self._reader_scopes: list[trio.CancelScope] = []
        self._line_no = 0
        self._filtered = 0
        self._started_at = 0.0
        self._completion: Completion | None = None

    @property
    def session_id(self) -> str:
        return self.log.session_id

    @property
    def pid(self) -> int | None:
        """The child's pid, which is also its process group id."""
        return None if self.child is None else self.child.pid

    def send_signal(self, sig: int) -> bool:
        """Send ``sig`` to the child's whole process group.

        Returns:
            False when there was nothing left to signal.
        """
        if self.child is None or self.child.process.returncode is not None:
            return False
        return self.child.send_signal(sig)

    def resize(self, rows: int, columns: int) -> None:
        """Set the pty's window size (``pty`` mode; otherwise nothing to do)."""
        if self.child is not None and self.child.process.returncode is None:
            self.child.resize(rows, columns)

    def cancel(self) -> None:
        """Terminate the command now (signal, grace, kill) and end the session."""
        self._cancel_requested = True
        self._wait_scope.cancel()

    async def wait(self) -> SessionResult:
        """Wait for the session to end (recorded and processed) and return its result.

        Raises:
            RuntimeError: the session ended without a result because tstream itself
                failed (the error is what :func:`run_session` raised).
        """
        await self._done.wait()
        if self.result is None:
            raise RuntimeError(f"session {self.session_id} failed before it could end")
        return self.result

    async def events(self) -> AsyncIterator[EventRuns]:
        """Every event of the session from its first, in batches, until it ends.

        Each batch is a sequence of :class:`~trio_stream.events.Event` (an
        :class:`~trio_stream.batches.EventRuns`): its events are built as they are read, and
        a consumer that reads columns (the runs' :class:`~trio_stream.batches.OutputBatch`
        lines) builds none.

        Unlike :meth:`SessionLog.follow`, this follower is never left behind: the readers
        wait for it (``block`` flow control), so a slow consumer slows the child rather
        than missing events. Start following before the command has written much; to
        stop before the end, close the iterator (``contextlib.aclosing``) so that the
        readers stop waiting for it at once.

        Raises:
            LookupError: the log no longer holds events this follower has not had (it
                started following after more than the log's history was written).
        """
        cursor = _Cursor(-1)
        self._cursors.append(cursor)
        try:
            async for batch in self.log.follow(cursor.after):
                if not batch.complete:
                    raise LookupError(
                        f"session {self.session_id}: events after offset {cursor.after} are "
                        "no longer held in memory; follow sooner or read them from the store"
                    )
                yield batch.events
                cursor.after = batch.events.last_offset
                cursor.moved.set()
        finally:
            self._cursors.remove(cursor)
            cursor.moved.set()

    # -- running ---------------------------------------------------------------------------

    async def _start(self) -> None:
        """Register with the store and spawn the child."""
        config = self.config
        now = time.time()
        if config.store is not None:
            await config.store.create_session(
                SessionInfo(
                    self.session_id,
                    command=self._recorded_command,
                    cwd=config.cwd or os.getcwd(),
                    created=now,
                    last_activity=now,
                    metadata=dict(config.metadata),
                    pid=os.getpid(),
                    host=socket.gethostname(),
                )
            )
        self._started_at = trio.current_time()
        try:
            self.child = await spawn(
                self.command,
                config.mode,
                cwd=config.cwd,
                env=config.env,
                window_size=config.window_size,
            )
        except SpawnError as exc:
            with trio.CancelScope(shield=True):
                await self._record_spawn_failure(exc)
            exc.session_log = self.log
            raise
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._record_spawn_failure(None)
            raise
        self.log.append([self._started_event()])

    def _started_event(self) -> Event:
        config = self.config
        return Event(
            EventType.SESSION_STARTED,
            SessionStarted(
                self._recorded_command,
                config.cwd or os.getcwd(),
                self.pid,
                config.mode,
                socket.gethostname(),
                dict(config.metadata),
            ),
        )

    async def _record_spawn_failure(self, exc: SpawnError | None) -> None:
        status = exc.exit_status if exc is not None else 125
        self.log.append([self._started_event()])
        if exc is not None:
            self.log.append([Event(EventType.ERROR, Error(str(exc), code="spawn_failed"))])
        ended = SessionEnded(status)
        self.log.append([Event(EventType.SESSION_ENDED, ended)])
        self.log.close()
        store = self.config.store
        if store is not None:
            await store.append(self.session_id, self.log.take_unrecorded())
            now = time.time()
            await store.update_session(
                self.session_id,
                status=status_for_end(ended),
                exit_status=status,
                ended=now,
                last_activity=now,
            )
        self.result = SessionResult(self.session_id, status)
        self._done.set()

    async def _run(self) -> None:
        """Everything after the spawn, shielded: it ends only when the session has."""
        assert self.child is not None
        config = self.config
        if config.timeout is not None:
            self._wait_scope.deadline = self._started_at + config.timeout
        owned_terminal = None
        if config.passthrough and self._terminal is None:
            owned_terminal = self._terminal = TerminalWriter()
        try:
            async with trio.open_nursery() as nursery:
                if config.store is not None:
                    nursery.start_soon(record, config.store, self.log)
                if owned_terminal is not None:
                    nursery.start_soon(owned_terminal.run)
                async with trio.open_nursery() as processors:
                    for feed in self._feeds:
                        processors.start_soon(self._run_processor, feed)
                    try:
                        await self._run_child()
                    finally:
                        for feed in self._feeds:
                            feed.channel.close()
                    if self._cancel_requested:
                        # A cancelled session must end soon: processors get the drain
                        # period to finish what they hold, not forever.
                        processors.cancel_scope.deadline = (
                            trio.current_time() + config.drain_timeout
                        )
                self._finish()
                if owned_terminal is not None:
                    owned_terminal.close()
            await self._update_store()
        finally:
            # Closing the streams also closes the pty's master side.
            await self.child.aclose()
            if self.result is None:
                self.log.close()
            self._done.set()

    async def _run_child(self) -> None:
        child = self.child
        assert child is not None
        config = self.config
        process = child.process
        self._readers_left = len(child.streams)
        async with trio.open_nursery() as readers:
            for source, stream in child.streams:
                readers.start_soon(self._read, source, stream)
            try:
                with self._wait_scope:
                    await process.wait()
            except BaseException:
                # Something else ended the session (the recorder's store failed): the
                # command must not outlive it.
                await terminate_group(process, sig=config.kill_signal, kill_after=config.kill_after)
                raise
            if process.returncode is None:
                await terminate_group(process, sig=config.kill_signal, kill_after=config.kill_after)
            ended = trio.current_time()
            with trio.move_on_after(config.drain_timeout):
                await self._readers_done.wait()
            if not self._readers_done.is_set():
                # A background member of the group still holds the pipes open.
                await terminate_group(process, sig=config.kill_signal, kill_after=config.kill_after)
                with trio.move_on_after(config.drain_timeout):
                    await self._readers_done.wait()
                for scope in self._reader_scopes:
                    scope.cancel()
        assert process.returncode is not None
        status, sig = exit_status_of(process.returncode)
        timed_out = self._wait_scope.cancelled_caught and not self._cancel_requested
        if timed_out and not config.preserve_status:
            status = EXIT_TIMEOUT
        self._completion = Completion(status, sig, timed_out, ended - self._started_at)

    async def _read(self, source: Any, stream: trio.abc.ReceiveStream) -> None:
        splitter = LineSplitter(self.config.max_line_length)
        fd = 1 if source == "stdout" else 2
        terminal = self._terminal if self.config.passthrough else None
        try:
            with trio.CancelScope() as scope:
                self._reader_scopes.append(scope)
                while True:
                    try:
                        data = await stream.receive_some(CHUNK_SIZE)
                    except (trio.ClosedResourceError, trio.BrokenResourceError):
                        data = b""
                    if not data:
                        break
                    ts = time.time()
                    if terminal is not None:
                        await terminal.write(fd, data)
                    # Lines nobody may read one by one are split only when asked for.
                    lines = splitter.feed_lines(data, lazy=not (self._cursors or self._feeds))
                    if lines:
                        await self._deliver(source, lines, ts)
            lines = splitter.close_lines()
            if lines:
                await self._deliver(source, lines, time.time())
        finally:
            self._readers_left -= 1
            if self._readers_left == 0:
                self._readers_done.set()

    async def _deliver(self, source: Any, lines: Lines, ts: float) -> None:
        """Transform, number, record and hand out lines read together."""
        count = len(lines)
        if self.config.transforms:
            listed = list(lines)
            for transform in self.config.transforms:
                listed = transform.apply(source, listed)
            lines = Lines.of(listed)
        self._filtered += count - len(lines)
        log = self.log
        # Parts no larger than a follower's allowed lag, appended only once every follower
        # is within that lag: a follower is then never more than half the history behind.
        step = max(1, min(_MAX_APPEND, self.config.history // 4))
        if not self._cursors and not self._feeds:
            # Nobody follows: the lines go to the log whole, as read.
            step = max(step, len(lines))
        for start in range(0, len(lines), step):
            part = lines.part(start, start + step)
            if self._cursors:
                await self._wait_followers()
            first_line = self._line_no
            self._line_no += len(part)
            batch = log.append_built(
                lambda sid, first, line=first_line, part=part: OutputBatch(
                    sid, first, ts, source, line, part
                )
            )
            await log.wait_recorded_room()
            if self._feeds:
                first_offset = batch.first_offset
                offsets = range(first_offset, first_offset + len(part))
                batch = LineBatch(source, first_line, part, ts, offsets)
                for feed in self._feeds:
                    feed.offered += len(part)
                    await feed.channel.send(batch)

    async def _wait_followers(self) -> None:
        limit = max(1, self.config.history // 4)
        for cursor in list(self._cursors):
            while cursor in self._cursors and self.log.last_offset - cursor.after > limit:
                if cursor.moved.is_set():
                    cursor.moved = trio.Event()
                await cursor.moved.wait()

    async def _run_processor(self, feed: _Feed) -> None:
        processor, publish = feed.processor, feed.publisher
        try:
            while True:
                try:
                    batches = await feed.channel.receive_batch()
                except trio.EndOfChannel:
                    break
                for batch in batches:
                    feed.received += len(batch.lines)
                    await processor.process(batch, publish)
            if self._completion is not None:
                await processor.on_complete(self._completion, publish)
        except Exception as exc:
            await self._processor_failed(feed, exc)

    async def _processor_failed(self, feed: _Feed, exc: Exception) -> None:
        """Report a processor's failure, then keep its channel empty until the end."""
        name = feed.processor.name
        feed.error = exc
        if isinstance(exc, ChannelOverflowError):
            message = f"processor {name} stopped: {exc}"
        else:
            message = f"processor {name} failed: {type(exc).__name__}: {exc}"
            logger.error("%s", message, exc_info=exc)
        if not self.log.closed:
            self.log.append(
                [Event(EventType.ERROR, Error(message, "processor_error", {"processor": name}))]
            )
        try:
            await feed.processor.on_error(exc, feed.publisher)
        except Exception as again:
            logger.error("processor %s: on_error failed: %r", name, again)
        # The reader must never wait for a processor that stopped: what it is offered from
        # now on is taken and counted as dropped. A failed ``fail`` channel never makes its
        # sender wait, so there is nothing to take from it.
        while True:
            try:
                await feed.channel.receive_batch()
            except (trio.EndOfChannel, ChannelOverflowError):
                return

    def _finish(self) -> None:
        """Append ``session_ended``, close the log and set :attr:`result`."""
        completion = self._completion
        assert completion is not None
        details: dict[str, Any] = {}
        for feed in self._feeds:
            if feed.error is None and isinstance(feed.processor, ReportsSessionDetails):
                try:
                    details.update(feed.processor.session_details())
                except Exception as exc:
                    logger.error(
                        "processor %s: session_details failed: %r", feed.processor.name, exc
                    )
        dropped = {f.processor.name: f.offered - f.received for f in self._feeds}
        self.log.append(
            [
                Event(
                    EventType.SESSION_ENDED,
                    SessionEnded(
                        completion.exit_status,
                        completion.signal,
                        completion.timed_out,
                        completion.duration,
                        dropped,
                        False,
                        self._line_no,
                        details,
                    ),
                )
            ]
        )
        self.log.close()
        self.result = SessionResult(
            self.session_id,
            completion.exit_status,
            completion.signal,
            completion.timed_out,
            self._cancel_requested,
            completion.duration,
            self._line_no,
            self._filtered,
            dropped,
            {f.processor.name: repr(f.error) for f in self._feeds if f.error is not None},
        )

    async def _update_store(self) -> None:
        store, result = self.config.store, self.result
        if store is None or result is None:
            return
        status = status_of(result.exit_status, result.signal, timed_out=result.timed_out)
        now = time.time()
        with trio.CancelScope(shield=True):
            await store.update_session(
                self.session_id,
                status=status,
                exit_status=result.exit_status,
                ended=now,
                last_activity=now,
            )


def _redacted(command: list[str], transforms: Sequence[LineTransform]) -> list[str]:
    """The command as recorded and served: ``--redact`` hides secrets in it too."""
    for transform in transforms:
        if isinstance(transform, Redactor):
            command = [transform.redact(argument) for argument in command]
    return command


async def run_session(
    command: Sequence[str],
    config: StreamConfig | None = None,
    *,
    task_status: trio.TaskStatus[Session] = trio.TASK_STATUS_IGNORED,
) -> SessionResult:
    """Run ``command`` as a streaming session; start it with ``nursery.start``.

    ``await nursery.start(run_session, cmd, config)`` returns the :class:`Session` once the
    child runs and ``session_started`` is in the log; the task then runs until the session
    has ended. Cancelling it terminates the child's group and ends the session properly
    (drained, processed, recorded) before the cancellation goes on.

    Args:
        command: the program and its arguments.
        config: how to run it (default: :class:`StreamConfig()`).

    Returns:
        How the session ended.

    Raises:
        SpawnError: the command could not be started (``CommandNotFoundError``…).
        SessionExistsError: the store already has a session with this id.
        InvalidSessionIdError: the session id is not a valid id.
        ValueError: an invalid configuration (an empty command, two processors of one name).
    """
    session = Session(command, config or StreamConfig())
    # publisher_for(id) reaches the session from any task of the process while it runs.
    with live_sessions.register(session.log):
        await session._start()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_shielded, session)
                task_status.started(session)
                try:
                    await session._done.wait()
                except BaseException:
                    session.cancel()
                    raise
        except BaseExceptionGroup as group:
            raise single(group) from None
    assert session.result is not None
    return session.result


async def _shielded(session: Session) -> None:
    with trio.CancelScope(shield=True):
        await session._run()


@asynccontextmanager
async def open_session(
    command: Sequence[str], config: StreamConfig | None = None
) -> AsyncIterator[Session]:
    """Run ``command`` as a streaming session for the duration of an ``async with`` block.

    Leaving the block waits for the session to end; an exception (or a cancellation)
    in the block cancels the session first, which terminates the child's group.

    Example::

        async with open_session(["make"], StreamConfig(timeout=600)) as session:
            async for events in session.events():
                ...
        print(session.result.exit_status)

    Raises:
        The errors of :func:`run_session`.
    """
    try:
        async with trio.open_nursery() as nursery:
            session = await nursery.start(run_session, command, config)
            try:
                yield session
            except BaseException:
                session.cancel()
                raise
            await session.wait()
    except BaseExceptionGroup as group:
        raise single(group) from None
