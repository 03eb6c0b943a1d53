"""Channels with a capacity and an overflow policy.

:class:`OverflowBuffer` is the pure policy: a bounded FIFO that decides, when full, whether
the sender waits (``block``), the oldest item goes (``drop-oldest``), the new item goes
(``drop-newest``) or the channel fails (``fail``). :class:`PolicyChannel` is the thin trio
shell around it: one sender side, one receiver side, counting what it dropped.

``block`` is flow control: the reader that feeds a blocked channel stops reading, the pipe
fills, and the child itself is slowed, exactly as if its output went to a slow terminal.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Generic, TypeVar, final

import trio

T = TypeVar("T")


class Overflow(enum.StrEnum):
    """What a full channel does with one more item."""

    BLOCK = "block"
    DROP_OLDEST = "drop-oldest"
    DROP_NEWEST = "drop-newest"
    FAIL = "fail"


class Push(enum.Enum):
    """What :meth:`OverflowBuffer.push` did."""

    ACCEPTED = "accepted"
    DROPPED_OLDEST = "dropped-oldest"
    DROPPED_NEWEST = "dropped-newest"
    FULL = "full"  # block: nothing done, wait for room and push again
    FAILED = "failed"  # fail: the buffer is now failed


class ChannelOverflowError(Exception):
    """A ``fail`` channel was full: its receiver is stopped, its sender is not."""


@final
class OverflowBuffer(Generic[T]):
    """A bounded FIFO with an overflow policy; no I/O, no clock.

    Args:
        capacity: items held at most (at least 1).
        policy: what to do when full.
    """

    __slots__ = ("_items", "capacity", "dropped", "failed", "policy")

    def __init__(self, capacity: int, policy: Overflow | str = Overflow.BLOCK) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self.policy = Overflow(policy)
        self._items: deque[T] = deque()
        self.dropped = 0
        self.failed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def push(self, item: T) -> Push:
        """Offer ``item``; return what happened to it (or to the oldest item)."""
        if self.failed:
            self.dropped += 1
            return Push.FAILED
        if len(self._items) < self.capacity:
            self._items.append(item)
            return Push.ACCEPTED
        if self.policy is Overflow.BLOCK:
            return Push.FULL
        if self.policy is Overflow.DROP_OLDEST:
            self._items.popleft()
            self._items.append(item)
            self.dropped += 1
            return Push.DROPPED_OLDEST
        if self.policy is Overflow.DROP_NEWEST:
            self.dropped += 1
            return Push.DROPPED_NEWEST
        self.failed = True
        self.dropped += 1 + len(self._items)
        self._items.clear()
        return Push.FAILED

    def pop(self) -> T:
        """The oldest item. Raises IndexError when empty."""
        return self._items.popleft()

    def pop_all(self) -> list[T]:
        items = list(self._items)
        self._items.clear()
        return items


@final
class PolicyChannel(Generic[T]):
    """A trio channel (one producer task, one consumer task) with an overflow policy.

    The consumer's :meth:`receive` raises :class:`ChannelOverflowError` once a ``fail``
    channel overflowed, and :class:`trio.EndOfChannel` after :meth:`close` once empty.
    """

    def __init__(self, capacity: int, policy: Overflow | str = Overflow.BLOCK) -> None:
        self._buffer: OverflowBuffer[T] = OverflowBuffer(capacity, policy)
        self._closed = False
        self._has_items = trio.Event()
        self._has_room = trio.Event()
        self._has_room.set()

    @property
    def policy(self) -> Overflow:
        return self._buffer.policy

    @property
    def dropped(self) -> int:
        return self._buffer.dropped

    @property
    def failed(self) -> bool:
        return self._buffer.failed

    def __len__(self) -> int:
        return len(self._buffer)

    async def send(self, item: T) -> None:
        """Offer ``item``; waits only under ``block`` while the channel is full."""
        if self._closed:
            raise trio.ClosedResourceError("send() on a closed channel")
        while True:
            result = self._buffer.push(item)
            if result is not Push.FULL:
                break
            self._has_room = trio.Event() if self._has_room.is_set() else self._has_room
            await self._has_room.wait()
        self._has_items.set()

    def send_nowait(self, item: T) -> Push:
        """Offer ``item`` without waiting (``block`` answers FULL when there is no room)."""
        if self._closed:
            raise trio.ClosedResourceError("send_nowait() on a closed channel")
        result = self._buffer.push(item)
        if result is not Push.FULL:
            self._has_items.set()
        return result

    def close(self) -> None:
        """No more items: the receiver gets what is held, then EndOfChannel."""
        self._closed = True
        self._has_items.set()

    async def _wait_for_items(self) -> None:
        """Return once an item is held (at once, without a checkpoint, when one is).

        Raises:
            ChannelOverflowError: once a ``fail`` channel overflowed.
            trio.EndOfChannel: when the channel is closed and empty.
        """
        while True:
            if self._buffer.failed:
                raise ChannelOverflowError(
                    f"channel full ({self._buffer.capacity} items) under the fail policy"
                )
            if len(self._buffer):
                return
            if self._closed:
                raise trio.EndOfChannel
            self._has_items = trio.Event()
            await self._has_items.wait()

    async def receive_batch(self) -> list[T]:
        """Every item held (at least one), waiting for one if needed."""
        await self._wait_for_items()
        items = self._buffer.pop_all()
        self._has_room.set()
        return items

    async def receive(self) -> T:
        """The oldest item, waiting for one if needed."""
        await self._wait_for_items()
        item = self._buffer.pop()
        self._has_room.set()
        return item

    def __aiter__(self) -> PolicyChannel[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
