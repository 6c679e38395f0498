"""§6.3: what every NGSI-LD operation shares: paths, bodies, media types, query parameters."""

from __future__ import annotations

import re

from cidade.auth.routes import GuardedRoute
from tests.conftest import NGSI, problem_type
from tests.hub.helpers import entity

E1 = "urn:ngsi-ld:Building:1"


def test_every_collection_path_takes_a_trailing_slash(client):
    """The specification writes resource paths with a trailing slash (POST /entities/):
    every route whose path ends in a fixed segment answers both forms, none 404 or 405."""
    collections = [
        r
        for r in client.app.routes
        if isinstance(r, GuardedRoute) and not r.path.endswith("}") and r.path != "/"
    ]
    assert any(r.path == f"{NGSI}/subscriptions" for r in collections)
    for route in collections:
        path = re.sub(r"\{[^}:]*:int\}", "1", route.path)
        path = re.sub(r"\{[^}]*\}", "urn:ngsi-ld:X:1", path) + "/"
        for method in route.methods or ():
            if method == "HEAD":
                continue
            r = client.request(method, path, headers={"Content-Type": "application/json"})
            # A 404 about the resource (no such occurrence) is an answer; the router's is not.
            routed = r.status_code != 405 and "no resource at" not in r.text
            assert routed, (method, path, r.status_code, r.text)


def test_create_and_query_with_trailing_slash(client):
    assert client.post(f"{NGSI}/entities/", json=entity(E1)).status_code == 201
    r = client.get(f"{NGSI}/entities/", params={"type": "Building"})
    assert r.status_code == 200 and [e["id"] for e in r.json()] == [E1]
    r = client.post(f"{NGSI}/entityOperations/delete/", json=[E1])
    assert r.status_code == 204


def test_entity_operation_without_id_is_400(client):
    """PUT, PATCH and DELETE /entities/ (or /entities) name an entity whose id is missing:
    400, not 405 (DELETE /entities is also v1.9's Purge Entities, not offered)."""
    assert client.post(f"{NGSI}/entities", json=entity(E1)).status_code == 201
    for path in (f"{NGSI}/entities/", f"{NGSI}/entities"):
        for method in ("PUT", "PATCH", "DELETE"):
            kw = {} if method == "DELETE" else {"json": {"name": {"type": "Property", "value": 1}}}
            r = client.request(method, path, **kw)
            assert r.status_code == 400, (method, r.text)
            assert problem_type(r) == "BadRequestData"
    assert client.get(f"{NGSI}/entities/{E1}").json()["id"] == E1


def test_unknown_query_parameter_is_invalid_request(client):
    """§6.3.20: a parameter the operation does not define is refused, before anything else
    (a misspelt one would otherwise be answered as if it were not there)."""
    assert client.post(f"{NGSI}/entities", json=entity(E1)).status_code == 201
    one = f"{NGSI}/entities/{E1}"
    calls = [
        ("POST", f"{NGSI}/entities", entity("urn:ngsi-ld:Building:2")),
        ("GET", f"{NGSI}/entities?type=Building", None),
        ("GET", one, None),
        ("PATCH", one, {"name": {"type": "Property", "value": 1}}),
        ("PUT", one, entity(E1)),
        ("POST", f"{one}/attrs", {"name": {"type": "Property", "value": 1}}),
        ("PATCH", f"{one}/attrs", {"name": {"type": "Property", "value": 1}}),
        ("DELETE", f"{one}/attrs/name", None),
        ("POST", f"{NGSI}/entityOperations/upsert", [entity(E1)]),
        ("POST", f"{NGSI}/entityOperations/delete", [E1]),
        ("GET", f"{NGSI}/types", None),
        ("GET", f"{NGSI}/attributes", None),
        ("GET", f"{NGSI}/subscriptions", None),
        ("POST", f"{NGSI}/temporal/entities", entity("urn:ngsi-ld:Building:3")),
        ("GET", f"{NGSI}/temporal/entities?type=Building", None),
        ("DELETE", f"{NGSI}/entities", None),
        ("DELETE", one, None),
    ]
    for method, url, body in calls:
        sep = "&" if "?" in url else "?"
        r = client.request(method, f"{url}{sep}invalidParam=x", json=body)
        assert r.status_code == 400, (method, url, r.text)
        assert problem_type(r) == "InvalidRequest", (method, url)
        assert "invalidParam" in r.json()["detail"]
    # Nothing was done: the entity is as created, the others were not created.
    assert client.get(one).json() == {"id": E1, "type": "Building"}
    assert client.get(f"{NGSI}/entities/urn:ngsi-ld:Building:2").status_code == 404


def test_invalid_options_or_format_is_invalid_request(client):
    assert client.post(f"{NGSI}/entities", json=entity(E1)).status_code == 201
    for query in ("format=invalidFormat", "options=invalidOptions", "options=keyValues,nope"):
        r = client.get(f"{NGSI}/entities/{E1}?{query}")
        assert r.status_code == 400 and problem_type(r) == "InvalidRequest", query


def test_a_body_of_the_wrong_json_type_is_invalid_request(client):
    """An entity operation takes an object; an array, a string or a number is a malformed
    request (InvalidRequest), whatever its media type, before any @context is looked at."""
    assert client.post(f"{NGSI}/entities", json=entity(E1)).status_code == 201
    for body in ([], [entity("urn:ngsi-ld:Building:2")], "x", 1):
        for kind in ("application/json", "application/ld+json"):
            headers = {"Content-Type": kind}
            r = client.post(f"{NGSI}/entities", json=body, headers=headers)
            assert r.status_code == 400 and problem_type(r) == "InvalidRequest", (body, kind)
            r = client.patch(f"{NGSI}/entities/{E1}/attrs", json=body, headers=headers)
            assert r.status_code == 400 and problem_type(r) == "InvalidRequest", (body, kind)
    assert client.get(f"{NGSI}/entities/urn:ngsi-ld:Building:2").status_code == 404


def test_a_request_without_body_is_not_judged_by_its_content_type(client):
    """Client libraries set one Content-Type for a whole session: a body-less request
    with Content-Type application/ld+json needs no @context."""
    ld = {"Content-Type": "application/ld+json"}
    body = entity(E1, name="a")
    assert client.post(f"{NGSI}/entities", json=body).status_code == 201
    assert client.get(f"{NGSI}/entities/{E1}", headers=ld).status_code == 200
    assert client.delete(f"{NGSI}/entities/{E1}/attrs/name", headers=ld).status_code == 204
    assert client.delete(f"{NGSI}/entities/{E1}", headers=ld).status_code == 204
    assert client.get(f"{NGSI}/entities/{E1}").status_code == 404


def test_every_patch_takes_merge_patch_json(client):
    """§6.3.4: a PATCH body may be application/merge-patch+json (its @context from the Link
    header, as for application/json)."""
    assert client.post(f"{NGSI}/entities", json=entity(E1, a=1)).status_code == 201
    merge_patch = {"Content-Type": "application/merge-patch+json"}
    one = f"{NGSI}/entities/{E1}"
    r = client.patch(f"{one}/attrs/a", json={"value": 2}, headers=merge_patch)
    assert r.status_code == 204, r.text
    r = client.patch(
        f"{one}/attrs", json={"a": {"type": "Property", "value": 3}}, headers=merge_patch
    )
    assert r.status_code == 204, r.text
    r = client.patch(one, json={"b": {"type": "Property", "value": 4}}, headers=merge_patch)
    assert r.status_code == 204, r.text
    got = client.get(one).json()
    assert got["a"]["value"] == 3 and got["b"]["value"] == 4
    # Not for the operations that are no PATCH.
    r = client.post(f"{one}/attrs", json={"c": 1}, headers=merge_patch)
    assert r.status_code == 415
