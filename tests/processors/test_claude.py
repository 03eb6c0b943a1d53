"""The claude profile: stream-json lines mapped onto typed events."""

from pathlib import Path

import orjson

from trio_stream.events import Command, EventType, Status
from trio_stream.lines import Line
from trio_stream.log import SessionLog
from trio_stream.processors.base import Completion, LineBatch
from trio_stream.processors.claude import ClaudeProfile, result_text, tool_action
from trio_stream.publisher import Publisher

TRANSCRIPT = Path(__file__).parent.parent / "data" / "claude-stream.jsonl"


def batch(objects, ts=1.0, first_line=0):
    texts = [o if isinstance(o, str) else orjson.dumps(o).decode() for o in objects]
    return LineBatch("stdout", first_line, [Line(t) for t in texts], ts)


async def run(profile, *batches):
    log = SessionLog("s", record_backlog=None)
    publisher = Publisher(log)
    for item in batches:
        await profile.process(item, publisher)
    await profile.on_complete(Completion(0), publisher)
    return log.since(-1).events


async def test_the_transcript_maps_onto_typed_events():
    texts = TRANSCRIPT.read_text().splitlines()
    profile = ClaudeProfile()
    events = await run(profile, LineBatch("stdout", 0, [Line(t) for t in texts], 1.0))
    kinds = [e.type.value for e in events]
    assert kinds == [
        "status",
        "reasoning",
        "reasoning",
        "command_started",
        "command_failed",
        "command_started",
        "command_started",
        "command_completed",
        "command_completed",
        "reasoning",
        "reasoning",
        "command_started",
        "command_completed",
        "command_started",
        "command_completed",
        "command_started",
        "command_completed",
        "reasoning",
        "status",
    ]
    assert events[0].data == Status(
        "init", "system", "claude-sonnet-4-5-20250929, 14 tools, in /home/dev/invoicing"
    )
    assert [e.data.kind for e in events if e.type is EventType.REASONING] == [
        "thinking",
        "text",
        "thinking",
        "text",
        "text",
    ]
    failed = events[4].data
    assert (failed.name, failed.call_id, failed.action) == (
        "Bash",
        "toolu_01AbC3dEf4GhI5jKl6MnO7pQ",
        "python -m pytest -q tests/test_tax.py",
    )
    assert failed.error.startswith("Exit code 1")
    # Parallel calls are matched by id, not by order.
    assert [events[i].data.name for i in (7, 8)] == ["Grep", "Read"]
    assert events[-1].data == Status("success", "result", events[-2].data.thought)


async def test_the_result_gives_session_details():
    profile = ClaudeProfile()
    await run(
        profile, LineBatch("stdout", 0, [Line(t) for t in TRANSCRIPT.read_text().splitlines()], 1.0)
    )
    details = profile.session_details()
    assert details["profile"] == "claude"
    assert details["cost_usd"] == 0.0892146
    assert details["turns"] == 9
    assert details["usage"]["output_tokens"] == 1140
    assert details["model"] == "claude-sonnet-4-5-20250929"
    assert (details["result"], details["is_error"], details["permission_denials"]) == (
        "success",
        False,
        0,
    )


def tool_use(call_id, name="Bash", **parameters):
    return {
        "type": "assistant",
        "message": {
            "id": "m",
            "content": [{"type": "tool_use", "id": call_id, "name": name, "input": parameters}],
        },
    }


def tool_result(call_id, content, is_error=False):
    return {
        "type": "user",
        "message": {
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": call_id,
                    "content": content,
                    "is_error": is_error,
                }
            ]
        },
    }


async def test_duration_runs_from_reading_the_call_to_reading_its_result():
    events = await run(
        ClaudeProfile(),
        batch([tool_use("t1", command="sleep 1")], ts=10.0),
        batch([tool_result("t1", [{"type": "text", "text": "done"}])], ts=11.5, first_line=1),
    )
    done = events[1]
    assert done.type is EventType.COMMAND_COMPLETED
    assert done.data == Command(
        "Bash", "sleep 1", {"command": "sleep 1"}, "t1", result="done", duration=1.5
    )
    assert done.ts == 11.5


async def test_calls_left_open_fail_when_the_stream_ends():
    events = await run(
        ClaudeProfile(), batch([tool_use("t9", name="WebFetch", url="https://example.org")])
    )
    assert [e.type for e in events] == [EventType.COMMAND_STARTED, EventType.COMMAND_FAILED]
    assert events[1].data.error == "no result: the session ended first"
    assert events[1].data.action == "https://example.org"


async def test_an_unmatched_result_is_still_reported():
    events = await run(ClaudeProfile(), batch([tool_result("nobody", "x", is_error=True)]))
    assert events[0].type is EventType.COMMAND_FAILED
    assert events[0].data.context == {"unmatched": True}


async def test_an_error_result_is_also_an_error_event():
    profile = ClaudeProfile()
    events = await run(
        profile,
        batch(
            [{"type": "result", "subtype": "error_max_turns", "is_error": True, "num_turns": 30}]
        ),
    )
    assert [e.type for e in events] == [EventType.STATUS, EventType.ERROR]
    assert events[1].data.code == "error_max_turns"
    assert profile.session_details()["is_error"] is True


async def test_unknown_kinds_pass_through_as_json_and_text_is_counted():
    profile = ClaudeProfile()
    unknown = {"type": "stream_event", "event": {"type": "content_block_delta"}}
    user_text = {"type": "user", "message": {"content": [{"type": "text", "text": "hi"}]}}
    events = await run(profile, batch([unknown, "not json", "{broken", user_text, ""]))
    assert [e.type for e in events] == [EventType.JSON, EventType.JSON]
    assert events[0].data.document == unknown
    assert profile.session_details()["unparsed_lines"] == 2


def test_tool_actions_summarise_the_call():
    assert tool_action("Bash", {"command": "make\nmake install"}) == "make"
    assert tool_action("Read", {"file_path": "a.py"}) == "a.py"
    assert tool_action("Unknown", {"description": "does things"}) == "does things"
    assert tool_action("Unknown", {"x": 1}) is None
    assert len(tool_action("Bash", {"command": "x" * 500})) == 200


def test_result_text_joins_blocks():
    assert result_text([{"type": "text", "text": "a"}, {"type": "image"}]) == "a\n[image]"
    assert result_text("plain") == "plain"


async def test_on_error_closes_open_calls_as_failed():
    profile = ClaudeProfile()
    log = SessionLog("s", record_backlog=None)
    await profile.process(batch([tool_use("t1", command="make")]), Publisher(log))
    await profile.on_error(RuntimeError("boom"), Publisher(log))
    assert [e.type for e in log.since(-1).events] == [
        EventType.COMMAND_STARTED,
        EventType.COMMAND_FAILED,
    ]
