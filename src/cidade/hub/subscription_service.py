"""Subscription operations (ETSI GS CIM 009 v1.8 §5.8): create, update, query, retrieve and
delete the subscriptions of a tenant. No HTTP here: ``subscriptions_api.py`` binds these
operations to §6.10 and §6.11; the data type itself (validation, merge, rendering) is
``subscriptions.py``; delivering notifications is the notifier's (``notify/``).

A ``subscriber`` is who the caller may see the subscriptions of: None for every subscription
of the tenant, else only those whose owner it is (others' read as absent).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from cidade.http.egress import TargetRefused
from cidade.hub.jsonld import ContextResolver
from cidade.hub.model import Terms, is_uri
from cidade.hub.notify.csource import initial_entry
from cidade.hub.subscriptions import (
    CONTEXT_MEMBER,
    OWNER_MEMBER,
    merge_subscription,
    normalize_subscription,
    render_subscription,
)
from cidade.ngsild import timefmt
from cidade.ngsild.errors import AlreadyExists, BadRequestData, ResourceNotFound
from cidade.store.base import CSOURCE_KIND, ENTITY_KIND, OutboxEntry, Store

# Enough to read every subscription of a tenant (hundreds, not millions) in one page.
_EVERY = 1_000_000


def check_subscription_id(sub_id: str) -> str:
    """The id of a subscription named by a request; 400 when it is not a URI."""
    if not is_uri(sub_id):
        raise BadRequestData(f"subscription id {sub_id!r} is not a URI")
    return sub_id


class SubscriptionService:
    """The subscriptions of every tenant of one store. ``base_url`` is where this hub serves
    the @contexts it hosts (an inline @context of a subscription becomes one of them).
    ``kind``: subscriptions to entities (§5.8) or, CSOURCE_KIND, to context source
    registrations (§5.11): the same operations on the same data type, with the members of
    each kind; one of the latter is notified at once of the registrations it selects."""

    def __init__(
        self, store: Store, resolver: ContextResolver, base_url: str, *, kind: str = ENTITY_KIND
    ) -> None:
        self.store = store
        self.resolver = resolver
        self.base_url = base_url
        self.kind = kind
        self.csource = kind == CSOURCE_KIND

    async def _initial(self, tenant: str, sub: dict[str, Any]) -> list[OutboxEntry]:
        """§5.11.2, §5.11.3: a subscription to registrations, once created or changed, is
        notified of every registration it selects (newlyMatching)."""
        if not self.csource:
            return []
        entry = initial_entry(sub, await self.store.list_registrations(tenant))
        return [entry] if entry is not None else []

    async def _get(self, tenant: str, sub_id: str, subscriber: str | None) -> dict[str, Any]:
        sub = await self.store.get_subscription(
            tenant, check_subscription_id(sub_id), kind=self.kind
        )
        # Someone else's subscription, for those who see only their own, is "not found".
        if sub is None or (subscriber is not None and sub.get(OWNER_MEMBER) != subscriber):
            raise ResourceNotFound(f"subscription {sub_id} not found")
        return sub

    async def _check_reachable(self, sub: dict[str, Any]) -> None:
        """Refuse an endpoint whose host may not be reached (a private address;
        docs/security.md) now rather than fail every notification later. Each connection is
        checked again when it is made, whatever this found; a jsonldContext is fetched under
        the same rule when a notification needs it."""
        uri = sub["notification"]["endpoint"]["uri"]
        host = urllib.parse.urlsplit(uri).hostname or ""
        try:
            await self.resolver.egress.check_host(host)
        except TargetRefused:
            raise BadRequestData(
                f"notification.endpoint.uri {uri!r}: the server may not connect to {host}"
                " (not a public address, nor in the networks this deployment allows)"
            ) from None

    async def create(
        self, tenant: str, body: object, terms: Terms, context: Any, owner: str | None
    ) -> str:
        """§5.8.1 Create Subscription: its id. ``context`` is the @context of the request (a
        URL, or an inline one, which is hosted here so notifications can name it by URL, as
        §5.13 allows); ``owner`` who creates it."""
        if not isinstance(body, dict):
            raise BadRequestData("a subscription must be a JSON object")
        sub = normalize_subscription(body, terms, timefmt.now(), csource=self.csource)
        await self._check_reachable(sub)
        await self._check_jsonld_context(sub)
        if isinstance(context, list) and len(context) == 1 and isinstance(context[0], str):
            context = context[0]  # ["url"] is the @context at url, which a Link header can name
        if context is not None and not isinstance(context, str):
            context = (await self.resolver.register_implicit(context, self.base_url)).url
            # §5.13.1: the subscription names the ImplicitlyCreated @context it got, so a
            # client can read it back and its notifications use it (§5.2.12 jsonldContext).
            sub.setdefault("jsonldContext", context)
        if context is not None:
            sub[CONTEXT_MEMBER] = context
        sub[OWNER_MEMBER] = owner
        outbox = await self._initial(tenant, sub)
        if not await self.store.create_subscription(tenant, sub, kind=self.kind, outbox=outbox):
            raise AlreadyExists(f"subscription {sub['id']} already exists")
        return sub["id"]

    async def _check_jsonld_context(self, sub: dict[str, Any]) -> None:
        """§5.8.1: a jsonldContext that cannot be retrieved is refused now (503
        LdContextNotAvailable), not found out when the first notification is due."""
        if "jsonldContext" in sub:
            await self.resolver.term_map(sub["jsonldContext"])

    async def query(
        self,
        tenant: str,
        terms: Terms,
        *,
        subscriber: str | None,
        limit: int,
        offset: int,
        sys_attrs: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        """§5.8.4 Query Subscriptions: one page of them as the client sees them (names
        compacted with ``terms``, notification status included), and how many there are."""
        if subscriber is None:
            subs, total = await self.store.list_subscriptions(tenant, limit, offset, kind=self.kind)
        else:
            every, _ = await self.store.list_subscriptions(tenant, _EVERY, 0, kind=self.kind)
            own = [s for s in every if s.get(OWNER_MEMBER) == subscriber]
            subs, total = own[offset : offset + limit], len(own)
        return await self._render(tenant, subs, terms, sys_attrs), total

    async def retrieve(
        self, tenant: str, sub_id: str, terms: Terms, *, subscriber: str | None, sys_attrs: bool
    ) -> dict[str, Any]:
        """§5.8.3 Retrieve Subscription, as the client sees it."""
        sub = await self._get(tenant, sub_id, subscriber)
        return (await self._render(tenant, [sub], terms, sys_attrs))[0]

    async def _render(
        self, tenant: str, subs: list[dict[str, Any]], terms: Terms, sys_attrs: bool
    ) -> list[dict[str, Any]]:
        now = timefmt.now()
        status = await self.store.notification_status(tenant, [s["id"] for s in subs])
        return [
            render_subscription(
                s, terms, status_info=status.get(s["id"]), sys_attrs=sys_attrs, now=now
            )
            for s in subs
        ]

    async def update(
        self, tenant: str, sub_id: str, patch: object, terms: Terms, *, subscriber: str | None
    ) -> None:
        """§5.8.2 Update Subscription: the members of ``patch`` replace the stored ones."""
        if not isinstance(patch, dict):
            raise BadRequestData("a subscription fragment must be a JSON object")
        current = await self._get(tenant, sub_id, subscriber)
        merged = merge_subscription(current, patch, terms, timefmt.now(), csource=self.csource)
        if "jsonldContext" in patch:
            await self._check_jsonld_context(merged)
        await self._check_reachable(merged)
        outbox = await self._initial(tenant, merged)
        if not await self.store.replace_subscription(tenant, merged, kind=self.kind, outbox=outbox):
            raise ResourceNotFound(f"subscription {sub_id} not found")

    async def delete(self, tenant: str, sub_id: str, *, subscriber: str | None) -> None:
        """§5.8.5 Delete Subscription."""
        await self._get(tenant, sub_id, subscriber)
        if not await self.store.delete_subscription(tenant, sub_id, kind=self.kind):
            raise ResourceNotFound(f"subscription {sub_id} not found")


__all__ = ["SubscriptionService", "check_subscription_id"]
