"""Messages -> NGSI-LD fragments, as the FIWARE IoT Agent for JSON maps them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cidade.devices.mapping import MappingError, build_profile, single_value, to_fragment

GROUP = {
    "apikey": "k1",
    "entity_type": "AirQualityObserved",
    "attributes": [
        {"object_id": "n", "name": "no2", "type": "Number", "unitCode": "GQ"},
        {
            "object_id": "p",
            "name": "pm10",
            "type": "Number",
            "metadata": {"unitCode": {"type": "Text", "value": "GQ"}},
        },
        {"object_id": "l", "name": "location", "type": "geo:point"},
        {"object_id": "s", "name": "status", "type": "Text"},
        {"object_id": "on", "name": "isActive", "type": "Boolean"},
        {"object_id": "r", "name": "refDevice", "type": "Relationship"},
        {"object_id": "c", "name": "count", "type": "Integer"},
    ],
    "static_attributes": [{"name": "source", "type": "Text", "value": "cidade-demo"}],
    "commands": [{"name": "reset", "type": "command"}],
}
AT = "2026-11-26T10:00:00.000000Z"


def profile(**device):
    return build_profile("porto", "aq1", "k1", GROUP, {"device_id": "aq1", **device})


def test_measures_become_typed_attributes_with_units_and_time():
    f = to_fragment(
        profile(), {"n": 41.5, "p": "17", "l": "41.15, -8.61", "s": "ok", "on": "true"}, AT
    )
    assert f["id"] == "urn:ngsi-ld:AirQualityObserved:aq1" and f["type"] == "AirQualityObserved"
    assert f["no2"] == {"type": "Property", "value": 41.5, "observedAt": AT, "unitCode": "GQ"}
    assert f["pm10"]["value"] == 17 and f["pm10"]["unitCode"] == "GQ"
    assert f["location"] == {
        "type": "GeoProperty",
        "value": {"type": "Point", "coordinates": [-8.61, 41.15]},
        "observedAt": AT,
    }
    assert f["isActive"]["value"] is True
    assert f["source"] == {"type": "Property", "value": "cidade-demo"}


def test_time_instant_dates_every_measure_in_the_devices_timezone():
    f = to_fragment(
        profile(timezone="Europe/Lisbon"), {"n": 1, "TimeInstant": "2026-07-01T09:00:00"}, AT
    )
    assert f["no2"]["observedAt"] == "2026-07-01T08:00:00.000000Z"  # Lisbon is UTC+1 in summer
    assert "TimeInstant" not in f
    g = to_fragment(profile(), {"n": 1, "TimeInstant": "2026-07-01T09:00:00+02:00"}, AT)
    assert g["no2"]["observedAt"] == "2026-07-01T07:00:00.000000Z"


def test_undeclared_measures_pass_unless_explicit():
    f = to_fragment(
        profile(),
        {"n": 1, "temperature": 20.5, "where": {"type": "Point", "coordinates": [1, 2]}},
        AT,
    )
    assert f["temperature"]["value"] == 20.5 and f["where"]["type"] == "GeoProperty"
    g = to_fragment(profile(explicitAttrs=True), {"n": 1, "temperature": 20.5}, AT)
    assert "temperature" not in g and "no2" in g


def test_device_provisioning_wins_over_its_group():
    p = profile(
        entity_name="urn:ngsi-ld:AirQualityObserved:boavista",
        attributes=[{"object_id": "n", "name": "no2", "type": "Number", "unitCode": "59"}],
    )
    f = to_fragment(p, {"n": 3}, AT)
    assert f["id"] == "urn:ngsi-ld:AirQualityObserved:boavista" and f["no2"]["unitCode"] == "59"


@pytest.mark.parametrize(
    "measures, why",
    [
        ({"n": "forty"}, "number"),
        ({"n": True}, "number"),
        ({"c": 2.5}, "integer"),
        ({"on": "maybe"}, "true or false"),
        ({"l": "north"}, "latitude"),
        ({"r": "not a uri"}, "URI"),
        ({"s": {"a": 1}}, "text"),
        ({"n": None}, "null"),
        ({"TimeInstant": "yesterday", "n": 1}, "ISO 8601"),
        ({"reset": 1}, "command"),
        ({"id": "urn:x"}, "cannot be a measure"),
        ({}, "no measure"),
        ([1, 2], "JSON object"),
    ],
)
def test_wrong_messages_are_refused_whole(measures, why):
    with pytest.raises(MappingError, match=why):
        to_fragment(profile(), measures, AT)


def test_single_value_topics():
    assert single_value(profile(), "n", b"41.5") == {"n": 41.5}
    assert single_value(profile(), "s", b"ok") == {"s": "ok"}
    f = to_fragment(profile(), single_value(profile(), "n", b"7"), AT)
    assert f["no2"]["value"] == 7


# -- the agent's stored form of a fragment: the hub's normalize_entity, checked less ------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    measures=st.dictionaries(
        st.sampled_from(["n", "p", "l", "s", "on", "r", "c", "free", "x y", "TimeInstant"]),
        JSON_VALUES | st.sampled_from(["41.1, -8.6", "urn:ngsi-ld:Device:d1", "2026-11-26T10:00Z"]),
        max_size=6,
    ),
    received=st.sampled_from([AT, "2026-11-26T10:00:00Z", "2026-11-26T11:00:00+01:00"]),
)
def test_the_agents_stored_form_is_the_hubs(measures, received):
    from cidade.devices.agent import Agent
    from cidade.hub.jsonld import ContextResolver
    from cidade.hub.model import normalize_entity
    from cidade.ngsild.errors import NgsiError

    terms = ContextResolver().core
    agent = Agent(None, terms)  # type: ignore[arg-type]
    profile = build_profile("", "d1", "k1", GROUP, None)
    try:
        fragment = to_fragment(profile, measures, received)
    except MappingError:
        return
    try:
        expected = normalize_entity(fragment, terms, AT)
    except NgsiError as exc:
        with pytest.raises(NgsiError) as raised:
            agent.stored(fragment, AT)
        assert raised.value.detail == exc.detail
        return
    assert agent.stored(fragment, AT) == expected
    assert agent.stored(fragment, AT) == expected  # and again, from what it remembered
