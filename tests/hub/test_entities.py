"""§6.4, §6.5: create, retrieve, replace, merge and delete entities."""

from __future__ import annotations

from tests.conftest import CORE, NGSI, problem_type
from tests.hub.helpers import entity, point

E1 = "urn:ngsi-ld:Building:1"


def create(client, body, **kw):
    return client.post(f"{NGSI}/entities", json=body, **kw)


def test_create_returns_201_with_location_and_no_body(client):
    r = create(client, entity(E1, height=12, location=point(-8.61, 41.15)))
    assert r.status_code == 201
    assert r.headers["location"] == f"{NGSI}/entities/{E1}"
    assert r.content == b""
    got = client.get(f"{NGSI}/entities/{E1}")
    assert got.status_code == 200
    body = got.json()
    assert body == {
        "id": E1,
        "type": "Building",
        "height": {"type": "Property", "value": 12},
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [-8.61, 41.15]},
        },
    }
    assert got.headers["content-type"] == "application/json"
    assert got.headers["link"] == (
        f'<{CORE}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    )


def test_create_twice_is_409_already_exists(client):
    assert create(client, entity(E1)).status_code == 201
    r = create(client, entity(E1, height=3))
    assert r.status_code == 409
    assert problem_type(r) == "AlreadyExists"
    assert "height" not in client.get(f"{NGSI}/entities/{E1}").json()


def test_create_rejects_bad_input_and_writes_nothing(client):
    cases = [
        ({"type": "Building"}, "BadRequestData"),  # no id
        ({"id": "not a uri", "type": "Building"}, "BadRequestData"),
        ({"id": E1}, "BadRequestData"),  # no type
        ({"id": E1, "type": "Building", "h": {"type": "Property"}}, "BadRequestData"),
        ({"id": E1, "type": "Building", "h": {"type": "Banana", "value": 1}}, "BadRequestData"),
        (
            {"id": E1, "type": "Building", "r": {"type": "Relationship", "object": "x y"}},
            "BadRequestData",
        ),
        (
            {"id": E1, "type": "Building", "h": {"type": "Property", "value": None}},
            "BadRequestData",
        ),
        (
            {
                "id": E1,
                "type": "Building",
                "location": {
                    "type": "GeoProperty",
                    "value": {"type": "Point", "coordinates": [500, 1]},
                },
            },
            "BadRequestData",
        ),
        (
            {
                "id": E1,
                "type": "Building",
                "h": {"type": "Property", "value": 1, "observedAt": "yesterday"},
            },
            "BadRequestData",
        ),
        ({"id": E1, "type": "Building", "bad name": 1}, "BadRequestData"),
        ([1, 2], "InvalidRequest"),  # not an object: a malformed request
    ]
    for body, kind in cases:
        r = create(client, body)
        assert r.status_code == 400, (body, r.text)
        assert problem_type(r) == kind, body
    assert client.get(f"{NGSI}/entities/{E1}").status_code == 404


def test_invalid_json_is_400_invalid_request(client):
    r = client.post(
        f"{NGSI}/entities", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert problem_type(r) == "InvalidRequest"


def test_wrong_content_type_is_415(client):
    r = client.post(f"{NGSI}/entities", content=b"<x/>", headers={"Content-Type": "text/xml"})
    assert r.status_code == 415


def test_oversized_body_is_413(client):
    big = {"id": E1, "type": "Building", "blob": "x" * (9 * 1024 * 1024)}
    r = create(client, big)
    assert r.status_code == 413
    assert client.get(f"{NGSI}/entities/{E1}").status_code == 404


def test_retrieve_unknown_is_404_resource_not_found(client):
    r = client.get(f"{NGSI}/entities/urn:ngsi-ld:Building:nope")
    assert r.status_code == 404
    assert problem_type(r) == "ResourceNotFound"


def test_retrieve_invalid_id_is_400(client):
    r = client.get(f"{NGSI}/entities/nope")
    assert r.status_code == 400
    assert problem_type(r) == "BadRequestData"


def test_concise_input_and_representations(client):
    body = {
        "id": E1,
        "type": "Building",
        "height": 12,
        "name": {"value": "Casa", "observedAt": "2026-01-01T10:00:00Z"},
        "owner": {"object": "urn:ngsi-ld:Person:1"},
        "location": {"type": "Point", "coordinates": [-8.6, 41.1]},
        "label": {"languageMap": {"pt": "Casa", "en": "House"}},
    }
    assert create(client, body).status_code == 201
    normalized = client.get(f"{NGSI}/entities/{E1}").json()
    assert normalized["height"] == {"type": "Property", "value": 12}
    assert normalized["name"] == {
        "type": "Property",
        "value": "Casa",
        "observedAt": "2026-01-01T10:00:00Z",
    }
    assert normalized["owner"] == {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"}
    assert normalized["location"]["type"] == "GeoProperty"
    assert normalized["label"] == {
        "type": "LanguageProperty",
        "languageMap": {"pt": "Casa", "en": "House"},
    }
    kv = client.get(f"{NGSI}/entities/{E1}?options=keyValues").json()
    assert kv["height"] == 12
    assert kv["owner"] == "urn:ngsi-ld:Person:1"
    assert kv["location"] == {"type": "Point", "coordinates": [-8.6, 41.1]}
    assert client.get(f"{NGSI}/entities/{E1}?format=keyValues").json() == kv
    concise = client.get(f"{NGSI}/entities/{E1}?format=concise").json()
    assert concise["height"] == 12
    assert concise["owner"] == {"object": "urn:ngsi-ld:Person:1"}
    assert concise["name"] == {"value": "Casa", "observedAt": "2026-01-01T10:00:00Z"}
    assert concise["location"] == {"type": "Point", "coordinates": [-8.6, 41.1]}


def test_lang_turns_language_property_into_property(client):
    create(
        client,
        entity(
            E1, label={"type": "LanguageProperty", "languageMap": {"pt": "Rua", "en": "Street"}}
        ),
    )
    body = client.get(f"{NGSI}/entities/{E1}?lang=en").json()
    assert body["label"] == {"type": "Property", "value": "Street", "lang": "en"}
    kv = client.get(f"{NGSI}/entities/{E1}?lang=pt&options=keyValues").json()
    assert kv["label"] == "Rua"


def test_sys_attrs(client):
    create(client, entity(E1, height=1))
    body = client.get(f"{NGSI}/entities/{E1}?options=sysAttrs").json()
    assert body["createdAt"].endswith("Z") and body["modifiedAt"] >= body["createdAt"]
    assert body["height"]["createdAt"].endswith("Z")
    plain = client.get(f"{NGSI}/entities/{E1}").json()
    assert "createdAt" not in plain and "createdAt" not in plain["height"]


def test_attrs_pick_omit(client):
    create(client, entity(E1, a=1, b=2, c=3))
    assert set(client.get(f"{NGSI}/entities/{E1}?attrs=a,b").json()) == {"id", "type", "a", "b"}
    assert set(client.get(f"{NGSI}/entities/{E1}?pick=id,c").json()) == {"id", "c"}
    assert set(client.get(f"{NGSI}/entities/{E1}?omit=type,a").json()) == {"id", "b", "c"}
    assert client.get(f"{NGSI}/entities/{E1}?pick=a,b&omit=type,c").json() == {
        "a": {"type": "Property", "value": 1},
        "b": {"type": "Property", "value": 2},
    }
    r = client.get(f"{NGSI}/entities/{E1}?pick=a&omit=a")
    assert r.status_code == 400


def test_multiple_dataset_ids_and_sub_properties(client):
    create(
        client,
        entity(
            E1,
            temperature=[
                {"type": "Property", "value": 20, "unitCode": "CEL"},
                {
                    "type": "Property",
                    "value": 21,
                    "datasetId": "urn:ngsi-ld:Dataset:roof",
                    "accuracy": {"type": "Property", "value": 0.5},
                },
            ],
        ),
    )
    temps = client.get(f"{NGSI}/entities/{E1}").json()["temperature"]
    assert temps == [
        {"type": "Property", "value": 20, "unitCode": "CEL"},
        {
            "type": "Property",
            "value": 21,
            "datasetId": "urn:ngsi-ld:Dataset:roof",
            "accuracy": {"type": "Property", "value": 0.5},
        },
    ]
    dup = entity(
        "urn:ngsi-ld:Building:2",
        t=[{"type": "Property", "value": 1}, {"type": "Property", "value": 2}],
    )
    assert create(client, dup).status_code == 400


def test_all_attribute_kinds_round_trip(client):
    attrs = {
        "p": {"type": "Property", "value": {"nested": [1, 2]}},
        "g": {
            "type": "GeoProperty",
            "value": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
        },
        "r": {"type": "Relationship", "object": "urn:ngsi-ld:X:1"},
        "l": {"type": "LanguageProperty", "languageMap": {"pt": "a"}},
        "v": {"type": "VocabProperty", "vocab": "Residential"},
        "lp": {"type": "ListProperty", "valueList": [1, "a", True]},
        "lr": {"type": "ListRelationship", "objectList": [{"object": "urn:ngsi-ld:X:2"}]},
        "j": {"type": "JsonProperty", "json": {"any": ["json", None]}},
    }
    assert create(client, {"id": E1, "type": "Building", **attrs}).status_code == 201
    got = client.get(f"{NGSI}/entities/{E1}").json()
    for name, value in attrs.items():
        assert got[name] == value, name


def test_delete_entity(client):
    create(client, entity(E1))
    assert client.delete(f"{NGSI}/entities/{E1}").status_code == 204
    assert client.get(f"{NGSI}/entities/{E1}").status_code == 404
    r = client.delete(f"{NGSI}/entities/{E1}")
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"


def test_replace_entity_keeps_created_at(client):
    create(client, entity(E1, a=1, b=2))
    before = client.get(f"{NGSI}/entities/{E1}?options=sysAttrs").json()
    r = client.put(
        f"{NGSI}/entities/{E1}", json={"type": "House", "c": {"type": "Property", "value": 3}}
    )
    assert r.status_code == 204
    after = client.get(f"{NGSI}/entities/{E1}?options=sysAttrs").json()
    assert after["type"] == "House" and "a" not in after and after["c"]["value"] == 3
    assert after["createdAt"] == before["createdAt"]
    assert client.put(f"{NGSI}/entities/urn:x:none", json={"type": "T"}).status_code == 404
    bad = client.put(f"{NGSI}/entities/{E1}", json={"id": "urn:other:1", "type": "T"})
    assert bad.status_code == 400


def test_merge_entity(client):
    create(
        client,
        entity(
            E1,
            a=1,
            b={"type": "Property", "value": 2, "q": {"type": "Property", "value": "x"}},
            c=3,
        ),
    )
    r = client.patch(
        f"{NGSI}/entities/{E1}",
        json={"a": 10, "b": {"type": "Property", "value": 20}, "c": "urn:ngsi-ld:null", "d": 4},
    )
    assert r.status_code == 204
    got = client.get(f"{NGSI}/entities/{E1}").json()
    assert got["a"]["value"] == 10
    assert got["b"] == {"type": "Property", "value": 20, "q": {"type": "Property", "value": "x"}}
    assert "c" not in got
    assert got["d"]["value"] == 4
    r = client.patch(
        f"{NGSI}/entities/{E1}",
        content=b'{"a": 11}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 204
    assert client.patch(f"{NGSI}/entities/urn:x:none", json={"a": 1}).status_code == 404


def test_json_ld_in_and_out(client):
    ctx = {"Building": "https://example.org/Building", "height": "https://example.org/height"}
    r = client.post(
        f"{NGSI}/entities",
        json={"@context": [ctx, CORE], **entity(E1, height=5)},
        headers={"Content-Type": "application/ld+json"},
    )
    assert r.status_code == 201, r.text
    # Read back without that context: full IRIs.
    plain = client.get(f"{NGSI}/entities/{E1}").json()
    assert plain["type"] == "https://example.org/Building"
    assert plain["https://example.org/height"]["value"] == 5
    ld = client.get(f"{NGSI}/entities/{E1}", headers={"Accept": "application/ld+json"})
    assert ld.headers["content-type"] == "application/ld+json"
    assert ld.json()["@context"] == CORE
    assert "link" not in ld.headers
    # @context in a JSON body is an error; a Link header with ld+json is too.
    r = client.post(
        f"{NGSI}/entities",
        json={"@context": CORE, **entity("urn:x:2")},
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    r = client.post(
        f"{NGSI}/entities",
        json=entity("urn:x:3"),
        headers={"Content-Type": "application/ld+json"},
    )
    assert r.status_code == 400


def test_geojson_representation(client):
    create(client, entity(E1, height=3, location=point(-8.6, 41.1)))
    r = client.get(f"{NGSI}/entities/{E1}", headers={"Accept": "application/geo+json"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/geo+json"
    feature = r.json()
    assert feature["type"] == "Feature" and feature["id"] == E1
    assert feature["geometry"] == {"type": "Point", "coordinates": [-8.6, 41.1]}
    assert feature["properties"]["height"]["value"] == 3


def test_not_acceptable(client):
    create(client, entity(E1))
    r = client.get(f"{NGSI}/entities/{E1}", headers={"Accept": "text/html"})
    assert r.status_code == 406


def test_unknown_route_and_method_give_problem_details(client):
    r = client.get(f"{NGSI}/nothing-here")
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
    r = client.post(f"{NGSI}/entityOperations/query/urn:x:1")
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
    r = client.get(f"{NGSI}/entityOperations/create")
    assert r.status_code == 405 and problem_type(r) == "MethodNotAllowed"
    assert r.headers["allow"] == "POST"


def test_nul_refused(client):
    """Neither store can hold NUL (PostgreSQL text and jsonb cannot), so the API refuses it
    everywhere with a 400 and stores nothing, rather than answer 500 on one store."""
    assert create(client, entity(E1, name="a")).status_code == 201
    r = client.post(
        f"{NGSI}/entities",
        content=b'{"id": "urn:x:2", "type": "T", "name": {"type": "Property", "value": "a\\u0000"}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and problem_type(r) == "BadRequestData", r.text
    r = client.patch(
        f"{NGSI}/entities/{E1}/attrs",
        content=b'{"n\\u0000": {"type": "Property", "value": 1}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and problem_type(r) == "BadRequestData", r.text
    # An escaped backslash followed by "u0000" is just text, not a NUL.
    r = client.patch(
        f"{NGSI}/entities/{E1}/attrs",
        content=b'{"name": {"type": "Property", "value": "\\\\u0000"}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 204, r.text
    for url in (f"{NGSI}/entities?type=T&q=name==%22%00%22", f"{NGSI}/entities/urn:x:%00"):
        r = client.get(url)
        assert r.status_code == 400 and problem_type(r) == "BadRequestData", r.text
    assert client.get(f"{NGSI}/entities/urn:x:2").status_code == 404
    assert client.get(f"{NGSI}/entities/{E1}").json()["name"]["value"] == "\\u0000"


def test_a_multi_attribute_in_key_values_lists_its_datasets(client):
    # §4.5.4: each instance's value under its datasetId, "@none" for the default instance.
    name = [
        {"type": "Property", "value": "Tower"},
        {"type": "Property", "value": "Tour", "datasetId": "urn:ngsi-ld:Dataset:fr"},
    ]
    height = {"type": "Property", "value": 3}
    body = {"id": "urn:ngsi-ld:Building:multi", "type": "Building", "name": name, "height": height}
    assert client.post("/ngsi-ld/v1/entities", json=body).status_code == 201
    got = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Building:multi?format=keyValues").json()
    assert got["name"] == {"dataset": {"@none": "Tower", "urn:ngsi-ld:Dataset:fr": "Tour"}}
    assert got["height"] == 3
