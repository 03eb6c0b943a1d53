"""Lines as columns (``?protocol=tstream-columns``): what tstream's own clients ask for,
to the hub and from it. A client that does not ask never sees them; one that does reads
and prints exactly what it would have without them."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from trio_stream.batches import EventRuns, OutputBatch
from trio_stream.cli.common import OutputWriter
from trio_stream.client import follow_stream, open_publisher
from trio_stream.client.stream import HubClientError, column_runs
from trio_stream.events import Event, EventType, SessionEnded, SessionStarted, Status
from trio_stream.hub.config import HubConfig, Listen
from trio_stream.hub.encodings import COLUMNS, NATIVE
from trio_stream.hub.errors import HubError
from trio_stream.hub.frames import frames_of, json_lines
from trio_stream.hub.ingest import parse_runs
from trio_stream.hub.items import Batch, Deliver
from trio_stream.hub.server import ServedHub, serve_hub
from trio_stream.lines import Lines
from trio_stream.store.chunks import lines_item
from trio_stream.store.sqlite import SQLiteStore
from trio_stream.uplink import column_messages

from .conftest import receive, receive_until

TS = 1795440000.125
HUGE = "h" * 300_000


def batch(first: int, source: str, lines: Lines, first_line: int = 1) -> OutputBatch:
    return OutputBatch("c", first, TS + first, source, first_line, lines)  # type: ignore[arg-type]


def sample(first: int = 0) -> EventRuns:
    """A session's events: its start, plain lines, stderr, lines that are not UTF-8,
    other line endings, the pieces of a huge line, a status, and its end."""
    start = Event(
        EventType.SESSION_STARTED, SessionStarted(["make"], "/", 1, "pipes", "h"), "c", first
    )
    plain = batch(first + 1, "stdout", Lines([f"line {i} é ✓" for i in range(300)]))
    odd = batch(
        first + 301,
        "stderr",
        Lines(
            ["warning", "bad \ufffd byte", "cr", 'quote " and \\', HUGE, HUGE[:1000], ""],
            ["\n", "\n", "\r", "\r\n", "", "\n", ""],
            frozenset({4}),
            {1: b"bad \xff byte\n"},
        ),
        first_line=301,
    )
    status = Event(EventType.STATUS, Status("linking"), "c", first + 308, "st", TS)
    more = batch(first + 309, "stdout", Lines(["after", "the", "status"]), first_line=308)
    end = Event(EventType.SESSION_ENDED, SessionEnded(0), "c", first + 312, "end", TS)
    return EventRuns([[start], plain, odd, [status], more, [end]])


def printed(batches: Sequence[Sequence[Event]], *, as_json: bool) -> tuple[bytes, bytes]:
    """What ``tstream attach`` prints of ``batches`` (stdout, stderr), as it prints them."""
    out, err = io.BytesIO(), io.BytesIO()
    writer = OutputWriter(out, err)
    for events in batches:
        if as_json:
            out.write(json_lines(events))
        else:
            writer.add_all(events)
            writer.flush()
    return out.getvalue(), err.getvalue()


def test_lines_as_columns_read_back_as_the_same_events_and_print_the_same() -> None:
    runs = sample()
    tick = Batch(frames_of(runs), runs)
    [message] = COLUMNS.messages("c", Deliver([tick], runs.last_offset))
    decoded = orjson.loads(message)
    assert decoded["type"] == "event" and "events" not in decoded
    kinds = [type(r).__name__ for r in decoded["runs"]]
    assert kinds == ["list", "dict", "dict", "list", "dict", "list"]
    read = column_runs("c", decoded["runs"])
    assert list(read) == list(runs)
    [native] = NATIVE.messages("c", Deliver([tick], runs.last_offset))
    assert [orjson.loads(f.raw) for f in frames_of(read)] == orjson.loads(native)["events"]
    for as_json in (False, True):
        assert printed([read], as_json=as_json) == printed([list(runs)], as_json=as_json)


def test_runs_from_outside_are_checked() -> None:
    lines = batch(0, "stdout", Lines(["a", "b"]))
    good = lines_item(lines)
    assert list(parse_runs([good], "c")) == list(lines)
    problems = {
        "runs: expected a list": {"x": 1},
        "runs[0].lines.x: every text": [{**good, "x": ["a", 2]}],
        "runs[0].lines.s: expected stdout or stderr": [{**good, "s": "stdin"}],
        "runs[0].lines: unknown field": [{**good, "z": 1}],
        "runs[0].lines.e: line endings": [{**good, "e": ["\n", "x"]}],
        "runs[0].lines: index 5": [{**good, "p": [5]}],
        "runs[1]: starts at offset 5, not 2": [good, {**good, "o": 5}],
        "runs[0]: every event of a run is placed": [[{"type": "status", "data": {"status": "s"}}]],
        "runs[0]: expected the columns": [[]],
    }
    for expected, runs in problems.items():
        with pytest.raises(HubError) as caught:
            parse_runs(runs, "c")
        assert expected in str(caught.value), (expected, str(caught.value))
    with pytest.raises(HubClientError):
        column_runs("c", [{"x": ["a"]}])


@pytest.fixture
async def sqlite_hub(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[ServedHub]:
    """A hub over a SQLite store (history read from its chunks' columns), taking large
    publish messages."""
    store = await SQLiteStore.open(str(tmp_path / "hub.db"))
    config = HubConfig(listen=(Listen(port=0),), max_message_size=4 << 20, history=50)
    served: ServedHub = await nursery.start(serve_hub, config, store)
    yield served


async def publish(url: str, runs: Sequence[Event]) -> None:
    """Publish ``runs`` as ``tstream run --hub`` does, lines as columns."""
    async with open_publisher(url, "c") as pub:
        assert pub.columns
        for last, parts in column_messages(runs, pub.max_message_size, pub.max_batch):
            await pub.send_runs(parts)
            assert (await pub.receive_ack()).last_offset == last


async def test_a_client_that_does_not_ask_never_sees_columns(sqlite_hub: ServedHub) -> None:
    url = sqlite_hub.urls[0]
    runs = sample()
    await publish(url, runs)
    ws = url.replace("http://", "ws://") + "/api/streams/c/ws?after=-1"
    async with open_websocket_url(ws, max_message_size=1 << 24) as plain:
        messages = await receive_until(plain, "end")
    assert all("runs" not in m for m in messages)
    events = [e for m in messages if m["type"] == "event" for e in m["events"]]
    assert [e["offset"] for e in events] == list(range(len(runs)))
    async with open_websocket_url(
        ws + "&protocol=tstream-columns", max_message_size=1 << 24
    ) as columns:
        ack = await receive(columns)
        assert ack["type"] == "connection_ack"
        messages = await receive_until(columns, "end")
    assert all("events" not in m for m in messages if m["type"] == "event")
    assert any(type(r) is dict for m in messages if m["type"] == "event" for r in m["runs"])
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/api/streams/c/sse?protocol=tstream-columns")
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "protocol: use tstream or executor-streamer on sse, not 'tstream-columns'"
    )


async def test_attach_prints_the_same_with_columns_as_without(sqlite_hub: ServedHub) -> None:
    url = sqlite_hub.urls[0]
    runs = sample()
    await publish(url, runs)
    # The hub keeps 50 events in memory: the rest comes from its store's chunks.
    async with follow_stream(url, "c") as events:
        plain = [[event async for event in events]]
    async with follow_stream(url, "c", batched=True) as batches:
        got = [batch async for batch in batches]
    assert any(isinstance(b, EventRuns) for b in got)
    assert [e for b in got for e in b] == plain[0] == list(runs)
    for as_json in (False, True):
        assert printed(got, as_json=as_json) == printed(plain, as_json=as_json)


async def test_columns_resume_after_a_slow_consumer_cut_without_gap_or_duplicate(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    store = await SQLiteStore.open(str(tmp_path / "hub.db"))
    config = HubConfig(listen=(Listen(port=0),), max_message_size=4 << 20, client_queue=150)
    served: ServedHub = await nursery.start(serve_hub, config, store)
    url = served.urls[0]
    # More than the socket buffers hold, for a reader that takes its time.
    count = 20_000
    texts = [f"{i:05d} " + "x" * 1000 for i in range(count)]
    offsets: list[int] = []
    await publish(url, batch(0, "stdout", Lines(texts[:1000]), 0))
    async with follow_stream(url, "c", batched=True, buffer=1) as batches:
        for first in range(1000, count, 1000):
            await publish(url, batch(first, "stdout", Lines(texts[first : first + 1000]), first))
        ended = Event(EventType.SESSION_ENDED, SessionEnded(0), "c", count, "e", TS)
        await publish(url, [ended])
        with trio.fail_after(30):
            async for got in batches:
                offsets += [e.offset for e in got]
                await trio.sleep(0.05)
    assert offsets == list(range(count + 1))
    assert served.hub.broker.slow_consumers >= 1
