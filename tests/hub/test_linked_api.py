"""§4.5.23 linked entity retrieval: join=flat|inline, joinLevel, with pick/omit (§4.21) reaching
into linked entities, on Retrieve Entity, Query Entities and POST /entityOperations/query."""

from __future__ import annotations

import asyncio

import pytest

from cidade.hub.jsonld import ContextResolver
from cidade.hub.linked import Join, join_linked, parse_join
from cidade.hub.model import View, normalize_entity
from cidade.ngsild.errors import BadRequestData
from tests.conftest import NGSI, problem_type

B = "urn:ngsi-ld:Building:1"
B2 = "urn:ngsi-ld:Building:2"
PARIS = "urn:ngsi-ld:City:Paris"
FRANCE = "urn:ngsi-ld:Country:France"


def rel(target):
    return {"type": "Relationship", "object": target}


def prop(value):
    return {"type": "Property", "value": value}


@pytest.fixture
def world(client):
    body = [
        {"id": B, "type": "Building", "name": prop("Eiffel"), "locatedAt": rel(PARIS)},
        {"id": B2, "type": "Building", "name": prop("Louvre"), "locatedAt": rel(PARIS)},
        {
            "id": PARIS,
            "type": "City",
            "name": prop("Paris"),
            "description": prop("capital"),
            "isInCountry": rel(FRANCE),
        },
        {"id": FRANCE, "type": "Country", "name": prop("France"), "description": prop("EU")},
    ]
    assert client.post(f"{NGSI}/entityOperations/create", json=body).status_code == 201
    return client


def get(client, url, **params):
    r = client.get(url, params=params)
    assert r.status_code == 200, r.text
    return r.json()


CITY = {
    "id": PARIS,
    "type": "City",
    "name": prop("Paris"),
    "description": prop("capital"),
    "isInCountry": rel(FRANCE),
}


def test_retrieve_inline_and_flat_one_level(world):
    body = get(world, f"{NGSI}/entities/{B}", join="inline")
    assert body["locatedAt"] == {**rel(PARIS), "entity": CITY}
    body = get(world, f"{NGSI}/entities/{B}", join="flat", joinLevel="1")
    assert body == [
        {"id": B, "type": "Building", "name": prop("Eiffel"), "locatedAt": rel(PARIS)},
        CITY,
    ]
    simple = get(world, f"{NGSI}/entities/{B}", join="inline", format="keyValues")
    assert simple["locatedAt"] == {
        "id": PARIS,
        "type": "City",
        "name": "Paris",
        "description": "capital",
        "isInCountry": FRANCE,
    }
    flat = get(world, f"{NGSI}/entities/{B}", join="flat", options="keyValues")
    assert flat[0]["locatedAt"] == PARIS and flat[1]["isInCountry"] == FRANCE


def test_retrieve_two_levels_with_pick_and_omit(world):
    body = get(world, f"{NGSI}/entities/{B}", join="inline", joinLevel="2")
    country = body["locatedAt"]["entity"]["isInCountry"]["entity"]
    assert country == {
        "id": FRANCE,
        "type": "Country",
        "name": prop("France"),
        **{"description": prop("EU")},
    }
    body = get(
        world,
        f"{NGSI}/entities/{B}",
        join="inline",
        joinLevel="2",
        pick="id,locatedAt{id,name,isInCountry{id,description}}",
    )
    assert body == {
        "id": B,
        "locatedAt": {
            **rel(PARIS),
            "entity": {
                "id": PARIS,
                "name": prop("Paris"),
                "isInCountry": {
                    **rel(FRANCE),
                    "entity": {"id": FRANCE, "description": prop("EU")},
                },
            },
        },
    }
    # A relationship that pick leaves out is not followed.
    flat = get(
        world, f"{NGSI}/entities/{B}", join="flat", joinLevel="2", pick="id,locatedAt{id,name}"
    )
    assert flat == [{"id": B, "locatedAt": rel(PARIS)}, {"id": PARIS, "name": prop("Paris")}]
    flat = get(
        world,
        f"{NGSI}/entities/{B}",
        join="flat",
        joinLevel="2",
        omit="type,locatedAt{name,isInCountry{description}}",
    )
    assert flat == [
        {"id": B, "name": prop("Eiffel"), "locatedAt": rel(PARIS)},
        {k: v for k, v in CITY.items() if k != "name"},
        {"id": FRANCE, "type": "Country", "name": prop("France")},
    ]


def test_missing_linked_entity_and_sys_attrs(world):
    world.delete(f"{NGSI}/entities/{PARIS}")
    for join in ("inline", "flat"):
        body = get(world, f"{NGSI}/entities/{B}", join=join)
        assert body == {
            "id": B,
            "type": "Building",
            "name": prop("Eiffel"),
            "locatedAt": rel(PARIS),
        }
    body = get(world, f"{NGSI}/entities/{B2}", join="inline", options="sysAttrs")
    assert "entity" not in body["locatedAt"]
    world.post(f"{NGSI}/entities", json={"id": PARIS, "type": "City"})
    body = get(world, f"{NGSI}/entities/{B2}", join="inline", options="sysAttrs")
    assert {"createdAt", "modifiedAt"} <= set(body["locatedAt"]["entity"])


def test_query_flat_lists_each_linked_entity_once(world):
    found = get(world, f"{NGSI}/entities", type="Building", join="flat")
    assert [e["id"] for e in found] == [B, B2, PARIS]
    found = get(world, f"{NGSI}/entities", type="Building", join="flat", joinLevel="2")
    assert [e["id"] for e in found] == [B, B2, PARIS, FRANCE]
    found = get(world, f"{NGSI}/entities", type="Building,City", join="flat")
    assert [e["id"] for e in found] == [B, B2, PARIS, FRANCE]  # Paris is in the result already
    inline = get(
        world, f"{NGSI}/entities", type="Building", join="inline", pick="id,locatedAt{name}"
    )
    assert inline == [
        {"id": i, "locatedAt": {**rel(PARIS), "entity": {"name": prop("Paris")}}} for i in (B, B2)
    ]


def test_query_via_post_takes_join_in_the_body(world):
    body = {"type": "Query", "entities": [{"type": "Building"}], "join": "inline"}
    r = world.post(f"{NGSI}/entityOperations/query", json=body)
    assert r.status_code == 200, r.text
    assert [e["locatedAt"]["entity"]["id"] for e in r.json()] == [PARIS, PARIS]
    body = {**body, "join": "flat", "joinLevel": 2, "pick": "id,locatedAt{id,isInCountry}"}
    r = world.post(f"{NGSI}/entityOperations/query", json=body)
    assert r.json() == [
        {"id": B, "locatedAt": rel(PARIS)},
        {"id": B2, "locatedAt": rel(PARIS)},
        {"id": PARIS, "isInCountry": rel(FRANCE)},
        {**{"id": FRANCE, "type": "Country"}, "name": prop("France"), "description": prop("EU")},
    ]


@pytest.mark.parametrize(
    "params", ["join=sideways", "joinLevel=2", "join=flat&joinLevel=0", "join=flat&joinLevel=x"]
)
def test_bad_join_parameters_are_400(world, params):
    for url in (f"{NGSI}/entities/{B}?{params}", f"{NGSI}/entities?type=Building&{params}"):
        r = world.get(url)
        assert r.status_code == 400 and problem_type(r) == "BadRequestData", url


class CountingReader:
    """A store that counts its reads: linked entities must come one read per level."""

    def __init__(self, entities):
        self.entities = {e["id"]: e for e in entities}
        self.reads: list[list[str]] = []

    async def get_entities(self, tenant, ids):
        self.reads.append(list(ids))
        return [self.entities[i] for i in ids if i in self.entities]


def test_one_batched_read_per_level():
    terms = ContextResolver().core
    now = "2026-01-01T00:00:00.000000Z"
    cities = [f"urn:ngsi-ld:City:{n}" for n in range(30)]
    docs = (
        [
            normalize_entity(
                {"id": f"urn:ngsi-ld:B:{n}", "type": "B", "in": rel(cities[n])}, terms, now
            )
            for n in range(30)
        ]
        + [
            normalize_entity({"id": c, "type": "City", "in": rel(FRANCE)}, terms, now)
            for c in cities
        ]
        + [normalize_entity({"id": FRANCE, "type": "Country"}, terms, now)]
    )
    reader = CountingReader(docs)
    joined = asyncio.run(
        join_linked(reader, "", docs[:30], View(terms), Join("flat", 3), lambda e: True)
    )
    assert len(reader.reads) == 2  # cities, then France; level 3 finds no new link
    assert [e["id"] for e in joined.linked] == [*cities, FRANCE]
    hidden = asyncio.run(
        join_linked(reader, "", docs[:1], View(terms), Join("inline", 1), lambda e: False)
    )
    assert "entity" not in hidden.items[0]["in"]


def test_parse_join():
    assert parse_join(None, None) is None and parse_join("@none", None) is None
    assert parse_join("flat", "3") == Join("flat", 3) and parse_join("inline", 2).level == 2
    for join, level in (("x", None), (None, "1"), ("flat", "0"), ("flat", True), ("flat", "99")):
        with pytest.raises(BadRequestData):
            parse_join(join, level)
