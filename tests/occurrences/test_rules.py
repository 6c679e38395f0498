"""Sensor rules on both stores: an occurrence after the hold and none before, one however the
condition flaps, resolved or flagged when it clears, the engine's memory in the store (a new
engine goes on), aggregates and hours, refused definitions; the default rules on entities the
demo city's devices write through the device agent, and the demo city raising occurrences by
itself."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from cidade.demo.devices import KINDS, DevicePlan, DeviceState, measures
from cidade.demo.simulator import apikey_of, device_body, group_body
from cidade.devices.agent import Agent
from cidade.devices.messages import Measure
from cidade.devices.provisioning import DeviceProvisioning
from cidade.ngsild import timefmt
from cidade.occurrences.configuration import ConfigError, default_config, load_config
from cidade.occurrences.rules import (
    DEFAULT_RULES,
    LOCATION,
    RuleEngine,
    core_terms,
    parse_rule,
)
from cidade.occurrences.service import OccurrenceService
from cidade.store.base import WriteOp
from cidade.store.occurrences import OccurrenceQuery
from tests.conftest import running_store
from tests.occurrences.helpers import OPERATOR, Clock

LAT, LON = 41.1496, -8.6109
T0 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)  # a Tuesday


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


class World:
    """A store, the occurrences service over it with the given rules, and helpers to write
    entities as devices would and to run the engine's turns."""

    def __init__(self, store: Any, loop: Any) -> None:
        self.store = store
        self.run = loop.run_until_complete
        self.clock = Clock()
        self.use([dict(r) for r in DEFAULT_RULES])

    def use(self, rules: list[dict[str, Any]]) -> None:
        config = default_config()
        self.config = type(config)(
            config.departments, config.categories, config.areas, {r["id"]: r for r in rules}
        )
        self.service = OccurrenceService(self.store, self.config, clock=self.clock)
        self.engine = self.new_engine()

    def new_engine(self, **options: Any) -> RuleEngine:
        return RuleEngine(self.store, self.service, clock=self.clock, **options)

    def put(self, eid: str, etype: str, minute: float, **values: Any) -> None:
        """The entity as the device agent writes it: each measure observed at T0 + minute."""
        terms = core_terms()
        at = timefmt.from_epoch((T0 + timedelta(minutes=minute)).timestamp())
        attrs = {
            terms.expand(name): [{"type": "Property", "value": v, "observedAt": at}]
            for name, v in values.items()
        }
        attrs[terms.expand("name")] = [{"type": "Property", "value": "Rua de Santa Catarina"}]
        attrs[LOCATION] = [
            {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [LON, LAT]}}
        ]
        doc = {
            "id": eid,
            "type": [terms.expand(etype)],
            "createdAt": at,
            "modifiedAt": at,
            "attrs": attrs,
        }
        (result,) = self.run(self.store.write("", [WriteOp(eid, lambda _c: doc)]))
        assert not isinstance(result, Exception), result

    def delete(self, eid: str) -> None:
        (result,) = self.run(self.store.write("", [WriteOp(eid, lambda _c: None)]))
        assert not isinstance(result, Exception), result

    def turn(self, engine: RuleEngine | None = None) -> dict[str, int]:
        return dict(self.run((engine or self.engine).turn()))

    def occurrences(self, rule_id: str | None = None, **filters: Any) -> list[Any]:
        page = self.run(self.service.list("", OccurrenceQuery(sources=["sensor"], **filters)))
        return [o for o in page.items if rule_id is None or o.doc["rule"]["id"] == rule_id]

    def events(self, number: int) -> list[dict[str, Any]]:
        return self.run(self.service.history("", number))


@pytest.fixture
def world(kind: str, tmp_path: Path) -> Iterator[World]:
    """The default rules over a store of either kind (``world.use`` changes them)."""
    with running_store(kind, tmp_path) as (store, loop):
        yield World(store, loop)


BIN = "urn:ngsi-ld:WasteContainer:waste-001"
COUNTER = "urn:ngsi-ld:TrafficFlowObserved:counter-001"

FLAPPY = {
    "id": "jam",
    "name": "Jam",
    "type": "TrafficFlowObserved",
    "q": "congested==true",
    "hold": "PT10M",
    "clear_hold": "PT10M",
    "category": "traffic-congestion",
}


def test_an_occurrence_after_the_hold_and_none_before(world: World) -> None:
    world.put(BIN, "WasteContainer", 0, fillingLevel=0.95, storedWasteKind="paper")
    assert world.turn() == {}
    for minute in (10, 20, 29):
        world.put(BIN, "WasteContainer", minute, fillingLevel=0.96, storedWasteKind="paper")
        world.turn()
        assert world.occurrences() == []
    world.put(BIN, "WasteContainer", 30, fillingLevel=0.97, storedWasteKind="paper")
    assert world.turn() == {"raised": 1}
    (occ,) = world.occurrences()
    doc = occ.doc
    assert doc["category"] == "waste-overflow" and doc["source"] == "sensor"
    assert doc["status"] == "new" and doc["open"] is True
    assert doc["entities"] == [BIN]
    assert doc["rule"] == {"id": "waste-container-full", "entity": BIN}
    assert doc["location"] == {"lat": LAT, "lon": LON}
    assert doc["observed_at"].startswith("2026-03-10T10:00:00")  # when it began to hold
    assert doc["title"] == "Waste container full"
    assert doc["description"].startswith("The paper container at Rua de Santa Catarina is 97% full")
    (created,) = world.events(occ.number)
    assert created["actor"] == "rule:waste-container-full" and created["kind"] == "created"
    # it goes on holding: nothing more
    for minute in (40, 50, 60):
        world.put(BIN, "WasteContainer", minute, fillingLevel=0.99, storedWasteKind="paper")
        assert world.turn() == {}
    assert len(world.occurrences()) == 1 and len(world.events(occ.number)) == 1


def test_a_flapping_condition_raises_one_occurrence(world: World) -> None:
    world.use([FLAPPY])
    minute = 0.0
    # flapping every five minutes for an hour: it never holds ten minutes, nothing is raised
    for i in range(12):
        world.put(COUNTER, "TrafficFlowObserved", minute, congested=i % 2 == 0)
        world.turn()
        minute += 5
    assert world.occurrences() == []
    # it holds: one occurrence
    for _ in range(3):
        world.put(COUNTER, "TrafficFlowObserved", minute, congested=True)
        world.turn()
        minute += 5
    assert len(world.occurrences()) == 1
    # flapping again, for two hours, every minute to every four: it never stays clear ten
    # minutes, so the occurrence stays open and alone
    rng = random.Random(5)
    for i in range(60):
        world.put(COUNTER, "TrafficFlowObserved", minute, congested=i % 2 == 0)
        world.turn()
        minute += rng.uniform(1, 4)
    (occ,) = world.occurrences()
    assert occ.doc["open"] is True
    assert [e["kind"] for e in world.events(occ.number)] == ["created"]
    # it clears for good: resolved, once
    for _ in range(4):
        world.put(COUNTER, "TrafficFlowObserved", minute, congested=False)
        world.turn()
        minute += 5
    (occ,) = world.occurrences()
    assert occ.doc["status"] == "resolved" and occ.doc["open"] is False
    assert [e["kind"] for e in world.events(occ.number)] == ["created", "clear"]


def test_clearing_resolves_from_any_open_status_and_a_new_episode_raises_again(
    world: World,
) -> None:
    world.use([FLAPPY])
    for minute in (0, 10):
        world.put(COUNTER, "TrafficFlowObserved", minute, congested=True)
        world.turn()
    (occ,) = world.occurrences()
    # the operations room sent Mobility to look
    world.run(world.service.act("", OPERATOR, occ.number, "assign", departments=["mobility"]))
    for minute in (20, 30):
        world.put(COUNTER, "TrafficFlowObserved", minute, congested=False)
        world.turn()
    occ = world.run(world.service.get("", occ.number))
    assert occ.doc["status"] == "resolved"
    assert [t["status"] for t in occ.doc["tasks"]] == ["done"]
    assert occ.doc["deadlines"]["resolution"]["met"]
    (update,) = occ.doc["updates"]
    assert update["text"].startswith("Cleared. Jam: the condition no longer holds since")
    clear = world.events(occ.number)[-1]
    assert clear["kind"] == "clear" and clear["actor"] == "rule:jam" and clear["public"] is True
    # the jam comes back the next day: a new occurrence, the old one stays resolved
    for minute in (1440, 1450):
        world.put(COUNTER, "TrafficFlowObserved", minute, congested=True)
        world.turn()
    assert sorted(o.doc["status"] for o in world.occurrences()) == ["new", "resolved"]


def test_hysteresis_clears_only_below_the_clear_condition(world: World) -> None:
    for minute in (0, 30):
        world.put(BIN, "WasteContainer", minute, fillingLevel=0.95)
        world.turn()
    (occ,) = world.occurrences()
    # a bag less, below 90 % but not emptied: still full as far as the rule goes
    world.put(BIN, "WasteContainer", 45, fillingLevel=0.85)
    world.turn()
    world.put(BIN, "WasteContainer", 60, fillingLevel=0.91)
    world.turn()
    assert world.occurrences()[0].doc["open"] is True
    world.put(BIN, "WasteContainer", 75, fillingLevel=0.02)  # the round came by
    assert world.turn() == {"cleared": 1}
    assert world.run(world.service.get("", occ.number)).doc["status"] == "resolved"
    assert world.run(world.store.rule_watches("")) == []  # nothing left to remember


FLAG = {**FLAPPY, "id": "jam-flag", "on_clear": "flag", "clear_hold": "PT0S"}


def test_flag_notes_the_clearing_and_keeps_the_occurrence(world: World) -> None:
    world.use([FLAG])
    for minute in (0, 10):
        world.put(COUNTER, "TrafficFlowObserved", minute, congested=True)
        world.turn()
    world.put(COUNTER, "TrafficFlowObserved", 20, congested=False)
    assert world.turn() == {"flagged": 1}
    (occ,) = world.occurrences()
    assert occ.doc["status"] == "new" and occ.doc["updates"] == []  # nothing public
    note = world.events(occ.number)[-1]
    assert note["kind"] == "note" and note["public"] is False
    assert "no longer holds" in note["text"]
    # it comes back while the occurrence is still open: the same occurrence, noted
    for minute in (30, 40):
        world.put(COUNTER, "TrafficFlowObserved", minute, congested=True)
        world.turn()
    (again,) = world.occurrences()
    assert again.number == occ.number
    assert "holds again" in world.events(occ.number)[-1]["text"]


def test_a_new_engine_goes_on_where_the_last_one_stopped(world: World) -> None:
    world.put(BIN, "WasteContainer", 0, fillingLevel=0.95)
    world.turn()
    (watch,) = world.run(world.store.rule_watches(""))
    assert (watch.rule, watch.entity, watch.state) == ("waste-container-full", BIN, "holding")
    # a restart (or another worker taking over): the hold counts from minute 0, not from now
    world.put(BIN, "WasteContainer", 30, fillingLevel=0.95)
    assert world.turn(world.new_engine()) == {"raised": 1}
    (occ,) = world.occurrences()
    (watch,) = world.run(world.store.rule_watches(""))
    assert (watch.state, watch.number) == ("raised", occ.number)
    world.put(BIN, "WasteContainer", 45, fillingLevel=0.01)
    assert world.turn(world.new_engine()) == {"cleared": 1}
    assert world.occurrences()[0].doc["status"] == "resolved"


def test_one_engine_at_a_time(world: World) -> None:
    store, now = world.store, time.time()
    assert world.run(store.claim_rule_lease("a", now, 30))
    assert not world.run(store.claim_rule_lease("b", now + 1, 30))
    assert world.run(store.claim_rule_lease("a", now + 10, 30))  # renewed
    assert not world.run(store.claim_rule_lease("b", now + 35, 30))
    assert world.run(store.claim_rule_lease("b", now + 41, 30))  # a's lease ran out
    world.run(store.release_rule_lease("a"))  # no longer a's: changes nothing
    assert not world.run(store.claim_rule_lease("a", now + 42, 30))
    world.run(store.release_rule_lease("b"))
    assert world.run(store.claim_rule_lease("a", now + 43, 30))


def test_people_close_it_while_it_holds_then_it_waits_for_the_next_episode(world: World) -> None:
    for minute in (0, 30):
        world.put(BIN, "WasteContainer", minute, fillingLevel=0.95)
        world.turn()
    (occ,) = world.occurrences()
    world.run(world.service.act("", OPERATOR, occ.number, "reject", note="Collected on Monday"))
    for minute in (40, 80, 120):
        world.put(BIN, "WasteContainer", minute, fillingLevel=0.97)
        assert world.turn() == {}
    world.put(BIN, "WasteContainer", 130, fillingLevel=0.0)
    world.turn()
    assert world.run(world.service.get("", occ.number)).doc["status"] == "rejected"
    for minute in (2000, 2030):
        world.put(BIN, "WasteContainer", minute, fillingLevel=0.93)
        world.turn()
    assert sorted(o.doc["status"] for o in world.occurrences()) == ["new", "rejected"]


def test_an_entity_that_is_gone_clears_its_occurrence(world: World) -> None:
    for minute in (0, 30):
        world.put(BIN, "WasteContainer", minute, fillingLevel=0.95)
        world.turn()
    world.delete(BIN)
    assert world.turn() == {"cleared": 1}
    (occ,) = world.occurrences()
    assert occ.doc["status"] == "resolved"
    assert "no longer in the hub" in occ.doc["updates"][0]["text"]


AIR = "urn:ngsi-ld:AirQualityObserved:air-001"


def test_the_hourly_mean_of_no2(world: World) -> None:
    # a spike of 900 among values of 40: the last value is above 200, the mean is not
    values = [40.0] * 11 + [900.0]
    for i, v in enumerate(values):
        world.put(AIR, "AirQualityObserved", i * 5, no2=v)
    world.turn()
    assert world.occurrences() == []
    # an episode: the hourly mean passes 200 µg/m³ some way into it
    minute = 60
    raised_at = None
    for _ in range(15):
        world.put(AIR, "AirQualityObserved", minute, no2=320.0)
        if world.turn().get("raised"):
            raised_at = minute
        minute += 5
    # the spike at minute 55 counts while it is in the window: from minute 75 on
    assert raised_at is not None and 70 < raised_at <= 90, raised_at
    (occ,) = world.occurrences()
    assert occ.doc["category"] == "air-quality" and occ.doc["priority"] == "high"
    assert "The hourly mean of NO2 at Rua de Santa Catarina is" in occ.doc["description"]
    # the air clears: the mean stays under 200 for an hour before it is resolved
    cleared_at = None
    for _ in range(40):
        world.put(AIR, "AirQualityObserved", minute, no2=30.0)
        if world.turn().get("cleared"):
            cleared_at = minute
            break
        minute += 5
    assert cleared_at is not None and cleared_at - raised_at >= 60 + 60


def test_an_aggregate_needs_most_of_its_period(world: World) -> None:
    # a station that just started: two high values are not an hourly mean
    world.put(AIR, "AirQualityObserved", 0, no2=500.0)
    world.put(AIR, "AirQualityObserved", 5, no2=500.0)
    world.turn()
    assert world.occurrences() == []


NOISE = "urn:ngsi-ld:NoiseLevelObserved:noise-001"
NIGHT = {**dict(next(r for r in DEFAULT_RULES if r["id"] == "noise-night-limit"))}
NIGHT["hours"] = {"from": "23:00", "to": "07:00", "timezone": "Europe/Lisbon"}


def test_noise_above_the_night_limit_at_night_only(world: World) -> None:
    world.use([NIGHT])
    # 65 dB(A) all evening and night (T0 is 10:00 in Lisbon; minute 720 is 22:00)
    raised = cleared = None
    for minute in range(600, 1300, 5):
        world.put(NOISE, "NoiseLevelObserved", minute, LAeq=65.0)
        got = world.turn()
        raised = minute if got.get("raised") else raised
        cleared = minute if got.get("cleared") else cleared
    assert raised == 780 + 30  # 23:00, and held for 30 minutes
    assert cleared == 1260 + 15  # 07:00, the night is over, and 15 minutes of it
    (occ,) = world.occurrences()
    assert occ.doc["category"] == "noise" and occ.doc["status"] == "resolved"


# -- definitions -------------------------------------------------------------------------------


def good(**changes: Any) -> dict[str, Any]:
    rule = {"type": "WasteContainer", "q": "fillingLevel>=0.9", "category": "waste-overflow"}
    rule.update(changes)
    return {k: v for k, v in rule.items() if v is not None}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (good(colour="red"), "rule 'r1': unknown field(s) colour"),
        (good(type=None), "rule 'r1'.type: the entity type"),
        (good(q=None), "rule 'r1'.q: an NGSI-LD q condition"),
        (good(q="fillingLevel>=>0.9"), "rule 'r1'.q: invalid q"),
        (good(q="fillingLevel>=full"), "rule 'r1'.q:"),
        (good(clear="fillingLevel<"), "rule 'r1'.clear: invalid q"),
        (good(hold="30 minutes"), "rule 'r1'.hold: '30 minutes' is not an ISO 8601 duration"),
        (good(hold="P30D"), "rule 'r1'.hold: at most P7D"),
        (good(clear_hold=-5), "rule 'r1'.clear_hold: a duration cannot be negative"),
        (good(category="Waste Overflow"), "rule 'r1'.category: a code is"),
        (good(category="fountain"), "rule 'r1'.category: no category 'fountain'"),
        (good(priority="asap"), "rule 'r1'.priority: one of urgent, high, normal, low"),
        (good(on_clear="delete"), "rule 'r1'.on_clear: one of resolve, flag (got 'delete')"),
        (good(id_pattern="(unclosed"), "rule 'r1'.id_pattern: not a regular expression"),
        (good(aggregate={"function": "median"}), "rule 'r1'.aggregate.function: one of mean"),
        (
            good(aggregate={"function": "mean", "attribute": "temperature", "period": "PT1H"}),
            "rule 'r1'.aggregate.attribute: q does not name 'temperature'",
        ),
        (
            good(aggregate={"function": "mean", "attribute": "fillingLevel", "period": "PT0S"}),
            "rule 'r1'.aggregate.period: longer than nothing",
        ),
        (good(hours={"from": "23h", "to": "07:00"}), "rule 'r1'.hours.from: a local time HH:MM"),
        (
            good(hours={"from": "23:00", "to": "07:00", "timezone": "Mars/Olympus"}),
            "rule 'r1'.hours.timezone: 'Mars/Olympus' is not an IANA time zone",
        ),
        (good(description="{name"), "rule 'r1'.description: braces hold a name"),
        (good(description="{level:%%x}"), "rule 'r1'.description: {level:%%x} is not a number"),
        (good(enabled="yes"), "rule 'r1'.enabled: true or false"),
        (good(id="r2"), "rule 'r1'.id: 'r2' differs from the rule's key"),
        ("fillingLevel>=0.9", "rule 'r1': an object expected"),
    ],
)
def test_bad_rules_are_refused_with_a_clear_message(doc: Any, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_rule(doc, "r1", categories=default_config().categories)
    assert str(refused.value).startswith(message), str(refused.value)


def test_a_rule_reads_back_as_written() -> None:
    for doc in DEFAULT_RULES:
        rule = parse_rule(doc)
        again = parse_rule(rule.as_dict())
        assert again.as_dict() == rule.as_dict()
        assert again.q_text == doc["q"]


def test_the_configuration_file_checks_its_rules(tmp_path: Path) -> None:
    path = tmp_path / "occurrences.toml"
    path.write_text(
        '[[rules]]\nid = "waste-container-full"\ntype = "WasteContainer"\n'
        'q = "fillingLevel>=0.8"\nhold = "PT1H"\ncategory = "waste-overflow"\n'
    )
    config = load_config(path)
    assert parse_rule(config.rules["waste-container-full"]).hold == 3600
    assert "no2-hourly-mean" in config.rules  # the other defaults stay
    path.write_text('[[rules]]\nid = "x"\ntype = "WasteContainer"\nq = "a>"\ncategory = "noise"\n')
    with pytest.raises(ConfigError, match=r"rule 'x'\.q: invalid q"):
        load_config(path)
    path.write_text('[[rules]]\ntype = "WasteContainer"\n')
    with pytest.raises(ConfigError, match="with an id"):
        load_config(path)


def test_a_tenant_rule_that_does_not_hold_is_left_out(world: World) -> None:
    world.run(world.store.save_occurrence_setting("", "rule", "broken", {"type": "X", "q": "a>"}))
    world.service.forget_config("")
    world.put(BIN, "WasteContainer", 0, fillingLevel=0.95)
    world.turn()
    world.put(BIN, "WasteContainer", 30, fillingLevel=0.95)
    assert world.turn() == {"raised": 1}  # the others go on


# -- the demo city's devices -------------------------------------------------------------------

HELSINKI_HALL = (24.9521, 60.1685)


def plan(kind: str, n: int = 1, **params: Any) -> DevicePlan:
    spec = KINDS[kind]
    device_id = f"{spec.prefix}-{n:03d}"
    return DevicePlan(
        kind=kind,
        device_id=device_id,
        entity_type=spec.entity_type,
        entity_id=f"urn:ngsi-ld:{spec.entity_type}:{device_id}",
        lon=HELSINKI_HALL[0],
        lat=HELSINKI_HALL[1],
        measures=spec.measures,
        commands=spec.commands,
        period=spec.period,
        timezone="Europe/Helsinki",
        static={"name": f"{kind} by the city hall", "storedWasteKind": "plastic"}
        if kind == "waste_container"
        else {"name": f"{kind} by the city hall"},
        params=params,
        fault_rate=0.0,
        outlier_rate=0.0,
    )


def test_the_default_rules_fire_on_what_the_demo_devices_publish(world: World) -> None:
    """Each default rule, on entities written by the device agent from the demo devices'
    own messages, in a state that calls for it (a full container, a pollution episode, a noisy
    night, a lamp out, a jam, a bollard and a controller in fault)."""
    world.engine = world.new_engine(timezone="Europe/Helsinki")
    provisioning = DeviceProvisioning(world.store)
    agent = Agent(world.store, core_terms())
    devices = [
        plan("waste_container", collectionDays=[]),
        plan("air_quality"),
        plan("noise"),
        plan("streetlight"),
        plan("vehicle_counter"),
        plan("bollard"),
        plan("traffic_light"),
    ]
    kinds = sorted({p.kind for p in devices})
    world.run(provisioning.create_groups("", "/", {"services": [group_body(k) for k in kinds]}))
    world.run(provisioning.create_devices("", "/", {"devices": [device_body(p) for p in devices]}))
    # Tuesday 22:00 in Helsinki, then through the night and into the morning rush
    start = datetime(2026, 3, 10, 20, 0, tzinfo=UTC)
    states = {p.device_id: DeviceState() for p in devices}
    until = start + timedelta(hours=2)
    states["waste-001"].data.update(fill=0.95, emptied=start)
    states["air-001"].data["episode"] = (until, 0.5)
    states["noise-001"].data["episode"] = (until, 0.5)
    states["light-001"].data.update(defect="defectiveLamp", repaired=until)
    states["bollard-001"].fault, states["bollard-001"].fault_until = "fault", until
    states["tlight-001"].fault, states["tlight-001"].fault_until = "fault", until
    rng = random.Random(3)
    due = dict.fromkeys(states, start)
    now = start
    while now < start + timedelta(hours=2):
        batch = []
        for p in devices:
            if due[p.device_id] <= now:
                payload = measures(p, states[p.device_id], now, rng)
                due[p.device_id] = now + timedelta(seconds=p.period)
                if payload is not None:
                    batch.append(Measure(apikey_of(p.kind), p.device_id, orjson.dumps(payload)))
        assert world.run(agent.ingest(batch)) == [None] * len(batch)
        world.turn()
        now += timedelta(minutes=1)
    # the morning rush, for the counter
    rush = datetime(2026, 3, 11, 6, 15, tzinfo=UTC)  # 8:15 in Helsinki
    for minute in range(40):
        at = rush + timedelta(minutes=minute)
        payload = measures(devices[4], states["counter-001"], at, rng)
        message = Measure(apikey_of("vehicle_counter"), "counter-001", orjson.dumps(payload))
        world.run(agent.ingest([message]))
        world.turn()
    raised = {o.doc["rule"]["id"]: o.doc for o in world.occurrences()}
    assert sorted(raised) == sorted(r["id"] for r in DEFAULT_RULES)
    expected = {
        "waste-container-full": ("waste-overflow", "waste-001"),
        "no2-hourly-mean": ("air-quality", "air-001"),
        "noise-night-limit": ("noise", "noise-001"),
        "streetlight-fault": ("streetlight-fault", "light-001"),
        "traffic-congestion": ("traffic-congestion", "counter-001"),
        "bollard-fault": ("bollard-fault", "bollard-001"),
        "traffic-light-fault": ("traffic-light-fault", "tlight-001"),
    }
    for rule_id, (category, device) in expected.items():
        doc = raised[rule_id]
        assert doc["category"] == category, rule_id
        assert doc["entities"][0].endswith(f":{device}"), rule_id
        assert doc["location"] == {"lat": HELSINKI_HALL[1], "lon": HELSINKI_HALL[0]}
        assert "{" not in doc["description"] and "unknown" not in doc["description"], doc
    assert len(world.occurrences()) == len(expected)  # one each, in two hours of messages


def test_the_demo_city_raises_occurrences_by_itself(tmp_path: Path) -> None:
    """`cidade demo` as it runs (in-process devices, the rules in the app's lifespan), on a
    fast clock: sensor occurrences appear without anyone reporting."""
    from cidade.app import build_app
    from tests.conftest import admin_client, make_settings

    settings = make_settings(
        store=f"sqlite:///{tmp_path}/demo.db",
        demo="helsinki",
        demo_speed=600.0,  # ten simulated minutes a second
        demo_scale=0.3,
        demo_hour="7",
        rules_interval=0.5,
    )
    app = build_app(settings)
    with admin_client(app) as client:
        deadline = time.monotonic() + 90
        found: list[Any] = []
        while not found and time.monotonic() < deadline:
            time.sleep(0.5)
            page = client.portal.call(
                app.state.occurrences.list, "", OccurrenceQuery(sources=["sensor"])
            )
            found = page.items
        assert found, "no sensor occurrence within 90 s (15 simulated hours)"
        doc = found[0].doc
        assert doc["rule"]["id"] in {r["id"] for r in DEFAULT_RULES}
        assert doc["entities"] == [doc["rule"]["entity"]] and doc["location"]
        assert app.state.rules.timezone == "Europe/Helsinki"  # the demo city's


def test_clear_is_for_sensor_occurrences_only(world: World) -> None:
    from cidade.occurrences.errors import IllegalTransition
    from cidade.occurrences.service import Report
    from cidade.occurrences.workflow import allowed_actions

    made = world.run(
        world.service.report(
            "",
            OPERATOR,
            Report(category="pothole", description="A hole", lat=LAT, lon=LON, source="phone"),
        )
    ).occurrence
    with pytest.raises(IllegalTransition, match="only for occurrences from the source sensor"):
        world.run(world.service.act("", OPERATOR, made.number, "clear"))
    again = world.run(world.service.get("", made.number))
    assert again.version == made.version and again.doc["status"] == "new"
    assert "clear" not in allowed_actions("new", OPERATOR.permissions, "phone")
    assert "clear" in allowed_actions("new", OPERATOR.permissions, "sensor")
    assert "clear" not in allowed_actions("resolved", OPERATOR.permissions, "sensor")


def test_a_rule_set_through_the_api_over_entities_written_through_the_hub(store_url: str) -> None:
    """The configuration API refuses a rule that does not hold (nothing stored) and keeps one
    that does; the engine then raises an occurrence over entities the NGSI-LD API wrote."""
    from cidade.app import build_app
    from tests.conftest import NGSI, admin_client, make_settings

    app = build_app(make_settings(store=store_url, rules_interval=0))
    with admin_client(app) as client:
        rule = {
            "name": "Bin over 80 %",
            "type": "WasteContainer",
            "q": "fillingLevel>=0.8",
            "hold": "PT10M",
            "category": "waste-overflow",
            "description": "{name}: {fillingLevel:.0%}",
        }
        r = client.put("/occurrences/config/rule/bin-80", json={**rule, "q": "fillingLevel>="})
        assert r.status_code == 400, r.text
        assert "rule 'bin-80'.q: invalid q" in r.json()["detail"]
        # a category the tenant does not have: the rule could never raise
        r = client.put("/occurrences/config/rule/bin-80", json={**rule, "category": "nope"})
        assert r.status_code == 400 and "category" in r.json()["detail"], r.text
        assert client.get("/occurrences/config/rule/bin-80").status_code == 404
        r = client.put("/occurrences/config/rule/bin-80", json=rule)
        assert r.status_code == 204, r.text

        def level(value: float, at: str) -> dict[str, Any]:
            return {"type": "Property", "value": value, "observedAt": at}

        r = client.post(
            f"{NGSI}/entities",
            json={
                "id": BIN,
                "type": "WasteContainer",
                "name": {"type": "Property", "value": "Praça da Batalha"},
                "fillingLevel": level(0.85, "2026-03-10T10:00:00Z"),
                "location": {
                    "type": "GeoProperty",
                    "value": {"type": "Point", "coordinates": [LON, LAT]},
                },
            },
        )
        assert r.status_code == 201, r.text

        def turn() -> dict[str, int]:
            app.state.occurrences.forget_config("")
            return dict(client.portal.call(app.state.rules.turn))

        assert turn() == {}
        r = client.patch(
            f"{NGSI}/entities/{BIN}/attrs",
            json={"fillingLevel": level(0.88, "2026-03-10T10:10:00Z")},
        )
        assert r.status_code == 204, r.text
        assert turn() == {"raised": 1}
        listed = client.get("/occurrences", params={"source": "sensor"}).json()
        (occ,) = listed if isinstance(listed, list) else listed["items"]
        assert occ["category"] == "waste-overflow" and occ["entities"] == [BIN]
        assert occ["description"] == "Praça da Batalha: 88%"
        assert occ["rule"] == {"id": "bin-80", "entity": BIN}
