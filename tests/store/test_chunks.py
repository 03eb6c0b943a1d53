"""Chunks: batches of lines are cut, packed and read back as their events would be."""

import random

import pytest

from trio_stream.batches import EventRuns, OutputBatch
from trio_stream.events import Event, EventType, Status
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
def test_runs_are_chunked_and_encoded_as_their_events_are(seed, monkeypatch):
    rng = random.Random(seed)
    monkeypatch.setattr(chunks, "MAX_CHUNK_EVENTS", rng.randint(1, 7))
    monkeypatch.setattr(chunks, "MAX_CHUNK_BYTES", rng.randint(1, 40))
    runs = mixed_runs(rng)
    by_runs = list(chunks.split(runs))
    by_events = list(chunks.split(list(runs)))
    assert [list(piece) for piece in by_runs] == [list(piece) for piece in by_events]
    for piece, expected in zip(by_runs, by_events, strict=True):
        assert chunks.encode(piece) == chunks.encode(expected)
        assert chunks.stamps(piece) == chunks.stamps(expected)
        assert chunks.decode("s", chunks.encode(piece)) == list(expected)


def terminal_bytes(events) -> list[tuple[str, bytes]]:
    """What a terminal shows of ``events``, one entry per line, from built events."""
    return [
        (
            e.data.source,
            e.data.raw if e.data.raw is not None else (e.data.text + e.data.eol).encode(),
        )
        for e in events
        if e.type is EventType.OUTPUT
    ]


@pytest.mark.parametrize("seed", range(40))
def test_rows_read_as_the_events_they_hold(seed, monkeypatch):
    rng = random.Random(seed)
    monkeypatch.setattr(chunks, "MAX_CHUNK_EVENTS", rng.randint(1, 7))
    runs = mixed_runs(rng)
    bodies = [chunks.encode(piece) for piece in chunks.split(runs)]
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


def merged(parts: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """``parts`` with consecutive writes to one source joined."""
    out: list[tuple[str, bytes]] = []
    for source, data in parts:
        if out and out[-1][0] == source:
            out[-1] = (source, out[-1][1] + data)
        elif data:
            out.append((source, data))
    return out


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
