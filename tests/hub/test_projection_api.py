"""§4.21 attribute projection (pick, omit), §4.15 lang and the representation parameters of
Retrieve Entity and Query Entities (§6.3.7, §6.5.3.1)."""

from __future__ import annotations

import pytest

from tests.conftest import NGSI, problem_type
from tests.hub.helpers import entity, point

B1 = "urn:ngsi-ld:Building:1"
B2 = "urn:ngsi-ld:Building:2"
C1 = "urn:ngsi-ld:Car:1"


@pytest.fixture
def town(client):
    body = [
        entity(B1, name="Torre", height=12, location=point(-8.61, 41.15)),
        entity(B2, name="Casa", height=3),
        entity(C1, "Car", speed=50),
    ]
    assert client.post(f"{NGSI}/entityOperations/create", json=body).status_code == 201
    return client


@pytest.mark.parametrize(
    "params",
    [
        "pick=name&attrs=height",  # attrs with pick or omit
        "omit=name&attrs=height",
        "pick=name&omit=name",  # one member in both
        "pick=id;name",  # a character no name holds
        "pick=id,locatedAt{name",  # a brace never closed
        "pick=id,locatedAt{{name}",
        "pick=id,,name",  # consecutive separators
        "pick=id,locatedAt{,name}",
        "pick=id,locatedAt{}",  # braces with nothing
        "pick=,id",
        "pick=id,",
        "omit=",
    ],
)
def test_forbidden_projections_are_400(town, params):
    for url in (f"{NGSI}/entities/{B1}?{params}", f"{NGSI}/entities?type=Building&{params}"):
        r = town.get(url)
        assert r.status_code == 400 and problem_type(r) == "BadRequestData", url


def test_retrieve_with_nothing_left_is_404(town):
    for params in ("pick=unknown", "omit=id,type,name,height,location", "attrs=unknown"):
        r = town.get(f"{NGSI}/entities/{B1}?{params}")
        assert r.status_code == 404 and problem_type(r) == "ResourceNotFound", params


def test_query_leaves_out_entities_pick_empties(town):
    r = town.get(f"{NGSI}/entities?type=Building,Car&pick=name")
    assert sorted(e["name"]["value"] for e in r.json()) == ["Casa", "Torre"]
    assert len(r.json()) == 2
    r = town.get(f"{NGSI}/entities?type=Building,Car&omit=type,height&pick=id")
    assert sorted(r.json(), key=lambda e: e["id"]) == [{"id": B1}, {"id": B2}, {"id": C1}]


def test_pick_and_omit_with_separators_and_projections_for_links(town):
    r = town.get(f"{NGSI}/entities/{B1}?pick=id|name,height")
    assert set(r.json()) == {"id", "name", "height"}
    # A nested part names members of linked entities: without a join, the member itself is
    # picked (pick) or kept (omit).
    assert set(town.get(f"{NGSI}/entities/{B1}?pick=id,name{{x}}").json()) == {"id", "name"}
    r = town.get(f"{NGSI}/entities/{B1}?omit=type,name{{x}}")
    assert set(r.json()) == {"id", "name", "height", "location"}


def test_lang_any_and_ranked(client):
    street = {"type": "LanguageProperty", "languageMap": {"fr": "Grand Place", "nl": "Grote Markt"}}
    client.post(f"{NGSI}/entities", json=entity(B1, street=street))
    r = client.get(f"{NGSI}/entities/{B1}", params={"lang": "*"})
    assert r.json()["street"] == {"type": "Property", "value": "Grand Place", "lang": "fr"}
    r = client.get(f"{NGSI}/entities/{B1}", params={"lang": "*", "format": "keyValues"})
    assert r.json()["street"] == "Grand Place"
    r = client.get(f"{NGSI}/entities/{B1}", params={"lang": "en;q=0.5,nl;q=0.9,*;q=0.1"})
    assert r.json()["street"] == {"type": "Property", "value": "Grote Markt", "lang": "nl"}


def test_format_and_options(town):
    simplified = town.get(f"{NGSI}/entities/{C1}?options=simplified").json()
    assert simplified == {"id": C1, "type": "Car", "speed": 50}
    assert town.get(f"{NGSI}/entities/{C1}?format=keyValues&options=normalized").json() == (
        simplified
    )
    for params in ("format=invalidFormat", "options=invalid", "options=keyValues,invalid"):
        r = town.get(f"{NGSI}/entities/{C1}?{params}")
        assert r.status_code == 400 and problem_type(r) == "InvalidRequest", params


def test_geojson_carries_its_context_in_the_body(town):
    geo = {"Accept": "application/geo+json"}
    one = town.get(f"{NGSI}/entities/{B1}", headers=geo).json()
    assert one["type"] == "Feature" and one["@context"].endswith(".jsonld")
    many = town.get(f"{NGSI}/entities?type=Building", headers=geo).json()
    assert many["type"] == "FeatureCollection" and many["@context"] == one["@context"]
    assert all("@context" not in f for f in many["features"])


def test_dataset_id_filters_instances(client):
    name = [
        {"type": "Property", "value": "Eiffel Tower"},
        {"type": "Property", "value": "Tour Eiffel", "datasetId": "urn:ngsi-ld:Dataset:fr"},
        {"type": "Property", "value": "Eiffelturm", "datasetId": "urn:ngsi-ld:Dataset:de"},
    ]
    client.post(f"{NGSI}/entities", json=entity(B1, name=name, height=3))

    def names(params):
        r = client.get(f"{NGSI}/entities", params={"type": "Building", **params})
        assert r.status_code == 200, r.text
        found = r.json()[0]
        got = found.get("name", [])
        return {i["value"] for i in (got if isinstance(got, list) else [got])}, found

    assert names({"datasetId": "urn:ngsi-ld:Dataset:fr"})[0] == {"Tour Eiffel"}
    got, found = names({"datasetId": "@none"})
    assert got == {"Eiffel Tower"} and "height" in found
    assert names({"datasetId": "urn:ngsi-ld:Dataset:fr,urn:ngsi-ld:Dataset:de"})[0] == {
        "Tour Eiffel",
        "Eiffelturm",
    }
    got, found = names({"attrs": "name", "datasetId": "urn:ngsi-ld:Dataset:xx"})
    assert got == set() and set(found) == {"id", "type"}
    r = client.get(f"{NGSI}/entities/{B1}", params={"datasetId": "urn:ngsi-ld:Dataset:de"})
    assert r.json()["name"]["value"] == "Eiffelturm" and "height" not in r.json()
    r = client.get(f"{NGSI}/entities/{B1}", params={"datasetId": "not a uri"})
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"


def test_times_show_as_short_as_the_instant_allows(client):
    observed = {"type": "Property", "value": 1, "observedAt": "2026-01-01T10:00:00.123456Z"}
    body = entity(B1, a={**observed, "observedAt": "2026-01-01T10:00:00Z"}, b=observed)
    client.post(f"{NGSI}/entities", json=body)
    got = client.get(f"{NGSI}/entities/{B1}").json()
    assert got["a"]["observedAt"] == "2026-01-01T10:00:00Z"
    assert got["b"]["observedAt"] == "2026-01-01T10:00:00.123456Z"
    got = client.get(f"{NGSI}/entities/{B1}?options=sysAttrs").json()
    assert got["a"]["observedAt"] == "2026-01-01T10:00:00Z"
    assert len(got["createdAt"]) in (20, 24, 27) and got["createdAt"].endswith("Z")
