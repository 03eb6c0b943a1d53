"""Capture throughput: tstream's batch and streaming modes against plain trio baselines.

Generates its own input (1,000,000 lines of 20 to 150 bytes, fixed seed), has ``cat`` write
it, and prints lines per second for each way of capturing it, with the ratio to its
baseline measured in the same run:

* ``trio.run_process`` capture, the baseline of tstream's batch mode (target ratio >= 0.98,
  i.e. overhead under 2%);
* a bare trio loop reading 64 KiB chunks, splitting and decoding lines, the baseline of the
  streaming modes (target ratio >= 0.8 for streaming without processors); tstream's
  streaming figures include a consumer that follows the session (``Session.events()``)
  and receives every line with its source, offset and timestamp;
* streaming with one ``block`` processor, and ``tstream run --quiet`` end to end (process
  start-up and recording into a SQLite store included). The end-to-end row is compared with
  the bare loop twice: in this process (baseline B), and as a program of its own started
  the same way (``python -c``: the interpreter's start-up and trio's import included, as
  tstream's are; baseline B2).

Usage: ``python scripts/bench_capture.py [--lines N] [--repeat R]``; each figure is the best
of R runs, the rows taking turns. A ratio is the baseline's time over the row's: above 1 is
faster than the baseline (batch mode's target, at most 2% slower, is a ratio of at least
0.98).
"""

from __future__ import annotations

import argparse
import inspect
import os
import random
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from trio_stream import StreamConfig, open_session, run
from trio_stream.batches import EventBatch, OutputBatch
from trio_stream.events import EventType
from trio_stream.processors.base import LineBatch

TSTREAM = [sys.executable, "-c", "from trio_stream.cli import main; main()"]


def generate(path: Path, count: int) -> int:
    """Write ``count`` lines of 20 to 150 printable bytes; return the file's size."""
    rng = random.Random(1234)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 .,:;-_=+"
    pool = ["".join(rng.choices(alphabet, k=150)) for _ in range(64)]
    with path.open("w") as out:
        for i in range(count):
            out.write(pool[i % 64][: rng.randint(20, 150)] + "\n")
        # On disk before the first timed run: the kernel's writing back of 86 MB would
        # otherwise share the disk with the rows that record (their syncs wait for it).
        out.flush()
        os.fsync(out.fileno())
    return path.stat().st_size


async def trio_capture(command: list[str]) -> int:
    done = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
    return done.stdout.count(b"\n")


async def batch_mode(command: list[str]) -> int:
    done = await run(command)
    return done.stdout.count(b"\n")


async def bare_loop(command: list[str]) -> int:
    """Read 64 KiB chunks, split and decode lines: the least any streaming capture does."""
    lines = 0
    held = b""
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    async with process.stdout:
        while chunk := await process.stdout.receive_some(65536):
            parts = (held + chunk).split(b"\n")
            held = parts.pop()
            lines += len([p.decode() for p in parts])
    await process.wait()
    return lines


# The same loop as a program: its source, and a line that runs it and prints its count.
BARE_PROGRAM = (
    "import subprocess, sys, trio\n\n"
    + inspect.getsource(bare_loop)
    + "\nprint(trio.run(bare_loop, sys.argv[1:]))\n"
)


def bare_program(command: list[str], expected: int) -> None:
    """:func:`bare_loop` as a program of its own: ``python -c`` with the loop."""
    done = subprocess.run(
        [sys.executable, "-c", BARE_PROGRAM, *command], check=True, capture_output=True
    )
    if int(done.stdout) != expected:
        raise SystemExit(f"the bare program captured {done.stdout!r} lines, not {expected}")


class Noop:
    name = "noop"

    async def process(self, batch: LineBatch, publish: object) -> None:
        pass

    async def on_complete(self, completion: object, publish: object) -> None:
        pass

    async def on_error(self, error: BaseException, publish: object) -> None:
        pass


async def consume(command: list[str], config: StreamConfig) -> int:
    """Follow a session as a program would: every line, with its source, offset and time.

    Runs of captured lines are read as their columns (texts, first offset, source, read
    time) rather than as one event object per line; other events one by one.
    """
    lines = 0
    next_offset = 0
    async with open_session(command, config) as session:
        async for events in session.events():
            for run in events.runs:
                if isinstance(run, OutputBatch):
                    texts, source, ts = run.lines.texts, run.source, run.ts
                    if run.first_offset != next_offset or source != "stdout" or not ts:
                        raise SystemExit(f"unexpected lines at offset {run.first_offset}")
                    lines += len(texts)
                else:
                    if isinstance(run, EventBatch) and run.first_offset != next_offset:
                        raise SystemExit(f"unexpected events at offset {run.first_offset}")
                    lines += sum(event.type is EventType.OUTPUT for event in run)
                next_offset += len(run)
    return lines


async def streaming(command: list[str]) -> int:
    return await consume(command, StreamConfig())


async def streaming_one_processor(command: list[str]) -> int:
    return await consume(command, StreamConfig(processors=[Noop()]))


def tstream_run(options: list[str], command: list[str], store: Path) -> None:
    """``tstream run`` with ``options``, recording into a new store of its own (SQLite, as
    by default), its stdout on /dev/null; the store is removed afterwards, untimed."""
    try:
        subprocess.run(
            [*TSTREAM, "run", *options, "--store", f"sqlite:{store}", "--", *command],
            check=True,
            stdout=subprocess.DEVNULL,
            # Not a terminal: the compact display of other events is not started.
            stderr=subprocess.DEVNULL,
        )
    finally:
        for path in store.parent.glob(store.name + "*"):
            if path.is_dir():
                # Its segment files (the chunks of large writes).
                shutil.rmtree(path)
            else:
                path.unlink()


def script_pty(command: list[str]) -> None:
    """``script -qec COMMAND /dev/null > /dev/null``: util-linux copying a pty to stdout."""
    subprocess.run(
        ["script", "-qec", shlex.join(command), "/dev/null"],
        check=True,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )


def measure(once: Callable[[], object]) -> tuple[float, float]:
    """The elapsed time of one call and the CPU time (user and system) of every process
    taking part: this one and the children it waited for, theirs included.

    What the disk still has to do for the run before (the writing back and freeing of a
    removed store) is done first, untimed, so that no run pays for another's."""
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time()
    start = time.perf_counter()
    once()
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return took, time.process_time() - cpu + children


def timed(
    fn: Callable[[list[str]], Awaitable[int]], command: list[str], expected: int
) -> Callable[[], None]:
    def once() -> None:
        got = trio.run(fn, command)
        if got != expected:
            raise SystemExit(f"{fn.__name__} captured {got} lines, not {expected}")

    return once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--only",
        choices=["library", "run", "pty"],
        action="append",
        help="measure only these groups of rows (default: all)",
    )
    args = parser.parse_args()
    groups = set(args.only or ["library", "run", "pty"])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "input.txt"
        size = generate(data, args.lines)
        command = ["cat", str(data)]
        store = Path(tmp) / "bench.db"
        n = args.lines
        print(f"input: {n:,} lines, {size / 1e6:.1f} MB; best of {args.repeat} runs")
        # (label, the call, the baseline's label or None)
        rows: list[tuple[str, Callable[[], object], str | None]] = []
        bare = "bare trio loop: 64 KiB, split, decode (baseline B)"
        bare_as_program = "the same loop as a program, python -c (baseline B2)"
        if groups & {"library", "run"}:
            rows.append((bare, timed(bare_loop, command, n), None))
        if "library" in groups:
            run_process = "trio.run_process capture (baseline A)"
            rows += [
                (run_process, timed(trio_capture, command, n), None),
                ("tstream batch mode: run()", timed(batch_mode, command, n), run_process),
                ("tstream streaming, no processors", timed(streaming, command, n), bare),
                (
                    "tstream streaming, one block processor",
                    timed(streaming_one_processor, command, n),
                    bare,
                ),
            ]
        run_row = "tstream run --quiet (end to end, recorded)"
        if "run" in groups:
            rows.append((run_row, lambda: tstream_run(["--quiet"], command, store), bare))
            rows.append(
                (bare_as_program, lambda: bare_program(command, n), None),
            )
        if "pty" in groups:
            script = "script -qec 'cat FILE' /dev/null (baseline C)"
            rows += [
                (script, lambda: script_pty(command), None),
                (
                    "tstream run --pty --quiet",
                    lambda: tstream_run(["--pty", "-q"], command, store),
                    script,
                ),
                (
                    "tstream run --pty, shown",
                    lambda: tstream_run(["--pty"], command, store),
                    script,
                ),
            ]
        # The rows take turns, so that each sees the same share of whatever else runs.
        elapsed = {label: float("inf") for label, _, _ in rows}
        cpu = dict(elapsed)
        for _ in range(args.repeat):
            for label, once, _ in rows:
                took, used = measure(once)
                elapsed[label] = min(elapsed[label], took)
                cpu[label] = min(cpu[label], used)
        print(f"{'':<52} {'lines/s':>12}  {'elapsed':>7}  ratio  {'CPU':>7}  ratio")
        for label, _, baseline in rows:
            took, used = elapsed[label], cpu[label]
            ratios = (
                ("", "")
                if baseline is None
                else (
                    f"{elapsed[baseline] / took:.3f}",
                    f"{cpu[baseline] / used:.3f}",
                )
            )
            print(
                f"{label:<52} {n / took:>12,.0f}  {took:6.3f}s  {ratios[0]:>5}  "
                f"{used:6.3f}s  {ratios[1]:>5}"
            )
        if "run" in groups:
            took = elapsed[run_row]
            print(
                f"{run_row} against baseline B2, start-up on both sides: "
                f"ratio {elapsed[bare_as_program] / took:.3f} (elapsed), "
                f"{cpu[bare_as_program] / cpu[run_row]:.3f} (CPU)"
            )


if __name__ == "__main__":
    main()
