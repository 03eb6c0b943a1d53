"""The dashboard in a real browser: Debian's Chromium driven by Selenium through Debian's
chromedriver (nothing is downloaded: the driver's path is given and Selenium is offline).

One browser (with a fresh profile) serves the module; each test starts its own hub and
leaves the browser on a blank page without cookies. Selenium's calls block, so they run in
a thread while the hub and the publishers run in trio.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from trio_stream.events import EventType, Output, placed_events
from trio_stream.hub.config import HubConfig, Listen, TokenSpec
from trio_stream.hub.server import ServedHub, serve_hub
from trio_stream.process import running_processes
from trio_stream.store.base import SessionInfo, SessionStatus
from trio_stream.store.memory import MemoryStore

from .conftest import StartHub, base_url, output

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TSTREAM = str(Path(sys.executable).parent / "tstream")
MISSING = not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER))

# CI installs chromium and chromium-driver, and there these tests must run, never skip.
pytestmark = pytest.mark.skipif(
    MISSING and not os.environ.get("CI"), reason="chromium and chromium-driver are not installed"
)

PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
TERMINAL_LINES = """
const buffer = window.tstreamTerminal.buffer.active, lines = [];
for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
while (lines.length && lines[lines.length - 1] === "") lines.pop();
return lines;
"""
READ = TokenSpec("dashboard-reader", frozenset({"read"}))
ADMIN = TokenSpec("dashboard-admin")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    assert not MISSING, "install chromium and chromium-driver (Debian packages)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="tstream-chromium-")
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,860",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        # Selenium Manager would look for (and download) browsers and drivers: never.
        patch.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in running_processes():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.fixture(autouse=True)
def no_process_left_behind(browser: WebDriver) -> Iterator[None]:
    """The suite's sweep of what a test left running, sparing the module's browser; and
    the browser back to a blank page, without cookies or emulation."""
    yield
    browser.get("about:blank")
    browser.delete_all_cookies()
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    driver = browser.service.process.pid  # type: ignore[attr-defined]
    spared = {driver, *_descendants(driver)}
    for pid in _descendants(os.getpid()) - spared:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: ``$TSTREAM_ARTIFACTS``, or pytest's temporary folder."""
    folder = os.environ.get("TSTREAM_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.getbasetemp() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def call(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(partial(fn, *args))


async def js(browser: WebDriver, script: str, *args: Any) -> Any:
    return await call(browser.execute_script, script, *args)


async def until(browser: WebDriver, script: str, *args: Any, timeout: float = 15) -> Any:
    """Poll the page until ``script`` returns something true; return it."""
    with trio.fail_after(timeout):
        while True:
            value = await js(browser, script, *args)
            if value:
                return value
            await trio.sleep(0.05)


# Every element showing text directly, with its colour against the first opaque background
# behind it (WCAG's relative luminance): those under 4.5:1, the AA level for text.
LOW_CONTRAST = """
const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
const lum = ([r, g, b]) => [r, g, b].map((v) => {
  v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
}).reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
const background = (node) => {
  for (; node; node = node.parentElement) {
    const c = rgb(getComputedStyle(node).backgroundColor);
    if (c.length < 4 || c[3] > 0) return c;
  }
  return [255, 255, 255];
};
const low = [];
for (const node of document.querySelectorAll("header *, main *")) {
  if (!node.offsetParent || node.closest(".xterm")) continue;
  if (![...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim())) continue;
  const a = lum(rgb(getComputedStyle(node).color)), b = lum(background(node));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) low.push(`${node.tagName}.${node.className}: ${ratio.toFixed(2)}`);
}
return low;
"""


async def open_page(browser: WebDriver, address: str) -> None:
    await call(browser.get, address)


async def terminal_lines(browser: WebDriver) -> list[str]:
    lines: list[str] = await js(browser, TERMINAL_LINES)
    return lines


async def until_terminal_has(browser: WebDriver, text: str, timeout: float = 15) -> list[str]:
    """Poll the terminal until a line contains ``text``; return its lines."""
    lines: list[str] = []
    with trio.move_on_after(timeout):
        while True:
            lines = await js(
                browser, f"return window.tstreamTerminal ? (() => {{{TERMINAL_LINES}}})() : []"
            )
            if any(text in line for line in lines):
                return lines
            await trio.sleep(0.05)
    state = await js(browser, "return document.getElementById('connection').textContent")
    logs = await call(browser.get_log, "browser")
    raise AssertionError(f"no {text!r} in the terminal ({state}): {lines[-20:]}; console: {logs}")


async def publish(http: httpx.AsyncClient, sid: str, events: list[dict[str, Any]]) -> None:
    answer = await http.post(f"/api/streams/{sid}/events", json=events)
    assert answer.status_code == 200, answer.text


def png(width: int, height: int) -> bytes:
    """A small gradient PNG (a stand-in for a screenshot's thumbnail)."""
    rows = b"".join(
        b"\0" + b"".join(bytes((40 + 2 * x, 90 + 2 * y, 200)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def test_a_run_published_to_the_hub_is_listed_and_followed_live(
    browser: WebDriver, start_hub: StartHub
) -> None:
    served = await start_hub()
    hub = base_url(served)
    script = 'echo first; while read line; do echo "got $line"; done; echo "bye" >&2'
    run = await trio.lowlevel.open_process(
        [
            TSTREAM,
            "run",
            "-q",
            "--no-serve",
            "--store",
            "memory:",
            "--id",
            "live",
            "--hub",
            hub,
            "--",
            "sh",
            "-c",
            script,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert run.stdin is not None
    try:
        await open_page(browser, hub + "/")
        badge = "#list-rows tr[data-id='live'] .badge"
        await until(
            browser, f"return document.querySelector(\"{badge}\")?.textContent === 'running'"
        )
        await call(lambda: browser.find_element(By.LINK_TEXT, "live").click())
        await until_terminal_has(browser, "first")
        await until(browser, "return document.getElementById('connection').textContent === 'live'")
        await run.stdin.send_all(b"hello\n")
        await until_terminal_has(browser, "got hello")

        # Back on the list, the session's end shows up without reloading the page.
        await call(browser.back)
        await until(
            browser, f"return document.querySelector(\"{badge}\")?.textContent === 'running'"
        )
        await js(browser, "window.__same_page = true")
        await run.stdin.aclose()
        with trio.fail_after(10):
            assert await run.wait() == 0
        await until(
            browser, f"return document.querySelector(\"{badge}\")?.textContent === 'completed'"
        )
        assert await js(browser, "return window.__same_page === true")
        row = await js(
            browser, "return document.querySelector(\"#list-rows tr[data-id='live']\").innerText"
        )
        assert "sh -c" in row

        await call(browser.forward)
        lines = await until_terminal_has(browser, "bye")
        assert lines[:2] == ["first", "got hello"]
        await until(browser, "return document.getElementById('connection').textContent === 'ended'")
        # "exit status 0", and the duration when the end event came before the listing.
        shown = await js(browser, "return document.getElementById('stream-exit').textContent")
        assert shown == "exit status 0" or shown.startswith("exit status 0, ")
    finally:
        if run.returncode is None:
            run.kill()
            await run.wait()


async def test_typed_events_are_shown_beside_the_output_and_their_text_stays_text(
    browser: WebDriver, http: httpx.AsyncClient, served: ServedHub, artifacts: Path
) -> None:
    hub = base_url(served)
    assert (await http.post("/api/streams", json={"id": "agent"})).status_code == 201
    thumbnail = base64.b64encode(png(96, 54)).decode()
    await publish(
        http,
        "agent",
        [
            {"type": "session_started", "data": {"command": ["agent", "--task", "fix-tests"]}},
            {"type": "status", "data": {"status": "testing"}},
            {
                "type": "reasoning",
                "data": {"thought": "Two tests fail in test_lines.py; run them."},
            },
            {"type": "command_started", "data": {"name": "pytest", "call_id": "c1"}},
            output("\x1b[1m============ test session starts ============\x1b[0m"),
            output("collected 42 items"),
            output("tests/test_lines.py \x1b[32m........\x1b[31mF\x1b[32m.\x1b[0m"),
            {"type": "output", "data": {"source": "stderr", "text": "warning: slow test (2.1 s)"}},
            {
                "type": "output",
                "data": {"source": "stdout", "text": "downloading 50%", "eol": "\r"},
            },
            {"type": "output", "data": {"source": "stdout", "text": "downloading 100%"}},
            {"type": "variable_update", "data": {"name": "attempt", "value": 1}},
            {"type": "variable_update", "data": {"name": "failing", "value": ["test_split"]}},
            {"type": "error", "data": {"message": "test_split: expected 3 lines", "code": "E1"}},
            {"type": "screenshot", "data": {"thumbnail": thumbnail, "caption": "coverage report"}},
            {"type": "screenshot", "data": {"path": "/etc/passwd", "caption": "a local file"}},
        ],
    )
    await open_page(browser, f"{hub}/streams/agent")
    lines = await until_terminal_has(browser, "downloading 100%")
    assert lines[-3:] == [
        "tests/test_lines.py ........F.",
        "warning: slow test (2.1 s)",
        "downloading 100%",
    ]
    await until(browser, "return document.querySelector('#commands tr[data-state=running]')")
    await publish(
        http,
        "agent",
        [
            {
                "type": "command_completed",
                "data": {
                    "name": "pytest",
                    "call_id": "c1",
                    "duration": 1.25,
                    "result": "41 passed, 1 failed",
                },
            },
            {"type": "command_started", "data": {"name": "edit", "call_id": "c2"}},
            {
                "type": "command_failed",
                "data": {"name": "edit", "call_id": "c2", "error": "conflict"},
            },
            {"type": "variable_update", "data": {"name": "attempt", "value": 2, "previous": 1}},
            output("\x1b[32m======= 42 passed in 1.25s =======\x1b[0m"),
        ],
    )
    await until_terminal_has(browser, "42 passed")
    commands = await until(
        browser,
        """const rows = [...document.querySelectorAll('#commands tr')];
        return rows.every((r) => r.dataset.state !== 'running')
          && rows.map((r) => [...r.children].map((c) => c.textContent));""",
    )
    assert commands[0] == ["✓", "pytest", "1.3 s", "41 passed, 1 failed"]
    assert commands[1][0] == "✗" and commands[1][3] == "conflict"
    variables = await js(
        browser,
        "return [...document.querySelectorAll('#variables tr')]"
        ".map((r) => [...r.children].map((c) => c.textContent))",
    )
    assert variables == [["attempt", "2", "1"], ["failing", '["test_split"]', ""]]
    assert (
        await js(browser, "return document.getElementById('stream-state').textContent") == "testing"
    )
    error = "return document.querySelector('#timeline li.error .text').textContent"
    assert await js(browser, error) == "E1: test_split: expected 3 lines"
    # Screenshots: the inline thumbnail shown (full size in a dialog), the path never used.
    sources = await js(
        browser, "return [...document.querySelectorAll('#timeline img')].map((i) => i.src)"
    )
    assert sources == [f"data:image/png;base64,{thumbnail}"]
    timeline = await js(browser, "return document.getElementById('timeline').textContent")
    assert "not served: /etc/passwd" in timeline
    assert await js(browser, LOW_CONTRAST) == []
    await js(browser, "window.scrollTo(0, 0)")
    await call(browser.save_screenshot, str(artifacts / "dashboard-stream.png"))
    print(f"\nscreenshot of the stream page: {artifacts / 'dashboard-stream.png'}")
    await call(lambda: browser.find_element(By.CSS_SELECTOR, "#timeline button.shot").click())
    assert await until(browser, "return document.getElementById('viewer').open")
    await call(lambda: browser.find_element(By.CSS_SELECTOR, "#viewer button").click())

    # Markup and script in any field of any event stay text, and nothing of them runs.
    await publish(
        http,
        "agent",
        [
            output(PAYLOAD),
            {"type": "reasoning", "data": {"thought": PAYLOAD}},
            {"type": "command_started", "data": {"name": PAYLOAD, "call_id": "c3"}},
            {"type": "variable_update", "data": {"name": PAYLOAD, "value": PAYLOAD}},
            {"type": "status", "data": {"status": "x", "message": PAYLOAD}},
            {"type": "error", "data": {"message": PAYLOAD, "code": PAYLOAD}},
            {
                "type": "screenshot",
                "data": {"url": "javascript:window.__pwned=3", "caption": PAYLOAD},
            },
            {"type": "custom", "data": {"name": PAYLOAD, "payload": {"html": PAYLOAD}}},
        ],
    )
    await until(browser, "return document.querySelectorAll('#timeline li.custom').length")
    assert any(PAYLOAD in line for line in await terminal_lines(browser))
    texts = await js(
        browser,
        "return ['timeline', 'commands', 'variables', 'stream-state']"
        ".map((id) => document.getElementById(id).textContent)",
    )
    assert all(PAYLOAD in text for text in texts)
    assert await js(browser, "return window.__pwned === undefined")
    assert (
        await js(browser, "return document.querySelectorAll('img[src=\"x\"], main script').length")
        == 0
    )
    assert len(await js(browser, "return document.querySelectorAll('#timeline img')")) == 1


async def test_filters_search_and_links_to_a_line(
    browser: WebDriver, http: httpx.AsyncClient, served: ServedHub
) -> None:
    hub = base_url(served)
    assert (await http.post("/api/streams", json={"id": "mixed"})).status_code == 201
    events: list[dict[str, Any]] = [output("wide 宽字符 end")]
    for i in range(200):
        events.append(output(f"out {i}" + (" needle" if i % 50 == 7 else "")))
        events.append({"type": "output", "data": {"source": "stderr", "text": f"err {i}"}})
    events.append({"type": "reasoning", "data": {"thought": "thinking hard"}})
    events.append({"type": "status", "data": {"status": "halfway"}})
    await publish(http, "mixed", events)
    await open_page(browser, f"{hub}/streams/mixed")
    lines = await until_terminal_has(browser, "err 199")
    assert lines[:3] == ["wide 宽字符 end", "out 0", "err 0"]
    # Each wide character takes two cells, as in a terminal.
    widths = await js(
        browser,
        "const line = window.tstreamTerminal.buffer.active.getLine(0);"
        "return [5, 7, 9, 11].map((x) => line.getCell(x).getWidth())",
    )
    assert widths == [2, 2, 2, 1]

    await call(lambda: browser.find_element(By.ID, "filters-summary").click())
    await call(lambda: browser.find_element(By.CSS_SELECTOR, "input[value=stderr]").click())
    lines = await until(
        browser,
        f"const lines = (() => {{{TERMINAL_LINES}}})();"
        "return lines.includes('out 199') && !lines.some((l) => l.startsWith('err')) && lines",
    )
    assert len(lines) == 201
    await call(lambda: browser.find_element(By.CSS_SELECTOR, "input[value=reasoning]").click())
    await until(
        browser,
        "return !document.querySelector('#timeline li.reasoning')"
        " && document.querySelector('#timeline li.status')",
    )

    # Server-side search over the history; a result opens the output at its line.
    search = await call(browser.find_element, By.ID, "search-text")
    await call(search.send_keys, "NEEDLE", Keys.ENTER)
    results = await until(
        browser,
        "const items = [...document.querySelectorAll('#search-results li')];"
        "return items.length && items.map((i) => i.textContent)",
    )
    assert results == [f"#{2 * i + 1}out {i} needle" for i in (7, 57, 107, 157)]
    await call(lambda: browser.find_elements(By.CSS_SELECTOR, "#search-results button")[2].click())
    await until(browser, "return location.hash === '#offset=215'")
    await until(browser, "return window.tstreamTerminal.getSelection().includes('out 107 needle')")

    # The same link, opened afresh, shows that line.
    await open_page(browser, f"{hub}/streams/mixed#offset=215")
    await until(browser, "return window.tstreamTerminal?.getSelection().includes('out 107 needle')")


async def test_typed_events_far_back_are_read_when_asked_for(
    browser: WebDriver, http: httpx.AsyncClient, served: ServedHub, store: MemoryStore
) -> None:
    hub = base_url(served)
    store.max_history = 100_000
    assert (await http.post("/api/streams", json={"id": "long"})).status_code == 201
    await publish(http, "long", [{"type": "reasoning", "data": {"thought": "plan made early"}}])
    for start in (0, 6000):
        await publish(http, "long", [output(f"line {i}") for i in range(start, start + 6000)])
    await publish(http, "long", [{"type": "status", "data": {"status": "late"}}])
    await open_page(browser, f"{hub}/streams/long")
    await until_terminal_has(browser, "line 11999")
    # The first read looks through the newest 10,000 offsets only.
    await until(browser, "return document.querySelector('#timeline li.status')")
    assert not await js(browser, "return document.querySelector('#timeline li.reasoning')")
    await call(lambda: browser.find_element(By.ID, "events-earlier").click())
    thought = await until(
        browser, "return document.querySelector('#timeline li.reasoning')?.textContent"
    )
    assert "plan made early" in thought
    assert await js(browser, "return document.getElementById('events-earlier').hidden")
    items = await js(
        browser, "return [...document.querySelectorAll('#timeline li')].map((i) => i.className)"
    )
    assert items == ["reasoning", "status"]


async def test_the_page_resumes_by_itself_after_the_hub_restarts(
    browser: WebDriver, store: MemoryStore
) -> None:
    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as first:
            served: ServedHub = await first.start(
                serve_hub, HubConfig(listen=(Listen(port=0),), sse_retry=100), store
            )
            port = served.addresses[0].port
            hub = base_url(served)
            async with httpx.AsyncClient(base_url=hub, timeout=10) as http:
                assert (await http.post("/api/streams", json={"id": "r"})).status_code == 201
                await publish(http, "r", [output(f"before {i}") for i in range(5)])
            await open_page(browser, f"{hub}/streams/r")
            await until_terminal_has(browser, "before 4")
            await until(
                browser, "return document.getElementById('connection').textContent === 'live'"
            )
            served.shutdown()
        await until(
            browser, "return document.getElementById('connection').textContent === 'reconnecting'"
        )
        config = HubConfig(listen=(Listen(port=port),), sse_retry=100)
        again: ServedHub = await nursery.start(serve_hub, config, store)
        async with httpx.AsyncClient(base_url=hub, timeout=10) as http:
            await publish(http, "r", [output(f"after {i}") for i in range(5)])
        lines = await until_terminal_has(browser, "after 4")
        assert lines == [f"before {i}" for i in range(5)] + [f"after {i}" for i in range(5)]
        await until(browser, "return document.getElementById('connection').textContent === 'live'")
        again.shutdown()


async def test_with_tokens_the_page_asks_for_one_and_keeps_it_in_a_cookie(
    browser: WebDriver, start_hub: StartHub
) -> None:
    served = await start_hub(tokens=(READ, ADMIN))
    hub = base_url(served)
    async with httpx.AsyncClient(
        base_url=hub, timeout=10, headers={"Authorization": f"Bearer {ADMIN.token}"}
    ) as http:
        assert (await http.post("/api/streams", json={"id": "secret"})).status_code == 201
        await publish(http, "secret", [output("classified")])
    await call(browser.delete_all_cookies)
    try:
        await open_page(browser, hub + "/")
        await until(browser, "return !document.getElementById('login').hidden")
        assert await js(browser, "return document.getElementById('list-rows').children.length") == 0
        assert await js(browser, "return document.getElementById('list-view').hidden")
        field = await call(browser.find_element, By.ID, "login-token")
        await call(field.send_keys, "wrong", Keys.ENTER)
        await until(browser, "return document.getElementById('login-error').textContent")

        await open_page(browser, f"{hub}/streams/secret?access_token={READ.token}")
        await until_terminal_has(browser, "classified")
        assert await js(browser, "return location.search") == ""
        # The cookie is HttpOnly: the page's scripts cannot read it.
        assert await js(browser, "return document.cookie") == ""
        await open_page(browser, hub + "/")
        await until(browser, "return document.querySelector(\"#list-rows tr[data-id='secret']\")")

        await call(browser.delete_all_cookies)
        await open_page(browser, hub + "/")
        await until(browser, "return !document.getElementById('login').hidden")
        field = await call(browser.find_element, By.ID, "login-token")
        await call(field.send_keys, READ.token, Keys.ENTER)
        await until(browser, "return document.querySelector(\"#list-rows tr[data-id='secret']\")")
    finally:
        await call(browser.delete_all_cookies)


async def test_keys_the_dark_scheme_and_200_percent_zoom(
    browser: WebDriver, http: httpx.AsyncClient, served: ServedHub
) -> None:
    hub = base_url(served)
    assert (await http.post("/api/streams", json={"id": "keys"})).status_code == 201
    await publish(http, "keys", [output(f"line {i}") for i in range(50)])
    await call(
        browser.execute_cdp_cmd,
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    # 200 % zoom: the same window holds half as many CSS pixels.
    await call(
        browser.execute_cdp_cmd,
        "Emulation.setDeviceMetricsOverride",
        {"width": 640, "height": 430, "deviceScaleFactor": 2, "mobile": False},
    )
    await open_page(browser, f"{hub}/streams/keys")
    await until_terminal_has(browser, "line 49")
    background = await js(browser, "return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 18, 18)"
    assert await js(browser, LOW_CONTRAST) == []
    assert await js(browser, "return window.tstreamTerminal.options.theme.background") == "#0b0b0b"
    # Nothing wider than the window: one column, no sideways scrolling.
    assert await js(browser, "return document.documentElement.scrollWidth <= innerWidth")
    # The first Tab reaches the skip link; "/" goes to the search, "f" pauses following.
    body = await call(browser.find_element, By.TAG_NAME, "body")
    await call(body.send_keys, Keys.TAB)
    assert await js(browser, "return document.activeElement.className") == "skip"
    await call(lambda: ActionChains(browser).send_keys("/").perform())
    assert await js(browser, "return document.activeElement.id") == "search-text"
    await call(lambda: ActionChains(browser).send_keys(Keys.ESCAPE).perform())
    await js(browser, "document.activeElement.blur()")
    await call(lambda: ActionChains(browser).send_keys("f").perform())
    assert await until(browser, "return document.getElementById('follow').textContent === 'Paused'")
    await publish(http, "keys", [output("held back")])
    await until(browser, "return document.getElementById('window').textContent.includes('1 new')")
    assert not any("held back" in line for line in await terminal_lines(browser))
    await call(lambda: ActionChains(browser).send_keys(Keys.END).perform())
    await until_terminal_has(browser, "held back")
    assert await js(browser, "return document.getElementById('follow').textContent") == "Following"
    # Scrolling up pauses the following too, and scrolling back down resumes it.
    terminal = await call(browser.find_element, By.CSS_SELECTOR, "#terminal .xterm-screen")
    await call(
        lambda: (
            ActionChains(browser)
            .scroll_from_origin(ScrollOrigin.from_element(terminal), 0, -600)
            .perform()
        )
    )
    await until(browser, "return document.getElementById('follow').textContent === 'Paused'")
    await publish(http, "keys", [output("while reading")])
    await until(browser, "return document.getElementById('window').textContent.includes('1 new')")
    await call(
        lambda: (
            ActionChains(browser)
            .scroll_from_origin(ScrollOrigin.from_element(terminal), 0, 6000)
            .perform()
        )
    )
    await until_terminal_has(browser, "while reading")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_dashboard_works_under_a_path_prefix_behind_nginx(
    browser: WebDriver, http: httpx.AsyncClient, served: ServedHub, tmp_path: Path
) -> None:
    assert os.path.exists(NGINX), "install nginx (Debian package)"
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"    {kind}_temp_path {tmp_path}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"{user}pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\ndaemon off;\n"
        "events { worker_connections 64; }\n"
        f"http {{\n    access_log off;\n{temp}"
        f"    server {{\n        listen 127.0.0.1:{port};\n"
        "        location /tstream/ {\n"
        f"            proxy_pass http://{served.addresses[0]}/;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_buffering off;\n"
        "        }\n    }\n}\n"
    )
    nginx = await trio.lowlevel.open_process(
        [
            NGINX,
            "-p",
            str(tmp_path),
            "-e",
            f"{tmp_path}/error.log",
            "-c",
            str(tmp_path / "nginx.conf"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert (await http.post("/api/streams", json={"id": "p"})).status_code == 201
        await publish(http, "p", [output("through the proxy")])
        prefix = f"http://127.0.0.1:{port}/tstream/"
        with trio.fail_after(10):
            while True:
                try:
                    async with httpx.AsyncClient() as probe:
                        if (await probe.get(prefix)).status_code == 200:
                            break
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)
        await open_page(browser, prefix)
        link = await until(
            browser, "return document.querySelector(\"#list-rows a[data-id='p']\")?.href"
        )
        assert link == f"{prefix}streams/p"
        await open_page(browser, link)
        await until_terminal_has(browser, "through the proxy")
        await publish(http, "p", [output("live through the proxy")])
        await until_terminal_has(browser, "live through the proxy")
    finally:
        nginx.terminate()
        with trio.move_on_after(5):
            await nginx.wait()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def test_performance_figures(
    browser: WebDriver, start_hub: StartHub, store: MemoryStore
) -> None:
    served = await start_hub()
    hub = base_url(served)
    # Key presses while 1,000 events/s arrive.
    async with httpx.AsyncClient(base_url=hub, timeout=10) as http:
        assert (await http.post("/api/streams", json={"id": "busy"})).status_code == 201
        await publish(http, "busy", [output(f"warm {i}") for i in range(100)])
        await open_page(browser, f"{hub}/streams/busy")
        await until_terminal_has(browser, "warm 99")
        stop = trio.Event()

        async def flood() -> None:
            n = 0
            while not stop.is_set():
                await publish(http, "busy", [output(f"fast line {n + i}") for i in range(100)])
                n += 100
                await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            terminal = await call(browser.find_element, By.ID, "terminal")
            await call(lambda: ActionChains(browser).move_to_element(terminal).perform())
            await js(browser, "window.tstreamMetrics.keyLatencies = []")
            for _ in range(40):
                await call(lambda: ActionChains(browser).send_keys("f").perform())
                await trio.sleep(0.02)
            stop.set()
        latencies = await until(
            browser, "const l = window.tstreamMetrics.keyLatencies; return l.length >= 40 && l"
        )
        await call(lambda: ActionChains(browser).send_keys(Keys.END).perform())
    print(
        "\nkey press to effect while 1,000 events/s arrive:"
        f" p50 {percentile(latencies, 0.5):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms"
        f" ({len(latencies)} presses)"
    )

    # The list of 10,000 sessions.
    now = time.time()
    for i in range(10_000):
        await store.create_session(
            SessionInfo(
                id=f"bulk-{i:05}",
                command=["make", f"target-{i}"],
                status=SessionStatus.COMPLETED,
                created=now - 10_000 + i,
                ended=now - 10_000 + i + 1,
                exit_status=0,
            )
        )
    await open_page(browser, hub + "/")
    first = await until(browser, "return window.tstreamMetrics.firstScreen")
    assert await js(browser, "return document.getElementById('list-rows').children.length") == 100
    print(f"list of 10,000 sessions, first screen: {first:.0f} ms")

    # A session of 100,000 lines (scripts/bench_dashboard.py measures 1,000,000).
    lines = 100_000
    store.max_history = lines
    await store.create_session(SessionInfo(id="big", command=["seq", "1", str(lines)]))
    payloads = [Output("stdout", str(i + 1), line=i) for i in range(lines)]
    for start in range(0, lines, 10_000):
        chunk = placed_events(EventType.OUTPUT, payloads[start : start + 10_000], "big", start, now)
        await store.append("big", chunk)
    await open_page(browser, f"{hub}/streams/big")
    first = await until(browser, "return window.tstreamMetrics.firstScreen")
    shown = await until_terminal_has(browser, str(lines))
    print(f"session of {lines:,} lines, first screen: {first:.0f} ms")
    # The page holds a window of the history, not all of it, and reads back on demand.
    assert shown[0] == str(lines - 999) and len(shown) == 1000
    await call(lambda: browser.find_element(By.ID, "earlier").click())
    shown = await until(
        browser,
        f"const lines = (() => {{{TERMINAL_LINES}}})(); return lines.length >= 2000 && lines",
    )
    assert shown[0] == str(lines - 1999) and shown[-1] == str(lines)
