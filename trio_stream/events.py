"""The event model: one set of attrs classes, one cattrs converter, orjson bytes.

Every event a session produces, a captured line as much as a tool call reported by an
agent, is an :class:`Event`: the session id, a dense integer ``offset`` within the session
(assigned when the event joins the session's log), an event ``id``, a ``type``, a UTC
timestamp ``ts`` (seconds since the Unix epoch) and a ``data`` payload whose class the
type decides (:data:`PAYLOADS`).

The same event is used on the CLI, in the store, on the wire and in the dashboard::

    {"id": "…", "session": "build-1", "offset": 42, "type": "output", "ts": 1763857000.25,
     "data": {"source": "stdout", "text": "compiling…", "eol": "\\n", "line": 40}}

Data coming from outside (the hub, an import) is checked by :func:`event_from_dict` and
:func:`event_from_json`, which raise :class:`EventValidationError` naming the bad field.
"""

from __future__ import annotations

import base64
import enum
import os
import time
import types
import typing
from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any, Final, Literal, TypeAlias, final

import attrs
import cattrs
import orjson
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

from .limits import LimitError, check_value

Source: TypeAlias = Literal["stdout", "stderr"]
SOURCES: Final[tuple[str, ...]] = ("stdout", "stderr")


class EventType(enum.StrEnum):
    """What an event means; its value is the wire name."""

    OUTPUT = "output"
    SESSION_STARTED = "session_started"
    SESSION_ENDED = "session_ended"
    COMMAND_STARTED = "command_started"
    COMMAND_COMPLETED = "command_completed"
    COMMAND_FAILED = "command_failed"
    REASONING = "reasoning"
    SCREENSHOT = "screenshot"
    VARIABLE_UPDATE = "variable_update"
    STATUS = "status"
    ERROR = "error"
    MATCH = "match"
    JSON = "json"
    CUSTOM = "custom"


class EventValidationError(ValueError):
    """An event (or its data) from outside does not fit the model.

    Attributes:
        errors: one message per problem, each naming the field (``data.exit_status``).
    """

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


# -- payloads -------------------------------------------------------------------------


@final
@attrs.frozen
class Output:
    """A captured line. ``line`` is its dense per-session line number (from 0).

    ``raw`` holds the exact bytes (base64 on the wire) when they are not valid UTF-8.
    ``partial`` marks every piece but the last of a line cut at the maximum length.
    """

    source: Source
    text: str
    eol: str = "\n"
    line: int = -1
    partial: bool = False
    raw: bytes | None = None


@final
@attrs.frozen
class SessionStarted:
    command: list[str]
    cwd: str = ""
    pid: int | None = None
    mode: Literal["pipes", "merge", "pty"] = "pipes"
    hostname: str = ""
    metadata: dict[str, Any] = attrs.Factory(dict)


@final
@attrs.frozen
class SessionEnded:
    """How a session ended.

    ``exit_status`` follows the shell convention (128+N for a child killed by signal N, 124 on
    timeout unless the status was preserved); ``signal`` is N. ``dropped`` counts, per
    processor, what overflow policies kept from it (never from the record). ``details``
    carries what a profile learned (cost, turns, token usage).
    """

    exit_status: int | None
    signal: int | None = None
    timed_out: bool = False
    duration: float = 0.0
    dropped: dict[str, int] = attrs.Factory(dict)
    interrupted: bool = False
    lines: int = 0
    details: dict[str, Any] = attrs.Factory(dict)


@final
@attrs.frozen
class Command:
    """A command, tool call or action: started, completed or failed.

    ``call_id`` ties a completion or failure to its start; ``duration`` is in seconds.
    """

    name: str
    action: str | None = None
    parameters: dict[str, Any] = attrs.Factory(dict)
    call_id: str | None = None
    result: Any = None
    error: Any = None
    context: dict[str, Any] = attrs.Factory(dict)
    duration: float | None = None


@final
@attrs.frozen
class Reasoning:
    thought: str
    confidence: float | None = None
    kind: str | None = None
    context: dict[str, Any] = attrs.Factory(dict)


@final
@attrs.frozen
class Screenshot:
    """An image: a ``path`` or ``url``, with an optional small inline ``thumbnail``."""

    path: str | None = None
    url: str | None = None
    mime_type: str = "image/png"
    width: int | None = None
    height: int | None = None
    thumbnail: bytes | None = None
    caption: str | None = None


@final
@attrs.frozen
class VariableUpdate:
    name: str
    value: Any = None
    previous: Any = None


@final
@attrs.frozen
class Status:
    status: str
    kind: str = "status"
    message: str | None = None


@final
@attrs.frozen
class Error:
    message: str
    code: str = "error"
    context: dict[str, Any] = attrs.Factory(dict)


@final
@attrs.frozen
class Match:
    """A named pattern matched a line (``line`` is its line number, ``text`` its text)."""

    pattern: str
    groups: dict[str, str | None] = attrs.Factory(dict)
    text: str = ""
    source: Source = "stdout"
    line: int = -1
    level: str | None = None


@final
@attrs.frozen
class Json:
    """A parsed JSON or YAML document that no profile claimed."""

    document: Any
    format: Literal["json", "yaml"] = "json"
    source: Source = "stdout"
    line: int = -1


@final
@attrs.frozen
class Custom:
    """Anything else: ``name`` says what, ``payload`` carries it."""

    name: str = "custom"
    payload: Any = None


Payload: TypeAlias = (
    Output
    | SessionStarted
    | SessionEnded
    | Command
    | Reasoning
    | Screenshot
    | VariableUpdate
    | Status
    | Error
    | Match
    | Json
    | Custom
)

PAYLOADS: Final[Mapping[EventType, type]] = {
    EventType.OUTPUT: Output,
    EventType.SESSION_STARTED: SessionStarted,
    EventType.SESSION_ENDED: SessionEnded,
    EventType.COMMAND_STARTED: Command,
    EventType.COMMAND_COMPLETED: Command,
    EventType.COMMAND_FAILED: Command,
    EventType.REASONING: Reasoning,
    EventType.SCREENSHOT: Screenshot,
    EventType.VARIABLE_UPDATE: VariableUpdate,
    EventType.STATUS: Status,
    EventType.ERROR: Error,
    EventType.MATCH: Match,
    EventType.JSON: Json,
    EventType.CUSTOM: Custom,
}


def new_event_id() -> str:
    """A random, URL-safe event id (16 bytes of entropy)."""
    return base64.urlsafe_b64encode(os.urandom(12)).decode()


@final
@attrs.frozen
class Event:
    """One event of a session. ``offset`` is -1 until the session's log assigns it."""

    type: EventType
    data: Payload
    session: str = ""
    offset: int = -1
    id: str = attrs.Factory(new_event_id)
    ts: float = attrs.Factory(time.time)

    def with_offset(self, session: str, offset: int) -> Event:
        """The same event, placed at ``offset`` of ``session``."""
        return attrs.evolve(self, session=session, offset=offset)


def new_event_ids(count: int) -> list[str]:
    """``count`` event ids like :func:`new_event_id`'s, from one read of the entropy source."""
    if count <= 0:
        return []
    # 12 random bytes are exactly 16 base64 characters, so one encoding can be sliced.
    text = base64.urlsafe_b64encode(os.urandom(12 * count)).decode()
    return [text[i : i + 16] for i in range(0, 16 * count, 16)]


def placed_events(
    type: EventType | Sequence[EventType],
    payloads: Sequence[Payload],
    session: str,
    first_offset: int,
    ts: float,
) -> list[Event]:
    """Events already placed at consecutive offsets from ``first_offset``.

    The bulk path for processors: one entropy read for all ids, one timestamp, and events
    that :meth:`~trio_stream.log.SessionLog.append` keeps as they are instead of copying.
    The caller vouches that each payload is its type's payload class.

    Args:
        type: the type of every event, or one type per payload.
        payloads: the payloads.
        session: the session id.
        first_offset: the offset of the first event.
        ts: the timestamp of every event.
    """
    count = len(payloads)
    types = repeat(type, count) if isinstance(type, EventType) else type
    return list(
        map(
            Event,
            types,
            payloads,
            repeat(session, count),
            range(first_offset, first_offset + count),
            new_event_ids(count),
            repeat(ts, count),
        )
    )


def make_event(type: EventType | str, data: Payload, **fields: Any) -> Event:
    """An event of ``type``, checking that ``data`` is that type's payload class."""
    etype = EventType(type)
    expected = PAYLOADS[etype]
    if not isinstance(data, expected):
        raise EventValidationError(
            [f"data: a {etype.value} event takes {expected.__name__}, not {type_name(data)}"]
        )
    return Event(etype, data, **fields)


def type_name(value: object) -> str:
    return type(value).__name__


# -- the converter --------------------------------------------------------------------

converter: Final = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)


def _structure_bytes(value: Any, _: type) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise TypeError(f"expected base64 text, got {type_name(value)}")
    return base64.b64decode(value, validate=True)


converter.register_unstructure_hook(bytes, lambda b: base64.b64encode(b).decode())
converter.register_structure_hook(bytes, _structure_bytes)


def _structure_any(value: Any, _: type) -> Any:
    check_value(value)
    return value


converter.register_structure_hook(Any, _structure_any)  # type: ignore[arg-type]


def _strict(kind: type) -> Any:
    """Structure hooks that refuse what Python would silently coerce ("3" for an int)."""

    def hook(value: Any, _: type) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise TypeError(f"expected {kind.__name__}, got {type_name(value)}")
        return value

    return hook


for _kind in (str, int, float, bool):
    converter.register_structure_hook(_kind, _strict(_kind))


def _structure_dict(value: Any, kind: Any) -> dict[Any, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected an object, got {type_name(value)}")
    args = typing.get_args(kind)
    if not args or args[1] is Any:
        check_value(value)
        return dict(value)
    return {k: converter.structure(v, args[1]) for k, v in value.items()}


converter.register_structure_hook_func(
    lambda kind: typing.get_origin(kind) is dict or kind is dict, _structure_dict
)


def _structure_list(value: Any, kind: Any) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected a list, got {type_name(value)}")
    args = typing.get_args(kind)
    return [converter.structure(v, args[0]) if args else v for v in value]


converter.register_structure_hook_func(
    lambda kind: typing.get_origin(kind) is list or kind is list, _structure_list
)


def _unstructure_event(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "session": event.session,
        "offset": event.offset,
        "type": event.type.value,
        "ts": event.ts,
        "data": converter.unstructure(event.data),
    }


converter.register_unstructure_hook(Event, _unstructure_event)

_EVENT_KEYS: Final = frozenset({"id", "session", "offset", "type", "ts", "data"})


def _messages(exc: BaseException, path: str) -> list[str]:
    """Flatten a cattrs error tree into ``field: problem`` messages."""
    if isinstance(exc, ForbiddenExtraKeysError):
        return [f"{path}{key}: unknown field" for key in sorted(exc.extra_fields)]
    if isinstance(exc, ClassValidationError):
        out: list[str] = []
        for sub in exc.exceptions:
            note = next((n for n in getattr(sub, "__notes__", []) if hasattr(n, "name")), None)
            name = f"{path}{note.name}" if note is not None else path.rstrip(".")
            if isinstance(sub, ClassValidationError | ForbiddenExtraKeysError):
                out.extend(_messages(sub, f"{name}."))
            elif isinstance(sub, KeyError):
                out.append(f"{name}: required field missing")
            else:
                out.append(f"{name}: {sub}")
        return out
    if isinstance(exc, cattrs.BaseValidationError):
        out = []
        for sub in exc.exceptions:
            out.extend(_messages(sub, path))
        return out
    return [f"{path.rstrip('.') or 'value'}: {exc}"]


# -- the fast path of structuring ------------------------------------------------------
#
# The converter costs several microseconds per payload, which a stream of typed JSON lines
# feels. Data of the plain JSON types that fits a payload class exactly is checked and built
# by a plan made once per class; anything else (a wrong type, an unknown field, base64
# bytes) goes through the converter, which gives the same payload or the error messages.

_BAD: Final = object()
_NONE: Final = type(None)


def _field_check(kind: Any) -> Any:
    """How a plain value of ``kind`` is checked: a tuple of the exact classes allowed, or
    a function giving the structured value or _BAD (for ``Any``: the value, within the
    limits on documents); _BAD when the kind is not plain."""
    if kind is Any:
        return _within_limits
    if kind in (str, bool, int):
        return (kind,)
    if kind is float:
        return lambda value: (
            value if value.__class__ is float else float(value) if value.__class__ is int else _BAD
        )
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin is Literal:
        allowed = frozenset(args)
        return lambda value: value if value.__class__ is str and value in allowed else _BAD
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and _NONE in args:
        inner = _field_check(args[0] if args[1] is _NONE else args[1])
        if inner.__class__ is tuple:
            return (*inner, _NONE)
        if inner is _BAD:
            return inner
        return lambda value: None if value is None else inner(value)
    if origin is dict and args and args[1] is Any:
        return lambda value: (
            dict(value) if value.__class__ is dict and _within_limits(value) is value else _BAD
        )
    return _BAD


def _within_limits(value: Any) -> Any:
    """``value`` when it is within the limits on documents from outside, else _BAD (the
    converter then names the field and the limit)."""
    kind = value.__class__
    if kind is dict or kind is list or kind is str or kind is tuple:
        try:
            check_value(value)
        except LimitError:
            return _BAD
    return value


def _plan(cls: type) -> tuple[frozenset[str], list[tuple[str, Any, bool]]] | None:
    """The field names and ``(name, check, required)`` of each field of ``cls``, if plain."""
    fields = []
    for field in attrs.fields(attrs.resolve_types(cls)):
        check = _field_check(field.type)
        if check is _BAD:
            return None
        fields.append((field.name, check, field.default is attrs.NOTHING))
    return frozenset(name for name, _, _ in fields), fields


_PLANS: Final = {cls: _plan(cls) for cls in set(PAYLOADS.values())}


def plain_fields(
    cls: type, data: Mapping[str, Any], ignore: str | None = None
) -> dict[str, Any] | None:
    """The field values of ``cls`` from plain ``data`` that fits it exactly, else None
    (the converter then decides).

    Args:
        cls: a payload class.
        data: the fields.
        ignore: a key of ``data`` that is not a field (the ``type`` of a typed document).
    """
    plan = _PLANS[cls]
    if plan is None:
        return None
    names, fields = plan
    extra = len(data) - len(names)
    if extra > 0 and (extra > 1 or ignore is None or ignore not in data):
        return None
    values = {}
    found = 0
    for name, check, required in fields:
        value = data.get(name, _BAD)
        if value is _BAD:
            if required:
                return None
            continue
        found += 1
        if check.__class__ is tuple:
            if value.__class__ not in check:
                return None
        else:
            value = check(value)
            if value is _BAD:
                return None
        values[name] = value
    if found + (ignore is not None and ignore in data) != len(data):
        return None
    return values


def typed_data(etype: EventType, document: Mapping[str, Any]) -> Payload:
    """The payload of a document that names the type ``etype`` by its ``type`` key.

    Raises:
        EventValidationError: when the document's other keys do not fit the payload.
    """
    cls = PAYLOADS[etype]
    values = plain_fields(cls, document, ignore="type")
    if values is not None:
        return cls(**values)  # type: ignore[no-any-return]
    return structure_data(etype, {k: v for k, v in document.items() if k != "type"})


def structure_data(etype: EventType, data: Any) -> Payload:
    """Check and build the payload of a ``etype`` event from plain data."""
    if not isinstance(data, Mapping):
        raise EventValidationError([f"data: expected an object, got {type_name(data)}"])
    cls = PAYLOADS[etype]
    values = plain_fields(cls, data)
    if values is not None:
        return cls(**values)  # type: ignore[no-any-return]
    try:
        return converter.structure(data, PAYLOADS[etype])  # type: ignore[no-any-return]
    except (cattrs.BaseValidationError, ForbiddenExtraKeysError) as exc:
        raise EventValidationError(_messages(exc, "data.")) from None
    except (TypeError, ValueError) as exc:
        raise EventValidationError([f"data: {exc}"]) from None


def event_from_dict(obj: Any, *, require_placement: bool = True) -> Event:
    """Build an event from plain data (a decoded JSON object), checking every field.

    Args:
        obj: the object.
        require_placement: when False, ``id``, ``session``, ``offset`` and ``ts`` may be
            missing (an event published from outside, which the hub places itself).

    Raises:
        EventValidationError: naming each bad or unknown field.
    """
    if not isinstance(obj, Mapping):
        raise EventValidationError([f"event: expected an object, got {type_name(obj)}"])
    errors = [f"{key}: unknown field" for key in sorted(set(obj) - _EVENT_KEYS)]
    raw_type = obj.get("type")
    etype: EventType | None = None
    if raw_type is None:
        errors.append("type: required field missing")
    else:
        try:
            etype = EventType(raw_type)
        except ValueError:
            errors.append(f"type: unknown event type {raw_type!r}")
    fields: dict[str, Any] = {}
    checks: tuple[tuple[str, type | tuple[type, ...]], ...] = (
        ("id", str),
        ("session", str),
        ("offset", int),
        ("ts", (int, float)),
    )
    for key, kind in checks:
        if key not in obj:
            if require_placement:
                errors.append(f"{key}: required field missing")
            continue
        value = obj[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            errors.append(f"{key}: expected {_kind_name(kind)}, got {type_name(value)}")
        else:
            fields[key] = float(value) if key == "ts" else value
    if "data" not in obj:
        errors.append("data: required field missing")
    data: Payload | None = None
    if etype is not None and "data" in obj:
        try:
            data = structure_data(etype, obj["data"])
        except EventValidationError as exc:
            errors.extend(exc.errors)
    if errors:
        raise EventValidationError(errors)
    assert etype is not None and data is not None
    return Event(etype, data, **fields)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return "number"
    return {"str": "string", "int": "integer"}.get(kind.__name__, kind.__name__)


def event_to_dict(event: Event) -> dict[str, Any]:
    """The plain-data form of ``event`` (what is serialized)."""
    return _unstructure_event(event)


def _dumps_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if attrs.has(type(value)):
        return converter.unstructure(value)
    raise TypeError(f"cannot serialize {type_name(value)}")


def event_to_json(event: Event) -> bytes:
    """``event`` as compact JSON bytes (serialize once, frame per transport)."""
    data = event.data
    if type(data) is Output and data.raw is None:
        # The hot path: a captured line. Built by hand, since this runs for every line.
        payload: Any = {
            "source": data.source,
            "text": data.text,
            "eol": data.eol,
            "line": data.line,
            "partial": data.partial,
            "raw": None,
        }
    else:
        payload = converter.unstructure(data)
    return orjson.dumps(
        {
            "id": event.id,
            "session": event.session,
            "offset": event.offset,
            "type": event.type.value,
            "ts": event.ts,
            "data": payload,
        },
        default=_dumps_default,
    )


def event_from_json(raw: bytes | str, *, require_placement: bool = True) -> Event:
    """Parse and check one JSON-encoded event.

    Raises:
        EventValidationError: for malformed JSON or any bad field.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventValidationError([f"event: malformed JSON ({exc})"]) from None
    return event_from_dict(obj, require_placement=require_placement)


def output_event(
    session: str, offset: int, line_no: int, source: Source, line: Any, ts: float
) -> Event:
    """The ``OUTPUT`` event for a :class:`~trio_stream.lines.Line`."""
    return Event(
        EventType.OUTPUT,
        Output(source, line.text, line.eol, line_no, line.partial, line.raw),
        session,
        offset,
        new_event_id(),
        ts,
    )
