"""Discovery (§5.7.5–§5.7.8): entity types and attributes that exist in a tenant."""

from __future__ import annotations

import uuid
from typing import Any

from cidade.ngsild.errors import ResourceNotFound
from cidade.store.base import Store


def _list_id(kind: str) -> str:
    return f"urn:ngsi-ld:{kind}:{uuid.uuid4().hex}"


class Discovery:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def types(self, tenant: str, terms: Any, *, details: bool) -> Any:
        found = await self.store.entity_types(tenant)
        if not details:
            return {
                "id": _list_id("EntityTypeList"),
                "type": "EntityTypeList",
                "typeList": [terms.compact(t["type"]) for t in found],
            }
        return [
            {
                "id": t["type"],
                "type": "EntityType",
                "typeName": terms.compact(t["type"]),
                "attributeNames": sorted(terms.compact(a) for a in t["attrs"]),
            }
            for t in found
        ]

    async def type_info(self, tenant: str, terms: Any, type_name: str) -> dict[str, Any]:
        iri = terms.expand(type_name)
        for t in await self.store.entity_types(tenant):
            if t["type"] == iri:
                return {
                    "id": iri,
                    "type": "EntityTypeInfo",
                    "typeName": terms.compact(iri),
                    "entityCount": t["count"],
                    "attributeDetails": [
                        {
                            "id": attr,
                            "type": "Attribute",
                            "attributeName": terms.compact(attr),
                            "attributeTypes": sorted(kinds),
                        }
                        for attr, kinds in sorted(t["attrs"].items())
                    ],
                }
        raise ResourceNotFound(f"no entity of type {type_name} exists")

    def _attribute(self, terms: Any, info: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": info["attr"],
            "type": "Attribute",
            "attributeName": terms.compact(info["attr"]),
            "attributeCount": info["count"],
            "attributeTypes": sorted(info["kinds"]),
            "typeNames": sorted(terms.compact(t) for t in info["types"]),
        }

    async def attributes(self, tenant: str, terms: Any, *, details: bool) -> Any:
        found = await self.store.attributes(tenant)
        if not details:
            return {
                "id": _list_id("AttributeList"),
                "type": "AttributeList",
                "attributeList": [terms.compact(a["attr"]) for a in found],
            }
        return [self._attribute(terms, a) for a in found]

    async def attribute_info(self, tenant: str, terms: Any, name: str) -> dict[str, Any]:
        iri = terms.expand(name)
        for info in await self.store.attributes(tenant):
            if info["attr"] == iri:
                return self._attribute(terms, info)
        raise ResourceNotFound(f"no entity has an attribute {name}")
