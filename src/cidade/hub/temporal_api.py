"""NGSI-LD temporal API, read side (ETSI GS CIM 009 v1.8 §6.18, §6.19): the history of entities
as temporal representations — normalized, temporalValues or aggregatedValues."""

from __future__ import annotations

import urllib.parse
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cidade.auth.routes import guarded
from cidade.hub.api import PREFIX, HubApi
from cidade.hub.http import (
    accepted,
    context_for_read,
    json_response,
    list_param,
    tenant_of,
)
from cidade.hub.model import check_entity_id, check_name, expand_types, normalize_instance
from cidade.hub.querying import projection
from cidade.hub.temporal import (
    TemporalQuery,
    parse_temporal_query,
    render_stats_series,
    render_temporal,
    sql_periods,
)
from cidade.hub.temporal_paging import Limits, Page, apply_cut, find_cut
from cidade.hub.temporal_paging import limits as paging_limits
from cidade.ngsild import timefmt
from cidade.ngsild.errors import BadRequestData, NotImplementedFeature, ResourceNotFound
from cidade.store.base import TIME_COLUMNS, EntityQuery, HistoryQuery, QueryResult
from cidade.store.history import history_row


class TemporalApi:
    def __init__(self, hub: HubApi) -> None:
        self.hub = hub
        self.store = hub.store

    def _history_query(
        self, ids: list[str], attrs: list[str], temporal: TemporalQuery, limits: Limits
    ) -> HistoryQuery:
        lower, upper, lower_inclusive, upper_inclusive = temporal.time_bounds()
        return HistoryQuery(
            entity_ids=ids,
            attrs=attrs,
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
        self, tenant: str, ids: list[str], attrs: list[str], temporal: TemporalQuery
    ) -> tuple[dict[str, dict[str, list[dict]]], Page | None, dict[str, dict[str, str]]]:
        """The history of these entities as one response holds it (§6.3.10): the instances, the
        page when they were cut to one, and per entity the attributes the cut left empty."""
        if temporal.timeproperty not in TIME_COLUMNS:
            # deletedAt: the history has no deletion time per instance to select on.
            raise NotImplementedFeature(f"timeproperty={temporal.timeproperty} is not supported")
        most = self.hub.settings.temporal_max_instances
        limits = paging_limits(temporal, most)
        query = self._history_query(ids, attrs, temporal, limits)
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
        entity: dict[str, Any],
        attrs: list[str],
        temporal: TemporalQuery,
        ctx: Any,
    ) -> dict[str, Any] | None:
        """aggregatedValues computed by the store over its number column, for a numeric series
        and a query with both time bounds and a period: a year of 15-minute readings per day
        without reading 35,040 instances into Python. None when the query or the data needs the
        general path (any value that is not a number, too many periods, no bounds)."""
        bounds = sql_periods(temporal)
        if bounds is None or temporal.timeproperty not in TIME_COLUMNS:
            return None
        stats = await self.store.history_stats(
            tenant, entity["id"], attrs, temporal.timeproperty, bounds, temporal.aggr_methods
        )
        if stats is None:
            return None
        types = [ctx.terms.compact(t) for t in entity["type"]]
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
            out[ctx.terms.compact(attr)] = series[0] if len(series) == 1 else series
        if "deletedAt" in entity:
            out["deletedAt"] = entity["deletedAt"]
        return out

    async def retrieve(self, request: Request) -> Response:
        """§6.19.3.1 Retrieve Temporal Evolution of an Entity (§5.7.3)."""
        tenant = await self.hub.read_tenant(request)
        ctx = await context_for_read(self.hub.resolver, request)
        kind = accepted(request, geo=False)
        temporal = parse_temporal_query(request.query_params, require_timerel=False)
        entity_id = check_entity_id(request.path_params["entity_id"])
        entity = await self.store.get_entity(tenant, entity_id)
        if entity is None:
            # A deleted entity whose history was kept (CIDADE_HISTORY_AFTER_DELETE) still has a
            # temporal evolution: serve it while some of it remains.
            entity = await self.store.deleted_entity(tenant, entity_id)
        if entity is None or not self.hub.visible(request, entity):
            raise ResourceNotFound(f"entity {entity_id} not found")
        attrs = projection(ctx.terms, list_param(request, "attrs"))
        if temporal.aggregated:
            aggregated = await self._aggregated_in_store(tenant, entity, attrs, temporal, ctx)
            if aggregated is not None:
                return json_response(aggregated, kind=kind, ctx=ctx)
        history, page, emptied = await self._history(tenant, [entity_id], attrs, temporal)
        body = render_temporal(
            entity_id,
            entity["type"],
            history.get(entity_id, {}),
            ctx.terms,
            temporal,
            attrs=attrs or None,
            emptied=emptied.get(entity_id),
        )
        if "deletedAt" in entity:
            body["deletedAt"] = entity["deletedAt"]
        status, headers = _paged(page, {})
        return json_response(body, status=status, kind=kind, ctx=ctx, headers=headers)

    async def query(self, request: Request) -> Response:
        """§6.18.3.2 Query Temporal Evolution of Entities (§5.7.4)."""
        tenant = await self.hub.read_tenant(request)
        ctx = await context_for_read(self.hub.resolver, request)
        kind = accepted(request, geo=False)
        temporal = parse_temporal_query(request.query_params, require_timerel=False)
        query = self.hub.query_from_params(request, ctx)
        narrowed = self.hub.narrow(request, query)
        found = (
            await self._query(tenant, narrowed)
            if narrowed is not None
            else QueryResult([], 0 if query.count else None)
        )
        expanded = list(query.attrs)
        history, page, emptied = await self._history(
            tenant, [e["id"] for e in found.entities], expanded, temporal
        )
        body: list[dict[str, Any]] = [
            render_temporal(
                e["id"],
                e["type"],
                history.get(e["id"], {}),
                ctx.terms,
                temporal,
                attrs=expanded or None,
                origin=temporal.time_at,
                emptied=emptied.get(e["id"]),
            )
            for e in found.entities
        ]
        for e, rendered in zip(found.entities, body, strict=True):
            if "deletedAt" in e:
                rendered["deletedAt"] = e["deletedAt"]
        headers = {}
        if found.count is not None:
            headers["NGSILD-Results-Count"] = str(found.count)
        status, headers = _paged(page, headers)
        return json_response(body, status=status, kind=kind, ctx=ctx, headers=headers)

    async def _query(self, tenant: str, query: EntityQuery) -> QueryResult:
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

    # -- writes (§6.18.3.1, §6.19.3.2, §6.20, §6.21, §6.22) -------------------------------------

    def _instances(self, body: Any, terms: Any, now: str) -> list[tuple[str, dict[str, Any]]]:
        """(attribute IRI, stored instance) for every instance of a temporal fragment."""
        if not isinstance(body, dict):
            raise BadRequestData("a temporal representation must be a JSON object")
        out = []
        for name, raw in body.items():
            if name in ("id", "type", "scope", "@context", "createdAt", "modifiedAt"):
                continue
            iri = terms.expand(check_name(name))
            for inst in raw if isinstance(raw, list) else [raw]:
                out.append((iri, normalize_instance(name, inst, terms, now)))
        return out

    async def _add(self, tenant: str, entity_id: str, pairs: list, now: str) -> None:
        rows = [history_row(attr, inst, now) for attr, inst in pairs]
        await self.store.add_history(tenant, entity_id, rows)

    async def create_or_update(self, request: Request) -> Response:
        """§6.18.3.1 Create or Update Temporal Representation of an Entity (§5.6.11)."""
        tenant = tenant_of(request)
        body, ctx = await self.hub.read_body(request)
        if not isinstance(body, dict):
            raise BadRequestData("a temporal representation must be a JSON object")
        entity_id = check_entity_id(body.get("id"))
        # The body is a temporal representation of an entity, which has a type (§5.6.11): checked
        # here, since adding to an existing entity's history does not otherwise read it.
        expand_types(body.get("type"), ctx.terms)
        now = timefmt.now()
        pairs = self._instances(body, ctx.terms, now)
        if await self.store.get_entity(tenant, entity_id) is not None:
            await self._add(tenant, entity_id, pairs, now)
            return Response(status_code=204)
        # A new entity: its current state is the latest instance of each attribute (per
        # datasetId); creating it records those in the history, the older ones are added after.
        latest: dict[tuple[str, str | None], dict[str, Any]] = {}
        for attr, inst in pairs:
            key = (attr, inst.get("datasetId"))
            if key not in latest or _time(inst) >= _time(latest[key]):
                latest[key] = inst
        current: dict[str, Any] = {"id": entity_id, "type": body.get("type")}
        for (attr, _), inst in latest.items():
            current.setdefault(ctx.terms.compact(attr), []).append(
                {k: v for k, v in inst.items() if k not in ("createdAt", "modifiedAt")}
            )
        await self.hub.entities.create(tenant, current, ctx.terms)
        kept = {id(i) for i in latest.values()}
        await self._add(tenant, entity_id, [(a, i) for a, i in pairs if id(i) not in kept], now)
        # Percent-encoded as for Create Entity: an id may hold any character a URI allows, and
        # a header only latin-1.
        location = f"{PREFIX}/temporal/entities/{urllib.parse.quote(entity_id, safe=':')}"
        return Response(status_code=201, headers={"Location": location})

    async def delete_entity(self, request: Request) -> Response:
        """§6.19.3.2 Delete Temporal Representation of an Entity (§5.6.16): the entity and its
        history."""
        tenant = await self.hub.read_tenant(request)
        entity_id = check_entity_id(request.path_params["entity_id"])
        try:
            await self.hub.entities.delete(tenant, entity_id)
            existed = True
        except ResourceNotFound:
            existed = False
        # Deleting the entity may have kept its history (CIDADE_HISTORY_AFTER_DELETE): this
        # operation deletes the temporal representation, so the history goes too, as does the
        # kept history of an entity deleted earlier.
        forgotten = await self.store.forget_history(tenant, entity_id)
        if not existed and not forgotten:
            raise ResourceNotFound(f"entity {entity_id} not found")
        return Response(status_code=204)

    async def add_attrs(self, request: Request) -> Response:
        """§6.20.3.1 Add Attributes to Temporal Representation of an Entity (§5.6.12)."""
        tenant = await self.hub.read_tenant(request)
        body, ctx = await self.hub.read_body(request)
        entity_id = check_entity_id(request.path_params["entity_id"])
        now = timefmt.now()
        pairs = self._instances(body, ctx.terms, now)
        if await self.store.get_entity(tenant, entity_id) is None:
            raise ResourceNotFound(f"entity {entity_id} not found")
        await self._add(tenant, entity_id, pairs, now)
        return Response(status_code=204)

    async def delete_attr(self, request: Request) -> Response:
        """§6.21.3.1 Delete Attribute from Temporal Representation of an Entity (§5.6.13)."""
        tenant = await self.hub.read_tenant(request)
        ctx = await context_for_read(self.hub.resolver, request)
        params = request.query_params
        every = params.get("deleteAll", "false")
        if every not in ("true", "false"):
            raise BadRequestData("deleteAll must be true or false")
        entity_id = check_entity_id(request.path_params["entity_id"])
        name = request.path_params["attr_id"]
        attr = ctx.terms.expand(check_name(name))
        deleted = await self.store.delete_history(
            tenant, entity_id, attr, params.get("datasetId"), every == "true"
        )
        if not deleted:
            raise ResourceNotFound(f"no history of {name} in {entity_id}")
        return Response(status_code=204)

    async def patch_instance(self, request: Request) -> Response:
        """§6.22.3.1 Modify Attribute Instance in Temporal Representation (§5.6.14)."""
        tenant = await self.hub.read_tenant(request)
        body, ctx = await self.hub.read_body(request)
        p = request.path_params
        entity_id = check_entity_id(p["entity_id"])
        attr = ctx.terms.expand(check_name(p["attr_id"]))
        now = timefmt.now()
        inst = normalize_instance(p["attr_id"], body, ctx.terms, now)
        inst["instanceId"] = p["instance_id"]
        if not await self.store.replace_history_instance(
            tenant, entity_id, attr, history_row(attr, inst, now)
        ):
            raise ResourceNotFound(f"no instance {p['instance_id']} of {p['attr_id']}")
        return Response(status_code=204)

    async def delete_instance(self, request: Request) -> Response:
        """§6.22.3.2 Delete Attribute Instance from Temporal Representation (§5.6.15)."""
        tenant = await self.hub.read_tenant(request)
        ctx = await context_for_read(self.hub.resolver, request)
        p = request.path_params
        entity_id = check_entity_id(p["entity_id"])
        attr = ctx.terms.expand(check_name(p["attr_id"]))
        if not await self.store.delete_history_instance(tenant, entity_id, attr, p["instance_id"]):
            raise ResourceNotFound(f"no instance {p['instance_id']} of {p['attr_id']}")
        return Response(status_code=204)

    def routes(self) -> list[Any]:
        one = f"{PREFIX}/temporal/entities/{{entity_id:entity_id}}"
        attrs = f"{PREFIX}/temporal/entities/{{entity_id:path}}/attrs"
        r, w = "temporal.read", "temporal.write"
        return [
            guarded(one, {"GET": (self.retrieve, r), "DELETE": (self.delete_entity, w)}),
            guarded(
                f"{PREFIX}/temporal/entities",
                {"GET": (self.query, r), "POST": (self.create_or_update, w)},
            ),
            guarded(
                f"{attrs}/{{attr_id}}/{{instance_id}}",
                {"PATCH": (self.patch_instance, w), "DELETE": (self.delete_instance, w)},
            ),
            guarded(f"{attrs}/{{attr_id}}", {"DELETE": (self.delete_attr, w)}),
            guarded(attrs, {"POST": (self.add_attrs, w)}),
        ]


def _paged(page: Page | None, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """§6.3.10: a response cut to one page of instances is 206 Partial Content (RFC 7233 §4.1)
    with the page's time range in Content-Range."""
    if page is None:
        return 200, headers
    return 206, {**headers, "Content-Range": page.content_range()}


def _time(inst: dict[str, Any]) -> str:
    return inst.get("observedAt") or inst.get("modifiedAt") or ""


__all__ = ["TemporalApi"]


def _count(history: dict[str, dict[str, list[dict]]]) -> int:
    return sum(len(instances) for attrs in history.values() for instances in attrs.values())
