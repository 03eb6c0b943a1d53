"""How fast the dashboard shows large things: the first screen of a session of 1,000,000
lines and the list of 10,000 sessions, in headless Chromium against ``tstream serve`` over
a SQLite store.

The session is recorded by ``tstream run -q --id big -- seq 1 1000000`` into the store the
hub then serves; the sessions are created through the store's API. Each page is opened a
few times (a fresh profile each run, the hub warm after the first) and the time from
navigation to the first screen drawn (``performance.now()`` when the page has written its
first rows) is printed, with the time of the REST request behind it.

Usage: python scripts/bench_dashboard.py [--lines 1000000] [--sessions 10000] [--runs 3]
Needs Debian's chromium and chromium-driver, and selenium (the test extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import trio
from benchhub import TSTREAM, lifted_limits, start_hub
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from trio_stream.store import SessionInfo, open_store
from trio_stream.store.base import SessionStatus

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def first_screen(address: str) -> tuple[float, float]:
    """Milliseconds from navigation to the page's first screen, and to its scripts having
    run (DOMContentLoaded), in a fresh browser."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="tstream-bench-")
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--window-size=1280,860",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    os.environ["SE_OFFLINE"] = "true"
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(address)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            value = driver.execute_script("return window.tstreamMetrics?.firstScreen")
            if value:
                loaded = driver.execute_script(
                    "return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
                )
                return float(value), float(loaded)
            time.sleep(0.02)
        raise RuntimeError(f"{address}: no first screen within 30 s")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def request_ms(url: str) -> float:
    async with httpx.AsyncClient(timeout=60) as http:
        started = time.perf_counter()
        answer = await http.get(url, headers={"Accept-Encoding": "gzip"})
        answer.raise_for_status()
        return (time.perf_counter() - started) * 1000


async def main(lines: int, sessions: int, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="tstream-bench-") as folder:
        store_url = f"sqlite:{Path(folder) / 'hub.db'}"
        started = time.perf_counter()
        subprocess.run(
            [
                TSTREAM,
                "run",
                "-q",
                "--no-serve",
                "--store",
                store_url,
                "--id",
                "big",
                "--",
                "seq",
                "1",
                str(lines),
            ],
            check=True,
        )
        print(f"recorded seq 1 {lines} in {time.perf_counter() - started:.1f} s")
        now = time.time()
        async with open_store(store_url) as store:
            for i in range(sessions):
                await store.create_session(
                    SessionInfo(
                        id=f"bulk-{i:05}",
                        command=["make", f"target-{i}"],
                        status=SessionStatus.COMPLETED,
                        created=now - sessions + i,
                        ended=now - sessions + i + 1,
                        exit_status=0,
                    )
                )
        config = lifted_limits(Path(folder) / "config.yaml")
        async with trio.open_nursery() as nursery:
            process, hub = await start_hub(nursery, "--store", store_url, "--config", str(config))
            for label, page, api in (
                (
                    f"session of {lines:,} lines",
                    "/streams/big",
                    "/api/streams/big/history?eventTypes=output&lastN=1000",
                ),
                (f"list of {sessions + 1:,} sessions", "/", "/api/streams?limit=100"),
            ):
                for run in range(runs):
                    rest = await request_ms(hub + api)
                    shown, loaded = await trio.to_thread.run_sync(first_screen, hub + page)
                    print(
                        f"{label}, run {run + 1}: first screen {shown:.0f} ms"
                        f" (scripts loaded {loaded:.0f} ms, REST request {rest:.0f} ms)"
                    )
            process.terminate()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    trio.run(main, arguments.lines, arguments.sessions, arguments.runs)
