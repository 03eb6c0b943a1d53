"""Exception groups reduced to what they hold."""

from __future__ import annotations

from trio_stream.groups import lone_leaf, single


def test_single_unwraps_chains_of_one_and_stops_at_several() -> None:
    error = ValueError("x")
    assert single(error) is error
    assert single(BaseExceptionGroup("a", [ExceptionGroup("b", [error])])) is error
    several = ExceptionGroup("b", [error, KeyError("k")])
    assert single(ExceptionGroup("a", [several])) is several


def test_lone_leaf_finds_the_only_error_however_nested() -> None:
    error = OSError("refused")
    nested = ExceptionGroup("a", [ExceptionGroup("b", [ExceptionGroup("c", [error])])])
    assert lone_leaf(nested) is error
    assert lone_leaf(ExceptionGroup("a", [error, ExceptionGroup("b", [KeyError()])])) is None
    assert lone_leaf(error) is error
