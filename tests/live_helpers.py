"""Helpers for tests of served sessions: private directories and ``tstream run`` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

TSTREAM = [sys.executable, "-c", "from trio_stream.cli import main; main()"]

# Waits (in the child) until tstream registered the session, then says so and echoes its
# stdin, so that a test drives the command through the pipe and never sleeps.
ECHO = (
    'until [ -n "$(ls "$XDG_RUNTIME_DIR"/tstream/*.json 2>/dev/null)" ]; do sleep 0.01; done; '
    'echo ready; while read -r line; do echo "$line"; done; exit "${STATUS:-0}"'
)


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Sessions are recorded and registered under the test's own directory."""
    runtime = Path(os.environ.get("TMPDIR", "/tmp")) / f"tstream-test-{os.getpid()}-{id(tmp_path)}"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("TSTREAM_STORE", raising=False)
    monkeypatch.delenv("TSTREAM_TOKEN", raising=False)
    yield runtime / "tstream"
    subprocess.run(["rm", "-rf", str(runtime)], check=False)


async def start_run(
    nursery: trio.Nursery, *args: str, env: dict[str, str] | None = None, script: str = ECHO
):
    """Start ``tstream run [args] -- sh -c SCRIPT`` and return once the session is served
    (the script prints ``ready`` then)."""
    process = await trio.lowlevel.open_process(
        [*TSTREAM, "run", *args, "--", "sh", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    seen = b""
    with trio.fail_after(20):
        while b"ready\n" not in seen:
            chunk = await process.stdout.receive_some()
            assert chunk, seen
            seen += chunk
    return process


async def finish(process: trio.Process) -> tuple[int, bytes]:
    await process.stdin.aclose()
    rest = b""
    with trio.fail_after(20):
        while chunk := await process.stderr.receive_some():
            rest += chunk
        await process.wait()
    return process.returncode, rest
