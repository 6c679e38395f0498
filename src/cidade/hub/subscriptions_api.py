"""NGSI-LD subscriptions over HTTP (ETSI GS CIM 009 v1.8 §6.10, §6.11): create, query,
retrieve, update and delete. Delivering notifications is the notifier's job."""

from __future__ import annotations

import urllib.parse
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cidade.auth.gate import grant_of, owner_of
from cidade.auth.routes import guarded
from cidade.hub.api import PREFIX, HubApi
from cidade.hub.http import (
    accepted,
    context_for_read,
    json_response,
    options_param,
    page_params,
    tenant_of,
)
from cidade.hub.model import is_uri
from cidade.hub.subscriptions import (
    OWNER_MEMBER,
    merge_subscription,
    normalize_new_subscription,
    render_subscription,
)
from cidade.ngsild import timefmt
from cidade.ngsild.errors import AlreadyExists, BadRequestData, ResourceNotFound

_EVERY = 1_000_000


def _mine(request: Request, sub: dict[str, Any]) -> bool:
    subscriber = grant_of(request).subscriber
    return subscriber is None or sub.get(OWNER_MEMBER) == subscriber


class SubscriptionApi:
    def __init__(self, hub: HubApi) -> None:
        self.hub = hub
        self.store = hub.store

    def _id(self, request: Request) -> str:
        sub_id = request.path_params["subscription_id"]
        if not is_uri(sub_id):
            raise BadRequestData(f"subscription id {sub_id!r} is not a URI")
        return sub_id

    async def _get(self, request: Request, tenant: str, sub_id: str) -> dict[str, Any]:
        sub = await self.store.get_subscription(tenant, sub_id)
        # Someone else's subscription, for those who see only their own, is "not found".
        if sub is None or not _mine(request, sub):
            raise ResourceNotFound(f"subscription {sub_id} not found")
        return sub

    async def create(self, request: Request) -> Response:
        """§6.10.3.1 Create Subscription (§5.8.1)."""
        tenant = tenant_of(request)
        body, ctx = await self.hub.read_body(request)
        if not isinstance(body, dict):
            raise BadRequestData("a subscription must be a JSON object")
        context = ctx.response_context()
        if not isinstance(context, str):
            # Notifications name their @context by URL: an inline one is hosted here, as §5.13
            # allows, and named by its URL.
            info = await self.hub.resolver.register_implicit(context, self.hub.settings.base_url)
            context = info.url
        sub = normalize_new_subscription(body, ctx.terms, timefmt.now(), context)
        sub[OWNER_MEMBER] = owner_of(grant_of(request).principal)
        if not await self.store.create_subscription(tenant, sub):
            raise AlreadyExists(f"subscription {sub['id']} already exists")
        location = f"{PREFIX}/subscriptions/{urllib.parse.quote(sub['id'], safe=':')}"
        return Response(status_code=201, headers={"Location": location})

    async def query(self, request: Request) -> Response:
        """§6.10.3.2 Query Subscriptions (§5.8.4)."""
        tenant = await self.hub.read_tenant(request)
        ctx = await context_for_read(self.hub.resolver, request)
        kind = accepted(request, geo=False)
        settings = self.hub.settings
        limit, offset, count = page_params(
            request, default=settings.default_page_size, maximum=settings.max_page_size
        )
        sys_attrs = "sysAttrs" in options_param(request)
        subscriber = grant_of(request).subscriber
        if subscriber is None:
            subs, total = await self.store.list_subscriptions(tenant, limit, offset)
        else:
            # A tenant holds hundreds of subscriptions, not millions: one's own are picked here.
            every, _ = await self.store.list_subscriptions(tenant, _EVERY, 0)
            own = [s for s in every if s.get(OWNER_MEMBER) == subscriber]
            subs, total = own[offset : offset + limit], len(own)
        now = timefmt.now()
        status = await self.store.notification_status(tenant, [s["id"] for s in subs])
        body = [
            render_subscription(
                s, ctx.terms, status_info=status.get(s["id"]), sys_attrs=sys_attrs, now=now
            )
            for s in subs
        ]
        headers = {"NGSILD-Results-Count": str(total)} if count else {}
        return json_response(body, kind=kind, ctx=ctx, headers=headers)

    async def retrieve(self, request: Request) -> Response:
        """§6.11.3.1 Retrieve Subscription (§5.8.3)."""
        tenant = await self.hub.read_tenant(request)
        ctx = await context_for_read(self.hub.resolver, request)
        kind = accepted(request, geo=False)
        sub = await self._get(request, tenant, self._id(request))
        sys_attrs = "sysAttrs" in options_param(request)
        status = await self.store.notification_status(tenant, [sub["id"]])
        body = render_subscription(
            sub,
            ctx.terms,
            status_info=status.get(sub["id"]),
            sys_attrs=sys_attrs,
            now=timefmt.now(),
        )
        return json_response(body, kind=kind, ctx=ctx)

    async def update(self, request: Request) -> Response:
        """§6.11.3.2 Update Subscription (§5.8.2)."""
        tenant = await self.hub.read_tenant(request)
        sub_id = self._id(request)
        body, ctx = await self.hub.read_body(request, merge=True)
        if not isinstance(body, dict):
            raise BadRequestData("a subscription fragment must be a JSON object")
        current = await self._get(request, tenant, sub_id)
        merged = merge_subscription(current, body, ctx.terms, timefmt.now())
        if not await self.store.replace_subscription(tenant, merged):
            raise ResourceNotFound(f"subscription {sub_id} not found")
        return Response(status_code=204)

    async def delete(self, request: Request) -> Response:
        """§6.11.3.3 Delete Subscription (§5.8.5)."""
        tenant = await self.hub.read_tenant(request)
        sub_id = self._id(request)
        await self._get(request, tenant, sub_id)
        if not await self.store.delete_subscription(tenant, sub_id):
            raise ResourceNotFound(f"subscription {sub_id} not found")
        return Response(status_code=204)

    def routes(self) -> list[Any]:
        r, w = "subscriptions.read", "subscriptions.write"
        return [
            guarded(
                f"{PREFIX}/subscriptions",
                {"POST": (self.create, w), "GET": (self.query, r)},
            ),
            guarded(
                f"{PREFIX}/subscriptions/{{subscription_id:path}}",
                {"GET": (self.retrieve, r), "PATCH": (self.update, w), "DELETE": (self.delete, w)},
            ),
        ]


__all__ = ["SubscriptionApi"]
