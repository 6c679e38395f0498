"""NGSI-LD temporal API, HTTP binding (ETSI GS CIM 009 v1.8 §6.18 to §6.22): one thin handler
per operation; the operations themselves are ``temporal_service.TemporalService``'s."""

from __future__ import annotations

from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

from cidade.auth.routes import guarded
from cidade.hub import params as allowed
from cidade.hub.api import PREFIX, HubApi
from cidade.hub.http import (
    Ctx,
    accepted,
    context_for_read,
    created,
    json_response,
    list_param,
    reject_unsupported,
    tenant_of,
)
from cidade.hub.params import check_params
from cidade.hub.querying import Members, members, query_from_body
from cidade.hub.temporal import TemporalQuery, parse_temporal_query, temporal_params
from cidade.hub.temporal_service import Evolution, TemporalService
from cidade.ngsild.errors import BadRequestData
from cidade.store.base import EntityQuery

# Of the parameters /entities does not support yet (http.UNSUPPORTED_PARAMS: 501 rather than
# an answer that ignores them), those temporal reads do.
TEMPORAL_SUPPORTED = ("datasetId",)


class TemporalApi:
    def __init__(self, hub: HubApi) -> None:
        self.hub = hub
        self.service = TemporalService(hub.store, hub.entities, hub.settings.temporal_max_instances)

    # -- reads ----------------------------------------------------------------------------------

    async def retrieve(self, request: Request) -> Response:
        """§6.19.3.1 Retrieve Temporal Evolution of an Entity (§5.7.3)."""
        check_params(request, allowed.RETRIEVE_TEMPORAL)
        reject_unsupported(request, TEMPORAL_SUPPORTED)
        tenant, ctx, kind = await self.hub.for_read(request, geo=False)
        temporal = parse_temporal_query(request.query_params, require_timerel=False)
        found = await self.service.retrieve(
            tenant,
            request.path_params["entity_id"],
            _members(request, ctx.terms),
            temporal,
            ctx.terms,
            lambda entity: self.hub.visible(request, entity),
        )
        status, headers = _paged(found, {})
        return json_response(found.body, status=status, kind=kind, ctx=ctx, headers=headers)

    async def query(self, request: Request) -> Response:
        """§6.18.3.2 Query Temporal Evolution of Entities (§5.7.4)."""
        check_params(request, allowed.QUERY_TEMPORAL)
        reject_unsupported(request, TEMPORAL_SUPPORTED)
        tenant, ctx, kind = await self.hub.for_read(request, geo=False)
        temporal = parse_temporal_query(request.query_params, require_timerel=False)
        query = self.hub.query_from_params(request, ctx)
        if not (query.types or query.attrs or query.q or query.geo) and not _local(request):
            # §6.18.3.2 as §6.4.3.2: entity ids or an id pattern alone do not make a query.
            raise BadRequestData(
                "a temporal query needs at least one of: type, attrs, q, a geo-query, local=true"
            )
        return await self._query(
            request, tenant, ctx, kind, query, _members(request, ctx.terms), temporal
        )

    async def query_via_post(self, request: Request) -> Response:
        """§6.24.3.1 Query Temporal Evolution of Entities via POST (§5.7.4; body: §5.2.23 Query
        with its temporalQ, §5.2.21)."""
        check_params(request, allowed.QUERY_TEMPORAL_VIA_POST)
        reject_unsupported(request, TEMPORAL_SUPPORTED)
        tenant = await self.hub.read_tenant(request)
        kind = accepted(request, geo=False)
        body, ctx = await self.hub.read_body(request)
        limit, offset, count = self.hub.page(request)
        query = query_from_body(ctx.terms, body, limit=limit, offset=offset, count=count)
        temporal = parse_temporal_query(
            temporal_params(request.query_params, body.get("temporalQ")), require_timerel=False
        )
        shown = members(
            ctx.terms,
            body.get("attrs") or [],
            list_param(request, "pick"),
            list_param(request, "omit"),
            list_param(request, "datasetId"),
        )
        return await self._query(request, tenant, ctx, kind, query, shown, temporal)

    async def _query(
        self,
        request: Request,
        tenant: str,
        ctx: Ctx,
        kind: str,
        query: EntityQuery,
        shown: Members,
        temporal: TemporalQuery,
    ) -> Response:
        narrowed = self.hub.narrow(request, query)
        found = (
            await self.service.query(tenant, narrowed, shown, temporal, ctx.terms)
            if narrowed is not None
            else Evolution([], None, 0 if query.count else None)
        )
        headers = {}
        if found.count is not None:
            headers["NGSILD-Results-Count"] = str(found.count)
        status, headers = _paged(found, headers)
        return json_response(found.body, status=status, kind=kind, ctx=ctx, headers=headers)

    # -- writes ---------------------------------------------------------------------------------

    async def create_or_update(self, request: Request) -> Response:
        """§6.18.3.1 Create or Update Temporal Representation of an Entity (§5.6.11)."""
        check_params(request, allowed.TEMPORAL_WRITE)
        tenant = tenant_of(request)
        body, ctx = await self.hub.read_body(request)
        entity_id = await self.service.create_or_update(tenant, body, ctx.terms)
        if entity_id is None:
            return Response(status_code=204)
        return created(f"{PREFIX}/temporal/entities", entity_id)

    async def delete_entity(self, request: Request) -> Response:
        """§6.19.3.2 Delete Temporal Representation of an Entity (§5.6.16)."""
        check_params(request, allowed.TEMPORAL_WRITE)
        tenant = await self.hub.read_tenant(request)
        await self.service.delete(tenant, request.path_params["entity_id"])
        return Response(status_code=204)

    async def add_attrs(self, request: Request) -> Response:
        """§6.20.3.1 Add Attributes to Temporal Representation of an Entity (§5.6.12)."""
        check_params(request, allowed.TEMPORAL_WRITE)
        tenant = await self.hub.read_tenant(request)
        body, ctx = await self.hub.read_body(request)
        await self.service.add_attrs(tenant, request.path_params["entity_id"], body, ctx.terms)
        return Response(status_code=204)

    async def delete_attr(self, request: Request) -> Response:
        """§6.21.3.1 Delete Attribute from Temporal Representation of an Entity (§5.6.13)."""
        check_params(request, allowed.TEMPORAL_WRITE)
        tenant = await self.hub.read_tenant(request)
        ctx = await context_for_read(self.hub.resolver, request)
        params = request.query_params
        every = params.get("deleteAll", "false")
        if every not in ("true", "false"):
            raise BadRequestData("deleteAll must be true or false")
        p = request.path_params
        await self.service.delete_attr(
            tenant,
            p["entity_id"],
            p["attr_id"],
            ctx.terms,
            params.get("datasetId"),
            every == "true",
        )
        return Response(status_code=204)

    async def patch_instance(self, request: Request) -> Response:
        """§6.22.3.1 Modify Attribute Instance in Temporal Representation of an Entity
        (§5.6.14)."""
        check_params(request, allowed.TEMPORAL_WRITE)
        tenant = await self.hub.read_tenant(request)
        body, ctx = await self.hub.read_body(request)
        p = request.path_params
        await self.service.modify_instance(
            tenant, p["entity_id"], p["attr_id"], p["instance_id"], body, ctx.terms
        )
        return Response(status_code=204)

    async def delete_instance(self, request: Request) -> Response:
        """§6.22.3.2 Delete Attribute Instance from Temporal Representation of an Entity
        (§5.6.15)."""
        check_params(request, allowed.TEMPORAL_WRITE)
        tenant = await self.hub.read_tenant(request)
        ctx = await context_for_read(self.hub.resolver, request)
        p = request.path_params
        await self.service.delete_instance(
            tenant, p["entity_id"], p["attr_id"], p["instance_id"], ctx.terms
        )
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
                f"{PREFIX}/temporal/entityOperations/query", {"POST": (self.query_via_post, r)}
            ),
            # An empty attribute name (attrs//{instance_id}) reaches the handlers, which refuse
            # it as a bad name (400), rather than matching no route (404).
            guarded(
                f"{attrs}/{{attr_id:maybe_empty}}/{{instance_id}}",
                {"PATCH": (self.patch_instance, w), "DELETE": (self.delete_instance, w)},
            ),
            guarded(f"{attrs}/{{attr_id}}", {"DELETE": (self.delete_attr, w)}),
            guarded(attrs, {"POST": (self.add_attrs, w)}),
        ]


def _members(request: Request, terms: Any) -> Members:
    """The attrs, pick and omit parameters (§4.21)."""
    return members(
        terms,
        list_param(request, "attrs"),
        list_param(request, "pick"),
        list_param(request, "omit"),
        list_param(request, "datasetId"),
    )


class MaybeEmptySegment(Convertor[str]):
    """A path segment that may be empty."""

    regex = "[^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("maybe_empty", MaybeEmptySegment())


def _local(request: Request) -> bool:
    local = request.query_params.get("local", "false")
    if local not in ("true", "false"):
        raise BadRequestData("local must be true or false")
    return local == "true"


def _paged(found: Evolution, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """§6.3.10: a response cut to one page of instances is 206 Partial Content (RFC 7233 §4.1)
    with the page's time range in Content-Range."""
    if found.page is None:
        return 200, headers
    return 206, {**headers, "Content-Range": found.page.content_range()}


__all__ = ["TemporalApi"]
