"""What a change adds to the history (the NGSI-LD temporal representation's raw material).

Both stores call ``changed_instances(before, after)`` inside the transaction that writes
``after``, so the current state and its history never disagree, whatever crashes when.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from cidade.store.base import Entity

HistoryRow = tuple[str, str, str, str, str | None, str, str, dict[str, Any]]
# (attr IRI, datasetId or "", instanceId, time, observedAt, modifiedAt, createdAt, instance)


def instance_id() -> str:
    return f"urn:ngsi-ld:attribute:instance:{uuid.uuid4()}"


def changed_instances(before: Entity | None, after: Entity | None) -> Iterator[HistoryRow]:
    """Every attribute instance of ``after`` that is new or differs from ``before``: one history
    row each. The time index is observedAt when the instance has one, else modifiedAt."""
    if after is None:
        return
    old_attrs = before["attrs"] if before is not None else {}
    for attr, instances in after["attrs"].items():
        old = {i.get("datasetId"): i for i in old_attrs.get(attr, ())}
        for inst in instances:
            dataset = inst.get("datasetId")
            if old.get(dataset) == inst:
                continue  # untouched by this change
            modified = inst.get("modifiedAt") or after["modifiedAt"]
            observed = inst.get("observedAt")
            yield (
                attr,
                dataset or "",
                instance_id(),
                observed or modified,
                observed,
                modified,
                inst.get("createdAt") or modified,
                inst,
            )
