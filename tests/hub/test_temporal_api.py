"""§6.18, §6.19: the temporal evolution of entities, read through HTTP on both stores."""

from __future__ import annotations

import pytest

from tests.conftest import NGSI, problem_type

E = "urn:ngsi-ld:AirQualityObserved:boavista"
TEMPORAL = f"{NGSI}/temporal/entities"


@pytest.fixture
def station(client):
    """NO2 observed at 10:00 on four days (values 10, 20, 30, 40); humidity once."""
    body = {
        "id": E,
        "type": "AirQualityObserved",
        "no2": {"type": "Property", "value": 10, "observedAt": "2026-03-01T10:00:00Z"},
        "humidity": {"type": "Property", "value": 70, "observedAt": "2026-03-01T10:00:00Z"},
    }
    assert client.post(f"{NGSI}/entities", json=body).status_code == 201
    for day, value in ((2, 20), (3, 30), (4, 40)):
        r = client.patch(
            f"{NGSI}/entities/{E}/attrs/no2",
            json={"value": value, "observedAt": f"2026-03-0{day}T10:00:00Z"},
        )
        assert r.status_code == 204
    return client


def test_normalized_history(station):
    r = station.get(f"{TEMPORAL}/{E}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == E and body["type"] == "AirQualityObserved"
    no2 = body["no2"]
    assert [i["value"] for i in no2] == [10, 20, 30, 40]
    assert [i["observedAt"] for i in no2] == [f"2026-03-0{d}T10:00:00.000000Z" for d in range(1, 5)]
    assert all(i["type"] == "Property" and i["instanceId"].startswith("urn:") for i in no2)
    assert len(body["humidity"]) == 1


def test_time_window_last_n_and_attrs(station):
    r = station.get(
        f"{TEMPORAL}/{E}?timerel=between&timeAt=2026-03-02T00:00:00Z"
        "&endTimeAt=2026-03-04T00:00:00Z&attrs=no2"
    )
    body = r.json()
    assert [i["value"] for i in body["no2"]] == [20, 30]
    assert "humidity" not in body
    r = station.get(f"{TEMPORAL}/{E}?lastN=2&attrs=no2")
    assert [i["value"] for i in r.json()["no2"]] == [30, 40]
    r = station.get(f"{TEMPORAL}/{E}?timerel=before&timeAt=2026-03-02T10:00:00Z")
    assert [i["value"] for i in r.json()["no2"]] == [10]


def test_temporal_values(station):
    r = station.get(f"{TEMPORAL}/{E}?options=temporalValues&attrs=no2")
    no2 = r.json()["no2"]
    assert no2["type"] == "Property"
    assert no2["values"] == [
        [v, f"2026-03-0{d}T10:00:00.000000Z"]
        for d, v in zip(range(1, 5), (10, 20, 30, 40), strict=True)
    ]


def test_aggregated_per_day_and_whole_window(station):
    r = station.get(
        f"{TEMPORAL}/{E}?options=aggregatedValues&aggrMethods=avg,max,totalCount"
        "&aggrPeriodDuration=P2D&timerel=after&timeAt=2026-03-01T00:00:00Z&attrs=no2"
    )
    assert r.status_code == 200, r.text
    no2 = r.json()["no2"]
    assert [b[0] for b in no2["avg"]] == [15, 35]
    assert [b[0] for b in no2["max"]] == [20, 40]
    assert [b[0] for b in no2["totalCount"]] == [2, 2]


def test_query_temporal_by_type(station):
    other = {"id": "urn:ngsi-ld:Car:1", "type": "Car", "speed": {"type": "Property", "value": 5}}
    station.post(f"{NGSI}/entities", json=other)
    r = station.get(f"{TEMPORAL}?type=AirQualityObserved&attrs=no2&lastN=1&count=true")
    assert r.status_code == 200, r.text
    assert r.headers["ngsild-results-count"] == "1"
    (only,) = r.json()
    assert only["id"] == E and [i["value"] for i in only["no2"]] == [40]


def test_errors(station):
    r = station.get(f"{TEMPORAL}/{E}?timerel=between&timeAt=2026-03-02T00:00:00Z")
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    assert (
        station.get(f"{TEMPORAL}/{E}?timerel=sometime&timeAt=2026-03-02T00:00:00Z").status_code
        == 400
    )
    assert station.get(f"{TEMPORAL}/{E}?lastN=0").status_code == 400
    assert (
        station.get(f"{TEMPORAL}/{E}?options=aggregatedValues&aggrMethods=median").status_code
        == 400
    )
    r = station.get(f"{TEMPORAL}/urn:ngsi-ld:X:none")
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
    assert station.get(f"{TEMPORAL}").status_code == 400  # a query needs a filter


def test_deleted_entity_has_no_history(station):
    assert station.delete(f"{NGSI}/entities/{E}").status_code == 204
    assert station.get(f"{TEMPORAL}/{E}").status_code == 404
