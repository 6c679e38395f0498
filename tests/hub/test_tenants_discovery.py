"""Tenants (§4.14, the NGSILD-Tenant header) and discovery (§6.25–§6.28)."""

from __future__ import annotations

from tests.conftest import DEFAULT, NGSI, problem_type
from tests.hub.helpers import entity, point


def test_tenants_are_isolated(client):
    porto = {"NGSILD-Tenant": "porto"}
    gaia = {"NGSILD-Tenant": "gaia"}
    assert (
        client.post(f"{NGSI}/entities", json=entity("urn:x:1", "T", a=1), headers=porto).status_code
        == 201
    )
    assert (
        client.post(f"{NGSI}/entities", json=entity("urn:x:1", "T", a=2), headers=gaia).status_code
        == 201
    )
    assert client.get(f"{NGSI}/entities/urn:x:1", headers=porto).json()["a"]["value"] == 1
    assert client.get(f"{NGSI}/entities/urn:x:1", headers=gaia).json()["a"]["value"] == 2
    assert client.get(f"{NGSI}/entities/urn:x:1").status_code == 404
    assert client.get(f"{NGSI}/entities?type=T").json() == []
    r = client.get(f"{NGSI}/entities/urn:x:1", headers={"NGSILD-Tenant": "matosinhos"})
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
    r = client.get(f"{NGSI}/entities?type=T", headers={"NGSILD-Tenant": "matosinhos"})
    assert r.status_code == 404
    assert client.delete(f"{NGSI}/entities/urn:x:1", headers=porto).status_code == 204
    assert client.get(f"{NGSI}/entities/urn:x:1", headers=gaia).status_code == 200


def test_types_and_attributes(client):
    client.post(
        f"{NGSI}/entityOperations/create",
        json=[
            entity("urn:x:1", "Sensor", temp=1, location=point(0, 0)),
            entity(
                "urn:x:2", "Sensor", temp=2, owner={"type": "Relationship", "object": "urn:p:1"}
            ),
            entity("urn:x:3", "Car", speed=3),
        ],
    )
    types = client.get(f"{NGSI}/types").json()
    assert types["type"] == "EntityTypeList" and types["id"].startswith(
        "urn:ngsi-ld:EntityTypeList:"
    )
    assert sorted(types["typeList"]) == ["Car", "Sensor"]
    detailed = {t["typeName"]: t for t in client.get(f"{NGSI}/types?details=true").json()}
    assert detailed["Sensor"]["id"] == DEFAULT + "Sensor"
    assert detailed["Sensor"]["type"] == "EntityType"
    assert detailed["Sensor"]["attributeNames"] == ["location", "owner", "temp"]
    info = client.get(f"{NGSI}/types/Sensor").json()
    assert info["type"] == "EntityTypeInfo" and info["entityCount"] == 2
    details = {a["attributeName"]: a for a in info["attributeDetails"]}
    assert details["owner"]["attributeTypes"] == ["Relationship"]
    assert details["location"]["attributeTypes"] == ["GeoProperty"]
    assert client.get(f"{NGSI}/types/Nothing").status_code == 404
    attrs = client.get(f"{NGSI}/attributes").json()
    assert attrs["type"] == "AttributeList"
    assert sorted(attrs["attributeList"]) == ["location", "owner", "speed", "temp"]
    temp = client.get(f"{NGSI}/attributes/temp").json()
    assert temp["type"] == "Attribute" and temp["attributeCount"] == 2
    assert temp["typeNames"] == ["Sensor"] and temp["attributeTypes"] == ["Property"]
    detailed_attrs = client.get(f"{NGSI}/attributes?details=true").json()
    assert {a["attributeName"] for a in detailed_attrs} == {"location", "owner", "speed", "temp"}
    # §5.7.9: the detailed list names attributes and their types, without counts.
    assert all(set(a) == {"id", "type", "attributeName", "typeNames"} for a in detailed_attrs)
    assert client.get(f"{NGSI}/attributes/nothing").status_code == 404
    assert client.get(f"{NGSI}/types?details=maybe").status_code == 400


def test_discovery_counts_follow_every_kind_of_change(client):
    """The counters (attr_stats) after deletes, replaces, multi-typed entities and datasetIds
    count what is stored, as a scan would."""
    client.post(
        f"{NGSI}/entityOperations/create",
        json=[
            entity("urn:x:1", "Sensor", temp=1, name="a"),
            entity(
                "urn:x:2",
                "Sensor",
                temp=[
                    {"type": "Property", "value": 2},
                    {"type": "Property", "value": 3, "datasetId": "urn:d:1"},
                ],
            ),
            {"id": "urn:x:3", "type": ["Sensor", "Car"], "speed": {"type": "Property", "value": 1}},
        ],
    )

    def attr(name):
        r = client.get(f"{NGSI}/attributes/{name}")
        return r.json() if r.status_code == 200 else None

    def type_info(name):
        r = client.get(f"{NGSI}/types/{name}")
        return r.json() if r.status_code == 200 else None

    assert attr("temp")["attributeCount"] == 3
    assert type_info("Sensor")["entityCount"] == 3 and type_info("Car")["entityCount"] == 1
    assert attr("speed")["typeNames"] == ["Car", "Sensor"]
    assert client.delete(f"{NGSI}/entities/urn:x:2/attrs/temp?datasetId=urn:d:1").status_code == 204
    assert attr("temp")["attributeCount"] == 2
    assert client.delete(f"{NGSI}/entities/urn:x:1/attrs/name").status_code == 204
    assert attr("name") is None
    r = client.put(f"{NGSI}/entities/urn:x:3", json={"type": "Car", "speed": 2})
    assert r.status_code == 204, r.text
    assert type_info("Sensor")["entityCount"] == 2 and attr("speed")["typeNames"] == ["Car"]
    assert client.delete(f"{NGSI}/entities/urn:x:3").status_code == 204
    assert type_info("Car") is None and attr("speed") is None
    assert sorted(client.get(f"{NGSI}/types").json()["typeList"]) == ["Sensor"]
    client.delete(f"{NGSI}/entities/urn:x:1")
    client.delete(f"{NGSI}/entities/urn:x:2")
    r = client.get(f"{NGSI}/types")
    assert r.status_code == 200 and r.json()["typeList"] == []
    r = client.get(f"{NGSI}/attributes?details=true")
    assert r.status_code == 200 and r.json() == []
