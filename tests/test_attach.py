"""``tstream attach`` as a real process: running, finished, killed and hub sessions."""

from __future__ import annotations

import os
import signal
import subprocess
from functools import partial
from pathlib import Path

import httpx
import orjson
import pytest
import trio
from live_helpers import ECHO, TSTREAM, finish, private_dirs, start_run

from trio_stream.client import get_json as http_get
from trio_stream.events import event_from_json
from trio_stream.registry import running_sessions

__all__ = ["private_dirs"]


async def attach(*args: str) -> trio.Process:
    return await trio.lowlevel.open_process(
        [*TSTREAM, "attach", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes, seen: bytes = b"") -> bytes:
    with trio.fail_after(20):
        while marker not in seen:
            chunk = await stream.receive_some()
            assert chunk, seen
            seen += chunk
    return seen


async def outcome(process: trio.Process) -> tuple[int, bytes, bytes]:
    results: dict[str, bytes] = {}

    async def collect(name: str, stream: trio.abc.ReceiveStream) -> None:
        results[name] = await read_all(stream)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, "out", process.stdout)
            nursery.start_soon(collect, "err", process.stderr)
        await process.wait()
    return process.returncode, results["out"], results["err"]


async def test_attach_follows_a_running_session_and_exits_with_its_status() -> None:
    async with trio.open_nursery() as nursery:
        run = await start_run(nursery, "--id", "job-1", env={"STATUS": "3"})
        await run.stdin.send_all(b"before\n")
        follower = await attach("job")
        await read_until(follower.stdout, b"before\n")
        await run.stdin.send_all(b"after\n")
        status, _ = await finish(run)
        code, out, err = await outcome(follower)
    assert status == 3
    assert code == 3
    assert out == b"after\n"
    assert err == b""


async def test_attach_prints_history_then_live_lines_once_each() -> None:
    async with trio.open_nursery() as nursery:
        run = await start_run(nursery)
        await run.stdin.send_all(b"".join(b"%d\n" % i for i in range(500)))
        follower = await attach("latest", "--json")
        seen = await read_until(follower.stdout, b'"text":"499"')
        await run.stdin.send_all(b"".join(b"%d\n" % i for i in range(500, 1000)))
        await finish(run)
        code, out, _ = await outcome(follower)
    events = [event_from_json(line) for line in (seen + out).splitlines()]
    assert [e.offset for e in events] == list(range(len(events)))
    texts = [e.data.text for e in events if e.type.value == "output"]
    assert texts == ["ready", *map(str, range(1000))]
    assert code == 0


async def test_ctrl_c_detaches_and_leaves_the_session_running(private_dirs: Path) -> None:
    async with trio.open_nursery() as nursery:
        run = await start_run(nursery, "--id", "stays-1")
        follower = await attach("stays-1")
        await read_until(follower.stdout, b"ready\n")
        follower.send_signal(signal.SIGINT)
        code, _, _ = await outcome(follower)
        assert code == 130
        assert [s.id for s in running_sessions(private_dirs)] == ["stays-1"]
        await run.stdin.send_all(b"still here\n")
        await read_until(run.stdout, b"still here\n")
        status, _ = await finish(run)
    assert status == 0


async def test_attach_to_a_finished_session_prints_its_history() -> None:
    done = await trio.run_process(
        [*TSTREAM, "run", "--id", "done-1", "--", "sh", "-c", "echo out; echo err >&2; exit 5"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 5
    shown = await trio.run_process(
        [*TSTREAM, "attach", "done-1"], capture_stdout=True, capture_stderr=True, check=False
    )
    assert (shown.returncode, shown.stdout, shown.stderr) == (5, b"out\n", b"err\n")


# Several chunks of lines, stdout and stderr in turns, a line that is not UTF-8, CRLF,
# and a last line with no end.
BYTES_SCRIPT = (
    'i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done; '
    "echo oops >&2; printf 'caf\\351\\n'; printf 'dos\\r\\n'; echo warn >&2; printf 'end'"
)


async def test_attach_prints_a_finished_session_byte_for_byte() -> None:
    bare = await trio.run_process(
        ["sh", "-c", BYTES_SCRIPT], capture_stdout=True, capture_stderr=True
    )
    await trio.run_process(
        [*TSTREAM, "run", "--id", "bytes-1", "--quiet", "--", "sh", "-c", BYTES_SCRIPT]
    )
    shown = await trio.run_process(
        [*TSTREAM, "attach", "bytes-1"], capture_stdout=True, capture_stderr=True
    )
    assert shown.stdout == bare.stdout
    assert shown.stderr == bare.stderr == b"oops\nwarn\n"


async def test_attach_prints_live_lines_byte_for_byte() -> None:
    async with trio.open_nursery() as nursery:
        run = await start_run(nursery, "--id", "live-bytes-1")
        follower = await attach("live-bytes-1")
        await read_until(follower.stdout, b"ready\n")
        # The run's script echoes its stdin to stdout.
        await run.stdin.send_all(b"caf\xe9\nplain\r\n")
        await finish(run)
        code, out, _ = await outcome(follower)
    assert (code, out) == (0, b"caf\xe9\nplain\r\n")


async def test_attach_to_a_killed_run_says_it_was_interrupted() -> None:
    async with trio.open_nursery() as nursery:
        run = await start_run(nursery, "--id", "dead-1")
        follower = await attach("dead-1")
        await read_until(follower.stdout, b"ready\n")
        run.kill()
        await run.wait()
        code, _, err = await outcome(follower)
    assert code == 125
    assert b"session dead-1 was interrupted" in err


async def test_filters_last_and_no_follow_on_a_finished_session() -> None:
    script = "for i in 1 2 3 4 5; do echo out $i; echo err $i >&2; done"
    await trio.run_process(
        [*TSTREAM, "run", "--id", "filtered-1", "--quiet", "--", "sh", "-c", script]
    )

    async def shown(*args: str) -> bytes:
        done = await trio.run_process(
            [*TSTREAM, "attach", "filtered-1", *args], capture_stdout=True, capture_stderr=True
        )
        return done.stdout + done.stderr

    assert await shown("--type", "output", "--source", "stderr", "--last", "2") == (
        b"err 4\nerr 5\n"
    )
    assert await shown("--grep", "OUT 3") == b"out 3\n"
    events = [orjson.loads(x) for x in (await shown("--json", "--type", "session_ended")).split()]
    assert [e["type"] for e in events] == ["session_ended"]
    no_follow = ("--no-follow", "--type", "output", "--source", "stderr", "--last", "1")
    assert await shown(*no_follow) == b"err 5\n"


async def test_no_follow_on_a_running_session_prints_what_it_holds() -> None:
    async with trio.open_nursery() as nursery:
        run = await start_run(nursery, "--id", "held-1")
        done = await trio.run_process(
            [*TSTREAM, "attach", "held-1", "--no-follow", "--type", "output"],
            capture_stdout=True,
        )
        assert done.stdout == b"ready\n"
        await finish(run)


async def test_an_unknown_session_is_one_line_and_status_1() -> None:
    done = await trio.run_process(
        [*TSTREAM, "attach", "no-such-session"], capture_stderr=True, check=False
    )
    assert (done.returncode, done.stderr) == (1, b"tstream: unknown session: no-such-session\n")


# -- through a hub ------------------------------------------------------------------------


async def serve(nursery: trio.Nursery, db: Path, port: int = 0) -> tuple[trio.Process, str]:
    process = await trio.lowlevel.open_process(
        [*TSTREAM, "serve", "--listen", f"127.0.0.1:{port}", "--store", str(db)],
        stderr=subprocess.PIPE,
    )
    seen = await read_until(process.stderr, b"tstream hub listening on http")
    line = next(x for x in seen.decode().splitlines() if "tstream hub listening on" in x)
    nursery.start_soon(read_all, process.stderr)
    return process, line.rsplit(" ", 1)[1]


async def publish(url: str, sid: str, first: int, count: int, *, end: bool = False) -> None:
    events = [
        {"type": "output", "data": {"source": "stdout", "text": f"line {i}"}, "offset": i}
        for i in range(first, first + count)
    ]
    if end:
        events.append({"type": "session_ended", "data": {"exit_status": 6}})
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.post(f"/api/streams/{sid}/events", json=events)
    assert answer.status_code == 200, answer.text


class Proxy:
    """A TCP proxy to a port; :meth:`cut` drops every connection it carries."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.scopes: list[trio.CancelScope] = []
        self.port = 0

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(trio.serve_tcp, self._handle, 0)
        self.port = listeners[0].socket.getsockname()[1]

    def cut(self) -> None:
        for scope in self.scopes:
            scope.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", self.target) as server:
            with trio.CancelScope() as scope:
                self.scopes.append(scope)
                async with trio.open_nursery() as pair:
                    pair.start_soon(_pipe, client, server, pair.cancel_scope)
                    pair.start_soon(_pipe, server, client, pair.cancel_scope)


async def _pipe(a: trio.SocketStream, b: trio.SocketStream, both: trio.CancelScope) -> None:
    """Copy ``a`` to ``b``; a connection closed on one side is closed on both."""
    while data := await a.receive_some():
        await b.send_all(data)
    both.cancel()


async def create_stream(url: str, sid: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.post("/api/streams", json={"id": sid})).status_code == 201


async def serve_with(handler: object, nursery: trio.Nursery) -> str:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def test_a_hub_that_closes_without_answering_is_a_connection_error() -> None:
    async def close_at_once(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some()

    async with trio.open_nursery() as nursery:
        hub = await serve_with(close_at_once, nursery)
        with pytest.raises(ConnectionError, match="broke before the answer to /api/streams"):
            await http_get(hub, "/api/streams")
        nursery.cancel_scope.cancel()


async def test_a_hub_that_never_answers_is_a_timeout(autojump_clock: object) -> None:
    async def stay_silent(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        hub = await serve_with(stay_silent, nursery)
        with pytest.raises(TimeoutError, match="no answer within"):
            await http_get(hub, "/api/streams")
        nursery.cancel_scope.cancel()


async def test_attach_through_a_cut_connection_has_no_gap_and_no_duplicate(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        hub_process, url = await serve(nursery, tmp_path / "hub.db")
        await create_stream(url, "remote-1")
        proxy = Proxy(int(url.rsplit(":", 1)[1]))
        await proxy.start(nursery)
        await publish(url, "remote-1", 0, 100)
        follower = await attach("remote-1", "--hub", f"http://127.0.0.1:{proxy.port}")
        seen = await read_until(follower.stdout, b"line 99\n")
        proxy.cut()
        await publish(url, "remote-1", 100, 100, end=True)
        code, out, _ = await outcome(follower)
        hub_process.terminate()
        await hub_process.wait()
        nursery.cancel_scope.cancel()
    assert (seen + out).decode().splitlines() == [f"line {i}" for i in range(200)]
    assert code == 6


async def test_attach_across_a_hub_restart_has_no_gap_and_no_duplicate(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        db = tmp_path / "hub.db"
        hub_process, url = await serve(nursery, db)
        port = int(url.rsplit(":", 1)[1])
        await create_stream(url, "remote-2")
        await publish(url, "remote-2", 0, 50)
        follower = await attach("remote-2", "--hub", url)
        seen = await read_until(follower.stdout, b"line 49\n")
        hub_process.send_signal(signal.SIGTERM)
        await hub_process.wait()
        hub_process, url = await serve(nursery, db, port)
        await publish(url, "remote-2", 50, 50, end=True)
        code, out, _ = await outcome(follower)
        hub_process.terminate()
        await hub_process.wait()
        nursery.cancel_scope.cancel()
    assert (seen + out).decode().splitlines() == [f"line {i}" for i in range(100)]
    assert code == 6


async def test_a_hub_from_the_environment_is_asked_first_not_only(tmp_path: Path) -> None:
    done = await trio.run_process(
        [*TSTREAM, "run", "--id", "here-1", "--no-serve", "--", "sh", "-c", "echo mine; exit 3"],
        capture_stdout=True,
        check=False,
    )
    assert done.returncode == 3
    async with trio.open_nursery() as nursery:
        hub_process, url = await serve(nursery, tmp_path / "hub.db")
        await create_stream(url, "there-1")
        await publish(url, "there-1", 0, 2, end=True)
        env = {**os.environ, "TSTREAM_HUB": url}

        async def attach_with(*args: str, env: dict[str, str] = env):
            return await trio.run_process(
                [*TSTREAM, "attach", *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=env,
            )

        on_hub = await attach_with("there-1")
        # The hub does not have it: this machine's store does.
        here = await attach_with("here-1")
        # Named with --hub, the hub is the only place.
        only_hub = await attach_with("here-1", "--hub", url)
        neither = await attach_with("nowhere-1")
        hub_process.terminate()
        await hub_process.wait()
        # A hub that does not answer: this machine's sessions are still followed.
        down = await attach_with("here-1")
        down_unknown = await attach_with("nowhere-1")
        nursery.cancel_scope.cancel()
    assert (on_hub.returncode, on_hub.stdout) == (6, b"line 0\nline 1\n")
    assert (here.returncode, here.stdout) == (3, b"mine\n")
    assert only_hub.returncode == 1 and b"here-1" in only_hub.stderr
    assert neither.returncode == 1 and b"nowhere-1" in neither.stderr
    assert (down.returncode, down.stdout) == (3, b"mine\n")
    # Found nowhere: the hub's failure is what is reported.
    assert down_unknown.returncode == 125, down_unknown.stderr


@pytest.mark.parametrize("page", ["tstream-attach.1", "tstream-run.1", "tstream.1"])
def test_man_page_renders_without_warnings(page: str) -> None:
    path = Path(__file__).resolve().parent.parent / "man" / page
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(path)], capture_output=True, timeout=30
    )
    assert (done.returncode, done.stderr) == (0, b"")


async def test_attach_keeps_up_with_a_fast_run_without_gap_or_duplicate() -> None:
    # The run writes 300,000 lines as fast as it can once attach follows it: attach
    # follows it live (from its store, while it records this fast), then through its hub.
    script = ECHO.replace('while read -r line; do echo "$line"; done', "read -r go; seq 1 300000")
    async with trio.open_nursery() as nursery:
        run = await start_run(nursery, "--id", "fast-1", script=script)
        follower = await attach("fast-1")
        await run.stdin.send_all(b"go\n")
        nursery.start_soon(read_all, run.stdout)
        code, out, err = await outcome(follower)
        await finish(run)
    assert err == b""
    assert code == 0
    assert out == b"ready\n" + b"".join(b"%d\n" % i for i in range(1, 300001))
