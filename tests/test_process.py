import os
import signal
import sys

import pytest
import trio

from trio_stream import process
from trio_stream.process import (
    CommandNotExecutableError,
    CommandNotFoundError,
    OutputStream,
    SpawnError,
    exit_status_of,
    run,
    spawn,
    terminate_group,
)


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (it may linger as a zombie of an idle init)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def test_exit_status_follows_the_shell_convention():
    assert exit_status_of(0) == (0, None)
    assert exit_status_of(3) == (3, None)
    assert exit_status_of(-signal.SIGKILL) == (137, signal.SIGKILL)


async def test_batch_run_returns_output_and_status():
    done = await run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (done.stdout, done.stderr) == (b"out\n", b"err\n")
    assert (done.exit_status, done.signal) == (3, None)


async def test_batch_run_feeds_stdin():
    done = await run(["cat"], stdin=b"given\n")
    assert done.stdout == b"given\n"


async def test_batch_run_timeout_keeps_output_and_reports_124():
    done = await run(["sh", "-c", "echo early; exec sleep 30"], timeout=0.2)
    assert done.timed_out and done.exit_status == 124 and done.signal == signal.SIGTERM
    assert done.stdout == b"early\n"


async def test_batch_run_preserve_status_reports_the_childs_status():
    done = await run(["sleep", "30"], timeout=0.1, preserve_status=True)
    assert done.timed_out and done.exit_status == 128 + signal.SIGTERM


async def test_missing_command_is_127_and_not_executable_126(tmp_path):
    with pytest.raises(CommandNotFoundError, match="nosuch-tstream-cmd: command not found") as e:
        await run(["nosuch-tstream-cmd"])
    assert e.value.exit_status == 127
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(CommandNotExecutableError) as e2:
        await spawn([str(script)])
    assert e2.value.exit_status == 126


async def test_empty_command_is_refused():
    with pytest.raises(ValueError, match="no command"):
        await spawn([])
    with pytest.raises(ValueError, match="unknown mode"):
        await spawn(["true"], "sideways")  # type: ignore[arg-type]


async def test_timeout_kills_a_grandchild_that_ignores_sigterm():
    script = "sh -c 'trap \"\" TERM; echo $$; exec sleep 30' & wait"
    with trio.fail_after(5):
        done = await run(["sh", "-c", script], timeout=0.3, kill_after=0.3)
    grandchild = int(done.stdout.split()[0])
    assert done.exit_status == 124
    assert gone(grandchild)


async def test_drain_of_pipes_held_by_a_background_grandchild_is_bounded():
    with trio.fail_after(5):
        done = await run(["sh", "-c", "echo $$; sleep 30 &"], drain_timeout=0.2, kill_after=0.5)
    assert done.exit_status == 0 and done.stdout.strip().isdigit()


async def test_terminate_group_sends_cont_after_the_signal_to_a_stopped_child():
    child = await spawn(["sh", "-c", "trap 'exit 7' TERM; kill -STOP $$; exit 0"])
    with trio.fail_after(5):
        while open(f"/proc/{child.pid}/stat").read().rpartition(")")[2].split()[0] != "T":
            await trio.sleep(0.01)
        await terminate_group(child.process, kill_after=2)
    assert child.process.returncode == 7
    await child.aclose()


async def test_spawned_child_leads_its_own_session_and_group():
    child = await spawn(["sleep", "30"])
    try:
        assert os.getpgid(child.pid) == child.pid
        assert os.getsid(child.pid) == child.pid
    finally:
        await terminate_group(child.process)
        await child.aclose()
    assert child.process.returncode == -signal.SIGTERM


async def test_a_file_that_is_not_a_program_is_not_executable(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00\x01\x02 not a program")
    junk.chmod(0o755)
    with pytest.raises(CommandNotExecutableError, match="exec format error") as e:
        await run([str(junk)])
    assert e.value.exit_status == 126


async def test_a_missing_working_directory_is_named(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(SpawnError, match="no such directory"):
        await spawn(["true"], cwd=missing)


async def test_output_is_read_in_bursts_of_what_is_already_readable():
    read_end, write_end = os.pipe()
    stream = OutputStream(trio.lowlevel.FdStream(read_end), read_size=1000)
    try:
        for byte in b"abc":
            os.write(write_end, bytes([byte]) * 1000)
        # Three reads, one call; no more than asked for.
        assert await stream.receive_some(1500) == b"a" * 1000 + b"b" * 500
        assert await stream.receive_some(10_000) == b"b" * 500 + b"c" * 1000
        os.write(write_end, b"end")
        os.close(write_end)
        assert await stream.receive_some(10_000) == b"end"
        assert await stream.receive_some(10_000) == b""
    finally:
        await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_some()


async def test_a_pty_ends_when_its_last_writer_closes_it():
    child = await spawn(["printf", "one\\ntwo\\n"], "pty")
    ((_, stream),) = child.streams
    received = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some(1 << 18):
            received += chunk
        await child.process.wait()
    await child.aclose()
    assert received == b"one\r\ntwo\r\n"


async def read_all(stream) -> bytes:
    received = b""
    while chunk := await stream.receive_some(1 << 18):
        received += chunk
    return received


async def spawn_pty(command: list[str], *, relayed: bool = True):
    """``command`` on a pty: the child and the one stream to read (through a relay, or
    not)."""
    child = await spawn(command, "pty")
    assert (child.relay is not None) == relayed
    ((_, stream),) = child.streams
    return child, stream


@pytest.mark.skipif(sys.platform != "linux", reason="the pty's relay is Linux's")
async def test_a_pty_is_read_through_a_relay_that_ends_with_it():
    child, stream = await spawn_pty(["sh", "-c", "printf 'one\\n'; printf 'two\\n' >&2"])
    relay = child.relay
    with trio.fail_after(10):
        received = await read_all(stream)
        await child.process.wait()
    # The relay ended with the pty (EIO), on its own.
    assert relay.wait(timeout=10) is not None
    await child.aclose()
    assert received == b"one\r\ntwo\r\n"
    assert child.relay is None and child.pty_fd is None


async def test_without_a_relay_tstream_reads_the_pty_itself(monkeypatch):
    monkeypatch.setattr(process.shutil, "which", lambda name: None)
    child, stream = await spawn_pty(["printf", "one\\ntwo\\n"], relayed=False)
    with trio.fail_after(10):
        received = await read_all(stream)
        await child.process.wait()
    await child.aclose()
    assert received == b"one\r\ntwo\r\n"


@pytest.mark.skipif(sys.platform != "linux", reason="the pty's relay is Linux's")
async def test_closing_the_child_stops_a_relay_that_a_stray_process_keeps_open():
    # A process that outlives the command holds the pty: no EIO comes, and the relay would
    # wait for it as long as it lives.
    child, stream = await spawn_pty(["sh", "-c", "trap '' HUP; sleep 30 & echo $!"])
    relay = child.relay
    stray = None
    try:
        with trio.fail_after(10):
            seen = b""
            while not seen.endswith(b"\r\n"):
                seen += await stream.receive_some()
            stray = int(seen)
            await child.process.wait()
        assert relay.poll() is None
        await child.aclose()
        assert relay.returncode == -signal.SIGKILL
    finally:
        if stray is not None:
            os.kill(stray, signal.SIGKILL)
