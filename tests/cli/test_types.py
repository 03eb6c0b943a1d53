"""``--type`` takes one type or a comma-separated list, as often as wanted."""

import orjson
import pytest
import trio
from click.testing import CliRunner

from trio_stream.cli import cli
from trio_stream.events import EventType, Output, SessionEnded, SessionStarted, Status, make_event
from trio_stream.store import SessionInfo, open_store

EVENTS = [
    (EventType.SESSION_STARTED, SessionStarted(["make"])),
    (EventType.OUTPUT, Output("stdout", "compiling", "\n", 1)),
    (EventType.STATUS, Status("linking")),
    (EventType.SESSION_ENDED, SessionEnded(0)),
]


@pytest.fixture
def tstream(tmp_path):
    db = tmp_path / "store.db"

    async def fill():
        async with open_store(db) as store:
            await store.create_session(SessionInfo("b", command=["make"], created=1000.0))
            await store.append(
                "b",
                [
                    make_event(etype, data, session="b", offset=n, ts=1000.0 + n)
                    for n, (etype, data) in enumerate(EVENTS)
                ],
            )

    trio.run(fill)

    def invoke(*args):
        env = {"TSTREAM_STORE": str(db), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
        return CliRunner().invoke(cli, list(args), env=env)

    return invoke


def types_shown(result):
    assert result.exit_code == 0, result.output
    return [orjson.loads(line)["type"] for line in result.stdout.splitlines()]


@pytest.mark.parametrize("command", ["show", "attach"])
@pytest.mark.parametrize(
    "options",
    [
        ["--type", "status,session_ended"],
        ["--type", "status", "--type", "session_ended"],
        ["--type", " status , session_ended,"],
        ["--type", "session_ended,status", "--type", "status"],
    ],
)
def test_a_list_of_types_is_the_same_as_repeats(tstream, command, options):
    extra = ["--no-follow"] if command == "attach" else []
    result = tstream(command, "b", "--json", *extra, *options)
    assert types_shown(result) == ["status", "session_ended"]


@pytest.mark.parametrize("value", ["status,nope", ",", ""])
def test_an_unknown_or_missing_type_is_a_usage_error(tstream, value):
    result = tstream("show", "b", "--type", value)
    assert result.exit_code == 2
    assert "--type" in result.output
    assert "nope" in result.output if "nope" in value else "no event type" in result.output
