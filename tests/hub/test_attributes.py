"""§6.6, §6.7: append, update, partial update, replace and delete attributes."""

from __future__ import annotations

from tests.conftest import DEFAULT, NGSI, problem_type
from tests.hub.helpers import entity

E1 = "urn:ngsi-ld:Building:1"
URL = f"{NGSI}/entities/{E1}"


def setup_entity(client, **attrs):
    r = client.post(f"{NGSI}/entities", json=entity(E1, **attrs))
    assert r.status_code == 201, r.text


def test_append_adds_and_overwrites(client):
    setup_entity(client, a=1)
    r = client.post(
        f"{URL}/attrs",
        json={"a": {"type": "Property", "value": 2}, "b": {"type": "Property", "value": 3}},
    )
    assert r.status_code == 204
    got = client.get(URL).json()
    assert got["a"]["value"] == 2 and got["b"]["value"] == 3


def test_append_no_overwrite_gives_207(client):
    setup_entity(client, a=1)
    r = client.post(
        f"{URL}/attrs?options=noOverwrite",
        json={"a": {"type": "Property", "value": 2}, "b": {"type": "Property", "value": 3}},
    )
    assert r.status_code == 207
    body = r.json()
    # Named by their IRIs: the response has no @context of its own.
    assert body["updated"] == [DEFAULT + "b"]
    assert [n["attributeName"] for n in body["notUpdated"]] == [DEFAULT + "a"]
    got = client.get(URL).json()
    assert got["a"]["value"] == 1 and got["b"]["value"] == 3


def test_append_to_missing_entity_is_404(client):
    r = client.post(f"{NGSI}/entities/urn:x:none/attrs", json={"a": 1})
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"


def test_append_invalid_changes_nothing(client):
    setup_entity(client, a=1)
    r = client.post(
        f"{URL}/attrs", json={"b": {"type": "Property", "value": 5}, "c": {"type": "Nope"}}
    )
    assert r.status_code == 400
    assert "b" not in client.get(URL).json()


def test_update_only_existing(client):
    setup_entity(client, a=1)
    r = client.patch(f"{URL}/attrs", json={"a": {"type": "Property", "value": 9}})
    assert r.status_code == 204
    assert client.get(URL).json()["a"]["value"] == 9
    r = client.patch(
        f"{URL}/attrs",
        json={"a": {"type": "Property", "value": 10}, "zz": {"type": "Property", "value": 1}},
    )
    assert r.status_code == 207
    assert r.json()["updated"] == [DEFAULT + "a"]
    assert r.json()["notUpdated"][0]["attributeName"] == DEFAULT + "zz"
    got = client.get(URL).json()
    assert got["a"]["value"] == 10 and "zz" not in got


def test_partial_attribute_update(client):
    setup_entity(
        client,
        a={
            "type": "Property",
            "value": 1,
            "unitCode": "MTR",
            "s": {"type": "Property", "value": "x"},
        },
    )
    r = client.patch(f"{URL}/attrs/a", json={"value": 5})
    assert r.status_code == 204
    got = client.get(URL).json()["a"]
    assert got == {
        "type": "Property",
        "value": 5,
        "unitCode": "MTR",
        "s": {"type": "Property", "value": "x"},
    }
    assert client.patch(f"{URL}/attrs/nope", json={"value": 1}).status_code == 404


def test_replace_attribute(client):
    setup_entity(client, a={"type": "Property", "value": 1, "unitCode": "MTR"})
    r = client.put(f"{URL}/attrs/a", json={"type": "Property", "value": 7})
    assert r.status_code == 204
    assert client.get(URL).json()["a"] == {"type": "Property", "value": 7}
    assert client.put(f"{URL}/attrs/nope", json={"type": "Property", "value": 1}).status_code == 404


def test_delete_attribute_with_dataset_ids(client):
    setup_entity(
        client,
        t=[
            {"type": "Property", "value": 1},
            {"type": "Property", "value": 2, "datasetId": "urn:ds:1"},
            {"type": "Property", "value": 3, "datasetId": "urn:ds:2"},
        ],
    )
    assert client.delete(f"{URL}/attrs/t?datasetId=urn:ds:1").status_code == 204
    assert [i.get("datasetId") for i in client.get(URL).json()["t"]] == [None, "urn:ds:2"]
    assert client.delete(f"{URL}/attrs/t?datasetId=urn:ds:9").status_code == 404
    assert client.delete(f"{URL}/attrs/t").status_code == 204  # the default instance
    assert client.get(URL).json()["t"]["datasetId"] == "urn:ds:2"
    setup2 = client.post(f"{URL}/attrs", json={"t": [{"type": "Property", "value": 1}]})
    assert setup2.status_code == 204
    assert client.delete(f"{URL}/attrs/t?deleteAll=true").status_code == 204
    assert "t" not in client.get(URL).json()
    assert client.delete(f"{URL}/attrs/t").status_code == 404
    assert client.delete(f"{URL}/attrs/t?deleteAll=maybe").status_code == 400


def test_modified_at_moves_on_update(client):
    setup_entity(client, a=1)
    before = client.get(f"{URL}?options=sysAttrs").json()
    client.patch(f"{URL}/attrs/a", json={"value": 2})
    after = client.get(f"{URL}?options=sysAttrs").json()
    assert after["modifiedAt"] > before["modifiedAt"]
    assert after["a"]["createdAt"] == before["a"]["createdAt"]
    assert after["a"]["modifiedAt"] > before["a"]["modifiedAt"]
