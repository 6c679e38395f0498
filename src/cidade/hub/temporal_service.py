"""Temporal operations (ETSI GS CIM 009 v1.8 §5.6.11 to §5.6.16, §5.7.3, §5.7.4): the history of
entities read and written through the store, as ``entities.py`` does for their current state.

Reads build ``HistoryQuery``s, page the instances (§6.3.10, ``temporal_paging``) and render the
temporal representation asked for (``temporal``); writes turn temporal fragments into history rows.
Nothing here knows HTTP: the binding (``temporal_api.py``) parses requests and renders results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cidade.hub.entities import EntityService
from cidade.hub.model import (
    Terms,
    check_entity_id,
    expand_name,
    expand_types,
    is_uri,
    normalize_instance,
)
from cidade.hub.querying import RESERVED_PROJECTION, Members
from cidade.hub.temporal import (
    TemporalQuery,
    render_stats_series,
    render_temporal,
    sql_periods,
)
from cidade.hub.temporal_paging import Limits, Page, apply_cut, find_cut
from cidade.hub.temporal_paging import limits as paging_limits
from cidade.ngsild import timefmt
from cidade.ngsild.errors import BadRequestData, ResourceNotFound
from cidade.ngsild.timefmt import display
from cidade.store.base import Entity, EntityQuery, HistoryQuery, QueryResult, Store
from cidade.store.history import history_row

History = dict[str, dict[str, list[dict[str, Any]]]]  # {entity id: {attribute IRI: instances}}


@dataclass(frozen=True)
class Evolution:
    """A temporal representation as a response carries it: one entity's (a dict) or a query's
    (a list of them), the page of instances it was cut to (§6.3.10) and, for a query asked to
    count, the number of entities matching."""

    body: Any
    page: Page | None = None
    count: int | None = None


class TemporalService:
    def __init__(self, store: Store, entities: EntityService, max_instances: int) -> None:
        self.store = store
        self.entities = entities
        self.max_instances = max_instances  # per attribute and datasetId in one response

    # -- reads (§5.7.3, §5.7.4) -------------------------------------------------------------------

    async def retrieve(
        self,
        tenant: str,
        entity_id: str,
        shown: Members,
        temporal: TemporalQuery,
        terms: Terms,
        visible: Callable[[Entity], bool],
    ) -> Evolution:
        """§5.7.3 Retrieve Temporal Evolution of an Entity: ``shown`` says which members (attrs,
        or pick and omit); an entity the caller may not see (``visible``) is not found, nor one
        that has none of the attributes asked for, nor one with no member left to show."""
        check_entity_id(entity_id)
        entity = await self.store.get_entity(tenant, entity_id)
        if entity is None:
            # A deleted entity whose history was kept (CIDADE_HISTORY_AFTER_DELETE) still has a
            # temporal evolution: serve it while some of it remains.
            entity = await self.store.deleted_entity(tenant, entity_id)
        if entity is None or not visible(entity):
            raise ResourceNotFound(f"entity {entity_id} not found")
        read = shown.attributes()
        body = None
        page = None
        if temporal.aggregated and read is not None and not shown.dataset_ids:
            body = await self._aggregated_in_store(tenant, entity, read, temporal, terms)
        if body is None:
            history, page, emptied = await self._history(tenant, [entity_id], shown, temporal)
            body = render_temporal(
                entity_id,
                entity["type"],
                _without(history.get(entity_id, {}), shown.omit),
                terms,
                temporal,
                attrs=read or None,
                emptied=emptied.get(entity_id),
            )
            if "deletedAt" in entity:
                body["deletedAt"] = display(entity["deletedAt"])
        if shown.attrs and len(body) == 2 + ("deletedAt" in body):
            # None of the attributes asked for has instances in the range: 404 unless the
            # entity has one of them now (§5.7.3: the attributes must exist).
            if not any(a in entity.get("attrs", ()) for a in shown.attrs):
                raise ResourceNotFound(f"entity {entity_id} has none of the attributes asked for")
        body = _project(body, shown, terms)
        if not body:
            raise ResourceNotFound(f"pick and omit leave nothing of entity {entity_id}")
        return Evolution(body, page)

    async def query(
        self,
        tenant: str,
        query: EntityQuery,
        shown: Members,
        temporal: TemporalQuery,
        terms: Terms,
    ) -> Evolution:
        """§5.7.4 Query Temporal Evolution of Entities: the entities ``query`` selects (already
        narrowed to what the caller may see), each with its history, showing the members
        ``shown`` says. An entity with no instance to show (none in the time range, of the
        attributes and datasetIds asked for) is left out: its temporal evolution there is
        empty. The count is of the entities ``query`` selects."""
        found = await self._entities(tenant, query)
        read = shown.attributes()
        history, page, emptied = await self._history(
            tenant, [e["id"] for e in found.entities], shown, temporal
        )
        body: list[dict[str, Any]] = []
        for e in found.entities:
            instances = _without(history.get(e["id"], {}), shown.omit)
            if read is not None and not instances and not emptied.get(e["id"]):
                continue
            rendered = render_temporal(
                e["id"],
                e["type"],
                instances,
                terms,
                temporal,
                attrs=read or None,
                origin=temporal.time_at,
                emptied=emptied.get(e["id"]),
            )
            if "deletedAt" in e:
                rendered["deletedAt"] = display(e["deletedAt"])
            body.append(_project(rendered, shown, terms))
        return Evolution(body, page, found.count)

    async def _entities(self, tenant: str, query: EntityQuery) -> QueryResult:
        """The entities of a temporal query: the existing ones, then the deleted ones whose
        history was kept (§5.7.4 queries the temporal evolution, which outlives the entity), in
        one paging. A query with q or a geo-query matches current states only, which deleted
        entities do not have."""
        found = await self.store.query(tenant, query)
        if query.q is not None or query.geo is not None:
            return found
        entities = found.entities
        if len(entities) == query.limit and not query.count:
            return found
        live = found.count
        if live is None:
            # The page was not filled, so every existing entity past the offset is on it; with
            # none on it, the offset may lie beyond them all: count them.
            if entities or query.offset == 0:
                live = query.offset + len(entities)
            else:
                counted = await self.store.query(tenant, replace(query, limit=0, count=True))
                live = counted.count or 0
        gone = await self.store.query_deleted(
            tenant,
            replace(
                query,
                limit=query.limit - len(entities),
                offset=max(0, query.offset - live),
            ),
        )
        count = None if found.count is None else found.count + (gone.count or 0)
        return QueryResult(entities + gone.entities, count)

    def _history_query(
        self, ids: list[str], shown: Members, temporal: TemporalQuery, limits: Limits
    ) -> HistoryQuery:
        lower, upper, lower_inclusive, upper_inclusive = temporal.time_bounds()
        return HistoryQuery(
            entity_ids=ids,
            attrs=shown.attributes() or (),
            dataset_ids=_dataset_columns(shown.dataset_ids),
            time_property=temporal.timeproperty,
            after=lower,
            after_inclusive=lower_inclusive,
            before=upper,
            before_inclusive=upper_inclusive,
            first_n=limits.first_n,
            last_n=limits.last_n,
            # Aggregations need only values and times: numbers come from the number column.
            values_only=temporal.aggregated,
        )

    async def _history(
        self, tenant: str, ids: list[str], shown: Members, temporal: TemporalQuery
    ) -> tuple[History, Page | None, dict[str, dict[str, str]]]:
        """The history of these entities as one response holds it (§6.3.10): the instances of
        the attributes and datasetIds ``shown`` names, the page when they were cut to one, and
        per entity the attributes the cut left empty."""
        if shown.attributes() is None or not ids:
            return {}, None, {}
        most = self.max_instances
        limits = paging_limits(temporal, most)
        query = self._history_query(ids, shown, temporal, limits)
        history = None
        if query.first_n is not None and query.last_n is None:
            # Most ranges hold fewer instances than a page: read them plainly first (the
            # per-series cut is a window function, which sorts every row) and cut only when
            # there are more.
            plain = replace(query, first_n=None, limit=query.first_n)
            history = await self.store.history(tenant, plain)
            if _count(history) >= query.first_n:
                history = None
        if history is None:
            history = await self.store.history(tenant, query)
        cut = find_cut(history, limits, most)
        if cut is None:
            return history, None, {}
        for eid, attr in cut.incomplete:
            # More than a page of instances share the page's last time: fetch them all, since a
            # page never holds part of the instances of one instant.
            at_end = await self.store.history(
                tenant,
                HistoryQuery(
                    entity_ids=[eid],
                    attrs=[attr],
                    dataset_ids=query.dataset_ids,
                    time_property=temporal.timeproperty,
                    after=cut.end,
                    before=cut.end,
                    before_inclusive=True,
                ),
            )
            others = [i for i in history[eid][attr] if i["_t"] != cut.end]
            history[eid][attr] = others + at_end.get(eid, {}).get(attr, [])
        page, emptied = apply_cut(history, cut, temporal, limits)
        return history, page, emptied

    async def _aggregated_in_store(
        self,
        tenant: str,
        entity: Entity,
        attrs: list[str],
        temporal: TemporalQuery,
        terms: Terms,
    ) -> dict[str, Any] | None:
        """aggregatedValues computed by the store over its number column, for a numeric series
        and a query with both time bounds and a period: a year of 15-minute readings per day
        without reading 35,040 instances into Python. None when the query or the data needs the
        general path (any value that is not a number, too many periods, no bounds)."""
        bounds = sql_periods(temporal)
        if bounds is None or temporal.timeproperty == "deletedAt":
            return None
        stats = await self.store.history_stats(
            tenant, entity["id"], attrs, temporal.timeproperty, bounds, temporal.aggr_methods
        )
        if stats is None:
            return None
        types = [terms.compact(t) for t in entity["type"]]
        out: dict[str, Any] = {"id": entity["id"], "type": types[0] if len(types) == 1 else types}
        for attr in sorted(stats):
            series = []
            for dataset in sorted(stats[attr], key=lambda d: (d != "", d)):
                rendered = render_stats_series(
                    dataset or None, stats[attr][dataset], bounds, temporal
                )
                if rendered is None:
                    return None
                series.append(rendered)
            out[terms.compact(attr)] = series[0] if len(series) == 1 else series
        if "deletedAt" in entity:
            out["deletedAt"] = display(entity["deletedAt"])
        return out

    # -- writes (§5.6.11 to §5.6.16) --------------------------------------------------------------

    async def create_or_update(self, tenant: str, body: object, terms: Terms) -> str | None:
        """§5.6.11 Create or Update Temporal Representation of an Entity: the id of the entity
        it created, or None when it added instances to an existing one."""
        if not isinstance(body, dict):
            raise BadRequestData("a temporal representation must be a JSON object")
        entity_id = check_entity_id(body.get("id"))
        # The body is a temporal representation of an entity, which has a type (§5.6.11): checked
        # here, since adding to an existing entity's history does not otherwise read it.
        expand_types(body.get("type"), terms)
        now = timefmt.now()
        pairs = _instances(body, terms, now)
        if await self.store.get_entity(tenant, entity_id) is not None:
            await self._add(tenant, entity_id, pairs, now)
            return None
        # A new entity: its current state is the latest instance of each attribute (per
        # datasetId); creating it records those in the history, the older ones are added after.
        latest: dict[tuple[str, str | None], dict[str, Any]] = {}
        for attr, inst in pairs:
            key = (attr, inst.get("datasetId"))
            if key not in latest or _time(inst) >= _time(latest[key]):
                latest[key] = inst
        current: dict[str, Any] = {"id": entity_id, "type": body.get("type")}
        if "scope" in body:
            current["scope"] = body["scope"]  # §4.18: the entity's scope, checked on create
        for (attr, _), inst in latest.items():
            current.setdefault(terms.compact(attr), []).append(
                {k: v for k, v in inst.items() if k not in ("createdAt", "modifiedAt")}
            )
        await self.entities.create(tenant, current, terms)
        kept = {id(i) for i in latest.values()}
        await self._add(tenant, entity_id, [(a, i) for a, i in pairs if id(i) not in kept], now)
        return entity_id

    async def delete(self, tenant: str, entity_id: str) -> None:
        """§5.6.16 Delete Temporal Representation of an Entity: the entity and its history."""
        check_entity_id(entity_id)
        try:
            await self.entities.delete(tenant, entity_id)
            existed = True
        except ResourceNotFound:
            existed = False
        # Deleting the entity may have kept its history (CIDADE_HISTORY_AFTER_DELETE): this
        # operation deletes the temporal representation, so the history goes too, as does the
        # kept history of an entity deleted earlier.
        forgotten = await self.store.forget_history(tenant, entity_id)
        if not existed and not forgotten:
            raise ResourceNotFound(f"entity {entity_id} not found")

    async def add_attrs(self, tenant: str, entity_id: str, body: object, terms: Terms) -> None:
        """§5.6.12 Add Attributes to Temporal Representation of an Entity."""
        check_entity_id(entity_id)
        now = timefmt.now()
        pairs = _instances(body, terms, now)
        if await self.store.get_entity(tenant, entity_id) is None:
            raise ResourceNotFound(f"entity {entity_id} not found")
        await self._add(tenant, entity_id, pairs, now)

    async def delete_attr(
        self,
        tenant: str,
        entity_id: str,
        name: str,
        terms: Terms,
        dataset_id: str | None,
        every: bool,
    ) -> None:
        """§5.6.13 Delete Attribute from Temporal Representation of an Entity."""
        check_entity_id(entity_id)
        attr = expand_name(name, terms)
        if not await self.store.delete_history(tenant, entity_id, attr, dataset_id, every):
            raise ResourceNotFound(f"no history of {name} in {entity_id}")

    async def modify_instance(
        self,
        tenant: str,
        entity_id: str,
        name: str,
        instance_id: str,
        body: object,
        terms: Terms,
    ) -> None:
        """§5.6.14 Modify Attribute Instance in Temporal Representation of an Entity."""
        check_entity_id(entity_id)
        attr = expand_name(name, terms)
        _check_instance_id(instance_id)
        now = timefmt.now()
        inst = normalize_instance(name, body, terms, now)
        inst["instanceId"] = instance_id
        if not await self.store.replace_history_instance(
            tenant, entity_id, attr, history_row(attr, inst, now)
        ):
            raise ResourceNotFound(f"no instance {instance_id} of {name}")

    async def delete_instance(
        self, tenant: str, entity_id: str, name: str, instance_id: str, terms: Terms
    ) -> None:
        """§5.6.15 Delete Attribute Instance from Temporal Representation of an Entity."""
        check_entity_id(entity_id)
        attr = expand_name(name, terms)
        _check_instance_id(instance_id)
        if not await self.store.delete_history_instance(tenant, entity_id, attr, instance_id):
            raise ResourceNotFound(f"no instance {instance_id} of {name}")

    async def _add(self, tenant: str, entity_id: str, pairs: list, now: str) -> None:
        rows = [history_row(attr, inst, now) for attr, inst in pairs]
        await self.store.add_history(tenant, entity_id, rows)


def _instances(body: Any, terms: Terms, now: str) -> list[tuple[str, dict[str, Any]]]:
    """(attribute IRI, stored instance) for every instance of a temporal fragment."""
    if not isinstance(body, dict):
        raise BadRequestData("a temporal representation must be a JSON object")
    out = []
    for name, raw in body.items():
        if name in ("id", "type", "scope", "@context", "createdAt", "modifiedAt"):
            continue
        iri = expand_name(name, terms)
        for inst in raw if isinstance(raw, list) else [raw]:
            out.append((iri, normalize_instance(name, inst, terms, now)))
    return out


def _check_instance_id(instance_id: str) -> None:
    # An instanceId is a URI (§4.5.7): anything else cannot name an instance.
    if not is_uri(instance_id):
        raise BadRequestData(f"instanceId {instance_id!r} is not a URI")


def _dataset_columns(dataset_ids: tuple[str, ...]) -> list[str]:
    """datasetIds as the history keeps them: "" for the default instance ("@none")."""
    return ["" if d == "@none" else d for d in dataset_ids]


def _without(history: dict[str, list[dict]], omitted: frozenset[str]) -> dict[str, list[dict]]:
    """An entity's history without the attributes omit names."""
    if not omitted or omitted.isdisjoint(history):
        return history
    return {iri: instances for iri, instances in history.items() if iri not in omitted}


def _project(body: dict[str, Any], shown: Members, terms: Terms) -> dict[str, Any]:
    """A rendered temporal representation with only the members pick and omit leave (§4.21);
    an entity-level deletedAt stays unless omitted."""
    if shown.pick is None and not shown.omit:
        return body

    def name(member: str) -> str:
        return member if member in RESERVED_PROJECTION else terms.compact(member)

    picked = None if shown.pick is None else {name(m) for m in shown.pick} | {"deletedAt"}
    omitted = {name(m) for m in shown.omit}
    return {k: v for k, v in body.items() if k not in omitted and (picked is None or k in picked)}


def _time(inst: dict[str, Any]) -> str:
    return inst.get("observedAt") or inst.get("modifiedAt") or ""


def _count(history: History) -> int:
    return sum(len(instances) for attrs in history.values() for instances in attrs.values())


__all__ = ["Evolution", "TemporalService"]
