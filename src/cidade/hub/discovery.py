"""Discovery (§5.7.5–§5.7.8): entity types and attributes that exist in a tenant.

``visible`` narrows it to the entity types a caller may read (the public types, for the public
and citizens: hub/access.py): only those types, and the attributes of entities of those types,
are named; an attribute count, which would include entities of other types, is left out.
"""

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

    async def _types(self, tenant: str, visible: frozenset[str] | None) -> list[dict[str, Any]]:
        found = await self.store.entity_types(tenant)
        return found if visible is None else [t for t in found if t["type"] in visible]

    async def _attributes(
        self, tenant: str, visible: frozenset[str] | None
    ) -> list[dict[str, Any]]:
        if visible is None:
            return await self.store.attributes(tenant)
        info: dict[str, dict[str, Any]] = {}
        for t in await self._types(tenant, visible):
            for attr, kinds in t["attrs"].items():
                item = info.setdefault(
                    attr, {"attr": attr, "kinds": set(), "types": set(), "count": None}
                )
                item["kinds"] |= set(kinds)
                item["types"].add(t["type"])
        return [info[a] for a in sorted(info)]

    async def types(
        self, tenant: str, terms: Any, *, details: bool, visible: frozenset[str] | None = None
    ) -> Any:
        found = await self._types(tenant, visible)
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

    async def type_info(
        self, tenant: str, terms: Any, type_name: str, visible: frozenset[str] | None = None
    ) -> dict[str, Any]:
        iri = terms.expand(type_name)
        for t in await self._types(tenant, visible):
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
        out = {
            "id": info["attr"],
            "type": "Attribute",
            "attributeName": terms.compact(info["attr"]),
            "attributeCount": info["count"],
            "attributeTypes": sorted(info["kinds"]),
            "typeNames": sorted(terms.compact(t) for t in info["types"]),
        }
        if info["count"] is None:
            del out["attributeCount"]
        return out

    async def attributes(
        self, tenant: str, terms: Any, *, details: bool, visible: frozenset[str] | None = None
    ) -> Any:
        found = await self._attributes(tenant, visible)
        if not details:
            return {
                "id": _list_id("AttributeList"),
                "type": "AttributeList",
                "attributeList": [terms.compact(a["attr"]) for a in found],
            }
        # §5.7.9: the list's Attributes name their attribute and the entity types that have it;
        # counts and attribute types are for one attribute's information (§5.7.10).
        return [
            {
                "id": a["attr"],
                "type": "Attribute",
                "attributeName": terms.compact(a["attr"]),
                "typeNames": sorted(terms.compact(t) for t in a["types"]),
            }
            for a in found
        ]

    async def attribute_info(
        self, tenant: str, terms: Any, name: str, visible: frozenset[str] | None = None
    ) -> dict[str, Any]:
        iri = terms.expand(name)
        for info in await self._attributes(tenant, visible):
            if info["attr"] == iri:
                return self._attribute(terms, info)
        raise ResourceNotFound(f"no entity has an attribute {name}")
