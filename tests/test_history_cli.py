"""The history commands, run as the command line runs them."""

import datetime
import io
import os
import subprocess
import sys
import time

import orjson
import pytest
import trio
from click.testing import CliRunner

from trio_stream.cli import cli
from trio_stream.cli.history import OutputWriter, format_duration, replay_events
from trio_stream.events import (
    EventType,
    Output,
    SessionEnded,
    SessionStarted,
    Status,
    event_to_json,
    make_event,
)
from trio_stream.store import SessionInfo, SessionStatus, open_store


def out(session, offset, text, source="stdout", ts=1000.0, eol="\n", raw=None):
    return make_event(
        EventType.OUTPUT,
        Output(source, text, eol, offset, raw=raw),
        session=session,
        offset=offset,
        ts=ts,
    )


BUILD = [
    make_event(
        EventType.SESSION_STARTED, SessionStarted(["make", "all"]), session="build-1", ts=999.0
    ),
    out("build-1", 1, "compiling", ts=1000.0),
    out("build-1", 2, "warning: unused", "stderr", ts=1001.0),
    out("build-1", 3, "50%", ts=1002.0, eol="\r"),
    out("build-1", 4, "caf\ufffd", ts=1003.0, raw=b"caf\xe9\n"),
    make_event(EventType.STATUS, Status("linking"), session="build-1", ts=1004.0),
    make_event(EventType.SESSION_ENDED, SessionEnded(0), session="build-1", ts=1005.0),
]


def populate(db):
    async def main():
        async with open_store(db) as store:
            await store.create_session(
                SessionInfo("build-1", command=["make", "all"], created=999.0)
            )
            placed = [e.with_offset("build-1", n) for n, e in enumerate(BUILD)]
            await store.append("build-1", placed)
            await store.update_session(
                "build-1",
                status=SessionStatus.COMPLETED,
                exit_status=0,
                ended=1005.0,
                last_activity=1005.0,
            )
            await store.create_session(SessionInfo("build-2", command=["make"], created=2000.0))
            await store.update_session("build-2", status=SessionStatus.FAILED, exit_status=2)
            await store.create_session(SessionInfo("test-1", command=["pytest"], created=3000.0))

    trio.run(main)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "store.db"
    populate(path)
    return path


@pytest.fixture
def tstream(db):
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(cli, [*args], input=input, env={"TSTREAM_STORE": str(db)})

    return invoke


def test_ls_shows_a_table_newest_first(tstream):
    result = tstream("ls")
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()
    assert rows[0].split() == ["ID", "STATUS", "COMMAND", "STARTED", "DURATION", "EXIT", "EVENTS"]
    assert [row.split()[0] for row in rows[1:]] == ["test-1", "build-2", "build-1"]
    build = rows[3].split()
    assert build[1:4] == ["completed", "make", "all"]
    assert build[-3:] == ["6.0s", "0", "7"]


def test_ls_json_status_and_limit(tstream):
    result = tstream("ls", "--json", "--status", "failed")
    assert [(s["id"], s["exit_status"]) for s in orjson.loads(result.stdout)] == [("build-2", 2)]
    result = tstream("ls", "--json", "--limit", "1")
    assert [s["id"] for s in orjson.loads(result.stdout)] == ["test-1"]


def test_ls_of_an_empty_store_says_so(tmp_path):
    result = CliRunner().invoke(cli, ["ls", "--store", f"sqlite:{tmp_path / 'new.db'}"])
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == "no sessions\n"


def test_show_gives_back_the_exact_bytes_on_each_stream(tstream):
    result = tstream("show", "build-1")
    assert result.exit_code == 0
    assert result.stdout_bytes == b"compiling\n50%\rcaf\xe9\n"
    assert result.stderr_bytes == b"warning: unused\n"


def test_show_and_export_write_a_long_session_from_its_chunks_in_pages(db, tstream, monkeypatch):
    # Lines recorded as they were read (one text a batch, more than a page of them), then
    # an event of another kind: shown as the terminal saw them, and as JSON, page by page.
    from trio_stream.batches import EventRuns, OutputBatch
    from trio_stream.cli import history
    from trio_stream.lines import Lines

    monkeypatch.setattr(history, "SHOW_PAGE", 2500)
    texts = [f"line {n}" for n in range(12_000)]

    async def record():
        async with open_store(db) as store:
            await store.create_session(SessionInfo("long", created=4000.0))
            runs = [
                OutputBatch(
                    "long", n, 4000.0, "stdout", n, Lines.joined("\n".join(part), "\n", 3000)
                )
                for n in range(0, 12_000, 3000)
                for part in [texts[n : n + 3000]]
            ]
            await store.append("long", EventRuns(runs))
            status = make_event(EventType.STATUS, Status("done"), session="long", ts=4001.0)
            await store.append("long", [status.with_offset("long", 12_000)])

    trio.run(record)
    shown = tstream("show", "long")
    assert shown.exit_code == 0
    assert shown.stdout_bytes == "".join(t + "\n" for t in texts).encode()
    as_json = [orjson.loads(line) for line in tstream("show", "long", "--json").stdout.splitlines()]
    assert [e["offset"] for e in as_json] == list(range(12_001))
    assert [e["data"]["text"] for e in as_json[:-1]] == texts
    assert as_json[-1]["type"] == "status"
    # Export writes the same events, byte for byte as event_to_json would.
    exported = tstream("export", "long").stdout_bytes
    assert exported == tstream("show", "long", "--json").stdout_bytes

    async def stored():
        async with open_store(db) as store:
            return await store.read("long")

    assert exported.splitlines() == [event_to_json(e) for e in trio.run(stored)]


def test_show_json_with_filters(tstream):
    def offsets(*args):
        result = tstream("show", "build-1", "--json", *args)
        assert result.exit_code == 0, result.output
        return [orjson.loads(line)["offset"] for line in result.stdout.splitlines()]

    assert offsets("--type", "status") == [5]
    assert offsets("--type", "output", "--source", "stderr") == [2]
    assert offsets("--grep", "WARNING") == [2]
    assert offsets("--last", "2") == [5, 6]
    assert offsets("--since", "@1001", "--until", "@1002") == [2, 3]
    iso = datetime.datetime.fromtimestamp(1004.0).isoformat()
    assert offsets("--since", iso) == [5, 6]


def test_show_latest_and_prefixes(tstream):
    assert tstream("show", "latest", "--json").stdout == ""
    result = tstream("show", "build")
    assert result.exit_code == 1
    assert result.stderr == "tstream: session prefix 'build' is ambiguous: build-1, build-2\n"


def test_unknown_session_is_one_line_and_exit_1(tstream):
    result = tstream("show", "nope")
    assert (result.exit_code, result.stderr) == (1, "tstream: unknown session: nope\n")


def test_bad_time_is_a_usage_error(tstream):
    result = tstream("show", "build-1", "--since", "yesterday-ish")
    assert result.exit_code == 2
    assert "invalid time 'yesterday-ish'" in result.stderr


def test_export_then_import_round_trips(tstream, tmp_path):
    exported = tstream("export", "build-1")
    assert exported.exit_code == 0
    assert exported.stdout_bytes.splitlines() == [
        event_to_json(e.with_offset("build-1", n)) for n, e in enumerate(BUILD)
    ]
    result = tstream("import", "--id", "copy", "-", input=exported.stdout_bytes)
    assert (result.exit_code, result.stdout) == (0, "copy\n")
    assert tstream("export", "copy").stdout_bytes == exported.stdout_bytes.replace(
        b'"session":"build-1"', b'"session":"copy"'
    )
    sessions = orjson.loads(tstream("ls", "--json").stdout)
    copy = next(s for s in sessions if s["id"] == "copy")
    assert (copy["status"], copy["command"], copy["events"]) == ("completed", ["make", "all"], 7)


def test_import_of_an_id_in_use_is_refused_with_exit_2(tstream):
    exported = tstream("export", "build-1").stdout_bytes
    result = tstream("import", "-", input=exported)
    assert result.exit_code == 2
    assert "session id already in use: build-1" in result.stderr


def test_import_names_the_bad_line(tstream, tmp_path):
    lines = tstream("export", "build-1").stdout_bytes.splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"type":"output"', b'"type":"outptu"')
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines))
    result = tstream("import", "--id", "x", str(bad))
    assert result.exit_code == 1
    assert result.stderr == "tstream: line 3: type: unknown event type 'outptu'\n"


def test_import_refuses_a_line_over_the_nesting_limit_and_keeps_nothing(tstream, tmp_path):
    lines = tstream("export", "build-1").stdout_bytes.splitlines(keepends=True)
    deep = b'{"a":' * 300 + b"{}" + b"}" * 300
    lines[1] = (
        b'{"id":"d","session":"build-1","offset":1,"type":"custom","ts":1.0,'
        b'"data":{"name":"n","payload":' + deep + b"}}\n"
    )
    bad = tmp_path / "deep.jsonl"
    bad.write_bytes(b"".join(lines))
    result = tstream("import", "--id", "deep", str(bad))
    assert result.exit_code == 1
    assert result.stderr == "tstream: line 2: data.payload: nested deeper than 200 levels\n"
    assert tstream("show", "deep").exit_code == 1


def test_prune_dry_run_then_for_real(tstream):
    result = tstream("prune", "--older-than", "1d", "--dry-run")
    assert (result.stdout, result.stderr) == ("build-1\nbuild-2\n", "would remove 2 session(s)\n")
    assert len(orjson.loads(tstream("ls", "--json").stdout)) == 3
    result = tstream("prune", "--older-than", "1d")
    assert result.stderr == "removed 2 session(s)\n"
    assert [s["id"] for s in orjson.loads(tstream("ls", "--json").stdout)] == ["test-1"]


def test_import_under_a_bad_id_is_a_usage_error(tstream):
    exported = tstream("export", "build-1").stdout_bytes
    result = tstream("import", "--id", "bad/id", "-", input=exported)
    assert result.exit_code == 2
    assert "invalid session id 'bad/id'" in result.stderr


def test_show_last_counts_the_lines_it_shows(tstream):
    # The last events are a status and session_ended, which show prints only on a terminal.
    result = tstream("show", "build-1", "--last", "1")
    assert (result.exit_code, result.stdout_bytes) == (0, b"caf\xe9\n")
    assert tstream("show", "build-1", "--last", "2", "--json").stdout.count("\n") == 2


def test_prune_says_what_it_trims(tstream):
    # The sessions are from 1970: kept, so that only trimming is left to do.
    keep = ("--older-than", "36500d")
    result = tstream("prune", *keep, "--max-events", "5", "--dry-run")
    assert result.stderr == (
        "would trim build-1: its 2 oldest event(s) of 7\nwould remove 0 session(s)\n"
    )
    result = tstream("prune", *keep, "--max-events", "5")
    assert result.stderr == "trimmed build-1: its 2 oldest event(s) of 7\nremoved 0 session(s)\n"
    assert tstream("prune", *keep, "--max-events", "5").stderr == "removed 0 session(s)\n"


def test_replay_refuses_a_zero_speed(tstream):
    assert tstream("replay", "build-1", "--speed", "0").exit_code == 2


def test_replay_writes_everything_as_show_does(tstream):
    result = tstream("replay", "build-1", "--speed", "1000")
    assert result.stdout_bytes == b"compiling\n50%\rcaf\xe9\n"
    assert result.stderr_bytes == b"warning: unused\n"


async def test_replay_keeps_the_pauses_capped_and_sped_up(autojump_clock):
    class Clocked(io.BytesIO):
        def __init__(self):
            super().__init__()
            self.times = []

        def write(self, data):
            self.times.append((trio.current_time(), data))
            return super().write(data)

    stdout = Clocked()
    events = [out("s", 0, "a", ts=0.0), out("s", 1, "b", ts=2.0), out("s", 2, "c", ts=10.0)]

    async def batches():
        yield events

    start = trio.current_time()
    await replay_events(batches(), OutputWriter(stdout, io.BytesIO()), speed=2, max_idle=3)
    assert [(t - start, data) for t, data in stdout.times] == [
        (0.0, b"a\n"),
        (1.0, b"b\n"),
        (2.5, b"c\n"),
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.42, "0.4s"), (12, "12s"), (184, "3m04s"), (7500, "2h05m"), (273600, "3d04h")],
)
def test_durations_are_short(seconds, text):
    assert format_duration(seconds) == text


def test_corrupt_store_exits_125_with_one_line(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    result = subprocess.run(
        [sys.executable, "-c", "from trio_stream.cli import main; main()", "ls"],
        capture_output=True,
        env={**os.environ, "TSTREAM_STORE": str(bad)},
        timeout=30,
    )
    assert result.returncode == 125
    assert result.stderr.count(b"\n") == 1
    assert result.stderr.startswith(b"tstream: store ") and b"corrupt" in result.stderr


@pytest.mark.parametrize("command", ["ls", "show", "replay", "export", "import", "prune"])
def test_man_page_renders_without_warnings(command):
    page = os.path.join(os.path.dirname(__file__), "..", "man", f"tstream-{command}.1")
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", page], capture_output=True, timeout=30
    )
    assert (result.returncode, result.stderr) == (0, b"")


def test_since_takes_a_duration_ago(tstream, db):
    async def recent():
        async with open_store(db) as store:
            now = time.time()
            await store.create_session(SessionInfo("recent", created=now))
            await store.append(
                "recent", [out("recent", 0, "old", ts=now - 3600), out("recent", 1, "new", ts=now)]
            )

    trio.run(recent)
    assert tstream("show", "recent", "--since", "10m").stdout == "new\n"
    assert tstream("show", "recent", "--until", "30m").stdout == "old\n"


def test_a_reader_that_goes_away_ends_show_quietly(db):
    async def long_session():
        async with open_store(db) as store:
            await store.create_session(SessionInfo("long", created=time.time()))
            events = [out("long", n, f"line {n}") for n in range(50_000)]
            await store.append("long", events)

    trio.run(long_session)
    show = subprocess.Popen(
        [sys.executable, "-c", "from trio_stream.cli import main; main()", "show", "long"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TSTREAM_STORE": str(db)},
    )
    assert show.stdout.readline() == b"line 0\n"
    show.stdout.close()
    assert show.wait(timeout=30) == 141
    assert show.stderr.read() == b""
