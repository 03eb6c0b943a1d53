"""``tstream run --hub`` and ``tstream ls --hub`` against a real ``tstream serve``,
killed with SIGKILL and restarted mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from trio_stream.client import follow_stream
from trio_stream.events import EventType
from trio_stream.store import HistoryQuery, open_store

TSTREAM = [sys.executable, "-c", "from trio_stream.cli import main; main()"]
TOKEN = "right-token-1234"


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process of a test keeps its data, config and sockets under its directory."""
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR"):
        path = tmp_path / name.lower()
        path.mkdir(mode=0o700)
        monkeypatch.setenv(name, str(path))
    for name in ("TSTREAM_STORE", "TSTREAM_HUB", "TSTREAM_TOKEN", "TSTREAM_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)


async def kill(process: trio.Process) -> None:
    """Stop a hub at the end of a test at once (its clean shutdown is tested elsewhere)."""
    process.kill()


async def start_hub(nursery: trio.Nursery, *args: str) -> tuple[trio.Process, str]:
    """Start ``tstream serve`` and return it with its URL once it listens."""
    process: trio.Process = await nursery.start(
        lambda task_status: trio.run_process(
            [*TSTREAM, "serve", "--quiet", *args],
            stderr=subprocess.PIPE,
            check=False,
            deliver_cancel=kill,
            task_status=task_status,
        )
    )
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(15):
        while b"listening on " not in seen or not seen.endswith(b"\n"):
            chunk = await process.stderr.receive_some()
            assert chunk, seen
            seen += chunk
    line = next(x for x in seen.decode().splitlines() if "tstream hub listening on" in x)
    return process, line.rsplit(" ", 1)[1]


async def start_run(*args: str) -> trio.Process:
    return await trio.lowlevel.open_process(
        [*TSTREAM, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def read_until(stream: Any, marker: bytes, seen: bytes = b"") -> bytes:
    with trio.fail_after(15):
        while marker not in seen:
            chunk = await stream.receive_some()
            assert chunk, seen
            seen += chunk
    return seen


async def finish(process: trio.Process) -> tuple[int, bytes]:
    """Wait for a run; its exit status and what it wrote on stderr."""
    assert process.stderr is not None and process.stdout is not None
    err = b""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, process)
            while chunk := await process.stderr.receive_some():
                err += chunk
            await process.wait()
            nursery.cancel_scope.cancel()
    return process.returncode, err


async def drain(process: trio.Process) -> None:
    assert process.stdout is not None
    while await process.stdout.receive_some():
        pass


def hub_client(url: str, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if url.startswith("http+unix://"):
        transport = httpx.AsyncHTTPTransport(uds=url[len("http+unix://") :])
        return httpx.AsyncClient(base_url="http://hub", transport=transport, headers=headers)
    return httpx.AsyncClient(base_url=url, headers=headers)


async def hub_history(url: str, sid: str) -> list[dict[str, Any]]:
    async with hub_client(url) as http:
        answer = await http.get(f"/api/streams/{sid}/history", params={"limit": 10_000})
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


async def local_ids(store: Path, sid: str) -> list[str]:
    async with open_store(str(store)) as opened:
        return [e.id for e in await opened.read(sid, HistoryQuery())]


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["text"] for e in events if e["type"] == "output"]


async def follow_until(url: str, sid: str, text: str) -> None:
    """Follow ``sid`` on the hub until an output line ``text`` arrives."""
    with trio.fail_after(15):
        async with follow_stream(url, sid) as events:
            async for event in events:
                if event.type is EventType.OUTPUT and event.data.text == text:  # type: ignore[union-attr]
                    return
    raise AssertionError(f"the stream ended before {text!r}")


async def test_a_hub_killed_and_restarted_mid_stream_ends_with_the_whole_session(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    hub_db, run_db = tmp_path / "hub.db", tmp_path / "run.db"
    hub, url = await start_hub(nursery, "--listen", "127.0.0.1:0", "--store", str(hub_db))
    script = (
        'seq 1 1000; while [ ! -e "$1/more" ]; do sleep 0.01; done; '
        'seq 1001 2000; while [ ! -e "$1/last" ]; do sleep 0.01; done; seq 2001 3000'
    )
    async with hub_client(url) as http:
        assert (await http.post("/api/streams", json={"id": "k9"})).status_code == 201
    run = await start_run(
        "--hub-notices",
        "always",
        "--hub",
        url,
        "--id",
        "k9",
        "--store",
        str(run_db),
        "--",
        "sh",
        "-c",
        script,
        "sh",
        str(tmp_path),
    )
    await follow_until(url, "k9", "1000")
    hub.kill()
    await hub.wait()
    (tmp_path / "more").touch()
    assert run.stdout is not None
    await read_until(run.stdout, b"\n2000\n")
    port = url.rsplit(":", 1)[1]
    _, again = await start_hub(nursery, "--listen", f"127.0.0.1:{port}", "--store", str(hub_db))
    (tmp_path / "last").touch()
    status, err = await finish(run)
    assert status == 0, err
    events = await hub_history(again, "k9")
    assert [e["offset"] for e in events] == list(range(len(events)))
    assert texts(events) == [str(i) for i in range(1, 3001)]
    assert events[0]["type"] == "session_started"
    assert events[-1]["type"] == "session_ended"
    assert [e["id"] for e in events] == await local_ids(run_db, "k9")
    async with hub_client(again) as http:
        described = (await http.get("/api/streams/k9")).json()
    assert (described["status"], described["exitStatus"]) == ("completed", 0)
    notices = [line for line in err.decode().splitlines() if line.startswith("tstream: hub")]
    assert notices[0].startswith(f"tstream: hub {url}: link lost (")
    assert notices[1].startswith(f"tstream: hub {url}: link back; resuming after offset ")


async def test_a_hub_down_at_start_gets_the_session_when_it_comes_up(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    socket = tmp_path / "hub.sock"
    script = 'echo ready; while [ ! -e "$1/go" ]; do sleep 0.01; done; echo after; exit 7'
    run = await start_run(
        "--hub",
        f"http+unix://{socket}",
        "--id",
        "late",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        str(tmp_path),
    )
    assert run.stdout is not None
    await read_until(run.stdout, b"ready\n")
    _, url = await start_hub(nursery, "--listen", f"unix:{socket}", "--store", "memory:")
    async with hub_client(url) as http:
        # Created here so that it can be followed at once (409: the run was quicker).
        created = await http.post("/api/streams", json={"id": "late"})
        assert created.status_code in (201, 409), created.text
    # The run, still going, publishes what it had once the hub is up.
    await follow_until(f"unix:{socket}", "late", "ready")
    (tmp_path / "go").touch()
    status, err = await finish(run)
    assert status == 7, err
    events = await hub_history(url, "late")
    assert [e["offset"] for e in events] == list(range(len(events)))
    assert texts(events) == ["ready", "after"]
    assert events[-1]["data"]["exit_status"] == 7


async def test_a_hub_that_never_answers_costs_the_run_only_its_flush_timeout(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    run = await start_run(
        "--hub",
        f"unix:{tmp_path / 'none.sock'}",
        "--hub-flush-timeout",
        "0.5",
        "--",
        "sh",
        "-c",
        "echo hi; exit 4",
    )
    status, err = await finish(run)
    assert status == 4
    assert b"gave up after 0.5s: events 0 to 2 of session" in err
    assert time.monotonic() - started < 10


async def test_a_rejected_token_is_a_warning_and_the_run_goes_on(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    _, url = await start_hub(
        nursery, "--listen", "127.0.0.1:0", "--store", "memory:", "--token", TOKEN
    )
    run = await start_run(
        "--hub",
        url,
        "--token",
        "wrong-token-1234",
        "--id",
        "denied",
        "--",
        "sh",
        "-c",
        "echo hi; exit 3",
    )
    status, err = await finish(run)
    assert status == 3
    notice = (
        f"tstream: hub {url}: token rejected (unauthorized: unknown token); "
        "session denied is not published there"
    )
    assert [line for line in err.decode().splitlines() if "hub" in line] == [notice]


async def test_runs_at_once_each_publish_their_own_stream_listed_by_ls_hub(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    _, url = await start_hub(
        nursery, "--listen", "127.0.0.1:0", "--store", "memory:", "--token", TOKEN
    )
    runs = [
        await start_run("--hub", url, "--token", TOKEN, "--id", sid, "--", "sh", "-c", f"seq 1 {n}")
        for sid, n in (("first", 300), ("second", 500))
    ]
    for run in runs:
        status, err = await finish(run)
        assert status == 0, err
    listed = await trio.run_process(
        [*TSTREAM, "ls", "--hub", url, "--json"],
        capture_stdout=True,
        env={**os.environ, "TSTREAM_TOKEN": TOKEN},
    )
    sessions = {s["id"]: s for s in orjson.loads(listed.stdout)}
    assert set(sessions) == {"first", "second"}
    assert sessions["first"]["events"] == 302
    assert sessions["second"]["events"] == 502
    assert {s["status"] for s in sessions.values()} == {"completed"}
    assert sessions["second"]["command"] == ["sh", "-c", "seq 1 500"]
    table = await trio.run_process(
        [*TSTREAM, "ls", "--hub", url, "--token", TOKEN], capture_stdout=True
    )
    lines = table.stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "STATUS", "COMMAND", "STARTED", "DURATION", "EXIT", "EVENTS"]
    assert sorted(line.split()[0] for line in lines[1:]) == ["first", "second"]


async def test_a_command_that_cannot_start_is_published_with_its_status(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    _, url = await start_hub(nursery, "--listen", "127.0.0.1:0", "--store", "memory:")
    run = await start_run("--hub", url, "--id", "missing", "--", "no-such-command-here")
    status, err = await finish(run)
    assert status == 127, err
    assert b"command not found" in err
    events = await hub_history(url, "missing")
    assert [e["type"] for e in events] == ["session_started", "error", "session_ended"]
    assert events[-1]["data"]["exit_status"] == 127


async def test_ls_hub_names_a_rejected_token(tmp_path: Path, nursery: trio.Nursery) -> None:
    _, url = await start_hub(
        nursery, "--listen", "127.0.0.1:0", "--store", "memory:", "--token", TOKEN
    )
    listed = await trio.run_process(
        [*TSTREAM, "ls", "--hub", url], capture_stderr=True, check=False
    )
    assert listed.returncode == 125
    assert listed.stderr.decode() == (
        f"tstream: hub {url}: token rejected (unauthorized: a bearer token is required)\n"
    )


def test_ls_hub_names_an_unreachable_hub(tmp_path: Path) -> None:
    done = subprocess.run(
        [*TSTREAM, "ls", "--hub", f"unix:{tmp_path / 'none.sock'}"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 125
    assert b"unreachable" in done.stderr


@pytest.mark.parametrize(
    "args, problem",
    [
        (["run", "--hub", "localhost:3001", "--", "true"], b"Invalid value for --hub"),
        (["ls", "--hub", "ftp://hub"], b"Invalid value for --hub"),
    ],
)
def test_a_malformed_hub_address_is_a_usage_error(args: list[str], problem: bytes) -> None:
    done = subprocess.run([*TSTREAM, *args], capture_output=True, timeout=30, check=False)
    assert done.returncode == 2
    assert problem in done.stderr


async def test_a_stopped_hub_does_not_slow_the_run(tmp_path: Path, nursery: trio.Nursery) -> None:
    hub, url = await start_hub(nursery, "--listen", "127.0.0.1:0", "--store", "memory:")
    hub.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        run = await start_run(
            "--hub", url, "--hub-flush-timeout", "0.5", "--", "sh", "-c", "seq 1 5000; exit 5"
        )
        status, err = await finish(run)
        elapsed = time.monotonic() - started
    finally:
        hub.send_signal(signal.SIGCONT)
    assert status == 5
    assert b"gave up after 0.5s: events 0 to 5001" in err
    assert elapsed < 10
