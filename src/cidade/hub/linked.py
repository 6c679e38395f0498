"""Linked entity retrieval (ETSI GS CIM 009 v1.8 §4.5.23, parameters ``join`` and ``joinLevel``
of §6.3.x): the entities a result's relationships point to, shown inline (in each relationship,
as its ``entity`` member; in keyValues the linked entity stands for the relationship's value) or
flat (after the result, each once), ``joinLevel`` relationships deep.

Domain code, no HTTP: Retrieve Entity and Query Entities use it, and so can notifications (a
subscription's ``join``). Each level of links is one batched read of the store, whatever the
number of relationships. Which relationships are followed, and how a linked entity is shown,
follow the view: only the relationships the view shows (``attrs``, ``pick``, ``omit``,
``datasetId``), each linked entity with the part of ``pick`` / ``omit`` nested under the
relationship that reached it (§4.21), in the same representation (format, sysAttrs, lang). A
linked entity that does not exist, or that the caller may not read, is left out: the
relationship shows its object only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cidade.hub.model import View, render_entity
from cidade.ngsild.errors import BadRequestData

Entity = dict[str, Any]
JOIN_FORMS = ("flat", "inline")
MAX_JOIN_LEVEL = 10


@dataclass(frozen=True, slots=True)
class Join:
    """How linked entities are joined: ``form`` "flat" or "inline", ``level`` links deep."""

    form: str
    level: int = 1

    @property
    def inline(self) -> bool:
        return self.form == "inline"


def parse_join(join: object, level: object) -> Join | None:
    """``join`` and ``joinLevel`` as a Join; None when no join is asked for (``join`` absent
    or ``@none``). 400 for another form, for a level that is not a whole number from 1 to
    MAX_JOIN_LEVEL, and for a level without a join."""
    if join is None or join == "@none":
        if level is not None and join is None:
            raise BadRequestData("joinLevel needs join (flat or inline)")
        return None
    if join not in JOIN_FORMS:
        raise BadRequestData(f"join must be flat, inline or @none, got {join!r}")
    if level is None:
        return Join(str(join))
    if isinstance(level, str) and level.isdigit():
        number = int(level)
    elif isinstance(level, int) and not isinstance(level, bool):
        number = level
    else:
        raise BadRequestData(f"joinLevel must be a whole number, got {level!r}")
    if not 1 <= number <= MAX_JOIN_LEVEL:
        raise BadRequestData(f"joinLevel must be between 1 and {MAX_JOIN_LEVEL}, got {number}")
    return Join(str(join), number)


class EntityReader(Protocol):
    async def get_entities(self, tenant: str, entity_ids: Sequence[str]) -> list[Entity]: ...


@dataclass(slots=True)
class Joined:
    """Rendered entities with their linked entities: ``items``, one per entity in order (inline:
    the linked entities inside their relationships; an entity that pick and omit leave empty is
    ``{}``) and, for a flat join, ``linked``, the linked entities to show after them, each once,
    in the order they were reached."""

    items: list[dict[str, Any]]
    linked: list[dict[str, Any]]
    linked_entities: list[Entity]  # the stored form of ``linked``, in the same order


async def join_linked(
    store: EntityReader,
    tenant: str,
    entities: Sequence[Entity],
    view: View,
    join: Join,
    visible: Callable[[Entity], bool] = lambda _: True,
) -> Joined:
    """Render ``entities`` with ``view`` and join the entities their relationships link to."""
    found: dict[str, Entity | None] = {e["id"]: e for e in entities}
    # Every (entity, view) reached, level by level; the roots are level 0.
    levels: list[list[tuple[Entity, View]]] = [[(e, view) for e in entities]]
    for _ in range(join.level):
        edges = [
            (target, shown.of_linked(rel))
            for entity, shown in levels[-1]
            for rel, target in links(entity, shown)
        ]
        missing = list(dict.fromkeys(t for t, _ in edges if t not in found))
        if missing:
            for entity in await store.get_entities(tenant, missing):
                found[entity["id"]] = entity if visible(entity) else None
            for target in missing:
                found.setdefault(target, None)
        reached = [(found[t], v) for t, v in edges if found[t] is not None]
        if not reached:
            break
        levels.append(reached)  # type: ignore[arg-type]
    if join.inline:
        return Joined([_inline(e, view, found, join.level) for e in entities], [], [])
    items = [render_entity(e, view) for e in entities]
    shown_ids = {e["id"] for e in entities}
    linked: list[dict[str, Any]] = []
    linked_entities: list[Entity] = []
    for level in levels[1:]:
        for entity, shown in level:
            if entity["id"] in shown_ids:
                continue
            shown_ids.add(entity["id"])
            rendered = render_entity(entity, shown)
            if rendered:
                linked.append(rendered)
                linked_entities.append(entity)
    return Joined(items, linked, linked_entities)


def links(entity: Entity, view: View) -> Iterator[tuple[str, str]]:
    """(relationship IRI, linked entity id) of every Relationship instance the view shows."""
    datasets = view.datasets
    for iri, instances in entity["attrs"].items():
        if not view.wants(iri):
            continue
        for inst in instances:
            if inst.get("type") != "Relationship":
                continue
            if datasets is not None and inst.get("datasetId", "@none") not in datasets:
                continue
            obj = inst.get("object")
            for target in obj if isinstance(obj, list) else (obj,):
                if isinstance(target, str):
                    yield iri, target


def _inline(entity: Entity, view: View, found: dict[str, Entity | None], depth: int) -> dict:
    """The entity rendered, each relationship carrying the entity it links to (``depth``
    more levels of them)."""
    out = render_entity(entity, view)
    if depth <= 0:
        return out
    terms = view.terms
    for iri, _ in _shown_relationships(entity, view):
        name = terms.compact(iri)
        if name not in out:
            continue
        child = view.of_linked(iri)

        def linked(target: Any, child: View = child) -> dict | None:
            if not isinstance(target, str):
                return None
            doc = found.get(target)
            if doc is None:
                return None
            return _inline(doc, child, found, depth - 1) or None

        out[name] = _with_entities(out[name], view.form, linked)
    return out


def _shown_relationships(entity: Entity, view: View) -> Iterator[tuple[str, list[dict]]]:
    for iri, instances in entity["attrs"].items():
        if any(i.get("type") == "Relationship" for i in instances) and view.wants(iri):
            yield iri, instances


def _with_entities(rendered: Any, form: str, linked: Callable[[Any], dict | None]) -> Any:
    """A rendered relationship with its linked entities: in keyValues the entity replaces the
    object; otherwise each instance gains an ``entity`` member."""
    if form == "keyValues":
        if isinstance(rendered, list):
            entities = [linked(t) or t for t in rendered]
            return entities
        return linked(rendered) or rendered
    if isinstance(rendered, list):
        return [_instance_with_entity(r, linked) for r in rendered]
    return _instance_with_entity(rendered, linked)


def _instance_with_entity(inst: Any, linked: Callable[[Any], dict | None]) -> Any:
    if not isinstance(inst, dict) or "object" not in inst:
        return inst
    obj = inst["object"]
    if isinstance(obj, list):
        entities = [e for e in (linked(t) for t in obj) if e]
        return {**inst, "entity": entities} if entities else inst
    entity = linked(obj)
    return {**inst, "entity": entity} if entity else inst
