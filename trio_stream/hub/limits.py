"""Rate limits, sans-IO: token buckets keyed by client, with the clock passed in.

A :class:`TokenBucket` refills ``rate`` tokens per second up to ``burst``;
:meth:`TokenBucket.take` either spends tokens or says how long to wait (the
``Retry-After`` of a 429). :class:`KeyedLimiter` keeps one bucket per key (a client
address, a publisher) and forgets the least recently used beyond ``max_keys``, so a
flood of addresses cannot grow it without bound.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Final, final

DEFAULT_MAX_KEYS: Final = 10_000


@final
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up.

    Raises:
        ValueError: for a rate or burst that is not positive.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number, not {rate!r}")
        if not (burst > 0 and math.isfinite(burst)):
            raise ValueError(f"burst must be a positive number, not {burst!r}")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, count: float = 1.0) -> float:
        """Spend ``count`` tokens if there are enough.

        Returns:
            0.0 when spent; otherwise the seconds to wait until they would be (nothing
            is spent). A request larger than ``burst`` waits as if the bucket were empty
            and full again.
        """
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        needed = min(count, self.burst)
        if self.tokens >= needed:
            self.tokens -= count
            return 0.0
        return (needed - self.tokens) / self.rate


@final
class KeyedLimiter:
    """One :class:`TokenBucket` per key.

    Args:
        rate: tokens per second for each key.
        burst: tokens a key may save up.
        max_keys: keys remembered; the least recently used are forgotten first.
    """

    def __init__(self, rate: float, burst: float, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        TokenBucket(rate, burst, 0.0)
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float, count: float = 1.0) -> float:
        """Spend ``count`` tokens of ``key``'s bucket; the seconds to wait, or 0.0."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        wait = bucket.take(now, count)
        if wait:
            self.refused += 1
        return wait

    @classmethod
    def per_minute(cls, count: float, **kwargs: int) -> KeyedLimiter:
        """``count`` per minute, bursting to a tenth of a minute's worth (at least 5)."""
        return cls(count / 60.0, max(5.0, count / 10.0), **kwargs)


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
