"""Per-caller request rates: a token bucket per principal (or per address for the public);
and failed log-ins, by name and address (``LoginLockout``).

Buckets live in the worker process: with N workers a caller gets up to N times the rate in
all, which the configuration documents. The table is bounded, so a flood of distinct callers
cannot grow memory without end: the buckets idle longest go first. Failed log-ins are kept in
the store, so every worker counts them all.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from cidade.auth.credentials import digest
from cidade.store.base import Store


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


class LoginLockout:
    """Failed log-ins, counted in the store so that every worker sees the same ones, by account
    name *and* client address: five failures of one name from one address within the window
    lock that name out for that address for the rest of it, and twenty of any names from one
    address lock the address out. Someone guessing from elsewhere therefore never locks the
    real user out; one address guessing many names is stopped as well.

    Names and addresses are kept as their SHA-256 (a password typed into the name field is not
    stored as it is), for the length of the window only."""

    def __init__(
        self,
        store: Store,
        *,
        per_name: int = 5,
        per_address: int = 20,
        window: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.per_name = per_name
        self.per_address = per_address
        self.window = window
        self.clock = clock  # wall time: shared by every worker through the store

    @staticmethod
    def _keys(name: str, address: str) -> tuple[str, str]:
        return digest(f"name:{name}"), digest(f"address:{address}")

    async def locked_for(self, name: str, address: str) -> int:
        """0 when ``name`` may try to log in from ``address``, else the seconds to wait."""
        now = self.clock()
        name_key, address_key = self._keys(name, address)
        of_name, of_address = await self.store.login_failures(
            name_key, address_key, now - self.window
        )
        waits = [
            self.window - (now - times[-limit])
            for times, limit in ((of_name, self.per_name), (of_address, self.per_address))
            if len(times) >= limit
        ]
        return int(max(waits)) + 1 if waits else 0

    async def failed(self, name: str, address: str) -> None:
        now = self.clock()
        await self.store.add_login_failure(*self._keys(name, address), now)
        await self.store.forget_login_failures(before=now - self.window)

    async def succeeded(self, name: str, address: str) -> None:
        """The name's failures from this address are forgotten (not the address's others:
        an attacker logging in to an account of its own would wipe its count of guesses)."""
        name_key, address_key = self._keys(name, address)
        await self.store.forget_login_failures(
            before=self.clock() - self.window, name_key=name_key, address_key=address_key
        )
