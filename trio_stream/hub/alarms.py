"""Alarms: one task wakes every client whose deadline (next heartbeat, idle limit) is due.

A client that waits for its next frame under its own ``move_on_at`` puts a deadline into
trio's heap and takes it out again each time it is woken; with a thousand clients woken
every tick, that was a sixth of the hub's time. A client's deadline changes only when a
heartbeat goes out or an answer comes back, so it is handed to the alarms once per change
and the wait itself is a bare :meth:`trio.Event.wait`.

The task runs (in the broker's nursery) only while some alarm is set, so a broker with no
clients owns no task.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from typing import Protocol

import trio

logger = logging.getLogger("trio_stream.hub")


class Sleeper(Protocol):
    def alarm(self) -> None:
        """The deadline it was set for has come (called once per :meth:`Alarms.set`)."""


class Alarms:
    """Deadlines of many sleepers, kept by one task started in ``nursery`` on demand."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._heap: list[tuple[float, int, Sleeper]] = []
        self._set: dict[Sleeper, float] = {}
        self._order = itertools.count()
        self._next = math.inf
        self._changed = trio.Event()
        self._running = False

    def __len__(self) -> int:
        return len(self._set)

    def set(self, sleeper: Sleeper, deadline: float) -> None:
        """Call ``sleeper.alarm()`` at ``deadline`` (trio's clock), replacing its alarm."""
        if self._set.get(sleeper) == deadline:
            return
        self._set[sleeper] = deadline
        # A replaced alarm stays in the heap, ignored when it comes up.
        heapq.heappush(self._heap, (deadline, next(self._order), sleeper))
        if not self._running:
            self._running = True
            self._nursery.start_soon(self._run)
        elif deadline < self._next:
            self._changed.set()

    def cancel(self, sleeper: Sleeper) -> None:
        """Forget ``sleeper``'s alarm, if any."""
        if self._set.pop(sleeper, None) is not None and not self._set:
            self._changed.set()

    async def _run(self) -> None:
        heap = self._heap
        try:
            while self._set:
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    deadline, _, sleeper = heapq.heappop(heap)
                    if self._set.get(sleeper) == deadline:
                        del self._set[sleeper]
                        try:
                            sleeper.alarm()
                        except Exception:
                            # One client's fault must not stop the alarms of the others
                            # (nor the broker's nursery, which serves every stream).
                            logger.exception("a client's alarm failed; it is not set again")
                # Entries of replaced or cancelled alarms are dropped as they come up.
                while heap and self._set.get(heap[0][2]) != heap[0][0]:
                    heapq.heappop(heap)
                self._next = heap[0][0] if heap else math.inf
                self._changed = trio.Event()
                if not self._set:
                    break
                with trio.move_on_at(self._next):
                    await self._changed.wait()
        finally:
            self._running = False
            self._next = math.inf
            if not self._set:
                heap.clear()
