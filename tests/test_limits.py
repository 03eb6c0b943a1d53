"""The limits on documents from outside: one check, the same numbers at every entry."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_stream.events import EventValidationError, event_from_json, event_to_json
from trio_stream.limits import (
    MAX_DEPTH,
    MAX_STRING,
    MAX_VALUES,
    LimitError,
    check_value,
    over_limits,
    text_may_exceed,
)


def nested_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_the_deepest_document_allowed_passes_and_one_level_more_is_refused() -> None:
    check_value(nested_list(MAX_DEPTH))
    with pytest.raises(LimitError, match=f"nested deeper than {MAX_DEPTH} levels"):
        check_value(nested_list(MAX_DEPTH + 1))


def test_any_depth_is_refused_without_exhausting_the_stack() -> None:
    with pytest.raises(LimitError):
        check_value(nested_list(200_000))


def test_values_are_counted_across_every_level() -> None:
    check_value([[0] * 1000] * (MAX_VALUES // 1001))
    with pytest.raises(LimitError, match=f"more than {MAX_VALUES} values"):
        check_value({"a": [0] * MAX_VALUES, "b": [0]})


def test_long_strings_are_refused_wherever_they_are() -> None:
    long = "x" * (MAX_STRING + 1)
    for value in (long, [long], {"k": {"k": long}}, {long: 1}):
        with pytest.raises(LimitError, match="longer than"):
            check_value(value)
    check_value("x" * MAX_STRING)


def test_scalars_and_tuples_are_checked_like_lists() -> None:
    for scalar in (None, 1, 1.5, True, "s", b"b"):
        check_value(scalar)
    with pytest.raises(LimitError):
        check_value((nested_list(MAX_DEPTH),))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=30,
)


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


@settings(max_examples=200, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=MAX_DEPTH + 5))
def test_a_document_is_refused_exactly_when_it_nests_deeper_than_the_limit(
    value: Any, wrap: int
) -> None:
    for _ in range(wrap):
        value = [value]
    text = orjson.dumps(value).decode()
    refused = depth_of(value) > MAX_DEPTH
    assert (over_limits(text, value) is not None) == refused
    if refused:
        assert text_may_exceed(text)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=MAX_DEPTH + 100))
def test_an_event_within_the_limit_serializes_and_one_beyond_is_refused_by_name(
    depth: int,
) -> None:
    payload = '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)
    line = (
        '{"id":"i","session":"s","offset":0,"type":"custom","ts":1.0,'
        '"data":{"name":"n","payload":' + payload + "}}"
    )
    if depth <= MAX_DEPTH:
        event = event_from_json(line)
        assert orjson.loads(event_to_json(event))["data"]["payload"] == orjson.loads(payload)
    else:
        with pytest.raises(EventValidationError) as refused:
            event_from_json(line)
        assert refused.value.errors == [f"data.payload: nested deeper than {MAX_DEPTH} levels"]
