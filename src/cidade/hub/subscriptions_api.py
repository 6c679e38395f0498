"""NGSI-LD subscriptions over HTTP (ETSI GS CIM 009 v1.8 §6.10, §6.11), and subscriptions to
context source registrations (§6.12, §6.13), the same operations on another collection: one
thin handler per operation, each calling the subscription service
(``subscription_service.py``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cidade.auth.gate import grant_of, owner_of
from cidade.auth.routes import guarded
from cidade.hub import params as allowed
from cidade.hub.api import PREFIX, HubApi
from cidade.hub.http import (
    created,
    json_response,
    options_param,
    page_headers,
    tenant_of,
)
from cidade.hub.params import check_params
from cidade.hub.subscription_service import SubscriptionService
from cidade.store.base import CSOURCE_KIND, ENTITY_KIND


class SubscriptionApi:
    """/subscriptions (``kind`` ENTITY_KIND) or /csourceSubscriptions (CSOURCE_KIND)."""

    def __init__(self, hub: HubApi, *, kind: str = ENTITY_KIND) -> None:
        self.hub = hub
        self.kind = kind
        self.collection = "csourceSubscriptions" if kind == CSOURCE_KIND else "subscriptions"
        self.service = SubscriptionService(
            hub.store, hub.resolver, hub.settings.base_url, kind=kind
        )

    async def create(self, request: Request) -> Response:
        """§6.10.3.1 Create Subscription (§5.8.1); §6.12.3.1 Create Context Source
        Registration Subscription (§5.11.2)."""
        check_params(request, allowed.SUBSCRIPTION_ONE)
        tenant = tenant_of(request)
        body, ctx = await self.hub.read_body(request)
        owner = owner_of(grant_of(request).principal)
        sub_id = await self.service.create(tenant, body, ctx.terms, ctx.response_context(), owner)
        return created(f"{PREFIX}/{self.collection}", sub_id)

    async def query(self, request: Request) -> Response:
        """§6.10.3.2 Query Subscriptions (§5.8.4); §6.12.3.2 (§5.11.5)."""
        check_params(request, allowed.SUBSCRIPTIONS)
        tenant, ctx, kind = await self.hub.for_read(request, geo=False)
        limit, offset, count = self.hub.page(request)
        body, total = await self.service.query(
            tenant,
            ctx.terms,
            subscriber=grant_of(request).subscriber,
            limit=limit,
            offset=offset,
            sys_attrs="sysAttrs" in options_param(request),
        )
        headers = page_headers(request, limit, offset, total, count=count)
        return json_response(body, kind=kind, ctx=ctx, headers=headers)

    async def retrieve(self, request: Request) -> Response:
        """§6.11.3.1 Retrieve Subscription (§5.8.3); §6.13.3.1 (§5.11.4)."""
        check_params(request, allowed.SUBSCRIPTION_ONE)
        tenant, ctx, kind = await self.hub.for_read(request, geo=False)
        body = await self.service.retrieve(
            tenant,
            request.path_params["subscription_id"],
            ctx.terms,
            subscriber=grant_of(request).subscriber,
            sys_attrs="sysAttrs" in options_param(request),
        )
        return json_response(body, kind=kind, ctx=ctx)

    async def update(self, request: Request) -> Response:
        """§6.11.3.2 Update Subscription (§5.8.2); §6.13.3.2 (§5.11.3)."""
        check_params(request, allowed.SUBSCRIPTION_ONE)
        tenant = await self.hub.read_tenant(request)
        body, ctx = await self.hub.read_body(request, merge=True)
        await self.service.update(
            tenant,
            request.path_params["subscription_id"],
            body,
            ctx.terms,
            subscriber=grant_of(request).subscriber,
        )
        return Response(status_code=204)

    async def delete(self, request: Request) -> Response:
        """§6.11.3.3 Delete Subscription (§5.8.5); §6.13.3.3 (§5.11.6)."""
        check_params(request, allowed.SUBSCRIPTION_ONE)
        tenant = await self.hub.read_tenant(request)
        await self.service.delete(
            tenant, request.path_params["subscription_id"], subscriber=grant_of(request).subscriber
        )
        return Response(status_code=204)

    def routes(self) -> list[Any]:
        if self.kind == CSOURCE_KIND:
            r = w = "registrations.subscribe"
        else:
            r, w = "subscriptions.read", "subscriptions.write"
        return [
            guarded(
                f"{PREFIX}/{self.collection}",
                {"POST": (self.create, w), "GET": (self.query, r)},
            ),
            guarded(
                f"{PREFIX}/{self.collection}/{{subscription_id:path}}",
                {"GET": (self.retrieve, r), "PATCH": (self.update, w), "DELETE": (self.delete, w)},
            ),
        ]


__all__ = ["SubscriptionApi"]
