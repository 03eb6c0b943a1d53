"""How events look on a terminal: a compact one-line form for non-output events.

``tstream run`` shows the command's own output unchanged and, on stderr when it is a
terminal, one line per other event::

    ▶ tool Bash started: python -m pytest -q
    ✓ Bash 1.2s
    ✗ Bash failed 0.4s: Exit code 1
    ✗ error: disk full
    ● result: success (9 turns, $0.0892)

Text from the command (a tool's input, an error message) is shown on one line with control
characters made visible, so it cannot move the cursor or change colours, and is cut at
``width`` characters. Whether to colour is decided once, by :func:`color_wanted`; only these
lines are coloured, never the command's own output.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from typing import Any, Final

import orjson

from .events import (
    Command,
    Custom,
    Error,
    Event,
    EventType,
    Match,
    Reasoning,
    Screenshot,
    SessionEnded,
    SessionStarted,
    Status,
    VariableUpdate,
)

DEFAULT_WIDTH: Final = 120

_RESET: Final = "\x1b[0m"
_STYLES: Final[dict[str, str]] = {
    "start": "\x1b[36m",
    "ok": "\x1b[32m",
    "fail": "\x1b[31m",
    "warn": "\x1b[33m",
    "dim": "\x1b[2m",
    "info": "\x1b[34m",
}
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LEVEL_STYLES: Final[dict[str, str]] = {
    "critical": "fail",
    "error": "fail",
    "warning": "warn",
    "notice": "info",
    "info": "info",
    "debug": "dim",
}


COLOR_WHEN: Final = ("auto", "always", "never")


def color_wanted(
    when: str = "auto", *, isatty: bool, environ: Mapping[str, str] | None = None
) -> bool:
    """Whether tstream colours its own lines on a stream.

    ``always`` and ``never`` are obeyed as they are (an option on the command line
    overrides the environment, as no-color.org asks). ``auto`` colours a terminal that
    supports it (``TERM`` is not ``dumb``), unless ``NO_COLOR`` is set and not empty;
    ``FORCE_COLOR`` set and not empty colours even what is not a terminal.

    Args:
        when: ``auto``, ``always`` or ``never``.
        isatty: whether the stream is a terminal.
        environ: the environment (default: this process's).

    Raises:
        ValueError: for another ``when``.
    """
    if when not in COLOR_WHEN:
        raise ValueError(f"color must be one of {', '.join(COLOR_WHEN)}, not {when!r}")
    if when != "auto":
        return when == "always"
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    return isatty and env.get("TERM", "") != "dumb"


def paint(text: str, style: str) -> str:
    """``text`` in one of the styles of the compact lines (``fail``, ``ok``, ``warn``...)."""
    return f"{_STYLES[style]}{text}{_RESET}"


def one_line(text: Any, width: int = DEFAULT_WIDTH) -> str:
    """``text`` on one line: newlines as ``⏎``, other control characters as ``^X``/``\\x..``."""
    value = text if isinstance(text, str) else str(text)
    value = value.strip().replace("\r\n", "\n").replace("\n", " ⏎ ")
    value = _CONTROL_RE.sub(_visible, value)
    if len(value) > width:
        value = value[: max(1, width - 1)] + "…"
    return value


def _visible(found: re.Match[str]) -> str:
    code = ord(found.group())
    if code < 0x20:
        return "^" + chr(code + 0x40)
    return f"\\x{code:02x}"


def format_duration(seconds: float | None) -> str:
    """``0.35s``, ``1.2s``, ``2m05s``, ``1h02m``."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def compact_line(event: Event, *, color: bool = False, width: int = DEFAULT_WIDTH) -> str | None:
    """One short line for a non-output event (``▶ tool Bash started``), or None to show nothing.

    ``OUTPUT`` events (the terminal shows the line itself) and ``JSON`` documents (the line
    that held them was shown) give None.

    Args:
        event: the event.
        color: colour the line (ANSI escape sequences); see :func:`color_wanted`.
        width: the longest text taken from the event, in characters.

    Returns:
        The line, without a newline, or None.
    """
    shown = _describe(event, width)
    if shown is None:
        return None
    style, text = shown
    if style and color:
        return paint(text, style)
    return text


def _describe(event: Event, width: int) -> tuple[str | None, str] | None:
    data = event.data
    etype = event.type
    if isinstance(data, Command):
        return _command(etype, data, width)
    if isinstance(data, Reasoning):
        mark = "∴" if data.kind == "thinking" else "»"
        return "dim", f"{mark} {one_line(data.thought, width)}"
    if isinstance(data, Error):
        code = "" if data.code == "error" else f" [{data.code}]"
        return "fail", f"✗ error{code}: {one_line(data.message, width)}"
    if isinstance(data, Status):
        text = f"● {one_line(data.kind, 40)}: {one_line(data.status, 60)}"
        if data.message:
            text += f" — {one_line(data.message, width)}"
        style = "fail" if data.status.startswith("error") else "info"
        return style, text
    if isinstance(data, Match):
        level = f" [{data.level}]" if data.level else ""
        style = _LEVEL_STYLES.get(data.level or "", "warn")
        return style, f"◆ {data.pattern}{level}: {one_line(data.text, width)}"
    if isinstance(data, VariableUpdate):
        return None, f"= {data.name}: {one_line(_short(data.previous), 40)} → " + one_line(
            _short(data.value), width
        )
    if isinstance(data, Screenshot):
        where = data.path or data.url or ""
        caption = f"{one_line(data.caption, width)} " if data.caption else ""
        return None, f"▣ screenshot {caption}({one_line(where, width)})"
    if isinstance(data, Custom):
        return None, f"◇ {one_line(data.name, 40)}: {one_line(_short(data.payload), width)}"
    if isinstance(data, SessionStarted):
        # Quoted as a shell would need it, so that the line can be copied and run again.
        return "start", f"▶ {one_line(shlex.join(data.command), width)}"
    if isinstance(data, SessionEnded):
        return _ended(data)
    return None


def _command(etype: EventType, data: Command, width: int) -> tuple[str, str]:
    name = one_line(data.name, 40)
    took = format_duration(data.duration)
    if etype is EventType.COMMAND_STARTED:
        action = f": {one_line(data.action, width)}" if data.action else ""
        return "start", f"▶ tool {name} started{action}"
    if etype is EventType.COMMAND_COMPLETED:
        return "ok", f"✓ {name} {took}".rstrip()
    # The first line says what went wrong; the rest (a traceback, a test log) is in the event.
    first = _short(data.error).strip().splitlines()[0] if data.error not in (None, "") else ""
    error = f": {one_line(first, width)}" if first else ""
    return "fail", f"✗ {name} failed {took}".rstrip() + error


def _ended(data: SessionEnded) -> tuple[str, str]:
    if data.timed_out:
        head = "timed out"
    elif data.signal is not None:
        head = f"killed by signal {data.signal}"
    elif data.exit_status is None:
        head = "ended"
    else:
        head = f"exit {data.exit_status}"
    extras = [format_duration(data.duration)]
    details = data.details
    if isinstance(details.get("turns"), int):
        extras.append(f"{details['turns']} turns")
    if isinstance(details.get("cost_usd"), int | float):
        extras.append(f"${details['cost_usd']:.4f}")
    dropped = sum(v for v in data.dropped.values() if isinstance(v, int))
    if dropped:
        extras.append(f"{dropped} dropped")
    ok = data.exit_status == 0 and not data.timed_out
    return ("ok" if ok else "fail"), f"■ {head} ({', '.join(e for e in extras if e)})"


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)
