"""Batch entity operations (§5.6.7–§5.6.10, §6.14–§6.17, 1.8 §6.31 merge).

Each entity is its own atomic operation: the batch commits every entity that succeeded and
reports each failure as {entityId, error: ProblemDetails} in a BatchOperationResult.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cidade.hub.entities import EntityService, UpdateResult, put_instances
from cidade.hub.model import Terms, normalize_entity
from cidade.ngsild import timefmt
from cidade.ngsild.errors import BadRequestData, InvalidRequest, NgsiError, ResourceNotFound
from cidade.store.base import Entity, WriteOp


@dataclass
class BatchResult:
    success: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    def fail(self, entity_id: Any, error: NgsiError) -> None:
        self.errors.append({"entityId": entity_id, "error": error.problem()})

    def body(self) -> dict[str, Any]:
        return {"success": self.success, "errors": self.errors}


def updated_with(current: Entity, new: Entity) -> Entity:
    """Upsert with options=update: ``new``'s types added, its attributes added or overwritten.

    ``current`` is left as it was: its attribute map is copied, and put_instances replaces the
    instance lists it puts rather than changing them (the instances themselves are replaced,
    never edited), far cheaper than a deep copy on the device agent's hot path."""
    attrs = dict(current["attrs"])
    entity = {**current, "attrs": attrs}
    if new["type"] != current["type"]:
        entity["type"] = sorted(set(current["type"]) | set(new["type"]))
    if "scope" in new:
        entity["scope"] = new["scope"]
    now = new["modifiedAt"]
    for iri, instances in new["attrs"].items():
        put_instances(entity, iri, instances, now)
    entity["modifiedAt"] = now
    return entity


def _entity_id(item: object) -> Any:
    return item.get("id") if isinstance(item, dict) else None


def _entries(
    body: object, terms: Sequence[Terms | NgsiError]
) -> zip[tuple[Any, Terms | NgsiError]]:
    """Each entity of a batch with its @context's terms (or the error resolving it gave)."""
    if not isinstance(body, list):
        raise InvalidRequest("the body of a batch operation must be a JSON array")
    if not body:
        raise BadRequestData("a batch operation needs at least one entity")
    return zip(body, terms, strict=True)


def _kept_attributes(update: UpdateResult, entity_id: str) -> NgsiError | None:
    """§5.6.9: an entity of a batch update with attributes left as they were (noOverwrite) is
    reported as not (wholly) updated, its other attributes written."""
    if not update.not_updated:
        return None
    kept = ", ".join(f"{n['attributeName']} ({n['reason']})" for n in update.not_updated)
    return BadRequestData(f"attributes of {entity_id} not updated: {kept}")


def _usable(terms: Terms | NgsiError) -> Terms:
    if isinstance(terms, NgsiError):
        raise terms
    return terms


class BatchService:
    def __init__(self, entities: EntityService) -> None:
        self.entities = entities

    async def _run(
        self, tenant: str, result: BatchResult, prepared: list[tuple[WriteOp, Any]]
    ) -> None:
        """Write the prepared operations; each one's ``on_ok(entity_id)``, called when it was
        written, may return an error to report for the entity instead of a success."""
        if not prepared:
            return
        outcomes = await self.entities.store.write(tenant, [op for op, _ in prepared])
        for (op, on_ok), outcome in zip(prepared, outcomes, strict=True):
            if isinstance(outcome, NgsiError):
                result.fail(op.entity_id, outcome)
            elif isinstance(outcome, Exception):
                raise outcome
            else:
                error = on_ok(op.entity_id) if on_ok is not None else None
                if error is None:
                    result.success.append(op.entity_id)
                else:
                    result.fail(op.entity_id, error)

    async def create(
        self, tenant: str, body: object, terms: Sequence[Terms | NgsiError]
    ) -> BatchResult:
        result = BatchResult()
        prepared = []
        now = timefmt.now()
        for item, item_terms in _entries(body, terms):
            try:
                op = self.entities.create_op(item, _usable(item_terms), now)
                prepared.append((op, result.created.append))
            except NgsiError as exc:
                result.fail(_entity_id(item), exc)
        await self._run(tenant, result, prepared)
        return result

    async def upsert(
        self, tenant: str, body: object, terms: Sequence[Terms | NgsiError], *, update: bool
    ) -> BatchResult:
        result = BatchResult()
        prepared = []
        now = timefmt.now()
        for item, item_terms in _entries(body, terms):
            try:
                prepared.append(
                    self._upsert_op(item, _usable(item_terms), now, update=update, result=result)
                )
            except NgsiError as exc:
                result.fail(_entity_id(item), exc)
        await self._run(tenant, result, prepared)
        return result

    def _upsert_op(
        self, item: object, terms: Terms, now: str, *, update: bool, result: BatchResult
    ) -> tuple[WriteOp, Any]:
        new = normalize_entity(item, terms, now)  # one validation, used either way
        created: list[bool] = []

        def apply(current: Entity | None) -> Entity | None:
            if current is None:
                created.append(True)
                return new
            if not update:  # options=replace: the entity as sent, created when it was
                return {**new, "createdAt": current["createdAt"]}
            return updated_with(current, new)

        def on_ok(entity_id: str) -> None:
            if created:
                result.created.append(entity_id)

        return WriteOp(new["id"], apply), on_ok

    async def update(
        self,
        tenant: str,
        body: object,
        terms: Sequence[Terms | NgsiError],
        *,
        no_overwrite: bool,
    ) -> BatchResult:
        result = BatchResult()
        prepared = []
        for item, item_terms in _entries(body, terms):
            try:
                terms_of_item = _usable(item_terms)
                entity_id = _entity_id(item)
                if not isinstance(entity_id, str):
                    raise BadRequestData("every entity of a batch update needs an id")
                upd = UpdateResult()
                op = self.entities.attrs_op(
                    entity_id,
                    item,
                    terms_of_item,
                    mode="append-keep" if no_overwrite else "append",
                    result=upd,
                    allow_type=True,
                )
                prepared.append((op, functools.partial(_kept_attributes, upd)))
            except NgsiError as exc:
                result.fail(_entity_id(item), exc)
        await self._run(tenant, result, prepared)
        return result

    async def merge(
        self, tenant: str, body: object, terms: Sequence[Terms | NgsiError]
    ) -> BatchResult:
        result = BatchResult()
        prepared = []
        for item, item_terms in _entries(body, terms):
            try:
                entity_id = _entity_id(item)
                if not isinstance(entity_id, str):
                    raise BadRequestData("every entity of a batch merge needs an id")
                op = self.entities.merge_op(entity_id, item, _usable(item_terms))
                prepared.append((op, None))
            except NgsiError as exc:
                result.fail(_entity_id(item), exc)
        await self._run(tenant, result, prepared)
        return result

    async def delete(self, tenant: str, body: object) -> BatchResult:
        result = BatchResult()
        prepared = []
        if not isinstance(body, list):
            raise InvalidRequest("the body of a batch delete must be a JSON array of entity ids")
        if not body:
            raise BadRequestData("a batch delete needs at least one entity id")
        for item in body:
            try:
                if not isinstance(item, str):
                    raise BadRequestData("a batch delete is an array of entity ids")
                prepared.append((self.entities.delete_op(item), None))
            except NgsiError as exc:
                result.fail(item, exc)
        await self._run(tenant, result, prepared)
        return result


__all__ = ["BatchResult", "BatchService", "ResourceNotFound"]
