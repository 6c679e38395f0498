"""A notification as its endpoint receives it (ETSI GS CIM 009 v1.8 §5.3.1): rendered
at delivery time from an outbox item and the subscription as it is then.

HTTP: a POST whose body is the Notification, ``Content-Type`` from ``endpoint.accept``, the
@context as a ``Link`` header (application/json) or in the body (application/ld+json), and one
header per ``receiverInfo`` entry. MQTT: one message whose payload is ``{"metadata": {those
headers}, "body": Notification}``, as the specification's MQTT binding says.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from cidade.http.bodies import GEO_JSON, JSON, JSON_LD
from cidade.hub.http import TENANT_HEADER
from cidade.hub.jsonld import CORE_CONTEXT_URL, ContextResolver, TermMap
from cidade.hub.linked import EntityReader, join_linked
from cidade.hub.model import View, geojson_feature, render_entity
from cidade.hub.registrations import render_registration
from cidade.hub.subscriptions import (
    notification_attributes,
    notification_context,
    notification_join,
)
from cidade.ngsild.query.geo import CORE_LOCATION

LINK_REL = 'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


@dataclass(slots=True)
class Rendered:
    headers: dict[str, str]  # Content-Type, Link, receiverInfo, NGSILD-Tenant
    notification: dict[str, Any]

    def http_body(self) -> bytes:
        return orjson.dumps(self.notification)

    def mqtt_payload(self) -> bytes:
        return orjson.dumps({"metadata": self.headers, "body": self.notification})


async def render_notification(
    resolver: ContextResolver,
    sub: dict[str, Any],
    tenant: str,
    body: dict[str, Any],
    notified_at: str,
    reader: EntityReader,
) -> Rendered:
    """The Notification for an outbox item's ``body`` ({trigger, entities}) of ``sub``. With
    ``notification.join`` (§4.5.23), the entities their relationships link to are read from
    ``reader`` (the store, the subscription's tenant) as they are now, and joined inline or
    flat as the entity API does (hub/linked.py)."""
    params = sub["notification"]
    endpoint = params["endpoint"]
    terms, link = await _terms(resolver, sub)
    accept = endpoint.get("accept", JSON)
    fmt = params.get("format", "normalized")
    view = View(
        terms,
        form="keyValues" if fmt == "simplified" else fmt,
        sys_attrs=bool(params.get("sysAttrs")),
        attrs=notification_attributes(sub),
        pick=params.get("pick"),
        omit=params.get("omit"),
        lang=sub.get("lang"),
    )
    datasets = sub.get("datasetId")
    entities = body["entities"]
    if datasets:
        entities = [_only_datasets(e, datasets) for e in entities]
    join = notification_join(sub)
    if join is not None:
        joined = await join_linked(reader, tenant, entities, view, join)
        data = joined.items
        for entity, rendered in zip(entities, data, strict=True):
            if "deletedAt" in entity:
                rendered["deletedAt"] = entity["deletedAt"]
        # Flat: the linked entities after the notified ones, each once (§4.5.23).
        data = [*data, *joined.linked]
        entities = [*entities, *joined.linked_entities]
    else:
        data = []
        for entity in entities:
            rendered = render_entity(entity, view)
            if "deletedAt" in entity:
                rendered["deletedAt"] = entity["deletedAt"]
            data.append(rendered)
    payload: Any = data
    if accept == GEO_JSON:
        payload = {
            "type": "FeatureCollection",
            "features": [
                geojson_feature(e, r, CORE_LOCATION) for e, r in zip(entities, data, strict=True)
            ],
        }
    elif accept == JSON_LD:
        # Each entity a JSON-LD document of its own, as in a JSON-LD query result (§6.3.7).
        payload = [{**e, "@context": link} for e in data]
    notification = _envelope("Notification", sub, notified_at, payload, body["trigger"])
    return Rendered(_headers(notification, endpoint, accept, link, tenant), notification)


async def render_csource_notification(
    resolver: ContextResolver,
    sub: dict[str, Any],
    tenant: str,
    body: dict[str, Any],
    notified_at: str,
) -> Rendered:
    """The ContextSourceNotification (§5.3.2) for an outbox item ({trigger, entities: the
    registrations}) of a subscription to registrations: names compacted with the
    subscription's @context, sent as an entity notification is (headers, receiverInfo)."""
    endpoint = sub["notification"]["endpoint"]
    terms, link = await _terms(resolver, sub)
    sys_attrs = bool(sub["notification"].get("sysAttrs"))
    accept = endpoint.get("accept", JSON)
    if accept == GEO_JSON:
        accept = JSON  # registrations are not features
    data = [render_registration(r, terms, sys_attrs=sys_attrs) for r in body["entities"]]
    notification = _envelope("ContextSourceNotification", sub, notified_at, data, body["trigger"])
    return Rendered(_headers(notification, endpoint, accept, link, tenant), notification)


async def _terms(resolver: ContextResolver, sub: dict[str, Any]) -> tuple[TermMap, str]:
    """The terms a subscription's notifications are compacted with (its @context, the core one
    without), and the @context URL they name (in the Link header, or in the body as JSON-LD)."""
    context = notification_context(sub)
    terms = await resolver.term_map(context) if context is not None else resolver.core
    return terms, context if isinstance(context, str) else CORE_CONTEXT_URL


def _envelope(
    kind: str, sub: dict[str, Any], notified_at: str, data: Any, trigger: str
) -> dict[str, Any]:
    """A Notification or ContextSourceNotification (§5.3.1, §5.3.2) of ``data``."""
    return {
        "id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
        "type": kind,
        "subscriptionId": sub["id"],
        "notifiedAt": notified_at,
        "data": data,
        "triggerReason": trigger,
    }


def _headers(
    notification: dict[str, Any], endpoint: dict[str, Any], accept: str, link: str, tenant: str
) -> dict[str, str]:
    """The headers of a notification (the @context put in its body for JSON-LD)."""
    headers = {"Content-Type": accept}
    if accept == JSON_LD:
        notification["@context"] = link
    else:
        headers["Link"] = f"<{link}>; {LINK_REL}"
    if tenant:
        headers[TENANT_HEADER] = tenant
    for item in endpoint.get("receiverInfo", ()):
        headers[item["key"]] = item["value"]
    return headers


def _only_datasets(entity: dict[str, Any], datasets: list[str]) -> dict[str, Any]:
    """The entity with only the attribute instances of these datasetIds (§4.5.5: "@none" is
    the default instance); an attribute left with none is left out."""
    wanted = {None if d == "@none" else d for d in datasets}
    attrs = {}
    for iri, instances in entity["attrs"].items():
        kept = [i for i in instances if i.get("datasetId") in wanted]
        if kept:
            attrs[iri] = kept
    return {**entity, "attrs": attrs}


__all__ = ["Rendered", "render_csource_notification", "render_notification"]
