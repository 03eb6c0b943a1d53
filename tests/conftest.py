"""Settings for the whole test suite."""

import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator

import pytest

from trio_stream.process import running_processes

# ``tstream run`` records every session in the default store, in the XDG data directory:
# point that (and the store variable) at a directory of the test run's own, for this process
# and every process the tests start, so that no test writes into the user's home.
_DATA_HOME = tempfile.mkdtemp(prefix="tstream-tests-")
os.environ["XDG_DATA_HOME"] = _DATA_HOME
os.environ.pop("TSTREAM_STORE", None)


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` that still runs, parents first."""
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in running_processes():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """A test that fails half-way must not leave its commands running: whatever it
    started and did not stop is killed, whole tree at once, when it ends."""
    yield
    left = _descendants(os.getpid())
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in left:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
