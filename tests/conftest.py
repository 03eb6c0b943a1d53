"""Settings for the whole test suite."""

import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator

import pytest

# ``tstream run`` records every session in the default store, in the XDG data directory:
# point that (and the store variable) at a directory of the test run's own, for this process
# and every process the tests start, so that no test writes into the user's home.
_DATA_HOME = tempfile.mkdtemp(prefix="tstream-tests-")
os.environ["XDG_DATA_HOME"] = _DATA_HOME
os.environ.pop("TSTREAM_STORE", None)


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` that still runs (from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
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
