"""Entity operations (ETSI GS CIM 009 v1.8 §5.6, §5.7): each builds atomic write operations.

Every change is a pure function ``current stored entity -> new stored entity`` handed to the
store, which runs it inside a transaction; if the function raises, nothing is written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from cidade.hub.model import (
    GEO_TYPES,
    KINDS,
    NGSI_LD,
    NULL,
    Terms,
    check_entity_id,
    expand_name,
    expand_types,
    is_null_instance,
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
    """§5.2.18 UpdateResult: which attributes were changed and which were not, and why.

    Attributes are named by their IRI: the 207 response that carries an UpdateResult has no
    @context of its own, so a short name would mean the core @context's (``speed`` read as
    the default vocabulary's), and ``updated`` is no ``@vocab`` member that JSON-LD would
    compact; ETSI's conformance suite and Stellio read it so."""

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
    """Merge-patch one attribute instance (§5.5.12): members given replace, sub-attributes
    merge recursively, a sub-attribute that is NGSI-LD Null goes away."""
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
    # Sub-attributes are the members named by an IRI (the others have no ':' in their name).
    return {k: v for k, v in merged.items() if ":" not in k or not is_null_instance(v)}


def apply_instances(
    entity: Entity, iri: str, instances: list[dict], now: str, *, merge: bool
) -> None:
    """The instances of one attribute of a merge or an update put into an entity, each at its
    datasetId: an NGSI-LD Null instance deletes the instance it names (the attribute, when it
    was the last), any other is merged into (``merge``) or replaces the one there, or is added."""
    put = list(entity["attrs"].get(iri, ()))
    for inst in instances:
        key = _key(inst)
        n = next((k for k, have in enumerate(put) if _key(have) == key), None)
        if is_null_instance(inst):
            if n is not None:
                del put[n]
        elif n is None:
            put.append(inst)
        elif merge:
            put[n] = merge_instance(put[n], inst, now)
        else:
            put[n] = _keep_created(inst, put[n])
    if put:
        entity["attrs"][iri] = put
    else:
        entity["attrs"].pop(iri, None)
    entity["modifiedAt"] = now


# Members of an entity that a client may name like attributes in some operations, but that are
# none: their IRIs once expanded (id and type expand to keywords, refused as names anyway).
SCOPE = NGSI_LD + "scope"
_NOT_ATTRIBUTES = frozenset({SCOPE, NGSI_LD + "createdAt", NGSI_LD + "modifiedAt"})


def attribute_iri(name: object, terms: Terms) -> str:
    """The IRI of an attribute named in a path (/attrs/{attrId}): 400 for what is not one."""
    iri = expand_name(name, terms)
    if iri in _NOT_ATTRIBUTES:
        raise BadRequestData(f"{name!r} is a member of the entity, not an attribute")
    return iri


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

    # §5.6.17 Merge Entity (PATCH /entities/{id})
    def merge_op(self, entity_id: str, body: object, terms: Terms) -> WriteOp:
        if not isinstance(body, dict):
            raise BadRequestData("a merge fragment must be a JSON object")
        if "id" in body and body["id"] != entity_id:
            raise BadRequestData("the id in the body differs from the entity id in the URL")
        now = timefmt.now()
        types = expand_types(body["type"], terms) if "type" in body else None
        raw_scope = body.get("scope")
        drop_scope = raw_scope == NULL
        scope = None if raw_scope is None or drop_scope else normalize_scope(raw_scope)
        patch = normalize_attrs(body, terms, now, nulls=True)

        def apply(current: Entity | None) -> Entity:
            if current is None:
                raise _not_found(entity_id)
            entity = copy.deepcopy(current)
            if types:
                entity["type"] = sorted(set(entity["type"]) | set(types))
            if drop_scope:
                entity.pop("scope", None)
            elif scope is not None:
                entity["scope"] = scope
            for iri, instances in patch.items():
                apply_instances(entity, iri, instances, now, merge=True)
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
        """mode: "append" (add or overwrite), "append-keep" (noOverwrite), "update" (existing
        only; NGSI-LD Null deletes)."""
        if not isinstance(body, dict):
            raise BadRequestData("the attributes must be a JSON object")
        if "id" in body and body["id"] != entity_id:
            raise BadRequestData("the id in the body differs from the entity id in the URL")
        now = timefmt.now()
        update = mode == "update"
        types = expand_types(body["type"], terms) if allow_type and "type" in body else None
        attrs = normalize_attrs(body, terms, now, nulls=update)
        raw_scope = body.get("scope")
        drop_scope = update and raw_scope == NULL
        scope = None if raw_scope is None or drop_scope else normalize_scope(raw_scope)

        def apply(current: Entity | None) -> Entity:
            if current is None:
                raise _not_found(entity_id)
            result.updated.clear()
            result.not_updated.clear()
            entity = copy.deepcopy(current)
            if types:
                entity["type"] = sorted(set(entity["type"]) | set(types))
            changed = bool(types)
            if scope is not None or drop_scope:
                if update and "scope" not in entity:
                    # §5.6.2: Update changes what exists; a scope is added by Append.
                    result.not_updated.append(
                        {"attributeName": SCOPE, "reason": "the entity has no scope"}
                    )
                else:
                    _put_scope(entity, scope, keep=mode == "append-keep")
                    result.updated.append(SCOPE)
                    changed = True
            for iri, instances in attrs.items():
                if update:
                    have = {_key(i) for i in entity["attrs"].get(iri, [])}
                    if any(_key(i) not in have for i in instances):
                        result.not_updated.append(
                            {"attributeName": iri, "reason": "attribute does not exist"}
                        )
                        continue
                    apply_instances(entity, iri, instances, now, merge=False)
                    ok = True
                else:
                    ok = put_instances(entity, iri, instances, now, overwrite=mode == "append")
                if ok:
                    result.updated.append(iri)
                    changed = True
                else:
                    result.not_updated.append(
                        {"attributeName": iri, "reason": "attribute exists and noOverwrite"}
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
        iri = attribute_iri(attr, terms)
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
                _check_same_kind(attr, fragment, inst)
                patch = dict(fragment)
                patch.setdefault("type", inst["type"])
                new = normalize_instance(attr, _complete(patch, inst), terms, now, nulls=True)
                apply_instances(entity, iri, [new], now, merge=True)
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
        iri = expand_name(attr, terms)
        if iri == SCOPE:
            await self._one(tenant, self._delete_scope_op(entity_id))
            return
        iri = attribute_iri(attr, terms)
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

    def _delete_scope_op(self, entity_id: str) -> WriteOp:
        """§5.6.5 on ``scope`` (§4.18): the entity's scope goes."""
        now = timefmt.now()

        def apply(current: Entity | None) -> Entity:
            if current is None:
                raise _not_found(entity_id)
            if "scope" not in current:
                raise ResourceNotFound(f"entity {entity_id} has no scope")
            entity = {k: v for k, v in current.items() if k != "scope"}
            entity["modifiedAt"] = now
            return entity

        return WriteOp(entity_id, apply)


def _put_scope(entity: Entity, scope: list[str] | None, *, keep: bool) -> None:
    """A new scope (None: none), or with ``keep`` (noOverwrite) the scopes added to those the
    entity has (§4.18: a scope is a set of paths)."""
    if scope is None:
        entity.pop("scope", None)
    elif keep and "scope" in entity:
        entity["scope"] = entity["scope"] + [s for s in scope if s not in entity["scope"]]
    else:
        entity["scope"] = scope


def _check_same_kind(attr: str, fragment: dict[str, Any], inst: dict[str, Any]) -> None:
    """§5.6.4: a partial update keeps the attribute's type (a Property stays a Property)."""
    declared = fragment.get("type")
    if declared is None or declared == inst["type"]:
        return
    if isinstance(declared, str) and declared in GEO_TYPES and inst["type"] == "GeoProperty":
        return  # concise: the fragment is the GeoProperty's new geometry
    raise BadRequestData(
        f"attribute {attr!r} is a {inst['type']}; a partial update cannot make it a {declared} "
        "(replace the attribute to change its type)"
    )


def _complete(patch: dict[str, Any], inst: dict[str, Any]) -> dict[str, Any]:
    """A partial update may omit the value member: take it from the current instance so the
    fragment validates, then merge."""
    kind = patch["type"]
    member = KINDS.get(kind) if isinstance(kind, str) else None
    if member and member not in patch and member in inst and patch["type"] == inst["type"]:
        return {**patch, member: inst[member]}
    return patch


__all__ = ["EntityService", "NgsiError", "UpdateResult"]
