"""Frames: lines encoded from their columns are the bytes their events encode to."""

import random

import orjson
import pytest

from trio_stream.batches import EventRuns, OutputBatch
from trio_stream.events import Event, EventType, Status, event_to_json
from trio_stream.hub.frames import Frame, frames_of, json_lines
from trio_stream.lines import Lines
from trio_stream.store import chunks

ALPHABET = 'ab \t"\\/\x00\x1f\x7fé€😀\u2028<>&'


def random_runs(rng: random.Random) -> EventRuns:
    runs: list = []
    offset = 0
    for _ in range(rng.randint(1, 5)):
        count = rng.randint(1, 8)
        if rng.random() < 0.75:
            texts = ["".join(rng.choices(ALPHABET, k=rng.randint(0, 12))) for _ in range(count)]
            eols = (
                None
                if rng.random() < 0.5
                else [rng.choice(["\n", "\r\n", "\r", ""]) for _ in texts]
            )
            partial = frozenset(i for i in range(count) if rng.random() < 0.2)
            raw = {i: b"\xff" + texts[i].encode() for i in range(count) if rng.random() < 0.2}
            ts = rng.choice([1.5, 1795450630.1677973, 1e-7, 12345678901.25])
            source = rng.choice(["stdout", "stderr"])
            runs.append(
                OutputBatch(
                    "sess-1", offset, ts, source, 7 + offset, Lines(texts, eols, partial, raw)
                )
            )
        else:
            runs.append(
                [
                    Event(
                        EventType.STATUS, Status("ok"), "sess-1", offset + i, f"e{offset + i}", 2.0
                    )
                    for i in range(count)
                ]
            )
        offset += count
    return EventRuns(runs)


@pytest.mark.parametrize("seed", range(60))
def test_frames_from_columns_are_the_events_json(seed):
    runs = random_runs(random.Random(seed))
    events = list(runs)
    expected = [(e.offset, event_to_json(e)) for e in events]
    frames = frames_of(runs)
    assert [(f.offset, f.raw) for f in frames] == expected
    assert [f.event for f in frames] == events
    rows = chunks.decode_rows("sess-1", [chunks.encode(runs)])
    from_rows = frames_of(rows)
    assert [(f.offset, f.raw) for f in from_rows] == expected
    assert [f.event for f in from_rows] == events
    assert [orjson.loads(f.raw) for f in from_rows] == [orjson.loads(raw) for _, raw in expected]
    # What `tstream attach --json` prints.
    lines = b"".join(raw + b"\n" for _, raw in expected)
    assert json_lines(rows) == json_lines(runs) == json_lines(events) == lines


def test_a_frame_builds_its_event_once():
    batch = OutputBatch("s", 0, 1.0, "stdout", 0, Lines(["a"], None, frozenset(), {}))
    (frame,) = frames_of(EventRuns([batch]))
    assert frame.event is frame.event
    assert frame == Frame.of(batch[0])
