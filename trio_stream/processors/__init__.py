"""Processors turn a session's lines into typed events; transforms change lines first.

* :class:`JsonLinesProcessor` (``--format jsonl``), :class:`YamlStreamProcessor`
  (``--format yaml``) and the :class:`ClaudeProfile` agent profile (``--format claude``);
* :class:`PatternMatcher` (``--match``);
* :class:`LineFilter`, :class:`Redactor` (line transforms: ``--filter``, ``--redact``) and
  :class:`TypeFiltered` (``--filter`` by event type).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .base import (
    Completion,
    LineBatch,
    LineTransform,
    ReportsSessionDetails,
    StreamProcessor,
)
from .claude import ClaudeProfile
from .filters import REDACTED, LineFilter, Redactor, TypeFilter, TypeFiltered, parse_filter
from .jsonlines import TYPED_NAMES, JsonLinesProcessor, typed_payload
from .patterns import NamedPattern, PatternError, PatternMatcher, make_pattern, parse_match
from .yamlstream import YamlStreamProcessor

FORMATS: Final[dict[str, Callable[[], StreamProcessor] | None]] = {
    "text": None,
    "jsonl": JsonLinesProcessor,
    "yaml": YamlStreamProcessor,
    "claude": ClaudeProfile,
}
"""``--format`` names and the processor each adds (``text`` adds none)."""

__all__ = [
    "FORMATS",
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
