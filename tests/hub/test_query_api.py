"""§6.4.3.2 Query Entities over HTTP: ids, patterns, type expressions, q, geo, pages, counts."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.conftest import NGSI, problem_type
from tests.hub.helpers import entity, point


@pytest.fixture
def city(client):
    body = [
        entity(
            "urn:ngsi-ld:Sensor:1",
            "Sensor",
            temp=10,
            name="aliados",
            location=point(-8.6109, 41.1496),
        ),
        entity(
            "urn:ngsi-ld:Sensor:2",
            "Sensor",
            temp=25,
            name="boavista",
            location=point(-8.6291, 41.1579),
        ),
        entity(
            "urn:ngsi-ld:Sensor:3",
            "Sensor",
            temp=30,
            name="campanha",
            location=point(-8.5855, 41.1487),
        ),
        entity("urn:ngsi-ld:Car:1", "Car", speed=50, location=point(-8.6110, 41.1497)),
        {
            "id": "urn:ngsi-ld:Hybrid:1",
            "type": ["Sensor", "Car"],
            "temp": {"type": "Property", "value": 5},
        },
    ]
    r = client.post(f"{NGSI}/entityOperations/create", json=body)
    assert r.status_code == 201
    return client


def q(client, query: str, **params):
    extra = urllib.parse.urlencode(params)
    return client.get(f"{NGSI}/entities?{query}" + (f"&{extra}" if extra else ""))


def found(r):
    assert r.status_code == 200, r.text
    return sorted(e["id"] for e in r.json())


def test_query_needs_a_filter(city):
    r = q(city, "")
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    assert len(found(q(city, "local=true"))) == 5


def test_type_expressions(city):
    assert found(q(city, "type=Car")) == ["urn:ngsi-ld:Car:1", "urn:ngsi-ld:Hybrid:1"]
    assert found(q(city, "type=Sensor;Car")) == ["urn:ngsi-ld:Hybrid:1"]
    assert len(found(q(city, "type=Sensor,Car"))) == 5
    assert len(found(q(city, "type=(Sensor|Car)"))) == 5
    assert found(q(city, "type=(Sensor;Car)|Nothing")) == ["urn:ngsi-ld:Hybrid:1"]
    assert q(city, "type=(Sensor").status_code == 400


def near(client, lon: float, lat: float):
    return found(
        q(
            client,
            "type=Sensor,Car",
            georel="near;maxDistance==100",
            geometry="Point",
            coordinates=f"[{lon},{lat}]",
        )
    )


def test_indexes_follow_updates_that_keep_or_change_types_and_places(city):
    sensor = "urn:ngsi-ld:Sensor:2"
    # A change of value only: the type and the place found it before and still do.
    r = city.patch(
        f"{NGSI}/entities/{sensor}/attrs", json={"temp": {"type": "Property", "value": 7}}
    )
    assert r.status_code == 204, r.text
    assert sensor in found(q(city, "type=Sensor", q="temp==7"))
    assert near(city, -8.6291, 41.1579) == [sensor]
    # Moved: found at the new place only.
    moved = {"location": {"type": "GeoProperty", "value": point(-8.5855, 41.1487)["value"]}}
    assert city.patch(f"{NGSI}/entities/{sensor}/attrs", json=moved).status_code == 204
    assert near(city, -8.6291, 41.1579) == []
    assert near(city, -8.5855, 41.1487) == [sensor, "urn:ngsi-ld:Sensor:3"]
    # A type added by an upsert: found by either type, and still in its place.
    r = city.post(
        f"{NGSI}/entityOperations/upsert",
        params={"options": "update"},
        json=[{"id": sensor, "type": "Car", "speed": {"type": "Property", "value": 3}}],
    )
    assert r.status_code == 204, r.text
    assert sensor in found(q(city, "type=Car")) and sensor in found(q(city, "type=Sensor"))
    assert near(city, -8.5855, 41.1487) == [sensor, "urn:ngsi-ld:Sensor:3"]
    # Its place deleted: no longer near anything.
    assert city.delete(f"{NGSI}/entities/{sensor}/attrs/location").status_code == 204
    assert near(city, -8.5855, 41.1487) == ["urn:ngsi-ld:Sensor:3"]


def test_ids_and_pattern(city):
    assert found(q(city, "id=urn:ngsi-ld:Sensor:1,urn:ngsi-ld:Car:1&local=true")) == [
        "urn:ngsi-ld:Car:1",
        "urn:ngsi-ld:Sensor:1",
    ]
    assert found(q(city, "type=Sensor&idPattern=.*Sensor:[12]$")) == [
        "urn:ngsi-ld:Sensor:1",
        "urn:ngsi-ld:Sensor:2",
    ]
    assert q(city, "type=Sensor&idPattern=[").status_code == 400


def test_ids_alone_are_not_a_query(city):
    """§5.7.2.4: a query needs types, attrs, q, a geo-query or local=true; ids or an id
    pattern alone are 400, on GET and POST alike."""
    for query in ("id=urn:ngsi-ld:Sensor:1", "idPattern=.*"):
        r = q(city, query)
        assert r.status_code == 400 and problem_type(r) == "BadRequestData", query
    body = {"type": "Query", "entities": [{"id": "urn:ngsi-ld:Sensor:1", "type": "Sensor"}]}
    assert city.post(f"{NGSI}/entityOperations/query", json=body).status_code == 200
    r = city.post(f"{NGSI}/entityOperations/query", json={"type": "Query"})
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    r = city.post(f"{NGSI}/entityOperations/query?local=true", json={"type": "Query"})
    assert r.status_code == 200 and len(r.json()) == 5


def test_attrs_name_attributes_only(city):
    """id and type are entity members, not attributes: attrs naming them is 400."""
    for attrs in ("id,type", "type", "id"):
        r = q(city, f"attrs={attrs}")
        assert r.status_code == 400 and problem_type(r) == "BadRequestData", attrs


def test_q_language(city):
    assert found(q(city, "type=Sensor", q="temp>20")) == [
        "urn:ngsi-ld:Sensor:2",
        "urn:ngsi-ld:Sensor:3",
    ]
    assert found(q(city, "type=Sensor", q="temp==5..10")) == [
        "urn:ngsi-ld:Hybrid:1",
        "urn:ngsi-ld:Sensor:1",
    ]
    assert found(q(city, "type=Sensor", q='name=="aliados"|temp==30')) == [
        "urn:ngsi-ld:Sensor:1",
        "urn:ngsi-ld:Sensor:3",
    ]
    assert found(q(city, "type=Sensor", q="!name")) == ["urn:ngsi-ld:Hybrid:1"]
    assert found(q(city, "type=Sensor", q='name~="^camp"')) == ["urn:ngsi-ld:Sensor:3"]
    r = q(city, "type=Sensor", q="temp>>2")
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"


def test_attrs_filters_entities(city):
    assert found(q(city, "attrs=speed")) == ["urn:ngsi-ld:Car:1"]
    body = q(city, "attrs=speed").json()[0]
    assert set(body) == {"id", "type", "speed"}


def test_geo_near_within(city):
    near = q(
        city,
        "type=Sensor,Car",
        georel="near;maxDistance==100",
        geometry="Point",
        coordinates="[-8.6109,41.1496]",
    )
    assert found(near) == ["urn:ngsi-ld:Car:1", "urn:ngsi-ld:Sensor:1"]
    box = [[[-8.64, 41.14], [-8.60, 41.14], [-8.60, 41.17], [-8.64, 41.17], [-8.64, 41.14]]]
    within = q(
        city,
        "type=Sensor",
        georel="within",
        geometry="Polygon",
        coordinates=str(box).replace(" ", ""),
    )
    assert found(within) == ["urn:ngsi-ld:Sensor:1", "urn:ngsi-ld:Sensor:2"]
    bad = q(city, "type=Sensor", georel="within", geometry="Polygon", coordinates="[[1,2]")
    assert bad.status_code == 400


def test_polygons_whose_rings_cross_themselves(client):
    """A GeoProperty polygon whose ring crosses itself is stored (RFC 7946 asks no more than
    closed rings) and geo-queries relate it on both stores."""
    ring = [[13.2865906, 52.5648645], [13.2879639, 52.5648645], [13.2797241, 52.4988679]]
    ring += [[13.477478, 52.4712703], [13.5049438, 52.5373084], [13.2865906, 52.5648645]]
    area = {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [ring]}}
    r = client.post(f"{NGSI}/entities", json=entity("urn:ngsi-ld:Zone:1", "Zone", location=area))
    assert r.status_code == 201, r.text

    def count(georel, geometry, coordinates):
        r = q(client, "type=Zone", georel=georel, geometry=geometry, coordinates=coordinates)
        assert r.status_code == 200, r.text
        return len(r.json())

    assert count("equals", "Polygon", str([ring]).replace(" ", "")) == 1
    assert count("intersects", "Point", "[13.4,52.52]") == 1
    assert count("disjoint", "Point", "[13.0,52.0]") == 1
    assert count("near;maxDistance==1000", "Point", "[13.0,52.0]") == 0


def test_pagination_and_count(city):
    r = q(city, "type=Sensor,Car", limit=2, offset=0, count="true")
    assert r.headers["ngsild-results-count"] == "5"
    first = [e["id"] for e in r.json()]
    second = [e["id"] for e in q(city, "type=Sensor,Car", limit=2, offset=2).json()]
    third = [e["id"] for e in q(city, "type=Sensor,Car", limit=2, offset=4).json()]
    assert len(first) == 2 and len(second) == 2 and len(third) == 1
    assert len(set(first + second + third)) == 5
    r = q(city, "type=Sensor", limit=0, count="true")
    assert r.json() == [] and r.headers["ngsild-results-count"] == "4"
    assert q(city, "type=Sensor", limit=5000).status_code == 403
    assert problem_type(q(city, "type=Sensor", limit=5000)) == "TooManyResults"
    assert q(city, "type=Sensor", limit=-1).status_code == 400
    assert q(city, "type=Sensor", limit="x").status_code == 400


def test_geojson_feature_collection(city):
    r = city.get(f"{NGSI}/entities?type=Car", headers={"Accept": "application/geo+json"})
    assert r.headers["content-type"] == "application/geo+json"
    fc = r.json()
    assert fc["type"] == "FeatureCollection"
    assert {f["id"] for f in fc["features"]} == {"urn:ngsi-ld:Car:1", "urn:ngsi-ld:Hybrid:1"}


def test_query_key_values(city):
    r = city.get(f"{NGSI}/entities?type=Car&id=urn:ngsi-ld:Car:1&options=keyValues")
    assert r.json() == [
        {
            "id": "urn:ngsi-ld:Car:1",
            "type": "Car",
            "speed": 50,
            "location": {"type": "Point", "coordinates": [-8.611, 41.1497]},
        }
    ]


def test_q_is_url_decoded(city):
    text = urllib.parse.quote('name=="boavista"')
    assert found(city.get(f"{NGSI}/entities?type=Sensor&q={text}")) == ["urn:ngsi-ld:Sensor:2"]


def test_unsupported_parameters_are_501(city):
    for param in ("csf=x", "expandValues=a"):
        r = city.get(f"{NGSI}/entities?type=Sensor&{param}")
        assert r.status_code == 501, param
        assert problem_type(r) == "NotImplemented"
    r = city.get(f"{NGSI}/entities/urn:ngsi-ld:Sensor:1?entityMap=true")
    assert r.status_code == 501


def test_plus_in_query_is_a_plus(client):
    body = entity(
        "urn:ngsi-ld:S:1",
        "S",
        t={"type": "Property", "value": 1, "observedAt": "2026-01-01T10:00:00Z"},
    )
    client.post(f"{NGSI}/entities", json=body)
    # 09:30+01:00 is 08:30Z, before the observation; a '+' read as a space would be a 400.
    r = client.get(f"{NGSI}/entities?type=S&q=t.observedAt>2026-01-01T09:30:00+01:00")
    assert r.status_code == 200, r.text
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:S:1"]
    r = client.get(f"{NGSI}/entities?type=S&q=t.observedAt>2026-01-01T11:30:00+01:00")
    assert r.json() == []


def test_plus_in_query_is_a_space_as_form_encoders_write_it(city):
    """Python's requests, URLSearchParams and URLEncoder write a space as '+' (and a plus sign as
    %2B): a name with a space and coordinates after ', ' must arrive as they were meant."""
    city.post(f"{NGSI}/entities", json=entity("urn:ngsi-ld:Sensor:9", "Sensor", name="Rua Nova"))
    r = city.get(f"{NGSI}/entities?type=Sensor&q=name%3D%3D%22Rua+Nova%22")
    assert found(r) == ["urn:ngsi-ld:Sensor:9"]
    r = city.get(
        f"{NGSI}/entities?type=Sensor&georel=near%3BmaxDistance%3D%3D10"
        "&geometry=Point&coordinates=%5B-8.6109%2C+41.1496%5D"
    )
    assert found(r) == ["urn:ngsi-ld:Sensor:1"]
    r = city.get(f"{NGSI}/entities?type=Sensor&q=name%3D%3D%22Rua%2BNova%22")
    assert found(r) == []


def test_scope_q(city):
    """§4.19 scopeQ on GET and POST, alone, with q and with a geo-query (evaluated in memory on
    SQLite's geo path)."""
    scoped = [
        {"id": "urn:ngsi-ld:Sensor:1", "scope": "/Porto/Baixa/Aliados"},
        {"id": "urn:ngsi-ld:Sensor:2", "scope": ["/Porto/Boavista", "/CompanyA/Unit1"]},
    ]
    for item in scoped:
        r = city.patch(f"{NGSI}/entities/{item['id']}", json={"scope": item["scope"]})
        assert r.status_code == 204, r.text
    sensors = ["urn:ngsi-ld:Sensor:1", "urn:ngsi-ld:Sensor:2"]
    assert found(q(city, "type=Sensor", scopeQ="/Porto/#")) == sensors
    assert found(q(city, "type=Sensor", scopeQ="/Porto/+")) == ["urn:ngsi-ld:Sensor:2"]
    assert found(q(city, "type=Sensor", scopeQ="/Porto/Boavista;/CompanyA/#")) == sensors[1:]
    assert found(q(city, "type=Sensor", scopeQ="/Porto/Baixa/Aliados,/CompanyA/Unit1")) == sensors
    assert found(q(city, "type=Sensor", scopeQ="/#", q="temp>20")) == sensors[1:]
    near = q(
        city,
        "type=Sensor",
        scopeQ="/Porto/Baixa/#",
        georel="near;maxDistance==100000",
        geometry="Point",
        coordinates="[-8.6109,41.1496]",
    )
    assert found(near) == sensors[:1]
    body = {"type": "Query", "entities": [{"type": "Sensor"}], "scopeQ": "/CompanyA/#"}
    r = city.post(f"{NGSI}/entityOperations/query", json=body)
    assert [e["id"] for e in r.json()] == sensors[1:]
    r = q(city, "type=Sensor", scopeQ="Porto")
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"


def test_invalid_id_pattern_is_400_on_every_store(city):
    r = city.get(f"{NGSI}/entities?type=Sensor&idPattern=(?P<x>a)(?P=x")
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
