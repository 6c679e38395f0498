"""The platform's own routes (app.py): health and this document."""

from __future__ import annotations

from typing import Any

from cidade.openapi.build import ApiPart, operation
from cidade.openapi.schemas import Schema

TAG = "Platform"

HEALTH: Schema = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"enum": ["ok", "starting"]},
        "version": {"type": "string"},
    },
}


def platform_paths() -> dict[str, Any]:
    return {
        "/health": {
            "get": operation(
                "health",
                "Health: whether the platform is up and ready",
                {
                    "200": {
                        "description": "Ready.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                        },
                    },
                    "503": {
                        "description": "Starting or stopping.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                        },
                    },
                },
                tag=TAG,
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This OpenAPI 3.1 document",
                {
                    "200": {
                        "description": "The document.",
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "required": ["openapi", "paths"]}
                            }
                        },
                    }
                },
                tag=TAG,
            )
        },
    }


def platform_part() -> ApiPart:
    return ApiPart(
        paths=platform_paths(),
        tags={TAG: "The platform itself: health and API description."},
        schemas={"Health": HEALTH},
    )
