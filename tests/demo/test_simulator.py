"""The demo city alive: the simulator inside the app (as `cidade demo` runs it) provisions its
devices and publishes on a fast simulated clock, in-process or through a real broker; commands
sent through the NGSI-LD API reach the simulated bollards and their answers come back."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from cidade.app import build_app
from cidade.demo.city import load_city
from cidade.demo.devices import KINDS
from cidade.demo.simulator import apikey_of, entity_types, group_body, start_time
from tests.conftest import NGSI, admin_client, make_settings, service_missing
from tests.devices.test_mqtt import MOSQUITTO, Broker

TYPES = entity_types()


@pytest.fixture(scope="module")
def city():
    return load_city()


def wait_for(check, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.1)


def entities(client: Any, entity_type: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"{NGSI}/entities", params={"type": entity_type, "limit": 1000, **params})
    assert r.status_code == 200, r.text
    return r.json()


def history_length(client: Any, eid: str, attr: str) -> int:
    r = client.get(f"{NGSI}/temporal/entities/{eid}", params={"attrs": attr})
    assert r.status_code == 200, r.text
    got = r.json().get(attr, [])
    return len(got) if isinstance(got, list) else 1


def check_city(client: Any, city: Any) -> None:
    """Groups, devices, an entity of every kind with plausible values, inside the city."""
    sim = client.app.state.simulator
    assert wait_for(lambda: sim.ready.is_set())
    groups = client.get("/iot/services").json()["services"]
    assert {g["apikey"] for g in groups} == {apikey_of(k) for k in KINDS}
    devices = client.get("/iot/devices", params={"limit": 1000}).json()
    assert devices["count"] == len(sim.devices) > len(KINDS)

    def all_there() -> bool:
        return all(entities(client, t, limit=1) for t in TYPES)

    wait_for(all_there)
    lon0, lat0, lon1, lat1 = city.bbox
    slack = 0.002  # devices stand up to a few metres off the street network's box
    for t in TYPES:
        for e in entities(client, t):
            lon, lat = e["location"]["value"]["coordinates"]
            assert lon0 - slack <= lon <= lon1 + slack and lat0 - slack <= lat <= lat1 + slack, e
    counters = entities(client, "TrafficFlowObserved")
    assert all(c["intensity"]["value"] >= 0 for c in counters)
    assert all(0 <= c["occupancy"]["value"] <= 1 for c in counters)
    assert counters[0]["averageVehicleSpeed"]["unitCode"] == "KMH"
    spots = entities(client, "ParkingSpot")
    assert {s["status"]["value"] for s in spots} <= {"free", "occupied"}
    air = entities(client, "AirQualityObserved")
    assert all(a["no2"]["value"] > 0 and a["no2"]["unitCode"] == "GQ" for a in air)
    lights = entities(client, "Streetlight")
    assert {x["powerState"]["value"] for x in lights} <= {"on", "off", "low"}

    # History grows as the simulated minutes pass.
    eid = counters[0]["id"]
    first = history_length(client, eid, "intensity")
    wait_for(lambda: history_length(client, eid, "intensity") > first + 1)
    assert sim.counts["refused"] == 0


def check_bollard_command(client: Any) -> None:
    bollard = "urn:ngsi-ld:Device:bollard-001"
    r = client.patch(
        f"{NGSI}/entities/{bollard}/attrs",
        json={"raise": {"type": "Property", "value": "now"}},
    )
    assert r.status_code == 204, r.text
    got = wait_for(
        lambda: (
            (e := client.get(f"{NGSI}/entities/{bollard}").json())
            and e.get("raise_status", {}).get("value") in ("OK", "ERROR")
            and e
        )
    )
    assert got["raise_info"]["value"] == "raised" or "error" in got["raise_info"]["value"]


def demo_settings(tmp_path, **values: Any):
    values.setdefault("demo", "helsinki")
    values.setdefault("demo_speed", 600.0)  # ten simulated minutes a second
    values.setdefault("demo_scale", 0.3)
    values.setdefault("demo_hour", "8")
    return make_settings(store=f"sqlite:///{tmp_path}/demo.db", **values)


def test_groups_carry_the_mapping():
    body = group_body("vehicle_counter")
    assert body["apikey"] == "demo-vehicle-counter" and body["entity_type"] == "TrafficFlowObserved"
    speed = next(a for a in body["attributes"] if a["object_id"] == "s")
    assert speed["name"] == "averageVehicleSpeed"
    assert speed["metadata"]["unitCode"]["value"] == "KMH"
    assert [c["name"] for c in group_body("bollard")["commands"]] == ["raise", "lower"]


def test_start_time_at_a_local_hour():
    from datetime import UTC, datetime

    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert start_time("Europe/Helsinki", 7.5, now) == datetime(2026, 3, 10, 5, 30, tzinfo=UTC)
    assert start_time("Europe/Helsinki", None, now) == now


def test_the_city_comes_alive_in_process(tmp_path, city):
    with admin_client(build_app(demo_settings(tmp_path))) as client:
        check_city(client, city)
        check_bollard_command(client)


def test_the_city_comes_alive_through_mqtt(tmp_path, city, caplog):
    if MOSQUITTO is None:
        service_missing("mosquitto is not installed (apt-get install mosquitto)")
    broker = Broker(tmp_path)
    broker.start()
    try:
        settings = demo_settings(tmp_path, mqtt=broker.url, mqtt_client_id="cidade-demo-test")
        with caplog.at_level(logging.WARNING), admin_client(build_app(settings)) as client:
            check_city(client, city)
            assert client.app.state.bridge.counters.measures > 0
            check_bollard_command(client)
    finally:
        broker.stop()
    # The console a newcomer watches: no line per message (aiomqtt's "pending publish calls").
    assert not [r for r in caplog.records if "pending publish" in r.getMessage()]


# -- the command -----------------------------------------------------------------------------


def test_cidade_demo_help():
    r = subprocess.run(
        [sys.executable, "-m", "cidade.cli", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    for option in ("--osm", "--mqtt", "--port", "--store", "--speed", "--scale"):
        assert option in r.stdout


@pytest.mark.server
def test_cidade_demo_serves_a_living_city(tmp_path):
    from tests.test_server import free_port, stop

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIDADE_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cidade.cli",
            "demo",
            "--port",
            str(port),
            "--store",
            f"sqlite:///{tmp_path}/demo.db",
            "--scale",
            "0.3",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        seen: set[str] = set()
        while time.monotonic() < deadline and len(seen) < 4:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                for t in TYPES:
                    # anonymous: the demo's types are public
                    r = httpx.get(f"{base}{NGSI}/entities", params={"type": t}, timeout=2)
                    if r.status_code == 200 and r.json():
                        seen.add(t)
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert len(seen) >= 4, seen
        assert httpx.get(f"{base}/openapi.json", timeout=5).status_code == 200
    finally:
        stop(proc)
    out = proc.stdout.read().decode()
    assert "demo / cidade-demo-password" in out and "KEY=" in out, out
