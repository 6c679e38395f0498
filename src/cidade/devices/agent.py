"""The device agent: messages in, entity updates out (the southbound half of an IoT agent).

Transports (MQTT, HTTP) hand it batches of raw messages. For each, the agent finds the device's
profile (its service group by apikey, its own provisioning, or provisions it when the group
allows), maps the measures onto one NGSI-LD fragment, and writes every message of the batch in
one store transaction, each as its own atomic upsert: a refused message writes nothing and the
rest go on. Refusals are counted by reason and logged with the device id (never the apikey).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from cidade.devices.mapping import (
    MappingError,
    Profile,
    build_profile,
    entity_id_for,
    single_value,
    to_fragment,
)
from cidade.devices.messages import CommandAnswer, Measure
from cidade.hub.batch import updated_with
from cidade.hub.model import (
    Terms,
    check_entity_id,
    expand_name,
    expand_types,
    normalize_attribute,
)
from cidade.ngsild import timefmt
from cidade.ngsild.errors import NgsiError
from cidade.store.base import Entity, Store, WriteChain, WriteOp

log = logging.getLogger("cidade.devices")

# The members mapping.to_fragment gives a Property, each already checked by it.
_MAPPED_MEMBERS = frozenset({"type", "value", "observedAt", "unitCode"})
PROFILE_TTL = 10.0  # seconds a device's profile is trusted before it is read again
HTTP_RESOURCE = "/iot/json"
YIELD_EVERY = 256  # messages prepared between two turns of the event loop


class Refused(Exception):
    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # the counter it goes to


@dataclass(slots=True)
class Prepared:
    """A batch mapped and checked (Agent.prepare), not written yet."""

    measures: Sequence[Measure]
    outcome: list[str | None]  # per message: None, or why it was refused
    # Per tenant not written yet, its updates in arrival order: (message index, the update in
    # the stored form). Plain data, so that another process may prepare and this one write.
    writes: dict[str, list[tuple[int, Entity]]]


class Agent:
    def __init__(self, store: Store, terms: Terms) -> None:
        self.store = store
        self.terms = terms
        self.counts: Counter[str] = Counter()
        self._profiles: dict[tuple[str, str], tuple[float, Profile]] = {}
        # What stored() already checked and expanded: (id, type) -> (id, types).
        self._heads: dict[tuple[str, Any], tuple[str, list[str]]] = {}
        self._last_log: dict[str, float] = {}
        # Where devices' answers to commands go (devices/commands.py).
        self.on_answers: Callable[[Sequence[CommandAnswer]], Awaitable[None]] | None = None
        # Told of each device that provisions itself (its commands become sendable at once).
        self.on_provisioned: Callable[[Profile], None] | None = None

    def forget(self) -> None:
        """Drop every cached profile (a group or a device changed)."""
        self._profiles.clear()

    # -- profiles -------------------------------------------------------------------------------

    async def profile(self, apikey: str, device_id: str, resource: str | None = None) -> Profile:
        """A device's profile, kept PROFILE_TTL seconds (or until ``forget``)."""
        key = (apikey, device_id)
        cached = self._cached_profile(key, time.monotonic())
        if cached is not None:
            return cached
        profile = await self.find_profile(apikey, device_id, resource)
        self._profiles[key] = (time.monotonic() + PROFILE_TTL, profile)
        return profile

    def _cached_profile(self, key: tuple[str, str], clock: float) -> Profile | None:
        """The profile ``profile()`` keeps for (apikey, device id), while it is fresh at
        ``clock`` (time.monotonic())."""
        hit = self._profiles.get(key)
        return hit[1] if hit is not None and hit[0] > clock else None

    async def find_profile(
        self, apikey: str, device_id: str, resource: str | None = None
    ) -> Profile:
        """The device's profile from the store, the device provisioned when its group allows;
        Refused when there is none."""
        groups = await self.store.service_groups(apikey=apikey)
        if not groups:
            raise Refused("unknown apikey", "unknown_apikey")
        chosen = [g for g in groups if resource is None or g[1].get("resource") == resource]
        tenant, group = (chosen or groups)[0]
        device = await self.store.get_device(tenant, device_id)
        provisioned = device is None
        if device is None:
            if group.get("autoprovision", True) is False:
                raise Refused(
                    "unknown device, and its group does not provision devices", "unknown_device"
                )
            entity_type = group.get("entity_type") or "Thing"
            # Recorded as a provisioned device's is (device_record): its entity's name too.
            device = {
                "device_id": device_id,
                "apikey": apikey,
                "entity_type": entity_type,
                "entity_name": entity_id_for(entity_type, device_id),
                "protocol": "IoTA-JSON",
                "transport": "HTTP" if resource else "MQTT",
                "service_path": group.get("service_path", "/"),
                "autoprovisioned": True,
            }
            # Another worker may provision it at the same moment: either record will do.
            await self.store.save_device(tenant, device, create=True)
            device = await self.store.get_device(tenant, device_id) or device
            self.counts["autoprovisioned"] += 1
        elif device.get("apikey") not in (None, "", apikey):
            raise Refused("the device belongs to another apikey", "wrong_apikey")
        profile = build_profile(tenant, device_id, apikey, group, device)
        if provisioned and self.on_provisioned is not None:
            self.on_provisioned(profile)
        return profile

    # -- measures -------------------------------------------------------------------------------

    async def ingest(
        self, measures: Sequence[Measure], resource: str | None = None
    ) -> list[str | None]:
        """Write a batch of messages; per message, None when written, else why not."""
        return await self.commit(await self.prepare(measures, resource))

    async def prepare(self, measures: Sequence[Measure], resource: str | None = None) -> Prepared:
        """Everything before the store: profiles found (devices provisioned when their group
        allows), messages mapped and checked, writes ordered. ``commit`` writes them; a
        transport may prepare the next batch while the previous one is being committed."""
        outcome: list[str | None] = [None] * len(measures)
        writes: dict[str, list[tuple[int, Entity]]] = {}
        now = timefmt.now()
        clock = time.monotonic()
        for n, measure in enumerate(measures):
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                # Preparing thousands of messages takes a tenth of a second or more: let the
                # event loop meanwhile hand the previous batch's write on and read the socket.
                await asyncio.sleep(0)
                clock = time.monotonic()
            try:
                # Most messages find their device's profile cached: no coroutine to make and
                # await for them.
                profile = self._cached_profile(
                    (measure.apikey, measure.device_id), clock
                ) or await self.profile(measure.apikey, measure.device_id, resource)
                updates = self._updates(profile, measure, now)
            except Refused as exc:
                outcome[n] = self._refuse(measure, exc.reason, exc.kind)
                continue
            writes.setdefault(profile.tenant, []).extend((n, new) for new in updates)
        self.counts["received"] += len(measures)
        return Prepared(measures, outcome, writes)

    async def commit(
        self, prepared: Prepared, *, chain: WriteChain | None = None
    ) -> list[str | None]:
        """Write a prepared batch, one store write (one transaction) per tenant; per message,
        None when written, else why not. The store applies a batch's writes in order, each its
        own change: two messages of one device in one batch are two history instances and two
        notifications, and the entity's row is written once. It may be called again after it
        raised: a tenant already written is not again. With a ``chain``, the writes apply
        after the chain's earlier ones, and only if they did (store/base.py, WriteChain)."""
        for tenant in list(prepared.writes):
            batch = prepared.writes[tenant]
            verdicts = await self.write(tenant, [new for _, new in batch], chain=chain)
            del prepared.writes[tenant]
            for (n, _), verdict in zip(batch, verdicts, strict=True):
                if verdict is None:
                    self.counts["written"] += 1
                else:
                    prepared.outcome[n] = self._refuse(prepared.measures[n], *verdict)
        return prepared.outcome

    async def write(
        self, tenant: str, updates: Sequence[Entity], *, chain: WriteChain | None = None
    ) -> list[tuple[str, str] | None]:
        """One store write of a tenant's updates (each an upsert of its entity, in order); per
        update, None when written, else (why not, the counter it goes to)."""
        results = await self.store.write(tenant, [upsert(new) for new in updates], chain=chain)
        verdicts: list[tuple[str, str] | None] = []
        for new, result in zip(updates, results, strict=True):
            if isinstance(result, NgsiError):
                verdicts.append((result.detail or result.title, "invalid"))
            elif isinstance(result, Exception):
                # A fault of ours, not of the message: refused, and said loudly.
                log.error("writing an update of %r failed", new["id"][:200], exc_info=result)
                verdicts.append((f"internal error ({type(result).__name__})", "failed"))
            else:
                verdicts.append(None)
        return verdicts

    def _updates(self, profile: Profile, measure: Measure, now: str) -> list[Entity]:
        """One update per object of measures (a message may hold an array of them, as the IoT
        agent's multi-measures), every one checked before any is written."""
        try:
            if measure.object_id is not None:
                measures: Any = single_value(profile, measure.object_id, measure.payload)
            else:
                try:
                    measures = orjson.loads(measure.payload)
                except orjson.JSONDecodeError:
                    raise MappingError("the message is not valid JSON") from None
            many = measures if isinstance(measures, list) and measures else [measures]
            if measure.time_instant is not None:
                many = [
                    {**m, "TimeInstant": measure.time_instant} if isinstance(m, dict) else m
                    for m in many
                ]
            news = [
                self.stored(to_fragment(profile, m, measure.received_at or now), now) for m in many
            ]
        except MappingError as exc:
            raise Refused(str(exc), "invalid") from None
        except NgsiError as exc:
            raise Refused(exc.detail or exc.title, "invalid") from None
        return news

    def stored(self, fragment: dict[str, Any], now: str) -> Entity:
        """The fragment in the stored form: what ``normalize_entity`` makes of it, without its
        general checks where mapping made them already (a Property's members: a value that is
        not null, observedAt in the stored format, a unitCode that is a string); every other
        attribute goes through the hub's own ``normalize_attribute``."""
        head = (fragment["id"], fragment["type"])
        known = self._heads.get(head)
        if known is None:
            known = (check_entity_id(head[0]), expand_types(head[1], self.terms))
            if len(self._heads) >= 10_000:
                self._heads.clear()
            self._heads[head] = known
        attrs: dict[str, list[dict[str, Any]]] = {}
        for name, attribute in fragment.items():
            if name == "id" or name == "type":
                continue
            iri = expand_name(name, self.terms)  # both remember what they saw
            if attribute.get("type") == "Property" and attribute.keys() <= _MAPPED_MEMBERS:
                instance = {**attribute, "createdAt": now, "modifiedAt": now}
                at = instance.get("observedAt")
                if at is not None and (len(at) != 27 or at[-1] != "Z"):
                    instance["observedAt"] = timefmt.normalize(at, f"observedAt of {name}")
                attrs[iri] = [instance]
            else:
                attrs[iri] = normalize_attribute(name, attribute, self.terms, now)
        return {
            "id": known[0],
            "type": list(known[1]),
            "createdAt": now,
            "modifiedAt": now,
            "attrs": attrs,
        }

    def _refuse(self, measure: Measure, reason: str, kind: str) -> str:
        self.counts[f"refused_{kind}"] += 1
        # One line per device and reason every 10 s at most: a broken device must not drown
        # the log. The apikey is a shared secret of the group: it is not logged.
        key = f"{measure.device_id}\x00{kind}"
        now = time.monotonic()
        if now - self._last_log.get(key, 0.0) >= 10.0:
            self._last_log[key] = now
            if len(self._last_log) > 10_000:
                self._last_log.clear()
            log.warning("message of device %r refused: %s", measure.device_id[:200], reason)
        return reason

    # -- commands -------------------------------------------------------------------------------

    async def command_answers(self, answers: Sequence[CommandAnswer]) -> None:
        self.counts["command_answers"] += len(answers)
        if self.on_answers is not None:
            await self.on_answers(answers)


def upsert(new: Entity) -> WriteOp:
    """The write of one message's update: the entity created, or updated with it."""

    def apply(current: Entity | None) -> Entity:
        return new if current is None else updated_with(current, new)

    return WriteOp(new["id"], apply)
