"""Sybil parsers and evaluators for the examples of README.rst and the man pages.

``tests/test_docs.py`` says how a block is written, marked or left out; this module does
the work: it finds the blocks (:func:`rest_parsers`, :func:`man_parsers`), and runs each
kind of block in a :class:`Sandbox` of its document (shell sessions on a terminal,
Python programs, JavaScript under Node, YAML configuration loaded and applied).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import attrs
from sybil import Document, Example, Region
from sybil.parsers.abstract import AbstractSkipParser
from sybil.parsers.abstract.lexers import BlockLexer
from sybil.parsers.rest import SkipParser

ROOT: Final = Path(__file__).resolve().parent.parent
ELLIPSIS: Final = "…"
# The hub's port in the examples; each sandbox serves on a free port of its own instead.
EXAMPLE_PORT: Final = "3001"
# How long one shell command, or a background one's first lines, may take.
COMMAND_TIMEOUT: Final = 30.0
BACKGROUND_TIMEOUT: Final = 20.0
# How long what a document left running gets to end once asked (SIGTERM).
GRACE: Final = 5.0
DONE: Final = "\x1e"

# Values that differ from run to run, matched by their shape wherever the shown output
# has one: the shown value is an example of it.
VARYING: Final = [
    (r'"(?:ts|duration|pid|recordedSince|started|time)": ?-?\d+(?:\.\d+)?(?:e-?\d+)?', None),
    (r'"(?:id|epoch|cwd|hostname|clientId)": ?"[^"]*"', None),
    (r"\b\d{8}-\d{6}-[a-z0-9]{5}\b", r"\d{8}-\d{6}-[a-z0-9]{5}"),
    (r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\b", r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"),
    (r"\b\d+\.\d+s\b", r"\d+\.\d+s"),
    (r"\bc\d+-[0-9a-f]{6}\b", r"c\d+-[0-9a-f]{6}"),
    (r"\b[0-9a-f]{8}\.sock\b", r"[0-9a-f]{8}\.sock"),
    (r"\b[0-9a-f]{32}\b", r"[0-9a-f]{32}"),
    (r"/run/user/1000/tstream\b", r"/\S+/tstream"),
]
_VARYING_RE: Final = re.compile("|".join(f"({pattern})" for pattern, _ in VARYING))


def _varying(text: str) -> str:
    """The regex of ``text``, a shown value of one of the :data:`VARYING` kinds."""
    for pattern, shape in VARYING:
        if re.fullmatch(pattern, text):
            if shape is not None:
                return shape
            key = text.split(":", 1)[0]
            value = r'"[^"]*"' if text.rstrip().endswith('"') else r"-?[0-9.e+-]+"
            return re.escape(key) + r": ?" + value
    raise AssertionError(text)


def _line_regex(line: str) -> str:
    parts = []
    for piece_index, piece in enumerate(line.split(ELLIPSIS)):
        if piece_index:
            parts.append(r"[^\n]*?")
        place = 0
        for match in _VARYING_RE.finditer(piece):
            parts.append(re.escape(piece[place : match.start()]))
            parts.append(_varying(match.group(0)))
            place = match.end()
        parts.append(re.escape(piece[place:]))
    return "".join(parts)


_ANSI: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def normalize(text: str) -> str:
    """Output as compared: as a terminal shows it (no colour codes, ``\\r\\n`` as
    ``\\n``), without trailing blanks or blank lines."""
    text = _ANSI.sub("", text)
    lines = re.sub(r"\r+\n", "\n", text).replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def output_regex(expected: str) -> re.Pattern[str]:
    """The regex that output shown as ``expected`` must match whole.

    A line that is ``…`` alone stands for any number of lines (none included), a ``…``
    within a line for any text on that line, and a value of one of the :data:`VARYING`
    kinds for any value of its kind.
    """
    parts = []
    for line in normalize(expected).split("\n"):
        if line.strip() == ELLIPSIS:
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(_line_regex(line) + r"\n")
    return re.compile("".join(parts))


def matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` output is what ``expected`` shows (see :func:`output_regex`)."""
    wanted = normalize(expected)
    got = normalize(actual)
    if not wanted:
        return not got
    return output_regex(wanted).fullmatch(got + "\n") is not None


def mismatch(what: str, expected: str, actual: str) -> str:
    """The failure message of an output that is not as shown."""
    return f"{what}\n--- shown\n{normalize(expected)}\n--- got\n{normalize(actual)}\n"


# -- shell sessions ---------------------------------------------------------------------


@attrs.frozen
class Command:
    """One ``$ …`` command of a shell block and the output shown after it."""

    text: str
    expected: str

    @property
    def background(self) -> bool:
        """Whether the command ends with ``&`` (or ``& NAME=$!``): it runs on, and the
        output shown after it is the first it prints."""
        words = shlex.split(self.text, comments=True)
        return bool(words) and (
            words[-1] == "&" or (len(words) > 1 and words[-2] == "&" and words[-1].endswith("=$!"))
        )


def _complete(text: str) -> bool:
    if text.endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def parse_console(source: str) -> list[Command]:
    """The commands of a shell block: ``$ `` starts one, which goes on over lines ending
    with ``\\`` and lines inside a quoted string; the lines up to the next command are
    its output."""
    commands: list[Command] = []
    text: list[str] | None = None
    output: list[str] = []
    for line in source.splitlines():
        if text is not None and not _complete("\n".join(text)):
            text.append(line)
        elif line.startswith("$ "):
            if text is not None:
                commands.append(Command("\n".join(text), "\n".join(output)))
            text, output = [line[2:]], []
        elif text is None:
            raise ValueError(f"a shell block starts with a command ($ …), not {line!r}")
        else:
            output.append(line)
    if text is not None:
        commands.append(Command("\n".join(text), "\n".join(output)))
    return commands


def _group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs (zombies aside)."""
    for status in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Sandbox:
    """Where one document's examples run, in the order of the document.

    A directory of its own is the working directory and ``HOME``, with the XDG
    directories inside it (so the store is new), ``tests`` linked in, ``tstream`` of this
    checkout first on ``PATH``, and a configuration file whose ``serve:`` section listens on
    a free port (the examples' port 3001 is that port). Shell commands run, one by one,
    in one ``bash``, so that variables, the directory and background jobs carry from one
    command and block to the next; each command's output (stdout and stderr both) goes to
    a terminal of its own, read for as long as a background command runs.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tstream-docs-"))
        self.port = str(free_port())
        runtime = self.root / "run"
        runtime.mkdir(mode=0o700)
        config = self.root / "config" / "tstream"
        config.mkdir(parents=True)
        (config / "config.yaml").write_text(f"serve:\n  listen: 127.0.0.1:{self.port}\n")
        (self.root / "tests").symlink_to(ROOT / "tests")
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("TSTREAM_") and not key.startswith("XDG_")
        }
        self.env.update(
            HOME=str(self.root),
            XDG_RUNTIME_DIR=str(runtime),
            XDG_DATA_HOME=str(self.root / "data"),
            XDG_CONFIG_HOME=str(self.root / "config"),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            NO_COLOR="1",
            TERM="xterm",
            LC_ALL="C.UTF-8",
            COLUMNS="100",
        )
        self._shell: subprocess.Popen[bytes] | None = None
        self._terminals: list[Terminal] = []
        self._status = 0

    def localize(self, text: str) -> str:
        """``text`` with the examples' hub port made this sandbox's."""
        return re.sub(rf"(127\.0\.0\.1|localhost):{EXAMPLE_PORT}\b", rf"\1:{self.port}", text)

    def _bash(self) -> subprocess.Popen[bytes]:
        if self._shell is None:
            self._shell = subprocess.Popen(
                ["bash", "--noprofile", "--norc"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=self.env,
                start_new_session=True,
            )
        return self._shell

    @property
    def status(self) -> int:
        """The exit status of the last command."""
        return self._status

    def _send(self, script: str) -> int:
        """Run ``script`` in the shell; its exit status once it is done."""
        shell = self._bash()
        assert shell.stdin is not None and shell.stdout is not None
        # ``$?`` is the previous command's status for the next, as in a terminal.
        shell.stdin.write(
            f"(exit {self._status})\n{script}\nprintf '{DONE}%s\\n' \"$?\"\n".encode()
        )
        shell.stdin.flush()
        line = b""
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while not line.endswith(b"\n") or DONE.encode() not in line:
            ready, _, _ = select.select([shell.stdout], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                # The shell is stuck in the command: end it, and what it ran, for the next.
                self._end_shell()
                raise AssertionError(f"still running after {COMMAND_TIMEOUT:g}s: {script}")
            chunk = os.read(shell.stdout.fileno(), 1)
            if not chunk:
                raise AssertionError(f"the shell ended while running: {script}")
            line += chunk
            if line.endswith(b"\n") and DONE.encode() not in line:
                line = b""  # the shell's own complaints go with the command's output
        self._status = int(line.decode().split(DONE)[1])
        return self._status

    def run(self, command: Command) -> str:
        """Run one command; the output it printed (a background command's, once it has
        printed what is shown, or after :data:`BACKGROUND_TIMEOUT`)."""
        text = self.localize(command.text)
        terminal = Terminal()
        self._send(f"{{ {text}\n}} >{terminal.name} 2>&1 </dev/null")
        if not command.background:
            terminal.close()
            return terminal.text()
        # The terminal stays open (and read) while the command runs on.
        self._terminals.append(terminal)
        expected = normalize(self.localize(command.expected))
        deadline = time.monotonic() + BACKGROUND_TIMEOUT
        while True:
            first = "\n".join(normalize(terminal.text()).split("\n")[: expected.count("\n") + 1])
            if not expected or matches(expected, first) or time.monotonic() > deadline:
                return first
            time.sleep(0.02)

    def _end_shell(self) -> None:
        shell, self._shell = self._shell, None
        if shell is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGTERM)
        try:
            shell.wait(timeout=10)
        except subprocess.TimeoutExpired:
            shell.kill()
            shell.wait()
        # Background jobs outlive the shell in its group: SIGTERM lets them end what they
        # started (a run ends its command, in a group of its own) before SIGKILL.
        deadline = time.monotonic() + GRACE
        with contextlib.suppress(ProcessLookupError):
            while _group_running(shell.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            os.killpg(shell.pid, signal.SIGKILL)
        for stream in (shell.stdin, shell.stdout):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        """End the shell and whatever it left running; remove the directory."""
        self._end_shell()
        for terminal in self._terminals:
            terminal.close()
        shutil.rmtree(self.root, ignore_errors=True)


class Terminal:
    """A pseudo-terminal (100 columns), whose output a thread reads as it comes."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        fcntl.ioctl(self._slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        self.name = os.ttyname(self._slave)
        self._chunks: list[bytes] = []
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                if self._done.is_set():
                    return
                continue
            try:
                chunk = os.read(self._master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def text(self) -> str:
        """What was written so far."""
        return b"".join(self._chunks).decode(errors="replace")

    def close(self) -> None:
        """Read what is left, then close."""
        self._done.set()
        self._reader.join()
        os.close(self._slave)
        os.close(self._master)


def sandbox(example: Example) -> Sandbox:
    """The sandbox of the example's document (made on first use)."""
    box = example.namespace.get("sandbox")
    if box is None:
        box = example.namespace["sandbox"] = Sandbox()
    return box


# -- evaluators -------------------------------------------------------------------------


@attrs.frozen
class Block:
    """A code block: its language, its text and, for a program, the output it is shown
    to print (a ``prints::`` block after it, or a ``prints ``a``, ``b``.`` sentence)."""

    language: str
    source: str
    prints: str | None = None


def evaluate_console(example: Example) -> str | None:
    """A shell block: each command prints what is shown after it."""
    box = sandbox(example)
    failures = []
    for command in parse_console(example.parsed.source):
        printed = box.run(command)
        expected = box.localize(command.expected)
        if not matches(expected, printed):
            failures.append(mismatch(f"$ {command.text}", expected, printed))
    return "\n".join(failures) or None


def _program(example: Example, argv: list[str], suffix: str) -> str | None:
    """Run the block as a program file, with ``argv``; it must succeed, and print what
    it is shown to print."""
    box = sandbox(example)
    block: Block = example.parsed
    path = box.root / f".example-{example.line}{suffix}"
    path.write_text(box.localize(block.source))
    done = subprocess.run(
        [*argv, str(path)],
        capture_output=True,
        cwd=box.root,
        env=box.env,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    printed = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        return f"exit status {done.returncode}\n{printed}{done.stderr.decode(errors='replace')}"
    if block.prints is not None and not matches(box.localize(block.prints), printed):
        return mismatch("the program printed", block.prints, printed)
    return None


def evaluate_python(example: Example) -> str | None:
    """A Python program, run whole."""
    return _program(example, [sys.executable], ".py")


def evaluate_javascript(example: Example) -> str | None:
    """A JavaScript program, run under Node with WebSocket and EventSource."""
    node = shutil.which("node")
    if node is None:
        return "Node.js is needed to run the JavaScript examples (apt-get install nodejs)"
    flags = ["--no-warnings", "--experimental-websocket", "--experimental-eventsource"]
    return _program(example, [node, *flags], ".mjs")


def evaluate_yaml(example: Example) -> str | None:
    """Load the block as the configuration file and apply each section as the command
    that owns it would."""
    from trio_stream.cli.processing import build_pipeline
    from trio_stream.config import SECTIONS, load_config
    from trio_stream.hub.config import HubConfig

    box = sandbox(example)
    path = box.root / f".example-{example.line}.yaml"
    path.write_text(example.parsed.source)
    loaded = load_config(path)
    assert loaded is not None
    sections = [key for key in SECTIONS if key in loaded.values]
    if not sections:
        return f"no section tstream knows ({', '.join(SECTIONS)}) in this configuration"
    if "run" in sections:
        build_pipeline(config=str(path))
    if "serve" in sections:
        HubConfig.from_mapping(dict(loaded.section("serve").values))
    return None


def evaluate_man(example: Example) -> str | None:
    """A man page's example: each command runs and succeeds (its output is not shown)."""
    box = sandbox(example)
    if not example.namespace.get("prepared"):
        box.run(Command(MAN_SETUP, ""))
        example.namespace["prepared"] = True
    failures = []
    for line in example.parsed:
        printed = box.run(Command(line, ""))
        if box.status != 0:
            failures.append(f"$ {line}\nexit status {box.status}\n{normalize(printed)}")
    return "\n".join(failures) or None


# What a man page's examples find in the store: one finished session, build-1.
MAN_SETUP: Final = (
    "tstream run --id build-1 -- sh -c 'echo compiling; echo \"warning: unused\" >&2; exit 2'"
)

EVALUATORS: Final = {
    "console": evaluate_console,
    "python": evaluate_python,
    "javascript": evaluate_javascript,
    "yaml": evaluate_yaml,
}
LANGUAGES: Final = {"shell-session": "console", "pycon": "python", "js": "javascript"}


def _unknown(example: Example) -> str:
    return (
        f"a {example.parsed.language or 'literal'} block tstream's tests cannot run: name its "
        "language (.. code-block:: console|python|yaml|javascript), or mark it not run "
        '(.. skip: next "why") as tests/test_docs.py says'
    )


# -- reStructuredText -------------------------------------------------------------------

_DIRECTIVE: Final = re.compile(r"\.\. code-block::[ \t]*(?P<language>\S*)")
_PRINTS: Final = re.compile(r"\s*prints (.*?)\.\s", re.S)


def _dedent(body: str) -> str:
    lines = body.rstrip("\n").split("\n")
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines)


def _infer(source: str) -> str:
    """The language of a bare literal block, from what it holds."""
    first = source.lstrip().split("\n", 1)[0]
    if first.startswith("$ "):
        return "console"
    if re.fullmatch(r"[a-z]+:", first):
        return "yaml"
    if re.search(r"\bnew (WebSocket|EventSource)\b|^const ", source, re.M):
        return "javascript"
    if re.search(r"^(import|from) \w", source, re.M):
        return "python"
    return ""


def _literal_blocks(text: str) -> Iterator[tuple[int, int, str, str, bool]]:
    """Each block of ``text``: where it starts (its introducing line) and ends, its
    language (from ``.. code-block::``, else empty), its text, and whether it is
    introduced by ``prints::``."""
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    index = 0
    while index < len(lines):
        line = lines[index].rstrip("\n")
        directive = _DIRECTIVE.fullmatch(line.strip())
        literal = line.endswith("::") and not line.lstrip().startswith("..")
        if not (directive or literal):
            index += 1
            continue
        body = index + 1
        while body < len(lines) and re.match(r"[ \t]+:[\w-]+:", lines[body]):
            body += 1  # the directive's options
        if body >= len(lines) or lines[body].strip():
            index += 1
            continue
        end = body
        while end < len(lines) and (not lines[end].strip() or lines[end][:1] in " \t"):
            end += 1
        while end > body and not lines[end - 1].strip():
            end -= 1
        if end > body:
            yield (
                offsets[index],
                offsets[end],
                directive["language"] if directive else "",
                _dedent("".join(lines[body + 1 : end])),
                line.strip() == "prints::",
            )
        index = max(end, index + 1)


class CodeBlockParser:
    """Every literal block (``::``) and ``.. code-block::`` of a reST document, run by its
    language. A block introduced by a paragraph that is just ``prints::`` is the output of
    the block before it, not an example."""

    def __call__(self, document: Document) -> Iterable[Region]:
        text = document.text
        blocks = list(_literal_blocks(text))
        for index, (start, end, language, source, is_output) in enumerate(blocks):
            if is_output:
                continue
            language = LANGUAGES.get(language, language) or _infer(source)
            prints = None
            region_end = end
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            between = text[end : following[0]] if following else ""
            if following and following[4] and not between.strip():
                prints, region_end = following[3], following[1]
            elif sentence := _PRINTS.match(text[end:]):
                prints = "\n".join(re.findall(r"``([^`]+)``", sentence.group(1)))
            evaluator = EVALUATORS.get(language, _unknown)
            yield Region(start, region_end, Block(language, source, prints), evaluator)


def rest_parsers() -> list[Any]:
    """The parsers of README.rst: skip markers, then code blocks."""
    return [SkipParser(), CodeBlockParser()]


# -- man pages --------------------------------------------------------------------------

_ROFF = [("\\-", "-"), ("\\(aq", "'"), ("\\(dq", '"'), ("\\e", "\\"), ("\\&", "")]


def unroff(line: str) -> str:
    """A line of a man page's ``.nf`` block as it reads."""
    for escape, char in _ROFF:
        line = line.replace(escape, char)
    return line


class ManExamplesParser:
    """Each ``.nf``/``.fi`` block of a man page's EXAMPLES section: its commands, lines
    ending with ``\\`` joined to the next."""

    def __call__(self, document: Document) -> Iterable[Region]:
        section = re.search(r"^\.SH EXAMPLES\n(.*?)(?=^\.SH |\Z)", document.text, re.M | re.S)
        if section is None:
            return
        for block in re.finditer(r"^\.nf\n(.*?)^\.fi\n", section.group(1), re.M | re.S):
            commands: list[str] = []
            pending = ""
            for line in block.group(1).splitlines():
                line = unroff(line)
                if line.endswith("\\"):
                    pending += line[:-1]
                    continue
                commands.append(pending + line)
                pending = ""
            start = section.start(1) + block.start()
            yield Region(start, section.start(1) + block.end(), commands, evaluate_man)


class ManSkipParser(AbstractSkipParser):
    """``.\\" skip: next "why"`` in a man page, as ``.. skip:`` in reST."""

    def __init__(self) -> None:
        super().__init__(
            [BlockLexer(re.compile(r'^\.\\" skip: (?P<arguments>[^\n]+)\n', re.M), r"")]
        )


def man_parsers() -> list[Any]:
    """The parsers of a man page: skip markers, then EXAMPLES blocks."""
    return [ManSkipParser(), ManExamplesParser()]
