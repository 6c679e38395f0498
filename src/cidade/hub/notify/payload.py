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
from cidade.hub.jsonld import CORE_CONTEXT_URL, ContextResolver
from cidade.hub.model import View, geojson_feature, render_entity
from cidade.hub.subscriptions import notification_attributes, notification_context
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
) -> Rendered:
    """The Notification for an outbox item's ``body`` ({trigger, entities}) of ``sub``."""
    params = sub["notification"]
    endpoint = params["endpoint"]
    context = notification_context(sub)
    terms = await resolver.term_map(context) if context is not None else resolver.core
    accept = endpoint.get("accept", JSON)
    view = View(
        terms,
        form=params.get("format", "normalized"),
        sys_attrs=bool(params.get("sysAttrs")),
        attrs=notification_attributes(sub),
    )
    entities = body["entities"]
    data: list[dict[str, Any]] = []
    for entity in entities:
        if "deletedAt" in entity:
            types = [terms.compact(t) for t in entity["type"]]
            data.append(
                {
                    "id": entity["id"],
                    "type": types[0] if len(types) == 1 else types,
                    "deletedAt": entity["deletedAt"],
                }
            )
        else:
            data.append(render_entity(entity, view))
    payload: Any = data
    if accept == GEO_JSON:
        payload = {
            "type": "FeatureCollection",
            "features": [
                geojson_feature(e, r, CORE_LOCATION) for e, r in zip(entities, data, strict=True)
            ],
        }
    notification: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
        "type": "Notification",
        "subscriptionId": sub["id"],
        "notifiedAt": notified_at,
        "data": payload,
        "triggerReason": body["trigger"],
    }
    link = context if isinstance(context, str) else CORE_CONTEXT_URL
    headers = {"Content-Type": accept}
    if accept == JSON_LD:
        notification["@context"] = link
    else:
        headers["Link"] = f"<{link}>; {LINK_REL}"
    if tenant:
        headers[TENANT_HEADER] = tenant
    for item in endpoint.get("receiverInfo", ()):
        headers[item["key"]] = item["value"]
    return Rendered(headers, notification)


__all__ = ["Rendered", "render_notification"]
