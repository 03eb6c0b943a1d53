"""``tstream run`` as a real process: passthrough, JSON, exit statuses and signals."""

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios

import pytest
import trio

from trio_stream.events import EventType, event_from_json

TSTREAM = [sys.executable, "-c", "from trio_stream.cli import main; main()"]


@pytest.fixture(autouse=True)
def private_data(tmp_path, monkeypatch):
    """Sessions are recorded under the test's own directory, never the user's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("TSTREAM_STORE", raising=False)


def tstream(*args, **kwargs):
    return subprocess.run([*TSTREAM, *args], capture_output=True, timeout=30, check=False, **kwargs)


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0]


def test_output_reaches_stdout_and_stderr_byte_for_byte():
    script = r"printf '\033[31mred\033[0m\r50%%\r100%%\n'; printf 'err\377\n' >&2; exit 3"
    done = tstream("run", "--", "sh", "-c", script)
    assert done.returncode == 3
    assert done.stdout == b"\x1b[31mred\x1b[0m\r50%\r100%\n"
    assert done.stderr == b"err\xff\n"


def test_quiet_shows_nothing():
    done = tstream("run", "--quiet", "--", "sh", "-c", "echo out; echo err >&2")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


def test_json_prints_every_event_of_the_session():
    done = tstream("run", "--json", "--merge-stderr", "--", "sh", "-c", "echo a; echo b >&2")
    events = [event_from_json(line) for line in done.stdout.splitlines()]
    assert [e.type for e in events] == [
        EventType.SESSION_STARTED,
        EventType.OUTPUT,
        EventType.OUTPUT,
        EventType.SESSION_ENDED,
    ]
    assert [e.data.text for e in events[1:3]] == ["a", "b"]
    assert [e.offset for e in events] == [0, 1, 2, 3]


def test_pty_mode_runs_the_command_on_a_terminal():
    done = tstream("run", "--pty", "--", "sh", "-c", "test -t 1 && echo yes")
    assert done.returncode == 0 and done.stdout == b"yes\r\n"


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--", "nosuch-tstream-cmd"], 127, b"tstream: nosuch-tstream-cmd: command not found\n"),
        (["--", "/"], 126, b"tstream: /: permission denied\n"),
        (["--timeout", "200ms", "--", "sleep", "30"], 124, b""),
        (["--timeout", "0.2", "--preserve-status", "--", "sleep", "30"], 143, b""),
        (["--timeout", "0.2", "-s", "INT", "--", "sleep", "30"], 124, b""),
        (["--", "sh", "-c", "kill -USR1 $$"], 128 + signal.SIGUSR1, b""),
    ],
)
def test_exit_statuses(args, status, message):
    done = tstream("run", *args)
    assert done.returncode == status
    assert done.stderr == message


@pytest.mark.parametrize(
    "args",
    [
        ["--timeout", "soon", "--", "true"],
        ["--overflow", "spill", "--", "true"],
        ["--signal", "NOPE", "--", "true"],
        ["--buffer", "0", "--", "true"],
        ["--pty", "--merge-stderr", "--", "true"],
        [],
    ],
)
def test_bad_options_are_usage_errors(args):
    done = tstream("run", *args)
    assert done.returncode == 2 and b"Usage:" in done.stderr


def test_a_closed_stdout_is_quiet_and_the_session_goes_on():
    with subprocess.Popen(
        [*TSTREAM, "run", "--", "sh", "-c", "seq 200000; echo done >&2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout.readline() == b"1\n"
        proc.stdout.close()
        stderr = proc.stderr.read()
        assert proc.wait(timeout=30) == 0
    assert stderr == b"done\n"


def test_the_terminal_is_not_left_non_blocking():
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [*TSTREAM, "run", "--", "echo", "hi"],
            stdout=follower,
            stderr=follower,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0
        assert not fcntl.fcntl(follower, fcntl.F_GETFL) & os.O_NONBLOCK
        assert b"hi\r\n" in os.read(leader, 1000)
    finally:
        os.close(leader)
        os.close(follower)


async def start(script: str, *options: str):
    """Start ``tstream run`` on ``script``; return it once the script printed ``ready``."""
    proc = await trio.lowlevel.open_process(
        [*TSTREAM, "run", *options, "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
    )
    seen = b""
    while b"ready\n" not in seen:
        chunk = await proc.stdout.receive_some()
        assert chunk, seen
        seen += chunk
    return proc


async def rest_of(proc) -> bytes:
    out = b""
    while chunk := await proc.stdout.receive_some():
        out += chunk
    return out


LOOP = "while :; do sleep 0.02; done"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2])
async def test_signals_are_forwarded_to_the_command(sig):
    name = signal.Signals(sig).name[3:]
    proc = await start(f"trap 'echo got {name}; exit 9' {name}; echo ready; {LOOP}")
    with trio.fail_after(10):
        proc.send_signal(sig)
        assert await rest_of(proc) == f"got {name}\n".encode()
        assert await proc.wait() == 9


async def test_ctrl_c_is_forwarded_and_a_second_one_kills():
    proc = await start(f"trap 'echo got INT' INT; echo ready; {LOOP}")
    with trio.fail_after(10):
        proc.send_signal(signal.SIGINT)
        assert await proc.stdout.receive_some() == b"got INT\n"
        proc.send_signal(signal.SIGINT)
        await rest_of(proc)
        assert await proc.wait() == 128 + signal.SIGKILL


async def test_ctrl_c_ends_a_command_that_does_not_catch_it():
    proc = await start(f"echo ready; {LOOP}")
    with trio.fail_after(10):
        proc.send_signal(signal.SIGINT)
        await rest_of(proc)
        assert await proc.wait() == 128 + signal.SIGINT


async def test_sigtstp_stops_the_command_then_tstream_and_sigcont_resumes_both():
    proc = await start(f"echo $$; echo ready; {LOOP}")
    with trio.fail_after(10):
        proc.send_signal(signal.SIGTSTP)
        while state(proc.pid) != "T":
            await trio.sleep(0.01)
        proc.send_signal(signal.SIGCONT)
        while state(proc.pid) == "T":
            await trio.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        await rest_of(proc)
        assert await proc.wait() == 128 + signal.SIGTERM


# A command that never forks. A shell looping over ``sleep`` will not do here: dash starts
# each ``sleep`` with vfork, and when the stop reaches the new process before its exec,
# the shell waits for it in the kernel (state D), not stopped (T), until both continue.
PRINT_PID_AND_WAIT = (
    "import os, time\nprint(os.getpid(), flush=True)\nwhile True:\n    time.sleep(0.02)\n"
)


async def test_the_command_is_stopped_with_tstream():
    proc = await trio.lowlevel.open_process(
        [*TSTREAM, "run", "--", sys.executable, "-c", PRINT_PID_AND_WAIT],
        stdout=subprocess.PIPE,
    )
    child = int((await proc.stdout.receive_some()).split()[0])
    with trio.fail_after(10):
        proc.send_signal(signal.SIGTSTP)
        while state(proc.pid) != "T":
            await trio.sleep(0.01)
        # A stop signal takes effect when its target is next scheduled: on a loaded
        # machine the child may stop a moment after tstream itself.
        while state(child) != "T":
            await trio.sleep(0.01)
        proc.send_signal(signal.SIGCONT)
        while state(child) == "T":
            await trio.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        await rest_of(proc)
        assert await proc.wait() == 128 + signal.SIGTERM


async def test_sigwinch_resizes_the_commands_terminal_in_pty_mode():
    leader, follower = pty.openpty()
    script = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGWINCH, lambda *a: print(os.get_terminal_size(1), flush=True))\n"
        "print('ready', flush=True)\n"
        "time.sleep(20)\n"
    )
    try:
        proc = await trio.lowlevel.open_process(
            [*TSTREAM, "run", "--pty", "--", sys.executable, "-c", script],
            stdin=follower,
            stdout=subprocess.PIPE,
        )
        with trio.fail_after(10):
            seen = b""
            while b"ready" not in seen:
                seen += await proc.stdout.receive_some()
            fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 41, 121, 0, 0))
            proc.send_signal(signal.SIGWINCH)
            while b"columns=121, lines=41" not in seen:
                chunk = await proc.stdout.receive_some()
                assert chunk, seen
                seen += chunk
            proc.send_signal(signal.SIGTERM)
            await rest_of(proc)
            assert await proc.wait() == 128 + signal.SIGTERM
    finally:
        os.close(leader)
        os.close(follower)


async def test_a_killed_tstream_hangs_up_its_commands_terminal(tmp_path):
    # The pty's output reaches tstream through a relay of its own: the relay must die with
    # tstream, so that the command's terminal is hung up as when tstream held the only
    # master side.
    hung_up = tmp_path / "hung-up"
    script = f"trap 'echo yes > {hung_up}; exit 0' HUP; echo ready; {LOOP}"
    proc = await trio.lowlevel.open_process(
        [*TSTREAM, "run", "--pty", "--", "sh", "-c", script], stdout=subprocess.PIPE
    )
    with trio.fail_after(10):
        seen = b""
        while b"ready\r\n" not in seen:
            chunk = await proc.stdout.receive_some()
            assert chunk, seen
            seen += chunk
        proc.kill()
        assert await proc.wait() == -signal.SIGKILL
        # The command outlives tstream in a session of its own: only the file it writes
        # on SIGHUP tells that the hang-up reached it.
        while not hung_up.exists() or hung_up.read_text() != "yes\n":
            await trio.sleep(0.02)
    await proc.stdout.aclose()
