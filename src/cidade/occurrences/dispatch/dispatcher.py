"""The Dispatcher: sends the messages occurrences' changes wrote (store: occurrence_messages),
as a background task of the app (app.py's lifespan), in every worker.

A write that adds messages wakes it (OccurrenceService.on_messages); otherwise it looks for due
messages every CIDADE_MESSAGE_POLL seconds (retries, and what other workers wrote). Each turn
claims a few due messages for CIDADE_MESSAGE_LEASE seconds (the store makes sure no two
senders hold one message at once), sends them side by side, and settles each: sent; failed
for good; or pending again after a wait that doubles from ``retry_first`` up to
CIDADE_MESSAGE_RETRY_MAX, until CIDADE_MESSAGE_MAX_ATTEMPTS tries or CIDADE_MESSAGE_MAX_AGE
seconds, when it is failed. A sender that dies mid-way leaves its messages to be claimed
again when their lease ends: delivery is at least once.

The server's log gets a message's number (seq), channel and state, never its address or
text; the message log (store.occurrence_messages) keeps why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from cidade.config import Settings
from cidade.http.egress import EgressPolicy
from cidade.occurrences.dispatch.channel import FAILED, RETRY, SENT, Channel, Outcome, Unconfigured
from cidade.store.base import Store
from cidade.store.occurrences import OccurrenceMessage

log = logging.getLogger("cidade.occurrences.dispatch")


def channels_from_settings(settings: Settings) -> dict[str, Channel]:
    """The e-mail, webhook and SMS channels the settings give (unconfigured ones fail)."""
    from cidade.occurrences.dispatch.email import SmtpChannel
    from cidade.occurrences.dispatch.sms import HttpSmsGateway, SmsChannel
    from cidade.occurrences.dispatch.webhook import WebhookChannel

    timeout = settings.message_timeout
    email: Channel = (
        SmtpChannel(settings.smtp_url, settings.smtp_from, timeout)
        if settings.smtp_url
        else Unconfigured("not sent: no SMTP server is configured (CIDADE_SMTP_URL)")
    )
    sms: Channel = (
        SmsChannel(HttpSmsGateway(settings.sms_gateway_url, settings.sms_gateway_token, timeout))
        if settings.sms_gateway_url
        else Unconfigured("not sent: no SMS gateway is configured (CIDADE_SMS_GATEWAY_URL)")
    )
    webhook = WebhookChannel(EgressPolicy.from_text(settings.private_networks), timeout)
    return {"email": email, "sms": sms, "webhook": webhook}


class Dispatcher:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        *,
        poll: float = 5.0,
        lease: float = 60.0,
        retry_first: float = 30.0,
        retry_max: float = 3600.0,
        max_attempts: int = 10,
        max_age: float = 172_800.0,
        batch: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.channels = dict(channels)
        self.poll = poll
        self.lease = lease
        self.retry_first = retry_first
        self.retry_max = retry_max
        self.max_attempts = max_attempts
        self.max_age = max_age
        self.batch = batch
        self.clock = clock
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, store: Store, settings: Settings, channels: Mapping[str, Channel] | None = None
    ) -> Dispatcher:
        return cls(
            store,
            channels if channels is not None else channels_from_settings(settings),
            poll=settings.message_poll,
            lease=settings.message_lease,
            retry_max=settings.message_retry_max,
            max_attempts=settings.message_max_attempts,
            max_age=settings.message_max_age,
        )

    def wake(self) -> None:
        """Look for due messages now (a write just added some)."""
        self._woken.set()

    # -- one turn --------------------------------------------------------------------------------

    async def turn(self) -> int:
        """Claim the due messages (up to ``batch``), send them, settle them; how many."""
        claimed = await self.store.claim_occurrence_messages(self.clock(), self.lease, self.batch)
        # Side by side, but what one occurrence tells one address one after the other, in the
        # order it was written: nobody hears "assigned" before "accepted".
        queues: dict[tuple[int, str, str], list[OccurrenceMessage]] = {}
        for m in claimed:
            key = (m.number, m.doc.get("channel", ""), m.doc.get("to", ""))
            queues.setdefault(key, []).append(m)
        if queues:
            await asyncio.gather(*(self._deliver_all(q) for q in queues.values()))
        return len(claimed)

    async def _deliver_all(self, queue: list[OccurrenceMessage]) -> None:
        for message in queue:
            await self._deliver(message)

    async def _deliver(self, message: OccurrenceMessage) -> None:
        channel_name = message.doc.get("channel", "")
        channel = self.channels.get(channel_name)
        try:
            outcome = (
                await channel.send(message)
                if channel is not None
                else Outcome(FAILED, f"not sent: no channel {channel_name!r}")
            )
        except Exception as exc:  # a channel's bug must not stop the others' messages
            log.exception("message %d (%s): the channel failed", message.seq, channel_name)
            outcome = Outcome.of(RETRY, f"not sent: {type(exc).__name__}")
        now = self.clock()
        next_at = None
        state = outcome.state
        result = outcome.result
        if state == RETRY:
            if message.attempts >= self.max_attempts or now - message.created_at >= self.max_age:
                state = FAILED
                result = f"given up after {message.attempts} tries: {result}"
            else:
                state = "pending"
                next_at = now + self.retry_wait(message.attempts)
        try:
            settled = await self.store.settle_occurrence_message(
                message.seq, message.attempts, state, result, next_at
            )
        except Exception:
            # It stays claimed: sent again once its lease ends (at least once).
            log.exception(
                "message %d (%s): its outcome was not recorded", message.seq, channel_name
            )
            return
        if not settled:
            log.warning(
                "message %d (%s): its lease ended before it was settled (another sender took"
                " it; CIDADE_MESSAGE_LEASE may be too short)",
                message.seq,
                channel_name,
            )
        elif state == SENT:
            log.info("message %d sent (%s)", message.seq, channel_name)
        elif state == FAILED:
            log.warning(
                "message %d (%s) failed: see the occurrence's message log",
                message.seq,
                channel_name,
            )
        else:
            log.info(
                "message %d (%s) not sent yet: try %d", message.seq, channel_name, message.attempts
            )

    def retry_wait(self, attempts: int) -> float:
        """Seconds before the next try, after ``attempts`` tries: doubling, up to the most."""
        return min(self.retry_max, self.retry_first * 2 ** min(attempts - 1, 30))

    # -- the background task ---------------------------------------------------------------------

    async def run(self) -> None:
        """Turns for as long as the app runs: at once while messages keep coming, then when
        woken or every ``poll`` seconds."""
        while True:
            self._woken.clear()  # before the turn: a write during it wakes the next one
            try:
                if await self.turn() >= self.batch:
                    continue
            except Exception:
                log.exception("could not send the occurrences' messages; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self.poll)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="occurrence messages")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for channel in self.channels.values():
            await channel.aclose()
