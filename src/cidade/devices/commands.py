"""Commands to actuators: an attribute update that becomes a message to the device.

A device's provisioning (or its group's) names its commands, e.g. ``raise`` and ``lower`` on a
bollard. An update of such an attribute of the device's entity, by a principal who may send
commands, is published to ``/<apikey>/<device_id>/cmd`` as ``{"raise": value}`` (or posted to the
device's HTTP endpoint), and the entity gets ``raise_status`` = PENDING. The device's answer on
``.../cmdexe`` sets ``raise_status`` to OK (or ERROR) and ``raise_info`` to what it said; with no
answer within ``CIDADE_COMMAND_TIMEOUT`` the status becomes EXPIRED. Every step is audited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from cidade.auth.audit import Audit
from cidade.auth.errors import AccessDenied
from cidade.auth.gate import Grant
from cidade.devices.agent import Agent, Refused
from cidade.devices.mapping import Profile, build_profile
from cidade.devices.messages import CommandAnswer, CommandSink
from cidade.hub.entities import EntityService
from cidade.hub.model import Terms
from cidade.ngsild import timefmt
from cidade.store.base import EntityQuery, Store

log = logging.getLogger("cidade.devices")

PENDING, OK, ERROR, EXPIRED = "PENDING", "OK", "ERROR", "EXPIRED"
INDEX_TTL = 10.0
RESUME_PAGE = 500  # entities read at a time when looking for commands pending at a restart


@dataclass(slots=True)
class Pending:
    tenant: str
    entity_id: str
    command: str
    device_id: str
    deadline: float
    actor: str | None  # None: sent before Cidade restarted
    sent_at: str = ""  # the observedAt of its PENDING status


def _status(value: str, at: str | None = None) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": at or timefmt.now()}


class Commands:
    def __init__(
        self,
        store: Store,
        entities: EntityService,
        agent: Agent,
        audit: Audit,
        terms: Terms,
        *,
        timeout: float,
    ) -> None:
        self.store = store
        self.entities = entities
        self.agent = agent
        self.audit = audit
        self.terms = terms
        self.timeout = timeout
        self.sink: CommandSink | None = None
        self.pending: dict[tuple[str, str, str], Pending] = {}
        self._index: dict[str, tuple[float, dict[str, Profile]]] = {}

    def forget(self) -> None:
        self._index.clear()

    def provisioned(self, profile: Profile) -> None:
        """A device that provisioned itself: into its tenant's index when it takes commands,
        rather than reading every device of the tenant again (a thousand devices appearing
        at once would each have made the next update read them all)."""
        hit = self._index.get(profile.tenant)
        if hit is not None and profile.commands:
            hit[1][profile.entity_id] = profile

    async def device_of(self, tenant: str, entity_id: str) -> Profile | None:
        """The profile of the device whose entity this is, when that device takes commands."""
        return (await self._commandable(tenant)).get(entity_id)

    async def _commandable(self, tenant: str) -> dict[str, Profile]:
        """The tenant's devices that take commands, by entity id (read again every INDEX_TTL
        seconds, or after ``forget``)."""
        hit = self._index.get(tenant)
        if hit is None or hit[0] < time.monotonic():
            groups = {g.get("apikey"): g for _, g in await self.store.service_groups(tenant)}
            devices, _ = await self.store.list_devices(tenant, 1_000_000, 0)
            index = {}
            for device in devices:
                apikey = device.get("apikey") or ""
                profile = build_profile(
                    tenant, device["device_id"], apikey, groups.get(apikey), device
                )
                if profile.commands:
                    index[profile.entity_id] = profile
            hit = (time.monotonic() + INDEX_TTL, index)
            self._index[tenant] = hit
        return hit[1]

    async def intercept(
        self, grant: Grant, tenant: str, entity_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The attributes to write for an update of ``entity_id``: its command attributes are
        sent to the device and written with their PENDING status; the rest pass unchanged."""
        profile = await self.device_of(tenant, entity_id)
        if profile is None:
            return body
        named = [n for n in body if n in profile.commands]
        if not named:
            return body
        who = grant.principal
        # The grant's permissions: the caller's roles in this tenant, narrowed by a key's scope.
        if not grant.may("commands.send"):
            for name in named:
                await self.audit.record(
                    "command.refused",
                    who,
                    tenant=tenant,
                    outcome="denied",
                    target=entity_id,
                    command=name,
                )
            raise AccessDenied("sending commands to devices needs the operator or admin role")
        out = dict(body)
        for name in named:
            attribute = body[name]
            value = attribute.get("value") if isinstance(attribute, dict) else attribute
            status, info = PENDING, None
            try:
                await self._send(profile, orjson.dumps({name: value}))
            except Exception as exc:  # the transport failed: the command did not leave
                status, info = ERROR, f"not sent: {exc}"[:300]
            await self.audit.record(
                "command.sent" if status == PENDING else "command.refused",
                who,
                tenant=tenant,
                outcome="pending" if status == PENDING else "error",
                target=entity_id,
                command=name,
                value=value,
            )
            sent_at = timefmt.now()
            out[f"{name}_status"] = _status(status, sent_at)
            if info is not None:
                out[f"{name}_info"] = {"type": "Property", "value": info}
            if status == PENDING:
                self.pending[(tenant, entity_id, name)] = Pending(
                    tenant,
                    entity_id,
                    name,
                    profile.device_id,
                    time.monotonic() + self.timeout,
                    who.subject,
                    sent_at,
                )
        return out

    async def _send(self, profile: Profile, body: bytes) -> None:
        if self.sink is None:
            raise RuntimeError("no MQTT broker is configured (CIDADE_MQTT)")
        await self.sink.send_command(profile.apikey, profile.device_id, body)

    async def answers(self, answers: Sequence[CommandAnswer]) -> None:
        for answer in answers:
            try:
                profile = await self.agent.profile(answer.apikey, answer.device_id)
                result = orjson.loads(answer.payload)
            except (Refused, orjson.JSONDecodeError) as exc:
                log.warning("command answer of device %r refused: %s", answer.device_id[:200], exc)
                continue
            if not isinstance(result, dict):
                continue
            for name, said in result.items():
                if name not in profile.commands:
                    continue
                failed = (isinstance(said, dict) and "error" in said) or (
                    isinstance(said, str) and said.upper().startswith("ERROR")
                )
                await self._settle(
                    profile.tenant, profile.entity_id, name, ERROR if failed else OK, said
                )

    async def _settle(
        self, tenant: str, entity_id: str, name: str, status: str, info: object
    ) -> None:
        pending = self.pending.pop((tenant, entity_id, name), None)
        body = {
            f"{name}_status": _status(status),
            f"{name}_info": {"type": "Property", "value": info if info is not None else ""},
        }
        try:
            await self.entities.update_attrs(tenant, entity_id, body, self.terms, mode="append")
        except Exception as exc:
            log.warning("command status of %s not written: %s", entity_id, exc)
        await self.audit.record(
            "command.result",
            f"device:{pending.device_id}" if pending else "device",
            tenant=tenant,
            outcome=status.lower(),
            target=entity_id,
            command=name,
            sentBy=pending.actor if pending else None,
        )

    async def resume(self) -> int:
        """The commands a previous run of Cidade sent and nobody answered: their ``_status`` is
        still PENDING on the entity. Those past their timeout expire now; the others are waited
        for again. How many were found."""
        found = 0
        for tenant in await self.store.device_tenants():
            commandable = await self._commandable(tenant)
            ids = list(commandable)
            for start in range(0, len(ids), RESUME_PAGE):
                page = ids[start : start + RESUME_PAGE]
                result = await self.store.query(tenant, EntityQuery(ids=page, limit=len(page)))
                found += self._resume_page(tenant, commandable, result.entities)
        return found

    def _resume_page(
        self, tenant: str, commandable: dict[str, Profile], entities: list[dict[str, Any]]
    ) -> int:
        found = 0
        for entity in entities:
            entity_id = entity["id"]
            profile = commandable[entity_id]
            for name in profile.commands:
                sent_at = self._pending_since(entity, name)
                key = (tenant, entity_id, name)
                if sent_at is None or key in self.pending:
                    continue
                found += 1
                sent = datetime.fromisoformat(sent_at[:26]).replace(tzinfo=UTC)
                left = self.timeout - (datetime.now(UTC) - sent).total_seconds()
                self.pending[key] = Pending(
                    tenant,
                    entity_id,
                    name,
                    profile.device_id,
                    time.monotonic() + max(left, 0.0),
                    None,
                    sent_at,
                )
        return found

    def _pending_since(self, entity: dict[str, Any], name: str) -> str | None:
        """When the command's PENDING status was set, or None when it is not PENDING."""
        for inst in entity["attrs"].get(self.terms.expand(f"{name}_status"), ()):
            if "datasetId" not in inst and inst.get("value") == PENDING:
                return inst.get("observedAt") or inst.get("modifiedAt")
        return None

    async def _still_pending(self, p: Pending) -> bool:
        """Whether the entity still says PENDING since ``p`` was sent (another writer, or the
        answer, may have come first)."""
        entity = await self.store.get_entity(p.tenant, p.entity_id)
        if entity is None:
            return False
        since = self._pending_since(entity, p.command)
        return since is not None and (not p.sent_at or since == p.sent_at)

    async def run_expiry(self, interval: float = 0.5) -> None:
        """Expire the commands nobody answered in time (the app runs this while it serves),
        those a previous run sent included."""
        try:
            found = await self.resume()
            if found:
                log.info("%d commands sent before the restart are awaited or expired", found)
        except Exception:
            log.exception("the commands pending before the restart could not be read")
        while True:
            now = time.monotonic()
            for key, p in list(self.pending.items()):
                if p.deadline <= now and self.pending.get(key) is p:
                    if await self._still_pending(p):
                        await self._settle(
                            p.tenant, p.entity_id, p.command, EXPIRED, "no answer in time"
                        )
                    else:
                        self.pending.pop(key, None)
            await asyncio.sleep(interval)
