"""The IoT Agent's provisioning API (/iot/services, /iot/devices) through HTTP, on both stores."""

from __future__ import annotations

from typing import Any

import pytest

CITY = {"Fiware-Service": "city", "Fiware-ServicePath": "/lights"}
OTHER = {"Fiware-Service": "other"}


def group(apikey: str = "k1", **more: Any) -> dict[str, Any]:
    return {
        "apikey": apikey,
        "entity_type": "Streetlight",
        "attributes": [{"object_id": "l", "name": "luminosity", "type": "Number"}],
        **more,
    }


def agent_error(response: Any, status: int, name: str) -> None:
    """An error in the IoT agent's own envelope, not ProblemDetails."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"name", "message"}, body
    assert body["name"] == name, body
    assert body["message"]


def services(client: Any, headers: dict[str, str] = CITY, **params: Any) -> dict[str, Any]:
    response = client.get("/iot/services", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def devices(client: Any, headers: dict[str, str] = CITY, **params: Any) -> dict[str, Any]:
    response = client.get("/iot/devices", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


# -- service groups ----------------------------------------------------------------------------


def test_create_and_list_groups(client):
    body = {
        "services": [
            group(
                "k1",
                cbroker="http://orion:1026",
                token="secret",
                lazy=[{"name": "status", "type": "Boolean"}],
                static_attributes=[{"name": "district", "type": "Text", "value": "Baixa"}],
                commands=[{"name": "switch", "type": "command"}],
                explicitAttrs=True,
                timezone="Europe/Lisbon",
                somethingElse={"the agent": "drops it"},
            ),
            {"apikey": "k2", "resource": "/iot/d"},
        ]
    }
    response = client.post("/iot/services", headers=CITY, json=body)
    assert response.status_code == 201, response.text
    assert response.json() == {}
    listed = services(client)
    assert listed["count"] == 2
    first, second = listed["services"]
    assert first == {
        "apikey": "k1",
        "resource": "/iot/json",  # the default
        "entity_type": "Streetlight",
        "attributes": [{"object_id": "l", "name": "luminosity", "type": "Number"}],
        "static_attributes": [{"name": "district", "type": "Text", "value": "Baixa"}],
        "commands": [{"name": "switch", "type": "command"}],
        "explicitAttrs": True,
        "timezone": "Europe/Lisbon",
        "autoprovision": True,
        "service": "city",
        "subservice": "/lights",
    }
    assert second == {
        "apikey": "k2",
        "resource": "/iot/d",
        "autoprovision": True,
        "service": "city",
        "subservice": "/lights",
    }
    # filters and pages
    assert [g["apikey"] for g in services(client, apikey="k2")["services"]] == ["k2"]
    assert services(client, resource="/iot/json")["count"] == 1
    assert services(client, resource="/iot/json", apikey="k2")["count"] == 0
    page = services(client, limit=1, offset=1)
    assert page["count"] == 2 and [g["apikey"] for g in page["services"]] == ["k2"]
    assert services(client, apikey="bad key/")["count"] == 0
    # NGSILD-Tenant names the same tenant
    assert services(client, headers={"NGSILD-Tenant": "city"})["count"] == 2


def test_duplicate_groups_are_refused_whole(client):
    assert (
        client.post("/iot/services", headers=CITY, json={"services": [group("k1")]}).status_code
        == 201
    )
    # one new, one taken: nothing is written
    response = client.post(
        "/iot/services", headers=CITY, json={"services": [group("k2"), group("k1")]}
    )
    agent_error(response, 409, "DUPLICATE_GROUP")
    assert [g["apikey"] for g in services(client)["services"]] == ["k1"]
    # twice in one request
    response = client.post(
        "/iot/services", headers=CITY, json={"services": [group("k3"), group("k3")]}
    )
    agent_error(response, 409, "DUPLICATE_GROUP")
    # the pair is unique across tenants: another tenant cannot take it either
    response = client.post("/iot/services", headers=OTHER, json={"services": [group("k1")]})
    agent_error(response, 409, "DUPLICATE_GROUP")
    # the same apikey with another resource is another group
    response = client.post(
        "/iot/services", headers=OTHER, json={"services": [group("k1", resource="/iot/d")]}
    )
    assert response.status_code == 201
    assert services(client)["count"] == 1
    assert services(client, headers=OTHER)["count"] == 1


def test_update_and_delete_group(client):
    client.post("/iot/services", headers=CITY, json={"services": [group("k1")]})
    key = {"apikey": "k1", "resource": "/iot/json"}
    response = client.put(
        "/iot/services",
        headers={**CITY, "Fiware-ServicePath": "/other"},
        params=key,
        json={"entity_type": "Lamp", "autoprovision": False, "apikey": "ignored"},
    )
    assert response.status_code == 204, response.text
    (g,) = services(client)["services"]
    assert g["entity_type"] == "Lamp" and g["autoprovision"] is False
    assert g["apikey"] == "k1" and g["subservice"] == "/other"
    assert g["attributes"] == group()["attributes"]  # untouched members stay
    # a bad change writes nothing
    response = client.put(
        "/iot/services", headers=CITY, params=key, json={"attributes": [{"name": "x"}]}
    )
    agent_error(response, 400, "WRONG_SYNTAX")
    assert services(client)["services"][0]["attributes"] == group()["attributes"]
    # missing parameters, absent group, other tenant
    agent_error(
        client.put("/iot/services", headers=CITY, params={"apikey": "k1"}, json={}),
        400,
        "MISSING_HEADERS",
    )
    agent_error(
        client.put("/iot/services", headers=CITY, params={**key, "apikey": "k9"}, json={}),
        404,
        "DEVICE_GROUP_NOT_FOUND",
    )
    agent_error(
        client.delete("/iot/services", headers=OTHER, params=key), 404, "DEVICE_GROUP_NOT_FOUND"
    )
    agent_error(client.delete("/iot/services", headers=CITY), 400, "MISSING_HEADERS")
    assert client.delete("/iot/services", headers=CITY, params=key).status_code == 204
    assert services(client)["count"] == 0
    agent_error(
        client.delete("/iot/services", headers=CITY, params=key), 404, "DEVICE_GROUP_NOT_FOUND"
    )


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ([group()], "WRONG_SYNTAX"),
        ({"services": []}, "WRONG_SYNTAX"),
        ({"services": [group()], "extra": 1}, "WRONG_SYNTAX"),
        ({"services": ["k1"]}, "WRONG_SYNTAX"),
        ({"services": [{"resource": "/iot/json"}]}, "WRONG_SYNTAX"),
        ({"services": [group(apikey="")]}, "WRONG_SYNTAX"),
        ({"services": [group(apikey="a/b")]}, "WRONG_SYNTAX"),
        ({"services": [group(apikey=7)]}, "WRONG_SYNTAX"),
        ({"services": [group(resource="iot")]}, "WRONG_SYNTAX"),
        ({"services": [group(entity_type="has space")]}, "WRONG_SYNTAX"),
        ({"services": [group(attributes={"t": "Number"})]}, "WRONG_SYNTAX"),
        ({"services": [group(attributes=[{"object_id": "t", "type": "Number"}])]}, "WRONG_SYNTAX"),
        ({"services": [group(attributes=[{"name": "t"}])]}, "WRONG_SYNTAX"),
        ({"services": [group(attributes=[{"name": "id", "type": "Text"}])]}, "WRONG_SYNTAX"),
        ({"services": [group(attributes=[{"name": "a<b", "type": "Text"}])]}, "WRONG_SYNTAX"),
        (
            {"services": [group(attributes=[{"name": "t", "type": "N", "colour": "red"}])]},
            "WRONG_SYNTAX",
        ),
        (
            {
                "services": [
                    group(
                        attributes=[
                            {"object_id": "t", "name": "a", "type": "N"},
                            {"object_id": "t", "name": "b", "type": "N"},
                        ]
                    )
                ]
            },
            "WRONG_SYNTAX",
        ),
        ({"services": [group(static_attributes=[{"name": "s", "type": "T"}])]}, "WRONG_SYNTAX"),
        ({"services": [group(explicitAttrs="yes")]}, "WRONG_SYNTAX"),
        ({"services": [group(autoprovision=1)]}, "WRONG_SYNTAX"),
        ({"services": [group(timezone="Mars/Olympus")]}, "WRONG_SYNTAX"),
        ({"services": [group(cbroker=5)]}, "WRONG_SYNTAX"),
        ({"services": [group(lazy=[{"type": "Boolean"}])]}, "WRONG_SYNTAX"),
    ],
)
def test_invalid_groups_write_nothing(client, body, name):
    # a valid group first in the list: all or nothing
    if isinstance(body, dict) and isinstance(body.get("services"), list) and body["services"]:
        body = {**body, "services": [group("first"), *body["services"]]}
    response = client.post("/iot/services", headers=CITY, json=body)
    agent_error(response, 400, name)
    assert services(client)["count"] == 0


def test_bodies_that_are_not_json(client):
    json_type = {**CITY, "Content-Type": "application/json"}
    response = client.post("/iot/services", headers=json_type, content=b"{nope")
    agent_error(response, 400, "WRONG_SYNTAX")
    response = client.post(
        "/iot/services", headers={**CITY, "Content-Type": "text/plain"}, content=b"{}"
    )
    agent_error(response, 415, "UNSUPPORTED_CONTENT_TYPE")
    agent_error(
        client.get("/iot/services", headers=CITY, params={"limit": "x"}), 400, "BAD_REQUEST"
    )
    bad_path = {**CITY, "Fiware-ServicePath": "lights"}
    agent_error(client.get("/iot/services", headers=bad_path), 400, "WRONG_SERVICE_PATH")


def test_groups_of_one_tenant_are_invisible_from_another(client):
    client.post("/iot/services", headers=CITY, json={"services": [group("k1")]})
    assert services(client, headers=OTHER) == {"count": 0, "services": []}
    assert services(client, headers={}) == {"count": 0, "services": []}
    key = {"apikey": "k1", "resource": "/iot/json"}
    agent_error(
        client.put("/iot/services", headers=OTHER, params=key, json={"entity_type": "X"}),
        404,
        "DEVICE_GROUP_NOT_FOUND",
    )
    assert services(client)["services"][0]["entity_type"] == "Streetlight"


# -- devices -----------------------------------------------------------------------------------


def test_create_get_list_devices(client):
    client.post("/iot/services", headers=CITY, json={"services": [group("k1")]})
    body = {
        "devices": [
            {
                "device_id": "lamp001",
                "apikey": "k1",  # its group's entity_type
                "protocol": "PDI-IoTA-JSON",
                "transport": "MQTT",
                "timezone": "Europe/Lisbon",
                "attributes": [{"object_id": "t", "name": "temperature", "type": "Number"}],
                "static_attributes": [
                    {
                        "name": "location",
                        "type": "geo:json",
                        "value": {"type": "Point", "coordinates": [-9.14, 38.71]},
                    }
                ],
                "commands": [{"name": "on", "type": "command"}],
                "lazy": [{"name": "status", "type": "Boolean"}],
                "internal_attributes": {"free": "form"},
            },
            {
                "device_id": "motion001",
                "entity_name": "urn:ngsi-ld:Motion:001",
                "entity_type": "Motion",
                "endpoint": "http://iot-sensors:3001/iot/motion001",
                "transport": "HTTP",
                "explicitAttrs": False,
            },
            {"device_id": "bare"},
        ]
    }
    response = client.post("/iot/devices", headers=CITY, json=body)
    assert response.status_code == 201, response.text
    assert response.json() == {}
    response = client.get("/iot/devices/lamp001", headers=CITY)
    assert response.status_code == 200
    assert response.json() == {
        "device_id": "lamp001",
        "apikey": "k1",
        "entity_type": "Streetlight",
        "entity_name": "urn:ngsi-ld:Streetlight:lamp001",
        "protocol": "PDI-IoTA-JSON",
        "transport": "MQTT",
        "timezone": "Europe/Lisbon",
        "attributes": body["devices"][0]["attributes"],
        "static_attributes": body["devices"][0]["static_attributes"],
        "commands": body["devices"][0]["commands"],
        "service": "city",
        "service_path": "/lights",
    }
    bare = client.get("/iot/devices/bare", headers=CITY).json()
    assert bare["entity_type"] == "Thing"
    assert bare["entity_name"] == "urn:ngsi-ld:Thing:bare"
    listed = devices(client)
    assert listed["count"] == 3
    assert [d["device_id"] for d in listed["devices"]] == ["bare", "lamp001", "motion001"]
    assert listed["devices"][2]["entity_name"] == "urn:ngsi-ld:Motion:001"
    page = devices(client, limit=1, offset=1)
    assert page["count"] == 3 and [d["device_id"] for d in page["devices"]] == ["lamp001"]
    agent_error(
        client.get("/iot/devices", headers=CITY, params={"offset": "-1"}), 400, "BAD_REQUEST"
    )


def test_duplicate_devices_are_refused_whole(client):
    one = {"devices": [{"device_id": "d1"}]}
    assert client.post("/iot/devices", headers=CITY, json=one).status_code == 201
    response = client.post(
        "/iot/devices", headers=CITY, json={"devices": [{"device_id": "d2"}, {"device_id": "d1"}]}
    )
    agent_error(response, 409, "DUPLICATE_DEVICE_ID")
    response = client.post(
        "/iot/devices", headers=CITY, json={"devices": [{"device_id": "d3"}, {"device_id": "d3"}]}
    )
    agent_error(response, 409, "DUPLICATE_DEVICE_ID")
    assert [d["device_id"] for d in devices(client)["devices"]] == ["d1"]
    # device ids are per tenant
    assert client.post("/iot/devices", headers=OTHER, json=one).status_code == 201


@pytest.mark.parametrize(
    ("device", "name"),
    [
        ({"entity_type": "Thing"}, "MISSING_ATTRIBUTES"),
        ({"device_id": ""}, "WRONG_SYNTAX"),
        ({"device_id": "a/b"}, "WRONG_SYNTAX"),
        ({"device_id": "a+b"}, "WRONG_SYNTAX"),
        ({"device_id": 12}, "WRONG_SYNTAX"),
        ({"device_id": "d", "entity_name": "not a uri"}, "WRONG_SYNTAX"),
        ({"device_id": "d", "entity_name": "urn:x:" + "é" * 600}, "WRONG_SYNTAX"),  # > 1024 B
        ({"device_id": "d", "entity_type": ""}, "WRONG_SYNTAX"),
        ({"device_id": "d", "apikey": "a#b"}, "WRONG_SYNTAX"),
        ({"device_id": "d", "transport": "AMQP"}, "WRONG_SYNTAX"),
        ({"device_id": "d", "endpoint": "nowhere"}, "WRONG_SYNTAX"),
        ({"device_id": "d", "attributes": [{"name": "t", "type": 5}]}, "WRONG_SYNTAX"),
        ({"device_id": "d", "attributes": [{"object_id": "a b", "name": "t", "type": "N"}]},
         "WRONG_SYNTAX"),
        ({"device_id": "d", "commands": [{"type": "command"}]}, "WRONG_SYNTAX"),
        ({"device_id": "d", "static_attributes": [{"name": "s", "value": 1}]}, "WRONG_SYNTAX"),
        ({"device_id": "d", "explicitAttrs": "true"}, "WRONG_SYNTAX"),
        ({"device_id": "d", "timezone": 1}, "WRONG_SYNTAX"),
    ],
)  # fmt: skip
def test_invalid_devices_write_nothing(client, device, name):
    response = client.post(
        "/iot/devices", headers=CITY, json={"devices": [{"device_id": "ok"}, device]}
    )
    agent_error(response, 400, name)
    assert devices(client)["count"] == 0


def test_a_device_may_not_use_another_tenants_apikey(client):
    client.post("/iot/services", headers=OTHER, json={"services": [group("theirs")]})
    response = client.post(
        "/iot/devices", headers=CITY, json={"devices": [{"device_id": "d", "apikey": "theirs"}]}
    )
    agent_error(response, 400, "BAD_REQUEST")
    # an apikey no group has yet is allowed (its group may come later)
    response = client.post(
        "/iot/devices", headers=CITY, json={"devices": [{"device_id": "d", "apikey": "later"}]}
    )
    assert response.status_code == 201
    agent_error(
        client.put("/iot/devices/d", headers=CITY, json={"apikey": "theirs"}), 400, "BAD_REQUEST"
    )


def test_update_and_delete_device(client):
    client.post("/iot/devices", headers=CITY, json={"devices": [{"device_id": "d1"}]})
    response = client.put(
        "/iot/devices/d1",
        headers={**CITY, "Fiware-ServicePath": "/moved"},
        json={"attributes": [{"object_id": "t", "name": "temperature", "type": "Number"}]},
    )
    assert response.status_code == 204, response.text
    got = client.get("/iot/devices/d1", headers=CITY).json()
    assert got["attributes"][0]["name"] == "temperature"
    assert got["entity_name"] == "urn:ngsi-ld:Thing:d1"
    assert got["service_path"] == "/moved"
    # the id cannot change; bad members write nothing
    agent_error(
        client.put("/iot/devices/d1", headers=CITY, json={"device_id": "d2"}), 400, "BAD_REQUEST"
    )
    agent_error(
        client.put("/iot/devices/d1", headers=CITY, json={"entity_name": "x y"}),
        400,
        "WRONG_SYNTAX",
    )
    agent_error(client.put("/iot/devices/d1", headers=CITY, json=[1]), 400, "WRONG_SYNTAX")
    assert client.get("/iot/devices/d1", headers=CITY).json() == got
    # absent here or in another tenant
    agent_error(client.put("/iot/devices/d9", headers=CITY, json={}), 404, "DEVICE_NOT_FOUND")
    agent_error(client.get("/iot/devices/d1", headers=OTHER), 404, "DEVICE_NOT_FOUND")
    agent_error(client.delete("/iot/devices/d1", headers=OTHER), 404, "DEVICE_NOT_FOUND")
    agent_error(client.get("/iot/devices/bad%20id", headers=CITY), 404, "DEVICE_NOT_FOUND")
    assert client.delete("/iot/devices/d1", headers=CITY).status_code == 204
    agent_error(client.delete("/iot/devices/d1", headers=CITY), 404, "DEVICE_NOT_FOUND")
    assert devices(client)["count"] == 0


def test_the_gate_still_answers_problem_details(client):
    response = client.get("/iot/devices", headers={**CITY, "Authorization": "Bearer cdk_nope"})
    assert response.status_code == 401
    assert response.json()["type"].endswith("/Unauthenticated")
