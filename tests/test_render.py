"""The compact terminal line for non-output events."""

import pytest

from trio_stream.events import (
    Command,
    Custom,
    Error,
    Event,
    EventType,
    Json,
    Match,
    Output,
    Reasoning,
    Screenshot,
    SessionEnded,
    SessionStarted,
    Status,
    VariableUpdate,
)
from trio_stream.render import compact_line, format_duration, one_line


def line(etype, data, **kw):
    return compact_line(Event(EventType(etype), data), **kw)


def test_tool_calls():
    assert line("command_started", Command("Bash")) == "▶ tool Bash started"
    assert line("command_started", Command("Bash", "ls -l")) == "▶ tool Bash started: ls -l"
    assert line("command_completed", Command("Bash", duration=1.23)) == "✓ Bash 1.2s"
    assert line("command_failed", Command("Edit", error="no match", duration=0.25)) == (
        "✗ Edit failed 0.25s: no match"
    )


def test_a_failed_tool_shows_the_first_line_of_its_error():
    failed = Command("Bash", error="Exit code 1\n.F.\nFAILURES", duration=0.3)
    assert line("command_failed", failed) == "✗ Bash failed 0.30s: Exit code 1"


def test_errors_status_and_reasoning():
    assert line("error", Error("disk full")) == "✗ error: disk full"
    assert line("error", Error("disk full", "ENOSPC")) == "✗ error [ENOSPC]: disk full"
    assert line("status", Status("success", "result", "done")) == "● result: success — done"
    assert line("reasoning", Reasoning("look first", kind="thinking")) == "∴ look first"
    assert line("reasoning", Reasoning("I will", kind="text")) == "» I will"


def test_other_kinds():
    assert line("match", Match("err", {}, "ERROR x", level="error")) == "◆ err [error]: ERROR x"
    assert line("variable_update", VariableUpdate("n", 2, 1)) == "= n: 1 → 2"
    assert line("screenshot", Screenshot("a.png", caption="home")) == "▣ screenshot home (a.png)"
    assert line("custom", Custom("rps", {"v": 1})) == '◇ rps: {"v":1}'
    assert line("session_started", SessionStarted(["make", "all"])) == "▶ make all"
    ended = SessionEnded(0, duration=3.5, details={"turns": 9, "cost_usd": 0.0892146})
    assert line("session_ended", ended) == "■ exit 0 (3.5s, 9 turns, $0.0892)"
    assert line("session_ended", SessionEnded(None, duration=0.5)) == "■ ended (0.50s)"
    assert line("session_ended", SessionEnded(137, 9, duration=0.5)) == (
        "■ killed by signal 9 (0.50s)"
    )


def test_output_and_json_show_nothing():
    assert line("output", Output("stdout", "x")) is None
    assert line("json", Json({"a": 1})) is None


def test_colour_only_when_asked():
    assert line("error", Error("x"), color=True) == "\x1b[31m✗ error: x\x1b[0m"
    assert line("error", Error("x")) == "✗ error: x"


def test_the_started_line_shows_the_command_shell_quoted():
    command = ["sh", "-c", "for i in 1 2; do echo $i; done", "it's"]
    shown = line("session_started", SessionStarted(command))
    assert shown == "▶ sh -c 'for i in 1 2; do echo $i; done' 'it'\"'\"'s'"


def test_text_from_the_command_cannot_move_the_cursor():
    shown = line("error", Error("a\x1b[2Jb\nc\rd\x9b"))
    assert "\x1b" not in shown and "\x9b" not in shown and "\n" not in shown
    assert shown == "✗ error: a^[[2Jb ⏎ c^Md\\x9b"


def test_long_text_is_cut():
    assert one_line("x" * 50, width=10) == "x" * 9 + "…"
    shown = line("reasoning", Reasoning("y" * 500), width=20)
    assert shown == "» " + "y" * 19 + "…"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "0.25s"), (1.234, "1.2s"), (42, "42s"), (125, "2m05s"), (3725, "1h02m"), (None, "")],
)
def test_durations(seconds, text):
    assert format_duration(seconds) == text
