"""The real store against the plain evaluator: for random entities written through
``SqliteStore.write`` and a random valid ``q``, ``SqliteStore.query`` returns exactly the entities
that ``q.evaluate`` accepts, on the SQL path and on the geo path (where q runs in memory)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cidade.ngsild.query.geo import parse_geoquery
from cidade.ngsild.query.q import QNode, evaluate, parse_q
from cidade.store.base import EntityQuery, WriteOp
from tests.conftest import running_store
from tests.hub.test_q_property import entity, expand, render_q, trees

WORLD = "[[[-180,-90],[180,-90],[180,90],[-180,90],[-180,-90]]]"
LOCATION = "https://uri.etsi.org/ngsi-ld/location"
_tenants = itertools.count()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(request, tmp_path_factory) -> Iterator[tuple[Any, asyncio.AbstractEventLoop]]:
    with running_store(request.param, tmp_path_factory.mktemp("prop")) as opened:
        yield opened


def _prepare(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for n, e in enumerate(entities):
        doc = {**e, "id": f"urn:e:{n}", "createdAt": "2026-01-01T00:00:00.000000Z"}
        doc["modifiedAt"] = doc["createdAt"]
        doc["attrs"] = {
            **e["attrs"],
            LOCATION: [{"type": "GeoProperty", "value": {"type": "Point", "coordinates": [n, n]}}],
        }
        out.append(doc)
    return out


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(tree=trees, entities=st.lists(entity(), min_size=1, max_size=6))
def test_store_query_equals_evaluator(store, tree: QNode, entities: list[dict[str, Any]]) -> None:
    backend, loop = store
    tenant = f"t{next(_tenants)}"  # a fresh tenant per example: nothing left from the last one
    docs = _prepare(entities)
    results = loop.run_until_complete(
        backend.write(tenant, [WriteOp(d["id"], lambda _cur, d=d: d) for d in docs])
    )
    assert not [r for r in results if isinstance(r, Exception)]
    node = parse_q(render_q(tree), expand)
    expected = {d["id"] for d in docs if evaluate(node, d)}

    by_sql = loop.run_until_complete(
        backend.query(tenant, EntityQuery(q=node, limit=100, count=True))
    )
    assert {e["id"] for e in by_sql.entities} == expected, render_q(node)
    assert by_sql.count == len(expected)

    geo = parse_geoquery("within", "Polygon", WORLD, None, expand)
    by_geo = loop.run_until_complete(
        backend.query(tenant, EntityQuery(q=node, geo=geo, limit=100, count=True))
    )
    assert {e["id"] for e in by_geo.entities} == expected, render_q(node)
    assert by_geo.count == len(expected)
