"""Colour in tstream's own lines on a terminal, never in the command's output."""

import os
import pty
import shlex
import subprocess
import sys

import pytest

from trio_stream.render import color_wanted

TSTREAM = [sys.executable, "-c", "from trio_stream.cli import main; main()"]
SCRIPT = r"printf '\033[31mred\033[0m\n'; printf 'err\n' >&2; exit 3"
CYAN, RED, RESET = b"\x1b[36m", b"\x1b[31m", b"\x1b[0m"


@pytest.mark.parametrize(
    ("when", "isatty", "environ", "wanted"),
    [
        ("auto", True, {"TERM": "xterm"}, True),
        ("auto", False, {"TERM": "xterm"}, False),
        ("auto", True, {"TERM": "dumb"}, False),
        ("auto", True, {"TERM": "xterm", "NO_COLOR": "1"}, False),
        ("auto", True, {"TERM": "xterm", "NO_COLOR": ""}, True),
        ("auto", False, {"FORCE_COLOR": "1"}, True),
        ("auto", True, {"NO_COLOR": "1", "FORCE_COLOR": "1"}, False),
        ("always", False, {"NO_COLOR": "1"}, True),
        ("never", True, {"FORCE_COLOR": "1", "TERM": "xterm"}, False),
    ],
)
def test_when_to_colour(when, isatty, environ, wanted):
    assert color_wanted(when, isatty=isatty, environ=environ) is wanted


def test_an_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="auto, always, never"):
        color_wanted("sometimes", isatty=True)


def on_terminal(*args, **env):
    """Run tstream with stderr on a terminal and stdout on a pipe: (status, stdout,
    what the terminal showed)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    environ.update({"TERM": "xterm", **env})
    leader, follower = pty.openpty()
    try:
        with subprocess.Popen(
            [*TSTREAM, *args], stdout=subprocess.PIPE, stderr=follower, env=environ
        ) as proc:
            os.close(follower)
            follower = -1
            stdout = proc.stdout.read()
            status = proc.wait(timeout=30)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    return status, stdout, shown


def test_run_colours_its_own_lines_on_a_terminal_and_not_the_output():
    status, stdout, shown = on_terminal("run", "--no-serve", "--", "sh", "-c", SCRIPT)
    assert status == 3
    assert stdout == b"\x1b[31mred\x1b[0m\n"
    # The command shell-quoted, so that it can be copied and run again.
    assert CYAN + "▶ ".encode() + shlex.join(["sh", "-c", SCRIPT]).encode() + RESET in shown
    assert RED + b"\xe2\x96\xa0 exit 3" in shown
    assert b"err\r\n" in shown and RED + b"err" not in shown


@pytest.mark.parametrize(
    ("options", "env"),
    [(["--color", "never"], {}), ([], {"NO_COLOR": "1"}), ([], {"TERM": "dumb"})],
)
def test_run_without_colour(options, env):
    status, stdout, shown = on_terminal(
        "run", "--no-serve", *options, "--", "sh", "-c", SCRIPT, **env
    )
    assert status == 3 and stdout == b"\x1b[31mred\x1b[0m\n"
    assert b"\xe2\x96\xa0 exit 3" in shown and b"\x1b[" not in shown


def test_color_always_overrides_no_color():
    _, _, shown = on_terminal("run", "--no-serve", "--color", "always", "--", "true", NO_COLOR="1")
    assert CYAN + b"\xe2\x96\xb6 true" + RESET in shown


def test_outside_a_terminal_nothing_is_added_even_with_color_always():
    done = subprocess.run(
        [*TSTREAM, "run", "--no-serve", "--color", "always", "--", "sh", "-c", SCRIPT],
        capture_output=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout, done.stderr) == (3, b"\x1b[31mred\x1b[0m\n", b"err\n")


def test_show_colours_with_color_and_not_without(tmp_path):
    store = str(tmp_path / "store.db")
    script = "echo built; exit 1"
    subprocess.run(
        [*TSTREAM, "run", "--no-serve", "--store", store, "--id", "b", "--", "sh", "-c", script],
        capture_output=True,
        timeout=30,
    )
    _, stdout, shown = on_terminal("show", "--store", store, "b")
    assert stdout == b"built\n"
    assert RED + b"\xe2\x96\xa0 exit 1" in shown
    _, stdout, shown = on_terminal("show", "--store", store, "b", "--color", "never")
    assert stdout == b"built\n"
    assert b"\xe2\x96\xa0 exit 1" in shown and b"\x1b[" not in shown


def test_tstream_errors_are_red_on_a_terminal_and_plain_elsewhere(tmp_path):
    missing = b"tstream: nosuch-tstream-cmd: command not found"
    status, _, shown = on_terminal("run", "--no-serve", "--", "nosuch-tstream-cmd")
    assert status == 127 and RED + missing + RESET in shown
    _, _, shown = on_terminal("run", "--no-serve", "--", "nosuch-tstream-cmd", NO_COLOR="1")
    assert missing + b"\r\n" in shown and b"\x1b[" not in shown
    store = str(tmp_path / "store.db")
    status, _, shown = on_terminal("show", "--store", store, "nosuch")
    assert status == 1 and RED + b"tstream: unknown session: nosuch" in shown
    done = subprocess.run(
        [*TSTREAM, "show", "--store", store, "--color", "always", "nosuch"],
        capture_output=True,
        timeout=30,
    )
    assert done.stderr.startswith(RED + b"tstream: unknown session")
