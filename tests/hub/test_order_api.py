"""orderBy over HTTP (§4.23, §6.4.3.2, §6.23 Query's ordering, §6.18.3.2): Query Entities and
Query Temporal Evolution of Entities, by GET and by POST, order and page through the ordered
result on both stores; a malformed orderBy is 400 BadRequestData and what is not supported
(order by distance, collation) 501."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.conftest import NGSI, problem_type
from tests.hub.helpers import point

BASE = "urn:ngsi-ld:Building:"


def building(n: int, name: str | None, height: float | None, **extra: object) -> dict:
    body: dict = {"id": f"{BASE}{n}", "type": "Building", **extra}
    if name is not None:
        body["name"] = {
            "type": "Property",
            "value": name,
            "rank": {"type": "Property", "value": 10 - n},
        }
    if height is not None:
        body["height"] = {"type": "Property", "value": height}
    return body


@pytest.fixture
def city(client):
    # Created in this order: creation order (the tie-breaker and createdAt) is 2, 1, 3, 4, 5.
    bodies = [
        building(2, "Boavista", 30, location=point(-8.62, 41.15)),
        building(1, "aliados", 30, location=point(-8.61, 41.14)),
        building(3, "Campanhã", 12.5, location=point(-8.58, 41.14)),
        building(4, None, 7, location=point(-8.6, 41.1)),
        building(5, "Álvares", None, location=point(-8.6, 41.1)),
    ]
    for body in bodies:
        r = client.post(f"{NGSI}/entities", json=body)
        assert r.status_code == 201, r.text
    return client


def ids(r) -> list[int]:
    assert r.status_code == 200, r.text
    return [int(e["id"].removeprefix(BASE)) for e in r.json()]


def get(client, order: str, path: str = "entities", **params):
    query = urllib.parse.urlencode({"type": "Building", "orderBy": order, **params})
    return client.get(f"{NGSI}/{path}?{query}")


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("id", [1, 2, 3, 4, 5]),
        ("id;desc", [5, 4, 3, 2, 1]),
        ("createdAt", [2, 1, 3, 4, 5]),
        ("createdAt;desc", [5, 4, 3, 1, 2]),
        # ICU root collation: case and accents second; no name last, in both directions
        ("name", [1, 5, 2, 3, 4]),
        ("name;asc", [1, 5, 2, 3, 4]),
        ("name;desc", [3, 2, 5, 1, 4]),
        ("name.rank", [5, 3, 2, 1, 4]),
        ("name.createdAt;desc", [5, 3, 1, 2, 4]),
        # equal heights keep creation order; then the next key
        ("height", [4, 3, 2, 1, 5]),
        ("height;desc,id", [1, 2, 3, 4, 5]),
        ("height;desc,id;desc", [2, 1, 3, 4, 5]),
        ("type,height,name;desc", [4, 3, 2, 1, 5]),
    ],
)
def test_query_entities_in_order(city, order: str, expected: list[int]) -> None:
    assert ids(get(city, order)) == expected
    # A Query body's ordering (§5.2.43) orders the same way, as a list or as one string.
    body = {"type": "Query", "entities": [{"type": "Building"}], "ordering": {"orderBy": [order]}}
    assert ids(city.post(f"{NGSI}/entityOperations/query", json=body)) == expected
    body["ordering"] = {"orderBy": order.split(",")}
    assert ids(city.post(f"{NGSI}/entityOperations/query", json=body)) == expected


def test_pages_go_through_the_ordered_result(city) -> None:
    pages = [ids(get(city, "name;desc", limit=2, offset=o, count="true")) for o in (0, 2, 4)]
    assert pages == [[3, 2], [5, 1], [4]]
    r = get(city, "name;desc", limit=2, offset=2, count="true")
    assert r.headers["NGSILD-Results-Count"] == "5"


def test_geo_query_in_order(city) -> None:
    r = get(
        city,
        "name",
        georel="within",
        geometry="Polygon",
        coordinates="[[[-9,41],[-8,41],[-8,42],[-9,42],[-9,41]]]",
        limit=2,
        offset=1,
    )
    assert ids(r) == [5, 2]


def test_temporal_query_in_order(city) -> None:
    params = {"timerel": "after", "timeAt": "1970-01-01T00:00:00Z", "timeproperty": "createdAt"}
    assert ids(get(city, "height;desc,id", "temporal/entities", **params)) == [1, 2, 3, 4, 5]
    assert ids(get(city, "name", "temporal/entities", limit=2, offset=2, **params)) == [2, 3]
    body = {
        "type": "Query",
        "entities": [{"type": "Building"}],
        "temporalQ": {"timerel": "after", "timeAt": "1970-01-01T00:00:00Z"},
        "ordering": {"orderBy": ["id;desc"]},
    }
    assert ids(city.post(f"{NGSI}/temporal/entityOperations/query", json=body)) == [5, 4, 3, 2, 1]


@pytest.mark.parametrize(
    "order",
    [
        "",
        ",",
        "name,",
        "name;",
        "name;up",
        "name;ASC",
        "name;asc;desc",
        "na me",
        "name[",
        "1x",
        "name..a",
    ],
)
def test_malformed_order_by_is_400(city, order: str) -> None:
    for path in ("entities", "temporal/entities"):
        r = get(city, order, path)
        assert r.status_code == 400, (path, order, r.text)
        assert problem_type(r) == "BadRequestData"


@pytest.mark.parametrize(
    "ordering",
    ["name", {"orderBy": []}, {"orderBy": [1]}, {"orderBy": "name;up"}, {}, {"orderBy": None}],
)
def test_malformed_ordering_is_400(city, ordering: object) -> None:
    body = {"type": "Query", "entities": [{"type": "Building"}], "ordering": ordering}
    r = city.post(f"{NGSI}/entityOperations/query", json=body)
    assert r.status_code == 400, r.text
    assert problem_type(r) == "BadRequestData"


def test_collation(city) -> None:
    """§4.23.3: strings by the ICU collation asked for (RFC 6067 tags)."""
    for n, label in ((6, "Bloco 10"), (7, "Bloco 9")):
        assert city.post(f"{NGSI}/entities", json=building(n, label, None)).status_code == 201
    assert ids(get(city, "name", q="name~=Bloco"))[:2] == [6, 7]  # root: '1' before '9'
    assert ids(get(city, "name", q="name~=Bloco", collation="und-u-kn")) == [7, 6]
    assert ids(get(city, "name;desc", collation="und-u-kn")) == [3, 2, 6, 7, 5, 1, 4]
    body = {
        "type": "Query",
        "entities": [{"type": "Building"}],
        "q": "name~=Bloco",
        "ordering": {"orderBy": ["name"], "collation": "und-u-kn"},
    }
    assert ids(city.post(f"{NGSI}/entityOperations/query", json=body)) == [7, 6]
    params = {"timerel": "after", "timeAt": "1970-01-01T00:00:00Z", "timeproperty": "createdAt"}
    r = get(city, "name", "temporal/entities", q="name~=Bloco", collation="und-u-kn", **params)
    assert ids(r) == [7, 6]


@pytest.mark.parametrize("collation", ["", "de_DE", "a", "de-", "-de", "de u", "123", "x" * 101])
def test_malformed_collation_is_400(city, collation: str) -> None:
    r = get(city, "name", collation=collation)
    assert r.status_code == 400, r.text
    assert problem_type(r) == "BadRequestData"
    body = {
        "type": "Query",
        "entities": [{"type": "Building"}],
        "ordering": {"orderBy": ["name"], "collation": collation},
    }
    r = city.post(f"{NGSI}/entityOperations/query", json=body)
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"


def test_distance_is_not_implemented(city) -> None:
    for extra in ({}, {"orderFrom": "[8,40]"}):
        r = get(city, "location;dist-asc", **extra)
        assert r.status_code == 501, r.text
        assert problem_type(r) == "NotImplemented"
    assert get(city, "name", orderFrom="[8,40]").status_code == 501
    body = {
        "type": "Query",
        "entities": [{"type": "Building"}],
        "ordering": {"orderBy": ["location;dist-desc"], "coordinates": [8, 40]},
    }
    assert city.post(f"{NGSI}/entityOperations/query", json=body).status_code == 501


def test_order_with_filters(city) -> None:
    """The filters' parameters and the order's SQL go together (q, scopeQ, attrs, ids)."""
    city.patch(f"{NGSI}/entities/{BASE}1", json={"scope": "/Porto/Baixa"})
    city.patch(f"{NGSI}/entities/{BASE}3", json={"scope": "/Porto/Campanha"})
    city.patch(f"{NGSI}/entities/{BASE}4", json={"scope": "/Lisboa"})
    assert ids(get(city, "name;desc", q="height>10", scopeQ="/Porto/#")) == [3, 1]
    assert ids(get(city, "scope;desc,id", attrs="height")) == [3, 1, 4, 2]
    r = get(city, "height", id=f"{BASE}5,{BASE}4,{BASE}2", q="height<100|name", count="true")
    assert ids(r) == [4, 2, 5] and r.headers["NGSILD-Results-Count"] == "3"
