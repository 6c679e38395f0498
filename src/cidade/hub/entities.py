"""Entity operations (ETSI GS CIM 009 v1.8 §5.6, §5.7): each builds atomic write operations.

Every change is a pure function ``current stored entity -> new stored entity`` handed to the
store, which runs it inside a transaction; if the function raises, nothing is written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from cidade.hub.model import (
    KINDS,
    NULL,
    Terms,
    check_entity_id,
    check_name,
    expand_types,
    normalize_attrs,
    normalize_entity,
    normalize_instance,
    normalize_scope,
)
from cidade.ngsild import timefmt
from cidade.ngsild.errors import AlreadyExists, BadRequestData, NgsiError, ResourceNotFound
from cidade.store.base import Entity, Store, WriteOp


@dataclass
class UpdateResult:
    """§5.2.18 UpdateResult: which attributes were changed and which were not, and why."""

    updated: list[str] = field(default_factory=list)
    not_updated: list[dict[str, str]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        return {"updated": self.updated, "notUpdated": self.not_updated}


def _not_found(entity_id: str) -> ResourceNotFound:
    return ResourceNotFound(f"entity {entity_id} not found")


def _key(inst: dict[str, Any]) -> str | None:
    return inst.get("datasetId")


def _keep_created(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    if old is not None and "createdAt" in old:
        new["createdAt"] = old["createdAt"]
    return new


def put_instances(
    entity: Entity, iri: str, instances: list[dict], now: str, *, overwrite: bool = True
) -> bool:
    """Put attribute instances into an entity (by datasetId). False if one existed and
    ``overwrite`` is off (then nothing is changed). The attribute's instance list is replaced,
    never changed in place: an entity made from another by copying only its attribute map
    (``updated_with``) leaves the other as it was."""
    attrs = entity["attrs"]
    existing = attrs.get(iri, [])
    if (
        overwrite
        and len(existing) == 1
        and len(instances) == 1
        and "datasetId" not in existing[0]
        and "datasetId" not in instances[0]
    ):
        # The default instance replaced by another (a device's measure, thousands a second):
        # what the general case below does, without its bookkeeping.
        attrs[iri] = [_keep_created(instances[0], existing[0])]
        entity["modifiedAt"] = now
        return True
    by_key = {_key(i): n for n, i in enumerate(existing)}
    if not overwrite and any(_key(i) in by_key for i in instances):
        return False
    put = list(existing)
    for inst in instances:
        n = by_key.get(_key(inst))
        if n is None:
            put.append(inst)
        else:
            put[n] = _keep_created(inst, put[n])
    attrs[iri] = put
    entity["modifiedAt"] = now
    return True


def merge_instance(old: dict[str, Any], patch: dict[str, Any], now: str) -> dict[str, Any]:
    """Merge-patch one attribute instance (§4.20? merge semantics): members given replace, sub-
    attributes merge recursively, a sub-attribute whose value is urn:ngsi-ld:null goes away."""
    if patch.get("type") != old.get("type"):
        merged = dict(patch)
    else:
        merged = dict(old)
        for key, val in patch.items():
            if key in ("createdAt",):
                continue
            if ":" in key and isinstance(val, dict) and key in old and isinstance(old[key], dict):
                merged[key] = merge_instance(old[key], val, now)
            else:
                merged[key] = val
    merged["createdAt"] = old.get("createdAt", now)
    merged["modifiedAt"] = now
    return {k: v for k, v in merged.items() if not _is_null_instance(v)}


def _is_null_instance(value: object) -> bool:
    return value == NULL or (
        isinstance(value, dict) and value.get("value") == NULL and value.get("type") == "Property"
    )


def _strip_nulls(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split a merge fragment into attributes to merge and attribute names to delete."""
    keep: dict[str, Any] = {}
    deleted: list[str] = []
    for name, raw in body.items():
        if _is_null_instance(raw) or (isinstance(raw, dict) and raw.get("object") == NULL):
            deleted.append(name)
        else:
            keep[name] = raw
    return keep, deleted


class EntityService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def _one(self, tenant: str, op: WriteOp) -> Entity | None:
        (result,) = await self.store.write(tenant, [op])
        if isinstance(result, Exception):
            raise result
        return result

    async def get(self, tenant: str, entity_id: str) -> Entity:
        check_entity_id(entity_id)
        entity = await self.store.get_entity(tenant, entity_id)
        if entity is None:
            raise _not_found(entity_id)
        return entity

    # §5.6.1 Create Entity
    def create_op(self, body: object, terms: Terms, now: str | None = None) -> WriteOp:
        new = normalize_entity(body, terms, now or timefmt.now())

        def apply(current: Entity | None) -> Entity:
            if current is not None:
                raise AlreadyExists(f"entity {new['id']} already exists")
            return new

        return WriteOp(new["id"], apply)

    async def create(self, tenant: str, body: object, terms: Terms) -> str:
        op = self.create_op(body, terms)
        await self._one(tenant, op)
        return op.entity_id

    # §5.6.? Replace Entity (PUT /entities/{id})
    def replace_op(
        self, entity_id: str, body: object, terms: Terms, *, upsert: bool = False
    ) -> WriteOp:
        if isinstance(body, dict):
            if "id" in body and body["id"] != entity_id:
                raise BadRequestData("the id in the body differs from the entity id in the URL")
            body = {**body, "id": entity_id}
        new = normalize_entity(body, terms, timefmt.now())

        def apply(current: Entity | None) -> Entity:
            if current is None:
                if not upsert:
                    raise _not_found(entity_id)
                return new
            result = copy.deepcopy(new)
            result["createdAt"] = current["createdAt"]
            return result

        return WriteOp(entity_id, apply)

    async def replace(self, tenant: str, entity_id: str, body: object, terms: Terms) -> None:
        check_entity_id(entity_id)
        await self._one(tenant, self.replace_op(entity_id, body, terms))

    # §5.6.? Merge Entity (PATCH /entities/{id})
    def merge_op(self, entity_id: str, body: object, terms: Terms) -> WriteOp:
        if not isinstance(body, dict):
            raise BadRequestData("a merge fragment must be a JSON object")
        if "id" in body and body["id"] != entity_id:
            raise BadRequestData("the id in the body differs from the entity id in the URL")
        now = timefmt.now()
        keep, deleted = _strip_nulls({k: v for k, v in body.items() if k not in ("id", "type")})
        types = expand_types(body["type"], terms) if "type" in body else None
        scope = normalize_scope(body["scope"]) if "scope" in body else None
        keep.pop("scope", None)
        patch = normalize_attrs(keep, terms, now)
        deleted_iris = [terms.expand(check_name(n)) for n in deleted if n != "scope"]

        def apply(current: Entity | None) -> Entity:
            if current is None:
                raise _not_found(entity_id)
            entity = copy.deepcopy(current)
            if types:
                entity["type"] = sorted(set(entity["type"]) | set(types))
            if scope is not None:
                entity["scope"] = scope
            if "scope" in deleted:
                entity.pop("scope", None)
            for iri in deleted_iris:
                entity["attrs"].pop(iri, None)
            for iri, instances in patch.items():
                existing = entity["attrs"].setdefault(iri, [])
                by_key = {_key(i): n for n, i in enumerate(existing)}
                for inst in instances:
                    n = by_key.get(_key(inst))
                    if n is None:
                        existing.append(inst)
                    else:
                        existing[n] = merge_instance(existing[n], inst, now)
            entity["modifiedAt"] = now
            return entity

        return WriteOp(entity_id, apply)

    async def merge(self, tenant: str, entity_id: str, body: object, terms: Terms) -> None:
        check_entity_id(entity_id)
        await self._one(tenant, self.merge_op(entity_id, body, terms))

    async def delete(self, tenant: str, entity_id: str) -> None:
        await self._one(tenant, self.delete_op(entity_id))

    def delete_op(self, entity_id: str) -> WriteOp:
        check_entity_id(entity_id)

        def apply(current: Entity | None) -> None:
            if current is None:
                raise _not_found(entity_id)
            return None

        return WriteOp(entity_id, apply)

    # §5.6.3 Append Entity Attributes (POST .../attrs) and §5.6.2 Update (PATCH .../attrs)
    def attrs_op(
        self,
        entity_id: str,
        body: object,
        terms: Terms,
        *,
        mode: str,
        result: UpdateResult,
        allow_type: bool = False,
    ) -> WriteOp:
        """mode: "append" (add or overwrite), "append-keep" (noOverwrite), "update" (existing only)."""
        if not isinstance(body, dict):
            raise BadRequestData("the attributes must be a JSON object")
        if "id" in body and body["id"] != entity_id:
            raise BadRequestData("the id in the body differs from the entity id in the URL")
        now = timefmt.now()
        types = expand_types(body["type"], terms) if allow_type and "type" in body else None
        names = {
            terms.expand(check_name(n)): n for n in body if n not in ("id", "type", "@context")
        }
        attrs = normalize_attrs(body, terms, now)
        scope = normalize_scope(body["scope"]) if "scope" in body else None

        def apply(current: Entity | None) -> Entity:
            if current is None:
                raise _not_found(entity_id)
            result.updated.clear()
            result.not_updated.clear()
            entity = copy.deepcopy(current)
            if types:
                entity["type"] = sorted(set(entity["type"]) | set(types))
            if scope is not None:
                entity["scope"] = scope
            changed = bool(types) or scope is not None
            for iri, instances in attrs.items():
                name = names[iri]
                if mode == "update":
                    have = {_key(i) for i in entity["attrs"].get(iri, [])}
                    missing = [i for i in instances if _key(i) not in have]
                    if missing:
                        result.not_updated.append(
                            {"attributeName": name, "reason": "attribute does not exist"}
                        )
                        continue
                ok = put_instances(entity, iri, instances, now, overwrite=mode != "append-keep")
                if ok:
                    result.updated.append(name)
                    changed = True
                else:
                    result.not_updated.append(
                        {"attributeName": name, "reason": "attribute exists and noOverwrite"}
                    )
            if changed:
                entity["modifiedAt"] = now
            return entity

        return WriteOp(entity_id, apply)

    async def update_attrs(
        self, tenant: str, entity_id: str, body: object, terms: Terms, *, mode: str
    ) -> UpdateResult:
        check_entity_id(entity_id)
        result = UpdateResult()
        await self._one(
            tenant, self.attrs_op(entity_id, body, terms, mode=mode, result=result, allow_type=True)
        )
        return result

    # §5.6.4 Partial Attribute Update (PATCH .../attrs/{attrId}) and Replace Attribute (PUT)
    async def patch_attribute(
        self, tenant: str, entity_id: str, attr: str, body: object, terms: Terms, *, replace: bool
    ) -> None:
        check_entity_id(entity_id)
        iri = terms.expand(check_name(attr))
        if not isinstance(body, dict):
            raise BadRequestData("an attribute fragment must be a JSON object")
        now = timefmt.now()
        fragment = {k: v for k, v in body.items() if k != "@context"}
        dataset = fragment.get("datasetId")

        def apply(current: Entity | None) -> Entity:
            if current is None:
                raise _not_found(entity_id)
            entity = copy.deepcopy(current)
            instances = entity["attrs"].get(iri, [])
            n = next((k for k, i in enumerate(instances) if _key(i) == dataset), None)
            if n is None:
                raise ResourceNotFound(
                    f"entity {entity_id} has no attribute {attr}"
                    + (f" with datasetId {dataset}" if dataset else "")
                )
            inst = instances[n]
            if replace:
                new = normalize_instance(attr, fragment, terms, now)
                instances[n] = _keep_created(new, inst)
            else:
                patch = dict(fragment)
                patch.setdefault("type", inst["type"])
                new = normalize_instance(attr, _complete(patch, inst), terms, now)
                instances[n] = merge_instance(inst, new, now)
            entity["modifiedAt"] = now
            return entity

        await self._one(tenant, WriteOp(entity_id, apply))

    async def delete_attribute(
        self,
        tenant: str,
        entity_id: str,
        attr: str,
        terms: Terms,
        *,
        dataset_id: str | None,
        delete_all: bool,
    ) -> None:
        check_entity_id(entity_id)
        iri = terms.expand(check_name(attr))
        now = timefmt.now()

        def apply(current: Entity | None) -> Entity:
            if current is None:
                raise _not_found(entity_id)
            entity = copy.deepcopy(current)
            instances = entity["attrs"].get(iri)
            if not instances:
                raise ResourceNotFound(f"entity {entity_id} has no attribute {attr}")
            if delete_all:
                kept: list[dict] = []
            else:
                kept = [i for i in instances if _key(i) != dataset_id]
                if len(kept) == len(instances):
                    raise ResourceNotFound(
                        f"attribute {attr} of {entity_id} has no instance with datasetId "
                        f"{dataset_id}"
                        if dataset_id
                        else f"attribute {attr} of {entity_id} has no default instance"
                    )
            if kept:
                entity["attrs"][iri] = kept
            else:
                del entity["attrs"][iri]
            entity["modifiedAt"] = now
            return entity

        await self._one(tenant, WriteOp(entity_id, apply))


def _complete(patch: dict[str, Any], inst: dict[str, Any]) -> dict[str, Any]:
    """A partial update may omit the value member: take it from the current instance so the
    fragment validates, then merge."""
    kind = patch["type"]
    member = KINDS.get(kind) if isinstance(kind, str) else None
    if member and member not in patch and member in inst and patch["type"] == inst["type"]:
        return {**patch, member: inst[member]}
    return patch


__all__ = ["EntityService", "NgsiError", "UpdateResult"]
