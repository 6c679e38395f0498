"""CIDADE_HISTORY_AFTER_DELETE: the history of a deleted entity stays readable through the
temporal API (retrieve and query), on both stores, until it is deleted or expires."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from cidade.app import build_app
from tests.conftest import NGSI, admin_client, make_settings, problem_type

TEMPORAL = f"{NGSI}/temporal/entities"
A = "urn:ngsi-ld:AirQualityObserved:a"
B = "urn:ngsi-ld:AirQualityObserved:b"
C = "urn:ngsi-ld:AirQualityObserved:c"


@pytest.fixture
def client(store_url: str) -> Iterator[TestClient]:
    settings = make_settings(store=store_url, history_after_delete=True)
    with admin_client(build_app(settings), raise_server_exceptions=False) as c:
        yield c


def station(client, eid: str, *values: int, kind: str = "AirQualityObserved") -> None:
    body = {
        "id": eid,
        "type": kind,
        "no2": [
            {"type": "Property", "value": v, "observedAt": f"2026-03-0{n + 1}T10:00:00Z"}
            for n, v in enumerate(values)
        ],
    }
    assert client.post(TEMPORAL, json=body).status_code == 201


def test_retrieve_serves_the_history_of_a_deleted_entity(client):
    station(client, A, 10, 20)
    assert client.delete(f"{NGSI}/entities/{A}").status_code == 204
    assert client.get(f"{NGSI}/entities/{A}").status_code == 404
    r = client.get(f"{TEMPORAL}/{A}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "AirQualityObserved"
    assert [i["value"] for i in body["no2"]] == [10, 20]
    assert body["deletedAt"].endswith("Z")
    r = client.get(f"{TEMPORAL}/{A}?options=temporalValues&lastN=1")
    assert r.json()["no2"]["values"] == [[20, "2026-03-02T10:00:00Z"]]


def test_gone_without_history_is_still_404(client):
    r = client.get(f"{TEMPORAL}/urn:ngsi-ld:AirQualityObserved:never")
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
    station(client, A, 10)
    assert client.delete(f"{NGSI}/entities/{A}").status_code == 204
    # Its only attribute's history deleted: nothing is left to serve.
    assert client.delete(f"{TEMPORAL}/{A}/attrs/no2?deleteAll=true").status_code == 204
    assert client.get(f"{TEMPORAL}/{A}").status_code == 404


def test_deleting_the_temporal_representation_forgets_the_kept_history(client):
    station(client, A, 10)
    assert client.delete(f"{NGSI}/entities/{A}").status_code == 204
    assert client.delete(f"{TEMPORAL}/{A}").status_code == 204
    assert client.get(f"{TEMPORAL}/{A}").status_code == 404
    assert client.delete(f"{TEMPORAL}/{A}").status_code == 404
    # Through the temporal API directly: entity and history go in one request.
    station(client, B, 5)
    assert client.delete(f"{TEMPORAL}/{B}").status_code == 204
    assert client.get(f"{TEMPORAL}/{B}").status_code == 404


def test_a_recreated_entity_is_served_as_it_is_now(client):
    station(client, A, 10)
    assert client.delete(f"{NGSI}/entities/{A}").status_code == 204
    station(client, A, 30, kind="Sensor")
    body = client.get(f"{TEMPORAL}/{A}").json()
    assert body["type"] == "Sensor" and "deletedAt" not in body
    assert sorted(i["value"] for i in body["no2"]) == [10, 30]
    r = client.get(f"{TEMPORAL}?type=AirQualityObserved&count=true")
    assert r.json() == [] and r.headers["ngsild-results-count"] == "0"


def test_query_finds_deleted_entities_after_the_existing_ones(client):
    station(client, A, 1)
    station(client, B, 2)
    station(client, C, 3)
    station(client, "urn:ngsi-ld:Other:x", 4, kind="Other")
    assert client.delete(f"{NGSI}/entities/{B}").status_code == 204
    assert client.delete(f"{NGSI}/entities/urn:ngsi-ld:Other:x").status_code == 204
    r = client.get(f"{TEMPORAL}?type=AirQualityObserved&count=true")
    assert r.status_code == 200, r.text
    assert r.headers["ngsild-results-count"] == "3"
    got = [(e["id"], "deletedAt" in e, e["no2"][0]["value"]) for e in r.json()]
    assert got == [(A, False, 1), (C, False, 3), (B, True, 2)]
    # Paging runs over both: existing entities first, then the deleted ones.
    pages = [
        [
            e["id"]
            for e in client.get(f"{TEMPORAL}?type=AirQualityObserved&limit=1&offset={o}").json()
        ]
        for o in range(4)
    ]
    assert pages == [[A], [C], [B], []]
    r = client.get(f"{TEMPORAL}?type=AirQualityObserved&limit=2&offset=1&count=true")
    assert [e["id"] for e in r.json()] == [C, B] and r.headers["ngsild-results-count"] == "3"
    # id, idPattern and attrs filter deleted entities too; q needs a current state.
    assert [e["id"] for e in client.get(f"{TEMPORAL}?id={B}&local=true").json()] == [B]
    assert [e["id"] for e in client.get(f"{TEMPORAL}?idPattern=:b$&local=true").json()] == [B]
    assert client.get(f"{TEMPORAL}?type=AirQualityObserved&attrs=pm10").json() == []
    r = client.get(f"{TEMPORAL}?type=AirQualityObserved&q=no2>0")
    assert [e["id"] for e in r.json()] == [A, C]
    r = client.get(f"{TEMPORAL}?type=Other")
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Other:x"]


def test_without_the_setting_history_goes_with_the_entity(store_url):
    with admin_client(
        build_app(make_settings(store=store_url)), raise_server_exceptions=False
    ) as c:
        station(c, A, 10)
        assert c.delete(f"{NGSI}/entities/{A}").status_code == 204
        assert c.get(f"{TEMPORAL}/{A}").status_code == 404
        assert c.get(f"{TEMPORAL}?type=AirQualityObserved").json() == []
