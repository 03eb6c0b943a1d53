"""Benchmark of the session store: recording, showing and offset queries.

Prints figures and ratios against baselines measured in the same run:

* recording N lines through the recorder into SQLite, against the same into the memory
  store (target: SQLite costs at most 30 % more time);
* when ``tstream run`` takes ``--store``: ``tstream run --quiet`` of a command printing N
  lines, recorded to SQLite against the memory store (same target);
* ``tstream show`` of the whole session to /dev/null, in lines/s;
* an offset query near the end of the N-line session (target: < 10 ms), against the same
  query at its start.

Each timing is the best of ``--repeat`` runs, the two sides of a comparison taking turns,
so that other load on the machine weighs on both alike. Comparisons also give the CPU time
spent (all threads and child processes), which other load on the machine disturbs less
than the elapsed time.

Usage: ``python scripts/bench_store.py [--lines N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from trio_stream.events import output_event
from trio_stream.lines import Line
from trio_stream.log import SessionLog
from trio_stream.store import HistoryQuery, SessionInfo, Store, open_store
from trio_stream.store.recorder import record

READ_BATCH = 1000  # lines per reader batch, as a pipe read of ~64 KiB of short lines gives


async def record_lines(store: Store, session_id: str, lines: int) -> tuple[float, float]:
    """Elapsed and CPU seconds to produce ``lines`` lines into a log and have the recorder
    store them."""
    await store.create_session(SessionInfo(session_id, command=["bench"]))
    log = SessionLog(session_id, history=1000)
    texts = [Line(f"line {n:08d} of the benchmark output, some typical width") for n in range(1000)]
    start = time.perf_counter()
    cpu = time.process_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record, store, log)
        line_no = 0
        while line_no < lines:
            now = time.time()
            count = min(READ_BATCH, lines - line_no)
            log.append(
                [
                    output_event(session_id, -1, line_no + i, "stdout", texts[i % 1000], now)
                    for i in range(count)
                ]
            )
            line_no += count
            await log.wait_recorded_room()
            await trio.sleep(0)
        log.close()
    return time.perf_counter() - start, time.process_time() - cpu


async def timed_query(store: Store, session_id: str, after: int, repeat: int = 200) -> float:
    """Median milliseconds of reading the 10 events after ``after``."""
    times = []
    query = HistoryQuery(after=after, limit=10)
    for _ in range(repeat):
        start = time.perf_counter()
        events = await store.read(session_id, query)
        times.append(time.perf_counter() - start)
        assert events, "the query found nothing"
    return statistics.median(times) * 1000


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Elapsed and CPU seconds of one ``tstream`` command."""
    start = time.perf_counter()
    cpu = children_cpu()
    subprocess.run(
        [sys.executable, "-c", "from trio_stream.cli import main; main()", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    return time.perf_counter() - start, children_cpu() - cpu


def best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The lowest elapsed and the lowest CPU time of several runs."""
    return min(r[0] for r in runs), min(r[1] for r in runs)


def compare(
    name: str, lines: int, baseline: tuple[float, float], measured: tuple[float, float]
) -> None:
    report(f"{name}, memory store", lines / baseline[0], "lines/s")
    report(f"{name}, sqlite store", lines / measured[0], "lines/s")
    report(
        "  sqlite cost over memory, elapsed (target <= 30 %)",
        (measured[0] / baseline[0] - 1) * 100,
        "%",
    )
    report("  sqlite cost over memory, CPU time", (measured[1] / baseline[1] - 1) * 100, "%")


def run_supports_store(env: dict[str, str]) -> bool:
    result = subprocess.run(
        [sys.executable, "-c", "from trio_stream.cli import main; main()", "run", "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    return result.returncode == 0 and "--store" in result.stdout


def report(name: str, value: float, unit: str) -> None:
    print(f"{name:<56} {value:>12,.1f} {unit}")


async def library_benchmarks(db: Path, lines: int, repeat: int) -> None:
    mem, lite = [], []
    for attempt in range(repeat):
        async with open_store("memory:", max_history=READ_BATCH) as memory:
            mem.append(await record_lines(memory, "bench", lines))
        async with open_store(f"sqlite:{db}") as store:
            lite.append(await record_lines(store, f"bench-{attempt}", lines))
    compare("recorder (library)", lines, best(mem), best(lite))
    async with open_store(f"sqlite:{db}") as store:
        start = time.perf_counter()
        total = 0
        after = -1
        while True:
            events = await store.read("bench-0", HistoryQuery(after=after, limit=10_000))
            if not events:
                break
            total += len(events)
            after = events[-1].offset
        elapsed = time.perf_counter() - start
        assert total == lines, f"read {total} of {lines}"
        report("store.read of the whole session", total / elapsed, "lines/s")
        near_start = await timed_query(store, "bench-0", 10)
        near_end = await timed_query(store, "bench-0", lines - 20)
        report("offset query near the start (baseline)", near_start, "ms")
        report("offset query near the end (target < 10 ms)", near_end, "ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines per session")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing (best kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        print(f"{args.lines:,} lines, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        trio.run(library_benchmarks, db, args.lines, args.repeat)
        env = {**os.environ, "TSTREAM_STORE": str(db)}
        elapsed = best([run_cli(["show", "bench-0"], env) for _ in range(args.repeat)])[0]
        report("tstream show of the whole session (process)", args.lines / elapsed, "lines/s")
        if not run_supports_store(env):
            print("tstream run has no --store option here: run benchmarks skipped")
            return
        child = [sys.executable, "-c", f"for n in range({args.lines}): print('line', n)"]
        run_db = Path(tmp) / "run.db"
        mem, lite = [], []
        for _ in range(args.repeat):
            mem.append(run_cli(["run", "--quiet", "--store", "memory:", "--", *child], env))
            lite.append(
                run_cli(["run", "--quiet", "--store", f"sqlite:{run_db}", "--", *child], env)
            )
        compare("tstream run --quiet", args.lines, best(mem), best(lite))


if __name__ == "__main__":
    main()
