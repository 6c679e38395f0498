"""Device storage (the IoT agent's service groups and devices) on both stores."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import running_store


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(kind: str, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """(store, run): ``run(coroutine)`` drives it to completion on the store's event loop."""
    with running_store(kind, tmp_path) as (backend, loop):
        yield backend, loop.run_until_complete


def group(apikey: str, resource: str = "/iot/json", **more: Any) -> dict[str, Any]:
    return {"apikey": apikey, "resource": resource, "entity_type": "Thing", **more}


def device(device_id: str, **more: Any) -> dict[str, Any]:
    return {"device_id": device_id, "entity_name": f"urn:ngsi-ld:Thing:{device_id}", **more}


# -- service groups ----------------------------------------------------------------------------


def test_groups_create_duplicate_replace_delete(store):
    s, run = store
    g = group("k1", attributes=[{"object_id": "t", "name": "temperature", "type": "Number"}])
    assert run(s.save_service_group("city", g, create=True)) is True
    assert run(s.service_groups("city")) == [("city", g)]
    # the same apikey and resource, in this tenant or another: refused, nothing changes
    assert run(s.save_service_group("city", group("k1", entity_type="X"), create=True)) is False
    assert run(s.save_service_group("other", group("k1"), create=True)) is False
    assert run(s.service_groups("other")) == []
    # another resource with the same apikey is another group
    assert run(s.save_service_group("other", group("k1", "/iot/d"), create=True)) is True
    # replace
    changed = group("k1", entity_type="Sensor", explicitAttrs=True)
    assert run(s.save_service_group("city", changed, create=False)) is True
    assert run(s.service_groups("city")) == [("city", changed)]
    # replacing a group of another tenant, or an absent one, changes nothing
    assert run(s.save_service_group("other", group("k1"), create=False)) is False
    assert run(s.save_service_group("city", group("k9"), create=False)) is False
    # delete
    assert run(s.delete_service_group("other", "k1", "/iot/json")) is False
    assert run(s.delete_service_group("city", "k1", "/iot/json")) is True
    assert run(s.delete_service_group("city", "k1", "/iot/json")) is False
    assert run(s.service_groups("city")) == []
    # the pair is free again, in any tenant
    assert run(s.save_service_group("other", group("k1"), create=True)) is True


def test_groups_listed_by_apikey_then_resource(store):
    s, run = store
    for tenant, apikey, resource in [
        ("b", "zz", "/iot/json"),
        ("a", "Ka", "/iot/x"),
        ("a", "ka", "/iot/json"),
        ("", "ka", "/iot/d"),
        ("b", "ka", "/iot/e"),
    ]:
        assert run(s.save_service_group(tenant, group(apikey, resource), create=True))
    every = run(s.service_groups())
    assert [(t, g["apikey"], g["resource"]) for t, g in every] == [
        ("a", "Ka", "/iot/x"),  # bytewise: upper case first
        ("", "ka", "/iot/d"),
        ("b", "ka", "/iot/e"),
        ("a", "ka", "/iot/json"),
        ("b", "zz", "/iot/json"),
    ]
    assert [g["resource"] for _, g in run(s.service_groups("a"))] == ["/iot/x", "/iot/json"]
    assert [t for t, _ in run(s.service_groups(apikey="ka"))] == ["", "b", "a"]
    assert [g["resource"] for _, g in run(s.service_groups("b", apikey="ka"))] == ["/iot/e"]
    assert run(s.service_groups("", apikey="zz")) == []


# -- devices -----------------------------------------------------------------------------------


def test_devices_create_duplicate_replace_delete(store):
    s, run = store
    d = device("d1", attributes=[{"object_id": "t", "name": "temperature", "type": "Number"}])
    assert run(s.get_device("city", "d1")) is None
    assert run(s.save_device("city", d, create=True)) is True
    assert run(s.get_device("city", "d1")) == d
    assert run(s.save_device("city", device("d1", protocol="x"), create=True)) is False
    assert run(s.get_device("city", "d1")) == d
    # one device_id per tenant: another tenant may use it
    assert run(s.save_device("other", device("d1"), create=True)) is True
    assert run(s.get_device("other", "d1")) == device("d1")
    changed = device("d1", nested={"a": [1, 2.5, None, True]})
    assert run(s.save_device("city", changed, create=False)) is True
    assert run(s.get_device("city", "d1")) == changed
    assert run(s.save_device("city", device("d2"), create=False)) is False
    assert run(s.get_device("city", "d2")) is None
    assert run(s.delete_device("city", "d1")) is True
    assert run(s.delete_device("city", "d1")) is False
    assert run(s.get_device("city", "d1")) is None
    assert run(s.get_device("other", "d1")) == device("d1")


def test_devices_are_paged_by_device_id(store):
    s, run = store
    for name in ["d3", "D9", "d1", "d2", "d10"]:
        assert run(s.save_device("city", device(name), create=True))
    run(s.save_device("other", device("zz"), create=True))
    page, total = run(s.list_devices("city", 10, 0))
    assert total == 5
    assert [d["device_id"] for d in page] == ["D9", "d1", "d10", "d2", "d3"]
    page, total = run(s.list_devices("city", 2, 3))
    assert (total, [d["device_id"] for d in page]) == (5, ["d2", "d3"])
    assert run(s.list_devices("city", 0, 0)) == ([], 5)
    assert run(s.list_devices("nobody", 10, 0)) == ([], 0)


def test_bad_records_are_refused_before_the_database(store):
    s, run = store
    for bad, error in [
        (["k"], ValueError),
        ({"resource": "/iot/json"}, KeyError),
        ({"apikey": "k"}, KeyError),
        ({"apikey": "", "resource": "/iot/json"}, ValueError),
        ({"apikey": "k", "resource": 5}, ValueError),
    ]:
        with pytest.raises(error):
            run(s.save_service_group("city", bad, create=True))
    with pytest.raises(ValueError):
        run(s.save_service_group(None, group("k"), create=True))
    for bad, error in [
        ("d1", ValueError),
        ({"entity_name": "x"}, KeyError),
        ({"device_id": None}, ValueError),
    ]:
        with pytest.raises(error):
            run(s.save_device("city", bad, create=True))
    for limit, offset in [(-1, 0), (1, -1), ("1", 0), (True, 0)]:
        with pytest.raises(ValueError):
            run(s.list_devices("city", limit, offset))
    assert run(s.service_groups()) == []
    assert run(s.list_devices("city", 10, 0)) == ([], 0)


# -- the "devices" topic -----------------------------------------------------------------------


def test_postgres_announces_group_and_device_changes(tmp_path):
    """SQLite has one process and nothing to announce; PostgreSQL tells every worker."""
    with running_store("postgres", tmp_path) as (s, loop):
        loop.run_until_complete(_announced(s))


async def _announced(s: Any) -> None:
    heard = asyncio.Event()
    others = []
    await s.listen("devices", heard.set)
    await s.listen("auth", lambda: others.append(1))

    async def fires(change: Any) -> None:
        heard.clear()
        assert await change
        await asyncio.wait_for(heard.wait(), 5)

    await fires(s.save_service_group("city", group("k1"), create=True))
    await fires(s.save_service_group("city", group("k1", entity_type="X"), create=False))
    await fires(s.save_device("city", device("d1"), create=True))
    await fires(s.save_device("city", device("d1", protocol="p"), create=False))
    await fires(s.delete_device("city", "d1"))
    await fires(s.delete_service_group("city", "k1", "/iot/json"))
    # what changes nothing announces nothing
    await s.save_service_group("city", group("k2"), create=True)
    await asyncio.sleep(0.3)
    heard.clear()
    assert not await s.save_service_group("other", group("k2"), create=True)
    assert not await s.save_service_group("city", group("k3"), create=False)
    assert not await s.delete_service_group("city", "k3", "/iot/json")
    assert not await s.save_device("city", device("d9"), create=False)
    assert not await s.delete_device("city", "d9")
    await s.list_devices("city", 10, 0)
    await asyncio.sleep(0.3)
    assert not heard.is_set()
    assert others == []
