"""Durations as people write them: ``1.5``, ``500ms``, ``30s``, ``5m``, ``2h``, ``7d``."""

from __future__ import annotations

import math
import re
from typing import Any, Final

import click

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)?\s*")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; a bare number is seconds.

    Raises:
        ValueError: naming the text, for anything else (negative, empty, unknown unit).
    """
    match = _DURATION_RE.fullmatch(text)
    if not match:
        raise ValueError(
            f"invalid duration {text!r}: use a number of seconds or a number with a unit "
            "(500ms, 30s, 5m, 2h, 7d)"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r}: too large")
    return seconds


class Duration(click.ParamType):
    """A click parameter type for :func:`parse_duration`."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION: Final = Duration()
