"""What the property-based tests of parsers share: their settings, and JSON values as a
decoder gives them."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Objects drawn from rich strategies cost more to make than to parse: fewer of them.
FUZZ_OBJECTS = settings(FUZZ, max_examples=100)


def json_values(
    texts: st.SearchStrategy[str] | None = None, keys: st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[Any]:
    """What orjson decodes: integers within 64 bits (signed or not), finite floats, and
    small lists and objects of them."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | (st.text() if texts is None else texts),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text() if keys is None else keys, inner, max_size=4)
        ),
        max_leaves=8,
    )
