"""Per-caller request rates: a token bucket per principal (or per address for the public).

Buckets live in the worker process: with N workers a caller gets up to N times the rate in
all, which the configuration documents. The table is bounded, so a flood of distinct callers
cannot grow memory without end: the buckets idle longest go first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict


class RateLimiter:
    def __init__(self, per_minute: int, *, max_callers: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.max_callers = max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def active(self) -> bool:
        return self.capacity > 0

    def take(self, caller: str, now: float | None = None) -> int:
        """0 when ``caller`` may go on (one token taken), else the seconds until it may."""
        if not self.active:
            return 0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(caller, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now)
            wait = 0
        else:
            self._buckets[caller] = (tokens, now)
            wait = max(1, math.ceil((1.0 - tokens) / self.rate))
        while len(self._buckets) > self.max_callers:
            self._buckets.popitem(last=False)
        return wait
