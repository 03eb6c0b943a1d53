"""Schemathesis against a live ``tstream serve``: every operation of ``/api/openapi.json``
is called with generated requests, valid and not, and every answer must be documented
(status, content type, headers, body schema) and never a 5xx."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import trio

TSTREAM = str(Path(sys.executable).parent / "tstream")
TOKEN = "schemathesis-token"
# The limits would answer most of the run 429, and a poll or an SSE request to a live
# stream would hold each case: short waits, frequent heartbeats.
HUB_CONFIG = f"""\
serve:
  listen: 127.0.0.1:0
  store: "memory:"
  tokens: [{TOKEN}]
  requests-per-minute: 1000000000
  connections-per-minute: 1000000000
  publish-per-second: 1000000000
  max-poll-timeout: 200ms
  heartbeat: 20ms
  idle-timeout: 0
"""
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
# An SSE answer is judged on its first events. The request bodies have by far the most
# coverage cases (the publish body alone: an event or a list, of fourteen event types):
# their positive ones are enough there, and the fuzzing phase sends them the rest.
SCHEMATHESIS_CONFIG = """\
max-stream-events = 3

[[operations]]
include-operation-id = ["publishEvents", "createStream", "replayToClient"]
phases.coverage.generation.mode = "positive"
"""


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[str]:
    """``tstream serve`` on a free loopback port; yields its URL once it answers."""
    config = tmp_path / "hub.yaml"
    config.write_text(HUB_CONFIG)
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                [TSTREAM, "serve", "--config", str(config), "-q"],
                stderr=subprocess.PIPE,
                check=False,
                task_status=task_status,
            )
        )
        assert process.stderr is not None
        seen = b""
        with trio.fail_after(20):
            while b"listening on http" not in seen:
                chunk = await process.stderr.receive_some()
                assert chunk, seen
                seen += chunk
        line = next(x for x in seen.decode().splitlines() if "listening on" in x)
        url = line.rsplit(" ", 1)[1]

        async def drain() -> None:
            # Whatever the hub logs must not fill the pipe and stall it.
            assert process.stderr is not None
            while await process.stderr.receive_some():
                pass

        nursery.start_soon(drain)
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            with trio.fail_after(20):
                while (await http.get("/healthz")).status_code != 200:
                    await trio.sleep(0.05)
        try:
            yield url
        finally:
            process.terminate()


async def test_generated_requests_get_documented_answers_and_no_server_error(
    tmp_path: Path,
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    report = tmp_path / "run.json"
    async with serving(tmp_path) as url:
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            f"{url}/api/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "5",
            # The same cases on every run.
            "--generation-deterministic",
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ]
        with trio.fail_after(240):
            result = await trio.run_process(
                command, capture_stdout=True, stderr=subprocess.STDOUT, check=False
            )
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output[-8000:]
    summary = orjson.loads(report.read_bytes())
    cases = summary["test_cases"]
    print(
        f"schemathesis: {cases['generated']} cases, {summary['operations']['tested']} "
        f"operations, {summary['running_time']:.1f} s"
    )
    assert summary["operations"]["tested"] == summary["operations"]["total"]
    assert cases["with_failures"] == 0 and cases["errored"] == 0, output[-8000:]
    assert cases["generated"] > 500


async def test_an_answer_sent_before_the_request_body_leaves_no_deaf_connection(
    tmp_path: Path,
) -> None:
    """A 405 goes out before the body arrives: the connection must then be closed or
    serve the next request, never stay open without reading it (found by the coverage
    phase: the close was cancelled half-way)."""
    body = b'{"type": "output", "data": {"source": "stdout", "text": "x"}}'

    def client(host: str, port: int) -> bytes:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(
                b"TRACE /api/streams/s/events HTTP/1.1\r\nHost: %s\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % (host.encode(), len(body))
            )
            answer = b""
            while b"method_not_allowed" not in answer:
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 405")
            try:
                sock.sendall(body)
                # The next request as a segment of its own, as a client reusing the
                # connection later sends it.
                time.sleep(0.05)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
                return sock.recv(65536)
            except (BrokenPipeError, ConnectionResetError):
                return b""

    async with serving(tmp_path) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        # Closed (nothing more), or the next request answered; a timeout is the failure.
        for _ in range(3):
            rest = await trio.to_thread.run_sync(client, host, int(port))
            assert rest == b"" or rest.startswith(b"HTTP/1.1 200"), rest
