"""What every way of telling someone shares: a channel sends one message and says how it went.

``SENT``; ``RETRY``: it may go later (the server is down or busy, a timeout, a 4xx of SMTP, an
HTTP 408, 429 or 5xx); ``FAILED``: it never will (the address was refused for good, the channel
is not configured, the egress policy forbids the address). ``result`` says why, for the log
that staff with occurrences.contact read; it may name the address, so it never goes to the
server's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cidade.store.occurrences import OccurrenceMessage

SENT, RETRY, FAILED = "sent", "retry", "failed"

# What a result keeps of a server's answer.
MAX_RESULT = 300


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # SENT | RETRY | FAILED
    result: str

    @classmethod
    def of(cls, state: str, result: str) -> Outcome:
        result = " ".join(result.split())
        return cls(state, result if len(result) <= MAX_RESULT else result[: MAX_RESULT - 1] + "…")


class Channel(Protocol):
    """One way of telling (e-mail, webhook, SMS)."""

    async def send(self, message: OccurrenceMessage) -> Outcome: ...

    async def aclose(self) -> None: ...


class Unconfigured:
    """A channel the deployment did not set up: every message fails at once, saying so (a
    message kept pending for a server that may never come would say nothing)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def send(self, message: OccurrenceMessage) -> Outcome:
        return Outcome(FAILED, self.reason)

    async def aclose(self) -> None:
        pass


def http_outcome(status: int, what: str) -> Outcome:
    """How an HTTP answer counts, as notifications count it (hub/notify/senders.py)."""
    if 200 <= status < 300:
        return Outcome(SENT, f"{what} answered HTTP {status}")
    if status in (408, 429) or status >= 500:
        return Outcome(RETRY, f"{what} answered HTTP {status}")
    return Outcome(FAILED, f"{what} refused it: HTTP {status}")
