"""orderBy (§4.23) on both stores against the reference ordering in Python.

For random entities written through the store and random keys (entity members, attributes,
sub-attributes, instance members, bracket paths; ascending and descending), ``Store.query``
returns the entities in the order ``order.sort_entities`` gives, and pages (limit, offset)
through that order without overlap or gap; also on the SQLite geo path (geo filter in Python,
order in SQL). Values come from the q property tests' pools, so keys meet every data type."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cidade.ngsild.query.geo import parse_geoquery
from cidade.ngsild.query.order import (
    ENTITY_MEMBERS,
    OrderKey,
    parse_order_by,
    render_order_by,
    sort_entities,
)
from cidade.ngsild.query.q import Path
from cidade.store.base import EntityQuery, WriteOp
from tests.conftest import running_store
from tests.hub.test_q_property import DATETIMES, D, entity, expand, paths

WORLD = "[[[-180,-90],[180,-90],[180,90],[-180,90],[-180,-90]]]"
LOCATION = "https://uri.etsi.org/ngsi-ld/location"
TYPES = [D + "T", D + "U", D + "Type", "https://example.org/Éa"]
SCOPES = ["/a", "/B", "/a/b", "/é"]
STAMPS = [
    "2026-01-01T00:00:00.000000Z",
    "2025-06-30T12:00:00.500000Z",
    "2026-01-01T00:00:00.000001Z",
]
# ICU collations (RFC 6067 tags): phonebook German (ü as ue), numeric, Swedish, case-blind
# (ties by code point), upper case first.
COLLATIONS = ["de-u-co-phonebk", "und-u-kn", "sv", "und-u-ks-level2", "en-u-kf-upper"]
# Strings that these collations order differently, in an attribute of their own.
WORDS = ["a10", "a9", "A9", "Müller", "Mueller", "Muller", "z", "å", "ä", "aa", "Ö", "oe", "Z"]
WORD_PATH = Path(D + "word", names=("word",))
_tenants = itertools.count()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(request, tmp_path_factory) -> Iterator[tuple[Any, asyncio.AbstractEventLoop]]:
    with running_store(request.param, tmp_path_factory.mktemp("order")) as opened:
        yield opened


@st.composite
def order_keys(draw: st.DrawFn) -> tuple[OrderKey, ...]:
    keys = []
    for _ in range(draw(st.integers(1, 3))):
        descending = draw(st.booleans())
        roll = draw(st.integers(0, 5))
        if roll == 0:
            keys.append(
                OrderKey(member=draw(st.sampled_from(ENTITY_MEMBERS)), descending=descending)
            )
        elif roll == 1:
            keys.append(OrderKey(path=WORD_PATH, descending=descending))
        else:
            keys.append(OrderKey(path=draw(paths()), descending=descending))
    return tuple(keys)


@st.composite
def documents(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for n, e in enumerate(draw(st.lists(entity(), min_size=1, max_size=7))):
        doc = {**e, "id": f"urn:e:{draw(st.integers(0, 3))}:{n}"}
        doc["type"] = sorted(
            draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=2, unique=True))
        )
        if draw(st.booleans()):
            doc["scope"] = draw(st.lists(st.sampled_from(SCOPES), max_size=2, unique=True))
        doc["createdAt"] = draw(st.sampled_from(STAMPS))
        doc["modifiedAt"] = draw(st.sampled_from([*STAMPS, *DATETIMES[:1]]))
        # The default instance is not always the first one stored.
        attrs = {name: draw(st.permutations(insts)) for name, insts in e["attrs"].items()}
        if draw(st.integers(0, 4)):
            attrs[WORD_PATH.attr] = [{"type": "Property", "value": draw(st.sampled_from(WORDS))}]
        doc["attrs"] = {
            **attrs,
            LOCATION: [{"type": "GeoProperty", "value": {"type": "Point", "coordinates": [n, n]}}],
        }
        out.append(doc)
    return out


def _write(backend: Any, loop: asyncio.AbstractEventLoop, docs: list[dict[str, Any]]) -> str:
    tenant = f"t{next(_tenants)}"  # a fresh tenant per example
    results = loop.run_until_complete(
        backend.write(tenant, [WriteOp(d["id"], lambda _cur, d=d: d) for d in docs])
    )
    assert not [r for r in results if isinstance(r, Exception)]
    return tenant


def _ids(backend: Any, loop: asyncio.AbstractEventLoop, tenant: str, query: EntityQuery) -> list:
    return [e["id"] for e in loop.run_until_complete(backend.query(tenant, query)).entities]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    keys=order_keys(),
    docs=documents(),
    page=st.integers(1, 3),
    collation=st.sampled_from([None, None, *COLLATIONS]),
)
def test_store_orders_as_the_reference(
    store,
    keys: tuple[OrderKey, ...],
    docs: list[dict[str, Any]],
    page: int,
    collation: str | None,
) -> None:
    backend, loop = store
    tenant = _write(backend, loop, docs)
    # The parser reads back what render_order_by writes.
    assert parse_order_by(render_order_by(keys), expand) == keys
    expected = [d["id"] for d in sort_entities(docs, keys, collation)]
    text = f"{render_order_by(keys)} {collation}"

    def query(**extra: Any) -> list[str]:
        return _ids(backend, loop, tenant, EntityQuery(order=keys, collation=collation, **extra))

    assert query(limit=100) == expected, text
    paged: list[str] = []
    for offset in range(0, len(docs), page):
        paged += query(limit=page, offset=offset)
    assert paged == expected, text
    geo = parse_geoquery("within", "Polygon", WORLD, None, expand)
    assert query(geo=geo, limit=2, offset=1) == expected[1:3], text


def test_icu_root_collation_is_postgresqls(store) -> None:
    """Strings order as ICU's root collation does in PostgreSQL ("und-x-icu"): case and
    accents are secondary, digits are not numbers, ties broken by code point."""
    backend, loop = store
    words = ["b", "A", "a", "B", "é", "e", "E", "f", "10", "9", "-", "ä", "Ä", "a b", "ab", "z"]
    docs = [
        {
            "id": f"urn:w:{n}",
            "type": [D + "T"],
            "createdAt": STAMPS[0],
            "modifiedAt": STAMPS[0],
            "attrs": {D + "name": [{"type": "Property", "value": w}]},
        }
        for n, w in enumerate(words)
    ]
    tenant = _write(backend, loop, docs)
    keys = parse_order_by("name", expand)
    got = [
        int(i.rsplit(":", 1)[1])
        for i in _ids(backend, loop, tenant, EntityQuery(order=keys, limit=100))
    ]
    assert [words[n] for n in got] == [
        "-",
        "10",
        "9",
        "a",
        "A",
        "ä",
        "Ä",
        "a b",
        "ab",
        "b",
        "B",
        "e",
        "E",
        "é",
        "f",
        "z",
    ]


def test_collations_are_postgresqls(store) -> None:
    """A collation asked for orders strings as ICU does in PostgreSQL: phonebook German reads
    ü as ue, numeric collation reads digits as numbers."""
    backend, loop = store
    words = ["Müller", "Muller", "Mueller", "Mxller", "a10", "a9", "A9"]
    docs = [
        {
            "id": f"urn:w:{n}",
            "type": [D + "T"],
            "createdAt": STAMPS[0],
            "modifiedAt": STAMPS[0],
            "attrs": {D + "name": [{"type": "Property", "value": w}]},
        }
        for n, w in enumerate(words)
    ]
    tenant = _write(backend, loop, docs)
    keys = parse_order_by("name", expand)

    def ordered(collation: str) -> list[str]:
        query = EntityQuery(order=keys, collation=collation, limit=100)
        return [words[int(i.rsplit(":", 1)[1])] for i in _ids(backend, loop, tenant, query)]

    assert ordered("de-u-co-phonebk")[3:] == ["Mueller", "Müller", "Muller", "Mxller"]
    assert ordered("und-u-kn")[:3] == ["a9", "A9", "a10"]
    assert ordered("en")[:3] == ["a10", "a9", "A9"]
