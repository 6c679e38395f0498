"""§5.9, §5.10 (§6.8, §6.9): context source registrations over HTTP on both stores: register,
retrieve, query, update, delete; the errors; JSON-LD expansion with the request's @context.
Their subscriptions and notifications: test_csource_subscriptions.py."""

from __future__ import annotations

import copy

import pytest

from cidade.config import Settings
from tests.conftest import LOOPBACK, NGSI, make_settings, problem_type

REGS = f"{NGSI}/csourceRegistrations"
CTX = {"ex": "https://example.org/ns#", "Vehicle": "ex:Vehicle", "speed": "ex:speed"}
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
LD = {"Content-Type": "application/ld+json"}


@pytest.fixture
def settings(store_url: str) -> Settings:
    return make_settings(store=store_url, max_page_size=1000, private_networks=LOOPBACK)


def registration(rid: str = "urn:ngsi-ld:ContextSourceRegistration:r1", **extra) -> dict:
    body = {
        "id": rid,
        "type": "ContextSourceRegistration",
        "information": [
            {
                "entities": [{"id": "urn:ngsi-ld:Vehicle:A456", "type": "Vehicle"}],
                "propertyNames": ["speed", "brandName"],
                "relationshipNames": ["isParked"],
            },
            {"entities": [{"idPattern": ".*downtown$", "type": "OffStreetParking"}]},
        ],
        "endpoint": "http://my.csource.org:1026",
        "@context": [CTX, CORE],
    }
    body.update(extra)
    return body


def test_register_retrieve_delete(client):
    r = client.post(REGS, json=registration(), headers=LD)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:r1"
    assert r.content == b""
    # Without the @context the names read as IRIs (or the core's default vocabulary's terms).
    got = client.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:r1")
    assert got.status_code == 200, got.text
    reg = got.json()
    assert reg["type"] == "ContextSourceRegistration"
    assert reg["information"][0] == {
        "entities": [{"id": "urn:ngsi-ld:Vehicle:A456", "type": "https://example.org/ns#Vehicle"}],
        "propertyNames": ["https://example.org/ns#speed", "brandName"],
        "relationshipNames": ["isParked"],
    }
    assert reg["endpoint"] == "http://my.csource.org:1026"
    # §5.2.9 defaults
    assert reg["mode"] == "inclusive" and reg["operations"] == ["federationOps"]
    assert "createdAt" not in reg
    # With it, the terms come back.
    got = client.get(
        f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:r1?options=sysAttrs",
        headers={"Accept": "application/ld+json"},
    )
    # A Link header names a URL: the inline @context cannot be sent that way, so compare IRIs
    # through the ld+json answer's own @context instead.
    assert got.json()["@context"]
    assert "createdAt" in got.json() and "modifiedAt" in got.json()
    assert client.delete(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:r1").status_code == 204
    r = client.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:r1")
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
    r = client.delete(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:r1")
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"


def test_trailing_slash_and_generated_id(client):
    body = registration()
    del body["id"]
    r = client.post(f"{REGS}/", json=body, headers=LD)
    assert r.status_code == 201, r.text
    rid = r.headers["location"].rsplit("/", 1)[1]
    assert rid.startswith("urn:ngsi-ld:ContextSourceRegistration:")
    assert client.get(f"{REGS}/{rid}/").json()["id"] == rid
    # The collection has no PATCH or DELETE: an id is missing (405).
    assert client.patch(f"{REGS}/", json={"endpoint": "http://x.org"}).status_code == 405
    assert client.delete(f"{REGS}/").status_code == 405


def test_already_exists(client):
    assert client.post(REGS, json=registration(), headers=LD).status_code == 201
    r = client.post(REGS, json=registration(), headers=LD)
    assert r.status_code == 409 and problem_type(r) == "AlreadyExists"


@pytest.mark.parametrize(
    "change",
    [
        {"information": None},
        {"information": []},
        {"information": [{}]},
        {"information": [{"entities": [{"id": "urn:x:1"}]}]},  # EntityInfo without type
        {"information": [{"entities": [{"type": "T", "idPattern": "("}]}]},
        {"information": [{"entities": [{"type": "T", "id": "not a uri"}]}]},
        {"information": [{"unknown": 1}]},
        {"endpoint": None},
        {"endpoint": "not a url"},
        {"endpoint": "ftp://example.org/x"},
        {"type": "Registration"},
        {"id": "no uri"},
        {"expiresAt": "2018-11-29T14:53:15Z"},
        {"expiresAt": "soon"},
        {"mode": "sometimes"},
        {"operations": ["fly"]},
        {"operations": []},
        {"location": {"type": "Point", "coordinates": [500, 0]}},
        {"observationInterval": {"endAt": "2020-01-01T00:00:00Z"}},
        {"managementInterval": {"startAt": "2021-01-01T00:00:00Z", "endAt": "2020-01-01T00:00Z"}},
        {"contextSourceInfo": [{"key": "a"}]},
        {"refreshRate": "every minute"},
        {"management": {"timeout": -1}},
        {"registrationName": 5},
        {"scope": 5},
        {"someProperty": None},
    ],
)
def test_invalid_registrations_are_refused(client, change):
    body = registration()
    body.update(change)
    r = client.post(REGS, json=body, headers=LD)
    assert r.status_code == 400, (change, r.text)
    assert problem_type(r) == "BadRequestData" and r.json()["title"]
    assert client.get(f"{REGS}?type=OffStreetParking").json() == []


def test_json_body_errors(client):
    body = registration()
    # application/json with an @context in the body, application/ld+json without one
    r = client.post(REGS, json=body)
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    del body["@context"]
    r = client.post(REGS, json=body, headers=LD)
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    r = client.post(REGS, content=b'{"id": ,}', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and problem_type(r) == "InvalidRequest"
    # An id that is not a URI, in the path
    for method in ("GET", "DELETE"):
        r = client.request(method, f"{REGS}/invalidUri")
        assert r.status_code == 400 and problem_type(r) == "BadRequestData"


def test_application_json_with_link_header(client):
    # A hosted @context (§5.13) is one a Link header can name.
    r = client.post(f"{NGSI}/jsonldContexts", json={"@context": CTX})
    assert r.status_code == 201, r.text
    [info] = client.get(f"{NGSI}/jsonldContexts?kind=Hosted&details=true").json()
    url = info["URL"]
    body = registration()
    del body["@context"]
    link = f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    r = client.post(REGS, json=body, headers={"Link": link})
    assert r.status_code == 201, r.text
    reg = client.get(f"{REGS}/{body['id']}", headers={"Link": link}).json()
    assert reg["information"][0]["entities"][0]["type"] == "Vehicle"
    assert reg["information"][0]["propertyNames"] == ["speed", "brandName"]
    reg = client.get(f"{REGS}/{body['id']}").json()
    assert reg["information"][0]["entities"][0]["type"] == "https://example.org/ns#Vehicle"


def test_context_source_properties_and_members_round_trip(client):
    body = registration(
        registrationName="buses of Porto",
        description="a test",
        location={"type": "Point", "coordinates": [-8.521, 41.2]},
        observationInterval={"startAt": "2020-08-01T22:07:00Z", "endAt": "2035-08-01T21:07:00Z"},
        managementInterval={"startAt": "2020-08-01T22:07:00Z"},
        expiresAt="2035-11-29T14:53:15Z",
        contextSourceInfo=[{"key": "k", "value": "v"}],
        scope="/Porto",
        mode="exclusive",
        operations=["queryEntity", "queryTemporal", "updateOps"],
        refreshRate="PT1M",
        management={"localOnly": True, "timeout": 1000},
        csourceProperty1="aValue",
        csourceProperty2={"nested": [1, 2]},
    )
    assert client.post(REGS, json=body, headers=LD).status_code == 201
    reg = client.get(f"{REGS}/{body['id']}").json()
    for key in (
        "registrationName",
        "description",
        "location",
        "observationInterval",
        "managementInterval",
        "expiresAt",
        "contextSourceInfo",
        "mode",
        "operations",
        "refreshRate",
        "management",
        "csourceProperty1",
        "csourceProperty2",
    ):
        assert reg[key] == body[key], key
    assert reg["scope"] == ["/Porto"]


def test_update(client):
    body = registration(expiresAt="2035-11-29T14:53:15Z", extra="x")
    client.post(REGS, json=body, headers=LD)
    url = f"{REGS}/{body['id']}"
    r = client.patch(url, json={"endpoint": "http://my.new.csource.org:1026"})
    assert r.status_code == 204, r.text
    reg = client.get(url).json()
    assert reg["endpoint"] == "http://my.new.csource.org:1026"
    assert reg["information"][0]["propertyNames"] == ["https://example.org/ns#speed", "brandName"]
    # null removes an optional member
    assert client.patch(url, json={"expiresAt": None, "extra": None}).status_code == 204
    reg = client.get(url).json()
    assert "expiresAt" not in reg and "extra" not in reg
    # the whole information replaced, names expanded with the fragment's @context
    r = client.patch(
        url,
        json={"information": [{"entities": [{"type": "Vehicle"}]}], "@context": [CTX, CORE]},
        headers=LD,
    )
    assert r.status_code == 204
    assert client.get(url).json()["information"] == [
        {"entities": [{"type": "https://example.org/ns#Vehicle"}]}
    ]


@pytest.mark.parametrize(
    "fragment",
    [
        {"information": None},
        {"endpoint": None},
        {"type": "building"},
        {"id": "urn:ngsi-ld:ContextSourceRegistration:other"},
        {"mode": "never"},
        {"expiresAt": "2001-01-01T00:00:00Z"},
        {},
    ],
)
def test_invalid_updates_change_nothing(client, fragment):
    client.post(REGS, json=registration(), headers=LD)
    url = f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:r1"
    before = client.get(url).json()
    r = client.patch(url, json=fragment)
    assert r.status_code == 400 and problem_type(r) == "BadRequestData", r.text
    assert client.get(url).json() == before


def test_update_errors(client):
    client.post(REGS, json=registration(), headers=LD)
    r = client.patch(
        f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:none", json={"mode": "auxiliary"}
    )
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
    r = client.patch(f"{REGS}/invalidUri", json={"mode": "auxiliary"})
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    r = client.patch(
        f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:r1",
        content=b'{"mode": "auxiliary",,}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and problem_type(r) == "InvalidRequest"


def test_tenants_are_apart(client):
    r = client.post(REGS, json=registration(), headers={**LD, "NGSILD-Tenant": "porto"})
    assert r.status_code == 201
    url = f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:r1"
    assert client.get(url, headers={"NGSILD-Tenant": "porto"}).status_code == 200
    assert client.get(url).status_code == 404
    r = client.get(url, headers={"NGSILD-Tenant": "braga"})
    assert r.status_code == 404


# -- query (§5.10.2) ----------------------------------------------------------------------------


@pytest.fixture
def three(client):
    first = registration("urn:ngsi-ld:ContextSourceRegistration:1")
    second = registration(
        "urn:ngsi-ld:ContextSourceRegistration:2",
        information=[
            {
                "entities": [{"type": "Building"}],
                "propertyNames": ["name", "subCategory"],
                "relationshipNames": ["locatedAt"],
            }
        ],
    )
    third = registration(
        "urn:ngsi-ld:ContextSourceRegistration:3",
        information=[{"propertyNames": ["name"]}],
        location={"type": "Point", "coordinates": [-8.521, 41.2]},
        csourceProperty1="aValue",
        observationInterval={"startAt": "2020-08-01T22:07:00Z", "endAt": "2021-08-01T21:07:00Z"},
    )
    fourth = registration(
        "urn:ngsi-ld:ContextSourceRegistration:4",
        information=[{"entities": [{"type": "Building"}]}],
        managementInterval={"startAt": "2020-08-01T22:07:00Z", "endAt": "2021-08-01T21:07:00Z"},
    )
    for body in (first, second, third, fourth):
        assert client.post(REGS, json=body, headers=LD).status_code == 201
    return client


def ids(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [reg["id"].rsplit(":", 1)[1] for reg in r.json()]


def test_query_by_type_attrs_and_ids(three):
    c = three
    assert ids(c.get(f"{REGS}?type=Building")) == ["2", "4"]
    # a RegistrationInfo without entities provides every entity (of what it names); one
    # without attribute names provides every attribute
    # (1's second one names no attribute; 3's observation interval ended: 3 gives no latest)
    assert ids(c.get(f"{REGS}?attrs=name")) == ["1", "2", "4"]
    assert ids(c.get(f"{REGS}?type=Building&attrs=name,locatedAt")) == ["2", "4"]
    assert ids(c.get(f"{REGS}?type=Building&attrs=speed")) == ["4"]
    assert ids(c.get(f"{REGS}?type=https://example.org/ns%23Vehicle")) == ["1"]
    assert ids(c.get(f"{REGS}?type=OffStreetParking&idPattern=.*downtown$")) == ["1"]
    assert ids(c.get(f"{REGS}?id=urn:ngsi-ld:Vehicle:A456")) == ["1", "2", "4"]
    assert (
        ids(c.get(f"{REGS}?id=urn:ngsi-ld:Vehicle:B1&type=https://example.org/ns%23Vehicle")) == []
    )
    assert ids(c.get(f"{REGS}?id=urn:ngsi-ld:OffStreetParking:downtown")) == ["1", "2", "4"]
    assert ids(c.get(f"{REGS}?type=Building;Shop")) == []
    assert ids(c.get(f"{REGS}?type=Building|Shop")) == ["2", "4"]


def test_query_q_geo_temporal(three):
    c = three
    past = "timerel=before&timeAt=2021-08-01T22:00:00Z"
    assert ids(c.get(f'{REGS}?q=csourceProperty1=="aValue"&{past}')) == ["3"]
    assert ids(c.get(f'{REGS}?csf=csourceProperty1=="other"&{past}')) == []
    near = "georel=near;maxDistance==2000&geometry=Point&coordinates=[-8.503,41.202]"
    assert ids(c.get(f"{REGS}?{near}&{past}")) == ["3"]
    near = "georel=near;maxDistance==1000&geometry=Point&coordinates=[-8.503,41.202]"
    assert ids(c.get(f"{REGS}?{near}&{past}")) == []
    # the temporal query is matched against observationInterval: only 3 has one (and no
    # entities: it provides every type)
    assert ids(c.get(f"{REGS}?type=Building&{past}")) == ["3"]
    assert ids(c.get(f"{REGS}?attrs=name&{past}&timeproperty=observedAt")) == ["3"]
    assert ids(c.get(f"{REGS}?type=Building&{past}&timeproperty=createdAt")) == ["4"]
    after = "timerel=after&timeAt=2021-09-01T00:00:00Z"
    assert ids(c.get(f"{REGS}?attrs=name&{after}")) == []
    between = "timerel=between&timeAt=2021-01-01T00:00:00Z&endTimeAt=2022-01-01T00:00:00Z"
    assert ids(c.get(f"{REGS}?type=Building&{between}&timeproperty=modifiedAt")) == ["4"]


def test_query_paging(three):
    c = three
    r = c.get(f"{REGS}?type=Building&limit=1&offset=1&count=true")
    assert ids(r) == ["4"]
    assert r.headers["ngsild-results-count"] == "2"
    assert 'rel="prev"' in r.headers["link"]
    assert ids(c.get(f"{REGS}?type=Building&limit=1")) == ["2"]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "id=invalidUri",
        "q=(invalidQuery",
        "georel=within",
        "timerel=before",
        "timerel=sometime&timeAt=2021-01-01T00:00:00Z",
        "type=Building&timerel=before&timeAt=2021-01-01T00:00:00Z&timeproperty=deletedAt",
        "type=Building&georel=near;maxDistance==10&geometry=Point&coordinates=[0,0]"
        "&geoproperty=position",
        "idPattern=(",
        "type=Building&limit=-1",
    ],
)
def test_query_errors(three, query):
    r = three.get(f"{REGS}?{query}")
    assert r.status_code == 400, (query, r.text)
    assert problem_type(r) == "BadRequestData" and r.json()["title"]


def test_unknown_parameter_is_invalid_request(three):
    r = three.get(f"{REGS}?type=Building&typ=Building")
    assert r.status_code == 400 and problem_type(r) == "InvalidRequest"


def test_expired_registrations_are_not_found_by_queries(client):
    body = copy.deepcopy(registration(expiresAt="2035-01-01T00:00:00Z"))
    client.post(REGS, json=body, headers=LD)
    assert ids(client.get(f"{REGS}?type=OffStreetParking")) == ["r1"]
