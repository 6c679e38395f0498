"""@context over HTTP: Link headers with a remote user context, and /jsonldContexts (§6.29)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cidade.app import build_app
from tests.conftest import NGSI, admin_client, problem_type
from tests.hub.test_jsonld import ContextServer

REL = 'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
TERMS = {
    "@context": {
        "AirQualityObserved": "https://smartdatamodels.org/dataModel.Environment/AirQualityObserved",
        "no2": "https://smartdatamodels.org/dataModel.Environment/no2",
    }
}


@pytest.fixture(scope="module")
def server() -> Iterator[ContextServer]:
    srv = ContextServer()
    yield srv
    srv.close()


def link(url: str) -> dict[str, str]:
    return {"Link": f"<{url}>; {REL}"}


def test_link_header_context_expands_and_compacts(client, server):
    path = f"/aqo-{uuid.uuid4().hex}.jsonld"  # one per run: the server outlives each app
    url = server.serve(path, TERMS)
    body = {
        "id": "urn:ngsi-ld:AQO:1",
        "type": "AirQualityObserved",
        "no2": {"type": "Property", "value": 40},
    }
    r = client.post(f"{NGSI}/entities", json=body, headers=link(url))
    assert r.status_code == 201, r.text
    # With the same context: short names, and a Link header pointing back to it.
    got = client.get(f"{NGSI}/entities/urn:ngsi-ld:AQO:1", headers=link(url))
    assert got.json()["type"] == "AirQualityObserved" and got.json()["no2"]["value"] == 40
    assert got.headers["link"] == f"<{url}>; {REL}"
    # Without it: full IRIs.
    plain = client.get(f"{NGSI}/entities/urn:ngsi-ld:AQO:1").json()
    assert plain["type"] == TERMS["@context"]["AirQualityObserved"]
    assert TERMS["@context"]["no2"] in plain
    # Queries resolve type and q names through the context as well.
    r = client.get(f"{NGSI}/entities?type=AirQualityObserved&q=no2>30", headers=link(url))
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:AQO:1"]
    r = client.get(f"{NGSI}/entities?type=AirQualityObserved")  # default-context type: no match
    assert r.json() == []
    # The remote context was fetched once and is listed as Cached.
    assert server.hits[path] == 1
    listed = client.get(f"{NGSI}/jsonldContexts?details=true").json()
    assert any(c["URL"] == url and c["kind"] == "Cached" for c in listed)


def test_unreachable_context_is_503(client):
    r = client.get(f"{NGSI}/entities?type=T", headers=link("http://127.0.0.1:9/nothing.jsonld"))
    assert r.status_code == 503 and problem_type(r) == "LdContextNotAvailable"
    r = client.post(
        f"{NGSI}/entities",
        json={"id": "urn:x:1", "type": "T"},
        headers=link("http://127.0.0.1:9/nothing.jsonld"),
    )
    assert r.status_code == 503
    assert client.get(f"{NGSI}/entities/urn:x:1").status_code == 404


def test_bad_link_header_is_400(client):
    r = client.get(f"{NGSI}/entities?type=T", headers={"Link": "garbage"})
    assert r.status_code == 400


def test_hosted_context_lifecycle_and_persistence(settings):
    with admin_client(build_app(settings)) as client:
        r = client.post(f"{NGSI}/jsonldContexts", json=TERMS)
        assert r.status_code == 201
        url = r.headers["location"]
        local_id = url.rsplit("/", 1)[1]
        assert url.endswith(f"{NGSI}/jsonldContexts/{local_id}")
        served = client.get(f"{NGSI}/jsonldContexts/{local_id}")
        assert served.status_code == 200
        assert served.headers["content-type"] == "application/ld+json"
        assert served.json() == TERMS
        body = {"id": "urn:ngsi-ld:AQO:9", "type": "AirQualityObserved"}
        assert client.post(f"{NGSI}/entities", json=body, headers=link(url)).status_code == 201
        assert client.get(f"{NGSI}/jsonldContexts").json().count(url) == 1
    # A restart keeps hosted contexts.
    with admin_client(build_app(settings)) as client:
        assert client.get(f"{NGSI}/jsonldContexts/{local_id}").json() == TERMS
        got = client.get(f"{NGSI}/entities/urn:ngsi-ld:AQO:9", headers=link(url))
        assert got.json()["type"] == "AirQualityObserved"
        assert client.delete(f"{NGSI}/jsonldContexts/{local_id}").status_code == 204
        r = client.get(f"{NGSI}/jsonldContexts/{local_id}")
        assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
    with admin_client(build_app(settings)) as client:
        assert client.get(f"{NGSI}/jsonldContexts/{local_id}").status_code == 404


def test_hosted_context_bad_input(client):
    r = client.post(f"{NGSI}/jsonldContexts", json={"no": "context"})
    assert r.status_code == 400
    r = client.post(
        f"{NGSI}/jsonldContexts", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert client.get(f"{NGSI}/jsonldContexts?kind=Weird").status_code == 400
    assert client.delete(f"{NGSI}/jsonldContexts/urn:ngsi-ld:jsonldContext:nope").status_code == 404
