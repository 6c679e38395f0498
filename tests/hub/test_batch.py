"""§6.14–§6.17, §6.23, §6.31: batch operations, each entity atomic, failures reported."""

from __future__ import annotations

from tests.conftest import CORE, NGSI, problem_type
from tests.hub.helpers import entity

OPS = f"{NGSI}/entityOperations"


def ids(n, prefix="urn:ngsi-ld:Sensor:"):
    return [f"{prefix}{i}" for i in range(n)]


def test_batch_create_all_ok_is_201_with_ids(client):
    body = [entity(i, "Sensor", v=n) for n, i in enumerate(ids(3))]
    r = client.post(f"{OPS}/create", json=body)
    assert r.status_code == 201
    assert r.json() == ids(3)
    assert client.get(f"{NGSI}/entities/{ids(3)[2]}").json()["v"]["value"] == 2


def test_batch_create_partial_is_207_and_commits_the_rest(client):
    client.post(f"{NGSI}/entities", json=entity("urn:ngsi-ld:Sensor:0", "Sensor"))
    body = [
        entity("urn:ngsi-ld:Sensor:0", "Sensor"),  # exists
        entity("urn:ngsi-ld:Sensor:1", "Sensor"),
        {"id": "bad id", "type": "Sensor"},
        entity("urn:ngsi-ld:Sensor:2", "Sensor", v={"type": "Nope"}),
        entity("urn:ngsi-ld:Sensor:3", "Sensor"),
    ]
    r = client.post(f"{OPS}/create", json=body)
    assert r.status_code == 207
    res = r.json()
    assert res["success"] == ["urn:ngsi-ld:Sensor:1", "urn:ngsi-ld:Sensor:3"]
    errors = {e["entityId"]: e["error"] for e in res["errors"]}
    assert errors["urn:ngsi-ld:Sensor:0"]["type"].endswith("AlreadyExists")
    assert errors["bad id"]["type"].endswith("BadRequestData")
    assert errors["urn:ngsi-ld:Sensor:2"]["type"].endswith("BadRequestData")
    assert client.get(f"{NGSI}/entities/urn:ngsi-ld:Sensor:3").status_code == 200
    assert client.get(f"{NGSI}/entities/urn:ngsi-ld:Sensor:2").status_code == 404


def test_batch_body_must_be_array(client):
    """A body of the wrong JSON type is a malformed request (InvalidRequest); an empty batch
    is well-formed data that asks for nothing (BadRequestData)."""
    for op in ("create", "upsert", "update", "merge", "delete"):
        r = client.post(f"{OPS}/{op}", json={"id": "urn:x:1"})
        assert r.status_code == 400 and problem_type(r) == "InvalidRequest", op
        r = client.post(f"{OPS}/{op}", json=[])
        assert r.status_code == 400 and problem_type(r) == "BadRequestData", op


def test_upsert_replace_and_update(client):
    client.post(f"{NGSI}/entities", json=entity("urn:ngsi-ld:Sensor:0", "Sensor", a=1, b=2))
    r = client.post(f"{OPS}/upsert", json=[entity("urn:ngsi-ld:Sensor:0", "Sensor", a=5)])
    assert r.status_code == 204
    got = client.get(f"{NGSI}/entities/urn:ngsi-ld:Sensor:0").json()
    assert got["a"]["value"] == 5 and "b" not in got  # replace is the default
    r = client.post(
        f"{OPS}/upsert?options=update",
        json=[
            entity("urn:ngsi-ld:Sensor:0", "Sensor", c=7),
            entity("urn:ngsi-ld:Sensor:1", "Sensor"),
        ],
    )
    assert r.status_code == 201
    assert r.json() == ["urn:ngsi-ld:Sensor:1"]
    got = client.get(f"{NGSI}/entities/urn:ngsi-ld:Sensor:0").json()
    assert got["a"]["value"] == 5 and got["c"]["value"] == 7
    r = client.post(f"{OPS}/upsert", json=[entity("urn:ngsi-ld:Sensor:9", "Sensor"), {"id": 3}])
    assert r.status_code == 207
    assert r.json()["success"] == ["urn:ngsi-ld:Sensor:9"]
    assert r.json()["errors"][0]["entityId"] == 3
    r = client.post(f"{OPS}/upsert?options=replace,update", json=[])
    assert r.status_code == 400


def test_batch_update(client):
    client.post(f"{OPS}/create", json=[entity(i, "Sensor", a=1) for i in ids(2)])
    r = client.post(f"{OPS}/update", json=[entity(ids(2)[0], "Sensor", a=2, b=3)])
    assert r.status_code == 204
    got = client.get(f"{NGSI}/entities/{ids(2)[0]}").json()
    assert got["a"]["value"] == 2 and got["b"]["value"] == 3
    r = client.post(
        f"{OPS}/update?options=noOverwrite",
        json=[entity(ids(2)[1], "Sensor", a=9), entity("urn:ngsi-ld:Sensor:404", "Sensor", a=1)],
    )
    assert r.status_code == 207
    errors = {e["entityId"]: e["error"]["type"] for e in r.json()["errors"]}
    assert errors["urn:ngsi-ld:Sensor:404"].endswith("ResourceNotFound")
    assert client.get(f"{NGSI}/entities/{ids(2)[1]}").json()["a"]["value"] == 1


def test_batch_delete(client):
    client.post(f"{OPS}/create", json=[entity(i, "Sensor") for i in ids(3)])
    r = client.post(f"{OPS}/delete", json=ids(2))
    assert r.status_code == 204
    assert client.get(f"{NGSI}/entities/{ids(3)[0]}").status_code == 404
    r = client.post(f"{OPS}/delete", json=[ids(3)[2], "urn:ngsi-ld:Sensor:404"])
    assert r.status_code == 207
    assert r.json()["success"] == [ids(3)[2]]
    assert r.json()["errors"][0]["error"]["type"].endswith("ResourceNotFound")


def test_batch_merge(client):
    client.post(f"{OPS}/create", json=[entity(i, "Sensor", a=1, b=2) for i in ids(2)])
    r = client.post(
        f"{OPS}/merge", json=[{"id": ids(2)[0], "type": "Sensor", "a": 5, "b": "urn:ngsi-ld:null"}]
    )
    assert r.status_code == 204
    got = client.get(f"{NGSI}/entities/{ids(2)[0]}").json()
    assert got["a"]["value"] == 5 and "b" not in got


def test_batch_query(client):
    client.post(f"{OPS}/create", json=[entity(i, "Sensor", v=n) for n, i in enumerate(ids(5))])
    r = client.post(
        f"{OPS}/query?count=true",
        json={"type": "Query", "entities": [{"type": "Sensor"}], "q": "v>=2", "attrs": ["v"]},
    )
    assert r.status_code == 200
    assert sorted(e["id"] for e in r.json()) == ids(5)[2:]
    assert r.headers["ngsild-results-count"] == "3"
    r = client.post(f"{OPS}/query", json={"type": "Nope"})
    assert r.status_code == 400


def test_batch_delete_takes_ids_whatever_the_content_type(client):
    """The body of a batch delete is an array of ids, not JSON-LD: no @context applies, also
    with Content-Type application/ld+json. An id given twice is deleted once; the second
    time it is not found (207)."""
    client.post(f"{OPS}/create", json=[entity(i, "Sensor") for i in ids(3)])
    ld = {"Content-Type": "application/ld+json"}
    r = client.post(f"{OPS}/delete", json=ids(2), headers=ld)
    assert r.status_code == 204, r.text
    assert client.get(f"{NGSI}/entities/{ids(3)[0]}").status_code == 404
    last = ids(3)[2]
    r = client.post(f"{OPS}/delete", json=[last, last], headers=ld)
    assert r.status_code == 207
    assert r.json()["success"] == [last]
    assert [(e["entityId"], e["error"]["type"]) for e in r.json()["errors"]] == [
        (last, "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound")
    ]
    r = client.post(f"{OPS}/delete", json=[{"id": last}], headers=ld)
    assert r.status_code == 207
    assert r.json()["errors"][0]["error"]["type"].endswith("BadRequestData")


def test_each_entity_of_a_batch_has_its_own_context(client):
    """§6.3.5 entity by entity: in a JSON-LD batch each entity carries its @context (they may
    differ); one whose @context is missing or misplaced fails alone (207)."""
    ld = {"Content-Type": "application/ld+json"}
    ctx_a = {"@context": {"speed": "https://example.org/a#speed"}}
    ctx_b = {"@context": [{"speed": "https://example.org/b#speed"}]}
    body = [
        {**entity(ids(3)[0], "Sensor", speed=1), **ctx_a},
        {**entity(ids(3)[1], "Sensor", speed=2), **ctx_b},
        entity(ids(3)[2], "Sensor", speed=3),  # no @context in a JSON-LD batch
    ]
    r = client.post(f"{OPS}/create", json=body, headers=ld)
    assert r.status_code == 207, r.text
    assert r.json()["success"] == ids(3)[:2]
    errors = r.json()["errors"]
    assert [e["entityId"] for e in errors] == [ids(3)[2]]
    assert errors[0]["error"]["type"].endswith("BadRequestData")
    got = client.get(f"{NGSI}/entities/{ids(3)[0]}").json()
    assert got["https://example.org/a#speed"]["value"] == 1
    got = client.get(f"{NGSI}/entities/{ids(3)[1]}").json()
    assert got["https://example.org/b#speed"]["value"] == 2
    # application/json: a @context member is misplaced, for that entity alone.
    body = [{**entity(ids(5)[3], "Sensor"), **ctx_a}, entity(ids(5)[4], "Sensor")]
    r = client.post(f"{OPS}/upsert", json=body)
    assert r.status_code == 207
    assert r.json()["success"] == [ids(5)[4]]
    assert r.json()["errors"][0]["entityId"] == ids(5)[3]
    assert r.json()["errors"][0]["error"]["type"].endswith("BadRequestData")
    assert client.get(f"{NGSI}/entities/{ids(5)[3]}").status_code == 404


def test_an_unavailable_context_fails_its_entities_alone(client):
    """503 LdContextNotAvailable of an entity's @context is that entity's error in the
    BatchOperationResult (§5.2.2); the @context is fetched once for all that name it."""
    ld = {"Content-Type": "application/ld+json"}
    gone = {"@context": "http://nothing.invalid/context.jsonld"}
    body = [
        {**entity(ids(3)[0], "Sensor"), **gone},
        {**entity(ids(3)[1], "Sensor"), **gone},
        {**entity(ids(3)[2], "Sensor"), "@context": CORE},
    ]
    r = client.post(f"{OPS}/create", json=body, headers=ld)
    assert r.status_code == 207, r.text
    assert r.json()["success"] == [ids(3)[2]]
    errors = r.json()["errors"]
    assert [e["entityId"] for e in errors] == ids(3)[:2]
    assert all(e["error"]["type"].endswith("LdContextNotAvailable") for e in errors)


def test_a_context_link_header_with_a_json_ld_batch_is_400(client):
    """The Link header is the request's: with application/ld+json it is the request that is
    wrong (§6.3.5), not one entity."""
    headers = {
        "Content-Type": "application/ld+json",
        "Link": f'<{CORE}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"',
    }
    body = [{**entity(ids(1)[0], "Sensor"), "@context": CORE}]
    r = client.post(f"{OPS}/create", json=body, headers=headers)
    assert r.status_code == 400 and problem_type(r) == "BadRequestData", r.text
    assert client.get(f"{NGSI}/entities/{ids(1)[0]}").status_code == 404
