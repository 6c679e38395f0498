"""Occurrences in the hub: each occurrence is also an NGSI-LD entity (docs/occurrence-entities.md).

A citizen's, an operator's or another agency's occurrence is a Smart Data Models
``IssueReporting`` (dataModel.IssueTracking); one a sensor rule raised is an ``Alert``
(dataModel.Alert). One type each, never both: each model's JSON Schema takes its type as one
string, so an entity typed ``[IssueReporting, Alert]`` would fit neither; and the two models
name different things ``category`` and ``subCategory`` (two IRIs under one term), which no
single @context can show side by side. A subscription to every occurrence names both types
(``IssueReporting,Alert``) and watches ``resolutionStatus``, which both carry.

Attribute names are written expanded, as the models' context.jsonld define them (the hub stores
every name expanded, docs/stored-form.md), so a reader compacts them with the model's @context
and no @context is ever fetched to write them.

Only what the occurrence's public document holds goes in, and of that only what the mapping
names: never the reporter's or a follower's contact (they are not in the document), the follow
token, internal notes, the Open311 answers (free text a reporter may have filled with anything)
or the history's actors.

Reliability: a change of an occurrence commits first; then the service's listener
(``OccurrenceMirror.written``) writes the entity, as a whole replacement of the mirrored
attributes carrying the occurrence's version (``VERSION``). The write is refused inside the
store's transaction when the entity already carries that version or a newer one, so writes that
arrive out of order, twice, or from several workers never put an entity back in time. A change
whose entity write failed (or never ran: a crash between the two) is caught up by
``catch_up``, which the app runs at start and then periodically: it lists the occurrences whose
``mirrored_version`` is behind (the store's column, set by the catch-up in bulk once it saw the
entity at that version) and, at start and every ``FULL_EVERY`` seconds, every occurrence, so an
entity deleted through the hub's API comes back too.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from cidade.hub.model import NGSI_LD, Terms, is_uri, normalize_attrs
from cidade.ngsild import timefmt
from cidade.occurrences.model import STATUSES
from cidade.store.base import Entity, Store, WriteOp
from cidade.store.occurrences import OccurrenceQuery, StoredOccurrence

log = logging.getLogger("cidade.occurrences")

SDM = "https://smartdatamodels.org/"
ISSUES = SDM + "dataModel.IssueTracking/"
ALERTS = SDM + "dataModel.Alert/"
DC = "http://purl.org/dc/terms/"

ISSUE_REPORTING = ISSUES + "IssueReporting"
ALERT = ALERTS + "Alert"

# The occurrence's version, which orders the mirror's writes. Not a Smart Data Models
# attribute: the models leave other attributes free.
VERSION = "https://cidade.city/ns/occurrences/version"

# Each model's names as its context.jsonld expands them.
ISSUE_TERMS = {
    "category": ISSUES + "category",
    "subCategory": ISSUES + "subCategory",
    "subCategoryCode": ISSUES + "subCategoryCode",
    "title": DC + "title",
    "description": DC + "description",
    "reportId": ISSUES + "reportId",
    "resolutionStatus": ISSUES + "resolutionStatus",
    "departmentId": ISSUES + "departmentId",
    "mediaURL": ISSUES + "mediaURL",
    "observationDateTime": ISSUES + "observationDateTime",
    "wardId": ISSUES + "wardId",
    "comments": ISSUES + "comments",
    "location": NGSI_LD + "location",
    "address": SDM + "address",
    "dateCreated": SDM + "dateCreated",
    "dateModified": SDM + "dateModified",
    "seeAlso": SDM + "seeAlso",
}
ALERT_TERMS = {
    "category": ALERTS + "category",
    "subCategory": ALERTS + "subCategory",
    "severity": ALERTS + "severity",
    "alertSource": ALERTS + "alertSource",
    "dateIssued": ALERTS + "dateIssued",
    "validFrom": SDM + "validFrom",
    "validTo": ALERTS + "validTo",
    "name": SDM + "name",
    "description": DC + "description",
    "areaServed": SDM + "areaServed",
    "location": NGSI_LD + "location",
    "address": SDM + "address",
    "dateCreated": SDM + "dateCreated",
    "dateModified": SDM + "dateModified",
    "seeAlso": SDM + "seeAlso",
    # Borrowed from IssueTracking, so that one subscription and one temporal query follow the
    # status of every occurrence, whichever model it is.
    "resolutionStatus": ISSUES + "resolutionStatus",
    "reportId": ISSUES + "reportId",
}
# Every attribute the mirror owns: a replacement removes those the occurrence no longer has
# (validTo on reopening) and leaves any other alone.
MIRRORED = frozenset({*ISSUE_TERMS.values(), *ALERT_TERMS.values(), VERSION})

# IssueReporting's resolutionStatus enum, as its schema spells it ("Closed." with its full
# stop: a value without it fails the schema).
CLOSED = "Closed."
RESOLUTION_STATUS = {
    "new": "Open",
    "accepted": "Unassigned",
    "assigned": "Assigned",
    "in_progress": "InProgress",
    "resolved": CLOSED,
    "closed": CLOSED,
    "rejected": CLOSED,
    "duplicate": CLOSED,
}

# Alert's severity enum, by priority.
SEVERITY = {"urgent": "critical", "high": "high", "normal": "medium", "low": "low"}

# Alert's category enum (traffic, naturalDisaster, weather, environment, health, security,
# agriculture) and, where one fits, its subCategory: by the occurrence's category, else by
# its group, else environment (a sensor watches the city's environment first).
ALERT_BY_CATEGORY: dict[str, tuple[str, str | None]] = {
    "traffic-congestion": ("traffic", "trafficJam"),
    "air-quality": ("environment", "airPollution"),
    "flooding": ("naturalDisaster", "flood"),
    "fire": ("security", "buildingFire"),
    "pothole": ("traffic", "pothole"),
    "fallen-tree": ("traffic", "hazardOnRoad"),
}
ALERT_BY_GROUP: dict[str, str] = {
    "roads and pavements": "traffic",
    "traffic": "traffic",
    "parking": "traffic",
    "lighting": "security",  # streets are lit for people's safety at night
    "emergencies": "security",
    "public space": "environment",
    "waste": "environment",
    "air and noise": "environment",
    "water": "environment",
}
ALERT_FALLBACK = "environment"

# How many occurrences a catch-up reads at a time, and how often it looks at all of them (the
# periodic passes in between look only at those whose entity is known to be behind).
CATCH_UP_BATCH = 500
# The most entities one store write of the mirror carries.
WRITE_BATCH = 500
FULL_EVERY = 3600.0


def is_alert(doc: dict[str, Any]) -> bool:
    return doc.get("source") == "sensor"


def entity_id(doc: dict[str, Any]) -> str:
    """The entity's id: the occurrence's number is one sequence for every tenant, so it names
    the occurrence alone (and Open311's service_request_id is the same number)."""
    kind = "Alert" if is_alert(doc) else "IssueReporting"
    return f"urn:ngsi-ld:{kind}:{int(doc['number'])}"


def entity_id_of(number: int, source: str) -> str:
    return entity_id({"number": number, "source": source})


def _time(stored: str | None) -> str | None:
    return timefmt.display(stored) if stored else None


def _closed_at(doc: dict[str, Any]) -> str | None:
    """When a closed occurrence closed: its resolution's ``met`` time, else its last change."""
    if STATUSES.get(doc.get("status", ""), STATUSES["new"]).open:
        return None
    met = ((doc.get("deadlines") or {}).get("resolution") or {}).get("met")
    return met or doc.get("updated_at")


def _status(doc: dict[str, Any]) -> str:
    status = doc.get("status", "")
    if status in RESOLUTION_STATUS:
        return RESOLUTION_STATUS[status]
    known = STATUSES.get(status)
    return "Open" if known is None or known.open else CLOSED


def _alert_kind(doc: dict[str, Any]) -> tuple[str, str | None]:
    found = ALERT_BY_CATEGORY.get(doc.get("category") or "")
    if found:
        return found
    group = (doc.get("group") or "").strip().lower()
    return ALERT_BY_GROUP.get(group, ALERT_FALLBACK), None


def _related(doc: dict[str, Any]) -> list[str]:
    return [e for e in doc.get("entities") or () if isinstance(e, str) and is_uri(e)]


def key_values(doc: dict[str, Any]) -> dict[str, Any]:
    """The occurrence as its model's attributes, by term (the keyValues form the model's
    schema describes, without id and type); None values are left out."""
    location = doc.get("location")
    common: dict[str, Any] = {
        "description": doc.get("description") or None,
        "location": (
            {"type": "Point", "coordinates": [location["lon"], location["lat"]]}
            if location
            else None
        ),
        "address": {"streetAddress": doc["address"]} if doc.get("address") else None,
        "dateCreated": _time(doc.get("created_at")),
        "dateModified": _time(doc.get("updated_at")),
        "resolutionStatus": _status(doc),
        "reportId": str(doc["number"]),
    }
    related = _related(doc)
    if is_alert(doc):
        rule = doc.get("rule") or {}
        source = rule.get("entity") if is_uri(rule.get("entity")) else None
        source = source or (related[0] if related else None)
        category, sub_category = _alert_kind(doc)
        values = {
            **common,
            "category": category,
            "subCategory": sub_category,
            "severity": SEVERITY.get(doc.get("priority") or "", "medium"),
            "alertSource": source,
            "dateIssued": _time(doc.get("created_at")),
            "validFrom": _time(doc.get("observed_at") or doc.get("created_at")),
            "validTo": _time(_closed_at(doc)),
            "name": doc.get("title") or None,
            "areaServed": doc.get("area") or None,
            "seeAlso": [e for e in related if e != source] or None,
        }
    else:
        updates = [u for u in doc.get("updates") or () if u.get("text")]
        values = {
            **common,
            "category": doc.get("group") or None,
            "subCategory": doc.get("category_name") or None,
            "subCategoryCode": doc.get("category") or None,
            "title": doc.get("title") or None,
            "departmentId": ",".join(doc.get("departments") or ()) or None,
            "mediaURL": doc.get("media_url") or None,
            "observationDateTime": _time(doc.get("observed_at")),
            "wardId": doc.get("area") or None,
            "comments": updates[-1]["text"] if updates else None,
            "seeAlso": related or None,
        }
    return {k: v for k, v in values.items() if v is not None}


def normalized(doc: dict[str, Any], version: int) -> dict[str, Any]:
    """The entity in the normalized form, every name expanded (what the mirror writes)."""
    terms = ALERT_TERMS if is_alert(doc) else ISSUE_TERMS
    body: dict[str, Any] = {
        "id": entity_id(doc),
        "type": ALERT if is_alert(doc) else ISSUE_REPORTING,
    }
    for term, value in key_values(doc).items():
        if term == "alertSource":
            body[terms[term]] = {"type": "Relationship", "object": value}
        elif term == "location":
            body[terms[term]] = {"type": "GeoProperty", "value": value}
        else:
            body[terms[term]] = {"type": "Property", "value": value}
    body[VERSION] = {"type": "Property", "value": version}
    return body


def entity_version(entity: Entity | None) -> int | None:
    """The occurrence version an entity carries (None: absent, or not one the mirror wrote)."""
    if entity is None:
        return None
    instances = entity.get("attrs", {}).get(VERSION) or ()
    for inst in instances:
        value = inst.get("value")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class AlreadyMirrored(Exception):
    """The entity carries this version of the occurrence or a newer one: nothing to write."""

    def __init__(self, version: int) -> None:
        super().__init__(f"the entity carries version {version}")
        self.version = version


_TIMES = ("createdAt", "modifiedAt", "observedAt")


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k not in _TIMES} == {
        k: v for k, v in b.items() if k not in _TIMES
    }


def mirror_op(doc: dict[str, Any], version: int, terms: Terms) -> WriteOp:
    """The hub write of an occurrence's entity: its mirrored attributes replaced whole, an
    attribute whose value did not change kept as it was (so the history gains only what
    changed), every changed one observed at the occurrence's change (so the temporal API
    shows when the status changed, however late the write); refused with AlreadyMirrored when
    the entity is at this version or past it."""
    body = normalized(doc, version)
    eid = body["id"]
    observed = doc.get("updated_at") or timefmt.now()

    def apply(current: Entity | None) -> Entity:
        have = entity_version(current)
        if have is not None and have >= version:
            raise AlreadyMirrored(have)
        now = timefmt.now()
        fresh = normalize_attrs(body, terms, now)
        attrs: dict[str, list[dict[str, Any]]] = {}
        if current is not None:
            attrs = {k: v for k, v in current["attrs"].items() if k not in MIRRORED}
        for iri, instances in fresh.items():
            old = current["attrs"].get(iri) if current is not None else None
            if old and len(old) == 1 and _same(old[0], instances[0]):
                attrs[iri] = old
                continue
            inst = instances[0]
            inst["observedAt"] = observed
            if old:
                inst["createdAt"] = old[0].get("createdAt", now)
            attrs[iri] = [inst]
        entity: Entity = {"id": eid, "type": [body["type"]]}
        if current is not None and "scope" in current:
            entity["scope"] = copy.deepcopy(current["scope"])
        entity["createdAt"] = current["createdAt"] if current is not None else now
        entity["modifiedAt"] = now
        entity["attrs"] = attrs
        return entity

    return WriteOp(eid, apply)


class OccurrenceMirror:
    """Keeps each occurrence's hub entity in step with the occurrence (module docstring)."""

    def __init__(self, store: Store, terms: Terms) -> None:
        self.store = store
        self.terms = terms
        self._last_full = 0.0
        # Entity writes waiting, by tenant, and the tenants whose writer task runs: the writes
        # that arrive while one is under way go together in the next (one store write for
        # many entities costs little more than for one; a write each halved the rate at which
        # occurrences could be reported).
        self._waiting: dict[str, list[tuple[WriteOp, asyncio.Future[Any]]]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        # The listener's writes under way (written() does not wait for them).
        self._pending: set[asyncio.Future[int]] = set()

    async def mirror(self, tenant: str, occurrence: StoredOccurrence) -> int:
        """Write the occurrence's entity; the version it carries afterwards (this one, or a
        newer one another write put there first). Raises what the hub's write raised."""
        op = mirror_op(occurrence.doc, occurrence.version, self.terms)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, []).append((op, done))
        if tenant not in self._writers:
            self._writers[tenant] = asyncio.create_task(self._write_waiting(tenant))
        result = await done
        if isinstance(result, AlreadyMirrored):
            return result.version
        if isinstance(result, BaseException):
            raise result
        return occurrence.version

    async def _write_waiting(self, tenant: str) -> None:
        try:
            while self._waiting.get(tenant):
                batch = self._waiting[tenant][:WRITE_BATCH]
                del self._waiting[tenant][:WRITE_BATCH]
                results: list[Any]
                try:
                    results = await self.store.write(tenant, [op for op, _ in batch])
                except Exception as exc:
                    results = [exc] * len(batch)
                except BaseException:
                    results = [RuntimeError("the mirror stopped before writing it")] * len(batch)
                    raise
                finally:
                    for (_, done), result in zip(batch, results, strict=False):
                        if not done.done():
                            done.set_result(result)
        finally:
            self._writers.pop(tenant, None)
            for _, done in self._waiting.pop(tenant, ()):
                if not done.done():
                    done.set_result(RuntimeError("the mirror stopped before writing it"))

    async def written(self, tenant: str, occurrence: StoredOccurrence) -> None:
        """The service's listener: after each committed change, the entity's write is queued
        and the change's caller goes on. Waiting for it doubled a report's time (two commits
        where one is needed: the occurrence is what must be durable; its entity is derived,
        and the catch-up writes it after a crash). A failure is logged: the change stands,
        and the catch-up writes the entity later."""
        task = asyncio.ensure_future(self.mirror(tenant, occurrence))
        self._pending.add(task)
        task.add_done_callback(functools.partial(self._settled, occurrence.number))

    def _settled(self, number: int, task: asyncio.Future[int]) -> None:
        self._pending.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error(
                "could not write the hub entity of occurrence %s (the catch-up will): %r",
                number,
                exc,
            )

    async def idle(self) -> None:
        """Wait until every entity write queued so far is done (tests, a clean shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def catch_up(self, *, every: bool = False) -> int:
        """Write the entities that are missing or behind their occurrence; how many were
        written. ``every``: look at every occurrence (an entity deleted through the hub's API
        is found only so); otherwise only those not yet seen mirrored at their version."""
        written = 0
        after = 0
        while True:
            rows = await self.store.occurrences_to_mirror(
                after=after, limit=CATCH_UP_BATCH, every=every
            )
            if not rows:
                return written
            after = rows[-1][1]
            by_tenant: dict[str, list[tuple[int, int, str]]] = {}
            for tenant, number, version, source in rows:
                by_tenant.setdefault(tenant, []).append((number, version, source))
            marks: list[tuple[str, int, int]] = []
            for tenant, items in by_tenant.items():
                done, count = await self._catch_up_tenant(tenant, items)
                marks += done
                written += count
            if marks:
                await self.store.mark_occurrences_mirrored(marks)

    async def _catch_up_tenant(
        self, tenant: str, items: Sequence[tuple[int, int, str]]
    ) -> tuple[list[tuple[str, int, int]], int]:
        ids = {number: entity_id_of(number, source) for number, _, source in items}
        found = await self.store.get_entities(tenant, list(ids.values()))
        versions = {e["id"]: entity_version(e) for e in found}
        marks: list[tuple[str, int, int]] = []
        behind: list[int] = []
        for number, version, _ in items:
            have = versions.get(ids[number])
            if have is not None and have >= version:
                marks.append((tenant, number, have))
            else:
                behind.append(number)
        written = 0
        if behind:
            page = await self.store.query_occurrences(
                tenant, OccurrenceQuery(numbers=behind, limit=len(behind), order="number")
            )
            # Together: the writer puts them in one store write.
            results = await asyncio.gather(
                *(self.mirror(tenant, o) for o in page.items), return_exceptions=True
            )
            for occurrence, result in zip(page.items, results, strict=True):
                if isinstance(result, BaseException):
                    log.error(
                        "could not write the hub entity of occurrence %s: %r",
                        occurrence.number,
                        result,
                    )
                    continue
                marks.append((tenant, occurrence.number, result))
                written += 1
        return marks, written

    async def run(self, interval: float) -> None:
        """Catch up at start, then every ``interval`` seconds, for as long as the app runs;
        every occurrence is looked at first and then every FULL_EVERY seconds. Each worker may
        run it: the versions make a second writer's work a no-op."""
        while True:
            every = time.monotonic() - self._last_full >= FULL_EVERY or not self._last_full
            try:
                count = await self.catch_up(every=every)
                if every:
                    self._last_full = time.monotonic()
                if count:
                    log.info("wrote %d occurrence entities the hub lacked", count)
            except Exception:
                log.exception("could not catch up the occurrences' hub entities")
            await asyncio.sleep(interval)
