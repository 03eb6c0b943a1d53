"""Progress of long store operations: on a terminal, or when asked, and nowhere else."""

import io
import os
import pty
import subprocess
import sys

import pytest
import trio

from trio_stream.cli.common import Progress, counted_lines, counting_writer
from trio_stream.events import EventType, Output, make_event
from trio_stream.store import SessionInfo, SessionStatus, open_store

TSTREAM = [sys.executable, "-c", "from trio_stream.cli import main; main()"]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def progress(enabled=True):
    clock = Clock()
    stream = io.StringIO()
    return Progress(enabled, stream=stream, clock=clock), clock, stream


def test_nothing_is_drawn_for_a_quick_operation():
    shown, clock, stream = progress()
    clock.now += 0.4
    shown.show("working: 1")
    shown.close()
    assert stream.getvalue() == ""


def test_a_long_operation_is_redrawn_in_place_at_most_ten_times_a_second_then_erased():
    shown, clock, stream = progress()
    clock.now += 0.6
    shown.show("working: 10 lines")
    clock.now += 0.06
    shown.show("working: 11 lines")
    clock.now += 0.06
    shown.show("working: 9")
    shown.close()
    assert stream.getvalue() == (
        "\rworking: 10 lines" + "\rworking: 9" + " " * 7 + "\r" + " " * 17 + "\r"
    )


def test_disabled_progress_draws_nothing():
    shown, clock, stream = progress(enabled=False)
    clock.now += 10
    assert not shown.due()
    shown.show("working")
    shown.close()
    assert stream.getvalue() == ""


def test_lines_and_events_are_counted():
    shown, clock, stream = progress()
    clock.now += 1
    list(counted_lines(io.BytesIO(b"a\nb\n"), shown, "importing"))
    assert stream.getvalue() == "\rimporting: 1 lines"
    out = io.BytesIO()
    clock.now += 1
    counting_writer(out.write, shown, "exporting x", 4)(b"{}\n{}\n")
    assert out.getvalue() == b"{}\n{}\n"
    assert stream.getvalue().endswith("\rexporting x: 2/4 events (50%)")
    clock.now += 1
    counting_writer(out.write, shown, "exporting y", 1)(b"{}\n{}\n")
    assert stream.getvalue().endswith("\rexporting y: 2 events" + " " * 8)


def test_unasked_progress_needs_a_terminal_that_does_not_get_the_result(monkeypatch):
    leader, follower = pty.openpty()
    try:
        terminal = os.fdopen(follower, "w")
        monkeypatch.setattr(sys, "stderr", terminal)
        assert Progress.for_option(None).enabled
        assert not Progress.for_option(None, result=terminal).enabled
        assert not Progress.for_option(False).enabled
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        assert not Progress.for_option(None).enabled
        assert Progress.for_option(True).enabled
        terminal.close()
    finally:
        os.close(leader)


@pytest.fixture
def store(tmp_path):
    db = tmp_path / "store.db"

    async def fill():
        async with open_store(db) as store:
            await store.create_session(SessionInfo("p", command=["seq"], created=1.0))
            events = [
                make_event(
                    EventType.OUTPUT, Output("stdout", str(n), "\n", n), session="p", offset=n
                )
                for n in range(3)
            ]
            await store.append("p", events)
            await store.update_session("p", status=SessionStatus.COMPLETED, exit_status=0)

    trio.run(fill)
    return str(db)


def tstream(*args):
    return subprocess.run([*TSTREAM, *args], capture_output=True, timeout=30)


def test_outside_a_terminal_only_results_are_written(store, tmp_path):
    exported = tmp_path / "p.jsonl"
    done = tstream("export", "--store", store, "p", "-o", str(exported))
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    done = tstream("import", "--store", store, "--id", "q", str(exported))
    assert (done.returncode, done.stdout, done.stderr) == (0, b"q\n", b"")
    done = tstream("prune", "--store", store, "--older-than", "0")
    assert done.returncode == 0 and b"\r" not in done.stderr


def test_progress_when_asked(store, tmp_path):
    exported = tmp_path / "p.jsonl"
    done = tstream("export", "--store", store, "p", "-o", str(exported), "--progress")
    assert done.returncode == 0
    assert done.stderr.startswith(b"\rexporting p: 3/3 events (100%)")
    assert done.stderr.endswith(b"\r" + b" " * 30 + b"\r")
    done = tstream("import", "--store", store, "--id", "q", "--progress", str(exported))
    assert done.stdout == b"q\n"
    assert done.stderr.startswith(b"\rimporting: ") and done.stderr.endswith(b"\r")
    done = tstream("prune", "--store", store, "--older-than", "0", "--progress")
    assert done.returncode == 0 and done.stderr.startswith(b"\rpruning\xe2\x80\xa6 0.")
