"""Processors turn a session's lines into typed events; transforms change lines first.

* :class:`JsonLinesProcessor` (``--format jsonl``), :class:`YamlStreamProcessor`
  (``--format yaml``) and the :class:`ClaudeProfile` agent profile (``--format claude``);
* :class:`PatternMatcher` (``--match``);
* :class:`LineFilter`, :class:`Redactor` (line transforms: ``--filter``, ``--redact``) and
  :class:`TypeFiltered` (``--filter`` by event type).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .base import (
    Completion,
    LineBatch,
    LineTransform,
    ReportsSessionDetails,
    StreamProcessor,
)
from .filters import REDACTED, LineFilter, Redactor, TypeFilter, TypeFiltered, parse_filter
from .patterns import NamedPattern, PatternError, PatternMatcher, make_pattern, parse_match

if TYPE_CHECKING:
    from .claude import ClaudeProfile
    from .jsonlines import TYPED_NAMES, JsonLinesProcessor, typed_payload
    from .yamlstream import YamlStreamProcessor

    FORMATS: Final[dict[str, Callable[[], StreamProcessor] | None]]
    """``--format`` names and the processor each adds (``text`` adds none)."""

FORMAT_NAMES: Final[tuple[str, ...]] = ("text", "jsonl", "yaml", "claude")
"""The ``--format`` names (see :data:`FORMATS`)."""

# The document processors are loaded on first use: a run that reads text does not pay
# for them (the YAML one imports ruamel.yaml).
_LAZY: Final = {
    "ClaudeProfile": "claude",
    "JsonLinesProcessor": "jsonlines",
    "TYPED_NAMES": "jsonlines",
    "typed_payload": "jsonlines",
    "YamlStreamProcessor": "yamlstream",
}


def _formats() -> dict[str, Callable[[], StreamProcessor] | None]:
    from .claude import ClaudeProfile
    from .jsonlines import JsonLinesProcessor
    from .yamlstream import YamlStreamProcessor

    return {
        "text": None,
        "jsonl": JsonLinesProcessor,
        "yaml": YamlStreamProcessor,
        "claude": ClaudeProfile,
    }


def __getattr__(name: str) -> Any:
    if name == "FORMATS":
        value: Any = _formats()
    elif name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "FORMATS",
    "FORMAT_NAMES",
    "REDACTED",
    "TYPED_NAMES",
    "ClaudeProfile",
    "Completion",
    "JsonLinesProcessor",
    "LineBatch",
    "LineFilter",
    "LineTransform",
    "NamedPattern",
    "PatternError",
    "PatternMatcher",
    "Redactor",
    "ReportsSessionDetails",
    "StreamProcessor",
    "TypeFilter",
    "TypeFiltered",
    "YamlStreamProcessor",
    "make_pattern",
    "parse_filter",
    "parse_match",
    "typed_payload",
]
