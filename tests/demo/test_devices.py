"""The simulated devices of the demo city: where they stand, what they publish, how they answer."""

from __future__ import annotations

import itertools
import json
import os
import random
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from statistics import mean
from zoneinfo import ZoneInfo

import pytest

from cidade.demo.city import City, haversine, load_city
from cidade.demo.devices import (
    KINDS,
    PLANS,
    DevicePlan,
    DeviceState,
    answer,
    counts,
    measures,
    plan_devices,
)

HELSINKI = ZoneInfo("Europe/Helsinki")
TUESDAY = datetime(2025, 10, 14, tzinfo=HELSINKI)  # a working day in autumn
SATURDAY = datetime(2025, 10, 18, tzinfo=HELSINKI)
# The team's reference copies sit beside the checkout (../shared); CIDADE_STANDARDS names them
# elsewhere, as in a clone made somewhere else.
MODELS = (
    Path(os.environ["CIDADE_STANDARDS"])
    if os.environ.get("CIDADE_STANDARDS")
    else next(
        (
            p
            for p in (
                Path(__file__).resolve().parents[3] / "shared" / "standards",
                Path("/work/shared/standards"),
            )
            if p.is_dir()
        ),
        Path(__file__).resolve().parents[3] / "shared" / "standards",
    )
) / "smart-data-models"


@pytest.fixture(scope="module")
def city() -> City:
    return load_city()


@pytest.fixture(scope="module")
def plans(city: City) -> list[DevicePlan]:
    return plan_devices(city, random.Random(42))


def of(plans: list[DevicePlan], kind: str) -> list[DevicePlan]:
    found = [p for p in plans if p.kind == kind]
    assert found, kind
    return found


def calm(plan: DevicePlan) -> DevicePlan:
    """The same device without faults, outliers or episodes."""
    return replace(plan, fault_rate=0.0, outlier_rate=0.0, episode_rate=0.0)


def at(day: datetime, hour: float) -> datetime:
    return day + timedelta(hours=hour)


def sample(plan: DevicePlan, when: datetime, key: str, rng: random.Random):
    return measures(calm(plan), DeviceState(), when, rng)[key]


# -- placement ------------------------------------------------------------------------------


def test_mix_and_counts(city: City, plans: list[DevicePlan]) -> None:
    mix = Counter(p.kind for p in plans)
    assert mix == counts(city)
    assert set(mix) == set(KINDS)
    assert 200 <= len(plans) <= 500  # a lively demo of a few hundred devices
    # Porto's proportions: more traffic lights than counters, far fewer bollards
    assert mix["traffic_light"] > mix["vehicle_counter"] > mix["bollard"] >= 3
    assert len({p.device_id for p in plans}) == len(plans)
    for p in plans:
        assert p.entity_id == f"urn:ngsi-ld:{p.entity_type}:{p.device_id}"
        assert p.entity_type == KINDS[p.kind].entity_type
        assert p.timezone == "Europe/Helsinki"
    half = Counter(p.kind for p in plan_devices(city, random.Random(42), scale=0.5))
    assert sum(half.values()) < 0.6 * len(plans)


def test_placements_are_on_the_streets(city: City, plans: list[DevicePlan]) -> None:
    limits = {  # metres from the nearest drivable segment
        "vehicle_counter": 1,
        "traffic_light": 1,
        "fleet_vehicle": 1,
        "air_quality": 1,
        "noise": 1,
        "bollard": 15,
        "streetlight": 30,  # the lamps OSM maps, on pavements and esplanades
        "waste_container": 30,
    }
    for p in plans:
        assert city.contains(p.lon, p.lat), p.device_id
        d = city.distance_to_street(p.lon, p.lat)
        if p.kind == "parking_spot":
            limit = 5 if p.static["category"] == ["onStreet"] else 80  # car parks are areas
        else:
            limit = limits[p.kind]
        assert d <= limit, (p.device_id, d)
    # the traffic lights stand where OSM maps signals
    for p in of(plans, "traffic_light"):
        assert min(haversine(p.lon, p.lat, s.lon, s.lat) for s in city.signals) < 40
    # spread out, not piled up
    lights = of(plans, "traffic_light")
    assert (
        min(
            haversine(a.lon, a.lat, b.lon, b.lat)
            for i, a in enumerate(lights)
            for b in lights[i + 1 :]
        )
        >= 30
    )


def test_placement_is_deterministic(city: City, plans: list[DevicePlan]) -> None:
    def key(ps):
        return [(p.device_id, p.lon, p.lat, p.static, p.params) for p in ps]

    assert key(plan_devices(city, random.Random(42))) == key(plans)
    assert key(plan_devices(city, random.Random(43))) != key(plans)


def test_fleet_routes_are_closed_loops_on_streets(city: City, plans: list[DevicePlan]) -> None:
    for p in of(plans, "fleet_vehicle"):
        route = p.route
        assert route is not None and route.points[0] == route.points[-1]
        assert route.total > 500
        assert (p.lon, p.lat) == pytest.approx(route.points[0], abs=1e-6)
        nodes = {v: k for k, v in city.nodes.items()}
        for a, b in itertools.pairwise(route.points):
            city.street_from(nodes[a], nodes[b])  # a drivable segment, one-ways respected


# -- behaviour ------------------------------------------------------------------------------


def test_measures_are_deterministic(plans: list[DevicePlan]) -> None:
    def run(seed: int) -> list:
        rng = random.Random(seed)
        states = {p.device_id: DeviceState() for p in plans}
        out = []
        for minute in range(0, 120, 5):
            for p in plans:
                out.append(measures(p, states[p.device_id], at(TUESDAY, 7 + minute / 60), rng))
        return out

    first = run(1)
    assert first == run(1)
    assert first != run(2)


def test_traffic_rush_hours(plans: list[DevicePlan]) -> None:
    rng = random.Random(7)
    counters = of(plans, "vehicle_counter")

    def avg(day, hour, key):
        return mean(sample(p, at(day, hour), key, rng) for p in counters for _ in range(20))

    night, morning, noon, evening = (avg(TUESDAY, h, "i") for h in (3, 8.5, 13, 18))
    assert morning > 5 * night and evening > 5 * night
    assert morning > noon and evening > noon
    assert avg(SATURDAY, 8.5, "i") < 0.8 * morning  # no morning rush on Saturdays
    assert avg(TUESDAY, 8.5, "s") < avg(TUESDAY, 3, "s")  # slower in the rush
    assert avg(TUESDAY, 8.5, "o") > avg(TUESDAY, 3, "o")


def test_air_and_noise_follow_the_traffic(plans: list[DevicePlan]) -> None:
    rng = random.Random(8)
    air, noise = of(plans, "air_quality"), of(plans, "noise")
    for stations, key in ((air, "no2"), (air, "pm10"), (noise, "laeq")):
        rush = mean(sample(p, at(TUESDAY, 8.75), key, rng) for p in stations for _ in range(30))
        night = mean(sample(p, at(TUESDAY, 3), key, rng) for p in stations for _ in range(30))
        assert rush > night + (10 if key != "laeq" else 8), key
    # ozone is made by sunshine: higher in the afternoon than at night
    o3_day = mean(sample(p, at(TUESDAY, 14), "o3", rng) for p in air for _ in range(30))
    o3_night = mean(sample(p, at(TUESDAY, 2), "o3", rng) for p in air for _ in range(30))
    assert o3_day > o3_night


def test_parking_fills_by_day(plans: list[DevicePlan]) -> None:
    rng = random.Random(9)
    spots = [calm(p) for p in of(plans, "parking_spot")]
    states = {p.device_id: DeviceState() for p in spots}
    taken: dict[float, list[bool]] = {4.0: [], 11.0: []}
    for minute in range(0, 24 * 60, 10):
        hour = minute / 60
        for p in spots:
            m = measures(p, states[p.device_id], at(TUESDAY, hour), rng)
            assert m["st"] in ("free", "occupied")
            if hour in taken:
                taken[hour].append(m["st"] == "occupied")
    assert mean(taken[11.0]) > mean(taken[4.0]) + 0.2


def test_waste_fills_then_is_emptied(plans: list[DevicePlan]) -> None:
    rng = random.Random(10)
    containers = [calm(p) for p in of(plans, "waste_container")[:10]]
    for p in containers:
        state = DeviceState()
        previous = None
        emptied = []
        for step in range(7 * 24 * 4):  # a week, every 15 minutes
            when = at(TUESDAY, step / 4)
            m = measures(p, state, when, rng)
            assert 0 <= m["f"] <= 1
            if previous is not None:
                if m["e"] != previous["e"]:
                    emptied.append((when, previous["f"], m["f"]))
                else:
                    assert m["f"] >= previous["f"]  # it only fills between two rounds
            previous = m
        days = p.params["collectionDays"]
        assert len(emptied) == sum(
            (TUESDAY + timedelta(days=d)).weekday() in days for d in range(1, 7)
        ) + (TUESDAY.weekday() in days), p.device_id
        for when, before, after in emptied:
            assert when.weekday() in days
            assert 6 <= when.hour < 10  # the collection round runs in the morning
            assert after < 0.05 < before


def test_streetlights_at_night_and_day(plans: list[DevicePlan]) -> None:
    rng = random.Random(11)
    lights = of(plans, "streetlight")
    states = {p.device_id: DeviceState() for p in lights}
    seen: dict[float, list[dict]] = {23.0: [], 13.0: [], 2.0: []}
    for minute in range(12 * 60, 36 * 60, 15):  # from Tuesday noon to Wednesday noon
        hour = minute / 60
        for p in lights:
            m = measures(p, states[p.device_id], at(TUESDAY, hour), rng)
            if m is not None and hour % 24 in seen and hour in (13.0, 23.0, 26.0):
                seen[hour % 24].append(m)
    for m in seen[23.0]:
        assert (m["ps"] == "on" and m["il"] == 1.0) or m["st"] != "ok", m
    for m in seen[2.0]:
        assert (m["ps"] == "low" and m["il"] == 0.5) or m["st"] != "ok", m  # dimmed after midnight
    for m in seen[13.0]:
        assert m["ps"] == "off" and m["pc"] < 1, m
    assert all(len(seen[h]) > 0.9 * len(lights) for h in seen)
    on = [m for m in seen[23.0] if m["ps"] == "on"]
    assert on and all(m["pc"] > 30 for m in on)


def test_streetlight_faults_happen(plans: list[DevicePlan]) -> None:
    rng = random.Random(12)
    lights = of(plans, "streetlight")
    states = {p.device_id: DeviceState() for p in lights}
    statuses = Counter()
    for hour in range(0, 30 * 24, 1):  # a month, hourly
        for p in lights:
            m = measures(p, states[p.device_id], at(TUESDAY, hour), rng)
            if m is not None:
                statuses[m["st"]] += 1
                if m["st"] != "ok":
                    assert m["ps"] == "off"  # a defective lamp gives no light
    faulty = sum(v for k, v in statuses.items() if k != "ok")
    assert 0 < faulty < 0.1 * statuses["ok"]


def test_streetlight_commands(plans: list[DevicePlan]) -> None:
    rng = random.Random(13)
    p = calm(of(plans, "streetlight")[0])
    state = DeviceState()
    assert measures(p, state, at(TUESDAY, 12), rng)["ps"] == "off"
    assert answer(p, state, "switch", "on") == ("OK", "on")
    assert measures(p, state, at(TUESDAY, 12.1), rng)["ps"] == "on"
    assert answer(p, state, "dim", 0.3) == ("OK", 0.3)
    assert measures(p, state, at(TUESDAY, 12.2), rng)["il"] == 0.3
    assert answer(p, state, "switch", "auto") == ("OK", "auto")
    assert measures(p, state, at(TUESDAY, 12.3), rng)["ps"] == "off"
    assert answer(p, state, "dim", 2)[0] == "ERROR"
    assert answer(p, state, "switch", "maybe")[0] == "ERROR"


def test_fleet_vehicles_drive_along_the_streets(city: City, plans: list[DevicePlan]) -> None:
    rng = random.Random(14)
    for p in of(plans, "fleet_vehicle"):
        p = calm(p)
        state = DeviceState()
        previous = None
        travelled = 0.0
        for step in range(180):  # 30 minutes every 10 s, mid-morning
            m = measures(p, state, at(TUESDAY, 10) + timedelta(seconds=10 * step), rng)
            lon, lat = m["l"]["coordinates"]
            assert city.distance_to_street(lon, lat) < 1
            assert m["ss"] == "onRoute"
            assert 0 <= m["s"] <= 60
            assert (m["h"] == -1) == (m["s"] == 0)
            if previous is None:
                first_km = m["km"]
            else:
                step_m = haversine(*previous["l"]["coordinates"], lon, lat)
                # no faster than the fastest street allows (50 km/h here) over 10 s
                assert step_m <= 50 / 3.6 * 10 + 1, step_m
                assert m["km"] >= previous["km"]
                travelled += step_m
            previous = m
        assert travelled > 2000  # it drove, between red lights and stops
        assert (
            previous["km"] - first_km >= travelled / 1000 - 0.01
        )  # along streets, not as the crow flies


def test_fleet_vehicles_rest_at_night(plans: list[DevicePlan]) -> None:
    rng = random.Random(15)
    day_shift = [p for p in of(plans, "fleet_vehicle") if p.params["shift"] == [6, 22]]
    assert day_shift
    for p in day_shift:
        state = DeviceState()
        for minute in range(0, 30, 1):
            m = measures(calm(p), state, at(TUESDAY, 3) + timedelta(minutes=minute), rng)
            assert m["ss"] == "parked" and m["s"] == 0 and m["h"] == -1
            assert m["l"]["coordinates"] == pytest.approx([p.lon, p.lat], abs=1e-6)


def test_bollards_answer_commands(plans: list[DevicePlan]) -> None:
    rng = random.Random(16)
    p = calm(of(plans, "bollard")[0])
    state = DeviceState()
    assert measures(p, state, at(TUESDAY, 8), rng)["p"] == "lowered"  # delivery window
    assert measures(p, state, at(TUESDAY, 12), rng)["p"] == "raised"
    ok = random.Random(1)  # a generator whose first draw does not fail the move
    assert answer(p, state, "lower", None, ok) == ("OK", "lowered")
    assert measures(p, state, at(TUESDAY, 12.5), rng)["p"] == "lowered"
    assert measures(p, state, at(TUESDAY, 23), rng)["p"] == "lowered"  # until the timetable moves
    assert measures(p, state, at(TUESDAY, 30.5), rng)["p"] == "lowered"  # Wednesday's window
    assert measures(p, state, at(TUESDAY, 36), rng)["p"] == "raised"  # back on the timetable
    assert answer(p, state, "open", None)[0] == "ERROR"
    results = Counter(answer(p, state, "raise", None, random.Random(i))[0] for i in range(1000))
    assert 0 < results["ERROR"] < 100 and results["OK"] > 900  # it fails now and then
    state.fault = "fault"
    assert answer(p, state, "raise", None) == ("ERROR", "bollard in fault")
    assert measures(p, state, at(TUESDAY, 37), rng)["st"] == "fault"


def test_traffic_lights_run_plans(plans: list[DevicePlan]) -> None:
    rng = random.Random(17)
    p = calm(of(plans, "traffic_light")[0])
    state = DeviceState()
    assert measures(p, state, at(TUESDAY, 3), rng) | {"TimeInstant": ""} == {
        "st": "ok",
        "p": "night",
        "TimeInstant": "",
    }
    assert measures(p, state, at(TUESDAY, 8), rng)["p"] == "peakMorning"
    assert measures(p, state, at(SATURDAY, 8), rng)["p"] == "offPeak"
    state = DeviceState()
    assert measures(p, state, at(TUESDAY, 12), rng)["p"] == "offPeak"
    assert answer(p, state, "setPlan", "event") == ("OK", "event")
    assert measures(p, state, at(TUESDAY, 13), rng)["p"] == "event"
    assert answer(p, state, "setPlan", "auto") == ("OK", "auto")
    assert measures(p, state, at(TUESDAY, 13.1), rng)["p"] == "offPeak"
    status, info = answer(p, state, "setPlan", "disco")
    assert status == "ERROR" and "peakMorning" in info
    assert set(PLANS) >= {"night", "offPeak", "peakMorning", "peakEvening"}
    state.fault = "fault"
    assert measures(p, state, at(TUESDAY, 13.2), rng)["p"] == "flashing"
    assert answer(p, state, "setPlan", "event")[0] == "ERROR"


def test_faults_and_outliers(plans: list[DevicePlan]) -> None:
    rng = random.Random(18)
    counter = of(plans, "vehicle_counter")[0]
    # silent: nothing published while it lasts, then back
    state = DeviceState(fault="silent", fault_until=at(TUESDAY, 10))
    assert measures(calm(counter), state, at(TUESDAY, 9), rng) is None
    assert measures(calm(counter), state, at(TUESDAY, 10.1), rng) is not None
    # stuck: the same values again and again, with a fresh TimeInstant
    state = DeviceState()
    first = measures(calm(counter), state, at(TUESDAY, 9), rng)
    state.fault, state.fault_until = "stuck", at(TUESDAY, 12)
    for minute in range(1, 30):
        m = measures(calm(counter), state, at(TUESDAY, 9) + timedelta(minutes=minute), rng)
        assert m | {"TimeInstant": ""} == first | {"TimeInstant": ""}
        assert m["TimeInstant"] != first["TimeInstant"]
    # faults start by themselves now and then
    states = {p.device_id: DeviceState() for p in plans}
    silent = sum(
        measures(p, states[p.device_id], at(TUESDAY, h / 60), rng) is None
        for h in range(0, 24 * 60, 10)
        for p in plans
    )
    assert 0 < silent < 0.05 * len(plans) * 144
    # outliers: rare spikes
    spiky = replace(counter, fault_rate=0.0, outlier_rate=1.0)
    normal = mean(sample(counter, at(TUESDAY, 12), "i", rng) for _ in range(200))
    spiked = mean(measures(spiky, DeviceState(), at(TUESDAY, 12), rng)["i"] for _ in range(200))
    assert spiked > 2.5 * normal
    with pytest.raises(ValueError):
        measures(counter, DeviceState(), datetime(2025, 10, 14, 12), rng)  # naive time


# -- the Smart Data Models ------------------------------------------------------------------


def _schema_check():
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    if not MODELS.is_dir():
        pytest.skip(f"the Smart Data Models reference copies are not at {MODELS}")
    common = json.loads((MODELS / "common-schema.json").read_text())

    class Anything(dict):
        """A schema not kept here (Device-Commons, Environment-schema): any pointer into it is
        the empty schema, which accepts anything."""

        def __missing__(self, key):
            return Anything()

    def retrieve(uri: str):
        if uri.startswith("https://smart-data-models.github.io/data-models/common-schema.json"):
            return referencing.Resource.from_contents(common)
        return referencing.Resource.from_contents(
            Anything(), default_specification=referencing.jsonschema.DRAFT202012
        )

    return jsonschema, referencing.Registry(retrieve=retrieve), common


def _model(entity_type: str) -> Path:
    found = list(MODELS.glob(f"*/{entity_type}/schema.json"))
    assert len(found) == 1, entity_type
    return found[0].parent


def _names(schema) -> set[str]:
    names: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            if isinstance(x.get("properties"), dict):
                names.update(x["properties"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(schema)
    return names


def test_entities_follow_the_smart_data_models(plans: list[DevicePlan]) -> None:
    jsonschema, registry, common = _schema_check()
    rng = random.Random(19)
    for kind in KINDS:
        p = calm(of(plans, kind)[0])
        folder = _model(p.entity_type)
        schema = json.loads((folder / "schema.json").read_text())
        example = json.loads((folder / "examples" / "example.json").read_text())
        allowed = _names(schema) | _names(common) | set(example)
        m = measures(p, DeviceState(), at(TUESDAY, 10), rng)
        values = {p.attributes[k]: v for k, v in m.items() if k != "TimeInstant"}
        assert set(m) == {*p.attributes, "TimeInstant"}, kind
        entity = {"id": p.entity_id, "type": p.entity_type, **p.static, **values}
        entity.setdefault("location", {"type": "Point", "coordinates": [p.lon, p.lat]})
        unknown = set(entity) - allowed - {"id", "type"}
        assert not unknown, (kind, unknown)
        validator = jsonschema.Draft202012Validator(schema, registry=registry)
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(entity)]
        assert not errors, (kind, errors)
        # the model's own examples give the unit codes
        for path in (folder / "examples").glob("example-normalized.json*"):
            for name, attr in json.loads(path.read_text()).items():
                code = attr.get("unitCode") if isinstance(attr, dict) else None
                for spec in p.measures:
                    if spec.name == name and code:
                        assert spec.unit_code == code, (kind, name)
        for spec in p.measures:
            assert spec.unit_code is None or (
                (2 <= len(spec.unit_code) <= 3 and spec.unit_code.isupper())
                or spec.unit_code[0].isdigit()
            )
            assert spec.type in ("Number", "Text", "Boolean", "DateTime", "geo:json")


def test_schema_check_catches_a_wrong_name(plans: list[DevicePlan]) -> None:
    """The check above can fail: a misspelt attribute or a value out of the model's range."""
    jsonschema, registry, common = _schema_check()
    folder = _model("WasteContainer")
    schema = json.loads((folder / "schema.json").read_text())
    allowed = _names(schema) | _names(common)
    assert "fillLevel" not in allowed and "fillingLevel" in allowed
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    bad = {"id": "urn:ngsi-ld:WasteContainer:x", "type": "WasteContainer", "fillingLevel": 1.5}
    bad["location"] = {"type": "Point", "coordinates": [24.9, 60.2]}
    assert list(validator.iter_errors(bad))
