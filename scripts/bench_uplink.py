"""What publishing to a hub costs ``tstream run``: a chatty command run bare under tstream
(the baseline), publishing with no time to flush (the run's own cost), and publishing
until the hub has every event (delivery), against a real ``tstream serve`` with a SQLite
store, in the same run of this script.

    python scripts/bench_uplink.py [--lines 200000] [--rounds 3]
    python scripts/bench_uplink.py --lines 1000000 --line-bytes 60 --publish-rate 10000000

The command is ``seq 1 N``, or with ``--line-bytes B`` ``cat FILE`` of N generated lines
of B bytes each (newline included). The hub limits each publisher to
``publish_per_second`` events (1,000,000 by default, also the burst): ``--publish-rate``
gives the hub another limit.

Prints the best wall time of each case, its ratio to the baseline, and the hub's events
per second for delivery.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TSTREAM = [sys.executable, "-c", "from trio_stream.cli import main; main()"]


def start_hub(root: Path, publish_rate: float | None) -> tuple[subprocess.Popen[bytes], str]:
    options = []
    if publish_rate is not None:
        config = root / "hub.yaml"
        config.write_text(f"serve:\n  publish_per_second: {publish_rate:.0f}\n")
        options = ["--config", str(config)]
    hub = subprocess.Popen(
        [
            *TSTREAM,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            str(root / "hub.db"),
            "--max-events",
            "0",
            *options,
        ],
        stderr=subprocess.PIPE,
    )
    assert hub.stderr is not None
    while True:
        line = hub.stderr.readline().decode()
        if not line:
            raise SystemExit("tstream serve did not start")
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            # Its log lines are not read from here on: keep it quiet.
            return hub, found.group(1)


def run(command: list[str], *options: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [*TSTREAM, "run", "-q", "--no-serve", *options, "--", *command],
        check=True,
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def write_lines(path: Path, count: int, size: int) -> None:
    """``count`` lines of ``size`` bytes each, newline included (their numbers, padded)."""
    with path.open("w") as out:
        for start in range(0, count, 10_000):
            out.write(
                "".join(
                    f"{i:08d} ".ljust(size - 1, "x") + "\n"
                    for i in range(start, min(count, start + 10_000))
                )
            )


def hub_last_offset(url: str, sid: str) -> int:
    with urllib.request.urlopen(f"{url}/api/streams/{sid}") as answer:
        return int(json.load(answer)["lastOffset"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--line-bytes", type=int, help="cat a file of lines this long")
    parser.add_argument("--publish-rate", type=float, help="the hub's publish_per_second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.update(XDG_DATA_HOME=str(root / "data"), XDG_RUNTIME_DIR=str(root))
        command = ["seq", "1", str(args.lines)]
        if args.line_bytes is not None:
            data = root / "lines.txt"
            write_lines(data, args.lines, args.line_bytes)
            command = ["cat", str(data)]
        hub, url = start_hub(root, args.publish_rate)
        try:
            best: dict[str, float] = {}
            for round_ in range(args.rounds):
                times = {
                    "bare": run(command, "--store", str(root / "run.db")),
                    "publishing, no flush": run(
                        command,
                        "--store",
                        str(root / "run.db"),
                        "--hub",
                        url,
                        "--hub-flush-timeout",
                        "0",
                    ),
                    "publishing until delivered": run(
                        command,
                        "--store",
                        str(root / "run.db"),
                        "--hub",
                        url,
                        "--id",
                        f"delivered-{round_}",
                        "--hub-flush-timeout",
                        "600",
                    ),
                }
                last = hub_last_offset(url, f"delivered-{round_}")
                if last != args.lines + 1:
                    raise SystemExit(f"the hub has {last + 1} events, not {args.lines + 2}")
                for case, elapsed in times.items():
                    best[case] = min(best.get(case, elapsed), elapsed)
        finally:
            hub.terminate()
            hub.wait()
    base = best["bare"]
    print(f"tstream run -q -- {' '.join(command[:1])} ({args.lines} lines), best of {args.rounds}:")
    for case, elapsed in best.items():
        print(f"  {case:28s} {elapsed:7.2f} s   {elapsed / base:5.2f}x the bare run")
    events = args.lines + 2
    print(f"  delivery: {events / best['publishing until delivered']:,.0f} events/s end to end")


if __name__ == "__main__":
    main()
