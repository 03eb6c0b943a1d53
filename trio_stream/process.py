"""Spawning a command and controlling its process group.

A child runs in a session of its own (``start_new_session``), and so in a process group of
its own whose id is its pid. That is the right choice for a child that shares tstream's
terminal:

* tstream stays the terminal's foreground job, so Ctrl-C and Ctrl-Z reach tstream, which
  forwards them (once) to the child's whole group;
* the child has no controlling terminal, so reading or writing the inherited terminal never
  stops it with ``SIGTTIN``/``SIGTTOU``, as it would in a background group of tstream's own
  session (``process_group=0``);
* ``/dev/tty`` cannot be opened by the child: interactive programs belong in ``pty`` mode,
  where the child's session has the pseudo-terminal as its controlling terminal.

Signals go to the whole group (``os.killpg``), never to the pid alone (trio's own
``Process.terminate`` signals only the pid, trio issue 3237), so grandchildren are reached.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any, Final, Literal, TypeAlias, final

import attrs
import trio

from .events import Source

Mode: TypeAlias = Literal["pipes", "merge", "pty"]
MODES: Final[tuple[str, ...]] = ("pipes", "merge", "pty")

EXIT_TIMEOUT: Final = 124
EXIT_FAILURE: Final = 125
EXIT_NOT_EXECUTABLE: Final = 126
EXIT_NOT_FOUND: Final = 127

DEFAULT_KILL_AFTER: Final = 5.0
DEFAULT_DRAIN_TIMEOUT: Final = 2.0
# How often a group whose leader has exited is checked for remaining members.
_GROUP_POLL: Final = 0.02
_KILL_SETTLE: Final = 1.0
_BATCH_CHUNK: Final = 64 * 1024
# A pipe's whole buffer: one read of a pipe hands over at most this much.
_READ_SIZE: Final = 64 * 1024
# The buffer asked for the pipe between the pty's relay and tstream (Linux's default
# ceiling for an unprivileged process); the kernel's default is kept when it refuses.
_RELAY_PIPE_SIZE: Final = 1 << 20
_PR_SET_PDEATHSIG: Final = 1


class SpawnError(Exception):
    """The command could not be started.

    Attributes:
        exit_status: the shell's status for it: 127 not found, 126 not executable.
        session_log: when a session recorded the failure, its log (closed, holding
            ``session_started``, the ``error`` and ``session_ended``), so that it can
            still be published.
    """

    exit_status: int = EXIT_NOT_EXECUTABLE
    session_log: Any = None


class CommandNotFoundError(SpawnError):
    exit_status = EXIT_NOT_FOUND


class CommandNotExecutableError(SpawnError):
    exit_status = EXIT_NOT_EXECUTABLE


def exit_status_of(returncode: int) -> tuple[int, int | None]:
    """The shell's exit status for a ``Popen.returncode``, and the signal that killed it.

    Returns:
        ``(status, None)`` for a normal exit; ``(128 + N, N)`` for death by signal N.
    """
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group ``pgid``.

    Returns:
        False when the group no longer has any member.
    """
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def running_processes() -> Iterator[tuple[int, int, int]]:
    """``(pid, ppid, pgrp)`` of every process that ``/proc`` shows and is not a zombie.

    Raises:
        OSError: when ``/proc`` cannot be listed.
    """
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                # After the command name: state, ppid, pgrp.
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[0] != b"Z":
            yield int(entry), int(fields[1]), int(fields[2])


def group_alive(pgid: int) -> bool:
    """Whether the process group ``pgid`` still has a member that is not a zombie.

    Zombies are left out where ``/proc`` shows them: a killed grandchild reparented to an
    init that is slow to reap it is gone for our purposes.
    """
    if not signal_group(pgid, 0):
        return False
    try:
        return any(pgrp == pgid for _, _, pgrp in running_processes())
    except OSError:
        return True


def terminal_size(fds: Sequence[int] = (0, 1, 2)) -> tuple[int, int] | None:
    """``(rows, columns)`` of the first of ``fds`` that is a terminal, or None."""
    for fd in fds:
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        return size.lines, size.columns
    return None


def set_window_size(fd: int, rows: int, columns: int) -> None:
    """Resize the pseudo-terminal ``fd`` (the kernel then sends SIGWINCH to its job)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _take_controlling_terminal() -> None:
    # Runs in the child after setsid(): fd 1 is the pty's slave side.
    fcntl.ioctl(1, termios.TIOCSCTTY, 0)


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


@final
@attrs.define(eq=False)
class Child:
    """A started command.

    Attributes:
        process: the trio process (``process.pid`` is also the group id).
        mode: how its output is captured.
        streams: what to read, with the source each stream's lines are attributed to.
        pty_fd: the pseudo-terminal's master side in ``pty`` mode, else None.
        relay: in ``pty`` mode, the process that copies the master side into the pipe
            that ``streams`` reads (see :func:`spawn`), or None when tstream reads the
            master side itself.
    """

    process: trio.Process
    mode: Mode
    streams: list[tuple[Source, trio.abc.ReceiveStream]]
    pty_fd: int | None = None
    relay: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def send_signal(self, sig: int) -> bool:
        """Send ``sig`` to the child's whole process group; False when the group is gone."""
        return signal_group(self.process.pid, sig)

    def resize(self, rows: int, columns: int) -> None:
        """Set the pty's window size (``pty`` mode only; otherwise nothing to do)."""
        if self.pty_fd is not None:
            set_window_size(self.pty_fd, rows, columns)

    async def aclose(self) -> None:
        """Close every stream read from the child (and in ``pty`` mode the master side,
        after stopping its relay if it still runs)."""
        with trio.CancelScope(shield=True):
            for _, stream in self.streams:
                await stream.aclose()
            relay = self.relay
            if relay is not None:
                self.relay = None
                if relay.poll() is None:
                    # A process that outlived the command still holds the pty open.
                    relay.kill()
                    await trio.to_thread.run_sync(relay.wait)
            if relay is not None and self.pty_fd is not None:
                os.close(self.pty_fd)
                self.pty_fd = None


async def spawn(
    command: Sequence[str],
    mode: Mode = "pipes",
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    window_size: tuple[int, int] | None = None,
) -> Child:
    """Start ``command`` in a new session with its output captured.

    ``pipes`` gives stdout and stderr a pipe each; ``merge`` one pipe for both (exact
    interleaving, attributed to stdout); ``pty`` a pseudo-terminal for both, which the child
    has as its controlling terminal. Standard input is inherited in every mode. On Linux,
    a ``cat`` of its own copies the pty's output into a pipe that tstream reads (see
    :func:`_start_relay`).

    Args:
        command: the program and its arguments.
        mode: ``pipes``, ``merge`` or ``pty``.
        cwd: the working directory (default: ours).
        env: the environment (default: ours).
        window_size: ``(rows, columns)`` of the pty (default: our terminal's, if any).

    Returns:
        The started child.

    Raises:
        ValueError: for an empty command or an unknown mode.
        CommandNotFoundError: the program does not exist.
        CommandNotExecutableError: it cannot be executed (permissions, a directory…).
    """
    if not command:
        raise ValueError("no command given")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    argv = list(command)
    options: dict[str, object] = {"start_new_session": True, "cwd": cwd, "env": env}
    try:
        if mode == "pty":
            return await _spawn_pty(argv, options, window_size or terminal_size())
        stderr = subprocess.STDOUT if mode == "merge" else subprocess.PIPE
        process = await trio.lowlevel.open_process(
            argv, stdout=subprocess.PIPE, stderr=stderr, **options
        )
    except OSError as exc:
        raise _spawn_error(exc, argv[0], cwd) from None
    # trio gives a pipe as an FdStream on every platform that has process groups.
    assert isinstance(process.stdout, trio.lowlevel.FdStream)
    assert process.stderr is None or isinstance(process.stderr, trio.lowlevel.FdStream)
    streams: list[tuple[Source, trio.abc.ReceiveStream]] = [
        ("stdout", OutputStream(process.stdout))
    ]
    if process.stderr is not None:
        streams.append(("stderr", OutputStream(process.stderr)))
    return Child(process, mode, streams)


def _spawn_error(exc: OSError, program: str, cwd: str | None) -> Exception:
    """The error to raise for ``exc`` from starting ``program``, in the shell's words."""
    if isinstance(exc, FileNotFoundError):
        if cwd is not None and exc.filename == cwd:
            return SpawnError(f"{cwd}: no such directory")
        return CommandNotFoundError(f"{program}: command not found")
    if isinstance(exc, PermissionError | IsADirectoryError | NotADirectoryError):
        return CommandNotExecutableError(f"{program}: {(exc.strerror or 'cannot execute').lower()}")
    if exc.errno == errno.ENOEXEC:
        return CommandNotExecutableError(f"{program}: exec format error")
    return exc


async def _spawn_pty(
    argv: list[str], options: dict[str, object], window_size: tuple[int, int] | None
) -> Child:
    master, slave = os.openpty()
    try:
        if window_size is not None:
            set_window_size(master, *window_size)
        process = await trio.lowlevel.open_process(
            argv,
            stdout=slave,
            stderr=slave,
            preexec_fn=_take_controlling_terminal,
            **options,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    relay = _start_relay(master)
    if relay is None:
        stream = OutputStream(trio.lowlevel.FdStream(master))
        return Child(process, "pty", [("stdout", stream)], master)
    process_relay, read_end = relay
    stream = OutputStream(trio.lowlevel.FdStream(read_end))
    return Child(process, "pty", [("stdout", stream)], master, process_relay)


def _start_relay(master: int) -> tuple[subprocess.Popen[bytes], int] | None:
    """Start ``cat`` copying the pty's master side into a pipe: its process and the
    pipe's read end, or None where there is no relay (not Linux, no ``cat``).

    A pseudo-terminal holds about 15 KiB and hands over at most 4 KiB a read. Read by
    tstream itself, a command that writes fast waits whenever tstream is busy with what
    it read (the recording's threads included), and tstream waits while the command
    refills the pty. ``cat`` empties the pty as ``script`` does, into a pipe of 1 MiB
    that tstream reads as it reads a command's pipes. The pty stays the command's
    terminal: window size, signals, line discipline, and the end of the stream (``cat``
    ends on EIO, once every slave side closed) are unchanged. The relay dies with the
    thread that started it (``PR_SET_PDEATHSIG``), so that a killed tstream still hangs
    up the command's terminal, as closing the last master side does.
    """
    if sys.platform != "linux":
        return None
    program = shutil.which("cat")
    if program is None:
        return None
    read_end, write_end = os.pipe()
    try:
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            try:
                fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _RELAY_PIPE_SIZE)
            except OSError:
                pass
        # Runs in the relay between fork and exec (libc is found before the fork):
        # SIGKILL once the thread that started it ends.
        die_with_parent = partial(_libc().prctl, _PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # Started from this thread rather than trio's worker threads: the signal on the
        # parent's death follows the thread that forked, and a worker thread ends when
        # idle. In a session of its own, the relay never sees the terminal's Ctrl-C, so
        # that it copies the command's last words too.
        relay = subprocess.Popen(
            [program],
            stdin=master,
            stdout=write_end,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    except (OSError, subprocess.SubprocessError):
        # tstream then reads the pty itself.
        os.close(read_end)
        return None
    finally:
        os.close(write_end)
    return relay, read_end


@final
class OutputStream(trio.abc.ReceiveStream):
    """The child's end of a pipe or the pty's master side, read in bursts.

    :meth:`receive_some` waits for the first bytes, then takes everything else that is
    already readable, up to ``max_bytes``, with non-blocking reads that cost no trip
    through trio's scheduler. A pseudo-terminal hands over at most a few KiB per read: a
    command that writes fast is read in bursts of many reads, and everything that follows
    a read (splitting, the log, processors, the terminal) is paid once per burst rather
    than once per read. Nothing waits for more to arrive: what is read is returned as
    soon as the descriptor has nothing more to give.

    On a pty, EIO (every slave side closed) is the end of the stream.

    Args:
        stream: the stream trio made of the descriptor (its ``O_NONBLOCK`` set).
        read_size: the most each single read asks for.
    """

    def __init__(self, stream: trio.lowlevel.FdStream, read_size: int = _READ_SIZE) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        self._read_size = read_size
        self._closed = False

    def fileno(self) -> int:
        return self._fd

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        limit = max_bytes or self._read_size
        fd = self._fd
        read_size = self._read_size
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                data = os.read(fd, min(limit, read_size))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            except OSError as exc:
                data = self._ended(exc)
            break
        size = len(data)
        if size and size < limit:
            parts = [data]
            while size < limit:
                try:
                    more = os.read(fd, min(read_size, limit - size))
                except OSError:
                    # Nothing more yet (EAGAIN), or an end or error that the next call
                    # meets and reports: what was read is returned first.
                    break
                if not more:
                    break
                parts.append(more)
                size += len(more)
            if len(parts) > 1:
                data = b"".join(parts)
        # What was read is not lost to a cancellation: it is returned.
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    @staticmethod
    def _ended(exc: OSError) -> bytes:
        """The end of the stream for EIO (a pty whose every slave side closed); else raise
        the error as trio's stream would."""
        if exc.errno == errno.EIO:
            return b""
        if exc.errno == errno.EBADF:
            raise trio.ClosedResourceError("file was already closed") from None
        raise trio.BrokenResourceError from exc

    async def aclose(self) -> None:
        # Before the descriptor is closed: its number may be reused at once.
        self._closed = True
        await self._stream.aclose()


async def terminate_group(
    process: trio.Process,
    *,
    sig: int = signal.SIGTERM,
    kill_after: float = DEFAULT_KILL_AFTER,
) -> None:
    """Stop the process group led by ``process``, then reap ``process``.

    Sends ``sig`` and then ``SIGCONT`` (a stopped process cannot act on ``sig``) to the
    whole group, waits up to ``kill_after`` seconds for the leader to exit and every other
    member of the group to go, then sends ``SIGKILL`` to the group once if anything is
    left. Runs shielded from cancellation: when it returns, the leader has been reaped.

    Args:
        process: the group's leader.
        sig: the first signal.
        kill_after: the grace period, in seconds.
    """
    pgid = process.pid
    with trio.CancelScope(shield=True):
        signal_group(pgid, sig)
        if sig not in (signal.SIGKILL, signal.SIGCONT):
            signal_group(pgid, signal.SIGCONT)
        with trio.move_on_after(kill_after):
            await process.wait()
            while group_alive(pgid):
                await trio.sleep(_GROUP_POLL)
        if process.returncode is None or group_alive(pgid):
            signal_group(pgid, signal.SIGKILL)
            await process.wait()
            # SIGKILL takes effect asynchronously: give the kernel a moment to finish the
            # other members, so that no part of the group outlives this call.
            with trio.move_on_after(_KILL_SETTLE):
                while group_alive(pgid):
                    await trio.sleep(_GROUP_POLL)
        await process.wait()


@final
@attrs.frozen
class CompletedRun:
    """What a command run in batch mode gave.

    Attributes:
        command: the command line.
        exit_status: as a shell reports it (128+N for death by signal N, 124 on timeout
            unless ``preserve_status``).
        stdout: everything written to standard output.
        stderr: everything written to standard error.
        signal: the signal that killed the child, if one did.
        timed_out: the timeout expired.
    """

    command: list[str]
    exit_status: int
    stdout: bytes
    stderr: bytes
    signal: int | None = None
    timed_out: bool = False


async def run(
    command: Sequence[str],
    *,
    timeout: float | None = None,
    kill_signal: int = signal.SIGTERM,
    kill_after: float = DEFAULT_KILL_AFTER,
    preserve_status: bool = False,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    stdin: bytes | None = b"",
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> CompletedRun:
    """Run ``command`` to completion and return its output and exit status (batch mode).

    The plain semantics of ``trio.run_process(capture_stdout=True, capture_stderr=True,
    check=False)``, at the same cost, with the process control of a session: the child runs
    in its own group, and a timeout or cancellation terminates the whole group (the
    signal, ``SIGCONT``, the grace period, ``SIGKILL``). For live lines, processors and a
    recording, see :func:`trio_stream.session.run_session`.

    Args:
        command: the program and its arguments.
        timeout: seconds before the group is terminated (None: no limit).
        kill_signal: the first signal sent on timeout or cancellation.
        kill_after: the grace period before ``SIGKILL``, in seconds.
        preserve_status: on timeout, report the child's status rather than 124.
        drain_timeout: how long pipes still open after the child exited are read; what
            is left of its group is then terminated.
        stdin: bytes for standard input (None: inherit ours).
        cwd: the working directory.
        env: the environment.

    Returns:
        The output and status.

    Raises:
        ValueError: an empty command or a timeout that is not positive.
        CommandNotFoundError: the program does not exist.
        CommandNotExecutableError: it cannot be executed.
    """
    if not command:
        raise ValueError("no command given")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be more than 0, not {timeout}")
    argv = list(command)
    options: dict[str, object] = {"start_new_session": True, "cwd": cwd, "env": env}
    try:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE if stdin is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **options,
        )
    except OSError as exc:
        raise _spawn_error(exc, argv[0], cwd) from None
    outputs: dict[str, list[bytes]] = {"stdout": [], "stderr": []}

    readers_left = 2
    collected = trio.Event()

    async def collect(name: str, stream: trio.abc.ReceiveStream) -> None:
        chunks = outputs[name]
        async with stream:
            while chunk := await stream.receive_some(_BATCH_CHUNK):
                chunks.append(chunk)
        nonlocal readers_left
        readers_left -= 1
        if not readers_left:
            collected.set()

    async def feed(stream: trio.abc.SendStream, data: bytes) -> None:
        async with stream:
            try:
                await stream.send_all(data)
            except trio.BrokenResourceError:
                pass

    assert process.stdout is not None and process.stderr is not None
    timed_out = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, "stdout", process.stdout)
            nursery.start_soon(collect, "stderr", process.stderr)
            if process.stdin is not None:
                nursery.start_soon(feed, process.stdin, stdin or b"")
            with trio.CancelScope() as scope:
                if timeout is not None:
                    scope.deadline = trio.current_time() + timeout
                await process.wait()
            if process.returncode is None:
                timed_out = True
                await terminate_group(process, sig=kill_signal, kill_after=kill_after)
            with trio.move_on_after(drain_timeout):
                await collected.wait()
            if not collected.is_set():
                # A background member of the group still holds the pipes open.
                await terminate_group(process, sig=kill_signal, kill_after=kill_after)
                with trio.move_on_after(drain_timeout):
                    await collected.wait()
                nursery.cancel_scope.cancel()
    except BaseException:
        await terminate_group(process, sig=kill_signal, kill_after=kill_after)
        raise
    status, sig = exit_status_of(process.returncode)
    if timed_out and not preserve_status:
        status = EXIT_TIMEOUT
    return CompletedRun(
        argv,
        status,
        b"".join(outputs["stdout"]),
        b"".join(outputs["stderr"]),
        sig,
        timed_out,
    )
