"""Exception groups from nurseries, reduced to what they hold.

Trio's nurseries wrap every error in a :class:`BaseExceptionGroup` (strict groups), so an
error from a task arrives nested once per nursery it crossed. Callers that report an error
or map it to an exit status want the error itself when there is only one.
"""

from __future__ import annotations


def single(exc: BaseException) -> BaseException:
    """The one exception a chain of single-exception groups holds, else ``exc`` itself
    (a group of several is returned as the innermost such group)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def lone_leaf(exc: BaseException) -> BaseException | None:
    """The only exception in ``exc`` that is not a group, however nested, or None when it
    holds several."""
    leaves: list[BaseException] = []
    stack = [exc]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(item.exceptions)
        else:
            leaves.append(item)
    return leaves[0] if len(leaves) == 1 else None
