"""@context over HTTP: Link headers with a remote user context, and /jsonldContexts (§6.29)."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator

import pytest

from cidade.app import build_app
from cidade.config import Settings
from tests.conftest import CORE, LOOPBACK, NGSI, admin_client, make_settings, problem_type
from tests.hub.test_jsonld import ContextServer

REL = 'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
TERMS = {
    "@context": {
        "AirQualityObserved": "https://smartdatamodels.org/dataModel.Environment/AirQualityObserved",
        "no2": "https://smartdatamodels.org/dataModel.Environment/no2",
    }
}


@pytest.fixture
def settings(store_url: str) -> Settings:
    # The context server is on loopback, which these tests allow (CIDADE_PRIVATE_NETWORKS).
    return make_settings(store=store_url, max_page_size=1000, private_networks=LOOPBACK)


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


def quoted(context_id: str) -> str:
    return urllib.parse.quote(context_id, safe="")


def test_hosted_context_lifecycle_and_persistence(settings):
    with admin_client(build_app(settings)) as client:
        r = client.post(f"{NGSI}/jsonldContexts", json=TERMS)
        assert r.status_code == 201 and not r.content
        location = r.headers["location"]  # relative, as for every other resource
        assert location.startswith(f"{NGSI}/jsonldContexts/urn:ngsi-ld:jsonldContext:")
        local_id = location.rsplit("/", 1)[1]
        served = client.get(location)
        assert served.status_code == 200
        assert served.headers["content-type"] == "application/json"
        assert served.json() == TERMS
        ld = client.get(location, headers={"Accept": "application/ld+json"})
        assert ld.headers["content-type"] == "application/ld+json" and ld.json() == TERMS
        [info] = client.get(f"{NGSI}/jsonldContexts?kind=Hosted&details=true").json()
        url = info["URL"]
        assert url.endswith(location) and url.startswith("http")
        assert info["localId"] == local_id and info["numberOfHits"] == 0
        body = {"id": "urn:ngsi-ld:AQO:9", "type": "AirQualityObserved"}
        assert client.post(f"{NGSI}/entities", json=body, headers=link(url)).status_code == 201
        assert client.get(f"{NGSI}/jsonldContexts").json().count(url) == 1
        details = client.get(f"{location}?details=true").json()
        assert details["numberOfHits"] == 1 and details["kind"] == "Hosted"
        assert set(details) == {"URL", "localId", "kind", "createdAt", "lastUsage", "numberOfHits"}
    # A restart keeps hosted contexts, and their usage counts.
    with admin_client(build_app(settings)) as client:
        assert client.get(f"{NGSI}/jsonldContexts/{local_id}").json() == TERMS
        assert client.get(f"{location}?details=true").json()["numberOfHits"] == 1
        got = client.get(f"{NGSI}/entities/urn:ngsi-ld:AQO:9", headers=link(url))
        assert got.json()["type"] == "AirQualityObserved"
        assert client.delete(f"{NGSI}/jsonldContexts/{local_id}").status_code == 204
        r = client.get(f"{NGSI}/jsonldContexts/{local_id}")
        assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
    with admin_client(build_app(settings)) as client:
        assert client.get(f"{NGSI}/jsonldContexts/{local_id}").status_code == 404


def test_relative_context_reference_in_a_body(client):
    """A JSON-LD body may name its @context relative to the request URL (JSON-LD 1.1 API
    §4.1.2): the Location of an added @context works as the @context of a request."""
    location = client.post(f"{NGSI}/jsonldContexts", json=TERMS).headers["location"]
    body = {
        "id": "urn:ngsi-ld:AQO:rel",
        "type": "AirQualityObserved",
        "no2": {"type": "Property", "value": 3},
        "@context": location,
    }
    r = client.post(f"{NGSI}/entities", json=body, headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 201, r.text
    plain = client.get(f"{NGSI}/entities/urn:ngsi-ld:AQO:rel").json()
    assert plain["type"] == TERMS["@context"]["AirQualityObserved"]
    assert client.get(f"{location}?details=true").json()["numberOfHits"] == 1


@pytest.mark.parametrize("reference", ["|x", "a b", "ctx{1}.jsonld", "x\u0085y", "a<b>"])
def test_a_context_reference_that_is_no_iri_is_a_bad_request(client, reference):
    """Found by a served fuzz run: a body's @context "|..." was resolved against the request URL
    and fetched (503 LdContextNotAvailable, as if a server were down). Characters no IRI holds
    (RFC 3987) make it a bad request, and nothing is fetched or stored."""
    body = {"id": "urn:ngsi-ld:AQO:not-iri", "type": "AirQualityObserved", "@context": reference}
    headers = {"Content-Type": "application/ld+json"}
    r = client.post(f"{NGSI}/entities", json=body, headers=headers)
    assert r.status_code == 400, r.text
    assert problem_type(r) == "BadRequestData"
    assert client.get(f"{NGSI}/entities/urn:ngsi-ld:AQO:not-iri").status_code == 404


def test_cached_context_by_url(client, server):
    path = f"/cached-{uuid.uuid4().hex}.jsonld"
    url = server.serve(path, TERMS)
    body = {"id": "urn:ngsi-ld:AQO:c1", "type": "AirQualityObserved"}
    assert client.post(f"{NGSI}/entities", json=body, headers=link(url)).status_code == 201
    r = client.get(f"{NGSI}/jsonldContexts/{quoted(url)}?details=true")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["kind"] == "Cached" and info["URL"] == url and info["numberOfHits"] == 1
    assert client.get(f"{NGSI}/jsonldContexts?kind=Cached").json()[1:] == [url]
    assert client.get(f"{NGSI}/jsonldContexts?kind=Hosted").json() == []
    # Its content is not served (§5.13.4), only its metadata.
    r = client.get(f"{NGSI}/jsonldContexts/{quoted(url)}")
    assert r.status_code == 422 and problem_type(r) == "OperationNotSupported"

    # Reload downloads it again; when that fails, 503 and the copy stays.
    newer = {"@context": {**TERMS["@context"], "no2": "https://example.org/no2"}}
    server.serve(path, newer)
    r = client.delete(f"{NGSI}/jsonldContexts/{quoted(url)}?reload=true")
    assert r.status_code == 204
    assert server.hits[path] == 2
    server.serve(path, b"gone", status=404)
    r = client.delete(f"{NGSI}/jsonldContexts/{quoted(url)}?reload=true")
    assert r.status_code == 503 and problem_type(r) == "LdContextNotAvailable"
    r = client.get(f"{NGSI}/jsonldContexts/{info['localId']}?details=true")
    assert r.status_code == 200 and r.json()["kind"] == "Cached"
    got = client.get(f"{NGSI}/entities?type=AirQualityObserved&attrs=no2", headers=link(url))
    assert got.status_code == 200  # resolved from the kept copy, no fetch
    assert server.hits[path] == 3

    # Delete: gone.
    assert client.delete(f"{NGSI}/jsonldContexts/{quoted(url)}").status_code == 204
    r = client.get(f"{NGSI}/jsonldContexts/{quoted(url)}?details=true")
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"


def test_core_context_cannot_be_deleted(client):
    for core in (CORE, "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld"):
        for query in ("", "?reload=false"):
            r = client.delete(f"{NGSI}/jsonldContexts/{quoted(core)}{query}")
            assert r.status_code == 400 and problem_type(r) == "BadRequestData"
        assert client.delete(f"{NGSI}/jsonldContexts/{quoted(core)}?reload=true").status_code == 204
        r = client.get(f"{NGSI}/jsonldContexts/{quoted(core)}?details=true")
        assert r.status_code == 200 and r.json()["URL"] == CORE
    assert client.get(f"{NGSI}/jsonldContexts").json() == [CORE]


def test_unknown_context_ids(client):
    for unknown in ("wrong_id_context", "4318851571441130", "urn:ngsi-ld:jsonldContext:nope"):
        for query in ("", "?details=true"):
            r = client.get(f"{NGSI}/jsonldContexts/{unknown}{query}")
            assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
        for query in ("", "?reload=false"):
            r = client.delete(f"{NGSI}/jsonldContexts/{unknown}{query}")
            assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
    # Reloading needs the URL or id of a downloaded @context.
    r = client.delete(f"{NGSI}/jsonldContexts/wrong_id_context?reload=true")
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    r = client.delete(f"{NGSI}/jsonldContexts/wrong_id_context?reload=xxx")
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    location = client.post(f"{NGSI}/jsonldContexts", json=TERMS).headers["location"]
    r = client.delete(f"{location}?reload=true")  # Hosted: nothing to download
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"


def test_implicitly_created_context(client, server):
    url = server.serve(f"/implicit-{uuid.uuid4().hex}.jsonld", TERMS)
    inline = [url, {"extra": "https://example.org/extra"}]
    sub = {
        "id": "urn:ngsi-ld:Subscription:implicit",
        "type": "Subscription",
        "entities": [{"type": "AirQualityObserved"}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
        "@context": inline,
    }
    r = client.post(
        f"{NGSI}/subscriptions", json=sub, headers={"Content-Type": "application/ld+json"}
    )
    assert r.status_code == 201, r.text
    [info] = client.get(f"{NGSI}/jsonldContexts?kind=ImplicitlyCreated&details=true").json()
    assert info["kind"] == "ImplicitlyCreated" and info["numberOfHits"] == 1
    # The subscription names it, so its notifications and its readers can use it.
    got = client.get(f"{NGSI}/subscriptions/urn:ngsi-ld:Subscription:implicit").json()
    assert got["jsonldContext"] == info["URL"]
    served = client.get(f"{NGSI}/jsonldContexts/{info['localId']}")
    assert served.status_code == 200 and served.json() == {"@context": inline}
    assert url in client.get(f"{NGSI}/jsonldContexts?kind=Cached").json()
    assert info["URL"] not in client.get(f"{NGSI}/jsonldContexts?kind=Hosted").json()
    r = client.delete(f"{NGSI}/jsonldContexts/{info['localId']}?reload=true")
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    assert client.delete(f"{NGSI}/jsonldContexts/{info['localId']}").status_code == 204


def test_hosted_context_bad_input(client):
    r = client.post(f"{NGSI}/jsonldContexts", json={"no": "context"})
    assert r.status_code == 400 and problem_type(r) == "InvalidRequest"
    r = client.post(
        f"{NGSI}/jsonldContexts", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    r = client.post(f"{NGSI}/jsonldContexts", json={"@context": {"bad": 5}})
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    assert client.get(f"{NGSI}/jsonldContexts?kind=Weird").status_code == 400
    assert client.get(f"{NGSI}/jsonldContexts?details=maybe").status_code == 400
    assert client.get(f"{NGSI}/jsonldContexts").json() == [CORE]


def test_malformed_context_url_is_400(client):
    bad = "http://127.0.0.1:9503http://127.0.0.1:9503/api/v1/context.jsonld"
    r = client.post(
        f"{NGSI}/entities",
        json={"id": "urn:x:bad", "type": "T", "@context": bad},
        headers={"Content-Type": "application/ld+json"},
    )
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"


def test_hosted_context_of_remote_urls(client, server):
    """A Hosted @context that is an array of remote @context URLs (the suite's
    @context-cached-valid.json, 050_01_02, 050_04_01, 051_03_01): Add downloads and keeps each
    of them as Cached; the Hosted one is used by its URL; a Cached one is deleted by its URL."""
    tag = uuid.uuid4().hex
    first = server.serve(f"/first-{tag}.jsonld", TERMS)
    second = server.serve(f"/second-{tag}.jsonld", {"@context": {"x": "https://example.org/x"}})
    r = client.post(f"{NGSI}/jsonldContexts", json={"@context": [first, second]})
    assert r.status_code == 201, r.text
    location = r.headers["location"]
    hosted = client.get(f"{location}?details=true").json()
    assert hosted["kind"] == "Hosted" and hosted["numberOfHits"] == 0
    for url in (first, second):
        info = client.get(f"{NGSI}/jsonldContexts/{quoted(url)}?details=true").json()
        assert info["kind"] == "Cached" and info["URL"] == url
    body = {"id": f"urn:ngsi-ld:AQO:{tag}", "type": "AirQualityObserved"}
    r = client.post(f"{NGSI}/entities", json=body, headers=link(hosted["URL"]))
    assert r.status_code == 201, r.text
    assert client.get(f"{location}?details=true").json()["numberOfHits"] == 1
    plain = client.get(f"{NGSI}/entities/{body['id']}").json()
    assert plain["type"] == TERMS["@context"]["AirQualityObserved"]
    # Deleting a Cached one forgets the copy; the Hosted one still works (downloaded again).
    assert client.delete(f"{NGSI}/jsonldContexts/{quoted(first)}").status_code == 204
    assert first not in client.get(f"{NGSI}/jsonldContexts?kind=Cached").json()
    r = client.get(f"{NGSI}/entities/{body['id']}", headers=link(hosted["URL"]))
    assert r.status_code == 200 and r.json()["type"] == "AirQualityObserved"
    assert first in client.get(f"{NGSI}/jsonldContexts?kind=Cached").json()
    assert server.hits[f"/first-{tag}.jsonld"] == 2


def test_hosted_context_naming_an_unreachable_context_is_503(client):
    """Add validates the @context it stores: a remote @context it names that cannot be
    retrieved is 503 LdContextNotAvailable (as for any request), and nothing is stored."""
    r = client.post(
        f"{NGSI}/jsonldContexts", json={"@context": ["http://127.0.0.1:9/gone.jsonld", TERMS]}
    )
    assert r.status_code == 503 and problem_type(r) == "LdContextNotAvailable"
    assert client.get(f"{NGSI}/jsonldContexts").json() == [CORE]


def test_implicitly_created_context_listed_and_counted(client, server):
    """A subscription with a compound @context of two remote URLs (the suite's
    subscription-with-implicitlycreated-contexts.jsonld: 050_03, 051_06, 052_06, 053_07,
    053_08): one ImplicitlyCreated entry, the two URLs Cached, each kind filter listing its own;
    the subscription's creation is its first use, a request naming it by URL the next, and
    serving it none."""
    tag = uuid.uuid4().hex
    first = server.serve(f"/sub-first-{tag}.jsonld", TERMS)
    second = server.serve(f"/sub-second-{tag}.jsonld", {"@context": {"T1": "urn:x:T1"}})
    sub = {
        "id": f"urn:ngsi-ld:Subscription:{tag}",
        "type": "Subscription",
        "entities": [{"type": "T1"}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
        "@context": [first, second],
    }
    r = client.post(
        f"{NGSI}/subscriptions", json=sub, headers={"Content-Type": "application/ld+json"}
    )
    assert r.status_code == 201, r.text
    implicit = client.get(f"{NGSI}/subscriptions/{sub['id']}").json()["jsonldContext"]
    local_id = implicit.rsplit("/", 1)[1]
    for details in ("", "&details=false"):
        listed = client.get(f"{NGSI}/jsonldContexts?kind=ImplicitlyCreated{details}").json()
        assert listed == [implicit]
        cached = client.get(f"{NGSI}/jsonldContexts?kind=Cached{details}").json()
        assert first in cached and second in cached
        assert client.get(f"{NGSI}/jsonldContexts?kind=Hosted{details}").json() == []
        every = client.get(f"{NGSI}/jsonldContexts{details.replace('&', '?')}").json()
        assert {implicit, first, second, CORE} <= set(every)
    served = client.get(f"{NGSI}/jsonldContexts/{local_id}")
    assert served.status_code == 200 and served.json() == {"@context": [first, second]}
    info = client.get(f"{NGSI}/jsonldContexts/{local_id}?details=true").json()
    assert info["kind"] == "ImplicitlyCreated" and info["URL"] == implicit
    assert info["localId"] == local_id and info["numberOfHits"] == 1
    body = {"id": f"urn:ngsi-ld:T1:{tag}", "type": "T1", "@context": implicit}
    r = client.post(f"{NGSI}/entities", json=body, headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 201, r.text
    for _ in range(2):
        info = client.get(f"{NGSI}/jsonldContexts/{local_id}?details=true").json()
        assert info["numberOfHits"] == 2 and info["lastUsage"]
    assert client.get(f"{NGSI}/entities/{body['id']}").json()["type"] == "urn:x:T1"
    # Deleted by its local id (reload is for Cached ones only): gone from every list.
    r = client.delete(f"{NGSI}/jsonldContexts/{local_id}?reload=true")
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    assert client.delete(f"{NGSI}/jsonldContexts/{local_id}").status_code == 204
    assert client.get(f"{NGSI}/jsonldContexts?kind=ImplicitlyCreated").json() == []
    assert implicit not in client.get(f"{NGSI}/jsonldContexts").json()
