"""Chunks: batches of lines are cut, packed and read back as their events would be."""

import base64
import random

import pytest
from terminal_helpers import merged, terminal_bytes

from trio_stream.batches import EventRuns, OutputBatch
from trio_stream.events import Event, EventType, EventValidationError, Status
from trio_stream.lines import Lines
from trio_stream.store import chunks


def mixed_runs(rng: random.Random) -> EventRuns:
    runs: list = []
    offset = 0
    for _ in range(rng.randint(1, 5)):
        count = rng.randint(1, 6)
        if rng.random() < 0.7:
            texts = ["x" * rng.randint(0, 9) for _ in range(count)]
            eols = None if rng.random() < 0.5 else [rng.choice(["\n", "\r", ""]) for _ in texts]
            partial = frozenset({0}) if rng.random() < 0.3 else frozenset()
            raw = {} if rng.random() < 0.5 else {0: b"\xff\n"}
            lines = Lines(texts, eols, partial, raw)
            if rng.random() < 0.4:
                # Lines read as one text, ending with "\n" or all with "\r\n".
                sep = rng.choice(["\n", "\r\n"])
                lines = Lines.joined(sep.join(texts), sep, count)
            runs.append(OutputBatch("s", offset, 1.5, "stdout", offset, lines))
        else:
            runs.append(
                [
                    Event(EventType.STATUS, Status("ok"), "s", offset + i, f"e{offset + i}", 2.0)
                    for i in range(count)
                ]
            )
        offset += count
    return EventRuns(runs)


@pytest.mark.parametrize("seed", range(40))
def test_runs_are_chunked_and_read_back_as_their_events_are(seed, monkeypatch):
    rng = random.Random(seed)
    monkeypatch.setattr(chunks, "MAX_CHUNK_EVENTS", rng.randint(1, 7))
    monkeypatch.setattr(chunks, "MAX_CHUNK_BYTES", rng.randint(1, 40))
    # Cut as other lines are (a batch of joined lines is otherwise never cut).
    monkeypatch.setattr(chunks, "MAX_JOINED_CHUNK_EVENTS", 0)
    runs = mixed_runs(rng)
    by_runs = list(chunks.split(runs))
    by_events = list(chunks.split(list(runs)))
    assert [list(piece) for piece in by_runs] == [list(piece) for piece in by_events]
    for piece, expected in zip(by_runs, by_events, strict=True):
        assert chunks.stamps(piece) == chunks.stamps(expected)
        # Lines are kept as columns, other events one array each: both read the same.
        assert chunks.decode("s", chunks.encode(piece)) == list(expected)
        assert chunks.decode("s", chunks.encode(piece, joined=True)) == list(expected)
        assert chunks.decode("s", chunks.encode(expected)) == list(expected)
        assert chunks.offsets(chunks.encode(piece)) == [e.offset for e in expected]
        assert [list(r) for r in chunks.rows(chunks.encode(piece))] == chunks.rows(
            chunks.encode(expected)
        )
        if len(expected) > 1:
            drop = rng.randint(1, len(expected) - 1)
            body, first, count, low, high = chunks.trim(chunks.encode(piece), drop)
            assert chunks.decode("s", body) == list(expected)[drop:]
            assert (first, count) == (expected[drop].offset, len(expected) - drop)
            kept = list(expected)[drop:]
            assert (low, high) == (min(e.ts for e in kept), max(e.ts for e in kept))


def test_lines_are_stored_as_columns_with_ids_made_from_their_key():
    lines = Lines(["a", "b", "c"], None, frozenset(), {})
    batch = OutputBatch("s", 7, 1.5, "stderr", 3, lines)
    body = chunks.encode(EventRuns([batch]))
    assert b'"x":["a","b","c"]' in body
    # No id is stored: each is made again from the batch's key and the event's number.
    assert all(event_id.encode() not in body for event_id in batch.event_ids())
    assert chunks.decode("s", body) == list(batch)
    assert [e.id for e in chunks.decode("s", body)] == batch.event_ids()
    # A part keeps the ids its events had in the whole batch.
    part = batch.part(1, 3)
    assert [e.id for e in chunks.decode("s", chunks.encode(EventRuns([part])))] == [
        e.id for e in list(batch)[1:]
    ]


def test_ids_cross_the_boundaries_of_their_numbers():
    from trio_stream.batches import batch_event_ids

    key = bytes(range(8))
    for base in (0, 4090, (1 << 24) - 5, (1 << 32) - 3):
        count = 3 if base == (1 << 32) - 3 else 10
        expected = [
            base64.urlsafe_b64encode(key + n.to_bytes(4, "big")).decode()
            for n in range(base, base + count)
        ]
        assert batch_event_ids(key, base, count) == expected


@pytest.mark.parametrize(
    "body",
    [
        b'[{"o":0}]',
        b'[{"o":0,"k":"zz","b":0,"t":1.0,"s":"stdout","l":0,"x":["a"]}]',
        b'[{"o":0,"k":"0011223344556677","b":0,"t":1.0,"s":"stdout","l":0,"x":["a"],"e":[]}]',
        b'[{"o":0,"k":"0011223344556677","b":0,"t":1.0,"s":"stdout","l":0,"x":["a"],"p":[5]}]',
        b'[{"o":0,"k":"0011223344556677","b":0,"t":1.0,"s":"stdout","l":0,"j":"a\\nb","n":3}]',
        b'[{"o":0,"k":"0011223344556677","b":0,"t":1.0,"s":"stdout","l":0,"j":"a","n":1,"d":"\\r"}]',
        b'[{"o":0,"k":"0011223344556677","b":0,"t":1.0,"s":"stdout","l":0,"j":["a"],"n":1}]',
        b'[{"o":0,"k":"0011223344556677","b":0,"t":1.0,"s":"stdout","l":0,"j":"a"}]',
        b"[{",
    ],
)
def test_a_chunk_this_tstream_did_not_write_is_a_clear_error(body):
    with pytest.raises(EventValidationError, match="stored chunk"):
        chunks.decode("s", body)


@pytest.mark.parametrize("seed", range(40))
def test_rows_read_as_the_events_they_hold(seed, monkeypatch):
    rng = random.Random(seed)
    monkeypatch.setattr(chunks, "MAX_CHUNK_EVENTS", rng.randint(1, 7))
    runs = mixed_runs(rng)
    joined = rng.random() < 0.5
    bodies = [chunks.encode(piece, joined=joined) for piece in chunks.split(runs)]
    after = rng.randint(-1, len(runs) - 1)
    rows = chunks.decode_rows("s", bodies, after)
    expected = [e for e in runs if e.offset > after]
    assert list(rows) == expected
    assert rows.last_offset == (expected[-1].offset if expected else -1)
    assert rows.others() == [e for e in expected if terminal_bytes([e]) == [] or e.data.raw]
    shown: list[tuple[str, bytes]] = []
    for part in rows.terminal():
        shown.extend([part] if isinstance(part, tuple) else terminal_bytes([part]))
    assert merged(shown) == merged(terminal_bytes(expected))


def test_terminal_keeps_sources_apart_and_in_order():
    out = OutputBatch("s", 0, 1.0, "stdout", 0, Lines(["a", "b"], None, frozenset(), {}))
    err = OutputBatch("s", 2, 1.0, "stderr", 2, Lines(["c"], None, frozenset(), {}))
    raw = OutputBatch(
        "s", 3, 1.0, "stdout", 3, Lines(["?", "d"], None, frozenset(), {0: b"\xff\n"})
    )
    status = [Event(EventType.STATUS, Status("ok"), "s", 5, "e5", 2.0)]
    body = chunks.encode(EventRuns([out, err, raw, status]))
    rows = chunks.decode_rows("s", [body])
    parts = rows.terminal()
    assert parts[:2] == [("stdout", b"a\nb\n"), ("stderr", b"c\n")]
    assert parts[2].data.raw == b"\xff\n"
    assert parts[3] == ("stdout", b"d\n")
    assert parts[4].type is EventType.STATUS
    assert [e.offset for e in rows.others()] == [3, 5]


def joined_batch(offset: int, texts: list[str], sep: str = "\n") -> OutputBatch:
    lines = Lines.joined(sep.join(texts), sep, len(texts))
    return OutputBatch("s", offset, 1.5, "stdout", offset, lines)


def test_lines_read_as_one_text_are_stored_as_that_text():
    batch = joined_batch(4, ["a", "", "b"])
    body = chunks.encode(EventRuns([batch]), joined=True)
    assert b'"n":3,"j":"a\\n\\nb"' in body and b'"x"' not in body
    assert chunks.decode("s", body) == list(batch)
    assert [e.id for e in chunks.decode("s", body)] == batch.event_ids()
    # A pty's lines: the ending is named once, not listed line by line.
    terminal = joined_batch(0, ["a", "b"], "\r\n")
    body = chunks.encode(EventRuns([terminal]), joined=True)
    assert b'"j":"a\\r\\nb","d":"\\r\\n"' in body and b'"e"' not in body
    assert chunks.decode("s", body) == list(terminal)
    [run] = chunks.decode_runs("s", [body]).runs
    assert run.lines.joined_text() == ("a\r\nb", "\r\n")
    # Without joined=True (the Redis store, whose readers may be older): a list of texts.
    assert b'"x":["a","b"]' in chunks.encode(EventRuns([terminal]))


def test_a_batch_of_lines_read_as_one_text_goes_to_its_chunk_whole():
    many = joined_batch(0, ["x"] * 3000)
    more = joined_batch(3000, ["y"] * 10)
    pieces = list(chunks.split(EventRuns([many, more])))
    assert [len(piece) for piece in pieces] == [3000, 10]
    assert pieces[0].runs == [many]
    # Beyond MAX_JOINED_CHUNK_EVENTS lines, the batch is cut as any other.
    huge = joined_batch(0, ["z"] * (chunks.MAX_JOINED_CHUNK_EVENTS + 1))
    sizes = [len(piece) for piece in chunks.split(EventRuns([huge]))]
    assert max(sizes) == chunks.MAX_CHUNK_EVENTS and sum(sizes) == len(huge)


def test_lines_from_outside_cannot_be_one_text():
    # The joined form is the store's own: what clients and publishers send is checked
    # field by field, as a list of texts.
    item = {"o": 0, "k": "0011223344556677", "b": 0, "t": 1.0, "s": "stdout", "l": 0}
    with pytest.raises(ValueError, match="unknown field 'j'"):
        chunks.lines_batch("s", {**item, "x": ["a"], "j": "a", "n": 1}, check=True)
    with pytest.raises(ValueError):
        chunks.lines_batch("s", {**item, "j": "a", "n": 1}, check=True)
