"""Alarms: one task wakes each sleeper at its deadline, and exists only while one is set."""

import trio

from trio_stream.hub.alarms import Alarms


class Sleeper:
    def __init__(self, name, rang):
        self.name = name
        self.rang = rang

    def alarm(self):
        self.rang.append((self.name, trio.current_time()))


async def test_each_sleeper_is_woken_at_its_deadline_in_order(autojump_clock):
    rang = []
    async with trio.open_nursery() as nursery:
        alarms = Alarms(nursery)
        start = trio.current_time()
        a, b, c = Sleeper("a", rang), Sleeper("b", rang), Sleeper("c", rang)
        alarms.set(a, start + 3)
        alarms.set(b, start + 1)
        await trio.sleep(0.5)
        # An earlier deadline set while the task sleeps toward a later one still counts.
        alarms.set(c, start + 0.75)
    assert rang == [("c", start + 0.75), ("b", start + 1), ("a", start + 3)]
    # The nursery closed by itself: nothing is set, so no task is left.
    assert len(alarms) == 0


async def test_a_replaced_or_cancelled_alarm_does_not_ring(autojump_clock):
    rang = []
    async with trio.open_nursery() as nursery:
        alarms = Alarms(nursery)
        start = trio.current_time()
        a, b = Sleeper("a", rang), Sleeper("b", rang)
        alarms.set(a, start + 1)
        alarms.set(a, start + 2)
        alarms.set(b, start + 5)
        alarms.cancel(b)
        alarms.cancel(b)
    assert rang == [("a", start + 2)]
    # Cancelling the last alarm ends the task at once, not at the cancelled deadline.
    assert trio.current_time() == start + 2


async def test_the_task_starts_again_for_alarms_set_after_it_ended(autojump_clock):
    rang = []
    async with trio.open_nursery() as nursery:
        alarms = Alarms(nursery)
        sleeper = Sleeper("a", rang)
        alarms.set(sleeper, trio.current_time() + 1)
        await trio.sleep(2)
        alarms.set(sleeper, trio.current_time() + 1)
        # A deadline that has passed rings at once.
        other = Sleeper("b", rang)
        alarms.set(other, trio.current_time() - 1)
    assert [name for name, _ in rang] == ["a", "b", "a"]
