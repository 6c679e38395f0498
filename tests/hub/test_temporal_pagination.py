"""§6.3.10 Pagination of temporal properties, through HTTP on both stores: past the server's
maximum of instances per attribute a response is a 206 page with a date-time Content-Range, the
same time range for every attribute, and walking the pages gives every instance exactly once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from cidade.app import build_app
from tests.conftest import NGSI, admin_client, make_settings

TEMPORAL = f"{NGSI}/temporal/entities"
V = "urn:ngsi-ld:Vehicle:1"
W = "urn:ngsi-ld:Vehicle:2"
MAX = 3


def at(minute: int) -> str:
    """A time as responses show it (whole seconds without a fraction)."""
    return f"2026-01-02T01:{minute:02d}:00Z"


def just_after(stamp: str) -> str:
    """The next microsecond: where the next forwards page starts (after is inclusive)."""
    assert stamp.endswith(":00Z")
    return stamp[:-1] + ".000001Z"


def readings(minutes: list[int], base: int = 0) -> list[dict]:
    return [{"type": "Property", "value": base + m, "observedAt": at(m)} for m in minutes]


@pytest.fixture
def client(store_url: str) -> Iterator[TestClient]:
    settings = make_settings(store=store_url, temporal_max_instances=MAX)
    with admin_client(build_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def vehicle(client):
    """speed at minutes 1..6, fuelLevel at 5..8: unsynchronized, both past the maximum (3)."""
    body = {
        "id": V,
        "type": "Vehicle",
        "speed": readings([1, 2, 3, 4, 5, 6]),
        "fuelLevel": readings([5, 6, 7, 8], base=100),
    }
    assert client.post(TEMPORAL, json=body).status_code == 201
    return client


def values(body: dict, attr: str) -> list:
    return [i["value"] for i in body.get(attr, [])]


def test_forwards_pages_cut_every_attribute_at_one_time(vehicle):
    r = vehicle.get(f"{TEMPORAL}/{V}")
    assert r.status_code == 206, r.text
    assert r.headers["content-range"] == f"date-time {at(1)}-{at(3)}/*"
    body = r.json()
    assert values(body, "speed") == [1, 2, 3]
    assert body["fuelLevel"] == []  # none of its instances lies in this page's range
    # Next page: timeAt just after range-end; range-start is then timeAt (timerel=after).
    start = just_after(at(3))
    r = vehicle.get(f"{TEMPORAL}/{V}?timerel=after&timeAt={start}")
    assert r.status_code == 206, r.text
    assert r.headers["content-range"] == f"date-time {start}-{at(7)}/*"
    assert values(r.json(), "speed") == [4, 5, 6]
    assert values(r.json(), "fuelLevel") == [105, 106, 107]
    r = vehicle.get(f"{TEMPORAL}/{V}?timerel=after&timeAt={just_after(at(7))}")
    assert r.status_code == 200 and "content-range" not in r.headers
    assert values(r.json(), "fuelLevel") == [108] and "speed" not in r.json()


def test_walking_the_pages_gives_every_instance_once(vehicle):
    seen: list[tuple[str, int]] = []
    url = f"{TEMPORAL}/{V}"
    for _ in range(10):
        r = vehicle.get(url)
        body = r.json()
        seen += [(a, v) for a in ("speed", "fuelLevel") for v in values(body, a)]
        if r.status_code == 200:
            break
        assert r.status_code == 206
        end = r.headers["content-range"].split("/")[0].rsplit("-", 3)
        end = "-".join(end[1:])
        url = f"{TEMPORAL}/{V}?timerel=after&timeAt={just_after(end)}"
    else:
        pytest.fail("the pages never ended")
    expected = [("speed", m) for m in range(1, 7)] + [("fuelLevel", 100 + m) for m in range(5, 9)]
    assert sorted(seen) == sorted(expected)


def test_between_forwards_starts_at_time_at(vehicle):
    r = vehicle.get(f"{TEMPORAL}/{V}?timerel=between&timeAt={at(2)}&endTimeAt={at(8)}")
    assert r.status_code == 206
    assert r.headers["content-range"] == f"date-time {at(2)}-{at(4)}/*"
    assert values(r.json(), "speed") == [2, 3, 4]


def test_last_n_past_the_maximum_pages_backwards(vehicle):
    r = vehicle.get(f"{TEMPORAL}/{V}?lastN=5")
    assert r.status_code == 206, r.text
    # Backwards: range-start is the most recent time, range-end the least recent, size lastN.
    assert r.headers["content-range"] == f"date-time {at(8)}-{at(6)}/5"
    assert values(r.json(), "speed") == [6]
    assert values(r.json(), "fuelLevel") == [106, 107, 108]
    # Next page: the upper bound moves to range-end (before excludes it); range-start is timeAt.
    r = vehicle.get(f"{TEMPORAL}/{V}?lastN=5&timerel=before&timeAt={at(6)}")
    assert r.status_code == 206
    assert r.headers["content-range"] == f"date-time {at(6)}-{at(3)}/5"
    assert values(r.json(), "speed") == [3, 4, 5]
    assert values(r.json(), "fuelLevel") == [105]
    r = vehicle.get(f"{TEMPORAL}/{V}?lastN=5&timerel=between&timeAt={at(1)}&endTimeAt={at(7)}")
    assert r.status_code == 206
    assert r.headers["content-range"] == f"date-time {at(7)}-{at(4)}/5"
    assert values(r.json(), "speed") == [4, 5, 6]


def test_last_n_within_the_maximum_is_the_whole_answer(vehicle):
    r = vehicle.get(f"{TEMPORAL}/{V}?lastN=2")
    assert r.status_code == 200 and "content-range" not in r.headers
    assert values(r.json(), "speed") == [5, 6]
    assert values(r.json(), "fuelLevel") == [107, 108]
    r = vehicle.get(f"{TEMPORAL}/{V}?lastN=3")  # exactly the maximum: nothing cut
    assert r.status_code == 200
    assert values(r.json(), "speed") == [4, 5, 6]


def test_few_instances_are_not_paged(vehicle):
    r = vehicle.get(f"{TEMPORAL}/{V}?timerel=after&timeAt={at(6)}&attrs=speed")
    assert r.status_code == 200 and "content-range" not in r.headers
    assert values(r.json(), "speed") == [6]


def test_temporal_values_page(vehicle):
    r = vehicle.get(f"{TEMPORAL}/{V}?options=temporalValues")
    assert r.status_code == 206
    body = r.json()
    assert [v for v, _ in body["speed"]["values"]] == [1, 2, 3]
    assert body["fuelLevel"] == {"type": "Property", "values": []}


def test_aggregated_values_are_never_cut(vehicle):
    r = vehicle.get(f"{TEMPORAL}/{V}?options=aggregatedValues&aggrMethods=totalCount")
    assert r.status_code == 200 and "content-range" not in r.headers
    assert r.json()["speed"]["totalCount"][0][0] == 6


def test_query_pages_all_entities_with_one_range(vehicle):
    other = {"id": W, "type": "Vehicle", "speed": readings([2, 3, 4, 5], base=200)}
    assert vehicle.post(TEMPORAL, json=other).status_code == 201
    r = vehicle.get(f"{TEMPORAL}?type=Vehicle&timerel=after&timeAt={at(0)}")
    assert r.status_code == 206, r.text
    # V's speed is complete up to 01:03, W's up to 01:04: the page ends at the earlier one.
    assert r.headers["content-range"] == f"date-time {at(0)}-{at(3)}/*"
    by_id = {e["id"]: e for e in r.json()}
    assert values(by_id[V], "speed") == [1, 2, 3]
    assert values(by_id[W], "speed") == [202, 203]


def test_instances_sharing_the_last_time_all_come_in_the_page(client):
    body = {
        "id": V,
        "type": "Vehicle",
        "burst": [{"type": "Property", "value": n, "observedAt": at(1)} for n in range(5)]
        + [{"type": "Property", "value": 9, "observedAt": at(2)}],
    }
    assert client.post(TEMPORAL, json=body).status_code == 201
    r = client.get(f"{TEMPORAL}/{V}")
    assert r.status_code == 206, r.text
    assert r.headers["content-range"] == f"date-time {at(1)}-{at(1)}/*"
    assert sorted(values(r.json(), "burst")) == [0, 1, 2, 3, 4]
    r = client.get(f"{TEMPORAL}/{V}?timerel=after&timeAt={just_after(at(1))}")
    assert r.status_code == 200 and values(r.json(), "burst") == [9]


def test_dataset_ids_are_series_of_their_own(client):
    body = {
        "id": V,
        "type": "Vehicle",
        "speed": readings([1, 2, 3])
        + [
            {"type": "Property", "value": 50 + m, "observedAt": at(m), "datasetId": "urn:ds:gps"}
            for m in (1, 2, 3)
        ],
    }
    assert client.post(TEMPORAL, json=body).status_code == 201
    r = client.get(f"{TEMPORAL}/{V}")
    assert r.status_code == 200  # six instances, but three per series: nothing to cut
    assert len(r.json()["speed"]) == 6
