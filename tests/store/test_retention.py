"""History retention per entity type, enforced by the store on both backends: exactly the expired
instances go, the rest stay; on PostgreSQL whole expired months go as partitions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from cidade.hub.retention import RetentionPolicy, parse_retention
from cidade.store.base import HistoryQuery, WriteOp
from tests.conftest import running_store

D = "https://uri.etsi.org/ngsi-ld/default-context/"
NO2 = D + "no2"
NOW = datetime(2026, 3, 10, tzinfo=UTC)
DAYS = ["2025-01-15", "2025-06-15", "2026-01-15", "2026-03-01"]


class Core:
    """Stands in for the core @context: compact names get the default vocabulary."""

    def expand(self, term: str) -> str:
        return term if ":" in term else D + term


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> Iterator[tuple[object, asyncio.AbstractEventLoop]]:
    with running_store(request.param, tmp_path) as (backend, loop):
        backend.history_after_delete = True
        yield backend, loop


def put(store, loop, eid: str, doc: dict | None) -> None:
    (result,) = loop.run_until_complete(store.write("", [WriteOp(eid, lambda _c: doc)]))
    assert not isinstance(result, Exception), result


def sensor(s, loop, eid: str, types: list[str], days: list[str] = DAYS) -> None:
    for n, day in enumerate(days):
        at = f"{day}T12:00:00.000000Z"
        inst = {"type": "Property", "value": n, "observedAt": at, "createdAt": at, "modifiedAt": at}
        doc = {
            "id": eid,
            "type": [D + t for t in types],
            "createdAt": at,
            "modifiedAt": at,
            "attrs": {NO2: [inst]},
        }
        put(s, loop, eid, doc)


def kept(s, loop, eid: str) -> list[str]:
    got = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=[eid])))
    return [i["_t"][:10] for i in got.get(eid, {}).get(NO2, [])]


def purge(s, loop, setting: str) -> int:
    policy = RetentionPolicy.build(parse_retention(setting), Core())
    cutoffs, default = policy.cutoffs(NOW)
    return loop.run_until_complete(s.purge_history(cutoffs, default))


@pytest.fixture
def city(store):
    s, loop = store
    sensor(s, loop, "urn:s:traffic", ["TrafficFlowObserved"])
    sensor(s, loop, "urn:s:air", ["AirQualityObserved"])
    sensor(s, loop, "urn:s:both", ["TrafficFlowObserved", "AirQualityObserved"])
    sensor(s, loop, "urn:s:other", ["Streetlight"])
    sensor(s, loop, "urn:s:gone", ["TrafficFlowObserved"])
    put(s, loop, "urn:s:gone", None)  # deleted, history kept
    sensor(s, loop, "urn:s:old", ["TrafficFlowObserved"], DAYS[:2])
    put(s, loop, "urn:s:old", None)
    return s, loop


def test_each_type_keeps_its_own_retention(city):
    s, loop = city
    deleted = purge(s, loop, f"TrafficFlowObserved=P30D,{D}AirQualityObserved=P1Y")
    assert kept(s, loop, "urn:s:traffic") == ["2026-03-01"]
    assert kept(s, loop, "urn:s:air") == DAYS[1:]
    assert kept(s, loop, "urn:s:both") == DAYS[1:]  # the longer retention of its two types
    assert kept(s, loop, "urn:s:other") == DAYS  # no rule, no default: kept for ever
    assert kept(s, loop, "urn:s:gone") == ["2026-03-01"]  # a deleted entity keeps its type's
    assert kept(s, loop, "urn:s:old") == []
    assert deleted == 3 + 1 + 1 + 3 + 2
    # The deleted entity whose history all expired is forgotten; the other is still served.
    assert loop.run_until_complete(s.deleted_entity("", "urn:s:old")) is None
    gone = loop.run_until_complete(s.deleted_entity("", "urn:s:gone"))
    assert gone["type"] == [D + "TrafficFlowObserved"]
    # Nothing more to do the second time.
    assert purge(s, loop, f"TrafficFlowObserved=P30D,{D}AirQualityObserved=P1Y") == 0


def test_the_default_rule_covers_the_other_types(city):
    s, loop = city
    deleted = purge(s, loop, "AirQualityObserved=P1Y,*=P6M")
    assert kept(s, loop, "urn:s:other") == DAYS[2:]
    assert kept(s, loop, "urn:s:traffic") == DAYS[2:]
    assert kept(s, loop, "urn:s:air") == DAYS[1:]
    assert kept(s, loop, "urn:s:both") == DAYS[1:]
    assert deleted == 2 + 2 + 1 + 1 + 2 + 2


def test_expired_months_go_whole_and_come_back_when_written(store):
    s, loop = store
    sensor(s, loop, "urn:s:a", ["AirQualityObserved"])
    purge(s, loop, "*=P1Y")  # 2025-01 lies entirely before 2025-03-10
    assert kept(s, loop, "urn:s:a") == DAYS[1:]
    if hasattr(s, "pool"):
        months = loop.run_until_complete(
            s.pool.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'attr_history'::regclass ORDER BY 1"
            )
        )
        assert [m[0] for m in months] == [
            "attr_history_2025_06",
            "attr_history_2026_01",
            "attr_history_2026_03",
        ]
    # A late observation of that month can still be written (its partition made again).
    sensor(s, loop, "urn:s:late", ["AirQualityObserved"], ["2025-01-20"])
    assert kept(s, loop, "urn:s:late") == ["2025-01-20"]
