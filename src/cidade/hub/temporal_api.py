"""NGSI-LD temporal API, read side (ETSI GS CIM 009 v1.8 §6.18, §6.19): the history of entities
as temporal representations — normalized, temporalValues or aggregatedValues."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cidade.hub.api import PREFIX, HubApi, method_route
from cidade.hub.errors import ResourceNotFound
from cidade.hub.http import (
    accepted,
    context_for_read,
    json_response,
    list_param,
    page_params,
)
from cidade.hub.model import check_entity_id
from cidade.hub.querying import build_query, projection
from cidade.hub.temporal import TemporalQuery, parse_temporal_query, render_temporal
from cidade.store.base import HistoryQuery


class TemporalApi:
    def __init__(self, hub: HubApi) -> None:
        self.hub = hub
        self.store = hub.store

    def _history_query(
        self, ids: list[str], attrs: list[str], temporal: TemporalQuery
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
            # Aggregations summarise the whole window; lastN cuts plain representations only.
            last_n=None if temporal.aggregated else temporal.last_n,
        )

    async def retrieve(self, request: Request) -> Response:
        """§6.19.3.1 Retrieve Temporal Evolution of an Entity (§5.7.3)."""
        tenant = await self.hub._read_tenant(request)
        ctx = await context_for_read(self.hub.resolver, request)
        kind = accepted(request, geo=False)
        temporal = parse_temporal_query(request.query_params, require_timerel=False)
        entity_id = check_entity_id(request.path_params["entity_id"])
        entity = await self.store.get_entity(tenant, entity_id)
        if entity is None:
            raise ResourceNotFound(f"entity {entity_id} not found")
        attrs = projection(ctx.terms, list_param(request, "attrs"))
        history = await self.store.history(
            tenant, self._history_query([entity_id], attrs, temporal)
        )
        body = render_temporal(
            entity_id,
            entity["type"],
            history.get(entity_id, {}),
            ctx.terms,
            temporal,
            attrs=attrs or None,
        )
        return json_response(body, kind=kind, ctx=ctx)

    async def query(self, request: Request) -> Response:
        """§6.18.3.2 Query Temporal Evolution of Entities (§5.7.4)."""
        tenant = await self.hub._read_tenant(request)
        ctx = await context_for_read(self.hub.resolver, request)
        kind = accepted(request, geo=False)
        temporal = parse_temporal_query(request.query_params, require_timerel=False)
        settings = self.hub.settings
        limit, offset, count = page_params(
            request, default=settings.default_page_size, maximum=settings.max_page_size
        )
        params = request.query_params
        attrs = list_param(request, "attrs")
        query = build_query(
            ctx.terms,
            ids=list_param(request, "id"),
            id_pattern=params.get("idPattern"),
            type_text=params.get("type"),
            attrs=attrs,
            q=params.get("q"),
            georel=params.get("georel"),
            geometry=params.get("geometry"),
            coordinates=params.get("coordinates"),
            geoproperty=params.get("geoproperty"),
            limit=limit,
            offset=offset,
            count=count,
            require_filter=params.get("local", "false") != "true",
        )
        found = await self.store.query(tenant, query)
        expanded = list(query.attrs)
        history = await self.store.history(
            tenant, self._history_query([e["id"] for e in found.entities], expanded, temporal)
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
            )
            for e in found.entities
        ]
        headers = {}
        if found.count is not None:
            headers["NGSILD-Results-Count"] = str(found.count)
        return json_response(body, kind=kind, ctx=ctx, headers=headers)

    def routes(self) -> list[Any]:
        return [
            method_route(f"{PREFIX}/temporal/entities", {"GET": self.query}),
            method_route(f"{PREFIX}/temporal/entities/{{entity_id:path}}", {"GET": self.retrieve}),
        ]


__all__ = ["TemporalApi"]
