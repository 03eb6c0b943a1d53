"""The ``tstream`` command: one click group, each subcommand in a module of its own."""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys
import threading
from typing import Any, Final, NoReturn

import click

from .. import __version__

# name -> "module:attribute"; modules are imported only when their command runs, so
# ``tstream run`` does not pay for importing the hub.
COMMANDS: dict[str, str] = {
    "run": "trio_stream.cli.run:run",
    "ls": "trio_stream.cli.history:ls",
    "show": "trio_stream.cli.history:show",
    "replay": "trio_stream.cli.history:replay",
    "export": "trio_stream.cli.history:export",
    "import": "trio_stream.cli.history:import_",
    "prune": "trio_stream.cli.history:prune",
    "serve": "trio_stream.cli.serve:serve",
    "attach": "trio_stream.cli.attach:attach",
}


# Collect the youngest objects every 20,000 allocations, not 700: a stream of a million
# lines makes millions of short-lived containers (rows, frames, events), and with
# Python's default a third of `tstream attach --json` went to the collector.
GC_THRESHOLD: Final = (20_000, 10, 10)
_tuned_gc = False


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._load(name)

    @staticmethod
    def _load(name: str) -> Any:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        if _tuned_gc:
            # What the command has imported lives as long as the process: the collector
            # need not look at it again.
            gc.freeze()
        return getattr(module, attr, None)


EPILOG: Final = """Every command has --help and a man page (man tstream-run); see man tstream.

Shell completion (commands, options, session ids), for bash, zsh and fish:

\b
    eval "$(_TSTREAM_COMPLETE=bash_source tstream)"   # in ~/.bashrc
    eval "$(_TSTREAM_COMPLETE=zsh_source tstream)"    # in ~/.zshrc
    _TSTREAM_COMPLETE=fish_source tstream | source    # in ~/.config/fish/config.fish
"""


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(__version__, prog_name="tstream")
def cli() -> None:
    """Run commands with live, structured, replayable output streams."""


def main() -> None:
    """The ``tstream`` program (the collector is tuned for it: see GC_THRESHOLD)."""
    global _tuned_gc
    _tuned_gc = True
    gc.set_threshold(*GC_THRESHOLD)
    try:
        cli(prog_name="tstream")
    except SystemExit as exc:
        _end(exc)
    _end(SystemExit(0))


def _end(exc: SystemExit) -> None:
    """End the program as ``exc`` says, without the interpreter's teardown.

    Once a command has returned, everything it opened is closed: what is left is Python
    tearing down its modules and freeing every object one by one, 30 to 60 ms of a short
    command's time (see :func:`exit_now`). A thread that is not a daemon and still runs
    gets the usual exit, which waits for it.
    """
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        raise exc
    code = exc.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    exit_now(status)


def exit_now(status: int) -> NoReturn:
    """End the process at once with ``status``, without the interpreter's teardown: the
    exit functions run (logging's flush among them) and the standard streams are flushed,
    but a thread still running is not waited for, and no module is torn down."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
