"""Throughput of the JSON lines processor and the pattern matcher.

1. JSON lines -> events: the JSON lines processor turning batches of lines into events
   placed in a session log, against a bare ``orjson.loads`` loop over the same lines, in the
   same run (target: at least 0.7 of the bare loop). Two corpora: structured log lines
   (about 200 bytes, one in twenty a typed ``status`` line) and agent transcript lines
   (the lines of the Claude Code transcript in tests/data, about 1 KB).
   "parsing only" is the parsing without a log, to show where the time goes. The events
   are placed in the log as one batch per batch of lines and built when read: the figure
   counts placing them, and a separate one reading every event back once.
2. The pattern matcher over 1,000,000 log lines with 5 patterns (lines per second),
   against a plain loop that searches every line with every pattern.

Each figure is the best of several rounds, in CPU time of this process. Run:
``python scripts/bench_events.py``.
"""

from __future__ import annotations

import argparse
import gc
import re
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import trio

from trio_stream.lines import Line
from trio_stream.log import SessionLog
from trio_stream.processors.base import LineBatch
from trio_stream.processors.jsonlines import JsonLinesProcessor
from trio_stream.processors.patterns import PatternMatcher, parse_match
from trio_stream.publisher import Publisher

BATCH = 256
TRANSCRIPT = Path(__file__).resolve().parent.parent / "tests" / "data" / "claude-stream.jsonl"

PATTERNS = [
    r"error=^ERROR: (?P<message>.*)",
    r"oom:error@critical=Out of memory: Killed process (?P<pid>\d+)",
    r"slow@warning=took (?P<ms>\d{4,})ms",
    r"deploy:status=^== (?P<status>\w+) ==$",
    r"retry@notice=retrying \((?P<attempt>\d+)/(?P<of>\d+)\)",
]


def log_lines(count: int) -> list[str]:
    """Structured log lines, one in twenty a typed status line."""
    out = []
    for i in range(count):
        if i % 20 == 19:
            doc = {"type": "status", "status": "running", "message": f"{i} requests served"}
        else:
            doc = {
                "ts": f"2026-11-23T00:45:{i % 60:02d}.{i % 1000:03d}Z",
                "level": ("info", "debug", "warning")[i % 3],
                "logger": "worker.http",
                "msg": "request served",
                "method": "GET",
                "path": f"/api/v1/items?page={i % 97}",
                "status": 200,
                "duration_ms": round(0.5 + (i % 400) / 7, 3),
                "bytes": 512 + i % 4096,
            }
        out.append(orjson.dumps(doc).decode())
    return out


def transcript_lines(count: int) -> list[str]:
    lines = TRANSCRIPT.read_text(encoding="utf-8").splitlines()
    return [lines[i % len(lines)] for i in range(count)]


def text_lines(count: int) -> list[str]:
    """Build-log lines; about one in a hundred matches a pattern."""
    common = [
        "INFO compiling src/module_{i}.c",
        "DEBUG cache hit for key {i:08x}",
        "INFO request {i} served in {ms}ms",
        "  linking target libfoo.so.{i}",
        "WARN deprecated flag -fno-common used in unit {i}",
    ]
    rare = [
        "ERROR: cannot open file data_{i}.bin",
        "Out of memory: Killed process {i} (python3)",
        "step {i} took {ms}0000ms",
        "== deploying ==",
        "retrying ({i}/5)",
    ]
    out = []
    for i in range(count):
        pool = rare if i % 97 == 0 else common
        out.append(pool[(i // 7) % len(pool)].format(i=i, ms=i % 900))
    return out


def batches(texts: list[str]) -> list[LineBatch]:
    return [
        LineBatch("stdout", start, [Line(t) for t in texts[start : start + BATCH]], 1.0)
        for start in range(0, len(texts), BATCH)
    ]


def best(rounds: int, *fns: Callable[[], object]) -> list[float]:
    """The least CPU time of ``rounds`` calls of each function, the calls taking turns.

    The work runs in this thread and does no I/O, so its CPU time is its cost; taking
    turns gives each function the same share of whatever else the machine runs.
    """
    times = [float("inf")] * len(fns)
    for _ in range(rounds):
        for index, fn in enumerate(fns):
            gc.collect()
            start = time.process_time()
            fn()
            times[index] = min(times[index], time.process_time() - start)
    return times


def bare_loads(batched: list[LineBatch]) -> None:
    loads = orjson.loads
    for batch in batched:
        for text in batch.lines.texts:
            loads(text)


def processor_events(batched: list[LineBatch]) -> int:
    async def main() -> int:
        log = SessionLog("bench", record_backlog=None)
        publisher = Publisher(log)
        processor = JsonLinesProcessor()
        for batch in batched:
            await processor.process(batch, publisher)
        return log.next_offset

    return trio.run(main)


def parse_only(batched: list[LineBatch]) -> None:
    processor = JsonLinesProcessor()
    for batch in batched:
        processor.parse_documents(batch)


def bench_json(name: str, texts: list[str], rounds: int) -> float:
    batched = batches(texts)
    events = processor_events(batched)
    bare, parsed, processed = best(
        rounds,
        lambda: bare_loads(batched),
        lambda: parse_only(batched),
        lambda: processor_events(batched),
    )
    n = len(texts)
    ratio = bare / processed
    size = sum(len(t) for t in texts) / n
    print(
        f"JSON lines -> events, {name} ({n:,} lines, {size:.0f} bytes average, {events:,} events)"
    )
    print(f"  bare orjson.loads loop   {n / bare:>12,.0f} lines/s")
    print(f"  parsing only, no log     {n / parsed:>12,.0f} lines/s   ratio {bare / parsed:.2f}")
    print(f"  JSON lines processor     {n / processed:>12,.0f} lines/s   ratio {ratio:.2f}")
    return ratio


def naive_matcher(patterns: list[re.Pattern[str]], batched: list[LineBatch]) -> int:
    found = 0
    for batch in batched:
        for text in batch.lines.texts:
            for pattern in patterns:
                if pattern.search(text):
                    found += 1
    return found


def bench_patterns(count: int, rounds: int) -> None:
    batched = batches(text_lines(count))
    matcher = PatternMatcher([parse_match(p) for p in PATTERNS])
    events = sum(len(matcher.match_batch(b)) for b in batched)
    naive = [p.regex for p in matcher.patterns]
    assert naive_matcher(naive, batched) == events
    plain, matched = best(
        rounds,
        lambda: naive_matcher(naive, batched),
        lambda: [matcher.match_batch(b) for b in batched],
    )
    print(f"Pattern matcher ({count:,} lines, {len(PATTERNS)} patterns, {events:,} events)")
    print(f"  line-by-line search loop {count / plain:>12,.0f} lines/s")
    rate = count / matched
    print(f"  PatternMatcher           {rate:>12,.0f} lines/s   ratio {plain / matched:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="JSON lines per corpus")
    parser.add_argument("--pattern-lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bench_json("structured logs", log_lines(args.lines), args.rounds)
    bench_json("agent transcript", transcript_lines(args.lines), args.rounds)
    bench_patterns(args.pattern_lines, max(1, args.rounds - 2))


if __name__ == "__main__":
    main()
