"""Limits on ids and names (model.MAX_IRI_BYTES): an entity id, entity type, attribute name or
datasetId over the limit is 400 BadRequestData naming it, wherever it enters; one at the limit
is stored and read back."""

from __future__ import annotations

import urllib.parse

from cidade.hub.model import MAX_IRI_BYTES
from tests.conftest import NGSI, problem_type
from tests.hub.helpers import entity

DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"


def long_id(size: int) -> str:
    return "urn:ngsi-ld:Building:" + "x" * (size - len("urn:ngsi-ld:Building:"))


def refused(r, what: str = "") -> None:
    assert r.status_code == 400, r.text[:300]
    assert problem_type(r) == "BadRequestData"
    assert str(MAX_IRI_BYTES) in r.json()["detail"], r.json()["detail"]


def test_ids_of_100_kb_1_mb_and_5_mb_are_refused(client):
    """Ids far past the limit, as a new user tried them: refused at once with a clear error
    (the 100 kB one could not be read back, the 1 MB one answered with no headers)."""
    for size in (100_000, 1_000_000, 5_000_000):
        refused(client.post(f"{NGSI}/entities", json=entity(long_id(size))))
    assert client.get(f"{NGSI}/entities?type=Building").json() == []


def test_an_id_at_the_limit_is_stored_and_read_back(client):
    at = long_id(MAX_IRI_BYTES)
    r = client.post(f"{NGSI}/entities", json=entity(at, name="a"))
    assert r.status_code == 201, r.text
    got = client.get(f"{NGSI}/entities/{urllib.parse.quote(at, safe=':')}")
    assert got.status_code == 200 and got.json()["id"] == at
    # Multi-byte characters count in bytes: 1023 bytes and one 2-byte character is over.
    over = long_id(MAX_IRI_BYTES - 1) + "é"
    refused(client.post(f"{NGSI}/entities", json=entity(over)))
    assert client.delete(f"{NGSI}/entities/{urllib.parse.quote(at, safe=':')}").status_code == 204


def test_types_attribute_names_and_dataset_ids_over_the_limit(client):
    """Names count once expanded: the @context's vocabulary is part of the IRI."""
    name = "n" * (MAX_IRI_BYTES - len(DEFAULT) + 1)  # one byte over once expanded
    fits = "n" * (MAX_IRI_BYTES - len(DEFAULT))
    e1 = "urn:ngsi-ld:Building:1"
    refused(client.post(f"{NGSI}/entities", json={"id": e1, "type": name}))
    refused(client.post(f"{NGSI}/entities", json={"id": e1, "type": "Building", name: 1}))
    sub = {"type": "Property", "value": 1, name: {"type": "Property", "value": 2}}
    refused(client.post(f"{NGSI}/entities", json={"id": e1, "type": "Building", "a": sub}))
    dataset = {"type": "Property", "value": 1, "datasetId": long_id(MAX_IRI_BYTES + 1)}
    refused(client.post(f"{NGSI}/entities", json={"id": e1, "type": "Building", "a": dataset}))
    body = {"id": e1, "type": fits, fits: {"type": "Property", "value": 1}}
    assert client.post(f"{NGSI}/entities", json=body).status_code == 201
    assert fits in client.get(f"{NGSI}/entities/{e1}").json()


def test_limits_hold_in_every_operation_that_takes_them(client):
    e1 = "urn:ngsi-ld:Building:1"
    assert client.post(f"{NGSI}/entities", json=entity(e1, a=1)).status_code == 201
    name = "n" * MAX_IRI_BYTES
    over = long_id(MAX_IRI_BYTES + 1)
    quoted = urllib.parse.quote(over, safe=":")
    one = f"{NGSI}/entities/{e1}"
    refused(client.post(f"{one}/attrs", json={name: 1}))
    refused(client.patch(f"{one}/attrs", json={name: 1}))
    refused(client.patch(one, json={name: 1}))
    refused(client.put(f"{one}/attrs/{name}", json={"type": "Property", "value": 1}))
    refused(client.delete(f"{one}/attrs/{name}"))
    refused(client.delete(f"{one}/attrs/a?datasetId={quoted}"))
    for method in ("GET", "DELETE"):
        refused(client.request(method, f"{NGSI}/entities/{quoted}"))
    refused(client.patch(f"{NGSI}/entities/{quoted}", json={"a": 2}))
    refused(client.get(f"{NGSI}/entities?id={quoted}"))
    refused(client.get(f"{NGSI}/entities?type={name}"))
    refused(client.get(f"{NGSI}/entities?type=Building&attrs={name}"))
    refused(client.get(f"{NGSI}/entities?type=Building&q={name}==1"))
    refused(client.get(f"{NGSI}/temporal/entities/{quoted}"))
    ops = f"{NGSI}/entityOperations"
    for op in ("create", "upsert"):
        r = client.post(f"{ops}/{op}", json=[entity(over), entity("urn:ngsi-ld:Building:2")])
        assert r.status_code == 207, r.text
        assert r.json()["success"] == ["urn:ngsi-ld:Building:2"]
        assert str(MAX_IRI_BYTES) in r.json()["errors"][0]["error"]["detail"]
    r = client.post(f"{ops}/delete", json=[over])
    assert r.status_code == 207
    assert str(MAX_IRI_BYTES) in r.json()["errors"][0]["error"]["detail"]
    assert client.get(one).json() == {
        "id": e1,
        "type": "Building",
        "a": {"type": "Property", "value": 1},
    }
