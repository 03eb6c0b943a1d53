"""What publishing to a hub costs ``tstream run``: a chatty command run bare under tstream
(the baseline), publishing with no time to flush (the run's own cost), and publishing
until the hub has every event (delivery), against a real ``tstream serve`` with a SQLite
store, in the same run of this script.

    python scripts/bench_uplink.py [--lines 200000] [--rounds 3]

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


def start_hub(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    hub = subprocess.Popen(
        [*TSTREAM, "serve", "--listen", "127.0.0.1:0", "--store", str(root / "hub.db")],
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


def run(lines: int, *options: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [*TSTREAM, "run", "-q", "--no-serve", *options, "--", "seq", "1", str(lines)],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def hub_last_offset(url: str, sid: str) -> int:
    with urllib.request.urlopen(f"{url}/api/streams/{sid}") as answer:
        return int(json.load(answer)["lastOffset"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.update(XDG_DATA_HOME=str(root / "data"), XDG_RUNTIME_DIR=str(root))
        hub, url = start_hub(root)
        try:
            best: dict[str, float] = {}
            for round_ in range(args.rounds):
                times = {
                    "bare": run(args.lines, "--store", str(root / "run.db")),
                    "publishing, no flush": run(
                        args.lines,
                        "--store",
                        str(root / "run.db"),
                        "--hub",
                        url,
                        "--hub-flush-timeout",
                        "0",
                    ),
                    "publishing until delivered": run(
                        args.lines,
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
    print(f"tstream run -q -- seq 1 {args.lines}, best of {args.rounds}:")
    for case, elapsed in best.items():
        print(f"  {case:28s} {elapsed:7.2f} s   {elapsed / base:5.2f}x the bare run")
    events = args.lines + 2
    print(f"  delivery: {events / best['publishing until delivered']:,.0f} events/s end to end")


if __name__ == "__main__":
    main()
