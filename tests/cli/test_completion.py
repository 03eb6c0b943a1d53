"""Shell completion through click's completion variables, as bash, zsh and fish ask."""

import os
import subprocess
import sys
import time

import pytest
import trio

from trio_stream.registry import LiveSession, private_dir, registered
from trio_stream.store import SessionInfo, SessionStatus, open_store

TSTREAM = [sys.executable, "-c", "from trio_stream.cli import main; main()"]


@pytest.fixture
def environ(tmp_path):
    """A store with two finished sessions, and a runtime directory of our own."""
    db = tmp_path / "store.db"

    async def fill():
        async with open_store(db) as store:
            await store.create_session(
                SessionInfo("build-1", command=["make", "all"], created=1000.0)
            )
            await store.update_session("build-1", status=SessionStatus.COMPLETED, exit_status=0)
            await store.create_session(
                SessionInfo("build-2", command=["sh", "-c", "make; exit 2"], created=2000.0)
            )
            await store.update_session("build-2", status=SessionStatus.FAILED, exit_status=2)

    trio.run(fill)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TSTREAM_", "_TSTREAM"))}
    env["TSTREAM_STORE"] = str(db)
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    return env


def complete(environ, shell, words, cword=None):
    """What ``tstream`` answers the ``shell``'s completion request for ``words``."""
    env = {**environ, "_TSTREAM_COMPLETE": f"{shell}_complete", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(len(words.split(" ")) - 1) if cword is None else cword
    done = subprocess.run(TSTREAM, env=env, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout


def bash_words(output):
    return [line.split(",", 1)[1] for line in output.splitlines() if line]


@pytest.mark.parametrize("command", ["show", "replay", "export", "attach"])
def test_session_ids_complete_from_the_store(environ, command):
    assert bash_words(complete(environ, "bash", f"tstream {command} build-")) == [
        "build-2",
        "build-1",
    ]


def test_running_sessions_complete_first_and_latest_is_offered(environ, tmp_path):
    directory = private_dir(tmp_path / "run" / "tstream")
    socket = directory / "live.sock"
    socket.touch()
    live = LiveSession("live-1", os.getpid(), ["sleep", "30"], time.time(), str(socket))
    with registered(live, directory):
        words = bash_words(complete(environ, "bash", "tstream attach "))
    assert words == ["latest", "live-1", "build-2", "build-1"]


def test_zsh_and_fish_get_a_description_of_each_session(environ):
    zsh = complete(environ, "zsh", "tstream show build-2").splitlines()
    assert zsh == ["plain", "build-2", "failed: sh -c 'make; exit 2'"]
    fish = complete(environ, "fish", "tstream show build-1", cword="build-1")
    assert fish.splitlines() == ["plain,build-1\tcompleted: make all"]


def test_the_store_named_by_store_is_read(environ, tmp_path):
    db = environ.pop("TSTREAM_STORE")
    assert bash_words(complete(environ, "bash", f"tstream show --store {db} build-1")) == [
        "build-1"
    ]


def test_a_missing_store_offers_nothing_and_is_not_created(environ, tmp_path):
    missing = tmp_path / "missing.db"
    environ["TSTREAM_STORE"] = str(missing)
    assert bash_words(complete(environ, "bash", "tstream show b")) == []
    assert not missing.exists()


def test_commands_and_event_types_complete(environ):
    assert bash_words(complete(environ, "bash", "tstream sh")) == ["show"]
    words = bash_words(complete(environ, "bash", "tstream show x --type status,session_"))
    assert words == ["status,session_started", "status,session_ended"]


def test_a_bash_script_is_given_to_source(environ):
    env = {**environ, "_TSTREAM_COMPLETE": "bash_source"}
    done = subprocess.run(TSTREAM, env=env, capture_output=True, text=True, timeout=30)
    assert "complete -o nosort -F _tstream_completion tstream" in done.stdout


def test_a_redis_store_is_not_asked(environ):
    # Nothing listens there: asking would fail only after the store's timeout.
    environ["TSTREAM_STORE"] = "redis://127.0.0.1:9/0?timeout=30"
    assert bash_words(complete(environ, "bash", "tstream show b")) == []
