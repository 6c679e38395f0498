"""Linked entities in notifications (§4.5.23 with a subscription's ``notification.join`` and
``joinLevel``, §5.8.6): delivered to a real HTTP receiver on loopback, on both stores. The
linked entities are read when the notification is sent, from the subscription's tenant."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from cidade.config import Settings
from tests.conftest import NGSI, notifying_settings
from tests.hub.helpers import entity

BUILDING = "urn:ngsi-ld:Building:eiffel"
CITY = "urn:ngsi-ld:City:paris"
COUNTRY = "urn:ngsi-ld:Country:france"


@pytest.fixture
def settings(store_url: str) -> Settings:
    return notifying_settings(store_url)


def rel(target: str) -> dict:
    return {"type": "Relationship", "object": target}


def subscribe(
    client: TestClient,
    uri: str,
    headers: dict | None = None,
    top: dict | None = None,
    **notification,
) -> str:
    body = {
        "type": "Subscription",
        "entities": [{"type": "Building"}],
        "notification": {"endpoint": {"uri": uri}, **notification},
        **(top or {}),
    }
    r = client.post(f"{NGSI}/subscriptions", json=body, headers=headers or {})
    assert r.status_code == 201, r.text
    return r.headers["location"].rsplit("/", 1)[1]


def post(client: TestClient, body: dict, headers: dict | None = None) -> None:
    r = client.post(f"{NGSI}/entities", json=body, headers=headers or {})
    assert r.status_code == 201, r.text


def city_and_country(client: TestClient, headers: dict | None = None) -> None:
    post(client, entity(COUNTRY, "Country", name="France"), headers)
    post(client, entity(CITY, "City", name="Paris", isInCountry=rel(COUNTRY)), headers)


def test_flat_join_appends_each_linked_entity_once(client, receiver):
    city_and_country(client)
    subscribe(client, receiver.url, join="flat", joinLevel=1)
    post(client, entity(BUILDING, name="Tour Eiffel", locatedAt=rel(CITY), nearTo=rel(CITY)))
    (got,) = receiver.wait_for(1)
    assert got.body["data"] == [
        {
            "id": BUILDING,
            "type": "Building",
            "name": {"type": "Property", "value": "Tour Eiffel"},
            "locatedAt": {"type": "Relationship", "object": CITY},
            "nearTo": {"type": "Relationship", "object": CITY},
        },
        {
            "id": CITY,
            "type": "City",
            "name": {"type": "Property", "value": "Paris"},
            "isInCountry": {"type": "Relationship", "object": COUNTRY},
        },
    ]


def test_inline_join_two_levels_deep(client, receiver):
    city_and_country(client)
    subscribe(client, receiver.url, join="inline", joinLevel=2)
    post(client, entity(BUILDING, locatedAt=rel(CITY)))
    (got,) = receiver.wait_for(1)
    (building,) = got.body["data"]
    city = building["locatedAt"]["entity"]
    assert city["id"] == CITY and city["name"]["value"] == "Paris"
    assert city["isInCountry"]["entity"] == {
        "id": COUNTRY,
        "type": "Country",
        "name": {"type": "Property", "value": "France"},
    }


def test_inline_join_one_level_by_default(client, receiver):
    city_and_country(client)
    subscribe(client, receiver.url, join="inline")
    post(client, entity(BUILDING, locatedAt=rel(CITY)))
    (got,) = receiver.wait_for(1)
    city = got.body["data"][0]["locatedAt"]["entity"]
    assert city["isInCountry"] == {"type": "Relationship", "object": COUNTRY}


def test_simplified_inline_join_puts_the_entity_in_place_of_the_object(client, receiver):
    city_and_country(client)
    subscribe(client, receiver.url, join="inline", format="simplified")
    post(client, entity(BUILDING, name="Tour Eiffel", locatedAt=rel(CITY)))
    (got,) = receiver.wait_for(1)
    assert got.body["data"] == [
        {
            "id": BUILDING,
            "type": "Building",
            "name": "Tour Eiffel",
            "locatedAt": {"id": CITY, "type": "City", "name": "Paris", "isInCountry": COUNTRY},
        }
    ]


def test_attributes_select_the_notified_entity_not_the_linked_one(client, receiver):
    city_and_country(client)
    subscribe(client, receiver.url, join="flat", attributes=["locatedAt"], sysAttrs=True)
    post(client, entity(BUILDING, name="Tour Eiffel", locatedAt=rel(CITY)))
    (got,) = receiver.wait_for(1)
    building, city = got.body["data"]
    assert "name" not in building and building["locatedAt"]["object"] == CITY
    assert {"name", "isInCountry", "createdAt", "modifiedAt"} <= city.keys()
    assert "createdAt" in city["name"]


def test_linked_entities_are_read_when_the_notification_is_sent(client, receiver):
    city_and_country(client)
    subscribe(client, receiver.url, top={"watchedAttributes": ["height"]}, join="flat")
    post(client, entity(BUILDING, locatedAt=rel(CITY), height=300))
    receiver.wait_for(1)
    r = client.patch(
        f"{NGSI}/entities/{CITY}/attrs", json={"name": {"type": "Property", "value": "Lutèce"}}
    )
    assert r.status_code == 204, r.text
    r = client.patch(
        f"{NGSI}/entities/{BUILDING}/attrs", json={"height": {"type": "Property", "value": 330}}
    )
    assert r.status_code == 204, r.text
    got = receiver.wait_for(2)
    assert got[1].body["data"][1]["name"]["value"] == "Lutèce"


def test_missing_linked_entity_leaves_the_relationship_as_it_is(client, receiver):
    subscribe(client, receiver.url, join="inline")
    post(client, entity(BUILDING, locatedAt=rel(CITY)))
    (got,) = receiver.wait_for(1)
    assert got.body["data"][0]["locatedAt"] == {"type": "Relationship", "object": CITY}


def test_linked_entities_come_from_the_subscription_tenant(client, receiver):
    other = {"NGSILD-Tenant": "gaia"}
    # The same city id in the default tenant is not what a subscription of gaia sees.
    post(client, entity(CITY, "City", name="Paris"))
    post(client, entity(CITY, "City", name="Gaia's Paris"), other)
    subscribe(client, receiver.url, headers=other, join="flat")
    post(client, entity(BUILDING, locatedAt=rel(CITY)), other)
    (got,) = receiver.wait_for(1)
    assert got.headers["ngsild-tenant"] == "gaia"
    assert got.body["data"][1]["name"]["value"] == "Gaia's Paris"


def test_join_is_stored_and_read_back(client, receiver):
    sub_id = subscribe(client, receiver.url, join="inline", joinLevel=3)
    got = client.get(f"{NGSI}/subscriptions/{sub_id}").json()["notification"]
    assert (got["join"], got["joinLevel"]) == ("inline", 3)


@pytest.mark.parametrize(
    ("notification", "message"),
    [
        ({"join": "deep"}, "notification.join"),
        ({"join": "flat", "joinLevel": 0}, "joinLevel must be a positive integer"),
        ({"join": "flat", "joinLevel": "2"}, "joinLevel must be a positive integer"),
        ({"join": "flat", "joinLevel": 11}, "joinLevel must be at most 10"),
    ],
)
def test_bad_join_is_refused_and_nothing_is_stored(client, receiver, notification, message):
    body = {
        "type": "Subscription",
        "entities": [{"type": "Building"}],
        "notification": {"endpoint": {"uri": receiver.url}, **notification},
    }
    r = client.post(f"{NGSI}/subscriptions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert message in r.json()["detail"]
    assert client.get(f"{NGSI}/subscriptions").json() == []
