"""The platform's OpenAPI 3.1 document, assembled from the parts each capability contributes.

``PARTS`` lists one function per API area; each returns an ``ApiPart`` (build.py) with its paths,
tags and schemas of its own. A new capability (auth, devices, occurrences, ...) writes its part
in a module of this package and adds the function to ``PARTS``; tests/test_openapi.py fails until
every route the app serves is described, and no more.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cidade import __version__
from cidade.auth.roles import PUBLIC
from cidade.auth.routes import guarded
from cidade.openapi.auth import auth_part
from cidade.openapi.build import ERRORS, ApiPart, error_responses
from cidade.openapi.devices import devices_part
from cidade.openapi.hub import hub_part
from cidade.openapi.occurrence_messages import occurrence_messages_part
from cidade.openapi.occurrence_statistics import occurrence_statistics_part
from cidade.openapi.occurrences import occurrences_part
from cidade.openapi.open311 import open311_part
from cidade.openapi.platform import platform_part
from cidade.openapi.registrations import registration_part
from cidade.openapi.schemas import SCHEMAS
from cidade.openapi.subscriptions import subscription_part
from cidade.openapi.temporal import temporal_part

PARTS: tuple[Callable[[], ApiPart], ...] = (
    platform_part,
    auth_part,
    hub_part,
    temporal_part,
    subscription_part,
    registration_part,
    devices_part,
    occurrences_part,
    occurrence_statistics_part,
    open311_part,
    occurrence_messages_part,
)

PARAMETERS: dict[str, Any] = {
    "Tenant": {
        "name": "NGSILD-Tenant",
        "in": "header",
        "required": False,
        "description": "The tenant (default: the default tenant). A tenant exists once something "
        "was written in it; reading one that does not is 404.",
        "schema": {"type": "string"},
    },
    "Link": {
        "name": "Link",
        "in": "header",
        "required": False,
        "description": "The @context of an application/json request: "
        '`<URL>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"`. '
        "Without it, the NGSI-LD core @context. A remote @context that cannot be retrieved "
        "is 503 LdContextNotAvailable.",
        "schema": {"type": "string"},
    },
}


def build_document(parts: Iterable[Callable[[], ApiPart]] = PARTS) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    tags: dict[str, str] = {}
    schemas = dict(SCHEMAS)
    for make in parts:
        part = make()
        for path, item in part.paths.items():
            if path in paths:
                raise ValueError(f"two parts describe {path}")
            paths[path] = item if part.own_access_errors else _with_access_answers(item)
        tags.update(part.tags)
        for name, schema in part.schemas.items():
            if name in schemas:
                raise ValueError(f"two parts define the schema {name}")
            schemas[name] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cidade",
            "version": __version__,
            "summary": "An open urban platform: NGSI-LD context hub (ETSI GS CIM 009 v1.8).",
            "license": {"name": "EUPL-1.2", "identifier": "EUPL-1.2"},
        },
        "tags": [{"name": name, "description": text} for name, text in tags.items()],
        "paths": paths,
        # Every operation takes any of these, or none: which principal may call which operation
        # is docs/security.md (the gate answers 401 or 403 otherwise).
        "security": [{"apiKey": []}, {"bearer": []}, {"session": []}, {}],
        "components": {
            "schemas": schemas,
            "parameters": PARAMETERS,
            "responses": error_responses(),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key (cdk_...); also accepted as `Authorization: Bearer cdk_...`.",
    },
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token of the city's OpenID Connect provider, or an API key.",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "cidade_session",
        "description": "The session cookie of POST /auth/login; unsafe methods repeat the "
        "session's CSRF token in X-CSRF-Token.",
    },
}


def _with_access_answers(item: dict[str, Any]) -> dict[str, Any]:
    """Any operation may meet the gate: 400 (a malformed NGSILD-Tenant header), 401 (no or bad
    credentials), 403 (not allowed here) and 429 (too many requests)."""
    for op in item.values():
        responses = op["responses"]
        for code in (400, 401, 403, 429):
            responses.setdefault(str(code), {"$ref": f"#/components/responses/{ERRORS[code][0]}"})
    return item


@functools.cache
def document_bytes() -> bytes:
    """The document serialised once per process."""
    return orjson.dumps(build_document())


async def serve_document(request: Request) -> Response:
    return Response(document_bytes(), media_type="application/json")


def openapi_route() -> Route:
    return guarded("/openapi.json", {"GET": (serve_document, PUBLIC)})
