"""Context source registrations over HTTP (ETSI GS CIM 009 v1.8 §6.8, §6.9): one thin handler
per operation, each calling the registration service (``registration_service.py``). Their
subscriptions (/csourceSubscriptions, §6.12, §6.13) are ``subscriptions_api.SubscriptionApi``
with the csource kind."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cidade.auth.routes import guarded
from cidade.hub import params as allowed
from cidade.hub.api import PREFIX, HubApi
from cidade.hub.http import (
    created,
    json_response,
    list_param,
    options_param,
    page_headers,
    tenant_of,
)
from cidade.hub.params import check_params
from cidade.hub.registration_service import RegistrationService, registration_filter

COLLECTION = f"{PREFIX}/csourceRegistrations"


class RegistrationApi:
    def __init__(self, hub: HubApi) -> None:
        self.hub = hub
        self.service = RegistrationService(hub.store)

    async def create(self, request: Request) -> Response:
        """§6.8.3.1 Register Context Source (§5.9.2)."""
        check_params(request, allowed.REGISTRATION_ONE)
        tenant = tenant_of(request)
        body, ctx = await self.hub.read_body(request)
        reg_id = await self.service.create(tenant, body, ctx.terms)
        return created(COLLECTION, reg_id)

    async def query(self, request: Request) -> Response:
        """§6.8.3.2 Query Context Source Registrations (§5.10.2)."""
        check_params(request, allowed.REGISTRATIONS)
        tenant, ctx, kind = await self.hub.for_read(request, geo=False)
        limit, offset, count = self.hub.page(request)
        p = request.query_params
        flt = registration_filter(
            ctx.terms,
            ids=list_param(request, "id"),
            id_pattern=p.get("idPattern"),
            type_text=p.get("type"),
            attrs=list_param(request, "attrs"),
            q=p.get("q"),
            csf=p.get("csf"),
            georel=p.get("georel"),
            geometry=p.get("geometry"),
            coordinates=p.get("coordinates"),
            geoproperty=p.get("geoproperty"),
            timerel=p.get("timerel"),
            time_at=p.get("timeAt"),
            end_time_at=p.get("endTimeAt"),
            timeproperty=p.get("timeproperty"),
        )
        body, total = await self.service.query(
            tenant,
            flt,
            ctx.terms,
            limit=limit,
            offset=offset,
            sys_attrs="sysAttrs" in options_param(request),
        )
        headers = page_headers(request, limit, offset, total, count=count)
        return json_response(body, kind=kind, ctx=ctx, headers=headers)

    async def retrieve(self, request: Request) -> Response:
        """§6.9.3.1 Retrieve Context Source Registration (§5.10.1)."""
        check_params(request, allowed.REGISTRATION_ONE)
        tenant, ctx, kind = await self.hub.for_read(request, geo=False)
        body = await self.service.retrieve(
            tenant,
            request.path_params["registration_id"],
            ctx.terms,
            sys_attrs="sysAttrs" in options_param(request),
        )
        return json_response(body, kind=kind, ctx=ctx)

    async def update(self, request: Request) -> Response:
        """§6.9.3.2 Update Context Source Registration (§5.9.3)."""
        check_params(request, allowed.REGISTRATION_ONE)
        tenant = await self.hub.read_tenant(request)
        body, ctx = await self.hub.read_body(request, merge=True)
        await self.service.update(tenant, request.path_params["registration_id"], body, ctx.terms)
        return Response(status_code=204)

    async def delete(self, request: Request) -> Response:
        """§6.9.3.3 Delete Context Source Registration (§5.9.4)."""
        check_params(request, allowed.REGISTRATION_ONE)
        tenant = await self.hub.read_tenant(request)
        await self.service.delete(tenant, request.path_params["registration_id"])
        return Response(status_code=204)

    def routes(self) -> list[Any]:
        r, w = "registrations.read", "registrations.write"
        return [
            guarded(COLLECTION, {"POST": (self.create, w), "GET": (self.query, r)}),
            guarded(
                f"{COLLECTION}/{{registration_id:path}}",
                {"GET": (self.retrieve, r), "PATCH": (self.update, w), "DELETE": (self.delete, w)},
            ),
        ]


__all__ = ["RegistrationApi"]
