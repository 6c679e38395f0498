"""The notifier: delivers what the outbox holds, at least once, in order, one lane per endpoint.

Every process runs one. Lanes are claimed in the database (an owner and a lease, renewed at
every settled batch), so of several workers on one PostgreSQL each lane is delivered by exactly
one at a time, and a worker that dies leaves its lanes to the others once the lease runs out.
Within a lane items go out one after the other in outbox order; a batch is removed from the
outbox only after it was sent, so a crash re-sends at most the batch in flight. A failure that
may pass (timeout, 5xx, broker down) keeps the item at the head and parks only that lane until
its retry time (exponential back-off with jitter, at least the endpoint's ``cooldown``); other
lanes run on as if nothing happened.

Wake-ups: the store calls ``wake`` after committing notifications; on PostgreSQL every worker
also LISTENs for the NOTIFY those commits send; and a slow poll catches anything else (a lane
whose retry time came, a lease that expired).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from typing import Any

from cidade.config import Settings
from cidade.hub.jsonld import ContextResolver
from cidade.hub.notify.csource import initial_entry
from cidade.hub.notify.matching import compile_subscription, match_changes, periodic_entry
from cidade.hub.notify.payload import render_csource_notification, render_notification
from cidade.hub.notify.senders import (
    FAILED,
    RETRY,
    SENT,
    HttpSender,
    MqttSender,
    notifier_info,
)
from cidade.hub.subscriptions import (
    MQTT_SCHEMES,
    is_active,
    selector_type,
    subscription_geoq,
    subscription_q,
)
from cidade.ngsild import timefmt
from cidade.store.base import CSOURCE_KIND, ChangeWatch, EntityQuery, OutboxItem, Outcome, Store

log = logging.getLogger("cidade.notify")

BATCH = 100  # items read from a lane at a time: at most this many are re-sent after a crash
MERGE_LIMIT = 100  # entities in one notification made of several waiting items


def _units(items: list[OutboxItem]) -> list[list[OutboxItem]]:
    """Consecutive items of one subscription with one trigger, already waiting together, go
    out as one notification (their entities in order, up to MERGE_LIMIT): under load a lane
    sends fewer, larger notifications instead of falling behind; nothing waits to be merged."""
    units: list[list[OutboxItem]] = []
    size = 0
    for item in items:
        count = len(item.body["entities"])
        if units:
            last = units[-1][-1]
            if (
                last.tenant == item.tenant
                and last.subscription_id == item.subscription_id
                and last.body["trigger"] == item.body["trigger"]
                and size + count <= MERGE_LIMIT
            ):
                units[-1].append(item)
                size += count
                continue
        units.append([item])
        size = count
    return units


def _merged(unit: list[OutboxItem]) -> dict[str, Any]:
    if len(unit) == 1:
        return unit[0].body
    entities = [e for item in unit for e in item.body["entities"]]
    return {**unit[0].body, "entities": entities}


PERIODIC_LIMIT = 1000  # entities in one periodic notification


class Notifier:
    def __init__(self, store: Store, resolver: ContextResolver, settings: Settings) -> None:
        self.store = store
        self.resolver = resolver
        self.settings = settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # The policy @contexts are fetched under, for endpoints as well (docs/security.md).
        self.http = HttpSender(settings.notification_timeout, resolver.egress)
        self.mqtt = MqttSender(settings.notification_timeout, resolver.egress)
        self._wake = asyncio.Event()
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._last_sent: dict[tuple[str, str], float] = {}  # for throttling
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def change_watch(self) -> ChangeWatch:
        return ChangeWatch(compile=compile_subscription, match=match_changes, enqueued=self.wake)

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self.store.watch = self.change_watch()
        await self.store.listen("outbox", self.wake)
        self._tasks = [
            asyncio.create_task(self._run(), name="notifier"),
            asyncio.create_task(self._periodic(), name="notifier-periodic"),
        ]
        self.wake()  # whatever a previous process left in the outbox

    async def stop(self) -> None:
        # The flag as well as the cancel: Python 3.11's wait_for can swallow a cancellation that
        # arrives as its wake-up does, and the loop would then run on for ever.
        self._stopping = True
        lanes = list(self._lanes)
        tasks = [*self._tasks, *self._lanes.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                log.warning("notifier task %s did not stop", task.get_name())
        self._tasks.clear()
        self._lanes.clear()
        # Hand the lanes back now rather than when their lease runs out, so the next process
        # (or another worker) resumes at once; what was in flight is sent again.
        for lane in lanes:
            try:
                await self.store.release_lane(lane, self.owner)
            except Exception as exc:  # its lease runs out instead
                log.warning("notification lane not handed back at stop: %s", type(exc).__name__)
        await self.http.aclose()
        await self.mqtt.aclose()

    # -- claiming lanes -------------------------------------------------------------------------

    async def _run(self) -> None:
        poll = self.settings.notification_poll
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)
            if self._stopping:
                return
            self._wake.clear()
            self._dirty.update(self._lanes)  # running lanes: look again before letting go
            try:
                claimed = await self.store.claim_lanes(
                    self.owner, time.time(), self.settings.notification_lease
                )
            except Exception:
                log.exception("claiming notification lanes failed")
                await asyncio.sleep(poll)
                continue
            for lane in claimed:
                if lane not in self._lanes:
                    self._lanes[lane] = asyncio.create_task(self._deliver_lane(lane))

    # -- one lane -------------------------------------------------------------------------------

    async def _deliver_lane(self, lane: str) -> None:
        keep = False  # True once the lane was handed back by defer_lane or lost
        try:
            keep = await self._drain(lane)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivering lane failed")
        finally:
            self._lanes.pop(lane, None)
        if not keep:
            try:
                await self.store.release_lane(lane, self.owner)
                # Something may have arrived between the last read and the release.
                if await self.store.lane_items(lane, 1):
                    self.wake()
            except Exception:
                log.exception("releasing a notification lane failed")

    async def _drain(self, lane: str) -> bool:
        """Deliver until the lane is empty (False) or handed back after a failure (True)."""
        lease = self.settings.notification_lease
        while not self._stopping:
            self._dirty.discard(lane)
            items = await self.store.lane_items(lane, BATCH)
            if not items:
                if lane in self._dirty:
                    continue
                return False
            outcomes: list[Outcome] = []
            subs: dict[tuple[str, str], dict[str, Any] | None] = {}
            for unit in _units(items):
                head = unit[0]
                key = (head.tenant, head.subscription_id)
                if key not in subs:
                    # Of either kind: entity and csource subscriptions share one id space.
                    subs[key] = await self.store.get_subscription(*key, kind=None)
                sub = subs[key]
                at = timefmt.now()
                if sub is None or self._throttled(sub, key):
                    outcomes.extend(Outcome(item, "dropped", at) for item in unit)
                    continue
                # Counted before it leaves: its receiver may read the subscription at once.
                await self.store.record_attempt(head.tenant, head.subscription_id, at)
                result = await self._send(sub, head.tenant, _merged(unit), at)
                age = time.time() - head.created_at
                if result == RETRY and age < self.settings.notification_max_age:
                    if outcomes and not await self.store.settle(
                        lane, self.owner, outcomes, time.time() + lease
                    ):
                        return True
                    await self.store.defer_lane(
                        lane, self.owner, head, at, time.time() + self._backoff(sub, head)
                    )
                    return True
                if result == SENT:
                    self._last_sent[key] = time.monotonic()
                outcomes.append(Outcome(head, SENT if result == SENT else FAILED, at))
                outcomes.extend(Outcome(item, "merged", at) for item in unit[1:])
            if not await self.store.settle(lane, self.owner, outcomes, time.time() + lease):
                log.warning("lost the lease of a notification lane; another worker has it")
                return True
        return False

    def _throttled(self, sub: dict[str, Any], key: tuple[str, str]) -> bool:
        throttling = sub.get("throttling")
        if not throttling:
            return False
        last = self._last_sent.get(key)
        return last is not None and time.monotonic() - last < float(throttling)

    def _backoff(self, sub: dict[str, Any], item: OutboxItem) -> float:
        delay = min(self.settings.notification_retry_max, 0.5 * 2 ** min(item.attempts, 16))
        delay *= random.uniform(0.8, 1.2)
        cooldown = sub["notification"]["endpoint"].get("cooldown")
        return max(delay, float(cooldown) / 1000 if cooldown else 0.0)

    async def _send(self, sub: dict[str, Any], tenant: str, body: dict[str, Any], at: str) -> str:
        endpoint = sub["notification"]["endpoint"]
        try:
            if body.get("csource"):
                rendered = await render_csource_notification(self.resolver, sub, tenant, body, at)
            else:
                rendered = await render_notification(
                    self.resolver, sub, tenant, body, at, self.store
                )
        except Exception:
            # Typically the subscription's @context cannot be fetched right now.
            log.warning("could not render a notification of %s", sub["id"], exc_info=True)
            return RETRY
        timeout = endpoint.get("timeout")
        limit = float(timeout) / 1000 if timeout else None
        uri = endpoint["uri"]
        if uri.split(":", 1)[0].lower() in MQTT_SCHEMES:
            return await self.mqtt.send(uri, rendered, limit, notifier_info(endpoint))
        return await self.http.send(uri, rendered, limit)

    # -- periodic notifications -----------------------------------------------------------------

    async def _periodic(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.notification_poll)
            try:
                due = await self.store.claim_periodic(time.time())
                for tenant, sub in due:
                    if is_active(sub, timefmt.now()):
                        entities = await self._current_state(tenant, sub)
                        if entities:
                            await self.store.enqueue(tenant, [periodic_entry(sub, entities)])
                registrations: dict[str, list[dict[str, Any]]] = {}  # read once a turn
                for tenant, sub in await self.store.claim_periodic(time.time(), kind=CSOURCE_KIND):
                    if tenant not in registrations:
                        registrations[tenant] = await self.store.list_registrations(tenant)
                    # Every registration it selects, at each turn (§5.11).
                    entry = initial_entry(sub, registrations[tenant])
                    if entry is not None:
                        await self.store.enqueue(tenant, [entry])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic notifications failed")

    async def _current_state(self, tenant: str, sub: dict[str, Any]) -> list[dict[str, Any]]:
        """The entities a periodic subscription reports on, as they are now."""
        q = subscription_q(sub, lambda name: name)
        geo = subscription_geoq(sub)
        found: dict[str, dict[str, Any]] = {}
        for sel in sub.get("entities", ()):
            query = EntityQuery(
                ids=[sel["id"]] if "id" in sel else (),
                id_pattern=sel.get("idPattern"),
                types=selector_type(sel),
                q=q,
                geo=geo,
                limit=PERIODIC_LIMIT,
            )
            for entity in (await self.store.query(tenant, query)).entities:
                found.setdefault(entity["id"], entity)
        return list(found.values())[:PERIODIC_LIMIT]


__all__ = ["FAILED", "RETRY", "SENT", "Notifier"]
