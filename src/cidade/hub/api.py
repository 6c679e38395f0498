"""NGSI-LD HTTP binding (ETSI GS CIM 009 v1.8 §6): one handler per operation, each thin.

Handlers parse the request (tenant, @context, parameters, body), call a domain service and
render its result; every rule of the data lives in the services and the model.
"""

from __future__ import annotations

from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cidade.auth.gate import grant_of
from cidade.auth.roles import PUBLIC
from cidade.auth.routes import guarded
from cidade.config import Settings
from cidade.http.bodies import GEO_JSON, JSON, read_json
from cidade.hub import params as allowed
from cidade.hub.access import narrow_query
from cidade.hub.batch import BatchResult, BatchService
from cidade.hub.discovery import Discovery
from cidade.hub.entities import EntityService
from cidade.hub.http import (
    Ctx,
    accepted,
    context_for_body,
    context_for_read,
    contexts_for_batch,
    created,
    json_response,
    list_param,
    options_param,
    page_params,
    reject_unsupported,
    representation,
    tenant_of,
)
from cidade.hub.jsonld import ContextResolver, TermMap
from cidade.hub.linked import Join, Joined, join_linked, parse_join
from cidade.hub.model import View, check_entity_id, geojson_feature, is_uri, render_entity
from cidade.hub.params import check_params
from cidade.hub.projection import parse_projection
from cidade.hub.querying import attribute_names, build_query, query_from_body
from cidade.ngsild.errors import (
    BadRequestData,
    InvalidRequest,
    NgsiError,
    ResourceNotFound,
)
from cidade.store.base import EntityQuery, QueryResult, Store

PREFIX = "/ngsi-ld/v1"
# Of the parameters not every read supports yet (http.UNSUPPORTED_PARAMS), those Retrieve
# Entity and Query Entities do.
ENTITY_READS = ("scopeQ", "join", "joinLevel", "datasetId")


def _no_content(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, headers=headers)


class HubApi:
    """The NGSI-LD API of one application: services, and the routes that call them."""

    def __init__(self, settings: Settings, store: Store, resolver: ContextResolver) -> None:
        self.settings = settings
        self.store = store
        self.resolver = resolver
        self.entities = EntityService(store)
        self.batch = BatchService(self.entities)
        self.discovery = Discovery(store)
        # Devices plug in here: an update of a device's command attribute becomes a command
        # (devices/commands.py). None: no devices capability.
        self.commands: Any = None

    # -- helpers --------------------------------------------------------------------------------

    async def read_tenant(self, request: Request) -> str:
        tenant = tenant_of(request)
        if not await self.store.tenant_exists(tenant):
            raise ResourceNotFound(f"tenant {tenant} not found")
        return tenant

    async def for_read(self, request: Request, *, geo: bool = True) -> tuple[str, Ctx, str]:
        """What a read needs, in the order its errors come: the tenant (404 when it does not
        exist), the @context to compact with, and the media type to answer in (406; GeoJSON
        only where ``geo``)."""
        tenant = await self.read_tenant(request)
        ctx = await context_for_read(self.resolver, request)
        return tenant, ctx, accepted(request, geo=geo)

    def page(self, request: Request) -> tuple[int, int, bool]:
        """The limit, offset and count of a request (§5.5.9), within this broker's page sizes."""
        return page_params(
            request, default=self.settings.default_page_size, maximum=self.settings.max_page_size
        )

    async def read_body(self, request: Request, *, merge: bool = False) -> tuple[Any, Ctx]:
        """The body, a JSON object, and its @context. A body of another JSON type is malformed
        for the operation: 400 InvalidRequest, before its @context is looked at."""
        body, kind = await read_json(request, self.settings.max_body_bytes, merge=merge)
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object")
        ctx = await context_for_body(self.resolver, request, body, kind)
        return _strip_context(body), ctx

    def _view(self, request: Request, ctx: Ctx, body: dict[str, Any] | None = None) -> View:
        """How the request asks to see entities (§6.3: format, options, attrs, pick, omit,
        lang, datasetId); a Query body (POST /entityOperations/query) may carry attrs, pick,
        omit, lang and datasetId itself."""
        if not request.scope.get("query_string") and not body:
            return View(ctx.terms)
        reject_unsupported(request, ENTITY_READS)
        params = request.query_params
        given = body or {}
        opts = options_param(request)
        attrs = list_param(request, "attrs") or _names(given.get("attrs"), "attrs")
        pick = _param_or_member(params, given, "pick")
        omit = _param_or_member(params, given, "omit")
        if attrs and (pick is not None or omit is not None):
            raise BadRequestData("attrs cannot be combined with pick or omit (§4.21)")
        picked = parse_projection(pick, ctx.terms, omit=False) if pick is not None else None
        omitted = parse_projection(omit, ctx.terms, omit=True) if omit is not None else None
        if picked is not None and omitted is not None:
            both = picked.members & omitted.members
            if both:
                raise BadRequestData(f"{', '.join(sorted(both))} cannot be in both pick and omit")
        datasets = list_param(request, "datasetId") or _names(given.get("datasetId"), "datasetId")
        for dataset in datasets:
            if dataset != "@none" and not is_uri(dataset):
                raise BadRequestData(f"datasetId {dataset!r} is neither a URI nor @none")
        lang = params.get("lang", given.get("lang"))
        if lang is not None and not isinstance(lang, str):
            raise BadRequestData("lang must be a string")
        return View(
            ctx.terms,
            form=representation(request),
            sys_attrs="sysAttrs" in opts,
            attrs=attribute_names(ctx.terms, attrs) if attrs else None,
            pick=picked,
            omit=omitted,
            lang=lang,
            datasets=datasets or None,
        )

    @staticmethod
    def _join(request: Request, body: dict[str, Any] | None = None) -> Join | None:
        """``join`` and ``joinLevel`` (§4.5.23), from the query string or a Query body."""
        if not request.scope.get("query_string") and not body:
            return None
        params = request.query_params
        given = body or {}
        return parse_join(
            params.get("join", given.get("join")), params.get("joinLevel", given.get("joinLevel"))
        )

    def _render_many(
        self,
        request: Request,
        entities: list[dict],
        view: View,
        kind: str,
        ctx: Ctx,
        headers: dict,
        linked: Joined | None = None,
    ) -> Response:
        if linked is not None:
            items = linked.items
        else:
            items = [render_entity(e, view) for e in entities]
        if view.pick is not None or view.omit is not None:
            # An entity left with no member by pick/omit is not part of the result (§4.21).
            kept = [(e, r) for e, r in zip(entities, items, strict=True) if r]
            entities, items = [e for e, _ in kept], [r for _, r in kept]
        if linked is not None and linked.linked:
            entities = [*entities, *linked.linked_entities]
            items = [*items, *linked.linked]
        if kind == GEO_JSON:
            geo = self._geometry_property(request, ctx)
            return json_response(
                {
                    "type": "FeatureCollection",
                    "features": [
                        geojson_feature(e, r, geo) for e, r in zip(entities, items, strict=True)
                    ],
                },
                kind=GEO_JSON,
                ctx=ctx,
                headers=headers,
            )
        return json_response(items, kind=kind, ctx=ctx, headers=headers)

    def query_from_params(
        self, request: Request, ctx: Ctx, *, ids_suffice: bool = True
    ) -> EntityQuery:
        """GET /entities and GET /temporal/entities share their filters and paging (§6.4.3.2).
        Query Entities needs more than ids or an id pattern (§5.7.2.4: ``ids_suffice=False``)."""
        params = request.query_params
        limit, offset, count = self.page(request)
        return build_query(
            ctx.terms,
            ids=list_param(request, "id"),
            id_pattern=params.get("idPattern"),
            type_text=params.get("type"),
            attrs=list_param(request, "attrs"),
            q=params.get("q"),
            scope_q=params.get("scopeQ"),
            georel=params.get("georel"),
            geometry=params.get("geometry"),
            coordinates=params.get("coordinates"),
            geoproperty=params.get("geoproperty"),
            order_by=params.get("orderBy"),
            collation=params.get("collation"),
            limit=limit,
            offset=offset,
            count=count,
            require_filter=not _boolean(params, "local"),
            ids_suffice=ids_suffice,
        )

    @staticmethod
    def narrow(request: Request, query: EntityQuery) -> EntityQuery | None:
        """The query limited to what the caller may see (None: nothing)."""
        return narrow_query(grant_of(request), query)

    @staticmethod
    def visible(request: Request, entity: dict[str, Any]) -> bool:
        return grant_of(request).may_read(entity)

    @staticmethod
    def check_writes(request: Request, body: Any = None) -> None:
        """A device writes only its own entities: the one in the path, or those of the body."""
        grant = grant_of(request)
        if grant.own_entities is None:
            return
        ids: list[object] = []
        if "entity_id" in request.path_params:
            ids.append(request.path_params["entity_id"])
        elif isinstance(body, dict):
            ids.append(body.get("id"))
        elif isinstance(body, list):
            ids.extend(b.get("id") if isinstance(b, dict) else b for b in body)
        grant.check_writes(ids)

    async def with_commands(self, request: Request, tenant: str, entity_id: str, body: Any) -> Any:
        """The body to write, once the command attributes it holds (if the entity is a
        device's) have been sent on to the device."""
        if self.commands is None or not isinstance(body, dict):
            return body
        return await self.commands.intercept(grant_of(request), tenant, entity_id, body)

    async def with_batch_commands(self, request: Request, tenant: str, body: Any) -> Any:
        """A batch's entities, each once its command attributes went to the device."""
        if self.commands is None or not isinstance(body, list):
            return body
        out = []
        for item in body:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                item = await self.commands.intercept(grant_of(request), tenant, item["id"], item)
            out.append(item)
        return out

    async def run_query(self, request: Request, tenant: str, query: EntityQuery) -> QueryResult:
        narrowed = self.narrow(request, query)
        if narrowed is None:
            return QueryResult([], 0 if query.count else None)
        return await self.store.query(tenant, narrowed)

    async def _join_linked(
        self, request: Request, tenant: str, entities: list[dict], view: View, join: Join
    ) -> Joined:
        """Linked entity retrieval (§4.5.23), with only the linked entities the caller may read."""
        return await join_linked(
            self.store, tenant, entities, view, join, lambda e: self.visible(request, e)
        )

    def _geometry_property(self, request: Request, ctx: Ctx) -> str:
        return ctx.terms.expand(request.query_params.get("geometryProperty", "location"))

    # -- §6.4 /entities -------------------------------------------------------------------------

    async def create_entity(self, request: Request) -> Response:
        """§6.4.3.1 Create Entity (§5.6.1)."""
        check_params(request, allowed.CREATE_ENTITY)
        tenant = tenant_of(request)
        body, ctx = await self.read_body(request)
        self.check_writes(request, body)
        entity_id = await self.entities.create(tenant, body, ctx.terms)
        return created(f"{PREFIX}/entities", entity_id)

    async def query_entities(self, request: Request) -> Response:
        """§6.4.3.2 Query Entities (§5.7.2)."""
        check_params(request, allowed.QUERY_ENTITIES)
        tenant, ctx, kind = await self.for_read(request)
        query = self.query_from_params(request, ctx, ids_suffice=False)
        view = self._view(request, ctx)
        join = self._join(request)
        result = await self.run_query(request, tenant, query)
        headers = {}
        if result.count is not None:
            headers["NGSILD-Results-Count"] = str(result.count)
        linked = None
        if join is not None:
            linked = await self._join_linked(request, tenant, result.entities, view, join)
        return self._render_many(request, result.entities, view, kind, ctx, headers, linked)

    async def retrieve_entity(self, request: Request) -> Response:
        """§6.5.3.1 Retrieve Entity (§5.7.1)."""
        check_params(request, allowed.RETRIEVE_ENTITY)
        tenant, ctx, kind = await self.for_read(request)
        view = self._view(request, ctx)
        join = self._join(request)
        entity = await self.entities.get(tenant, request.path_params["entity_id"])
        if not self.visible(request, entity):
            raise ResourceNotFound(f"entity {entity['id']} not found")
        if view.attrs is not None and view.attrs.isdisjoint(entity["attrs"]):
            raise ResourceNotFound(f"entity {entity['id']} has none of the attributes asked for")
        if join is None:
            body: Any = render_entity(entity, view)
            linked = None
        else:
            linked = await self._join_linked(request, tenant, [entity], view, join)
            body = linked.items[0] if linked.items else {}
        if not body:
            raise ResourceNotFound(f"nothing of entity {entity['id']} is left by pick and omit")
        if kind == GEO_JSON:
            geo = self._geometry_property(request, ctx)
            body = geojson_feature(entity, body, geo)
            if linked is not None and linked.linked:
                features = [body] + [
                    geojson_feature(e, r, geo)
                    for e, r in zip(linked.linked_entities, linked.linked, strict=True)
                ]
                body = {"type": "FeatureCollection", "features": features}
        elif linked is not None and linked.linked:
            body = [body, *linked.linked]  # flat: the entity, then the entities it links to
        return json_response(body, kind=kind, ctx=ctx)

    async def entity_without_id(self, request: Request) -> Response:
        """§6.5.3.2 to §6.5.3.4 with the entity id left out of the path: ``PUT /entities/``
        (the same as ``PUT /entities``) names no entity. ``DELETE /entities`` is also NGSI-LD
        1.9's Purge Entities (§6.4.3.3), which this broker does not offer."""
        if request.method == "DELETE":
            check_params(request, allowed.PURGE_ENTITIES)
            raise BadRequestData(
                "DELETE needs an entity id: /entities/{entityId} (Purge Entities, NGSI-LD 1.9, "
                "is not offered; delete several entities with POST /entityOperations/delete)"
            )
        check_params(request, allowed.REPLACE_ENTITY | allowed.MERGE_ENTITY)
        raise BadRequestData(f"{request.method} needs an entity id: /entities/{{entityId}}")

    async def delete_entity(self, request: Request) -> Response:
        """§6.5.3.2 Delete Entity (§5.6.6)."""
        check_params(request, allowed.DELETE_ENTITY)
        tenant = await self.read_tenant(request)
        self.check_writes(request)
        await self.entities.delete(tenant, request.path_params["entity_id"])
        return _no_content()

    async def replace_entity(self, request: Request) -> Response:
        """§6.5.3.3 Replace Entity (§5.6.18)."""
        check_params(request, allowed.REPLACE_ENTITY)
        tenant = await self.read_tenant(request)
        self.check_writes(request)
        body, ctx = await self.read_body(request)
        await self.entities.replace(tenant, request.path_params["entity_id"], body, ctx.terms)
        return _no_content()

    async def merge_entity(self, request: Request) -> Response:
        """§6.5.3.4 Merge Entity (§5.6.17)."""
        check_params(request, allowed.MERGE_ENTITY)
        tenant = await self.read_tenant(request)
        self.check_writes(request)
        body, ctx = await self.read_body(request, merge=True)
        entity_id = request.path_params["entity_id"]
        body = await self.with_commands(request, tenant, entity_id, body)
        await self.entities.merge(tenant, entity_id, body, ctx.terms)
        return _no_content()

    # -- §6.6, §6.7 attributes ------------------------------------------------------------------

    async def append_attrs(self, request: Request) -> Response:
        """§6.6.3.1 Append Entity Attributes (§5.6.3)."""
        check_params(request, allowed.APPEND_ATTRS)
        tenant = await self.read_tenant(request)
        self.check_writes(request)
        body, ctx = await self.read_body(request)
        mode = "append-keep" if "noOverwrite" in options_param(request) else "append"
        entity_id = request.path_params["entity_id"]
        body = await self.with_commands(request, tenant, entity_id, body)
        result = await self.entities.update_attrs(tenant, entity_id, body, ctx.terms, mode=mode)
        if result.not_updated:
            return json_response(result.body(), status=207)
        return _no_content()

    async def update_attrs(self, request: Request) -> Response:
        """§6.6.3.2 Update Entity Attributes (§5.6.2)."""
        check_params(request, allowed.UPDATE_ATTRS)
        tenant = await self.read_tenant(request)
        self.check_writes(request)
        body, ctx = await self.read_body(request, merge=True)
        entity_id = request.path_params["entity_id"]
        sent = await self.with_commands(request, tenant, entity_id, body)
        if sent is not body:
            # Commands went out: their status attributes are new, so append what remains.
            await self.entities.update_attrs(tenant, entity_id, sent, ctx.terms, mode="append")
            return _no_content()
        result = await self.entities.update_attrs(tenant, entity_id, body, ctx.terms, mode="update")
        if result.not_updated:
            return json_response(result.body(), status=207)
        return _no_content()

    async def patch_attr(self, request: Request) -> Response:
        """§6.7.3.1 Partial Attribute Update (§5.6.4)."""
        check_params(request, allowed.PATCH_ATTR)
        tenant = await self.read_tenant(request)
        self.check_writes(request)
        body, ctx = await self.read_body(request, merge=True)
        p = request.path_params
        sent = await self.with_commands(request, tenant, p["entity_id"], {p["attr_id"]: body})
        if set(sent) != {p["attr_id"]}:
            await self.entities.update_attrs(tenant, p["entity_id"], sent, ctx.terms, mode="append")
            return _no_content()
        await self.entities.patch_attribute(
            tenant, p["entity_id"], p["attr_id"], body, ctx.terms, replace=False
        )
        return _no_content()

    async def replace_attr(self, request: Request) -> Response:
        """§6.7.3.3 Replace Attribute (§5.6.19)."""
        check_params(request, allowed.REPLACE_ATTR)
        tenant = await self.read_tenant(request)
        self.check_writes(request)
        body, ctx = await self.read_body(request)
        p = request.path_params
        await self.entities.patch_attribute(
            tenant, p["entity_id"], p["attr_id"], body, ctx.terms, replace=True
        )
        return _no_content()

    async def delete_attr(self, request: Request) -> Response:
        """§6.7.3.2 Delete Attribute (§5.6.5)."""
        check_params(request, allowed.DELETE_ATTR)
        tenant = await self.read_tenant(request)
        self.check_writes(request)
        ctx = await context_for_read(self.resolver, request)
        params = request.query_params
        delete_all = params.get("deleteAll", "false")
        if delete_all not in ("true", "false"):
            raise BadRequestData("deleteAll must be true or false")
        dataset = params.get("datasetId")
        if dataset is not None:
            check_entity_id(dataset, "the datasetId")
        p = request.path_params
        await self.entities.delete_attribute(
            tenant,
            p["entity_id"],
            p["attr_id"],
            ctx.terms,
            dataset_id=dataset,
            delete_all=delete_all == "true",
        )
        return _no_content()

    # -- §6.14–§6.23 batch ----------------------------------------------------------------------

    async def read_batch(
        self, request: Request, *, merge: bool = False
    ) -> tuple[list[Any], list[TermMap | NgsiError]]:
        """A batch's entities, each with its own @context's terms (or the error that resolving
        it gave: that entity fails alone)."""
        body, kind = await read_json(request, self.settings.max_body_bytes, merge=merge)
        if not isinstance(body, list):
            raise InvalidRequest("the body of a batch operation must be a JSON array")
        terms = await contexts_for_batch(self.resolver, request, body, kind)
        return _strip_context(body), terms

    @staticmethod
    def _batch_response(result: BatchResult, ok: Response) -> Response:
        if result.errors:
            return json_response(result.body(), status=207)
        return ok

    async def batch_create(self, request: Request) -> Response:
        """§6.14.3.1 Batch Entity Creation (§5.6.7)."""
        check_params(request, allowed.BATCH_WRITE)
        tenant = tenant_of(request)
        body, terms = await self.read_batch(request)
        self.check_writes(request, body)
        result = await self.batch.create(tenant, body, terms)
        return self._batch_response(result, json_response(result.success, status=201))

    async def batch_upsert(self, request: Request) -> Response:
        """§6.15.3.1 Batch Entity Upsert (§5.6.8)."""
        check_params(request, allowed.BATCH_WRITE)
        tenant = tenant_of(request)
        opts = options_param(request)
        if {"replace", "update"} <= opts:
            raise BadRequestData("options replace and update cannot be combined")
        body, terms = await self.read_batch(request)
        self.check_writes(request, body)
        body = await self.with_batch_commands(request, tenant, body)
        result = await self.batch.upsert(tenant, body, terms, update="update" in opts)
        if result.created:
            ok = json_response(result.created, status=201)
        else:
            ok = _no_content()
        return self._batch_response(result, ok)

    async def batch_update(self, request: Request) -> Response:
        """§6.16.3.1 Batch Entity Update (§5.6.9)."""
        check_params(request, allowed.BATCH_WRITE)
        tenant = await self.read_tenant(request)
        no_overwrite = "noOverwrite" in options_param(request)
        body, terms = await self.read_batch(request)
        self.check_writes(request, body)
        body = await self.with_batch_commands(request, tenant, body)
        result = await self.batch.update(tenant, body, terms, no_overwrite=no_overwrite)
        return self._batch_response(result, _no_content())

    async def batch_delete(self, request: Request) -> Response:
        """§6.17.3.1 Batch Entity Delete (§5.6.10)."""
        check_params(request, allowed.BATCH_WRITE)
        tenant = await self.read_tenant(request)
        # An array of entity ids: nothing in it is JSON-LD, so no @context applies, whatever
        # the Content-Type (JSON-LD clients send every request as application/ld+json).
        body, _kind = await read_json(request, self.settings.max_body_bytes)
        if not isinstance(body, list):
            raise InvalidRequest("the body of a batch delete must be a JSON array of entity ids")
        self.check_writes(request, body)
        result = await self.batch.delete(tenant, body)
        return self._batch_response(result, _no_content())

    async def batch_merge(self, request: Request) -> Response:
        """§6.31.3.1 Batch Entity Merge (§5.6.20)."""
        check_params(request, allowed.BATCH_WRITE)
        tenant = await self.read_tenant(request)
        body, terms = await self.read_batch(request, merge=True)
        self.check_writes(request, body)
        body = await self.with_batch_commands(request, tenant, body)
        result = await self.batch.merge(tenant, body, terms)
        return self._batch_response(result, _no_content())

    async def batch_query(self, request: Request) -> Response:
        """§6.23.3.1 Query Entities via POST (§5.7.2, body: §5.2.23 Query)."""
        check_params(request, allowed.BATCH_QUERY)
        tenant = await self.read_tenant(request)
        kind = accepted(request)
        body, ctx = await self.read_body(request)
        limit, offset, count = self.page(request)
        query = query_from_body(
            ctx.terms,
            body,
            limit=limit,
            offset=offset,
            count=count,
            require_filter=not _boolean(request.query_params, "local"),
            ids_suffice=False,
        )
        view = self._view(request, ctx, body)
        join = self._join(request, body)
        result = await self.run_query(request, tenant, query)
        headers = {}
        if result.count is not None:
            headers["NGSILD-Results-Count"] = str(result.count)
        linked = None
        if join is not None:
            linked = await self._join_linked(request, tenant, result.entities, view, join)
        return self._render_many(request, result.entities, view, kind, ctx, headers, linked)

    # -- §6.25–§6.28 discovery ------------------------------------------------------------------

    def _details(self, request: Request) -> bool:
        value = request.query_params.get("details", "false")
        if value not in ("true", "false"):
            raise BadRequestData("details must be true or false")
        return value == "true"

    async def list_types(self, request: Request) -> Response:
        """§6.25.3.1 Retrieve Available Entity Types (§5.7.5, §5.7.6)."""
        check_params(request, allowed.DISCOVERY)
        tenant, ctx, kind = await self.for_read(request, geo=False)
        body = await self.discovery.types(
            tenant,
            ctx.terms,
            details=self._details(request),
            visible=grant_of(request).read_types,
        )
        return json_response(body, kind=kind, ctx=ctx)

    async def type_info(self, request: Request) -> Response:
        """§6.26.3.1 Retrieve Entity Type Information (§5.7.7)."""
        check_params(request, allowed.DISCOVERY_ONE)
        tenant, ctx, kind = await self.for_read(request, geo=False)
        body = await self.discovery.type_info(
            tenant, ctx.terms, request.path_params["type"], grant_of(request).read_types
        )
        return json_response(body, kind=kind, ctx=ctx)

    async def list_attributes(self, request: Request) -> Response:
        """§6.27.3.1 Retrieve Available Attributes (§5.7.8, §5.7.9)."""
        check_params(request, allowed.DISCOVERY)
        tenant, ctx, kind = await self.for_read(request, geo=False)
        body = await self.discovery.attributes(
            tenant,
            ctx.terms,
            details=self._details(request),
            visible=grant_of(request).read_types,
        )
        return json_response(body, kind=kind, ctx=ctx)

    async def attribute_info(self, request: Request) -> Response:
        """§6.28.3.1 Retrieve Attribute Information (§5.7.10)."""
        check_params(request, allowed.DISCOVERY_ONE)
        tenant, ctx, kind = await self.for_read(request, geo=False)
        body = await self.discovery.attribute_info(
            tenant, ctx.terms, request.path_params["attr"], grant_of(request).read_types
        )
        return json_response(body, kind=kind, ctx=ctx)

    # -- §6.29 @context management --------------------------------------------------------------

    async def list_contexts(self, request: Request) -> Response:
        """§6.29.3.1 List @contexts (§5.13.3)."""
        check_params(request, allowed.CONTEXTS)
        kind = request.query_params.get("kind")
        body = await self.resolver.list(details=self._details(request), kind=kind)
        return json_response(body, kind=accepted(request, geo=False))

    async def add_context(self, request: Request) -> Response:
        """§6.29.3.2 Add @context (§5.13.2)."""
        check_params(request, allowed.CONTEXTS)
        body, _kind = await read_json(request, self.settings.max_body_bytes)
        info = await self.resolver.add_hosted(body, self.settings.base_url)
        return created(f"{PREFIX}/jsonldContexts", info.local_id)

    async def get_context(self, request: Request) -> Response:
        """§6.30.3.1 Serve @context (§5.13.4)."""
        check_params(request, allowed.CONTEXTS)
        kind = accepted(request, geo=False)
        context_id = request.path_params["context_id"]
        body = await self.resolver.serve(context_id, details=self._details(request))
        return json_response(body, kind=kind)

    async def delete_context(self, request: Request) -> Response:
        """§6.30.3.2 Delete and Reload @context (§5.13.5)."""
        check_params(request, allowed.CONTEXTS)
        reload = request.query_params.get("reload", "false")
        if reload not in ("true", "false"):
            raise BadRequestData("reload must be true or false")
        await self.resolver.delete(request.path_params["context_id"], reload=reload == "true")
        return _no_content()

    def routes(self) -> list[Route]:
        R, W = "entities.read", "entities.write"
        e = "/entities/{entity_id:entity_id}"
        table = {
            # Retrieve Entity is the hottest route: first, so it is matched first.
            e: {
                "GET": (self.retrieve_entity, R),
                "DELETE": (self.delete_entity, W),
                "PUT": (self.replace_entity, W),
                "PATCH": (self.merge_entity, W),
            },
            "/entities": {
                "POST": (self.create_entity, W),
                "GET": (self.query_entities, R),
                "PUT": (self.entity_without_id, W),
                "PATCH": (self.entity_without_id, W),
                "DELETE": (self.entity_without_id, W),
            },
            "/entities/{entity_id:path}/attrs/{attr_id}": {
                "PATCH": (self.patch_attr, W),
                "PUT": (self.replace_attr, W),
                "DELETE": (self.delete_attr, W),
            },
            "/entities/{entity_id:path}/attrs": {
                "POST": (self.append_attrs, W),
                "PATCH": (self.update_attrs, W),
            },
            "/entityOperations/create": {"POST": (self.batch_create, W)},
            "/entityOperations/upsert": {"POST": (self.batch_upsert, W)},
            "/entityOperations/update": {"POST": (self.batch_update, W)},
            "/entityOperations/delete": {"POST": (self.batch_delete, W)},
            "/entityOperations/merge": {"POST": (self.batch_merge, W)},
            "/entityOperations/query": {"POST": (self.batch_query, R)},
            "/types": {"GET": (self.list_types, "types.read")},
            "/types/{type:path}": {"GET": (self.type_info, "types.read")},
            "/attributes": {"GET": (self.list_attributes, "types.read")},
            "/attributes/{attr:path}": {"GET": (self.attribute_info, "types.read")},
            "/jsonldContexts": {
                "GET": (self.list_contexts, "contexts.read"),
                "POST": (self.add_context, "contexts.write"),
            },
            # A hosted @context is fetched by JSON-LD processors that cannot log in.
            "/jsonldContexts/{context_id:path}": {
                "GET": (self.get_context, PUBLIC),
                "DELETE": (self.delete_context, "contexts.write"),
            },
        }
        return [guarded(PREFIX + path, handlers) for path, handlers in table.items()]


class EntityIdConvertor(Convertor[str]):
    """An entity id in a path: anything, even with "/", but no "/attrs" segment, so
    the entity route can come first and leave those paths to the attribute routes."""

    regex = r"(?:(?!/attrs(?:/|$)).)+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("entity_id", EntityIdConvertor())


def _boolean(params: Any, name: str) -> bool:
    """A true/false query parameter (false when absent); 400 for any other value."""
    value = params.get(name, "false")
    if value not in ("true", "false"):
        raise BadRequestData(f"{name} must be true or false")
    return value == "true"


def _param_or_member(params: Any, body: dict[str, Any], name: str) -> str | None:
    """A projection (pick, omit) from the query string (its values joined), or a body's."""
    values = params.getlist(name)
    if values:
        return ",".join(values)
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if not isinstance(value, str):
        raise BadRequestData(f"{name} must be a string or an array of strings")
    return value


def _names(value: object, name: str) -> list[str]:
    """A Query body member that lists names: an array of strings (or one string)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequestData(f"{name} must be an array of strings")
    return value


def _strip_context(body: Any) -> Any:
    if isinstance(body, dict) and "@context" in body:
        return {k: v for k, v in body.items() if k != "@context"}
    if isinstance(body, list):
        return [_strip_context(b) for b in body]
    return body


__all__ = ["JSON", "PREFIX", "HubApi"]
