"""NGSI-LD Null (urn:ngsi-ld:null) in merge and update operations, scope as a member of the
entity (§4.18), and what the attribute operations refuse (§5.6.2 to §5.6.5, §5.6.17, §5.6.19)."""

from __future__ import annotations

import pytest

from tests.conftest import DEFAULT, NGSI, problem_type
from tests.hub.helpers import point

E1 = "urn:ngsi-ld:Building:1"
URL = f"{NGSI}/entities/{E1}"
NULL = "urn:ngsi-ld:null"
D1, D2 = "urn:ngsi-ld:Dataset:01", "urn:ngsi-ld:Dataset:02"

# One attribute of each kind with two instances: the default one and one with datasetId D1.
KINDS = {
    "name": ({"type": "Property", "value": "Eiffel"}, {"type": "Property", "value": NULL}),
    "locatedAt": (
        {"type": "Relationship", "object": "urn:ngsi-ld:City:Paris"},
        {"type": "Relationship", "object": NULL},
    ),
    "location": (point(2.35, 48.85), {"type": "GeoProperty", "value": NULL}),
    "street": (
        {"type": "LanguageProperty", "languageMap": {"fr": "Rue", "en": "Street"}},
        {"type": "LanguageProperty", "languageMap": {"@none": NULL}},
    ),
    "category": (
        {"type": "VocabProperty", "vocab": "tower"},
        {"type": "VocabProperty", "vocab": NULL},
    ),
    "tags": (
        {"type": "ListProperty", "valueList": [1, 2]},
        {"type": "ListProperty", "valueList": [NULL]},
    ),
    "data": ({"type": "JsonProperty", "json": {"a": 1}}, {"type": "JsonProperty", "json": NULL}),
}


def create_multi(client) -> None:
    body = {"id": E1, "type": "Building"}
    for name, (attr, _) in KINDS.items():
        body[name] = [attr, {**attr, "datasetId": D1}]
    r = client.post(f"{NGSI}/entities", json=body)
    assert r.status_code == 201, r.text


def instances(client, name: str) -> list[dict]:
    got = client.get(URL).json().get(name)
    if got is None:
        return []
    return got if isinstance(got, list) else [got]


# The three operations that take NGSI-LD Null: how each sends it for one attribute.
def by_merge(client, name, null):
    return client.patch(URL, json={name: null})


def by_update(client, name, null):
    return client.patch(f"{URL}/attrs", json={name: null})


def by_partial_update(client, name, null):
    return client.patch(f"{URL}/attrs/{name}", json=null)


@pytest.mark.parametrize("send", [by_merge, by_update, by_partial_update])
def test_null_deletes_the_instance_it_names(client, send):
    """NGSI-LD Null of any attribute type deletes one instance: the one with its datasetId, or
    the default instance when it has none; the attribute goes with its last instance."""
    create_multi(client)
    for name, (_, null) in KINDS.items():
        r = send(client, name, {**null, "datasetId": D1})
        assert r.status_code == 204, (name, r.text)
        assert [i.get("datasetId") for i in instances(client, name)] == [None], name
        r = send(client, name, null)
        assert r.status_code == 204, (name, r.text)
        assert instances(client, name) == [], name
    assert client.get(URL).json() == {"id": E1, "type": "Building"}


def test_null_of_a_default_instance_keeps_the_others(client):
    create_multi(client)
    assert by_merge(client, "location", KINDS["location"][1]).status_code == 204
    assert [i["datasetId"] for i in instances(client, "location")] == [D1]
    assert by_merge(client, "name", NULL).status_code == 204  # concise: the bare NGSI-LD Null
    assert [i["datasetId"] for i in instances(client, "name")] == [D1]


def test_null_deletes_a_sub_attribute_in_merge_and_partial_update(client):
    body = {
        "id": E1,
        "type": "Building",
        "name": {
            "type": "Property",
            "value": "x",
            "source": {"type": "Property", "value": "a"},
            "place": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}},
        },
    }
    assert client.post(f"{NGSI}/entities", json=body).status_code == 201
    r = by_merge(client, "name", {"type": "Property", "value": "y", "source": NULL})
    assert r.status_code == 204, r.text
    r = by_partial_update(client, "name", {"place": {"type": "GeoProperty", "value": NULL}})
    assert r.status_code == 204, r.text
    assert client.get(URL).json()["name"] == {"type": "Property", "value": "y"}


def test_null_where_it_deletes_nothing(client):
    """Update reports an attribute it does not have; merge has nothing to do; creating,
    appending or replacing with NGSI-LD Null is 400 and writes nothing."""
    create_multi(client)
    r = by_update(client, "nothing", KINDS["location"][1])
    assert r.status_code == 207
    assert r.json()["notUpdated"][0]["attributeName"] == DEFAULT + "nothing"
    assert by_merge(client, "nothing", NULL).status_code == 204
    assert by_partial_update(client, "nothing", KINDS["name"][1]).status_code == 404
    before = client.get(URL).json()
    for r in (
        client.post(f"{NGSI}/entities", json={"id": "urn:x:2", "type": "T", "a": NULL}),
        client.post(f"{URL}/attrs", json={"name": KINDS["name"][1]}),
        client.put(f"{URL}/attrs/location", json=KINDS["location"][1]),
        client.put(URL, json={"type": "Building", "street": KINDS["street"][1]}),
        client.patch(URL, json={"name": {"type": "Property", "value": 1, "datasetId": NULL}}),
    ):
        assert r.status_code == 400 and problem_type(r) == "BadRequestData", r.text
    assert client.get(URL).json() == before
    assert client.get(f"{NGSI}/entities/urn:x:2").status_code == 404


def test_partial_update_keeps_the_attribute_type(client):
    create_multi(client)
    before = client.get(URL).json()
    fragment = {"type": "Relationship", "object": "urn:ngsi-ld:Entity:01"}
    r = client.patch(f"{URL}/attrs/name", json=fragment)
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    assert client.get(URL).json() == before
    # A concise GeoProperty value is no change of type.
    r = client.patch(f"{URL}/attrs/location", json={"type": "Point", "coordinates": [3, 4]})
    assert r.status_code == 204, r.text
    assert instances(client, "location")[0]["value"]["coordinates"] == [3, 4]


def test_attribute_paths_name_attributes_only(client):
    """/attrs/{attrId} names an attribute: not scope, type or id, not a name that expands to
    no IRI (@invalid). Deleting scope there deletes the scope."""
    body = {"id": E1, "type": "Building", "scope": "/Madrid/Gardens", "a": 1}
    assert client.post(f"{NGSI}/entities", json=body).status_code == 201
    for name in ("scope", "type", "id", "@invalid", "createdAt"):
        for method in ("PUT", "PATCH"):
            r = client.request(method, f"{URL}/attrs/{name}", json={"type": "Property", "value": 1})
            assert r.status_code == 400 and problem_type(r) == "BadRequestData", (name, method)
    assert client.delete(f"{URL}/attrs/@invalid").status_code == 400
    assert client.delete(f"{URL}/attrs/scope").status_code == 204
    assert "scope" not in client.get(URL).json()
    r = client.delete(f"{URL}/attrs/scope")
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"


def test_scope_in_append_and_update(client):
    """§4.18: append replaces the scope, with noOverwrite adds to it; update replaces one the
    entity has and reports it not updated when it has none."""
    body = {"id": E1, "type": "Building", "scope": "/Madrid/Gardens"}
    assert client.post(f"{NGSI}/entities", json=body).status_code == 201
    r = client.post(f"{URL}/attrs?options=noOverwrite", json={"scope": ["/A/B", "/Madrid/Gardens"]})
    assert r.status_code == 204, r.text
    assert client.get(URL).json()["scope"] == ["/Madrid/Gardens", "/A/B"]
    assert client.post(f"{URL}/attrs", json={"scope": "/C"}).status_code == 204
    assert client.get(URL).json()["scope"] == "/C"
    assert client.patch(f"{URL}/attrs", json={"scope": "/D"}).status_code == 204
    assert client.get(URL).json()["scope"] == "/D"
    assert client.delete(f"{URL}/attrs/scope").status_code == 204
    r = client.patch(f"{URL}/attrs", json={"scope": "/E"})
    assert r.status_code == 207
    assert r.json() == {
        "updated": [],
        "notUpdated": [
            {
                "attributeName": "https://uri.etsi.org/ngsi-ld/scope",
                "reason": "the entity has no scope",
            }
        ],
    }
    assert "scope" not in client.get(URL).json()


def test_an_entity_type_must_expand_to_an_iri(client):
    """The core @context maps "type" to @type: as an entity type it names no IRI (400)."""
    for kind in ("type", "@vocab", ["Building", "id"]):
        r = client.post(f"{NGSI}/entities", json={"id": E1, "type": kind})
        assert r.status_code == 400 and problem_type(r) == "BadRequestData", kind
    assert client.get(URL).status_code == 404


def test_batch_update_reports_attributes_kept_by_no_overwrite(client):
    """§5.6.9: an entity whose attributes noOverwrite kept is in the errors (207); the
    attributes it did not have are added all the same."""
    ops = f"{NGSI}/entityOperations/update?options=noOverwrite"
    others = "urn:ngsi-ld:Building:2"
    for eid in (E1, others):
        body = {"id": eid, "type": "Building", "a": 1}
        assert client.post(f"{NGSI}/entities", json=body).status_code == 201
    r = client.post(
        ops,
        json=[
            {"id": E1, "type": "Building", "a": 2, "b": 3},
            {"id": others, "type": "Building", "c": 4},
        ],
    )
    assert r.status_code == 207, r.text
    assert r.json()["success"] == [others]
    assert [e["entityId"] for e in r.json()["errors"]] == [E1]
    assert r.json()["errors"][0]["error"]["type"].endswith("BadRequestData")
    got = client.get(URL).json()
    assert got["a"]["value"] == 1 and got["b"]["value"] == 3
