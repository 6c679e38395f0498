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
    assert [i["observedAt"] for i in no2] == [f"2026-03-0{d}T10:00:00Z" for d in range(1, 5)]
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
        [v, f"2026-03-0{d}T10:00:00Z"] for d, v in zip(range(1, 5), (10, 20, 30, 40), strict=True)
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


def test_create_temporal_representation_then_add_modify_delete(client):
    body = {
        "id": "urn:ngsi-ld:Counter:1",
        "type": "TrafficFlowObserved",
        "intensity": [
            {"type": "Property", "value": 5, "observedAt": "2026-04-01T08:00:00Z"},
            {"type": "Property", "value": 9, "observedAt": "2026-04-01T09:00:00Z"},
            {"type": "Property", "value": 7, "observedAt": "2026-04-01T08:30:00Z"},
        ],
    }
    r = client.post(TEMPORAL, json=body)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"{TEMPORAL}/urn:ngsi-ld:Counter:1"
    # The current state is the latest observation; the history has all three, in time order.
    current = client.get(f"{NGSI}/entities/urn:ngsi-ld:Counter:1").json()
    assert current["intensity"]["value"] == 9
    history = client.get(f"{TEMPORAL}/urn:ngsi-ld:Counter:1").json()["intensity"]
    assert [i["value"] for i in history] == [5, 7, 9]
    # The same POST again appends (204).
    more = {
        "id": "urn:ngsi-ld:Counter:1",
        "type": "TrafficFlowObserved",
        "intensity": [{"type": "Property", "value": 11, "observedAt": "2026-04-01T10:00:00Z"}],
    }
    assert client.post(TEMPORAL, json=more).status_code == 204
    r = client.post(
        f"{TEMPORAL}/urn:ngsi-ld:Counter:1/attrs",
        json={
            "intensity": [{"type": "Property", "value": 3, "observedAt": "2026-04-01T07:00:00Z"}]
        },
    )
    assert r.status_code == 204
    history = client.get(f"{TEMPORAL}/urn:ngsi-ld:Counter:1").json()["intensity"]
    assert [i["value"] for i in history] == [3, 5, 7, 9, 11]
    # Modify one instance by its instanceId, then delete another.
    first = history[0]["instanceId"]
    r = client.patch(
        f"{TEMPORAL}/urn:ngsi-ld:Counter:1/attrs/intensity/{first}",
        json={"type": "Property", "value": 4, "observedAt": "2026-04-01T07:00:00Z"},
    )
    assert r.status_code == 204, r.text
    second = history[1]["instanceId"]
    assert (
        client.delete(f"{TEMPORAL}/urn:ngsi-ld:Counter:1/attrs/intensity/{second}").status_code
        == 204
    )
    history = client.get(f"{TEMPORAL}/urn:ngsi-ld:Counter:1").json()["intensity"]
    assert [i["value"] for i in history] == [4, 7, 9, 11]
    assert history[0]["instanceId"] == first
    missing = client.delete(f"{TEMPORAL}/urn:ngsi-ld:Counter:1/attrs/intensity/{second}")
    assert missing.status_code == 404 and problem_type(missing) == "ResourceNotFound"
    # Delete the attribute's history, then the whole temporal representation.
    assert client.delete(f"{TEMPORAL}/urn:ngsi-ld:Counter:1/attrs/intensity").status_code == 204
    assert "intensity" not in client.get(f"{TEMPORAL}/urn:ngsi-ld:Counter:1").json()
    assert client.delete(f"{TEMPORAL}/urn:ngsi-ld:Counter:1/attrs/intensity").status_code == 404
    assert client.delete(f"{TEMPORAL}/urn:ngsi-ld:Counter:1").status_code == 204
    assert client.get(f"{NGSI}/entities/urn:ngsi-ld:Counter:1").status_code == 404
    assert client.delete(f"{TEMPORAL}/urn:ngsi-ld:Counter:1").status_code == 404


def test_temporal_writes_reject_bad_input(client):
    assert client.post(TEMPORAL, json=[1]).status_code == 400
    assert client.post(TEMPORAL, json={"id": "nope", "type": "T"}).status_code == 400
    bad = {
        "id": "urn:x:1",
        "type": "T",
        "a": [{"type": "Property", "value": 1, "observedAt": "soon"}],
    }
    assert client.post(TEMPORAL, json=bad).status_code == 400
    assert client.get(f"{NGSI}/entities/urn:x:1").status_code == 404
    r = client.post(f"{TEMPORAL}/urn:x:none/attrs", json={"a": [{"type": "Property", "value": 1}]})
    assert r.status_code == 404


def test_deleted_attributes_in_the_temporal_evolution(client):
    """A deleted attribute's evolution ends with an instance holding the NGSI-LD Null and its
    deletedAt; timeproperty=deletedAt selects those instances, by that time."""
    body = {
        "id": E,
        "type": "AirQualityObserved",
        "no2": {"type": "Property", "value": 10, "observedAt": "2026-03-01T10:00:00Z"},
        "name": {"type": "LanguageProperty", "languageMap": {"pt": "Boavista"}},
        "near": {"type": "Relationship", "object": "urn:ngsi-ld:Road:1"},
    }
    assert client.post(f"{NGSI}/entities", json=body).status_code == 201
    for attr in ("name", "near"):
        assert client.delete(f"{NGSI}/entities/{E}/attrs/{attr}").status_code == 204
    r = client.get(f"{TEMPORAL}/{E}?timeproperty=deletedAt")
    assert r.status_code == 200, r.text
    got = r.json()
    assert set(got) == {"id", "type", "name", "near"}
    (name,) = got["name"]
    assert name["type"] == "LanguageProperty"
    assert name["languageMap"] == {"@none": "urn:ngsi-ld:null"}
    assert "deletedAt" in name and "instanceId" in name
    (near,) = got["near"]
    assert near["object"] == "urn:ngsi-ld:null"
    simplified = client.get(f"{TEMPORAL}/{E}?timeproperty=deletedAt&options=temporalValues")
    near = simplified.json()["near"]
    assert near["type"] == "Relationship" and near["objects"][0][0] == "urn:ngsi-ld:null"
    assert simplified.json()["name"]["languageMaps"][0][0] == {
        "languageMap": {"@none": "urn:ngsi-ld:null"}
    }
    # The evolution by the default time property shows the deletion after the value.
    names = client.get(f"{TEMPORAL}/{E}?attrs=name").json()["name"]
    assert [i["languageMap"] for i in names] == [{"pt": "Boavista"}, {"@none": "urn:ngsi-ld:null"}]
    later = client.get(
        f"{TEMPORAL}/{E}?timeproperty=deletedAt&timerel=after&timeAt=2100-01-01T00:00:00Z"
    )
    assert set(later.json()) == {"id", "type"}
    listed = client.get(f"{TEMPORAL}?type=AirQualityObserved&timeproperty=deletedAt").json()
    assert set(listed[0]) == {"id", "type", "name", "near"}


def test_a_batch_touching_an_entity_twice_records_both_changes(client):
    """Each entry of a batch is its own change, even two of one entity: both instances are in
    the history, and the entity shows the last."""
    batch = [
        {
            "id": E,
            "type": "AirQualityObserved",
            "no2": {"type": "Property", "value": value, "observedAt": f"2026-03-0{day}T10:00:00Z"},
        }
        for day, value in ((1, 10), (2, 20))
    ]
    r = client.post(f"{NGSI}/entityOperations/upsert", params={"options": "update"}, json=batch)
    assert r.status_code in (201, 204), r.text
    assert [i["value"] for i in client.get(f"{TEMPORAL}/{E}").json()["no2"]] == [10, 20]
    assert client.get(f"{NGSI}/entities/{E}").json()["no2"]["value"] == 20


def test_pick_and_omit_choose_the_members_shown(station):
    """§4.21 on the temporal representation: pick keeps, omit leaves out, core members too."""
    r = station.get(f"{TEMPORAL}/{E}?pick=no2")
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["no2"] and len(r.json()["no2"]) == 4
    assert set(station.get(f"{TEMPORAL}/{E}?pick=id,humidity").json()) == {"id", "humidity"}
    assert set(station.get(f"{TEMPORAL}/{E}?omit=no2").json()) == {"id", "type", "humidity"}
    assert set(station.get(f"{TEMPORAL}/{E}?omit=type,no2").json()) == {"id", "humidity"}
    simplified = station.get(f"{TEMPORAL}/{E}?pick=no2&options=temporalValues").json()
    assert list(simplified) == ["no2"] and len(simplified["no2"]["values"]) == 4
    both = station.get(f"{TEMPORAL}/{E}?pick=id,no2&omit=humidity").json()
    assert set(both) == {"id", "no2"}
    listed = station.get(f"{TEMPORAL}?type=AirQualityObserved&pick=id").json()
    assert listed == [{"id": E}]
    listed = station.get(f"{TEMPORAL}?type=AirQualityObserved&omit=no2,type").json()
    assert [set(e) for e in listed] == [{"id", "humidity"}]


def test_pick_and_omit_errors(station):
    for params in ("pick=no2&omit=no2", "pick=no2&attrs=humidity", "omit=no2&attrs=humidity"):
        for url in (f"{TEMPORAL}/{E}?{params}", f"{TEMPORAL}?type=AirQualityObserved&{params}"):
            r = station.get(url)
            assert r.status_code == 400 and problem_type(r) == "BadRequestData", (url, r.text)
    # Nothing left to show of the entity: not found.
    for params in ("pick=unknown", "omit=id,type,no2,humidity"):
        r = station.get(f"{TEMPORAL}/{E}?{params}")
        assert r.status_code == 404 and problem_type(r) == "ResourceNotFound", (params, r.text)


def test_retrieving_attributes_the_entity_never_had_is_not_found(station):
    r = station.get(f"{TEMPORAL}/{E}?attrs=unknownAttribute")
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
    # An attribute the entity has, with no instance in the range: the entity, without it.
    r = station.get(f"{TEMPORAL}/{E}?attrs=no2&timerel=after&timeAt=2030-01-01T00:00:00Z")
    assert r.status_code == 200 and set(r.json()) == {"id", "type"}


def test_query_via_post(station):
    """§6.24: the Query body selects the entities, its temporalQ the time range; the query
    parameters choose the representation and the page."""
    query = {
        "type": "Query",
        "entities": [{"type": "AirQualityObserved"}],
        "attrs": ["no2"],
        "temporalQ": {"timerel": "after", "timeAt": "2026-03-03T00:00:00Z"},
    }
    r = station.post(f"{NGSI}/temporal/entityOperations/query", json=query)
    assert r.status_code == 200, r.text
    (only,) = r.json()
    assert only["id"] == E and set(only) == {"id", "type", "no2"}
    assert [i["value"] for i in only["no2"]] == [30, 40]
    r = station.post(
        f"{NGSI}/temporal/entityOperations/query/",
        params={"options": "temporalValues", "count": "true"},
        json={**query, "temporalQ": {**query["temporalQ"], "lastN": 1}},
    )
    assert r.status_code == 200, r.text
    assert r.headers["ngsild-results-count"] == "1"
    assert r.json()[0]["no2"]["values"] == [[40, "2026-03-04T10:00:00Z"]]
    other = {"type": "Query", "entities": [{"type": "Car"}], "temporalQ": query["temporalQ"]}
    assert station.post(f"{NGSI}/temporal/entityOperations/query", json=other).json() == []


def test_query_via_post_refuses_bad_bodies(station):
    url = f"{NGSI}/temporal/entityOperations/query"
    entities = [{"type": "AirQualityObserved"}]
    r = station.post(url, json=[1])  # not an object: a malformed request
    assert r.status_code == 400 and problem_type(r) == "InvalidRequest", r.text
    for body in (
        {"type": "Subscription"},
        {"type": "Query", "entities": entities, "temporalQ": "after"},
        {"type": "Query", "entities": entities, "temporalQ": {"timerel": "during", "timeAt": "x"}},
        {"type": "Query", "entities": entities, "temporalQ": {"timerel": "after", "timeAt": 5}},
        {"type": "Query", "entities": entities, "temporalQ": {"lastN": 0}},
    ):
        r = station.post(url, json=body)
        assert r.status_code == 400 and problem_type(r) == "BadRequestData", (body, r.text)


def test_query_needs_more_than_entity_ids(station):
    """§6.18.3.2: ids or an id pattern alone do not make a temporal query; local=true does."""
    for params in (f"id={E}", "idPattern=.*"):
        r = station.get(f"{TEMPORAL}?{params}&timerel=after&timeAt=2026-03-01T00:00:00Z")
        assert r.status_code == 400 and problem_type(r) == "BadRequestData", r.text
    r = station.get(f"{TEMPORAL}?id={E}&local=true&timerel=after&timeAt=2026-03-01T00:00:00Z")
    assert r.status_code == 200 and [e["id"] for e in r.json()] == [E]


def test_dataset_id_selects_instances(client):
    """datasetId (§4.5.5): only the instances of those datasetIds, @none for the default."""
    body = {
        "id": E,
        "type": "AirQualityObserved",
        "no2": [
            {"type": "Property", "value": 1, "observedAt": "2026-03-01T10:00:00Z"},
            {
                "type": "Property",
                "value": 2,
                "datasetId": "urn:ngsi-ld:Dataset:roof",
                "observedAt": "2026-03-01T10:00:00Z",
            },
        ],
        "pm10": {
            "type": "Property",
            "value": 3,
            "datasetId": "urn:ngsi-ld:Dataset:roof",
            "observedAt": "2026-03-01T10:00:00Z",
        },
    }
    assert client.post(TEMPORAL, json=body).status_code == 201
    roof = client.get(f"{TEMPORAL}/{E}?datasetId=urn:ngsi-ld:Dataset:roof").json()
    assert [i["value"] for i in roof["no2"]] == [2] and [i["value"] for i in roof["pm10"]] == [3]
    default = client.get(f"{TEMPORAL}/{E}?datasetId=@none&options=temporalValues").json()
    assert set(default) == {"id", "type", "no2"} and default["no2"]["values"][0][0] == 1
    both = client.get(
        f"{TEMPORAL}?type=AirQualityObserved&datasetId=@none,urn:ngsi-ld:Dataset:roof"
    )
    assert len(both.json()[0]["no2"]) == 2
    # No instance of the attribute with that datasetId: the entity has nothing to show.
    none = client.get(f"{TEMPORAL}?type=AirQualityObserved&attrs=pm10&datasetId=@none")
    assert none.status_code == 200 and none.json() == []
    r = client.get(f"{TEMPORAL}/{E}?datasetId=roof")
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"


def test_query_leaves_out_entities_with_nothing_in_the_range(station):
    """§5.7.4: an entity whose attributes have no instance in the time range has no temporal
    evolution to show there; retrieving it still answers, without attributes."""
    other = {
        "id": "urn:ngsi-ld:AirQualityObserved:other",
        "type": "AirQualityObserved",
        "no2": {"type": "Property", "value": 1, "observedAt": "2025-01-01T00:00:00Z"},
    }
    assert station.post(f"{NGSI}/entities", json=other).status_code == 201
    r = station.get(f"{TEMPORAL}?type=AirQualityObserved&timerel=after&timeAt=2026-01-01T00:00:00Z")
    assert [e["id"] for e in r.json()] == [E]
    r = station.get(f"{TEMPORAL}/{other['id']}?timerel=after&timeAt=2026-01-01T00:00:00Z")
    assert r.status_code == 200 and set(r.json()) == {"id", "type"}


def test_unknown_options_and_formats_are_invalid_requests(station):
    """§6.3.12: a value of options or format the operation does not define."""
    for params in ("options=invalid", "options=temporalValues,invalid", "format=invalid"):
        for url in (f"{TEMPORAL}/{E}?{params}", f"{TEMPORAL}?type=AirQualityObserved&{params}"):
            r = station.get(url)
            assert r.status_code == 400 and problem_type(r) == "InvalidRequest", (url, r.text)


def test_updating_a_temporal_representation_replaces_instances_observed_at_the_same_time(client):
    """§5.6.11 on an existing entity, and §5.6.12: an instance observed when one of the same
    attribute and datasetId was replaces it (a series has one value per instant); others add."""
    at = "2026-04-01T08:00:00Z"
    body = {
        "id": "urn:ngsi-ld:Counter:2",
        "type": "TrafficFlowObserved",
        "intensity": [
            {"type": "Property", "value": 5, "observedAt": at},
            {"type": "Property", "value": 6, "observedAt": "2026-04-01T09:00:00Z"},
            {"type": "Property", "value": 50, "observedAt": at, "datasetId": "urn:ngsi-ld:D:1"},
        ],
    }
    assert client.post(TEMPORAL, json=body).status_code == 201
    update = {
        "id": "urn:ngsi-ld:Counter:2",
        "type": "TrafficFlowObserved",
        "intensity": [
            {"type": "Property", "value": 7, "observedAt": at},
            {"type": "Property", "value": 8, "observedAt": "2026-04-01T10:00:00Z"},
        ],
    }
    assert client.post(TEMPORAL, json=update).status_code == 204
    more = {"intensity": {"type": "Property", "value": 9, "observedAt": "2026-04-01T09:00:00Z"}}
    assert client.post(f"{TEMPORAL}/urn:ngsi-ld:Counter:2/attrs", json=more).status_code == 204
    history = client.get(f"{TEMPORAL}/urn:ngsi-ld:Counter:2").json()["intensity"]
    assert sorted((i["observedAt"], i["value"], i.get("datasetId")) for i in history) == [
        (at, 7, None),
        (at, 50, "urn:ngsi-ld:D:1"),
        ("2026-04-01T09:00:00Z", 9, None),
        ("2026-04-01T10:00:00Z", 8, None),
    ]


def test_instance_paths_refuse_bad_names_and_ids(station):
    """§6.22: the instanceId is a URI and the attribute a name; anything else is 400."""
    no2 = station.get(f"{TEMPORAL}/{E}?attrs=no2").json()["no2"]
    instance = no2[0]["instanceId"]
    patch = {"type": "Property", "value": 1, "observedAt": "2026-03-01T10:00:00Z"}
    for attr, inst in (("no2", "notAUri"), ("", instance), ("in(valid", instance)):
        url = f"{TEMPORAL}/{E}/attrs/{attr}/{inst}"
        for r in (station.delete(url), station.patch(url, json=patch)):
            assert r.status_code == 400 and problem_type(r) == "BadRequestData", (url, r.text)
    assert len(station.get(f"{TEMPORAL}/{E}?attrs=no2").json()["no2"]) == len(no2)


def test_parameters_not_supported_yet_are_refused(station):
    """As for /entities (hub/http.py UNSUPPORTED_PARAMS): 501 rather than an answer that
    silently ignores them (orderFrom, §4.23, would otherwise look applied)."""
    for url in (
        f"{TEMPORAL}?type=AirQualityObserved&orderBy=no2&orderFrom=[8,40]",
        f"{TEMPORAL}/{E}?join=flat",
        f"{NGSI}/temporal/entityOperations/query?join=inline",
    ):
        r = (
            station.post(url, json={"type": "Query", "entities": [{"type": "AirQualityObserved"}]})
            if "entityOperations" in url
            else station.get(url)
        )
        assert r.status_code == 501 and problem_type(r) == "NotImplemented", (url, r.text)


def test_scope_has_a_temporal_evolution(client):
    """§4.18: the scope given to Create Temporal Representation is the entity's; its changes
    and its deletion are in the temporal evolution as a Property's would be (deleted: no
    scopes, with deletedAt)."""
    vehicle = "urn:ngsi-ld:Vehicle:scoped"
    body = {
        "id": vehicle,
        "type": "Vehicle",
        "scope": ["/Madrid/Gardens", "/CompanyA"],
        "fuel": [
            {"type": "Property", "value": 67, "observedAt": "2020-08-01T12:03:00Z"},
            {"type": "Property", "value": 53, "observedAt": "2020-08-01T13:05:00Z"},
        ],
    }
    assert client.post(TEMPORAL, json=body).status_code == 201
    assert client.get(f"{NGSI}/entities/{vehicle}").json()["scope"] == body["scope"]
    r = client.patch(f"{NGSI}/entities/{vehicle}", json={"scope": "/Porto"})
    assert r.status_code == 204, r.text
    scope = client.get(f"{TEMPORAL}/{vehicle}").json()["scope"]
    assert [i["value"] for i in scope] == [body["scope"], "/Porto"]
    assert all(i["type"] == "Property" and "deletedAt" not in i for i in scope)
    assert client.get(f"{TEMPORAL}/{vehicle}?timeproperty=deletedAt").json().get("scope") is None

    assert client.delete(f"{NGSI}/entities/{vehicle}/attrs/scope").status_code == 204
    deleted = client.get(f"{TEMPORAL}/{vehicle}?timeproperty=deletedAt").json()
    assert [(i["type"], i["value"]) for i in deleted["scope"]] == [("Property", [])]
    assert deleted["scope"][0]["deletedAt"].endswith("Z")
    assert "fuel" not in deleted
    values = client.get(
        f"{TEMPORAL}/{vehicle}?timeproperty=deletedAt&options=temporalValues"
    ).json()["scope"]
    assert values["type"] == "Property" and [v[0] for v in values["values"]] == [[]]
    picked = client.get(f"{TEMPORAL}/{vehicle}?pick=id,scope").json()
    assert set(picked) == {"id", "scope"} and len(picked["scope"]) == 3
    assert "scope" not in client.get(f"{TEMPORAL}/{vehicle}?omit=scope").json()
    # Only the scope's changes are recorded: an update of another attribute adds none.
    client.patch(f"{NGSI}/entities/{vehicle}/attrs/fuel", json={"value": 1})
    assert len(client.get(f"{TEMPORAL}/{vehicle}").json()["scope"]) == 3
