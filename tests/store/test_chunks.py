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
