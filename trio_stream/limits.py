"""The limits on documents that enter from outside, one number each, used everywhere.

Every document that reaches an event from outside tstream (a published event over REST
or the publishing WebSocket, a WebSocket client message, a line of ``tstream import``, a
line parsed by the ``jsonl``, ``yaml`` and ``claude`` profiles) is held to the same
limits, so that no single event can exhaust the interpreter's stack or take long to
serialize for every client:

- :data:`MAX_DEPTH` levels of lists and objects inside one field of an event's data.
  Serializing walks the nesting (orjson stops at 254 levels, the unstructuring of typed
  payloads recurses in Python); an event wraps its data in three more levels.
- :data:`MAX_VALUES` values in one field, counting every element of every list and
  object (and, for YAML, every value an alias expands to).
- :data:`MAX_STRING` characters in one string.

:func:`check_value` checks one value without recursion, so that a document of any depth
is refused with a message rather than a :class:`RecursionError`.
"""

from __future__ import annotations

from typing import Any, Final

MAX_DEPTH: Final = 200
"""The deepest nesting of lists and objects kept in one field of an event's data."""
MAX_VALUES: Final = 1_000_000
"""The most values (nested ones included) in one field of an event's data."""
MAX_STRING: Final = 16 * 1024 * 1024
"""The longest string (in characters) in an event's data."""


_CONTAINERS: Final = (dict, list, tuple)


class LimitError(ValueError):
    """A document over one of the limits; the message says which, without a field name
    (the caller prefixes where the value was found)."""


def check_value(value: Any) -> None:
    """Check that ``value`` (plain JSON-like data) is within the limits.

    Scalars cost one class test; lists, tuples and objects are walked iteratively.

    Raises:
        LimitError: naming the limit that ``value`` exceeds.
    """
    kind = value.__class__
    if kind is str:
        if len(value) > MAX_STRING:
            raise LimitError(f"a string longer than {MAX_STRING} characters")
        return
    if not isinstance(value, _CONTAINERS):
        return
    count = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop = stack.pop
    push = stack.append
    while stack:
        item, depth = pop()
        is_dict = isinstance(item, dict)
        children = item.values() if is_dict else item
        count += len(children)
        if count > MAX_VALUES:
            raise LimitError(f"more than {MAX_VALUES} values")
        for child in children:
            kind = child.__class__
            if kind is dict or kind is list or (kind is not str and isinstance(child, _CONTAINERS)):
                if depth >= MAX_DEPTH:
                    raise LimitError(f"nested deeper than {MAX_DEPTH} levels")
                push((child, depth + 1))
            elif kind is str and len(child) > MAX_STRING:
                raise LimitError(f"a string longer than {MAX_STRING} characters")
        if is_dict:
            for key in item:
                if key.__class__ is str and len(key) > MAX_STRING:
                    raise LimitError(f"a key longer than {MAX_STRING} characters")


def text_may_exceed(text: str) -> bool:
    """Whether the document of the JSON ``text`` could be over a limit, so that it must
    be checked with :func:`check_value`. Each level of nesting opens with a bracket and
    each value takes a character, so most texts are cleared without walking a document.
    """
    size = len(text)
    if size <= 2 * MAX_DEPTH:
        return False
    return size > MAX_VALUES or text.count("{") + text.count("[") > MAX_DEPTH


def over_limits(text: str, document: Any) -> str | None:
    """Why the document parsed from the JSON ``text`` is over a limit, or None."""
    if not text_may_exceed(text):
        return None
    try:
        check_value(document)
    except LimitError as exc:
        return str(exc)
    return None
