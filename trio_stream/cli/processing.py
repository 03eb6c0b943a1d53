"""Click options that configure processors and transforms for ``tstream run``.

``processor_options`` adds the options to a command; ``build_pipeline`` turns their values,
together with the ``run:`` section of the configuration file, into processors and line
transforms. Lists (``--match``, ``--redact``, ``--filter``) add to the file's; ``--format``
replaces its ``format``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs
import click

from ..config import RUN_KEYS, ConfigError, ConfigFile, Section, load_config
from ..events import EventType
from ..processors import FORMAT_NAMES
from ..processors.base import LineTransform, StreamProcessor
from ..processors.filters import LineFilter, Redactor, TypeFiltered, parse_filter
from ..processors.patterns import (
    NamedPattern,
    PatternError,
    PatternMatcher,
    compile_regex,
    make_pattern,
    parse_match,
)


@attrs.define
class Pipeline:
    """What the processing options ask for.

    Attributes:
        processors: the processors, each fed every batch through its own channel.
        transforms: the line transforms, applied in order before anything is recorded.
        config: the configuration file read, if any (other sections are read from it).
    """

    processors: list[StreamProcessor] = attrs.Factory(list)
    transforms: list[LineTransform] = attrs.Factory(list)
    config: ConfigFile | None = None


def processor_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the processing options to a click command (they arrive as keyword arguments)."""
    options = [
        click.option(
            "--format",
            "format",
            type=click.Choice(FORMAT_NAMES),
            default=None,
            help="How to read stdout: text (lines only, the default), jsonl (one JSON "
            "document per line), yaml (documents separated by ---), claude (Claude Code's "
            "stream-json output).",
        ),
        click.option(
            "--match",
            "match",
            multiple=True,
            metavar="NAME[:TYPE][@LEVEL]=REGEX",
            help="Emit an event for each line REGEX matches (repeatable). TYPE is match "
            "(default), status, error, reasoning or custom; LEVEL is debug, info, notice, "
            "warning, error or critical.",
        ),
        click.option(
            "--redact",
            "redact",
            multiple=True,
            metavar="REGEX",
            help="Replace what REGEX matches (only its groups, if it has any) with "
            "[REDACTED] before anything is recorded or served (repeatable).",
        ),
        click.option(
            "--filter",
            "filter",
            multiple=True,
            metavar="keep|drop:source|regex|type=VALUE",
            help="Keep or leave out lines by source or regex, or derived events by type "
            "(comma-separated values; repeatable, all apply).",
        ),
        click.option(
            "--config",
            "config",
            type=click.Path(dir_okay=False),
            default=None,
            metavar="FILE",
            help="Configuration file (default: $XDG_CONFIG_HOME/tstream/config.yaml if it exists).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def build_pipeline(**options: Any) -> Pipeline:
    """Build the processors and transforms that the processing options ask for.

    Args:
        options: the values of :func:`processor_options` (others are ignored):
            ``format``, ``match``, ``redact``, ``filter`` and ``config``.

    Raises:
        click.UsageError: for a bad value (a regex that does not compile, a bad config file),
            naming it.
    """
    try:
        config = load_config(options.get("config"))
        section = config.section("run") if config is not None else None
        if section is not None:
            section.check_keys(RUN_KEYS)
        return _build(section, config, options)
    except (ConfigError, PatternError) as exc:
        raise click.UsageError(str(exc)) from None


def _build(section: Section | None, config: ConfigFile | None, options: dict[str, Any]) -> Pipeline:
    fmt = options.get("format")
    if fmt is None and section is not None:
        fmt = section.get_choice("format", FORMAT_NAMES)
    patterns = _config_patterns(section) + [parse_match(m) for m in options.get("match") or ()]
    redactions = _config_strings(section, "redact", _redaction)
    redactions += [compile_regex(r, "--redact") for r in options.get("redact") or ()]
    filters = _config_strings(section, "filter", parse_filter)
    filters += [parse_filter(f) for f in options.get("filter") or ()]

    processors: list[StreamProcessor] = []
    if fmt not in (None, "text"):
        # Loaded only when asked for: see trio_stream.processors.
        from ..processors import FORMATS

        factory = FORMATS[fmt]
        if factory is not None:
            processors.append(factory())
    if patterns:
        names = [p.name for p in patterns]
        for name in names:
            if names.count(name) > 1:
                raise PatternError(f"two patterns are named {name!r}")
        processors.append(PatternMatcher(patterns))
    dropped: set[EventType] = set()
    transforms: list[LineTransform] = []
    for item in filters:
        if isinstance(item, LineFilter):
            transforms.append(item)
        else:
            dropped |= item.drop
    if dropped:
        processors = [TypeFiltered(p, dropped) for p in processors]
    if redactions:
        transforms.append(Redactor(redactions))
    return Pipeline(processors, transforms, config)


def _redaction(value: str) -> Any:
    return compile_regex(value, "redact")


def _config_strings(section: Section | None, key: str, parse: Callable[[str], Any]) -> list[Any]:
    if section is None:
        return []
    out = []
    for index, value in enumerate(section.get_list(key)):
        if not isinstance(value, str):
            raise section.error(key, "expected a string", index)
        try:
            out.append(parse(value))
        except PatternError as exc:
            raise section.error(key, str(exc), index) from None
    return out


_PATTERN_KEYS: Final = frozenset({"name", "regex", "type", "level"})


def _config_patterns(section: Section | None) -> list[NamedPattern]:
    if section is None:
        return []
    out = []
    items: Sequence[Any] = section.get_list("match")
    for index, value in enumerate(items):
        try:
            if isinstance(value, str):
                out.append(parse_match(value))
                continue
            item = section.child("match", index)
            item.check_keys(_PATTERN_KEYS)
            name, regex = item.get_str("name"), item.get_str("regex")
            if name is None or regex is None:
                missing = "name" if name is None else "regex"
                raise item.error(None, f"a pattern needs {missing!r}")
            try:
                compile_regex(regex, f"pattern {name!r}")
            except PatternError as exc:
                raise item.error("regex", str(exc)) from None
            try:
                out.append(make_pattern(name, regex, item.get_str("type"), item.get_str("level")))
            except PatternError as exc:
                raise item.error(None, str(exc)) from None
        except PatternError as exc:
            raise section.error("match", str(exc), index) from None
    return out
