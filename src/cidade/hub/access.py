"""What a request's grant lets the hub show and change (docs/security.md).

The gate has checked the permission; this narrows it to the entities the caller may see: the
public types for the public and citizens, its own entities for a device. What the caller may
not see is absent, exactly as if it did not exist (a 404, never a 403 that tells it exists).
"""

from __future__ import annotations

import re
from dataclasses import replace

from cidade.auth.errors import AccessDenied
from cidade.auth.gate import Grant
from cidade.store.base import EntityQuery, TypeExpr


def narrow_query(grant: Grant, query: EntityQuery) -> EntityQuery | None:
    """The query limited to what the grant shows; None when it can show nothing."""
    if grant.read_types is not None:
        if not grant.read_types:
            return None
        allowed: TypeExpr = (
            next(iter(grant.read_types))
            if len(grant.read_types) == 1
            else ("or", sorted(grant.read_types))
        )
        query = replace(
            query, types=allowed if query.types is None else ("and", [query.types, allowed])
        )
    own = grant.own_entities
    if own is not None:
        if query.ids:
            ids = [i for i in query.ids if grant.owns(i)]
            if not ids:
                return None
            query = replace(query, ids=ids)
        elif query.id_pattern is not None:
            raise AccessDenied("a device reads its own entities by id, not by idPattern")
        elif all(not p.endswith("*") for p in own):
            if not own:
                return None
            query = replace(query, ids=list(own))
        else:
            parts = [re.escape(p[:-1]) if p.endswith("*") else re.escape(p) + "$" for p in own]
            query = replace(query, id_pattern="^(?:" + "|".join(parts) + ")")
    return query
